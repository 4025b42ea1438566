//! Server settings: what `ringkv` reads from its TOML file and flags, and
//! which of them `CONFIG GET/SET` shows and changes at run time.

use std::path::PathBuf;

use ringkv_engine::FsyncPolicy;

/// Default for [`Config::query_buffer_bytes_max`]: 1 GiB, Redis' `client-query-buffer-limit`.
pub const QUERY_BUFFER_BYTES_MAX_DEFAULT: usize = 1 << 30;

/// Default for [`Config::admin_port`]: the port Prometheus' Redis exporter uses, so scrape
/// configs written for it keep working.
pub const ADMIN_PORT_DEFAULT: u16 = 9121;

/// Default for [`Config::maxclients`], as Redis.
pub const MAXCLIENTS_DEFAULT: usize = 10_000;

/// Who may run DEBUG (Redis 7's `enable-debug-command`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DebugCommand {
    /// Nobody.
    No,
    /// Clients connected over loopback only (the default).
    Local,
    /// Everybody.
    Yes,
}

/// Where expiry time comes from (`clock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockMode {
    /// The system clock.
    System,
    /// A clock that only moves by `DEBUG ADVANCE-CLOCK` (tests).
    Manual,
}

/// Settings of a server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub bind: String,
    /// TCP port (0: any free port; the bound one is logged).
    pub port: u16,
    /// Admin HTTP port (`/health`, `/ready`, `/metrics`); `None`: no admin port, 0: any free port.
    pub admin_port: Option<u16>,
    /// Address the admin HTTP port listens on (its own setting: metrics stay on loopback even
    /// when clients are served on every interface).
    pub admin_bind: String,
    /// Data directory (the engine's files).
    pub dir: PathBuf,
    /// WAL fsync policy, as Redis' `appendfsync`.
    pub appendfsync: FsyncPolicy,
    /// Password every connection must give with AUTH (Redis' `requirepass`); `None`: no AUTH.
    pub requirepass: Option<String>,
    /// Largest bulk string a client may send (`proto-max-bulk-len`).
    pub proto_max_bulk_len: usize,
    /// Most arguments in one request.
    pub args_max: usize,
    /// Most bytes buffered from one client before it is disconnected
    /// (`client-query-buffer-limit`).
    pub query_buffer_bytes_max: usize,
    /// Most simultaneous clients; more are refused with `-ERR max number of clients reached`.
    pub maxclients: usize,
    /// Memtable size of the engine.
    pub memtable_bytes_max: usize,
    /// Block cache size of the engine.
    pub block_cache_bytes: usize,
    /// Row cache size of the engine (0: off).
    pub row_cache_bytes: usize,
    /// Log level name (informational; the binary sets up logging).
    pub loglevel: String,
    /// Path of the config file it was loaded from, if any (`CONFIG GET` shows nothing of it).
    pub config_file: Option<PathBuf>,
    /// Replication: leader to follow, its credentials, backlog, write guards.
    pub replication: crate::replication::ReplicationConfig,
    /// Bytes the in-memory parts (memtables) may hold before writes are refused with -OOM;
    /// 0: no limit (Redis' `maxmemory`, policy `noeviction`).
    pub maxmemory: u64,
    /// Seconds a client may stay idle before it is closed; 0: never (Redis' `timeout`).
    pub timeout_seconds: u64,
    /// Pending reply bytes a client may have before it is closed (slow readers); 0: no limit.
    pub output_buffer_bytes_max: usize,
    /// Refuse non-loopback clients when no password is set and `bind` is not loopback only.
    pub protected_mode: bool,
    /// TLS client port (`tls-port`); `None`: no TLS listener.
    pub tls_port: Option<u16>,
    /// PEM certificate chain for TLS.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for TLS.
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA: when set, TLS clients must present a certificate it signed.
    pub tls_ca_cert_file: Option<PathBuf>,
    /// Commands slower than this many µs enter the slow log; negative: off.
    pub slowlog_log_slower_than: i64,
    /// Most slow log entries.
    pub slowlog_max_len: usize,
    /// Latency monitor threshold in ms; 0: off.
    pub latency_monitor_threshold: u64,
    /// Level-0 tables at which the engine slows writes down.
    pub l0_slowdown_writes_trigger: usize,
    /// Level-0 tables at which the engine stalls writes until compaction catches up.
    pub l0_stop_writes_trigger: usize,
    /// Who may run DEBUG.
    pub enable_debug_command: DebugCommand,
    /// Where expiry time comes from.
    pub clock: ClockMode,
    /// Logs as one JSON object per line (`log-format = "json"`; informational, the binary sets
    /// up logging).
    pub log_json: bool,
    /// Test seam: treat loopback peers as remote in the protected-mode check, so the refusal
    /// can be tested on 127.0.0.1 (see docs/config.md). Never set by the binary.
    #[doc(hidden)]
    pub protected_mode_loopback_is_remote: bool,
    /// Test seam: start-up waits for this after binding the admin port and before opening the
    /// data directory, so tests can observe `/ready` during recovery. Never set by the binary.
    #[doc(hidden)]
    pub recovery_gate: Option<std::sync::Arc<tokio::sync::Notify>>,
    /// Test seam: a key-count rebuild after a crash waits at this barrier (two parties) after
    /// taking its snapshot and before scanning, so tests can write while it runs. Never set by
    /// the binary.
    #[doc(hidden)]
    pub recount_gate: Option<std::sync::Arc<std::sync::Barrier>>,
}

/// CONFIG REWRITE: writes the current settings into the config file, keeping keys it does not
/// manage (and their order), through a temporary file and a rename so a crash leaves the old or
/// the new file, never half of one.
///
/// `replicaof` is the live link (`"host port"`, empty for a leader): REPLICAOF changes it
/// without touching `config`.
pub(crate) fn rewrite(config: &Config, replicaof: &str) -> Result<(), String> {
    let Some(path) = &config.config_file else {
        return Err("The server is running without a config file".into());
    };
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut table: toml::Table = text
        .parse()
        .map_err(|e| format!("cannot parse {}: {e}", path.display()))?;
    let int = |v: u64| toml::Value::Integer(v.min(i64::MAX as u64) as i64);
    // A key read with `_` (the loader accepts both spellings) is replaced, not duplicated; an
    // empty string removes the key (an unset optional setting).
    let mut set = |key: &str, value: toml::Value| {
        table.remove(&key.replace('-', "_"));
        if value.as_str() == Some("") {
            table.remove(key);
        } else {
            table.insert(key.to_string(), value);
        }
    };
    set("port", int(u64::from(config.port)));
    set("bind", toml::Value::String(config.bind.clone()));
    set("dir", toml::Value::String(config.dir.display().to_string()));
    set(
        "appendfsync",
        toml::Value::String(config.appendfsync.to_string()),
    );
    set("loglevel", toml::Value::String(config.loglevel.clone()));
    set("proto-max-bulk-len", int(config.proto_max_bulk_len as u64));
    set("proto-max-args", int(config.args_max as u64));
    set("maxclients", int(config.maxclients as u64));
    set(
        "client-query-buffer-limit",
        int(config.query_buffer_bytes_max as u64),
    );
    set(
        "client-output-buffer-limit",
        int(config.output_buffer_bytes_max as u64),
    );
    set("maxmemory", int(config.maxmemory));
    set("timeout", int(config.timeout_seconds));
    set(
        "protected-mode",
        toml::Value::Boolean(config.protected_mode),
    );
    set(
        "slowlog-log-slower-than",
        toml::Value::Integer(config.slowlog_log_slower_than),
    );
    set("slowlog-max-len", int(config.slowlog_max_len as u64));
    set(
        "latency-monitor-threshold",
        int(config.latency_monitor_threshold),
    );
    let r = &config.replication;
    set(
        "replica-read-only",
        toml::Value::Boolean(r.replica_read_only),
    );
    set("repl-backlog-size", int(r.backlog_bytes as u64));
    set("min-replicas-to-write", int(r.min_replicas_to_write as u64));
    set("min-replicas-max-lag", int(r.min_replicas_max_lag_seconds));
    for (key, value) in [
        ("requirepass", config.requirepass.as_deref().unwrap_or("")),
        ("masterauth", r.masterauth.as_deref().unwrap_or("")),
        ("masteruser", r.masteruser.as_deref().unwrap_or("")),
        ("replicaof", replicaof),
    ] {
        set(key, toml::Value::String(value.to_string()));
    }
    let body = toml::to_string(&table).map_err(|e| e.to_string())?;
    let temporary = path.with_extension("toml.rewrite");
    std::fs::write(&temporary, body)
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Default for [`Config::output_buffer_bytes_max`]: 256 MiB, as Redis' pubsub hard limit; a
/// normal client that lets this much reply data pile up is not reading.
pub const OUTPUT_BUFFER_BYTES_MAX_DEFAULT: usize = 256 << 20;

impl Default for Config {
    fn default() -> Config {
        let engine = ringkv_engine::Options::default();
        Config {
            bind: "127.0.0.1".into(),
            port: 6379,
            admin_port: Some(ADMIN_PORT_DEFAULT),
            admin_bind: "127.0.0.1".into(),
            dir: PathBuf::from("./data"),
            appendfsync: FsyncPolicy::EverySec,
            requirepass: None,
            proto_max_bulk_len: ringkv_protocol::BULK_BYTES_MAX_DEFAULT,
            args_max: ringkv_protocol::ARGS_MAX_DEFAULT,
            query_buffer_bytes_max: QUERY_BUFFER_BYTES_MAX_DEFAULT,
            maxclients: MAXCLIENTS_DEFAULT,
            memtable_bytes_max: engine.memtable_bytes_max,
            block_cache_bytes: engine.block_cache_bytes,
            row_cache_bytes: engine.row_cache_bytes,
            loglevel: "notice".into(),
            config_file: None,
            replication: crate::replication::ReplicationConfig::default(),
            maxmemory: 0,
            timeout_seconds: 0,
            output_buffer_bytes_max: OUTPUT_BUFFER_BYTES_MAX_DEFAULT,
            protected_mode: true,
            tls_port: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_ca_cert_file: None,
            slowlog_log_slower_than: crate::slowlog::SLOWLOG_SLOWER_THAN_MICROS_DEFAULT,
            slowlog_max_len: crate::slowlog::SLOWLOG_LEN_MAX_DEFAULT,
            latency_monitor_threshold: 0,
            l0_slowdown_writes_trigger: engine.l0_slowdown_trigger,
            l0_stop_writes_trigger: engine.l0_stop_trigger,
            enable_debug_command: DebugCommand::Local,
            clock: ClockMode::System,
            log_json: false,
            protected_mode_loopback_is_remote: false,
            recovery_gate: None,
            recount_gate: None,
        }
    }
}
