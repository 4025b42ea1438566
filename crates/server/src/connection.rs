//! One client connection: read bytes, parse every complete request, run
//! them, make their writes durable with one sync, answer with one write.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::{FuturesOrdered, StreamExt};
use ringkv_engine::FsyncPolicy;
use ringkv_protocol::{Frame, Limits, RequestParser};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::client::Client;
use crate::cmd::{self, Access, Deferred};
use crate::exec::{self, Outcome, WriteRun};
use crate::server::{ClientHandle, Server};

/// Replies buffered before they are written out even if more requests are waiting, so a long
/// pipeline of large replies does not hold them all in memory.
const OUTPUT_FLUSH_BYTES: usize = 4 << 20;

/// A buffer this large, once freed, is worth giving back to the OS (`memory.rs`).
const LARGE_BUFFER_BYTES: usize = 1 << 20;

/// Initial size of the input buffer; it grows as requests need.
const INPUT_BUFFER_BYTES: usize = 16 * 1024;

/// Removes the client from the server's table however the task ends.
struct Registration {
    server: Arc<Server>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.server.clients.lock().remove(&self.id);
    }
}

/// Serves one connection (plain TCP or TLS) until the client leaves, is killed, errs, idles past
/// `timeout`, or the server stops.
pub(crate) async fn serve<S>(server: Arc<Server>, stream: S, handle: Arc<ClientHandle>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _registration = Registration {
        server: server.clone(),
        id: handle.id,
    };
    let authenticated = server.acl.default_is_open();
    let always = server.config.read().appendfsync == FsyncPolicy::Always;
    let mut client = Client::new(handle.clone(), authenticated);
    let mut shutdown = server.shutdown.subscribe();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut input = BytesMut::with_capacity(INPUT_BUFFER_BYTES);
    // Keeps a request's progress between reads, so one trickled in small pieces costs work
    // linear in its size (not a re-parse from its start at every read).
    let mut parser = RequestParser::new();
    let mut out = Output {
        server: server.clone(),
        buffer: BytesMut::with_capacity(INPUT_BUFFER_BYTES),
        bytes_max: 0,
        flush_bytes: OUTPUT_FLUSH_BYTES,
        always,
    };
    // Cluster mode: a pipeline's data commands on distinct keys run at once (`Pipeline`).
    let concurrent = server.cluster.get().is_some();
    let mut pipeline = Pipeline::default();
    // Single node: consecutive plain SETs and INCRs run as one write (`exec::WriteRun`).
    let mut run = WriteRun::default();
    loop {
        // Read in large steps: a big bulk argument arrives in few reads, not 64-byte ones.
        if input.capacity() - input.len() < INPUT_BUFFER_BYTES / 2 {
            input.reserve(INPUT_BUFFER_BYTES * 4);
        }
        let idle_seconds_max = server.config.read().timeout_seconds;
        let idle = async {
            if idle_seconds_max == 0 {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(std::time::Duration::from_secs(idle_seconds_max)).await;
        };
        let read = tokio::select! {
            read = reader.read_buf(&mut input) => read,
            _ = handle.kill.notified() => break,
            _ = shutdown.wait_for(|stop| *stop) => break,
            () = idle => {
                server.metrics.idle_disconnects.fetch_add(1, Ordering::Relaxed);
                tracing::info!(client = handle.id, seconds = idle_seconds_max, "closing idle client");
                break;
            }
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                server
                    .stats
                    .total_net_input_bytes
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        if handle.killed.load(Ordering::Acquire) {
            break;
        }
        // Read each batch, so CONFIG SET proto-max-bulk-len / client-query-buffer-limit apply to
        // connections already open.
        let (limits, query_buffer_bytes_max) = current_limits(&server);
        out.bytes_max = server.config.read().output_buffer_bytes_max;
        // Write out before the limit is reached, so only a single over-large reply trips it.
        out.flush_bytes = match out.bytes_max {
            0 => OUTPUT_FLUSH_BYTES,
            limit => OUTPUT_FLUSH_BYTES.min(limit),
        };
        let mut close = false;
        loop {
            match parser.parse(&mut input, &limits) {
                Ok(Some(args)) => {
                    let (keys, outcome) = if concurrent {
                        if !pipeline.admits(&args)
                            && !pipeline
                                .drain(&mut out, &mut client, &mut writer, &handle)
                                .await
                        {
                            return;
                        }
                        let keys = pipeline.keys_of(&args);
                        (keys, exec::execute(&server, &mut client, args).await)
                    } else {
                        // A plain SET or an INCR joins the write run; anything else runs after it.
                        let admission = cmd::admit(&server, &mut client, args);
                        let Some(admission) = run.join(&server, &client, admission) else {
                            if run.is_full()
                                && !commit_run(
                                    &server,
                                    &mut client,
                                    &mut run,
                                    &mut out,
                                    &mut writer,
                                )
                                .await
                            {
                                return;
                            }
                            continue;
                        };
                        if !commit_run(&server, &mut client, &mut run, &mut out, &mut writer).await
                        {
                            return;
                        }
                        if matches!(&admission, cmd::Admission::Run(_, spec, _)
                            if spec.access() == Access::Global || spec.name == "exec")
                        {
                            own_writes_visible(&server, &client).await;
                        }
                        let outcome = exec::execute_admitted(&server, &mut client, admission).await;
                        (Vec::new(), outcome)
                    };
                    let silent = client.no_reply;
                    match outcome {
                        Outcome::Nothing => {}
                        Outcome::Now(reply) if pipeline.is_empty() => {
                            if !out.deliver(&mut client, &mut writer, reply, silent).await {
                                return;
                            }
                        }
                        Outcome::Now(reply) => {
                            pipeline.push(Vec::new(), silent, Box::pin(std::future::ready(reply)));
                        }
                        // A keyed data command joins the pipeline; a keyless wait (it found
                        // the pipeline drained: `admits`) is awaited alone, below.
                        Outcome::Later(later) if !keys.is_empty() => {
                            pipeline.push(keys, silent, later);
                        }
                        Outcome::Later(later) => {
                            // A wait (WAIT, DEBUG SLEEP): it holds no lock; a kill ends it
                            // with the connection, and so does a shutdown once its grace
                            // period is over (`Bound::serve` aborts what is left), so a
                            // command in flight still gets its reply when it ends in time.
                            let reply = tokio::select! {
                                reply = later => reply,
                                _ = handle.kill.notified() => return,
                            };
                            if !out.deliver(&mut client, &mut writer, reply, silent).await {
                                return;
                            }
                        }
                    }
                    if client.close_after_reply || client.handoff.is_some() {
                        close = true;
                        break;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    if !commit_run(&server, &mut client, &mut run, &mut out, &mut writer).await {
                        return;
                    }
                    // The stream cannot be resynchronised: answer and close, as Redis does.
                    server
                        .stats
                        .total_error_replies
                        .fetch_add(1, Ordering::Relaxed);
                    let reply = Frame::error(format!("ERR {error}"));
                    if !pipeline.is_empty() {
                        pipeline.push(Vec::new(), false, Box::pin(std::future::ready(reply)));
                    } else if !out.deliver(&mut client, &mut writer, reply, false).await {
                        return;
                    }
                    close = true;
                    break;
                }
            }
        }
        if !commit_run(&server, &mut client, &mut run, &mut out, &mut writer).await {
            return;
        }
        if !pipeline
            .drain(&mut out, &mut client, &mut writer, &handle)
            .await
        {
            return;
        }
        let output = &mut out.buffer;
        if !flush(&server, &mut client, &mut writer, output, always).await || close {
            if let Some(handoff) = client.handoff.take() {
                debug_assert!(parser.is_idle(), "PSYNC was a whole request");
                // PSYNC: the connection now carries the replication stream.
                crate::replication::leader::serve(
                    server.clone(),
                    reader,
                    writer,
                    input,
                    handoff,
                    handle.id,
                )
                .await;
                return;
            }
            break;
        }
        // What the parser holds of a request in progress counts too.
        let buffered = input.len() + parser.pending_bytes();
        if buffered > query_buffer_bytes_max {
            tracing::warn!(
                client = handle.id,
                bytes = buffered,
                "closing client that exceeded the query buffer limit"
            );
            break;
        }
        if input.capacity() > 4 * INPUT_BUFFER_BYTES && input.is_empty() {
            let large = input.capacity() >= LARGE_BUFFER_BYTES;
            input = BytesMut::with_capacity(INPUT_BUFFER_BYTES);
            if large {
                crate::memory::large_buffer_released();
            }
        }
    }
    let _ = writer.shutdown().await;
}

/// Under `always`, waits until this connection's writes are fsynced, so visible: before a
/// command that reads beyond named keys (SCAN, KEYS, RANGE, DBSIZE, …) or an EXEC, which
/// read the published view. A read of a named key needs no wait here: the engine makes a
/// read of a key whose write waits for its fsync wait for it too (docs/durability.md,
/// "Group commit without a thread per writer"). A failed fsync is answered where the
/// replies are written out ([`flush`]).
async fn own_writes_visible(server: &Server, client: &Client) {
    let seq = client.pending_sync_seq;
    if seq == 0 {
        return;
    }
    let engine = server.keyspace.engine();
    if engine.fsync_policy() == FsyncPolicy::Always && !engine.is_synced(seq) {
        let _ = engine.synced(seq).await;
    }
}

/// Runs the write run, if it holds any command, and delivers each command's reply. False if the
/// connection must close.
async fn commit_run<W: AsyncWrite + Unpin>(
    server: &Arc<Server>,
    client: &mut Client,
    run: &mut WriteRun,
    out: &mut Output,
    writer: &mut W,
) -> bool {
    if run.is_empty() {
        return true;
    }
    for reply in run.commit(server, client).await {
        if !out.deliver(client, writer, reply, false).await {
            return false;
        }
    }
    true
}

/// Where a connection's replies collect before they are written out.
struct Output {
    server: Arc<Server>,
    buffer: BytesMut,
    /// `client-output-buffer-limit` (0: none), read once per batch.
    bytes_max: usize,
    /// Written out once this much is buffered.
    flush_bytes: usize,
    always: bool,
}

impl Output {
    /// Adds one reply (unless the client silenced it), closing a client past the output
    /// limit and writing out a large buffer. False if the connection must close.
    async fn deliver<W: AsyncWrite + Unpin>(
        &mut self,
        client: &mut Client,
        writer: &mut W,
        reply: Frame,
        silent: bool,
    ) -> bool {
        if !silent {
            reply.encode(client.resp(), &mut self.buffer);
        }
        if self.bytes_max > 0 && self.buffer.len() > self.bytes_max {
            // A reply (or a pipeline of them) larger than the limit: Redis' hard
            // `client-output-buffer-limit` closes such a client rather than hold it.
            self.server
                .metrics
                .output_limit_disconnects
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                client = client.handle.id,
                bytes = self.buffer.len(),
                "closing client that exceeded the output buffer limit"
            );
            return false;
        }
        self.buffer.len() < self.flush_bytes
            || flush(&self.server, client, writer, &mut self.buffer, self.always).await
    }
}

/// Pipelined requests in flight at once, replies in request order (cluster mode, where each
/// data command waits on replicas: one connection's pipeline would otherwise pay every round
/// trip in turn). A request joins only if it is a data command whose keys no request in
/// flight touches, so commands on one key still run in the order sent; any other request
/// (no keys, whole-database, connection state) waits until those in flight are answered.
/// docs/cluster.md, "Pipelines".
#[derive(Default)]
struct Pipeline {
    running: FuturesOrdered<Deferred>,
    /// Whether each reply, in order, is silenced (CLIENT REPLY OFF when it ran).
    silent: VecDeque<bool>,
    keys: HashSet<Bytes>,
}

/// Requests in flight on one connection at most; the next waits for them.
const PIPELINE_DEPTH_MAX: usize = 256;

impl Pipeline {
    fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// True if `args` may run alongside the requests in flight.
    fn admits(&self, args: &[Bytes]) -> bool {
        if self.is_empty() {
            return true;
        }
        if self.running.len() >= PIPELINE_DEPTH_MAX {
            return false;
        }
        let Some((_, spec)) = args.first().and_then(|name| cmd::registry().lookup(name)) else {
            return false;
        };
        spec.access() == Access::Keys && spec.keys(args).all(|key| !self.keys.contains(key))
    }

    /// The keys `args` names (empty for a command without keys).
    fn keys_of(&self, args: &[Bytes]) -> Vec<Bytes> {
        match args.first().and_then(|name| cmd::registry().lookup(name)) {
            Some((_, spec)) if spec.access() == Access::Keys => spec.keys(args).cloned().collect(),
            _ => Vec::new(),
        }
    }

    fn push(&mut self, keys: Vec<Bytes>, silent: bool, reply: Deferred) {
        self.keys.extend(keys);
        self.silent.push_back(silent);
        self.running.push_back(reply);
    }

    /// Waits for every request in flight and delivers the replies in order. False if the
    /// connection must close (killed, over its output limit, or the write failed).
    async fn drain<W: AsyncWrite + Unpin>(
        &mut self,
        out: &mut Output,
        client: &mut Client,
        writer: &mut W,
        handle: &ClientHandle,
    ) -> bool {
        while !self.running.is_empty() {
            let reply = tokio::select! {
                reply = self.running.next() => reply,
                _ = handle.kill.notified() => return false,
            };
            let Some(reply) = reply else { break };
            let silent = self.silent.pop_front().unwrap_or(false);
            if !out.deliver(client, writer, reply, silent).await {
                return false;
            }
        }
        self.keys.clear();
        true
    }
}

fn current_limits(server: &Server) -> (Limits, usize) {
    let config = server.config.read();
    (
        Limits {
            bulk_bytes_max: config.proto_max_bulk_len,
            args_max: config.args_max,
            inline_bytes_max: ringkv_protocol::INLINE_BYTES_MAX_DEFAULT,
        },
        config.query_buffer_bytes_max,
    )
}

/// Makes the batch's writes durable, then writes the replies. False if the connection must
/// close.
async fn flush<W: AsyncWrite + Unpin>(
    server: &Arc<Server>,
    client: &mut Client,
    writer: &mut W,
    output: &mut BytesMut,
    always: bool,
) -> bool {
    let seq = std::mem::take(&mut client.pending_sync_seq);
    if seq > 0 {
        let engine = server.keyspace.engine();
        // `always` is the policy when the connection opened; CONFIG SET appendfsync may have
        // changed it since (the engine's sync follows the live policy either way).
        let synced = if engine.is_synced(seq) {
            // Under `always` a write made off the worker (EXEC, a stall) returns once its
            // group's fsync covered it.
            Ok(())
        } else if always || engine.fsync_policy() == FsyncPolicy::Always {
            // A write made on the worker waits for its group's fsync here, without a thread:
            // the engine's group-commit thread fsyncs for every connection at once (issue 12;
            // docs/durability.md, "Group commit without a thread per writer").
            engine.synced(seq).await
        } else {
            if !engine.is_synced(seq) {
                // Let the other connections that are ready run their commands first: their WAL
                // records then go out with this one in a single write(2) (whoever syncs first
                // covers the rest), as Redis writes its AOF once per event-loop turn.
                tokio::task::yield_now().await;
            }
            match engine.try_sync(seq) {
                Some(synced) => synced,
                // Another writer's WAL I/O is in progress (a slow fsync under everysec): wait
                // for it on the blocking pool, not on this worker.
                None => tokio::task::spawn_blocking(move || engine.sync(seq))
                    .await
                    .unwrap_or_else(|e| {
                        Err(ringkv_engine::Error::Poisoned {
                            reason: e.to_string(),
                        })
                    }),
            }
        };
        if let Err(error) = synced {
            // The replies promise writes the disk did not take: replace them by the error.
            tracing::error!(%error, "WAL sync failed");
            output.clear();
            crate::errors::engine_error_frame(&error).encode(client.resp(), output);
            let _ = writer.write_all(output).await;
            let _ = writer.flush().await;
            return false;
        }
    }
    if output.is_empty() {
        return true;
    }
    server
        .stats
        .total_net_output_bytes
        .fetch_add(output.len() as u64, Ordering::Relaxed);
    // flush: TLS streams hold records until flushed; for TCP it is free.
    let written = writer.write_all(output).await.is_ok() && writer.flush().await.is_ok();
    output.clear();
    if output.capacity() > OUTPUT_FLUSH_BYTES * 2 {
        *output = BytesMut::with_capacity(INPUT_BUFFER_BYTES);
    }
    written
}
