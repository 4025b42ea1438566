//! Huge declared lengths with few bytes buffered must not allocate: a client declaring
//! `*1048576` or `$536870912` and sending nothing more must cost the server nothing.
//! A counting global allocator measures it (this file is its own test binary).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use ringkv_protocol::{parse_request, BytesMut, Frame, Limits};

struct Counting;

static ALLOCATED_BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED_BYTES.fetch_add(layout.size(), Ordering::SeqCst);
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

/// Bytes allocated while running `f`. The test binary runs this one test, so nothing else
/// allocates meanwhile (nextest runs each test in its own process).
fn allocated_by(f: impl FnOnce()) -> usize {
    let before = ALLOCATED_BYTES.load(Ordering::SeqCst);
    f();
    ALLOCATED_BYTES.load(Ordering::SeqCst) - before
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
