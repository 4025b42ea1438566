//! Liveness against the real binary (issue #10, "Must show" 2): while ONE client runs
//! something that takes long or never ends, ANOTHER client's PINGs and GETs are each answered
//! within [`REPLY_BOUND`], `/health` on the admin port answers, and SIGTERM stops the process
//! within [`STOP_BOUND`] even while the long thing is still in progress.
//!
//! Every wait on the server is bounded: a frozen server makes a test fail with the delay it
//! measured (or "no reply within …"), and a watchdog SIGKILLs the process if the test itself
//! gets stuck, so CI never hangs.
//!
//! Each test prints what it measured (`cargo nextest run --no-capture` shows it).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::raw::{verdict, Conn};
use common::{render, Server};
use ringkv_protocol::Frame;

/// How late one reply to PING, GET or `/health` may be. The CI machine is a loaded 2-core box
/// running the debug build: a PING or GET on loopback takes about a millisecond there, and a
/// busy neighbour (a build, another test's server on the other core, the long command itself
/// using one core) adds tens to a few hundred milliseconds at worst. One second is well above
/// that noise and well below what these tests catch: a server frozen for seconds (DEBUG SLEEP
/// 5, a FLUSHALL under the exclusive lock) or forever (WAIT inside EXEC).
const REPLY_BOUND: Duration = Duration::from_secs(1);

/// How long SIGTERM may take to stop the process (issue #10).
const STOP_BOUND: Duration = Duration::from_secs(3);

/// How long a late reply (or the exit after SIGTERM) is still waited for, only so the failure
/// can say how late it was.
const LATE_WAIT: Duration = Duration::from_secs(10);

/// Probe rounds: each is one PING then one GET.
const PROBES: usize = 100;

/// The key the probing client reads (set before the long command starts).
const PROBE_KEY: &str = "probe:key";

/// SIGKILLs the server if the test is still running after `limit` (a stuck test would
/// otherwise hang CI); disarmed on drop. Declare it after the server so it drops first.
struct Watchdog {
    disarmed: Arc<AtomicBool>,
}

impl Watchdog {
    fn arm(server: &Server, limit: Duration) -> Watchdog {
        let pid = server.pid().expect("running") as libc::pid_t;
        let disarmed = Arc::new(AtomicBool::new(false));
        let flag = disarmed.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + limit;
            while Instant::now() < deadline {
                if flag.load(Ordering::Acquire) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if !flag.load(Ordering::Acquire) {
                eprintln!("watchdog: test still running after {limit:?}, SIGKILL {pid}");
                // SAFETY: kill(2) with a pid and a signal number; no memory is involved.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        });
        Watchdog { disarmed }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.disarmed.store(true, Ordering::Release);
    }
}

/// `GET path` on the admin HTTP port within `limit`: the status code.
fn http_status_within(admin: u16, path: &str, limit: Duration) -> Result<u16, String> {
    let mut stream =
        TcpStream::connect(("127.0.0.1", admin)).map_err(|e| format!("connect admin: {e}"))?;
    stream.set_read_timeout(Some(limit)).expect("read timeout");
    write!(stream, "GET {path} HTTP/1.0\r\n\r\n").map_err(|e| format!("send: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("no complete response within {limit:?}: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    text.get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {text:?}"))
}

/// What the probing client measured.
#[derive(Debug, Default)]
struct Probed {
    ping_max: Duration,
    get_max: Duration,
    health: Vec<Duration>,
    answered: usize,
}

/// One probe reply: checks it, and on a late one waits up to [`LATE_WAIT`] to say how late.
fn timed(
    conn: &mut Conn,
    args: &[&[u8]],
    what: &str,
    ok: impl Fn(&Frame) -> bool,
) -> Result<Duration, String> {
    let started = Instant::now();
    let reply = conn.call_within(args, LATE_WAIT);
    let took = started.elapsed();
    match reply {
        Ok(frame) if !ok(&frame) => Err(format!("{what}: unexpected reply {}", render(&frame))),
        Ok(_) if took > REPLY_BOUND => Err(format!(
            "{what} answered after {took:?} (bound {REPLY_BOUND:?})"
        )),
        Ok(_) => Ok(took),
        Err(why) => Err(format!("{what}: {why}")),
    }
}

/// `/health` within the bound, measured like a probe.
fn health(admin: u16, what: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let status = http_status_within(admin, "/health", LATE_WAIT);
    let took = started.elapsed();
    match status {
        Ok(200) if took <= REPLY_BOUND => Ok(took),
        Ok(200) => Err(format!(
            "{what} answered after {took:?} (bound {REPLY_BOUND:?})"
        )),
        Ok(other) => Err(format!("{what}: HTTP {other}")),
        Err(why) => Err(format!("{what}: {why}")),
    }
}

/// `/health`, then [`PROBES`] rounds of PING and GET one at a time on `conn` (`pace` apart),
/// then `/health` again. Each must answer within [`REPLY_BOUND`]; the first that does not ends
/// the probing with a description of how late it was.
fn probe(conn: &mut Conn, admin: u16, pace: Duration) -> Result<Probed, String> {
    probe_rounds(conn, admin, pace).map_err(|why| {
        // After a late reply: is the admin port still answering?
        let health = match health(admin, "/health after it") {
            Ok(took) => format!("/health after it answered in {took:?}"),
            Err(why) => why,
        };
        format!("{why}; {health}")
    })
}

fn probe_rounds(conn: &mut Conn, admin: u16, pace: Duration) -> Result<Probed, String> {
    let mut probed = Probed::default();
    let with = |probed: &Probed, why: String| {
        format!(
            "{why} — after {} prompt replies (PING max {:?}, GET max {:?}, /health {:?})",
            probed.answered, probed.ping_max, probed.get_max, probed.health
        )
    };
    let took = health(admin, "/health before the probes").map_err(|w| with(&probed, w))?;
    probed.health.push(took);
    for round in 0..PROBES {
        let took = timed(
            conn,
            &[b"PING"],
            &format!("PING #{}", round + 1),
            |f| matches!(f, Frame::Simple(s) if &s[..] == b"PONG"),
        )
        .map_err(|w| with(&probed, w))?;
        probed.ping_max = probed.ping_max.max(took);
        probed.answered += 1;
        let took = timed(
            conn,
            &[b"GET", PROBE_KEY.as_bytes()],
            &format!("GET #{}", round + 1),
            |f| matches!(f, Frame::Bulk(_) | Frame::Null),
        )
        .map_err(|w| with(&probed, w))?;
        probed.get_max = probed.get_max.max(took);
        probed.answered += 1;
        if !pace.is_zero() {
            std::thread::sleep(pace);
        }
    }
    let took = health(admin, "/health after the probes").map_err(|w| with(&probed, w))?;
    probed.health.push(took);
    Ok(probed)
}

/// The long-running client: its own connection and thread; sends `commands` pipelined and
/// collects their rendered replies (each waited for at most `limit`).
struct Nasty {
    started: Instant,
    finished: Arc<Mutex<Option<Duration>>>,
    replies: mpsc::Receiver<Result<Vec<String>, String>>,
}

impl Nasty {
    /// Sends `commands` pipelined on a raw connection; their rendered replies.
    fn spawn(port: u16, commands: &[&[&str]], limit: Duration) -> Nasty {
        let commands: Vec<Vec<Vec<u8>>> = commands
            .iter()
            .map(|c| c.iter().map(|a| a.as_bytes().to_vec()).collect())
            .collect();
        let mut conn = Conn::connect(port);
        Nasty::run(move || {
            for command in &commands {
                let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
                conn.send(&args);
            }
            let mut out = Vec::new();
            for _ in &commands {
                out.push(render(&conn.read_within(limit)?));
            }
            Ok(out)
        })
    }

    /// Sends `commands` pipelined with the `redis` crate (whose reply parser is incremental,
    /// for replies of a million elements); the replies summarised.
    fn spawn_big(server: &Server, commands: &[&[&str]], limit: Duration) -> Nasty {
        let mut pipe = redis::pipe();
        for command in commands {
            pipe.cmd(command[0]);
            for arg in &command[1..] {
                pipe.arg(*arg);
            }
        }
        let mut con = server.client();
        con.set_read_timeout(Some(limit)).expect("read timeout");
        Nasty::run(move || {
            let replies: Vec<redis::Value> = pipe.query(&mut con).map_err(|e| e.to_string())?;
            Ok(replies
                .iter()
                .map(|v| match v {
                    redis::Value::Array(items) => format!("array of {}", items.len()),
                    other => format!("{other:?}"),
                })
                .collect())
        })
    }

    /// Runs `work` (which owns its connection) on its own thread.
    fn run(work: impl FnOnce() -> Result<Vec<String>, String> + Send + 'static) -> Nasty {
        let finished = Arc::new(Mutex::new(None));
        let done = finished.clone();
        let (tx, replies) = mpsc::channel();
        let started = Instant::now();
        std::thread::spawn(move || {
            let result = work();
            *done.lock().unwrap() = Some(started.elapsed());
            let _ = tx.send(result);
        });
        Nasty {
            started,
            finished,
            replies,
        }
    }

    /// Still waiting for its replies?
    fn in_progress(&self) -> bool {
        self.finished.lock().unwrap().is_none()
    }

    /// Its replies, waiting at most `limit` for them.
    fn replies_within(&self, limit: Duration) -> Result<Vec<String>, String> {
        match self.replies.recv_timeout(limit) {
            Ok(result) => result,
            Err(_) => Err(format!(
                "no reply {:?} after it was sent",
                self.started.elapsed()
            )),
        }
    }
}

/// Sends SIGTERM and measures how long the process takes to exit (SIGKILL after
/// [`LATE_WAIT`]).
fn sigterm_exit_time(server: &mut Server) -> Result<Duration, String> {
    let pid = server.pid().expect("running") as libc::pid_t;
    // SAFETY: kill(2) with our child's pid and a signal number.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "SIGTERM");
    let sent = Instant::now();
    while sent.elapsed() < LATE_WAIT {
        if !server.is_running() {
            return Ok(sent.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    server.kill();
    Err(format!(
        "still running {LATE_WAIT:?} after SIGTERM (SIGKILLed)"
    ))
}

/// A started server with its admin port, the probing client connected (before the long
/// command starts, as an established client), the probe key set and a [`Watchdog`] armed; and
/// what the test measured (`report`) and found wrong (`failures`) so far.
struct Setup {
    /// First, so it is disarmed before the server drops.
    _watchdog: Watchdog,
    server: Server,
    admin: u16,
    prober: Conn,
    admin_client: Conn,
    report: Vec<String>,
    failures: Vec<String>,
}

/// Starts the server with `args`; the watchdog kills it after `watchdog`.
fn setup(args: &[&str], watchdog: Duration) -> Setup {
    let server = Server::start_with(args);
    let admin = server.admin_port().expect("admin port in the log");
    let mut admin_client = Conn::connect(server.port);
    assert_eq!(admin_client.cmd(&["SET", PROBE_KEY, "probe-value"]), "+OK");
    let prober = Conn::connect(server.port);
    Setup {
        _watchdog: Watchdog::arm(&server, watchdog),
        server,
        admin,
        prober,
        admin_client,
        report: Vec::new(),
        failures: Vec::new(),
    }
}

impl Setup {
    /// Runs [`probe`] (`pace` apart) and reports it as `label: …`; a late reply is a failure.
    fn probe(&mut self, pace: Duration, label: &str) {
        let probing = Instant::now();
        match probe(&mut self.prober, self.admin, pace) {
            Ok(probed) => self.report.push(format!(
                "{label}: {} replies in {:?}, PING max {:?}, GET max {:?}, /health {:?}",
                probed.answered,
                probing.elapsed(),
                probed.ping_max,
                probed.get_max,
                probed.health
            )),
            Err(why) => {
                self.report.push(format!("probes: {why}"));
                self.failures.push(why);
            }
        }
    }

    /// Sends SIGTERM and reports the exit time as `exit … after SIGTERM{after}`; an exit
    /// later than [`STOP_BOUND`] is a failure, `SIGTERM took …{to_stop} (bound …)`.
    fn sigterm(&mut self, after: &str, to_stop: &str) {
        match sigterm_exit_time(&mut self.server) {
            Ok(took) => {
                self.report
                    .push(format!("exit {took:?} after SIGTERM{after}"));
                if took > STOP_BOUND {
                    self.failures.push(format!(
                        "SIGTERM took {took:?}{to_stop} (bound {STOP_BOUND:?})"
                    ));
                }
            }
            Err(why) => {
                self.report.push(why.clone());
                self.failures.push(why);
            }
        }
    }

    /// Probes (`pace` apart), then SIGTERM with the long command (maybe) still running.
    fn probe_then_sigterm(&mut self, nasty: &Nasty, pace: Duration) {
        self.probe(pace, "probes");
        let running = nasty.in_progress();
        self.report.push(format!(
            "long command still in progress at SIGTERM: {running} ({:?} after it was sent)",
            nasty.started.elapsed()
        ));
        self.sigterm("", " to stop the server");
    }

    /// Prints the measurements and fails the test with every failure.
    fn verdict(&self, case: &str) {
        verdict(case, &self.report, &self.failures);
    }
}

/// MULTI / WAIT 1 0 / EXEC with no replica: Redis answers the WAIT inside EXEC at once with the
/// replicas that acknowledged (0) instead of blocking, so EXEC replies `[+OK…]` promptly with
/// `:0`. Others are served meanwhile, SIGTERM stops the server.
#[test]
fn multi_wait_exec_answers_at_once_and_freezes_nobody() {
    let mut setup = setup(&[], Duration::from_secs(90));
    let nasty = Nasty::spawn(
        setup.server.port,
        &[&["MULTI"], &["WAIT", "1", "0"], &["EXEC"]],
        Duration::from_secs(30),
    );
    setup.probe(Duration::ZERO, "probes");
    // EXEC must have answered by now, or within the bound.
    let waited = Instant::now();
    match nasty.replies_within(REPLY_BOUND) {
        Ok(replies) => {
            setup.report.push(format!(
                "MULTI/WAIT/EXEC replies {replies:?} ({:?} after sending)",
                nasty.finished.lock().unwrap().unwrap()
            ));
            if replies != ["+OK", "+QUEUED", "[:0]"] {
                setup.failures.push(format!(
                    "expected [+OK, +QUEUED, [:0]] as Redis answers, got {replies:?}"
                ));
            }
        }
        Err(why) => {
            let why = format!(
                "EXEC did not answer promptly: {why} (waited {:?} more)",
                waited.elapsed()
            );
            setup.report.push(why.clone());
            setup.failures.push(why);
        }
    }
    setup.sigterm("", "");
    setup.verdict("MULTI/WAIT 1 0/EXEC");
}

/// WAIT 1 0 outside MULTI with no replica blocks that client forever (as Redis); the others
/// are served, and SIGTERM still stops the server within the bound.
#[test]
fn wait_forever_blocks_only_its_client_and_sigterm_still_stops() {
    let mut setup = setup(&[], Duration::from_secs(90));
    let nasty = Nasty::spawn(
        setup.server.port,
        &[&["WAIT", "1", "0"]],
        Duration::from_secs(60),
    );
    setup.probe_then_sigterm(&nasty, Duration::ZERO);
    // WAIT 1 0 never answers on its own with no replica: a reply before the shutdown would be
    // wrong, and a reply at shutdown, if any, is an error or the count.
    if let Some(at) = *nasty.finished.lock().unwrap() {
        setup
            .report
            .push(format!("WAIT ended {at:?} after it was sent"));
    }
    setup.verdict("WAIT 1 0");
}

/// DEBUG SLEEP 5: only that client waits; SIGTERM sent while it sleeps stops the server within
/// the bound (not after the remaining seconds).
#[test]
fn debug_sleep_blocks_only_its_client() {
    let mut setup = setup(&[], Duration::from_secs(90));
    let nasty = Nasty::spawn(
        setup.server.port,
        &[&["DEBUG", "SLEEP", "5"]],
        Duration::from_secs(30),
    );
    setup.probe_then_sigterm(&nasty, Duration::ZERO);
    setup.verdict("DEBUG SLEEP 5");
}

/// Keys for the KEYS and FLUSHALL cases, as the issue says. On the debug build (2 loaded
/// cores) `DEBUG POPULATE 1000000` takes 10–20 s with the row cache off (40–50 s with it on).
const MANY_KEYS: &str = "1000000";

/// Settings for the million-key cases: no row cache. With it, the debug build spends ~3.6 s
/// of an idle SIGTERM freeing a million cached rows and flushing the memtable; without it and
/// after `DEBUG RELOAD` an idle SIGTERM takes ~0.4 s, so the SIGTERM bound measures the long
/// command, not the teardown.
const MANY_KEYS_ARGS: &[&str] = &["--row-cache-bytes", "0"];

/// Fills the server with [`MANY_KEYS`] keys and flushes them to a table (`DEBUG RELOAD`);
/// reports how long it took.
fn populate(setup: &mut Setup) {
    let started = Instant::now();
    let reply = setup
        .admin_client
        .call_within(
            &[b"DEBUG", b"POPULATE", MANY_KEYS.as_bytes()],
            Duration::from_secs(300),
        )
        .map(|f| render(&f));
    assert_eq!(reply.as_deref(), Ok("+OK"), "DEBUG POPULATE {MANY_KEYS}");
    let filled = started.elapsed();
    let reply = setup
        .admin_client
        .call_within(&[b"DEBUG", b"RELOAD"], Duration::from_secs(120))
        .map(|f| render(&f));
    assert_eq!(reply.as_deref(), Ok("+OK"), "DEBUG RELOAD");
    setup.report.push(format!(
        "DEBUG POPULATE {MANY_KEYS} took {filled:?}, DEBUG RELOAD {:?}",
        started.elapsed() - filled
    ));
    assert_eq!(
        setup.admin_client.cmd(&["DBSIZE"]),
        format!(":{}", MANY_KEYS.parse::<u64>().unwrap() + 1)
    );
}

/// KEYS * over a million keys: others are served while it runs; SIGTERM stops the server
/// without waiting for it to finish. (On the debug build KEYS * over a million keys takes
/// ~2.7 s on an idle 2-core box and 5+ s on a loaded one.)
#[test]
fn keys_over_a_million_keys_blocks_only_its_client() {
    let mut setup = setup(MANY_KEYS_ARGS, Duration::from_secs(240));
    populate(&mut setup);
    let nasty = Nasty::spawn_big(&setup.server, &[&["KEYS", "*"]], Duration::from_secs(120));
    setup.probe_then_sigterm(&nasty, Duration::ZERO);
    if let Some(at) = *nasty.finished.lock().unwrap() {
        setup.report.push(format!(
            "KEYS * answered {:?} {at:?} after it was sent",
            nasty.replies_within(Duration::ZERO)
        ));
    }
    setup.verdict("KEYS * over 1M keys");
}

/// FLUSHALL (synchronous) of a million keys: others are served while it runs (Redis isolation
/// for it must not park the other connections); SIGTERM stops the server.
#[test]
fn flushall_of_a_million_keys_blocks_only_its_client() {
    let mut setup = setup(MANY_KEYS_ARGS, Duration::from_secs(240));
    populate(&mut setup);
    let nasty = Nasty::spawn(
        setup.server.port,
        &[&["FLUSHALL"]],
        Duration::from_secs(120),
    );
    setup.probe_then_sigterm(&nasty, Duration::ZERO);
    if let Some(at) = *nasty.finished.lock().unwrap() {
        setup
            .report
            .push(format!("FLUSHALL answered {at:?} after it was sent"));
    }
    setup.verdict("FLUSHALL of 1M keys");
}

/// A writer on its own connection: SETs in a loop, counting acknowledged ones.
struct Writer {
    acked: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    error: Arc<Mutex<Option<String>>>,
}

impl Writer {
    fn spawn(port: u16, value_bytes: usize) -> Writer {
        let acked = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let error = Arc::new(Mutex::new(None));
        let (count, stopping, failed) = (acked.clone(), stop.clone(), error.clone());
        let mut conn = Conn::connect(port);
        std::thread::spawn(move || {
            let value = vec![b'w'; value_bytes];
            let mut i = 0u64;
            while !stopping.load(Ordering::Acquire) {
                let key = format!("w:{i}");
                // A stalled write may be held for as long as the test holds compaction.
                match conn.call_within(&[b"SET", key.as_bytes(), &value], Duration::from_secs(120))
                {
                    Ok(Frame::Simple(s)) if &s[..] == b"OK" => {
                        count.fetch_add(1, Ordering::AcqRel);
                    }
                    Ok(other) => {
                        *failed.lock().unwrap() = Some(format!("SET {key}: {}", render(&other)));
                        return;
                    }
                    Err(why) => {
                        *failed.lock().unwrap() = Some(format!("SET {key}: {why}"));
                        return;
                    }
                }
                i += 1;
            }
        });
        Writer { acked, stop, error }
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::Acquire)
    }

    fn failed(&self) -> Option<String> {
        self.error.lock().unwrap().clone()
    }

    /// Waits (at most `limit`) until no SET was acknowledged for `quiet`: the writer is stuck.
    fn wait_stuck(&self, quiet: Duration, limit: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        let mut last = self.acked();
        let mut since = Instant::now();
        while started.elapsed() < limit {
            if let Some(why) = self.failed() {
                return Err(format!("the writer failed: {why}"));
            }
            let now = self.acked();
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                return Ok(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(format!(
            "the writer never stalled in {limit:?} ({} SETs acknowledged)",
            self.acked()
        ))
    }

    /// Waits (at most `limit`) until `more` further SETs are acknowledged.
    fn wait_progress(&self, more: u64, limit: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        let target = self.acked() + more;
        while started.elapsed() < limit {
            if self.acked() >= target {
                return Ok(started.elapsed());
            }
            if let Some(why) = self.failed() {
                return Err(format!("the writer failed: {why}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(format!(
            "the writer made {} of {more} more SETs in {limit:?}",
            more + self.acked() - target
        ))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// The value of `field` in `INFO engine`, from a [`Conn`].
fn engine_field(conn: &mut Conn, field: &str) -> u64 {
    let reply = conn
        .call_within(&[b"INFO", b"engine"], LATE_WAIT)
        .expect("INFO engine");
    let Frame::Bulk(text) = reply else {
        panic!("INFO engine: {}", render(&reply));
    };
    let text = String::from_utf8_lossy(&text).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in INFO engine:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// A write stall forced by a tiny level-0 limit (RocksDB's `level0_slowdown_writes_trigger` /
/// `level0_stop_writes_trigger`) while `DEBUG COMPACTION PAUSE` holds compaction: the writer
/// is stuck, the other client's PINGs and GETs and `/health` are served, `DEBUG COMPACTION
/// RESUME` lets the writer proceed, and SIGTERM during a second stall stops the server.
#[test]
fn write_stall_blocks_only_the_writer() {
    let mut setup = setup(
        &[
            "--l0-slowdown-writes-trigger",
            "2",
            "--l0-stop-writes-trigger",
            "2",
            "--memtable-bytes-max",
            "65536",
        ],
        Duration::from_secs(120),
    );
    assert_eq!(
        setup.admin_client.cmd(&["DEBUG", "COMPACTION", "PAUSE"]),
        "+OK"
    );
    let stalls_before = engine_field(&mut setup.admin_client, "write_stall_usec");
    // 4 KiB values: a 64 KiB memtable fills every ~16 SETs, and two flushed tables stop writes.
    let writer = Writer::spawn(setup.server.port, 4096);
    let stuck = writer
        .wait_stuck(Duration::from_secs(1), Duration::from_secs(30))
        .unwrap_or_else(|why| panic!("{why}"));
    setup.report.push(format!(
        "writer stuck after {} SETs ({stuck:?})",
        writer.acked()
    ));
    setup.probe(Duration::ZERO, "probes during the stall");
    let stalled_acked = writer.acked();
    let stalls = engine_field(&mut setup.admin_client, "write_stall_usec") - stalls_before;
    setup
        .report
        .push(format!("write_stall_usec grew by {stalls}"));
    if stalls == 0 {
        setup
            .failures
            .push("INFO engine shows no write stall: the writer stopped for another reason".into());
    }
    assert_eq!(
        setup.admin_client.cmd(&["DEBUG", "COMPACTION", "RESUME"]),
        "+OK"
    );
    match writer.wait_progress(50, Duration::from_secs(30)) {
        Ok(took) => setup.report.push(format!(
            "after RESUME: 50 more SETs in {took:?} (stalled at {stalled_acked})"
        )),
        Err(why) => setup.failures.push(format!("after RESUME: {why}")),
    }
    // Stall it again, and stop the server while the writer is stuck.
    assert_eq!(
        setup.admin_client.cmd(&["DEBUG", "COMPACTION", "PAUSE"]),
        "+OK"
    );
    if let Err(why) = writer.wait_stuck(Duration::from_secs(1), Duration::from_secs(30)) {
        setup.failures.push(format!("second stall: {why}"));
    }
    setup.sigterm(" (writer stalled)", "");
    setup.verdict("write stall");
}

/// A WAL fsync that takes 2 s (injected with `DEBUG SLOW-FSYNC 2000 3`: the next three WAL
/// fsyncs each take 2 s) under `appendfsync everysec`, while one client writes continuously:
/// the other client's PINGs and GETs are answered within the bound throughout. The probes are
/// paced over ~7 s so they cover the three slow fsyncs, and `wal_sync_usec` shows they happened.
#[test]
fn slow_wal_fsync_under_everysec_blocks_nobody() {
    let mut setup = setup(&["--appendfsync", "everysec"], Duration::from_secs(120));
    let writer = Writer::spawn(setup.server.port, 100);
    writer
        .wait_progress(100, Duration::from_secs(30))
        .unwrap_or_else(|why| panic!("before the slow fsync: {why}"));
    let sync_usec_before = engine_field(&mut setup.admin_client, "wal_sync_usec");
    assert_eq!(
        setup
            .admin_client
            .cmd(&["DEBUG", "SLOW-FSYNC", "2000", "3"]),
        "+OK"
    );
    let acked_before = writer.acked();
    setup.probe(Duration::from_millis(70), "probes");
    setup.report.push(format!(
        "writer: {} SETs acknowledged during the probes",
        writer.acked() - acked_before
    ));
    let slow = engine_field(&mut setup.admin_client, "wal_sync_usec") - sync_usec_before;
    setup.report.push(format!("wal_sync_usec grew by {slow}"));
    if slow < 4_000_000 {
        setup.failures.push(format!(
            "the injected slow fsyncs did not happen during the probes (wal_sync_usec +{slow})"
        ));
    }
    if let Some(why) = writer.failed() {
        setup.failures.push(format!("the writer failed: {why}"));
    }
    setup.sigterm(" (writer running)", "");
    setup.verdict("slow WAL fsync");
}
