//! Deterministic simulation of the data plane (docs/testing.md, "Deterministic simulation").
//!
//! `turmoil` runs five nodes, each the real coordinator and replica (`DataNode` over a real
//! `Keyspace` in a temporary directory) answering through the real internode transport
//! (handshake, framing, pooling, timeouts) over turmoil's simulated TCP, with time
//! simulated: every node's clock is the simulation's plus a skew of up to ±400 ms, and
//! messages take 1 to 25 ms. While every node's client writes, reads, deletes and increments
//! its own keys through its own coordinator (N=3, R=2, W=2), a chaos client cuts one node at
//! a time off from the others (its packets dropped), heals it, and holds and releases single
//! links (delay, and reordering between connections).
//! Then the network heals, every node runs anti-entropy exchanges with every other, and
//! the history is checked:
//! - every acknowledged write is readable at R=2: the key's record holds the last
//!   acknowledged value, or a later one its writer attempted (a failed write may land);
//! - every counter lies between its acknowledged and its attempted increments;
//! - no key whose delete was acknowledged comes back;
//! - every slot's anti-entropy roots are equal on all its replicas.
//!
//! Everything a run does comes from its seed: turmoil's RNG, the workload's, the chaos's,
//! the clocks' skews and the nodes' own randomness (`DataNode::simulated`). The trace (each
//! operation and its outcome at its simulated time) of a seed run twice must be identical:
//! a leak of nondeterminism (a HashMap's order, the wall clock, a thread's timing) shows as
//! a difference. `SIM_SEED=n` replays one seed; `SIM_RUNS=n` sets how many generated runs
//! `generated_runs_hold_the_invariants` makes (default 12; a soak runs thousands by hand).
//!
//! A replica a write could not reach gets its copy as a hint on a fallback node (sloppy
//! quorum), delivered every 500 ms once the replica answers. One in twenty idempotent
//! requests (merges, hints, increments, reads) is delivered twice (`SimPeers`).
//!
//! Not simulated yet (issue 14): the control plane and gossip (the map is fixed: no joins,
//! leaves or liveness), node crashes and restarts.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ringkv_cluster::coordinator::{DataNode, Peers, Quorum, WriteEvent};
use ringkv_cluster::frame::ClusterSecret;
use ringkv_cluster::hints::{HintLimits, Hints};
use ringkv_cluster::map::{ClusterMap, MemberInfo, MemberState};
use ringkv_cluster::record::{Body, Resolved};
use ringkv_cluster::transport::{
    BoxFuture, BoxStream, Handler, HandlerError, Listener, Network, Transport, TransportConfig,
};
use ringkv_cluster::{NodeId, SLOT_COUNT};
use ringkv_engine::{Clock, Db, FsyncPolicy, Options};
use ringkv_store::Keyspace;

const NODES: u64 = 5;
const PORT: u16 = 9000;
/// 2026-01-01, the simulation's Unix time at its start.
const EPOCH_MS: u64 = 1_767_225_600_000;
/// Until then clients run and the chaos acts (simulated time).
const LOAD_UNTIL: Duration = Duration::from_secs(8);
/// Anti-entropy rounds after the heal, and the final check at.
const CHECK_AT: Duration = Duration::from_secs(14);
/// Every node stays up until then.
const END_AT: Duration = Duration::from_secs(16);
const STRING_KEYS: u64 = 6;
const QUORUM: Quorum = Quorum { r: 2, w: 2, pw: 0 };

/// A node's clock: the simulation's time plus its skew.
#[derive(Debug)]
struct SimClock {
    skew_ms: i64,
}

impl Clock for SimClock {
    fn now_ms(&self) -> u64 {
        let elapsed = turmoil::sim_elapsed().unwrap_or_default().as_millis() as i64;
        (EPOCH_MS as i64 + elapsed + self.skew_ms) as u64
    }
}

/// turmoil's simulated TCP as the transport's network.
#[derive(Debug)]
struct SimNetwork;

impl Network for SimNetwork {
    fn bind(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let listener = turmoil::net::TcpListener::bind(addr).await?;
            Ok(Box::new(SimListener(listener)) as Box<dyn Listener>)
        })
    }

    fn connect(&self, peer: SocketAddr) -> BoxFuture<'static, io::Result<BoxStream>> {
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect(peer).await?;
            Ok(Box::new(stream) as BoxStream)
        })
    }
}

struct SimListener(turmoil::net::TcpListener);

impl Listener for SimListener {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn accept(&self) -> BoxFuture<'_, io::Result<(BoxStream, SocketAddr)>> {
        Box::pin(async move {
            let (stream, remote) = self.0.accept().await?;
            Ok((Box::new(stream) as BoxStream, remote))
        })
    }
}

/// A node's transport handler: data requests to its `DataNode`.
struct SimHandler {
    data: Arc<DataNode>,
    epoch: u64,
}

impl Handler for SimHandler {
    fn handle(
        &self,
        _from: NodeId,
        kind: u8,
        _epoch: u64,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<(u8, Bytes), HandlerError>> {
        let data = self.data.clone();
        Box::pin(async move {
            data.answer(kind, payload)
                .await
                .map(|reply| (kind, reply))
                .map_err(HandlerError::new)
        })
    }

    fn epoch(&self) -> u64 {
        self.epoch
    }
}

/// The other nodes, through the transport. Now and then a request is sent twice (the copy
/// a little later, its reply dropped): the duplicates a retrying network or client makes.
/// Only the kinds that promise to be idempotent are duplicated: merges and hints (a merge
/// of what a replica has changes nothing), increments (counted once by request id), reads
/// and anti-entropy. A write event is never sent twice (the coordinator sends it again only
/// when the first could not have run).
struct SimPeers {
    transport: OnceLock<Transport>,
    addrs: BTreeMap<NodeId, SocketAddr>,
    rng: Mutex<StdRng>,
    duplicated: Arc<std::sync::atomic::AtomicU64>,
}

/// The request kinds a simulation may deliver twice.
fn idempotent(kind: u8) -> bool {
    use ringkv_cluster::coordinator::{
        KIND_HINT, KIND_HINT_MANY, KIND_INCREMENT, KIND_MERGE, KIND_MERGE_MANY, KIND_READ,
    };
    matches!(
        kind,
        KIND_READ | KIND_INCREMENT | KIND_MERGE | KIND_MERGE_MANY | KIND_HINT | KIND_HINT_MANY
    )
}

impl Peers for SimPeers {
    fn is_down(&self, _node: NodeId) -> bool {
        false
    }

    fn call(
        &self,
        node: NodeId,
        kind: u8,
        payload: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Bytes, String>> {
        let transport = self.transport.get().cloned();
        let addr = self.addrs.get(&node).copied();
        let duplicate = idempotent(kind).then(|| {
            let mut rng = self.rng.lock().unwrap();
            rng.gen_bool(0.05).then(|| rng.gen_range(0..50))
        });
        if let (Some(Some(delay_ms)), Some(transport), Some(addr)) =
            (duplicate, transport.clone(), addr)
        {
            self.duplicated
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let payload = payload.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                let _ = transport.call(addr, kind, payload, timeout).await;
            });
        }
        Box::pin(async move {
            let transport = transport.ok_or("no transport yet")?;
            let addr = addr.ok_or("unknown node")?;
            transport
                .call(addr, kind, payload, timeout)
                .await
                .map(|(_, reply)| reply)
                .map_err(|e| e.to_string())
        })
    }
}

/// The fixed map: five members, N=3, every slot on its three replicas.
fn cluster_map() -> ClusterMap {
    let member = |node: NodeId| MemberInfo {
        node,
        client_addr: format!("n{node}:6379"),
        cluster_addr: format!("n{node}:{PORT}"),
        zone: "default".into(),
        state: MemberState::Up,
    };
    let mut map = ClusterMap::founded_by(member(1), 3).unwrap();
    for node in 2..=NODES {
        map = map.with_member(member(node)).unwrap();
        let started = map.change.as_ref().unwrap().started;
        for gainer in map.gainers() {
            map = map.with_ready(gainer, started).unwrap();
        }
    }
    assert!(map.change.is_none());
    map
}

/// What one run leaves: the trace, and the invariants it broke.
#[derive(Default)]
struct Outcome {
    trace: Vec<String>,
    violations: Vec<String>,
    /// Per node, its anti-entropy root of every slot it holds.
    roots: BTreeMap<NodeId, BTreeMap<u16, u64>>,
    ops: u64,
    failed: u64,
    hints_delivered: u64,
    /// Requests delivered twice.
    duplicated: u64,
}

type Shared = Arc<Mutex<Outcome>>;

fn node_name(node: NodeId) -> String {
    format!("n{node}")
}

/// One run of the simulation from `seed`, its data under `dir`.
fn run(seed: u64, dir: &Path) -> Outcome {
    let shared: Shared = Arc::new(Mutex::new(Outcome::default()));
    let map = Arc::new(cluster_map());
    let mut chaos_rng = StdRng::seed_from_u64(seed);
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .simulation_duration(END_AT + Duration::from_secs(5))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(25))
        .build();
    for node in 1..=NODES {
        let skew_ms = chaos_rng.gen_range(-400..=400);
        let node_seed = seed ^ node.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let (shared, map, dir) = (shared.clone(), map.clone(), dir.join(node_name(node)));
        sim.client(node_name(node), async move {
            run_node(node, node_seed, skew_ms, map, &dir, shared).await
        });
    }
    {
        let shared = shared.clone();
        let chaos_seed = chaos_rng.gen();
        sim.client("chaos", async move {
            chaos(chaos_seed, shared).await;
            Ok(())
        });
    }
    if let Err(error) = sim.run() {
        shared
            .lock()
            .unwrap()
            .violations
            .push(format!("the simulation failed: {error}"));
    }
    let mut outcome = std::mem::take(&mut *shared.lock().unwrap());
    // Every slot's roots agree across its replicas.
    for slot in 0..SLOT_COUNT {
        let roots: Vec<(NodeId, u64)> = map
            .replicas(slot)
            .iter()
            .filter_map(|node| Some((*node, *outcome.roots.get(node)?.get(&slot)?)))
            .collect();
        if roots.windows(2).any(|pair| pair[0].1 != pair[1].1) {
            outcome.violations.push(format!(
                "slot {slot}: anti-entropy roots differ after healing: {roots:?}"
            ));
        }
    }
    outcome
}

fn trace(shared: &Shared, line: String) {
    let at = turmoil::sim_elapsed().unwrap_or_default().as_millis();
    shared.lock().unwrap().trace.push(format!("{at:>6} {line}"));
}

/// The chaos: one node at a time cut off from the others and healed, links held (messages
/// delayed) and released, until the load ends; then everything healed.
async fn chaos(seed: u64, shared: Shared) {
    let mut rng = StdRng::seed_from_u64(seed);
    let names: Vec<String> = (1..=NODES).map(node_name).collect();
    while turmoil::sim_elapsed().unwrap_or_default() < LOAD_UNTIL {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(100..600))).await;
        match rng.gen_range(0..3) {
            0 => {
                let alone = rng.gen_range(0..names.len());
                for (i, other) in names.iter().enumerate() {
                    if i != alone {
                        turmoil::partition(names[alone].as_str(), other.as_str());
                    }
                }
                trace(&shared, format!("chaos cut {} off", names[alone]));
                tokio::time::sleep(Duration::from_millis(rng.gen_range(200..1500))).await;
                for (i, other) in names.iter().enumerate() {
                    if i != alone {
                        turmoil::repair(names[alone].as_str(), other.as_str());
                    }
                }
                trace(&shared, format!("chaos healed {}", names[alone]));
            }
            1 => {
                let a = rng.gen_range(0..names.len());
                let b = (a + rng.gen_range(1..names.len())) % names.len();
                turmoil::hold(names[a].as_str(), names[b].as_str());
                tokio::time::sleep(Duration::from_millis(rng.gen_range(50..400))).await;
                turmoil::release(names[a].as_str(), names[b].as_str());
                trace(&shared, format!("chaos held {}-{}", names[a], names[b]));
            }
            _ => {}
        }
    }
    trace(&shared, "chaos over".into());
}

/// One node: its store, transport and data node; its client's load; anti-entropy after the
/// heal; the check of its own keys; up until the end.
async fn run_node(
    me: NodeId,
    seed: u64,
    skew_ms: i64,
    map: Arc<ClusterMap>,
    dir: &Path,
    shared: Shared,
) -> turmoil::Result {
    let options = Options {
        clock: Arc::new(SimClock { skew_ms }),
        fsync: FsyncPolicy::EverySec,
        ..Options::default()
    };
    let db = Db::open(dir, options)?;
    let keyspace = Arc::new(Keyspace::open(db, false, None)?);
    let addrs = (1..=NODES)
        .map(|n| (n, SocketAddr::new(turmoil::lookup(node_name(n)), PORT)))
        .collect();
    let duplicated = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let peers = Arc::new(SimPeers {
        transport: OnceLock::new(),
        addrs,
        rng: Mutex::new(StdRng::seed_from_u64(seed.rotate_left(17))),
        duplicated: duplicated.clone(),
    });
    let data = Arc::new(
        DataNode::new(
            me,
            keyspace,
            100,
            3_600_000,
            peers.clone(),
            Duration::from_millis(500),
        )
        .simulated(seed)
        .with_hints(Arc::new(Hints::open(
            &dir.join("hints"),
            HintLimits {
                bytes_max: 64 << 20,
                age_max_ms: 3_600_000,
            },
            FsyncPolicy::EverySec,
        )?)),
    );
    // Hinted handoff: every 500 ms, hints to the nodes they are for.
    {
        let (data, map, shared) = (data.clone(), map.clone(), shared.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let delivered = data.deliver_hints(&map).await;
                if delivered > 0 {
                    shared.lock().unwrap().hints_delivered += delivered as u64;
                    trace(&shared, format!("n{me} handed off {delivered} hints"));
                }
            }
        });
    }
    data.build_trees()?;
    let handler = Arc::new(SimHandler {
        data: data.clone(),
        epoch: map.epoch,
    });
    let secret = ClusterSecret::new(b"simulated cluster secret").unwrap();
    let mut config = TransportConfig::new(me, secret);
    config.network = Arc::new(SimNetwork);
    let bind = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), PORT);
    let transport = Transport::bind(bind, config, handler).await?;
    let _ = peers.transport.set(transport);
    let name = node_name(me);

    // The load: this node's client on its own keys.
    let mut rng = StdRng::seed_from_u64(seed);
    let mut last_acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut attempted: BTreeMap<String, u64> = BTreeMap::new();
    let mut deleted: Vec<String> = Vec::new();
    let (mut counted, mut tried) = (0i64, 0i64);
    let counter = Bytes::from(format!("c{me}"));
    let mut value = 0u64;
    let mut request = 0u128;
    let (mut ops, mut failed) = (0u64, 0u64);
    let mut violations = Vec::new();
    while turmoil::sim_elapsed().unwrap_or_default() < LOAD_UNTIL {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(5..60))).await;
        let key = format!("k{me}-{}", rng.gen_range(0..STRING_KEYS));
        ops += 1;
        let line = match rng.gen_range(0..10) {
            0..=4 if !deleted.contains(&key) => {
                value += 1;
                attempted.insert(key.clone(), value);
                let event = WriteEvent {
                    db: 0,
                    key: Bytes::from(key.clone()),
                    context: None,
                    body: Body::Value(Bytes::from(value.to_string())),
                    expires_at_ms: None,
                };
                match data.write(&map, event, QUORUM).await {
                    Ok(_) => {
                        last_acked.insert(key.clone(), value);
                        format!("{name} set {key} {value} ok")
                    }
                    Err(error) => {
                        failed += 1;
                        format!("{name} set {key} {value} failed: {error}")
                    }
                }
            }
            5..=6 => {
                tried += 3;
                request += 1;
                let id = (u128::from(me) << 64) | request;
                match data.increment(&map, 0, &counter, 3, id, QUORUM).await {
                    Ok(now) => {
                        counted += 3;
                        format!("{name} incr c{me} -> {now}")
                    }
                    Err(error) => {
                        failed += 1;
                        format!("{name} incr c{me} failed: {error}")
                    }
                }
            }
            7..=8 => match data.read(&map, 0, &Bytes::from(key.clone()), QUORUM).await {
                Ok(record) => {
                    // A read that succeeds sees this client's last acknowledged write.
                    if let Some(problem) = misses(&record, &key, &last_acked, &attempted, &deleted)
                    {
                        violations.push(format!(
                            "{name} at {:?}: {problem}",
                            turmoil::sim_elapsed().unwrap_or_default()
                        ));
                    }
                    format!("{name} get {key} -> {:?}", resolved(&record, 0))
                }
                Err(error) => {
                    failed += 1;
                    format!("{name} get {key} failed: {error}")
                }
            },
            _ if !deleted.contains(&key) && attempted.contains_key(&key) => {
                let event = WriteEvent {
                    db: 0,
                    key: Bytes::from(key.clone()),
                    context: None,
                    body: Body::Tombstone,
                    expires_at_ms: None,
                };
                // Never written again, acknowledged or not.
                deleted.push(key.clone());
                match data.write(&map, event, QUORUM).await {
                    Ok(_) => format!("{name} del {key} ok"),
                    Err(error) => {
                        failed += 1;
                        last_acked.remove(&key);
                        deleted.pop();
                        attempted.remove(&key);
                        format!("{name} del {key} failed: {error}")
                    }
                }
            }
            _ => format!("{name} idle"),
        };
        trace(&shared, line);
    }

    // After the heal: anti-entropy with every other node, a few rounds.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for round in 0..3 {
        for peer in (1..=NODES).filter(|&n| n != me) {
            match data.exchange(&map, peer, Default::default()).await {
                Ok(done) => trace(
                    &shared,
                    format!(
                        "{name} aae round {round} with n{peer}: {} keys differing, {} repaired",
                        done.keys_differing, done.keys_repaired
                    ),
                ),
                Err(error) => trace(&shared, format!("{name} aae with n{peer} failed: {error}")),
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let now = tokio::time::Instant::now();
    let check_at = tokio::time::Instant::now()
        + CHECK_AT.saturating_sub(turmoil::sim_elapsed().unwrap_or_default());
    tokio::time::sleep_until(check_at.max(now)).await;

    // The check of this node's history.
    for key in (0..STRING_KEYS).map(|i| format!("k{me}-{i}")) {
        let record = match data.read(&map, 0, &Bytes::from(key.clone()), QUORUM).await {
            Ok(record) => record,
            Err(error) => {
                violations.push(format!("{name}: {key} unreadable after healing: {error}"));
                continue;
            }
        };
        if let Some(problem) = misses(&record, &key, &last_acked, &attempted, &deleted) {
            violations.push(format!("{name} after healing: {problem}"));
        }
    }
    match data.read(&map, 0, &counter, QUORUM).await {
        Ok(record) => {
            let value = match record.resolve(0) {
                Ok(Resolved::Counter { value, .. }) => value,
                Ok(Resolved::Absent) => 0,
                other => {
                    violations.push(format!("{name}: c{me} is no counter: {other:?}"));
                    0
                }
            };
            if value < counted || value > tried {
                violations.push(format!(
                    "{name}: c{me} is {value}, acknowledged {counted}, attempted {tried}"
                ));
            }
        }
        Err(error) => violations.push(format!("{name}: c{me} unreadable: {error}")),
    }
    let roots: BTreeMap<u16, u64> = (0..SLOT_COUNT)
        .filter(|&slot| map.holds(me, slot))
        .map(|slot| (slot, data.trees().root(slot)))
        .collect();
    {
        let mut outcome = shared.lock().unwrap();
        outcome.violations.extend(violations);
        outcome.roots.insert(me, roots);
        outcome.ops += ops;
        outcome.failed += failed;
        outcome.duplicated += duplicated.load(std::sync::atomic::Ordering::Relaxed);
    }
    trace(&shared, format!("{name} checked"));
    let end = tokio::time::Instant::now()
        + END_AT.saturating_sub(turmoil::sim_elapsed().unwrap_or_default());
    tokio::time::sleep_until(end).await;
    Ok(())
}

/// What is wrong with `record` as the copy of `key` this client reads: a deleted key that
/// came back, or an acknowledged write it does not hold (as a value or a sibling, or a later
/// value this client attempted).
fn misses(
    record: &ringkv_cluster::record::Record,
    key: &str,
    last_acked: &BTreeMap<String, u64>,
    attempted: &BTreeMap<String, u64>,
    deleted: &[String],
) -> Option<String> {
    let live = resolved(record, 0);
    if deleted.iter().any(|d| d == key) {
        return (live != "absent").then(|| format!("{key} was deleted and came back: {live}"));
    }
    let acked = *last_acked.get(key)?;
    let newest = attempted[key];
    let values: Vec<u64> = record
        .siblings()
        .filter_map(|s| match &s.body {
            Body::Value(v) => std::str::from_utf8(v).ok()?.parse().ok(),
            _ => None,
        })
        .collect();
    (!values.iter().any(|&v| v >= acked && v <= newest)).then(|| {
        format!("{key} lost its acknowledged write {acked} (siblings {values:?}, last attempted {newest})")
    })
}

fn resolved(record: &ringkv_cluster::record::Record, now_ms: u64) -> String {
    match record.resolve(now_ms) {
        Ok(Resolved::Absent) => "absent".into(),
        Ok(Resolved::Value { value, .. }) => String::from_utf8_lossy(&value).into_owned(),
        Ok(Resolved::Counter { value, .. }) => format!("counter {value}"),
        Err(error) => format!("error {error}"),
    }
}

fn seed_from_env() -> Option<u64> {
    std::env::var("SIM_SEED").ok()?.parse().ok()
}

/// Runs `seed` and fails with the seed printed if an invariant broke.
fn run_checked(seed: u64) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let outcome = run(seed, dir.path());
    if let Ok(filter) = std::env::var("SIM_TRACE") {
        for line in outcome.trace.iter().filter(|l| l.contains(&filter)) {
            eprintln!("{line}");
        }
    }
    assert!(
        outcome.violations.is_empty(),
        "seed {seed} (replay: SIM_SEED={seed} cargo nextest run -p ringkv-cluster --test sim): {} violations, e.g. {:#?}",
        outcome.violations.len(),
        &outcome.violations[..outcome.violations.len().min(5)]
    );
    assert!(
        outcome.ops > 100,
        "seed {seed}: the load ran ({} operations)",
        outcome.ops
    );
    outcome
}

#[test]
fn one_seed_run_twice_gives_the_same_trace() {
    let seed = seed_from_env().unwrap_or(20261203);
    let first = run_checked(seed);
    let second = run_checked(seed);
    let differ = first
        .trace
        .iter()
        .zip(&second.trace)
        .position(|(a, b)| a != b);
    if let Some(at) = differ {
        panic!(
            "seed {seed}: the traces differ at line {at}:\n  first:  {}\n  second: {}",
            first.trace[at], second.trace[at]
        );
    }
    assert_eq!(
        first.trace.len(),
        second.trace.len(),
        "seed {seed}: trace lengths"
    );
    eprintln!(
        "seed {seed}: {} trace lines, {} operations ({} failed) identical in two runs",
        first.trace.len(),
        first.ops,
        first.failed
    );
}

#[test]
fn generated_runs_hold_the_invariants() {
    let runs: u64 = std::env::var("SIM_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let base = seed_from_env().unwrap_or(1);
    let (mut ops, mut failed, mut cuts, mut hints, mut twice) = (0, 0, 0, 0, 0);
    for run in 0..runs {
        let outcome = run_checked(base + run);
        ops += outcome.ops;
        failed += outcome.failed;
        hints += outcome.hints_delivered;
        twice += outcome.duplicated;
        cuts += outcome
            .trace
            .iter()
            .filter(|l| l.contains("chaos cut"))
            .count();
    }
    eprintln!("{runs} runs: {ops} operations ({failed} failed under faults), {cuts} nodes cut off, {hints} hints handed off, {twice} requests delivered twice, every invariant held");
}
