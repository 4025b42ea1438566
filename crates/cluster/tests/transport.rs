//! The internode transport over real sockets on 127.0.0.1
//! (docs/cluster.md, "Transport"). Every test stops what it started and
//! finishes in seconds.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ringkv_cluster::frame::{
    Challenge, ClusterSecret, Frame, FrameKind, Initiator, HANDSHAKE_MAX_FRAME_BYTES, NONCE_BYTES,
};
use ringkv_cluster::transport::{
    BoxFuture, CallError, Handler, HandlerError, Transport, TransportConfig,
};
use ringkv_cluster::NodeId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &[u8] = b"the cluster secret for the tests";

/// Echoes the payload back with kind + 100 and the answering node's id
/// appended.
const KIND_ECHO: u8 = 1;
/// Sleeps for the payload's first 8 bytes (u64 BE) in milliseconds, then
/// echoes.
const KIND_SLEEP: u8 = 2;
/// Fails with a handler error.
const KIND_FAIL: u8 = 3;
/// Panics.
const KIND_PANIC: u8 = 4;

const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What the test handler counts; the test keeps a handle to read it.
struct Counters {
    node: NodeId,
    epoch: AtomicU64,
    handled: AtomicUsize,
    running: AtomicUsize,
    max_running: AtomicUsize,
}

/// Decrements `running` however the request ends.
struct Running(Arc<Counters>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Echoes, sleeps, fails or panics on request, and counts how many
/// requests run at once.
struct TestHandler(Arc<Counters>);

impl Handler for TestHandler {
    fn handle(
        &self,
        _from: NodeId,
        kind: u8,
        _epoch: u64,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<(u8, Bytes), HandlerError>> {
        let counters = self.0.clone();
        Box::pin(async move {
            let now = counters.running.fetch_add(1, Ordering::SeqCst) + 1;
            counters.max_running.fetch_max(now, Ordering::SeqCst);
            let _running = Running(counters.clone());
            counters.handled.fetch_add(1, Ordering::SeqCst);
            match kind {
                KIND_ECHO => {}
                KIND_SLEEP => tokio::time::sleep(Duration::from_millis(millis(&payload))).await,
                KIND_FAIL => return Err(HandlerError::new("no such thing")),
                KIND_PANIC => panic!("the handler blew up"),
                _ => return Err(HandlerError::new(format!("unknown kind {kind}"))),
            }
            let mut reply = payload.to_vec();
            reply.extend_from_slice(&counters.node.to_be_bytes());
            Ok((kind + 100, Bytes::from(reply)))
        })
    }

    fn epoch(&self) -> u64 {
        self.0.epoch.load(Ordering::SeqCst)
    }
}

fn millis(payload: &[u8]) -> u64 {
    u64::from_be_bytes(payload[..8].try_into().expect("8-byte sleep payload"))
}

fn sleep_payload(millis: u64, tag: u64) -> Bytes {
    let mut payload = millis.to_be_bytes().to_vec();
    payload.extend_from_slice(&tag.to_be_bytes());
    Bytes::from(payload)
}

fn config(node: NodeId, secret: &[u8]) -> TransportConfig {
    let mut config = TransportConfig::new(node, ClusterSecret::new(secret).unwrap());
    config.handshake_timeout = Duration::from_millis(300);
    config.max_frame_bytes = 64 * 1024;
    config
}

struct Node {
    transport: Transport,
    counters: Arc<Counters>,
}

impl Node {
    fn addr(&self) -> SocketAddr {
        self.transport.local_addr()
    }

    async fn call(&self, peer: &Node, kind: u8, payload: Bytes) -> Result<(u8, Bytes), CallError> {
        self.transport
            .call(peer.addr(), kind, payload, CALL_TIMEOUT)
            .await
    }
}

async fn start_at(addr: SocketAddr, config: TransportConfig, epoch: u64) -> Node {
    let counters = Arc::new(Counters {
        node: config.node_id,
        epoch: AtomicU64::new(epoch),
        handled: AtomicUsize::new(0),
        running: AtomicUsize::new(0),
        max_running: AtomicUsize::new(0),
    });
    let transport = Transport::bind(addr, config, Arc::new(TestHandler(counters.clone())))
        .await
        .unwrap();
    Node {
        transport,
        counters,
    }
}

async fn start(config: TransportConfig) -> Node {
    start_at("127.0.0.1:0".parse().unwrap(), config, 1).await
}

/// Asserts an echo reply from `node` for `payload`.
fn assert_echo(reply: (u8, Bytes), kind: u8, payload: &[u8], node: NodeId) {
    let mut expected = payload.to_vec();
    expected.extend_from_slice(&node.to_be_bytes());
    assert_eq!(reply, (kind + 100, Bytes::from(expected)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_calls_both_ways_are_matched_by_id() {
    let a = Arc::new(start(config(1, SECRET)).await);
    let b = Arc::new(start(config(2, SECRET)).await);
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..10_000u64 {
        for (from, to) in [(a.clone(), b.clone()), (b.clone(), a.clone())] {
            calls.spawn(async move {
                // Sleeps of 0–3 ms make replies overtake each other.
                let payload = sleep_payload(i % 4, i);
                let reply = from.call(&to, KIND_SLEEP, payload.clone()).await.unwrap();
                assert_echo(reply, KIND_SLEEP, &payload, to.counters.node);
            });
        }
    }
    while let Some(result) = calls.join_next().await {
        result.unwrap();
    }
    assert_eq!(a.counters.handled.load(Ordering::SeqCst), 10_000);
    assert_eq!(b.counters.handled.load(Ordering::SeqCst), 10_000);
    // Requests did run concurrently, and so out of order.
    assert!(b.counters.max_running.load(Ordering::SeqCst) > 1);
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_times_out_while_others_on_its_connection_complete() {
    let mut caller_config = config(1, SECRET);
    caller_config.conns_per_peer = 1; // every call shares one connection
    let a = start(caller_config).await;
    let b = Arc::new(start(config(2, SECRET)).await);
    let slow = {
        let a = a.transport.clone();
        let peer = b.addr();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = a
                .call(
                    peer,
                    KIND_SLEEP,
                    sleep_payload(5_000, 0),
                    Duration::from_millis(300),
                )
                .await;
            (result, started.elapsed())
        })
    };
    for i in 0..50u64 {
        let payload = Bytes::from(i.to_be_bytes().to_vec());
        let reply = a.call(&b, KIND_ECHO, payload.clone()).await.unwrap();
        assert_echo(reply, KIND_ECHO, &payload, 2);
    }
    let (result, elapsed) = slow.await.unwrap();
    assert!(
        matches!(result, Err(CallError::TimedOut)),
        "expected TimedOut, got {result:?}"
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "timed out after {elapsed:?}"
    );
    // The connection is still good after the timeout.
    let reply = a
        .call(&b, KIND_ECHO, Bytes::from_static(b"after"))
        .await
        .unwrap();
    assert_echo(reply, KIND_ECHO, b"after", 2);
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_refused_and_the_listener_keeps_serving() {
    let server = start(config(1, SECRET)).await;
    let good = start(config(2, SECRET)).await;
    let intruder = start(config(3, b"not the cluster secret at all")).await;
    for _ in 0..3 {
        let result = intruder
            .call(&server, KIND_ECHO, Bytes::from_static(b"let me in"))
            .await;
        assert!(
            matches!(result, Err(CallError::HandshakeRefused { .. })),
            "expected HandshakeRefused, got {result:?}"
        );
        let reply = good
            .call(&server, KIND_ECHO, Bytes::from_static(b"hi"))
            .await
            .unwrap();
        assert_echo(reply, KIND_ECHO, b"hi", 1);
    }
    assert_eq!(server.counters.handled.load(Ordering::SeqCst), 3);
    for node in [server, good, intruder] {
        node.transport.shutdown().await;
    }
}

/// Waits until the peer closes `stream`, discarding what it sends; fails
/// if it stays open for `within`.
async fn assert_closed(mut stream: TcpStream, within: Duration, what: &str) -> Duration {
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((started + within).into(), stream.read(&mut buffer)).await {
            Err(_) => panic!("{what}: connection still open after {within:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
        }
    }
}

fn encoded(frame: &Frame) -> BytesMut {
    let mut out = BytesMut::new();
    frame.encode(&mut out, usize::MAX >> 1).unwrap();
    out
}

/// Runs the initiator's side of the handshake by hand over a raw socket.
async fn raw_handshake(stream: &mut TcpStream, secret: &[u8]) {
    let secret = ClusterSecret::new(secret).unwrap();
    let (initiator, hello) = Initiator::start(secret, 99, None, [7; NONCE_BYTES]);
    let hello = Frame {
        kind: FrameKind::Hello,
        request_id: 0,
        epoch: 1,
        payload: hello.encode(),
    };
    stream.write_all(&encoded(&hello)).await.unwrap();
    let challenge = read_frame(stream).await;
    assert_eq!(challenge.kind, FrameKind::Challenge);
    let (_, proof) = initiator
        .on_challenge(&Challenge::decode(&challenge.payload).unwrap())
        .unwrap();
    let proof = Frame {
        kind: FrameKind::Proof,
        request_id: 0,
        epoch: 1,
        payload: proof.encode(),
    };
    stream.write_all(&encoded(&proof)).await.unwrap();
}

async fn read_frame(stream: &mut TcpStream) -> Frame {
    let mut buffer = BytesMut::new();
    loop {
        if let Some(frame) = Frame::decode(&mut buffer, HANDSHAKE_MAX_FRAME_BYTES).unwrap() {
            return frame;
        }
        assert_ne!(stream.read_buf(&mut buffer).await.unwrap(), 0, "closed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_are_disconnected_while_a_good_peer_is_served() {
    let server = Arc::new(start(config(1, SECRET)).await);
    let good = Arc::new(start(config(2, SECRET)).await);
    let stop = Arc::new(AtomicBool::new(false));
    let good_calls = {
        let (server, good, stop) = (server.clone(), good.clone(), stop.clone());
        tokio::spawn(async move {
            let mut done = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let payload = Bytes::from(done.to_be_bytes().to_vec());
                let reply = good
                    .call(&server, KIND_ECHO, payload.clone())
                    .await
                    .unwrap();
                assert_echo(reply, KIND_ECHO, &payload, 1);
                done += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            done
        })
    };
    let addr = server.addr();
    let quick = Duration::from_secs(2);

    // Garbage: its first four bytes read as a length far past the
    // handshake limit.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_closed(stream, quick, "garbage").await;

    // A 4 GiB length prefix.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(&[0xff, 0xff, 0xff, 0xff, 1])
        .await
        .unwrap();
    assert_closed(stream, quick, "huge length").await;

    // A request before the handshake.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = Frame {
        kind: FrameKind::Request,
        request_id: 1,
        epoch: 1,
        payload: Bytes::from_static(&[KIND_ECHO, b'x']),
    };
    stream.write_all(&encoded(&request)).await.unwrap();
    assert_closed(stream, quick, "request before handshake").await;

    // A handshake left half done: Hello sent, the Challenge read, no Proof.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let (_, hello) = Initiator::start(
        ClusterSecret::new(SECRET).unwrap(),
        99,
        None,
        [7; NONCE_BYTES],
    );
    let hello = Frame {
        kind: FrameKind::Hello,
        request_id: 0,
        epoch: 1,
        payload: hello.encode(),
    };
    stream.write_all(&encoded(&hello)).await.unwrap();
    assert_eq!(read_frame(&mut stream).await.kind, FrameKind::Challenge);
    let waited = assert_closed(stream, quick, "half-finished handshake").await;
    assert!(
        waited >= Duration::from_millis(200),
        "closed after {waited:?}"
    );

    // A connection that says nothing at all.
    let stream = TcpStream::connect(addr).await.unwrap();
    let waited = assert_closed(stream, quick, "silent connection").await;
    assert!(
        waited >= Duration::from_millis(200),
        "closed after {waited:?}"
    );

    // An authenticated peer sending a frame over the configured limit.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    raw_handshake(&mut stream, SECRET).await;
    stream
        .write_all(&(64 * 1024 + 1u32).to_be_bytes())
        .await
        .unwrap();
    assert_closed(stream, quick, "oversized frame after handshake").await;

    // An authenticated peer sending a frame of an unknown version.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    raw_handshake(&mut stream, SECRET).await;
    stream.write_all(&[0, 0, 0, 18, 9, 16]).await.unwrap();
    assert_closed(stream, quick, "bad version after handshake").await;

    // An authenticated peer sending an empty request (no kind byte).
    let mut stream = TcpStream::connect(addr).await.unwrap();
    raw_handshake(&mut stream, SECRET).await;
    let empty = Frame {
        kind: FrameKind::Request,
        request_id: 1,
        epoch: 1,
        payload: Bytes::new(),
    };
    stream.write_all(&encoded(&empty)).await.unwrap();
    assert_closed(stream, quick, "empty request").await;

    stop.store(true, Ordering::SeqCst);
    let served = good_calls.await.unwrap();
    assert!(served > 10, "the good peer got only {served} calls through");
    server.transport.shutdown().await;
    good.transport.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_from_an_older_epoch_gets_stale_epoch_with_the_newer_one() {
    let replica = start_at("127.0.0.1:0".parse().unwrap(), config(1, SECRET), 5).await;
    let caller = start_at("127.0.0.1:0".parse().unwrap(), config(2, SECRET), 3).await;
    let result = caller
        .call(&replica, KIND_ECHO, Bytes::from_static(b"x"))
        .await;
    assert!(
        matches!(result, Err(CallError::StaleEpoch { theirs: 5 })),
        "expected StaleEpoch {{ theirs: 5 }}, got {result:?}"
    );
    // Refused before the handler.
    assert_eq!(replica.counters.handled.load(Ordering::SeqCst), 0);
    // The caller refreshes to the epoch it was told, and retries.
    caller.counters.epoch.store(5, Ordering::SeqCst);
    let reply = caller
        .call(&replica, KIND_ECHO, Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert_echo(reply, KIND_ECHO, b"x", 1);
    // A newer epoch than the replica's is served (the replica catches up
    // on its own).
    caller.counters.epoch.store(6, Ordering::SeqCst);
    caller
        .call(&replica, KIND_ECHO, Bytes::from_static(b"x"))
        .await
        .unwrap();
    replica.transport.shutdown().await;
    caller.transport.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_is_redialled_on_next_use() {
    let a = start(config(1, SECRET)).await;
    let b = start(config(2, SECRET)).await;
    let addr = b.addr();
    let reply = a
        .call(&b, KIND_ECHO, Bytes::from_static(b"one"))
        .await
        .unwrap();
    assert_echo(reply, KIND_ECHO, b"one", 2);
    b.transport.shutdown().await;
    // Give the closed connection's end of stream a moment to reach A.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let result = a
        .transport
        .call(addr, KIND_ECHO, Bytes::new(), CALL_TIMEOUT)
        .await;
    assert!(
        matches!(result, Err(CallError::ConnectFailed(_))),
        "expected ConnectFailed while down, got {result:?}"
    );
    let b = start_at(addr, config(2, SECRET), 1).await;
    let reply = a
        .call(&b, KIND_ECHO, Bytes::from_static(b"two"))
        .await
        .unwrap();
    assert_echo(reply, KIND_ECHO, b"two", 2);
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_max_in_flight_requests_run_per_connection_and_none_deadlock() {
    let a = Arc::new(start(config(1, SECRET)).await);
    let mut server_config = config(2, SECRET);
    server_config.max_in_flight_per_conn = 4;
    let b = Arc::new(start(server_config).await);
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..100u64 {
        let (a, b) = (a.clone(), b.clone());
        calls.spawn(async move {
            let payload = sleep_payload(20, i);
            let reply = a.call(&b, KIND_SLEEP, payload.clone()).await.unwrap();
            assert_echo(reply, KIND_SLEEP, &payload, 2);
        });
    }
    while let Some(result) = calls.join_next().await {
        result.unwrap();
    }
    assert_eq!(b.counters.handled.load(Ordering::SeqCst), 100);
    // A's pool holds two connections to B (the default), each bounded at 4.
    let max = b.counters.max_running.load(Ordering::SeqCst);
    assert!(max <= 8, "{max} requests ran at once");
    assert!(max >= 4, "only {max} requests ran at once");
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_flight_bound_holds_on_a_single_connection() {
    let mut caller_config = config(1, SECRET);
    caller_config.conns_per_peer = 1;
    let a = Arc::new(start(caller_config).await);
    let mut server_config = config(2, SECRET);
    server_config.max_in_flight_per_conn = 4;
    let b = Arc::new(start(server_config).await);
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..100u64 {
        let (a, b) = (a.clone(), b.clone());
        calls.spawn(async move {
            a.call(&b, KIND_SLEEP, sleep_payload(10, i)).await.unwrap();
        });
    }
    while let Some(result) = calls.join_next().await {
        result.unwrap();
    }
    assert_eq!(b.counters.handled.load(Ordering::SeqCst), 100);
    assert_eq!(b.counters.max_running.load(Ordering::SeqCst), 4);
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_errors_and_panics_come_back_as_remote_errors() {
    let a = start(config(1, SECRET)).await;
    let b = start(config(2, SECRET)).await;
    match a.call(&b, KIND_FAIL, Bytes::new()).await {
        Err(CallError::Remote { message }) => assert_eq!(message, "no such thing"),
        other => panic!("expected Remote, got {other:?}"),
    }
    match a.call(&b, KIND_PANIC, Bytes::new()).await {
        Err(CallError::Remote { message }) => assert!(message.contains("panicked"), "{message}"),
        other => panic!("expected Remote, got {other:?}"),
    }
    // The connection survives both.
    a.call(&b, KIND_ECHO, Bytes::new()).await.unwrap();
    // A request larger than the frame limit is refused before sending.
    let result = a.call(&b, KIND_ECHO, Bytes::from(vec![0; 64 * 1024])).await;
    assert!(
        matches!(result, Err(CallError::Frame(_))),
        "expected Frame, got {result:?}"
    );
    a.transport.shutdown().await;
    let result = a.call(&b, KIND_ECHO, Bytes::new()).await;
    assert!(matches!(result, Err(CallError::ShutDown)), "{result:?}");
    b.transport.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_max_connections_are_served_at_once() {
    let mut server_config = config(1, SECRET);
    server_config.max_connections = 2;
    let server = start(server_config).await;
    let good = start(config(2, SECRET)).await;
    // Two silent connections take both places until their handshake
    // deadline (300 ms) closes them.
    let silent = [
        TcpStream::connect(server.addr()).await.unwrap(),
        TcpStream::connect(server.addr()).await.unwrap(),
    ];
    tokio::time::sleep(Duration::from_millis(50)).await;
    let result = good
        .transport
        .call(
            server.addr(),
            KIND_ECHO,
            Bytes::new(),
            Duration::from_millis(150),
        )
        .await;
    assert!(
        matches!(result, Err(CallError::TimedOut)),
        "expected TimedOut while full, got {result:?}"
    );
    for stream in silent {
        assert_closed(stream, Duration::from_secs(2), "silent connection").await;
    }
    let reply = good
        .call(&server, KIND_ECHO, Bytes::from_static(b"in"))
        .await
        .unwrap();
    assert_echo(reply, KIND_ECHO, b"in", 1);
    server.transport.shutdown().await;
    good.transport.shutdown().await;
}
