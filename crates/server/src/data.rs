//! The data interface: what a command asks of the data, as a value
//! (docs/architecture.md, "Commands as parse, then operation").
//!
//! A handler parses its arguments into an [`Op`] and hands it to
//! [`Ctx::run`](crate::cmd::Ctx::run) with a continuation that turns the
//! result ([`Done`]) into the reply. A [`DataPath`] runs the operation:
//!
//! * [`Local`], the single node: the store in this process, synchronously, so
//!   the reply is [`Pending::Ready`] and the continuation runs at once.
//! * The cluster coordinator (docs/cluster.md) will send the operation to the
//!   slot's replicas and answer [`Pending::Later`]: the connection awaits the
//!   future as a deferred reply, and no worker thread waits for the network.
//!
//! Operations carry owned keys and `Send + 'static` closures for that reason:
//! an [`Op::Update`]'s decide function may run on another task, after a
//! quorum read, with the value the replicas agreed on.
//!
//! **Owns:** the operation vocabulary and the local executor.
//! **Must not touch:** RESP parsing, connections, the command table: it sits
//! below `cmd`, which is the only module that builds operations.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use ringkv_protocol::Frame;
use ringkv_store::{Keyspace, StoredValue};

use crate::errors::{CmdError, CmdResult};

/// What a decide function chose: the encoded value to store with its expiry (`None`: write
/// nothing), and the reply. An expiry not in the future deletes the key ([`delete`]).
pub(crate) type Decision = (Option<(Bytes, Option<u64>)>, Frame);

/// A read-modify-write's decision, given the live value at the key (any type).
pub(crate) type Decide =
    Box<dyn FnOnce(Option<&StoredValue>) -> CmdResult<Decision> + Send + 'static>;

/// Keys and string values with their expiry, written together (MSET, SET, SETEX).
pub(crate) type Items = Vec<(Bytes, Bytes, Option<u64>)>;

/// The write a decide function returns to delete the key it read (GETDEL): an expiry in the
/// past, which the store turns into a delete with its counts and expiry index kept right.
pub(crate) fn delete(old: &StoredValue) -> Option<(Bytes, Option<u64>)> {
    Some((old.raw.clone(), Some(0)))
}

/// The write that keeps a value and sets its expiry (`None`: persist; EXPIRE, GETEX).
pub(crate) fn with_expiry(
    old: &StoredValue,
    expires_at_ms: Option<u64>,
) -> Option<(Bytes, Option<u64>)> {
    Some((old.raw.clone(), expires_at_ms))
}

/// One operation on one logical database.
pub(crate) enum Op {
    /// The live value at a key, of any type: [`Done::Value`].
    Get(Bytes),
    /// The live values at several keys, in order: [`Done::Values`]. Stops with
    /// [`CmdError::OutputLimit`] once the values pass `bytes_max` (0: no limit), so a reply
    /// too big to send is never built.
    GetMany { keys: Vec<Bytes>, bytes_max: usize },
    /// Reads a key, decides, writes at most once, atomically with respect to other writers of
    /// that key: [`Done::Reply`] with the decision's reply.
    Update(Bytes, Decide),
    /// INCR, DECR, INCRBY, DECRBY: adds `by` to the integer at `key`: [`Done::Reply`]. A data
    /// path that keeps values as they are (the single node) runs `decide`, the Redis
    /// read-modify-write; the cluster coordinator runs a counter event of `by` instead
    /// (docs/cluster.md, "Counters"), so concurrent increments through different nodes add up.
    Increment {
        key: Bytes,
        by: i64,
        /// The request id a retry repeats (INCRBYID); `None`: a fresh one. Only the
        /// coordinator's counters remember ids.
        request_id: Option<u128>,
        decide: Decide,
    },
    /// Writes one string value with its expiry (SET, SETEX): [`Done::Written`].
    Set(Bytes, Bytes, Option<u64>),
    /// Writes string values, all or nothing: [`Done::Written`].
    Put(Items),
    /// Writes string values only if none of the keys exists, all or nothing (MSETNX):
    /// [`Done::Applied`].
    PutIfAbsent(Items),
    /// Deletes keys: [`Done::Count`] of those that existed (a key named twice counts once).
    Delete(Vec<Bytes>),
    /// Counts the keys that exist (a key named twice counts twice, as EXISTS does):
    /// [`Done::Count`].
    Exists(Vec<Bytes>),
}

impl Op {
    /// True for an operation that may write.
    pub(crate) fn writes(&self) -> bool {
        !matches!(self, Op::Get(_) | Op::GetMany { .. } | Op::Exists(_))
    }
}

/// What an operation produced.
pub(crate) enum Done {
    Value(Option<StoredValue>),
    Values(Vec<Option<StoredValue>>),
    Reply(Frame),
    Written,
    Applied(bool),
    Count(i64),
}

/// A result now, or later (a future the connection awaits without holding a worker).
pub(crate) enum Pending {
    Ready(CmdResult<Done>),
    Later(Pin<Box<dyn Future<Output = CmdResult<Done>> + Send + 'static>>),
}

/// Runs operations: the local store, or (cluster mode) the coordinator.
pub(crate) trait DataPath: Send + Sync {
    /// Runs `op` on database `db`.
    fn run(&self, db: usize, op: Op) -> Pending;

    /// Runs `op` on database `db` on this thread, to completion: inside EXEC, whose queue
    /// holds its keys' locks on this thread (a lock taken for the same key on another thread
    /// would wait for the EXEC, and the EXEC for it).
    fn run_in_place(&self, db: usize, op: Op) -> CmdResult<Done>;
}

/// The single node's data path: the store in this process. Every operation completes before
/// `run` returns.
pub(crate) struct Local<'a>(pub &'a Keyspace);

impl DataPath for Local<'_> {
    fn run(&self, db: usize, op: Op) -> Pending {
        Pending::Ready(self.run_now(db, op))
    }

    fn run_in_place(&self, db: usize, op: Op) -> CmdResult<Done> {
        self.run_now(db, op)
    }
}

/// The local store answering later, from the blocking pool: what a remote executor looks
/// like to the commands. `DEBUG DATA-PATH deferred` switches the server to it, so the tests
/// can run commands through [`Pending::Later`] end to end before the coordinator exists.
pub(crate) struct Spawned(pub Arc<Keyspace>);

impl DataPath for Spawned {
    fn run(&self, db: usize, op: Op) -> Pending {
        let keyspace = self.0.clone();
        Pending::Later(Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let writes = op.writes();
                let done = Local(&keyspace).run_now(db, op)?;
                // The connection syncs what the command wrote by the time it returned; this
                // write came later, so it is synced here, before the reply, as a replica syncs
                // before it acknowledges.
                if writes {
                    keyspace.engine().sync(keyspace.last_written_sequence())?;
                }
                Ok(done)
            })
            .await
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()))
        }))
    }

    fn run_in_place(&self, db: usize, op: Op) -> CmdResult<Done> {
        Local(&self.0).run_now(db, op)
    }
}

impl Local<'_> {
    fn run_now(&self, db: usize, op: Op) -> CmdResult<Done> {
        let keyspace = self.0;
        Ok(match op {
            Op::Get(key) => Done::Value(keyspace.get(db, &key)?),
            Op::GetMany { keys, bytes_max } => {
                let mut values = Vec::with_capacity(keys.len());
                let mut bytes = 0usize;
                for key in &keys {
                    let value = keyspace.get(db, key)?;
                    bytes = bytes.saturating_add(value.as_ref().map_or(0, |v| v.payload_len()));
                    if bytes_max != 0 && bytes > bytes_max {
                        return Err(CmdError::OutputLimit);
                    }
                    values.push(value);
                }
                Done::Values(values)
            }
            Op::Update(key, decide) | Op::Increment { key, decide, .. } => {
                let (reply, _seq) = keyspace.update(db, &key, decide)?;
                Done::Reply(reply)
            }
            Op::Set(key, value, expires_at_ms) => {
                keyspace.set_string(db, &key, &value, expires_at_ms)?;
                Done::Written
            }
            Op::Put(items) => {
                keyspace.write_strings(db, &items)?;
                Done::Written
            }
            Op::PutIfAbsent(items) => {
                let keys: Vec<&[u8]> = items.iter().map(|(key, _, _)| &key[..]).collect();
                let _guard = keyspace.lock_keys(&keys);
                for key in &keys {
                    if keyspace.exists(db, key)? {
                        return Ok(Done::Applied(false));
                    }
                }
                keyspace.write_strings(db, &items)?;
                Done::Applied(true)
            }
            Op::Delete(keys) => {
                let keys: Vec<&[u8]> = keys.iter().map(|key| &key[..]).collect();
                Done::Count(keyspace.delete_many(db, &keys)?)
            }
            Op::Exists(keys) => {
                let mut count = 0;
                for key in &keys {
                    count += i64::from(keyspace.exists(db, key)?);
                }
                Done::Count(count)
            }
        })
    }
}

/// Keys in `db`, waiting off the runtime when the key counts are still being rebuilt after a
/// crash (seconds at tens of millions of keys).
pub(crate) fn key_count(keyspace: &ringkv_store::Keyspace, db: usize) -> i64 {
    if !keyspace.counts_ready() {
        blocking(|| keyspace.wait_for_counts());
    }
    keyspace.dbsize(db)
}

/// Runs `work` where it may block for long: on a multi-threaded runtime the worker thread is
/// handed over (`block_in_place`) so other connections keep being served.
pub(crate) fn blocking<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}
