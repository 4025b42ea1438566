//! Byte movement shared by both ends of an internode connection: a frame
//! reader over any `AsyncRead`, the writer loop over any `AsyncWrite`, and
//! the two handshake drivers. docs/cluster.md, "Transport".
//!
//! **Owns:** turning a byte stream into [`Frame`]s and back, and running
//! the [`frame`](crate::frame) handshake state machines over a stream.
//! **Must not touch:** the pool, the handler, request ids or epochs beyond
//! copying them into frames. Everything here is generic over the stream,
//! which is the seam where TLS would wrap the TCP socket.

use std::io;

use bytes::{Bytes, BytesMut};
use rand::RngCore;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

use crate::frame::{
    Authenticated, Challenge, ClusterSecret, Frame, FrameError, FrameKind, HandshakeError, Hello,
    Initiator, Proof, Responder, HANDSHAKE_MAX_FRAME_BYTES, NONCE_BYTES,
};
use crate::NodeId;

/// Bytes the reader makes room for before each read from the stream:
/// enough for many small frames per system call, small enough that an idle
/// connection costs little.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// The writer's buffer: small frames queued together leave in one write;
/// a frame larger than this goes straight to the stream.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// Bytes of a frame's length prefix (docs/cluster.md, "Internode frames").
const LENGTH_BYTES: usize = 4;

/// Why reading frames stopped.
#[derive(Debug, Error)]
pub(crate) enum ReadError {
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("peer closed the connection in the middle of a frame ({0} bytes buffered)")]
    Truncated(usize),
}

/// Why a connection was closed; logged, never returned to a caller.
#[derive(Debug, Error)]
pub(crate) enum ConnError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("write failed: {0}")]
    Write(io::Error),
    #[error("protocol violation: {0}")]
    Protocol(String),
}

/// Why a handshake failed.
#[derive(Debug, Error)]
pub(crate) enum HandshakeFailure {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("write failed: {0}")]
    Write(io::Error),
    #[error("peer closed the connection during the handshake")]
    Closed,
    #[error("expected a {expected:?} frame, got {got:?}")]
    Unexpected { expected: FrameKind, got: FrameKind },
    #[error(transparent)]
    Refused(#[from] HandshakeError),
}

/// Reads whole frames off a stream, refusing any longer than
/// `max_frame_bytes` as soon as its length prefix arrives.
pub(crate) struct FrameReader<R> {
    io: R,
    buffer: BytesMut,
    /// The limit in force: [`HANDSHAKE_MAX_FRAME_BYTES`] until the peer
    /// authenticates, the configured maximum after.
    pub(crate) max_frame_bytes: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(io: R, max_frame_bytes: usize) -> Self {
        Self {
            io,
            buffer: BytesMut::new(),
            max_frame_bytes,
        }
    }

    /// The next frame, or `None` when the peer closed cleanly between
    /// frames. Cancel-safe: bytes read stay buffered for the next call, so
    /// this can sit in a `select!`.
    pub(crate) async fn next(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(frame) = Frame::decode(&mut self.buffer, self.max_frame_bytes)? {
                return Ok(Some(frame));
            }
            // Before the handshake the limit is small, and so is the room
            // an unauthenticated peer gets.
            self.buffer
                .reserve(READ_CHUNK_BYTES.min(self.max_frame_bytes + LENGTH_BYTES));
            if self.io.read_buf(&mut self.buffer).await? == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Truncated(self.buffer.len()))
                };
            }
        }
    }

    /// The next frame, which must be of kind `expected`; end of stream is
    /// an error here.
    async fn expect(&mut self, expected: FrameKind) -> Result<Frame, HandshakeFailure> {
        let frame = self.next().await?.ok_or(HandshakeFailure::Closed)?;
        if frame.kind != expected {
            return Err(HandshakeFailure::Unexpected {
                expected,
                got: frame.kind,
            });
        }
        Ok(frame)
    }
}

/// Encodes one frame into its own buffer, ready for the writer queue.
pub(crate) fn encode(frame: &Frame, max_frame_bytes: usize) -> Result<Bytes, FrameError> {
    let mut out = BytesMut::new();
    frame.encode(&mut out, max_frame_bytes)?;
    Ok(out.freeze())
}

/// Writes queued frames in order until every sender is gone. Flushes
/// whenever the queue runs empty, so a lone frame never waits for company;
/// before that it yields once, so the tasks ready to run on this worker
/// (other requests' coordinators) queue their frames first and share the
/// write(2): on loopback a send costs the receiver's TCP work too, and was
/// the largest item of a cluster node's profile (docs/BENCHMARKS.md).
pub(crate) async fn write_loop<W: AsyncWrite + Unpin>(
    io: W,
    mut queue: mpsc::Receiver<Bytes>,
) -> io::Result<()> {
    let mut io = BufWriter::with_capacity(WRITE_BUFFER_BYTES, io);
    let mut yielded = false;
    loop {
        let frame = match queue.try_recv() {
            Ok(frame) => {
                yielded = false;
                frame
            }
            Err(mpsc::error::TryRecvError::Empty) if !yielded && !io.buffer().is_empty() => {
                yielded = true;
                tokio::task::yield_now().await;
                continue;
            }
            Err(mpsc::error::TryRecvError::Empty) => {
                yielded = false;
                io.flush().await?;
                match queue.recv().await {
                    Some(frame) => frame,
                    None => break,
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
        };
        io.write_all(&frame).await?;
    }
    io.flush().await
}

/// A fresh handshake nonce from the operating system's generator: a
/// predictable nonce would let a recorded proof be replayed.
fn nonce() -> [u8; NONCE_BYTES] {
    let mut nonce = [0u8; NONCE_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    nonce
}

async fn send<W: AsyncWrite + Unpin>(
    io: &mut W,
    kind: FrameKind,
    epoch: u64,
    payload: Bytes,
) -> Result<(), HandshakeFailure> {
    let frame = Frame {
        kind,
        request_id: 0,
        epoch,
        payload,
    };
    // Handshake payloads are a few dozen bytes; the limit cannot be hit.
    let bytes = encode(&frame, HANDSHAKE_MAX_FRAME_BYTES)
        .unwrap_or_else(|error| unreachable!("handshake frame too large: {error}"));
    io.write_all(&bytes)
        .await
        .map_err(HandshakeFailure::Write)?;
    io.flush().await.map_err(HandshakeFailure::Write)
}

/// The dialling side's handshake (docs/cluster.md, "Handshake"): Hello,
/// then check the Challenge, then Proof. The reader must still be at the
/// handshake frame limit.
pub(crate) async fn initiate<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut W,
    secret: ClusterSecret,
    own: NodeId,
    epoch: u64,
) -> Result<Authenticated, HandshakeFailure>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    debug_assert_eq!(reader.max_frame_bytes, HANDSHAKE_MAX_FRAME_BYTES);
    let (initiator, hello) = Initiator::start(secret, own, None, nonce());
    send(writer, FrameKind::Hello, epoch, hello.encode()).await?;
    let frame = reader.expect(FrameKind::Challenge).await?;
    let challenge = Challenge::decode(&frame.payload)?;
    let (authenticated, proof) = initiator.on_challenge(&challenge)?;
    send(writer, FrameKind::Proof, epoch, proof.encode()).await?;
    Ok(authenticated)
}

/// The accepting side's handshake: wait for Hello, answer with the
/// Challenge, check the Proof.
pub(crate) async fn respond<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut W,
    secret: ClusterSecret,
    own: NodeId,
    epoch: u64,
) -> Result<Authenticated, HandshakeFailure>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    debug_assert_eq!(reader.max_frame_bytes, HANDSHAKE_MAX_FRAME_BYTES);
    let frame = reader.expect(FrameKind::Hello).await?;
    let hello = Hello::decode(&frame.payload)?;
    let (awaiting, challenge) = Responder::new(secret, own, nonce()).on_hello(&hello)?;
    send(writer, FrameKind::Challenge, epoch, challenge.encode()).await?;
    let frame = reader.expect(FrameKind::Proof).await?;
    Ok(awaiting.on_proof(&Proof::decode(&frame.payload)?)?)
}
