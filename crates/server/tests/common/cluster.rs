//! Clusters of real `ringkv` processes on loopback for the cluster tests: the first node
//! founds the cluster, the others join it through its client port (`--cluster-join`), as an
//! operator would (docs/cluster.md, "Starting").

use std::collections::HashMap;
use std::time::{Duration, Instant};

use redis::Connection;

use super::Server;

/// A running cluster; every node is killed on drop.
pub struct Cluster {
    pub nodes: Vec<Server>,
}

impl Cluster {
    /// Starts `n` nodes with `extra` flags on each, waits until every node knows all `n`.
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        let first = Server::start_retrying_ports(|| {
            let mut args: Vec<String> = ["--cluster-enabled", "yes", "--cluster-port"]
                .map(String::from)
                .to_vec();
            args.push(free_port());
            args.extend(extra.iter().map(|a| a.to_string()));
            args
        });
        let seed = format!("127.0.0.1:{}", first.port);
        // Joins go one at a time through the Raft leader anyway; started together they wait
        // for each other there rather than here.
        let joiners: Vec<Server> = std::thread::scope(|scope| {
            let handles: Vec<_> = (1..n)
                .map(|_| {
                    let seed = seed.clone();
                    scope.spawn(move || start_joining(&seed, extra))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("join a node"))
                .collect()
        });
        let mut nodes = vec![first];
        nodes.extend(joiners);
        let cluster = Cluster { nodes };
        cluster.wait_known(n, Duration::from_secs(60));
        cluster
    }

    /// Waits until every node's CLUSTER INFO shows `n` known nodes, state ok, and no
    /// membership change in progress (every joiner streamed its slots).
    pub fn wait_known(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for node in &self.nodes {
            loop {
                let info = node.cli(&["CLUSTER", "INFO"]);
                if info.contains(&format!("cluster_known_nodes:{n}\r"))
                    && info.contains("cluster_state:ok")
                    && info.contains("cluster_change_in_progress:0\r")
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {} does not know {n} nodes: {info}\nlog:\n{}",
                    node.port,
                    node.log()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The node ids by position (CLUSTER MYID).
    pub fn ids(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| node.cli(&["CLUSTER", "MYID"]).trim().to_string())
            .collect()
    }
}

/// Starts a node that joins the cluster through `seed` (a member's client address), on a
/// free internode port, with `extra` flags.
pub fn start_joining(seed: &str, extra: &[&str]) -> Server {
    Server::start_retrying_ports(|| {
        let mut args: Vec<String> = ["--cluster-enabled", "yes", "--cluster-join", seed]
            .map(String::from)
            .to_vec();
        args.extend(["--cluster-port".to_string(), free_port()]);
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    })
}

/// A free port on loopback for a node's internode listener. The default, 10000 above the
/// client port, may belong to another process when the kernel picked the client port, as
/// it does for the tests'.
pub fn free_port() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
        .to_string()
}

/// A field of `node`'s CLUSTER INFO, as a number.
pub fn cluster_info(node: &Server, field: &str) -> u64 {
    node.cli(&["CLUSTER", "INFO"])
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in CLUSTER INFO"))
        .trim()
        .parse()
        .unwrap()
}

/// `node`'s client and internode ports, to restart it on (the cluster map names a member
/// by its addresses): `["--port", p, "--cluster-port", c]` for [`Server::restart_with`].
pub fn own_addresses(node: &Server) -> Vec<String> {
    let cluster_port = node
        .cli(&["CLUSTER", "NODES"])
        .lines()
        .find(|line| line.contains("myself"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|addr| addr.split(['@', ',']).nth(1))
        .expect("CLUSTER NODES names this node's cluster port")
        .to_string();
    vec![
        "--port".into(),
        node.port.to_string(),
        "--cluster-port".into(),
        cluster_port,
    ]
}

/// Writes `keys` as `key → value:key` through `nodes` (round robin, one pipelined batch of
/// 500 at a time per node connection, `threads` connections per node).
pub fn write_through(nodes: &[Server], keys: &[String], threads: usize) {
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
pub fn wrong_values(node: &Server, keys: &[String]) -> Vec<String> {
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

/// Asserts that every key reads `value:key` through `node` ([`wrong_values`]).
pub fn assert_right_values(node: &Server, keys: &[String]) {
    let wrong = wrong_values(node, keys);
    assert!(
        wrong.is_empty(),
        "through {}: {} of {} keys wrong, e.g. {:?}",
        node.port,
        wrong.len(),
        keys.len(),
        &wrong[..wrong.len().min(5)]
    );
}

/// Which node positions hold each key (CLUSTER HOLDS on every node).
pub fn holders<'a>(
    nodes: impl IntoIterator<Item = &'a Server>,
    keys: &[String],
) -> Vec<Vec<usize>> {
    let mut held = vec![Vec::new(); keys.len()];
    for (position, node) in nodes.into_iter().enumerate() {
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
pub fn slot_table(con: &mut Connection) -> HashMap<u16, Vec<String>> {
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

/// The keys not on exactly their 3 replicas of the slot table (asked of `nodes[0]`), each
/// described; `nodes` are every member.
pub fn misplaced(nodes: &[&Server], keys: &[String]) -> Vec<String> {
    let ids: Vec<String> = nodes
        .iter()
        .map(|node| node.cli(&["CLUSTER", "MYID"]).trim().to_string())
        .collect();
    let table = slot_table(&mut nodes[0].client());
    let mut con = nodes[0].client();
    let mut wrong = Vec::new();
    for (key, held) in keys.iter().zip(holders(nodes.iter().copied(), keys)) {
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
            wrong.push(format!(
                "{key} (slot {slot}): on {got:?}, replicas {expected:?}"
            ));
        }
    }
    wrong
}
