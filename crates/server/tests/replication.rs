//! Replication with real processes: a leader and two replicas, full and partial
//! sync, WAIT, failover, READONLY / NOREPLICAS, expiry (docs/replication.md).
//!
//! `REPLICATION_WRITES` scales the load test (default 100000; the 1 million with
//! `REPLICATION_WRITES=1000000 cargo nextest run -E 'test(/replication/)' --run-ignored all`).

mod common;

use std::time::{Duration, Instant};

use common::{err, Server};
use redis::Connection;

/// How long a replica may take to catch up in these tests.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);

fn info_field(con: &mut Connection, field: &str) -> Option<String> {
    let info: String = redis::cmd("INFO").arg("replication").query(con).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

fn replica_of(leader: &Server, extra: &[&str]) -> Server {
    let target = format!("127.0.0.1 {}", leader.port);
    let mut args = vec!["--replicaof", &target];
    args.extend_from_slice(extra);
    Server::start_with(&args)
}

/// Waits until `replica` applied everything `leader` committed.
fn wait_caught_up(leader: &Server, replica: &Server) {
    let mut l = leader.client();
    let mut r = replica.client();
    let deadline = Instant::now() + CATCH_UP_TIMEOUT;
    loop {
        let target: u64 = info_field(&mut l, "master_repl_offset")
            .unwrap()
            .parse()
            .unwrap();
        let up = info_field(&mut r, "master_link_status").as_deref() == Some("up");
        let applied: u64 = info_field(&mut r, "slave_repl_offset")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if up && applied >= target {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "replica stuck at {applied} of {target} (up: {up}); log:\n{}",
            replica.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every key of db 0 in order with its value and absolute expiry.
fn dump(server: &Server) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
    let mut con = server.client();
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, page): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(&mut con)
            .unwrap();
        keys.extend(page);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(1000) {
        let mut pipe = redis::pipe();
        for key in chunk {
            pipe.cmd("GET").arg(key).cmd("PEXPIRETIME").arg(key);
        }
        let values: Vec<redis::Value> = pipe.query(&mut con).unwrap();
        for (key, pair) in chunk.iter().zip(values.chunks(2)) {
            let value: Vec<u8> = redis::from_redis_value(&pair[0]).unwrap_or_default();
            let at: i64 = redis::from_redis_value(&pair[1]).unwrap();
            out.push((key.clone(), value, at));
        }
    }
    out
}

fn writes() -> usize {
    std::env::var("REPLICATION_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

/// Writes `n` commands from `threads` clients: SET, SET PX (far future), DEL, INCR.
fn load(leader: &Server, n: usize, threads: usize, tag: &str) {
    std::thread::scope(|scope| {
        for t in 0..threads {
            let url = leader.url();
            let tag = tag.to_string();
            scope.spawn(move || {
                let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
                let per = n / threads;
                for start in (0..per).step_by(1000) {
                    let mut pipe = redis::pipe();
                    for i in start..(start + 1000).min(per) {
                        let key = format!("{tag}:{}", (i * 7 + t) % (per / 2 + 1));
                        match i % 10 {
                            0 => pipe.cmd("DEL").arg(&key),
                            1 => pipe
                                .cmd("SET")
                                .arg(&key)
                                .arg(i)
                                .arg("PX")
                                .arg(3_600_000 + i),
                            2 => pipe.cmd("INCR").arg(format!("{tag}:counter:{t}")),
                            _ => pipe.cmd("SET").arg(&key).arg(format!("v{t}-{i}")),
                        };
                    }
                    pipe.query::<()>(&mut con).unwrap();
                }
            });
        }
    });
}

fn load_test(n: usize) {
    let leader = Server::start();
    let r1 = replica_of(&leader, &[]);
    let r2 = replica_of(&leader, &[]);
    let started = Instant::now();
    load(&leader, n, 4, "k");
    let elapsed = started.elapsed();
    wait_caught_up(&leader, &r1);
    wait_caught_up(&leader, &r2);
    eprintln!(
        "{n} writes in {elapsed:?}; replicas caught up {:?} later",
        started.elapsed() - elapsed
    );
    let expected = dump(&leader);
    assert!(expected.len() > n / 10, "only {} keys", expected.len());
    assert!(dump(&r1) == expected, "replica 1 differs from the leader");
    assert!(dump(&r2) == expected, "replica 2 differs from the leader");
    let dbsize = |s: &Server| -> i64 { redis::cmd("DBSIZE").query(&mut s.client()).unwrap() };
    assert_eq!(dbsize(&r1), dbsize(&leader), "replica key count");
    assert_eq!(dbsize(&r2), dbsize(&leader), "replica key count");
}

#[test]
fn replication_two_replicas_converge_under_load() {
    load_test(writes());
}

#[test]
#[ignore = "1 million writes: minutes on a shared machine"]
fn replication_two_replicas_converge_one_million_writes() {
    load_test(1_000_000);
}

#[test]
fn replication_replica_restart_partial_then_full_resync() {
    let leader = Server::start_with(&["--repl-backlog-size", "1048576"]);
    let mut replica = replica_of(&leader, &[]);
    load(&leader, 5_000, 1, "a");
    wait_caught_up(&leader, &replica);
    // Short absence: the leader's backlog still holds what it missed.
    replica.kill();
    load(&leader, 2_000, 1, "b");
    replica.restart();
    wait_caught_up(&leader, &replica);
    assert!(
        replica.log().contains("partial resync accepted"),
        "log:\n{}",
        replica.log()
    );
    assert_eq!(
        info_field(&mut replica.client(), "sync_full").as_deref(),
        Some("0")
    );
    assert_eq!(dump(&replica), dump(&leader));
    // Long absence: far more than 1 MiB of writes pushes its sequence out of the backlog.
    replica.kill();
    let mut con = leader.client();
    let big = "x".repeat(64 * 1024);
    for i in 0..64 {
        redis::cmd("SET")
            .arg(format!("big:{i}"))
            .arg(&big)
            .query::<()>(&mut con)
            .unwrap();
    }
    replica.restart();
    wait_caught_up(&leader, &replica);
    assert!(
        replica.log().contains("full sync done"),
        "log:\n{}",
        replica.log()
    );
    assert_eq!(
        info_field(&mut replica.client(), "sync_full").as_deref(),
        Some("1")
    );
    assert_eq!(dump(&replica), dump(&leader));
}

#[test]
fn replication_wait_then_leader_killed_keeps_acknowledged_writes() {
    let mut leader = Server::start();
    let r1 = replica_of(&leader, &[]);
    let r2 = replica_of(&leader, &[]);
    wait_caught_up(&leader, &r1);
    wait_caught_up(&leader, &r2);
    let mut con = leader.client();
    for i in 0..500 {
        redis::cmd("SET")
            .arg(format!("w:{i}"))
            .arg(i)
            .query::<()>(&mut con)
            .unwrap();
    }
    let acked: i64 = redis::cmd("WAIT").arg(2).arg(1000).query(&mut con).unwrap();
    assert_eq!(acked, 2);
    leader.kill();
    for replica in [&r1, &r2] {
        let mut c = replica.client();
        for i in [0, 250, 499] {
            let v: Option<i64> = redis::cmd("GET")
                .arg(format!("w:{i}"))
                .query(&mut c)
                .unwrap();
            assert_eq!(v, Some(i), "w:{i} on a replica after WAIT and leader death");
        }
    }
}

#[test]
fn replication_failover_loses_no_wait_confirmed_write() {
    let mut leader = Server::start();
    let r1 = replica_of(&leader, &[]);
    let r2 = replica_of(&leader, &[]);
    let mut con = leader.client();
    let mut confirmed = Vec::new();
    for round in 0..20 {
        for i in 0..50 {
            let key = format!("f:{round}:{i}");
            redis::cmd("SET")
                .arg(&key)
                .arg(round)
                .query::<()>(&mut con)
                .unwrap();
            confirmed.push(key);
        }
        let acked: i64 = redis::cmd("WAIT").arg(2).arg(2000).query(&mut con).unwrap();
        assert_eq!(acked, 2, "round {round}");
    }
    // Unconfirmed writes after the last WAIT may or may not survive.
    for i in 0..200 {
        redis::cmd("SET")
            .arg(format!("late:{i}"))
            .arg(i)
            .query::<()>(&mut con)
            .unwrap();
    }
    leader.kill();
    let mut c1 = r1.client();
    redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query::<()>(&mut c1)
        .unwrap();
    assert_eq!(info_field(&mut c1, "role").as_deref(), Some("master"));
    redis::cmd("SET")
        .arg("after-failover")
        .arg(1)
        .query::<()>(&mut c1)
        .unwrap();
    let mut c2 = r2.client();
    redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(r1.port)
        .query::<()>(&mut c2)
        .unwrap();
    wait_caught_up(&r1, &r2);
    for key in &confirmed {
        for c in [&mut c1, &mut c2] {
            let v: Option<i64> = redis::cmd("GET").arg(key).query(c).unwrap();
            assert!(v.is_some(), "WAIT-confirmed {key} lost after failover");
        }
    }
    assert_eq!(dump(&r2), dump(&r1));
    // The old leader comes back as a replica of the new one.
    leader.restart();
    let mut old = leader.client();
    redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(r1.port)
        .query::<()>(&mut old)
        .unwrap();
    wait_caught_up(&r1, &leader);
    assert_eq!(dump(&leader), dump(&r1));
    let acked: i64 = redis::cmd("WAIT").arg(2).arg(2000).query(&mut c1).unwrap();
    assert_eq!(acked, 2);
}

#[test]
fn replication_readonly_and_noreplicas_errors() {
    let leader = Server::start();
    let replica = replica_of(&leader, &[]);
    wait_caught_up(&leader, &replica);
    let mut r = replica.client();
    assert_eq!(
        err(&mut r, &["SET", "k", "v"]),
        "READONLY You can't write against a read only replica."
    );
    let mut l = leader.client();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("min-replicas-to-write")
        .arg(2)
        .query::<()>(&mut l)
        .unwrap();
    assert_eq!(
        err(&mut l, &["SET", "k", "v"]),
        "NOREPLICAS Not enough good replicas to write."
    );
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("min-replicas-to-write")
        .arg(1)
        .query::<()>(&mut l)
        .unwrap();
    redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query::<()>(&mut l)
        .unwrap();
    let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut r).unwrap();
    assert_eq!(
        redis::from_redis_value::<String>(&role[0]).unwrap(),
        "slave"
    );
}

#[test]
fn replication_expired_key_disappears_on_replicas() {
    let leader = Server::start();
    let replica = replica_of(&leader, &[]);
    wait_caught_up(&leader, &replica);
    let mut l = leader.client();
    redis::cmd("SET")
        .arg("short")
        .arg("v")
        .arg("PX")
        .arg(300)
        .query::<()>(&mut l)
        .unwrap();
    let deadline_ms = {
        let at: i64 = redis::cmd("PEXPIRETIME")
            .arg("short")
            .query(&mut l)
            .unwrap();
        at
    };
    wait_caught_up(&leader, &replica);
    let mut r = replica.client();
    let mut seen_before = false;
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let v: Option<String> = redis::cmd("GET").arg("short").query(&mut r).unwrap();
        if v.is_some() {
            assert!(
                now_ms < deadline_ms + 5,
                "replica returned the key after its deadline"
            );
            seen_before = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(seen_before, "the key never reached the replica");
    // The leader's sweep deleted it, and the delete replicated: the index entry is gone too.
    wait_caught_up(&leader, &replica);
    let size: i64 = redis::cmd("DBSIZE").query(&mut r).unwrap();
    assert_eq!(size, 0);
}
