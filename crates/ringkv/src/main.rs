//! The `ringkv` binary: command line and TOML configuration, logging, and
//! signal handling around [`ringkv_server::run`].
//!
//! With no arguments it serves 127.0.0.1:6379 with data in `./data`. Every
//! setting of the TOML file (`--config FILE`) can be overridden by a flag.

mod backup;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use ringkv_server::{Config, FsyncPolicy};
use serde::Deserialize;

/// Command line. Flags override the config file, which overrides the defaults.
#[derive(Debug, Parser)]
#[command(
    name = "ringkv",
    version,
    about = "A Redis-compatible key-value database on an LSM engine",
    args_conflicts_with_subcommands = true,
    // A flag given twice takes the last value, as Redis does (test helpers add defaults first).
    args_override_self = true
)]
struct Cli {
    /// Instead of serving: back up a running server or restore a backup.
    #[command(subcommand)]
    tool: Option<backup::Tool>,
    /// TOML config file (keys as the long flags, e.g. `port = 6380`, `appendfsync = "always"`).
    #[arg(long, value_name = "FILE", env = "RINGKV_CONFIG")]
    config: Option<PathBuf>,
    /// TCP port [default: 6379].
    #[arg(long, env = "RINGKV_PORT")]
    port: Option<u16>,
    /// Admin HTTP port serving /health, /ready and /metrics; 0: any free port (logged)
    /// [default: 9121].
    #[arg(long, env = "RINGKV_ADMIN_PORT")]
    admin_port: Option<u16>,
    /// Address the admin HTTP port listens on [default: 127.0.0.1].
    #[arg(long, env = "RINGKV_ADMIN_BIND")]
    admin_bind: Option<String>,
    /// Serve the admin HTTP port: yes or no [default: yes].
    #[arg(long, env = "RINGKV_ADMIN", value_parser = parse_yes_no)]
    admin: Option<bool>,
    /// No admin HTTP port (same as `--admin no`).
    #[arg(long, conflicts_with = "admin")]
    no_admin: bool,
    /// Address to listen on [default: 127.0.0.1].
    #[arg(long, env = "RINGKV_BIND")]
    bind: Option<String>,
    /// Data directory [default: ./data].
    #[arg(long, env = "RINGKV_DIR")]
    dir: Option<PathBuf>,
    /// WAL fsync policy: always, everysec or no [default: everysec].
    #[arg(long, env = "RINGKV_APPENDFSYNC")]
    appendfsync: Option<FsyncPolicy>,
    /// Log level: Redis' debug, verbose, notice, warning, nothing, or tracing's error, warn,
    /// info, debug, trace [default: notice].
    #[arg(long, env = "RINGKV_LOGLEVEL")]
    loglevel: Option<String>,
    /// Password clients must give with AUTH.
    #[arg(long, env = "RINGKV_REQUIREPASS", hide_env_values = true)]
    requirepass: Option<String>,
    /// Largest bulk string a client may send, in bytes [default: 536870912].
    #[arg(long, env = "RINGKV_PROTO_MAX_BULK_LEN")]
    proto_max_bulk_len: Option<usize>,
    /// Most arguments in one command [default: 1048576].
    #[arg(long, env = "RINGKV_PROTO_MAX_ARGS")]
    proto_max_args: Option<usize>,
    /// Most simultaneous clients [default: 10000].
    #[arg(long, env = "RINGKV_MAXCLIENTS")]
    maxclients: Option<usize>,
    /// Follow this leader as a read replica: "host port".
    #[arg(long, value_name = "HOST PORT", env = "RINGKV_REPLICAOF")]
    replicaof: Option<String>,
    /// Password this replica gives its leader.
    #[arg(long, env = "RINGKV_MASTERAUTH", hide_env_values = true)]
    masterauth: Option<String>,
    /// ACL user this replica authenticates as on its leader.
    #[arg(long, env = "RINGKV_MASTERUSER")]
    masteruser: Option<String>,
    /// Bytes of recent writes kept for replicas' partial resyncs [default: 67108864].
    #[arg(long, env = "RINGKV_REPL_BACKLOG_SIZE")]
    repl_backlog_size: Option<usize>,
    /// Refuse client writes while a replica: yes or no [default: yes].
    #[arg(long, env = "RINGKV_REPLICA_READ_ONLY", value_parser = parse_yes_no)]
    replica_read_only: Option<bool>,
    /// Refuse writes unless this many replicas are connected and recent; 0: off [default: 0].
    #[arg(long, env = "RINGKV_MIN_REPLICAS_TO_WRITE")]
    min_replicas_to_write: Option<usize>,
    /// Seconds since a replica's last acknowledgement for it to count [default: 10].
    #[arg(long, env = "RINGKV_MIN_REPLICAS_MAX_LAG")]
    min_replicas_max_lag: Option<u64>,
    /// Bytes the memtables may hold before writes get -OOM; 0: no limit [default: 0].
    #[arg(long, env = "RINGKV_MAXMEMORY")]
    maxmemory: Option<u64>,
    /// Seconds a client may idle before it is closed; 0: never [default: 0].
    #[arg(long, env = "RINGKV_TIMEOUT")]
    timeout: Option<u64>,
    /// Most bytes buffered from one client's requests [default: 1073741824].
    #[arg(long, env = "RINGKV_CLIENT_QUERY_BUFFER_LIMIT")]
    client_query_buffer_limit: Option<usize>,
    /// Most pending reply bytes per client before it is closed; 0: no limit [default: 268435456].
    #[arg(long, env = "RINGKV_CLIENT_OUTPUT_BUFFER_LIMIT")]
    client_output_buffer_limit: Option<usize>,
    /// Refuse non-loopback clients while no password is set: yes or no [default: yes].
    #[arg(long, env = "RINGKV_PROTECTED_MODE", value_parser = parse_yes_no)]
    protected_mode: Option<bool>,
    /// TLS client port (needs --tls-cert-file and --tls-key-file) [default: none].
    #[arg(long, env = "RINGKV_TLS_PORT")]
    tls_port: Option<u16>,
    /// PEM certificate chain for TLS.
    #[arg(long, env = "RINGKV_TLS_CERT_FILE")]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key for TLS.
    #[arg(long, env = "RINGKV_TLS_KEY_FILE")]
    tls_key_file: Option<PathBuf>,
    /// PEM CA; when set, TLS clients must present a certificate it signed.
    #[arg(long, env = "RINGKV_TLS_CA_CERT_FILE")]
    tls_ca_cert_file: Option<PathBuf>,
    /// A replica connects to its leader with TLS (trusting --tls-ca-cert-file, presenting
    /// --tls-cert-file/--tls-key-file when set): yes or no [default: no].
    #[arg(long, env = "RINGKV_TLS_REPLICATION", value_parser = parse_yes_no)]
    tls_replication: Option<bool>,
    /// Commands slower than this many microseconds enter the slow log; negative: off
    /// [default: 10000].
    #[arg(
        long,
        env = "RINGKV_SLOWLOG_LOG_SLOWER_THAN",
        allow_negative_numbers = true
    )]
    slowlog_log_slower_than: Option<i64>,
    /// Most slow log entries [default: 128].
    #[arg(long, env = "RINGKV_SLOWLOG_MAX_LEN")]
    slowlog_max_len: Option<usize>,
    /// Latency monitor threshold in milliseconds; 0: off [default: 0].
    #[arg(long, env = "RINGKV_LATENCY_MONITOR_THRESHOLD")]
    latency_monitor_threshold: Option<u64>,
    /// Memtable size in bytes before it is flushed.
    #[arg(long, env = "RINGKV_MEMTABLE_BYTES_MAX")]
    memtable_bytes_max: Option<usize>,
    /// Block cache size in bytes.
    #[arg(long, env = "RINGKV_BLOCK_CACHE_BYTES")]
    block_cache_bytes: Option<usize>,
    /// Row cache size in bytes (latest state of hot keys for point reads; 0 turns it off).
    #[arg(long, env = "RINGKV_ROW_CACHE_BYTES")]
    row_cache_bytes: Option<usize>,
    /// Log format: text or json (one JSON object per line, for log shippers) [default: text].
    #[arg(long, env = "RINGKV_LOG_FORMAT", value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// Level-0 tables at which writes are slowed down.
    #[arg(long, env = "RINGKV_L0_SLOWDOWN_WRITES_TRIGGER")]
    l0_slowdown_writes_trigger: Option<usize>,
    /// Level-0 tables at which writes stall until compaction catches up.
    #[arg(long, env = "RINGKV_L0_STOP_WRITES_TRIGGER")]
    l0_stop_writes_trigger: Option<usize>,
    /// Who may run DEBUG: no, local (loopback clients) or yes [default: local].
    #[arg(long, env = "RINGKV_ENABLE_DEBUG_COMMAND", value_parser = ["no", "local", "yes"])]
    enable_debug_command: Option<String>,
    /// Expiry clock: system, or manual (moves only by DEBUG ADVANCE-CLOCK; tests) [default: system].
    #[arg(long, env = "RINGKV_CLOCK", value_parser = ["system", "manual"])]
    clock: Option<String>,
}

/// The config file: every field optional, same names as the flags (with `-` or `_`:
/// [`parse_file`] turns `_` into `-` before these kebab-case names are matched).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    port: Option<u16>,
    admin_port: Option<u16>,
    admin_bind: Option<String>,
    admin: Option<bool>,
    bind: Option<String>,
    dir: Option<PathBuf>,
    appendfsync: Option<String>,
    loglevel: Option<String>,
    requirepass: Option<String>,
    proto_max_bulk_len: Option<usize>,
    proto_max_args: Option<usize>,
    maxclients: Option<usize>,
    memtable_bytes_max: Option<usize>,
    block_cache_bytes: Option<usize>,
    row_cache_bytes: Option<usize>,
    replicaof: Option<String>,
    masterauth: Option<String>,
    masteruser: Option<String>,
    repl_backlog_size: Option<usize>,
    replica_read_only: Option<bool>,
    min_replicas_to_write: Option<usize>,
    min_replicas_max_lag: Option<u64>,
    maxmemory: Option<u64>,
    timeout: Option<u64>,
    client_query_buffer_limit: Option<usize>,
    client_output_buffer_limit: Option<usize>,
    protected_mode: Option<bool>,
    tls_port: Option<u16>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    tls_ca_cert_file: Option<PathBuf>,
    tls_replication: Option<bool>,
    slowlog_log_slower_than: Option<i64>,
    slowlog_max_len: Option<usize>,
    latency_monitor_threshold: Option<u64>,
    log_format: Option<String>,
}

/// `yes`/`no` (Redis' spelling) or `true`/`false`.
fn parse_yes_no(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => Err(format!("expected yes or no, got '{text}'")),
    }
}

/// Parses the config file, accepting `proto_max_bulk_len` as well as `proto-max-bulk-len`
/// (both spellings are documented); a key written both ways is an error, not a silent pick.
fn parse_file(text: &str) -> anyhow::Result<FileConfig> {
    let table: toml::Table = text.parse()?;
    let mut kebab = toml::Table::new();
    for (key, value) in table {
        let name = key.replace('_', "-");
        if kebab.insert(name.clone(), value).is_some() {
            anyhow::bail!("setting {name} is given twice (with '-' and with '_')");
        }
    }
    Ok(toml::Value::Table(kebab).try_into()?)
}

/// The tracing filter for a `loglevel` value: Redis' names (`nothing` is off) or tracing's.
fn filter_for(level: &str) -> anyhow::Result<&'static str> {
    Ok(match level.to_ascii_lowercase().as_str() {
        "nothing" | "off" => "off",
        "warning" | "warn" => "warn",
        "notice" | "info" => "info",
        "verbose" | "debug" => "debug",
        "error" => "error",
        "trace" => "trace",
        _ => anyhow::bail!(
            "invalid setting loglevel: '{level}' (debug, verbose, notice, warning, nothing, \
             or error, warn, info, trace)"
        ),
    })
}

fn load(cli: Cli) -> anyhow::Result<Config> {
    let file: FileConfig = match &cli.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            parse_file(&text).with_context(|| format!("parsing config file {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let mut config = Config {
        config_file: cli.config.clone(),
        ..Config::default()
    };
    if let Some(v) = cli.port.or(file.port) {
        config.port = v;
    }
    if let Some(v) = cli.admin_port.or(file.admin_port) {
        config.admin_port = Some(v);
    }
    if let Some(v) = cli.admin_bind.or(file.admin_bind) {
        config.admin_bind = v;
    }
    if cli.no_admin || cli.admin.or(file.admin) == Some(false) {
        config.admin_port = None;
    }
    if let Some(v) = cli.bind.or(file.bind) {
        config.bind = v;
    }
    if let Some(v) = cli.dir.or(file.dir) {
        config.dir = v;
    }
    match (cli.appendfsync, file.appendfsync) {
        (Some(v), _) => config.appendfsync = v,
        (None, Some(text)) => {
            config.appendfsync = text
                .parse()
                .map_err(|e| anyhow::anyhow!("invalid setting appendfsync: {e}"))?
        }
        (None, None) => {}
    }
    if let Some(v) = cli.loglevel.or(file.loglevel) {
        filter_for(&v)?;
        config.loglevel = v;
    }
    config.requirepass = cli
        .requirepass
        .or(file.requirepass)
        .filter(|p| !p.is_empty());
    if let Some(v) = cli.proto_max_bulk_len.or(file.proto_max_bulk_len) {
        config.proto_max_bulk_len = v;
    }
    if let Some(v) = cli.proto_max_args.or(file.proto_max_args) {
        anyhow::ensure!(v >= 1, "invalid setting proto-max-args: must be at least 1");
        config.args_max = v;
    }
    if let Some(v) = cli.maxclients.or(file.maxclients) {
        anyhow::ensure!(v >= 1, "invalid setting maxclients: must be at least 1");
        config.maxclients = v;
    }
    if let Some(v) = cli.memtable_bytes_max.or(file.memtable_bytes_max) {
        config.memtable_bytes_max = v;
    }
    if let Some(v) = cli.block_cache_bytes.or(file.block_cache_bytes) {
        config.block_cache_bytes = v;
    }
    if let Some(v) = cli.row_cache_bytes.or(file.row_cache_bytes) {
        config.row_cache_bytes = v;
    }
    if let Some(v) = cli.maxmemory.or(file.maxmemory) {
        config.maxmemory = v;
    }
    if let Some(v) = cli.timeout.or(file.timeout) {
        config.timeout_seconds = v;
    }
    if let Some(v) = cli
        .client_query_buffer_limit
        .or(file.client_query_buffer_limit)
    {
        config.query_buffer_bytes_max = v;
    }
    if let Some(v) = cli
        .client_output_buffer_limit
        .or(file.client_output_buffer_limit)
    {
        config.output_buffer_bytes_max = v;
    }
    if let Some(v) = cli.protected_mode.or(file.protected_mode) {
        config.protected_mode = v;
    }
    config.tls_port = cli.tls_port.or(file.tls_port);
    config.tls_cert_file = cli.tls_cert_file.or(file.tls_cert_file);
    config.tls_key_file = cli.tls_key_file.or(file.tls_key_file);
    config.tls_ca_cert_file = cli.tls_ca_cert_file.or(file.tls_ca_cert_file);
    if let Some(v) = cli.slowlog_log_slower_than.or(file.slowlog_log_slower_than) {
        config.slowlog_log_slower_than = v;
    }
    if let Some(v) = cli.slowlog_max_len.or(file.slowlog_max_len) {
        config.slowlog_max_len = v;
    }
    if let Some(v) = cli
        .latency_monitor_threshold
        .or(file.latency_monitor_threshold)
    {
        config.latency_monitor_threshold = v;
    }
    if let Some(v) = cli.l0_slowdown_writes_trigger {
        config.l0_slowdown_writes_trigger = v.max(1);
    }
    if let Some(v) = cli.l0_stop_writes_trigger {
        config.l0_stop_writes_trigger = v.max(config.l0_slowdown_writes_trigger);
    }
    match cli.enable_debug_command.as_deref() {
        Some("no") => config.enable_debug_command = ringkv_server::DebugCommand::No,
        Some("yes") => config.enable_debug_command = ringkv_server::DebugCommand::Yes,
        _ => {}
    }
    if cli.clock.as_deref() == Some("manual") {
        config.clock = ringkv_server::ClockMode::Manual;
    }
    match cli.log_format.or(file.log_format).as_deref() {
        None | Some("text") => {}
        Some("json") => config.log_json = true,
        Some(other) => anyhow::bail!("invalid setting log-format: '{other}' (text or json)"),
    }
    let replication = &mut config.replication;
    if let Some(text) = cli.replicaof.or(file.replicaof) {
        replication.replicaof =
            Some(ringkv_server::parse_replicaof(&text).map_err(anyhow::Error::msg)?);
    }
    replication.masterauth = cli.masterauth.or(file.masterauth).filter(|p| !p.is_empty());
    replication.masteruser = cli.masteruser.or(file.masteruser).filter(|u| !u.is_empty());
    if let Some(v) = cli.repl_backlog_size.or(file.repl_backlog_size) {
        replication.backlog_bytes = v.max(1 << 20);
    }
    if let Some(v) = cli.replica_read_only.or(file.replica_read_only) {
        replication.replica_read_only = v;
    }
    if let Some(v) = cli.min_replicas_to_write.or(file.min_replicas_to_write) {
        replication.min_replicas_to_write = v;
    }
    if let Some(v) = cli.min_replicas_max_lag.or(file.min_replicas_max_lag) {
        replication.min_replicas_max_lag_seconds = v;
    }
    if let Some(v) = cli.tls_replication.or(file.tls_replication) {
        replication.tls_replication = v;
    }
    // Checked at start: the link would otherwise retry with the same error forever.
    if replication.tls_replication && config.tls_ca_cert_file.is_none() {
        anyhow::bail!(
            "tls-replication needs tls-ca-cert-file: the CA that signed the leader's certificate"
        );
    }
    Ok(config)
}

fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    if let Some(tool) = cli.tool.take() {
        return backup::run(tool);
    }
    let config = load(cli)?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(filter_for(&config.loglevel).expect("checked by load"))
    });
    if config.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    tracing::info!(version = ringkv_server::RINGKV_VERSION, dir = %config.dir.display(), "starting ringkv");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ringkv")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let bound = ringkv_server::bind(config).await?;
        let handle = bound.shutdown_handle();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("received a termination signal, shutting down");
            handle.shutdown();
        });
        bound.serve().await?;
        anyhow::Ok(())
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
