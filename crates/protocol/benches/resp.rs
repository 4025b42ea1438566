//! Criterion micro-benchmarks of the RESP hot paths: `parse_request` and `RequestParser`
//! (single commands, pipelines, inline commands, and one large request trickled in 1 KiB
//! reads) and `Frame::encode` of typical replies.
//!
//! Run with `cargo bench -p ringkv-protocol` (add a filter, e.g. `-- parse_request/pipeline`, to
//! run a subset). `cargo test --benches` runs each benchmark once as a smoke test.
//!
//! Requests are built with the same shapes the server sees: 16-byte keys, 100-byte values.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ringkv_protocol::{
    encode_request, parse_request, Bytes, BytesMut, Frame, Limits, RequestParser, RespVersion,
};

/// `key:000000000042`: 16 bytes, like db_bench's and redis-benchmark-style keys.
fn key(i: usize) -> String {
    format!("key:{i:012}")
}

fn value() -> String {
    "v".repeat(100)
}

fn requests(count: usize, mut make: impl FnMut(usize) -> Vec<String>) -> Bytes {
    let mut out = BytesMut::new();
    for i in 0..count {
        encode_request(&make(i), &mut out);
    }
    out.freeze()
}

fn set(i: usize) -> Vec<String> {
    vec!["SET".into(), key(i), value()]
}

fn get(i: usize) -> Vec<String> {
    vec!["GET".into(), key(i)]
}

/// Parses every request in `input` (the server's read loop), returning the argument count.
///
/// The buffer is a fresh copy made by `iter_batched`'s setup, outside the timing: parsing
/// consumes it (`split_to`), and the copy is not what is being measured.
fn parse_all(mut buf: BytesMut, limits: &Limits) -> usize {
    let mut args = 0;
    while let Some(request) = parse_request(&mut buf, limits).unwrap() {
        args += black_box(request).len();
    }
    args
}

/// [`parse_all`] through a fresh `RequestParser`, as a new connection's read loop does.
fn parse_all_stateful(mut buf: BytesMut, limits: &Limits) -> usize {
    let mut parser = RequestParser::new();
    let mut args = 0;
    while let Some(request) = parser.parse(&mut buf, limits).unwrap() {
        args += black_box(request).len();
    }
    args
}

/// Feeds `wire` to a `RequestParser` in 1 KiB reads, returning the argument count.
fn trickle_stateful(wire: &[u8], limits: &Limits) -> usize {
    let mut parser = RequestParser::new();
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut args = 0;
    for piece in wire.chunks(1024) {
        input.extend_from_slice(piece);
        while let Some(request) = parser.parse(&mut input, limits).unwrap() {
            args += black_box(request).len();
        }
    }
    args
}

fn bench_parse(c: &mut Criterion) {
    let limits = Limits::default();
    let mut group = c.benchmark_group("parse_request");
    let cases: Vec<(&str, Bytes, usize)> = vec![
        ("single/GET", requests(1, get), 2),
        ("single/SET", requests(1, set), 3),
        ("pipeline/16xGET", requests(16, get), 32),
        ("pipeline/16xSET", requests(16, set), 48),
        ("pipeline/100xGET", requests(100, get), 200),
        ("pipeline/100xSET", requests(100, set), 300),
        // Inline commands: what redis-cli-less clients (telnet, nc, health checks) send.
        ("inline/PING", Bytes::from_static(b"PING\r\n"), 1),
        (
            "inline/SET",
            Bytes::from(format!("SET {} {}\r\n", key(1), value())),
            3,
        ),
        (
            "inline/16xSET",
            Bytes::from(format!("SET {} {}\r\n", key(1), value()).repeat(16)),
            48,
        ),
        (
            "inline/SET_quoted",
            Bytes::from(format!("SET \"{}\" \"a b\\r\\n {}\"\r\n", key(1), value())),
            3,
        ),
    ];
    for (name, input, expected_args) in cases {
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(name, |b| {
            b.iter_batched(
                || BytesMut::from(&input[..]),
                |buf| assert_eq!(parse_all(buf, &limits), expected_args),
                BatchSize::SmallInput,
            )
        });
        // The same through the stateful parser the server uses: the fast path of a request
        // that arrived whole must cost what `parse_request` costs.
        group.bench_function(format!("parser/{name}"), |b| {
            b.iter_batched(
                || BytesMut::from(&input[..]),
                |buf| assert_eq!(parse_all_stateful(buf, &limits), expected_args),
                BatchSize::SmallInput,
            )
        });
    }
    // One request of 10 000 16-byte keys arriving in 1 KiB reads (`parse_request` would start
    // it over at each of them: see examples/trickle.rs for that comparison).
    let keys: Vec<String> = (0..10_000).map(key).collect();
    let mut wire = BytesMut::new();
    encode_request(&keys, &mut wire);
    group.throughput(Throughput::Bytes(wire.len() as u64));
    group.bench_function("parser/trickled/10000args_in_1KiB_reads", |b| {
        b.iter(|| assert_eq!(trickle_stateful(&wire, &limits), 10_000))
    });
    group.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    let bulk_array = |n: usize| Frame::Array((0..n).map(|_| Frame::bulk(value())).collect());
    // HGETALL / CONFIG GET-like reply: field names and 100-byte values.
    let map = Frame::Map(
        (0..10)
            .map(|i| (Frame::bulk(format!("field:{i:06}")), Frame::bulk(value())))
            .collect(),
    );
    let cases: Vec<(&str, Frame, RespVersion)> = vec![
        ("simple/OK", Frame::ok(), RespVersion::Resp2),
        (
            "error",
            Frame::error("ERR wrong number of arguments for 'get' command"),
            RespVersion::Resp2,
        ),
        ("integer", Frame::Integer(1_234_567), RespVersion::Resp2),
        ("bulk/100B", Frame::bulk(value()), RespVersion::Resp2),
        ("null/RESP2", Frame::Null, RespVersion::Resp2),
        ("null/RESP3", Frame::Null, RespVersion::Resp3),
        ("double/RESP3", Frame::Double(1.0 / 7.0), RespVersion::Resp3),
        ("array/10xbulk", bulk_array(10), RespVersion::Resp2),
        ("array/100xbulk", bulk_array(100), RespVersion::Resp2),
        (
            "array/mixed",
            Frame::Array(vec![
                Frame::Integer(0),
                Frame::Array((0..10).map(|i| Frame::bulk(key(i))).collect()),
            ]),
            RespVersion::Resp2,
        ),
        ("map/10/RESP2", map.clone(), RespVersion::Resp2),
        ("map/10/RESP3", map, RespVersion::Resp3),
    ];
    for (name, frame, version) in cases {
        let mut out = BytesMut::with_capacity(64 * 1024);
        frame.encode(version, &mut out);
        group.throughput(Throughput::Bytes(out.len() as u64));
        group.bench_function(name, |b| {
            // The output buffer is reused, as a connection's write buffer is: what is measured
            // is encoding, not growing a fresh buffer.
            b.iter(|| {
                out.clear();
                black_box(&frame).encode(version, &mut out);
                black_box(out.len())
            })
        });
    }
    group.finish();
}

/// Short runs: these are regression checks in review, not publication figures, and the
/// machines are small and shared. Each benchmark takes about 3 s.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_parse, bench_encode
}
criterion_main!(benches);
