//! Parsing client requests: RESP arrays of bulk strings, and inline command lines.
//!
//! A connection owns a [`RequestParser`], which keeps its progress through a request that has
//! not fully arrived, so the work over a request is linear in its size however it is chunked
//! (see its documentation for why, and for what it keeps). [`parse_request`] is the same parser
//! without memory between calls, for buffers that hold whole requests.
//!
//! Each call makes two passes over the bytes it has not seen, as in mini-redis: the first
//! ([`walk_args`]) walks the request without allocating — length lines are searched, payloads
//! skipped by length — to find how far it is complete; then the complete part is split off
//! the buffer and its arguments are sliced out of it ([`slice_args`]). A request that arrives
//! whole thus costs what it always did: one split, one `Vec` of exactly `argc` slices.
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

/// Argument slots reserved from a declared count before the arguments arrived. The count is
/// untrusted until its arguments are buffered (`*1048576` costs a client 10 bytes), so beyond
/// this the `Vec` grows with what actually arrives; ordinary requests fit, and get exactly
/// `argc` slots in one allocation as when they arrive whole.
const ARGS_RESERVED_UNTRUSTED_MAX: usize = 16;

/// Incremental parser of client requests: one per connection, fed the connection's input
/// buffer after every read ([`parse`](Self::parse)).
///
/// Why it keeps state: a parser that starts a request over whenever more bytes arrive does
/// quadratic work on a request trickled in small reads. A client sending a million arguments
/// (14 MB) in 1 KiB reads makes it walk on average 7 MB of request at each of 14 000 reads:
/// a minute of CPU for one request. This parser remembers the arguments already complete, the
/// length of the bulk in progress (its `$` line read), and how much of the line at the front
/// of the input it already searched, so each byte is looked at a bounded number of times
/// ([`bytes_examined`](Self::bytes_examined) counts them).
///
/// Complete arguments of an unfinished request are split off the input as soon as they are
/// seen (frozen, then sliced: still no copy of argument bytes), rather than remembered as
/// offsets into it. With offsets the input would have to hold the whole request contiguously,
/// and each growth of a multi-megabyte buffer would copy everything received so far; split
/// off, the input holds only the argument in progress, and the bytes already received live in
/// the arguments that will be returned anyway. Only a bulk payload stays whole in the input
/// until its CRLF arrives, since an argument is one slice.
/// [`pending_bytes`](Self::pending_bytes) says how many bytes of the request the parser holds,
/// for limits on a client's buffered request.
///
/// A declared count is not trusted: `*1048576` costs a client ten bytes, so the parser
/// reserves room for the arguments that actually arrived (and for at most 16 more), never for
/// the count.
///
/// Between calls the caller may only append to the input (or replace it while it is empty):
/// the parser has already taken the beginning of the request in progress out of it, and
/// remembers how far it searched the line at its front.
#[derive(Debug, Default)]
pub struct RequestParser {
    state: State,
    /// Complete arguments of the multibulk request in progress, split off the input.
    args: Vec<Bytes>,
    /// Wire bytes of the request in progress already taken out of the input.
    pending_bytes: usize,
    /// Bytes examined since the parser was created: see [`RequestParser::bytes_examined`].
    examined: u64,
}

/// Where a [`RequestParser`] stands in the input stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between requests: nothing of the next one was consumed. The first `scanned` bytes of
    /// the input (the start of a `*` count line or of an inline line) hold no line ending.
    Idle { scanned: usize },
    /// Inside a multibulk request of `argc` arguments whose count line and first
    /// `argc - left` arguments were consumed (those are in [`RequestParser::args`]); the input
    /// starts at `cursor`.
    Args {
        argc: usize,
        left: usize,
        cursor: Cursor,
    },
}

impl Default for State {
    fn default() -> State {
        State::Idle { scanned: 0 }
    }
}

/// Where the first pass stands among the arguments of a multibulk request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cursor {
    /// At the `$` line of the next argument, whose first `scanned` bytes hold no CR.
    Header { scanned: usize },
    /// At the payload of an argument of `length` bytes, its `$` line already read.
    Payload { length: usize },
}

/// How far [`walk_args`] got through the arguments of a multibulk request.
#[derive(Debug)]
struct Walk {
    /// Arguments it completed.
    completed: usize,
    /// Offset just after the last of them (where it started if none).
    args_end: usize,
    /// `None` if every argument is complete, else where it stopped: the cursor and its offset
    /// (after `args_end` when a `$` line was read but not its payload).
    stopped: Option<(Cursor, usize)>,
}

/// Where a line starting at `start` ends (the index of its CR for count lines, of its LF for
/// inline lines).
enum LineEnd {
    At(usize),
    /// Not yet arrived: the line's first `scanned` bytes hold no terminator.
    Incomplete {
        scanned: usize,
    },
    TooLong,
}

/// Finds `terminator` in the line starting at `start`, which may hold at most `bytes_max`
/// bytes before it, searching only past its first `scanned` bytes (already searched by an
/// earlier call). Looking no further than `bytes_max` makes the outcome independent of how the
/// bytes arrived; starting past `scanned` means a line trickled in byte by byte is searched
/// once in all, not once per read.
fn find_line_end(
    buf: &[u8],
    start: usize,
    scanned: usize,
    terminator: u8,
    bytes_max: usize,
    examined: &mut u64,
) -> LineEnd {
    let window_end = buf
        .len()
        .min(start.saturating_add(bytes_max).saturating_add(1));
    // `scanned` may exceed the window if the limit was lowered since: then nothing is left.
    let from = start.saturating_add(scanned).min(window_end);
    match buf[from..window_end].iter().position(|&b| b == terminator) {
        Some(offset) => {
            *examined += offset as u64 + 1;
            LineEnd::At(from + offset)
        }
        None => {
            *examined += (window_end - from) as u64;
            if window_end == buf.len() && buf.len() - start <= bytes_max {
                LineEnd::Incomplete {
                    scanned: window_end - start,
                }
            } else {
                LineEnd::TooLong
            }
        }
    }
}

/// A count line `<tag><digits>\r` read by [`read_count_line`].
enum CountLine<'a> {
    /// Its digits, and the index of the byte after its CR (which must be LF).
    Read { digits: &'a [u8], lf: usize },
    /// Not yet arrived: its first `scanned` bytes hold no CR.
    Incomplete { scanned: usize },
}

/// Reads the count line `<tag><digits>\r\n` at `start`, of which `scanned` bytes were searched
/// before. `too_long` is the error for a line with no CR in sight.
fn read_count_line<'a>(
    buf: &'a [u8],
    start: usize,
    scanned: usize,
    limits: &Limits,
    too_long: ProtocolError,
    examined: &mut u64,
) -> Result<CountLine<'a>, ProtocolError> {
    let cr = match find_line_end(
        buf,
        start,
        scanned,
        b'\r',
        limits.inline_bytes_max,
        examined,
    ) {
        LineEnd::At(cr) => cr,
        LineEnd::Incomplete { scanned } => return Ok(CountLine::Incomplete { scanned }),
        LineEnd::TooLong => return Err(too_long),
    };
    if cr + 1 == buf.len() {
        // Redis waits for the byte after CR too. Next time the search starts at this CR.
        return Ok(CountLine::Incomplete {
            scanned: cr - start,
        });
    }
    // The CR may be the type byte itself (`\r\n` where `$` was expected): no digits then.
    let digits_start = (start + 1).min(cr);
    *examined += (cr + 1 - digits_start) as u64;
    Ok(CountLine::Read {
        digits: &buf[digits_start..cr],
        lf: cr + 1,
    })
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

/// First pass over the arguments of a multibulk request: walks at most `left` of them from
/// `cursor` at `buf[start..]` without allocating, until they are all complete, an error, or
/// the end of what has arrived.
fn walk_args(
    buf: &[u8],
    start: usize,
    left: usize,
    mut cursor: Cursor,
    limits: &Limits,
    examined: &mut u64,
) -> Result<Walk, ProtocolError> {
    // Format: per argument $<len>\r\n<len bytes>\r\n
    let mut walk = Walk {
        completed: 0,
        args_end: start,
        stopped: None,
    };
    let mut next = start;
    while walk.completed < left {
        match cursor {
            Cursor::Header { scanned } => {
                let Some(&tag) = buf.get(next) else {
                    walk.stopped = Some((cursor, next));
                    return Ok(walk);
                };
                let (digits, lf) = match read_count_line(
                    buf,
                    next,
                    scanned,
                    limits,
                    ProtocolError::TooBigBulkCount,
                    examined,
                )? {
                    CountLine::Read { digits, lf } => (digits, lf),
                    CountLine::Incomplete { scanned } => {
                        walk.stopped = Some((Cursor::Header { scanned }, next));
                        return Ok(walk);
                    }
                };
                // Redis checks the '$' once the whole length line is there, before its number.
                if tag != b'$' {
                    return Err(ProtocolError::ExpectedDollar(tag));
                }
                let length = parse_count(buf, digits, lf, ProtocolError::InvalidBulkLength)?;
                let length = usize::try_from(length)
                    .ok()
                    .filter(|&length| length <= limits.bulk_bytes_max)
                    .ok_or(ProtocolError::InvalidBulkLength)?;
                next = lf + 1;
                cursor = Cursor::Payload { length };
            }
            Cursor::Payload { length } => {
                let payload_end = next
                    .checked_add(length)
                    .ok_or(ProtocolError::InvalidBulkLength)?;
                match buf.get(payload_end..payload_end.saturating_add(2)) {
                    Some(b"\r\n") => {
                        *examined += 2;
                        next = payload_end + 2;
                        walk.completed += 1;
                        walk.args_end = next;
                        cursor = Cursor::Header { scanned: 0 };
                    }
                    Some(_) => return Err(ProtocolError::BulkNotTerminated),
                    None => {
                        walk.stopped = Some((cursor, next));
                        return Ok(walk);
                    }
                }
            }
        }
    }
    Ok(walk)
}

/// Second pass: appends `count` arguments sliced out of `chunk`, the first at `start` with the
/// first pass's `cursor` there (at its payload if its `$` line was consumed by an earlier
/// call). The first pass validated all of it, and found that exactly `chunk.len()` bytes hold
/// them.
fn slice_args(
    chunk: &Bytes,
    start: usize,
    mut cursor: Cursor,
    count: usize,
    args: &mut Vec<Bytes>,
    examined: &mut u64,
) {
    let mut next = start;
    for _ in 0..count {
        let length = match cursor {
            Cursor::Payload { length } => length,
            Cursor::Header { .. } => {
                let cr = next
                    + chunk[next..]
                        .iter()
                        .position(|&b| b == b'\r')
                        .expect("the first pass found this line's CR");
                *examined += (cr + 1 - next) as u64;
                let length = parse_i64_strict(&chunk[next + 1..cr])
                    .expect("the first pass checked this length");
                next = cr + 2;
                usize::try_from(length).expect("the first pass checked this length")
            }
        };
        args.push(chunk.slice(next..next + length));
        next += length + 2;
        cursor = Cursor::Header { scanned: 0 };
    }
    debug_assert_eq!(next, chunk.len());
}

/// What [`RequestParser::parse_inline`] found at the front of the input.
enum Inline {
    Request(Vec<Bytes>),
    /// A blank line, consumed.
    Empty,
    Incomplete,
}

impl RequestParser {
    /// A parser at the start of a stream.
    pub fn new() -> RequestParser {
        RequestParser::default()
    }

    /// Parses one client request (a RESP array of bulk strings, or an inline command line as
    /// telnet/redis-cli send) from the front of `input`, resuming where the previous call on
    /// this stream stopped. On success its bytes are consumed (split off `input` with
    /// `BytesMut::split_to` + `freeze`) and the arguments are returned as `Bytes` slices of
    /// them — no copy of argument bytes (inline arguments with quotes are the exception: they
    /// are unescaped into new buffers).
    ///
    /// `Ok(None)`: incomplete; call again once more bytes were appended to `input`. The
    /// parser may have taken the beginning of the request out of `input` (its complete
    /// arguments, its count line, the `$` line of the argument in progress:
    /// [`pending_bytes`](Self::pending_bytes) says how much), so only a bulk payload in
    /// progress or a line in progress stays there. Empty requests (`*0\r\n`, `*-1\r\n`, blank
    /// inline lines) are consumed and skipped (the parser continues with the next request in
    /// the buffer), so they are gone from `input` even when `Ok(None)` follows.
    ///
    /// On `Err`, reply `-ERR {error}` and close the connection: the rest of `input` is
    /// garbage, and so is the parser (its progress is dropped). The error, like the requests,
    /// does not depend on how the stream was cut into reads.
    ///
    /// Limits are read at every call (a server may change them between reads); a count or a
    /// length that was accepted stays accepted for the rest of its request.
    ///
    /// Cost: linear in the bytes that arrived, over all calls. Each byte of a count or length
    /// line is searched once when it first arrives and once more when its request part is
    /// sliced; bulk payloads are skipped by length, not scanned.
    pub fn parse(
        &mut self,
        input: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let result = self.parse_or_wait(input, limits, true);
        if result.is_err() {
            self.forget();
        }
        result
    }

    /// Wire bytes of the request in progress that the parser has already taken out of the
    /// input: they are still held (as the arguments it has collected), just not in the input
    /// buffer. A limit on a client's buffered request (Redis' `client-query-buffer-limit`)
    /// should count `input.len() + parser.pending_bytes()`. Zero between requests.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Whether the parser is between requests, holding nothing: the input (if any is left)
    /// starts a new request, so it may be handed to other code (for example another protocol
    /// on the same connection) without losing anything.
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Idle { .. }) && self.pending_bytes == 0
    }

    /// Bytes of input this parser has examined since it was created: line bytes searched for
    /// their end, digits parsed, CRLFs checked after payloads, inline lines split — counting
    /// both passes. Bulk payloads are skipped by length and not counted. A deterministic
    /// measure of the parser's work, so tests can check it stays linear in the input however
    /// the input is chunked (`bytes_examined() <= c * bytes fed`).
    pub fn bytes_examined(&self) -> u64 {
        self.examined
    }

    /// Drops the request in progress: the parser is back at the start of a stream.
    fn forget(&mut self) {
        self.state = State::default();
        self.args = Vec::new();
        self.pending_bytes = 0;
    }

    /// [`parse`](Self::parse), or, with `keep_progress` false, the stateless variant behind
    /// [`parse_request`]: an incomplete request is left whole in `input` and forgotten.
    fn parse_or_wait(
        &mut self,
        input: &mut BytesMut,
        limits: &Limits,
        keep_progress: bool,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        loop {
            let (argc, left, cursor, start) = match self.state {
                State::Args { argc, left, cursor } => (argc, left, cursor, 0),
                State::Idle { scanned } => {
                    let Some(&first) = input.first() else {
                        return Ok(None);
                    };
                    if first != b'*' {
                        match self.parse_inline(input, scanned, limits)? {
                            Inline::Request(args) => return Ok(Some(args)),
                            Inline::Empty => continue,
                            Inline::Incomplete => return Ok(None),
                        }
                    }
                    // Format: *<argc>\r\n then argc times $<len>\r\n<len bytes>\r\n
                    let (digits, lf) = match read_count_line(
                        input,
                        0,
                        scanned,
                        limits,
                        ProtocolError::TooBigMultibulkCount,
                        &mut self.examined,
                    )? {
                        CountLine::Read { digits, lf } => (digits, lf),
                        CountLine::Incomplete { scanned } => {
                            self.state = State::Idle { scanned };
                            return Ok(None);
                        }
                    };
                    let argc =
                        parse_count(input, digits, lf, ProtocolError::InvalidMultibulkLength)?;
                    if argc == -1 || argc == 0 {
                        input.advance(lf + 1);
                        self.state = State::Idle { scanned: 0 };
                        continue;
                    }
                    let argc = usize::try_from(argc)
                        .ok()
                        .filter(|&argc| argc <= limits.args_max)
                        .ok_or(ProtocolError::InvalidMultibulkLength)?;
                    (argc, argc, Cursor::Header { scanned: 0 }, lf + 1)
                }
            };
            let walk = walk_args(input, start, left, cursor, limits, &mut self.examined)?;
            let Some((stopped, stopped_at)) = walk.stopped else {
                return Ok(Some(self.finish(input, argc, start, cursor, walk)));
            };
            if !keep_progress {
                self.state = State::default();
                return Ok(None);
            }
            self.keep(input, argc, left, start, cursor, &walk);
            // The `$` line of the argument in progress, if it was read.
            input.advance(stopped_at - walk.args_end);
            self.pending_bytes += stopped_at;
            self.state = State::Args {
                argc,
                left: left - walk.completed,
                cursor: stopped,
            };
            return Ok(None);
        }
    }

    /// The request is complete at `walk.args_end`: split it off and slice its arguments.
    fn finish(
        &mut self,
        input: &mut BytesMut,
        argc: usize,
        start: usize,
        cursor: Cursor,
        walk: Walk,
    ) -> Vec<Bytes> {
        let chunk = input.split_to(walk.args_end).freeze();
        // `argc` is trusted now: each argument it counts occupied at least 6 buffered bytes
        // ($0\r\n\r\n), in this chunk or in the arguments kept before. A request that arrived
        // whole gets exactly `argc` slots, as it always did.
        let mut args = std::mem::take(&mut self.args);
        args.reserve_exact(walk.completed);
        debug_assert_eq!(args.len() + walk.completed, argc);
        slice_args(
            &chunk,
            start,
            cursor,
            walk.completed,
            &mut args,
            &mut self.examined,
        );
        self.state = State::default();
        self.pending_bytes = 0;
        args
    }

    /// The request is incomplete: take its complete arguments (and its count line) out of the
    /// input, so the next call resumes after them and the input need not hold them.
    fn keep(
        &mut self,
        input: &mut BytesMut,
        argc: usize,
        left: usize,
        start: usize,
        cursor: Cursor,
        walk: &Walk,
    ) {
        if walk.completed == 0 {
            // Only the count line, if this call read it.
            input.advance(walk.args_end);
            return;
        }
        let chunk = input.split_to(walk.args_end).freeze();
        if self.args.capacity() == 0 {
            let received = argc - left + walk.completed;
            self.args = Vec::with_capacity(argc.min(received.max(ARGS_RESERVED_UNTRUSTED_MAX)));
        } else {
            // Amortised growth: proportional to the arguments received, never to `argc`.
            self.args.reserve(walk.completed);
        }
        slice_args(
            &chunk,
            start,
            cursor,
            walk.completed,
            &mut self.args,
            &mut self.examined,
        );
    }

    /// Parses the inline line at the front of `input` (whose first `scanned` bytes hold no LF).
    fn parse_inline(
        &mut self,
        input: &mut BytesMut,
        scanned: usize,
        limits: &Limits,
    ) -> Result<Inline, ProtocolError> {
        // Format: <arguments separated by spaces, quoted or not>\n, optionally \r\n
        let lf = match find_line_end(
            input,
            0,
            scanned,
            b'\n',
            limits.inline_bytes_max,
            &mut self.examined,
        ) {
            LineEnd::At(lf) => lf,
            LineEnd::Incomplete { scanned } => {
                self.state = State::Idle { scanned };
                return Ok(Inline::Incomplete);
            }
            LineEnd::TooLong => return Err(ProtocolError::TooBigInline),
        };
        self.state = State::Idle { scanned: 0 };
        let line_length = if lf > 0 && input[lf - 1] == b'\r' {
            lf - 1
        } else {
            lf
        };
        self.examined += line_length as u64;
        // Split before consuming, so an error leaves `input` untouched.
        let parts = split_inline(&input[..line_length])?;
        if parts.is_empty() {
            input.advance(lf + 1);
            return Ok(Inline::Empty);
        }
        let request = input.split_to(lf + 1).freeze();
        let args = parts
            .into_iter()
            .map(|part| match part {
                InlineArg::Slice(range) => request.slice(range),
                InlineArg::Owned(bytes) => Bytes::from(bytes),
            })
            .collect();
        Ok(Inline::Request(args))
    }
}

/// Parses one client request from the front of `buf` without remembering anything between
/// calls: the same requests, errors and consumption as [`RequestParser::parse`] on a complete
/// request, but `Ok(None)` leaves the partial request whole in `buf`, and the next call starts
/// it over. So a request trickled in many reads costs quadratic time; use a
/// [`RequestParser`] for client connections. This suits callers that parse a buffer they hold
/// in full, or a stream whose limits keep requests tiny (a replica's `REPLCONF ACK`s).
///
/// `Ok(None)`: incomplete; the partial request stays in `buf`. Empty requests (`*0\r\n`,
/// `*-1\r\n`, blank inline lines) are consumed and skipped, so they are gone from `buf` even
/// when `Ok(None)` follows. On `Err`, reply `-ERR {error}` and close the connection.
pub fn parse_request(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    RequestParser::new().parse_or_wait(buf, limits, false)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes examined to parse `wire` fed in `piece`-byte reads, with or without keeping
    /// progress between reads.
    fn examined_trickling(wire: &[u8], piece: usize, keep_progress: bool) -> u64 {
        let limits = Limits::default();
        let mut examined = 0;
        let mut parser = RequestParser::new();
        let mut input = BytesMut::new();
        let mut requests = 0;
        for chunk in wire.chunks(piece) {
            input.extend_from_slice(chunk);
            if !keep_progress {
                parser = RequestParser::new();
            }
            let before = parser.examined;
            while parser
                .parse_or_wait(&mut input, &limits, keep_progress)
                .unwrap()
                .is_some()
            {
                requests += 1;
            }
            examined += parser.examined - before;
        }
        assert_eq!(requests, 1);
        examined
    }

    /// The measure `bytes_examined` tests rely on does see the quadratic cost of starting
    /// over: 10 000 arguments in 1 KiB reads.
    #[test]
    fn starting_over_at_every_read_is_quadratic_and_resuming_is_not() {
        let mut wire = BytesMut::new();
        encode_request(&vec!["x"; 10_000], &mut wire);
        let size = wire.len() as u64;
        let stateless = examined_trickling(&wire, 1024, false);
        let stateful = examined_trickling(&wire, 1024, true);
        assert!(stateful <= 2 * size, "{stateful} for {size} bytes");
        assert!(stateless >= 20 * size, "{stateless} for {size} bytes");
    }
}
