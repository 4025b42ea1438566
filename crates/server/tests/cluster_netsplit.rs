//! Network partitions made in the network (issue 14; docs/testing.md, "Partitions in the
//! network"): 5 real `ringkv` processes at N=3, R=2, W=2, each in its own network namespace
//! (`ip netns exec`), all on one L2 segment: a bridge in a "switch" namespace with a veth to
//! every node and one more to the test's own namespace, so the test's clients reach every node
//! whatever the partition. Worker threads write, increment, read and delete their own keys
//! through any node (`common/history.rs`) while the test
//! - cuts one node off from the 4 others (both ways),
//! - kills a node with SIGKILL and restarts it in its namespace,
//! - splits the cluster 2|3,
//! - cuts one node off again, and kills and restarts it while it is cut off,
//!
//! healing each partition before the next. A partition is nftables rules in the nodes'
//! namespaces that DROP every packet from the other side's addresses (input hook, on both
//! sides): nothing is refused or reset, a request across the cut waits for its timeout
//! (`cluster-request-timeout`, 2 s), unlike `cluster_faults.rs`, whose drill refuses. Each
//! partition is shown to take effect: a TCP connect across it times out (a drop, not a
//! refusal), a write through the cut-off node cannot make W=2, and one through the 2-node
//! side cannot make W=3. After the last heal, hinted handoff and anti-entropy settle and
//! `common::history::check` holds every replica's own copy (R=1 through a holder), and R=2
//! and R=3 through every node, to the history: acknowledged writes readable, counters between
//! acknowledged and attempted sums, no acknowledged delete back.
//!
//! The check can fail: `CLUSTER_NETSPLIT_REPAIR=off` starts the nodes with
//! `cluster-hinted-handoff no` and `cluster-anti-entropy-interval 0`, and the run then fails
//! at the R=1 pass (a replica that was cut off misses the writes acknowledged without it).
//!
//! Needs root, iproute2 and nftables (scripts/test.sh installs them); it fails, not skips,
//! without them. Names are unique per test process (`rkvsplit<pid>…`); the namespaces are
//! removed on drop, and those a killed run left behind by the next run. Every node gets
//! SIGKILL from the kernel when the test's thread dies (`PR_SET_PDEATHSIG`), so a test killed
//! outright leaves no server behind. `CLUSTER_NETSPLIT_SEED=<seed>` replays the choices.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::history::{self, History, Load, Rng};

const NODES: usize = 5;
const WORKERS: usize = 4;
/// Every node listens on the same ports, each in its own namespace on its own address.
const CLIENT_PORT: u16 = 7001;
const CLUSTER_PORT: u16 = CLIENT_PORT + 10_000;
/// Prefix of every namespace this test makes (then the test's pid).
const PREFIX: &str = "rkvsplit";
/// The client's read timeout: well past the request timeout (2 s), so a reply that never
/// comes is told from a slow one.
const CLIENT_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the replicas may take to converge after the last heal, hints handed off (an
/// anti-entropy exchange every second on every node).
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a node may take to report ready (a joining node waits for the map with it).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `program args…`, panicking on failure with `purpose` and the output.
fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("the netsplit test needs `{program}` (iproute2, nftables, coreutils): {e}")
        });
    assert!(
        output.status.success(),
        "the netsplit test needs root, network namespaces and nftables; `{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Removes the namespaces of earlier runs whose process is gone (a run killed before its
/// drop); their veths go with them.
fn remove_stale_namespaces() {
    let list = run("ip", &["netns", "list"]);
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// The segment: a switch namespace with a bridge, a namespace per node with a veth to the
/// bridge, and a veth from this namespace to it. Removed on drop.
struct Network {
    /// `rkvsplit<pid>`: the switch is `<prefix>sw`, node i `<prefix>n<i>`.
    prefix: String,
    /// The first three octets of the /24.
    subnet: String,
    /// The link in this namespace (its peer is in the switch).
    host_link: String,
    nodes: usize,
}

impl Network {
    fn create(nodes: usize) -> Network {
        remove_stale_namespaces();
        let pid = std::process::id();
        let network = Network {
            prefix: format!("{PREFIX}{pid}"),
            subnet: format!("10.214.{}", pid % 250),
            host_link: format!("rks{}", pid % 1_000_000),
            nodes,
        };
        let switch = network.switch();
        run("ip", &["netns", "add", &switch]);
        run(
            "ip",
            &["-n", &switch, "link", "add", "br0", "type", "bridge"],
        );
        run("ip", &["-n", &switch, "link", "set", "br0", "up"]);
        run(
            "ip",
            &[
                "link",
                "add",
                &network.host_link,
                "type",
                "veth",
                "peer",
                "name",
                "host",
                "netns",
                &switch,
            ],
        );
        run(
            "ip",
            &["-n", &switch, "link", "set", "host", "master", "br0"],
        );
        run("ip", &["-n", &switch, "link", "set", "host", "up"]);
        let host = format!("{}.1/24", network.subnet);
        run("ip", &["addr", "add", &host, "dev", &network.host_link]);
        run("ip", &["link", "set", &network.host_link, "up"]);
        for i in 0..nodes {
            let namespace = network.namespace(i);
            let port = format!("n{i}");
            run("ip", &["netns", "add", &namespace]);
            run(
                "ip",
                &[
                    "-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                    "netns", &namespace,
                ],
            );
            run(
                "ip",
                &["-n", &switch, "link", "set", &port, "master", "br0"],
            );
            run("ip", &["-n", &switch, "link", "set", &port, "up"]);
            let address = format!("{}/24", network.address(i));
            run(
                "ip",
                &["-n", &namespace, "addr", "add", &address, "dev", "eth0"],
            );
            run("ip", &["-n", &namespace, "link", "set", "eth0", "up"]);
            run("ip", &["-n", &namespace, "link", "set", "lo", "up"]);
            network.nft(i, &["add", "table", "inet", "netsplit"]);
            network.nft(
                i,
                &[
                    "add",
                    "chain",
                    "inet",
                    "netsplit",
                    "input",
                    "{ type filter hook input priority 0; policy accept; }",
                ],
            );
        }
        network
    }

    fn switch(&self) -> String {
        format!("{}sw", self.prefix)
    }

    fn namespace(&self, node: usize) -> String {
        format!("{}n{node}", self.prefix)
    }

    /// Node `node`'s address.
    fn address(&self, node: usize) -> String {
        format!("{}.{}", self.subnet, 11 + node)
    }

    /// Runs `nft args…` in node `node`'s namespace.
    fn nft(&self, node: usize, args: &[&str]) {
        let namespace = self.namespace(node);
        let mut all = vec!["netns", "exec", &namespace, "nft"];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    /// Node `node` drops every packet from the nodes `from` (incoming only: the other side
    /// drops the rest, and a sender never learns: no error, no reset).
    fn drop_from(&self, node: usize, from: &[usize]) {
        for &peer in from {
            let address = self.address(peer);
            self.nft(
                node,
                &[
                    "add", "rule", "inet", "netsplit", "input", "ip", "saddr", &address, "drop",
                ],
            );
        }
    }

    /// Splits the nodes into `sides`: each node drops every packet from the other sides.
    fn split(&self, sides: &[Vec<usize>]) {
        for side in sides {
            let others: Vec<usize> = (0..self.nodes).filter(|n| !side.contains(n)).collect();
            for &node in side {
                self.drop_from(node, &others);
            }
        }
    }

    /// Removes every drop rule.
    fn heal(&self) {
        for node in 0..self.nodes {
            self.nft(node, &["flush", "chain", "inet", "netsplit", "input"]);
        }
    }

    /// Whether a TCP connect from node `from` to node `to`'s internode port times out (the
    /// packets dropped), rather than connecting or being refused.
    fn connect_times_out(&self, from: usize, to: usize) -> bool {
        let script = format!("exec 3<>/dev/tcp/{}/{CLUSTER_PORT}", self.address(to));
        let status = Command::new("ip")
            .args(["netns", "exec", &self.namespace(from), "timeout", "2"])
            .args(["bash", "-c", &script])
            .stderr(Stdio::null())
            .status()
            .expect("run bash in the namespace");
        status.code() == Some(124)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_link])
            .status();
        for node in 0..self.nodes {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.namespace(node)])
                .status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.switch()])
            .status();
    }
}

/// A `ringkv` process in its namespace, on its address; killed on drop.
struct Node {
    namespace: String,
    address: String,
    dir: tempfile::TempDir,
    args: Vec<String>,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
}

impl Node {
    fn new(network: &Network, i: usize, args: Vec<String>) -> Node {
        Node {
            namespace: network.namespace(i),
            address: network.address(i),
            dir: tempfile::tempdir().expect("temp dir"),
            args,
            child: None,
            log: Arc::new(Mutex::new(String::new())),
        }
    }

    /// Starts the process (`ip netns exec` execs the binary: the child is the server); the
    /// receiver gets a message once it is ready. Must run on the test's own thread: the
    /// process dies with the thread that started it.
    fn spawn(&mut self) -> Receiver<()> {
        let port = CLIENT_PORT.to_string();
        let cluster_port = CLUSTER_PORT.to_string();
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.namespace])
            .arg(common::binary())
            .args(["--bind", &self.address, "--port", &port])
            .args(["--cluster-port", &cluster_port, "--loglevel", "info"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().expect("spawn ringkv in its namespace");
        let stderr = child.stderr.take().expect("stderr");
        let log = self.log.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if line.contains("Ready to accept connections") {
                    let _ = ready_tx.send(());
                }
                log.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        self.child = Some(child);
        ready_rx
    }

    /// Waits for `ready` (from [`Node::spawn`]).
    fn wait_ready(&self, ready: Receiver<()>) {
        if ready.recv_timeout(START_TIMEOUT).is_err() {
            panic!("node {} did not start; log:\n{}", self.address, self.log());
        }
    }

    fn start(&mut self) {
        let ready = self.spawn();
        self.wait_ready(ready);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn client_address(&self) -> String {
        format!("{}:{CLIENT_PORT}", self.address)
    }

    fn client(&self) -> redis::Connection {
        let client = redis::Client::open(format!("redis://{}/", self.client_address())).unwrap();
        let con = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.address));
        con.set_read_timeout(Some(CLIENT_READ_TIMEOUT)).unwrap();
        con
    }

    fn query(&self, args: &[&str]) -> String {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut self.client())
            .unwrap_or_else(|e| panic!("{args:?} on {}: {e}", self.address))
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            // What a failed run's nodes said, for the report (the temp dirs go).
            let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
                "cluster_netsplit-{}-{}.log",
                std::process::id(),
                self.namespace
            ));
            if std::fs::write(&path, self.log()).is_ok() {
                eprintln!("log of {}: {}", self.address, path.display());
            }
        }
    }
}

/// A field of `node`'s CLUSTER INFO, as a number.
fn cluster_info(node: &Node, field: &str) -> u64 {
    node.query(&["CLUSTER", "INFO"])
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in CLUSTER INFO"))
        .trim()
        .parse()
        .unwrap()
}

/// Waits until every node knows all the others, in state ok, and gossip finds none failing.
fn wait_healthy(nodes: &[Node], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    for node in nodes {
        loop {
            let info = node.query(&["CLUSTER", "INFO"]);
            let map = node.query(&["CLUSTER", "NODES"]);
            if info.contains(&format!("cluster_known_nodes:{}\r", nodes.len()))
                && info.contains("cluster_state:ok")
                && !map.contains("fail")
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} does not see {} healthy nodes: {info}\n{map}\nlog:\n{}",
                node.address,
                nodes.len(),
                node.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A write through `node` at W=`w` with PW=`pw` (of W, acknowledgements from the slot's own
/// replicas, not hints); its error (or success) and how long it took.
fn probe_write(node: &Node, w: u8, pw: u8) -> (redis::RedisResult<()>, Duration) {
    let mut con = node.client();
    let quorum: Vec<i64> = redis::cmd("CLUSTER")
        .arg("QUORUM")
        .arg(2)
        .arg(w)
        .arg(pw)
        .query(&mut con)
        .unwrap();
    assert_eq!(quorum[1], i64::from(w), "{quorum:?}");
    let began = Instant::now();
    let result = redis::cmd("SET")
        .arg("partition-probe")
        .arg(1)
        .query(&mut con);
    (result, began.elapsed())
}

/// Cuts `alone` off from every other node and proves the cut: no TCP either way (a timeout,
/// not a refusal), and a write through it cannot make W=2.
fn isolate(network: &Network, nodes: &[Node], alone: usize) {
    let others: Vec<usize> = (0..nodes.len()).filter(|&n| n != alone).collect();
    network.split(&[vec![alone], others.clone()]);
    let peer = others[0];
    assert!(
        network.connect_times_out(alone, peer) && network.connect_times_out(peer, alone),
        "the cut of node {alone} drops packets both ways"
    );
    let (result, took) = probe_write(&nodes[alone], 2, 0);
    eprintln!("a write through cut-off node {alone}: {result:?} after {took:?}");
    assert!(
        result.is_err(),
        "a write through cut-off node {alone} made W=2"
    );
}

/// Sets its flag when dropped: on the way out of a panic too.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn five_nodes_in_namespaces_keep_every_acknowledged_write_through_dropped_packets() {
    let test_began = Instant::now();
    let seed = history::seed("CLUSTER_NETSPLIT_SEED");
    let repair = std::env::var("CLUSTER_NETSPLIT_REPAIR").as_deref() != Ok("off");
    let network = Network::create(NODES);
    // Not loopback: protected mode would refuse the joins and the test's clients.
    // DEBUG from the test's namespace: a failed check prints each node's stored record.
    let mut cluster_args = vec![
        "--cluster-enabled",
        "yes",
        "--protected-mode",
        "no",
        "--enable-debug-command",
        "yes",
    ];
    cluster_args.extend([
        "--cluster-secret",
        "netsplit-test-secret",
        "--cluster-anti-entropy-interval",
    ]);
    if repair {
        cluster_args.push("1");
    } else {
        cluster_args.extend(["0", "--cluster-hinted-handoff", "no"]);
    }
    let cluster_args: Vec<String> = cluster_args.iter().map(|s| s.to_string()).collect();
    let seed_address = format!("{}:{CLIENT_PORT}", network.address(0));
    let mut nodes: Vec<Node> = (0..NODES)
        .map(|i| {
            let mut args = cluster_args.clone();
            if i > 0 {
                args.extend(["--cluster-join".to_string(), seed_address.clone()]);
            }
            Node::new(&network, i, args)
        })
        .collect();
    common::binary(); // built first (cargo), so the start is timed alone
    let began = Instant::now();
    eprintln!("network made in {:?}", test_began.elapsed());
    nodes[0].start();
    eprintln!("node 0 up after {:?}", began.elapsed());
    // Started together, the joiners wait for each other at the Raft leader.
    let ready: Vec<Receiver<()>> = nodes[1..].iter_mut().map(Node::spawn).collect();
    for (node, ready) in nodes[1..].iter().zip(ready) {
        node.wait_ready(ready);
    }
    wait_healthy(&nodes, Duration::from_secs(60));
    eprintln!(
        "{NODES} nodes up in their namespaces after {:?}",
        began.elapsed()
    );

    let addresses: Vec<String> = nodes.iter().map(Node::client_address).collect();
    let stop = AtomicBool::new(false);
    let load = Load {
        addresses: &addresses,
        read_timeout: CLIENT_READ_TIMEOUT,
        stop: &stop,
    };
    let mut chaos = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let histories: Vec<History> = std::thread::scope(|scope| {
        // A failed check below stops the workers too (the scope waits for them).
        let _stop_on_panic = StopOnDrop(&stop);
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let load = &load;
                scope.spawn(move || history::work(w, load, seed.wrapping_add(w as u64 * 7919)))
            })
            .collect();
        let pause = |chaos: &mut Rng, base: u64, spread: u64| {
            std::thread::sleep(Duration::from_millis(base + chaos.below(spread)));
        };
        pause(&mut chaos, 2000, 1);

        // One node cut off from the 4 others.
        let alone = chaos.below(NODES as u64) as usize;
        isolate(&network, &nodes, alone);
        pause(&mut chaos, 3000, 2000);
        eprintln!("cut of node {alone} healing after {:?}", began.elapsed());
        network.heal();
        pause(&mut chaos, 2000, 1000);

        // A node killed and restarted in its namespace.
        let victim = chaos.below(NODES as u64) as usize;
        eprintln!("killing node {victim} after {:?}", began.elapsed());
        nodes[victim].kill();
        pause(&mut chaos, 1500, 1500);
        nodes[victim].start();
        pause(&mut chaos, 2000, 1000);

        // 2|3: the 2-node side cannot reach the 3 others; a write through it cannot make W=3.
        let first = chaos.below(NODES as u64) as usize;
        let second = (first + 1 + chaos.below(NODES as u64 - 1) as usize) % NODES;
        let majority: Vec<usize> = (0..NODES).filter(|n| *n != first && *n != second).collect();
        network.split(&[vec![first, second], majority.clone()]);
        assert!(
            network.connect_times_out(first, majority[0])
                && network.connect_times_out(majority[0], second)
                && !network.connect_times_out(first, second),
            "the 2|3 split drops packets across it only"
        );
        let (result, took) = probe_write(&nodes[first], 3, 3);
        eprintln!("PW=3 through node {first} of the 2-node side: {result:?} after {took:?}");
        assert!(
            result.is_err(),
            "a write through the 2-node side reached 3 of its slot's replicas"
        );
        // Nor W=3 with hints: only 2 distinct nodes can hold the write on this side, and
        // a fallback stands in for one replica only (two hints on one node were once
        // counted as two acknowledgements).
        let (result, took) = probe_write(&nodes[first], 3, 0);
        eprintln!("W=3 through node {first} of the 2-node side: {result:?} after {took:?}");
        assert!(
            result.is_err(),
            "a W=3 write through the 2-node side was acknowledged by 2 nodes"
        );
        pause(&mut chaos, 4000, 2000);
        eprintln!(
            "split {first},{second} | {majority:?} healing after {:?}",
            began.elapsed()
        );
        network.heal();
        pause(&mut chaos, 2000, 1000);

        // One node cut off, killed and restarted while cut off, then reconnected.
        let alone = chaos.below(NODES as u64) as usize;
        isolate(&network, &nodes, alone);
        pause(&mut chaos, 1000, 1000);
        eprintln!("killing cut-off node {alone} after {:?}", began.elapsed());
        nodes[alone].kill();
        pause(&mut chaos, 1000, 1000);
        nodes[alone].start();
        pause(&mut chaos, 2000, 1000);
        eprintln!("cut of node {alone} healing after {:?}", began.elapsed());
        network.heal();
        pause(&mut chaos, 2000, 1000);

        stop.store(true, Ordering::Relaxed);
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    eprintln!("load and faults done after {:?}", began.elapsed());
    let (ops, _) = history::summarize(&histories);
    assert!(ops > 500, "the load ran: {ops} operations");

    // Settle: every member back and alive to every other, every hint handed off.
    wait_healthy(&nodes, Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pending: u64 = nodes
            .iter()
            .map(|n| cluster_info(n, "cluster_hints_pending"))
            .sum();
        if pending == 0 {
            break;
        }
        if Instant::now() >= deadline {
            let held: Vec<u64> = nodes
                .iter()
                .map(|n| cluster_info(n, "cluster_hints_pending"))
                .collect();
            panic!("{pending} hints never handed off (held by node: {held:?})");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("settled after {:?}", began.elapsed());

    let mut connections: Vec<redis::Connection> = nodes.iter().map(Node::client).collect();
    let repaired: u64 = nodes
        .iter()
        .map(|n| cluster_info(n, "cluster_aae_keys_repaired"))
        .sum();
    let delivered: u64 = nodes
        .iter()
        .map(|n| cluster_info(n, "cluster_hints_delivered"))
        .sum();
    let stale: u64 = nodes
        .iter()
        .map(|n| cluster_info(n, "cluster_stale_events_refused"))
        .sum();
    eprintln!(
        "{delivered} hints handed off, {repaired} keys repaired by anti-entropy, \
         {stale} late write events refused so far"
    );
    let checked = history::check(&histories, &mut connections, CONVERGE_TIMEOUT);
    eprintln!(
        "{checked} reads checked against the history after {:?}",
        began.elapsed()
    );
}
