//! # ringkv-store
//!
//! The data model of one ringkv node on the storage engine: the 16 logical
//! databases, typed values in a value envelope, exact key counts, the expiry
//! index and the active-expiry sweep step, WATCH versions, and the key layout.
//!
//! **Owns:** how Redis keys, databases and metadata map onto the engine's
//! ordered key space ([`layout`], the only module that builds or decodes an
//! engine key), what a stored value looks like ([`value`]), per-key locks,
//! counts and expiry bookkeeping ([`Keyspace`]), the clock expiry reads
//! ([`clock`]).
//! **Must not touch:** networking, tokio, RESP or any reply text (that is
//! `ringkv-server`'s), bytes on disk (that is `ringkv-engine`'s), or where a
//! key lives in a cluster (that is `ringkv-cluster`'s). Every call here is
//! synchronous; the few that may wait long say so, and async callers run
//! them off their runtime.
//!
//! Layers: `engine ← store ← cluster ← server ← ringkv` (docs/architecture.md).

pub mod clock;
mod error;
mod keyspace;
pub mod layout;
pub mod value;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, Result};
pub use keyspace::{Batch, KeyGuard, Keyspace, RenameOutcome, DATABASES};
pub use layout::{key_slot, Layout, Namespace, SLOT_COUNT};
pub use value::{encode_value, Envelope, StoredValue, StrValue, ValueType};
