//! The control plane: one Raft group (openraft) whose replicated state is
//! the [`ClusterMap`], so every node applies the same map changes in the
//! same order and ends with byte-identical maps (docs/cluster.md, "Control
//! plane (Raft, openraft)").
//!
//! **Owns:** the Raft group (its log, vote, snapshot and applied map on
//! disk under [`ControlConfig::dir`]), who is a voter and who a learner,
//! founding and joining, forwarding map changes to the leader, and the
//! internode request kinds in [`CONTROL_KINDS`]. **Must not touch:** what
//! a map change computes (that is [`crate::map`] and [`crate::plan`]),
//! sockets and the handshake (that is [`crate::transport`]: this module
//! only calls it and is called through the node's handler), liveness (that
//! is gossip), or the data path.
//!
//! Log entries are map changes ([`ControlRequest`]); applying one computes
//! `with_member` / `without_member` on the current map. An entry that
//! cannot apply (the node is already a member, say) changes nothing and
//! its error goes back to the proposer.

mod network;
mod runtime;
mod store;

pub use runtime::{seed_election_timeouts, RaftRuntime};

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Config, Raft, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::map::{ClusterMap, MemberInfo, MemberState};
use crate::transport::{HandlerError, Transport};
use crate::NodeId;

/// Internode request kinds the control plane uses (raft RPCs, forwarding
/// of proposals to the leader, join requests).
pub const CONTROL_KINDS: std::ops::RangeInclusive<u8> = 32..=47;

/// Raft AppendEntries (heartbeats too).
const KIND_APPEND: u8 = 32;
/// Raft RequestVote.
const KIND_VOTE: u8 = 33;
/// Raft InstallSnapshot (one chunk).
const KIND_SNAPSHOT: u8 = 34;
/// A map change for the leader: join, add or remove ([`Proposal`]).
const KIND_PROPOSE: u8 = 35;

/// Most voters the Raft group keeps; every other member is a learner.
pub const MAX_VOTERS: usize = 5;

/// Raft heartbeat interval.
pub const HEARTBEAT: Duration = Duration::from_millis(150);
/// Raft election timeout range: a follower that hears no leader for a
/// random time in it starts an election.
pub const ELECTION_TIMEOUT: (Duration, Duration) =
    (Duration::from_millis(1000), Duration::from_millis(2000));

/// How long [`ControlPlane::add_member`] and
/// [`ControlPlane::remove_member`] keep trying (leader elections
/// included).
pub const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the leader waits for a new learner to catch up with the log
/// before it gives up on this attempt (the joiner retries).
const LEARNER_CATCH_UP: Duration = Duration::from_secs(10);

/// Pause between retries of a proposal that found no leader.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Timeout of one forwarded proposal: adding a learner waits until it has
/// caught up, so this is generous.
const PROPOSE_CALL_TIMEOUT: Duration = Duration::from_secs(15);

openraft::declare_raft_types!(
    /// openraft's types for the control plane: entries are map changes,
    /// replies say what they applied to.
    pub TypeConfig:
        D = ControlRequest,
        R = Applied,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = RaftRuntime,
);

/// How a control plane starts.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// This node as the map will know it.
    pub me: MemberInfo,
    /// Where the durable state lives (created if missing).
    pub dir: PathBuf,
    /// N for a map founded here.
    pub replication: usize,
    /// In a deterministic simulation: the durable state is opened in place on the task
    /// rather than on the blocking pool (whose thread would finish in real time).
    pub simulated: bool,
}

/// Why a control-plane operation failed.
#[derive(Debug, Error)]
pub enum ControlError {
    /// Reading or writing the durable state failed.
    #[error("control plane I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A durable file is damaged (torn write, flipped bits, wrong format).
    #[error("control file {} is corrupt: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The map change was refused (already a member, not a member, the last
    /// member): the map did not change.
    #[error("map change refused: {0}")]
    Refused(String),
    /// Raft failed (fatally, or the group is shut down).
    #[error("raft: {0}")]
    Raft(String),
    /// No committed answer in time (no leader reachable, say).
    #[error("timed out: {0}")]
    Timeout(String),
    /// The directory holds another node's state.
    #[error("the control directory belongs to node {found:016x}, not {expected:016x}")]
    WrongNode {
        /// The node whose state is there.
        found: NodeId,
        /// This node.
        expected: NodeId,
    },
}

/// What the control plane reports for CLUSTER INFO and `ringkv cluster
/// status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlStatus {
    /// This node.
    pub node: NodeId,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// The Raft term.
    pub term: u64,
    /// This node's Raft role: "leader", "follower", "candidate", "learner"
    /// or "shutdown".
    pub role: &'static str,
    /// Voters of the Raft group, ascending.
    pub voters: Vec<NodeId>,
    /// Learners of the Raft group, ascending.
    pub learners: Vec<NodeId>,
    /// Index of the last applied log entry.
    pub last_applied: Option<u64>,
    /// The applied map's epoch (0 before any).
    pub epoch: u64,
}

/// A member on the wire and in the log (the map's own encoding is for
/// whole maps).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireMember {
    /// Node id.
    pub node: NodeId,
    /// RESP listener address.
    pub client_addr: String,
    /// Internode listener address.
    pub cluster_addr: String,
    /// Failure domain.
    pub zone: String,
    /// `true` for [`MemberState::Leaving`].
    pub leaving: bool,
}

impl WireMember {
    fn from_info(info: &MemberInfo) -> Self {
        Self {
            node: info.node,
            client_addr: info.client_addr.clone(),
            cluster_addr: info.cluster_addr.clone(),
            zone: info.zone.clone(),
            leaving: info.state == MemberState::Leaving,
        }
    }

    fn to_info(&self) -> MemberInfo {
        MemberInfo {
            node: self.node,
            client_addr: self.client_addr.clone(),
            cluster_addr: self.cluster_addr.clone(),
            zone: self.zone.clone(),
            state: if self.leaving {
                MemberState::Leaving
            } else {
                MemberState::Up
            },
        }
    }
}

/// A Raft log entry: one map change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControlRequest {
    /// The first map: `ClusterMap::founded_by(member, replication)`.
    Found {
        /// The founder.
        member: WireMember,
        /// N.
        replication: usize,
    },
    /// `map.with_member(member)`.
    AddMember(WireMember),
    /// `map.without_member(node)`.
    RemoveMember(NodeId),
    /// `map.with_leaving(node)`: a planned leave.
    Leave(NodeId),
    /// `map.with_ready(node, started)`: the node streamed what it gains.
    Ready {
        /// The node.
        node: NodeId,
        /// The epoch the change it streamed for was made at.
        started: u64,
    },
}

/// What applying an entry did, returned to the proposer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Applied {
    /// The entry committed this map (its encoding).
    Map(Vec<u8>),
    /// The entry was refused and changed nothing.
    Refused(String),
    /// Not a map change (a blank or membership entry).
    Nothing,
}

/// A map change asked of the leader (forwarded by [`KIND_PROPOSE`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Proposal {
    /// The sender joins: like `Add`, but succeeds if it already is a member
    /// (a retry after a lost reply).
    Join(WireMember),
    /// Add a member (refused if it already is one).
    Add(WireMember),
    /// Remove a member.
    Remove(NodeId),
    /// A member asks to leave.
    Leave(NodeId),
    /// A node streamed every slot it gains in the change started at `started`.
    Ready(NodeId, u64),
}

/// Why a proposal did not commit.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum ProposeFailure {
    /// Ask the leader instead (its id and cluster address, if known).
    NotLeader(Option<(NodeId, String)>),
    /// The map change was refused: final.
    Refused(String),
    /// Something transient (a membership change in progress, a lost
    /// leadership): try again.
    Failed(String),
}

type ProposeResult = Result<Vec<u8>, ProposeFailure>;

struct Inner {
    me: MemberInfo,
    replication: usize,
    raft: Raft<TypeConfig>,
    transport: Transport,
    log: store::LogStore,
    maps: Arc<watch::Sender<Option<Arc<ClusterMap>>>>,
    /// Serializes membership work on the leader, so two joins do not both
    /// see room for a fifth voter.
    changes: tokio::sync::Mutex<()>,
}

/// This node's member of the control plane. Cheap to clone.
#[derive(Clone)]
pub struct ControlPlane {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("node", &self.inner.me.node)
            .field("epoch", &self.epoch())
            .finish_non_exhaustive()
    }
}

fn raft_config() -> Result<Arc<Config>, ControlError> {
    let config = Config {
        cluster_name: "ringkv-control".into(),
        heartbeat_interval: HEARTBEAT.as_millis() as u64,
        election_timeout_min: ELECTION_TIMEOUT.0.as_millis() as u64,
        election_timeout_max: ELECTION_TIMEOUT.1.as_millis() as u64,
        install_snapshot_timeout: 2_000,
        // The log grows by a few entries per topology change; a snapshot
        // every 1000 keeps it bounded without churning.
        snapshot_policy: SnapshotPolicy::LogsSinceLast(1000),
        max_in_snapshot_log_to_keep: 100,
        ..Default::default()
    };
    config
        .validate()
        .map(Arc::new)
        .map_err(|e| ControlError::Raft(e.to_string()))
}

fn raft_error<E: std::fmt::Display>(e: E) -> ControlError {
    ControlError::Raft(e.to_string())
}

impl ControlPlane {
    /// Opens the durable state in `dir` (vote, log, last applied map).
    /// `transport` is this node's transport, used for outbound calls only
    /// (its Handler forwards [`CONTROL_KINDS`] to [`ControlPlane::handle`]).
    pub async fn open(
        config: ControlConfig,
        transport: Transport,
    ) -> Result<ControlPlane, ControlError> {
        std::fs::create_dir_all(&config.dir)?;
        let dir = config.dir.clone();
        let me = config.me.node;
        let open = move || {
            store::claim_dir(&dir, me)?;
            Ok::<_, ControlError>((
                store::LogStore::open(&dir)?,
                store::StateMachine::open(&dir)?,
            ))
        };
        let (log, machine) = if config.simulated {
            open()?
        } else {
            tokio::task::spawn_blocking(open)
                .await
                .map_err(|e| ControlError::Raft(format!("opening the control state: {e}")))??
        };
        let maps = machine.maps();
        let network = network::Network {
            transport: transport.clone(),
        };
        let raft = Raft::new(
            config.me.node,
            raft_config()?,
            network,
            log.clone(),
            machine,
        )
        .await
        .map_err(raft_error)?;
        Ok(ControlPlane {
            inner: Arc::new(Inner {
                me: config.me,
                replication: config.replication,
                raft,
                transport,
                log,
                maps,
                changes: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// First start of a cluster on this node: a one-node Raft whose map is
    /// `ClusterMap::founded_by(me)`. No-op (Ok) if this node already has
    /// state (a restart).
    pub async fn found(&self) -> Result<(), ControlError> {
        if self.map().is_some() {
            return Ok(());
        }
        let inner = &self.inner;
        let me = inner.me.node;
        let initialized = inner.raft.is_initialized().await.map_err(raft_error)?;
        if !initialized {
            if inner.log.has_state().await {
                // A vote or log from another group, but no map yet: this
                // node was joining somewhere; founding would split it off.
                return Err(ControlError::Refused(
                    "this node already has Raft state from a join; not founding".into(),
                ));
            }
            let nodes = BTreeMap::from([(me, BasicNode::new(inner.me.cluster_addr.clone()))]);
            inner.raft.initialize(nodes).await.map_err(raft_error)?;
        }
        let deadline = Instant::now() + CHANGE_TIMEOUT;
        loop {
            let request = ControlRequest::Found {
                member: WireMember::from_info(&inner.me),
                replication: inner.replication,
            };
            match inner.raft.client_write(request).await {
                Ok(response) => match response.data {
                    Applied::Map(_) | Applied::Nothing => break,
                    // Founded meanwhile (a second call): the map is there.
                    Applied::Refused(reason) => {
                        if self.map().is_none() {
                            return Err(ControlError::Refused(reason));
                        }
                        break;
                    }
                },
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))
                    if Instant::now() < deadline =>
                {
                    // The one-node group has not elected itself yet.
                    tokio::time::sleep(RETRY_PAUSE / 4).await;
                }
                Err(e) => return Err(raft_error(e)),
            }
        }
        Ok(())
    }

    /// Asks the member at `seed` (its cluster address) to add this node;
    /// retries (forwarding to the leader as needed) until the new map is
    /// committed AND applied locally, or `timeout`.
    pub async fn join_via(
        &self,
        seed: SocketAddr,
        timeout: Duration,
    ) -> Result<Arc<ClusterMap>, ControlError> {
        let deadline = Instant::now() + timeout;
        if let Some(map) = self.map() {
            if map.member(self.inner.me.node).is_some() {
                return Ok(map);
            }
        }
        let proposal = Proposal::Join(WireMember::from_info(&self.inner.me));
        let committed = self.submit(proposal, Some(seed), deadline).await?;
        self.wait_applied(committed.epoch, deadline).await
    }

    /// Commits `map.with_member(info)` through the leader (forwarded if
    /// this node is not the leader); returns the committed map.
    pub async fn add_member(&self, info: MemberInfo) -> Result<Arc<ClusterMap>, ControlError> {
        let deadline = Instant::now() + CHANGE_TIMEOUT;
        let committed = self
            .submit(Proposal::Add(WireMember::from_info(&info)), None, deadline)
            .await?;
        Ok(self.settle(committed).await)
    }

    /// Commits `map.without_member(node)` through the leader (forwarded if
    /// this node is not the leader), and drops the node from the Raft
    /// group; returns the committed map.
    pub async fn remove_member(&self, node: NodeId) -> Result<Arc<ClusterMap>, ControlError> {
        let deadline = Instant::now() + CHANGE_TIMEOUT;
        let committed = self.submit(Proposal::Remove(node), None, deadline).await?;
        Ok(self.settle(committed).await)
    }

    /// Asks the cluster to let `node` leave: commits `map.with_leaving(node)` (its slots
    /// are streamed to the others, then it leaves the map and the Raft group). Returns the
    /// committed map.
    pub async fn leave(&self, node: NodeId) -> Result<Arc<ClusterMap>, ControlError> {
        let deadline = Instant::now() + CHANGE_TIMEOUT;
        let committed = self.submit(Proposal::Leave(node), None, deadline).await?;
        Ok(self.settle(committed).await)
    }

    /// Says that `node` has streamed every slot it gains in the change started at
    /// `started`: commits `map.with_ready(node, started)`. Returns the committed map.
    pub async fn ready(&self, node: NodeId, started: u64) -> Result<Arc<ClusterMap>, ControlError> {
        let deadline = Instant::now() + CHANGE_TIMEOUT;
        let committed = self
            .submit(Proposal::Ready(node, started), None, deadline)
            .await?;
        Ok(self.settle(committed).await)
    }

    /// The latest applied map on this node (None before found/join).
    pub fn map(&self) -> Option<Arc<ClusterMap>> {
        self.inner.maps.borrow().clone()
    }

    /// Changes as they apply.
    pub fn watch(&self) -> watch::Receiver<Option<Arc<ClusterMap>>> {
        self.inner.maps.subscribe()
    }

    /// The applied map's epoch (0 before any).
    pub fn epoch(&self) -> u64 {
        self.inner.maps.borrow().as_ref().map_or(0, |map| map.epoch)
    }

    /// Answers one internode request of a [`CONTROL_KINDS`] kind (the
    /// node's transport Handler calls this).
    pub async fn handle(
        &self,
        from: NodeId,
        kind: u8,
        payload: Bytes,
    ) -> Result<(u8, Bytes), HandlerError> {
        let raft = &self.inner.raft;
        let reply = match kind {
            KIND_APPEND => encode(&raft.append_entries(decode(&payload)?).await)?,
            KIND_VOTE => encode(&raft.vote(decode(&payload)?).await)?,
            KIND_SNAPSHOT => encode(&raft.install_snapshot(decode(&payload)?).await)?,
            KIND_PROPOSE => {
                let proposal: Proposal = decode(&payload)?;
                tracing::debug!(from, ?proposal, "control proposal");
                encode(&self.propose_here(proposal).await)?
            }
            _ => return Err(HandlerError::new(format!("unknown control kind {kind}"))),
        };
        Ok((kind, reply))
    }

    /// Leader, term, voters, learners, last applied index: for CLUSTER
    /// INFO and `ringkv cluster status`.
    pub fn status(&self) -> ControlStatus {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let role = match metrics.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        ControlStatus {
            node: self.inner.me.node,
            leader: metrics.current_leader,
            term: metrics.current_term,
            role,
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            last_applied: metrics.last_applied.map(|id| id.index),
            epoch: self.epoch(),
        }
    }

    /// Takes a snapshot of the applied map now and purges the log up to it
    /// (normally automatic every 1000 entries). A member that is behind the
    /// purged log, or that joins later, then gets the snapshot.
    pub async fn compact(&self) -> Result<(), ControlError> {
        let raft = &self.inner.raft;
        let mut metrics = raft.metrics();
        let applied = metrics.borrow().last_applied;
        raft.trigger().snapshot().await.map_err(raft_error)?;
        let deadline = Instant::now() + CHANGE_TIMEOUT;
        let wait = metrics.wait_for(|m| m.snapshot >= applied);
        let snapshot = match tokio::time::timeout_at(deadline, wait).await {
            Ok(Ok(m)) => m.snapshot,
            Ok(Err(_)) => return Err(ControlError::Raft("the control plane stopped".into())),
            Err(_) => return Err(ControlError::Timeout("no snapshot taken".into())),
        };
        if let Some(snapshot) = snapshot {
            raft.trigger()
                .purge_log(snapshot.index)
                .await
                .map_err(raft_error)?;
        }
        Ok(())
    }

    /// Stops this node's Raft (the transport is the caller's to stop).
    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "control plane shutdown");
        }
    }

    // -----------------------------------------------------------------
    // Proposals.

    /// Sends `proposal` to the leader until it commits, is refused, or the
    /// deadline passes. `origin` is where to ask first (a join's seed);
    /// `None` asks this node, which knows the leader or is it.
    async fn submit(
        &self,
        proposal: Proposal,
        origin: Option<SocketAddr>,
        deadline: Instant,
    ) -> Result<Arc<ClusterMap>, ControlError> {
        let mut target = origin;
        let mut last = String::from("no attempt");
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(ControlError::Timeout(last));
            }
            let result = match target {
                None => self.propose_here(proposal.clone()).await,
                Some(addr) => self.propose_remote(addr, &proposal, deadline - now).await,
            };
            match result {
                Ok(bytes) => {
                    let map = ClusterMap::decode(&bytes)
                        .map_err(|e| ControlError::Raft(format!("leader sent a bad map: {e}")))?;
                    return Ok(Arc::new(map));
                }
                Err(ProposeFailure::Refused(reason)) => return Err(ControlError::Refused(reason)),
                Err(ProposeFailure::NotLeader(Some((leader, addr)))) => {
                    last = format!("forwarded to leader {leader:016x} at {addr}");
                    target = if leader == self.inner.me.node {
                        None
                    } else {
                        match addr.parse() {
                            Ok(addr) => Some(addr),
                            Err(_) => origin,
                        }
                    };
                    // A leader that names itself wrongly would loop fast.
                    tokio::time::sleep(RETRY_PAUSE / 4).await;
                }
                Err(ProposeFailure::NotLeader(None)) => {
                    last = "no leader known".into();
                    target = origin;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(ProposeFailure::Failed(reason)) => {
                    last = reason;
                    target = origin;
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }

    async fn propose_remote(
        &self,
        addr: SocketAddr,
        proposal: &Proposal,
        left: Duration,
    ) -> ProposeResult {
        let payload = serde_json::to_vec(proposal).expect("a proposal serializes");
        let reply = self
            .inner
            .transport
            .call(
                addr,
                KIND_PROPOSE,
                Bytes::from(payload),
                left.min(PROPOSE_CALL_TIMEOUT),
            )
            .await;
        match reply {
            Ok((_, body)) => serde_json::from_slice(&body).unwrap_or_else(|e| {
                Err(ProposeFailure::Failed(format!(
                    "bad reply from {addr}: {e}"
                )))
            }),
            Err(e) => Err(ProposeFailure::Failed(format!("calling {addr}: {e}"))),
        }
    }

    /// The leader this node knows of, with its cluster address.
    fn known_leader(&self) -> Option<(NodeId, String)> {
        let metrics = self.inner.raft.metrics().borrow().clone();
        let leader = metrics.current_leader?;
        let node = metrics.membership_config.membership().get_node(&leader)?;
        Some((leader, node.addr.clone()))
    }

    /// Runs `proposal` if this node is the leader; else says who is.
    async fn propose_here(&self, proposal: Proposal) -> ProposeResult {
        let me = self.inner.me.node;
        match self.known_leader() {
            Some((leader, _)) if leader == me => {}
            other => return Err(ProposeFailure::NotLeader(other)),
        }
        let _changes = self.inner.changes.lock().await;
        if !self.is_voter() {
            // A leader that took itself out of the group runs until it steps down; it
            // takes no more changes (see `leave_raft`).
            return Err(ProposeFailure::Failed(
                "the leader is leaving the Raft group: ask again".into(),
            ));
        }
        match proposal {
            Proposal::Join(member) => self.add_here(member, true).await,
            Proposal::Add(member) => self.add_here(member, false).await,
            Proposal::Remove(node) => self.remove_here(node).await,
            Proposal::Leave(node) => self.commit_here(ControlRequest::Leave(node)).await,
            Proposal::Ready(node, started) => {
                self.commit_here(ControlRequest::Ready { node, started })
                    .await
            }
        }
    }

    /// Commits one map change; members it dropped (a completed leave) leave the Raft group.
    async fn commit_here(&self, request: ControlRequest) -> ProposeResult {
        let before = self.map();
        let response = self
            .inner
            .raft
            .client_write(request)
            .await
            .map_err(write_failure)?;
        let result = applied(response.data);
        if let (Some(before), Some(after)) = (before, self.map()) {
            // This leader last: once out of the group it changes nothing more.
            let me = self.inner.me.node;
            let mut gone: Vec<NodeId> = before
                .members
                .keys()
                .copied()
                .filter(|node| after.member(*node).is_none())
                .collect();
            gone.sort_by_key(|&node| node == me);
            for node in gone {
                self.leave_raft(node).await?;
            }
        }
        result
    }

    async fn add_here(&self, member: WireMember, join: bool) -> ProposeResult {
        let raft = &self.inner.raft;
        let current = self
            .map()
            .ok_or_else(|| ProposeFailure::Refused("the cluster is not founded yet".into()))?;
        let existing = current.member(member.node).cloned();
        if let Some(existing) = &existing {
            if !join || WireMember::from_info(existing) != member {
                return Err(ProposeFailure::Refused(format!(
                    "node {:016x} is already a member",
                    member.node
                )));
            }
        }
        // A learner first, waiting until it has caught up with the log;
        // then a voter while there are fewer than MAX_VOTERS.
        let in_raft = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&member.node)
            .is_some();
        if !in_raft {
            let node = BasicNode::new(member.cluster_addr.clone());
            raft.add_learner(member.node, node, false)
                .await
                .map_err(write_failure)?;
        }
        self.wait_caught_up(member.node).await?;
        self.promote_if_room(member.node).await?;
        if existing.is_some() {
            // A join retried after its map committed: already done.
            return Ok(current.encode());
        }
        let response = raft
            .client_write(ControlRequest::AddMember(member))
            .await
            .map_err(write_failure)?;
        applied(response.data)
    }

    async fn remove_here(&self, node: NodeId) -> ProposeResult {
        let raft = &self.inner.raft;
        let response = raft
            .client_write(ControlRequest::RemoveMember(node))
            .await
            .map_err(write_failure)?;
        // Out of the Raft group too, even when the map refused (a node
        // whose join stopped after it became a learner is in the group but
        // not in the map).
        let result = applied(response.data);
        if self.map().is_some_and(|map| map.member(node).is_some()) {
            // Refused and still a member (the last one): nothing to undo.
            return result;
        }
        if let Err(e) = self.leave_raft(node).await {
            if result.is_ok() {
                return result;
            }
            return Err(e);
        }
        result
    }

    /// Takes `node`, no longer in the map, out of the Raft group, and keeps
    /// [`MAX_VOTERS`] voters while learners that are members remain: a voter
    /// leaves and learners take its place in one membership change. That
    /// matters when the leader removes itself: it stays leader, outside the
    /// group, until it steps down, and openraft must not be asked for another
    /// membership change meanwhile (openraft#923; a debug build asserts).
    async fn leave_raft(&self, node: NodeId) -> Result<(), ProposeFailure> {
        if !self.is_voter() {
            return Err(ProposeFailure::Failed(
                "the leader is leaving the Raft group: ask again".into(),
            ));
        }
        let raft = &self.inner.raft;
        let membership = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone();
        let map = self.map();
        let is_member = |id: &NodeId| map.as_ref().is_some_and(|map| map.member(*id).is_some());
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let change = if voters.contains(&node) {
            let mut next: BTreeSet<NodeId> =
                voters.iter().copied().filter(|&id| id != node).collect();
            for learner in membership.learner_ids().filter(|id| is_member(id)) {
                if next.len() >= MAX_VOTERS {
                    break;
                }
                next.insert(learner);
            }
            Some(ChangeMembers::ReplaceAllVoters(next))
        } else if membership.get_node(&node).is_some() {
            Some(ChangeMembers::RemoveNodes(BTreeSet::from([node])))
        } else {
            None
        };
        if let Some(change) = change {
            if let Err(e) = raft.change_membership(change, false).await {
                // Gone from the map but still in the group: a retried
                // remove (refused by the map) comes back here and retries.
                tracing::warn!(node, error = %e, "removed from the map but not from the Raft group");
                return Err(write_failure(e));
            }
        }
        if !self.is_voter() {
            // This leader took itself out: the next one promotes.
            return Ok(());
        }
        let learners: Vec<NodeId> = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .learner_ids()
            .filter(|learner| is_member(learner))
            .collect();
        for learner in learners {
            if let Err(e) = self.promote_if_room(learner).await {
                tracing::warn!(learner, error = ?e, "could not promote a learner");
                break;
            }
        }
        Ok(())
    }

    /// Whether this node is a voter in its Raft membership.
    fn is_voter(&self) -> bool {
        let me = self.inner.me.node;
        self.inner
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == me)
    }

    /// Waits until the leader's replication to `node` has reached the end
    /// of the log as it was on entry, at most [`LEARNER_CATCH_UP`].
    async fn wait_caught_up(&self, node: NodeId) -> Result<(), ProposeFailure> {
        let me = self.inner.me.node;
        let mut metrics = self.inner.raft.metrics();
        let target = metrics.borrow().last_log_index;
        let wait = metrics.wait_for(|m| {
            let caught_up = m
                .replication
                .as_ref()
                .and_then(|replication| replication.get(&node))
                .is_some_and(|matched| matched.map(|id| id.index) >= target);
            caught_up || m.current_leader != Some(me)
        });
        let leading = match tokio::time::timeout(LEARNER_CATCH_UP, wait).await {
            Ok(Ok(m)) => m.current_leader == Some(me),
            Ok(Err(_)) => return Err(ProposeFailure::Failed("raft stopped".into())),
            Err(_) => {
                return Err(ProposeFailure::Failed(format!(
                    "node {node:016x} did not catch up with the log in {LEARNER_CATCH_UP:?}"
                )))
            }
        };
        if leading {
            Ok(())
        } else {
            Err(ProposeFailure::NotLeader(self.known_leader()))
        }
    }

    /// Makes `node` a voter if there are fewer than [`MAX_VOTERS`].
    async fn promote_if_room(&self, node: NodeId) -> Result<(), ProposeFailure> {
        let raft = &self.inner.raft;
        let voters: BTreeSet<NodeId> = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        if voters.contains(&node) || voters.len() >= MAX_VOTERS {
            return Ok(());
        }
        raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node])), false)
            .await
            .map_err(write_failure)?;
        Ok(())
    }

    /// After a change committed: wait (briefly) until this node has applied
    /// it too, if it is still a member, so `map()` agrees with the answer.
    async fn settle(&self, committed: Arc<ClusterMap>) -> Arc<ClusterMap> {
        if committed.member(self.inner.me.node).is_some() {
            let deadline = Instant::now() + Duration::from_secs(5);
            if let Ok(local) = self.wait_applied(committed.epoch, deadline).await {
                if local.epoch == committed.epoch {
                    return local;
                }
            }
        }
        committed
    }

    /// Waits until this node has applied a map of at least `epoch`.
    async fn wait_applied(
        &self,
        epoch: u64,
        deadline: Instant,
    ) -> Result<Arc<ClusterMap>, ControlError> {
        let mut maps = self.watch();
        let wait = maps.wait_for(|map| map.as_ref().is_some_and(|map| map.epoch >= epoch));
        let result = match tokio::time::timeout_at(deadline, wait).await {
            Ok(Ok(map)) => Ok(map.clone().expect("checked above")),
            Ok(Err(_)) => Err(ControlError::Raft("the control plane stopped".into())),
            Err(_) => Err(ControlError::Timeout(format!(
                "epoch {epoch} committed but not applied here yet (at {})",
                self.epoch()
            ))),
        };
        result
    }
}

/// A committed entry's reply as a proposal's result.
fn applied(data: Applied) -> ProposeResult {
    match data {
        Applied::Map(bytes) => Ok(bytes),
        Applied::Refused(reason) => Err(ProposeFailure::Refused(reason)),
        Applied::Nothing => Err(ProposeFailure::Failed("the entry changed no map".into())),
    }
}

/// A failed write on the leader: forward if leadership moved, else retry.
fn write_failure(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> ProposeFailure {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
            ProposeFailure::NotLeader(
                forward
                    .leader_id
                    .zip(forward.leader_node.map(|node| node.addr)),
            )
        }
        other => ProposeFailure::Failed(other.to_string()),
    }
}

fn decode<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, HandlerError> {
    serde_json::from_slice(payload)
        .map_err(|e| HandlerError::new(format!("undecodable control request: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Bytes, HandlerError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| HandlerError::new(format!("unencodable control reply: {e}")))
}
