//! The client load of the cluster failure tests and the check of what it left
//! (`cluster_netsplit.rs`; docs/testing.md, "The cluster under failure"): worker threads
//! write, increment, read and delete their own keys through any node and record every
//! operation with whether it was acknowledged; afterwards [`check`] reads every key through
//! every node and holds the cluster to the history:
//! - every acknowledged write is readable: each string holds its last acknowledged value or a
//!   later one its writer attempted (a failed write may still have landed), never a value
//!   never written;
//! - every counter lies between the sum of its acknowledged increments and of those
//!   attempted;
//! - no key whose delete was acknowledged comes back;
//! - all of this for every replica's own copy (read at R=1 through a node that holds the key,
//!   before any read at R > 1 could repair it), and at R=2 and R=3 through every node.
//!
//! Reads under load are checked for values never written only: with a sloppy quorum an
//! acknowledged write may sit on fallbacks a later quorum read does not ask, so a stale read
//! is legal (Dynamo promises eventual, not read-your-writes, consistency) and only counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub const STRING_KEYS: usize = 40;
pub const COUNTERS: usize = 4;
pub const DELETE_KEYS: usize = 10;

/// A small deterministic generator per thread (the tests' randomness is seeded, printed).
pub struct Rng(pub u64);

impl Rng {
    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The test's seed: `$variable` when set (a replay), else the clock; printed either way.
pub fn seed(variable: &str) -> u64 {
    let seed = std::env::var(variable)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("seed {seed} ({variable}={seed} replays the choices)");
    seed
}

/// What one worker did to its own keys.
#[derive(Default)]
pub struct History {
    /// Per string key: the last value acknowledged and the last attempted (values rise).
    pub strings: HashMap<String, (Option<u64>, u64)>,
    /// Per counter: increments acknowledged, increments attempted.
    pub counters: HashMap<String, (i64, i64)>,
    /// Keys whose delete was acknowledged (never written after).
    pub deleted: Vec<String>,
    /// Operations, and how many were refused or failed.
    pub ops: u64,
    pub failed: u64,
    /// Failures that were the client's read timeout: no reply at all in that time.
    pub unanswered: u64,
    /// Reads under load, and those older than the last acknowledged write (legal, counted).
    pub reads: u64,
    pub stale_reads: u64,
    /// The slowest reply (or failure) of any operation.
    pub slowest: Duration,
}

impl History {
    /// Every key this history names.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.strings
            .keys()
            .chain(self.counters.keys())
            .chain(self.deleted.iter())
    }
}

/// How a worker reaches the nodes.
pub struct Load<'a> {
    /// Each node's client address, `host:port`.
    pub addresses: &'a [String],
    /// The client's read timeout: longer than any request the coordinator may make wait.
    pub read_timeout: Duration,
    pub stop: &'a AtomicBool,
}

fn connect(address: &str, read_timeout: Duration) -> Option<redis::Connection> {
    let client = redis::Client::open(format!("redis://{address}/")).ok()?;
    let con = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .ok()?;
    con.set_read_timeout(Some(read_timeout)).ok()?;
    Some(con)
}

/// One worker: writes, increments, reads and deletes its own keys (named after `worker`)
/// through node `worker % nodes` (the next node after a failure: it may be down or cut off)
/// until `load.stop`.
pub fn work(worker: usize, load: &Load, seed: u64) -> History {
    let nodes = load.addresses.len();
    let mut rng = Rng(seed | 1);
    let mut history = History::default();
    let mut node = worker % nodes;
    let mut con = None;
    let mut next_value = 0u64;
    let mut delete_stage = [0u8; DELETE_KEYS]; // 0: set it, 1: delete it, 2: deleted
    while !load.stop.load(Ordering::Relaxed) {
        let Some(c) = con.as_mut() else {
            con = connect(&load.addresses[node], load.read_timeout);
            if con.is_none() {
                node = (node + 1) % nodes;
                std::thread::sleep(Duration::from_millis(50));
            }
            continue;
        };
        history.ops += 1;
        let began = Instant::now();
        let result: redis::RedisResult<()> = match rng.below(12) {
            0..=5 => {
                let key = format!("s:{worker}:{}", rng.below(STRING_KEYS as u64));
                next_value += 1;
                let entry = history.strings.entry(key.clone()).or_insert((None, 0));
                entry.1 = next_value;
                let result = redis::cmd("SET").arg(&key).arg(next_value).query::<()>(c);
                if result.is_ok() {
                    entry.0 = Some(next_value);
                }
                result
            }
            6..=8 => {
                let key = format!("c:{worker}:{}", rng.below(COUNTERS as u64));
                let entry = history.counters.entry(key.clone()).or_insert((0, 0));
                entry.1 += 1;
                let result = redis::cmd("INCR").arg(&key).query::<i64>(c).map(|_| ());
                if result.is_ok() {
                    entry.0 += 1;
                }
                result
            }
            9..=10 => {
                let key = format!("s:{worker}:{}", rng.below(STRING_KEYS as u64));
                let result = redis::cmd("GET").arg(&key).query::<Option<u64>>(c);
                if let Ok(value) = result {
                    history.reads += 1;
                    let (acked, attempted) = history.strings.get(&key).copied().unwrap_or_default();
                    if let Some(v) = value {
                        assert!(v <= attempted, "{key}: read {v}, never written");
                    }
                    if value < acked {
                        history.stale_reads += 1;
                    }
                }
                result.map(|_| ())
            }
            _ => {
                let i = rng.below(DELETE_KEYS as u64) as usize;
                let key = format!("d:{worker}:{i}");
                match delete_stage[i] {
                    0 => {
                        let result = redis::cmd("SET").arg(&key).arg("doomed").query::<()>(c);
                        if result.is_ok() {
                            delete_stage[i] = 1;
                        }
                        result
                    }
                    1 => {
                        let result = redis::cmd("DEL").arg(&key).query::<i64>(c).map(|_| ());
                        if result.is_ok() {
                            delete_stage[i] = 2;
                            history.deleted.push(key);
                        }
                        result
                    }
                    _ => Ok(()),
                }
            }
        };
        history.slowest = history.slowest.max(began.elapsed());
        if let Err(error) = result {
            history.failed += 1;
            if error.is_timeout() {
                history.unanswered += 1;
            }
            // The coordinator may be down or cut off: go through another.
            con = None;
            node = (node + 1) % nodes;
        }
    }
    history
}

/// Reads every key of `histories` through every node of `nodes` (connections in node order)
/// and checks it against them: first each replica's own copy (R=1, keys the node holds),
/// then R=2 (even positions) and R=3 (odd positions). Replicas converge by hinted handoff
/// and anti-entropy, in the background: the own-copy pass is retried until it holds or
/// `converge` passes (then it fails with what it last found). Returns how many reads the
/// passes that held checked.
pub fn check(histories: &[History], nodes: &mut [redis::Connection], converge: Duration) -> usize {
    let deadline = Instant::now() + converge;
    let began = Instant::now();
    let mut checked = loop {
        match check_pass(histories, nodes, Pass::OwnCopy) {
            Ok(checked) => break checked,
            Err(error) if Instant::now() < deadline => {
                eprintln!("not converged yet: {error}");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(error) => {
                let key = error.split(':').take(3).collect::<Vec<_>>().join(":");
                panic!(
                    "{error} (still after {converge:?}); each node's own copy: {}; stored: {}",
                    own_copies(nodes, &key),
                    stored_records(nodes, &key)
                )
            }
        }
    };
    eprintln!(
        "every replica's own copy holds the history after {:?}",
        began.elapsed()
    );
    checked += check_pass(histories, nodes, Pass::Quorum).unwrap_or_else(|error| {
        let key = error.split(':').take(3).collect::<Vec<_>>().join(":");
        panic!(
            "{error}; each node's stored record: {}",
            stored_records(nodes, &key)
        )
    });
    checked
}

/// Every node's stored record of `key` (`DEBUG CLUSTER-RECORD`: siblings with their dots and
/// stamps), for a failure's message: what the failed read merged.
fn stored_records(nodes: &mut [redis::Connection], key: &str) -> String {
    let mut records = Vec::new();
    for (position, con) in nodes.iter_mut().enumerate() {
        let record: redis::RedisResult<String> = redis::cmd("DEBUG")
            .arg("CLUSTER-RECORD")
            .arg(key)
            .query(con);
        records.push(format!("\n  node {position}: {record:?}"));
    }
    records.concat()
}

/// Every node's own copy of `key` (R=1; `-` where the node holds none), for a failure's
/// message.
fn own_copies(nodes: &mut [redis::Connection], key: &str) -> String {
    let mut copies = Vec::new();
    for (position, con) in nodes.iter_mut().enumerate() {
        let _: redis::RedisResult<Vec<i64>> =
            redis::cmd("CLUSTER").arg("QUORUM").arg(1).arg(2).query(con);
        let held: Vec<i64> = redis::cmd("CLUSTER")
            .arg("HOLDS")
            .arg(key)
            .query(con)
            .unwrap_or_default();
        let copy = if held.first() == Some(&1) {
            let value: redis::RedisResult<Option<String>> = redis::cmd("GET").arg(key).query(con);
            format!("{value:?}")
        } else {
            "-".to_string()
        };
        copies.push(format!("node {position}: {copy}"));
    }
    copies.join(", ")
}

#[derive(Clone, Copy, PartialEq)]
enum Pass {
    /// R=1 through a node that holds the key: that replica's own copy.
    OwnCopy,
    /// R=2 or R=3 through every node.
    Quorum,
}

/// One pass of [`check`]: the first key that breaks the history, or how many reads held.
fn check_pass(
    histories: &[History],
    nodes: &mut [redis::Connection],
    pass: Pass,
) -> Result<usize, String> {
    let mut checked = 0usize;
    let all_keys: Vec<String> = histories.iter().flat_map(History::keys).cloned().collect();
    for (position, con) in nodes.iter_mut().enumerate() {
        let r = match pass {
            Pass::OwnCopy => 1,
            Pass::Quorum if position % 2 == 0 => 2,
            Pass::Quorum => 3,
        };
        let quorum: Vec<i64> = redis::cmd("CLUSTER")
            .arg("QUORUM")
            .arg(r)
            .arg(2)
            .query(con)
            .unwrap();
        assert_eq!(quorum[0], r);
        let held: Vec<i64> = redis::cmd("CLUSTER")
            .arg("HOLDS")
            .arg(&all_keys)
            .query(con)
            .unwrap();
        let wanted = |key: &String| {
            pass == Pass::Quorum || held[all_keys.iter().position(|k| k == key).unwrap()] == 1
        };
        let name = if pass == Pass::OwnCopy {
            "own copy"
        } else {
            "quorum"
        };
        let at = format!("R={r} through node {position} ({name})");
        for history in histories {
            for (key, (acked, attempted)) in history.strings.iter().filter(|(k, _)| wanted(k)) {
                let value: Option<u64> = redis::cmd("GET").arg(key).query(con).unwrap();
                match (value, acked) {
                    (Some(v), _) if v > *attempted => {
                        // Never legal, converged or not.
                        panic!("{key}: {v} was never written ({at})")
                    }
                    (Some(v), Some(a)) if v < *a => {
                        return Err(format!("{key}: read {v}, acknowledged {a} ({at})"))
                    }
                    (None, Some(a)) => return Err(format!("{key}: gone, acknowledged {a} ({at})")),
                    _ => {}
                }
                checked += 1;
            }
            for (key, (acked, attempted)) in history.counters.iter().filter(|(k, _)| wanted(k)) {
                let value: Option<i64> = redis::cmd("GET").arg(key).query(con).unwrap();
                let value = value.unwrap_or(0);
                if value > *attempted {
                    panic!("{key}: {value}, more than the {attempted} increments attempted ({at})");
                }
                if value < *acked {
                    return Err(format!(
                        "{key}: {value}, acknowledged {acked}, attempted {attempted} ({at})"
                    ));
                }
                checked += 1;
            }
            for key in history.deleted.iter().filter(|k| wanted(k)) {
                let value: Option<String> = redis::cmd("GET").arg(key).query(con).unwrap();
                if value.is_some() {
                    return Err(format!("{key} came back: {value:?} ({at})"));
                }
                checked += 1;
            }
        }
    }
    Ok(checked)
}

/// Prints the totals of `histories` and returns them: (operations, failed).
pub fn summarize(histories: &[History]) -> (u64, u64) {
    let sum = |f: fn(&History) -> u64| histories.iter().map(f).sum::<u64>();
    let slowest = histories
        .iter()
        .map(|h| h.slowest)
        .max()
        .unwrap_or_default();
    eprintln!(
        "{} operations, {} refused or failed ({} unanswered within the client's timeout), {} reads under load ({} stale), slowest {slowest:?}",
        sum(|h| h.ops),
        sum(|h| h.failed),
        sum(|h| h.unanswered),
        sum(|h| h.reads),
        sum(|h| h.stale_reads),
    );
    (sum(|h| h.ops), sum(|h| h.failed))
}
