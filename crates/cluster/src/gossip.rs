//! Cluster membership: SWIM failure detection with suspicion, on the
//! `foca` crate, as an I/O-free core ([`Gossip`]) and its driver on tokio
//! ([`GossipRuntime`]). docs/cluster.md, "Membership (gossip, foca)".
//!
//! **Owns:** which nodes this node believes alive, suspect or down (the
//! liveness view), this node's gossip identity (node id, cluster address,
//! generation) and the per-node load value carried by gossip. **Must not
//! touch:** the cluster map or slot ownership (a Down node keeps its slots:
//! moving them is the control plane's decision), the transport's sockets
//! and authentication (datagrams go through [`crate::transport`] as one
//! request kind, [`GOSSIP_KIND`]), or what the coordinator does with a
//! Down replica.
//!
//! The core takes its inputs — datagrams, timer events, the time, a seeded
//! random source — as arguments and returns an [`Outbox`] of datagrams to
//! send and timers to schedule, so a simulation drives the same code as
//! the server with no tokio.

mod runtime;

pub use runtime::{GossipRuntime, GOSSIP_KIND};

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use foca::{
    AccumulatingRuntime, BroadcastHandler, Codec, Config, Foca, Identity, Invalidates,
    OwnedNotification, PeriodicParams, PostcardCodec, State, Timer,
};
use foca_rand::rngs::Xoshiro256PlusPlus;
use foca_rand::SeedableRng;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::NodeId;

/// A node's identity in gossip: its node id, the cluster address its
/// transport listens on, and a generation that tells one run of the node
/// from the next (docs/cluster.md, "Membership").
///
/// foca's unique key ([`Identity::Addr`]) is the address: two identities
/// at one address are two runs of whatever node lives there, and the
/// higher generation wins. A node that restarts takes a new generation (the
/// runtime uses the wall clock in milliseconds), so the cluster accepts it
/// even though it remembers the previous run as Down; a node the cluster
/// declared Down while it was still running renews itself with generation
/// + 1 and rejoins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GossipId {
    /// The node's id.
    pub node: NodeId,
    /// The node's cluster (transport) address: where datagrams go.
    pub addr: SocketAddr,
    /// Which run of the node this is; higher is newer.
    pub generation: u64,
}

impl Identity for GossipId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        let generation = self.generation.checked_add(1)?;
        Some(Self {
            generation,
            ..*self
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.generation, self.node) > (adversary.generation, adversary.node)
    }
}

/// What a node believes of another node's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// Answers probes (directly or through others).
    Alive,
    /// Some node's probe failed; it is Down unless it refutes the suspicion
    /// within [`GossipConfig::suspect_to_down_after`]. Still treated as a
    /// member everywhere.
    Suspect,
    /// Confirmed unreachable. Only liveness: the node keeps its slots until
    /// the control plane removes it (docs/cluster.md, "Membership").
    Down,
}

/// One node as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The node's id.
    pub node: NodeId,
    /// Its cluster address (of its newest known run).
    pub addr: SocketAddr,
    /// The newest run of the node this node has heard of.
    pub generation: u64,
    /// Its liveness.
    pub health: Health,
    /// The core's time (as passed to it) when this health was first seen
    /// for this generation.
    pub since: Duration,
    /// The load value the node last published for this generation
    /// ([`Gossip::set_load`]), if any reached us.
    pub load: Option<u64>,
}

/// Timing and sizes of gossip. The defaults suit a LAN (and loopback): a
/// node that stops answering is Down at every peer within
/// `2 × (members − 1) × probe_period + suspect_to_down_after` (4 s in a
/// three-node cluster; docs/cluster.md, "Membership").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipConfig {
    /// How often this node probes one member (members are probed in a
    /// shuffled round-robin, so each at least once per two rounds).
    pub probe_period: Duration,
    /// How long a direct probe waits for its Ack before asking others to
    /// probe indirectly. Must be below `probe_period`.
    pub probe_rtt: Duration,
    /// How many members are asked to probe indirectly.
    pub indirect_probes: usize,
    /// How long a Suspect member has to refute before it is Down.
    pub suspect_to_down_after: Duration,
    /// How often membership updates are also gossiped outside probes.
    pub gossip_period: Duration,
    /// To how many members each periodic gossip goes.
    pub gossip_fanout: usize,
    /// How many times each update (and load broadcast) is piggybacked
    /// before it is dropped from the outgoing queue.
    pub max_transmissions: u8,
    /// How often this node announces itself again to every peer
    /// ([`Gossip::announce`]) it does not see as active: the way back
    /// after a partition or a restart on either side.
    pub reannounce_period: Duration,
    /// How often this node re-broadcasts its load (with a new sequence
    /// number) so that nodes that joined later learn it.
    pub load_refresh_period: Duration,
    /// Largest datagram produced and accepted.
    pub max_datagram_bytes: usize,
    /// The runtime's timeout for sending one datagram (a transport call).
    pub send_timeout: Duration,
}

impl Default for GossipConfig {
    fn default() -> Self {
        Self {
            probe_period: Duration::from_millis(500),
            probe_rtt: Duration::from_millis(200),
            indirect_probes: 2,
            suspect_to_down_after: Duration::from_secs(2),
            gossip_period: Duration::from_millis(200),
            gossip_fanout: 2,
            max_transmissions: 6,
            reannounce_period: Duration::from_secs(1),
            load_refresh_period: Duration::from_secs(5),
            max_datagram_bytes: 8 * 1024,
            send_timeout: Duration::from_millis(500),
        }
    }
}

/// A [`GossipConfig`] that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid gossip config: {0}")]
pub struct InvalidConfig(&'static str);

impl GossipConfig {
    /// Checks the values foca and the runtime need.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let fail = |why| Err(InvalidConfig(why));
        if self.probe_rtt.is_zero() || self.probe_rtt >= self.probe_period {
            return fail("probe_rtt must be positive and below probe_period");
        }
        if self.suspect_to_down_after.is_zero() {
            return fail("suspect_to_down_after must be positive");
        }
        if self.gossip_period.is_zero() || self.reannounce_period.is_zero() {
            return fail("gossip_period and reannounce_period must be positive");
        }
        if self.indirect_probes == 0 || self.gossip_fanout == 0 || self.max_transmissions == 0 {
            return fail("indirect_probes, gossip_fanout and max_transmissions must be at least 1");
        }
        if self.max_datagram_bytes < 512 || self.max_datagram_bytes > usize::from(u16::MAX) {
            return fail("max_datagram_bytes must be between 512 and 65535");
        }
        if self.send_timeout.is_zero() {
            return fail("send_timeout must be positive");
        }
        Ok(())
    }

    fn foca(&self) -> Result<Config, InvalidConfig> {
        self.validate()?;
        let nonzero = |n: usize| NonZeroUsize::new(n).ok_or(InvalidConfig("zero count"));
        Ok(Config {
            probe_period: self.probe_period,
            probe_rtt: self.probe_rtt,
            num_indirect_probes: nonzero(self.indirect_probes)?,
            max_transmissions: NonZeroU8::new(self.max_transmissions)
                .ok_or(InvalidConfig("zero max_transmissions"))?,
            suspect_to_down_after: self.suspect_to_down_after,
            // Down identities are never forgotten: a rejoin takes a new
            // generation anyway, and our own view keeps Down nodes as Down.
            remove_down_after: None,
            max_packet_size: nonzero(self.max_datagram_bytes)?,
            // A node the cluster declared Down hears it (TurnUndead) and
            // renews its identity instead of talking to deaf peers.
            notify_down_members: true,
            // Rejoining is ours (reannounce to every known peer address).
            periodic_announce: None,
            periodic_announce_to_down_members: None,
            periodic_gossip: Some(PeriodicParams {
                frequency: self.gossip_period,
                num_members: nonzero(self.gossip_fanout)?,
            }),
        })
    }
}

/// A timer the core asked for: hand it back to [`Gossip::on_timer`] once
/// its delay has passed. Opaque.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipTimer(TimerKind);

#[derive(Debug, Clone, PartialEq, Eq)]
enum TimerKind {
    Foca(Timer<GossipId>),
    Reannounce,
}

/// What the core wants done after one call: datagrams to send (to a
/// cluster address, as one [`GOSSIP_KIND`] request each) and timers to
/// schedule.
#[derive(Debug, Default)]
pub struct Outbox {
    /// `(destination, datagram)`, in order.
    pub datagrams: Vec<(SocketAddr, Bytes)>,
    /// `(delay, timer)`: call [`Gossip::on_timer`] with the timer after the
    /// delay.
    pub timers: Vec<(Duration, GossipTimer)>,
}

impl Outbox {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.datagrams.is_empty() && self.timers.is_empty()
    }
}

/// Load broadcast layout: `[version 1][node u64 BE][generation u64 BE]
/// [sequence u64 BE][load u64 BE]`.
const LOAD_VERSION: u8 = 1;
const LOAD_BYTES: usize = 1 + 4 * 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LoadEntry {
    generation: u64,
    seq: u64,
    load: u64,
}

/// The newest load broadcast of each node, shared between the core and
/// the handler foca owns.
type LoadTable = Arc<Mutex<BTreeMap<NodeId, LoadEntry>>>;

struct LoadBroadcasts(LoadTable);

/// Identifies one load broadcast; a newer one of the same node replaces
/// older ones still queued.
struct LoadKey {
    node: NodeId,
    version: (u64, u64),
}

impl Invalidates for LoadKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.node == other.node && self.version >= other.version
    }
}

/// A load broadcast that is not 33 bytes of version 1.
#[derive(Debug, Error)]
#[error("malformed load broadcast")]
struct MalformedLoad;

fn encode_load(node: NodeId, entry: LoadEntry) -> [u8; LOAD_BYTES] {
    let mut out = [0u8; LOAD_BYTES];
    out[0] = LOAD_VERSION;
    out[1..9].copy_from_slice(&node.to_be_bytes());
    out[9..17].copy_from_slice(&entry.generation.to_be_bytes());
    out[17..25].copy_from_slice(&entry.seq.to_be_bytes());
    out[25..33].copy_from_slice(&entry.load.to_be_bytes());
    out
}

fn decode_load(data: &[u8]) -> Result<(NodeId, LoadEntry), MalformedLoad> {
    if data.len() != LOAD_BYTES || data[0] != LOAD_VERSION {
        return Err(MalformedLoad);
    }
    let word = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&data[at..at + 8]);
        u64::from_be_bytes(bytes)
    };
    Ok((
        word(1),
        LoadEntry {
            generation: word(9),
            seq: word(17),
            load: word(25),
        },
    ))
}

impl BroadcastHandler<GossipId> for LoadBroadcasts {
    type Key = LoadKey;
    type Error = MalformedLoad;

    fn receive_item(
        &mut self,
        data: &[u8],
        _sender: Option<&GossipId>,
    ) -> Result<Option<LoadKey>, MalformedLoad> {
        let (node, entry) = decode_load(data)?;
        let version = (entry.generation, entry.seq);
        let mut table = self.0.lock();
        match table.get(&node) {
            Some(known) if (known.generation, known.seq) >= version => Ok(None),
            _ => {
                table.insert(node, entry);
                Ok(Some(LoadKey { node, version }))
            }
        }
    }
}

type Swim = Foca<GossipId, PostcardCodec, Xoshiro256PlusPlus, LoadBroadcasts>;

/// The I/O-free gossip core of one node: foca with our identity, a view of
/// every node's health keyed by node id, the peers to (re)announce to, and
/// the load value.
pub struct Gossip {
    foca: Swim,
    runtime: AccumulatingRuntime<GossipId>,
    node: NodeId,
    /// Peer addresses given to [`Gossip::announce`].
    seeds: BTreeSet<SocketAddr>,
    reannounce_scheduled: bool,
    /// Our own timers (reannounce), handed out with foca's at the next drain.
    pending_own: Vec<(Duration, GossipTimer)>,
    /// Every other node ever heard of, at its newest generation. Entries
    /// are never removed: a Down node stays Down until a run of it answers.
    view: BTreeMap<NodeId, Peer>,
    /// When this node itself was started or last renewed.
    since: Duration,
    loads: LoadTable,
    my_load: Option<u64>,
    load_seq: u64,
    load_sent_at: Duration,
    reannounce_period: Duration,
    load_refresh_period: Duration,
}

impl std::fmt::Debug for Gossip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gossip")
            .field("identity", self.foca.identity())
            .field("seeds", &self.seeds)
            .field("view", &self.view)
            .finish_non_exhaustive()
    }
}

impl Gossip {
    /// A node `node` reachable at `addr`, in its run `generation` (higher
    /// than any earlier run of the node: the runtime uses the wall clock in
    /// milliseconds), drawing its random choices from `seed`. It knows no
    /// one until [`Gossip::announce`] or a datagram from a peer.
    pub fn new(
        node: NodeId,
        addr: SocketAddr,
        generation: u64,
        seed: u64,
        config: &GossipConfig,
    ) -> Result<Gossip, InvalidConfig> {
        let loads = LoadTable::default();
        let identity = GossipId {
            node,
            addr,
            generation,
        };
        let foca = Foca::with_custom_broadcast(
            identity,
            config.foca()?,
            Xoshiro256PlusPlus::seed_from_u64(seed),
            PostcardCodec,
            LoadBroadcasts(loads.clone()),
        );
        Ok(Gossip {
            foca,
            runtime: AccumulatingRuntime::new(),
            node,
            seeds: BTreeSet::new(),
            reannounce_scheduled: false,
            pending_own: Vec::new(),
            view: BTreeMap::new(),
            since: Duration::ZERO,
            loads,
            my_load: None,
            load_seq: 0,
            load_sent_at: Duration::ZERO,
            reannounce_period: config.reannounce_period,
            load_refresh_period: config.load_refresh_period,
        })
    }

    /// This node's current identity (its generation moves on when it
    /// renews after being declared Down).
    pub fn identity(&self) -> GossipId {
        *self.foca.identity()
    }

    /// Introduces the peer at cluster address `peer`: announces this node
    /// to it now and, while it is not seen as active, every
    /// [`GossipConfig::reannounce_period`]. Idempotent: a known peer (or
    /// our own address) sends nothing.
    pub fn announce(&mut self, peer: SocketAddr, now: Duration) -> Outbox {
        if peer != self.identity().addr && self.seeds.insert(peer) {
            self.announce_to(peer);
        }
        if !self.reannounce_scheduled {
            self.reannounce_scheduled = true;
            self.runtime_timer(TimerKind::Reannounce, self.reannounce_period);
        }
        self.drain(now)
    }

    /// Stops re-announcing to `peer` (it left the cluster map). What the
    /// view says of the node there is unchanged.
    pub fn forget(&mut self, peer: SocketAddr) {
        self.seeds.remove(&peer);
    }

    /// Handles one datagram that the transport received from the
    /// authenticated node `from`. Anything malformed, too large, or whose
    /// sender identity is not `from` is dropped with a debug log.
    pub fn on_datagram(&mut self, from: NodeId, data: &[u8], now: Duration) -> Outbox {
        let mut header_bytes = data;
        match Codec::<GossipId>::decode_header(&mut PostcardCodec, &mut header_bytes) {
            Ok(header) if header.src.node == from => {
                if let Err(error) = self.foca.handle_data(data, &mut self.runtime) {
                    tracing::debug!(from, %error, len = data.len(), "gossip datagram dropped");
                }
            }
            Ok(header) => tracing::debug!(
                from,
                claimed = header.src.node,
                "gossip datagram dropped: sender is not the authenticated peer"
            ),
            Err(error) => {
                tracing::debug!(from, %error, len = data.len(), "gossip datagram dropped");
            }
        }
        self.drain(now)
    }

    /// Handles a timer the core scheduled, once its delay has passed.
    pub fn on_timer(&mut self, timer: GossipTimer, now: Duration) -> Outbox {
        match timer.0 {
            TimerKind::Foca(timer) => {
                if let Err(error) = self.foca.handle_timer(timer, &mut self.runtime) {
                    tracing::debug!(%error, "gossip timer failed");
                }
            }
            TimerKind::Reannounce => {
                let active: BTreeSet<SocketAddr> =
                    self.foca.iter_members().map(|m| m.id().addr).collect();
                let missing: Vec<SocketAddr> = self.seeds.difference(&active).copied().collect();
                for peer in missing {
                    self.announce_to(peer);
                }
                if self.my_load.is_some()
                    && now.saturating_sub(self.load_sent_at) >= self.load_refresh_period
                {
                    self.broadcast_load(now);
                }
                self.runtime_timer(TimerKind::Reannounce, self.reannounce_period);
            }
        }
        self.drain(now)
    }

    /// Sets this node's load value (key count, bytes: the caller's choice),
    /// carried to the others piggybacked on gossip messages.
    pub fn set_load(&mut self, load: u64, now: Duration) {
        self.my_load = Some(load);
        self.broadcast_load(now);
    }

    /// Every node this node knows of, itself included (always Alive), by
    /// node id.
    pub fn members(&self) -> Vec<Peer> {
        let me = self.identity();
        let mine = Peer {
            node: me.node,
            addr: me.addr,
            generation: me.generation,
            health: Health::Alive,
            since: self.since,
            load: self.my_load,
        };
        let loads = self.loads.lock();
        let mut all: Vec<Peer> = self
            .view
            .values()
            .map(|peer| Peer {
                load: loads
                    .get(&peer.node)
                    .filter(|entry| entry.generation == peer.generation)
                    .map(|entry| entry.load),
                ..peer.clone()
            })
            .collect();
        let at = all.partition_point(|peer| peer.node < me.node);
        all.insert(at, mine);
        all
    }

    /// Node id → health, this node included.
    pub fn health(&self) -> BTreeMap<NodeId, Health> {
        let mut all: BTreeMap<NodeId, Health> = self
            .view
            .iter()
            .map(|(&node, peer)| (node, peer.health))
            .collect();
        all.insert(self.node, Health::Alive);
        all
    }

    fn announce_to(&mut self, peer: SocketAddr) {
        // foca accepts an Announce addressed to any identity at its own
        // address, so an address is all we need to know of the peer.
        let placeholder = GossipId {
            node: 0,
            addr: peer,
            generation: 0,
        };
        if let Err(error) = self.foca.announce(placeholder, &mut self.runtime) {
            tracing::debug!(%peer, %error, "gossip announce failed");
        }
    }

    fn broadcast_load(&mut self, now: Duration) {
        let Some(load) = self.my_load else { return };
        self.load_seq += 1;
        self.load_sent_at = now;
        let entry = LoadEntry {
            generation: self.identity().generation,
            seq: self.load_seq,
            load,
        };
        if let Err(error) = self.foca.add_broadcast(&encode_load(self.node, entry)) {
            tracing::debug!(%error, "gossip load broadcast failed");
        }
    }

    fn runtime_timer(&mut self, kind: TimerKind, after: Duration) {
        self.pending_own.push((after, GossipTimer(kind)));
    }

    /// Collects what foca asked for and brings the view up to date.
    fn drain(&mut self, now: Duration) -> Outbox {
        let mut out = Outbox::default();
        while let Some((to, data)) = self.runtime.to_send() {
            out.datagrams.push((to.addr, data));
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            out.timers
                .push((after, GossipTimer(TimerKind::Foca(timer))));
        }
        out.timers.append(&mut self.pending_own);
        let mut newcomer = false;
        while let Some(notification) = self.runtime.to_notify() {
            match notification {
                OwnedNotification::MemberUp(_) => newcomer = true,
                OwnedNotification::Rename(_, _) => newcomer = true,
                OwnedNotification::Rejoin(id) => {
                    tracing::info!(
                        generation = id.generation,
                        "declared down: rejoined gossip with a new generation"
                    );
                    self.since = now;
                }
                other => tracing::debug!(notification = ?other, "gossip"),
            }
        }
        self.update_view(now);
        if newcomer {
            // So that nodes that joined after our last broadcast learn our
            // load without waiting for the refresh.
            self.broadcast_load(now);
        }
        out
    }

    fn update_view(&mut self, now: Duration) {
        for member in self.foca.iter_membership_state() {
            let id = *member.id();
            if id.node == self.node {
                // An earlier run of ourselves.
                continue;
            }
            let health = match member.state() {
                State::Alive => Health::Alive,
                State::Suspect => Health::Suspect,
                State::Down => Health::Down,
            };
            match self.view.entry(id.node) {
                Entry::Vacant(vacant) => {
                    vacant.insert(Peer {
                        node: id.node,
                        addr: id.addr,
                        generation: id.generation,
                        health,
                        since: now,
                        load: None,
                    });
                }
                Entry::Occupied(mut occupied) => {
                    let peer = occupied.get_mut();
                    let newer = id.generation > peer.generation;
                    let same_run = id.generation == peer.generation && id.addr == peer.addr;
                    if newer || (same_run && peer.health != health) {
                        peer.addr = id.addr;
                        peer.generation = id.generation;
                        peer.health = health;
                        peer.since = now;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
