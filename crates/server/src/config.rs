//! Server settings: the one table that declares them.
//!
//! Each setting is declared once below — key, Rust type, default, bounds, live or
//! restart-only, secret or not, and a doc line — and everything else comes from that
//! declaration (see `settings.rs`): the `--<key>` flag and the `RINGKV_<KEY>` variable of the
//! binary, the TOML key (kebab- or snake_case), CONFIG GET/SET/REWRITE, the INFO fields, and
//! the check that `docs/config.md` and `ringkv.toml` document exactly these settings.
//!
//! To add a setting: declare it here, use its field, and document it in docs/config.md and
//! ringkv.toml (the test fails until you do). If CONFIG SET must reach something that copied
//! the value at start, add it to `apply_live` in `cmd/server.rs`.

use std::path::PathBuf;

use ringkv_engine::FsyncPolicy;

use crate::settings::{choice_codec, settings_table, Codec, Kind, Mode, Plain};

/// Default for [`Config::query_buffer_bytes_max`]: 1 GiB, Redis' `client-query-buffer-limit`.
pub const QUERY_BUFFER_BYTES_MAX_DEFAULT: usize = 1 << 30;

/// Default for [`Config::admin_port`]: the port Prometheus' Redis exporter uses, so scrape
/// configs written for it keep working.
pub const ADMIN_PORT_DEFAULT: u16 = 9121;

/// Default for [`Config::maxclients`], as Redis.
pub const MAXCLIENTS_DEFAULT: usize = 10_000;

/// Default for [`Config::output_buffer_bytes_max`]: 256 MiB, as Redis' pubsub hard limit; a
/// normal client that lets this much reply data pile up is not reading.
pub const OUTPUT_BUFFER_BYTES_MAX_DEFAULT: usize = 256 << 20;

/// Default change-log (replication backlog) size: how far a replica may fall behind, or how
/// long it may be away, and still continue with a partial resync. Holds whole batches.
pub const BACKLOG_BYTES_DEFAULT: usize = 64 << 20;

/// Smallest replication backlog: a smaller `repl-backlog-size` is raised to this, as Redis
/// raises it to its minimum, so a replica can always resume after a short hiccup.
pub const BACKLOG_BYTES_MIN: usize = 1 << 20;

/// Smallest `proto-max-bulk-len` and `client-query-buffer-limit` (1 MiB, Redis' bounds): a
/// limit below it would refuse ordinary commands.
const BYTES_LIMIT_MIN: i128 = 1 << 20;

/// Who may run DEBUG (Redis 7's `enable-debug-command`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DebugCommand {
    /// Nobody.
    No,
    /// Clients connected over loopback only.
    Local,
    /// Every client.
    Yes,
}
choice_codec!(DebugCommand { No = "no", Local = "local", Yes = "yes" });

/// Where expiry time comes from (`clock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockMode {
    /// The system's wall clock.
    System,
    /// A test mode: time moves only by `DEBUG ADVANCE-CLOCK`.
    Manual,
}
choice_codec!(ClockMode { System = "system", Manual = "manual" });

settings_table! {
    /// Settings of a server.
    #[derive(Debug, Clone)]
    pub struct Config {
        /// TCP port (0: any free port; the bound one is logged).
        port: u16 = 6379;
        "port" {}
        /// Address the client and TLS ports listen on.
        bind: String = "127.0.0.1".into();
        "bind" {}
        /// Serve the admin HTTP port (/health, /ready, /metrics): yes or no.
        admin: bool = true;
        "admin" {}
        /// Admin HTTP port serving /health, /ready and /metrics; 0: any free port (logged).
        admin_port: Option<u16> = Some(ADMIN_PORT_DEFAULT);
        "admin-port" {}
        /// Address the admin HTTP port listens on (its own setting: metrics stay on loopback
        /// when clients are served on every interface).
        admin_bind: String = "127.0.0.1".into();
        "admin-bind" {}
        /// Data directory (the engine's files).
        dir: PathBuf = PathBuf::from("./data");
        "dir" {}
        /// WAL fsync policy, as Redis' appendfsync: always, everysec or no.
        appendfsync: FsyncPolicy = FsyncPolicy::EverySec;
        "appendfsync" { mode: Mode::Live }
        /// Password clients must give with AUTH (the default user's); unset: no AUTH.
        requirepass: Option<String> = None;
        "requirepass" { mode: Mode::Live, secret: true }
        /// Largest bulk string a client may send, in bytes.
        proto_max_bulk_len: usize = ringkv_protocol::BULK_BYTES_MAX_DEFAULT;
        "proto-max-bulk-len" { mode: Mode::Live, min: BYTES_LIMIT_MIN }
        /// Most arguments in one command.
        args_max: usize = ringkv_protocol::ARGS_MAX_DEFAULT;
        "proto-max-args" { mode: Mode::Live, min: 1 }
        /// Most bytes buffered from one client's requests before it is disconnected.
        query_buffer_bytes_max: usize = QUERY_BUFFER_BYTES_MAX_DEFAULT;
        "client-query-buffer-limit" { mode: Mode::Live, min: BYTES_LIMIT_MIN }
        /// Most simultaneous clients; more are refused with -ERR max number of clients reached.
        maxclients: usize = MAXCLIENTS_DEFAULT;
        "maxclients" { mode: Mode::Live, min: 1, max: u32::MAX as i128, info: Some("clients") }
        /// Memtable size in bytes before it is flushed.
        memtable_bytes_max: usize = ringkv_engine::Options::default().memtable_bytes_max;
        "memtable-bytes-max" { min: 1 }
        /// Block cache size in bytes.
        block_cache_bytes: usize = ringkv_engine::Options::default().block_cache_bytes;
        "block-cache-bytes" {}
        /// Row cache size in bytes (latest state of hot keys for point reads; 0 turns it off).
        row_cache_bytes: usize = ringkv_engine::Options::default().row_cache_bytes;
        "row-cache-bytes" {}
        /// Log level: Redis' debug, verbose, notice, warning, nothing, or tracing's error,
        /// warn, info, trace (the binary sets up logging).
        loglevel: String = "notice".into();
        "loglevel" via LogLevel { mode: Mode::Live }
        /// Bytes the memtables may hold before writes get -OOM; 0: no limit (Redis'
        /// maxmemory, policy noeviction).
        maxmemory: u64 = 0;
        "maxmemory" { mode: Mode::Live, info: Some("memory") }
        /// Seconds a client may stay idle before it is closed; 0: never (Redis' timeout).
        timeout_seconds: u64 = 0;
        "timeout" { mode: Mode::Live }
        /// Most pending reply bytes per client before it is closed (slow readers); 0: no
        /// limit.
        output_buffer_bytes_max: usize = OUTPUT_BUFFER_BYTES_MAX_DEFAULT;
        "client-output-buffer-limit" via OutputBufferLimit { mode: Mode::Live }
        /// Refuse non-loopback clients while no password is set and bind is not loopback
        /// only: yes or no.
        protected_mode: bool = true;
        "protected-mode" { mode: Mode::Live }
        /// TLS client port (needs tls-cert-file and tls-key-file); unset: no TLS listener.
        tls_port: Option<u16> = None;
        "tls-port" via UnsetIsZero {}
        /// PEM certificate chain for TLS.
        tls_cert_file: Option<PathBuf> = None;
        "tls-cert-file" {}
        /// PEM private key for TLS.
        tls_key_file: Option<PathBuf> = None;
        "tls-key-file" {}
        /// PEM CA; when set, TLS clients must present a certificate it signed.
        tls_ca_cert_file: Option<PathBuf> = None;
        "tls-ca-cert-file" {}
        /// Commands slower than this many microseconds enter the slow log; negative: off.
        slowlog_log_slower_than: i64 = crate::slowlog::SLOWLOG_SLOWER_THAN_MICROS_DEFAULT;
        "slowlog-log-slower-than" { mode: Mode::Live }
        /// Most slow log entries.
        slowlog_max_len: usize = crate::slowlog::SLOWLOG_LEN_MAX_DEFAULT;
        "slowlog-max-len" { mode: Mode::Live }
        /// Latency monitor threshold in milliseconds; 0: off.
        latency_monitor_threshold: u64 = 0;
        "latency-monitor-threshold" { mode: Mode::Live }
        /// Log format: text, or json (one JSON object per line, for log shippers; the binary
        /// sets up logging).
        log_json: bool = false;
        "log-format" via LogFormat {}
        /// Level-0 tables at which the engine starts slowing writes down.
        l0_slowdown_writes_trigger: usize = ringkv_engine::Options::default().l0_slowdown_trigger;
        "l0-slowdown-writes-trigger" { min: 1 }
        /// Level-0 tables at which the engine stops writes until compaction catches up (at
        /// least l0-slowdown-writes-trigger).
        l0_stop_writes_trigger: usize = ringkv_engine::Options::default().l0_stop_trigger;
        "l0-stop-writes-trigger" { min: 1 }
        /// Who may run DEBUG: no, local (loopback clients only) or yes (Redis 7's
        /// enable-debug-command).
        enable_debug_command: DebugCommand = DebugCommand::Local;
        "enable-debug-command" {}
        /// Where expiry time comes from: system, or manual (a test mode: time moves only by
        /// DEBUG ADVANCE-CLOCK).
        clock: ClockMode = ClockMode::System;
        "clock" {}
    }
    extra {
        /// Path of the config file it was loaded from, if any (`CONFIG REWRITE` writes it).
        config_file: Option<PathBuf> = None;
        /// Replication: leader to follow, its credentials, backlog, write guards.
        replication: ReplicationConfig = ReplicationConfig::default();
        /// Cluster mode: membership, ports, quorum defaults (docs/cluster.md).
        cluster: ClusterConfig = ClusterConfig::default();
        /// Test seam: treat loopback peers as remote in the protected-mode check, so the refusal
        /// can be tested on 127.0.0.1 (see docs/config.md). Never set by the binary.
        #[doc(hidden)]
        protected_mode_loopback_is_remote: bool = false;
        /// Test seam: start-up waits for this after binding the admin port and before opening the
        /// data directory, so tests can observe `/ready` during recovery. Never set by the binary.
        #[doc(hidden)]
        recovery_gate: Option<std::sync::Arc<tokio::sync::Notify>> = None;
        /// Test seam: a key-count rebuild after a crash waits at this barrier (two parties) after
        /// taking its snapshot and before scanning, so tests can write while it runs. Never set by
        /// the binary.
        #[doc(hidden)]
        recount_gate: Option<std::sync::Arc<std::sync::Barrier>> = None;
    }
    table CONFIG_SETTINGS;
}

settings_table! {
    /// Replication settings of a server (the `replication` field of [`Config`]).
    #[derive(Debug, Clone)]
    pub struct ReplicationConfig in replication {
        /// Follow this leader as a read replica: "host port".
        replicaof: Option<(String, u16)> = None;
        "replicaof" { mode: Mode::Command("REPLICAOF") }
        /// Password this replica gives its leader.
        masterauth: Option<String> = None;
        "masterauth" { mode: Mode::Live, secret: true }
        /// ACL user this replica authenticates as on its leader; unset: the default user.
        masteruser: Option<String> = None;
        "masteruser" { mode: Mode::Live }
        /// Bytes of recent writes kept for replicas' partial resyncs (at least 1 MiB).
        backlog_bytes: usize = BACKLOG_BYTES_DEFAULT;
        "repl-backlog-size" via BacklogBytes { mode: Mode::Live }
        /// Refuse client writes while a replica: yes or no.
        replica_read_only: bool = true;
        "replica-read-only" { mode: Mode::Live }
        /// Refuse writes unless this many replicas are connected and recent; 0: off.
        min_replicas_to_write: usize = 0;
        "min-replicas-to-write" { mode: Mode::Live }
        /// Seconds since a replica's last acknowledgement for it to count.
        min_replicas_max_lag_seconds: u64 = 10;
        "min-replicas-max-lag" { mode: Mode::Live }
        /// A replica connects to its leader with TLS (trusting tls-ca-cert-file, presenting
        /// tls-cert-file/tls-key-file when set): yes or no.
        tls_replication: bool = false;
        "tls-replication" {}
    }
    extra {}
    table REPLICATION_SETTINGS;
}

settings_table! {
    /// Cluster settings of a server (the `cluster` field of [`Config`], docs/cluster.md).
    #[derive(Debug, Clone)]
    pub struct ClusterConfig in cluster {
        /// Run as a member of a Dynamo-style cluster: yes or no. A fresh data directory forms a
        /// one-node cluster, or joins one with cluster-join.
        enabled: bool = false;
        "cluster-enabled" {}
        /// At start, ask the cluster a member of which listens at this client address
        /// (HOST:PORT) to add this node.
        join: Option<String> = None;
        "cluster-join" {}
        /// Internode port; unset: the client port + 10000 (0 when the client port is 0).
        port: Option<u16> = None;
        "cluster-port" via UnsetIsZero {}
        /// Secret every member proves it knows (at least 16 bytes); unset: a built-in one, so
        /// any process that reaches the cluster port can join (bind to a private interface).
        secret: Option<String> = None;
        "cluster-secret" { secret: true }
        /// This node's failure domain: a slot's copies go to distinct zones when there are enough.
        zone: String = "default".to_string();
        "cluster-zone" {}
        /// N: copies of each key, when this node founds the cluster.
        replicas: usize = 3;
        "cluster-replicas" { min: 1, max: 16 }
        /// R: copies a read waits for, by default (CLUSTER QUORUM changes it per connection).
        read_quorum: usize = 2;
        "cluster-read-quorum" { mode: Mode::Live, min: 1, max: 16 }
        /// W: acknowledgements a write waits for, by default.
        write_quorum: usize = 2;
        "cluster-write-quorum" { mode: Mode::Live, min: 1, max: 16 }
        /// Of W, acknowledgements that must come from the slot's own replicas rather than
        /// hints on fallback nodes (Riak's PW); 0 lets hints make up the quorum (sloppy
        /// quorum). CLUSTER QUORUM changes it per connection.
        write_strict_quorum: usize = 0;
        "cluster-write-strict-quorum" { mode: Mode::Live, max: 16 }
        /// When a write's replica is down or fails, store its copy as a hint on another
        /// node, delivered when the replica is back (hinted handoff): yes or no.
        hinted_handoff: bool = true;
        "cluster-hinted-handoff" {}
        /// Bytes of hints this node holds for others at most; past it a hint is refused.
        hints_max_bytes: u64 = 256 << 20;
        "cluster-hints-max-bytes" {}
        /// Seconds a hint is kept undelivered before it is dropped (anti-entropy repairs
        /// what it held).
        hint_max_age_s: u64 = 10_800;
        "cluster-hint-max-age" { min: 1 }
        /// Seconds between anti-entropy exchanges of this node with its next peer (each
        /// jittered by up to a quarter); 0 turns anti-entropy off.
        anti_entropy_interval_s: u64 = 30;
        "cluster-anti-entropy-interval" { mode: Mode::Live }
        /// Most keys one anti-entropy exchange repairs.
        anti_entropy_keys_per_pass: usize = 10_000;
        "cluster-anti-entropy-keys-per-pass" { mode: Mode::Live, min: 1 }
        /// Seconds a delete's tombstone is kept before the store may drop it: longer than
        /// the longest outage and anti-entropy cycle, or a replica that missed the delete
        /// could bring the key back (Cassandra's gc_grace_seconds).
        tombstone_grace_s: u64 = 864_000;
        "cluster-tombstone-grace" { min: 1 }
        /// Most siblings a key may have; a write past it is refused.
        sibling_cap: usize = 100;
        "cluster-sibling-cap" { mode: Mode::Live, min: 1 }
        /// Bytes per second, at most, a node pulls when it streams the slots a join or a
        /// leave gives it (0: no limit).
        stream_rate: u64 = 64 << 20;
        "cluster-stream-rate" { mode: Mode::Live }
        /// Milliseconds a coordinator waits for replicas before answering with how many did.
        request_timeout_ms: u64 = 2000;
        "cluster-request-timeout" { mode: Mode::Live, min: 1 }
        /// Internode connections use TLS with tls-cert-file/tls-key-file, both sides verified
        /// against tls-ca-cert-file (as Redis' tls-cluster): yes or no.
        tls: bool = false;
        "tls-cluster" {}
    }
    extra {}
    table CLUSTER_SETTINGS;
}

impl Config {
    /// Checks what involves more than one setting; the error names the setting to fix. The
    /// binary calls it after reading flags, variables and the file.
    pub fn check(&self) -> Result<(), String> {
        if self.l0_stop_writes_trigger < self.l0_slowdown_writes_trigger {
            return Err(format!(
                "invalid setting l0-stop-writes-trigger: {} is below l0-slowdown-writes-trigger \
                 ({}): writes would stop before they slow down",
                self.l0_stop_writes_trigger, self.l0_slowdown_writes_trigger
            ));
        }
        if self.cluster.tls
            && (self.tls_cert_file.is_none()
                || self.tls_key_file.is_none()
                || self.tls_ca_cert_file.is_none())
        {
            return Err(
                "tls-cluster needs tls-cert-file, tls-key-file and tls-ca-cert-file: \
                        every member presents its certificate and verifies the other's"
                    .into(),
            );
        }
        // Checked at start: the link would otherwise retry with the same error forever.
        if self.replication.tls_replication && self.tls_ca_cert_file.is_none() {
            return Err(
                "tls-replication needs tls-ca-cert-file: the CA that signed the leader's certificate"
                    .into(),
            );
        }
        Ok(())
    }
}

/// `loglevel`: Redis' names or tracing's, kept as given (lower-cased).
struct LogLevel;

impl Codec<String> for LogLevel {
    const KIND: Kind = Kind::String;
    const CHOICES: &'static [&'static str] = &["debug", "verbose", "notice", "warning", "nothing"];
    fn parse(text: &str) -> Result<String, String> {
        let level = text.to_ascii_lowercase();
        match level.as_str() {
            "debug" | "verbose" | "notice" | "warning" | "nothing" | "error" | "warn" | "info"
            | "trace" | "off" => Ok(level),
            _ => Err(
                "expected debug, verbose, notice, warning, nothing, or error, warn, info, trace"
                    .into(),
            ),
        }
    }
    fn show(value: &String) -> Option<String> {
        Some(value.clone())
    }
}

/// `log-format`: `text` or `json`, held as "logs are JSON".
struct LogFormat;

impl Codec<bool> for LogFormat {
    const KIND: Kind = Kind::String;
    const CHOICES: &'static [&'static str] = &["text", "json"];
    fn parse(text: &str) -> Result<bool, String> {
        match text.to_ascii_lowercase().as_str() {
            "text" => Ok(false),
            "json" => Ok(true),
            _ => Err("expected text or json".into()),
        }
    }
    fn show(value: &bool) -> Option<String> {
        Some(if *value { "json" } else { "text" }.into())
    }
}

/// `client-output-buffer-limit`: a size, or Redis' `normal <hard> <soft> <seconds>` (the hard
/// limit is used); CONFIG GET answers in Redis' form.
struct OutputBufferLimit;

impl Codec<usize> for OutputBufferLimit {
    const KIND: Kind = Kind::Integer;
    const RANGE: (i128, i128) = <Plain as Codec<usize>>::RANGE;
    fn parse(text: &str) -> Result<usize, String> {
        let lower = text.to_ascii_lowercase();
        match lower.split_whitespace().collect::<Vec<_>>().as_slice() {
            [size] => <Plain as Codec<usize>>::parse(size),
            ["normal", hard, _, _] => <Plain as Codec<usize>>::parse(hard),
            _ => Err("argument must be a size or 'normal <hard> <soft> <seconds>'".into()),
        }
    }
    fn show(value: &usize) -> Option<String> {
        Some(value.to_string())
    }
    fn reply(value: &usize) -> String {
        format!("normal {value} 0 0")
    }
    fn integer(value: &usize) -> Option<i128> {
        Some(*value as i128)
    }
}

/// `repl-backlog-size`: a smaller size is raised to [`BACKLOG_BYTES_MIN`].
struct BacklogBytes;

impl Codec<usize> for BacklogBytes {
    const KIND: Kind = Kind::Integer;
    const RANGE: (i128, i128) = <Plain as Codec<usize>>::RANGE;
    fn parse(text: &str) -> Result<usize, String> {
        <Plain as Codec<usize>>::parse(text).map(|bytes| bytes.max(BACKLOG_BYTES_MIN))
    }
    fn show(value: &usize) -> Option<String> {
        Some(value.to_string())
    }
    fn integer(value: &usize) -> Option<i128> {
        Some(*value as i128)
    }
}

/// `tls-port`: CONFIG GET answers 0 when unset, as Redis.
struct UnsetIsZero;

impl Codec<Option<u16>> for UnsetIsZero {
    const KIND: Kind = Kind::Integer;
    const RANGE: (i128, i128) = <Plain as Codec<u16>>::RANGE;
    fn parse(text: &str) -> Result<Option<u16>, String> {
        <Plain as Codec<Option<u16>>>::parse(text)
    }
    fn show(value: &Option<u16>) -> Option<String> {
        value.map(|port| port.to_string())
    }
    fn reply(value: &Option<u16>) -> String {
        value.unwrap_or(0).to_string()
    }
    fn integer(value: &Option<u16>) -> Option<i128> {
        value.map(i128::from)
    }
}

/// CONFIG REWRITE: writes the current settings into the config file, keeping keys it does not
/// manage (and their order), through a temporary file and a rename so a crash leaves the old or
/// the new file, never half of one.
///
/// Every setting of the table is written when it is already in the file or differs from its
/// default (as Redis' rewrite, so the file stays short); an unset optional setting is removed.
/// A key read with `_` (the loader accepts both spellings) is replaced, not duplicated.
/// `replicaof` is the live link (`None` for a leader): REPLICAOF changes it without touching
/// `config`.
pub(crate) fn rewrite(config: &Config, replicaof: Option<(String, u16)>) -> Result<(), String> {
    let Some(path) = &config.config_file else {
        return Err("The server is running without a config file".into());
    };
    let mut config = config.clone();
    config.replication.replicaof = replicaof;
    let defaults = Config::default();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut table: toml::Table = text
        .parse()
        .map_err(|e| format!("cannot parse {}: {e}", path.display()))?;
    for setting in crate::settings::all() {
        let snake = setting.name.replace('-', "_");
        let present = table.remove(&snake).is_some() | table.contains_key(setting.name);
        match setting.toml_value(&config) {
            None => {
                table.remove(setting.name);
            }
            Some(value) => {
                if present || (setting.get)(&config) != (setting.get)(&defaults) {
                    table.insert(setting.name.to_string(), value);
                }
            }
        }
    }
    let body = toml::to_string(&table).map_err(|e| e.to_string())?;
    let temporary = path.with_extension("toml.rewrite");
    std::fs::write(&temporary, body)
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
