//! Malformed input and pipelining against the real binary: every bad request gets
//! `-ERR Protocol error…` and its connection closed, while other clients keep working.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{resp, Server};
use ringkv_protocol::Frame;

/// Sends `bytes` on a fresh connection and returns (everything received, closed by server).
fn send_bad(server: &Server, bytes: &[u8]) -> (String, bool) {
    let mut raw = server.raw();
    raw.send(bytes);
    raw.read_to_close()
}

fn assert_rejected(server: &Server, bytes: &[u8], error: &str) {
    let (reply, closed) = send_bad(server, bytes);
    assert_eq!(
        reply,
        format!("-ERR {error}\r\n"),
        "reply to {:?}",
        String::from_utf8_lossy(bytes)
    );
    assert!(
        closed,
        "connection closed after {:?}",
        String::from_utf8_lossy(bytes)
    );
}

#[test]
fn malformed_frames_get_protocol_errors_and_close_only_that_connection() {
    let server = Server::start_with(&["--proto-max-bulk-len", "1048576"]);
    let mut bystander = server.raw();
    bystander.expect(b"PING\r\n", "+PONG\r\n");
    // Wrong type inside a request.
    assert_rejected(
        &server,
        b"*1\r\n:5\r\n",
        "Protocol error: expected '$', got ':'",
    );
    assert_rejected(
        &server,
        b"*2\r\n$4\r\nECHO\r\n+hi\r\n",
        "Protocol error: expected '$', got '+'",
    );
    // Lengths that are not numbers, negative, or huge.
    assert_rejected(
        &server,
        b"*x\r\n",
        "Protocol error: invalid multibulk length",
    );
    assert_rejected(
        &server,
        b"*1\r\n$-5\r\n",
        "Protocol error: invalid bulk length",
    );
    assert_rejected(
        &server,
        b"*1\r\n$abc\r\n",
        "Protocol error: invalid bulk length",
    );
    assert_rejected(
        &server,
        b"*1\r\n$99999999999999999999\r\n",
        "Protocol error: invalid bulk length",
    );
    // A bulk string larger than proto-max-bulk-len (1 MiB here), refused before its payload.
    assert_rejected(
        &server,
        b"*1\r\n$1048577\r\n",
        "Protocol error: invalid bulk length",
    );
    // More arguments than allowed.
    assert_rejected(
        &server,
        b"*99999999999\r\n",
        "Protocol error: invalid multibulk length",
    );
    // Inline request with unbalanced quotes.
    assert_rejected(
        &server,
        b"ECHO \"abc\r\n",
        "Protocol error: unbalanced quotes in request",
    );
    // Replies already due before the bad frame are sent first.
    let (reply, closed) = send_bad(&server, b"PING\r\n*1\r\n:1\r\n");
    assert_eq!(
        reply,
        "+PONG\r\n-ERR Protocol error: expected '$', got ':'\r\n"
    );
    assert!(closed);
    bystander.expect(b"PING\r\n", "+PONG\r\n");
}

#[test]
fn bulk_at_the_limit_is_accepted() {
    let server = Server::start_with(&["--proto-max-bulk-len", "1048576"]);
    let mut raw = server.raw();
    let big = vec![b'x'; 1048576];
    raw.send(&resp(&[b"ECHO", &big]));
    match raw.read_frame() {
        Frame::Bulk(data) => assert_eq!(data.len(), big.len()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn half_a_frame_then_gone_leaks_nothing_and_blocks_nobody() {
    let server = Server::start();
    let mut bystander = server.raw();
    for _ in 0..20 {
        let mut raw = server.raw();
        raw.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\nabc");
        drop(raw);
    }
    // A client that declared a huge (allowed) bulk and stops sending does not block others.
    let mut stalled = server.raw();
    stalled.send(b"*2\r\n$4\r\nECHO\r\n$100000000\r\npartial");
    bystander.expect(b"PING\r\n", "+PONG\r\n");
    // The 20 vanished clients are gone from the client table.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let Frame::Bulk(list) = bystander.call(&resp(&[b"CLIENT", b"LIST"])) else {
            panic!()
        };
        let count = String::from_utf8_lossy(&list).lines().count();
        if count == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{count} clients still listed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(stalled);
}

#[test]
fn pipeline_of_ten_thousand_commands_answers_in_order() {
    let server = Server::start();
    let mut raw = server.raw();
    let mut request = Vec::new();
    for i in 0..10_000 {
        request.extend_from_slice(&resp(&[b"ECHO", i.to_string().as_bytes()]));
    }
    let writer = {
        let mut stream = raw.stream.try_clone().unwrap();
        std::thread::spawn(move || stream.write_all(&request).unwrap())
    };
    for i in 0..10_000 {
        assert_eq!(raw.read_frame(), Frame::bulk(i.to_string()));
    }
    writer.join().unwrap();
}

#[test]
fn pipeline_of_ten_thousand_writes_with_the_redis_crate() {
    let server = Server::start_with(&["--appendfsync", "always"]);
    let mut con = server.client();
    let mut pipe = redis::pipe();
    for i in 0..10_000 {
        pipe.cmd("SET").arg(format!("key:{i}")).arg(i).ignore();
    }
    pipe.cmd("DBSIZE");
    let (size,): (i64,) = pipe.query(&mut con).unwrap();
    assert_eq!(size, 10_000);
    let mut pipe = redis::pipe();
    for i in 0..10_000 {
        pipe.cmd("GET").arg(format!("key:{i}"));
    }
    let values: Vec<i64> = pipe.query(&mut con).unwrap();
    assert_eq!(values, (0..10_000).collect::<Vec<i64>>());
}

#[test]
fn inline_commands_work_like_redis_cli_and_telnet() {
    let server = Server::start();
    let mut raw = server.raw();
    raw.expect(
        b"PING\r\nPING\nECHO 'single quoted'\r\n",
        "+PONG\r\n+PONG\r\n$13\r\nsingle quoted\r\n",
    );
    assert_eq!(server.cli(&["ECHO", "hello world"]), "hello world\n");
    // The buffer limit is bounded: an inline line longer than 64 KiB is refused.
    let mut long = vec![b'a'; 70 * 1024];
    long.extend_from_slice(b"\r\n");
    let mut other = server.raw();
    other.send(&long);
    let mut buf = Vec::new();
    let _ = other.stream.read_to_end(&mut buf);
    assert_eq!(
        String::from_utf8_lossy(&buf),
        "-ERR Protocol error: too big inline request\r\n"
    );
}

/// Replays [`random_garbage_never_crashes_or_hangs_the_server`] with a given seed.
const SEED_VAR: &str = "RINGKV_GARBAGE_SEED";

/// Random requests built from RESP and inline pieces. The seed is printed first, and
/// `RINGKV_GARBAGE_SEED=<seed>` replays a run. A panic in a handler only ends that connection's
/// tokio task: the process lives on and the task's peer just sees a close, which this test
/// accepts. What the panic leaves is the default panic hook's line on stderr
/// ("thread '…' panicked at …"), so the server's log must not contain "panicked".
#[test]
fn random_garbage_never_crashes_or_hangs_the_server() {
    use rand::{Rng, SeedableRng};
    let mut server = Server::start_with(&["--proto-max-bulk-len", "1048576"]);
    let seed: u64 = match std::env::var(SEED_VAR) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{SEED_VAR}={text:?} is not a u64")),
        Err(_) => rand::random(),
    };
    println!("seed {seed} (replay with {SEED_VAR}={seed})");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut bystander = server.raw();
    bystander.expect(b"PING\r\n", "+PONG\r\n");
    let pieces: &[&[u8]] = &[
        b"*",
        b"$",
        b"+",
        b"-",
        b":",
        b"_",
        b"%",
        b"~",
        b"\r\n",
        b"\n",
        b"\r",
        b"-1",
        b"0",
        b"3",
        b"999999999999",
        b"SET",
        b"GET",
        b"PING",
        b"\"",
        b"'",
        b" ",
        b"\x00",
        b"MULTI",
        b"EXEC",
    ];
    for _ in 0..150 {
        let mut request = Vec::new();
        for _ in 0..rng.gen_range(1..40) {
            if rng.gen_bool(0.7) {
                request.extend_from_slice(pieces[rng.gen_range(0..pieces.len())]);
            } else {
                request.push(rng.gen());
            }
        }
        let mut raw = server.raw();
        raw.stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        raw.send(&request);
        // Either replies, an error and a close, or waiting for more bytes: all fine; then go.
        let mut buf = [0u8; 4096];
        let _ = raw.stream.read(&mut buf);
    }
    assert!(
        server.is_running(),
        "server died (seed {seed}); log:\n{}",
        server.log()
    );
    let mut raw = server.raw();
    raw.expect(b"PING\r\n", "+PONG\r\n");
    bystander.expect(b"PING\r\n", "+PONG\r\n");
    // The panic hook writes its line before the task unwinds; give the log reader a moment.
    std::thread::sleep(Duration::from_millis(200));
    let log = server.log();
    assert!(
        !log.contains("panicked"),
        "a handler panicked (seed {seed}, replay with {SEED_VAR}={seed}); log:\n{log}"
    );
}
