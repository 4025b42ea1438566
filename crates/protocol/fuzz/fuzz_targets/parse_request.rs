//! Feeds arbitrary bytes, in arbitrary chunks, to `parse_request`, a `RequestParser` and
//! `Frame::parse`.
//!
//! Input: the first byte drives the chunking and the limits, the rest is the wire. Checks:
//! - nothing panics (including the debug assertions: run.sh builds with them);
//! - the requests and the error (if any) do not depend on how the wire was chunked, and a
//!   `RequestParser` resuming across reads finds what `parse_request` finds in the whole wire;
//! - a `RequestParser`'s work stays linear in the bytes fed (`bytes_examined`), and what it
//!   took out of the input is counted by `pending_bytes`;
//! - every parsed request, re-encoded as a RESP array, parses back to the same arguments, and
//!   `Frame::parse` reads that encoding as an array of the same bulk strings;
//! - a value `Frame::parse` accepts re-encodes (RESP3) to bytes that parse to a value with the
//!   same encoding, and cutting the value short gives "incomplete", never an error.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkv_protocol::{
    encode_request, parse_request, Bytes, BytesMut, Frame, Limits, ProtocolError, RequestParser,
    RespVersion,
};

/// Everything one connection would see: the requests, then the error that closed it.
type Outcome = (Vec<Vec<Bytes>>, Option<ProtocolError>);

fn run(wire: &[u8], chunk_sizes: &mut dyn Iterator<Item = usize>, limits: &Limits) -> Outcome {
    let mut buf = BytesMut::new();
    let mut requests = Vec::new();
    let mut offset = 0;
    while offset < wire.len() {
        let end = (offset + chunk_sizes.next().unwrap_or(wire.len())).min(wire.len());
        buf.extend_from_slice(&wire[offset..end]);
        offset = end;
        loop {
            match parse_request(&mut buf, limits) {
                Ok(Some(args)) => requests.push(args),
                Ok(None) => break,
                Err(error) => return (requests, Some(error)),
            }
        }
    }
    (requests, None)
}

/// [`run`] with one `RequestParser` for the whole wire, as a connection uses it.
fn run_stateful(
    wire: &[u8],
    chunk_sizes: &mut dyn Iterator<Item = usize>,
    limits: &Limits,
) -> Outcome {
    let mut parser = RequestParser::new();
    let mut buf = BytesMut::new();
    let mut requests = Vec::new();
    let mut offset = 0;
    let mut reads = 0u64;
    // Bytes fed that no returned request consumed (skipped empty requests are among them).
    let mut unparsed = 0;
    while offset < wire.len() {
        let end = (offset + chunk_sizes.next().unwrap_or(wire.len())).min(wire.len());
        buf.extend_from_slice(&wire[offset..end]);
        unparsed += end - offset;
        offset = end;
        reads += 1;
        loop {
            match parser.parse(&mut buf, limits) {
                Ok(Some(args)) => {
                    requests.push(args);
                    unparsed = buf.len();
                }
                Ok(None) => break,
                Err(error) => return (requests, Some(error)),
            }
        }
        // What the parser took out of the input is accounted for (empty requests, consumed
        // without a trace, make this an inequality).
        assert!(buf.len() + parser.pending_bytes() <= unparsed);
        assert_eq!(parser.is_idle(), parser.pending_bytes() == 0);
        // Line bytes searched at most twice, digits and CRLFs checked once more, and at most
        // one CR per read looked at again (a read that ended between CR and LF).
        assert!(parser.bytes_examined() <= 3 * offset as u64 + reads);
    }
    (requests, None)
}

fn check_request_round_trip(args: &[Bytes]) {
    assert!(
        !args.is_empty(),
        "empty requests are skipped, never returned"
    );
    let mut encoded = BytesMut::new();
    encode_request(args, &mut encoded);
    let wire_length = encoded.len();
    let reparsed = parse_request(&mut encoded, &Limits::default())
        .expect("an encoded request is valid")
        .expect("an encoded request is complete");
    assert_eq!(reparsed, args);
    assert!(encoded.is_empty());

    let mut encoded = BytesMut::new();
    encode_request(args, &mut encoded);
    let expected = Frame::Array(args.iter().cloned().map(Frame::Bulk).collect());
    assert_eq!(Frame::parse(&encoded), Ok(Some((expected, wire_length))));
}

fn check_frame(wire: &[u8], cut_seed: usize) {
    let Ok(Some((frame, consumed))) = Frame::parse(wire) else {
        return;
    };
    assert!(consumed <= wire.len());
    assert_eq!(Frame::parse(&wire[..consumed - 1]), Ok(None));
    assert_eq!(Frame::parse(&wire[..cut_seed % consumed]), Ok(None));
    let mut encoded = BytesMut::new();
    frame.encode(RespVersion::Resp3, &mut encoded);
    let (again, again_consumed) = Frame::parse(&encoded)
        .expect("our encoding is valid")
        .expect("our encoding is complete");
    assert_eq!(again_consumed, encoded.len());
    let mut encoded_again = BytesMut::new();
    again.encode(RespVersion::Resp3, &mut encoded_again);
    assert_eq!(encoded, encoded_again);
    // RESP2 downgrades must be parseable too.
    let mut resp2 = BytesMut::new();
    frame.encode(RespVersion::Resp2, &mut resp2);
    assert!(matches!(Frame::parse(&resp2), Ok(Some((_, n))) if n == resp2.len()));
}

/// A tiny deterministic generator of chunk sizes in 1..=64.
fn chunk_sizes(seed: u8) -> impl Iterator<Item = usize> {
    let mut state = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    std::iter::from_fn(move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        Some((state % 64) as usize + 1)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, wire)) = data.split_first() else {
        return;
    };
    // Small limits half of the time, so the "too big" paths are reachable with small inputs.
    let limits = if control & 0x80 != 0 {
        Limits {
            bulk_bytes_max: 64,
            args_max: 8,
            inline_bytes_max: 32,
        }
    } else {
        Limits::default()
    };
    let whole = run(wire, &mut std::iter::empty(), &limits);
    let chunked = run(wire, &mut chunk_sizes(control), &limits);
    assert_eq!(whole, chunked, "the outcome must not depend on chunking");
    let byte_by_byte = run(wire, &mut std::iter::repeat(1), &limits);
    assert_eq!(whole, byte_by_byte);
    let stateful = run_stateful(wire, &mut chunk_sizes(control), &limits);
    assert_eq!(
        whole, stateful,
        "resuming across reads must not change the outcome"
    );
    let stateful_byte_by_byte = run_stateful(wire, &mut std::iter::repeat(1), &limits);
    assert_eq!(whole, stateful_byte_by_byte);
    for args in &whole.0 {
        check_request_round_trip(args);
    }
    check_frame(wire, usize::from(control));
});
