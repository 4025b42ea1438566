//! The answering side: the accept loop and one task per accepted
//! connection that authenticates the peer, checks each request's epoch and
//! runs the handler for it. docs/cluster.md, "Transport".
//!
//! **Owns:** the handshake deadline, the frame limits per phase, the
//! in-flight bound per connection, the stale-epoch refusal, and turning a
//! handler's result (or panic) into a reply frame. **Must not touch:** what
//! requests mean (the [`Handler`](super::Handler) decides) or the pool.

use std::any::Any;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, Semaphore};

use super::conn::{self, ConnError, FrameReader};
use super::{HandlerError, Shared, MAX_ERROR_MESSAGE_BYTES};
use crate::frame::{Frame, FrameKind, HANDSHAKE_MAX_FRAME_BYTES};
use crate::transport::Listener;
use crate::NodeId;

/// Pause after a failed `accept` (out of file descriptors, say), so the
/// loop does not spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts connections until the transport shuts down (the task is
/// dropped, and the listener with it), at most `max_connections` at once.
pub(crate) async fn accept_loop(listener: Box<dyn Listener>, shared: Arc<Shared>) {
    let connections = Arc::new(Semaphore::new(shared.config.max_connections));
    loop {
        let permit = connections
            .clone()
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("the connection semaphore is never closed"));
        match listener.accept().await {
            Ok((stream, remote)) => {
                let shared_task = shared.clone();
                let task = async move {
                    match shared_task.config.layer.clone() {
                        None => serve(stream, remote, shared_task).await,
                        Some(layer) => {
                            let timeout = shared_task.config.handshake_timeout;
                            match tokio::time::timeout(timeout, layer.accept(stream, remote)).await
                            {
                                Ok(Ok(stream)) => serve(stream, remote, shared_task).await,
                                Ok(Err(error)) => {
                                    tracing::warn!(%remote, %error, "internode TLS handshake failed; closing");
                                }
                                Err(_) => {
                                    tracing::warn!(%remote, ?timeout, "internode TLS handshake timed out; closing");
                                }
                            }
                        }
                    }
                    drop(permit);
                };
                if !shared.spawn(task) {
                    return;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "internode accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
}

/// Serves one accepted connection: plain TCP, or the stream the
/// configuration's [`crate::transport::StreamLayer`] made of it.
pub(crate) async fn serve<S>(stream: S, remote: SocketAddr, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &shared.config;
    let (read_half, mut write_half) = tokio::io::split(stream);
    // Until the peer proves it knows the secret, it may not make us buffer
    // more than the handshake limit (docs/cluster.md, "Internode frames").
    let mut reader = FrameReader::new(read_half, HANDSHAKE_MAX_FRAME_BYTES);
    let handshake = conn::respond(
        &mut reader,
        &mut write_half,
        config.secret.clone(),
        config.node_id,
        shared.handler.epoch(),
    );
    let node = match tokio::time::timeout(config.handshake_timeout, handshake).await {
        Ok(Ok(authenticated)) => authenticated.peer,
        Ok(Err(failure)) => {
            tracing::warn!(%remote, error = %failure, "internode handshake failed; closing");
            return;
        }
        Err(_) => {
            tracing::warn!(
                %remote,
                timeout = ?config.handshake_timeout,
                "internode handshake timed out; closing"
            );
            return;
        }
    };
    reader.max_frame_bytes = config.max_frame_bytes;
    tracing::debug!(%remote, node, "internode peer authenticated");
    // Replies queue behind at most the requests in flight, so the queue
    // never holds more than the bound allows.
    let (replies, queue) = mpsc::channel(config.max_in_flight_per_conn);
    let result = tokio::select! {
        // In a fixed order: a simulation replays a seed exactly (docs/testing.md).
        biased;
        result = read_requests(reader, replies, node, &shared) => result,
        result = conn::write_loop(write_half, queue) => result.map_err(ConnError::Write),
    };
    match result {
        Ok(()) => tracing::debug!(%remote, node, "internode peer closed the connection"),
        Err(error) => tracing::warn!(%remote, node, %error, "internode connection closed"),
    }
}

/// Reads requests and starts a handler task for each, never more than
/// `max_in_flight_per_conn` at once: at the bound it stops reading, so the
/// socket fills and the caller's writes wait (backpressure).
async fn read_requests<R: AsyncRead + Unpin>(
    mut reader: FrameReader<R>,
    replies: mpsc::Sender<Bytes>,
    node: NodeId,
    shared: &Arc<Shared>,
) -> Result<(), ConnError> {
    let in_flight = Arc::new(Semaphore::new(shared.config.max_in_flight_per_conn));
    loop {
        let permit = in_flight
            .clone()
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("the in-flight semaphore is never closed"));
        let Some(frame) = reader.next().await? else {
            return Ok(());
        };
        if frame.kind != FrameKind::Request {
            return Err(ConnError::Protocol(format!(
                "unexpected {:?} frame on an answering connection",
                frame.kind
            )));
        }
        let own_epoch = shared.handler.epoch();
        let fenced = frame
            .payload
            .first()
            .is_none_or(|&kind| shared.handler.fenced(kind));
        if fenced && frame.epoch < own_epoch {
            // A stale sender: answer with our epoch so it refreshes
            // (docs/cluster.md, "Transport"); the handler never sees it.
            let reply = Frame {
                kind: FrameKind::StaleEpoch,
                request_id: frame.request_id,
                epoch: own_epoch,
                payload: Bytes::new(),
            };
            let bytes = conn::encode(&reply, shared.config.max_frame_bytes)
                .unwrap_or_else(|error| unreachable!("empty frame too large: {error}"));
            if replies.send(bytes).await.is_err() {
                return Ok(());
            }
            continue;
        }
        let Some((&kind, _)) = frame.payload.split_first() else {
            return Err(ConnError::Protocol("empty request payload".into()));
        };
        let body = frame.payload.slice(1..);
        let task = answer(
            shared.clone(),
            node,
            kind,
            frame.request_id,
            frame.epoch,
            body,
            replies.clone(),
            permit,
        );
        if !shared.spawn(task) {
            return Ok(());
        }
    }
}

/// Runs the handler for one request and queues its reply; the permit is
/// released once the reply is queued.
#[allow(clippy::too_many_arguments)]
async fn answer(
    shared: Arc<Shared>,
    node: NodeId,
    kind: u8,
    request_id: u64,
    epoch: u64,
    body: Bytes,
    replies: mpsc::Sender<Bytes>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let handler = &shared.handler;
    let result = match std::panic::catch_unwind(AssertUnwindSafe(|| {
        handler.handle(node, kind, epoch, body)
    })) {
        Ok(future) => CatchUnwind(future).await,
        Err(panic) => Err(panic),
    };
    let result = result.unwrap_or_else(|panic| {
        let message = panic_message(&*panic);
        tracing::error!(node, kind, request_id, %message, "internode handler panicked");
        Err(HandlerError::new(format!("handler panicked: {message}")))
    });
    let bytes = reply_bytes(
        request_id,
        handler.epoch(),
        result,
        shared.config.max_frame_bytes,
    );
    // The connection may be gone; the reply has nowhere to go then.
    let _ = replies.send(bytes).await;
}

/// The reply frame for a handler's result: a Response, or an Error frame
/// for a handler error or a response too large to send.
fn reply_bytes(
    request_id: u64,
    epoch: u64,
    result: Result<(u8, Bytes), HandlerError>,
    max_frame_bytes: usize,
) -> Bytes {
    let error = match result {
        Ok((kind, payload)) => {
            // Format: response payload = [u8 user kind][user payload].
            let mut body = BytesMut::with_capacity(1 + payload.len());
            body.put_u8(kind);
            body.put_slice(&payload);
            let frame = Frame {
                kind: FrameKind::Response,
                request_id,
                epoch,
                payload: body.freeze(),
            };
            match conn::encode(&frame, max_frame_bytes) {
                Ok(bytes) => return bytes,
                Err(error) => format!("response not sent: {error}"),
            }
        }
        Err(error) => error.message,
    };
    let frame = Frame {
        kind: FrameKind::Error,
        request_id,
        epoch,
        payload: Bytes::from(truncate(error, MAX_ERROR_MESSAGE_BYTES)),
    };
    conn::encode(&frame, max_frame_bytes)
        .unwrap_or_else(|error| unreachable!("capped error frame too large: {error}"))
}

/// Cuts `message` to at most `max` bytes on a character boundary.
fn truncate(mut message: String, max: usize) -> String {
    if message.len() > max {
        let mut end = max;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    message
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-string panic".to_owned()
    }
}

type HandlerResult = Result<(u8, Bytes), HandlerError>;

/// Polls a handler's future, turning a panic into an error value so the
/// caller gets an Error reply instead of waiting for its timeout.
struct CatchUnwind(super::BoxFuture<'static, HandlerResult>);

impl Future for CatchUnwind {
    type Output = Result<HandlerResult, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(result)) => Poll::Ready(Ok(result)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_keeps_char_boundaries() {
        assert_eq!(truncate("héllo".into(), 2), "h");
        assert_eq!(truncate("héllo".into(), 3), "hé");
        assert_eq!(truncate("abc".into(), 10), "abc");
    }

    #[test]
    fn oversized_response_becomes_an_error_frame() {
        let bytes = reply_bytes(7, 1, Ok((1, Bytes::from(vec![0; 4096]))), 1024);
        let mut buffer = BytesMut::from(&bytes[..]);
        let frame = Frame::decode(&mut buffer, 1024).unwrap().unwrap();
        assert_eq!(frame.kind, FrameKind::Error);
        assert_eq!(frame.request_id, 7);
    }
}
