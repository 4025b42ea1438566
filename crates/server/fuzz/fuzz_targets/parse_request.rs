//! Feeds arbitrary bytes to `parse_request` the way a connection does (repeatedly, on one
//! buffer, with small limits): it must never panic, never loop, and every request it returns
//! must respect the limits.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringkv_protocol::{parse_request, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        bulk_bytes_max: 64,
        args_max: 16,
        inline_bytes_max: 128,
    };
    // Split the input in two reads to exercise incomplete frames.
    let split = data.first().map_or(0, |&b| usize::from(b)).min(data.len());
    let mut buffer = BytesMut::new();
    for chunk in [&data[..split], &data[split..]] {
        buffer.extend_from_slice(chunk);
        loop {
            let before = buffer.len();
            match parse_request(&mut buffer, &limits) {
                Ok(Some(args)) => {
                    // `args_max` bounds the `*N` count; an inline line is bounded by its length.
                    assert!(args.len() <= limits.args_max.max(limits.inline_bytes_max));
                    assert!(args.iter().all(|a| a.len() <= limits.bulk_bytes_max.max(limits.inline_bytes_max)));
                    assert!(buffer.len() < before, "a request consumes input");
                }
                Ok(None) => break,
                Err(_) => return, // the server closes the connection here
            }
        }
    }
});
