//! Plain SETs and INCR, DECR, INCRBY, DECRBY pipelined on one connection run as one write (a
//! write run, docs/server.md, "Write runs"): against the real binary over TCP, a pipeline
//! that mixes them with each other and with commands on the same keys gets Redis' replies in
//! order; DBSIZE, expiry, MULTI, WATCH, ACL refusals, statistics, a restart and a replica see
//! every command as if it had run alone, and concurrent pipelined INCRs lose no update.
//!
//! Each pipeline is sent in one write (`Raw::check_pipelined`), so the server reads it in one
//! batch and the SETs and INCRs between the other commands form runs.

mod common;

use std::time::{Duration, Instant};

use common::{q, render, resp, Server};

#[test]
fn pipelined_sets_between_commands_on_the_same_keys_answer_as_redis() {
    let server = Server::start();
    let mut raw = server.raw();
    let long_key = "k".repeat(2000);
    let set_long = format!("SET {long_key} long");
    let get_long = format!("GET {long_key}");
    // Replies as Redis 7 gives them for the same pipeline.
    raw.check_pipelined(&[
        ("SET a 1", "+OK"),
        ("SET a 2", "+OK"),
        ("GET a", "\"2\""),
        ("SET n 5", "+OK"),
        ("INCR n", ":6"),
        ("SET n 10", "+OK"),
        ("SET n 20", "+OK"),
        ("INCRBY n 2", ":22"),
        ("SET e v", "+OK"),
        ("EXPIRE e 100", ":1"),
        ("TTL e", ":100|:99"),
        ("SET e w", "+OK"),
        ("TTL e", ":-1"),
        ("GET e", "\"w\""),
        ("SET d x", "+OK"),
        ("DEL d", ":1"),
        ("EXISTS d", ":0"),
        ("SET d y", "+OK"),
        ("SET x 1 PX 100000", "+OK"),
        ("SET x 2", "+OK"),
        ("PTTL x", ":-1"),
        ("SET m a", "+OK"),
        ("APPEND m b", ":2"),
        ("SET w 1", "+OK"),
        ("SET w", "-ERR wrong number of arguments for 'set' command"),
        ("SET w 2", "+OK"),
        ("GET w", "\"2\""),
        ("SET t 1", "+OK"),
        (
            "NOSUCHCMD t x",
            "-ERR unknown command 'NOSUCHCMD', with args beginning with: 't' 'x' ",
        ),
        ("SET t 2", "+OK"),
        (&set_long, "+OK"),
        ("SET after-long 1", "+OK"),
        (&get_long, "\"long\""),
        ("SET u 1", "+OK"),
        ("SELECT 1", "+OK"),
        ("SET u 2", "+OK"),
        ("SELECT 0", "+OK"),
        ("GET u", "\"1\""),
        ("SET g 1", "+OK"),
        ("GETDEL g", "\"1\""),
        ("SET g 2", "+OK"),
        ("SET g 3", "+OK"),
        // a, n, e, d, x, m, w, t, the long key, after-long, u, g.
        ("DBSIZE", ":12"),
        ("GET g", "\"3\""),
        ("GET m", "\"ab\""),
    ]);
    raw.check_pipelined(&[("SELECT 1", "+OK"), ("DBSIZE", ":1"), ("GET u", "\"2\"")]);
}

#[test]
fn a_long_pipeline_of_sets_keeps_dbsize_exact_across_a_restart() {
    let mut server = Server::start();
    let mut raw = server.raw();
    // Keys with an expiry first: the SETs below clear it (and its index entry).
    let mut request = Vec::new();
    for i in 0..100 {
        request.extend_from_slice(&resp(&[
            b"SET",
            format!("key:{i}").as_bytes(),
            b"old",
            b"EX",
            b"1000",
        ]));
    }
    // 3 000 SETs over 700 keys, in runs longer than one commit of a run holds.
    for i in 0..3000 {
        let key = format!("key:{}", (i * 13) % 700);
        request.extend_from_slice(&resp(&[b"SET", key.as_bytes(), i.to_string().as_bytes()]));
    }
    request.extend_from_slice(&resp(&[b"DBSIZE"]));
    raw.send(&request);
    for i in 0..3100 {
        assert_eq!(render(&raw.read_frame()), "+OK", "reply {i}");
    }
    assert_eq!(render(&raw.read_frame()), ":700");
    let mut con = server.client();
    for key in 0..700 {
        // The last of the SETs that named the key: i with (13 i) mod 700 == key.
        let last = (0..3000).rev().find(|i| (i * 13) % 700 == key).unwrap();
        let value: String = q(&mut con, &["GET", &format!("key:{key}")]);
        assert_eq!(value, last.to_string(), "key:{key}");
        let ttl: i64 = q(&mut con, &["TTL", &format!("key:{key}")]);
        assert_eq!(ttl, -1, "key:{key} kept an expiry");
    }
    let stats: String = q(&mut con, &["INFO", "commandstats"]);
    assert!(
        stats.contains("cmdstat_set:calls=3100,"),
        "every SET counts once:\n{stats}"
    );
    server.restart();
    let mut con = server.client();
    let size: i64 = q(&mut con, &["DBSIZE"]);
    assert_eq!(size, 700);
    let value: String = q(&mut con, &["GET", "key:0"]);
    assert_eq!(value, "2800");
}

#[test]
fn sets_around_multi_and_a_watch_elsewhere() {
    let server = Server::start();
    let mut watcher = server.raw();
    watcher.check(&[("SET k 0", "+OK"), ("WATCH k", "+OK")]);
    let mut raw = server.raw();
    raw.check_pipelined(&[
        ("SET a 1", "+OK"),
        ("MULTI", "+OK"),
        ("SET a 2", "+QUEUED"),
        ("GET a", "+QUEUED"),
        ("EXEC", "[+OK, \"2\"]"),
        ("SET a 3", "+OK"),
        ("SET k 1", "+OK"),
        ("GET a", "\"3\""),
    ]);
    // The SET of k in a run touched the watched key: the transaction fails, as in Redis.
    watcher.check(&[
        ("MULTI", "+OK"),
        ("SET k 2", "+QUEUED"),
        ("EXEC", "nil"),
        ("GET k", "\"1\""),
    ]);
}

#[test]
fn a_set_refused_in_the_middle_of_a_run_fails_alone() {
    let server = Server::start();
    let mut admin = server.raw();
    admin.check(&[("ACL SETUSER writer on >pw ~allowed:* +@all", "+OK")]);
    let mut raw = server.raw();
    raw.check_pipelined(&[
        ("AUTH writer pw", "+OK"),
        ("SET allowed:1 a", "+OK"),
        ("SET other b", "-NOPERM No permissions to access a key"),
        ("SET allowed:2 c", "+OK"),
        ("GET allowed:1", "\"a\""),
        ("GET allowed:2", "\"c\""),
    ]);
    admin.check(&[("EXISTS other", ":0"), ("DBSIZE", ":2")]);
}

#[test]
fn a_replica_gets_every_set_of_a_run() {
    let leader = Server::start();
    let target = format!("127.0.0.1 {}", leader.port);
    let replica = Server::start_with(&["--replicaof", &target]);
    let mut raw = leader.raw();
    let mut request = Vec::new();
    for i in 0..2000 {
        let key = format!("r:{}", i % 500);
        request.extend_from_slice(&resp(&[b"SET", key.as_bytes(), i.to_string().as_bytes()]));
    }
    raw.send(&request);
    for _ in 0..2000 {
        assert_eq!(render(&raw.read_frame()), "+OK");
    }
    let mut con = replica.client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let size: i64 = q(&mut con, &["DBSIZE"]);
        let last: Option<String> = q(&mut con, &["GET", "r:499"]);
        if size == 500 && last.as_deref() == Some("1999") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replica at {size} keys, r:499 = {last:?}; log:\n{}",
            replica.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for key in [0, 1, 250, 498] {
        let value: String = q(&mut con, &["GET", &format!("r:{key}")]);
        assert_eq!(value, (1500 + key).to_string(), "r:{key}");
    }
}

#[test]
fn pipelined_increments_read_what_the_run_wrote_before_them() {
    let server = Server::start();
    let mut raw = server.raw();
    raw.check_pipelined(&[
        ("SET a 1", "+OK"),
        ("INCR a", ":2"),
        ("INCR a", ":3"),
        ("SET a x", "+OK"),
        ("INCR a", "-ERR value is not an integer or out of range"),
        ("INCRBY b 5", ":5"),
        ("DECR b", ":4"),
        ("DECRBY b x", "-ERR value is not an integer or out of range"),
        ("SET c 9223372036854775807", "+OK"),
        ("INCR c", "-ERR increment or decrement would overflow"),
        ("DECR new", ":-1"),
        ("INCR new", ":0"),
        ("GET a", "\"x\""),
        ("GET b", "\"4\""),
        ("SET e 1", "+OK"),
        ("EXPIRE e 100", ":1"),
        ("INCR e", ":2"),
        ("INCR e", ":3"),
        // INCR keeps the expiry, SET clears it.
        ("TTL e", ":100|:99"),
        ("SET e 5", "+OK"),
        ("INCR e", ":6"),
        ("TTL e", ":-1"),
        ("SET x 1 PX 100000", "+OK"),
        ("INCR x", ":2"),
        ("INCR x", ":3"),
        ("SET x 7", "+OK"),
        ("INCR x", ":8"),
        ("PTTL x", ":-1"),
        // a, b, c, new, e, x.
        ("DBSIZE", ":6"),
    ]);
    let mut con = server.client();
    let stats: String = q(&mut con, &["INFO", "commandstats"]);
    for expected in [
        "cmdstat_incr:calls=11,",
        "failed_calls=2\r\ncmdstat_decr:",
        "cmdstat_decrby:calls=1,",
    ] {
        assert!(stats.contains(expected), "{expected} in:\n{stats}");
    }
}

#[test]
fn concurrent_pipelined_increments_lose_no_update() {
    let server = Server::start();
    let threads: Vec<_> = (0..4)
        .map(|thread| {
            let mut raw = server.raw();
            std::thread::spawn(move || {
                for round in 0..50 {
                    let mut request = Vec::new();
                    for i in 0..100 {
                        let key = format!("counter:{}", (thread + round + i) % 10);
                        request.extend_from_slice(&resp(&[b"INCR", key.as_bytes()]));
                    }
                    raw.send(&request);
                    for _ in 0..100 {
                        let reply = render(&raw.read_frame());
                        assert!(reply.starts_with(':'), "{reply}");
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let mut con = server.client();
    let mut total = 0i64;
    for key in 0..10 {
        let value: i64 = q(&mut con, &["GET", &format!("counter:{key}")]);
        total += value;
    }
    assert_eq!(total, 4 * 50 * 100);
    let size: i64 = q(&mut con, &["DBSIZE"]);
    assert_eq!(size, 10);
}
