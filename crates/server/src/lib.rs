//! # ringkv-server
//!
//! The Redis-protocol server of ringkv: TCP connections (tokio), the
//! executor, the command table and Redis' command semantics, on the data
//! model of `ringkv-store`.
//!
//! **Owns:** connections and pipelining, running commands so no client can
//! stall the others (`exec.rs`), command semantics and Redis' error texts,
//! transactions (MULTI/EXEC/WATCH), settings, ACL, SLOWLOG, metrics,
//! replication, the schedule of the active expiry sweep.
//! **Must not touch:** engine keys or stored values (the store's layout and
//! envelope), bytes on disk (the engine's), RESP framing (the protocol
//! crate's), cluster placement.
//!
//! Entry point: [`run`] serves a [`Config`] until SHUTDOWN or
//! [`ShutdownHandle::shutdown`]. The layers and the write path are in
//! `docs/architecture.md`, the formats and rules in `docs/server.md`.

mod acl;
mod admin;
mod args;
mod catalog;
mod client;
mod cluster;
mod cmd;
mod config;
mod connection;
mod data;
mod errors;
mod exec;
mod glob;
mod memory;
mod metrics;
mod persistence;
mod replication;
mod server;
pub mod settings;
mod slowlog;
mod tls;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use config::{
    ClockMode, Config, DebugCommand, ADMIN_PORT_DEFAULT, MAXCLIENTS_DEFAULT,
    OUTPUT_BUFFER_BYTES_MAX_DEFAULT, QUERY_BUFFER_BYTES_MAX_DEFAULT,
};
pub use memory::set_allocator;
pub use replication::{parse_replicaof, ReplicationConfig, BACKLOG_BYTES_DEFAULT};
pub use ringkv_engine::FsyncPolicy;
pub use tls::TlsError;

use crate::server::{ClientHandle, ClientInfo, Server};

/// The Redis version ringkv reports (INFO, HELLO), so clients' and tools' version checks pass.
pub const REDIS_VERSION: &str = "7.2.0";

/// ringkv's own version.
pub const RINGKV_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Period of the active expiry sweep (Redis' `hz 10`).
const EXPIRE_PERIOD: Duration = Duration::from_millis(100);

/// Longest one expiry cycle may run (Redis' slow cycle uses 25% of a tick).
const EXPIRE_CYCLE_BUDGET: Duration = Duration::from_millis(25);

/// How long shutdown waits for connections to finish their current batch.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How long a shutdown lets commands finish before it interrupts writers stalled in the
/// engine.
const STALL_PATIENCE: Duration = Duration::from_millis(300);

/// Errors that stop the server from starting or stopping cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The engine could not open or close the data directory.
    #[error("storage: {0}")]
    Engine(#[from] ringkv_engine::Error),
    /// The TLS certificate, key or CA could not be loaded.
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    /// A setting is missing or contradicts another; names the setting.
    #[error("invalid setting {key}: {why}")]
    Setting {
        /// The setting.
        key: &'static str,
        /// What is wrong.
        why: String,
    },
    /// The admin HTTP socket could not be bound (on by default, so say how to move or drop it).
    #[error(
        "cannot listen on {addr} for the admin HTTP port: {source} \
         (set admin-port / admin-bind to another address, or --no-admin to turn it off)"
    )]
    AdminBind {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Cluster mode could not start (internode port, node id, secret, joining).
    #[error("cluster: {0}")]
    Cluster(String),
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Stops a running server from outside (signal handlers, tests).
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    server: Arc<Server>,
}

impl ShutdownHandle {
    /// Asks the server to stop; [`run`] returns once it has.
    pub fn shutdown(&self) {
        self.server.request_shutdown();
    }
}

/// A server that is listening but not yet serving: lets callers learn the bound address and
/// get a [`ShutdownHandle`] before [`Bound::serve`].
pub struct Bound {
    server: Arc<Server>,
    listener: tokio::net::TcpListener,
    /// The admin HTTP task, serving since before recovery.
    admin: Option<tokio::task::JoinHandle<()>>,
    admin_addr: Option<SocketAddr>,
    /// TLS listener and its acceptor (`tls-port`).
    tls: Option<(tokio::net::TcpListener, tokio_rustls::TlsAcceptor)>,
}

impl Bound {
    /// The address the server listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The admin HTTP address, if it listens.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The TLS address, if it listens.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// A handle that stops the server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            server: self.server.clone(),
        }
    }

    /// Serves until shutdown, then saves the key counts and closes the engine.
    pub async fn serve(self) -> Result<(), ServerError> {
        let Bound {
            server,
            listener,
            admin,
            tls,
            ..
        } = self;
        let background = vec![
            tokio::spawn(expire_task(server.clone())),
            tokio::spawn(drop_task(server.clone())),
        ];
        let (tls_listener, tls_acceptor) = match tls {
            Some((listener, acceptor)) => (Some(listener), Some(acceptor)),
            None => (None, None),
        };
        replication::start(&server);
        let mut shutdown = server.shutdown.subscribe();
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let (accepted, secure) = tokio::select! {
                accepted = listener.accept() => (accepted, false),
                accepted = accept_optional(tls_listener.as_ref()) => (accepted, true),
                _ = shutdown.wait_for(|stop| *stop) => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            };
            let (stream, addr) = match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let laddr = stream.local_addr().unwrap_or(addr);
            let handle = match admit(&server, addr, laddr) {
                Ok(handle) => handle,
                Err(refusal) => {
                    tokio::spawn(async move {
                        use tokio::io::AsyncWriteExt;
                        let mut stream = stream;
                        let _ = stream.write_all(refusal.as_bytes()).await;
                    });
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            match (&tls_acceptor, secure) {
                (Some(acceptor), true) => {
                    let acceptor = acceptor.clone();
                    let server = server.clone();
                    connections.spawn(async move {
                        let handshake =
                            tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                                .await;
                        match handshake {
                            Ok(Ok(tls_stream)) => {
                                connection::serve(server, tls_stream, handle).await;
                            }
                            Ok(Err(error)) => {
                                tracing::info!(client = %addr, %error, "TLS handshake failed");
                                server.clients.lock().remove(&handle.id);
                            }
                            Err(_) => {
                                tracing::info!(client = %addr, "TLS handshake timed out");
                                server.clients.lock().remove(&handle.id);
                            }
                        }
                    });
                }
                _ => {
                    connections.spawn(connection::serve(server.clone(), stream, handle));
                }
            }
        }
        drop(listener);
        tracing::info!("shutting down: closing connections");
        // Commands in flight get a moment to finish; a writer stalled in the engine (L0 full,
        // compaction behind) would hold the grace up whole, so after that moment the stalls
        // are interrupted (those writers get an error, nothing acknowledged is lost) and the
        // rest of the grace waits for what remains.
        let drained = tokio::time::timeout(STALL_PATIENCE, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            let stalled = server.clone();
            let _ = tokio::task::spawn_blocking(move || stalled.keyspace.interrupt_stalls()).await;
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
                while connections.join_next().await.is_some() {}
            })
            .await;
        }
        connections.abort_all();
        for task in background {
            let _ = task.await;
        }
        if let Some(admin) = admin {
            admin.abort();
        }
        if let Some(node) = server.cluster.get() {
            // Bounded: a peer that does not answer must not hold the exit up.
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, node.shutdown()).await;
        }
        let closing = server.clone();
        tokio::task::spawn_blocking(move || {
            // Writers stalled in the engine give up, so they let go of the gate.
            closing.keyspace.interrupt_stalls();
            let deadline = Instant::now() + SHUTDOWN_GRACE;
            let _exclusive = loop {
                if let Ok(exclusive) = closing.gate.try_write() {
                    break Some(exclusive);
                }
                if Instant::now() >= deadline {
                    // A command still runs (an EXEC sleeping in place): it sees a closed
                    // engine from here on, rather than holding the shutdown up.
                    tracing::warn!("closing the engine while a command still runs");
                    break None;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            closing.keyspace.close()
        })
        .await
        .expect("close task")?;
        tracing::info!("ringkv is now ready to exit, bye bye...");
        Ok(())
    }
}

/// Binds the admin port first (so `/health` answers and `/ready` says "recovering" while the
/// data directory opens), opens the data directory, then binds the client and TLS ports.
pub async fn bind(config: Config) -> Result<Bound, ServerError> {
    memory::tune_system_allocator();
    let tls_acceptor = match (
        &config.tls_port,
        &config.tls_cert_file,
        &config.tls_key_file,
    ) {
        (None, _, _) => None,
        (Some(_), Some(cert), Some(key)) => Some(tls::acceptor(
            cert,
            key,
            config.tls_ca_cert_file.as_deref(),
        )?),
        (Some(_), None, _) => {
            return Err(ServerError::Setting {
                key: "tls-cert-file",
                why: "required when tls-port is set".into(),
            })
        }
        (Some(_), _, None) => {
            return Err(ServerError::Setting {
                key: "tls-key-file",
                why: "required when tls-port is set".into(),
            })
        }
    };
    let admin_state = Arc::new(admin::AdminState::default());
    let (admin, admin_addr) = match cluster_admin_port(&config) {
        Some(port) => {
            let admin_addr = format!("{}:{}", config.admin_bind, port);
            let admin = tokio::net::TcpListener::bind(&admin_addr)
                .await
                .map_err(|source| ServerError::AdminBind {
                    addr: admin_addr,
                    source,
                })?;
            let local = admin.local_addr().ok();
            if let Some(local) = local {
                tracing::info!(addr = %local, "Admin HTTP ready (/health /ready /metrics)");
            }
            (
                Some(tokio::spawn(admin::serve(admin_state.clone(), admin))),
                local,
            )
        }
        None => (None, None),
    };
    if let Some(gate) = &config.recovery_gate {
        gate.notified().await;
    }
    let mut options = ringkv_engine::Options {
        fsync: config.appendfsync,
        memtable_bytes_max: config.memtable_bytes_max,
        block_cache_bytes: config.block_cache_bytes,
        row_cache_bytes: config.row_cache_bytes,
        l0_slowdown_trigger: config.l0_slowdown_writes_trigger,
        l0_stop_trigger: config.l0_stop_writes_trigger,
        ..ringkv_engine::Options::default()
    };
    let manual_clock = (config.clock == ClockMode::Manual).then(|| {
        let clock = Arc::new(ringkv_store::ManualClock::starting_now());
        options.clock = clock.clone();
        clock
    });
    options.value_bytes_max = options.value_bytes_max.max(config.proto_max_bulk_len + 1);
    let replica = config.replication.replicaof.is_some();
    // The backlog starts with the first replica (replication::activate_backlog); a replica
    // keeps one from the start, for replicas of its own and for after a failover.
    options.change_log_bytes_max = if replica {
        config.replication.backlog_bytes
    } else {
        0
    };
    let dir = config.dir.clone();
    let recount_gate = config.recount_gate.clone();
    let opened = tokio::task::spawn_blocking(move || {
        // A replica's full-sync swap cut short by a crash: finish or undo it first.
        let swap = replication::follower::recover_swap(&*options.storage, &dir)
            .map_err(|e| ringkv_engine::Error::io(&dir, e))?;
        if swap.acted() {
            tracing::warn!(?swap, dir = %dir.display(), "recovered an interrupted replica full-sync swap");
        }
        let engine = ringkv_engine::Db::open(&dir, options)?;
        log_recovery(&engine);
        ringkv_store::Keyspace::open(engine, replica, recount_gate)
    })
    .await
    .expect("open task");
    let keyspace = match opened {
        Ok(keyspace) => keyspace,
        Err(error) => {
            if let Some(admin) = admin {
                admin.abort();
            }
            return Err(error.into());
        }
    };
    let addr = format!("{}:{}", config.bind, config.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let tls = match (config.tls_port, tls_acceptor) {
        (Some(port), Some(acceptor)) => {
            let tls_addr = format!("{}:{}", config.bind, port);
            let tls_listener =
                tokio::net::TcpListener::bind(&tls_addr)
                    .await
                    .map_err(|source| ServerError::Bind {
                        addr: tls_addr,
                        source,
                    })?;
            if let Ok(local) = tls_listener.local_addr() {
                tracing::info!(addr = %local, "Ready to accept connections tls");
            }
            Some((tls_listener, acceptor))
        }
        _ => None,
    };
    crate::cmd::install_catalog();
    let mut server = Server::new(keyspace, config);
    server.manual_clock = manual_clock;
    let server = Arc::new(server);
    // Ready before the line that says so: whoever waits for the line may ask /ready next.
    admin_state.ready(server.clone());
    if let Ok(local) = listener.local_addr() {
        server
            .bound_port
            .store(u64::from(local.port()), Ordering::Relaxed);
    }
    if server.config.read().cluster.enabled {
        cluster::start(&server)
            .await
            .map_err(|source| ServerError::Cluster(source.to_string()))?;
    }
    if let Ok(local) = listener.local_addr() {
        tracing::info!(addr = %local, "Ready to accept connections tcp");
    }
    Ok(Bound {
        server,
        listener,
        admin,
        admin_addr,
        tls,
    })
}

/// The admin port to bind. Several cluster nodes share a machine (docs/cluster.md,
/// "Starting"), so in cluster mode the default 9121 becomes the client port + 20000 (7001 →
/// 27001; ephemeral past 65535 or with an ephemeral client port); a port set explicitly to
/// anything else stays.
fn cluster_admin_port(config: &Config) -> Option<u16> {
    match config.admin_port {
        Some(ADMIN_PORT_DEFAULT) if config.cluster.enabled && config.port != 6379 => {
            Some(if config.port == 0 {
                0
            } else {
                config.port.checked_add(20_000).unwrap_or(0)
            })
        }
        other => other,
    }
}

/// Accepts on `listener`, or waits forever if there is none (an optional arm of `select!`).
async fn accept_optional(
    listener: Option<&tokio::net::TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Registers a new connection, or the reply that refuses it (maxclients, protected mode).
fn admit(
    server: &Arc<Server>,
    addr: SocketAddr,
    laddr: SocketAddr,
) -> Result<Arc<ClientHandle>, &'static str> {
    server
        .stats
        .total_connections_received
        .fetch_add(1, Ordering::Relaxed);
    let (maxclients, protected_mode, loopback_is_remote) = {
        let config = server.config.read();
        (
            config.maxclients,
            config.protected_mode,
            config.protected_mode_loopback_is_remote,
        )
    };
    if acl::protected_mode_refuses(
        protected_mode,
        server.acl.default_is_open(),
        addr.ip(),
        loopback_is_remote,
    ) {
        server
            .stats
            .rejected_connections
            .fetch_add(1, Ordering::Relaxed);
        server
            .metrics
            .protected_rejections
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(client = %addr, "refused a remote client: protected mode");
        return Err(acl::PROTECTED_MODE_DENIED);
    }
    if server.clients.lock().len() >= maxclients {
        server
            .stats
            .rejected_connections
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(client = %addr, maxclients, "refused a client: maxclients reached");
        return Err("-ERR max number of clients reached\r\n");
    }
    let id = server.next_client_id.fetch_add(1, Ordering::Relaxed);
    let now = Instant::now();
    let handle = Arc::new(ClientHandle {
        id,
        info: parking_lot::Mutex::new(ClientInfo {
            addr,
            laddr,
            name: bytes::Bytes::new(),
            db: 0,
            resp: ringkv_protocol::RespVersion::Resp2,
            created: now,
            last_command: now,
            last_command_name: String::new(),
            multi: -1,
            lib_name: bytes::Bytes::new(),
            lib_ver: bytes::Bytes::new(),
            user: acl::DEFAULT_USER.to_string(),
        }),
        killed: std::sync::atomic::AtomicBool::new(false),
        kill: tokio::sync::Notify::new(),
    });
    server.clients.lock().insert(id, handle.clone());
    Ok(handle)
}

/// Says what the engine's open recovered from the WAL and how long it took.
fn log_recovery(engine: &ringkv_engine::Db) {
    let recovery = engine.stats().recovery;
    if recovery.wal_bytes_dropped > 0 {
        tracing::warn!(
            dropped_bytes = recovery.wal_bytes_dropped,
            "WAL tail was torn (a crash mid-write); the unreadable tail was cut off"
        );
    }
    tracing::info!(
        wal_ops = recovery.wal_ops,
        wal_bytes = recovery.wal_bytes,
        wal_bytes_dropped = recovery.wal_bytes_dropped,
        millis = recovery.duration_ms,
        last_sequence = engine.last_sequence(),
        "storage opened: replayed {} WAL operations ({} bytes) in {} ms",
        recovery.wal_ops,
        recovery.wal_bytes,
        recovery.duration_ms
    );
}

/// Serves `config` until shutdown.
pub async fn run(config: Config) -> Result<(), ServerError> {
    bind(config).await?.serve().await
}

/// The active expiry sweep: every [`EXPIRE_PERIOD`], removes due keys for at most
/// [`EXPIRE_CYCLE_BUDGET`].
async fn expire_task(server: Arc<Server>) {
    let mut shutdown = server.shutdown.subscribe();
    let mut interval = tokio::time::interval(EXPIRE_PERIOD);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        ticks += 1;
        if ticks.is_multiple_of(10) {
            // About once a second: give memory freed by large buffers and flushed memtables
            // back to the OS (`memory.rs`).
            crate::memory::tick(server.keyspace.engine().stats().flushes);
        }
        // A replica deletes expired keys when its leader's deletes arrive, never itself.
        if !server.keyspace.active_expire() || server.keyspace.is_replica() {
            continue;
        }
        let sweeping = server.clone();
        let result = tokio::task::spawn_blocking(move || {
            // The sweep locks each key it deletes, so it never deletes under a running EXEC.
            let (removed, seq) = sweeping
                .keyspace
                .expire_cycle(Instant::now() + EXPIRE_CYCLE_BUDGET)?;
            if seq > 0 {
                sweeping.keyspace.engine().sync(seq)?;
            }
            Ok::<u64, errors::CmdError>(removed)
        })
        .await;
        if let Ok(Err(error)) = result {
            tracing::error!(?error, "active expiry cycle failed");
        }
    }
}

/// Clears the namespaces FLUSHDB/FLUSHALL let go, in the background.
async fn drop_task(server: Arc<Server>) {
    let mut shutdown = server.shutdown.subscribe();
    loop {
        // A replica's flushed namespaces are cleared by its leader's deletes.
        if server.keyspace.has_pending_drops() && !server.keyspace.is_replica() {
            let dropping = server.clone();
            let result = tokio::task::spawn_blocking(move || {
                let keep_going = || !*dropping.shutdown.borrow();
                dropping.keyspace.drop_pending(&keep_going)
            })
            .await;
            if let Ok(Err(error)) = result {
                tracing::error!(?error, "clearing flushed databases failed; retrying later");
            }
        }
        tokio::select! {
            _ = server.drop_wakeup.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}
