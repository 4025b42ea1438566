//! Cluster mode with real processes on loopback (docs/cluster.md): a cluster forms from a
//! seed, serves every key through every node, keeps every key on exactly N nodes, turns
//! concurrent writes through two coordinators into siblings that a versioned write resolves,
//! adds up concurrent increments through every node exactly, and refuses a request from a
//! stale epoch until the sender has the newer map.
//!
//! `CLUSTER_KEYS` scales the key count of the 3-node test (default: the 100,000).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::Server;
use redis::Connection;

fn keys_wanted() -> usize {
    std::env::var("CLUSTER_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

/// Writes `keys` as `key → value:key` through `nodes` (round robin, one pipelined batch of
/// 500 at a time per node connection, `threads` connections per node).
fn write_through(nodes: &[Server], keys: &[String], threads: usize) {
    std::thread::scope(|scope| {
        let workers = nodes.len() * threads;
        for worker in 0..workers {
            let node = &nodes[worker % nodes.len()];
            scope.spawn(move || {
                let mut con = node.client();
                let mine: Vec<&String> = keys.iter().skip(worker).step_by(workers).collect();
                for batch in mine.chunks(500) {
                    let mut pipe = redis::pipe();
                    for key in batch {
                        pipe.cmd("SET")
                            .arg(key.as_str())
                            .arg(format!("value:{key}"))
                            .ignore();
                    }
                    pipe.query::<()>(&mut con).expect("pipelined SETs");
                }
            });
        }
    });
}

/// Reads every key through `node` with MGET (batches of 500, keys of many slots each) and
/// returns the keys whose value is not `value:key`.
fn wrong_values(node: &Server, keys: &[String]) -> Vec<String> {
    let mut con = node.client();
    let mut wrong = Vec::new();
    for batch in keys.chunks(500) {
        let values: Vec<Option<String>> =
            redis::cmd("MGET").arg(batch).query(&mut con).expect("MGET");
        for (key, value) in batch.iter().zip(values) {
            if value.as_deref() != Some(&format!("value:{key}")) {
                wrong.push(key.clone());
            }
        }
    }
    wrong
}

#[test]
fn three_nodes_form_from_a_seed_and_serve_every_key_through_every_node() {
    let cluster = Cluster::start(3, &[]);
    let ids = cluster.ids();
    for node in &cluster.nodes {
        let info = node.cli(&["CLUSTER", "INFO"]);
        assert!(info.contains("cluster_state:ok"), "{info}");
        assert!(info.contains("cluster_known_nodes:3"), "{info}");
        let nodes = node.cli(&["CLUSTER", "NODES"]);
        for id in &ids {
            assert!(nodes.contains(id.as_str()), "{id} missing from {nodes}");
        }
    }
    // One node's store holds some slots only: whole-database and multi-key moves are refused.
    for command in [&["RENAME", "a", "b"][..], &["FLUSHALL"], &["MULTI"]] {
        let refused = cluster.nodes[0].cli(command);
        assert!(
            refused.contains("not supported in cluster mode"),
            "{command:?}: {refused}"
        );
    }
    let count = keys_wanted();
    let keys: Vec<String> = (0..count).map(|i| format!("k:{i}")).collect();
    let started = Instant::now();
    write_through(&cluster.nodes, &keys, 2);
    let wrote = started.elapsed();
    for node in &cluster.nodes {
        let started = Instant::now();
        let wrong = wrong_values(node, &keys);
        assert!(
            wrong.is_empty(),
            "through node {}: {} of {count} keys wrong, e.g. {:?}",
            node.port,
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
        eprintln!(
            "{count} keys written through 3 nodes in {wrote:?}; read through node {} in {:?}",
            node.port,
            started.elapsed()
        );
    }
}

/// Which node positions hold each key (CLUSTER HOLDS on every node).
fn holders(cluster: &Cluster, keys: &[String]) -> Vec<Vec<usize>> {
    let mut held = vec![Vec::new(); keys.len()];
    for (position, node) in cluster.nodes.iter().enumerate() {
        let mut con = node.client();
        for (chunk_index, batch) in keys.chunks(500).enumerate() {
            let flags: Vec<i64> = redis::cmd("CLUSTER")
                .arg("HOLDS")
                .arg(batch)
                .query(&mut con)
                .expect("CLUSTER HOLDS");
            for (i, flag) in flags.into_iter().enumerate() {
                if flag == 1 {
                    held[chunk_index * 500 + i].push(position);
                }
            }
        }
    }
    held
}

/// The slot table from CLUSTER SLOTS: slot → node ids of its replicas.
fn slot_table(con: &mut Connection) -> HashMap<u16, Vec<String>> {
    let ranges: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query(con).unwrap();
    let mut table = HashMap::new();
    for range in ranges {
        let redis::Value::Array(fields) = range else {
            panic!("slot range {range:?}");
        };
        let first: i64 = redis::from_redis_value(&fields[0]).unwrap();
        let last: i64 = redis::from_redis_value(&fields[1]).unwrap();
        let ids: Vec<String> = fields[2..]
            .iter()
            .map(|node| {
                let redis::Value::Array(parts) = node else {
                    panic!("node entry {node:?}");
                };
                redis::from_redis_value(&parts[2]).unwrap()
            })
            .collect();
        for slot in first..=last {
            table.insert(slot as u16, ids.clone());
        }
    }
    table
}

#[test]
fn five_nodes_keep_every_key_on_exactly_n_nodes_and_serve_it_through_any() {
    let cluster = Cluster::start(5, &[]);
    let ids = cluster.ids();
    let keys: Vec<String> = (0..5_000).map(|i| format!("five:{i}")).collect();
    write_through(&cluster.nodes, &keys, 1);
    let table = slot_table(&mut cluster.nodes[0].client());
    assert_eq!(table.len(), 16384, "every slot assigned");
    let mut con = cluster.nodes[2].client();
    let mut wrong_placement = Vec::new();
    for (key, held) in keys.iter().zip(holders(&cluster, &keys)) {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut con)
            .unwrap();
        let mut expected: Vec<&str> = table[&slot].iter().map(String::as_str).collect();
        expected.sort_unstable();
        let mut got: Vec<&str> = held.iter().map(|&p| ids[p].as_str()).collect();
        got.sort_unstable();
        if got.len() != 3 || got != expected {
            wrong_placement.push(format!(
                "{key} (slot {slot}): on {got:?}, replicas {expected:?}"
            ));
        }
    }
    assert!(
        wrong_placement.is_empty(),
        "{} of {} keys not on exactly their 3 replicas, e.g. {:?}",
        wrong_placement.len(),
        keys.len(),
        &wrong_placement[..wrong_placement.len().min(5)]
    );
    for node in &cluster.nodes {
        let wrong = wrong_values(node, &keys);
        assert!(
            wrong.is_empty(),
            "through {}: {:?}",
            node.port,
            &wrong[..wrong.len().min(5)]
        );
    }
}

fn quorum(con: &mut Connection, r: usize, w: usize) {
    let set: Vec<i64> = redis::cmd("CLUSTER")
        .arg("QUORUM")
        .arg(r)
        .arg(w)
        .query(con)
        .unwrap();
    assert_eq!(set, vec![r as i64, w as i64]);
}

fn vget(con: &mut Connection, key: &str) -> (String, Vec<String>) {
    redis::cmd("VGET").arg(key).query(con).expect("VGET")
}

#[test]
fn writes_through_two_coordinators_become_siblings_and_a_versioned_write_resolves_them() {
    let cluster = Cluster::start(3, &[]);
    let (a, b, c) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);
    let mut ca = a.client();
    let mut cb = b.client();
    let mut cc = c.client();
    quorum(&mut ca, 1, 1);
    quorum(&mut cb, 1, 1);
    quorum(&mut cc, 3, 3);
    redis::cmd("SET")
        .arg("doc")
        .arg("v0")
        .query::<()>(&mut cc)
        .unwrap();
    // Neither write reaches the other's node: with W=1 each succeeds on its event replica.
    for node in [a, b] {
        assert_eq!(
            node.cli(&["DEBUG", "CLUSTER-PAUSE-REPLICATION", "yes"])
                .trim(),
            "OK"
        );
    }
    redis::cmd("SET")
        .arg("doc")
        .arg("from-a")
        .query::<()>(&mut ca)
        .unwrap();
    redis::cmd("SET")
        .arg("doc")
        .arg("from-b")
        .query::<()>(&mut cb)
        .unwrap();
    for node in [a, b] {
        assert_eq!(
            node.cli(&["DEBUG", "CLUSTER-PAUSE-REPLICATION", "no"])
                .trim(),
            "OK"
        );
    }
    // A read of all three copies merges them: both writes are siblings (v0 is superseded).
    let (context, mut siblings) = vget(&mut cc, "doc");
    siblings.sort();
    assert_eq!(
        siblings,
        vec!["from-a", "from-b"],
        "siblings after concurrent writes"
    );
    // GET picks one of them, the same on every node.
    let picked: Vec<String> = cluster
        .nodes
        .iter()
        .map(|node| {
            let mut con = node.client();
            quorum(&mut con, 3, 3);
            redis::cmd("GET").arg("doc").query(&mut con).unwrap()
        })
        .collect();
    assert!(picked.iter().all(|v| v == &picked[0]), "{picked:?}");
    assert!(["from-a", "from-b"].contains(&picked[0].as_str()));
    // The versioned write with the context supersedes both.
    let ok: String = redis::cmd("VSET")
        .arg("doc")
        .arg("merged")
        .arg(&context)
        .query(&mut cc)
        .unwrap();
    assert_eq!(ok, "OK");
    for node in &cluster.nodes {
        let mut con = node.client();
        quorum(&mut con, 3, 3);
        let (_, siblings) = vget(&mut con, "doc");
        assert_eq!(siblings, vec!["merged"], "through {}", node.port);
    }
    // Deleted, the key is gone from the slot counts too (its tombstone stays for the grace
    // period, and is not a key).
    let deleted: i64 = redis::cmd("DEL").arg("doc").query(&mut cc).unwrap();
    assert_eq!(deleted, 1);
    let slot = c.cli(&["CLUSTER", "KEYSLOT", "doc"]).trim().to_string();
    for node in &cluster.nodes {
        assert_eq!(node.cli(&["CLUSTER", "COUNTKEYSINSLOT", &slot]).trim(), "0");
        assert_eq!(
            node.cli(&["CLUSTER", "GETKEYSINSLOT", &slot, "10"]).trim(),
            ""
        );
    }
    // A context that does not decode is refused.
    let refused = redis::cmd("VSET")
        .arg("doc")
        .arg("x")
        .arg("zz")
        .query::<String>(&mut cc);
    assert!(refused.is_err(), "{refused:?}");
}

#[test]
fn ten_thousand_concurrent_increments_through_every_node_add_up_exactly() {
    let cluster = Cluster::start(3, &[]);
    const PER_THREAD: usize = 1_250;
    const THREADS_PER_NODE: usize = 3;
    // 3 nodes x 3 threads x 1250 is 11,250 (at least 10,000), through every node at once.
    std::thread::scope(|scope| {
        for node in &cluster.nodes {
            for _ in 0..THREADS_PER_NODE {
                scope.spawn(move || {
                    let mut con = node.client();
                    for batch in 0..(PER_THREAD / 250) {
                        let mut pipe = redis::pipe();
                        for _ in 0..250 {
                            pipe.cmd("INCR").arg("hits").ignore();
                        }
                        pipe.query::<()>(&mut con)
                            .unwrap_or_else(|e| panic!("batch {batch}: {e}"));
                    }
                });
            }
        }
    });
    let expected = (cluster.nodes.len() * THREADS_PER_NODE * PER_THREAD) as i64;
    for node in &cluster.nodes {
        let total: i64 = redis::cmd("GET")
            .arg("hits")
            .query(&mut node.client())
            .unwrap();
        assert_eq!(total, expected, "through {}", node.port);
    }
    // DECRBY and INCRBY go through the same counter.
    let mut con = cluster.nodes[1].client();
    let after: i64 = redis::cmd("DECRBY")
        .arg("hits")
        .arg(250)
        .query(&mut con)
        .unwrap();
    assert_eq!(after, expected - 250);
}

#[test]
fn a_request_from_a_stale_epoch_is_refused_and_retried_after_a_refresh() {
    // Long requests: the write below waits for a map change the test makes meanwhile.
    let cluster = Cluster::start(3, &["--cluster-request-timeout", "30000"]);
    let epoch = |node: &Server| -> u64 {
        node.cli(&["CLUSTER", "INFO"])
            .lines()
            .find_map(|l| l.strip_prefix("cluster_current_epoch:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("epoch in CLUSTER INFO")
    };
    let now = epoch(&cluster.nodes[0]);
    // Node 1 answers as if it were one epoch ahead: node 0's requests to it are refused.
    let fenced = &cluster.nodes[1];
    assert_eq!(
        fenced
            .cli(&["DEBUG", "CLUSTER-FENCE", &(now + 1).to_string()])
            .trim(),
        "OK"
    );
    let writer = &cluster.nodes[0];
    std::thread::scope(|scope| {
        let write = scope.spawn(|| {
            let mut con = writer.client();
            // W=3: the write needs the fenced node's acknowledgement.
            quorum(&mut con, 1, 3);
            let started = Instant::now();
            let reply: redis::RedisResult<String> =
                redis::cmd("SET").arg("fenced").arg("v").query(&mut con);
            (reply, started.elapsed())
        });
        // Let the write meet the refusal, then move the cluster to the next epoch.
        std::thread::sleep(Duration::from_millis(500));
        let seed = format!("127.0.0.1:{}", cluster.nodes[0].port);
        let fourth = Server::start_with(&["--cluster-enabled", "yes", "--cluster-join", &seed]);
        let (reply, took) = write.join().unwrap();
        assert_eq!(
            reply.as_deref(),
            Ok("OK"),
            "after {took:?}; log:\n{}",
            writer.log()
        );
        assert!(epoch(&cluster.nodes[0]) > now);
        assert!(
            writer
                .log()
                .contains("stale epoch: map refreshed, sending again"),
            "the writer never met the refusal; log:\n{}",
            writer.log()
        );
        drop(fourth);
    });
    let value: String = redis::cmd("GET")
        .arg("fenced")
        .query(&mut cluster.nodes[2].client())
        .unwrap();
    assert_eq!(value, "v");
}

#[test]
fn a_retried_increment_with_the_same_request_id_counts_once_through_any_node() {
    let cluster = Cluster::start(3, &[]);
    let incr = |node: &Server, by: i64, id: &str| -> i64 {
        redis::cmd("INCRBYID")
            .arg("orders")
            .arg(by)
            .arg(id)
            .query(&mut node.client())
            .unwrap()
    };
    assert_eq!(incr(&cluster.nodes[0], 5, "req-1"), 5);
    // The client's retry after a timeout: the same id, through the same node or another.
    assert_eq!(incr(&cluster.nodes[0], 5, "req-1"), 5);
    assert_eq!(incr(&cluster.nodes[1], 5, "req-1"), 5);
    assert_eq!(incr(&cluster.nodes[2], 7, "req-2"), 12);
    assert_eq!(incr(&cluster.nodes[1], 7, "req-2"), 12);
    for node in &cluster.nodes {
        let total: i64 = redis::cmd("GET")
            .arg("orders")
            .query(&mut node.client())
            .unwrap();
        assert_eq!(total, 12, "through {}", node.port);
    }
    // A single node keeps no request ids: it refuses rather than count twice.
    let single = Server::start();
    let refused = single.cli(&["INCRBYID", "orders", "5", "req-1"]);
    assert!(refused.contains("needs cluster mode"), "{refused}");
}
