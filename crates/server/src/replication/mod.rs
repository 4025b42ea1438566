//! Leader → replica replication (Redis' REPLICAOF model); the design is in
//! `docs/replication.md`.
//!
//! A replica connects to its leader like a client (AUTH, `REPLCONF
//! listening-port`, then `PSYNC <replid> <last applied seq>`). The leader either
//! continues from the replica's sequence out of the engine's change log (partial
//! resync) or sends a checkpoint of its database file by file and then the log
//! from the checkpoint's sequence (full sync). Engine sequence numbers are the
//! replication offset; a *replication id* names the history a sequence belongs to.
//!
//! * `leader.rs` — the leader's side of one replica link (async, on the
//!   connection the replica opened).
//! * `follower.rs` — the replica's link to its leader (a thread with a blocking
//!   socket: it applies batches with blocking engine calls anyway).
//! * `wire.rs` — the frames both sides exchange after PSYNC.
//!
//! This module holds the state both sides share: ids, the table of connected
//! replicas and their acknowledgements (WAIT, min-replicas-to-write), the link
//! status (INFO replication, ROLE) and the settings CONFIG changes.

pub(crate) mod follower;
pub(crate) mod leader;
pub(crate) mod wire;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::server::Server;

pub use crate::config::{ReplicationConfig, BACKLOG_BYTES_DEFAULT};

/// Most commit-time samples kept for the lag-in-seconds estimate (10 ms apart: 100 s).
const COMMIT_SAMPLES_MAX: usize = 10_000;

/// Period of the commit-time sampler.
const COMMIT_SAMPLE_PERIOD: Duration = Duration::from_millis(10);

/// Parses `"host port"` (the `replicaof` setting).
pub fn parse_replicaof(text: &str) -> Result<(String, u16), String> {
    let mut parts = text.split_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(host), Some(port), None) => port
            .parse::<u16>()
            .map(|port| (host.to_string(), port))
            .map_err(|_| format!("replicaof: invalid port {port:?}")),
        _ => Err(format!("replicaof must be \"host port\", got {text:?}")),
    }
}

/// The replication ids: which history this server's sequences belong to.
#[derive(Debug, Clone)]
pub(crate) struct Ids {
    /// The current history (a leader's own, or the leader's a replica follows).
    pub replid: String,
    /// The history before the last promotion; valid up to `replid2_seq`.
    pub replid2: String,
    /// Last sequence shared with `replid2`'s history.
    pub replid2_seq: u64,
}

/// A replica connected to this server.
#[derive(Debug, Clone)]
pub(crate) struct ReplicaEntry {
    pub ip: IpAddr,
    pub port: u16,
    /// `wait_bgsave` (checkpointing), `send_bulk` (sending files), `online` (streaming).
    pub state: &'static str,
    /// Last sequence the replica acknowledged as applied.
    pub ack_seq: u64,
    pub last_ack: Instant,
}

/// Status of this server's link to its leader, while a replica.
#[derive(Debug)]
pub(crate) struct LinkStatus {
    pub host: String,
    pub port: u16,
    /// Set to end the link (REPLICAOF NO ONE, another REPLICAOF, shutdown).
    pub stop: AtomicBool,
    pub up: AtomicBool,
    pub sync_in_progress: AtomicBool,
    /// Leader's last sequence as last heard (heartbeats and batches).
    pub leader_seq: AtomicU64,
    pub last_io: Mutex<Instant>,
    /// Since when the link is down (INFO `master_link_down_since_seconds`).
    pub down_since: Mutex<Instant>,
    /// Why the last attempt failed (refused AUTH, TLS handshake, …), until the link is up
    /// again: INFO `master_link_last_error`, so a wrong `masterauth` shows without the log.
    pub last_error: Mutex<Option<String>>,
}

struct Link {
    status: Arc<LinkStatus>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The replication state of a server.
pub(crate) struct Replication {
    pub ids: Mutex<Ids>,
    pub replicas: Mutex<BTreeMap<u64, ReplicaEntry>>,
    /// Woken on every acknowledgement and on every change of the replica table (WAIT's
    /// deferred reply waits on it).
    pub acked: tokio::sync::Notify,
    /// Bumped when the role changes: leader-side links of the old role end.
    pub generation: AtomicU64,
    link: Mutex<Option<Link>>,
    /// `listening-port` each handshaking connection announced, by client id.
    pub announced_ports: Mutex<HashMap<u64, u16>>,
    pub read_only: AtomicBool,
    /// The backlog (the engine's change log) is kept: set when a replica first asks to sync
    /// or this server first follows a leader, as Redis creates its backlog; until then the
    /// engine keeps no copy of the writes (see [`activate_backlog`]).
    backlog_active: AtomicBool,
    pub min_replicas_to_write: AtomicUsize,
    pub min_replicas_max_lag_seconds: AtomicU64,
    pub sync_full: AtomicU64,
    pub sync_partial_ok: AtomicU64,
    pub sync_partial_err: AtomicU64,
    /// (sequence, when it was first seen committed): for lag in seconds.
    commit_times: Mutex<VecDeque<(u64, Instant)>>,
    /// The server itself, for REPLICAOF (handlers see `&Server`; the link thread needs an `Arc`).
    this: std::sync::OnceLock<std::sync::Weak<Server>>,
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication").finish_non_exhaustive()
    }
}

/// A fresh random replication id (40 hex digits, as Redis').
pub(crate) fn new_replid() -> String {
    (0..40)
        .map(|_| char::from(b"0123456789abcdef"[rand::random::<usize>() % 16]))
        .collect()
}

/// Where a replica remembers the id of the history its data belongs to: next to the data
/// directory (the directory itself is the engine's and is replaced by a full sync).
pub(crate) fn replid_path(dir: &Path) -> PathBuf {
    PathBuf::from(format!("{}.replid", dir.display()))
}

impl Replication {
    /// State for a server starting with `config`; a replica takes up the id its data carries.
    pub(crate) fn new(config: &ReplicationConfig, dir: &Path) -> Replication {
        let remembered = std::fs::read_to_string(replid_path(dir))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| s.len() == 40 && config.replicaof.is_some());
        Replication {
            ids: Mutex::new(Ids {
                replid: remembered.unwrap_or_else(new_replid),
                replid2: "0".repeat(40),
                replid2_seq: 0,
            }),
            replicas: Mutex::new(BTreeMap::new()),
            acked: tokio::sync::Notify::new(),
            generation: AtomicU64::new(0),
            link: Mutex::new(None),
            announced_ports: Mutex::new(HashMap::new()),
            read_only: AtomicBool::new(config.replica_read_only),
            backlog_active: AtomicBool::new(config.replicaof.is_some()),
            min_replicas_to_write: AtomicUsize::new(config.min_replicas_to_write),
            min_replicas_max_lag_seconds: AtomicU64::new(config.min_replicas_max_lag_seconds),
            sync_full: AtomicU64::new(0),
            sync_partial_ok: AtomicU64::new(0),
            sync_partial_err: AtomicU64::new(0),
            commit_times: Mutex::new(VecDeque::new()),
            this: std::sync::OnceLock::new(),
        }
    }

    /// Replicas whose last acknowledgement is recent enough (`min-replicas-max-lag`).
    pub(crate) fn good_replicas(&self) -> usize {
        let lag_max =
            Duration::from_secs(self.min_replicas_max_lag_seconds.load(Ordering::Relaxed));
        self.replicas
            .lock()
            .values()
            .filter(|r| r.state == "online" && r.last_ack.elapsed() <= lag_max)
            .count()
    }

    /// Replicas that acknowledged `seq`.
    pub(crate) fn acked_count(&self, seq: u64) -> usize {
        self.replicas
            .lock()
            .values()
            .filter(|r| r.ack_seq >= seq)
            .count()
    }

    /// Waits until `wanted` replicas acknowledged `seq` or `deadline` passes (never, if
    /// `None`); returns how many did. Async: WAIT's reply waits here without a thread.
    pub(crate) async fn wait_acks(
        &self,
        seq: u64,
        wanted: usize,
        deadline: Option<Instant>,
    ) -> usize {
        loop {
            // Registered before counting, so an acknowledgement between the two still wakes us.
            let notified = self.acked.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let acked = self.acked_count(seq);
            if acked >= wanted {
                return acked;
            }
            match deadline {
                Some(deadline) if Instant::now() >= deadline => return acked,
                Some(deadline) => {
                    tokio::select! {
                        () = notified => {}
                        () = tokio::time::sleep_until(deadline.into()) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Records the leader's last sequence now (the sampler task).
    fn sample_commit(&self, seq: u64) {
        let mut times = self.commit_times.lock();
        if times.back().is_none_or(|&(last, _)| last < seq) {
            times.push_back((seq, Instant::now()));
            if times.len() > COMMIT_SAMPLES_MAX {
                times.pop_front();
            }
        }
    }

    /// How long ago the first write a replica at `acked` lacks was committed (0 when it lacks
    /// none): replication lag in time, to the sampler's 10 ms. The first sample above `acked`
    /// was taken at most one period after that write, so this reads up to 10 ms short. When no
    /// sample is above `acked` yet, the writes it lacks came after the newest sample, less than
    /// a period ago: 0, not the age of some older sample.
    pub(crate) fn lag(&self, acked: u64, last_seq: u64) -> Duration {
        if acked >= last_seq {
            return Duration::ZERO;
        }
        let times = self.commit_times.lock();
        // Samples older than the deque's front were dropped; the front is then the oldest
        // write known to be above `acked` (the replica is over 100 s behind).
        times
            .iter()
            .find(|&&(seq, _)| seq > acked)
            .map_or(Duration::ZERO, |&(_, at)| at.elapsed())
    }

    /// The link status while a replica.
    pub(crate) fn link(&self) -> Option<Arc<LinkStatus>> {
        self.link.lock().as_ref().map(|l| l.status.clone())
    }
}

/// The error a write from a client gets, if it must be refused: `READONLY` on a read-only
/// replica, `NOREPLICAS` when too few good replicas (`min-replicas-to-write`).
pub(crate) fn write_refusal(server: &Server) -> Option<&'static str> {
    let replication = &server.replication;
    if server.keyspace.is_replica() && replication.read_only.load(Ordering::Relaxed) {
        return Some("READONLY You can't write against a read only replica.");
    }
    let wanted = replication.min_replicas_to_write.load(Ordering::Relaxed);
    if wanted > 0 && !server.keyspace.is_replica() && replication.good_replicas() < wanted {
        return Some("NOREPLICAS Not enough good replicas to write.");
    }
    None
}

/// Starts the background work: the commit-time sampler, and the link to the configured
/// leader if any.
pub(crate) fn start(server: &Arc<Server>) {
    let _ = server.replication.this.set(Arc::downgrade(server));
    let configured = server.config.read().replication.replicaof.clone();
    if let Some((host, port)) = configured {
        follow(server, host, port);
    }
    let sampling = server.clone();
    tokio::spawn(async move {
        let mut shutdown = sampling.shutdown.subscribe();
        let mut interval = tokio::time::interval(COMMIT_SAMPLE_PERIOD);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
            let seq = sampling.keyspace.engine().last_sequence();
            sampling.replication.sample_commit(seq);
        }
        stop_link(&sampling);
    });
}

/// Becomes a replica of `host:port` (REPLICAOF host port): stops any previous link, drops
/// this server's own replicas, and starts the link thread.
pub(crate) fn follow(server: &Arc<Server>, host: String, port: u16) {
    stop_link(server);
    activate_backlog(server);
    server.keyspace.set_replica(true);
    server.replication.generation.fetch_add(1, Ordering::AcqRel);
    let status = Arc::new(LinkStatus {
        host,
        port,
        stop: AtomicBool::new(false),
        up: AtomicBool::new(false),
        sync_in_progress: AtomicBool::new(false),
        leader_seq: AtomicU64::new(0),
        last_io: Mutex::new(Instant::now()),
        down_since: Mutex::new(Instant::now()),
        last_error: Mutex::new(None),
    });
    let thread = {
        let server = server.clone();
        let status = status.clone();
        std::thread::Builder::new()
            .name("replica-link".into())
            .spawn(move || follower::run(server, status))
            .expect("spawn replica link thread")
    };
    *server.replication.link.lock() = Some(Link {
        status,
        thread: Some(thread),
    });
}

/// Starts keeping the backlog if it is not kept yet: the engine's change log holds
/// `repl-backlog-size` bytes of the writes from now on. A leader that never had a replica keeps
/// none (a 64 MiB copy of the last writes nobody reads, as Redis leaves its backlog unmade).
/// Called before a full sync's checkpoint, so every batch after the checkpoint is held.
pub(crate) fn activate_backlog(server: &Server) {
    if !server
        .replication
        .backlog_active
        .swap(true, Ordering::AcqRel)
    {
        let bytes = server.config.read().replication.backlog_bytes;
        tracing::info!(bytes, "replication backlog created");
        server.keyspace.engine().set_change_log_capacity(bytes);
    }
}

/// The change-log size the engine should keep now: `repl-backlog-size` once the backlog is
/// active, none before.
pub(crate) fn backlog_capacity(server: &Server) -> usize {
    if server.replication.backlog_active.load(Ordering::Acquire) {
        server.config.read().replication.backlog_bytes
    } else {
        0
    }
}

/// REPLICAOF host port from a command handler.
pub(crate) fn follow_from_command(server: &Server, host: String, port: u16) -> bool {
    match server
        .replication
        .this
        .get()
        .and_then(std::sync::Weak::upgrade)
    {
        Some(server) => {
            follow(&server, host, port);
            true
        }
        None => false,
    }
}

/// Ends the link to the leader, if any, and waits until no more batches are applied.
pub(crate) fn stop_link(server: &Server) {
    let link = server.replication.link.lock().take();
    if let Some(mut link) = link {
        link.status.stop.store(true, Ordering::Release);
        if let Some(thread) = link.thread.take() {
            let _ = thread.join();
        }
    }
}

/// REPLICAOF NO ONE: stops following, keeps the data, starts a new history (the old id stays
/// valid up to the current sequence, so the other replicas can continue from it).
pub(crate) fn promote(server: &Server) {
    stop_link(server);
    let seq = server.keyspace.engine().last_sequence();
    {
        let mut ids = server.replication.ids.lock();
        ids.replid2 = std::mem::replace(&mut ids.replid, new_replid());
        ids.replid2_seq = seq;
    }
    server.keyspace.set_replica(false);
    server.replication.generation.fetch_add(1, Ordering::AcqRel);
    let dir = server.config.read().dir.clone();
    let _ = std::fs::remove_file(replid_path(&dir));
    tracing::info!(seq, "MASTER MODE enabled: promoted, data kept");
}

/// One connected replica as INFO and `/metrics` show it.
#[derive(Debug, Clone)]
pub(crate) struct ReplicaView {
    pub ip: IpAddr,
    pub port: u16,
    pub state: &'static str,
    /// Last sequence it acknowledged (INFO `offset`).
    pub ack_seq: u64,
    /// Seconds since its last acknowledgement (INFO `lag`, Redis' meaning).
    pub last_ack_secs: u64,
    /// Sequences it has not acknowledged (INFO `lag_seq`).
    pub lag_seq: u64,
    /// Age of the oldest write it has not acknowledged (INFO `lag_ms`).
    pub lag: Duration,
}

/// This server's link to its leader as INFO and `/metrics` show it.
#[derive(Debug, Clone)]
pub(crate) struct LinkView {
    pub host: String,
    pub port: u16,
    pub up: bool,
    /// Seconds since the leader last sent a byte; -1 while the link is down (Redis' INFO).
    pub last_io_secs: i64,
    pub sync_in_progress: bool,
    /// The leader's last sequence as last heard (never below what this replica applied).
    pub leader_seq: u64,
    /// Seconds the link has been down (`None` while up).
    pub down_secs: Option<u64>,
    /// Why the last connection attempt failed, while down.
    pub last_error: Option<String>,
}

/// A snapshot of the replication state, taken once per INFO or `/metrics` request: both render
/// from it, so they cannot disagree on a number (only on when it was taken).
#[derive(Debug, Clone)]
pub(crate) struct View {
    /// This server's offset: its engine's last sequence (leader: written; replica: applied).
    pub last_seq: u64,
    pub link: Option<LinkView>,
    pub replicas: Vec<ReplicaView>,
    /// Replicas that count for `min-replicas-to-write` (`None` while that is off).
    pub good_replicas: Option<usize>,
}

impl View {
    /// Sequences a replica is behind its leader's last known sequence (INFO `slave_lag_seq`).
    pub(crate) fn link_lag_seq(&self) -> Option<u64> {
        self.link
            .as_ref()
            .map(|link| link.leader_seq.saturating_sub(self.last_seq))
    }
}

/// Takes the snapshot INFO replication and `/metrics` render.
pub(crate) fn view(server: &Server) -> View {
    let replication = &server.replication;
    let last_seq = server.keyspace.engine().last_sequence();
    let link = replication.link().map(|link| {
        let up = link.up.load(Ordering::Acquire);
        LinkView {
            host: link.host.clone(),
            port: link.port,
            up,
            last_io_secs: if up {
                link.last_io.lock().elapsed().as_secs() as i64
            } else {
                -1
            },
            sync_in_progress: link.sync_in_progress.load(Ordering::Acquire),
            leader_seq: link.leader_seq.load(Ordering::Acquire).max(last_seq),
            down_secs: (!up).then(|| link.down_since.lock().elapsed().as_secs()),
            last_error: if up {
                None
            } else {
                link.last_error.lock().clone()
            },
        }
    });
    let entries: Vec<ReplicaEntry> = replication.replicas.lock().values().cloned().collect();
    let replicas = entries
        .into_iter()
        .map(|r| ReplicaView {
            ip: r.ip,
            port: r.port,
            state: r.state,
            ack_seq: r.ack_seq,
            last_ack_secs: r.last_ack.elapsed().as_secs(),
            lag_seq: last_seq.saturating_sub(r.ack_seq),
            lag: replication.lag(r.ack_seq, last_seq),
        })
        .collect();
    let good_replicas = (replication.min_replicas_to_write.load(Ordering::Relaxed) > 0)
        .then(|| replication.good_replicas());
    View {
        last_seq,
        link,
        replicas,
        good_replicas,
    }
}

/// The `# Replication` section of INFO.
pub(crate) fn info_section(server: &Server, out: &mut String) {
    let replication = &server.replication;
    let engine = server.keyspace.engine();
    let view = view(server);
    let last_seq = view.last_seq;
    let ids = replication.ids.lock().clone();
    out.push_str("# Replication\r\n");
    match &view.link {
        Some(link) => {
            let _ = write!(
                out,
                "role:slave\r\nmaster_host:{}\r\nmaster_port:{}\r\nmaster_link_status:{}\r\nmaster_last_io_seconds_ago:{}\r\nmaster_sync_in_progress:{}\r\nslave_read_repl_offset:{last_seq}\r\nslave_repl_offset:{last_seq}\r\nslave_lag_seq:{}\r\nslave_priority:100\r\nslave_read_only:{}\r\nreplica_announced:1\r\n",
                link.host,
                link.port,
                if link.up { "up" } else { "down" },
                link.last_io_secs,
                u8::from(link.sync_in_progress),
                view.link_lag_seq().unwrap_or(0),
                u8::from(replication.read_only.load(Ordering::Relaxed)),
            );
            if let Some(secs) = link.down_secs {
                let _ = write!(out, "master_link_down_since_seconds:{secs}\r\n");
            }
            if let Some(error) = &link.last_error {
                // One INFO line: no CR/LF from the error text.
                let error = error.replace(['\r', '\n'], " ");
                let _ = write!(out, "master_link_last_error:{error}\r\n");
            }
        }
        None => out.push_str("role:master\r\n"),
    }
    let _ = write!(out, "connected_slaves:{}\r\n", view.replicas.len());
    if let Some(good) = view.good_replicas {
        let _ = write!(out, "min_slaves_good_slaves:{good}\r\n");
    }
    for (i, replica) in view.replicas.iter().enumerate() {
        let _ = write!(
            out,
            "slave{i}:ip={},port={},state={},offset={},lag={},lag_seq={},lag_ms={}\r\n",
            replica.ip,
            replica.port,
            replica.state,
            replica.ack_seq,
            replica.last_ack_secs,
            replica.lag_seq,
            replica.lag.as_millis(),
        );
    }
    let (backlog_bytes, oldest) = engine.change_log_usage();
    let _ = write!(
        out,
        "master_failover_state:no-failover\r\nmaster_replid:{}\r\nmaster_replid2:{}\r\nmaster_repl_offset:{last_seq}\r\nsecond_repl_offset:{}\r\nrepl_backlog_active:{}\r\nrepl_backlog_size:{}\r\nrepl_backlog_first_byte_offset:{}\r\nrepl_backlog_histlen:{backlog_bytes}\r\nsync_full:{}\r\nsync_partial_ok:{}\r\nsync_partial_err:{}\r\n",
        ids.replid,
        ids.replid2,
        if ids.replid2_seq > 0 { ids.replid2_seq as i64 + 1 } else { -1 },
        u8::from(replication.backlog_active.load(Ordering::Acquire)),
        server.config.read().replication.backlog_bytes,
        oldest.unwrap_or(last_seq + 1),
        replication.sync_full.load(Ordering::Relaxed),
        replication.sync_partial_ok.load(Ordering::Relaxed),
        replication.sync_partial_err.load(Ordering::Relaxed),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_the_age_of_the_first_unacknowledged_sample() {
        let replication = Replication::new(
            &ReplicationConfig::default(),
            Path::new("/nonexistent/ringkv-test"),
        );
        replication.sample_commit(10);
        std::thread::sleep(Duration::from_millis(60));
        replication.sample_commit(20);
        std::thread::sleep(Duration::from_millis(20));
        // Lacking writes 6..: the sample of seq 10 is the first above, 80 ms old.
        assert!(replication.lag(5, 25) >= Duration::from_millis(80));
        // Lacking 16..: first committed before the sample of 20, 20 ms ago.
        let lag = replication.lag(15, 25);
        assert!(
            lag >= Duration::from_millis(20) && lag < Duration::from_millis(60),
            "{lag:?}"
        );
        // Lacking only writes after the newest sample (21..=25): under one period, reported as
        // 0. It once fell back to the oldest sample, reporting the server's age as lag.
        assert_eq!(replication.lag(20, 25), Duration::ZERO);
        assert_eq!(replication.lag(25, 25), Duration::ZERO);
    }
}
