//! Planned joins and leaves under load with real processes (docs/cluster.md, "Joins and
//! leaves"). A cluster at N=3, R=2, W=2 holds a preloaded keyspace while client threads
//! write, read, increment and delete through the members that stay; a node joins (or one
//! leaves with CLUSTER LEAVE), its slots are streamed with a throttle so that the change
//! takes seconds of the load, and afterwards:
//! - no client request failed, and every read saw its worker's last write;
//! - each replica's own copy of each written key is the last write (read at R=1 through a
//!   node that holds it, before reads at R=2 could repair it): the writes that landed while
//!   the slots were streamed reached the new replicas (anti-entropy is off);
//! - every key is on exactly its N replicas of the new slot table (CLUSTER HOLDS on every
//!   node, the old owners' copies dropped) and reads right through every member;
//! - the records streamed are those of the moved slots: at least every preloaded key of the
//!   slots the new node gained, at most those and the load's keys, not the whole keyspace;
//! - deletes stay deleted and counters add up exactly across the move.
//!
//! The own-copy check is what catches a change that does not write to both sets: with the
//! target's replicas left out of writes (tried by hand), the join test fails on a
//! write-only key whose copy on the new node is older than its last write.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::cluster::{
    assert_right_values, cluster_info, holders, misplaced, own_addresses, slot_table,
    start_joining, write_through, Cluster,
};
use common::Server;

/// Preloaded keys.
const KEYS: usize = 10_000;
/// Client threads of the load.
const WORKERS: usize = 3;
/// String keys each worker writes and reads back.
const LOAD_KEYS: usize = 30;
/// String keys each worker writes in turn and never reads while the load runs: read repair
/// cannot fix a copy of these that missed a write, so the checks see what writes and
/// streaming alone left on each replica.
const WRITE_ONLY_KEYS: usize = 1000;
/// Every node's flags: a gaining node pulls 100 kB/s, so that the change takes a few
/// seconds of the load; anti-entropy is off, so that what the checks see is the streaming
/// and the writes to both sets alone.
const EXTRA: [&str; 4] = [
    "--cluster-stream-rate",
    "100000",
    "--cluster-anti-entropy-interval",
    "0",
];

/// What the load did, and every request that failed.
#[derive(Default)]
struct Load {
    ops: u64,
    failures: Vec<String>,
    /// Per string key, the last value written.
    strings: HashMap<String, u64>,
    /// Per counter, the increments acknowledged.
    counters: HashMap<String, i64>,
    /// Keys deleted (never written again).
    deleted: Vec<String>,
}

/// One worker: its own keys, through `ports` in turn, until `stop`. Any error is a failure.
fn work(worker: usize, ports: &[u16], stop: &AtomicBool) -> Load {
    let mut load = Load::default();
    let mut cons: Vec<redis::Connection> = ports
        .iter()
        .map(|port| {
            let con = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                .unwrap()
                .get_connection()
                .unwrap();
            con.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            con
        })
        .collect();
    let mut value = 0u64;
    let mut step = 0usize;
    while !stop.load(Ordering::Relaxed) {
        step += 1;
        let con = &mut cons[step % ports.len()];
        let key = format!("load:{worker}:{}", step % LOAD_KEYS);
        let counter = format!("count:{worker}:{}", step % 3);
        let op = step % 6;
        load.ops += 1;
        let result: redis::RedisResult<()> = match op {
            5 => {
                value += 1;
                let key = format!("wo:{worker}:{}", (step / 6) % WRITE_ONLY_KEYS);
                redis::cmd("SET")
                    .arg(&key)
                    .arg(value)
                    .query::<()>(con)
                    .map(|()| {
                        load.strings.insert(key.clone(), value);
                    })
            }
            0 | 1 => {
                value += 1;
                redis::cmd("SET")
                    .arg(&key)
                    .arg(value)
                    .query::<()>(con)
                    .map(|()| {
                        load.strings.insert(key.clone(), value);
                    })
            }
            2 => redis::cmd("GET")
                .arg(&key)
                .query::<Option<u64>>(con)
                .map(|got| {
                    let want = load.strings.get(&key).copied();
                    if got != want {
                        load.failures
                            .push(format!("GET {key}: {got:?}, last written {want:?}"));
                    }
                }),
            3 => redis::cmd("INCRBY")
                .arg(&counter)
                .arg(2)
                .query::<i64>(con)
                .map(|_| *load.counters.entry(counter.clone()).or_default() += 2),
            _ => {
                let doomed = format!("gone:{worker}:{step}");
                redis::cmd("SET")
                    .arg(&doomed)
                    .arg(1)
                    .query::<()>(con)
                    .and_then(|()| redis::cmd("DEL").arg(&doomed).query::<i64>(con))
                    .map(|removed| {
                        if removed != 1 {
                            load.failures
                                .push(format!("DEL {doomed} removed {removed}, wanted 1"));
                        }
                        load.deleted.push(doomed.clone());
                    })
            }
        };
        if let Err(error) = result {
            load.failures.push(format!("op {op} on {key}: {error}"));
        }
    }
    load
}

/// Runs the load through `ports` while `change` runs; returns the merged history.
fn under_load(ports: &[u16], change: impl FnOnce()) -> Load {
    let stop = AtomicBool::new(false);
    let loads = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for worker in 0..WORKERS {
            let (stop, loads) = (&stop, &loads);
            scope.spawn(move || {
                let load = work(worker, ports, stop);
                loads.lock().unwrap().push(load);
            });
        }
        // Load before, during and after the change.
        std::thread::sleep(Duration::from_secs(1));
        change();
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
    });
    let mut all = Load::default();
    for load in loads.into_inner().unwrap() {
        all.ops += load.ops;
        all.failures.extend(load.failures);
        all.strings.extend(load.strings);
        all.counters.extend(load.counters);
        all.deleted.extend(load.deleted);
    }
    all
}

/// Waits until every node in `nodes` knows `n` members and no change is in progress.
fn wait_settled(nodes: &[&Server], n: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    for node in nodes {
        while cluster_info(node, "cluster_known_nodes") != n
            || cluster_info(node, "cluster_change_in_progress") != 0
        {
            assert!(
                Instant::now() < deadline,
                "node {} did not settle at {n} members:\n{}",
                node.port,
                node.cli(&["CLUSTER", "STATUS"])
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Asserts that every key is on exactly its replicas of the slot table, polling until the
/// old owners' delayed sweep (3 request timeouts after the change) has run.
fn assert_exact_placement(nodes: &[&Server], keys: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let wrong = misplaced(nodes, keys);
        if wrong.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} keys not on exactly their 3 replicas, e.g. {:?}",
            wrong.len(),
            keys.len(),
            &wrong[..wrong.len().min(5)]
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The last warnings and debug lines of each node's log (debug lines are there when the run
/// sets `RINGKV_TEST_RUST_LOG`, see `common::launch`): what a failed request's message needs.
fn warnings(nodes: &[&Server]) -> String {
    let mut out = String::new();
    for node in nodes {
        let log = node.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("DEBUG"))
            .collect();
        out += &format!("node {} log:\n", node.port);
        for line in &lines[lines.len().saturating_sub(40)..] {
            out += line;
            out.push('\n');
        }
    }
    out
}

/// The history's checks after the change, through every node in `nodes`: first each
/// replica's own copy (read at R=1 through a node that holds the key, before any read at
/// R=2 could repair it), then at R=2 through every node.
fn check_history(load: &Load, nodes: &[&Server]) {
    assert!(
        load.failures.is_empty(),
        "{} of {} client requests failed or read wrong, e.g. {:?}\n{}",
        load.failures.len(),
        load.ops,
        &load.failures[..load.failures.len().min(5)],
        warnings(nodes)
    );
    assert!(load.ops > 100, "the load ran: {} operations", load.ops);
    let strings: Vec<String> = load.strings.keys().cloned().collect();
    let mut own_copies = 0;
    for (position, node) in nodes.iter().enumerate() {
        let held = holders([*node], &strings);
        let mut con = node.client();
        let _: () = redis::cmd("CLUSTER")
            .arg("QUORUM")
            .arg(1)
            .arg(2)
            .query(&mut con)
            .unwrap();
        for (key, held) in strings.iter().zip(held) {
            if held.is_empty() {
                continue;
            }
            own_copies += 1;
            let got: Option<u64> = redis::cmd("GET").arg(key).query(&mut con).unwrap();
            assert_eq!(
                got,
                Some(load.strings[key]),
                "{key}: the copy on node {position} ({}) is not the last write",
                node.port
            );
        }
    }
    assert!(
        own_copies >= strings.len() * 3,
        "{own_copies} own copies read"
    );
    for node in nodes {
        let mut con = node.client();
        for (key, value) in &load.strings {
            let got: Option<u64> = redis::cmd("GET").arg(key).query(&mut con).unwrap();
            assert_eq!(got, Some(*value), "{key} through {}", node.port);
        }
        for (key, sum) in &load.counters {
            let got: i64 = redis::cmd("GET").arg(key).query(&mut con).unwrap();
            assert_eq!(got, *sum, "{key} through {}", node.port);
        }
        for key in load.deleted.iter().step_by(7) {
            let got: Option<String> = redis::cmd("GET").arg(key).query(&mut con).unwrap();
            assert_eq!(got, None, "{key} came back through {}", node.port);
        }
    }
}

/// The preloaded keys and the load's string keys and counters.
fn with_load_keys(keys: &[String], load: &Load) -> Vec<String> {
    let mut all = keys.to_vec();
    all.extend(load.strings.keys().cloned());
    all.extend(load.counters.keys().cloned());
    all
}

/// The preloaded keys in the slots `node` holds now.
fn keys_held_by(node_id: &str, table: &HashMap<u16, Vec<String>>, keys: &[String]) -> u64 {
    keys.iter()
        .filter(|key| {
            table[&ringkv_cluster::key_slot(key.as_bytes())]
                .iter()
                .any(|id| id == node_id)
        })
        .count() as u64
}

#[test]
fn a_join_under_load_fails_no_request_and_streams_only_the_moved_slots() {
    let mut cluster = Cluster::start(3, &EXTRA);
    let keys: Vec<String> = (0..KEYS).map(|i| format!("pre:{i}")).collect();
    write_through(&cluster.nodes, &keys, 1);
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
    let seed = format!("127.0.0.1:{}", ports[0]);

    let started = Instant::now();
    let mut joined = None;
    let load = under_load(&ports, || {
        let node = start_joining(&seed, &EXTRA);
        let first = &cluster.nodes[0];
        assert_eq!(
            cluster_info(first, "cluster_change_in_progress"),
            1,
            "the join is a change in progress while the new node streams"
        );
        // The operator's view: the change, and the new node's progress bar.
        let output = std::process::Command::new(common::binary())
            .args(["cluster", "status", "--port", &first.port.to_string()])
            .output()
            .expect("run ringkv cluster status");
        let status = String::from_utf8_lossy(&output.stdout);
        assert!(
            status.contains("membership change started at epoch"),
            "{status}"
        );
        assert!(
            status
                .lines()
                .any(|l| l.contains("] ") && l.contains("slots,")),
            "no progress bar: {status}"
        );
        wait_settled(&[first, &node], 4, Duration::from_secs(120));
        joined = Some(node);
    });
    let took = started.elapsed();
    cluster.nodes.push(joined.expect("the node joined"));
    let nodes: Vec<&Server> = cluster.nodes.iter().collect();
    wait_settled(&nodes, 4, Duration::from_secs(30));
    eprintln!("join under load: {} operations in {took:?}", load.ops);
    check_history(&load, &nodes);
    assert_exact_placement(&nodes, &with_load_keys(&keys, &load));
    for node in &nodes {
        assert_right_values(node, &keys);
    }

    // What the new node received is its share, not the keyspace.
    let new = nodes[3];
    let table = slot_table(&mut new.client());
    let new_id = new.cli(&["CLUSTER", "MYID"]).trim().to_string();
    let share = keys_held_by(&new_id, &table, &keys);
    let received = cluster_info(new, "cluster_transfer_keys_received");
    let wanted = cluster_info(new, "cluster_transfer_slots_wanted");
    let load_keys =
        (WORKERS * (LOAD_KEYS + WRITE_ONLY_KEYS + 3)) as u64 + load.deleted.len() as u64;
    eprintln!(
        "new node: {wanted} slots gained, {share} preloaded keys in them, {received} records received, {} bytes",
        cluster_info(new, "cluster_transfer_bytes_received")
    );
    assert_eq!(cluster_info(new, "cluster_transfer_slots_done"), wanted);
    assert!(
        received >= share && received <= share + load_keys,
        "received {received} records for a share of {share} (+ at most {load_keys} of the load)"
    );
    assert!(
        share < KEYS as u64 * 9 / 10,
        "a share, not the keyspace: {share}"
    );
}

#[test]
fn a_leave_under_load_fails_no_request_and_leaves_nothing_behind() {
    let cluster = Cluster::start(4, &EXTRA);
    let keys: Vec<String> = (0..KEYS).map(|i| format!("pre:{i}")).collect();
    write_through(&cluster.nodes, &keys, 1);
    let staying: Vec<&Server> = cluster.nodes[..3].iter().collect();
    let ports: Vec<u16> = staying.iter().map(|n| n.port).collect();
    let leaving = &cluster.nodes[3];
    let leaving_id = leaving.cli(&["CLUSTER", "MYID"]).trim().to_string();

    let load = under_load(&ports, || {
        assert_eq!(leaving.cli(&["CLUSTER", "LEAVE"]).trim(), "OK");
        let status = staying[0].cli(&["CLUSTER", "STATUS"]);
        assert!(
            status.contains("state:leaving") || !status.contains(&leaving_id),
            "{status}"
        );
        wait_settled(&staying, 3, Duration::from_secs(120));
    });
    if !load.failures.is_empty() {
        eprintln!("the node that left, {}", warnings(&[leaving]));
    }
    check_history(&load, &staying);
    assert_exact_placement(&staying, &with_load_keys(&keys, &load));
    for node in &staying {
        assert_right_values(node, &keys);
        assert!(
            !node.cli(&["CLUSTER", "NODES"]).contains(&leaving_id),
            "the member left every map"
        );
    }
    // The node that left dropped what it held.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let kept = holders([leaving], &keys)
            .iter()
            .filter(|h| !h.is_empty())
            .count();
        if kept == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node that left still holds {kept} keys"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A joining node killed with SIGKILL in the middle of streaming comes back on its data
/// directory and goes on from its progress file: what it receives after the restart is the
/// rest of its share (and at most the last second's chunks again: the position is saved at
/// most once a second), not the share from the start; and no key is missing.
#[test]
fn a_joining_node_killed_while_streaming_resumes_where_it_stopped() {
    let cluster = Cluster::start(3, &EXTRA);
    let keys: Vec<String> = (0..KEYS).map(|i| format!("pre:{i}")).collect();
    write_through(&cluster.nodes, &keys, 1);
    let seed = format!("127.0.0.1:{}", cluster.nodes[0].port);
    let mut node = start_joining(&seed, &EXTRA);
    let addresses = own_addresses(&node);
    let deadline = Instant::now() + Duration::from_secs(60);
    let before = loop {
        let received = cluster_info(&node, "cluster_transfer_keys_received");
        if received >= 4_000 {
            break received;
        }
        assert!(Instant::now() < deadline, "the new node streams nothing");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        cluster_info(&node, "cluster_change_in_progress"),
        1,
        "killed before it had everything"
    );
    node.restart_with(&addresses);
    let mut nodes: Vec<&Server> = cluster.nodes.iter().collect();
    nodes.push(&node);
    wait_settled(&nodes, 4, Duration::from_secs(120));
    let after = cluster_info(&node, "cluster_transfer_keys_received");
    let table = slot_table(&mut node.client());
    let share = keys_held_by(node.cli(&["CLUSTER", "MYID"]).trim(), &table, &keys);
    eprintln!("share {share}: {before}+ records before the kill, {after} after the restart");
    assert!(
        after + before >= share,
        "{before} before and {after} after do not cover the share of {share}"
    );
    assert!(
        after < share - before / 2,
        "after the restart it streamed {after} of a share of {share}: it started over"
    );
    assert_exact_placement(&nodes, &keys);
    for node in &nodes {
        assert_right_values(node, &keys);
    }
}

/// Two changes at once, one of them the control plane's own leader going: the founding
/// member (the Raft leader since the cluster began; nothing here makes it lose an election)
/// leaves with CLUSTER LEAVE while a new node joins through another member, under load. The
/// changes commit one after the other through whichever member leads; no client request
/// fails, and afterwards every key is on exactly its 3 replicas among the 4 members left.
#[test]
fn the_founder_leaves_while_a_node_joins_under_load() {
    let cluster = Cluster::start(4, &EXTRA);
    let keys: Vec<String> = (0..KEYS).map(|i| format!("pre:{i}")).collect();
    write_through(&cluster.nodes, &keys, 1);
    let founder = &cluster.nodes[0];
    let founder_id = founder.cli(&["CLUSTER", "MYID"]).trim().to_string();
    let status = founder.cli(&["CLUSTER", "STATUS"]);
    assert!(
        status.contains("control: role:leader ")
            && status.contains(&format!(" leader:{founder_id} ")),
        "the founder leads the control plane: {status}"
    );
    let staying: Vec<&Server> = cluster.nodes[1..].iter().collect();
    let ports: Vec<u16> = staying.iter().map(|n| n.port).collect();
    let seed = format!("127.0.0.1:{}", ports[0]);

    let mut joined = None;
    let load = under_load(&ports, || {
        std::thread::scope(|scope| {
            let leave = scope.spawn(|| founder.cli(&["CLUSTER", "LEAVE"]));
            let node = start_joining(&seed, &EXTRA);
            assert_eq!(leave.join().unwrap().trim(), "OK");
            let mut settled = staying.clone();
            settled.push(&node);
            wait_settled(&settled, 4, Duration::from_secs(180));
            joined = Some(node);
        });
    });
    let joined = joined.expect("the node joined");
    let mut nodes = staying.clone();
    nodes.push(&joined);
    if !load.failures.is_empty() {
        eprintln!("the founder, {}", warnings(&[founder]));
    }
    check_history(&load, &nodes);
    assert_exact_placement(&nodes, &with_load_keys(&keys, &load));
    for node in &nodes {
        assert_right_values(node, &keys);
        assert!(
            !node.cli(&["CLUSTER", "NODES"]).contains(&founder_id),
            "the founder left every map"
        );
    }
    // The control plane lost its leader with the founder and elected another among the
    // members left, which every member follows (heartbeats carry it; a few seconds at most).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let statuses: Vec<String> = nodes
            .iter()
            .map(|n| n.cli(&["CLUSTER", "STATUS"]))
            .collect();
        let led = statuses.iter().any(|s| s.contains("control: role:leader "));
        let founder_named = statuses
            .iter()
            .any(|s| s.contains(&format!(" leader:{founder_id} ")) || !s.contains("control: "));
        if led && !founder_named {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new control-plane leader among the members left: {statuses:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
