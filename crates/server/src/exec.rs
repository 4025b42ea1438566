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
//!    write while the engine stalls writers or under `always`, KEYS over many
//!    keys, checkpoints) runs under `block_in_place`: the worker hands its
//!    other tasks to a new thread first. Everything else runs on the worker
//!    inside `ringkv_engine::without_waiting`, where a write that would wait
//!    after all is refused before it changes anything and runs again under
//!    `block_in_place`. A worker that blocks in place would also stop the
//!    I/O driver when it is the one polling it: on two cores the whole
//!    server would freeze, not only that client.
//! 3. **Waits are futures.** WAIT and DEBUG SLEEP return a deferred reply
//!    (`cmd::Deferred`) that the connection awaits after every lock above is
//!    released, alongside CLIENT KILL and shutdown, so SIGTERM still stops the
//!    server while a client waits forever.
//!
//! A cluster coordinator (docs/architecture.md) plugs in at rule 3: an
//! operation that needs replicas completes as a deferred reply.

use std::sync::Arc;

use bytes::Bytes;
use ringkv_protocol::Frame;

use crate::client::Client;
use crate::cmd::{self, Access, Admission, Deferred};
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
    let (index, spec, args) = match cmd::admit(server, client, args) {
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
