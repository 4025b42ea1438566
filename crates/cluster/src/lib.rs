//! # ringkv-cluster
//!
//! The Dynamo-style cluster layer (docs/architecture.md, docs/cluster.md):
//! key → slot hashing, the slot map and its planning, quorum coordination,
//! version vectors, CRDT counters, the internode protocol, hinted handoff,
//! read repair, Merkle anti-entropy and gossip membership.
//!
//! **Owns:** placement and replication decisions between nodes.
//! **Must not touch:** on-disk formats (that is `ringkv-engine`), the key
//! layout and value envelope of one node (that is `ringkv-store`, which it
//! builds on), or RESP framing (that is `ringkv-protocol`).
//!
//! Everything here so far is I/O-free core logic, each piece a pure
//! function or a state machine that tests drive directly:
//!
//! - [`dvv`] — dotted version vector sets: siblings, the causal context,
//!   sync and update, their compact encoding.
//! - [`hlc`] — the hybrid logical clock and the deterministic
//!   last-writer-wins pick among siblings.
//! - [`counter`] — the PN-counter behind cluster INCR/DECR/INCRBY, with
//!   request-id dedupe so a retry counts once.
//! - [`map`] — the cluster map the control plane commits: members, their
//!   addresses, zones and states, every slot's replicas, the epoch.
//! - [`plan`] — slot planning: the replica list of every slot from the
//!   members, their zones and the previous assignment.
//! - [`frame`] — the internode frame codec and the HMAC challenge–response
//!   handshake.
//! - [`quorum`] — the coordinator's write and read rounds: W acks, R
//!   copies merged, the stale replicas read repair goes to.
//! - [`record`] — one key's versioned record on a replica: siblings
//!   (values, tombstones, counters), write and increment events, merge, and
//!   the read's deterministic resolution.
//! - [`replica`] — records kept in the local store: events and merges as one
//!   atomic read-modify-write per key, the sibling cap, tombstone grace.
//!
//! Around that core, the pieces that do I/O:
//!
//! - [`coordinator`] — the data plane between nodes: a replica's answers to
//!   data requests, and the coordinator's fan-out of reads and writes to a
//!   slot's replicas through the quorum rounds (through [`coordinator::Peers`],
//!   so a simulation can stand in for the network).
//! - [`transport`] — the internode transport on tokio: authenticated TCP
//!   connections, requests multiplexed by id on pooled connections, the
//!   epoch check.
//! - [`aae`] — anti-entropy's hash trees, Tictac style: per slot, XOR of
//!   per-key digests, kept current by every stored record.
//! - [`exchange`] — the anti-entropy exchange: roots, then segments, then
//!   keys, and only the differing keys repaired, both ways.
//! - [`hints`] — hinted handoff's store: the writes a node holds for a
//!   replica that was down, merged per key, bounded in bytes and age.
//! - [`control`] — the control plane: one Raft group (openraft) over the
//!   transport whose state is the cluster map; founding, joining, voters
//!   and learners, the vote, log and map kept durably on disk.
//! - [`gossip`] — membership liveness: SWIM with suspicion on `foca`, an
//!   I/O-free core and its runtime sending datagrams over the transport;
//!   every node's health (alive, suspect, down) and load.
//! - [`node`] — one node assembled from all of the above: its transport's
//!   dispatch by request kind, founding or joining, and its background work
//!   (handoff, anti-entropy, slot transfers). The server and the
//!   deterministic simulation both run it.
//!
//! The slot function is the same as Redis Cluster's so cluster-aware
//! clients can route. It lives in the store's key layout (slot-first keys
//! need it) and is re-exported here.

pub use ringkv_store::layout::{hash_tag, key_slot, SLOT_COUNT};

pub mod aae;
mod codec;
pub mod control;
pub mod coordinator;
pub mod counter;
pub mod dvv;
pub mod exchange;
pub mod frame;
pub mod gossip;
pub mod hints;
pub mod hlc;
pub mod map;
pub mod node;
pub mod plan;
pub mod quorum;
pub mod record;
pub mod replica;
pub mod transfer;
pub mod transport;

pub use codec::DecodeError;

/// A cluster node's identity: a 64-bit id, stable for the node's life and
/// never reused (docs/cluster.md).
pub type NodeId = u64;
