//! The replica's link to its leader: one thread with a blocking socket that
//! connects, authenticates, asks for a partial resync (or takes a full sync),
//! applies the stream of batches and acknowledges them; it reconnects after
//! any error until the link is stopped.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_rustls::rustls::{self, pki_types};

use ringkv_engine::Storage;

use super::{replid_path, wire, LinkStatus};
use crate::server::Server;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Socket read timeout: how often a blocked read looks at the stop flag and sends an ACK.
const READ_STEP: Duration = Duration::from_millis(100);

/// An idle replica acknowledges at least this often (Redis: every second).
const ACK_PERIOD: Duration = Duration::from_secs(1);

/// Pause between reconnection attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// The leader is presumed gone after this long without a byte (it heartbeats every second).
const LEADER_SILENCE_MAX: Duration = Duration::from_secs(10);

/// Read buffer size.
const BUFFER_BYTES: usize = 1 << 20;

/// Runs the link until `status.stop` or shutdown.
pub(crate) fn run(server: Arc<Server>, status: Arc<LinkStatus>) {
    let stopped = || status.stop.load(Ordering::Acquire) || *server.shutdown.borrow();
    while !stopped() {
        match session(&server, &status) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                tracing::warn!(host = %status.host, port = status.port, %error, "replication link to the leader lost; retrying");
                *status.last_error.lock() = Some(error.to_string());
            }
        }
        if status.up.swap(false, Ordering::AcqRel) {
            *status.down_since.lock() = Instant::now();
        }
        status.sync_in_progress.store(false, Ordering::Release);
        let until = Instant::now() + RETRY_PAUSE;
        while Instant::now() < until && !stopped() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The byte stream to the leader: plain TCP, or rustls over it (`tls-replication yes`).
trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// The socket and its read buffer.
struct Conn<'a> {
    stream: Box<dyn Stream>,
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    server: &'a Server,
    status: &'a LinkStatus,
    last_ack: Instant,
    /// Sequence to acknowledge when idle (0: nothing applied yet on this link).
    ack_seq: u64,
}

fn stopped_error() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "replication link stopped")
}

impl Conn<'_> {
    fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Reads more bytes (at least one), acknowledging while idle.
    fn fill(&mut self) -> io::Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buffer.len() {
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        loop {
            if self.status.stop.load(Ordering::Acquire) || *self.server.shutdown.borrow() {
                return Err(stopped_error());
            }
            match self.stream.read(&mut self.buffer[self.end..]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "leader closed the connection",
                    ))
                }
                Ok(n) => {
                    self.end += n;
                    *self.status.last_io.lock() = Instant::now();
                    return Ok(());
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if self.ack_seq > 0 && self.last_ack.elapsed() >= ACK_PERIOD {
                        self.send_ack()?;
                    }
                    if self.status.last_io.lock().elapsed() > LEADER_SILENCE_MAX {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no data from the leader",
                        ));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn send_ack(&mut self) -> io::Result<()> {
        self.stream.write_all(&wire::ack(self.ack_seq))?;
        self.last_ack = Instant::now();
        Ok(())
    }

    /// The next `n` bytes (n ≤ buffer size).
    fn take(&mut self, n: usize) -> io::Result<&[u8]> {
        assert!(n <= self.buffer.len());
        while self.buffered() < n {
            self.fill()?;
        }
        let out = &self.buffer[self.start..self.start + n];
        self.start += n;
        Ok(out)
    }

    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> io::Result<u16> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn u32(&mut self) -> io::Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    /// Reads `n` bytes of any length into a new vector.
    fn bytes(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if self.buffered() == 0 {
                self.fill()?;
            }
            let step = (n - out.len()).min(self.buffered());
            out.extend_from_slice(&self.buffer[self.start..self.start + step]);
            self.start += step;
        }
        Ok(out)
    }

    /// One CRLF-terminated line (a RESP reply during the handshake).
    fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(at) = self.buffer[self.start..self.end]
                .windows(2)
                .position(|w| w == b"\r\n")
            {
                let line =
                    String::from_utf8_lossy(&self.buffer[self.start..self.start + at]).into_owned();
                self.start += at + 2;
                return Ok(line);
            }
            if self.buffered() > 64 * 1024 {
                return Err(io::Error::other("handshake reply line too long"));
            }
            self.fill()?;
        }
    }

    /// Sends a command and expects a `+` reply.
    fn command(&mut self, args: &[&str]) -> io::Result<String> {
        let mut out = format!("*{}\r\n", args.len());
        for arg in args {
            out.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        self.stream.write_all(out.as_bytes())?;
        let reply = self.line()?;
        if !reply.starts_with('+') {
            return Err(io::Error::other(format!(
                "leader refused {}: {reply}",
                args[0]
            )));
        }
        Ok(reply)
    }
}

/// Connects to the leader, over TLS when `tls-replication` is on; the stream reads in
/// `READ_STEP` steps.
fn connect(server: &Server, status: &LinkStatus) -> io::Result<Box<dyn Stream>> {
    let address = (status.host.as_str(), status.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other("leader address does not resolve"))?;
    let mut stream = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT)?;
    stream.set_nodelay(true)?;
    let tls = {
        let config = server.config.read();
        config.replication.tls_replication.then(|| {
            (
                config.tls_ca_cert_file.clone(),
                config.tls_cert_file.clone(),
                config.tls_key_file.clone(),
            )
        })
    };
    let Some((ca, cert, key)) = tls else {
        stream.set_read_timeout(Some(READ_STEP))?;
        return Ok(Box::new(stream));
    };
    let ca = ca.ok_or_else(|| {
        io::Error::other(
            "tls-replication needs tls-ca-cert-file (the CA of the leader's certificate)",
        )
    })?;
    let config = crate::tls::client_config(&ca, cert.as_deref(), key.as_deref())
        .map_err(io::Error::other)?;
    let name = pki_types::ServerName::try_from(status.host.clone())
        .map_err(|e| io::Error::other(format!("leader host {:?} as TLS name: {e}", status.host)))?;
    let mut tls = rustls::ClientConnection::new(Arc::new(config), name)
        .map_err(|e| io::Error::other(format!("TLS to the leader: {e}")))?;
    // The handshake runs here with the whole connect timeout: with the short read step, rustls
    // would surface a slow handshake reply as WouldBlock from inside the first write.
    stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    while tls.is_handshaking() {
        tls.complete_io(&mut stream).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("TLS handshake with the leader failed: {e}"),
            )
        })?;
    }
    stream.set_read_timeout(Some(READ_STEP))?;
    tracing::info!(host = %status.host, port = status.port, "replication link uses TLS");
    Ok(Box::new(rustls::StreamOwned::new(tls, stream)))
}

/// One connection to the leader, from handshake to error or stop.
fn session(server: &Server, status: &LinkStatus) -> io::Result<()> {
    let stream = connect(server, status)?;
    let mut conn = Conn {
        stream,
        buffer: vec![0u8; BUFFER_BYTES],
        start: 0,
        end: 0,
        server,
        status,
        last_ack: Instant::now(),
        ack_seq: 0,
    };
    *status.last_io.lock() = Instant::now();
    let (user, password, dir) = {
        let config = server.config.read();
        (
            config.replication.masteruser.clone(),
            config.replication.masterauth.clone(),
            config.dir.clone(),
        )
    };
    if let Some(password) = password {
        let result = match &user {
            Some(user) => conn.command(&["AUTH", user, &password]),
            None => conn.command(&["AUTH", &password]),
        };
        result.map_err(|e| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "cannot authenticate to the leader as user {:?} (check masterauth / masteruser): {e}",
                    user.as_deref().unwrap_or("default")
                ),
            )
        })?;
    }
    let port = server.bound_port.load(Ordering::Relaxed).to_string();
    conn.command(&["REPLCONF", "listening-port", &port])
        .map_err(|e| {
            if e.to_string().contains("NOAUTH") {
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("the leader requires a password: set masterauth ({e})"),
                )
            } else {
                e
            }
        })?;
    let applied = server.keyspace.engine().last_sequence();
    let fs = server.keyspace.engine().options().storage.clone();
    let replid = server.replication.ids.lock().replid.clone();
    let offset = if fs.exists(&replid_path(&dir))? {
        applied.to_string()
    } else {
        "-1".to_string()
    };
    tracing::info!(host = %status.host, port = status.port, %replid, offset = %offset, "connected to the leader, asking for a partial resync");
    let reply = conn.command(&["PSYNC", &replid, &offset])?;
    let mut words = reply.trim_start_matches('+').split_whitespace();
    let (kind, leader_replid) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if leader_replid.len() != 40 {
        return Err(io::Error::other(format!("bad PSYNC reply {reply:?}")));
    }
    match kind {
        "CONTINUE" => {
            tracing::info!(
                from_seq = applied + 1,
                "partial resync accepted by the leader: continuing from the change log"
            );
            server
                .replication
                .sync_partial_ok
                .fetch_add(1, Ordering::Relaxed);
        }
        "FULLRESYNC" => {
            tracing::info!("full sync from the leader: receiving a checkpoint");
            if offset != "-1" {
                server
                    .replication
                    .sync_partial_err
                    .fetch_add(1, Ordering::Relaxed);
            }
            status.sync_in_progress.store(true, Ordering::Release);
            // Durably forgotten before the data changes: a replica restarting after a cut
            // mid-sync must not claim the old history for whatever data it then holds.
            remove_replid(&*fs, &dir)?;
            let seq = full_sync(server, &*fs, &mut conn, &dir)?;
            status.sync_in_progress.store(false, Ordering::Release);
            server.replication.sync_full.fetch_add(1, Ordering::Relaxed);
            tracing::info!(seq, "full sync done: loaded the leader's checkpoint");
        }
        _ => return Err(io::Error::other(format!("bad PSYNC reply {reply:?}"))),
    }
    server.replication.ids.lock().replid = leader_replid.to_string();
    write_replid(&*fs, &dir, leader_replid)?;
    status.up.store(true, Ordering::Release);
    *status.last_error.lock() = None;
    conn.ack_seq = server.keyspace.engine().last_sequence();
    conn.send_ack()?;
    stream_batches(server, &mut conn)
}

/// Records the history `dir`'s data belongs to: written beside, synced, renamed into place, and
/// the rename made durable.
fn write_replid(fs: &dyn Storage, dir: &Path, replid: &str) -> io::Result<()> {
    let path = replid_path(dir);
    let temporary = PathBuf::from(format!("{}.tmp", path.display()));
    let file = fs.create(&temporary, false)?;
    file.append(replid.as_bytes())?;
    file.sync()?;
    drop(file);
    fs.rename(&temporary, &path)?;
    fs.sync_dir(parent_of(&path))
}

/// Forgets the history `dir`'s data belonged to (no file: the next PSYNC asks for a full sync).
fn remove_replid(fs: &dyn Storage, dir: &Path) -> io::Result<()> {
    let path = replid_path(dir);
    match fs.remove(&path) {
        Ok(()) => fs.sync_dir(parent_of(&path)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

/// Receives the checkpoint into a directory beside the data directory, verifies every file,
/// and swaps it in for the current database. Returns its sequence.
fn full_sync(
    server: &Server,
    fs: &dyn Storage,
    conn: &mut Conn<'_>,
    dir: &Path,
) -> io::Result<u64> {
    let incoming = incoming_path(dir);
    if fs.exists(&incoming)? {
        fs.remove_dir_all(&incoming)?;
    }
    fs.create_dir_all(&incoming)?;
    let mut bytes_total = 0u64;
    let seq = loop {
        match conn.u8()? {
            wire::TAG_FILE => {
                let name_len = usize::from(conn.u16()?);
                let name = String::from_utf8_lossy(&conn.bytes(name_len)?).into_owned();
                if !wire::safe_file_name(&name) {
                    return Err(io::Error::other(format!("unsafe file name {name:?}")));
                }
                let size = conn.u64()?;
                let path = incoming.join(&name);
                let file = fs.create(&path, true)?;
                let mut crc = 0u32;
                let mut left = size;
                while left > 0 {
                    if conn.buffered() == 0 {
                        conn.fill()?;
                    }
                    let step = (left as usize).min(conn.buffered());
                    let chunk = &conn.buffer[conn.start..conn.start + step];
                    crc = crc32c::crc32c_append(crc, chunk);
                    file.append(chunk)?;
                    conn.start += step;
                    left -= step as u64;
                }
                let expected = conn.u32()?;
                if crc != expected {
                    return Err(io::Error::other(format!(
                        "checkpoint file {name}: crc32c {crc:08x}, leader sent {expected:08x}"
                    )));
                }
                file.sync()?;
                bytes_total += size;
            }
            wire::TAG_END => break conn.u64()?,
            tag => return Err(io::Error::other(format!("unexpected frame tag {tag}"))),
        }
    };
    fs.sync_dir(&incoming)?;
    tracing::info!(
        seq,
        bytes = bytes_total,
        "full sync: checkpoint received and verified; swapping it in"
    );
    swap_in(server, conn.status, dir, &incoming, seq)?;
    Ok(seq)
}

/// Closes the engine, moves the received database into place, opens it. Data commands wait
/// (asynchronously) on the executor's gate meanwhile.
fn swap_in(
    server: &Server,
    status: &LinkStatus,
    dir: &Path,
    incoming: &Path,
    seq: u64,
) -> io::Result<()> {
    // Takes the executor's gate exclusive (no data command runs during the swap), trying in
    // steps so a stop request is seen: commands hold the gate shared only while they run.
    let _exclusive = loop {
        if let Ok(guard) = server.gate.try_write() {
            break guard;
        }
        std::thread::sleep(Duration::from_millis(1));
        if status.stop.load(Ordering::Acquire) || *server.shutdown.borrow() {
            return Err(stopped_error());
        }
    };
    let old = server.keyspace.engine();
    let mut options = old.options().clone();
    // The capacity as set now (CONFIG SET repl-backlog-size), not as the old engine opened.
    options.change_log_bytes_max = super::backlog_capacity(server);
    if let Err(error) = old.close() {
        tracing::warn!(%error, "closing the old database before the swap");
    }
    let fs = options.storage.clone();
    if let Err(error) = swap_directories(&*fs, dir, incoming) {
        // Whatever step failed, recovery leaves the old or the new database whole in `dir`:
        // serve that until the link's retry syncs again (the replid file is gone, so the retry
        // is a full sync).
        tracing::error!(%error, "full sync: swapping the received database in failed; recovering");
        let reopened = recover_swap(&*fs, dir)
            .and_then(|_| ringkv_engine::Db::open(dir, options).map_err(io::Error::other))
            .and_then(|engine| {
                server
                    .keyspace
                    .install_engine(engine)
                    .map_err(io::Error::other)
            });
        if let Err(reopen_error) = reopened {
            tracing::error!(%reopen_error, dir = %dir.display(), "full sync: reopening the data directory after a failed swap failed; data commands fail until the next sync");
        }
        return Err(error);
    }
    let engine = ringkv_engine::Db::open(dir, options).map_err(io::Error::other)?;
    if engine.last_sequence() != seq {
        return Err(io::Error::other(format!(
            "received checkpoint opens at sequence {}, leader said {seq}",
            engine.last_sequence()
        )));
    }
    server
        .keyspace
        .install_engine(engine)
        .map_err(io::Error::other)?;
    Ok(())
}

/// Where a full sync receives the leader's checkpoint: beside the data directory, on the same
/// file system (the swap is a rename).
pub(crate) fn incoming_path(dir: &Path) -> PathBuf {
    PathBuf::from(format!("{}.sync-incoming", dir.display()))
}

/// Where the replaced database waits during a swap until the new one is in place.
pub(crate) fn retired_path(dir: &Path) -> PathBuf {
    PathBuf::from(format!("{}.sync-retired", dir.display()))
}

/// The directory holding `path`'s name, whose fsync makes a rename or removal of `path` durable.
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Replaces the database in `dir` with the complete, synced one in `incoming`, so that a power
/// cut at any point leaves a state that [`recover_swap`] turns into the old or the new database
/// whole, never neither or a mix (docs/durability.md, "Replica full-sync swap"). Each step is
/// made durable (parent directory fsynced, result checked) before the next:
///
/// | after step                      | on disk                       | recovery keeps |
/// |---------------------------------|-------------------------------|----------------|
/// | 1. settle a stale retired dir   | dir = old, incoming = new     | old            |
/// | 2. rename dir → retired         | retired = old, incoming = new | old (put back) |
/// | 3. rename incoming → dir        | dir = new, retired = old      | new            |
/// | 4. remove retired               | dir = new                     | new            |
///
/// An error at any step leaves one of these states too: the caller runs [`recover_swap`] and
/// reopens `dir`.
pub(crate) fn swap_directories(fs: &dyn Storage, dir: &Path, incoming: &Path) -> io::Result<()> {
    let parent = parent_of(dir);
    assert_eq!(
        parent_of(incoming),
        parent,
        "the swap renames within one directory"
    );
    if !fs.exists(&incoming.join("CURRENT"))? {
        return Err(io::Error::other(format!(
            "{} holds no database (no CURRENT): refusing to swap it in",
            incoming.display()
        )));
    }
    let retired = retired_path(dir);
    // 1. A retired directory left by an earlier failed swap: put back or dropped, as at start.
    settle_retired(fs, dir)?;
    // 2. From here until step 3 is durable, `dir` is missing and recovery puts `retired` back.
    fs.rename(dir, &retired)?;
    fs.sync_dir(parent)?;
    // 3. The commit point: once durable, the new database is the one that opens.
    fs.rename(incoming, dir)?;
    fs.sync_dir(parent)?;
    // 4. A failure here leaves `retired` for the next start's recovery to remove.
    fs.remove_dir_all(&retired)?;
    fs.sync_dir(parent)?;
    Ok(())
}

/// What [`recover_swap`] found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SwapRecovery {
    /// `dir` was missing: the retired database was put back.
    pub restored_retired: bool,
    /// `dir` was in place: the retired database beside it was removed.
    pub removed_retired: bool,
    /// A received database that was never swapped in was removed.
    pub removed_incoming: bool,
}

impl SwapRecovery {
    /// True when there was anything to recover.
    pub(crate) fn acted(&self) -> bool {
        self.restored_retired || self.removed_retired || self.removed_incoming
    }
}

/// Finishes or undoes a replica full-sync swap a crash or a failed step interrupted (see
/// [`swap_directories`]): when `dir` is missing and `<dir>.sync-retired` exists, puts it back;
/// when both exist, removes the retired one; removes a stale `<dir>.sync-incoming`. Each change
/// is made durable before returning. Run before the engine opens `dir`.
pub(crate) fn recover_swap(fs: &dyn Storage, dir: &Path) -> io::Result<SwapRecovery> {
    let mut recovery = settle_retired(fs, dir)?;
    let incoming = incoming_path(dir);
    if fs.exists(&incoming)? {
        fs.remove_dir_all(&incoming)?;
        fs.sync_dir(parent_of(dir))?;
        recovery.removed_incoming = true;
    }
    Ok(recovery)
}

/// Step 1 of the swap and of its recovery: no `<dir>.sync-retired` is left, and `dir` holds
/// the database that was there before the interrupted swap, or the one it swapped in.
fn settle_retired(fs: &dyn Storage, dir: &Path) -> io::Result<SwapRecovery> {
    let retired = retired_path(dir);
    let mut recovery = SwapRecovery::default();
    if !fs.exists(&retired)? {
        return Ok(recovery);
    }
    if fs.exists(dir)? {
        fs.remove_dir_all(&retired)?;
        recovery.removed_retired = true;
    } else {
        fs.rename(&retired, dir)?;
        recovery.restored_retired = true;
    }
    fs.sync_dir(parent_of(dir))?;
    Ok(recovery)
}

/// Applies batches and heartbeats until an error or stop; acknowledges after every burst.
fn stream_batches(server: &Server, conn: &mut Conn<'_>) -> io::Result<()> {
    let engine = server.keyspace.engine();
    loop {
        match conn.u8()? {
            wire::TAG_BATCH => {
                let len = conn.u32()? as usize;
                if len > wire::BATCH_BYTES_MAX {
                    return Err(io::Error::other(format!("batch of {len} bytes")));
                }
                let record = if len <= conn.buffer.len() {
                    conn.take(len)?.to_vec()
                } else {
                    conn.bytes(len)?
                };
                let seq = server
                    .keyspace
                    .apply_replicated(&record)
                    .map_err(|e| io::Error::other(format!("applying a batch: {e:?}")))?;
                conn.ack_seq = seq;
                conn.status.leader_seq.fetch_max(seq, Ordering::AcqRel);
            }
            wire::TAG_HEARTBEAT => {
                let seq = conn.u64()?;
                conn.status.leader_seq.store(seq, Ordering::Release);
            }
            tag => return Err(io::Error::other(format!("unexpected frame tag {tag}"))),
        }
        if conn.buffered() == 0 && conn.ack_seq > 0 {
            // Synced before acknowledged: WAIT promises the write survives this process dying.
            engine.sync(conn.ack_seq).map_err(io::Error::other)?;
            conn.send_ack()?;
        }
    }
}

#[cfg(test)]
#[path = "follower_swap_tests.rs"]
mod swap_tests;
