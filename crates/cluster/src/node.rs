//! One cluster node assembled (docs/cluster.md): its internode transport, the control plane
//! that commits the map, gossip for liveness, the data node over the local keyspace, and
//! the node's background work: following the map, hinted handoff, anti-entropy, and the
//! slot transfers of joins and leaves. The server runs exactly this, and so does the
//! deterministic simulation (`tests/sim.rs`, docs/testing.md), over its simulated network
//! and clock.
//!
//! **Owns:** dispatching internode requests by kind (data, control, gossip, and the
//! caller's own kinds), reaching peers by their address in the map (with the stale-epoch
//! retry), founding or joining at start, and the background tasks and their shutdown.
//! **Must not touch:** the quorum rules and records (`coordinator`, `record`), what a map
//! change computes (`map`, `control`), the node's RESP side, its settings file or its
//! identity on disk (the server's).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use ringkv_store::Keyspace;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::control::{ControlConfig, ControlPlane, CONTROL_KINDS};
use crate::coordinator::{
    DataNode, MapCell, Peers, DATA_KINDS, KIND_HINT, KIND_HINT_MANY, KIND_MERGE, KIND_MERGE_MANY,
    KIND_READ, NOT_REACHED, STARTING,
};
use crate::exchange::ExchangeLimits;
use crate::gossip::{GossipConfig, GossipRuntime, Health, GOSSIP_KIND};
use crate::hints::Hints;
use crate::map::{ClusterMap, MemberInfo, MemberState};
use crate::transfer::TransferLimits;
use crate::transport::{BoxFuture, CallError, Handler, HandlerError, Transport, TransportConfig};
use crate::NodeId;

/// The settings a node reads each time it uses them, so that a change (CONFIG SET) takes
/// effect without a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveSettings {
    /// Between anti-entropy exchanges (jittered); zero turns them off.
    pub anti_entropy_interval: Duration,
    /// Keys repaired per exchange, at most.
    pub anti_entropy_keys: usize,
    /// Bytes per second a slot transfer streams, at most (0: no limit).
    pub stream_rate: u64,
    /// The longest one internode request takes: slots given away are swept once more three
    /// of these after a change completes.
    pub request_timeout: Duration,
}

/// A deterministic simulation's inputs: the node's seed (its randomness: gossip, jitter,
/// the data node's choices), its gossip generation (from the simulated clock), and how
/// often it sends a request twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Simulation {
    /// Every random choice of the node.
    pub seed: u64,
    /// This run of the node (higher than its runs before).
    pub generation: u64,
    /// One in this many idempotent requests (reads, merges, hints) is sent a second time
    /// up to 50 ms later, its reply dropped: the duplicates a retrying network makes
    /// (0: none).
    pub duplicate_one_in: u32,
}

/// How a node starts.
pub struct NodeConfig {
    /// This node's id.
    pub id: NodeId,
    /// Where the internode listener binds.
    pub bind: SocketAddr,
    /// Its RESP address, as the map publishes it.
    pub client_addr: String,
    /// Its failure domain.
    pub zone: String,
    /// The data directory: the control plane's state and the transfers' progress go under it.
    pub dir: PathBuf,
    /// N for a cluster founded here.
    pub replication: usize,
    /// Siblings a record keeps at most.
    pub sibling_cap: usize,
    /// How long tombstones are kept.
    pub tombstone_grace_ms: u64,
    /// One internode round's timeout.
    pub request_timeout: Duration,
    /// The hints this node holds for others (`None`: no hinted handoff).
    pub hints: Option<Arc<Hints>>,
    /// Finds the cluster address of a member to join through, on first start (`None`:
    /// found a cluster). Not run once the node has a map.
    pub join: Option<BoxFuture<'static, std::io::Result<SocketAddr>>>,
    /// How long a join keeps trying.
    pub join_timeout: Duration,
    /// The transport: node id, secret, TLS layer, network.
    pub transport: TransportConfig,
    /// Gossip timing.
    pub gossip: GossipConfig,
    /// How often hints are handed off.
    pub hint_interval: Duration,
    /// Settings read at each use.
    pub live: Arc<dyn Fn() -> LiveSettings + Send + Sync>,
    /// In a deterministic simulation.
    pub simulation: Option<Simulation>,
    /// Requests of kinds the node itself does not know go here (a simulation's clients).
    pub extension: Option<Arc<dyn Handler>>,
}

/// One node of a cluster, running.
pub struct ClusterNode {
    /// This node's id.
    pub id: NodeId,
    /// The data plane: this node as coordinator and replica.
    pub data: Arc<DataNode>,
    /// The internode transport.
    pub transport: Transport,
    map: Arc<MapCell>,
    /// This node's entry in the map.
    pub me: MemberInfo,
    /// Slot ownership and membership, committed through Raft.
    pub control: ControlPlane,
    /// Liveness of the members, by gossip.
    pub gossip: GossipRuntime,
    /// Requests coordinated, for INFO.
    pub coordinated: AtomicU64,
    /// `DEBUG CLUSTER-FENCE`: the transport answers as if the map were at least this epoch.
    pub fence: Arc<AtomicU64>,
    /// `DEBUG CLUSTER-PARTITION`: the nodes whose internode requests this node refuses.
    pub cut_off: Arc<RwLock<Vec<NodeId>>>,
    live: Arc<dyn Fn() -> LiveSettings + Send + Sync>,
    peers: Arc<TransportPeers>,
    /// Set at shutdown; every background task ends on it.
    stopping: watch::Sender<bool>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Founds the cluster (`join` is `None`) or joins it through the member `join` finds.
async fn enter(
    control: &ControlPlane,
    join: Option<BoxFuture<'static, std::io::Result<SocketAddr>>>,
    timeout: Duration,
) -> std::io::Result<()> {
    match join {
        None => {
            control.found().await.map_err(std::io::Error::other)?;
            tracing::info!("cluster founded: this node holds every slot");
        }
        Some(seed) => {
            let seed = seed.await?;
            tracing::info!(%seed, "joining the cluster");
            let joined = control
                .join_via(seed, timeout)
                .await
                .map_err(std::io::Error::other)?;
            tracing::info!(
                epoch = joined.epoch,
                members = joined.members.len(),
                "joined the cluster"
            );
        }
    }
    Ok(())
}

impl ClusterNode {
    /// Starts a node over `keyspace`: binds the internode listener, opens the control plane
    /// (founding a cluster or joining one on first start), starts gossip, and spawns the
    /// background work. Must be called within a tokio runtime.
    pub async fn start(
        config: NodeConfig,
        keyspace: Arc<Keyspace>,
    ) -> std::io::Result<Arc<ClusterNode>> {
        let id = config.id;
        let map: Arc<MapCell> = Arc::new(RwLock::new(None));
        let handler = Arc::new(NodeHandler {
            node: OnceLock::new(),
            control: OnceLock::new(),
            gossip: OnceLock::new(),
            map: map.clone(),
            fence: Arc::new(AtomicU64::new(0)),
            cut_off: Arc::new(RwLock::new(Vec::new())),
            extension: config.extension.clone(),
        });
        let transport = Transport::bind(config.bind, config.transport, handler.clone()).await?;
        let peers = Arc::new(TransportPeers {
            transport: OnceLock::new(),
            control: OnceLock::new(),
            gossip: OnceLock::new(),
            map: map.clone(),
            duplicate: config
                .simulation
                .filter(|s| s.duplicate_one_in > 0)
                .map(|s| {
                    use rand::SeedableRng;
                    (
                        s.duplicate_one_in,
                        Mutex::new(rand::rngs::StdRng::seed_from_u64(s.seed.rotate_left(17))),
                    )
                }),
            duplicated: AtomicU64::new(0),
        });
        let _ = peers.transport.set(transport.clone());
        let mut data = DataNode::new(
            id,
            keyspace,
            config.sibling_cap,
            config.tombstone_grace_ms,
            peers.clone(),
            config.request_timeout,
        );
        if let Some(simulation) = config.simulation {
            data = data.simulated(simulation.seed);
        }
        if let Some(hints) = config.hints {
            data = data.with_hints(hints);
        }
        let data = Arc::new(data.with_map(map.clone()));
        let me = MemberInfo {
            node: id,
            client_addr: config.client_addr,
            cluster_addr: transport.local_addr().to_string(),
            zone: config.zone,
            state: MemberState::Up,
        };
        let control = match ControlPlane::open(
            ControlConfig {
                me: me.clone(),
                dir: config.dir.join(CONTROL_DIR),
                replication: config.replication,
                simulated: config.simulation.is_some(),
            },
            transport.clone(),
        )
        .await
        {
            Ok(control) => control,
            Err(error) => {
                transport.shutdown().await;
                return Err(std::io::Error::other(error));
            }
        };
        let _ = handler.control.set(control.clone());
        let _ = peers.control.set(control.clone());
        let gossip = match config.simulation {
            None => {
                GossipRuntime::start(id, transport.local_addr(), transport.clone(), config.gossip)
            }
            Some(simulation) => GossipRuntime::start_with(
                id,
                transport.local_addr(),
                transport.clone(),
                config.gossip,
                simulation.generation,
                simulation.seed.rotate_left(29),
            ),
        };
        let _ = handler.gossip.set(gossip.clone());
        let _ = peers.gossip.set(gossip.clone());
        if control.map().is_none() {
            // A node that could not found or join stops what it started (the listener,
            // Raft, gossip) before it reports it: the caller may try again in-process.
            if let Err(error) = enter(&control, config.join, config.join_timeout).await {
                gossip.shutdown().await;
                control.shutdown().await;
                transport.shutdown().await;
                return Err(error);
            }
        } else if config.join.is_some() {
            tracing::info!(
                "cluster-join ignored: this node is already a member (its data directory says so)"
            );
        }
        let node = Arc::new(ClusterNode {
            id,
            data,
            transport,
            map: map.clone(),
            me,
            control: control.clone(),
            gossip: gossip.clone(),
            coordinated: AtomicU64::new(0),
            fence: handler.fence.clone(),
            cut_off: handler.cut_off.clone(),
            live: config.live,
            peers,
            stopping: watch::Sender::new(false),
        });
        let _ = handler.node.set(Arc::downgrade(&node));
        node.spawn_follow_map();
        if node.data.hints().is_some() {
            node.spawn_handoff(config.hint_interval);
        }
        node.spawn_anti_entropy();
        node.spawn_transfers(config.dir.join(TRANSFER_DIR));
        tracing::info!(node = %format!("{id:016x}"), cluster_addr = %node.me.cluster_addr, epoch = node.epoch(), "cluster mode: node started");
        Ok(node)
    }

    /// The map this node routes by.
    pub fn map(&self) -> Option<Arc<ClusterMap>> {
        self.map.read().clone()
    }

    /// The current epoch (0 before the map is known).
    pub fn epoch(&self) -> u64 {
        self.map.read().as_ref().map_or(0, |map| map.epoch)
    }

    /// What gossip says of `node` (this node is always alive).
    pub fn health(&self, node: NodeId) -> Health {
        if node == self.id {
            return Health::Alive;
        }
        self.gossip
            .health()
            .get(&node)
            .copied()
            .unwrap_or(Health::Alive)
    }

    /// Requests sent twice so far ([`Simulation::duplicate_one_in`]).
    pub fn duplicated(&self) -> u64 {
        self.peers.duplicated.load(Ordering::Relaxed)
    }

    /// Stops the background work, gossip, the control plane and the transport.
    pub async fn shutdown(&self) {
        self.stopping.send_replace(true);
        self.gossip.shutdown().await;
        self.control.shutdown().await;
        self.transport.shutdown().await;
    }

    /// Runs `task` until it ends or the node shuts down.
    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut stopping = self.stopping.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                // In a fixed order: a simulation replays a seed exactly (docs/testing.md).
                biased;
                _ = stopping.wait_for(|stop| *stop) => {}
                () = task => {}
            }
        });
    }

    /// Routes by the map as the control plane applies it, and introduces its members to
    /// gossip.
    fn spawn_follow_map(self: &Arc<Self>) {
        let mut changes = self.control.watch();
        follow_map(
            &self.map,
            &self.gossip,
            self.id,
            changes.borrow_and_update().clone(),
        );
        let (map, gossip, id) = (self.map.clone(), self.gossip.clone(), self.id);
        self.spawn(async move {
            while changes.changed().await.is_ok() {
                let current = changes.borrow_and_update().clone();
                if let Some(current) = &current {
                    tracing::info!(
                        epoch = current.epoch,
                        members = current.members.len(),
                        "cluster map applied"
                    );
                }
                follow_map(&map, &gossip, id, current);
            }
        });
    }

    /// Hinted handoff: hints to the nodes they are for, every `interval`.
    fn spawn_handoff(self: &Arc<Self>, interval: Duration) {
        let (data, map) = (self.data.clone(), self.map.clone());
        self.spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let current = map.read().clone();
                if let Some(current) = current {
                    // A full pass goes again at once: a backlog drains at the speed of the
                    // replica, not one pass per interval.
                    while data.deliver_hints(&current).await >= HINT_PASS_FULL {}
                }
            }
        });
    }

    /// Anti-entropy (docs/cluster.md, "Anti-entropy"): builds this node's trees from its
    /// store, then every interval (jittered) exchanges with the next member in turn that
    /// gossip finds alive, and rebuilds the trees from the store about once a day as a
    /// check.
    fn spawn_anti_entropy(self: &Arc<Self>) {
        let node = self.clone();
        self.spawn(async move {
            node.build_trees().await;
            let mut built = Instant::now();
            let mut rebuild_after = node.jittered(AAE_REBUILD_EVERY);
            let mut turn = 0usize;
            loop {
                let live = (node.live)();
                if live.anti_entropy_interval.is_zero() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                tokio::time::sleep(node.jittered(live.anti_entropy_interval)).await;
                if built.elapsed() >= rebuild_after {
                    node.build_trees().await;
                    built = Instant::now();
                    rebuild_after = node.jittered(AAE_REBUILD_EVERY);
                }
                let Some(current) = node.map() else {
                    continue;
                };
                let health = node.gossip.health();
                let peers: Vec<NodeId> = current
                    .members
                    .keys()
                    .copied()
                    .filter(|&n| n != node.id && health.get(&n) != Some(&Health::Down))
                    .collect();
                if peers.is_empty() {
                    continue;
                }
                let peer = peers[turn % peers.len()];
                turn = turn.wrapping_add(1);
                let limits = ExchangeLimits {
                    keys: live.anti_entropy_keys,
                    ..ExchangeLimits::default()
                };
                match node.data.exchange(&current, peer, limits).await {
                    Ok(done) if done.keys_differing > 0 => tracing::info!(
                        peer = %format!("{peer:016x}"),
                        slots = done.slots_compared,
                        slots_differing = done.slots_differing,
                        keys_differing = done.keys_differing,
                        keys_repaired = done.keys_repaired,
                        bytes = done.bytes,
                        "anti-entropy exchange repaired keys"
                    ),
                    Ok(done) => tracing::debug!(peer, ?done, "anti-entropy exchange"),
                    Err(error) => tracing::debug!(peer, %error, "anti-entropy exchange failed"),
                }
            }
        });
    }

    /// Builds the anti-entropy trees from the store, off the workers.
    async fn build_trees(&self) {
        let started = Instant::now();
        let data = self.data.clone();
        match self.data.blocking(move || data.build_trees()).await {
            Ok(Ok(())) => tracing::info!(
                millis = started.elapsed().as_millis() as u64,
                "anti-entropy trees built from the store"
            ),
            Ok(Err(error)) => tracing::warn!(%error, "building the anti-entropy trees failed"),
            Err(error) => tracing::warn!(%error, "the anti-entropy build task failed"),
        }
    }

    /// Joins and leaves (docs/cluster.md, "Joins and leaves"): whenever the map has a
    /// change in progress that gives this node slots, pulls them from their current
    /// replicas (resuming from the progress file after a restart) and tells the control
    /// plane it has them; when a change completes, drops the records of the slots this node
    /// no longer keeps, and once more after the longest a request routed by the old map can
    /// take (its copies may still land).
    fn spawn_transfers(self: &Arc<Self>, dir: PathBuf) {
        let node = self.clone();
        self.spawn(async move {
            let mut maps = node.control.watch();
            // The epoch whose holdings were last swept (0: none yet; a restart sweeps once).
            let mut swept = 0u64;
            loop {
                let current = maps.borrow_and_update().clone();
                if let Some(map) = current {
                    if node.transfer_step(&map, &maps, &dir).await {
                        continue;
                    }
                    if map.change.is_none() && map.epoch != swept {
                        swept = map.epoch;
                        node.sweep(&map).await;
                        // Requests routed by the map before may still land for up to a round.
                        let later = map.clone();
                        let wait = (node.live)().request_timeout.saturating_mul(3);
                        let again = node.clone();
                        node.spawn(async move {
                            tokio::time::sleep(wait).await;
                            if again.map().is_some_and(|m| m.epoch == later.epoch) {
                                again.sweep(&later).await;
                            }
                        });
                    }
                }
                if maps.changed().await.is_err() {
                    break;
                }
            }
        });
    }

    /// Pulls what `map`'s change in progress gives this node and reports it ready. Returns
    /// whether it worked on a change (then the caller looks at the map again).
    async fn transfer_step(
        &self,
        map: &Arc<ClusterMap>,
        maps: &watch::Receiver<Option<Arc<ClusterMap>>>,
        dir: &Path,
    ) -> bool {
        let me = self.id;
        let Some(started) = map.change.as_ref().map(|c| c.started) else {
            return false;
        };
        if map.is_ready(me) || map.gains(me).is_empty() {
            return false;
        }
        let limits = TransferLimits {
            bytes_per_second: (self.live)().stream_rate,
        };
        let watch = maps.clone();
        let still = move || {
            watch
                .borrow()
                .as_ref()
                .and_then(|m| m.change.as_ref().map(|c| c.started))
                == Some(started)
        };
        match self.data.pull_gains(map, dir, limits, &still).await {
            Ok(Some(started)) => match self.control.ready(me, started).await {
                Ok(map) => tracing::info!(
                    epoch = map.epoch,
                    started,
                    "told the cluster this node has its new slots"
                ),
                Err(error) => {
                    tracing::warn!(%error, "could not tell the cluster this node has its new slots");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
            Ok(None) => {}
            Err(error) => {
                tracing::info!(%error, "streaming new slots stopped: trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        true
    }

    /// Drops this node's records of the slots `map` says it does not keep, off the workers.
    async fn sweep(&self, map: &Arc<ClusterMap>) {
        let (data, map) = (self.data.clone(), map.clone());
        match self.data.blocking(move || data.drop_unkept(&map)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(dropped)) => {
                tracing::info!(dropped, "records of slots this node gave away dropped")
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "dropping the records of slots given away failed")
            }
            Err(error) => tracing::warn!(%error, "the sweep task failed"),
        }
    }

    /// `base`, plus or minus up to a quarter, so that nodes do not fall into step.
    fn jittered(&self, base: Duration) -> Duration {
        let quarter = base.as_millis() as u64 / 4;
        let offset = if quarter == 0 {
            0
        } else {
            self.data.random_u64() % (2 * quarter + 1)
        };
        Duration::from_millis(base.as_millis() as u64 - quarter + offset)
    }
}

/// Where the control plane keeps its state, under the data directory.
pub const CONTROL_DIR: &str = "cluster";
/// Where a node keeps its slot transfers' progress, under its data directory.
pub const TRANSFER_DIR: &str = "transfer";
/// How often the anti-entropy trees are rebuilt from the store, as a check (jittered).
const AAE_REBUILD_EVERY: Duration = Duration::from_secs(24 * 3600);
/// Hints delivered in one pass past which the next pass starts at once.
const HINT_PASS_FULL: usize = 256;

/// Routes by `current` from now on, and introduces its members to gossip.
fn follow_map(map: &MapCell, gossip: &GossipRuntime, me: NodeId, current: Option<Arc<ClusterMap>>) {
    if let Some(current) = &current {
        for member in current.members.values().filter(|m| m.node != me) {
            if let Ok(addr) = member.cluster_addr.parse() {
                gossip.add_peer(addr);
            }
        }
    }
    advance(map, current);
}

/// How many times a request refused for its epoch is sent again after catching up.
const STALE_EPOCH_RESENDS: usize = 3;

/// Routes by `newer` unless the cell already holds a map of a later epoch. Two writers
/// set the cell, the task following the control plane and a request that caught up after
/// a peer refused its epoch (`TransportPeers::call`): the follower, reading epoch 10 and
/// writing it after the request had set 11, put the node back a step, and the request's
/// resend went out stale again (a leave under load failed a SET with "stale epoch: the
/// peer is at epoch 11" that way in CI). Epochs only rise.
fn advance(map: &MapCell, newer: Option<Arc<ClusterMap>>) {
    let mut cell = map.write();
    let older = match (cell.as_ref(), newer.as_ref()) {
        (Some(held), Some(newer)) => newer.epoch < held.epoch,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if !older {
        *cell = newer;
    }
}

/// The transport's handler: data requests to the data plane, control requests to Raft,
/// gossip to foca, anything else to the extension.
struct NodeHandler {
    node: OnceLock<Weak<ClusterNode>>,
    control: OnceLock<ControlPlane>,
    gossip: OnceLock<GossipRuntime>,
    map: Arc<MapCell>,
    fence: Arc<AtomicU64>,
    cut_off: Arc<RwLock<Vec<NodeId>>>,
    extension: Option<Arc<dyn Handler>>,
}

impl Handler for NodeHandler {
    fn handle(
        &self,
        from: NodeId,
        kind: u8,
        epoch: u64,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<(u8, Bytes), HandlerError>> {
        if self.cut_off.read().contains(&from) {
            // A partition drill: nothing from that node gets through, gossip and Raft included.
            return Box::pin(async move {
                Err(HandlerError::new("partitioned (DEBUG CLUSTER-PARTITION)"))
            });
        }
        if kind == GOSSIP_KIND {
            if let Some(gossip) = self.gossip.get() {
                gossip.handle(from, payload);
            }
            return Box::pin(async move { Ok((kind, Bytes::new())) });
        }
        if CONTROL_KINDS.contains(&kind) {
            let control = self.control.get().cloned();
            return Box::pin(async move {
                match control {
                    Some(control) => control.handle(from, kind, payload).await,
                    None => Err(HandlerError::new(STARTING)),
                }
            });
        }
        if !DATA_KINDS.contains(&kind) {
            if let Some(extension) = &self.extension {
                return extension.handle(from, kind, epoch, payload);
            }
            return Box::pin(async move {
                Err(HandlerError::new(format!("unknown request kind {kind}")))
            });
        }
        let node = self.node.get().and_then(Weak::upgrade);
        Box::pin(async move {
            let Some(node) = node else {
                return Err(HandlerError::new(STARTING));
            };
            let reply = node.data.answer(kind, payload).await;
            reply.map(|bytes| (kind, bytes)).map_err(HandlerError::new)
        })
    }

    fn epoch(&self) -> u64 {
        let epoch = self.map.read().as_ref().map_or(0, |map| map.epoch);
        epoch.max(self.fence.load(Ordering::Relaxed))
    }

    fn fenced(&self, kind: u8) -> bool {
        kind != GOSSIP_KIND && !CONTROL_KINDS.contains(&kind)
    }
}

/// Reaches other members through the transport, by their address in the map. A peer at a
/// newer epoch refuses the request: this node waits until its own map reaches that epoch
/// (the control plane applies it), then sends once more with the new map.
struct TransportPeers {
    transport: OnceLock<Transport>,
    control: OnceLock<ControlPlane>,
    gossip: OnceLock<GossipRuntime>,
    map: Arc<MapCell>,
    /// In a simulation: one in how many idempotent requests is sent twice, and the
    /// seeded choice of which.
    duplicate: Option<(u32, Mutex<rand::rngs::StdRng>)>,
    duplicated: AtomicU64,
}

/// The request kinds a simulation may send twice: running one again changes nothing (a
/// merge of what a replica has, a hint it has, a read). A write or increment event is
/// never sent twice (docs/cluster.md, "Retries count once").
fn idempotent(kind: u8) -> bool {
    matches!(
        kind,
        KIND_READ | KIND_MERGE | KIND_MERGE_MANY | KIND_HINT | KIND_HINT_MANY
    )
}

impl TransportPeers {
    fn addr_of(&self, node: NodeId) -> Result<SocketAddr, String> {
        let addr = self
            .map
            .read()
            .as_ref()
            .and_then(|map| map.member(node).map(|m| m.cluster_addr.clone()))
            // Not sent: a change removed the node since the caller picked it (the request
            // may go to the next replica, as for a connection refused).
            .ok_or_else(|| format!("{NOT_REACHED}: node {node:016x} is not in the map"))?;
        addr.parse()
            .map_err(|_| format!("bad cluster address {addr:?}"))
    }
}

impl Peers for TransportPeers {
    fn is_down(&self, node: NodeId) -> bool {
        self.gossip
            .get()
            .is_some_and(|gossip| gossip.health().get(&node) == Some(&Health::Down))
    }

    fn call(
        &self,
        node: NodeId,
        kind: u8,
        payload: Bytes,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Bytes, String>> {
        let addr = self.addr_of(node);
        let transport = self.transport.get().cloned();
        let control = self.control.get().cloned();
        let map = self.map.clone();
        if let (Some((one_in, rng)), Some(transport), Ok(addr)) =
            (&self.duplicate, &transport, &addr)
        {
            use rand::Rng;
            let delay = idempotent(kind).then(|| {
                let mut rng = rng.lock();
                rng.gen_ratio(1, *one_in).then(|| rng.gen_range(0..50))
            });
            if let Some(Some(delay_ms)) = delay {
                self.duplicated.fetch_add(1, Ordering::Relaxed);
                let (transport, addr, payload) = (transport.clone(), *addr, payload.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                    let _ = transport.call(addr, kind, payload, timeout).await;
                });
            }
        }
        Box::pin(async move {
            let transport = transport.ok_or("transport not started")?;
            let mut answer = transport.call(addr?, kind, payload.clone(), timeout).await;
            // A refusal for the epoch means the request did not run there: catch up and send
            // again. A join or leave commits several epochs within moments, so the peer may
            // have moved on again by the resend (CI: a SET during a leave failed with "the
            // peer is at epoch 11" after one catch-up): a few rounds, each bounded.
            for _ in 0..STALE_EPOCH_RESENDS {
                let theirs = match answer {
                    Err(CallError::StaleEpoch { theirs }) => theirs,
                    other => return other.map(|(_, reply)| reply).map_err(|e| e.to_string()),
                };
                let control = control.as_ref().ok_or("control plane not started")?;
                let mut watch = control.watch();
                let caught_up = matches!(
                    tokio::time::timeout(
                        timeout,
                        watch.wait_for(|m| m.as_ref().is_some_and(|m| m.epoch >= theirs)),
                    )
                    .await,
                    Ok(Ok(_))
                );
                if !caught_up {
                    return Err(format!(
                        "stale epoch: the peer is at {theirs} and this node did not catch up in time"
                    ));
                }
                tracing::info!(node, theirs, "stale epoch: map refreshed, sending again");
                advance(&map, control.map());
                let addr = map
                    .read()
                    .as_ref()
                    .and_then(|m| m.member(node).map(|m| m.cluster_addr.clone()))
                    .and_then(|a| a.parse::<SocketAddr>().ok())
                    // It left: the request did not run there (the event may go to another).
                    .ok_or_else(|| format!("{NOT_REACHED}: node {node:016x} left the cluster"))?;
                answer = transport.call(addr, kind, payload.clone(), timeout).await;
            }
            answer.map(|(_, reply)| reply).map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use ringkv_engine::{Db, Options};

    use super::*;
    use crate::frame::ClusterSecret;

    /// A map cell only moves forward: the control plane's follower applying epoch 10 late
    /// must not undo a request's catch-up to 11 (its resend would be refused again).
    #[test]
    fn the_map_cell_never_goes_back_an_epoch() {
        use crate::map::{MemberInfo, MemberState};
        let at = |epoch: u64| {
            let founder = MemberInfo {
                node: 1,
                client_addr: "127.0.0.1:7001".into(),
                cluster_addr: "127.0.0.1:17001".into(),
                zone: "z".into(),
                state: MemberState::Up,
            };
            let mut map = ClusterMap::founded_by(founder, 1).unwrap();
            map.epoch = epoch;
            Some(Arc::new(map))
        };
        let epoch = |cell: &MapCell| cell.read().as_ref().map(|m| m.epoch);
        let cell: MapCell = RwLock::new(None);
        advance(&cell, at(11));
        assert_eq!(epoch(&cell), Some(11));
        advance(&cell, at(10));
        assert_eq!(epoch(&cell), Some(11), "an older map is ignored");
        advance(&cell, None);
        assert_eq!(epoch(&cell), Some(11), "a known map is never dropped");
        advance(&cell, at(12));
        assert_eq!(epoch(&cell), Some(12));
    }

    /// A node that cannot join stops what it started: its internode port is free again,
    /// so a caller can try again in the same process.
    #[tokio::test]
    async fn a_node_that_cannot_join_releases_its_port() {
        let dir = tempfile::tempdir().unwrap();
        let keyspace = Keyspace::open(
            Db::open(dir.path().join("data"), Options::default()).unwrap(),
            false,
            None,
        )
        .unwrap();
        let free =
            |addr: SocketAddr| std::net::TcpListener::bind(addr).and_then(|l| l.local_addr());
        let bind = free("127.0.0.1:0".parse().unwrap()).unwrap();
        // A member address where nothing listens.
        let nobody = free("127.0.0.1:0".parse().unwrap()).unwrap();
        let secret = ClusterSecret::new(b"a secret for the join test").unwrap();
        let config = NodeConfig {
            id: 7,
            bind,
            client_addr: "127.0.0.1:6379".into(),
            zone: "default".into(),
            dir: dir.path().to_path_buf(),
            replication: 3,
            sibling_cap: 100,
            tombstone_grace_ms: 60_000,
            request_timeout: Duration::from_millis(200),
            hints: None,
            join: Some(Box::pin(async move { Ok(nobody) })),
            join_timeout: Duration::from_millis(500),
            transport: TransportConfig::new(7, secret),
            gossip: GossipConfig::default(),
            hint_interval: Duration::from_millis(500),
            live: Arc::new(|| LiveSettings {
                anti_entropy_interval: Duration::ZERO,
                anti_entropy_keys: 100,
                stream_rate: 0,
                request_timeout: Duration::from_millis(200),
            }),
            simulation: None,
            extension: None,
        };
        let error = ClusterNode::start(config, Arc::new(keyspace))
            .await
            .expect_err("no member to join through");
        assert!(!error.to_string().is_empty());
        free(bind).expect("the internode port is released after a failed join");
    }
}
