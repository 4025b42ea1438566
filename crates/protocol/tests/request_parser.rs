//! `RequestParser`: the same requests and errors as `parse_request` on the whole input however
//! the input is chunked, complete arguments of an unfinished request taken out of the input,
//! and work linear in the request's size when it is trickled in (counted in bytes examined,
//! not timed).

use ringkv_protocol::{
    encode_request, parse_request, Bytes, BytesMut, Limits, ProtocolError, RequestParser,
};

/// Everything one connection would see: the requests, then the error that closed it.
type Outcome = (Vec<Vec<Bytes>>, Option<ProtocolError>);

/// `parse_request` over the whole input at once: the reference.
fn whole(wire: &[u8], limits: &Limits) -> Outcome {
    let mut buf = BytesMut::from(wire);
    let mut requests = Vec::new();
    loop {
        match parse_request(&mut buf, limits) {
            Ok(Some(args)) => requests.push(args),
            Ok(None) => return (requests, None),
            Err(error) => return (requests, Some(error)),
        }
    }
}

/// A `RequestParser` fed `wire` cut at `cuts` (sorted offsets), as a connection's reads would.
fn chunked(wire: &[u8], cuts: &[usize], limits: &Limits) -> Outcome {
    let mut parser = RequestParser::new();
    let mut input = BytesMut::new();
    let mut requests = Vec::new();
    let mut from = 0;
    for &to in cuts.iter().chain([&wire.len()]) {
        input.extend_from_slice(&wire[from..to]);
        from = to;
        loop {
            match parser.parse(&mut input, limits) {
                Ok(Some(args)) => requests.push(args),
                Ok(None) => break,
                Err(error) => return (requests, Some(error)),
            }
        }
    }
    (requests, None)
}

fn args(list: &[&[u8]]) -> Vec<Bytes> {
    list.iter().map(|arg| Bytes::copy_from_slice(arg)).collect()
}

fn pipeline() -> BytesMut {
    let mut pipeline = BytesMut::new();
    encode_request(&["SET", "key", "value"], &mut pipeline);
    pipeline.extend_from_slice(b"*0\r\nPING\r\n\r\nSET k \"a\\x41 b\"\n*-1\r\n");
    encode_request(&[&b"GET"[..], b"\r\n\0binary\xff"], &mut pipeline);
    encode_request(&[""], &mut pipeline);
    encode_request(&["x".repeat(300)], &mut pipeline);
    pipeline.extend_from_slice(b"  ECHO 'x y'  \r\n");
    pipeline
}

#[test]
fn a_pipeline_cut_anywhere_gives_the_requests_parse_request_finds_whole() {
    let wire = pipeline();
    let limits = Limits::default();
    let expected = whole(&wire, &limits);
    assert_eq!(expected.0.len(), 7);
    assert_eq!(expected.1, None);
    for cut in 0..=wire.len() {
        assert_eq!(chunked(&wire, &[cut], &limits), expected, "cut at {cut}");
    }
    for step in [1, 2, 3, 7, 64] {
        let cuts: Vec<usize> = (step..wire.len()).step_by(step).collect();
        assert_eq!(
            chunked(&wire, &cuts, &limits),
            expected,
            "every {step} bytes"
        );
    }
}

#[test]
fn errors_do_not_depend_on_chunking() {
    let limits = Limits {
        bulk_bytes_max: 100,
        args_max: 10,
        inline_bytes_max: 64,
    };
    let long_count = format!("*{}", "1".repeat(65));
    let long_bulk_count = format!("*1\r\n${}", "1".repeat(65));
    let long_bulk_count_later = format!("*3\r\n$1\r\na\r\n$1\r\nb\r\n${}", "1".repeat(65));
    let long_inline = "x".repeat(65);
    let cases: Vec<&[u8]> = vec![
        b"*x\r\n",
        b"*-2\r\n",
        b"*11\r\n",
        b"*1\rX",
        b"*1\r\n$-1\r\n",
        b"*1\r\n$101\r\n",
        b"*2\r\n$1\r\na\r\n$101\r\n",
        b"*1\r\n$3\rX",
        b"*1\r\n:3\r\n",
        b"*2\r\n$1\r\na\r\nfoo\r\n",
        b"*1\r\n\r\n",
        b"*2\r\n$1\r\na\r\n\r\nrest",
        long_count.as_bytes(),
        long_bulk_count.as_bytes(),
        long_bulk_count_later.as_bytes(),
        long_inline.as_bytes(),
        b"SET k \"v\r\n",
        b"*1\r\n$3\r\nfooXY",
        b"*2\r\n$3\r\nfoo\r\n$3\r\nbar\rX",
        b"PING\r\n*1\r\n$4\r\nPING\r\n*1\r\n$3\r\nfoo\rX",
    ];
    for wire in cases {
        let expected = whole(wire, &limits);
        assert!(expected.1.is_some(), "{:?}", String::from_utf8_lossy(wire));
        for cut in 0..=wire.len() {
            assert_eq!(chunked(wire, &[cut], &limits), expected, "cut at {cut}");
        }
        let every_byte: Vec<usize> = (1..wire.len()).collect();
        assert_eq!(chunked(wire, &every_byte, &limits), expected);
    }
}

#[test]
fn complete_arguments_of_an_unfinished_request_leave_the_input() {
    let limits = Limits::default();
    let mut parser = RequestParser::new();
    let mut input = BytesMut::from(&b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nva"[..]);
    let whole_range = input.as_ptr() as usize..input.as_ptr() as usize + input.len();
    assert!(parser.is_idle());
    assert_eq!(parser.parse(&mut input, &limits), Ok(None));
    // The count line, two arguments and the third's `$` line are out; its payload stays.
    assert_eq!(&input[..], b"va");
    assert_eq!(parser.pending_bytes(), 24);
    assert!(!parser.is_idle());
    input.extend_from_slice(b"lue\r\n*1\r\n$4\r\nPI");
    let request = parser.parse(&mut input, &limits).unwrap().unwrap();
    assert_eq!(request, args(&[b"SET", b"k", b"value"]));
    assert!(
        whole_range.contains(&(request[0].as_ptr() as usize)),
        "arguments are slices of the input, not copies"
    );
    assert_eq!(parser.pending_bytes(), 0);
    // The next request's count line is consumed once the request is known to be incomplete.
    assert_eq!(parser.parse(&mut input, &limits), Ok(None));
    assert_eq!(&input[..], b"PI");
    assert_eq!(parser.pending_bytes(), 8);
    input.extend_from_slice(b"NG\r\n");
    assert_eq!(
        parser.parse(&mut input, &limits),
        Ok(Some(args(&[b"PING"])))
    );
    assert!(input.is_empty());
    assert!(parser.is_idle());
}

#[test]
fn a_partial_line_stays_in_the_input() {
    let limits = Limits::default();
    let mut parser = RequestParser::new();
    for partial in [&b"*12"[..], b"*1\r", b"PING", b"PING\r", b"SET \"a b"] {
        let mut input = BytesMut::from(partial);
        assert_eq!(parser.parse(&mut input, &limits), Ok(None), "{partial:?}");
        assert_eq!(&input[..], partial);
        assert_eq!(parser.pending_bytes(), 0);
        assert!(parser.is_idle());
        // Another stream: the parser must be at a request boundary, as it is here.
        parser = RequestParser::new();
    }
}

#[test]
fn an_error_drops_the_request_in_progress() {
    let limits = Limits::default();
    let mut parser = RequestParser::new();
    let mut input = BytesMut::from(&b"*2\r\n$1\r\na\r\n"[..]);
    assert_eq!(parser.parse(&mut input, &limits), Ok(None));
    assert_eq!(parser.pending_bytes(), 11);
    input.extend_from_slice(b":1\r\n");
    assert_eq!(
        parser.parse(&mut input, &limits),
        Err(ProtocolError::ExpectedDollar(b':'))
    );
    assert!(parser.is_idle());
    assert_eq!(parser.pending_bytes(), 0);
}

#[test]
fn a_lowered_line_limit_applies_to_a_line_in_progress() {
    let mut parser = RequestParser::new();
    let mut input = BytesMut::from("x".repeat(100).as_bytes());
    assert_eq!(parser.parse(&mut input, &Limits::default()), Ok(None));
    let lowered = Limits {
        inline_bytes_max: 64,
        ..Limits::default()
    };
    input.extend_from_slice(b"y");
    assert_eq!(
        parser.parse(&mut input, &lowered),
        Err(ProtocolError::TooBigInline)
    );
}

/// An `MSET`-like request: `argc` one-byte arguments, so `$` lines (what the parser searches)
/// are most of its bytes.
fn many_small_args(argc: usize) -> BytesMut {
    let mut wire = BytesMut::new();
    encode_request(&vec!["x"; argc], &mut wire);
    wire
}

/// Feeds `wire` in `piece`-byte reads to one parser, checking on the way that every byte fed
/// is either still in the input or counted by `pending_bytes`. Returns the requests and the
/// parser.
fn trickle(wire: &[u8], piece: usize, limits: &Limits) -> (Vec<Vec<Bytes>>, RequestParser) {
    let mut parser = RequestParser::new();
    let mut input = BytesMut::new();
    let mut requests = Vec::new();
    let mut unparsed = 0;
    for chunk in wire.chunks(piece) {
        input.extend_from_slice(chunk);
        unparsed += chunk.len();
        while let Some(args) = parser.parse(&mut input, limits).unwrap() {
            unparsed = input.len();
            requests.push(args);
        }
        assert_eq!(input.len() + parser.pending_bytes(), unparsed);
    }
    (requests, parser)
}

#[test]
fn a_million_arguments_in_1_kib_reads_cost_linear_work() {
    let argc = 1_000_000;
    let wire = many_small_args(argc);
    let (requests, parser) = trickle(&wire, 1024, &Limits::default());
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].len(), argc);
    assert!(requests[0].iter().all(|arg| arg == "x"));
    // Each `$1\r` is searched once as it arrives and once when its argument is sliced, and
    // `1\r` and the payload's CRLF are checked once: 10 bytes examined per 7-byte argument.
    // Starting over at every read would examine thousands of times the request instead (see
    // the unit test in request.rs).
    let examined = parser.bytes_examined();
    assert!(
        examined <= 2 * wire.len() as u64,
        "examined {examined} bytes of a {}-byte request",
        wire.len()
    );
}

#[test]
fn lines_trickled_byte_by_byte_are_searched_once() {
    let limits = Limits::default();
    let near_limit = limits.inline_bytes_max - 8;
    let inline = format!("ECHO {}\r\n", "y".repeat(near_limit));
    let count_line = format!("*1\r\n${}\r\n", "9".repeat(near_limit));
    let mut request = BytesMut::new();
    encode_request(&["x".repeat(near_limit)], &mut request);
    for wire in [inline.as_bytes(), &request[..]] {
        let (requests, parser) = trickle(wire, 1, &limits);
        assert_eq!(requests.len(), 1);
        assert!(parser.bytes_examined() <= 3 * wire.len() as u64);
    }
    // A length line of near 64 KiB, refused once its end arrives; before that, each byte was
    // searched once.
    let mut parser = RequestParser::new();
    let mut input = BytesMut::new();
    for &byte in count_line.as_bytes() {
        input.extend_from_slice(&[byte]);
        if let Err(error) = parser.parse(&mut input, &limits) {
            assert_eq!(error, ProtocolError::InvalidBulkLength);
            assert!(parser.bytes_examined() <= 3 * count_line.len() as u64);
            return;
        }
    }
    panic!("the length line was not refused");
}

#[test]
fn a_huge_declared_count_is_not_trusted() {
    let limits = Limits::default();
    let mut parser = RequestParser::new();
    let mut input = BytesMut::from(&b"*1048576\r\n$3\r\nSET\r\n"[..]);
    assert_eq!(parser.parse(&mut input, &limits), Ok(None));
    assert!(input.is_empty());
    assert_eq!(parser.pending_bytes(), 19);
    let mut input = BytesMut::from(&b"*1048577\r\n"[..]);
    assert_eq!(
        RequestParser::new().parse(&mut input, &limits),
        Err(ProtocolError::InvalidMultibulkLength)
    );
}
