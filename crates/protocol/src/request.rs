//! Parsing client requests: RESP arrays of bulk strings, and inline command lines.
//!
//! Two passes, as in mini-redis: [`scan`] checks a whole request is buffered without
//! allocating ("incomplete" is a plain [`Scan`] value), then the request is split off the
//! buffer and its arguments are sliced out of it.
//!
//! Where this differs from Redis' `processMultibulkBuffer`/`processInlineBuffer`, on purpose:
//! - the outcome never depends on how the bytes were chunked: "too big" errors look only at
//!   the first `inline_bytes_max + 1` bytes of a line, where Redis looks at the whole buffer
//!   when no line ending has arrived yet;
//! - `*-1` and `*0` are empty requests, but other negative counts are
//!   `invalid multibulk length` (Redis skips every count `<= 0`);
//! - a CR in a count line must be followed by LF, and a bulk payload by CRLF (Redis skips two
//!   bytes without looking).

use bytes::{Buf, Bytes, BytesMut};

use crate::inline::{split_inline, InlineArg};
use crate::number::parse_i64_strict;
use crate::{Limits, ProtocolError};

/// What the first pass found at the front of the buffer.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// The request has not fully arrived.
    Incomplete,
    /// A complete multibulk request of `length` bytes with `argc` arguments (`argc` may be 0:
    /// `*0` and `*-1` are empty requests).
    Multibulk { length: usize, argc: usize },
    /// A complete inline line: `line_length` bytes of text, `length` with its line ending.
    Inline { line_length: usize, length: usize },
}

/// Where a line starting at `start` ends (the index of its CR for count lines, of its LF for
/// inline lines).
enum LineEnd {
    At(usize),
    Incomplete,
    TooLong,
}

/// Finds `terminator` in the line starting at `start`, which may hold at most `bytes_max`
/// bytes before it. Looking no further than that bounds the cost of rescanning a partial line
/// and makes the outcome independent of how the bytes arrived.
fn find_line_end(buf: &[u8], start: usize, terminator: u8, bytes_max: usize) -> LineEnd {
    let window_end = buf
        .len()
        .min(start.saturating_add(bytes_max).saturating_add(1));
    match buf[start..window_end].iter().position(|&b| b == terminator) {
        Some(offset) => LineEnd::At(start + offset),
        None if window_end == buf.len() && buf.len() - start <= bytes_max => LineEnd::Incomplete,
        None => LineEnd::TooLong,
    }
}

/// Reads the count line `<tag><digits>\r\n` at `start`: the digits and where the next line
/// starts. `too_long` is the error for a line with no CR in sight.
fn read_count_line<'a>(
    buf: &'a [u8],
    start: usize,
    limits: &Limits,
    too_long: ProtocolError,
) -> Result<Option<(&'a [u8], usize)>, ProtocolError> {
    let cr = match find_line_end(buf, start, b'\r', limits.inline_bytes_max) {
        LineEnd::At(cr) => cr,
        LineEnd::Incomplete => return Ok(None),
        LineEnd::TooLong => return Err(too_long),
    };
    if cr + 1 == buf.len() {
        // Redis waits for the byte after CR too.
        return Ok(None);
    }
    // The CR may be the type byte itself (`\r\n` where `$` was expected): no digits then.
    let digits_start = (start + 1).min(cr);
    Ok(Some((&buf[digits_start..cr], cr + 1)))
}

/// Parses the digits of a count line whose CR is followed by `buf[lf]`, which must be LF.
fn parse_count(
    buf: &[u8],
    digits: &[u8],
    lf: usize,
    invalid: ProtocolError,
) -> Result<i64, ProtocolError> {
    if buf[lf] != b'\n' {
        return Err(invalid);
    }
    parse_i64_strict(digits).ok_or(invalid)
}

/// First pass over a multibulk request (`buf[0] == b'*'`).
fn scan_multibulk(buf: &[u8], limits: &Limits) -> Result<Scan, ProtocolError> {
    // Format: *<argc>\r\n then argc times $<len>\r\n<len bytes>\r\n
    let Some((digits, lf)) = read_count_line(buf, 0, limits, ProtocolError::TooBigMultibulkCount)?
    else {
        return Ok(Scan::Incomplete);
    };
    let argc = parse_count(buf, digits, lf, ProtocolError::InvalidMultibulkLength)?;
    let mut next = lf + 1;
    if argc == -1 || argc == 0 {
        return Ok(Scan::Multibulk {
            length: next,
            argc: 0,
        });
    }
    let argc = usize::try_from(argc)
        .ok()
        .filter(|&argc| argc <= limits.args_max)
        .ok_or(ProtocolError::InvalidMultibulkLength)?;
    for _ in 0..argc {
        let Some(&tag) = buf.get(next) else {
            return Ok(Scan::Incomplete);
        };
        let Some((digits, lf)) =
            read_count_line(buf, next, limits, ProtocolError::TooBigBulkCount)?
        else {
            return Ok(Scan::Incomplete);
        };
        // Redis checks the '$' once the whole length line is there, before its number.
        if tag != b'$' {
            return Err(ProtocolError::ExpectedDollar(tag));
        }
        let length = parse_count(buf, digits, lf, ProtocolError::InvalidBulkLength)?;
        let payload_start = lf + 1;
        let length = usize::try_from(length)
            .ok()
            .filter(|&length| length <= limits.bulk_bytes_max)
            .ok_or(ProtocolError::InvalidBulkLength)?;
        let payload_end = payload_start
            .checked_add(length)
            .ok_or(ProtocolError::InvalidBulkLength)?;
        match buf.get(payload_end..payload_end.saturating_add(2)) {
            Some(b"\r\n") => next = payload_end + 2,
            Some(_) => return Err(ProtocolError::BulkNotTerminated),
            None => return Ok(Scan::Incomplete),
        }
    }
    Ok(Scan::Multibulk { length: next, argc })
}

/// First pass over an inline request (`buf[0] != b'*'`).
fn scan_inline(buf: &[u8], limits: &Limits) -> Result<Scan, ProtocolError> {
    let lf = match find_line_end(buf, 0, b'\n', limits.inline_bytes_max) {
        LineEnd::At(lf) => lf,
        LineEnd::Incomplete => return Ok(Scan::Incomplete),
        LineEnd::TooLong => return Err(ProtocolError::TooBigInline),
    };
    let line_length = if lf > 0 && buf[lf - 1] == b'\r' {
        lf - 1
    } else {
        lf
    };
    Ok(Scan::Inline {
        line_length,
        length: lf + 1,
    })
}

fn scan(buf: &[u8], limits: &Limits) -> Result<Scan, ProtocolError> {
    debug_assert!(!buf.is_empty());
    if buf[0] == b'*' {
        scan_multibulk(buf, limits)
    } else {
        scan_inline(buf, limits)
    }
}

/// Second pass: slices the arguments out of a multibulk request [`scan_multibulk`] accepted.
fn build_multibulk(request: &Bytes, argc: usize) -> Vec<Bytes> {
    // `argc` is trusted now: each argument occupied at least 6 buffered bytes ($0\r\n\r\n).
    debug_assert!(argc * 6 < request.len());
    let line_end = |start: usize| {
        start
            + request[start..]
                .iter()
                .position(|&b| b == b'\r')
                .expect("scan found this line's CR")
    };
    let mut args = Vec::with_capacity(argc);
    let mut next = line_end(0) + 2;
    for _ in 0..argc {
        let cr = line_end(next);
        let length = parse_i64_strict(&request[next + 1..cr]).expect("scan checked this length");
        let start = cr + 2;
        let end = start + usize::try_from(length).expect("scan checked this length");
        args.push(request.slice(start..end));
        next = end + 2;
    }
    debug_assert_eq!(next, request.len());
    args
}

/// Parses one client request (a RESP array of bulk strings, or an inline command line as
/// telnet/redis-cli send) from the front of `buf`. On success the consumed bytes are split off
/// `buf` (`BytesMut::split_to` + `freeze`) and the arguments are returned as `Bytes` slices of
/// them — no copy of argument bytes (inline arguments with quotes are the exception: they are
/// unescaped into new buffers).
///
/// `Ok(None)`: incomplete; the partial request stays in `buf`. Empty requests (`*0\r\n`,
/// `*-1\r\n`, blank inline lines) are consumed and skipped (the function continues with the
/// next request in the buffer), so they are gone from `buf` even when `Ok(None)` follows.
///
/// On `Err`, reply `-ERR {error}` and close the connection: the rest of `buf` is garbage.
///
/// Cost: one scan of the request's count lines per call (bulk payloads are skipped by length,
/// not scanned), so a caller looping until `Ok(None)` handles a pipeline in linear time.
pub fn parse_request(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    while !buf.is_empty() {
        match scan(buf, limits)? {
            Scan::Incomplete => return Ok(None),
            Scan::Multibulk { length, argc: 0 } => buf.advance(length),
            Scan::Multibulk { length, argc } => {
                let request = buf.split_to(length).freeze();
                return Ok(Some(build_multibulk(&request, argc)));
            }
            Scan::Inline {
                line_length,
                length,
            } => {
                // Split before consuming, so an error leaves `buf` untouched.
                let parts = split_inline(&buf[..line_length])?;
                if parts.is_empty() {
                    buf.advance(length);
                    continue;
                }
                let request = buf.split_to(length).freeze();
                let args = parts
                    .into_iter()
                    .map(|part| match part {
                        InlineArg::Slice(range) => request.slice(range),
                        InlineArg::Owned(bytes) => Bytes::from(bytes),
                    })
                    .collect();
                return Ok(Some(args));
            }
        }
    }
    Ok(None)
}

/// Appends `args` as a RESP array of bulk strings: the form clients send requests in.
pub fn encode_request<A: AsRef<[u8]>>(args: &[A], out: &mut BytesMut) {
    use bytes::BufMut;
    // Format: *<argc>\r\n then per argument $<len>\r\n<bytes>\r\n
    out.put_u8(b'*');
    crate::number::put_i64(out, args.len() as i64);
    out.put_slice(b"\r\n");
    for arg in args {
        let arg = arg.as_ref();
        out.reserve(arg.len() + 16);
        out.put_u8(b'$');
        crate::number::put_i64(out, arg.len() as i64);
        out.put_slice(b"\r\n");
        out.put_slice(arg);
        out.put_slice(b"\r\n");
    }
}
