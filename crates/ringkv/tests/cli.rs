//! The `ringkv` binary's command line and TOML config file.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Starts the binary with `args`, waits for "Ready to accept connections", returns the child and
/// the port it listens on. The admin HTTP port gets a free port (the default 9121 would be shared
/// by tests running at once) unless `args` choose one; later flags win, so `args` may override.
fn start(args: &[&str]) -> (std::process::Child, u16) {
    let (child, port, _) = start_with_env(args, &[]);
    (child, port)
}

/// [`start`] with extra environment variables; also returns the log as it grows.
fn start_with_env(
    args: &[&str],
    env: &[(&str, &str)],
) -> (std::process::Child, u16, Arc<Mutex<String>>) {
    let admin: &[&str] = if args
        .iter()
        .any(|a| a.starts_with("--admin") || *a == "--no-admin")
        || env.iter().any(|(k, _)| k.starts_with("RINGKV_ADMIN"))
    {
        &[]
    } else {
        &["--admin-port", "0"]
    };
    let mut all = admin.to_vec();
    all.extend_from_slice(args);
    spawn_ready(&all, env)
}

/// Starts the binary with exactly `args` (no admin port chosen for it) and waits until ready.
fn spawn_ready(
    args: &[&str],
    env: &[(&str, &str)],
) -> (std::process::Child, u16, Arc<Mutex<String>>) {
    try_spawn_ready(args, env).unwrap_or_else(|log| panic!("not ready; log:\n{log}"))
}

/// [`spawn_ready`], or the log of a start that failed.
fn try_spawn_ready(
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<(std::process::Child, u16, Arc<Mutex<String>>), String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(args)
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn ringkv");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push_str(&format!("{line}\n"));
            if line.contains("Ready to accept connections tcp") {
                let port = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                    .and_then(|a| a.rsplit(':').next()?.parse::<u16>().ok());
                let _ = tx.send(port);
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(port) => Ok((child, port.expect("port"), log)),
        Err(_) => {
            stop(child);
            let text = log.lock().unwrap().clone();
            Err(text)
        }
    }
}

/// Runs the binary until it exits (a start that must be refused); (success, stderr).
fn refused(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["--port", "0", "--admin-port", "0", "--dir"])
        .arg(dir.path().join("data"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `CONFIG GET name` on loopback `port`.
fn config_get(port: u16, name: &str) -> String {
    let mut con = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    let pair: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query(&mut con)
        .unwrap();
    assert_eq!(pair.len(), 2, "CONFIG GET {name}: {pair:?}");
    pair[1].clone()
}

/// Sends one HTTP/1.0 GET to `addr` and returns the status line; None if nothing listens.
fn http_status(addr: &str, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.lines().next().map(str::to_string)
}

fn stop(mut child: std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn config_file_sets_options_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ringkv.toml");
    let from_file = dir.path().join("from-file");
    let from_flag = dir.path().join("from-flag");
    std::fs::write(
        &config,
        format!(
            "port = 0\nbind = \"127.0.0.1\"\ndir = \"{}\"\nappendfsync = \"always\"\nrequirepass = \"pw\"\n",
            from_file.display()
        ),
    )
    .unwrap();
    let (mut child, port) = start(&["--config", config.to_str().unwrap()]);
    let mut con = redis::Client::open(format!("redis://:pw@127.0.0.1:{port}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    let fsync: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendfsync")
        .query(&mut con)
        .unwrap();
    assert_eq!(fsync, vec!["appendfsync", "always"]);
    assert!(from_file.exists());
    let _ = child.kill();
    let _ = child.wait();
    let (mut child, port) = start(&[
        "--config",
        config.to_str().unwrap(),
        "--dir",
        from_flag.to_str().unwrap(),
        "--appendfsync",
        "no",
    ]);
    let mut con = redis::Client::open(format!("redis://:pw@127.0.0.1:{port}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    let fsync: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendfsync")
        .query(&mut con)
        .unwrap();
    assert_eq!(fsync, vec!["appendfsync", "no"]);
    assert!(from_flag.exists());
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn bad_config_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "prot = 1\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("parsing config file") && stderr.contains("prot"),
        "{stderr}"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["--appendfsync", "sometimes"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid fsync policy"));
}

#[test]
fn help_lists_the_flags() {
    let output = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--port",
        "--bind",
        "--dir",
        "--config",
        "--appendfsync",
        "--loglevel",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help");
    }
}

/// Who listens on 9121, for the failure message (a server someone started by hand with the
/// defaults holds it too).
fn holder_of_9121() -> String {
    Command::new("ss")
        .args(["-ltnp", "sport = :9121"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|e| format!("ss: {e}"))
}

/// The admin HTTP listener is on by default at 127.0.0.1:9121. Every test helper passes a free
/// admin port; besides this test only server_commands' no-arguments run takes 9121, so both
/// wait (up to two minutes) while the other holds it. This test also holds 9121 itself to check
/// the refusal: a server that cannot bind its admin address names it and exits.
#[test]
fn admin_listener_is_on_by_default_and_a_taken_port_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let (child, _, log) = loop {
        match try_spawn_ready(&["--port", "0", "--dir", data.to_str().unwrap()], &[]) {
            Ok(started) => break started,
            Err(log) if log.contains("cannot listen on 127.0.0.1:9121") => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "9121 stays taken ({}): {log}",
                    holder_of_9121()
                );
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(log) => panic!("not ready; log:\n{log}"),
        }
    };
    assert!(
        log.lock()
            .unwrap()
            .contains("Admin HTTP ready (/health /ready /metrics) addr=127.0.0.1:9121"),
        "{}",
        log.lock().unwrap()
    );
    let status = http_status("127.0.0.1:9121", "/health");
    stop(child);
    assert_eq!(status.as_deref(), Some("HTTP/1.0 200 OK"));

    // Someone else holds 9121: the start is refused with the address in the message.
    let holder = loop {
        match std::net::TcpListener::bind("127.0.0.1:9121") {
            Ok(holder) => break holder,
            Err(error) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "9121 stays taken ({}): {error}",
                    holder_of_9121()
                );
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    };
    let output = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["--port", "0", "--dir", data.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot listen on 127.0.0.1:9121 for the admin HTTP port")
            && stderr.contains("--no-admin"),
        "{stderr}"
    );

    // Turned off three ways: the server starts although 9121 is still held, with no admin line.
    let file = dir.path().join("off.toml");
    std::fs::write(&file, "admin = false\n").unwrap();
    let ways = [
        (vec!["--no-admin"], vec![]),
        (vec![], vec![("RINGKV_ADMIN", "no")]),
        (vec!["--config", file.to_str().unwrap()], vec![]),
    ];
    for (args, env) in ways {
        let mut all = vec!["--port", "0", "--dir", data.to_str().unwrap()];
        all.extend_from_slice(&args);
        let (child, port, log) = start_with_env(&all, &env);
        assert_eq!(config_get(port, "admin-port"), "", "{args:?} {env:?}");
        stop(child);
        assert!(
            !log.lock().unwrap().contains("Admin HTTP"),
            "{args:?} {env:?}"
        );
    }
    drop(holder);
}

/// admin-bind and admin-port as flag, environment variable and TOML key.
#[test]
fn admin_address_is_a_flag_an_env_var_and_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (a, b, c) = (free(), free(), free());
    let file = dir.path().join("admin.toml");
    std::fs::write(
        &file,
        format!("admin_bind = \"127.0.0.2\"\nadmin-port = {c}\n"),
    )
    .unwrap();
    let (a_text, b_text) = (a.to_string(), b.to_string());
    let cases = [
        (
            vec!["--admin-bind", "127.0.0.3", "--admin-port", &a_text],
            vec![],
            format!("127.0.0.3:{a}"),
        ),
        (
            vec![],
            vec![
                ("RINGKV_ADMIN_BIND", "127.0.0.4"),
                ("RINGKV_ADMIN_PORT", &b_text),
            ],
            format!("127.0.0.4:{b}"),
        ),
        (
            vec!["--config", file.to_str().unwrap()],
            vec![],
            format!("127.0.0.2:{c}"),
        ),
    ];
    for (args, env, addr) in cases {
        let mut all = vec!["--port", "0", "--dir", data.to_str().unwrap()];
        all.extend_from_slice(&args);
        let (child, _, _) = spawn_ready(&all, &env);
        let status = http_status(&addr, "/ready");
        stop(child);
        assert_eq!(status.as_deref(), Some("HTTP/1.0 200 OK"), "{addr}");
    }
}

/// Starts the server with `args` and `env` (data in `data`), checks that CONFIG GET shows each
/// of `expected`, runs `more` against its port, and stops it.
fn check_settings(
    data: &str,
    args: &[&str],
    env: &[(&str, &str)],
    expected: &[(&str, &str)],
    more: impl FnOnce(u16),
) {
    let mut all = vec!["--port", "0", "--dir", data];
    all.extend_from_slice(args);
    let (child, port, _) = start_with_env(&all, env);
    for (name, value) in expected {
        assert_eq!(
            config_get(port, name),
            *value,
            "{name} from {args:?} {env:?}"
        );
    }
    more(port);
    stop(child);
}

/// The settings that once existed only in the file, and proto-max-args, as flag, environment
/// variable and key (kebab-case and snake_case).
#[test]
fn replication_guards_and_max_args_are_flags_env_vars_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let file = dir.path().join("r.toml");
    std::fs::write(
        &file,
        "replica-read-only = false\nmin_replicas_to_write = 3\nmin-replicas-max-lag = 7\nproto_max_args = 9\n",
    )
    .unwrap();
    let expected = [
        ("replica-read-only", "no"),
        ("min-replicas-to-write", "3"),
        ("min-replicas-max-lag", "7"),
        ("proto-max-args", "9"),
    ];
    let check = |args: &[&str], env: &[(&str, &str)]| {
        check_settings(data, args, env, &expected, |_| {});
    };
    check(
        &[
            "--replica-read-only",
            "no",
            "--min-replicas-to-write",
            "3",
            "--min-replicas-max-lag",
            "7",
            "--proto-max-args",
            "9",
        ],
        &[],
    );
    check(
        &[],
        &[
            ("RINGKV_REPLICA_READ_ONLY", "no"),
            ("RINGKV_MIN_REPLICAS_TO_WRITE", "3"),
            ("RINGKV_MIN_REPLICAS_MAX_LAG", "7"),
            ("RINGKV_PROTO_MAX_ARGS", "9"),
        ],
    );
    check(&["--config", file.to_str().unwrap()], &[]);
}

/// proto-max-args bounds the arguments of one command, and CONFIG SET changes it live.
#[test]
fn proto_max_args_refuses_longer_commands() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (child, port, _) = start_with_env(
        &[
            "--port",
            "0",
            "--dir",
            data.to_str().unwrap(),
            "--proto-max-args",
            "4",
        ],
        &[],
    );
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let mut con = client.get_connection().unwrap();
    let _: () = redis::cmd("MSET").arg("a").arg(1).query(&mut con).unwrap();
    let error = redis::cmd("MSET")
        .arg("a")
        .arg(1)
        .arg("b")
        .arg(2)
        .query::<()>(&mut con)
        .unwrap_err();
    assert!(
        error.to_string().contains("Protocol error"),
        "five arguments over a limit of four: {error}"
    );
    // The protocol error closes that connection (the stream cannot be resynchronised).
    let mut con = client.get_connection().unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("proto-max-args")
        .arg(5)
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("MSET")
        .arg("a")
        .arg(1)
        .arg("b")
        .arg(2)
        .query(&mut con)
        .unwrap();
    stop(child);
}

/// Invalid values refuse to start, naming the key, whether they come from a flag, an
/// environment variable or the file.
#[test]
fn invalid_settings_refuse_to_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let toml = |name: &str, body: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        path.to_str().unwrap().to_string()
    };
    let loglevel_file = toml("l.toml", "loglevel = \"loud\"\n");
    let fsync_file = toml("f.toml", "appendfsync = \"sometimes\"\n");
    let twice_file = toml(
        "t.toml",
        "proto-max-bulk-len = 2000000\nproto_max_bulk_len = 3000000\n",
    );
    let type_file = toml("ty.toml", "maxclients = \"many\"\n");
    let format_file = toml("lf.toml", "log-format = \"xml\"\n");
    let cases = vec![
        (
            vec!["--loglevel", "loud"],
            vec![],
            "invalid setting loglevel: 'loud'",
        ),
        (
            vec![],
            vec![("RINGKV_LOGLEVEL", "loud")],
            "invalid setting loglevel: 'loud'",
        ),
        (
            vec!["--config", &loglevel_file],
            vec![],
            "invalid setting loglevel: 'loud'",
        ),
        (
            vec!["--config", &fsync_file],
            vec![],
            "invalid setting appendfsync",
        ),
        (
            vec!["--config", &twice_file],
            vec![],
            "proto-max-bulk-len is given twice",
        ),
        (vec!["--config", &type_file], vec![], "maxclients"),
        (vec!["--config", &format_file], vec![], "log-format"),
        (
            vec!["--maxclients", "0"],
            vec![],
            "invalid setting maxclients",
        ),
        (
            vec!["--proto-max-args", "0"],
            vec![],
            "invalid setting proto-max-args",
        ),
        (
            vec!["--replica-read-only", "maybe"],
            vec![],
            "--replica-read-only",
        ),
        (
            vec![],
            vec![("RINGKV_MIN_REPLICAS_TO_WRITE", "-1")],
            "--min-replicas-to-write",
        ),
        (vec!["--replicaof", "leader"], vec![], "replicaof"),
    ];
    for (args, env, expected) in cases {
        let (ok, stderr) = refused(&args, &env);
        assert!(!ok, "{args:?} {env:?} started");
        assert!(stderr.contains(expected), "{args:?} {env:?}: {stderr}");
    }
}

/// Every setting in docs/config.md is a TOML key in the example ringkv.toml, a flag and an
/// environment variable in --help, so the README's promise holds as settings are added.
#[test]
fn every_documented_setting_is_a_key_a_flag_and_an_env_var() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let docs = std::fs::read_to_string(format!("{root}/docs/config.md")).unwrap();
    let example = std::fs::read_to_string(format!("{root}/ringkv.toml")).unwrap();
    let help = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let keys: Vec<&str> = docs
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
        .collect();
    assert!(keys.len() > 30, "docs/config.md tables: {keys:?}");
    let mut missing = Vec::new();
    for key in &keys {
        let env = format!("RINGKV_{}", key.to_uppercase().replace('-', "_"));
        if !help.contains(&format!("--{key} ")) && !help.contains(&format!("--{key}\n")) {
            missing.push(format!("flag --{key}"));
        }
        if !help.contains(&format!("[env: {env}")) {
            missing.push(format!("variable {env}"));
        }
        let in_example = example
            .lines()
            .map(|l| l.trim_start_matches('#').trim_start())
            .any(|l| l.starts_with(&format!("{key} =")));
        if !in_example {
            missing.push(format!("ringkv.toml key {key}"));
        }
    }
    assert!(missing.is_empty(), "missing: {missing:?}");
    // And the other way: every flag with a variable is documented. clap prints a flag on one
    // line and its help (with `[env: …]`) on the lines after it.
    let mut flag = "";
    for line in help.lines() {
        if let Some(rest) = line.trim().strip_prefix("--") {
            flag = rest.split([' ', ',']).next().unwrap();
        } else if line.contains("[env: RINGKV_") && flag != "config" {
            assert!(keys.contains(&flag), "--{flag} is not in docs/config.md");
        }
    }
}

/// `--log-format json`: every line the server writes, from start to a SIGTERM shutdown, is one
/// JSON object with a level, a timestamp and the message and fields under `fields`.
#[test]
fn json_log_format_writes_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(["--log-format", "json", "--port", "0", "--admin-port", "0"])
        .args(["--slowlog-log-slower-than", "0", "--dir"])
        .arg(dir.path().join("data"))
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            lines.push(line);
        }
        lines
    });
    let port = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("a ready line");
        let Ok(object) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue; // checked below, with every line
        };
        if object["fields"]["message"] == "Ready to accept connections tcp" {
            let addr = object["fields"]["addr"].as_str().unwrap().to_string();
            break addr.rsplit(':').next().unwrap().parse::<u16>().unwrap();
        }
    };
    let mut con = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut con).unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
    let lines = reader.join().unwrap();
    let mut messages = Vec::new();
    for line in &lines {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            object["level"].is_string() && object["timestamp"].is_string(),
            "{line}"
        );
        messages.push(object["fields"]["message"].as_str().unwrap().to_string());
    }
    for expected in [
        "starting ringkv",
        "Ready to accept connections tcp",
        "slow command",
        "received a termination signal, shutting down",
        "ringkv is now ready to exit, bye bye...",
    ] {
        assert!(
            messages.iter().any(|m| m == expected),
            "{expected} missing: {messages:?}"
        );
    }
}

/// Settings declared only in the table (crates/server/src/config.rs) are a flag, a variable
/// and a key (snake_case too) without code of their own; CONFIG GET shows them, CONFIG SET
/// refuses a restart-only one with Redis' immutable-config text, and bounds hold at start.
#[test]
fn table_settings_are_flags_env_vars_keys_and_immutable_configs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let file = dir.path().join("t.toml");
    std::fs::write(
        &file,
        "l0_slowdown_writes_trigger = 3\nl0-stop-writes-trigger = 5\nenable-debug-command = \"yes\"\nclock = \"manual\"\n",
    )
    .unwrap();
    let expected = [
        ("l0-slowdown-writes-trigger", "3"),
        ("l0-stop-writes-trigger", "5"),
        ("enable-debug-command", "yes"),
        ("clock", "manual"),
    ];
    let check = |args: &[&str], env: &[(&str, &str)]| {
        check_settings(data, args, env, &expected, |port| {
            let mut con = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                .unwrap()
                .get_connection()
                .unwrap();
            let error = redis::cmd("CONFIG")
                .arg("SET")
                .arg("clock")
                .arg("system")
                .query::<()>(&mut con)
                .unwrap_err();
            assert!(
                error.to_string().contains(
                    "CONFIG SET failed (possibly related to argument 'clock') - can't set immutable config"
                ),
                "{error}"
            );
            // INFO's settings fields come from the table too.
            let info: String = redis::cmd("INFO").arg("memory").query(&mut con).unwrap();
            let maxmemory = config_get(port, "maxmemory");
            assert!(
                info.contains(&format!("maxmemory:{maxmemory}\r\n")),
                "{info}"
            );
        });
    };
    check(
        &[
            "--l0-slowdown-writes-trigger",
            "3",
            "--l0-stop-writes-trigger",
            "5",
            "--enable-debug-command",
            "yes",
            "--clock",
            "manual",
            "--maxmemory",
            "5mb",
        ],
        &[],
    );
    check(
        &[],
        &[
            ("RINGKV_L0_SLOWDOWN_WRITES_TRIGGER", "3"),
            ("RINGKV_L0_STOP_WRITES_TRIGGER", "5"),
            ("RINGKV_ENABLE_DEBUG_COMMAND", "yes"),
            ("RINGKV_CLOCK", "manual"),
        ],
    );
    check(&["--config", file.to_str().unwrap()], &[]);

    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "--l0-slowdown-writes-trigger",
                "8",
                "--l0-stop-writes-trigger",
                "4",
            ],
            "invalid setting l0-stop-writes-trigger",
        ),
        (
            &["--l0-slowdown-writes-trigger", "0"],
            "invalid setting l0-slowdown-writes-trigger: '0': argument must be between 1 and",
        ),
        (
            &["--enable-debug-command", "maybe"],
            "invalid setting enable-debug-command: 'maybe'",
        ),
        (&["--clock", "sundial"], "invalid setting clock: 'sundial'"),
    ];
    for (args, expected) in cases {
        let (ok, stderr) = refused(args, &[]);
        assert!(!ok, "{args:?} started");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    // --help shows the variables' values, but not a secret's.
    let help = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .arg("--help")
        .env("RINGKV_MAXCLIENTS", "77")
        .env("RINGKV_REQUIREPASS", "hunter2")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("RINGKV_MAXCLIENTS=77"), "{help}");
    assert!(!help.contains("hunter2"), "{help}");
}
