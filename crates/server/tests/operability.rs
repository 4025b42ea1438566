//! Operability over the wire, against the real binary: CONFIG REWRITE across a restart, no
//! secret in SLOWLOG or the log, SLOWLOG and LATENCY, one log line per notable event, and a
//! graceful SIGTERM.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{config_get, q, render, Server};

/// Connects with `password` as the default user's.
fn client_with_password(server: &Server, password: &str) -> redis::Connection {
    redis::Client::open(format!("redis://:{password}@127.0.0.1:{}/", server.port))
        .unwrap()
        .get_connection()
        .unwrap()
}

/// Waits (at most 10 s) until the server's log has `count` lines containing `needle`: the log is
/// copied from its stderr by a thread, so a line may trail the reply that followed it. Panics
/// when they never come, so checks on the log after it never run on a partial one.
fn wait_for_lines(server: &Server, needle: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while lines_with(&server.log(), needle) < count {
        assert!(
            Instant::now() < deadline,
            "fewer than {count} log lines with {needle:?}:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lines of `log` containing `needle`.
fn lines_with(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// CONFIG SET of every live setting, REPLICAOF, CONFIG REWRITE, restart on the rewritten file:
/// CONFIG GET answers the same values. The file starts with a key the rewrite does not manage
/// (kept) and a snake_case key (written back once, in kebab-case: a duplicate would refuse to
/// start).
#[test]
fn config_rewrite_saves_live_settings_across_a_restart() {
    let leader = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ringkv.toml");
    std::fs::write(
        &file,
        "# comments are not kept\nmemtable-bytes-max = 8388608\nslowlog_max_len = 50\n",
    )
    .unwrap();
    let mut server = Server::start_with(&["--config", file.to_str().unwrap()]);
    let mut con = server.client();
    let settings = [
        ("maxclients", "123"),
        ("timeout", "7"),
        ("slowlog-log-slower-than", "555"),
        ("slowlog-max-len", "9"),
        ("latency-monitor-threshold", "3"),
        ("maxmemory", "1000000000"),
        ("proto-max-bulk-len", "2000000"),
        ("proto-max-args", "77"),
        ("client-query-buffer-limit", "2000000"),
        ("client-output-buffer-limit", "normal 3000000 0 0"),
        ("protected-mode", "no"),
        ("appendfsync", "always"),
        ("masterauth", "leader-secret"),
        ("masteruser", "replicator"),
        ("repl-backlog-size", "2000000"),
        ("min-replicas-to-write", "2"),
        ("min-replicas-max-lag", "5"),
        ("replica-read-only", "no"),
        ("requirepass", "rewrite-secret"),
    ];
    for (name, value) in settings {
        let _: () = q(&mut con, &["CONFIG", "SET", name, value]);
    }
    let mut con = client_with_password(&server, "rewrite-secret");
    let leader_addr = format!("127.0.0.1 {}", leader.port);
    let _: () = q(
        &mut con,
        &["REPLICAOF", "127.0.0.1", &leader.port.to_string()],
    );
    let _: () = q(&mut con, &["CONFIG", "REWRITE"]);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("memtable-bytes-max = 8388608"), "{text}");
    assert!(!text.contains("slowlog_max_len"), "{text}");
    // The test helper's `--loglevel info` beats the file after the restart, so the file is read.
    let _: () = q(&mut con, &["CONFIG", "SET", "loglevel", "warning"]);
    let _: () = q(&mut con, &["CONFIG", "REWRITE"]);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("loglevel = \"warning\""), "{text}");

    server.restart();
    let mut con = client_with_password(&server, "rewrite-secret");
    let mut wrong = Vec::new();
    for (name, value) in settings {
        let got = config_get(&mut con, name);
        if got != value {
            wrong.push(format!("{name}: {got:?}, set {value:?}"));
        }
    }
    let replicaof = config_get(&mut con, "replicaof");
    if replicaof != leader_addr {
        wrong.push(format!("replicaof: {replicaof:?}, set {leader_addr:?}"));
    }
    assert!(wrong.is_empty(), "after restart: {wrong:?}\nfile:\n{text}");

    // A leader again: the rewrite drops the key rather than keep a stale link.
    let _: () = q(&mut con, &["REPLICAOF", "NO", "ONE"]);
    let _: () = q(&mut con, &["CONFIG", "REWRITE"]);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("replicaof"), "{text}");
}

/// Passwords given to AUTH, HELLO AUTH, ACL SETUSER and CONFIG SET requirepass / masterauth
/// never reach SLOWLOG GET or the log (at debug level, every command slow): SLOWLOG shows
/// `(redacted)` and has no AUTH entry, as Redis.
#[test]
fn secrets_never_reach_slowlog_or_the_log() {
    let server = Server::start_with(&["--loglevel", "debug", "--slowlog-log-slower-than", "0"]);
    let mut raw = server.raw();
    let steps: &[(&[&str], &str)] = &[
        (&["CONFIG", "SET", "requirepass", "s3cret-rp"], "+OK"),
        (
            &["AUTH", "s3cret-wrong"],
            "-WRONGPASS invalid username-password pair or user is disabled.",
        ),
        (&["AUTH", "s3cret-rp"], "+OK"),
        (&["AUTH", "default", "s3cret-rp"], "+OK"),
        (
            &["ACL", "SETUSER", "bob", "on", ">s3cret-acl", "~*", "+@all"],
            "+OK",
        ),
        (
            &[
                "CONFIG",
                "SET",
                "masterauth",
                "s3cret-ma",
                "maxclients",
                "99",
            ],
            "+OK",
        ),
        (&["SLOWLOG", "LEN"], ""),
    ];
    for (args, expected) in steps {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let reply = render(&raw.call_args(&args));
        if !expected.is_empty() {
            assert_eq!(&reply, expected, "{args:?}");
        }
    }
    // HELLO with AUTH as another user, on RESP3.
    let reply = render(&raw.call_args(&[
        b"HELLO",
        b"3",
        b"AUTH",
        b"bob",
        b"s3cret-acl",
        b"SETNAME",
        b"op",
    ]));
    assert!(reply.contains("\"proto\": :3"), "{reply}");
    let slowlog = render(&raw.call_args(&[b"SLOWLOG", b"GET", b"-1"]));
    assert!(!slowlog.contains("s3cret"), "{slowlog}");
    assert!(
        !slowlog.contains("[\"AUTH\""),
        "AUTH is not logged: {slowlog}"
    );
    for kept in [
        r#"["CONFIG", "SET", "requirepass", "(redacted)"]"#,
        r#"["ACL", "SETUSER", "(redacted)", "(redacted)", "(redacted)", "(redacted)", "(redacted)"]"#,
        r#"["CONFIG", "SET", "masterauth", "(redacted)", "maxclients", "99"]"#,
        r#"["HELLO", "3", "AUTH", "(redacted)", "(redacted)", "SETNAME", "op"]"#,
    ] {
        assert!(slowlog.contains(kept), "{kept} missing from {slowlog}");
    }
    // SLOWLOG LEN and GET are the last lines (every command is slow).
    wait_for_lines(&server, "command=SLOWLOG", 2);
    let log = server.log();
    assert!(
        log.contains("slow command"),
        "commands are logged as slow:\n{log}"
    );
    assert!(log.contains("AUTH failed"), "{log}");
    assert!(!log.contains("s3cret"), "a secret reached the log:\n{log}");
}

/// SLOWLOG GET (entry shape, newest first, count), LEN, RESET and the length limit; a command
/// below the threshold is not logged, one above it is, with one log line.
#[test]
fn slowlog_get_len_reset() {
    let server = Server::start_with(&["--slowlog-log-slower-than", "100000"]);
    let mut con = server.client();
    let _: () = q(&mut con, &["CLIENT", "SETNAME", "slowpoke"]);
    let _: () = q(&mut con, &["SET", "k", "v"]);
    let _: () = q(&mut con, &["DEBUG", "SLEEP", "0.2"]);
    assert_eq!(
        q::<i64>(&mut con, &["SLOWLOG", "LEN"]),
        1,
        "only DEBUG SLEEP"
    );
    let mut raw = server.raw();
    let entries = raw.call_args(&[b"SLOWLOG", b"GET"]);
    let ringkv_protocol::Frame::Array(entries) = entries else {
        panic!("{entries:?}")
    };
    let ringkv_protocol::Frame::Array(entry) = &entries[0] else {
        panic!("{entries:?}")
    };
    assert_eq!(entry.len(), 6, "id, time, micros, args, peer, name");
    assert!(matches!(entry[2], ringkv_protocol::Frame::Integer(us) if us >= 200_000));
    assert_eq!(render(&entry[3]), r#"["DEBUG", "SLEEP", "0.2"]"#);
    assert!(render(&entry[4]).starts_with("\"127.0.0.1:"));
    assert_eq!(render(&entry[5]), "\"slowpoke\"");
    wait_for_lines(&server, "slow command", 1);
    assert_eq!(
        lines_with(&server.log(), "slow command"),
        1,
        "{}",
        server.log()
    );

    // Every command slow, at most three kept, newest first.
    let _: () = q(&mut con, &["CONFIG", "SET", "slowlog-log-slower-than", "0"]);
    let _: () = q(&mut con, &["CONFIG", "SET", "slowlog-max-len", "3"]);
    for key in ["a", "b", "c", "d"] {
        let _: () = q(&mut con, &["SET", key, "1"]);
    }
    assert_eq!(q::<i64>(&mut con, &["SLOWLOG", "LEN"]), 3);
    let newest = render(&raw.call_args(&[b"SLOWLOG", b"GET", b"2"]));
    assert!(
        newest.contains(r#"["SLOWLOG", "LEN"]"#) && newest.contains(r#"["SET", "d", "1"]"#),
        "{newest}"
    );
    assert!(!newest.contains(r#""c""#), "count 2: {newest}");
    // RESET empties it; the RESET itself is then the only (slow) entry, as in Redis.
    let _: () = q(&mut con, &["SLOWLOG", "RESET"]);
    let after = render(&raw.call_args(&[b"SLOWLOG", b"GET", b"-1"]));
    assert_eq!(after.matches("[\"SLOWLOG\"").count(), 1, "{after}");
    assert!(after.contains(r#"["SLOWLOG", "RESET"]"#), "{after}");
    assert!(render(&raw.call_args(&[b"SLOWLOG", b"GET", b"-2"])).starts_with("-ERR count"));
}

/// LATENCY LATEST / HISTORY / RESET / HISTOGRAM / DOCTOR: a command above the threshold is a
/// sample of the `command` event.
#[test]
fn latency_monitor_records_slow_commands() {
    let server = Server::start();
    let mut con = server.client();
    let mut raw = server.raw();
    assert_eq!(render(&raw.call_args(&[b"LATENCY", b"LATEST"])), "[]");
    let doctor: String = q(&mut con, &["LATENCY", "DOCTOR"]);
    assert!(doctor.contains("no latency spike"), "{doctor}");
    let _: () = q(
        &mut con,
        &["CONFIG", "SET", "latency-monitor-threshold", "50"],
    );
    let _: () = q(&mut con, &["SET", "fast", "1"]);
    let _: () = q(&mut con, &["DEBUG", "SLEEP", "0.1"]);
    let latest: Vec<(String, i64, i64, i64)> = q(&mut con, &["LATENCY", "LATEST"]);
    assert_eq!(latest.len(), 1, "{latest:?}");
    let (event, when, ms, max) = latest[0].clone();
    assert_eq!(event, "command");
    assert!(ms >= 100 && max >= ms, "{latest:?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - when).abs() < 60, "{when} vs {now}");
    let history: Vec<(i64, i64)> = q(&mut con, &["LATENCY", "HISTORY", "command"]);
    assert_eq!(
        history.len(),
        1,
        "the fast SET is not a sample: {history:?}"
    );
    let histogram = render(&raw.call_args(&[b"LATENCY", b"HISTOGRAM", b"set"]));
    // RESP2 renders the maps as flat arrays.
    assert!(
        histogram.starts_with("[\"set\", [\"calls\", :1, \"histogram_usec\", [:"),
        "{histogram}"
    );
    assert_eq!(q::<i64>(&mut con, &["LATENCY", "RESET"]), 1);
    assert_eq!(render(&raw.call_args(&[b"LATENCY", b"LATEST"])), "[]");
}

/// One info line per notable event: start, ready, flush, compaction, slow command, client
/// rejected. Flush and compaction lines are counted against INFO's counters.
#[test]
fn notable_events_log_one_line_each() {
    let server = Server::start_with(&[
        "--memtable-bytes-max",
        "65536",
        "--slowlog-log-slower-than",
        "100000",
    ]);
    let mut con = server.client();
    let value = "v".repeat(1000);
    for batch in 0..40 {
        let mut mset = vec!["MSET".to_string()];
        for i in 0..50 {
            mset.push(format!("key:{batch}:{i}"));
            mset.push(value.clone());
        }
        let args: Vec<&str> = mset.iter().map(String::as_str).collect();
        let _: () = q(&mut con, &args);
    }
    let _: () = q(&mut con, &["DEBUG", "SLEEP", "0.15"]);
    let _: () = q(&mut con, &["CONFIG", "SET", "maxclients", "1"]);
    let mut refused = server.raw();
    let (reply, _) = refused.read_to_close();
    wait_for_lines(&server, "refused a client: maxclients reached", 1);
    wait_for_lines(&server, "slow command", 1);
    assert_eq!(reply, "-ERR max number of clients reached\r\n");
    let _: () = q(&mut con, &["CONFIG", "SET", "maxclients", "100"]);

    // Background flushes and compactions may still be finishing: wait until INFO and the log
    // agree (a counter is bumped just before its line is written).
    let deadline = Instant::now() + Duration::from_secs(20);
    let (flushes, compactions, log) = loop {
        let info: String = q(&mut con, &["INFO", "engine"]);
        let field = |name: &str| -> usize {
            info.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}:")))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        let (flushes, compactions) = (field("flushes"), field("compactions"));
        let log = server.log();
        let agree = lines_with(&log, "memtable flushed") == flushes
            && lines_with(&log, "compaction finished") == compactions;
        if agree || Instant::now() > deadline {
            break (flushes, compactions, log);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        flushes >= 10 && compactions >= 1,
        "{flushes} flushes, {compactions} compactions"
    );
    let info_lines = |needle: &str| {
        log.lines()
            .filter(|l| l.contains(needle) && l.contains(" INFO "))
            .count()
    };
    assert_eq!(info_lines("memtable flushed"), flushes, "{log}");
    assert_eq!(info_lines("compaction finished"), compactions, "{log}");
    assert_eq!(info_lines("starting ringkv"), 1, "{log}");
    assert_eq!(
        lines_with(&log, "Ready to accept connections tcp"),
        1,
        "{log}"
    );
    // Ready is said once: the admin port's own "recovery finished" note is below info.
    assert_eq!(lines_with(&log, "recovery finished"), 0, "{log}");
    assert_eq!(info_lines("slow command"), 1, "{log}");
    assert_eq!(
        lines_with(&log, "refused a client: maxclients reached"),
        1,
        "{log}"
    );
}

/// SIGTERM while DEBUG SLEEP 1 runs: the listener closes at once (new connections refused),
/// the command still gets its reply, the process exits 0 after a clean close (the write made
/// before is there after a restart, and the clean-shutdown record is used).
#[test]
fn sigterm_finishes_the_command_in_flight_and_exits_zero() {
    let mut server = Server::start();
    let mut con = server.client();
    let _: () = q(&mut con, &["SET", "before", "sigterm"]);
    let mut sleeper = server.raw();
    sleeper.send(&common::resp(&[b"DEBUG", b"SLEEP", b"1"]));
    std::thread::sleep(Duration::from_millis(200));
    let status = Command::new("kill")
        .args(["-TERM", &server.pid().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let sent = Instant::now();
    let port = server.port;
    loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Err(error) => {
                assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
                break;
            }
            Ok(_) => {
                assert!(
                    sent.elapsed() < Duration::from_millis(700),
                    "still accepting connections after SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    assert!(server.is_running(), "refused while the command still ran");
    assert_eq!(render(&sleeper.read_frame()), "+OK");
    assert_eq!(server.wait_exit(Duration::from_secs(20)), Some(0));
    wait_for_lines(&server, "ready to exit", 1);
    let log = server.log();
    assert!(log.contains("received a termination signal"), "{log}");
    assert!(log.contains("ready to exit"), "{log}");
    server.restart();
    let mut con = server.client();
    assert_eq!(q::<String>(&mut con, &["GET", "before"]), "sigterm");
    assert!(
        server
            .log()
            .contains("key counts loaded from the clean-shutdown record"),
        "{}",
        server.log()
    );
}

/// The value of `field` in `INFO engine`.
fn engine_field(con: &mut redis::Connection, field: &str) -> u64 {
    common::info_field(con, "engine", field).parse().unwrap()
}

/// `row-cache-bytes` sizes the row cache (INFO shows it), reads of written keys are answered by
/// it, and 0 turns it off without changing any answer.
#[test]
fn row_cache_size_is_a_setting_and_off_changes_no_answer() {
    for (args, capacity) in [
        (&["--row-cache-bytes", "1048576"][..], 1 << 20),
        (&["--row-cache-bytes", "0"][..], 0),
    ] {
        let server = Server::start_with(args);
        let mut con = server.client();
        assert_eq!(engine_field(&mut con, "row_cache_capacity"), capacity);
        for i in 0..200 {
            let _: () = redis::cmd("SET")
                .arg(format!("k{i}"))
                .arg(i)
                .query(&mut con)
                .unwrap();
        }
        let _: () = redis::cmd("DEL").arg("k7").query(&mut con).unwrap();
        for i in 0..200 {
            let got: Option<i64> = redis::cmd("GET")
                .arg(format!("k{i}"))
                .query(&mut con)
                .unwrap();
            assert_eq!(got, (i != 7).then_some(i), "k{i} with capacity {capacity}");
        }
        let hits = engine_field(&mut con, "row_cache_hits");
        if capacity > 0 {
            assert!(
                hits >= 199,
                "written keys are read from the row cache: {hits}"
            );
            assert!(engine_field(&mut con, "row_cache_bytes") > 0);
        } else {
            assert_eq!(hits, 0);
            assert_eq!(engine_field(&mut con, "row_cache_bytes"), 0);
        }
    }
}
