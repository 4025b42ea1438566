//! Huge declared lengths with few bytes buffered must not allocate: a client declaring
//! `*1048576` or `$536870912` and sending nothing more must cost the server nothing. And the
//! stateful `RequestParser` allocates what `parse_request` does for an ordinary request.
//! A counting global allocator measures it (this file is its own test binary). It counts
//! only the allocations of the thread that is measuring: the test harness's other threads
//! (output capture, timers) may allocate at any moment and must not be charged to the parser.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ringkv_protocol::{encode_request, parse_request, BytesMut, Frame, Limits, RequestParser};

struct Counting;

thread_local! {
    // Const-initialised cells of `Copy` types need no allocation and no destructor, so
    // touching them from inside the allocator cannot recurse into it.
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATED_BYTES: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if MEASURING.with(Cell::get) {
            ALLOCATED_BYTES.with(|n| n.set(n.get() + layout.size()));
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Bytes allocated by this thread while running `f`.
fn allocated_by(f: impl FnOnce()) -> usize {
    ALLOCATED_BYTES.with(|n| n.set(0));
    MEASURING.with(|m| m.set(true));
    f();
    MEASURING.with(|m| m.set(false));
    ALLOCATED_BYTES.with(Cell::get)
}

#[test]
fn huge_declared_sizes_allocate_nothing() {
    let limits = Limits::default();
    let inputs: [&[u8]; 4] = [
        b"*1048576\r\n",
        b"*1048576\r\n$536870912\r\nabc",
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$536870912\r\n",
        b"*1048576\r\n$3\r\nSET\r\n$3\r\nSET\r\n",
    ];
    let mut buffers: Vec<BytesMut> = inputs.iter().map(|input| BytesMut::from(*input)).collect();
    let bytes = allocated_by(|| {
        for buf in &mut buffers {
            assert_eq!(parse_request(buf, &limits), Ok(None));
        }
        assert_eq!(Frame::parse(b"*9223372036854775807\r\n:1\r\n"), Ok(None));
        assert_eq!(Frame::parse(b"$9223372036854775807\r\nabc"), Ok(None));
        assert_eq!(Frame::parse(b"%1000000000\r\n$1\r\na\r\n"), Ok(None));
    });
    assert_eq!(
        bytes, 0,
        "parsing incomplete requests allocated {bytes} bytes"
    );
}

#[test]
fn the_stateful_parser_allocates_for_what_arrived_not_for_what_was_declared() {
    let limits = Limits::default();
    // Nothing complete yet: the parser keeps a count and a length, no buffer.
    for input in [
        &b"*1048576\r\n"[..],
        b"*1048576\r\n$536870912\r\nabc",
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$536870912\r\n",
    ] {
        let mut parser = RequestParser::new();
        let mut buf = BytesMut::from(input);
        let bytes = allocated_by(|| assert_eq!(parser.parse(&mut buf, &limits), Ok(None)));
        // The third input has two complete arguments: they are kept, in 3 slots as `*3` says,
        // and the input becomes shared with them (`BytesMut`'s small shared header).
        let expected = if input.starts_with(b"*3") {
            3 * 32 + 64
        } else {
            0
        };
        assert!(bytes <= expected, "{input:?}: {bytes} bytes");
    }
    // Two complete arguments of a declared million: a few slots, not a million.
    let mut parser = RequestParser::new();
    let mut buf = BytesMut::from(&b"*1048576\r\n$3\r\nSET\r\n$3\r\nSET\r\n"[..]);
    let bytes = allocated_by(|| assert_eq!(parser.parse(&mut buf, &limits), Ok(None)));
    assert!(bytes <= 1024, "{bytes} bytes");
}

#[test]
fn an_ordinary_request_costs_the_stateful_parser_what_it_costs_parse_request() {
    let limits = Limits::default();
    let mut wire = BytesMut::new();
    encode_request(&["SET", "key:000000000001", &"v".repeat(100)], &mut wire);
    let whole_stateless = {
        let mut buf = wire.clone();
        allocated_by(|| assert!(parse_request(&mut buf, &limits).unwrap().is_some()))
    };
    let whole_stateful = {
        let mut parser = RequestParser::new();
        let mut buf = wire.clone();
        allocated_by(|| assert!(parser.parse(&mut buf, &limits).unwrap().is_some()))
    };
    assert!(whole_stateless > 0);
    assert_eq!(whole_stateful, whole_stateless);
    // Arriving in two reads (cut inside the value) adds no allocation either: the kept
    // arguments go in the `Vec` the whole request ends up in. (The input has room for the
    // second read, as a connection's has: growing a buffer that kept arguments still share
    // allocates a new one, which costs a second shared header when it is split.)
    let mut parser = RequestParser::new();
    let mut buf = BytesMut::with_capacity(1024);
    buf.extend_from_slice(&wire[..60]);
    let mut split = allocated_by(|| assert_eq!(parser.parse(&mut buf, &limits), Ok(None)));
    buf.extend_from_slice(&wire[60..]);
    split += allocated_by(|| assert!(parser.parse(&mut buf, &limits).unwrap().is_some()));
    assert_eq!(split, whole_stateless);
}
