//! The cluster-aware clients people use, against a real three-node cluster (N=3, R=2, W=2,
//! the defaults): `redis-cli -c` (and `redis-cli --cluster check`), redis-py's `RedisCluster`,
//! and the `redis` crate's `ClusterClient`. Each runs a scripted sequence over keys whose slots
//! are owned by every node, through different nodes, and asserts the exact replies.
//!
//! ringkv never answers MOVED or ASK (any node coordinates any key), so these clients only
//! have to understand CLUSTER SLOTS / CLUSTER NODES and route as they would on Redis Cluster.
//!
//! redis-py: the test runs `$RINGKV_PYTHON` if set, else the first of `python3` and
//! `/usr/bin/python3` that can import `redis.cluster` (Debian's `python3-redis`, or
//! `pip install redis`; scripts/test.sh installs it). It fails, not skips, without one.

mod common;

use std::process::Command;

use common::cluster::Cluster;
use common::{q, Server};
use redis::cluster::ClusterClient;

/// `(first slot, last slot, client port of the owner)` from a node's CLUSTER NODES.
fn slot_owners(node: &Server) -> Vec<(u16, u16, u16)> {
    let nodes = node.cli(&["CLUSTER", "NODES"]);
    let mut owners = Vec::new();
    for line in nodes.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let port: u16 = fields[1]
            .split('@')
            .next()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("address in CLUSTER NODES line {line:?}"));
        for range in &fields[8..] {
            let (first, last) = range.split_once('-').unwrap_or((range, range));
            owners.push((first.parse().unwrap(), last.parse().unwrap(), port));
        }
    }
    owners
}

/// `per_node` keys `{prefix}:{i}` for each node, the node owning their slot, interleaved so
/// that consecutive keys belong to different nodes. Asserts every node owns some slots.
fn keys_on_every_node(cluster: &Cluster, prefix: &str, per_node: usize) -> Vec<String> {
    let owners = slot_owners(&cluster.nodes[0]);
    let mut con = cluster.nodes[0].client();
    let mut by_node: Vec<Vec<String>> = vec![Vec::new(); cluster.nodes.len()];
    for i in 0.. {
        if by_node.iter().all(|keys| keys.len() >= per_node) {
            break;
        }
        assert!(i < 10_000, "no keys for some node: {owners:?}");
        let key = format!("{prefix}:{i}");
        let slot: u16 = q(&mut con, &["CLUSTER", "KEYSLOT", &key]);
        let owner = owners
            .iter()
            .find(|(first, last, _)| (*first..=*last).contains(&slot))
            .unwrap_or_else(|| panic!("slot {slot} has no owner in {owners:?}"))
            .2;
        let index = cluster
            .nodes
            .iter()
            .position(|n| n.port == owner)
            .unwrap_or_else(|| panic!("owner port {owner} is not a node of the cluster"));
        if by_node[index].len() < per_node {
            by_node[index].push(key);
        }
    }
    (0..per_node)
        .flat_map(|i| by_node.iter().map(move |keys| keys[i].clone()))
        .collect()
}

/// `redis-cli -c -p <node> args…`, stdout without its last newline (a nil is an empty line).
fn cli_c(node: &Server, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-c", "-p", &node.port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli (install redis-tools)");
    assert!(
        output.status.success(),
        "redis-cli -c {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout.strip_suffix('\n').unwrap_or(&stdout).to_string()
}

#[test]
fn redis_cli_cluster_mode_across_slots_and_nodes() {
    let cluster = Cluster::start(3, &[]);
    let n = &cluster.nodes;
    let keys = keys_on_every_node(&cluster, "cli", 2);
    let mut failures = Vec::new();
    let mut check = |node: usize, args: &[&str], expected: &[&str]| {
        let got = cli_c(&n[node], args);
        if !expected.iter().any(|e| *e == got) {
            failures.push(format!(
                "node {node}: {args:?}\n    expected {expected:?}\n    got      {got:?}"
            ));
        }
    };
    // Written through one node, read through the next: every owner, every coordinator.
    for (i, key) in keys.iter().enumerate() {
        let value = format!("v{i}");
        check(i % 3, &["SET", key, &value], &["OK"]);
        check((i + 1) % 3, &["GET", key], &[&value]);
    }
    check(0, &["INCR", "cli:counter"], &["1"]);
    check(1, &["INCR", "cli:counter"], &["2"]);
    check(2, &["INCRBY", "cli:counter", "40"], &["42"]);
    check(0, &["GET", "cli:counter"], &["42"]);
    check(1, &["DECR", "cli:counter"], &["41"]);
    // MSET and MGET over six slots owned by all three nodes (no CROSSSLOT).
    let mut mset = vec!["MSET"];
    let values: Vec<String> = (0..keys.len()).map(|i| format!("m{i}")).collect();
    for (key, value) in keys.iter().zip(&values) {
        mset.push(key);
        mset.push(value);
    }
    check(1, &mset, &["OK"]);
    let mut mget = vec!["MGET"];
    mget.extend(keys.iter().map(String::as_str));
    mget.push("cli:missing");
    let expected_mget = format!("{}\n", values.join("\n"));
    check(2, &mget, &[&expected_mget]);
    // Expiry set through one node is seen through the others.
    check(2, &["EXPIRE", &keys[0], "100"], &["1"]);
    check(0, &["TTL", &keys[0]], &["100", "99"]);
    check(1, &["TTL", &keys[0]], &["100", "99"]);
    check(0, &["TTL", &keys[1]], &["-1"]);
    check(0, &["TTL", "cli:missing"], &["-2"]);
    // DEL across slots counts what existed; the deleted keys are gone everywhere.
    check(
        0,
        &["DEL", &keys[0], &keys[1], &keys[2], "cli:missing"],
        &["3"],
    );
    check(
        1,
        &["EXISTS", &keys[0], &keys[1], &keys[2], &keys[3]],
        &["1"],
    );
    check(2, &["GET", &keys[1]], &[""]);
    check(1, &["TTL", &keys[0]], &["-2"]);
    check(0, &["EXISTS", &keys[3], &keys[4], &keys[5]], &["3"]);
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn redis_cli_cluster_check_agrees() {
    let cluster = Cluster::start(3, &[]);
    for node in &cluster.nodes {
        let output = Command::new("redis-cli")
            .args(["--cluster", "check", &format!("127.0.0.1:{}", node.port)])
            .env("NO_COLOR", "1")
            .output()
            .expect("run redis-cli");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "--cluster check failed:\n{text}");
        for line in [
            "[OK] All nodes agree about slots configuration.",
            "[OK] All 16384 slots covered.",
        ] {
            assert!(text.contains(line), "no {line:?} in:\n{text}");
        }
        // redis-cli colours its output even without a terminal: a line may start with an
        // escape sequence.
        let masters = text.matches("M: ").count();
        assert_eq!(masters, 3, "three masters in:\n{text}");
        for other in &cluster.nodes {
            assert!(
                text.contains(&format!("127.0.0.1:{}", other.port)),
                "node {} missing from:\n{text}",
                other.port
            );
        }
    }
}

/// The redis-py script: prints `name=repr(value)` lines the test compares exactly.
const REDIS_PY_SCRIPT: &str = r#"
import sys
from redis.cluster import RedisCluster

p1, p2 = int(sys.argv[1]), int(sys.argv[2])
a = RedisCluster(host="127.0.0.1", port=p1, socket_timeout=20)
# A second client, discovering the cluster from another node.
b = RedisCluster(host="127.0.0.1", port=p2, socket_timeout=20)

def out(name, value):
    print(f"{name}={value!r}", flush=True)

keys = [f"py:{i}" for i in range(12)]
out("nodes", sorted(n.port for n in a.get_nodes()) == sorted(n.port for n in b.get_nodes()) and len(a.get_nodes()))
out("owners", len({a.get_node_from_key(k).port for k in keys}))
out("slots", len({a.keyslot(k) for k in keys}))
for i, k in enumerate(keys):
    a.set(k, f"v{i}")
out("get", [b.get(k) for k in keys])
out("incr", [a.incr("py:n"), b.incr("py:n"), a.incrby("py:n", 40), b.decr("py:n")])
out("incr_other", b.get("py:n"))
out("mset", a.mset_nonatomic({f"py:m{i}": str(i) for i in range(8)}))
out("mget", b.mget_nonatomic([f"py:m{i}" for i in range(8)] + ["py:missing"]))
out("delete", a.delete(keys[0], keys[1], keys[2], "py:missing"))
out("get_deleted", [b.get(k) for k in keys[:3]])
out("exists", b.exists(*keys))
out("expire", a.expire(keys[3], 100))
out("ttl", b.ttl(keys[3]) in (99, 100))
out("ttl_none", b.ttl(keys[4]))
out("ttl_missing", b.ttl(keys[0]))
pipe = a.pipeline()
for i in range(6):
    pipe.set(f"py:p{i}", f"pv{i}")
    pipe.incr(f"py:pc{i}")
    pipe.get(f"py:p{i}")
out("pipeline", pipe.execute())
out("pipeline_other", [b.get(f"py:p{i}") for i in range(6)] + [b.get(f"py:pc{i}") for i in range(6)])
"#;

/// A Python interpreter that can import `redis.cluster`.
fn python_with_redis() -> String {
    let candidates: Vec<String> = match std::env::var("RINGKV_PYTHON") {
        Ok(python) => vec![python],
        Err(_) => vec!["python3".into(), "/usr/bin/python3".into()],
    };
    for python in &candidates {
        let ok = Command::new(python)
            .args(["-c", "import redis.cluster"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return python.clone();
        }
    }
    panic!(
        "none of {candidates:?} imports redis.cluster: install python3-redis (apt) or \
         `pip install redis` (scripts/test.sh does)"
    );
}

#[test]
fn redis_py_redis_cluster() {
    let cluster = Cluster::start(3, &[]);
    let python = python_with_redis();
    let output = Command::new(&python)
        .args(["-c", REDIS_PY_SCRIPT])
        .arg(cluster.nodes[0].port.to_string())
        .arg(cluster.nodes[2].port.to_string())
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{python} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let values: Vec<String> = (0..12).map(|i| format!("b'v{i}'")).collect();
    let m: Vec<String> = (0..8).map(|i| format!("b'{i}'")).collect();
    let pipeline: Vec<String> = (0..6).map(|i| format!("True, 1, b'pv{i}'")).collect();
    let pv: Vec<String> = (0..6).map(|i| format!("b'pv{i}'")).collect();
    let expected = [
        "nodes=3".to_string(),
        "owners=3".to_string(),
        "slots=12".to_string(),
        format!("get=[{}]", values.join(", ")),
        "incr=[1, 2, 42, 41]".to_string(),
        "incr_other=b'41'".to_string(),
        format!("mset=[{}]", ["True"; 8].join(", ")),
        format!("mget=[{}, None]", m.join(", ")),
        "delete=3".to_string(),
        "get_deleted=[None, None, None]".to_string(),
        "exists=9".to_string(),
        "expire=True".to_string(),
        "ttl=True".to_string(),
        "ttl_none=-1".to_string(),
        "ttl_missing=-2".to_string(),
        format!("pipeline=[{}]", pipeline.join(", ")),
        format!(
            "pipeline_other=[{}, {}]",
            pv.join(", "),
            ["b'1'"; 6].join(", ")
        ),
    ];
    let got: Vec<&str> = stdout.lines().collect();
    assert_eq!(got, expected, "redis-py output:\n{stdout}");
}

#[test]
fn redis_crate_cluster_client() {
    let cluster = Cluster::start(3, &[]);
    let keys = keys_on_every_node(&cluster, "rs", 3);
    let connect = |node: &Server| {
        let client = ClusterClient::new(vec![node.url()]).expect("cluster client");
        let con = client.get_connection().expect("cluster connection");
        con.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .expect("timeout");
        con
    };
    let mut a = connect(&cluster.nodes[0]);
    // A second client that discovered the cluster from another node.
    let mut b = connect(&cluster.nodes[1]);
    for (i, key) in keys.iter().enumerate() {
        let reply: String = redis::cmd("SET")
            .arg(key)
            .arg(format!("v{i}"))
            .query(&mut a)
            .unwrap();
        assert_eq!(reply, "OK", "SET {key}");
    }
    for (i, key) in keys.iter().enumerate() {
        let value: Option<String> = redis::cmd("GET").arg(key).query(&mut b).unwrap();
        assert_eq!(
            value.as_deref(),
            Some(format!("v{i}").as_str()),
            "GET {key}"
        );
    }
    let counts: Vec<i64> = [
        redis::cmd("INCR").arg("rs:n").query(&mut a).unwrap(),
        redis::cmd("INCR").arg("rs:n").query(&mut b).unwrap(),
        redis::cmd("INCRBY")
            .arg("rs:n")
            .arg(40)
            .query(&mut a)
            .unwrap(),
    ]
    .to_vec();
    assert_eq!(counts, [1, 2, 42]);
    let n: Option<String> = redis::cmd("GET").arg("rs:n").query(&mut b).unwrap();
    assert_eq!(n.as_deref(), Some("42"));
    // MGET over nine slots owned by all three nodes, and a missing key: the client splits it
    // by slot and puts the answers back in order.
    let mut mget = redis::cmd("MGET");
    mget.arg(&keys).arg("rs:missing");
    let values: Vec<Option<String>> = mget.query(&mut b).unwrap();
    let mut expected: Vec<Option<String>> =
        (0..keys.len()).map(|i| Some(format!("v{i}"))).collect();
    expected.push(None);
    assert_eq!(values, expected);
    let deleted: i64 = redis::cmd("DEL")
        .arg(&keys[..3])
        .arg("rs:missing")
        .query(&mut a)
        .unwrap();
    assert_eq!(deleted, 3);
    let exists: i64 = redis::cmd("EXISTS").arg(&keys).query(&mut b).unwrap();
    assert_eq!(exists, keys.len() as i64 - 3);
    let gone: Option<String> = redis::cmd("GET").arg(&keys[0]).query(&mut b).unwrap();
    assert_eq!(gone, None);
}
