//! The internode transport on tokio: TCP connections carrying
//! [`frame`](crate::frame) frames, authenticated by the handshake, with
//! requests multiplexed by id on pooled connections. docs/cluster.md,
//! "Transport".
//!
//! **Owns:** sockets, the connection pool, connection tasks, per-request
//! timeouts, the in-flight bound per connection, and the epoch check
//! before a request reaches the handler. **Must not touch:** what a
//! request means (the user's [`Handler`] and the kinds it picks), the slot
//! map or membership (the epoch comes from the handler), and the frame
//! layout or handshake logic (that is `frame`).
//!
//! The user's kinds are a byte of their own at the front of the Request
//! and Response payloads, so all 256 values are the user's; the transport
//! keeps the frame kinds for itself (handshake, stale epoch, error reply).

mod client;
mod conn;
mod server;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::frame::{ClusterSecret, FrameError, DEFAULT_MAX_FRAME_BYTES, HANDSHAKE_MAX_FRAME_BYTES};
use crate::NodeId;

/// A boxed, sendable future: what a [`Handler`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Default time a new connection has to complete the handshake: three
/// small frames, so a peer that has not finished in this long is broken
/// or hostile and only holds a socket.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Default bound on requests one connection runs at once. High enough
/// that a coordinator's parallel fan-out rarely waits, low enough that one
/// peer cannot start unbounded work on a node.
pub const DEFAULT_MAX_IN_FLIGHT_PER_CONN: usize = 256;

/// Default bound on connections a node serves at once, authenticated or
/// not: far above a cluster's peers times their `conns_per_peer`, and a
/// ceiling on what connections that never authenticate can hold (each
/// until its handshake timeout).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Default connections per peer: two, so one large transfer does not
/// queue every small request behind it.
pub const DEFAULT_CONNS_PER_PEER: usize = 2;

/// Longest handler error message sent back; longer ones are cut, so an
/// error reply always fits the smallest allowed frame limit.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 512;

/// How a [`Transport`] behaves.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// This node's id, sent in the handshake.
    pub node_id: NodeId,
    /// The cluster secret both sides prove they know.
    pub secret: ClusterSecret,
    /// Largest frame after the handshake, both sent and accepted (before
    /// it, [`HANDSHAKE_MAX_FRAME_BYTES`]).
    pub max_frame_bytes: usize,
    /// Time an accepted or dialled connection has to authenticate.
    pub handshake_timeout: Duration,
    /// Requests one accepted connection runs at once; at the bound it stops
    /// reading.
    pub max_in_flight_per_conn: usize,
    /// Connections kept per peer address, used round-robin.
    pub conns_per_peer: usize,
    /// Accepted connections served at once; at the bound the listener
    /// stops accepting until one closes.
    pub max_connections: usize,
    /// Wraps every connection before the handshake (TLS between nodes,
    /// `tls-cluster`); `None`: plain TCP.
    pub layer: Option<Arc<dyn StreamLayer>>,
    /// Where connections come from: TCP ([`TcpNetwork`]), or a simulated
    /// network (docs/testing.md, "Deterministic simulation").
    pub network: Arc<dyn Network>,
}

/// How the transport listens and dials: the operating system's TCP
/// ([`TcpNetwork`]), or another network with TCP's semantics (reliable,
/// ordered byte streams), such as a deterministic simulation's.
pub trait Network: Send + Sync + std::fmt::Debug + 'static {
    /// Listens on `addr`.
    fn bind(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Box<dyn Listener>>>;
    /// Dials `peer`.
    fn connect(&self, peer: SocketAddr) -> BoxFuture<'static, io::Result<BoxStream>>;
}

/// A listening socket of a [`Network`].
pub trait Listener: Send + Sync + 'static {
    /// The address it is bound to.
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// The next connection and its remote address.
    fn accept(&self) -> BoxFuture<'_, io::Result<(BoxStream, SocketAddr)>>;
}

/// The operating system's TCP, with Nagle off (requests are small and
/// latency-bound: do not wait to coalesce). A dialled connection lingers for
/// nothing when closed: requests it had not delivered are dropped with it (a
/// reset) instead of being sent whenever the peer can be reached again, after
/// their callers gave up on them (docs/cluster.md, "Late events").
#[derive(Debug, Default)]
pub struct TcpNetwork;

impl Network for TcpNetwork {
    fn bind(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let listener = TcpListener::bind(addr).await?;
            Ok(Box::new(TcpAccept(listener)) as Box<dyn Listener>)
        })
    }

    fn connect(&self, peer: SocketAddr) -> BoxFuture<'static, io::Result<BoxStream>> {
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(peer).await?;
            stream.set_nodelay(true)?;
            stream.set_zero_linger()?;
            Ok(Box::new(stream) as BoxStream)
        })
    }
}

struct TcpAccept(TcpListener);

impl Listener for TcpAccept {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn accept(&self) -> BoxFuture<'_, io::Result<(BoxStream, SocketAddr)>> {
        Box::pin(async move {
            let (stream, remote) = self.0.accept().await?;
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%remote, %error, "set_nodelay failed");
            }
            Ok((Box::new(stream) as BoxStream, remote))
        })
    }
}

/// A byte stream the transport runs on: TCP, or TLS around it.
pub trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// A boxed [`Stream`].
pub type BoxStream = Box<dyn Stream>;

/// Wraps the internode TCP connections, both accepted and dialled, before the
/// HMAC handshake runs inside (TLS between nodes: the server's `tls-cluster`).
/// The transport stays free of any TLS library; the layer's own handshake is
/// bounded by `handshake_timeout` like the transport's.
pub trait StreamLayer: Send + Sync + std::fmt::Debug + 'static {
    /// The server side of an accepted connection from `remote`.
    fn accept(
        &self,
        stream: BoxStream,
        remote: SocketAddr,
    ) -> BoxFuture<'static, io::Result<BoxStream>>;
    /// The client side of a connection dialled to `peer`.
    fn connect(
        &self,
        stream: BoxStream,
        peer: SocketAddr,
    ) -> BoxFuture<'static, io::Result<BoxStream>>;
}

impl TransportConfig {
    /// A configuration with the default limits.
    pub fn new(node_id: NodeId, secret: ClusterSecret) -> Self {
        Self {
            node_id,
            secret,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_in_flight_per_conn: DEFAULT_MAX_IN_FLIGHT_PER_CONN,
            conns_per_peer: DEFAULT_CONNS_PER_PEER,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            layer: None,
            network: Arc::new(TcpNetwork),
        }
    }

    fn validate(&self) -> io::Result<()> {
        let invalid =
            |what: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, what.to_owned()));
        if !(HANDSHAKE_MAX_FRAME_BYTES..=u32::MAX as usize).contains(&self.max_frame_bytes) {
            return invalid("max_frame_bytes must be between the handshake limit and u32::MAX");
        }
        if self.max_in_flight_per_conn == 0 {
            return invalid("max_in_flight_per_conn must be at least 1");
        }
        if self.max_connections == 0 {
            return invalid("max_connections must be at least 1");
        }
        if self.conns_per_peer == 0 {
            return invalid("conns_per_peer must be at least 1");
        }
        if self.handshake_timeout.is_zero() {
            return invalid("handshake_timeout must be positive");
        }
        Ok(())
    }
}

/// An error a [`Handler`] returns; the caller gets
/// [`CallError::Remote`] with the message (cut to
/// [`MAX_ERROR_MESSAGE_BYTES`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct HandlerError {
    /// Said to the caller.
    pub message: String,
}

impl HandlerError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// The transport's user: answers requests and says the current epoch.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request from the authenticated node `from`, whose epoch
    /// is `epoch` (never older than [`Handler::epoch`] at arrival: the
    /// transport refuses those). Runs as its own task, concurrently with
    /// other requests of the same connection; returns the reply's kind and
    /// payload.
    fn handle(
        &self,
        from: NodeId,
        kind: u8,
        epoch: u64,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<(u8, Bytes), HandlerError>>;

    /// This node's current cluster epoch: sent with every request, and
    /// requests from an older epoch are refused with it.
    fn epoch(&self) -> u64;

    /// Whether requests of `kind` are refused from an older epoch (the
    /// default). The control plane's and gossip's own messages are not
    /// fenced: they are how a node behind learns the new epoch.
    fn fenced(&self, kind: u8) -> bool {
        let _ = kind;
        true
    }
}

/// Why a [`Transport::call`] failed.
#[derive(Debug, Error)]
pub enum CallError {
    /// The TCP connection could not be opened.
    #[error("connect failed: {0}")]
    ConnectFailed(io::Error),
    /// No reply within the call's timeout (dialling included). The
    /// request may or may not have run on the peer.
    #[error("timed out")]
    TimedOut,
    /// The connection broke before the reply came. The request may or may
    /// not have run; the next call re-dials.
    #[error("connection lost")]
    ConnectionLost,
    /// The peer failed authentication, closed the connection during the
    /// handshake, or did not finish it in time. (A peer that refuses our
    /// final proof can only close the connection after it; the first call
    /// on it then fails with `ConnectionLost`. With honest peers that
    /// cannot happen first: a different secret fails our check of theirs.)
    #[error("handshake refused: {reason}")]
    HandshakeRefused {
        /// What went wrong.
        reason: String,
    },
    /// The peer's epoch is newer than ours: refresh and retry.
    #[error("stale epoch: the peer is at epoch {theirs}")]
    StaleEpoch {
        /// The peer's epoch.
        theirs: u64,
    },
    /// The peer's handler returned an error.
    #[error("remote error: {message}")]
    Remote {
        /// The handler's message.
        message: String,
    },
    /// The request could not be framed (too large).
    #[error("frame error: {0}")]
    Frame(FrameError),
    /// The transport was shut down.
    #[error("transport shut down")]
    ShutDown,
}

/// What every task of a transport shares.
struct Shared {
    config: TransportConfig,
    handler: Arc<dyn Handler>,
    pool: client::Pool,
    /// Set once, at shutdown; every task stops when it flips.
    shutdown: watch::Sender<bool>,
    /// Each task holds a clone; shutdown waits until all are dropped.
    /// `None` after shutdown, so no new task starts.
    alive: Mutex<Option<mpsc::Sender<()>>>,
    all_done: tokio::sync::Mutex<mpsc::Receiver<()>>,
}

impl Shared {
    /// Spawns a task that ends at shutdown at the latest; `false` (and
    /// nothing spawned) once shutdown has begun.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) -> bool {
        let Some(alive) = self.alive.lock().clone() else {
            return false;
        };
        let mut shutdown = self.shutdown.subscribe();
        tokio::spawn(async move {
            let _alive = alive;
            tokio::select! {
                // In a fixed order: a simulation replays a seed exactly (docs/testing.md).
                biased;
                () = task => {}
                _ = shutdown.wait_for(|&stop| stop) => {}
            }
        });
        true
    }
}

/// The internode transport of one node: a listener answering peers and a
/// pool of connections for calling them. Cheap to clone.
#[derive(Clone)]
pub struct Transport {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
}

impl Transport {
    /// Listens on `addr` and answers authenticated peers' requests with
    /// `handler`. Must be called within a tokio runtime.
    pub async fn bind(
        addr: SocketAddr,
        config: TransportConfig,
        handler: Arc<dyn Handler>,
    ) -> io::Result<Transport> {
        config.validate()?;
        let listener = config.network.bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (alive, all_done) = mpsc::channel(1);
        let shared = Arc::new(Shared {
            pool: client::Pool::new(config.conns_per_peer),
            config,
            handler,
            shutdown: watch::Sender::new(false),
            alive: Mutex::new(Some(alive)),
            all_done: tokio::sync::Mutex::new(all_done),
        });
        let spawned = shared.spawn(server::accept_loop(listener, shared.clone()));
        debug_assert!(spawned);
        tracing::info!(%local_addr, node = shared.config.node_id, "internode transport listening");
        Ok(Transport { shared, local_addr })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Sends one request of `kind` to the node at `peer` and waits for its
    /// reply, at most `timeout` (dialling and the handshake included).
    /// Reuses a pooled connection, or dials one.
    pub async fn call(
        &self,
        peer: SocketAddr,
        kind: u8,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<(u8, Bytes), CallError> {
        if *self.shared.shutdown.borrow() {
            return Err(CallError::ShutDown);
        }
        let shared = &self.shared;
        let epoch = shared.handler.epoch();
        let deadline = tokio::time::Instant::now() + timeout;
        let conn = match tokio::time::timeout_at(deadline, shared.pool.get(peer, shared)).await {
            Ok(conn) => conn?,
            Err(_) => return Err(CallError::TimedOut),
        };
        conn.call_until(
            kind,
            &payload,
            epoch,
            shared.config.max_frame_bytes,
            deadline,
        )
        .await
    }

    /// Stops listening, closes every connection, and returns once every
    /// task of this transport has ended. Calls after it fail with
    /// [`CallError::ShutDown`].
    pub async fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
        drop(self.shared.alive.lock().take());
        self.shared.pool.clear();
        // `recv` returns `None` once every task's sender is dropped.
        let mut all_done = self.shared.all_done.lock().await;
        while all_done.recv().await.is_some() {}
        tracing::info!(local_addr = %self.local_addr, "internode transport stopped");
    }
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("node_id", &self.shared.config.node_id)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}
