//! Latency histograms and the one place that turns the server's counters into
//! numbers for operators: the Prometheus text of `/metrics` and the INFO
//! sections `latencystats` and `engine`.
//!
//! Both views read the same atomics and the same `Db::stats()` snapshot
//! fields, so INFO and `/metrics` never disagree on a number (the metrics test
//! checks it).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::catalog::commands;
use crate::server::Server;
use ringkv_store::DATABASES;

/// Upper bounds of the latency buckets, in microseconds. Roughly 1-2-5 steps from 1 µs to 10 s:
/// fine enough for p50/p99 of fast commands, few enough (23) that one histogram per command
/// costs under 200 bytes.
pub(crate) const BUCKET_BOUNDS_MICROS: [u64; 22] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000,
    200_000, 500_000, 1_000_000, 2_000_000, 5_000_000, 10_000_000,
];

/// A fixed-bucket latency histogram; lock-free, one relaxed add per observation.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    /// Per bucket (not cumulative); the last one is +Inf.
    buckets: [AtomicU64; BUCKET_BOUNDS_MICROS.len() + 1],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub(crate) fn observe(&self, elapsed: Duration) {
        let micros = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
        let bucket = BUCKET_BOUNDS_MICROS.partition_point(|&bound| bound < micros);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Observations so far.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn counts(&self) -> Vec<u64> {
        self.buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }

    /// The smallest bucket bound below which at least `percentile`% of observations fall, in
    /// µs (an upper estimate, as Redis' HDR histogram also reports bucket edges). None if empty.
    pub(crate) fn percentile_micros(&self, percentile: f64) -> Option<u64> {
        debug_assert!((0.0..=100.0).contains(&percentile));
        let counts = self.counts();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let wanted = ((percentile / 100.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= wanted {
                return Some(
                    BUCKET_BOUNDS_MICROS
                        .get(i)
                        .copied()
                        .unwrap_or(BUCKET_BOUNDS_MICROS[BUCKET_BOUNDS_MICROS.len() - 1] * 2),
                );
            }
        }
        None
    }

    /// (bucket upper bound in µs, observations at or below it) for the non-empty buckets, as
    /// LATENCY HISTOGRAM shows them.
    pub(crate) fn cumulative_micros(&self) -> Vec<(u64, u64)> {
        let mut cumulative = 0;
        let mut out = Vec::new();
        for (i, count) in self.counts().into_iter().enumerate() {
            cumulative += count;
            if count > 0 {
                let bound = BUCKET_BOUNDS_MICROS.get(i).copied().unwrap_or(u64::MAX);
                out.push((bound, cumulative));
            }
        }
        out
    }

    /// Forgets every observation (CONFIG RESETSTAT).
    pub(crate) fn reset(&self) {
        for bucket in &self.buckets {
            bucket.store(0, Ordering::Relaxed);
        }
        self.count.store(0, Ordering::Relaxed);
        self.sum_micros.store(0, Ordering::Relaxed);
    }

    /// Prometheus histogram lines (`_bucket`, `_sum`, `_count`) with `labels` (e.g. `cmd="get"`).
    fn write_prometheus(&self, out: &mut String, name: &str, labels: &str) {
        let counts = self.counts();
        let mut cumulative = 0;
        for (i, count) in counts.iter().enumerate() {
            cumulative += count;
            let le = match BUCKET_BOUNDS_MICROS.get(i) {
                Some(bound) => format!("{}", *bound as f64 / 1e6),
                None => "+Inf".to_string(),
            };
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// Counters that have no other home, and the per-command histograms.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// One per entry of the command registry, same index as `Server::command_stats`.
    pub command_latency: Vec<Histogram>,
    /// Writes refused with -OOM because `maxmemory` was exceeded.
    pub oom_rejections: AtomicU64,
    /// Connections refused by protected mode.
    pub protected_rejections: AtomicU64,
    /// Clients closed because their pending output passed `client-output-buffer-limit`.
    pub output_limit_disconnects: AtomicU64,
    /// Clients closed after `timeout` seconds idle.
    pub idle_disconnects: AtomicU64,
    /// Commands refused by ACL rules (NOPERM).
    pub acl_denials: AtomicU64,
    /// AUTH attempts with a wrong user or password.
    pub auth_failures: AtomicU64,
}

impl Metrics {
    /// Empty metrics for `commands` registered commands.
    pub(crate) fn new(commands: usize) -> Metrics {
        Metrics {
            command_latency: (0..commands).map(|_| Histogram::default()).collect(),
            oom_rejections: AtomicU64::new(0),
            protected_rejections: AtomicU64::new(0),
            output_limit_disconnects: AtomicU64::new(0),
            idle_disconnects: AtomicU64::new(0),
            acl_denials: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
        }
    }

    /// CONFIG RESETSTAT.
    pub(crate) fn reset(&self) {
        for histogram in &self.command_latency {
            histogram.reset();
        }
    }
}

/// Percentiles INFO latencystats shows, as Redis' default `latency-tracking-info-percentiles`.
const INFO_PERCENTILES: [f64; 3] = [50.0, 99.0, 99.9];

/// INFO `latencystats`: `latency_percentiles_usec_<cmd>:p50=…,p99=…,p99.9=…`.
pub(crate) fn info_latencystats(server: &Server, out: &mut String) {
    out.push_str("# Latencystats\r\n");
    let names = (0..commands().len()).map(|index| commands().name(index));
    for (name, histogram) in names.zip(&server.metrics.command_latency) {
        if histogram.count() == 0 {
            continue;
        }
        let _ = write!(out, "latency_percentiles_usec_{name}:");
        for (i, p) in INFO_PERCENTILES.iter().enumerate() {
            let value = histogram.percentile_micros(*p).unwrap_or(0);
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(out, "{sep}p{p}={value}.000");
        }
        out.push_str("\r\n");
    }
}

/// INFO `engine`: the storage engine's numbers, named as the `/metrics` series they match.
pub(crate) fn info_engine(server: &Server, out: &mut String) {
    let s = server.keyspace.engine().stats();
    let _ = write!(
        out,
        "# Engine\r\nmemtable_bytes:{}\r\nfrozen_memtable_bytes:{}\r\nblock_cache_bytes:{}\r\nblock_cache_capacity:{}\r\nblock_cache_hits:{}\r\nblock_cache_misses:{}\r\nrow_cache_bytes:{}\r\nrow_cache_capacity:{}\r\nrow_cache_hits:{}\r\nrow_cache_misses:{}\r\nindex_filter_bytes:{}\r\nopen_tables:{}\r\nwal_bytes_written:{}\r\nwal_syncs:{}\r\nwal_sync_usec:{}\r\nflushes:{}\r\nflush_bytes:{}\r\ncompactions:{}\r\ncompaction_bytes_read:{}\r\ncompaction_bytes_written:{}\r\nwrite_stall_usec:{}\r\nwrite_slowdowns:{}\r\noom_rejections:{}\r\nacl_denials:{}\r\nauth_failures:{}\r\noutput_limit_disconnects:{}\r\nidle_disconnects:{}\r\nprotected_mode_rejections:{}\r\n",
        s.memtable_bytes,
        s.frozen_memtable_bytes,
        s.block_cache_bytes,
        s.block_cache_capacity,
        s.block_cache_hits,
        s.block_cache_misses,
        s.row_cache.bytes,
        s.row_cache.capacity,
        s.row_cache.hits,
        s.row_cache.misses,
        s.table_index_filter_bytes,
        s.open_tables,
        s.wal.bytes_written,
        s.wal.syncs,
        s.wal.sync_micros_total,
        s.flushes,
        s.flush_bytes,
        s.compactions,
        s.compaction_bytes_read,
        s.compaction_bytes_written,
        s.stall_micros,
        s.slowdowns,
        server.metrics.oom_rejections.load(Ordering::Relaxed),
        server.metrics.acl_denials.load(Ordering::Relaxed),
        server.metrics.auth_failures.load(Ordering::Relaxed),
        server.metrics.output_limit_disconnects.load(Ordering::Relaxed),
        server.metrics.idle_disconnects.load(Ordering::Relaxed),
        server.metrics.protected_rejections.load(Ordering::Relaxed),
    );
}

/// Writes `# HELP`/`# TYPE` and one unlabelled sample.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
    );
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
}

/// The whole `/metrics` page, in Prometheus text format 0.0.4.
pub(crate) fn render(server: &Server) -> String {
    let stats = &server.stats;
    let m = &server.metrics;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut out = String::with_capacity(32 * 1024);
    let o = &mut out;

    // Clients.
    single(
        o,
        "ringkv_connected_clients",
        "gauge",
        "Open client connections.",
        server.clients.lock().len(),
    );
    single(
        o,
        "ringkv_maxclients",
        "gauge",
        "Most simultaneous clients (maxclients).",
        server.config.read().maxclients,
    );
    single(
        o,
        "ringkv_connections_received_total",
        "counter",
        "Connections accepted since start (INFO total_connections_received).",
        load(&stats.total_connections_received),
    );
    single(
        o,
        "ringkv_rejected_connections_total",
        "counter",
        "Connections refused: maxclients or protected mode (INFO rejected_connections).",
        load(&stats.rejected_connections),
    );
    single(
        o,
        "ringkv_protected_mode_rejections_total",
        "counter",
        "Connections refused by protected mode.",
        load(&m.protected_rejections),
    );
    single(
        o,
        "ringkv_output_limit_disconnects_total",
        "counter",
        "Clients closed for exceeding client-output-buffer-limit.",
        load(&m.output_limit_disconnects),
    );
    single(
        o,
        "ringkv_idle_disconnects_total",
        "counter",
        "Clients closed after the idle timeout.",
        load(&m.idle_disconnects),
    );
    single(
        o,
        "ringkv_auth_failures_total",
        "counter",
        "Failed AUTH attempts.",
        load(&m.auth_failures),
    );
    single(
        o,
        "ringkv_acl_denials_total",
        "counter",
        "Commands refused by ACL rules.",
        load(&m.acl_denials),
    );
    single(
        o,
        "ringkv_net_input_bytes_total",
        "counter",
        "Bytes read from clients.",
        load(&stats.total_net_input_bytes),
    );
    single(
        o,
        "ringkv_net_output_bytes_total",
        "counter",
        "Bytes written to clients.",
        load(&stats.total_net_output_bytes),
    );

    // Commands.
    single(
        o,
        "ringkv_commands_processed_total",
        "counter",
        "Commands processed since start (INFO total_commands_processed).",
        load(&stats.total_commands_processed),
    );
    single(
        o,
        "ringkv_error_replies_total",
        "counter",
        "Error replies sent.",
        load(&stats.total_error_replies),
    );
    single(
        o,
        "ringkv_oom_rejections_total",
        "counter",
        "Writes refused with -OOM (maxmemory).",
        load(&m.oom_rejections),
    );
    header(
        o,
        "ringkv_command_calls_total",
        "counter",
        "Calls per command (INFO commandstats calls).",
    );
    let names = || (0..commands().len()).map(|index| commands().name(index));
    for (name, command) in names().zip(&server.command_stats) {
        let calls = load(&command.calls);
        if calls > 0 {
            let _ = writeln!(o, "ringkv_command_calls_total{{cmd=\"{name}\"}} {calls}");
        }
    }
    header(
        o,
        "ringkv_command_failed_calls_total",
        "counter",
        "Calls per command that replied with an error.",
    );
    for (name, command) in names().zip(&server.command_stats) {
        let failed = load(&command.failed_calls);
        if failed > 0 {
            let _ = writeln!(
                o,
                "ringkv_command_failed_calls_total{{cmd=\"{name}\"}} {failed}"
            );
        }
    }
    header(
        o,
        "ringkv_command_duration_seconds",
        "histogram",
        "Time to run a command, per command.",
    );
    for (name, histogram) in names().zip(&m.command_latency) {
        if histogram.count() > 0 {
            histogram.write_prometheus(
                o,
                "ringkv_command_duration_seconds",
                &format!("cmd=\"{name}\""),
            );
        }
    }
    single(
        o,
        "ringkv_slowlog_length",
        "gauge",
        "Entries in the slow log (SLOWLOG LEN).",
        server.slowlog.len(),
    );

    // Keys.
    header(
        o,
        "ringkv_keys",
        "gauge",
        "Keys per logical database (DBSIZE).",
    );
    for db in 0..DATABASES {
        let _ = writeln!(
            o,
            "ringkv_keys{{db=\"{db}\"}} {}",
            crate::data::key_count(&server.keyspace, db)
        );
    }
    single(
        o,
        "ringkv_expired_keys_total",
        "counter",
        "Keys removed because their TTL passed (INFO expired_keys).",
        server.keyspace.expired_keys(),
    );
    single(
        o,
        "ringkv_evicted_keys_total",
        "counter",
        "Keys evicted for maxmemory; always 0, ringkv refuses writes (noeviction).",
        0,
    );
    let (hits, misses) = server.keyspace.hits_and_misses();
    single(
        o,
        "ringkv_keyspace_hits_total",
        "counter",
        "Reads that found their key.",
        hits,
    );
    single(
        o,
        "ringkv_keyspace_misses_total",
        "counter",
        "Reads that did not find their key.",
        misses,
    );

    // Memory.
    let e = server.keyspace.engine().stats();
    header(
        o,
        "ringkv_memory_bytes",
        "gauge",
        "Memory held by component.",
    );
    for (component, bytes) in [
        ("memtable", e.memtable_bytes as u64),
        ("frozen_memtables", e.frozen_memtable_bytes as u64),
        ("block_cache", e.block_cache_bytes as u64),
        ("row_cache", e.row_cache.bytes as u64),
        ("index_filter", e.table_index_filter_bytes as u64),
    ] {
        let _ = writeln!(
            o,
            "ringkv_memory_bytes{{component=\"{component}\"}} {bytes}"
        );
    }
    single(
        o,
        "ringkv_maxmemory_bytes",
        "gauge",
        "maxmemory (0: no limit).",
        server.config.read().maxmemory,
    );
    single(
        o,
        "ringkv_resident_memory_bytes",
        "gauge",
        "Resident set size of the process.",
        resident_bytes(),
    );
    single(
        o,
        "ringkv_block_cache_capacity_bytes",
        "gauge",
        "Block cache capacity.",
        e.block_cache_capacity,
    );
    single(
        o,
        "ringkv_block_cache_hits_total",
        "counter",
        "Block cache hits.",
        e.block_cache_hits,
    );
    single(
        o,
        "ringkv_block_cache_misses_total",
        "counter",
        "Block cache misses.",
        e.block_cache_misses,
    );
    single(
        o,
        "ringkv_row_cache_capacity_bytes",
        "gauge",
        "Row cache capacity.",
        e.row_cache.capacity,
    );
    single(
        o,
        "ringkv_row_cache_hits_total",
        "counter",
        "Point reads answered by the row cache.",
        e.row_cache.hits,
    );
    single(
        o,
        "ringkv_row_cache_misses_total",
        "counter",
        "Point reads the row cache could not answer.",
        e.row_cache.misses,
    );

    // Engine: WAL, flushes, compactions, stalls.
    single(
        o,
        "ringkv_wal_bytes_written_total",
        "counter",
        "Bytes written to the write-ahead log.",
        e.wal.bytes_written,
    );
    header(
        o,
        "ringkv_wal_fsync_seconds",
        "summary",
        "WAL fsync latency (sum and count).",
    );
    let _ = writeln!(
        o,
        "ringkv_wal_fsync_seconds_sum {}",
        e.wal.sync_micros_total as f64 / 1e6
    );
    let _ = writeln!(o, "ringkv_wal_fsync_seconds_count {}", e.wal.syncs);
    single(
        o,
        "ringkv_flushes_total",
        "counter",
        "Memtable flushes.",
        e.flushes,
    );
    single(
        o,
        "ringkv_flush_bytes_total",
        "counter",
        "Bytes written by memtable flushes.",
        e.flush_bytes,
    );
    single(
        o,
        "ringkv_compactions_total",
        "counter",
        "Compactions.",
        e.compactions,
    );
    single(
        o,
        "ringkv_compaction_read_bytes_total",
        "counter",
        "Bytes read by compactions.",
        e.compaction_bytes_read,
    );
    single(
        o,
        "ringkv_compaction_written_bytes_total",
        "counter",
        "Bytes written by compactions.",
        e.compaction_bytes_written,
    );
    single(
        o,
        "ringkv_write_stall_seconds_total",
        "counter",
        "Time writers spent stalled on flushes/compactions.",
        e.stall_micros as f64 / 1e6,
    );
    single(
        o,
        "ringkv_write_slowdowns_total",
        "counter",
        "Writes delayed by level-0 slowdown.",
        e.slowdowns,
    );
    single(
        o,
        "ringkv_open_tables",
        "gauge",
        "Open table files.",
        e.open_tables,
    );
    header(
        o,
        "ringkv_level_bytes",
        "gauge",
        "Table bytes per LSM level.",
    );
    for (level, bytes) in e.level_bytes.iter().enumerate() {
        let _ = writeln!(o, "ringkv_level_bytes{{level=\"{level}\"}} {bytes}");
    }
    single(
        o,
        "ringkv_engine_last_sequence",
        "gauge",
        "Sequence number of the engine's last write.",
        e.last_sequence,
    );
    single(
        o,
        "ringkv_engine_write_error",
        "gauge",
        "1 if the engine refuses writes after an I/O error.",
        u8::from(e.write_error.is_some()),
    );
    replication_metrics(server, o);
    cluster_metrics(server, o);
    single(
        o,
        "ringkv_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
        server.started.elapsed().as_secs(),
    );
    out
}

/// Replication series, from the same snapshot INFO replication renders (`replication::view`),
/// so both report the same offsets and lags. Offsets are engine sequence numbers, as in INFO
/// (docs/replication.md says why). A leader labels each replica `replica="ip:port"` with the
/// port it announced.
fn replication_metrics(server: &Server, o: &mut String) {
    let view = crate::replication::view(server);
    single(
        o,
        "ringkv_replication_offset",
        "gauge",
        "This server's replication offset: last sequence written (leader) or applied (replica); INFO master_repl_offset.",
        view.last_seq,
    );
    single(
        o,
        "ringkv_replication_is_replica",
        "gauge",
        "1 while this server follows a leader (INFO role:slave).",
        u8::from(view.link.is_some()),
    );
    single(
        o,
        "ringkv_connected_replicas",
        "gauge",
        "Replicas connected to this server (INFO connected_slaves).",
        view.replicas.len(),
    );
    type Render = fn(&crate::replication::ReplicaView) -> String;
    let series: [(&str, &str, Render); 5] = [
        (
            "ringkv_replica_acked_offset",
            "Last offset the replica acknowledged as applied (INFO slaveN offset).",
            |r| r.ack_seq.to_string(),
        ),
        (
            "ringkv_replica_lag_offset",
            "Offsets the replica has not acknowledged: leader offset minus acked (INFO slaveN lag_seq).",
            |r| r.lag_seq.to_string(),
        ),
        (
            "ringkv_replica_lag_seconds",
            "Age of the oldest write the replica has not acknowledged, to 10 ms (INFO slaveN lag_ms / 1000).",
            |r| format!("{:.3}", r.lag.as_secs_f64()),
        ),
        (
            "ringkv_replica_last_ack_age_seconds",
            "Seconds since the replica's last acknowledgement (INFO slaveN lag).",
            |r| r.last_ack_secs.to_string(),
        ),
        (
            "ringkv_replica_online",
            "1 once the replica streams (INFO slaveN state=online), 0 during its full sync.",
            |r| u8::from(r.state == "online").to_string(),
        ),
    ];
    for (name, help, value) in series {
        header(o, name, "gauge", help);
        for replica in &view.replicas {
            let _ = writeln!(
                o,
                "{name}{{replica=\"{}:{}\"}} {}",
                replica.ip,
                replica.port,
                value(replica)
            );
        }
    }
    if let Some(link) = &view.link {
        single(
            o,
            "ringkv_master_link_up",
            "gauge",
            "1 while the link to the leader streams (INFO master_link_status:up).",
            u8::from(link.up),
        );
        single(
            o,
            "ringkv_master_sync_in_progress",
            "gauge",
            "1 while a full sync from the leader runs (INFO master_sync_in_progress).",
            u8::from(link.sync_in_progress),
        );
        single(
            o,
            "ringkv_master_last_io_seconds",
            "gauge",
            "Seconds since the leader last sent anything; -1 while the link is down (INFO master_last_io_seconds_ago).",
            link.last_io_secs,
        );
        single(
            o,
            "ringkv_master_offset",
            "gauge",
            "The leader's offset as last heard from it (batches and 1 s heartbeats).",
            link.leader_seq,
        );
        single(
            o,
            "ringkv_replica_applied_offset",
            "gauge",
            "Offset this replica applied (INFO slave_repl_offset).",
            view.last_seq,
        );
        single(
            o,
            "ringkv_master_lag_offset",
            "gauge",
            "Offsets this replica is behind the leader's last known offset (INFO slave_lag_seq).",
            view.link_lag_seq().unwrap_or(0),
        );
    }
}

/// Redis' reply to a write refused for `maxmemory`.
pub(crate) const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";

/// Bytes `maxmemory` limits: the memtables (active and frozen), which grow with writes until a
/// flush. Block cache and index/filter memory have their own bounds (`block-cache-bytes`, table
/// count) and are not counted.
pub(crate) fn limited_memory_bytes(server: &Server) -> u64 {
    let stats = server.keyspace.engine().stats();
    (stats.memtable_bytes + stats.frozen_memtable_bytes) as u64
}

/// True if `maxmemory` is set and the memtables hold more.
pub(crate) fn over_maxmemory(server: &Server) -> bool {
    let limit = server.config.read().maxmemory;
    limit > 0 && limited_memory_bytes(server) > limit
}

/// Resident set size in bytes, from /proc (0 where unavailable).
pub(crate) fn resident_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(0) as u64
}

/// Cluster mode's sloppy quorum and hinted handoff (docs/cluster.md, "Sloppy quorum and
/// hinted handoff"); nothing on a single node.
fn cluster_metrics(server: &Server, o: &mut String) {
    let Some(node) = server.cluster.get() else {
        return;
    };
    let sloppy = node.data.sloppy_stats();
    single(
        o,
        "ringkv_cluster_hints_sent_total",
        "counter",
        "Hints this node (as coordinator) stored on fallback nodes for replicas that failed or were down.",
        sloppy.hints_sent.load(Ordering::Relaxed),
    );
    single(
        o,
        "ringkv_cluster_writes_strict_refused_total",
        "counter",
        "Writes answered NOQUORUM for reaching fewer of the slot's own replicas than their PW.",
        sloppy.strict_refused.load(Ordering::Relaxed),
    );
    single(
        o,
        "ringkv_cluster_stale_events_refused_total",
        "counter",
        "Write events this node refused as their event replica for arriving after their coordinator's request timeout (a request held in the network).",
        sloppy.stale_events.load(Ordering::Relaxed),
    );
    let aae = node.data.trees().stats();
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    single(
        o,
        "ringkv_cluster_aae_trees_ready",
        "gauge",
        "1 once the anti-entropy trees are built from the store.",
        u8::from(node.data.trees().is_ready()),
    );
    single(
        o,
        "ringkv_cluster_aae_builds_total",
        "counter",
        "Builds of the anti-entropy trees from the store.",
        load(&aae.builds),
    );
    single(
        o,
        "ringkv_cluster_aae_exchanges_total",
        "counter",
        "Anti-entropy exchanges with a peer completed.",
        load(&aae.exchanges),
    );
    single(
        o,
        "ringkv_cluster_aae_slots_differing_total",
        "counter",
        "Slots whose tree roots differed in an exchange.",
        load(&aae.slots_differing),
    );
    single(
        o,
        "ringkv_cluster_aae_keys_differing_total",
        "counter",
        "Keys found different or missing on one side in an exchange.",
        load(&aae.keys_differing),
    );
    single(
        o,
        "ringkv_cluster_aae_keys_repaired_total",
        "counter",
        "Keys repaired by anti-entropy.",
        load(&aae.keys_repaired),
    );
    single(
        o,
        "ringkv_cluster_aae_repair_bytes_total",
        "counter",
        "Record bytes anti-entropy moved for repairs, both ways.",
        load(&aae.repair_bytes),
    );
    let Some(hints) = node.data.hints() else {
        return;
    };
    let h = hints.stats();
    single(
        o,
        "ringkv_cluster_hints_pending",
        "gauge",
        "Hints this node holds for other nodes.",
        h.pending,
    );
    single(
        o,
        "ringkv_cluster_hints_bytes",
        "gauge",
        "Bytes of the hints this node holds.",
        h.bytes,
    );
    single(
        o,
        "ringkv_cluster_hints_stored_total",
        "counter",
        "Hints stored on this node (merges into a held hint included).",
        h.stored,
    );
    single(
        o,
        "ringkv_cluster_hints_delivered_total",
        "counter",
        "Hints this node delivered to their replica.",
        h.delivered,
    );
    single(
        o,
        "ringkv_cluster_hints_expired_total",
        "counter",
        "Hints dropped undelivered: past cluster-hint-max-age, or their node left.",
        h.expired,
    );
    single(
        o,
        "ringkv_cluster_hints_refused_total",
        "counter",
        "Hints refused at cluster-hints-max-bytes.",
        h.refused,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_report_bucket_upper_bounds() {
        let h = Histogram::default();
        assert_eq!(h.percentile_micros(50.0), None);
        for _ in 0..99 {
            h.observe(Duration::from_micros(3));
        }
        h.observe(Duration::from_millis(40));
        assert_eq!(h.percentile_micros(50.0), Some(5));
        assert_eq!(h.percentile_micros(99.0), Some(5));
        assert_eq!(h.percentile_micros(99.9), Some(50_000));
        assert_eq!(h.count(), 100);
        h.reset();
        assert_eq!(h.count(), 0);
    }

    #[test]
    fn prometheus_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(1));
        h.observe(Duration::from_secs(100));
        let mut out = String::new();
        h.write_prometheus(&mut out, "x", "cmd=\"get\"");
        assert!(out.contains("x_bucket{cmd=\"get\",le=\"0.000001\"} 1\n"));
        assert!(out.contains("x_bucket{cmd=\"get\",le=\"+Inf\"} 2\n"));
        assert!(out.contains("x_count{cmd=\"get\"} 2\n"));
    }
}
