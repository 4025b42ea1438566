//! The admin HTTP port: `/health`, `/ready` and `/metrics` (Prometheus text format) for
//! orchestrators and monitoring. A deliberately tiny HTTP/1.0 responder: one request per
//! connection, request head bounded, no keep-alive.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::keyspace::DATABASES;
use crate::server::Server;

/// Largest request head read; longer requests get 431.
const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;

/// How long a client may take to send its request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the admin port until shutdown.
pub(crate) async fn serve(server: Arc<Server>, listener: TcpListener) {
    let mut shutdown = server.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        if let Ok((stream, _)) = accepted {
            tokio::spawn(answer(server.clone(), stream));
        }
    }
}

async fn answer(server: Arc<Server>, mut stream: TcpStream) {
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
    let (status, body) = match read {
        Ok(Some(())) => route(&server, &head),
        Ok(None) => ("431 Request Header Fields Too Large", String::new()),
        Err(_) => return,
    };
    let response = format!(
        "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn route(server: &Server, head: &[u8]) -> (&'static str, String) {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    if method != b"GET" && method != b"HEAD" {
        return ("405 Method Not Allowed", String::new());
    }
    let stopping = *server.shutdown.borrow();
    match path {
        b"/health" => ("200 OK", "ok\n".into()),
        b"/ready" if stopping => ("503 Service Unavailable", "shutting down\n".into()),
        b"/ready" => ("200 OK", "ready\n".into()),
        b"/metrics" => ("200 OK", metrics(server)),
        _ => ("404 Not Found", "not found\n".into()),
    }
}

/// Prometheus text exposition of the server's counters.
pub(crate) fn metrics(server: &Server) -> String {
    let stats = &server.stats;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    };
    metric(
        "ringkv_connected_clients",
        "gauge",
        "Open client connections.",
        server.clients.lock().len() as u64,
    );
    metric(
        "ringkv_connections_received_total",
        "counter",
        "Connections accepted since start.",
        stats.total_connections_received.load(Ordering::Relaxed),
    );
    metric(
        "ringkv_commands_processed_total",
        "counter",
        "Commands processed since start.",
        stats.total_commands_processed.load(Ordering::Relaxed),
    );
    metric(
        "ringkv_error_replies_total",
        "counter",
        "Error replies sent.",
        stats.total_error_replies.load(Ordering::Relaxed),
    );
    metric(
        "ringkv_expired_keys_total",
        "counter",
        "Keys removed by the expiry sweep.",
        server.keyspace.expired_keys(),
    );
    metric(
        "ringkv_engine_last_sequence",
        "gauge",
        "Sequence number of the engine's last write.",
        server.keyspace.engine().last_sequence(),
    );
    metric(
        "ringkv_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
        server.started.elapsed().as_secs(),
    );
    out.push_str(
        "# HELP ringkv_keys Keys per logical database (DBSIZE).\n# TYPE ringkv_keys gauge\n",
    );
    for db in 0..DATABASES {
        let _ = writeln!(
            out,
            "ringkv_keys{{db=\"{db}\"}} {}",
            server.keyspace.dbsize(db)
        );
    }
    out.push_str("# HELP ringkv_command_calls_total Calls per command.\n# TYPE ringkv_command_calls_total counter\n");
    for (spec, command) in crate::cmd::registry()
        .specs()
        .iter()
        .zip(&server.command_stats)
    {
        let calls = command.calls.load(Ordering::Relaxed);
        if calls > 0 {
            let _ = writeln!(
                out,
                "ringkv_command_calls_total{{cmd=\"{}\"}} {calls}",
                spec.name
            );
        }
    }
    out
}
