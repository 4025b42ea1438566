//! Cluster mode in the server (docs/cluster.md): this node's identity, its internode
//! transport, the cluster map it routes by, and [`Coordinated`], the data path that sends
//! each operation to the key's replicas instead of the local store.
//!
//! **Owns:** starting a node (id, ports, founding or joining), dispatching internode
//! requests to the data plane, and turning operations and records into replies.
//! **Must not touch:** the quorum rules, records and versions (`ringkv-cluster`), RESP
//! parsing and the command table (`cmd`): handlers build the same [`Op`]s in both modes.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Bound;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;
use parking_lot::RwLock;
use ringkv_cluster::control::{ControlConfig, ControlPlane, CONTROL_KINDS};
use ringkv_cluster::coordinator::{
    CoordError, DataNode, Peers, Quorum, WriteEvent, DATA_KINDS, MANY_KEYS_MAX, NOT_REACHED,
};
use ringkv_cluster::exchange::ExchangeLimits;
use ringkv_cluster::frame::ClusterSecret;
use ringkv_cluster::gossip::{GossipConfig, GossipRuntime, Health, GOSSIP_KIND};
use ringkv_cluster::hints::{HintLimits, Hints};
use ringkv_cluster::map::{ClusterMap, MemberInfo, MemberState};
use ringkv_cluster::record::{Body, IncrementError, Record, Resolved};
use ringkv_cluster::transfer::TransferLimits;
use ringkv_cluster::transport::{
    BoxFuture, CallError, Handler, HandlerError, Transport, TransportConfig,
};
use ringkv_cluster::{key_slot, NodeId};
use ringkv_protocol::Frame;
use ringkv_store::{encode_value, StoredValue, ValueType};

use crate::client::Client;
use crate::data::{DataPath, Done, Op, Pending};
use crate::errors::{CmdError, CmdResult};
use crate::server::Server;

/// The secret used when `cluster-secret` is not set (docs/cluster.md, "Starting").
const DEFAULT_SECRET: &[u8] = b"ringkv-cluster-default-secret-change-me";

/// File in the data directory holding this node's id (16 hex digits).
const NODE_ID_FILE: &str = "cluster-node-id";

/// One node of a cluster, as the server runs it.
pub(crate) struct ClusterNode {
    pub id: NodeId,
    pub data: Arc<DataNode>,
    pub transport: Transport,
    map: Arc<RwLock<Option<Arc<ClusterMap>>>>,
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
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ClusterNode {
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

    /// Stops gossip, the control plane and the transport (server shutdown).
    pub async fn shutdown(&self) {
        self.gossip.shutdown().await;
        self.control.shutdown().await;
        self.transport.shutdown().await;
    }
}

/// The transport's handler: data requests to the data plane, control requests to Raft,
/// gossip to foca.
struct NodeHandler {
    node: OnceLock<Weak<ClusterNode>>,
    control: OnceLock<ControlPlane>,
    gossip: OnceLock<GossipRuntime>,
    map: Arc<RwLock<Option<Arc<ClusterMap>>>>,
    fence: Arc<AtomicU64>,
    cut_off: Arc<RwLock<Vec<NodeId>>>,
}

impl Handler for NodeHandler {
    fn handle(
        &self,
        from: NodeId,
        kind: u8,
        _epoch: u64,
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
                    None => Err(HandlerError::new("node is starting")),
                }
            });
        }
        let node = self.node.get().and_then(Weak::upgrade);
        Box::pin(async move {
            let Some(node) = node else {
                return Err(HandlerError::new("node is starting"));
            };
            if DATA_KINDS.contains(&kind) {
                let reply = node.data.answer(kind, payload).await;
                return reply.map(|bytes| (kind, bytes)).map_err(HandlerError::new);
            }
            Err(HandlerError::new(format!("unknown request kind {kind}")))
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
    map: Arc<RwLock<Option<Arc<ClusterMap>>>>,
}

impl TransportPeers {
    fn addr_of(&self, node: NodeId) -> Result<SocketAddr, String> {
        let addr = self
            .map
            .read()
            .as_ref()
            .and_then(|map| map.member(node).map(|m| m.cluster_addr.clone()))
            .ok_or_else(|| format!("node {node:016x} is not in the map"))?;
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
        Box::pin(async move {
            let transport = transport.ok_or("transport not started")?;
            let first = transport.call(addr?, kind, payload.clone(), timeout).await;
            let theirs = match first {
                Err(CallError::StaleEpoch { theirs }) => theirs,
                other => return other.map(|(_, reply)| reply).map_err(|e| e.to_string()),
            };
            let control = control.ok_or("control plane not started")?;
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
            *map.write() = control.map();
            let addr = map
                .read()
                .as_ref()
                .and_then(|m| m.member(node).map(|m| m.cluster_addr.clone()))
                .and_then(|a| a.parse::<SocketAddr>().ok())
                // It left: the request did not run there (the event may go to another).
                .ok_or_else(|| format!("{NOT_REACHED}: node {node:016x} left the cluster"))?;
            transport
                .call(addr, kind, payload, timeout)
                .await
                .map(|(_, reply)| reply)
                .map_err(|e| e.to_string())
        })
    }
}

/// This node's id: read from the data directory, or drawn and written there the first time.
fn node_id(dir: &Path) -> std::io::Result<NodeId> {
    let path = dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => u64::from_str_radix(text.trim(), 16).map_err(|_| {
            std::io::Error::other(format!("{} does not hold a node id", path.display()))
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let id = loop {
                let id: u64 = rand::random();
                if id != 0 {
                    break id;
                }
            };
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, format!("{id:016x}\n"))?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(dir)?.sync_all()?;
            Ok(id)
        }
        Err(error) => Err(error),
    }
}

/// Starts cluster mode on a bound server: the node id, the internode listener, and the map
/// (a one-node cluster on a fresh node). Returns the node, installed in `server.cluster`.
pub(crate) async fn start(server: &Arc<Server>) -> std::io::Result<Arc<ClusterNode>> {
    let (dir, bind, client_port, settings) = {
        let config = server.config.read();
        (
            config.dir.clone(),
            config
                .bind
                .split_whitespace()
                .next()
                .unwrap_or("127.0.0.1")
                .to_string(),
            server.bound_port.load(Ordering::Relaxed) as u16,
            config.cluster.clone(),
        )
    };
    let id = node_id(&dir)?;
    let cluster_port = match settings.port {
        Some(port) => port,
        None if client_port == 0 => 0,
        None => client_port.checked_add(10_000).ok_or_else(|| {
            std::io::Error::other("client port + 10000 is past 65535: set cluster-port")
        })?,
    };
    let secret = match &settings.secret {
        Some(secret) => secret.as_bytes().to_vec(),
        None => {
            tracing::warn!("cluster-secret is not set: any process that reaches the cluster port can join; set it");
            DEFAULT_SECRET.to_vec()
        }
    };
    let secret = ClusterSecret::new(&secret).map_err(std::io::Error::other)?;
    let map = Arc::new(RwLock::new(None));
    let handler = Arc::new(NodeHandler {
        node: OnceLock::new(),
        control: OnceLock::new(),
        gossip: OnceLock::new(),
        map: map.clone(),
        fence: Arc::new(AtomicU64::new(0)),
        cut_off: Arc::new(RwLock::new(Vec::new())),
    });
    let bind_addr: SocketAddr = format!("{bind}:{cluster_port}")
        .parse()
        .map_err(|_| std::io::Error::other(format!("bad cluster bind address {bind}")))?;
    let mut transport_config = TransportConfig::new(id, secret);
    if settings.tls {
        let config = server.config.read();
        let (Some(cert), Some(key), Some(ca)) = (
            &config.tls_cert_file,
            &config.tls_key_file,
            &config.tls_ca_cert_file,
        ) else {
            return Err(std::io::Error::other(
                "tls-cluster needs tls-cert-file, tls-key-file and tls-ca-cert-file",
            ));
        };
        let tls = crate::tls::ClusterTls::load(cert, key, ca).map_err(std::io::Error::other)?;
        transport_config.layer = Some(Arc::new(tls));
    }
    let transport = Transport::bind(bind_addr, transport_config, handler.clone()).await?;
    let peers = Arc::new(TransportPeers {
        transport: OnceLock::new(),
        control: OnceLock::new(),
        gossip: OnceLock::new(),
        map: map.clone(),
    });
    let _ = peers.transport.set(transport.clone());
    let mut data = DataNode::new(
        id,
        server.keyspace.clone(),
        settings.sibling_cap,
        settings.tombstone_grace_s.saturating_mul(1000),
        peers.clone(),
        Duration::from_millis(settings.request_timeout_ms),
    );
    if settings.hinted_handoff {
        let limits = HintLimits {
            bytes_max: settings.hints_max_bytes,
            age_max_ms: settings.hint_max_age_s.saturating_mul(1000),
        };
        let fsync = server.keyspace.engine().fsync_policy();
        let hints =
            Hints::open(&dir.join(HINTS_DIR), limits, fsync).map_err(std::io::Error::other)?;
        data = data.with_hints(Arc::new(hints));
    }
    let data = Arc::new(data.with_map(map.clone()));
    let me = MemberInfo {
        node: id,
        client_addr: format!("{bind}:{client_port}"),
        cluster_addr: transport.local_addr().to_string(),
        zone: settings.zone.clone(),
        state: MemberState::Up,
    };
    let control = ControlPlane::open(
        ControlConfig {
            me: me.clone(),
            dir: dir.join("cluster"),
            replication: settings.replicas,
        },
        transport.clone(),
    )
    .await
    .map_err(std::io::Error::other)?;
    let _ = handler.control.set(control.clone());
    let _ = peers.control.set(control.clone());
    let gossip = GossipRuntime::start(
        id,
        transport.local_addr(),
        transport.clone(),
        GossipConfig::default(),
    );
    let _ = handler.gossip.set(gossip.clone());
    let _ = peers.gossip.set(gossip.clone());
    if control.map().is_none() {
        match &settings.join {
            None => {
                control.found().await.map_err(std::io::Error::other)?;
                tracing::info!("cluster founded: this node holds every slot");
            }
            Some(seed) => {
                let seed_addr = seed_cluster_addr(seed, JOIN_TIMEOUT).await?;
                tracing::info!(%seed, %seed_addr, "joining the cluster");
                let joined = control
                    .join_via(seed_addr, JOIN_TIMEOUT)
                    .await
                    .map_err(std::io::Error::other)?;
                tracing::info!(
                    epoch = joined.epoch,
                    members = joined.members.len(),
                    "joined the cluster"
                );
            }
        }
    } else if settings.join.is_some() {
        tracing::info!(
            "cluster-join ignored: this node is already a member (its data directory says so)"
        );
    }
    let node = Arc::new(ClusterNode {
        id,
        data,
        transport,
        map: map.clone(),
        me: me.clone(),
        control: control.clone(),
        gossip: gossip.clone(),
        coordinated: AtomicU64::new(0),
        fence: handler.fence.clone(),
        cut_off: handler.cut_off.clone(),
    });
    let _ = handler.node.set(Arc::downgrade(&node));
    // Route by the map as it applies; introduce every member to gossip.
    let mut changes = control.watch();
    follow_map(&map, &gossip, id, changes.borrow_and_update().clone());
    {
        let map = map.clone();
        let gossip = gossip.clone();
        let mut shutdown = server.shutdown.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { break },
                    _ = shutdown.wait_for(|stop| *stop) => break,
                }
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
    if node.data.hints().is_some() {
        let data = node.data.clone();
        let map = map.clone();
        let mut shutdown = server.shutdown.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(HINT_DELIVERY_INTERVAL) => {}
                    _ = shutdown.wait_for(|stop| *stop) => break,
                }
                let current = map.read().clone();
                if let Some(current) = current {
                    // A full pass goes again at once: a backlog drains at the speed of the
                    // replica, not one pass a second.
                    while data.deliver_hints(&current).await >= HINT_PASS_FULL {}
                }
            }
        });
    }
    spawn_anti_entropy(server, &node);
    spawn_transfers(server, &node, &dir);
    tracing::info!(node = %format!("{id:016x}"), cluster_addr = %node.me.cluster_addr, epoch = node.epoch(), "cluster mode: node started");
    let _ = server.cluster.set(node.clone());
    Ok(node)
}

/// Routes by `current` from now on, and introduces its members to gossip.
fn follow_map(
    map: &RwLock<Option<Arc<ClusterMap>>>,
    gossip: &GossipRuntime,
    me: NodeId,
    current: Option<Arc<ClusterMap>>,
) {
    if let Some(current) = &current {
        for member in current.members.values().filter(|m| m.node != me) {
            if let Ok(addr) = member.cluster_addr.parse() {
                gossip.add_peer(addr);
            }
        }
    }
    *map.write() = current;
}

/// Anti-entropy (docs/cluster.md, "Anti-entropy"): builds this node's trees from its store,
/// then every `cluster-anti-entropy-interval` (jittered) exchanges with the next member in
/// turn that gossip finds alive, and rebuilds the trees from the store about once a day as
/// a check.
fn spawn_anti_entropy(server: &Arc<Server>, node: &Arc<ClusterNode>) {
    let data = node.data.clone();
    let map = node.map.clone();
    let gossip = node.gossip.clone();
    let server = server.clone();
    let mut shutdown = server.shutdown.subscribe();
    tokio::spawn(async move {
        let build = |data: Arc<DataNode>| async move {
            let started = Instant::now();
            match tokio::task::spawn_blocking(move || data.build_trees()).await {
                Ok(Ok(())) => tracing::info!(
                    millis = started.elapsed().as_millis() as u64,
                    "anti-entropy trees built from the store"
                ),
                Ok(Err(error)) => tracing::warn!(%error, "building the anti-entropy trees failed"),
                Err(error) => tracing::warn!(%error, "the anti-entropy build task failed"),
            }
        };
        build(data.clone()).await;
        let mut built = Instant::now();
        let mut rebuild_after = jittered(AAE_REBUILD_EVERY);
        let mut turn = 0usize;
        loop {
            let (interval_s, keys) = {
                let config = server.config.read();
                (
                    config.cluster.anti_entropy_interval_s,
                    config.cluster.anti_entropy_keys_per_pass,
                )
            };
            let wait = if interval_s == 0 {
                Duration::from_secs(1)
            } else {
                jittered(Duration::from_secs(interval_s))
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
            if interval_s == 0 {
                continue;
            }
            if built.elapsed() >= rebuild_after {
                build(data.clone()).await;
                built = Instant::now();
                rebuild_after = jittered(AAE_REBUILD_EVERY);
            }
            let Some(current) = map.read().clone() else {
                continue;
            };
            let health = gossip.health();
            let peers: Vec<NodeId> = current
                .members
                .keys()
                .copied()
                .filter(|&n| n != data.id() && health.get(&n) != Some(&Health::Down))
                .collect();
            if peers.is_empty() {
                continue;
            }
            let peer = peers[turn % peers.len()];
            turn = turn.wrapping_add(1);
            let limits = ExchangeLimits {
                keys,
                ..ExchangeLimits::default()
            };
            match data.exchange(&current, peer, limits).await {
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

/// Joins and leaves (docs/cluster.md, "Joins and leaves"): whenever the map has a change in
/// progress that gives this node slots, pulls them from their current replicas (resuming
/// from the progress file after a restart) and tells the control plane it has them; when a
/// change completes, drops the records of the slots this node no longer keeps, and once more
/// after the longest a request routed by the old map can take (its copies may still land).
fn spawn_transfers(server: &Arc<Server>, node: &Arc<ClusterNode>, dir: &Path) {
    let node = node.clone();
    let server = server.clone();
    let dir = dir.join(TRANSFER_DIR);
    let mut shutdown = server.shutdown.subscribe();
    tokio::spawn(async move {
        let mut maps = node.control.watch();
        // The epoch whose holdings were last swept (0: none yet; a restart sweeps once).
        let mut swept = 0u64;
        loop {
            let current = maps.borrow_and_update().clone();
            if let Some(map) = current {
                let me = node.id;
                let change = map.change.as_ref().map(|c| c.started);
                if let Some(started) = change.filter(|_| !map.is_ready(me)) {
                    if !map.gains(me).is_empty() {
                        let limits = TransferLimits {
                            bytes_per_second: server.config.read().cluster.stream_rate,
                        };
                        let watch = maps.clone();
                        let still = move || {
                            watch
                                .borrow()
                                .as_ref()
                                .and_then(|m| m.change.as_ref().map(|c| c.started))
                                == Some(started)
                        };
                        let pulled = tokio::select! {
                            pulled = node.data.pull_gains(&map, &dir, limits, &still) => pulled,
                            _ = shutdown.wait_for(|stop| *stop) => break,
                        };
                        match pulled {
                            Ok(Some(started)) => match node.control.ready(me, started).await {
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
                                tokio::select! {
                                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                                    _ = shutdown.wait_for(|stop| *stop) => break,
                                }
                            }
                        }
                        continue;
                    }
                }
                if map.change.is_none() && map.epoch != swept {
                    swept = map.epoch;
                    sweep(&node, &map).await;
                    // Requests routed by the map before may still land for up to a round.
                    let later = map.clone();
                    let wait =
                        Duration::from_millis(server.config.read().cluster.request_timeout_ms)
                            .saturating_mul(3);
                    let node = node.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(wait).await;
                        if node.map().is_some_and(|m| m.epoch == later.epoch) {
                            sweep(&node, &later).await;
                        }
                    });
                }
            }
            tokio::select! {
                changed = maps.changed() => if changed.is_err() { break },
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
        }
    });
}

/// Drops this node's records of the slots `map` says it does not keep, off the workers.
async fn sweep(node: &Arc<ClusterNode>, map: &Arc<ClusterMap>) {
    let data = node.data.clone();
    let map = map.clone();
    match tokio::task::spawn_blocking(move || data.drop_unkept(&map)).await {
        Ok(Ok(0)) => {}
        Ok(Ok(dropped)) => tracing::info!(dropped, "records of slots this node gave away dropped"),
        Ok(Err(error)) => tracing::warn!(%error, "dropping the records of slots given away failed"),
        Err(error) => tracing::warn!(%error, "the sweep task failed"),
    }
}

/// Where a node keeps its slot transfers' progress, under its data directory.
const TRANSFER_DIR: &str = "transfer";

/// `base`, plus or minus up to a quarter, so that nodes do not fall into step.
fn jittered(base: Duration) -> Duration {
    let quarter = base.as_millis() as u64 / 4;
    let offset = if quarter == 0 {
        0
    } else {
        rand::random::<u64>() % (2 * quarter + 1)
    };
    Duration::from_millis(base.as_millis() as u64 - quarter + offset)
}

/// How often the anti-entropy trees are rebuilt from the store, as a check (jittered).
const AAE_REBUILD_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Where a node keeps the hints it holds for others, under its data directory.
const HINTS_DIR: &str = "hints";
/// How often a node looks for hints to hand off.
const HINT_DELIVERY_INTERVAL: Duration = Duration::from_secs(1);
/// Hints delivered in one pass past which the next pass starts at once.
const HINT_PASS_FULL: usize = 256;

/// How long a joining node waits for the cluster to take it in.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// The quorum a connection's operations use: its own (CLUSTER QUORUM), else the settings'.
pub(crate) fn quorum_of(server: &Server, client: &Client) -> Quorum {
    let (r, w, pw) = client.cluster_quorum.unwrap_or_else(|| {
        let config = server.config.read();
        (
            config.cluster.read_quorum,
            config.cluster.write_quorum,
            config.cluster.write_strict_quorum,
        )
    });
    Quorum { r, w, pw }
}

/// Up to `limit` live keys of `db` in `slot` in this node's store (CLUSTER
/// COUNTKEYSINSLOT / GETKEYSINSLOT): a scan of the database. A record whose copy here reads
/// as nothing (a delete's tombstone kept for its grace period, expired siblings) is left out.
pub(crate) fn local_keys_in_slot(
    keyspace: &ringkv_store::Keyspace,
    db: usize,
    slot: u16,
    limit: usize,
) -> CmdResult<Vec<Bytes>> {
    let now = keyspace.now_ms();
    let mut keys = Vec::new();
    for item in keyspace.range(db, Bound::Unbounded, Bound::Unbounded) {
        let (key, entry) = item?;
        if keys.len() >= limit {
            break;
        }
        if ringkv_cluster::key_slot(&key) != slot {
            continue;
        }
        let decoded = ringkv_store::value::decode_value(&entry.value)?;
        if decoded.value_type == ValueType::Record {
            let live = Record::decode(&entry.value[decoded.payload_at..])
                .ok()
                .and_then(|record| record.resolve(now).ok())
                .is_some_and(|resolved| resolved != Resolved::Absent);
            if !live {
                continue;
            }
        }
        keys.push(key);
    }
    Ok(keys)
}

/// The data path of cluster mode: every operation goes to its keys' replicas.
pub(crate) struct Coordinated {
    pub node: Arc<ClusterNode>,
    pub quorum: Quorum,
}

impl Coordinated {
    pub(crate) fn new(server: &Server, client: &Client, node: Arc<ClusterNode>) -> Self {
        Self {
            quorum: quorum_of(server, client),
            node,
        }
    }
}

fn coord_error(error: CoordError) -> CmdError {
    match error {
        CoordError::Quorum(error) => CmdError::Message(format!("NOQUORUM {error}").into()),
        CoordError::Increment(IncrementError::NotInteger) => CmdError::NotInteger,
        CoordError::Increment(error) => CmdError::Message(format!("ERR {error}").into()),
        CoordError::Event(message) if message.contains("not an integer") => CmdError::NotInteger,
        CoordError::Event(message) => CmdError::Message(format!("ERR cluster: {message}").into()),
        CoordError::NoMap => CmdError::msg("CLUSTERDOWN the cluster map is not known yet"),
        error @ CoordError::Strict { .. } => CmdError::Message(format!("NOQUORUM {error}").into()),
    }
}

/// What a record reads as, in the single node's terms: a string (a counter reads as its
/// decimal value, as INCR's result does in Redis).
fn stored(resolved: Resolved) -> Option<StoredValue> {
    let (payload, expires_at_ms) = match resolved {
        Resolved::Absent => return None,
        Resolved::Value {
            value,
            expires_at_ms,
        } => (value, expires_at_ms),
        Resolved::Counter {
            value,
            expires_at_ms,
        } => (Bytes::from(value.to_string()), expires_at_ms),
    };
    Some(StoredValue {
        value_type: ValueType::String,
        raw: encode_value(ValueType::String, &payload),
        payload_at: 1,
        expires_at_ms,
        version: 0,
    })
}

/// Everything an operation needs on another task.
#[derive(Clone)]
pub(crate) struct Run {
    node: Arc<ClusterNode>,
    quorum: Quorum,
    db: usize,
}

impl Run {
    /// An operation of `client` on `db` through `node`.
    pub(crate) fn new(server: &Server, client: &Client, node: Arc<ClusterNode>, db: usize) -> Self {
        Self {
            quorum: quorum_of(server, client),
            node,
            db,
        }
    }

    /// The merged record of `key` (VGET).
    pub(crate) async fn read_record(&self, key: &Bytes) -> CmdResult<Record> {
        self.read(key).await
    }

    /// A write event as given (VSET).
    pub(crate) async fn write_event(&self, event: WriteEvent) -> CmdResult<bool> {
        self.write(event.key, event.context, event.body, event.expires_at_ms)
            .await
    }

    fn map(&self) -> CmdResult<Arc<ClusterMap>> {
        self.node
            .map()
            .ok_or_else(|| coord_error(CoordError::NoMap))
    }

    pub(crate) fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    async fn read(&self, key: &Bytes) -> CmdResult<Record> {
        let map = self.map()?;
        self.node
            .data
            .read(&map, self.db, key, self.quorum)
            .await
            .map_err(coord_error)
    }

    async fn get(&self, key: &Bytes) -> CmdResult<Option<StoredValue>> {
        let record = self.read(key).await?;
        let resolved = record
            .resolve(self.now_ms())
            .map_err(|e| CmdError::Message(format!("ERR {e}").into()))?;
        Ok(stored(resolved))
    }

    async fn write(
        &self,
        key: Bytes,
        context: Option<ringkv_cluster::dvv::VersionVector>,
        body: Body,
        expires_at_ms: Option<u64>,
    ) -> CmdResult<bool> {
        let map = self.map()?;
        let event = WriteEvent {
            db: self.db,
            key,
            context,
            body,
            expires_at_ms,
        };
        let written = self
            .node
            .data
            .write(&map, event, self.quorum)
            .await
            .map_err(coord_error)?;
        Ok(written.existed)
    }

    /// A decide function's write as a record write: an expiry not in the future deletes.
    async fn apply_decision(
        &self,
        key: Bytes,
        context: ringkv_cluster::dvv::VersionVector,
        write: Option<(Bytes, Option<u64>)>,
    ) -> CmdResult<()> {
        let Some((raw, expires_at_ms)) = write else {
            return Ok(());
        };
        if expires_at_ms.is_some_and(|at| at <= self.now_ms()) {
            self.write(key, Some(context), Body::Tombstone, None)
                .await?;
            return Ok(());
        }
        let decoded = ringkv_store::value::decode_value(&raw)?;
        let payload = raw.slice(decoded.payload_at..);
        self.write(key, Some(context), Body::Value(payload), expires_at_ms)
            .await?;
        Ok(())
    }

    async fn run(self, op: Op) -> CmdResult<Done> {
        self.node.coordinated.fetch_add(1, Ordering::Relaxed);
        Ok(match op {
            Op::Get(key) => Done::Value(self.get(&key).await?),
            Op::GetMany { keys, bytes_max } => {
                let reads = keys.iter().map(|key| self.get(key));
                let values = join_all(reads).await;
                let mut out = Vec::with_capacity(values.len());
                let mut bytes = 0usize;
                for value in values {
                    let value = value?;
                    bytes = bytes.saturating_add(value.as_ref().map_or(0, |v| v.payload_len()));
                    if bytes_max != 0 && bytes > bytes_max {
                        return Err(CmdError::OutputLimit);
                    }
                    out.push(value);
                }
                Done::Values(out)
            }
            Op::Update(key, decide) => {
                let record = self.read(&key).await?;
                let resolved = record
                    .resolve(self.now_ms())
                    .map_err(|e| CmdError::Message(format!("ERR {e}").into()))?;
                let current = stored(resolved);
                let (write, reply) = decide(current.as_ref())?;
                self.apply_decision(key, record.context(), write).await?;
                Done::Reply(reply)
            }
            Op::Increment {
                key,
                by,
                request_id,
                ..
            } => {
                let map = self.map()?;
                let request_id: u128 = request_id.unwrap_or_else(rand::random);
                let value = self
                    .node
                    .data
                    .increment(&map, self.db, &key, by, request_id, self.quorum)
                    .await
                    .map_err(coord_error)?;
                Done::Reply(Frame::Integer(value))
            }
            Op::Set(key, value, expires_at_ms) => {
                self.write(key, None, Body::Value(value), expires_at_ms)
                    .await?;
                Done::Written
            }
            Op::Put(items) => {
                // MSET: the keys of one slot as one batch, all slots at once
                // (docs/cluster.md, "What is atomic").
                let map = self.map()?;
                let (data, quorum) = (&self.node.data, self.quorum);
                let writes = by_slot(self.db, items).into_iter().map(|events| {
                    let map = map.clone();
                    async move {
                        match <[WriteEvent; 1]>::try_from(events) {
                            Ok([event]) => data.write(&map, event, quorum).await,
                            Err(events) => data
                                .write_many(&map, events, quorum)
                                .await
                                .map(|mut done| done.pop().expect("a batch is not empty")),
                        }
                        .map_err(coord_error)
                    }
                });
                for result in join_all(writes).await {
                    result?;
                }
                Done::Written
            }
            Op::PutIfAbsent(items) => {
                let reads = items.iter().map(|(key, _, _)| self.read(key));
                let mut contexts = Vec::with_capacity(items.len());
                for record in join_all(reads).await {
                    let record = record?;
                    let live = record
                        .resolve(self.now_ms())
                        .map_err(|e| CmdError::Message(format!("ERR {e}").into()))?;
                    if live != Resolved::Absent {
                        return Ok(Done::Applied(false));
                    }
                    contexts.push(record.context());
                }
                let writes = items.into_iter().zip(contexts).map(
                    |((key, value, expires_at_ms), context)| {
                        self.write(key, Some(context), Body::Value(value), expires_at_ms)
                    },
                );
                for result in join_all(writes).await {
                    result?;
                }
                Done::Applied(true)
            }
            Op::Delete(mut keys) => {
                keys.sort();
                keys.dedup();
                let this = &self;
                let deletes = keys.into_iter().map(|key| async move {
                    let record = this.read(&key).await?;
                    let live = record
                        .resolve(this.now_ms())
                        .map_err(|e| CmdError::Message(format!("ERR {e}").into()))?;
                    if live == Resolved::Absent {
                        return Ok::<_, CmdError>(0);
                    }
                    this.write(key, Some(record.context()), Body::Tombstone, None)
                        .await?;
                    Ok(1)
                });
                let mut count = 0;
                for deleted in join_all(deletes).await {
                    count += deleted?;
                }
                Done::Count(count)
            }
            Op::Exists(keys) => {
                let mut count = 0;
                for value in join_all(keys.iter().map(|key| self.get(key))).await {
                    count += i64::from(value?.is_some());
                }
                Done::Count(count)
            }
        })
    }
}

/// MSET's items as blind write events grouped by slot, each group at most
/// `MANY_KEYS_MAX` keys; a key given twice takes its last value, as in Redis.
fn by_slot(db: usize, items: Vec<(Bytes, Bytes, Option<u64>)>) -> Vec<Vec<WriteEvent>> {
    let mut last = HashMap::with_capacity(items.len());
    for (i, (key, _, _)) in items.iter().enumerate() {
        last.insert(key.clone(), i);
    }
    let mut slots: BTreeMap<u16, Vec<WriteEvent>> = BTreeMap::new();
    for (i, (key, value, expires_at_ms)) in items.into_iter().enumerate() {
        if last[&key] != i {
            continue;
        }
        slots.entry(key_slot(&key)).or_default().push(WriteEvent {
            db,
            key,
            context: None,
            body: Body::Value(value),
            expires_at_ms,
        });
    }
    slots
        .into_values()
        .flat_map(|mut events| {
            let mut groups = Vec::new();
            while events.len() > MANY_KEYS_MAX {
                let rest = events.split_off(MANY_KEYS_MAX);
                groups.push(std::mem::replace(&mut events, rest));
            }
            groups.push(events);
            groups
        })
        .collect()
}

impl DataPath for Coordinated {
    fn run(&self, db: usize, op: Op) -> Pending {
        let run = Run {
            node: self.node.clone(),
            quorum: self.quorum,
            db,
        };
        Pending::Later(Box::pin(run.run(op)))
    }

    fn run_in_place(&self, _db: usize, _op: Op) -> CmdResult<Done> {
        Err(CmdError::msg(
            "ERR MULTI/EXEC is not supported in cluster mode yet (docs/cluster.md)",
        ))
    }
}

/// The cluster address of the member whose client port is `seed` (`cluster-join`): asks it
/// `CLUSTER NODES` over RESP and reads its own line's `@cport`.
async fn seed_cluster_addr(seed: &str, timeout: Duration) -> std::io::Result<SocketAddr> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect(seed).await?;
        stream
            .write_all(b"*2\r\n$7\r\nCLUSTER\r\n$5\r\nNODES\r\n")
            .await?;
        let mut reply = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let read = stream.read(&mut chunk).await?;
            if read == 0 {
                break;
            }
            reply.extend_from_slice(&chunk[..read]);
            if nodes_reply_complete(&reply) {
                break;
            }
            if reply.len() > 1 << 20 {
                return Err(std::io::Error::other("CLUSTER NODES reply too long"));
            }
        }
        Ok::<_, std::io::Error>(reply)
    };
    let reply = tokio::time::timeout(timeout, ask).await.map_err(|_| {
        std::io::Error::other(format!("{seed} did not answer CLUSTER NODES in time"))
    })??;
    let text = String::from_utf8_lossy(&reply);
    if let Some(error) = text.strip_prefix('-') {
        return Err(std::io::Error::other(format!(
            "{seed} refused CLUSTER NODES: {}",
            error.trim()
        )));
    }
    let line = text
        .lines()
        .find(|line| {
            line.split(' ')
                .nth(2)
                .is_some_and(|flags| flags.contains("myself"))
        })
        .ok_or_else(|| std::io::Error::other(format!("{seed} is not a cluster member")))?;
    let addr = line.split(' ').nth(1).unwrap_or_default();
    let (client, cport) = addr
        .split_once('@')
        .ok_or_else(|| std::io::Error::other(format!("no cluster port in {addr:?}")))?;
    let host = client.rsplit_once(':').map_or(client, |(host, _)| host);
    format!("{host}:{cport}")
        .parse()
        .map_err(|_| std::io::Error::other(format!("bad cluster address {host}:{cport}")))
}

/// Whether `reply` holds a whole RESP bulk string (or an error line).
fn nodes_reply_complete(reply: &[u8]) -> bool {
    if reply.first() == Some(&b'-') {
        return reply.ends_with(b"\r\n");
    }
    let Some(end) = reply.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    let len: usize = std::str::from_utf8(&reply[1..end])
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    reply.len() >= end + 2 + len + 2
}
