//! The admin HTTP port: `/health`, `/ready` (JSON bodies) and `/metrics` (Prometheus text
//! format) for orchestrators and monitoring. A deliberately tiny HTTP/1.0 responder: one
//! request per connection, request head bounded, no keep-alive.
//!
//! It listens from before the data directory is opened: `/health` is 200 as soon as the
//! process is up, `/ready` is 503 `recovering` until recovery finished and the client port
//! accepts commands, and 503 `stopping` once shutdown began.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::server::Server;

/// Largest request head read; longer requests get 431.
const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;

/// How long a client may take to send its request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Most admin requests answered at once; more wait in the listen backlog, so a flood of
/// scrapes cannot spawn unbounded tasks.
const CONCURRENT_REQUESTS_MAX: usize = 64;

/// What the admin port knows: nothing until the server exists.
#[derive(Debug, Default)]
pub(crate) struct AdminState {
    server: OnceLock<Arc<Server>>,
}

impl AdminState {
    /// Recovery finished: `/ready` and `/metrics` answer from `server` from now on.
    pub(crate) fn ready(&self, server: Arc<Server>) {
        let _ = self.server.set(server);
        // Debug: "Ready to accept connections" is the one info line for this event.
        tracing::debug!("ready: recovery finished, accepting commands");
    }
}

/// Serves the admin port until the task is aborted (after shutdown).
pub(crate) async fn serve(state: Arc<AdminState>, listener: TcpListener) {
    let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_REQUESTS_MAX));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        if let Ok((stream, _)) = listener.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                answer(&state, stream).await;
                drop(permit);
            });
        }
    }
}

async fn answer(state: &AdminState, mut stream: TcpStream) {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
            if head.len() > REQUEST_HEAD_BYTES_MAX {
                return None;
            }
        }
        Some(())
    })
    .await;
    let (status, content_type, body) = match read {
        Ok(Some(())) => route(state, &head),
        Ok(None) => ("431 Request Header Fields Too Large", TEXT, String::new()),
        Err(_) => return,
    };
    let response = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const JSON: &str = "application/json";

fn route(state: &AdminState, head: &[u8]) -> (&'static str, &'static str, String) {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    if method != b"GET" && method != b"HEAD" {
        return ("405 Method Not Allowed", TEXT, String::new());
    }
    let server = state.server.get();
    let stopping = server.is_some_and(|s| *s.shutdown.borrow());
    let uptime = server.map(|s| s.started.elapsed().as_secs()).unwrap_or(0);
    match path {
        b"/health" => (
            "200 OK",
            JSON,
            format!("{{\"status\":\"alive\",\"uptime_seconds\":{uptime}}}\n"),
        ),
        b"/ready" => match server {
            None => (
                "503 Service Unavailable",
                JSON,
                "{\"ready\":false,\"state\":\"recovering\"}\n".into(),
            ),
            Some(_) if stopping => (
                "503 Service Unavailable",
                JSON,
                "{\"ready\":false,\"state\":\"stopping\"}\n".into(),
            ),
            Some(server) => match server.keyspace.engine().stats().write_error {
                Some(_) => (
                    "503 Service Unavailable",
                    JSON,
                    "{\"ready\":false,\"state\":\"writes_refused\"}\n".into(),
                ),
                None => (
                    "200 OK",
                    JSON,
                    "{\"ready\":true,\"state\":\"serving\"}\n".into(),
                ),
            },
        },
        b"/metrics" => match server {
            Some(server) => ("200 OK", TEXT, crate::metrics::render(server)),
            None => ("503 Service Unavailable", TEXT, "# recovering\n".into()),
        },
        _ => ("404 Not Found", TEXT, "not found\n".into()),
    }
}
