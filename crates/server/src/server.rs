//! State shared by every connection: the keyspace, settings that CONFIG SET
//! changes, the client table, statistics, SCAN cursors, and the lock that lets
//! EXEC run alone.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use ringkv_protocol::RespVersion;
use tokio::sync::Notify;

use crate::config::Config;
use ringkv_store::Keyspace;

/// Most SCAN cursors remembered (see [`ScanCursors`] for which are forgotten first).
pub(crate) const SCAN_CURSORS_MAX: usize = 10_000;
/// Most key bytes held by remembered SCAN cursors (keys may be up to 512 KiB each).
pub(crate) const SCAN_CURSOR_BYTES_MAX: usize = 64 << 20;

/// Counters of one command, for INFO commandstats.
#[derive(Debug, Default)]
pub(crate) struct CommandStats {
    pub calls: AtomicU64,
    pub usec: AtomicU64,
    pub rejected_calls: AtomicU64,
    pub failed_calls: AtomicU64,
}

/// Server-wide counters for INFO stats.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub total_connections_received: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub total_commands_processed: AtomicU64,
    pub total_error_replies: AtomicU64,
    pub total_net_input_bytes: AtomicU64,
    pub total_net_output_bytes: AtomicU64,
}

/// What CLIENT LIST shows about a connection, updated by its task.
#[derive(Debug, Clone)]
pub(crate) struct ClientInfo {
    pub addr: SocketAddr,
    pub laddr: SocketAddr,
    pub name: Bytes,
    pub db: usize,
    pub resp: RespVersion,
    pub created: Instant,
    pub last_command: Instant,
    pub last_command_name: String,
    pub multi: i64,
    pub lib_name: Bytes,
    pub lib_ver: Bytes,
    /// The ACL user the connection acts as (CLIENT LIST user=, CLIENT KILL USER).
    pub user: String,
}

/// A connection as the rest of the server sees it.
#[derive(Debug)]
pub(crate) struct ClientHandle {
    pub id: u64,
    pub info: Mutex<ClientInfo>,
    /// Set by CLIENT KILL; the connection closes at its next wake-up.
    pub killed: AtomicBool,
    pub kill: Notify,
}

impl ClientHandle {
    /// Asks the connection to close.
    pub(crate) fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.kill.notify_one();
    }
}

/// Where a SCAN cursor resumes.
#[derive(Debug, Clone)]
pub(crate) struct ScanPosition {
    pub db: usize,
    pub last_key: Bytes,
}

/// One remembered cursor.
#[derive(Debug)]
struct ScanCursor {
    position: ScanPosition,
    /// Last insert or use; the key of the cursor in `pending` or `spent`.
    stamp: u64,
    /// A client already continued from it; it is kept only so a retried page repeats.
    spent: bool,
}

/// Bounded map cursor id → position. When full, the least recently used *spent* cursor goes
/// first, and a pending one (handed out, not yet continued from) only when no spent one is
/// left. A plain oldest-first table let a slow scanner's next cursor be pushed out by other
/// clients' traffic, so its scan restarted at every page and never finished; this way every
/// scan in progress keeps its place as long as fewer than `SCAN_CURSORS_MAX` scans run at
/// once (and their positions fit in `SCAN_CURSOR_BYTES_MAX`).
#[derive(Debug)]
pub(crate) struct ScanCursors {
    next_id: u64,
    next_stamp: u64,
    cursors: HashMap<u64, ScanCursor>,
    /// stamp → id, least recently used first, for each kind.
    pending: BTreeMap<u64, u64>,
    spent: BTreeMap<u64, u64>,
    key_bytes: usize,
}

impl ScanCursors {
    fn new() -> ScanCursors {
        // Ids start at a random point so a cursor from before a restart is unlikely to name a
        // live one; they stay below 2^53 so clients that parse numbers as doubles keep them exact.
        let start = rand::random::<u64>() % (1 << 40) + 1;
        ScanCursors {
            next_id: start,
            next_stamp: 0,
            cursors: HashMap::new(),
            pending: BTreeMap::new(),
            spent: BTreeMap::new(),
            key_bytes: 0,
        }
    }

    fn stamp(&mut self) -> u64 {
        self.next_stamp += 1;
        self.next_stamp
    }

    /// Remembers `position`; the new cursor id (never 0).
    pub(crate) fn insert(&mut self, position: ScanPosition) -> u64 {
        let id = self.next_id;
        self.next_id = if self.next_id >= (1 << 53) - 1 {
            1
        } else {
            self.next_id + 1
        };
        let stamp = self.stamp();
        self.key_bytes += position.last_key.len();
        if let Some(old) = self.cursors.insert(
            id,
            ScanCursor {
                position,
                stamp,
                spent: false,
            },
        ) {
            // Only after 2^53 ids wrap around; forget the old holder of the id.
            self.forget_order(&old);
            self.key_bytes -= old.position.last_key.len();
        }
        self.pending.insert(stamp, id);
        while self.cursors.len() > SCAN_CURSORS_MAX || self.key_bytes > SCAN_CURSOR_BYTES_MAX {
            let victim = match self.spent.pop_first() {
                Some((_, victim)) => victim,
                None => match self.pending.pop_first() {
                    Some((_, victim)) => victim,
                    None => break,
                },
            };
            if let Some(old) = self.cursors.remove(&victim) {
                self.key_bytes -= old.position.last_key.len();
            }
        }
        id
    }

    fn forget_order(&mut self, cursor: &ScanCursor) {
        if cursor.spent {
            self.spent.remove(&cursor.stamp);
        } else {
            self.pending.remove(&cursor.stamp);
        }
    }

    /// The position of cursor `id`, if still remembered; the cursor becomes spent and most
    /// recently used. Cursors are kept after use so a client that repeats a page (a retry)
    /// gets the same continuation.
    pub(crate) fn get(&mut self, id: u64) -> Option<ScanPosition> {
        let stamp = self.stamp();
        let cursor = self.cursors.get_mut(&id)?;
        if cursor.spent {
            self.spent.remove(&cursor.stamp);
        } else {
            self.pending.remove(&cursor.stamp);
        }
        cursor.stamp = stamp;
        cursor.spent = true;
        self.spent.insert(stamp, id);
        Some(cursor.position.clone())
    }
}

/// Everything connections share.
pub struct Server {
    pub(crate) keyspace: Arc<Keyspace>,
    /// `DEBUG DATA-PATH deferred`: operations answer later, from the blocking pool, as the
    /// cluster coordinator will (`data::Spawned`), to exercise that path end to end.
    pub(crate) deferred_data_path: AtomicBool,
    /// This node in cluster mode (`cluster-enabled yes`): operations go to the coordinator.
    pub(crate) cluster: std::sync::OnceLock<Arc<crate::cluster::ClusterNode>>,
    pub(crate) config: RwLock<Config>,
    /// The executor's gate (`exec.rs`): data commands hold it shared while they run; an EXEC
    /// whose queue touches whole databases, and a replica swapping in a full sync, exclusive.
    /// Async, so waiting for it never parks a worker thread.
    pub(crate) gate: tokio::sync::RwLock<()>,
    pub(crate) clients: Mutex<BTreeMap<u64, Arc<ClientHandle>>>,
    pub(crate) next_client_id: AtomicU64,
    pub(crate) stats: Stats,
    /// Latency histograms and operator counters (`crate::metrics`).
    pub(crate) metrics: crate::metrics::Metrics,
    /// SLOWLOG and LATENCY.
    pub(crate) slowlog: crate::slowlog::SlowLog,
    /// Users and permissions (`requirepass` is the `default` user's password).
    pub(crate) acl: crate::acl::Acl,
    pub(crate) command_stats: Vec<CommandStats>,
    /// Leader and replica state (`crate::replication`).
    pub(crate) replication: crate::replication::Replication,
    pub(crate) scan_cursors: Mutex<ScanCursors>,
    pub(crate) started: Instant,
    pub(crate) run_id: String,
    /// Checkpoints (SAVE, BGSAVE, backups) and what INFO persistence says of them.
    pub(crate) persistence: Arc<crate::persistence::Persistence>,
    pub(crate) bound_port: AtomicU64,
    /// Becomes true when SHUTDOWN (or a signal) asks the server to stop.
    pub(crate) shutdown: tokio::sync::watch::Sender<bool>,
    /// Wakes the background task that clears flushed namespaces.
    pub(crate) drop_wakeup: Notify,
    /// The clock expiry reads, when it is the manual test clock (`clock = manual`), for
    /// DEBUG ADVANCE-CLOCK.
    pub(crate) manual_clock: Option<Arc<ringkv_store::ManualClock>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").finish_non_exhaustive()
    }
}

/// Unix time in seconds.
pub(crate) fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Server {
    pub(crate) fn new(keyspace: Keyspace, config: Config) -> Server {
        let slowlog = crate::slowlog::SlowLog::new(
            config.slowlog_log_slower_than,
            config.slowlog_max_len,
            config.latency_monitor_threshold,
        );
        let acl = crate::acl::Acl::new(config.requirepass.as_deref());
        let replication = crate::replication::Replication::new(&config.replication, &config.dir);
        let run_id: String = (0..40)
            .map(|_| char::from(b"0123456789abcdef"[rand::random::<usize>() % 16]))
            .collect();
        Server {
            keyspace: Arc::new(keyspace),
            deferred_data_path: AtomicBool::new(false),
            cluster: std::sync::OnceLock::new(),
            config: RwLock::new(config),
            gate: tokio::sync::RwLock::new(()),
            clients: Mutex::new(BTreeMap::new()),
            next_client_id: AtomicU64::new(1),
            stats: Stats::default(),
            metrics: crate::metrics::Metrics::new(crate::catalog::commands().len()),
            slowlog,
            acl,
            replication,
            command_stats: (0..crate::catalog::commands().len())
                .map(|_| CommandStats::default())
                .collect(),
            scan_cursors: Mutex::new(ScanCursors::new()),
            started: Instant::now(),
            run_id,
            persistence: Arc::new(crate::persistence::Persistence::new()),
            bound_port: AtomicU64::new(0),
            shutdown: tokio::sync::watch::channel(false).0,
            drop_wakeup: Notify::new(),
            manual_clock: None,
        }
    }

    /// Asks the server to stop (SHUTDOWN, a signal): listeners stop, connections close, the
    /// keyspace is saved and the engine closed.
    pub fn request_shutdown(&self) {
        self.shutdown.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(key: &str) -> ScanPosition {
        ScanPosition {
            db: 0,
            last_key: Bytes::from(key.to_string()),
        }
    }

    #[test]
    fn spent_cursors_go_before_pending_ones() {
        let mut cursors = ScanCursors::new();
        let slow = cursors.insert(position("slow"));
        // Another client pages through far more than the table holds.
        let mut cursor = cursors.insert(position("fast"));
        for _ in 0..SCAN_CURSORS_MAX * 2 {
            assert!(cursors.get(cursor).is_some(), "a fast scan lost its cursor");
            cursor = cursors.insert(position("fast"));
        }
        assert_eq!(cursors.get(slow).map(|p| p.last_key), Some("slow".into()));
        assert!(cursors.cursors.len() <= SCAN_CURSORS_MAX);
        assert_eq!(
            cursors.cursors.len(),
            cursors.pending.len() + cursors.spent.len()
        );
    }

    #[test]
    fn abandoned_scans_are_forgotten_oldest_first_and_bytes_are_bounded() {
        let mut cursors = ScanCursors::new();
        let first = cursors.insert(position("a"));
        let second = cursors.insert(position("b"));
        for _ in 0..SCAN_CURSORS_MAX - 1 {
            cursors.insert(position("x"));
        }
        assert!(cursors.get(first).is_none());
        assert!(cursors.get(second).is_some());
        let big = Bytes::from(vec![b'k'; 512 << 10]);
        for _ in 0..200 {
            cursors.insert(ScanPosition {
                db: 0,
                last_key: big.clone(),
            });
        }
        assert!(cursors.key_bytes <= SCAN_CURSOR_BYTES_MAX);
        let held: usize = cursors
            .cursors
            .values()
            .map(|c| c.position.last_key.len())
            .sum();
        assert_eq!(held, cursors.key_bytes);
    }
}
