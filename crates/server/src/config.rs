//! Server settings: what `ringkv` reads from its TOML file and flags, and
//! which of them `CONFIG GET/SET` shows and changes at run time.

use std::path::PathBuf;

use ringkv_engine::FsyncPolicy;

/// Default for [`Config::query_buffer_bytes_max`]: 1 GiB, Redis' `client-query-buffer-limit`.
pub const QUERY_BUFFER_BYTES_MAX_DEFAULT: usize = 1 << 30;

/// Default for [`Config::maxclients`], as Redis.
pub const MAXCLIENTS_DEFAULT: usize = 10_000;

/// Settings of a server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    pub bind: String,
    /// TCP port (0: any free port; the bound one is logged).
    pub port: u16,
    /// Admin HTTP port (`/health`, `/ready`, `/metrics`); `None`: no admin port, 0: any free port.
    pub admin_port: Option<u16>,
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
    /// Log level name (informational; the binary sets up logging).
    pub loglevel: String,
    /// Path of the config file it was loaded from, if any (`CONFIG GET` shows nothing of it).
    pub config_file: Option<PathBuf>,
    /// Replication: leader to follow, its credentials, backlog, write guards.
    pub replication: crate::replication::ReplicationConfig,
}

impl Default for Config {
    fn default() -> Config {
        let engine = ringkv_engine::Options::default();
        Config {
            bind: "127.0.0.1".into(),
            port: 6379,
            admin_port: None,
            dir: PathBuf::from("./data"),
            appendfsync: FsyncPolicy::EverySec,
            requirepass: None,
            proto_max_bulk_len: ringkv_protocol::BULK_BYTES_MAX_DEFAULT,
            args_max: ringkv_protocol::ARGS_MAX_DEFAULT,
            query_buffer_bytes_max: QUERY_BUFFER_BYTES_MAX_DEFAULT,
            maxclients: MAXCLIENTS_DEFAULT,
            memtable_bytes_max: engine.memtable_bytes_max,
            block_cache_bytes: engine.block_cache_bytes,
            loglevel: "notice".into(),
            config_file: None,
            replication: crate::replication::ReplicationConfig::default(),
        }
    }
}
