//! INFO CONFIG COMMAND TIME SAVE BGSAVE LASTSAVE SHUTDOWN DEBUG against the real binary.

mod common;

use std::time::{Duration, Instant};

use common::{err, q, resp, Server};
use redis::Value;

fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(str::trim)
}

#[test]
fn info_sections_and_fields_tools_look_for() {
    let server = Server::start();
    let mut con = server.client();
    let _: () = redis::cmd("SET").arg("a").arg("1").query(&mut con).unwrap();
    let _: Value = redis::cmd("GET").query(&mut con).unwrap_or(Value::Nil);
    let _: Option<String> = redis::cmd("GET").arg("a").query(&mut con).unwrap();
    let _: Option<String> = redis::cmd("GET").arg("missing").query(&mut con).unwrap();
    let info: String = q(&mut con, &["INFO"]);
    assert_eq!(field(&info, "keyspace_hits"), Some("1"));
    assert_eq!(field(&info, "keyspace_misses"), Some("1"));
    for section in [
        "# Server",
        "# Clients",
        "# Memory",
        "# Persistence",
        "# Stats",
        "# Replication",
        "# CPU",
        "# Keyspace",
    ] {
        assert!(
            info.contains(section),
            "{section} missing from default INFO"
        );
    }
    assert!(!info.contains("# Commandstats"));
    assert_eq!(field(&info, "redis_version"), Some("7.2.0"));
    assert_eq!(field(&info, "connected_clients"), Some("1"));
    assert!(field(&info, "used_memory").unwrap().parse::<u64>().unwrap() > 0);
    assert!(field(&info, "used_cpu_user")
        .unwrap()
        .parse::<f64>()
        .is_ok());
    assert_eq!(field(&info, "db0"), Some("keys=1,expires=0,avg_ttl=0"));
    assert!(
        field(&info, "rejected_calls")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert!(info.contains("\r\n"), "lines end in CRLF");
    // Several sections at once, any case; all / everything.
    let two: String = q(&mut con, &["INFO", "SERVER", "keyspace"]);
    assert!(
        two.starts_with("# Server\r\n") && two.contains("# Keyspace") && !two.contains("# Clients")
    );
    let stats: String = q(&mut con, &["INFO", "commandstats"]);
    assert!(stats.contains("cmdstat_set:calls=1,usec="), "{stats}");
    assert!(stats.contains("cmdstat_get:calls=2,"), "{stats}");
    let all: String = q(&mut con, &["INFO", "all"]);
    assert!(all.contains("# Commandstats") && all.contains("# Server"));
    let everything: String = q(&mut con, &["INFO", "everything"]);
    assert!(everything.contains("# Modules"));
    let none: String = q(&mut con, &["INFO", "nosuchsection"]);
    assert_eq!(none, "");
    // redis-cli renders it too.
    assert!(server
        .cli(&["INFO", "server"])
        .contains("redis_version:7.2.0"));
}

#[test]
fn config_get_and_set() {
    let server = Server::start();
    let mut con = server.client();
    let databases: Vec<String> = q(&mut con, &["CONFIG", "GET", "databases"]);
    assert_eq!(databases, vec!["databases", "16"]);
    let several: Vec<String> = q(&mut con, &["CONFIG", "GET", "save", "appendonly"]);
    assert_eq!(several, vec!["appendonly", "yes", "save", ""]);
    let pattern: Vec<String> = q(&mut con, &["CONFIG", "GET", "max*"]);
    assert_eq!(
        pattern,
        vec![
            "maxclients",
            "10000",
            "maxmemory",
            "0",
            "maxmemory-policy",
            "noeviction"
        ]
    );
    let port: Vec<String> = q(&mut con, &["CONFIG", "GET", "port"]);
    assert_eq!(port[1], server.port.to_string());
    assert_eq!(
        q::<String>(
            &mut con,
            &[
                "CONFIG",
                "SET",
                "maxclients",
                "50",
                "proto-max-bulk-len",
                "2mb"
            ]
        ),
        "OK"
    );
    assert_eq!(
        q::<Vec<String>>(&mut con, &["CONFIG", "GET", "proto-max-bulk-len"])[1],
        "2097152"
    );
    assert_eq!(
        q::<Vec<String>>(&mut con, &["CONFIG", "GET", "MAXCLIENTS"])[1],
        "50"
    );
    assert_eq!(
        err(&mut con, &["CONFIG", "SET", "nosuch", "1"]),
        "ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'"
    );
    assert_eq!(
        err(&mut con, &["CONFIG", "SET", "port", "1"]),
        "ERR CONFIG SET failed (possibly related to argument 'port') - can't set immutable config"
    );
    assert_eq!(
        err(&mut con, &["CONFIG", "SET", "maxclients", "many"]),
        "ERR CONFIG SET failed (possibly related to argument 'maxclients') - argument couldn't be parsed into an integer"
    );
    assert_eq!(
        err(&mut con, &["CONFIG", "SET", "maxclients"]),
        "ERR wrong number of arguments for 'config|set' command"
    );
    assert_eq!(
        err(&mut con, &["CONFIG", "GET"]),
        "ERR wrong number of arguments for 'config|get' command"
    );
    assert_eq!(
        err(&mut con, &["CONFIG", "BOGUS"]),
        "ERR unknown subcommand 'BOGUS'. Try CONFIG HELP."
    );
    assert_eq!(q::<String>(&mut con, &["CONFIG", "RESETSTAT"]), "OK");
    // requirepass set at run time applies to new connections.
    assert_eq!(
        q::<String>(&mut con, &["CONFIG", "SET", "requirepass", "pw"]),
        "OK"
    );
    let mut raw = server.raw();
    raw.expect(&resp(&[b"PING"]), "-NOAUTH Authentication required.\r\n");
    raw.expect(&resp(&[b"AUTH", b"pw"]), "+OK\r\n");
}

#[test]
fn command_count_info_docs() {
    let server = Server::start();
    let mut con = server.client();
    let count: i64 = q(&mut con, &["COMMAND", "COUNT"]);
    assert!(count >= 60, "{count}");
    let all: Vec<Value> = q(&mut con, &["COMMAND"]);
    assert_eq!(all.len() as i64, count);
    let info: Vec<Value> = q(&mut con, &["COMMAND", "INFO", "get", "nosuch", "DEL"]);
    assert_eq!(info[1], Value::Nil);
    let Value::Array(get) = &info[0] else {
        panic!("{info:?}")
    };
    assert_eq!(get[0], Value::BulkString(b"get".to_vec()));
    assert_eq!(get[1], Value::Int(2));
    assert_eq!(get[3], Value::Int(1));
    let Value::Array(del) = &info[2] else {
        panic!()
    };
    assert_eq!(del[1], Value::Int(-2));
    assert_eq!(del[4], Value::Int(-1));
    let docs: Value = q(&mut con, &["COMMAND", "DOCS", "expire"]);
    let Value::Array(items) = docs else {
        panic!("{docs:?}")
    };
    assert_eq!(items[0], Value::BulkString(b"expire".to_vec()));
    let text = format!("{:?}", items[1]);
    assert!(
        text.contains("\"seconds\"") && text.contains("\"XX\"") && text.contains("generic"),
        "{text}"
    );
    // Every command is documented.
    let all_docs: Vec<Value> = q(&mut con, &["COMMAND", "DOCS"]);
    assert_eq!(all_docs.len() as i64, count * 2);
    let keys: Vec<String> = q(
        &mut con,
        &["COMMAND", "GETKEYS", "MSET", "a", "1", "b", "2"],
    );
    assert_eq!(keys, vec!["a", "b"]);
    assert!(q::<Vec<String>>(&mut con, &["COMMAND", "LIST"]).contains(&"range".to_string()));
    assert_eq!(
        err(&mut con, &["COMMAND", "BOGUS"]),
        "ERR unknown subcommand 'BOGUS'. Try COMMAND HELP."
    );
    // redis-cli uses COMMAND DOCS for its hints and must not choke on ours.
    assert_eq!(server.cli(&["COMMAND", "COUNT"]).trim(), count.to_string());
}

#[test]
fn time_save_bgsave_lastsave() {
    let server = Server::start();
    let mut con = server.client();
    let (seconds, micros): (u64, u64) = q(&mut con, &["TIME"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(seconds.abs_diff(now) <= 2 && micros < 1_000_000);
    let before: i64 = q(&mut con, &["LASTSAVE"]);
    assert!(before.abs_diff(now as i64) <= 5);
    assert_eq!(q::<String>(&mut con, &["SAVE"]), "OK");
    assert_eq!(
        q::<String>(&mut con, &["BGSAVE"]),
        "Background saving started"
    );
    // "scheduled" while the first BGSAVE still runs (one more save follows it), as Redis.
    let scheduled = q::<String>(&mut con, &["BGSAVE", "SCHEDULE"]);
    assert!(
        scheduled == "Background saving started" || scheduled == "Background saving scheduled",
        "{scheduled}"
    );
    assert_eq!(err(&mut con, &["BGSAVE", "NOW"]), "ERR syntax error");
    assert!(q::<i64>(&mut con, &["LASTSAVE"]) >= before);
}

#[test]
fn debug_sleep_object_and_errors() {
    let server = Server::start();
    let mut con = server.client();
    let started = Instant::now();
    assert_eq!(q::<String>(&mut con, &["DEBUG", "SLEEP", "0.3"]), "OK");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(q::<String>(&mut con, &["DEBUG", "SLEEP", "0"]), "OK");
    // Other clients are served while one sleeps.
    let url = server.url();
    let sleeper = std::thread::spawn(move || {
        let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
        let _: String = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(1)
            .query(&mut con)
            .unwrap();
    });
    std::thread::sleep(Duration::from_millis(100));
    let pinged = Instant::now();
    assert_eq!(q::<String>(&mut con, &["PING"]), "PONG");
    assert!(pinged.elapsed() < Duration::from_millis(800));
    sleeper.join().unwrap();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("12")
        .query(&mut con)
        .unwrap();
    let object: String = q(&mut con, &["DEBUG", "OBJECT", "k"]);
    assert!(object.contains("encoding:int"), "{object}");
    assert_eq!(
        err(&mut con, &["DEBUG", "OBJECT", "nosuch"]),
        "ERR no such key"
    );
    assert_eq!(
        q::<String>(&mut con, &["DEBUG", "POPULATE", "10", "p"]),
        "OK"
    );
    assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), 11);
    assert_eq!(
        err(&mut con, &["DEBUG", "SLEEP", "x"]),
        "ERR value is not a valid float"
    );
    assert_eq!(
        err(&mut con, &["DEBUG", "BOGUS"]),
        "ERR unknown subcommand 'BOGUS'. Try DEBUG HELP."
    );
    assert_eq!(
        err(&mut con, &["DEBUG"]),
        "ERR wrong number of arguments for 'debug' command"
    );
}

#[test]
fn shutdown_closes_cleanly_and_keeps_the_data() {
    let mut server = Server::start();
    let mut con = server.client();
    let _: () = redis::cmd("SET")
        .arg("kept")
        .arg("yes")
        .query(&mut con)
        .unwrap();
    let mut raw = server.raw();
    raw.expect(
        &resp(&[b"SHUTDOWN", b"ABORT"]),
        "-ERR No shutdown in progress.\r\n",
    );
    raw.expect(&resp(&[b"SHUTDOWN", b"BOGUS"]), "-ERR syntax error\r\n");
    raw.send(&resp(&[b"SHUTDOWN", b"NOSAVE"]));
    let (reply, closed) = raw.read_to_close();
    assert_eq!(reply, "");
    assert!(closed);
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(server.log().contains("key counts"), "{}", server.log());
    server.restart();
    assert!(
        server
            .log()
            .contains("key counts loaded from the clean-shutdown record"),
        "{}",
        server.log()
    );
    let mut con = server.client();
    assert_eq!(q::<String>(&mut con, &["GET", "kept"]), "yes");
    assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), 1);
}

/// Plain SHUTDOWN and SHUTDOWN SAVE both close the engine cleanly (the WAL is the data, so
/// SAVE has nothing extra to write); contradictory options are a syntax error, as in Redis,
/// and leave the server running.
#[test]
fn shutdown_plain_and_save_and_refused_combinations() {
    let mut server = Server::start();
    for (round, options) in [&[][..], &[&b"SAVE"[..]][..]].into_iter().enumerate() {
        let mut con = server.client();
        let key = format!("written-before-shutdown-{round}");
        let _: () = q(&mut con, &["SET", &key, "yes"]);
        let mut raw = server.raw();
        for refused in [
            &[&b"SHUTDOWN"[..], b"NOSAVE", b"SAVE"][..],
            &[b"SHUTDOWN", b"save", b"nosave"],
            &[b"SHUTDOWN", b"ABORT", b"NOW"],
            &[b"SHUTDOWN", b"SAVE", b"ABORT"],
        ] {
            raw.expect(&resp(refused), "-ERR syntax error\r\n");
        }
        raw.expect(&resp(&[b"PING"]), "+PONG\r\n");
        let mut command: Vec<&[u8]> = vec![b"SHUTDOWN"];
        command.extend_from_slice(options);
        raw.send(&resp(&command));
        let (reply, closed) = raw.read_to_close();
        assert_eq!(reply, "", "SHUTDOWN {options:?} answers nothing");
        assert!(closed);
        assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
        server.restart();
        // The log accumulates over restarts: one clean-start line per round so far.
        assert_eq!(
            server
                .log()
                .matches("key counts loaded from the clean-shutdown record")
                .count(),
            round + 1,
            "SHUTDOWN {options:?} was not clean:\n{}",
            server.log()
        );
        let mut con = server.client();
        assert_eq!(q::<String>(&mut con, &["GET", &key]), "yes");
        assert_eq!(q::<i64>(&mut con, &["DBSIZE"]), round as i64 + 1);
    }
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let mut server = Server::start();
    let mut con = server.client();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut con).unwrap();
    let pid = server.pid().expect("running");
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    server.restart();
    assert!(
        server
            .log()
            .contains("key counts loaded from the clean-shutdown record"),
        "{}",
        server.log()
    );
    let mut con = server.client();
    assert_eq!(q::<String>(&mut con, &["GET", "k"]), "v");
}

/// SIGTERM the moment the server logs "Ready to accept connections" (which is when a
/// supervisor may first signal it): the handlers must already be in. They used to be installed
/// by a task that could run after that line, and the signal then killed the process (no clean
/// shutdown) in most tries on a debug build.
#[test]
fn sigterm_right_after_ready_shuts_down_cleanly() {
    for _ in 0..5 {
        let mut server = Server::start();
        let pid = server.pid().expect("running");
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
        assert_eq!(
            server.wait_exit(Duration::from_secs(10)),
            Some(0),
            "{}",
            server.log()
        );
        assert!(
            server.log().contains("ringkv is now ready to exit"),
            "{}",
            server.log()
        );
    }
}

#[test]
fn maxclients_refuses_extra_connections() {
    let server = Server::start_with(&["--maxclients", "2"]);
    let mut first = server.raw();
    first.expect(b"PING\r\n", "+PONG\r\n");
    let mut second = server.raw();
    second.expect(b"PING\r\n", "+PONG\r\n");
    let mut third = server.raw();
    let (reply, closed) = third.read_to_close();
    assert_eq!(reply, "-ERR max number of clients reached\r\n");
    assert!(closed);
    first.expect(b"PING\r\n", "+PONG\r\n");
}

#[test]
fn query_buffer_limit_disconnects_a_client_that_sends_too_much() {
    let server = Server::start();
    let mut con = server.client();
    assert_eq!(
        q::<String>(
            &mut con,
            &["CONFIG", "SET", "client-query-buffer-limit", "1mb"]
        ),
        "OK"
    );
    let mut raw = server.raw();
    raw.send(b"*2\r\n$4\r\nECHO\r\n$3000000\r\n");
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0;
    while sent < 3_000_000 {
        if std::io::Write::write_all(&mut raw.stream, &chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    let (_, closed) = raw.read_to_close();
    assert!(closed, "connection over the query buffer limit is closed");
    assert_eq!(q::<String>(&mut con, &["PING"]), "PONG");
}

/// GET `path` on the admin port: (status line, body).
fn http_get(port: u16, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

#[test]
fn admin_port_serves_health_ready_and_metrics() {
    // The test helper gives every server a free admin port (the default 9121 is shared).
    let server = Server::start();
    let admin = server.admin_port().expect("admin port in the log");
    let mut con = server.client();
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut con).unwrap();
    let (status, health) = http_get(admin, "/health");
    assert_eq!(status, "HTTP/1.0 200 OK");
    assert!(health.starts_with("{\"status\":\"alive\""), "{health}");
    assert_eq!(
        http_get(admin, "/ready"),
        (
            "HTTP/1.0 200 OK".into(),
            "{\"ready\":true,\"state\":\"serving\"}\n".into()
        )
    );
    let (status, metrics) = http_get(admin, "/metrics");
    assert_eq!(status, "HTTP/1.0 200 OK");
    assert!(metrics.contains("ringkv_keys{db=\"0\"} 1\n"), "{metrics}");
    assert!(
        metrics.contains("ringkv_command_calls_total{cmd=\"set\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE ringkv_connected_clients gauge\nringkv_connected_clients 1\n"),
        "{metrics}"
    );
    assert_eq!(http_get(admin, "/nope").0, "HTTP/1.0 404 Not Found");
}

/// A `ringkv` this test started; killed if the test fails before it exits.
struct Started(std::process::Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ringkv` with no arguments serves 127.0.0.1:6379 with its data in `./data` of its working
/// directory. Port 6379 (and the admin port) may be held by something else on a developer's
/// machine or by a concurrent run of this test: the test retries for two minutes, then fails
/// saying so, and never touches a process it did not start.
#[test]
fn no_arguments_serve_loopback_6379_with_data_in_the_working_directory() {
    use std::io::BufRead;
    let cwd = tempfile::tempdir().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut server, log) = loop {
        let mut child = std::process::Command::new(common::binary())
            .current_dir(cwd.path())
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn ringkv");
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stderr).lines() {
                    let line = line.unwrap_or_default();
                    if line.contains("Ready to accept connections") {
                        let _ = ready_tx.send(line.clone());
                    }
                    log.lock().unwrap().push_str(&line);
                    log.lock().unwrap().push('\n');
                }
            });
        }
        let server = Started(child);
        match ready_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => {
                assert!(line.contains("addr=127.0.0.1:6379"), "{line}");
                break (server, log);
            }
            Err(_) => {
                drop(server);
                let text = log.lock().unwrap().clone();
                assert!(
                    text.contains("cannot listen") && Instant::now() < deadline,
                    "ringkv with no arguments did not start (is 127.0.0.1:6379 or the admin \
                     port held by another process?); log:\n{text}"
                );
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    };
    // Our child bound 6379, so this connection reaches it and nothing else.
    let mut raw = common::Raw::connect(6379);
    raw.check(&[
        ("CONFIG GET port", r#"["port", "6379"]"#),
        ("CONFIG GET bind", r#"["bind", "127.0.0.1"]"#),
        ("SET default-run yes", "+OK"),
    ]);
    raw.send(&resp(&[b"SHUTDOWN"]));
    let (_, closed) = raw.read_to_close();
    assert!(closed);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "ringkv did not exit after SHUTDOWN"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{}", log.lock().unwrap());
    // The data lives in ./data of the working directory: the engine's files are there.
    let data = cwd.path().join("data");
    assert!(
        data.join("CURRENT").is_file(),
        "no engine files in {data:?}"
    );
}
