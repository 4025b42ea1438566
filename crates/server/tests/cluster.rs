//! Cluster mode with real processes on loopback (docs/cluster.md): a cluster forms from a
//! seed, serves every key through every node, keeps every key on exactly N nodes, turns
//! concurrent writes through two coordinators into siblings that a versioned write resolves,
//! adds up concurrent increments through every node exactly, and refuses a request from a
//! stale epoch until the sender has the newer map.
//!
//! `CLUSTER_KEYS` scales the key count of the 3-node test (default: the issue's 100,000).

mod common;

use std::time::{Duration, Instant};

use common::cluster::{
    assert_right_values, cluster_info, holders, misplaced, own_addresses, slot_table,
    write_through, Cluster,
};
use common::Server;
use redis::Connection;

fn keys_wanted() -> usize {
    std::env::var("CLUSTER_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
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
        assert_right_values(node, &keys);
        eprintln!(
            "{count} keys written through 3 nodes in {wrote:?}; read through node {} in {:?}",
            node.port,
            started.elapsed()
        );
    }
}

#[test]
fn five_nodes_keep_every_key_on_exactly_n_nodes_and_serve_it_through_any() {
    let cluster = Cluster::start(5, &[]);
    let keys: Vec<String> = (0..5_000).map(|i| format!("five:{i}")).collect();
    write_through(&cluster.nodes, &keys, 1);
    let table = slot_table(&mut cluster.nodes[0].client());
    assert_eq!(table.len(), 16384, "every slot assigned");
    let nodes: Vec<&Server> = cluster.nodes.iter().collect();
    let wrong_placement = misplaced(&nodes, &keys);
    assert!(
        wrong_placement.is_empty(),
        "{} of {} keys not on exactly their 3 replicas, e.g. {:?}",
        wrong_placement.len(),
        keys.len(),
        &wrong_placement[..wrong_placement.len().min(5)]
    );
    for node in &cluster.nodes {
        assert_right_values(node, &keys);
    }
}

fn quorum(con: &mut Connection, r: usize, w: usize) {
    let set: Vec<i64> = redis::cmd("CLUSTER")
        .arg("QUORUM")
        .arg(r)
        .arg(w)
        .query(con)
        .unwrap();
    assert_eq!(set, vec![r as i64, w as i64, 0]);
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
    // Every node at the same epoch with no change in progress: a readiness still on its
    // way would move the cluster past the fence by itself (seen once: no refusal met).
    let settled_at = Instant::now() + Duration::from_secs(30);
    let now = loop {
        let epochs: Vec<u64> = cluster.nodes.iter().map(&epoch).collect();
        let changing = cluster.nodes.iter().any(|node| {
            !node
                .cli(&["CLUSTER", "INFO"])
                .contains("cluster_change_in_progress:0\r")
        });
        if !changing && epochs.windows(2).all(|pair| pair[0] == pair[1]) {
            break epochs[0];
        }
        assert!(
            Instant::now() < settled_at,
            "the cluster did not settle: {epochs:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
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
        let fourth = common::cluster::start_joining(&seed, &[]);
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

/// A pipeline's data commands on distinct keys run at once in cluster mode (docs/cluster.md,
/// "Pipelines"); on one key they run in the order sent, and replies come back in request
/// order. 1,800 commands in one pipeline, past the 256 in flight of one connection.
#[test]
fn a_pipeline_runs_in_request_order_per_key_and_answers_in_order() {
    let cluster = Cluster::start(3, &[]);
    const KEYS: usize = 30;
    const ROUNDS: usize = 20;
    let mut con = cluster.nodes[0].client();
    let mut pipe = redis::pipe();
    for round in 0..ROUNDS {
        for k in 0..KEYS {
            pipe.cmd("SET").arg(format!("p:{k}")).arg(round);
        }
        for k in 0..KEYS {
            pipe.cmd("GET").arg(format!("p:{k}"));
        }
        for k in 0..KEYS {
            pipe.cmd("APPEND")
                .arg(format!("log:{k}"))
                .arg(format!("{round},"));
        }
    }
    let replies: Vec<redis::Value> = pipe.query(&mut con).expect("the pipeline");
    assert_eq!(replies.len(), ROUNDS * KEYS * 3);
    let mut log_len = vec![0usize; KEYS];
    for (i, reply) in replies.iter().enumerate() {
        let round = i / (KEYS * 3);
        let k = i % KEYS;
        let expected = match (i / KEYS) % 3 {
            0 => redis::Value::Okay,
            1 => redis::Value::BulkString(round.to_string().into_bytes()),
            _ => {
                log_len[k] += format!("{round},").len();
                redis::Value::Int(log_len[k] as i64)
            }
        };
        assert_eq!(reply, &expected, "reply {i} (round {round}, key {k})");
    }
    let order: String = (0..ROUNDS).map(|round| format!("{round},")).collect();
    for node in &cluster.nodes {
        let mut con = node.client();
        for k in 0..KEYS {
            let log: String = redis::cmd("GET")
                .arg(format!("log:{k}"))
                .query(&mut con)
                .unwrap();
            assert_eq!(log, order, "log:{k} through {}", node.port);
        }
    }
    // A keyless command waits for what is in flight: DBSIZE after a pipeline of SETs
    // through the same connection counts them on this node (each key is on every node at
    // N=3 with 3 nodes).
    let mut pipe = redis::pipe();
    for k in 0..KEYS {
        pipe.cmd("SET").arg(format!("fresh:{k}")).arg(k).ignore();
    }
    pipe.cmd("DBSIZE");
    let (size,): (i64,) = pipe.query(&mut con).unwrap();
    assert_eq!(size, (KEYS * 3) as i64, "p:*, log:* and fresh:* keys");
}

/// `ringkv cluster status`'s member rows, split into their columns (id, client, cluster,
/// zone, state, health, slots, first), after its summary, control plane and header lines.
fn cluster_status(port: u16) -> (String, Vec<Vec<String>>) {
    let output = std::process::Command::new(common::binary())
        .args(["cluster", "status", "--port", &port.to_string()])
        .output()
        .expect("run ringkv cluster status");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "ringkv cluster status failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows = text
        .lines()
        .filter(|line| !line.starts_with("control plane: "))
        .skip(2)
        .filter(|line| !line.starts_with('('))
        .map(|line| line.split_whitespace().map(str::to_string).collect())
        .collect();
    (text, rows)
}

/// `ringkv cluster status` prints every member with its state, liveness and slot counts, and
/// the epoch; a killed member shows as down (by gossip) and keeps its slots.
#[test]
fn ringkv_cluster_status_shows_members_epoch_slot_counts_and_a_dead_member() {
    let mut cluster = Cluster::start(3, &[]);
    let (text, rows) = cluster_status(cluster.nodes[1].port);
    let epoch: String = redis::cmd("CLUSTER")
        .arg("INFO")
        .query::<String>(&mut cluster.nodes[1].client())
        .unwrap()
        .lines()
        .find_map(|line| {
            line.strip_prefix("cluster_current_epoch:")
                .map(str::to_string)
        })
        .expect("cluster_current_epoch");
    assert!(
        text.starts_with(&format!(
            "cluster at epoch {epoch}: 3 members, 0 down, 3 replicas"
        )),
        "{text}"
    );
    assert_eq!(rows.len(), 3, "{text}");
    let mut firsts = 0;
    for row in &rows {
        assert_eq!(row.len(), 10, "{text}");
        assert_eq!(
            (row[8].as_str(), row[9].as_str()),
            ("-", "-"),
            "no change: {text}"
        );
        assert_eq!(
            (row[4].as_str(), row[5].as_str()),
            ("up", "alive"),
            "{text}"
        );
        // N=3 on three members: every member holds a copy of every slot.
        assert_eq!(row[6], "16384", "{text}");
        firsts += row[7].parse::<usize>().unwrap();
    }
    assert_eq!(firsts, 16384, "each slot has one first replica: {text}");
    let asked = format!("127.0.0.1:{}", cluster.nodes[1].port);
    assert!(
        rows.iter()
            .any(|row| row[0].ends_with('*') && row[1] == asked),
        "the asked node is marked: {text}"
    );
    let dead = format!("127.0.0.1:{}", cluster.nodes[2].port);
    cluster.nodes[2].kill();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (text, rows) = cluster_status(cluster.nodes[0].port);
        let row = rows
            .iter()
            .find(|row| row[1] == dead)
            .expect("the dead member stays");
        if row[5] == "down" {
            assert_eq!(row[6], "16384", "a down member keeps its slots: {text}");
            assert!(text.contains("3 members, 1 down"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "never shown down: {text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// MSET writes one slot's keys as one batch (docs/cluster.md, "What is atomic"): with
/// replication paused the event replica holds every key of the batch and no other node
/// holds any; once replication runs, a batch reaches every replica, and a key given twice
/// takes its last value.
#[test]
fn mset_writes_one_slots_keys_as_one_batch_on_each_replica() {
    let cluster = Cluster::start(3, &[]);
    let node = &cluster.nodes[0];
    let mut con = node.client();
    quorum(&mut con, 2, 1);
    assert_eq!(
        node.cli(&["DEBUG", "CLUSTER-PAUSE-REPLICATION", "yes"])
            .trim(),
        "OK"
    );
    let batch: Vec<String> = (0..20).map(|i| format!("{{order:7}}line:{i}")).collect();
    let mut mset = redis::cmd("MSET");
    for (i, key) in batch.iter().enumerate() {
        mset.arg(key).arg(i);
    }
    mset.query::<()>(&mut con).expect("MSET at W=1");
    // N=3 on three nodes: node 0 is a replica of every slot, so it is the event replica.
    for (i, held) in holders(&cluster.nodes, &batch).into_iter().enumerate() {
        assert_eq!(held, vec![0], "{}: only the event replica has it", batch[i]);
    }
    assert_eq!(
        node.cli(&["DEBUG", "CLUSTER-PAUSE-REPLICATION", "no"])
            .trim(),
        "OK"
    );
    quorum(&mut con, 2, 3);
    let mut mset = redis::cmd("MSET");
    for key in &batch {
        mset.arg(key).arg("second");
    }
    // Two slots and a key given twice in one MSET.
    mset.arg("{order:8}x")
        .arg("first")
        .arg("{order:8}x")
        .arg("last");
    mset.query::<()>(&mut con).expect("MSET at W=3");
    for (i, held) in holders(&cluster.nodes, &batch).into_iter().enumerate() {
        assert_eq!(held, vec![0, 1, 2], "{}: on every replica", batch[i]);
    }
    for other in &cluster.nodes {
        let mut con = other.client();
        let values: Vec<String> = redis::cmd("MGET").arg(&batch).query(&mut con).unwrap();
        assert!(
            values.iter().all(|v| v == "second"),
            "through {}: {values:?}",
            other.port
        );
        let x: String = redis::cmd("GET").arg("{order:8}x").query(&mut con).unwrap();
        assert_eq!(x, "last");
    }
}

/// A read asks R replicas first and the others only when one fails or does not answer in
/// the hedge delay (docs/cluster.md, "Reads"): with one replica stopped (SIGSTOP: it holds
/// its connections open and answers nothing, unlike a dead process), every read at R=2
/// still succeeds through the other two, before and after gossip finds it down.
#[test]
fn reads_go_around_a_replica_that_hangs() {
    let cluster = Cluster::start(3, &[]);
    let keys: Vec<String> = (0..40).map(|i| format!("hang:{i}")).collect();
    let mut con = cluster.nodes[0].client();
    for key in &keys {
        redis::cmd("SET")
            .arg(key)
            .arg(key)
            .query::<()>(&mut con)
            .unwrap();
    }
    let stopped = cluster.nodes[2].pid().expect("running");
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &stopped.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    signal("-STOP");
    let read_all = |con: &mut Connection, round: &str| {
        for key in &keys {
            let value: Option<String> = redis::cmd("GET")
                .arg(key)
                .query(con)
                .unwrap_or_else(|e| panic!("{round}: GET {key}: {e}"));
            assert_eq!(value.as_deref(), Some(key.as_str()), "{round}");
        }
    };
    // Right away: gossip still thinks the node alive, so for some keys it is among the
    // first two asked; the hedge asks the third.
    read_all(&mut con, "before gossip notices");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cluster.nodes[0]
        .cli(&["CLUSTER", "NODES"])
        .lines()
        .any(|line| line.contains(&format!(":{}@", cluster.nodes[2].port)) && line.contains("fail"))
    {
        assert!(
            Instant::now() < deadline,
            "gossip never marked the stopped node"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    read_all(&mut con, "after gossip marks it");
    signal("-CONT");
}

/// `tls-cluster yes`: members talk TLS with mutual certificates from one CA (docs/cluster.md,
/// "TLS"): a 3-node cluster forms and serves keys through every node, and the internode port
/// closes a connection that speaks the transport's handshake in plain TCP.
#[test]
fn a_cluster_over_tls_forms_serves_and_refuses_plain_tcp() {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
    use std::io::{Read, Write};
    let files = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let node_key = KeyPair::generate().unwrap();
    let mut node_params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    node_params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let node_cert = node_params.signed_by(&node_key, &ca, &ca_key).unwrap();
    let write = |name: &str, text: String| {
        let path = files.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (ca_file, cert_file, key_file) = (
        write("ca.pem", ca.pem()),
        write("node.pem", node_cert.pem()),
        write("node.key", node_key.serialize_pem()),
    );
    let cluster = Cluster::start(
        3,
        &[
            "--tls-cluster",
            "yes",
            "--tls-cert-file",
            &cert_file,
            "--tls-key-file",
            &key_file,
            "--tls-ca-cert-file",
            &ca_file,
        ],
    );
    let mut con = cluster.nodes[1].client();
    for i in 0..50 {
        redis::cmd("SET")
            .arg(format!("tls:{i}"))
            .arg(i)
            .query::<()>(&mut con)
            .unwrap();
    }
    for node in &cluster.nodes {
        let mut con = node.client();
        for i in 0..50 {
            let value: i64 = redis::cmd("GET")
                .arg(format!("tls:{i}"))
                .query(&mut con)
                .unwrap();
            assert_eq!(value, i, "through {}", node.port);
        }
    }
    // Plain TCP to the internode port: the bytes of a transport handshake frame are not a
    // TLS ClientHello; the node closes the connection and logs why.
    let node = &cluster.nodes[0];
    let cluster_port: u16 = own_addresses(node)[3].parse().unwrap();
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", cluster_port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain
        .write_all(&[1, 0, 0, 0, 40, 0, 0, 0, 0, 0, 0, 0, 0])
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node.log().contains("internode TLS handshake failed") {
        assert!(
            Instant::now() < deadline,
            "no TLS refusal logged:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Which of `keys` `node`'s own store holds (CLUSTER HOLDS).
fn holds(node: &Server, keys: &[String]) -> Vec<bool> {
    let mut con = node.client();
    let flags: Vec<i64> = redis::cmd("CLUSTER")
        .arg("HOLDS")
        .arg(keys)
        .query(&mut con)
        .expect("CLUSTER HOLDS");
    flags.into_iter().map(|f| f == 1).collect()
}

/// Sloppy quorum and hinted handoff (docs/cluster.md, "Sloppy quorum and hinted handoff"):
/// 4 nodes at N=3, one killed. Writes at W=3 still succeed: the dead replica's copy goes to
/// the fourth node as a hint, counted as its acknowledgement. A connection asking PW=3 (three
/// of the slot's own replicas) is refused for those keys with an error that says so. Once
/// the node is back, the hints are handed off: every key is on exactly its 3 replicas again,
/// a delete included, and no hint is left.
#[test]
fn a_dead_replicas_writes_are_hinted_and_handed_off_when_it_returns() {
    let mut cluster = Cluster::start(4, &[]);
    let keys: Vec<String> = (0..300).map(|i| format!("hint:{i}")).collect();
    let mut con = cluster.nodes[0].client();
    quorum(&mut con, 2, 3);
    for key in &keys {
        redis::cmd("SET")
            .arg(key)
            .arg("v1")
            .query::<()>(&mut con)
            .unwrap();
    }
    // The slots node 3 replicates: the keys it holds now.
    let on_dead: Vec<bool> = holds(&cluster.nodes[3], &keys);
    let theirs: Vec<String> = keys
        .iter()
        .zip(&on_dead)
        .filter(|(_, &held)| held)
        .map(|(k, _)| k.clone())
        .collect();
    assert!(
        theirs.len() > 100 && theirs.len() < keys.len(),
        "node 3 replicates {} of {} keys",
        theirs.len(),
        keys.len()
    );
    // Its addresses, to come back on (the map names a member by them).
    let addresses = own_addresses(&cluster.nodes[3]);
    cluster.nodes[3].kill();
    // Until gossip notices, node 3 may still be a key's event replica: a SET sent to it on a
    // connection that the kill then closed fails with "connection lost" (it may have run
    // there before the kill, so it is not run again elsewhere; the client is told, as for
    // any write whose outcome is unknown). This test is about a replica known dead.
    let dead = format!(":{}@", cluster.nodes[3].port);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cluster.nodes[0]
        .cli(&["CLUSTER", "NODES"])
        .lines()
        .any(|line| line.contains(&dead) && line.contains("fail"))
    {
        assert!(
            Instant::now() < deadline,
            "gossip never marked the killed node"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // W=3 with a replica dead: every write succeeds, a hint standing in for it.
    for key in &keys {
        redis::cmd("SET")
            .arg(key)
            .arg("v2")
            .query::<()>(&mut con)
            .unwrap_or_else(|e| panic!("SET {key} at W=3 with one replica dead: {e}"));
    }
    redis::cmd("DEL")
        .arg(&theirs[0])
        .query::<i64>(&mut con)
        .unwrap();
    let pending: u64 = cluster.nodes[..3]
        .iter()
        .map(|n| cluster_info(n, "cluster_hints_pending"))
        .sum();
    assert_eq!(
        pending as usize,
        theirs.len(),
        "one hint per key node 3 missed"
    );
    assert!(cluster_info(&cluster.nodes[0], "cluster_hints_sent") > 0);

    // PW=3: the same write is stored, but the client is told too few replicas had it.
    let mut strict = cluster.nodes[1].client();
    let set: Vec<i64> = redis::cmd("CLUSTER")
        .arg("QUORUM")
        .arg(2)
        .arg(3)
        .arg(3)
        .query(&mut strict)
        .unwrap();
    assert_eq!(set, vec![2, 3, 3]);
    let refused = redis::cmd("SET")
        .arg(&theirs[1])
        .arg("v3")
        .query::<()>(&mut strict)
        .expect_err("PW=3 with a replica dead");
    let text = refused.to_string();
    assert!(
        text.contains("NOQUORUM")
            && text.contains("2 of the slot's replicas (1 more as hints), 3 needed"),
        "{text}"
    );
    let other: Vec<&String> = keys
        .iter()
        .zip(&on_dead)
        .filter(|(_, &h)| !h)
        .map(|(k, _)| k)
        .collect();
    redis::cmd("SET")
        .arg(other[0])
        .arg("v3")
        .query::<()>(&mut strict)
        .expect("PW=3 on a slot whose replicas are all up");

    // Back: node 3 gets every write it missed, the delete included, and the hints go.
    cluster.nodes[3].restart_with(&addresses);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pending: u64 = cluster.nodes[..3]
            .iter()
            .map(|n| cluster_info(n, "cluster_hints_pending"))
            .sum();
        if pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{pending} hints still pending 60 s after the node came back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let delivered: u64 = cluster.nodes[..3]
        .iter()
        .map(|n| cluster_info(n, "cluster_hints_delivered"))
        .sum();
    assert_eq!(delivered as usize, theirs.len());
    // Its own store now holds a record of every key (the delete as a tombstone), and read
    // at R=1 (its own copy first) each is at its last value, the deleted one gone.
    assert!(
        holds(&cluster.nodes[3], &theirs).iter().all(|&h| h),
        "every write handed off"
    );
    let mut alone = cluster.nodes[3].client();
    quorum(&mut alone, 1, 2);
    for (i, key) in theirs.iter().enumerate() {
        let value: Option<String> = redis::cmd("GET").arg(key).query(&mut alone).unwrap();
        let want = match i {
            0 => None,
            1 => Some("v3"),
            _ => Some("v2"),
        };
        assert_eq!(value.as_deref(), want, "{key} read from node 3 alone");
    }
}

/// Anti-entropy (docs/cluster.md, "Anti-entropy"): a replica whose store is wiped (a disk
/// replaced) comes back empty; with no reads through it and no hints (three nodes at N=3:
/// no fallback), only anti-entropy can refill it. It does: every key, a delete included,
/// is back on it at its last value, and the exchanges say how many keys they repaired.
#[test]
fn anti_entropy_refills_a_wiped_replica() {
    let mut cluster = Cluster::start(3, &["--cluster-anti-entropy-interval", "1"]);
    let keys: Vec<String> = (0..2000).map(|i| format!("aae:{i}")).collect();
    let mut con = cluster.nodes[0].client();
    quorum(&mut con, 2, 3);
    for chunk in keys.chunks(100) {
        let mut mset = redis::cmd("MSET");
        for key in chunk {
            mset.arg(key).arg(format!("value of {key}"));
        }
        // Keys of many slots: MSET splits them by slot.
        mset.query::<()>(&mut con).unwrap();
    }
    redis::cmd("DEL")
        .arg(&keys[0])
        .query::<i64>(&mut con)
        .unwrap();
    assert!(holds(&cluster.nodes[2], &keys).iter().all(|&h| h));

    let addresses = own_addresses(&cluster.nodes[2]);
    cluster.nodes[2].kill();
    // Wipe the store; keep the node's identity and membership.
    let dir = cluster.nodes[2].data_dir();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name == "cluster-node-id" || name == "cluster" || name == "hints" {
            continue;
        }
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
    cluster.nodes[2].restart_with(&addresses);
    assert!(
        holds(&cluster.nodes[2], &keys).iter().all(|&h| !h),
        "the wiped store starts empty"
    );

    let started = Instant::now();
    let deadline = started + Duration::from_secs(90);
    loop {
        let missing = holds(&cluster.nodes[2], &keys)
            .iter()
            .filter(|&&h| !h)
            .count();
        if missing == 0 {
            eprintln!("refilled in {:?}", started.elapsed());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} keys still missing on the wiped replica after 90 s; its log:\n{}",
            cluster.nodes[2].log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let repaired: u64 = cluster
        .nodes
        .iter()
        .map(|n| cluster_info(n, "cluster_aae_keys_repaired"))
        .sum();
    assert!(repaired >= keys.len() as u64, "repaired {repaired}");
    // Read from its own copy alone (R=1, itself first): the values and the delete.
    let mut alone = cluster.nodes[2].client();
    quorum(&mut alone, 1, 2);
    for key in keys.iter().step_by(37) {
        let value: Option<String> = redis::cmd("GET").arg(key).query(&mut alone).unwrap();
        if key == &keys[0] {
            assert_eq!(value, None, "the delete came back with its tombstone");
        } else {
            assert_eq!(value.as_deref(), Some(format!("value of {key}").as_str()));
        }
    }
}

/// Replacing a dead node (docs/cluster.md, "Replacing a dead node"): 4 nodes at N=3, one
/// killed for good and removed with CLUSTER FORGET. The map drops it at a new epoch and
/// plans its slots over the other three, which then each replicate every slot; anti-entropy
/// fills the copies they gain, so every key ends up on exactly the 3 survivors, readable
/// through each of them.
#[test]
fn a_dead_node_forgotten_leaves_every_key_on_the_survivors() {
    let mut cluster = Cluster::start(4, &["--cluster-anti-entropy-interval", "1"]);
    let keys: Vec<String> = (0..400).map(|i| format!("forget:{i}")).collect();
    let mut con = cluster.nodes[0].client();
    for key in &keys {
        redis::cmd("SET")
            .arg(key)
            .arg(key)
            .query::<()>(&mut con)
            .unwrap();
    }
    let dead_id = cluster.ids()[3].clone();
    cluster.nodes[3].kill();
    assert!(
        cluster.nodes[1]
            .cli(&["CLUSTER", "FORGET", &cluster.ids()[1]])
            .contains("forget myself"),
        "a node cannot forget itself"
    );
    assert_eq!(
        cluster.nodes[1]
            .cli(&["CLUSTER", "FORGET", &dead_id])
            .trim(),
        "OK"
    );
    let survivors = &cluster.nodes[..3];
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let known = survivors
            .iter()
            .all(|n| cluster_info(n, "cluster_known_nodes") == 3);
        let held: Vec<Vec<bool>> = survivors.iter().map(|n| holds(n, &keys)).collect();
        let missing = (0..keys.len())
            .filter(|&i| held.iter().any(|h| !h[i]))
            .count();
        if known && missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 90 s: members known everywhere {known}, {missing} keys not on all 3 survivors"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    for node in survivors {
        let mut con = node.client();
        for key in keys.iter().step_by(13) {
            let value: Option<String> = redis::cmd("GET").arg(key).query(&mut con).unwrap();
            assert_eq!(
                value.as_deref(),
                Some(key.as_str()),
                "through {}",
                node.port
            );
        }
    }
}
