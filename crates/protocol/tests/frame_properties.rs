//! Property: any frame encoded in RESP3 parses back to itself (RESP2 to its downgrade), fed
//! whole or cut anywhere.

use proptest::prelude::*;
use ringkv_protocol::{Bytes, BytesMut, Frame, RespVersion};

fn leaf() -> impl Strategy<Value = Frame> {
    let line = "[a-zA-Z0-9 ]{0,12}";
    prop_oneof![
        line.prop_map(|text| Frame::Simple(Bytes::from(text))),
        line.prop_map(|text| Frame::Error(Bytes::from(text))),
        any::<i64>().prop_map(Frame::Integer),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(|b| Frame::Bulk(Bytes::from(b))),
        Just(Frame::Null),
        // NaN is left out: it is never equal to itself (tested on its own).
        any::<f64>()
            .prop_filter("not NaN", |value| !value.is_nan())
            .prop_map(Frame::Double),
        any::<bool>().prop_map(Frame::Boolean),
        "-?[1-9][0-9]{0,40}".prop_map(|digits| Frame::BigNumber(Bytes::from(digits))),
        (
            any::<[u8; 3]>(),
            proptest::collection::vec(any::<u8>(), 0..24)
        )
            .prop_map(|(format, text)| Frame::Verbatim {
                format,
                text: Bytes::from(text),
            }),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Frame::Array),
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Frame::Set),
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Frame::Push),
            proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Frame::Map),
        ]
    })
}

/// What a RESP2 client sees of `frame`.
fn downgrade(frame: &Frame) -> Frame {
    let bulk = |bytes: &[u8]| Frame::Bulk(Bytes::copy_from_slice(bytes));
    match frame {
        Frame::Array(items) | Frame::Set(items) | Frame::Push(items) => {
            Frame::Array(items.iter().map(downgrade).collect())
        }
        Frame::Map(pairs) => Frame::Array(
            pairs
                .iter()
                .flat_map(|(key, value)| [downgrade(key), downgrade(value)])
                .collect(),
        ),
        Frame::Double(value) => bulk(ringkv_protocol::format_double(*value).as_bytes()),
        Frame::Boolean(value) => Frame::Integer(i64::from(*value)),
        Frame::BigNumber(digits) => bulk(digits),
        Frame::Verbatim { text, .. } => bulk(text),
        other => other.clone(),
    }
}

proptest! {
    #[test]
    fn resp3_round_trip(frame in frame(), cut in any::<prop::sample::Index>()) {
        let mut out = BytesMut::new();
        frame.encode(RespVersion::Resp3, &mut out);
        prop_assert_eq!(Frame::parse(&out), Ok(Some((frame.clone(), out.len()))));
        let cut = cut.index(out.len());
        prop_assert_eq!(Frame::parse(&out[..cut]), Ok(None));
    }

    #[test]
    fn resp2_round_trip_is_the_downgrade(frame in frame()) {
        let mut out = BytesMut::new();
        frame.encode(RespVersion::Resp2, &mut out);
        prop_assert_eq!(Frame::parse(&out), Ok(Some((downgrade(&frame), out.len()))));
    }
}
