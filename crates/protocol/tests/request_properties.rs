//! Property: random argument vectors encoded as RESP arrays parse back identically, however
//! the bytes are chunked.

use proptest::prelude::*;
use ringkv_protocol::{encode_request, parse_request, Bytes, BytesMut, Limits};

fn request() -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8)
}

proptest! {
    #[test]
    fn encoded_requests_parse_back_whatever_the_chunking(
        requests in proptest::collection::vec(request(), 1..6),
        chunk_sizes in proptest::collection::vec(1usize..24, 1..16),
    ) {
        let mut wire = BytesMut::new();
        for args in &requests {
            encode_request(args, &mut wire);
        }
        let limits = Limits::default();
        let mut buf = BytesMut::new();
        let mut parsed: Vec<Vec<Bytes>> = Vec::new();
        let mut offset = 0;
        for &size in chunk_sizes.iter().cycle() {
            if offset == wire.len() {
                break;
            }
            let end = (offset + size).min(wire.len());
            buf.extend_from_slice(&wire[offset..end]);
            offset = end;
            while let Some(args) = parse_request(&mut buf, &limits).unwrap() {
                parsed.push(args);
            }
        }
        prop_assert!(buf.is_empty());
        let parsed: Vec<Vec<Vec<u8>>> = parsed
            .into_iter()
            .map(|args| args.into_iter().map(|arg| arg.to_vec()).collect())
            .collect();
        prop_assert_eq!(parsed, requests);
    }

    #[test]
    fn inline_words_parse_back(words in proptest::collection::vec("[!-~&&[^\"'*]]{1,12}", 1..6)) {
        let line = format!("{}\r\n", words.join(" "));
        let mut buf = BytesMut::from(line.as_bytes());
        let args = parse_request(&mut buf, &Limits::default()).unwrap().unwrap();
        let args: Vec<String> = args.iter().map(|arg| String::from_utf8(arg.to_vec()).unwrap()).collect();
        prop_assert_eq!(args, words);
    }
}
