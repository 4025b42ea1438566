//! Commands: one table of [`CommandSpec`]s built from one slice per family,
//! and [`execute`], which looks a request up, checks arity, authentication
//! and MULTI state, takes the right lock and runs the handler.
//!
//! # Contract for command families
//!
//! Each family is a file `cmd/<family>.rs` exporting
//! `pub(crate) const COMMANDS: &[CommandSpec]`, listed once in [`registry`].
//! Adding a command touches its family file only.
//!
//! * A handler is `fn(&mut Ctx<'_>, &[Bytes]) -> Frame`. `args[0]` is the
//!   command name as the client sent it; the arity of the spec was checked
//!   before the call (Redis convention: `arity` counts the name; negative means
//!   "at least -arity").
//! * Replies are [`Frame`]s; errors are `Frame::error("ERR …")` with Redis'
//!   exact text. Shared texts and [`CmdError`](crate::errors::CmdError) (with
//!   `into_frame()`) live in `crate::errors`; argument parsing with Redis'
//!   rules (`string2ll`, `strtod`, case-insensitive options) in `crate::args`.
//!   A handler body is typically `run(ctx, args).unwrap_or_else(CmdError::into_frame)`
//!   over an inner `fn run(..) -> CmdResult<Frame>`.
//! * Data goes through the data interface (`crate::data`, docs/architecture.md):
//!   the handler builds an `Op` (get, get-many, update with a decide function,
//!   set, put, put-if-absent, delete, exists) and calls `ctx.run(op, then)`;
//!   `then` turns the result into the reply. It runs at once on a single node
//!   and later (a deferred reply) when the data path is remote, so it and a
//!   decide function own what they use (`Send + 'static`). Read-modify-write
//!   commands (INCR, APPEND, SETRANGE, SETBIT, GETSET, SET with options,
//!   GETDEL, GETEX, EXPIRE …) are one `Op::Update`: read, decide and write are
//!   atomic for the key, so concurrent clients never lose an update. Commands
//!   over whole databases or several keys at once (SCAN, FLUSHDB, RENAME,
//!   BITOP …) use `ctx.keyspace` and `ctx.lock_keys` directly.
//! * Expiry times are absolute Unix milliseconds (`Option<u64>`); `ctx.now_ms`
//!   is the time of this command. An expiry not in the future deletes the key.
//!   Values come back with `expires_at_ms` and `version`.
//! * Durability: a command whose spec has the `"write"` flag gets
//!   `ctx.last_write_seq` raised automatically after it runs; the connection
//!   calls `Db::sync` once per pipeline batch before replying. Handlers never
//!   sync themselves.
//! * Flags and key positions are those of Redis' `COMMAND INFO` (they are
//!   what `COMMAND` returns; `"write"` also drives the sync above).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use bytes::Bytes;
use ringkv_protocol::{Frame, RespVersion};

use crate::client::Client;
use crate::data::{DataPath, Done, Local, Op, Pending, Spawned};
use crate::errors::{self, CmdResult};
use crate::server::Server;
use ringkv_store::{KeyGuard, Keyspace, StrValue};

// Pure helpers of the string engineer's families; some are used only by their unit tests yet.
pub(crate) mod acl;
#[allow(dead_code)]
pub(crate) mod bit_ops;
pub(crate) mod bitmap;
pub(crate) mod cluster;
pub(crate) mod connection;
pub(crate) mod docs;
pub(crate) mod keyspace;
pub(crate) mod replication;
pub(crate) mod server;
pub(crate) mod slowlog;
pub(crate) mod string;
#[allow(dead_code)]
pub(crate) mod string_ops;
pub(crate) mod transaction;
pub(crate) mod ttl;

/// A command handler; see the module doc.
pub(crate) type Handler = fn(&mut Ctx<'_>, &[Bytes]) -> Frame;

/// A reply that comes later (WAIT, DEBUG SLEEP): the connection awaits it after the handler
/// returned and every lock it took is released, so the wait holds no worker thread and no lock
/// another connection needs (docs/architecture.md).
pub(crate) type Deferred = Pin<Box<dyn Future<Output = Frame> + Send + 'static>>;

/// Reply sizes below this are never checked against `client-output-buffer-limit` (whose
/// smallest sensible value is far above it), so small replies read no setting.
const OUTPUT_CHECK_BYTES_MIN: usize = 1 << 20;

/// What data a command touches, which decides how the executor isolates it (see `exec.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// No keys: connection and server commands.
    None,
    /// The keys its spec names (first/last/step).
    Keys,
    /// Data beyond named keys: whole databases (FLUSHALL, SWAPDB, KEYS, SCAN, RANGE, DBSIZE, …).
    Global,
}

/// Static description of a command, as `COMMAND INFO` shows it, plus its handler.
#[derive(Debug)]
pub(crate) struct CommandSpec {
    /// Lower-case name.
    pub name: &'static str,
    /// Argument count including the name; negative: at least `-arity`.
    pub arity: i32,
    /// COMMAND INFO flags: "write", "readonly", "denyoom", "fast", "admin", "noscript",
    /// "loading", "stale", "no_auth", "no_multi", …
    pub flags: &'static [&'static str],
    /// Position of the first key argument (0: none).
    pub first_key: i32,
    /// Position of the last key argument (-1: the last argument).
    pub last_key: i32,
    /// Step between key arguments.
    pub step: i32,
    /// ACL categories without the `@`: "keyspace", "read", "write", "string", "fast", …
    pub acl_categories: &'static [&'static str],
    /// One line for COMMAND DOCS.
    pub summary: &'static str,
    /// Redis version that introduced it, for COMMAND DOCS.
    pub since: &'static str,
    /// Argument syntax as Redis' documentation writes it (`key value [NX|XX]`), for COMMAND
    /// DOCS and the hints redis-cli shows while typing (`docs.rs` parses it). Every command
    /// sets it with [`CommandSpec::syntax`]; a test checks none is missing.
    pub syntax: Option<&'static str>,
    /// The handler.
    pub handler: Handler,
}

impl CommandSpec {
    /// True if the spec has `flag`.
    pub(crate) fn has_flag(&self, flag: &str) -> bool {
        self.flags.contains(&flag)
    }

    /// The spec with its argument syntax (see the field).
    pub(crate) const fn syntax(mut self, syntax: &'static str) -> CommandSpec {
        self.syntax = Some(syntax);
        self
    }

    /// What data it touches: named keys when the spec names key positions, whole databases
    /// when it reads or writes data without naming keys, else none.
    pub(crate) fn access(&self) -> Access {
        if self.first_key > 0 {
            Access::Keys
        } else if self.has_flag("write") || self.has_flag("readonly") {
            Access::Global
        } else {
            Access::None
        }
    }

    /// The key arguments of a request by the spec's first/last/step.
    pub(crate) fn keys<'a>(&self, args: &'a [Bytes]) -> impl Iterator<Item = &'a Bytes> {
        let first = self.first_key as i64;
        let last = if self.last_key < 0 {
            args.len() as i64 + self.last_key as i64
        } else {
            self.last_key as i64
        };
        let step = self.step.max(1) as usize;
        let range = if first > 0 && last >= first {
            first as usize..(last as usize + 1).min(args.len())
        } else {
            0..0
        };
        range.step_by(step).map(move |i| &args[i])
    }

    fn arity_ok(&self, argc: usize) -> bool {
        let argc = argc as i64;
        let arity = i64::from(self.arity);
        if arity >= 0 {
            argc == arity
        } else {
            argc >= -arity
        }
    }
}

/// Everything a handler may use while it runs.
pub(crate) struct Ctx<'a> {
    /// Shared server state (config, clients, stats).
    pub server: &'a Arc<Server>,
    /// The data, for what is not an operation of the data path (WATCH versions, SCAN, whole
    /// databases, statistics).
    pub keyspace: &'a Keyspace,
    /// Where operations run ([`Ctx::run`]): the local store, or the cluster coordinator.
    pub data: &'a dyn DataPath,
    /// The calling connection.
    pub client: &'a mut Client,
    /// Wall-clock time of this command, Unix ms.
    pub now_ms: u64,
    /// Highest engine sequence this command wrote; synced before the reply is sent.
    pub last_write_seq: u64,
    /// Set by a handler whose reply must wait (see [`Deferred`]); never inside EXEC, where
    /// waits do not wait (as Redis denies blocking inside MULTI).
    pub deferred: Option<Deferred>,
    /// Bytes of reply data counted so far by [`Ctx::reply_bytes`].
    pub reply_bytes: usize,
}

impl<'a> Ctx<'a> {
    /// Selected logical database.
    pub(crate) fn db(&self) -> usize {
        self.client.db()
    }

    /// Protocol version of the reply.
    pub(crate) fn resp(&self) -> RespVersion {
        self.client.resp()
    }

    /// Notes a write at `seq` (0 = nothing written).
    pub(crate) fn wrote(&mut self, seq: u64) {
        self.last_write_seq = self.last_write_seq.max(seq);
    }

    /// See [`Keyspace::lock_keys`].
    pub(crate) fn lock_keys(&self, keys: &[&[u8]]) -> KeyGuard<'a> {
        self.keyspace.lock_keys(keys)
    }

    /// See [`Keyspace::get_string`].
    pub(crate) fn get_string(&self, key: &[u8]) -> CmdResult<Option<StrValue>> {
        Ok(self.keyspace.get_string(self.db(), key)?)
    }

    /// See [`Keyspace::set_string`].
    pub(crate) fn set_string(
        &mut self,
        key: &[u8],
        data: &[u8],
        expires_at_ms: Option<u64>,
    ) -> CmdResult<u64> {
        let seq = self
            .keyspace
            .set_string(self.db(), key, data, expires_at_ms)?;
        self.wrote(seq);
        Ok(seq)
    }

    /// See [`Keyspace::delete`].
    pub(crate) fn delete(&mut self, key: &[u8]) -> CmdResult<bool> {
        Ok(self.keyspace.delete(self.db(), key)?)
    }

    /// Counts `bytes` more of the reply being built. Once the reply passes
    /// `client-output-buffer-limit`, the command stops building it: the client gets an error
    /// and is closed, as Redis closes a client past its hard limit, before the reply is in
    /// memory (`MGET big big …` would otherwise build gigabytes first). Commands whose reply
    /// grows with their arguments or the data (MGET, KEYS, RANGE) call it per element.
    pub(crate) fn reply_bytes(&mut self, bytes: usize) -> CmdResult<()> {
        self.reply_bytes = self.reply_bytes.saturating_add(bytes);
        if self.reply_bytes <= OUTPUT_CHECK_BYTES_MIN {
            return Ok(());
        }
        let limit = self.output_bytes_max();
        if limit == 0 || self.reply_bytes <= limit {
            return Ok(());
        }
        Err(self.output_limit_passed())
    }

    /// `client-output-buffer-limit` (0: none).
    pub(crate) fn output_bytes_max(&self) -> usize {
        self.server.config.read().output_buffer_bytes_max
    }

    /// Marks the client to be closed after this reply, counts it, and returns the error.
    fn output_limit_passed(&mut self) -> errors::CmdError {
        self.client.close_after_reply = true;
        self.server
            .metrics
            .output_limit_disconnects
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            client = self.client.id(),
            bytes = self.reply_bytes,
            limit = self.output_bytes_max(),
            "reply passes client-output-buffer-limit; closing the client"
        );
        errors::CmdError::OutputLimit
    }

    /// Runs `op` on the selected database through the data path, then `then` on its result:
    /// at once when the data path answers at once (the single node), or as a deferred reply
    /// when it answers later (the cluster coordinator), so no worker waits for it. Inside EXEC
    /// a data path must answer at once (docs/architecture.md).
    pub(crate) fn run(
        &mut self,
        op: Op,
        then: impl FnOnce(Done) -> CmdResult<Frame> + Send + 'static,
    ) -> Frame {
        let pending = if self.client.in_exec {
            // EXEC runs its queue off the workers (`exec.rs`) with its keys locked on this
            // thread: each operation runs here, so the queue stays one isolated unit.
            Pending::Ready(self.data.run_in_place(self.db(), op))
        } else {
            self.data.run(self.db(), op)
        };
        match pending {
            Pending::Ready(Err(errors::CmdError::OutputLimit)) => {
                self.output_limit_passed().into_frame()
            }
            Pending::Ready(result) => reply(result.and_then(then)),
            Pending::Later(later) => self.defer(async move { reply(later.await.and_then(then)) }),
        }
    }

    /// Answers later with what `reply` yields; see [`Deferred`]. Returns the placeholder the
    /// handler returns meanwhile (never sent).
    pub(crate) fn defer(&mut self, reply: impl Future<Output = Frame> + Send + 'static) -> Frame {
        debug_assert!(!self.client.in_exec, "no deferred replies inside EXEC");
        self.deferred = Some(Box::pin(reply));
        Frame::Null
    }

    /// NOPERM unless the connection's user may access `key`: for keys a command reaches that
    /// its spec does not name (RANGE's results, DEBUG OBJECT).
    pub(crate) fn check_key(&mut self, key: &[u8]) -> CmdResult<()> {
        if self.server.acl.key_allowed(&mut self.client.acl, key) {
            Ok(())
        } else {
            self.server
                .metrics
                .acl_denials
                .fetch_add(1, Ordering::Relaxed);
            Err(errors::CmdError::msg(crate::acl::denied_text(
                crate::acl::Denied::Key,
                &self.client.acl.user,
                "",
            )))
        }
    }

    /// Largest string value allowed (`proto-max-bulk-len`).
    pub(crate) fn string_bytes_max(&self) -> usize {
        self.server.config.read().proto_max_bulk_len
    }
}

/// The command table, built once.
pub(crate) struct Registry {
    specs: Vec<&'static CommandSpec>,
    by_name: HashMap<&'static [u8], usize>,
}

impl Registry {
    /// Number of commands.
    pub(crate) fn len(&self) -> usize {
        self.specs.len()
    }

    /// Every command with its index.
    pub(crate) fn specs(&self) -> &[&'static CommandSpec] {
        &self.specs
    }

    /// Looks a command up by name, any case.
    pub(crate) fn lookup(&self, name: &[u8]) -> Option<(usize, &'static CommandSpec)> {
        const NAME_BYTES_MAX: usize = 32;
        if name.len() > NAME_BYTES_MAX {
            return None;
        }
        let mut lower = [0u8; NAME_BYTES_MAX];
        for (out, byte) in lower.iter_mut().zip(name) {
            *out = byte.to_ascii_lowercase();
        }
        let index = *self.by_name.get(&lower[..name.len()])?;
        Some((index, self.specs[index]))
    }
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let families: &[&[CommandSpec]] = &[
        string::COMMANDS,
        bitmap::COMMANDS,
        keyspace::COMMANDS,
        ttl::COMMANDS,
        connection::COMMANDS,
        server::COMMANDS,
        transaction::COMMANDS,
        replication::COMMANDS,
        cluster::COMMANDS,
        acl::COMMANDS,
        slowlog::COMMANDS,
    ];
    let mut specs = Vec::new();
    let mut by_name = HashMap::new();
    for family in families {
        for spec in family.iter() {
            assert_eq!(
                spec.name,
                spec.name.to_ascii_lowercase(),
                "command names are lower case"
            );
            let previous = by_name.insert(spec.name.as_bytes(), specs.len());
            assert!(previous.is_none(), "command {} registered twice", spec.name);
            specs.push(spec);
        }
    }
    Registry { specs, by_name }
});

/// The command table.
pub(crate) fn registry() -> &'static Registry {
    &REGISTRY
}

/// Hands the command table to the services below (ACL, metrics): see `crate::catalog`.
pub(crate) fn install_catalog() {
    crate::catalog::install(registry());
}

impl crate::catalog::Catalog for Registry {
    fn len(&self) -> usize {
        self.specs.len()
    }

    fn name(&self, index: usize) -> &'static str {
        self.specs[index].name
    }

    fn categories(&self, index: usize) -> &'static [&'static str] {
        self.specs[index].acl_categories
    }

    fn index_of(&self, name: &[u8]) -> Option<usize> {
        self.lookup(name).map(|(index, _)| index)
    }
}

/// Commands run at once inside MULTI instead of being queued.
fn runs_inside_multi(name: &str) -> bool {
    matches!(
        name,
        "exec" | "discard" | "multi" | "watch" | "quit" | "reset"
    )
}

/// Commands allowed before AUTH.
fn allowed_without_auth(spec: &CommandSpec) -> bool {
    spec.has_flag("no_auth")
}

/// `ERR unknown command 'name', with args beginning with: 'a' 'b' ` as Redis words it.
fn unknown_command(args: &[Bytes]) -> String {
    let mut listed = String::new();
    for arg in &args[1..] {
        if listed.len() >= 128 {
            break;
        }
        let room = 128 - listed.len();
        listed.push('\'');
        listed.push_str(&errors::printable(arg, room));
        listed.push_str("' ");
    }
    format!(
        "ERR unknown command '{}', with args beginning with: {}",
        errors::printable(&args[0], 128),
        listed
    )
}

/// Most commands one MULTI may queue. Each holds its arguments until EXEC; together with the
/// byte bound (`client-query-buffer-limit`) this caps what one client can park in memory.
pub(crate) const MULTI_QUEUE_COMMANDS_MAX: usize = 1_000_000;

/// What [`admit`] decided for a request.
pub(crate) enum Admission {
    /// Answered already (refused, or queued inside MULTI), or nothing to answer (an empty
    /// inline line, which Redis ignores).
    Done(Option<Frame>),
    /// To run, by the executor (`exec.rs`): the spec's index in the table, the spec, the
    /// arguments.
    Run(usize, &'static CommandSpec, Vec<Bytes>),
}

/// Looks a request up and checks arity, authentication, permissions, replica writes and
/// MULTI state, queueing it inside MULTI. Running it is the executor's (`exec.rs`).
pub(crate) fn admit(server: &Server, client: &mut Client, args: Vec<Bytes>) -> Admission {
    use Admission::Done;
    if args.is_empty() {
        return Done(None);
    }
    server
        .stats
        .total_commands_processed
        .fetch_add(1, Ordering::Relaxed);
    let Some((index, spec)) = registry().lookup(&args[0]) else {
        return Done(Some(reject(server, client, None, unknown_command(&args))));
    };
    if !spec.arity_ok(args.len()) {
        let text = errors::wrong_arity(spec.name);
        return Done(Some(reject(server, client, Some(index), text)));
    }
    if !client.authenticated && !allowed_without_auth(spec) {
        let text = errors::NOAUTH.to_string();
        return Done(Some(reject(server, client, Some(index), text)));
    }
    if let Some(refused) = guard(server, client, index, spec, &args) {
        return Done(Some(reject(server, client, Some(index), refused)));
    }
    if spec.has_flag("write") {
        if let Some(refused) = crate::replication::write_refusal(server) {
            let text = refused.to_string();
            return Done(Some(reject(server, client, Some(index), text)));
        }
    }
    {
        let mut info = client.handle.info.lock();
        info.last_command = Instant::now();
        if info.last_command_name != spec.name {
            info.last_command_name = spec.name.to_string();
        }
    }
    if client.multi.is_some() && !runs_inside_multi(spec.name) {
        if spec.has_flag("no_multi") {
            let text = "ERR Command not allowed inside a transaction".to_string();
            return Done(Some(reject(server, client, Some(index), text)));
        }
        let bytes: usize = args.iter().map(Bytes::len).sum();
        let bytes_max = server.config.read().query_buffer_bytes_max;
        let queued = client.multi.as_ref().map_or(0, Vec::len);
        if queued >= MULTI_QUEUE_COMMANDS_MAX || client.multi_bytes + bytes > bytes_max {
            let text = format!(
                "ERR MULTI queue is full ({MULTI_QUEUE_COMMANDS_MAX} commands or \
                 client-query-buffer-limit bytes); the transaction is discarded at EXEC"
            );
            return Done(Some(reject(server, client, Some(index), text)));
        }
        client.multi_bytes += bytes;
        let queue = client.multi.as_mut().expect("checked");
        queue.push(args);
        client.handle.info.lock().multi = queue.len() as i64;
        return Done(Some(Frame::simple("QUEUED")));
    }
    Admission::Run(index, spec, args)
}

/// ACL permissions and `maxmemory`: the error text if the command may not run.
fn guard(
    server: &Server,
    client: &mut Client,
    index: usize,
    spec: &CommandSpec,
    args: &[Bytes],
) -> Option<String> {
    if let Err(denied) = server
        .acl
        .check(&mut client.acl, index, args, spec.keys(args))
    {
        server.metrics.acl_denials.fetch_add(1, Ordering::Relaxed);
        return Some(crate::acl::denied_text(denied, &client.acl.user, spec.name));
    }
    if spec.has_flag("denyoom") && crate::metrics::over_maxmemory(server) {
        server
            .metrics
            .oom_rejections
            .fetch_add(1, Ordering::Relaxed);
        return Some(crate::metrics::OOM.to_string());
    }
    None
}

fn reject(server: &Server, client: &mut Client, index: Option<usize>, text: String) -> Frame {
    if let Some(index) = index {
        server.command_stats[index]
            .rejected_calls
            .fetch_add(1, Ordering::Relaxed);
    }
    server
        .stats
        .total_error_replies
        .fetch_add(1, Ordering::Relaxed);
    if client.multi.is_some() {
        client.multi_failed = true;
    }
    Frame::error(text)
}

/// Commands refused in cluster mode: whole-database and multi-key moves over one node's
/// store, and transactions.
const CLUSTER_REFUSED: &[&str] = &[
    "rename", "renamenx", "copy", "move", "swapdb", "bitop", "flushdb", "flushall", "multi",
    "exec", "watch",
];

/// Calls the handler, with statistics and the write bookkeeping; the executor took what locks
/// the command needs. Returns the reply, or the placeholder and the [`Deferred`] reply.
pub(crate) fn invoke(
    server: &Arc<Server>,
    client: &mut Client,
    index: usize,
    spec: &CommandSpec,
    args: &[Bytes],
) -> (Frame, Option<Deferred>) {
    invoke_with(server, client, index, spec, args, None)
}

/// [`invoke`] on the data path `data`: a write run's batch (`exec.rs`), whose operations
/// answer at once.
pub(crate) fn invoke_on(
    server: &Arc<Server>,
    client: &mut Client,
    index: usize,
    spec: &CommandSpec,
    args: &[Bytes],
    data: &dyn DataPath,
) -> Frame {
    let (reply, deferred) = invoke_with(server, client, index, spec, args, Some(data));
    debug_assert!(deferred.is_none(), "{} deferred in a write run", spec.name);
    reply
}

fn invoke_with(
    server: &Arc<Server>,
    client: &mut Client,
    index: usize,
    spec: &CommandSpec,
    args: &[Bytes],
    given: Option<&dyn DataPath>,
) -> (Frame, Option<Deferred>) {
    let started = Instant::now();
    let keyspace = &server.keyspace;
    let local = Local(keyspace);
    let spawned;
    let coordinated;
    let data: &dyn DataPath = if let Some(given) = given {
        given
    } else if let Some(node) = server.cluster.get() {
        coordinated = crate::cluster::Coordinated::new(server, client, node.clone());
        &coordinated
    } else if server.deferred_data_path.load(Ordering::Relaxed) {
        spawned = Spawned(keyspace.clone());
        &spawned
    } else {
        &local
    };
    let mut ctx = Ctx {
        server,
        keyspace,
        data,
        now_ms: keyspace.now_ms(),
        client,
        last_write_seq: 0,
        deferred: None,
        reply_bytes: 0,
    };
    let reply = if server.cluster.get().is_some() && CLUSTER_REFUSED.contains(&spec.name) {
        // They act on one node's store, which in cluster mode holds versioned records of
        // some slots only: refused rather than half-done (docs/cluster.md, "What is atomic").
        Frame::error(format!(
            "ERR {} is not supported in cluster mode yet (docs/cluster.md)",
            spec.name.to_ascii_uppercase()
        ))
    } else {
        (spec.handler)(&mut ctx, args)
    };
    let deferred = ctx.deferred.take();
    let deferred = deferred.map(|later| {
        // The statistics of a deferred reply are taken when it completes, so SLOWLOG and
        // LATENCY show how long the client waited (DEBUG SLEEP 1 is a one-second command).
        let server = server.clone();
        let args = args.to_vec();
        let peer = peer(ctx.client);
        Box::pin(async move {
            let reply = later.await;
            let elapsed = started.elapsed();
            record_timing(&server, index, &args, elapsed, || peer);
            reply
        }) as Deferred
    });
    // An error reply acknowledges no write, so it waits for no sync: a client refused with
    // -MISCONF after a failed fsync keeps its connection, as in Redis, instead of having it
    // closed by a sync of other clients' writes that can no longer succeed.
    let failed = matches!(reply, Frame::Error(_));
    if spec.has_flag("write") && !failed {
        ctx.wrote(keyspace.last_written_sequence());
    }
    let seq = ctx.last_write_seq;
    client.pending_sync_seq = client.pending_sync_seq.max(seq);
    count_call(server, index, failed);
    if deferred.is_none() {
        record_timing(server, index, args, started.elapsed(), || peer(client));
    }
    (reply, deferred)
}

/// Counts one call of command `index` (INFO commandstats, errorstats).
fn count_call(server: &Server, index: usize, failed: bool) {
    server.command_stats[index]
        .calls
        .fetch_add(1, Ordering::Relaxed);
    if failed {
        count_failure(server, index);
    }
}

/// Counts as failed a call [`invoke_on`] counted as a success: a write run's command whose
/// batch then failed to commit (`exec.rs`).
pub(crate) fn count_failure(server: &Server, index: usize) {
    server.command_stats[index]
        .failed_calls
        .fetch_add(1, Ordering::Relaxed);
    server
        .stats
        .total_error_replies
        .fetch_add(1, Ordering::Relaxed);
}

/// Takes back the counts of a call that is run again (`exec.rs`: a write the engine refused
/// to wait for on a worker thread), so it counts once.
pub(crate) fn uncount(server: &Server, index: usize, failed: bool) {
    let stats = &server.command_stats[index];
    stats.calls.fetch_sub(1, Ordering::Relaxed);
    if failed {
        stats.failed_calls.fetch_sub(1, Ordering::Relaxed);
        server
            .stats
            .total_error_replies
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// The client's address and name, as SLOWLOG keeps them.
fn peer(client: &Client) -> (String, Bytes) {
    let info = client.handle.info.lock();
    (info.addr.to_string(), info.name.clone())
}

/// Adds one call's time to INFO commandstats, the latency histogram, SLOWLOG and LATENCY.
fn record_timing(
    server: &Server,
    index: usize,
    args: &[Bytes],
    elapsed: std::time::Duration,
    client: impl FnOnce() -> (String, Bytes),
) {
    server.command_stats[index]
        .usec
        .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    server.metrics.command_latency[index].observe(elapsed);
    server.slowlog.observe(elapsed, args, client);
}

/// Looks up and runs a queued command inside EXEC (arity was checked when it was queued).
/// Inside EXEC nothing defers (`Client::in_exec`).
pub(crate) fn invoke_queued(server: &Arc<Server>, client: &mut Client, args: &[Bytes]) -> Frame {
    match registry().lookup(&args[0]) {
        Some((index, spec)) => {
            let (reply, deferred) = invoke(server, client, index, spec, args);
            debug_assert!(deferred.is_none(), "{} deferred inside EXEC", spec.name);
            reply
        }
        None => Frame::error(unknown_command(args)),
    }
}

/// Shorthand for a spec in a family table.
#[allow(clippy::too_many_arguments)]
pub(crate) const fn spec(
    name: &'static str,
    arity: i32,
    flags: &'static [&'static str],
    first_key: i32,
    last_key: i32,
    step: i32,
    acl_categories: &'static [&'static str],
    summary: &'static str,
    since: &'static str,
    handler: Handler,
) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        flags,
        first_key,
        last_key,
        step,
        acl_categories,
        summary,
        since,
        syntax: None,
        handler,
    }
}

/// `Ok(frame)` or the error's frame.
pub(crate) fn reply(result: CmdResult<Frame>) -> Frame {
    result.unwrap_or_else(crate::errors::CmdError::into_frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_has_unique_lower_case_names() {
        let registry = registry();
        assert!(registry.len() > 0);
        assert!(registry.lookup(b"PiNg").is_some());
        assert!(registry.lookup(b"nosuchcommand").is_none());
    }

    #[test]
    fn unknown_command_text_matches_redis() {
        let args = vec![
            Bytes::from_static(b"foo"),
            Bytes::from_static(b"a"),
            Bytes::from_static(b"b"),
        ];
        assert_eq!(
            unknown_command(&args),
            "ERR unknown command 'foo', with args beginning with: 'a' 'b' "
        );
        let args = vec![Bytes::from_static(b"foo")];
        assert_eq!(
            unknown_command(&args),
            "ERR unknown command 'foo', with args beginning with: "
        );
    }
}
