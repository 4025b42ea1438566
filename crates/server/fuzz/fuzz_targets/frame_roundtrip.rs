//! Any value `Frame::parse` accepts encodes (RESP3) to bytes that parse back to the same value.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringkv_protocol::{Frame, RespVersion};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((frame, used))) = Frame::parse(data) {
        assert!(used <= data.len());
        let mut encoded = BytesMut::new();
        frame.encode(RespVersion::Resp3, &mut encoded);
        let (again, again_used) = Frame::parse(&encoded).expect("own encoding parses").expect("complete");
        assert_eq!(again_used, encoded.len());
        // NaN doubles are not equal to themselves; compare their encodings instead.
        let mut reencoded = BytesMut::new();
        again.encode(RespVersion::Resp3, &mut reencoded);
        assert_eq!(encoded, reencoded);
        let mut resp2 = BytesMut::new();
        frame.encode(RespVersion::Resp2, &mut resp2);
        assert!(Frame::parse(&resp2).expect("RESP2 downgrade parses").is_some());
    }
});
