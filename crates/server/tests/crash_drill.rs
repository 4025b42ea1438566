//! Crash drill (issue 4): the real server under concurrent write load from
//! several clients is killed with SIGKILL at random moments, restarted and
//! checked, `RINGKV_DRILL_CYCLES` times per fsync mode (default 50).
//!
//! Each client writes its own keys `drill:{client}:{i:08}` = `i` in order.
//! After every restart, for each client: every acknowledged key is there
//! with its value, and the keys present form a prefix (never a later write
//! without an earlier one from the same client). A SIGKILL is a process
//! crash, not a power loss: the WAL bytes were handed to the OS before the
//! reply under `always`, `everysec` and `no` alike, so no mode may lose an
//! acknowledged write here; power-loss bounds are in docs/durability.md.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Server;
use rand::Rng;

const CLIENTS: usize = 4;

fn key(client: usize, i: u64) -> String {
    format!("drill:{client}:{i:08}")
}

/// Number of keys of `client` present; panics unless keys `from..n` hold
/// their values (keys below `from` were checked by an earlier cycle), the
/// next keys after them are absent, and n covers every acknowledged write.
/// Together with the exact DBSIZE check, the keys present are a prefix.
fn verify(con: &mut redis::Connection, client: usize, from: u64, acked: Option<u64>) -> u64 {
    let mut present = from;
    loop {
        let names: Vec<String> = (present..present + 256).map(|i| key(client, i)).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(&names).query(con).unwrap();
        let found = values.iter().take_while(|v| v.is_some()).count() as u64;
        for (offset, value) in values.iter().enumerate().take(found as usize) {
            let i = present + offset as u64;
            assert_eq!(
                value.as_deref(),
                Some(i.to_string().as_str()),
                "client {client}: wrong value at {i}"
            );
        }
        assert!(
            values[found as usize..].iter().all(Option::is_none),
            "client {client}: write {} survived without write {}",
            present + found + 1,
            present + found
        );
        present += found;
        if found < 256 {
            break;
        }
    }
    if let Some(acked) = acked {
        assert!(
            present > acked,
            "client {client}: acknowledged write {acked} lost, {present} keys present"
        );
    }
    present
}

fn drill(mode: &str) {
    drill_with(mode, &[]);
}

fn drill_with(mode: &str, extra: &[&str]) {
    let cycles: usize = std::env::var("RINGKV_DRILL_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let mut args = vec!["--appendfsync", mode];
    args.extend_from_slice(extra);
    let mut server = Server::start_with(&args);
    let mut rng = rand::thread_rng();
    let mut next: Vec<u64> = vec![0; CLIENTS];
    let mut total_acked = 0u64;
    let mut restart_ms_max = 0u128;
    let mut total_flushes = 0u64;
    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Arc<Vec<AtomicU64>> =
            Arc::new((0..CLIENTS).map(|_| AtomicU64::new(u64::MAX)).collect());
        let writers: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let url = server.url();
                let stop = stop.clone();
                let acked = acked.clone();
                let start = next[client];
                std::thread::spawn(move || {
                    // The kill may come before the connection does.
                    let Ok(mut con) = redis::Client::open(url).unwrap().get_connection() else {
                        return;
                    };
                    let mut i = start;
                    while !stop.load(Ordering::Acquire) {
                        let reply: redis::RedisResult<()> = redis::cmd("SET")
                            .arg(key(client, i))
                            .arg(i.to_string())
                            .query(&mut con);
                        if reply.is_err() {
                            break; // the server is gone
                        }
                        acked[client].store(i, Ordering::Release);
                        i += 1;
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.gen_range(100..600)));
        if let Ok(mut con) = redis::Client::open(server.url()).unwrap().get_connection() {
            if let Ok(info) = redis::cmd("INFO").arg("engine").query::<String>(&mut con) {
                total_flushes += info
                    .lines()
                    .find_map(|l| l.strip_prefix("flushes:"))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        server.kill();
        stop.store(true, Ordering::Release);
        for writer in writers {
            writer.join().unwrap();
        }
        let started = Instant::now();
        server.restart();
        let mut con = server.client();
        restart_ms_max = restart_ms_max.max(started.elapsed().as_millis());
        for client in 0..CLIENTS {
            let acked = acked[client].load(Ordering::Acquire);
            let acked = (acked != u64::MAX).then_some(acked);
            if let Some(a) = acked {
                total_acked += a + 1 - next[client];
            }
            next[client] = verify(&mut con, client, next[client], acked);
        }
        let dbsize: u64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
        assert_eq!(dbsize, next.iter().sum::<u64>(), "DBSIZE after recovery");
        if cycle % 10 == 0 {
            eprintln!("{mode} cycle {cycle}: keys per client {next:?}");
        }
    }
    eprintln!("{mode} {extra:?}: {cycles} kills, {total_acked} acknowledged writes, none lost; {total_flushes} flushes seen just before the kills; slowest restart {restart_ms_max} ms");
    assert!(total_acked > 0, "no write was ever acknowledged");
    if extra.contains(&"--memtable-bytes-max") {
        assert!(
            total_flushes >= cycles as u64,
            "{total_flushes} flushes in {cycles} cycles: the kills do not land among flushes"
        );
    }
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_write_fsync_always() {
    drill("always");
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_write_fsync_everysec() {
    drill("everysec");
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_write_fsync_no() {
    drill("no");
}

/// A 64 KiB memtable: a flush (a table written, a manifest edit, old WAL segments retired)
/// every few hundred writes, so the kills land in the middle of flushes and manifest
/// rewrites too (docs/durability.md, "Recovery after a crash").
#[test]
fn sigkill_during_flushes_and_manifest_edits_loses_no_acknowledged_write() {
    drill_with("everysec", &["--memtable-bytes-max", "65536"]);
}
