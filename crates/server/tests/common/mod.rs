//! Test helper shared by every integration test (`mod common;`): starts the real `ringkv`
//! binary on a free port in a temporary directory, kills it on drop, and offers clients:
//! the `redis` crate, raw TCP bytes, and `redis-cli`.
//!
//! The binary is `$RINGKV_BIN` if set, else `target/debug/ringkv`, built once per test process
//! with `cargo build -p ringkv` so tests never run a stale server.

#![allow(dead_code)]

pub mod cluster;
pub mod history;
pub mod netns;
pub mod raw;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The `ringkv` binary to test.
pub fn binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            if let Some(path) = std::env::var_os("RINGKV_BIN") {
                // Relative paths are taken from the workspace root, where scripts run.
                return workspace.join(path);
            }
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace.join("target"));
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "--quiet", "-p", "ringkv", "--bin", "ringkv"])
                .current_dir(&workspace)
                .status()
                .expect("run cargo build -p ringkv");
            assert!(status.success(), "cargo build -p ringkv failed");
            target.join("debug").join("ringkv")
        })
        .clone()
}

/// Starts `ringkv` on `data_dir` (loopback, a free port) with `extra_args`, copying its log
/// into `log`. Returns the process and the port it listens on, or `None` when it exited or did
/// not report listening within the start timeout (the caller decides whether that is a failure).
pub fn launch(
    data_dir: &Path,
    extra_args: &[String],
    log: Arc<Mutex<String>>,
) -> (Child, Option<u16>) {
    let mut command = Command::new(binary());
    command
        .args([
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--loglevel",
            "info",
            "--dir",
        ])
        .arg(data_dir)
        .args(admin_args(extra_args))
        .args(extra_args)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG");
    // A filter for the servers' logs when a failure needs them (e.g.
    // `RINGKV_TEST_RUST_LOG=info,ringkv_cluster::coordinator=debug`); else `--loglevel`.
    if let Ok(filter) = std::env::var("RINGKV_TEST_RUST_LOG") {
        command.env("RUST_LOG", filter);
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringkv");
    let stderr = child.stderr.take().expect("stderr");
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stderr);
        let mut line = String::new();
        let mut sent = false;
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            if !sent && line.contains("Ready to accept connections") {
                if let Some(port) = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("addr="))
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| p.trim().parse::<u16>().ok())
                {
                    let _ = port_tx.send(port);
                    sent = true;
                }
            }
            log.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
    // A process that exits drops the sender, so a refusal does not wait for the timeout.
    (child, port_rx.recv_timeout(START_TIMEOUT).ok())
}

/// The admin HTTP listener is on by default at 127.0.0.1:9121, and tests run many servers at
/// once: unless a test chooses its admin settings itself, each server gets a free admin port.
fn admin_args(extra_args: &[String]) -> &'static [&'static str] {
    let chosen = extra_args
        .iter()
        .any(|a| a.starts_with("--admin") || a == "--no-admin");
    if chosen {
        &[]
    } else {
        &["--admin-port", "0"]
    }
}

/// A running `ringkv` process with its own data directory.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    dir: Arc<tempfile::TempDir>,
    extra_args: Vec<String>,
    log: Arc<Mutex<String>>,
    /// Data directory when not `dir/data` ([`Server::start_in`]).
    data: Option<PathBuf>,
}

impl Server {
    /// Starts a server with default settings.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts a server with extra command-line flags (e.g. `["--appendfsync", "always"]`).
    pub fn start_with(extra_args: &[&str]) -> Server {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        let extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let mut server = Server {
            child: None,
            port: 0,
            dir,
            extra_args,
            log: Arc::new(Mutex::new(String::new())),
            data: None,
        };
        server.spawn();
        server
    }

    /// Starts a server on the data directory `data` (a restored backup, a small filesystem).
    pub fn start_in(data: &Path, extra_args: &[&str]) -> Server {
        let mut server = Server {
            child: None,
            port: 0,
            dir: Arc::new(tempfile::tempdir().expect("temp dir")),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            log: Arc::new(Mutex::new(String::new())),
            data: Some(data.to_path_buf()),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        if let Err(log) = self.try_spawn() {
            panic!("ringkv did not start; log:\n{log}");
        }
    }

    /// Starts the process; its log if it did not start.
    fn try_spawn(&mut self) -> Result<(), String> {
        let (mut child, port) = launch(&self.data_dir(), &self.extra_args, self.log.clone());
        let Some(port) = port else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(self.log.lock().unwrap().clone());
        };
        self.port = port;
        self.child = Some(child);
        Ok(())
    }

    /// [`Server::start_with`] with the flags `args()` gives, tried again with new ones (at most
    /// five times) while the process fails to bind a port it was given: a port a test
    /// picked free (a cluster node's internode port) can be taken by another test before
    /// the process binds it.
    pub fn start_retrying_ports(args: impl Fn() -> Vec<String>) -> Server {
        let mut last = String::new();
        for _ in 0..5 {
            let mut server = Server {
                child: None,
                port: 0,
                dir: Arc::new(tempfile::tempdir().expect("temp dir")),
                extra_args: args(),
                log: Arc::new(Mutex::new(String::new())),
                data: None,
            };
            match server.try_spawn() {
                Ok(()) => return server,
                Err(log) if log.contains("Address already in use") => last = log,
                Err(log) => panic!("ringkv did not start; log:\n{log}"),
            }
        }
        panic!("ringkv did not start: its ports were taken five times; log:\n{last}");
    }

    /// `redis://127.0.0.1:port/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A `redis` crate connection (RESP2).
    pub fn client(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).expect("client");
        let connection = client.get_connection().expect("connect");
        connection
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        connection
    }

    /// A raw TCP connection with a read timeout.
    pub fn raw(&self) -> Raw {
        Raw::connect(self.port)
    }

    /// Runs `redis-cli -p port args…` and returns its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli (install redis-tools)");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Kills the process with SIGKILL (no clean shutdown) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the process to exit on its own (after SHUTDOWN) and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("ringkv did not exit; log:\n{}", self.log.lock().unwrap());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The admin HTTP port (a free one unless the test chose another), from the log.
    pub fn admin_port(&self) -> Option<u16> {
        self.log()
            .lines()
            .filter(|l| l.contains("Admin HTTP ready"))
            .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("addr=")))
            .and_then(|a| a.rsplit(':').next()?.trim().parse().ok())
    }

    /// Process id of the running server.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().expect("wait").is_none(),
            None => false,
        }
    }

    /// Starts the server again on the same data directory (after [`Server::kill`] or a
    /// shutdown); the port changes.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Kills the server and starts it again with `more` flags after its own (a later flag
    /// wins: `--port` keeps a cluster node's address, which the cluster map holds).
    pub fn restart_with<S: AsRef<str>>(&mut self, more: &[S]) {
        self.kill();
        self.extra_args
            .extend(more.iter().map(|s| s.as_ref().to_string()));
        self.spawn();
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.data
            .clone()
            .unwrap_or_else(|| self.dir.path().join("data"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A raw TCP client: send bytes, read replies.
pub struct Raw {
    pub stream: TcpStream,
    /// Bytes read past the last reply [`Raw::read_frame`] returned.
    pending: Vec<u8>,
}

impl Raw {
    /// Sends bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Reads until `expected` bytes arrived (or the timeout) and returns them.
    pub fn read_exact_len(&mut self, expected: usize) -> Vec<u8> {
        let buffered = self.pending.len().min(expected);
        let mut out: Vec<u8> = self.pending.drain(..buffered).collect();
        let mut rest = vec![0u8; expected - buffered];
        self.stream.read_exact(&mut rest).expect("read reply");
        out.extend_from_slice(&rest);
        out
    }

    /// Sends `request` and reads exactly `expected.len()` bytes, returning them as text.
    pub fn roundtrip(&mut self, request: &[u8], expected_len: usize) -> String {
        self.send(request);
        String::from_utf8_lossy(&self.read_exact_len(expected_len)).into_owned()
    }

    /// Sends `request` and asserts the reply is exactly `expected`.
    pub fn expect(&mut self, request: &[u8], expected: &str) {
        let got = self.roundtrip(request, expected.len());
        assert_eq!(
            got,
            expected,
            "reply to {:?}",
            String::from_utf8_lossy(request)
        );
    }

    /// Reads one complete RESP value (any type).
    pub fn read_frame(&mut self) -> ringkv_protocol::Frame {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            if let Some((frame, used)) =
                ringkv_protocol::Frame::parse(&self.pending).expect("valid reply")
            {
                self.pending.drain(..used);
                return frame;
            }
            let n = self.stream.read(&mut chunk).expect("read reply");
            assert!(n > 0, "connection closed before a whole reply");
            self.pending.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends `request` and reads one reply value.
    pub fn call(&mut self, request: &[u8]) -> ringkv_protocol::Frame {
        self.send(request);
        self.read_frame()
    }

    /// A connection to any RESP server on loopback `port` (ringkv, or a reference redis-server).
    pub fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Raw {
            stream,
            pending: Vec::new(),
        }
    }

    /// Sends one command given as arguments and reads its reply.
    pub fn call_args(&mut self, args: &[&[u8]]) -> ringkv_protocol::Frame {
        self.call(&resp(args))
    }

    /// Runs a space-separated command and renders its reply.
    pub fn cmd(&mut self, line: &str) -> String {
        let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        render(&self.call_args(&args))
    }

    /// Runs every `(command, expected rendering)` pair in order; reports all mismatches.
    /// `a|b` accepts either rendering (a TTL may tick down by a second on a slow machine).
    pub fn check(&mut self, cases: &[(&str, &str)]) {
        let got: Vec<String> = cases.iter().map(|(line, _)| self.cmd(line)).collect();
        assert_renderings(cases, &got);
    }

    /// [`Raw::check`] with every command sent in one write before any reply is read, so the
    /// server reads them as one pipelined batch.
    pub fn check_pipelined(&mut self, cases: &[(&str, &str)]) {
        let mut request = Vec::new();
        for (line, _) in cases {
            let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
            request.extend_from_slice(&resp(&args));
        }
        self.send(&request);
        let got: Vec<String> = cases.iter().map(|_| render(&self.read_frame())).collect();
        assert_renderings(cases, &got);
    }

    /// Reads whatever arrives until the server closes the connection (or the timeout).
    pub fn read_to_close(&mut self) -> (String, bool) {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return (String::from_utf8_lossy(&out).into_owned(), true),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
            }
        }
    }
}

/// Asserts each reply rendering in `got` against its `(command, expected)` case (`a|b`
/// accepts either); reports all mismatches.
fn assert_renderings(cases: &[(&str, &str)], got: &[String]) {
    let mut failures = Vec::new();
    for ((line, expected), got) in cases.iter().zip(got) {
        if !expected.split('|').any(|alternative| alternative == got) {
            failures.push(format!(
                "{line}\n    expected {expected}\n    got      {got}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Encodes a command as a RESP array of bulk strings.
pub fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Runs a command with the `redis` crate and returns the raw reply value.
pub fn run(con: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<redis::Value> {
    query(con, args)
}

/// Runs `args` and converts the reply; panics with the command on an error reply.
pub fn q<T: redis::FromRedisValue>(con: &mut redis::Connection, args: &[&str]) -> T {
    query(con, args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn query<T: redis::FromRedisValue>(
    con: &mut redis::Connection,
    args: &[&str],
) -> redis::RedisResult<T> {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(con)
}

/// The value of the setting `name` (`CONFIG GET name` must answer exactly one pair).
pub fn config_get(con: &mut redis::Connection, name: &str) -> String {
    let pair: Vec<String> = q(con, &["CONFIG", "GET", name]);
    assert_eq!(pair.len(), 2, "CONFIG GET {name}: {pair:?}");
    pair[1].clone()
}

/// The value of `field` in `INFO section`; panics naming the section when it is missing.
pub fn info_field(con: &mut redis::Connection, section: &str, field: &str) -> String {
    let text: String = q(con, &["INFO", section]);
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in INFO {section}:\n{text}"))
        .trim()
        .to_string()
}

/// The error text (code and message, as the server sent it) of a command that must fail.
pub fn err(con: &mut redis::Connection, args: &[&str]) -> String {
    match run(con, args) {
        Ok(value) => panic!("{args:?} succeeded with {value:?}"),
        Err(error) => error_text(&error),
    }
}

/// "CODE message" of a server error as redis-rs reports it.
pub fn error_text(error: &redis::RedisError) -> String {
    match (error.code(), error.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_string(),
        _ => error.to_string(),
    }
}

/// A compact, exact rendering of a reply: `+OK`, `-ERR …`, `:1`, `"bulk"` (non-printable
/// bytes as `\xNN`), `nil`, `[a, b]`, `{k: v}` (RESP3 map).
pub fn render(frame: &ringkv_protocol::Frame) -> String {
    match frame {
        ringkv_protocol::Frame::Simple(text) => format!("+{}", String::from_utf8_lossy(text)),
        ringkv_protocol::Frame::Error(text) => format!("-{}", String::from_utf8_lossy(text)),
        ringkv_protocol::Frame::Integer(value) => format!(":{value}"),
        ringkv_protocol::Frame::Bulk(bytes) => {
            let mut out = String::from("\"");
            for &byte in bytes.iter() {
                match byte {
                    b'"' | b'\\' => {
                        out.push('\\');
                        out.push(byte as char);
                    }
                    0x20..=0x7e => out.push(byte as char),
                    _ => out.push_str(&format!("\\x{byte:02x}")),
                }
            }
            out.push('"');
            out
        }
        ringkv_protocol::Frame::Null | ringkv_protocol::Frame::NullArray => "nil".to_string(),
        ringkv_protocol::Frame::Array(items)
        | ringkv_protocol::Frame::Set(items)
        | ringkv_protocol::Frame::Push(items) => {
            format!(
                "[{}]",
                items.iter().map(render).collect::<Vec<_>>().join(", ")
            )
        }
        ringkv_protocol::Frame::Map(pairs) => format!(
            "{{{}}}",
            pairs
                .iter()
                .map(|(k, v)| format!("{}: {}", render(k), render(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => format!("{other:?}"),
    }
}
