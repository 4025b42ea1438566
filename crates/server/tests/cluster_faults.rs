//! The cluster under failure with real processes (docs/cluster.md, "Sloppy quorum and
//! hinted handoff", "Anti-entropy"; docs/testing.md): 5 nodes on loopback at N=3, R=2, W=2
//! under client load from several threads while random nodes are killed with SIGKILL and
//! restarted on their addresses, one at a time, then one node at a time is cut off from the
//! others both ways (`DEBUG CLUSTER-PARTITION`). Every client operation is recorded with
//! whether it was acknowledged; after the last restart, hinted handoff and anti-entropy
//! settle, and the history is checked:
//! - every acknowledged write is readable: each key holds its last acknowledged value or a
//!   later one its writer attempted (a failed write may still have landed);
//! - every counter lies between the sum of its acknowledged increments and of those
//!   attempted;
//! - no key whose delete was acknowledged comes back;
//! - all of this holds for every replica's own copy (read at R=1 through a node that holds
//!   the key, before any read at R > 1 could repair it), and at R=2 and R=3 through every
//!   node.
//!
//! The partition is the server's drill: the cut-off node's requests are refused, not dropped
//! (no timeouts). Partitions made in the network (packets dropped between namespaces) are
//! `cluster_netsplit.rs`; joins and leaves under load are `cluster_membership.rs`.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::cluster::{cluster_info, own_addresses, Cluster};

const WORKERS: usize = 4;
const STRING_KEYS: usize = 40;
const COUNTERS: usize = 4;
const DELETE_KEYS: usize = 10;
const KILLS: usize = 5;
const PARTITIONS: usize = 2;

/// A small deterministic generator per thread (the test's randomness is seeded, printed).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What one worker did to its own keys.
#[derive(Default)]
struct History {
    /// Per string key: the last value acknowledged and the last attempted (values rise).
    strings: HashMap<String, (Option<u64>, u64)>,
    /// Per counter: increments acknowledged, increments attempted.
    counters: HashMap<String, (i64, i64)>,
    /// Keys whose delete was acknowledged (never written after).
    deleted: Vec<String>,
    /// Operations, and how many were refused or failed.
    ops: u64,
    failed: u64,
}

fn connect(port: u16) -> Option<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    let con = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .ok()?;
    con.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    Some(con)
}

/// One worker: writes, increments and deletes its own keys through node `first` (the next
/// node when its node is down) until `stop`.
fn work(worker: usize, ports: &[u16], seed: u64, stop: &AtomicBool) -> History {
    let mut rng = Rng(seed | 1);
    let mut history = History::default();
    let mut node = worker % ports.len();
    let mut con = None;
    let mut next_value = 0u64;
    let mut delete_stage = [0u8; DELETE_KEYS]; // 0: set it, 1: delete it, 2: deleted
    while !stop.load(Ordering::Relaxed) {
        let Some(c) = con.as_mut() else {
            con = connect(ports[node]);
            if con.is_none() {
                node = (node + 1) % ports.len();
                std::thread::sleep(Duration::from_millis(50));
            }
            continue;
        };
        history.ops += 1;
        let ok = match rng.below(10) {
            0..=5 => {
                let key = format!("s:{worker}:{}", rng.below(STRING_KEYS as u64));
                next_value += 1;
                let entry = history.strings.entry(key.clone()).or_insert((None, 0));
                entry.1 = next_value;
                let ok = redis::cmd("SET")
                    .arg(&key)
                    .arg(next_value)
                    .query::<()>(c)
                    .is_ok();
                if ok {
                    entry.0 = Some(next_value);
                }
                ok
            }
            6..=8 => {
                let key = format!("c:{worker}:{}", rng.below(COUNTERS as u64));
                let entry = history.counters.entry(key.clone()).or_insert((0, 0));
                entry.1 += 1;
                let ok = redis::cmd("INCR").arg(&key).query::<i64>(c).is_ok();
                if ok {
                    entry.0 += 1;
                }
                ok
            }
            _ => {
                let i = rng.below(DELETE_KEYS as u64) as usize;
                let key = format!("d:{worker}:{i}");
                match delete_stage[i] {
                    0 => {
                        let ok = redis::cmd("SET")
                            .arg(&key)
                            .arg("doomed")
                            .query::<()>(c)
                            .is_ok();
                        if ok {
                            delete_stage[i] = 1;
                        }
                        ok
                    }
                    1 => {
                        let ok = redis::cmd("DEL").arg(&key).query::<i64>(c).is_ok();
                        if ok {
                            delete_stage[i] = 2;
                            history.deleted.push(key);
                        }
                        ok
                    }
                    _ => true,
                }
            }
        };
        if !ok {
            history.failed += 1;
            // The coordinator may be the node that died: go through another.
            con = None;
            node = (node + 1) % ports.len();
        }
    }
    history
}

#[test]
fn five_nodes_under_load_with_nodes_killed_keep_every_acknowledged_write() {
    let seed: u64 = std::env::var("CLUSTER_FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("cluster faults seed {seed} (CLUSTER_FAULTS_SEED={seed} replays the choices)");
    let mut cluster = Cluster::start(5, &["--cluster-anti-entropy-interval", "1"]);
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
    let addresses: Vec<Vec<String>> = cluster.nodes.iter().map(own_addresses).collect();
    let stop = AtomicBool::new(false);
    let began = Instant::now();
    let mut chaos = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let histories: Vec<History> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let ports = &ports;
                let stop = &stop;
                scope.spawn(move || work(w, ports, seed.wrapping_add(w as u64 * 7919), stop))
            })
            .collect();
        std::thread::sleep(Duration::from_secs(2));
        for _ in 0..KILLS {
            let victim = chaos.below(cluster.nodes.len() as u64) as usize;
            cluster.nodes[victim].kill();
            std::thread::sleep(Duration::from_millis(1500 + chaos.below(1500)));
            cluster.nodes[victim].restart_with(&addresses[victim]);
            std::thread::sleep(Duration::from_millis(1000 + chaos.below(1500)));
        }
        // Partitions: one node at a time cut off from all the others, both ways, under load.
        let ids = cluster.ids();
        for _ in 0..PARTITIONS {
            let alone = chaos.below(cluster.nodes.len() as u64) as usize;
            for (i, node) in cluster.nodes.iter().enumerate() {
                let mut args = vec!["DEBUG", "CLUSTER-PARTITION"];
                if i == alone {
                    args.extend(
                        ids.iter()
                            .enumerate()
                            .filter(|(j, _)| *j != alone)
                            .map(|(_, id)| id.as_str()),
                    );
                } else {
                    args.push(&ids[alone]);
                }
                assert_eq!(node.cli(&args).trim(), "OK");
            }
            // The cut is real: a write through the cut-off node finds no second replica
            // and no fallback for its W=2.
            let probe = redis::cmd("SET")
                .arg("partition-probe")
                .arg(1)
                .query::<()>(&mut cluster.nodes[alone].client());
            assert!(
                probe.is_err(),
                "a write through the cut-off node {alone} made W=2"
            );
            std::thread::sleep(Duration::from_millis(2000 + chaos.below(2000)));
            eprintln!(
                "partition of node {alone} healing after {:?}",
                began.elapsed()
            );
            for node in &cluster.nodes {
                assert_eq!(node.cli(&["DEBUG", "CLUSTER-PARTITION"]).trim(), "OK");
            }
            std::thread::sleep(Duration::from_millis(1000 + chaos.below(1000)));
        }
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    eprintln!("load and faults done after {:?}", began.elapsed());
    let ops: u64 = histories.iter().map(|h| h.ops).sum();
    let failed: u64 = histories.iter().map(|h| h.failed).sum();
    eprintln!("{ops} operations, {failed} refused or failed");
    assert!(ops > 1000, "the load ran: {ops} operations");

    // Settle: every member back and known, every hint handed off.
    cluster.wait_known(5, Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pending: u64 = cluster
            .nodes
            .iter()
            .map(|n| cluster_info(n, "cluster_hints_pending"))
            .sum();
        if pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{pending} hints never handed off"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("settled after {:?}", began.elapsed());
    // A few anti-entropy rounds (every second on every node).
    std::thread::sleep(Duration::from_secs(4));

    // Each replica's own copy first (R=1 through a node that holds the key reads its own
    // copy), before any read at R > 1 could repair it: what hinted handoff and anti-entropy
    // left on every replica. Then R=2 and R=3 through every node.
    let mut checked = 0usize;
    let all_keys: Vec<String> = histories
        .iter()
        .flat_map(|h| {
            h.strings
                .keys()
                .chain(h.counters.keys())
                .chain(h.deleted.iter())
                .cloned()
        })
        .collect();
    for pass in ["own copy", "quorum"] {
        for (position, node) in cluster.nodes.iter().enumerate() {
            let mut con = node.client();
            let r = match pass {
                "own copy" => 1,
                _ if position % 2 == 0 => 2,
                _ => 3,
            };
            let quorum: Vec<i64> = redis::cmd("CLUSTER")
                .arg("QUORUM")
                .arg(r)
                .arg(2)
                .query(&mut con)
                .unwrap();
            assert_eq!(quorum[0], r);
            let held: Vec<i64> = redis::cmd("CLUSTER")
                .arg("HOLDS")
                .arg(&all_keys)
                .query(&mut con)
                .unwrap();
            let wanted = |key: &String| {
                pass != "own copy" || held[all_keys.iter().position(|k| k == key).unwrap()] == 1
            };
            let at = format!("R={r} through node {position} ({pass})");
            for history in &histories {
                for (key, (acked, attempted)) in history.strings.iter().filter(|(k, _)| wanted(k)) {
                    let value: Option<u64> = redis::cmd("GET").arg(key).query(&mut con).unwrap();
                    match (value, acked) {
                        (Some(v), _) if v > *attempted => {
                            panic!("{key}: {v} was never written ({at})")
                        }
                        (Some(v), Some(a)) => {
                            assert!(v >= *a, "{key}: read {v}, acknowledged {a} ({at})")
                        }
                        (None, Some(a)) => panic!("{key}: gone, acknowledged {a} ({at})"),
                        _ => {}
                    }
                    checked += 1;
                }
                for (key, (acked, attempted)) in history.counters.iter().filter(|(k, _)| wanted(k))
                {
                    let value: Option<i64> = redis::cmd("GET").arg(key).query(&mut con).unwrap();
                    let value = value.unwrap_or(0);
                    assert!(
                        (*acked..=*attempted).contains(&value),
                        "{key}: {value}, acknowledged {acked}, attempted {attempted} ({at})"
                    );
                    checked += 1;
                }
                for key in history.deleted.iter().filter(|k| wanted(k)) {
                    let value: Option<String> = redis::cmd("GET").arg(key).query(&mut con).unwrap();
                    assert_eq!(value, None, "{key} came back ({at})");
                    checked += 1;
                }
            }
        }
    }
    eprintln!("{checked} reads checked against the history");
}
