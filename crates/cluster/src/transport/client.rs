//! The calling side: one multiplexed connection to a peer
//! ([`ClientConn`]) and the pool that keeps a few per peer ([`Pool`]).
//! docs/cluster.md, "Transport".
//!
//! **Owns:** dialling, request ids, the table of requests waiting for a
//! reply, matching replies (in any order) to them, and dropping a broken
//! connection from the pool. **Must not touch:** timeouts (the caller in
//! `transport.rs` wraps the whole call) or what requests mean.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};

use super::conn::{self, ConnError, FrameReader};
use super::{CallError, Shared};
use crate::frame::{Frame, FrameKind, HANDSHAKE_MAX_FRAME_BYTES};
use crate::NodeId;

/// Frames a connection queues for its writer before callers wait: enough
/// to keep the socket busy, bounded so a stalled peer pushes back on
/// callers instead of growing memory.
const OUTGOING_QUEUE_FRAMES: usize = 1024;

/// What came back for one request.
enum Reply {
    Response { kind: u8, payload: Bytes },
    Stale { theirs: u64 },
    Error(String),
}

/// Ordered: closing a connection wakes its waiters in request order, the same every run
/// (a simulation replays a seed exactly).
type Waiters = BTreeMap<u64, oneshot::Sender<Reply>>;

/// State the connection task and the callers share.
struct ConnState {
    /// Requests waiting for a reply; `None` once the connection closed, so
    /// a request registered after the close fails at once instead of
    /// waiting for its timeout.
    waiting: Mutex<Option<Waiters>>,
    closed: AtomicBool,
    /// Frames read from the peer so far: a request that times out with none
    /// read since it was sent finds the connection silent.
    received: AtomicU64,
    /// Wakes the connection task to drop the socket.
    shut: tokio::sync::Notify,
}

impl ConnState {
    /// Marks the connection closed, fails every waiting request (the dropped
    /// senders wake their callers with `ConnectionLost`) and has the connection
    /// task drop the socket. Dialled sockets linger for nothing
    /// ([`crate::transport::TcpNetwork`]): what they have not delivered yet is
    /// thrown away, not sent when a partition heals, long after its caller gave
    /// up (docs/cluster.md, "Late events").
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.waiting.lock().take();
        self.shut.notify_one();
    }
}

/// Closes the connection state however the connection task ends,
/// including when transport shutdown drops it mid-await.
struct CloseOnDrop(Arc<ConnState>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Removes a request from the waiting table when its caller gives up
/// (timeout or cancellation), so the table holds only live requests.
struct WaiterGuard<'a> {
    state: &'a ConnState,
    request_id: u64,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        if let Some(waiters) = self.state.waiting.lock().as_mut() {
            waiters.remove(&self.request_id);
        }
    }
}

/// One authenticated connection to a peer, shared by many concurrent
/// calls.
pub(crate) struct ClientConn {
    state: Arc<ConnState>,
    outgoing: mpsc::Sender<Bytes>,
    /// Request ids on this connection; 0 is left to handshake frames.
    next_request_id: AtomicU64,
}

impl ClientConn {
    /// Dials `peer` over TCP and runs the handshake.
    async fn connect(peer: SocketAddr, shared: &Arc<Shared>) -> Result<Self, CallError> {
        let stream = shared
            .config
            .network
            .connect(peer)
            .await
            .map_err(CallError::ConnectFailed)?;
        match shared.config.layer.clone() {
            None => Self::start(stream, peer, shared).await,
            Some(layer) => {
                let timeout = shared.config.handshake_timeout;
                let stream = match tokio::time::timeout(timeout, layer.connect(stream, peer)).await
                {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::warn!(%peer, %error, "internode TLS handshake failed");
                        return Err(CallError::HandshakeRefused {
                            reason: format!("TLS: {error}"),
                        });
                    }
                    Err(_) => {
                        return Err(CallError::HandshakeRefused {
                            reason: format!("TLS: no answer within {timeout:?}"),
                        })
                    }
                };
                Self::start(stream, peer, shared).await
            }
        }
    }

    /// Runs the handshake on an open stream (TCP, or what the layer made of
    /// it), then starts the connection task.
    async fn start<S>(stream: S, peer: SocketAddr, shared: &Arc<Shared>) -> Result<Self, CallError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let config = &shared.config;
        let (read_half, mut write_half) = tokio::io::split(stream);
        let mut reader = FrameReader::new(read_half, HANDSHAKE_MAX_FRAME_BYTES);
        let handshake = conn::initiate(
            &mut reader,
            &mut write_half,
            config.secret.clone(),
            config.node_id,
            shared.handler.epoch(),
        );
        let authenticated = match tokio::time::timeout(config.handshake_timeout, handshake).await {
            Ok(Ok(authenticated)) => authenticated,
            Ok(Err(failure)) => {
                tracing::warn!(%peer, error = %failure, "internode handshake failed");
                return Err(CallError::HandshakeRefused {
                    reason: failure.to_string(),
                });
            }
            Err(_) => {
                tracing::warn!(%peer, "internode handshake timed out");
                return Err(CallError::HandshakeRefused {
                    reason: format!("no answer within {:?}", config.handshake_timeout),
                });
            }
        };
        reader.max_frame_bytes = config.max_frame_bytes;
        let state = Arc::new(ConnState {
            waiting: Mutex::new(Some(BTreeMap::new())),
            closed: AtomicBool::new(false),
            received: AtomicU64::new(0),
            shut: tokio::sync::Notify::new(),
        });
        let (outgoing, queue) = mpsc::channel(OUTGOING_QUEUE_FRAMES);
        let task = run(
            reader,
            write_half,
            queue,
            state.clone(),
            peer,
            authenticated.peer,
        );
        if !shared.spawn(task) {
            return Err(CallError::ShutDown);
        }
        tracing::debug!(%peer, node = authenticated.peer, "internode connection open");
        Ok(Self {
            state,
            outgoing,
            next_request_id: AtomicU64::new(1),
        })
    }

    fn is_closed(&self) -> bool {
        self.state.closed.load(Ordering::Acquire)
    }

    /// [`ClientConn::call`] until `deadline`. A request that times out on a
    /// connection that read nothing from the peer in all that time closes
    /// it: the peer is gone without a word (a crash without a reset, a
    /// partition), or the stream lost its way, and the next call dials
    /// afresh instead of queueing on a connection that will never answer.
    pub(crate) async fn call_until(
        &self,
        kind: u8,
        payload: &[u8],
        epoch: u64,
        max_frame_bytes: usize,
        deadline: tokio::time::Instant,
    ) -> Result<(u8, Bytes), CallError> {
        let heard = self.state.received.load(Ordering::Acquire);
        match tokio::time::timeout_at(deadline, self.call(kind, payload, epoch, max_frame_bytes))
            .await
        {
            Ok(result) => result,
            Err(_) => {
                if self.state.received.load(Ordering::Acquire) == heard && !self.is_closed() {
                    tracing::info!(
                        "a request timed out and the peer sent nothing meanwhile: closing the connection"
                    );
                    self.state.close();
                }
                Err(CallError::TimedOut)
            }
        }
    }

    /// Sends one request and waits for its reply, however long that takes:
    /// the caller bounds the wait.
    pub(crate) async fn call(
        &self,
        kind: u8,
        payload: &[u8],
        epoch: u64,
        max_frame_bytes: usize,
    ) -> Result<(u8, Bytes), CallError> {
        let request_id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        // Format: request payload = [u8 user kind][user payload].
        let mut body = BytesMut::with_capacity(1 + payload.len());
        body.put_u8(kind);
        body.put_slice(payload);
        let frame = Frame {
            kind: FrameKind::Request,
            request_id,
            epoch,
            payload: body.freeze(),
        };
        let bytes = conn::encode(&frame, max_frame_bytes).map_err(CallError::Frame)?;
        let (sender, receiver) = oneshot::channel();
        match self.state.waiting.lock().as_mut() {
            Some(waiters) => {
                let previous = waiters.insert(request_id, sender);
                debug_assert!(previous.is_none(), "request id {request_id} reused");
            }
            None => return Err(CallError::ConnectionLost),
        }
        let _guard = WaiterGuard {
            state: &self.state,
            request_id,
        };
        self.outgoing
            .send(bytes)
            .await
            .map_err(|_| CallError::ConnectionLost)?;
        match receiver.await {
            Ok(Reply::Response { kind, payload }) => Ok((kind, payload)),
            Ok(Reply::Stale { theirs }) => Err(CallError::StaleEpoch { theirs }),
            Ok(Reply::Error(message)) => Err(CallError::Remote { message }),
            Err(_) => Err(CallError::ConnectionLost),
        }
    }
}

/// The connection task: reads replies and writes queued requests until
/// either side fails or every handle to the connection is gone.
async fn run<R, W>(
    reader: FrameReader<R>,
    writer: W,
    queue: mpsc::Receiver<Bytes>,
    state: Arc<ConnState>,
    peer: SocketAddr,
    node: NodeId,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let _close = CloseOnDrop(state.clone());
    let result = tokio::select! {
        // In a fixed order: a simulation replays a seed exactly (docs/testing.md).
        biased;
        () = state.shut.notified() => Ok(()),
        result = read_replies(reader, &state) => result,
        result = conn::write_loop(writer, queue) => result.map_err(ConnError::Write),
    };
    match result {
        Ok(()) => tracing::debug!(%peer, node, "internode connection closed"),
        Err(error) => tracing::warn!(%peer, node, %error, "internode connection closed"),
    }
}

async fn read_replies<R: AsyncRead + Unpin>(
    mut reader: FrameReader<R>,
    state: &ConnState,
) -> Result<(), ConnError> {
    while let Some(frame) = reader.next().await? {
        state.received.fetch_add(1, Ordering::AcqRel);
        let reply = match frame.kind {
            FrameKind::Response => {
                let Some((&kind, _)) = frame.payload.split_first() else {
                    return Err(ConnError::Protocol("empty response payload".into()));
                };
                Reply::Response {
                    kind,
                    payload: frame.payload.slice(1..),
                }
            }
            FrameKind::StaleEpoch => Reply::Stale {
                theirs: frame.epoch,
            },
            FrameKind::Error => Reply::Error(String::from_utf8_lossy(&frame.payload).into_owned()),
            other => {
                return Err(ConnError::Protocol(format!(
                    "unexpected {other:?} frame on a calling connection"
                )))
            }
        };
        let waiter = state
            .waiting
            .lock()
            .as_mut()
            .and_then(|waiters| waiters.remove(&frame.request_id));
        match waiter {
            // The caller may have given up in the meantime; that is fine.
            Some(waiter) => drop(waiter.send(reply)),
            None => tracing::trace!(
                request_id = frame.request_id,
                "reply for a request no longer waiting (timed out)"
            ),
        }
    }
    Ok(())
}

/// The slots of one peer: each holds at most one connection, dialled on
/// first use and re-dialled after it breaks.
struct PeerSlots {
    slots: Box<[tokio::sync::Mutex<Option<Arc<ClientConn>>>]>,
    next: AtomicUsize,
}

/// Up to `conns_per_peer` connections per peer address, used round-robin.
pub(crate) struct Pool {
    // Ordered: dropped (at shutdown, or a crash) in the same order every run.
    peers: Mutex<BTreeMap<SocketAddr, Arc<PeerSlots>>>,
    conns_per_peer: usize,
}

impl Pool {
    pub(crate) fn new(conns_per_peer: usize) -> Self {
        assert!(conns_per_peer > 0);
        Self {
            peers: Mutex::new(BTreeMap::new()),
            conns_per_peer,
        }
    }

    /// A live connection to `peer`, dialling one if its slot is empty or
    /// broken. Only one caller dials a slot at a time; the others wait for
    /// it rather than each opening their own connection.
    pub(crate) async fn get(
        &self,
        peer: SocketAddr,
        shared: &Arc<Shared>,
    ) -> Result<Arc<ClientConn>, CallError> {
        let peer_slots = self
            .peers
            .lock()
            .entry(peer)
            .or_insert_with(|| {
                Arc::new(PeerSlots {
                    slots: (0..self.conns_per_peer)
                        .map(|_| tokio::sync::Mutex::new(None))
                        .collect(),
                    next: AtomicUsize::new(0),
                })
            })
            .clone();
        let index = peer_slots.next.fetch_add(1, Ordering::Relaxed) % peer_slots.slots.len();
        let mut slot = peer_slots.slots[index].lock().await;
        if let Some(conn) = slot.as_ref() {
            if !conn.is_closed() {
                return Ok(conn.clone());
            }
        }
        // A broken connection leaves the pool here, on next use.
        *slot = None;
        let conn = Arc::new(ClientConn::connect(peer, shared).await?);
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Forgets every connection (at shutdown).
    pub(crate) fn clear(&self) {
        self.peers.lock().clear();
    }
}
