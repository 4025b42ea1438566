//! The executor: runs an admitted request (`cmd::admit`) so that no client
//! can stall the others (docs/architecture.md, "Nothing blocks the runtime").
//!
//! Three rules:
//!
//! 1. **Isolation without a global lock.** A command's keys are locked by
//!    the store (stripes, in ascending order) for the length of the command;
//!    EXEC locks every key of its queue and of its WATCH list at once and runs
//!    the queue under them. What key locks cannot isolate goes through the
//!    *gate*, an async read-write lock: commands that touch data take it
//!    shared (uncontended, one atomic operation), and only an EXEC whose queue
//!    touches whole databases (FLUSHALL, SWAPDB, KEYS, … inside MULTI) or a
//!    replica swapping in a full sync takes it exclusive. Waiting for the gate
//!    is an `.await`: it never parks a worker thread, and connection-only
//!    commands (PING, CLIENT, INFO, …) never wait for it.
//! 2. **Long work off the workers.** A command that may run long (EXEC, a
//!    write while the engine stalls writers, KEYS over many keys, checkpoints)
//!    runs under `block_in_place`: the worker hands its other tasks to a new
//!    thread first. Everything else runs on the worker inside
//!    `ringkv_engine::without_waiting`, where a write that would wait after
//!    all (or, under `always`, a read of a key whose write still waits for its
//!    fsync) is refused before it changes anything and runs again under
//!    `block_in_place`. Under `always` a write on the worker does not wait
//!    for its fsync: the connection awaits it before the reply
//!    (`Db::synced`; docs/durability.md, "Group commit without a thread per
//!    writer"). A worker that blocks in place would also stop the
//!    I/O driver when it is the one polling it: on two cores the whole
//!    server would freeze, not only that client.
//! 3. **Waits are futures.** WAIT and DEBUG SLEEP return a deferred reply
//!    (`cmd::Deferred`) that the connection awaits after every lock above is
//!    released, alongside CLIENT KILL and shutdown, so SIGTERM still stops the
//!    server while a client waits forever.
//!
//! A cluster coordinator (docs/architecture.md) plugs in at rule 3: an
//! operation that needs replicas completes as a deferred reply.
//!
//! On a single node, consecutive plain SETs and INCRs of one connection's
//! pipelined batch run as one write ([`WriteRun`], docs/server.md, "Write
//! runs"): one engine batch, so one write lock, one WAL record and one
//! publication for the run instead of one per command, as MSET already has.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use ringkv_protocol::Frame;

use crate::client::Client;
use crate::cmd::{self, Access, Admission, Deferred};
use crate::data::{DataPath, Done, Op, Pending};
use crate::errors::{CmdError, CmdResult};
use crate::server::Server;

/// What a request produced: its reply now, or later.
pub(crate) enum Outcome {
    /// Nothing to send (an empty inline line).
    Nothing,
    /// The reply.
    Now(Frame),
    /// The reply, once this future completes.
    Later(Deferred),
}

/// How a command holds the gate while it runs.
enum Gate<'a> {
    Free,
    Shared(#[allow(dead_code)] tokio::sync::RwLockReadGuard<'a, ()>),
    Exclusive(#[allow(dead_code)] tokio::sync::RwLockWriteGuard<'a, ()>),
}

/// Runs one request of `client`.
pub(crate) async fn execute(
    server: &Arc<Server>,
    client: &mut Client,
    args: Vec<Bytes>,
) -> Outcome {
    let admission = cmd::admit(server, client, args);
    execute_admitted(server, client, admission).await
}

/// Runs a request [`cmd::admit`] has looked at.
pub(crate) async fn execute_admitted(
    server: &Arc<Server>,
    client: &mut Client,
    admission: Admission,
) -> Outcome {
    let (index, spec, args) = match admission {
        Admission::Done(None) => return Outcome::Nothing,
        Admission::Done(Some(reply)) => return Outcome::Now(reply),
        Admission::Run(index, spec, args) => (index, spec, args),
    };
    let is_exec = spec.name == "exec";
    let gate = if is_exec && queue_is_global(client) {
        Gate::Exclusive(server.gate.write().await)
    } else if is_exec || spec.access() != Access::None {
        Gate::Shared(server.gate.read().await)
    } else {
        Gate::Free
    };
    let may_wait = is_exec || (spec.has_flag("write") && server.keyspace.write_may_wait());
    let (reply, deferred) = if may_wait {
        crate::data::blocking(|| cmd::invoke(server, client, index, spec, &args))
    } else {
        // On the worker, a write the hint above missed is refused by the engine before it
        // changes anything (`without_waiting`): the command then runs again off the worker.
        let (ran, refused) =
            ringkv_engine::without_waiting(|| cmd::invoke(server, client, index, spec, &args));
        // Under `always`, what it read of writes not yet fsynced is answered once they are.
        client.pending_sync_seq = client
            .pending_sync_seq
            .max(ringkv_engine::take_unsynced_read());
        if refused {
            cmd::uncount(server, index, matches!(ran.0, Frame::Error(_)));
            crate::data::blocking(|| cmd::invoke(server, client, index, spec, &args))
        } else {
            ran
        }
    };
    drop(gate);
    match deferred {
        Some(later) => Outcome::Later(later),
        None => Outcome::Now(reply),
    }
}

/// True when the MULTI queue holds a command that touches whole databases, which key locks
/// cannot isolate: its EXEC takes the gate exclusive.
fn queue_is_global(client: &Client) -> bool {
    client.multi.as_ref().is_some_and(|queue| {
        queue.iter().any(|args| {
            cmd::registry()
                .lookup(&args[0])
                .is_some_and(|(_, spec)| spec.access() == Access::Global)
        })
    })
}

/// Most commands one write run holds: a pipeline longer than this commits in steps, so one
/// client's run holds its key locks and the engine's write lock for a bounded time.
const WRITE_RUN_COMMANDS_MAX: usize = 256;

/// Most bytes of arguments one write run holds before it commits (the same bound's reason,
/// for large values).
const WRITE_RUN_BYTES_MAX: usize = 1 << 20;

/// Longest key a command may have to join a run: far below the engine's key limit (512 KiB),
/// so no command of a run can make the run's batch fail for the others. A longer key runs
/// alone.
const WRITE_RUN_KEY_BYTES_MAX: usize = 1024;

/// True for a request that may join a write run: a single-key write whose handler does its
/// work as one operation of the data path (`Op::Set`, `Op::Increment`) and nothing else, so
/// that running it against a [`Batch`](ringkv_store::Batch) is running it.
fn joins_runs(spec: &cmd::CommandSpec, args: &[Bytes]) -> bool {
    match spec.name {
        // Plain SET only: its options read the key (`Op::Update`), and are rarer.
        "set" => args.len() == 3,
        "incr" | "decr" | "incrby" | "decrby" => true,
        _ => false,
    }
}

/// Plain SETs and INCR, DECR, INCRBY, DECRBY of one connection's pipelined batch, admitted but
/// not yet run (docs/server.md, "Write runs"). They run together as one engine batch
/// ([`Keyspace::batch`](ringkv_store::Keyspace::batch)): each command's handler runs in turn,
/// on a data path that writes into the batch (a command reads what the ones before it
/// wrote), and the batch commits once; each gets its reply, in order, once it did.
///
/// The connection runs the run before it runs or answers any other request (so a command
/// after the run sees it, and replies stay in request order), when the run is full, and at the
/// end of what it read, before the batch's sync and reply: a reply is never held back for a
/// request not yet received. Nothing outside the connection can tell a run from its commands
/// run one by one: no reply is sent before the run commits, and the keys are locked from the
/// first command's read to the commit.
#[derive(Default)]
pub(crate) struct WriteRun {
    /// The commands, as admitted, in order.
    commands: Vec<(usize, &'static cmd::CommandSpec, Vec<Bytes>)>,
    /// Bytes of arguments held.
    bytes: usize,
}

impl WriteRun {
    pub(crate) fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Takes an admitted request into the run if it may join ([`joins_runs`]); gives back any
    /// other admission.
    pub(crate) fn join(
        &mut self,
        server: &Server,
        client: &Client,
        admission: Admission,
    ) -> Option<Admission> {
        match admission {
            Admission::Run(index, spec, args)
                if joins_runs(spec, &args)
                    && args[1].len() <= WRITE_RUN_KEY_BYTES_MAX
                    && client.multi.is_none()
                    && server.cluster.get().is_none()
                    && !server.deferred_data_path.load(Ordering::Relaxed) =>
            {
                self.bytes += args.iter().map(Bytes::len).sum::<usize>();
                self.commands.push((index, spec, args));
                None
            }
            other => Some(other),
        }
    }

    /// True once the run should commit before it takes more.
    pub(crate) fn is_full(&self) -> bool {
        self.commands.len() >= WRITE_RUN_COMMANDS_MAX || self.bytes >= WRITE_RUN_BYTES_MAX
    }

    /// Runs the commands held as one write and empties the run; their replies, in order.
    pub(crate) async fn commit(&mut self, server: &Arc<Server>, client: &mut Client) -> Vec<Frame> {
        let mut commands = std::mem::take(&mut self.commands);
        self.bytes = 0;
        if commands.len() == 1 {
            // One command (every request at pipeline 1): the usual path, without the batch's
            // bookkeeping.
            let (index, spec, args) = commands.pop().expect("one command");
            let admission = Admission::Run(index, spec, args);
            return match execute_admitted(server, client, admission).await {
                Outcome::Now(reply) => vec![reply],
                _ => unreachable!("a command that joins runs answers at once on a single node"),
            };
        }
        let keyspace = &server.keyspace;
        let gate = server.gate.read().await;
        // As `execute` runs a write (rule 2): on the worker unless the engine would wait.
        let replies = if keyspace.write_may_wait() {
            crate::data::blocking(|| run_batch(server, client, &commands))
        } else {
            let (replies, refused) =
                ringkv_engine::without_waiting(|| run_batch(server, client, &commands));
            client.pending_sync_seq = client
                .pending_sync_seq
                .max(ringkv_engine::take_unsynced_read());
            if refused {
                for ((index, _, _), reply) in commands.iter().zip(&replies) {
                    cmd::uncount(server, *index, matches!(reply, Frame::Error(_)));
                }
                crate::data::blocking(|| run_batch(server, client, &commands))
            } else {
                replies
            }
        };
        drop(gate);
        replies
    }
}

/// Runs `commands` as one batch: see [`WriteRun`]. A failed commit (the engine refused the
/// batch) answers every command that had succeeded with the engine's error, as each would
/// have been answered alone: a command that can fail by itself does not join
/// ([`WRITE_RUN_KEY_BYTES_MAX`]).
fn run_batch(
    server: &Arc<Server>,
    client: &mut Client,
    commands: &[(usize, &'static cmd::CommandSpec, Vec<Bytes>)],
) -> Vec<Frame> {
    let keys: Vec<&[u8]> = commands.iter().map(|(_, _, args)| &args[1][..]).collect();
    let db = client.db();
    let (mut replies, committed) = server.keyspace.batch(db, &keys, |batch| {
        let path = InBatch {
            db,
            batch: parking_lot::Mutex::new(batch),
        };
        commands
            .iter()
            .map(|(index, spec, args)| cmd::invoke_on(server, client, *index, spec, args, &path))
            .collect::<Vec<Frame>>()
    });
    match committed {
        Ok(seq) => client.pending_sync_seq = client.pending_sync_seq.max(seq),
        Err(error) => {
            let error = CmdError::from(error).into_frame();
            for ((index, _, _), reply) in commands.iter().zip(replies.iter_mut()) {
                if !matches!(reply, Frame::Error(_)) {
                    *reply = error.clone();
                    cmd::count_failure(server, *index);
                }
            }
        }
    }
    replies
}

/// The data path of a write run's commands: their operations are steps of one
/// [`Batch`](ringkv_store::Batch).
struct InBatch<'b, 'k> {
    db: usize,
    batch: parking_lot::Mutex<&'b mut ringkv_store::Batch<'k>>,
}

impl DataPath for InBatch<'_, '_> {
    fn run(&self, db: usize, op: Op) -> Pending {
        Pending::Ready(self.run_in_place(db, op))
    }

    fn run_in_place(&self, db: usize, op: Op) -> CmdResult<Done> {
        debug_assert_eq!(db, self.db, "a run's commands share its database");
        let mut batch = self.batch.lock();
        match op {
            Op::Set(key, value, expires_at_ms) => {
                batch.set(
                    &key,
                    ringkv_store::encode_value(ringkv_store::ValueType::String, &value),
                    expires_at_ms,
                )?;
                Ok(Done::Written)
            }
            Op::Increment { key, decide, .. } | Op::Update(key, decide) => {
                Ok(Done::Reply(batch.update(&key, decide)?))
            }
            _ => unreachable!("only SET and the INCR family join write runs (`joins_runs`)"),
        }
    }
}
