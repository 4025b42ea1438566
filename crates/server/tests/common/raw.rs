//! A raw RESP client whose every read has a deadline, and the report-then-fail verdict, for
//! the tests that measure a server under load or hostile input (`hostile.rs`, `liveness.rs`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ringkv_protocol::Frame;

use super::{render, resp};

/// How long [`Conn::cmd`] and [`Conn::try_cmd`] wait for a reply before calling the server
/// stuck.
pub const REPLY_WAIT: Duration = Duration::from_secs(10);

/// A RESP connection whose every read has a deadline.
pub struct Conn {
    pub stream: TcpStream,
    pending: Vec<u8>,
}

impl Conn {
    pub fn connect(port: u16) -> Conn {
        Conn::over(TcpStream::connect(("127.0.0.1", port)).expect("connect"))
    }

    pub fn over(stream: TcpStream) -> Conn {
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_write_timeout(Some(Duration::from_secs(60)))
            .expect("write timeout");
        Conn {
            stream,
            pending: Vec::new(),
        }
    }

    /// Sends a command without waiting for its reply.
    pub fn send(&mut self, args: &[&[u8]]) {
        self.stream.write_all(&resp(args)).expect("send");
    }

    /// One reply, or why none came within `limit`.
    pub fn read_within(&mut self, limit: Duration) -> Result<Frame, String> {
        let deadline = Instant::now() + limit;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some((frame, used)) =
                Frame::parse(&self.pending).map_err(|e| format!("invalid reply: {e}"))?
            {
                self.pending.drain(..used);
                return Ok(frame);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no reply within {limit:?}"));
            }
            self.stream
                .set_read_timeout(Some(left))
                .expect("read timeout");
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("connection closed without a reply".into()),
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(format!("no reply within {limit:?}"))
                }
                Err(e) => return Err(format!("connection reset ({e})")),
            }
        }
    }

    /// Sends a command and waits at most `limit` for its reply.
    pub fn call_within(&mut self, args: &[&[u8]], limit: Duration) -> Result<Frame, String> {
        self.stream
            .write_all(&resp(args))
            .map_err(|e| format!("send: {e}"))?;
        self.read_within(limit)
    }

    /// The rendered reply to a command given as text arguments (waited for at most
    /// [`REPLY_WAIT`]), or why there was none.
    pub fn try_cmd(&mut self, args: &[&str]) -> Result<String, String> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.call_within(&args, REPLY_WAIT).map(|f| render(&f))
    }

    /// A command that must answer within [`REPLY_WAIT`]; its rendered reply.
    pub fn cmd(&mut self, args: &[&str]) -> String {
        self.try_cmd(args)
            .unwrap_or_else(|why| panic!("{args:?}: {why}"))
    }
}

/// Prints what was measured and fails the test with every failure (not only the first).
pub fn verdict(case: &str, report: &[String], failures: &[String]) {
    eprintln!("[{case}]\n  {}", report.join("\n  "));
    assert!(
        failures.is_empty(),
        "[{case}] {} failure(s):\n  {}\nmeasured:\n  {}",
        failures.len(),
        failures.join("\n  "),
        report.join("\n  ")
    );
}
