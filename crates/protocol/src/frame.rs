//! RESP values: [`Frame`], its encoding for either protocol version, and a parser for any value.
//!
//! Format (RESP2 and RESP3, every line ends in CRLF):
//!
//! ```text
//! +<text>            simple string        -<text>       error
//! :<i64>             integer              $<len> <bytes> bulk ($-1 = RESP2 null)
//! *<n> <n values>    array (*-1 = RESP2 null array)
//! RESP3 only:
//! _                  null                 ,<double>     double (inf, -inf, nan)
//! #t / #f            boolean              (<digits>     big number
//! !<len> <bytes>     blob error           =<len> <fmt>:<text>  verbatim string
//! %<n> <2n values>   map                  ~<n> <values> set
//! ><n> <values>      push                 |<n> <2n values> attribute, then the value it annotates
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use crate::number::{format_double_into, parse_i64_lenient, parse_i64_strict, put_i64};
use crate::{ProtocolError, RespVersion};

/// Deepest nesting of aggregates [`Frame::parse`] accepts. Parsing is recursive, so without a
/// bound a few kilobytes of `*1\r\n` would overflow the stack; no Redis reply nests this deep.
pub const FRAME_DEPTH_MAX: usize = 128;

/// A reply (or any RESP value).
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `+OK`: a status line. Must not contain CR or LF (encoding replaces them with spaces).
    Simple(Bytes),
    /// `-ERR msg`: the bytes after `-`, e.g. `b"ERR wrong number of arguments for 'get' command"`.
    /// Must not contain CR or LF (encoding replaces them with spaces, as Redis does).
    Error(Bytes),
    /// `:1`.
    Integer(i64),
    /// `$3\r\nfoo`: a binary-safe string.
    Bulk(Bytes),
    /// A missing value: RESP2 `$-1`, RESP3 `_`.
    Null,
    /// A missing aggregate: RESP2 `*-1`, RESP3 `_`.
    NullArray,
    /// `*n` followed by `n` values.
    Array(Vec<Frame>),
    /// RESP3 `%`; RESP2 flat array `k1 v1 k2 v2`.
    Map(Vec<(Frame, Frame)>),
    /// RESP3 `~`; RESP2 array.
    Set(Vec<Frame>),
    /// RESP3 `,1.5`; RESP2 bulk string. Text as [`format_double`](crate::format_double) writes it.
    Double(f64),
    /// RESP3 `#t` / `#f`; RESP2 `:1` / `:0`.
    Boolean(bool),
    /// RESP3 `(12345…`; RESP2 bulk string. The decimal digits, with an optional leading `-`.
    BigNumber(Bytes),
    /// RESP3 `=len\r\ntxt:text`; RESP2 bulk string of `text`.
    Verbatim {
        /// Three-byte format, e.g. `*b"txt"` or `*b"mkd"`.
        format: [u8; 3],
        /// The text itself.
        text: Bytes,
    },
    /// RESP3 `>` out-of-band message (pub/sub, invalidation); RESP2 array.
    Push(Vec<Frame>),
}

impl Frame {
    /// `+OK`.
    pub fn ok() -> Frame {
        Frame::Simple(Bytes::from_static(b"OK"))
    }

    /// A [`Frame::Simple`] status line.
    pub fn simple(text: impl Into<Bytes>) -> Frame {
        Frame::Simple(text.into())
    }

    /// A [`Frame::Error`] with `msg` as is: include the code, e.g.
    /// `Frame::error("ERR syntax error")` or `Frame::error("WRONGTYPE Operation against …")`.
    pub fn error(msg: impl Into<String>) -> Frame {
        Frame::Error(Bytes::from(msg.into()))
    }

    /// A [`Frame::Bulk`] string.
    pub fn bulk(b: impl Into<Bytes>) -> Frame {
        Frame::Bulk(b.into())
    }

    /// Appends the encoding of self for `version` to `out`.
    ///
    /// RESP2 has no null, map, set, double, boolean, big number, verbatim or push types: they
    /// are written as Redis writes them to a RESP2 client (see each variant).
    pub fn encode(&self, version: RespVersion, out: &mut BytesMut) {
        let resp3 = version == RespVersion::Resp3;
        match self {
            Frame::Simple(text) => put_line(out, b'+', text),
            Frame::Error(text) => put_line(out, b'-', text),
            Frame::Integer(value) => {
                out.put_u8(b':');
                put_i64(out, *value);
                out.put_slice(b"\r\n");
            }
            Frame::Bulk(bytes) => put_blob(out, b'$', bytes),
            Frame::Null if resp3 => out.put_slice(b"_\r\n"),
            Frame::Null => out.put_slice(b"$-1\r\n"),
            Frame::NullArray if resp3 => out.put_slice(b"_\r\n"),
            Frame::NullArray => out.put_slice(b"*-1\r\n"),
            Frame::Array(items) => put_aggregate(out, b'*', items, version),
            Frame::Set(items) => {
                put_aggregate(out, if resp3 { b'~' } else { b'*' }, items, version)
            }
            Frame::Push(items) => {
                put_aggregate(out, if resp3 { b'>' } else { b'*' }, items, version)
            }
            Frame::Map(pairs) => {
                // RESP2: a flat array of 2n values.
                let (tag, count) = if resp3 {
                    (b'%', pairs.len())
                } else {
                    (b'*', pairs.len() * 2)
                };
                put_count(out, tag, count);
                for (key, value) in pairs {
                    key.encode(version, out);
                    value.encode(version, out);
                }
            }
            Frame::Double(value) => {
                let mut text = [0u8; crate::number::DOUBLE_TEXT_BYTES_MAX];
                let length = format_double_into(*value, &mut text);
                if resp3 {
                    out.put_u8(b',');
                    out.put_slice(&text[..length]);
                    out.put_slice(b"\r\n");
                } else {
                    put_blob(out, b'$', &text[..length]);
                }
            }
            Frame::Boolean(value) if resp3 => {
                out.put_slice(if *value { b"#t\r\n" } else { b"#f\r\n" })
            }
            Frame::Boolean(value) => out.put_slice(if *value { b":1\r\n" } else { b":0\r\n" }),
            Frame::BigNumber(digits) if resp3 => put_line(out, b'(', digits),
            Frame::BigNumber(digits) => put_blob(out, b'$', digits),
            Frame::Verbatim { format, text } if resp3 => {
                // Format: =<4 + len>\r\n<fmt>:<text>\r\n
                put_count(out, b'=', text.len() + 4);
                out.put_slice(format);
                out.put_u8(b':');
                out.put_slice(text);
                out.put_slice(b"\r\n");
            }
            Frame::Verbatim { text, .. } => put_blob(out, b'$', text),
        }
    }

    /// Parses one complete value of any RESP2/RESP3 type from the front of `buf` (used by
    /// clients, tests and later replication links).
    /// `Ok(None)` = incomplete (need more bytes), `Ok(Some((frame, consumed)))` otherwise.
    ///
    /// Two passes: a check that allocates nothing finds where the value ends (so a huge
    /// declared length with few bytes buffered costs nothing), then the build. Strings are
    /// copied out of `buf`. RESP3 blob errors (`!`) become [`Frame::Error`]; attributes (`|`)
    /// are skipped and the value they annotate is returned.
    pub fn parse(buf: &[u8]) -> Result<Option<(Frame, usize)>, ProtocolError> {
        let Some(end) = check(buf, 0, 0)? else {
            return Ok(None);
        };
        let (frame, built_end) = build(buf, 0)?;
        debug_assert_eq!(
            built_end, end,
            "check and build agree on the value's extent"
        );
        Ok(Some((frame, end)))
    }
}

/// Appends `tag`, the line, CRLF. CR and LF inside the line would end it early and let the
/// rest be read as another reply, so they are replaced with spaces (Redis does the same for
/// error replies).
fn put_line(out: &mut BytesMut, tag: u8, line: &[u8]) {
    out.put_u8(tag);
    if line.iter().any(|&b| b == b'\r' || b == b'\n') {
        out.extend(
            line.iter()
                .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
    } else {
        out.put_slice(line);
    }
    out.put_slice(b"\r\n");
}

/// Appends `tag`, a count, CRLF.
fn put_count(out: &mut BytesMut, tag: u8, count: usize) {
    out.put_u8(tag);
    put_i64(
        out,
        i64::try_from(count).expect("a count held in memory fits in i64"),
    );
    out.put_slice(b"\r\n");
}

/// Format: <tag><len>\r\n<bytes>\r\n
fn put_blob(out: &mut BytesMut, tag: u8, bytes: &[u8]) {
    out.reserve(bytes.len() + 16);
    put_count(out, tag, bytes.len());
    out.put_slice(bytes);
    out.put_slice(b"\r\n");
}

fn put_aggregate(out: &mut BytesMut, tag: u8, items: &[Frame], version: RespVersion) {
    put_count(out, tag, items.len());
    for item in items {
        item.encode(version, out);
    }
}

/// The first line of a value: its type byte, the text between it and CRLF, and where the
/// next byte after the CRLF is.
struct Head<'a> {
    tag: u8,
    text: &'a [u8],
    next: usize,
}

/// Reads the line starting at `pos`. `Ok(None)` if its CRLF has not arrived.
fn read_head(buf: &[u8], pos: usize) -> Result<Option<Head<'_>>, ProtocolError> {
    let Some(&tag) = buf.get(pos) else {
        return Ok(None);
    };
    let Some(offset) = buf[pos + 1..].iter().position(|&b| b == b'\r') else {
        return Ok(None);
    };
    let cr = pos + 1 + offset;
    match buf.get(cr + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some(Head {
            tag,
            text: &buf[pos + 1..cr],
            next: cr + 2,
        })),
        Some(_) => Err(ProtocolError::Malformed("expected LF after CR")),
    }
}

/// Length of a `$`, `!` or `=` blob; `None` for the RESP2 null bulk `$-1`.
fn blob_length(tag: u8, text: &[u8]) -> Result<Option<usize>, ProtocolError> {
    match parse_i64_strict(text) {
        Some(-1) if tag == b'$' => Ok(None),
        Some(length) => usize::try_from(length)
            .map(Some)
            .map_err(|_| ProtocolError::InvalidBulkLength),
        None => Err(ProtocolError::InvalidBulkLength),
    }
}

/// Number of values in a `*`, `%`, `~`, `>` or `|` aggregate (2 per entry for maps and
/// attributes); `None` for the RESP2 null array `*-1`.
fn aggregate_values(tag: u8, text: &[u8]) -> Result<Option<usize>, ProtocolError> {
    let count = match parse_i64_strict(text) {
        Some(-1) if tag == b'*' => return Ok(None),
        Some(count) => usize::try_from(count).map_err(|_| ProtocolError::InvalidMultibulkLength)?,
        None => return Err(ProtocolError::InvalidMultibulkLength),
    };
    let per_entry = if matches!(tag, b'%' | b'|') { 2 } else { 1 };
    count
        .checked_mul(per_entry)
        .map(Some)
        .ok_or(ProtocolError::InvalidMultibulkLength)
}

/// Checks a blob's payload is buffered and CRLF-terminated; returns the payload's end.
fn blob_end(buf: &[u8], start: usize, length: usize) -> Result<Option<usize>, ProtocolError> {
    let Some(end) = start.checked_add(length) else {
        return Err(ProtocolError::InvalidBulkLength);
    };
    match buf.get(end..end.saturating_add(2)) {
        Some(b"\r\n") => Ok(Some(end)),
        Some(_) => Err(ProtocolError::BulkNotTerminated),
        None => Ok(None),
    }
}

fn parse_boolean(text: &[u8]) -> Result<bool, ProtocolError> {
    match text {
        b"t" => Ok(true),
        b"f" => Ok(false),
        _ => Err(ProtocolError::Malformed("invalid boolean")),
    }
}

fn parse_double(text: &[u8]) -> Result<f64, ProtocolError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|text| text.parse::<f64>().ok())
        .ok_or(ProtocolError::Malformed("invalid double"))
}

fn check_big_number(text: &[u8]) -> Result<(), ProtocolError> {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(ProtocolError::Malformed("invalid big number"));
    }
    Ok(())
}

/// First pass: where the value starting at `pos` ends, or `None` if it is not all buffered.
/// Validates everything [`build`] relies on, and allocates nothing.
fn check(buf: &[u8], pos: usize, depth: usize) -> Result<Option<usize>, ProtocolError> {
    if depth > FRAME_DEPTH_MAX {
        return Err(ProtocolError::Malformed("nesting too deep"));
    }
    let Some(head) = read_head(buf, pos)? else {
        return Ok(None);
    };
    match head.tag {
        b'+' | b'-' => {}
        b':' => {
            parse_i64_lenient(head.text).ok_or(ProtocolError::Malformed("invalid integer"))?;
        }
        b',' => {
            parse_double(head.text)?;
        }
        b'#' => {
            parse_boolean(head.text)?;
        }
        b'(' => check_big_number(head.text)?,
        b'_' if head.text.is_empty() => {}
        b'_' => return Err(ProtocolError::Malformed("invalid null")),
        b'$' | b'!' | b'=' => {
            let Some(length) = blob_length(head.tag, head.text)? else {
                return Ok(Some(head.next));
            };
            let Some(end) = blob_end(buf, head.next, length)? else {
                return Ok(None);
            };
            if head.tag == b'=' && (length < 4 || buf[head.next + 3] != b':') {
                return Err(ProtocolError::Malformed("invalid verbatim string"));
            }
            return Ok(Some(end + 2));
        }
        b'*' | b'%' | b'~' | b'>' | b'|' => {
            let Some(values) = aggregate_values(head.tag, head.text)? else {
                return Ok(Some(head.next));
            };
            let mut next = head.next;
            // Terminates: every value occupies at least 3 bytes, so a huge count with few
            // bytes buffered soon reports `None`.
            for _ in 0..values {
                match check(buf, next, depth + 1)? {
                    Some(end) => next = end,
                    None => return Ok(None),
                }
            }
            if head.tag == b'|' {
                // An attribute annotates the value after it; together they are one value.
                return check(buf, next, depth + 1);
            }
            return Ok(Some(next));
        }
        _ => return Err(ProtocolError::Malformed("invalid type byte")),
    }
    Ok(Some(head.next))
}

/// Second pass: builds the value starting at `pos`, which [`check`] accepted.
fn build(buf: &[u8], pos: usize) -> Result<(Frame, usize), ProtocolError> {
    let head = read_head(buf, pos)?.ok_or(ProtocolError::Malformed("value vanished"))?;
    let copy = |bytes: &[u8]| Bytes::copy_from_slice(bytes);
    let frame = match head.tag {
        b'+' => Frame::Simple(copy(head.text)),
        b'-' => Frame::Error(copy(head.text)),
        b':' => Frame::Integer(
            parse_i64_lenient(head.text).ok_or(ProtocolError::Malformed("invalid integer"))?,
        ),
        b',' => Frame::Double(parse_double(head.text)?),
        b'#' => Frame::Boolean(parse_boolean(head.text)?),
        b'(' => Frame::BigNumber(copy(head.text)),
        b'_' => Frame::Null,
        b'$' | b'!' | b'=' => {
            let Some(length) = blob_length(head.tag, head.text)? else {
                return Ok((Frame::Null, head.next));
            };
            let payload = &buf[head.next..head.next + length];
            let frame = match head.tag {
                b'$' => Frame::Bulk(copy(payload)),
                b'!' => Frame::Error(copy(payload)),
                _ => Frame::Verbatim {
                    format: [payload[0], payload[1], payload[2]],
                    text: copy(&payload[4..]),
                },
            };
            return Ok((frame, head.next + length + 2));
        }
        b'*' | b'%' | b'~' | b'>' | b'|' => {
            let Some(values) = aggregate_values(head.tag, head.text)? else {
                return Ok((Frame::NullArray, head.next));
            };
            return build_aggregate(buf, head.tag, values, head.next);
        }
        _ => return Err(ProtocolError::Malformed("invalid type byte")),
    };
    Ok((frame, head.next))
}

fn build_aggregate(
    buf: &[u8],
    tag: u8,
    values: usize,
    mut next: usize,
) -> Result<(Frame, usize), ProtocolError> {
    if tag == b'|' {
        for _ in 0..values {
            next = check(buf, next, 0)?.ok_or(ProtocolError::Malformed("value vanished"))?;
        }
        return build(buf, next);
    }
    // `check` saw every value buffered (3 bytes at least each), so this is bounded by the
    // input size, not by the untrusted count alone.
    let mut items = Vec::with_capacity(values.min(buf.len() / 3));
    for _ in 0..values {
        let (item, end) = build(buf, next)?;
        items.push(item);
        next = end;
    }
    let frame = match tag {
        b'*' => Frame::Array(items),
        b'~' => Frame::Set(items),
        b'>' => Frame::Push(items),
        _ => {
            let mut pairs = Vec::with_capacity(items.len() / 2);
            let mut items = items.into_iter();
            while let (Some(key), Some(value)) = (items.next(), items.next()) {
                pairs.push((key, value));
            }
            Frame::Map(pairs)
        }
    };
    Ok((frame, next))
}
