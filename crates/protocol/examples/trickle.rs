//! Measures the CPU time of parsing one huge multibulk request (an `MSET`-like request of N
//! 8-byte arguments) that arrives in 1 KiB reads, the attack [`RequestParser`] exists for.
//!
//! ```text
//! cargo run --release -p ringkv-protocol --example trickle [ARGC...]   (default 10000 100000 1000000)
//! ```
//!
//! For each size it prints the CPU time in milliseconds (the thread's CPU clock, so other load
//! on a shared machine does not count; wall time where there is none) of a connection's
//! read loop using [`parse_request`], which starts the request over at every read (the parser
//! before `RequestParser` existed), and using a [`RequestParser`], which resumes; and the
//! bytes the `RequestParser` examined, against the request's size. For reference, "whole" is
//! the CPU time of parsing the request once, all of it buffered: the least any parser can do. `--stateful-only` skips
//! `parse_request` (quadratic: about a minute at a million arguments).
//!
//! [`RequestParser`]: ringkv_protocol::RequestParser
//! [`parse_request`]: ringkv_protocol::parse_request

use std::time::Instant;

use ringkv_protocol::{encode_request, parse_request, Bytes, BytesMut, Limits, RequestParser};

/// What a connection's read hands the parser at a time in this scenario.
const PIECE_BYTES: usize = 1024;

/// CPU time this thread has used, in nanoseconds (`CLOCK_THREAD_CPUTIME_ID`), so that other
/// load on a shared machine does not count.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn thread_cpu_ns() -> Option<u64> {
    #[repr(C)]
    struct Timespec {
        seconds: i64,
        nanoseconds: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, time: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut time = Timespec {
        seconds: 0,
        nanoseconds: 0,
    };
    // SAFETY: `clock_gettime` (libc, which std links) writes one `struct timespec`, whose
    // layout on 64-bit Linux is two 64-bit integers, to a valid pointer.
    let status = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut time) };
    (status == 0).then(|| time.seconds as u64 * 1_000_000_000 + time.nanoseconds as u64)
}

/// Elsewhere: no CPU clock, wall time is used.
#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn thread_cpu_ns() -> Option<u64> {
    None
}

/// Runs `f` and returns its result with the CPU milliseconds it used (wall time as a fallback).
fn cpu_ms<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let cpu = thread_cpu_ns();
    let wall = Instant::now();
    let result = f();
    let ms = match (cpu, thread_cpu_ns()) {
        (Some(before), Some(after)) => (after - before) as f64 / 1e6,
        _ => wall.elapsed().as_secs_f64() * 1e3,
    };
    (result, ms)
}

fn request(argc: usize) -> Bytes {
    let args: Vec<String> = (0..argc).map(|i| format!("k{i:07}")).collect();
    let mut wire = BytesMut::new();
    encode_request(&args, &mut wire);
    wire.freeze()
}

/// Feeds `wire` in [`PIECE_BYTES`] pieces to `parse`, as a connection's read loop would, and
/// returns the number of arguments of the one request it holds.
fn trickle(wire: &[u8], mut parse: impl FnMut(&mut BytesMut) -> Option<Vec<Bytes>>) -> usize {
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut argc = 0;
    for piece in wire.chunks(PIECE_BYTES) {
        input.extend_from_slice(piece);
        if let Some(args) = parse(&mut input) {
            argc = args.len();
        }
    }
    assert!(input.is_empty());
    argc
}

fn main() {
    let mut stateless = true;
    let mut sizes = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--stateful-only" => stateless = false,
            number => sizes.push(number.parse::<usize>().expect("ARGC is a number")),
        }
    }
    if sizes.is_empty() {
        sizes = vec![10_000, 100_000, 1_000_000];
    }
    let limits = Limits::default();
    println!(
        "{:>9} {:>11} {:>16} {:>20} {:>20} {:>16}",
        "args", "bytes", "whole (ms)", "parse_request (ms)", "RequestParser (ms)", "examined/bytes"
    );
    for argc in sizes {
        let wire = request(argc);
        let mut input = BytesMut::from(&wire[..]);
        let (parsed, whole_ms) =
            cpu_ms(|| parse_request(&mut input, &limits).unwrap().unwrap().len());
        assert_eq!(parsed, argc);
        let stateless_ms = if stateless {
            let (parsed, ms) =
                cpu_ms(|| trickle(&wire, |input| parse_request(input, &limits).unwrap()));
            assert_eq!(parsed, argc);
            format!("{ms:.3}")
        } else {
            "-".to_string()
        };
        let mut parser = RequestParser::new();
        let (parsed, stateful_ms) =
            cpu_ms(|| trickle(&wire, |input| parser.parse(input, &limits).unwrap()));
        assert_eq!(parsed, argc);
        let examined = parser.bytes_examined() as f64 / wire.len() as f64;
        println!(
            "{argc:>9} {:>11} {whole_ms:>16.3} {stateless_ms:>20} {stateful_ms:>20.3} {examined:>16.2}",
            wire.len()
        );
    }
}
