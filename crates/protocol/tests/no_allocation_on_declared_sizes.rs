//! Huge declared lengths with few bytes buffered must not allocate: a client declaring
//! `*1048576` or `$536870912` and sending nothing more must cost the server nothing.
//! A counting global allocator measures it (this file is its own test binary). It counts
//! only the allocations of the thread that is measuring: the test harness's other threads
//! (output capture, timers) may allocate at any moment and must not be charged to the parser.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ringkv_protocol::{parse_request, BytesMut, Frame, Limits};

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
