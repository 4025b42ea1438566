//! # ringkv-cluster
//!
//! The Dynamo-style cluster layer (docs/architecture.md): key →
//! slot hashing, the ring of slot owners, preference lists, quorum
//! coordination, version vectors, hinted handoff, read repair, Merkle
//! anti-entropy and gossip membership.
//!
//! **Owns:** placement and replication decisions between nodes.
//! **Must not touch:** on-disk formats (that is `ringkv-engine`), the key
//! layout and value envelope of one node (that is `ringkv-store`, which it
//! builds on), or RESP framing (that is `ringkv-protocol`).
//!
//! Today it holds the one piece every layer already agrees on: the slot
//! function, the same as Redis Cluster's so cluster-aware clients can route.
//! It lives in the store's key layout (slot-first keys need it) and is
//! re-exported here.

pub use ringkv_store::layout::{hash_tag, key_slot, SLOT_COUNT};
