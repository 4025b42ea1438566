//! Every frame type encoded in both protocol versions, with exact bytes, and parsed back.

use ringkv_protocol::{Bytes, BytesMut, Frame, ProtocolError, RespVersion};

fn encode(frame: &Frame, version: RespVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    frame.encode(version, &mut out);
    out.to_vec()
}

fn parse_all(bytes: &[u8]) -> Frame {
    let (frame, consumed) = Frame::parse(bytes).expect("valid").expect("complete");
    assert_eq!(consumed, bytes.len(), "parse consumed the whole encoding");
    frame
}

fn bulk(text: &str) -> Frame {
    Frame::bulk(Bytes::copy_from_slice(text.as_bytes()))
}

/// One row: a frame, its RESP2 bytes and what they parse back to, its RESP3 bytes and what
/// they parse back to.
struct Case {
    frame: Frame,
    resp2: &'static [u8],
    resp2_parsed: Frame,
    resp3: &'static [u8],
    resp3_parsed: Frame,
}

fn same(frame: Frame, resp2: &'static [u8], resp3: &'static [u8]) -> Case {
    Case {
        resp2_parsed: frame.clone(),
        resp3_parsed: frame.clone(),
        frame,
        resp2,
        resp3,
    }
}

fn cases() -> Vec<Case> {
    vec![
        same(Frame::ok(), b"+OK\r\n", b"+OK\r\n"),
        same(
            Frame::error("ERR wrong number of arguments for 'get' command"),
            b"-ERR wrong number of arguments for 'get' command\r\n",
            b"-ERR wrong number of arguments for 'get' command\r\n",
        ),
        same(Frame::Integer(0), b":0\r\n", b":0\r\n"),
        same(Frame::Integer(-42), b":-42\r\n", b":-42\r\n"),
        same(
            Frame::Integer(i64::MIN),
            b":-9223372036854775808\r\n",
            b":-9223372036854775808\r\n",
        ),
        same(bulk("foo"), b"$3\r\nfoo\r\n", b"$3\r\nfoo\r\n"),
        same(bulk(""), b"$0\r\n\r\n", b"$0\r\n\r\n"),
        same(
            Frame::bulk(&b"a\r\n\0b"[..]),
            b"$5\r\na\r\n\0b\r\n",
            b"$5\r\na\r\n\0b\r\n",
        ),
        same(Frame::Null, b"$-1\r\n", b"_\r\n"),
        Case {
            frame: Frame::NullArray,
            resp2: b"*-1\r\n",
            resp2_parsed: Frame::NullArray,
            resp3: b"_\r\n",
            resp3_parsed: Frame::Null,
        },
        same(
            Frame::Array(vec![Frame::Integer(1), bulk("a"), Frame::Array(vec![])]),
            b"*3\r\n:1\r\n$1\r\na\r\n*0\r\n",
            b"*3\r\n:1\r\n$1\r\na\r\n*0\r\n",
        ),
        Case {
            frame: Frame::Map(vec![
                (bulk("k"), Frame::Integer(1)),
                (bulk("n"), Frame::Null),
            ]),
            resp2: b"*4\r\n$1\r\nk\r\n:1\r\n$1\r\nn\r\n$-1\r\n",
            resp2_parsed: Frame::Array(vec![bulk("k"), Frame::Integer(1), bulk("n"), Frame::Null]),
            resp3: b"%2\r\n$1\r\nk\r\n:1\r\n$1\r\nn\r\n_\r\n",
            resp3_parsed: Frame::Map(vec![
                (bulk("k"), Frame::Integer(1)),
                (bulk("n"), Frame::Null),
            ]),
        },
        Case {
            frame: Frame::Set(vec![bulk("a"), bulk("b")]),
            resp2: b"*2\r\n$1\r\na\r\n$1\r\nb\r\n",
            resp2_parsed: Frame::Array(vec![bulk("a"), bulk("b")]),
            resp3: b"~2\r\n$1\r\na\r\n$1\r\nb\r\n",
            resp3_parsed: Frame::Set(vec![bulk("a"), bulk("b")]),
        },
        Case {
            frame: Frame::Double(1.5),
            resp2: b"$3\r\n1.5\r\n",
            resp2_parsed: bulk("1.5"),
            resp3: b",1.5\r\n",
            resp3_parsed: Frame::Double(1.5),
        },
        Case {
            frame: Frame::Double(3.0),
            resp2: b"$1\r\n3\r\n",
            resp2_parsed: bulk("3"),
            resp3: b",3\r\n",
            resp3_parsed: Frame::Double(3.0),
        },
        Case {
            frame: Frame::Double(f64::INFINITY),
            resp2: b"$3\r\ninf\r\n",
            resp2_parsed: bulk("inf"),
            resp3: b",inf\r\n",
            resp3_parsed: Frame::Double(f64::INFINITY),
        },
        Case {
            frame: Frame::Double(f64::NEG_INFINITY),
            resp2: b"$4\r\n-inf\r\n",
            resp2_parsed: bulk("-inf"),
            resp3: b",-inf\r\n",
            resp3_parsed: Frame::Double(f64::NEG_INFINITY),
        },
        Case {
            frame: Frame::Double(1e-7),
            resp2: b"$5\r\n1e-07\r\n",
            resp2_parsed: bulk("1e-07"),
            resp3: b",1e-07\r\n",
            resp3_parsed: Frame::Double(1e-7),
        },
        Case {
            frame: Frame::Boolean(true),
            resp2: b":1\r\n",
            resp2_parsed: Frame::Integer(1),
            resp3: b"#t\r\n",
            resp3_parsed: Frame::Boolean(true),
        },
        Case {
            frame: Frame::Boolean(false),
            resp2: b":0\r\n",
            resp2_parsed: Frame::Integer(0),
            resp3: b"#f\r\n",
            resp3_parsed: Frame::Boolean(false),
        },
        Case {
            frame: Frame::BigNumber(Bytes::from_static(
                b"-3492890328409238509324850943850943825024385",
            )),
            resp2: b"$44\r\n-3492890328409238509324850943850943825024385\r\n",
            resp2_parsed: bulk("-3492890328409238509324850943850943825024385"),
            resp3: b"(-3492890328409238509324850943850943825024385\r\n",
            resp3_parsed: Frame::BigNumber(Bytes::from_static(
                b"-3492890328409238509324850943850943825024385",
            )),
        },
        Case {
            frame: Frame::Verbatim {
                format: *b"txt",
                text: Bytes::from_static(b"Some string"),
            },
            resp2: b"$11\r\nSome string\r\n",
            resp2_parsed: bulk("Some string"),
            resp3: b"=15\r\ntxt:Some string\r\n",
            resp3_parsed: Frame::Verbatim {
                format: *b"txt",
                text: Bytes::from_static(b"Some string"),
            },
        },
        Case {
            frame: Frame::Push(vec![bulk("message"), bulk("ch"), Frame::Boolean(true)]),
            resp2: b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n:1\r\n",
            resp2_parsed: Frame::Array(vec![bulk("message"), bulk("ch"), Frame::Integer(1)]),
            resp3: b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n#t\r\n",
            resp3_parsed: Frame::Push(vec![bulk("message"), bulk("ch"), Frame::Boolean(true)]),
        },
    ]
}

#[test]
fn every_frame_type_encodes_to_exact_bytes_and_parses_back() {
    for case in cases() {
        assert_eq!(
            encode(&case.frame, RespVersion::Resp2),
            case.resp2,
            "RESP2 of {:?}",
            case.frame
        );
        assert_eq!(
            encode(&case.frame, RespVersion::Resp3),
            case.resp3,
            "RESP3 of {:?}",
            case.frame
        );
        assert_eq!(parse_all(case.resp2), case.resp2_parsed, "{:?}", case.frame);
        assert_eq!(parse_all(case.resp3), case.resp3_parsed, "{:?}", case.frame);
    }
}

#[test]
fn every_proper_prefix_of_an_encoding_is_incomplete() {
    for case in cases() {
        for bytes in [case.resp2, case.resp3] {
            for end in 0..bytes.len() {
                assert_eq!(
                    Frame::parse(&bytes[..end]),
                    Ok(None),
                    "{:?}",
                    String::from_utf8_lossy(&bytes[..end])
                );
            }
        }
    }
}

#[test]
fn parse_reports_consumed_bytes_and_leaves_the_rest() {
    let (frame, consumed) = Frame::parse(b"+OK\r\n:1\r\n").unwrap().unwrap();
    assert_eq!(frame, Frame::ok());
    assert_eq!(consumed, 5);
}

#[test]
fn nan_double_round_trips_as_nan() {
    assert_eq!(
        encode(&Frame::Double(f64::NAN), RespVersion::Resp3),
        b",nan\r\n"
    );
    assert_eq!(
        encode(&Frame::Double(f64::NAN), RespVersion::Resp2),
        b"$3\r\nnan\r\n"
    );
    match parse_all(b",nan\r\n") {
        Frame::Double(value) => assert!(value.is_nan()),
        other => panic!("expected a NaN double, got {other:?}"),
    }
}

#[test]
fn line_replies_never_carry_cr_or_lf() {
    let frame = Frame::error("ERR bad\r\n+OK");
    assert_eq!(encode(&frame, RespVersion::Resp2), b"-ERR bad  +OK\r\n");
    let frame = Frame::simple(&b"a\nb"[..]);
    assert_eq!(encode(&frame, RespVersion::Resp3), b"+a b\r\n");
}

#[test]
fn blob_error_parses_as_error() {
    assert_eq!(
        parse_all(b"!21\r\nSYNTAX invalid syntax\r\n"),
        Frame::error("SYNTAX invalid syntax")
    );
}

#[test]
fn attribute_is_skipped_and_the_annotated_value_returned() {
    let bytes = b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.1923\r\n*1\r\n:2\r\n";
    assert_eq!(parse_all(bytes), Frame::Array(vec![Frame::Integer(2)]));
    for end in 0..bytes.len() {
        assert_eq!(Frame::parse(&bytes[..end]), Ok(None));
    }
}

#[test]
fn malformed_values_are_errors() {
    let cases: &[(&[u8], ProtocolError)] = &[
        (b"?x\r\n", ProtocolError::Malformed("invalid type byte")),
        (b":12a\r\n", ProtocolError::Malformed("invalid integer")),
        (b",abc\r\n", ProtocolError::Malformed("invalid double")),
        (b"#x\r\n", ProtocolError::Malformed("invalid boolean")),
        (b"(12a\r\n", ProtocolError::Malformed("invalid big number")),
        (b"_x\r\n", ProtocolError::Malformed("invalid null")),
        (b"$-2\r\n", ProtocolError::InvalidBulkLength),
        (b"$+2\r\nab\r\n", ProtocolError::InvalidBulkLength),
        (b"$2\r\nabc\r\n", ProtocolError::BulkNotTerminated),
        (b"!-1\r\n", ProtocolError::InvalidBulkLength),
        (
            b"=3\r\ntxt\r\n",
            ProtocolError::Malformed("invalid verbatim string"),
        ),
        (
            b"=5\r\ntxt-x\r\n",
            ProtocolError::Malformed("invalid verbatim string"),
        ),
        (b"*-2\r\n", ProtocolError::InvalidMultibulkLength),
        (b"%-1\r\n", ProtocolError::InvalidMultibulkLength),
        (b"*x\r\n", ProtocolError::InvalidMultibulkLength),
        (b"+OK\rX", ProtocolError::Malformed("expected LF after CR")),
    ];
    for (bytes, error) in cases {
        assert_eq!(
            Frame::parse(bytes).as_ref(),
            Err(error),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    assert_eq!(
        ProtocolError::Malformed("invalid double").to_string(),
        "Protocol error: invalid double"
    );
}

#[test]
fn nesting_deeper_than_the_limit_is_an_error_not_a_stack_overflow() {
    let deep = b"*1\r\n".repeat(100_000);
    assert_eq!(
        Frame::parse(&deep),
        Err(ProtocolError::Malformed("nesting too deep"))
    );
    let mut allowed = b"*1\r\n".repeat(ringkv_protocol::FRAME_DEPTH_MAX);
    allowed.extend_from_slice(b":1\r\n");
    assert!(Frame::parse(&allowed).unwrap().is_some());
}

#[test]
fn huge_declared_sizes_with_few_bytes_are_incomplete() {
    assert_eq!(Frame::parse(b"*9223372036854775807\r\n:1\r\n"), Ok(None));
    assert_eq!(Frame::parse(b"%4611686018427387903\r\n"), Ok(None));
    assert_eq!(Frame::parse(b"$9223372036854775807\r\nabc"), Ok(None));
    assert_eq!(Frame::parse(b"%9223372036854775807\r\n"), Ok(None));
    assert_eq!(
        Frame::parse(b"*9223372036854775808\r\n"),
        Err(ProtocolError::InvalidMultibulkLength)
    );
}
