//! The `ringkv` binary: command line and TOML configuration, logging, and
//! signal handling around [`ringkv_server::run`].
//!
//! With no arguments it serves 127.0.0.1:6379 with data in `./data`. Every
//! setting of the TOML file (`--config FILE`) can be overridden by a flag.

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
    about = "A Redis-compatible key-value database on an LSM engine"
)]
struct Cli {
    /// TOML config file (keys as the long flags, e.g. `port = 6380`, `appendfsync = "always"`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// TCP port [default: 6379].
    #[arg(long)]
    port: Option<u16>,
    /// Admin HTTP port serving /health, /ready and /metrics [default: none].
    #[arg(long)]
    admin_port: Option<u16>,
    /// Address to listen on [default: 127.0.0.1].
    #[arg(long)]
    bind: Option<String>,
    /// Data directory [default: ./data].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// WAL fsync policy: always, everysec or no [default: everysec].
    #[arg(long)]
    appendfsync: Option<FsyncPolicy>,
    /// Log level: error, warn, info, debug, trace (Redis names warning/notice/verbose work too)
    /// [default: info].
    #[arg(long)]
    loglevel: Option<String>,
    /// Password clients must give with AUTH.
    #[arg(long)]
    requirepass: Option<String>,
    /// Largest bulk string a client may send, in bytes [default: 536870912].
    #[arg(long)]
    proto_max_bulk_len: Option<usize>,
    /// Most simultaneous clients [default: 10000].
    #[arg(long)]
    maxclients: Option<usize>,
    /// Follow this leader as a read replica: "host port".
    #[arg(long, value_name = "HOST PORT")]
    replicaof: Option<String>,
    /// Password this replica gives its leader.
    #[arg(long)]
    masterauth: Option<String>,
    /// ACL user this replica authenticates as on its leader.
    #[arg(long)]
    masteruser: Option<String>,
    /// Bytes of recent writes kept for replicas' partial resyncs [default: 67108864].
    #[arg(long)]
    repl_backlog_size: Option<usize>,
}

/// The config file: every field optional, same names as the flags (with `-` or `_`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    port: Option<u16>,
    admin_port: Option<u16>,
    bind: Option<String>,
    dir: Option<PathBuf>,
    appendfsync: Option<String>,
    loglevel: Option<String>,
    requirepass: Option<String>,
    proto_max_bulk_len: Option<usize>,
    maxclients: Option<usize>,
    memtable_bytes_max: Option<usize>,
    block_cache_bytes: Option<usize>,
    replicaof: Option<String>,
    masterauth: Option<String>,
    masteruser: Option<String>,
    repl_backlog_size: Option<usize>,
    replica_read_only: Option<bool>,
    min_replicas_to_write: Option<usize>,
    min_replicas_max_lag: Option<u64>,
}

fn load(cli: Cli) -> anyhow::Result<Config> {
    let file: FileConfig = match &cli.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            toml::from_str(&text)
                .with_context(|| format!("parsing config file {}", path.display()))?
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
    config.admin_port = cli.admin_port.or(file.admin_port);
    if let Some(v) = cli.bind.or(file.bind) {
        config.bind = v;
    }
    if let Some(v) = cli.dir.or(file.dir) {
        config.dir = v;
    }
    match (cli.appendfsync, file.appendfsync) {
        (Some(v), _) => config.appendfsync = v,
        (None, Some(text)) => config.appendfsync = text.parse().map_err(anyhow::Error::msg)?,
        (None, None) => {}
    }
    if let Some(v) = cli.loglevel.or(file.loglevel) {
        config.loglevel = v;
    }
    config.requirepass = cli
        .requirepass
        .or(file.requirepass)
        .filter(|p| !p.is_empty());
    if let Some(v) = cli.proto_max_bulk_len.or(file.proto_max_bulk_len) {
        config.proto_max_bulk_len = v;
    }
    if let Some(v) = cli.maxclients.or(file.maxclients) {
        config.maxclients = v;
    }
    if let Some(v) = file.memtable_bytes_max {
        config.memtable_bytes_max = v;
    }
    if let Some(v) = file.block_cache_bytes {
        config.block_cache_bytes = v;
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
    if let Some(v) = file.replica_read_only {
        replication.replica_read_only = v;
    }
    if let Some(v) = file.min_replicas_to_write {
        replication.min_replicas_to_write = v;
    }
    if let Some(v) = file.min_replicas_max_lag {
        replication.min_replicas_max_lag_seconds = v;
    }
    Ok(config)
}

/// Maps Redis' log level names onto tracing's.
fn filter_for(level: &str) -> String {
    match level.to_ascii_lowercase().as_str() {
        "warning" => "warn".into(),
        "notice" => "info".into(),
        "verbose" => "debug".into(),
        other => other.into(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = load(cli)?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter_for(&config.loglevel)));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
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
