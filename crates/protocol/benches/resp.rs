//! Throughput of the hot paths: parsing a pipeline of 16 `SET` requests, encoding 16 replies.
//!
//! A plain `harness = false` timing loop rather than criterion: adding criterion would change
//! the workspace's shared Cargo.lock. Run with `cargo bench -p ringkv-protocol`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ringkv_protocol::{encode_request, parse_request, Bytes, BytesMut, Frame, Limits, RespVersion};

/// Runs `f` repeatedly for about `budget` and prints the mean time per call.
fn bench(name: &str, budget: Duration, mut f: impl FnMut()) {
    // Warm up caches and the allocator.
    for _ in 0..1_000 {
        f();
    }
    let start = Instant::now();
    let mut iterations: u64 = 0;
    while start.elapsed() < budget {
        for _ in 0..1_000 {
            f();
        }
        iterations += 1_000;
    }
    let per_call = start.elapsed().as_nanos() / u128::from(iterations);
    println!("{name:<40} {per_call:>8} ns/iter ({iterations} iterations)");
}

fn main() {
    let budget = Duration::from_secs(2);
    let limits = Limits::default();

    let mut pipeline = BytesMut::new();
    for i in 0..16 {
        encode_request(
            &["SET", &format!("key:{i:08}"), &"v".repeat(64)],
            &mut pipeline,
        );
    }
    let pipeline = pipeline.freeze();
    bench("parse_request: pipeline of 16 SET", budget, || {
        let mut buf = BytesMut::from(&pipeline[..]);
        let mut parsed = 0;
        while let Some(args) = parse_request(&mut buf, &limits).unwrap() {
            parsed += args.len();
        }
        assert_eq!(black_box(parsed), 48);
    });

    let inline: Bytes = Bytes::from("SET key:00000001 value\r\n".repeat(16));
    bench("parse_request: pipeline of 16 inline SET", budget, || {
        let mut buf = BytesMut::from(&inline[..]);
        while let Some(args) = parse_request(&mut buf, &limits).unwrap() {
            black_box(args);
        }
    });

    let replies: Vec<Frame> = (0..16)
        .map(|i| match i % 4 {
            0 => Frame::ok(),
            1 => Frame::Integer(i),
            2 => Frame::bulk("v".repeat(64)),
            _ => Frame::Null,
        })
        .collect();
    let mut out = BytesMut::with_capacity(4096);
    for version in [RespVersion::Resp2, RespVersion::Resp3] {
        bench(&format!("encode: 16 replies ({version:?})"), budget, || {
            out.clear();
            for reply in &replies {
                reply.encode(version, &mut out);
            }
            black_box(&out);
        });
    }
    let doubles: Vec<Frame> = (0..16).map(|i| Frame::Double(f64::from(i) / 7.0)).collect();
    bench("encode: 16 doubles (Resp3)", budget, || {
        out.clear();
        for reply in &doubles {
            reply.encode(RespVersion::Resp3, &mut out);
        }
        black_box(&out);
    });
}
