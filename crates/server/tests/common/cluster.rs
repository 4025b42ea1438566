//! Clusters of real `ringkv` processes on loopback for the cluster tests: the first node
//! founds the cluster, the others join it through its client port (`--cluster-join`), as an
//! operator would (docs/cluster.md, "Starting").

use std::time::{Duration, Instant};

use super::Server;

/// A running cluster; every node is killed on drop.
pub struct Cluster {
    pub nodes: Vec<Server>,
}

impl Cluster {
    /// Starts `n` nodes with `extra` flags on each, waits until every node knows all `n`.
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        let mut first_args = vec!["--cluster-enabled", "yes"];
        first_args.extend_from_slice(extra);
        let first = Server::start_with(&first_args);
        let seed = format!("127.0.0.1:{}", first.port);
        // Joins go one at a time through the Raft leader anyway; started together they wait
        // for each other there rather than here.
        let joiners: Vec<Server> = std::thread::scope(|scope| {
            let handles: Vec<_> = (1..n)
                .map(|_| {
                    let seed = seed.clone();
                    scope.spawn(move || {
                        let mut args = vec!["--cluster-enabled", "yes", "--cluster-join", &seed];
                        args.extend_from_slice(extra);
                        Server::start_with(&args)
                    })
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

    /// Waits until every node's CLUSTER INFO shows `n` known nodes and state ok.
    pub fn wait_known(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for node in &self.nodes {
            loop {
                let info = node.cli(&["CLUSTER", "INFO"]);
                if info.contains(&format!("cluster_known_nodes:{n}\r"))
                    && info.contains("cluster_state:ok")
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
