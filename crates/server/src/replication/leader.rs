//! The leader's side of one replica link: decides partial or full sync for a
//! PSYNC, sends the checkpoint (full sync), then streams change-log batches and
//! reads the replica's acknowledgements.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use ringkv_engine::{Db, LogRead};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::wire;
use super::ReplicaEntry;
use crate::server::Server;

/// Bytes of batches read from the change log per send.
const SEND_BYTES_MAX: usize = 1 << 20;

/// A replica hears from an idle leader at least this often.
const HEARTBEAT_PERIOD: Duration = Duration::from_secs(1);

/// How long one wait for new writes blocks a blocking-pool thread.
const WAIT_STEP: Duration = Duration::from_millis(200);

/// Chunk size when sending checkpoint files.
const FILE_CHUNK_BYTES: usize = 1 << 20;

/// How a PSYNC goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// Partial resync: stream from this sequence.
    Continue(u64),
    /// Full sync: checkpoint first.
    Full,
}

/// What the PSYNC handler hands to the connection, which then calls [`serve`].
#[derive(Debug, Clone)]
pub(crate) struct Handoff {
    pub start: Start,
    pub ip: IpAddr,
    pub port: u16,
}

/// Decides partial or full sync for `PSYNC replid seq` (`seq`: the replica's last applied
/// sequence, `None` for `-1`).
pub(crate) fn decide(server: &Server, replid: &str, seq: Option<u64>) -> Start {
    super::activate_backlog(server);
    let Some(seq) = seq else {
        return Start::Full;
    };
    let engine = server.keyspace.engine();
    let last = engine.last_sequence();
    let ids = server.replication.ids.lock().clone();
    let same_history = replid == ids.replid || (replid == ids.replid2 && seq <= ids.replid2_seq);
    if !same_history || seq > last {
        return Start::Full;
    }
    if seq == last {
        return Start::Continue(seq + 1);
    }
    match engine.read_log(seq + 1, 1) {
        LogRead::Batches(batches) if batches.first().is_some_and(|b| b.first_seq == seq + 1) => {
            Start::Continue(seq + 1)
        }
        _ => Start::Full,
    }
}

/// Removes the replica from the table however the link ends.
struct Registration<'a> {
    server: &'a Server,
    id: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.server.replication.replicas.lock().remove(&self.id);
        self.server.replication.acked.notify_waiters();
    }
}

/// Serves a replica on the connection it opened, after the PSYNC reply went out. `input`
/// holds bytes the connection read past PSYNC.
pub(crate) async fn serve<R, W>(
    server: Arc<Server>,
    reader: R,
    mut writer: W,
    input: BytesMut,
    handoff: Handoff,
    client_id: u64,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let generation = server.replication.generation.load(Ordering::Acquire);
    server.replication.replicas.lock().insert(
        client_id,
        ReplicaEntry {
            ip: handoff.ip,
            port: handoff.port,
            state: "wait_bgsave",
            ack_seq: 0,
            last_ack: Instant::now(),
        },
    );
    let _registration = Registration {
        server: &server,
        id: client_id,
    };
    let closed = Arc::new(AtomicBool::new(false));
    // The highest sequence this link has sent: an acknowledgement past it is not believed (a
    // client that sent PSYNC cannot make WAIT count writes it never received).
    let sent = Arc::new(AtomicU64::new(0));
    let acks = tokio::spawn(read_acks(
        server.clone(),
        reader,
        input,
        client_id,
        closed.clone(),
        sent.clone(),
    ));
    // CLIENT KILL (ID, TYPE replica, …) ends the link as if the replica had closed it.
    let kill_watch = server
        .clients
        .lock()
        .get(&client_id)
        .cloned()
        .map(|handle| {
            let closed = closed.clone();
            tokio::spawn(async move {
                handle.kill.notified().await;
                closed.store(true, Ordering::Release);
            })
        });
    let stop_watch = || {
        if let Some(task) = &kill_watch {
            task.abort();
        }
    };
    let engine = server.keyspace.engine();
    let next = match handoff.start {
        Start::Continue(next) => {
            tracing::info!(replica = %handoff.ip, port = handoff.port, from_seq = next, "partial resync: streaming the change log");
            next
        }
        Start::Full => match send_checkpoint(&server, &engine, &mut writer, client_id, &sent).await
        {
            Ok(seq) => seq + 1,
            Err(error) => {
                tracing::warn!(%error, "full sync to replica failed");
                acks.abort();
                stop_watch();
                return;
            }
        },
    };
    set_state(&server, client_id, "online");
    sent.fetch_max(next.saturating_sub(1), Ordering::AcqRel);
    let result = stream(
        &server,
        &engine,
        &mut writer,
        next,
        generation,
        &closed,
        &sent,
    )
    .await;
    if let Err(error) = result {
        tracing::info!(replica = %handoff.ip, port = handoff.port, %error, "replica link closed");
    }
    acks.abort();
    stop_watch();
    let _ = writer.shutdown().await;
}

fn set_state(server: &Server, client_id: u64, state: &'static str) {
    if let Some(entry) = server.replication.replicas.lock().get_mut(&client_id) {
        entry.state = state;
        entry.last_ack = Instant::now();
    }
}

/// Checkpoints the database next to its directory and sends every file; the checkpoint's
/// sequence.
async fn send_checkpoint<W: AsyncWrite + Unpin>(
    server: &Server,
    engine: &Db,
    writer: &mut W,
    client_id: u64,
    sent: &AtomicU64,
) -> std::io::Result<u64> {
    server.replication.sync_full.fetch_add(1, Ordering::Relaxed);
    // Absolute: the engine syncs the checkpoint's parent directory, and `data` has none.
    let dir = std::path::absolute(engine.path())?;
    // No dot after the directory name: the engine builds its temporary directory with
    // `with_extension`, so two names differing only after a dot would share it.
    let target = PathBuf::from(format!(
        "{}-repl-checkpoint-{client_id}-{}",
        dir.display(),
        std::process::id()
    ));
    let _ = tokio::fs::remove_dir_all(&target).await;
    let checkpointing = engine.clone();
    let at = target.clone();
    let seq = tokio::task::spawn_blocking(move || checkpointing.checkpoint(&at))
        .await
        .map_err(std::io::Error::other)?
        .map_err(std::io::Error::other)?;
    tracing::info!(seq, "full sync: checkpoint made, sending files");
    set_state(server, client_id, "send_bulk");
    let result = send_files(&target, seq, writer, sent).await;
    let _ = tokio::fs::remove_dir_all(&target).await;
    result.map(|bytes| {
        tracing::info!(seq, bytes, "full sync: checkpoint sent");
        seq
    })
}

async fn send_files<W: AsyncWrite + Unpin>(
    dir: &Path,
    seq: u64,
    writer: &mut W,
    sent: &AtomicU64,
) -> std::io::Result<u64> {
    let mut names = Vec::new();
    let mut entries = tokio::fs::read_dir(dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        if entry.file_type().await?.is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    let mut total = 0;
    let mut chunk = vec![0u8; FILE_CHUNK_BYTES];
    for name in names {
        assert!(wire::safe_file_name(&name), "checkpoint file name {name:?}");
        let mut file = tokio::fs::File::open(dir.join(&name)).await?;
        let size = file.metadata().await?.len();
        let mut header = BytesMut::with_capacity(16 + name.len());
        header.put_u8(wire::TAG_FILE);
        header.put_u16_le(name.len() as u16);
        header.put_slice(name.as_bytes());
        header.put_u64_le(size);
        writer.write_all(&header).await?;
        let mut crc = 0u32;
        let mut left = size;
        while left > 0 {
            let want = (left as usize).min(chunk.len());
            file.read_exact(&mut chunk[..want]).await?;
            crc = crc32c::crc32c_append(crc, &chunk[..want]);
            writer.write_all(&chunk[..want]).await?;
            left -= want as u64;
        }
        writer.write_all(&crc.to_le_bytes()).await?;
        total += size;
    }
    let mut end = BytesMut::with_capacity(9);
    end.put_u8(wire::TAG_END);
    end.put_u64_le(seq);
    // Counted as sent before the bytes leave (see `stream`).
    sent.fetch_max(seq, Ordering::AcqRel);
    writer.write_all(&end).await?;
    writer.flush().await?;
    Ok(total)
}

/// Streams change-log batches from `next` until the replica goes, the role changes, or the
/// replica falls out of the log (it reconnects and gets a full sync).
async fn stream<W: AsyncWrite + Unpin>(
    server: &Server,
    engine: &Db,
    writer: &mut W,
    mut next: u64,
    generation: u64,
    closed: &AtomicBool,
    sent: &AtomicU64,
) -> std::io::Result<()> {
    let mut last_send = Instant::now();
    let mut out = BytesMut::new();
    loop {
        if closed.load(Ordering::Acquire)
            || server.replication.generation.load(Ordering::Acquire) != generation
            || *server.shutdown.borrow()
        {
            return Ok(());
        }
        match engine.read_log(next, SEND_BYTES_MAX) {
            LogRead::Trimmed { oldest_held } => {
                return Err(std::io::Error::other(format!(
                    "replica fell behind the backlog (needs {next}, oldest held {oldest_held})"
                )));
            }
            LogRead::Batches(batches) if batches.is_empty() => {
                if last_send.elapsed() >= HEARTBEAT_PERIOD {
                    out.clear();
                    let last = engine.last_sequence();
                    out.put_u8(wire::TAG_HEARTBEAT);
                    out.put_u64_le(last);
                    sent.fetch_max(last, Ordering::AcqRel);
                    writer.write_all(&out).await?;
                    writer.flush().await?;
                    last_send = Instant::now();
                }
                let waiting = engine.clone();
                let _ =
                    tokio::task::spawn_blocking(move || waiting.wait_for_sequence(next, WAIT_STEP))
                        .await;
            }
            LogRead::Batches(batches) => {
                out.clear();
                for batch in batches {
                    if batch.last_seq < next {
                        continue;
                    }
                    if batch.first_seq != next {
                        return Err(std::io::Error::other(format!(
                            "change log batch starts at {}, replica needs {next}",
                            batch.first_seq
                        )));
                    }
                    out.put_u8(wire::TAG_BATCH);
                    out.put_u32_le(batch.record.len() as u32);
                    out.put_slice(&batch.record);
                    next = batch.last_seq + 1;
                }
                // Counted before the write: the replica can apply, sync and acknowledge before
                // this task runs again, and an ack above `sent` would be clamped and only
                // believed at the next idle ack a second later (WAIT timed out on it in CI).
                sent.fetch_max(next - 1, Ordering::AcqRel);
                writer.write_all(&out).await?;
                writer.flush().await?;
                last_send = Instant::now();
            }
        }
    }
}

/// Reads `REPLCONF ACK <seq>` from the replica until it closes the connection.
async fn read_acks<R: AsyncRead + Unpin>(
    server: Arc<Server>,
    mut reader: R,
    mut input: BytesMut,
    client_id: u64,
    closed: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) {
    let limits = ringkv_protocol::Limits {
        bulk_bytes_max: 1024,
        args_max: 16,
        inline_bytes_max: 1024,
    };
    loop {
        loop {
            match ringkv_protocol::parse_request(&mut input, &limits) {
                Ok(Some(args)) => {
                    let is_ack = args.len() == 3
                        && args[0].eq_ignore_ascii_case(b"replconf")
                        && args[1].eq_ignore_ascii_case(b"ack");
                    if let Some(seq) = is_ack
                        .then(|| std::str::from_utf8(&args[2]).ok()?.parse::<u64>().ok())
                        .flatten()
                    {
                        if let Some(entry) = server.replication.replicas.lock().get_mut(&client_id)
                        {
                            let believed = seq.min(sent.load(Ordering::Acquire));
                            entry.ack_seq = entry.ack_seq.max(believed);
                            entry.last_ack = Instant::now();
                        }
                        server.replication.acked.notify_waiters();
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    closed.store(true, Ordering::Release);
                    return;
                }
            }
        }
        match reader.read_buf(&mut input).await {
            Ok(0) | Err(_) => {
                closed.store(true, Ordering::Release);
                return;
            }
            Ok(_) => {}
        }
    }
}
