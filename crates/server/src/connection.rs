//! One client connection: read bytes, parse every complete request, run
//! them, make their writes durable with one sync, answer with one write.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use ringkv_engine::FsyncPolicy;
use ringkv_protocol::{Frame, Limits, RequestParser};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::client::Client;
use crate::exec::{self, Outcome};
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
    let mut output = BytesMut::with_capacity(INPUT_BUFFER_BYTES);
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
        let output_bytes_max = server.config.read().output_buffer_bytes_max;
        // Write out before the limit is reached, so only a single over-large reply trips it.
        let flush_bytes = match output_bytes_max {
            0 => OUTPUT_FLUSH_BYTES,
            limit => OUTPUT_FLUSH_BYTES.min(limit),
        };
        let mut close = false;
        loop {
            match parser.parse(&mut input, &limits) {
                Ok(Some(args)) => {
                    let reply = match exec::execute(&server, &mut client, args).await {
                        Outcome::Nothing => None,
                        Outcome::Now(reply) => Some(reply),
                        Outcome::Later(later) => {
                            // A wait (WAIT, DEBUG SLEEP): it holds no lock; a kill ends it
                            // with the connection, and so does a shutdown once its grace
                            // period is over (`Bound::serve` aborts what is left), so a
                            // command in flight still gets its reply when it ends in time.
                            tokio::select! {
                                reply = later => Some(reply),
                                _ = handle.kill.notified() => return,
                            }
                        }
                    };
                    if let Some(reply) = reply {
                        if !client.no_reply {
                            reply.encode(client.resp(), &mut output);
                        }
                    }
                    if client.close_after_reply || client.handoff.is_some() {
                        close = true;
                        break;
                    }
                    if output_bytes_max > 0 && output.len() > output_bytes_max {
                        // A reply (or a pipeline of them) larger than the limit: Redis' hard
                        // `client-output-buffer-limit` closes such a client rather than hold it.
                        server
                            .metrics
                            .output_limit_disconnects
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            client = handle.id,
                            bytes = output.len(),
                            "closing client that exceeded the output buffer limit"
                        );
                        return;
                    }
                    if output.len() >= flush_bytes
                        && !flush(&server, &mut client, &mut writer, &mut output, always).await
                    {
                        return;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    // The stream cannot be resynchronised: answer and close, as Redis does.
                    server
                        .stats
                        .total_error_replies
                        .fetch_add(1, Ordering::Relaxed);
                    Frame::error(format!("ERR {error}")).encode(client.resp(), &mut output);
                    close = true;
                    break;
                }
            }
        }
        if !flush(&server, &mut client, &mut writer, &mut output, always).await || close {
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
        let synced = if always || engine.fsync_policy() == FsyncPolicy::Always {
            tokio::task::spawn_blocking(move || engine.sync(seq))
                .await
                .unwrap_or_else(|e| {
                    Err(ringkv_engine::Error::Poisoned {
                        reason: e.to_string(),
                    })
                })
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
