//! `parse_request`: multibulk and inline requests, empty requests, every protocol error with
//! Redis' exact text, splits at every byte boundary, long pipelines.

use ringkv_protocol::{encode_request, parse_request, Bytes, BytesMut, Limits, ProtocolError};

/// Parses every complete request in `bytes`, as a connection loop would.
fn parse_all(bytes: &[u8], limits: &Limits) -> (Vec<Vec<Bytes>>, BytesMut) {
    let mut buf = BytesMut::from(bytes);
    let mut requests = Vec::new();
    while let Some(args) = parse_request(&mut buf, limits).expect("valid requests") {
        requests.push(args);
    }
    (requests, buf)
}

fn args(list: &[&[u8]]) -> Vec<Bytes> {
    list.iter().map(|arg| Bytes::copy_from_slice(arg)).collect()
}

fn first_error(bytes: &[u8], limits: &Limits) -> ProtocolError {
    let mut buf = BytesMut::from(bytes);
    loop {
        match parse_request(&mut buf, limits) {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("no error in {:?}", String::from_utf8_lossy(bytes)),
            Err(error) => return error,
        }
    }
}

#[test]
fn multibulk_request_is_split_off_and_sliced_without_copy() {
    let mut buf =
        BytesMut::from(&b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n*1\r\n$4\r\nPI"[..]);
    let whole = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let request = parse_request(&mut buf, &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!(request, args(&[b"SET", b"k", b"value"]));
    for arg in &request {
        assert!(
            whole.contains(&(arg.as_ptr() as usize)),
            "argument is a slice of the buffer"
        );
    }
    assert_eq!(
        &buf[..],
        b"*1\r\n$4\r\nPI",
        "only the first request was consumed"
    );
    assert_eq!(parse_request(&mut buf, &Limits::default()), Ok(None));
    assert_eq!(&buf[..], b"*1\r\n$4\r\nPI", "incomplete: nothing consumed");
    buf.extend_from_slice(b"NG\r\n");
    assert_eq!(
        parse_request(&mut buf, &Limits::default()),
        Ok(Some(args(&[b"PING"])))
    );
    assert!(buf.is_empty());
}

#[test]
fn binary_arguments_survive() {
    let (requests, rest) = parse_all(
        b"*2\r\n$3\r\nGET\r\n$4\r\n\r\n\0\xff\r\n",
        &Limits::default(),
    );
    assert_eq!(requests, vec![args(&[b"GET", b"\r\n\0\xff"])]);
    assert!(rest.is_empty());
}

#[test]
fn empty_bulk_argument() {
    let (requests, _) = parse_all(b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n", &Limits::default());
    assert_eq!(requests, vec![args(&[b"ECHO", b""])]);
}

#[test]
fn inline_requests() {
    let (requests, rest) = parse_all(
        b"PING\nSET k \"hello world\"\r\nGET  k\r\nECHO 'it\\'s'\n",
        &Limits::default(),
    );
    assert_eq!(
        requests,
        vec![
            args(&[b"PING"]),
            args(&[b"SET", b"k", b"hello world"]),
            args(&[b"GET", b"k"]),
            args(&[b"ECHO", b"it's"]),
        ]
    );
    assert!(rest.is_empty());
}

#[test]
fn inline_line_keeps_an_inner_cr() {
    // Only the CR right before LF belongs to the line ending.
    let (requests, _) = parse_all(b"ECHO a\rb\r\n", &Limits::default());
    assert_eq!(requests, vec![args(&[b"ECHO", b"a", b"b"])]);
}

#[test]
fn empty_requests_are_consumed_and_skipped() {
    let mut buf = BytesMut::from(&b"*0\r\n*-1\r\n\r\n \t \n\n*1\r\n$4\r\nPING\r\n*0\r\n"[..]);
    assert_eq!(
        parse_request(&mut buf, &Limits::default()),
        Ok(Some(args(&[b"PING"])))
    );
    assert_eq!(&buf[..], b"*0\r\n");
    assert_eq!(parse_request(&mut buf, &Limits::default()), Ok(None));
    assert!(buf.is_empty(), "a trailing empty request is consumed too");
}

#[test]
fn incomplete_requests_consume_nothing() {
    let limits = Limits::default();
    for partial in [
        &b"*"[..],
        b"*3",
        b"*3\r",
        b"*3\r\n",
        b"*3\r\n$",
        b"*3\r\n$3\r\nSET",
        b"*3\r\n$3\r\nSET\r",
        b"*1\r\n$3\r\nfoo\r",
        b"PING",
        b"PING\r",
        b"SET \"a b",
    ] {
        let mut buf = BytesMut::from(partial);
        assert_eq!(parse_request(&mut buf, &limits), Ok(None), "{partial:?}");
        assert_eq!(&buf[..], partial);
    }
}

#[test]
fn protocol_errors_have_redis_texts() {
    let limits = Limits {
        bulk_bytes_max: 100,
        args_max: 10,
        inline_bytes_max: 64,
    };
    let long_count = format!("*{}", "1".repeat(65));
    let long_bulk_count = format!("*1\r\n${}", "1".repeat(65));
    let long_inline = "x".repeat(65);
    let cases: Vec<(&[u8], ProtocolError, &str)> = vec![
        (
            b"*x\r\n",
            ProtocolError::InvalidMultibulkLength,
            "Protocol error: invalid multibulk length",
        ),
        (
            b"*-2\r\n",
            ProtocolError::InvalidMultibulkLength,
            "Protocol error: invalid multibulk length",
        ),
        (
            b"*+5\r\n",
            ProtocolError::InvalidMultibulkLength,
            "Protocol error: invalid multibulk length",
        ),
        (
            b"*5x\r\n",
            ProtocolError::InvalidMultibulkLength,
            "Protocol error: invalid multibulk length",
        ),
        (
            b"*05\r\n",
            ProtocolError::InvalidMultibulkLength,
            "Protocol error: invalid multibulk length",
        ),
        (
            b"* 5\r\n",
            ProtocolError::InvalidMultibulkLength,
            "Protocol error: invalid multibulk length",
        ),
        (
            b"*\r\n",
            ProtocolError::InvalidMultibulkLength,
            "Protocol error: invalid multibulk length",
        ),
        (
            b"*99999999999999999999\r\n",
            ProtocolError::InvalidMultibulkLength,
            "Protocol error: invalid multibulk length",
        ),
        (
            b"*11\r\n",
            ProtocolError::InvalidMultibulkLength,
            "Protocol error: invalid multibulk length",
        ),
        (
            b"*1\rX",
            ProtocolError::InvalidMultibulkLength,
            "Protocol error: invalid multibulk length",
        ),
        (
            b"*1\r\n$-1\r\n",
            ProtocolError::InvalidBulkLength,
            "Protocol error: invalid bulk length",
        ),
        (
            b"*1\r\n$x\r\n",
            ProtocolError::InvalidBulkLength,
            "Protocol error: invalid bulk length",
        ),
        (
            b"*1\r\n$+5\r\n",
            ProtocolError::InvalidBulkLength,
            "Protocol error: invalid bulk length",
        ),
        (
            b"*1\r\n$5x\r\n",
            ProtocolError::InvalidBulkLength,
            "Protocol error: invalid bulk length",
        ),
        (
            b"*1\r\n$\r\n",
            ProtocolError::InvalidBulkLength,
            "Protocol error: invalid bulk length",
        ),
        (
            b"*1\r\n$101\r\n",
            ProtocolError::InvalidBulkLength,
            "Protocol error: invalid bulk length",
        ),
        (
            b"*1\r\n$99999999999999999999\r\n",
            ProtocolError::InvalidBulkLength,
            "Protocol error: invalid bulk length",
        ),
        (
            b"*1\r\n$9223372036854775807\r\n",
            ProtocolError::InvalidBulkLength,
            "Protocol error: invalid bulk length",
        ),
        (
            b"*1\r\n$3\rX",
            ProtocolError::InvalidBulkLength,
            "Protocol error: invalid bulk length",
        ),
        (
            b"*1\r\n:3\r\n",
            ProtocolError::ExpectedDollar(b':'),
            "Protocol error: expected '$', got ':'",
        ),
        (
            b"*2\r\n$1\r\na\r\nfoo\r\n",
            ProtocolError::ExpectedDollar(b'f'),
            "Protocol error: expected '$', got 'f'",
        ),
        (
            b"*1\r\n\r\n",
            ProtocolError::ExpectedDollar(b'\r'),
            "Protocol error: expected '$', got ' '",
        ),
        (
            long_count.as_bytes(),
            ProtocolError::TooBigMultibulkCount,
            "Protocol error: too big mbulk count string",
        ),
        (
            long_bulk_count.as_bytes(),
            ProtocolError::TooBigBulkCount,
            "Protocol error: too big bulk count string",
        ),
        (
            long_inline.as_bytes(),
            ProtocolError::TooBigInline,
            "Protocol error: too big inline request",
        ),
        (
            b"SET k \"v\r\n",
            ProtocolError::UnbalancedQuotes,
            "Protocol error: unbalanced quotes in request",
        ),
        (
            b"SET k 'v'x\r\n",
            ProtocolError::UnbalancedQuotes,
            "Protocol error: unbalanced quotes in request",
        ),
        (
            b"*1\r\n$3\r\nfooXY",
            ProtocolError::BulkNotTerminated,
            "Protocol error: expected CRLF after bulk payload",
        ),
        (
            b"*1\r\n$3\r\nfoo\rX",
            ProtocolError::BulkNotTerminated,
            "Protocol error: expected CRLF after bulk payload",
        ),
    ];
    for (bytes, error, text) in cases {
        let found = first_error(bytes, &limits);
        assert_eq!(found, error, "{:?}", String::from_utf8_lossy(bytes));
        assert_eq!(found.to_string(), text);
    }
}

#[test]
fn lines_at_the_limit_are_accepted() {
    let limits = Limits {
        bulk_bytes_max: 100,
        args_max: 10,
        inline_bytes_max: 64,
    };
    // 63 bytes of text and the CR: allowed; one more byte is too many.
    let inline = format!("ECHO {}\r\n", "x".repeat(58));
    assert_eq!(
        parse_all(inline.as_bytes(), &limits).0,
        vec![args(&[b"ECHO", "x".repeat(58).as_bytes()])]
    );
    let inline = format!("ECHO {}\r\n", "x".repeat(59));
    assert_eq!(
        first_error(inline.as_bytes(), &limits),
        ProtocolError::TooBigInline
    );
    // A count line of 64 bytes with its type byte is read (and its number refused); at 65
    // bytes it is too big to read.
    let count = format!("*{}\r\n", "9".repeat(63));
    assert_eq!(
        first_error(count.as_bytes(), &limits),
        ProtocolError::InvalidMultibulkLength
    );
    let count = format!("*{}\r\n", "9".repeat(64));
    assert_eq!(
        first_error(count.as_bytes(), &limits),
        ProtocolError::TooBigMultibulkCount
    );
    // Exactly 64 bytes buffered, no line ending yet: still waiting.
    let mut buf = BytesMut::from("x".repeat(64).as_bytes());
    assert_eq!(parse_request(&mut buf, &limits), Ok(None));
    // At the bulk and argument limits.
    let max = vec![b'v'; 100];
    let mut request = BytesMut::new();
    encode_request(&[&max[..]; 10], &mut request);
    assert_eq!(
        parse_all(&request, &limits).0,
        vec![vec![Bytes::from(max); 10]]
    );
}

#[test]
fn a_pipeline_split_at_every_byte_boundary_gives_the_same_requests() {
    let mut pipeline = BytesMut::new();
    encode_request(&["SET", "key", "value"], &mut pipeline);
    pipeline.extend_from_slice(b"*0\r\nPING\r\n\r\nSET k \"a\\x41 b\"\n*-1\r\n");
    encode_request(&[&b"GET"[..], b"\r\n\0binary\xff"], &mut pipeline);
    encode_request(&[""], &mut pipeline);
    pipeline.extend_from_slice(b"  ECHO 'x y'  \r\n");
    let limits = Limits::default();
    let (expected, rest) = parse_all(&pipeline, &limits);
    assert_eq!(
        expected,
        vec![
            args(&[b"SET", b"key", b"value"]),
            args(&[b"PING"]),
            args(&[b"SET", b"k", b"aA b"]),
            args(&[b"GET", b"\r\n\0binary\xff"]),
            args(&[b""]),
            args(&[b"ECHO", b"x y"]),
        ]
    );
    assert!(rest.is_empty());

    // Two chunks, cut at every position.
    for cut in 0..=pipeline.len() {
        let mut buf = BytesMut::new();
        let mut requests = Vec::new();
        for chunk in [&pipeline[..cut], &pipeline[cut..]] {
            buf.extend_from_slice(chunk);
            while let Some(args) = parse_request(&mut buf, &limits).unwrap() {
                requests.push(args);
            }
        }
        assert_eq!(requests, expected, "cut at {cut}");
        assert!(buf.is_empty());
    }
    // One byte at a time.
    let mut buf = BytesMut::new();
    let mut requests = Vec::new();
    for &byte in pipeline.iter() {
        buf.extend_from_slice(&[byte]);
        while let Some(args) = parse_request(&mut buf, &limits).unwrap() {
            requests.push(args);
        }
    }
    assert_eq!(requests, expected);
}

#[test]
fn ten_thousand_pipelined_requests() {
    let mut pipeline = BytesMut::new();
    for i in 0..10_000 {
        let key = format!("key:{i}");
        if i % 3 == 0 {
            pipeline.extend_from_slice(format!("GET {key}\r\n").as_bytes());
        } else {
            encode_request(&["SET", key.as_str(), "some value"], &mut pipeline);
        }
    }
    let (requests, rest) = parse_all(&pipeline, &Limits::default());
    assert_eq!(requests.len(), 10_000);
    assert!(rest.is_empty());
    assert_eq!(requests[0], args(&[b"GET", b"key:0"]));
    assert_eq!(requests[9_998], args(&[b"SET", b"key:9998", b"some value"]));
}

#[test]
fn huge_declared_lengths_with_few_bytes_buffered_wait() {
    let limits = Limits::default();
    for bytes in [
        &b"*1048576\r\n"[..],
        b"*1048576\r\n$3\r\nSET\r\n",
        b"*1\r\n$536870912\r\n",
        b"*2\r\n$536870912\r\nabc",
        b"*1048576\r\n$536870912\r\nabc",
    ] {
        let mut buf = BytesMut::from(bytes);
        assert_eq!(parse_request(&mut buf, &limits), Ok(None));
        assert_eq!(&buf[..], bytes);
    }
    assert_eq!(
        first_error(b"*1048577\r\n", &limits),
        ProtocolError::InvalidMultibulkLength
    );
    assert_eq!(
        first_error(b"*1\r\n$536870913\r\n", &limits),
        ProtocolError::InvalidBulkLength
    );
}

/// Regression: a CR where `$` was expected made the digits slice start after its end (panic).
#[test]
fn cr_where_dollar_was_expected_is_an_error_not_a_panic() {
    for bytes in [&b"*1\r\n\r\n"[..], b"*2\r\n$1\r\na\r\n\r\nrest"] {
        assert_eq!(
            first_error(bytes, &Limits::default()),
            ProtocolError::ExpectedDollar(b'\r')
        );
    }
    // The CR alone is not enough to decide, as in Redis: the byte after it must arrive.
    let mut buf = BytesMut::from(&b"*1\r\n\r"[..]);
    assert_eq!(parse_request(&mut buf, &Limits::default()), Ok(None));
}
