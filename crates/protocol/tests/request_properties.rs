//! Properties: random argument vectors encoded as RESP arrays parse back identically, however
//! the bytes are chunked; and a `RequestParser` fed any bytes, valid or not, in any chunks,
//! finds the requests and the error `parse_request` finds in the whole input.

use proptest::prelude::*;
use ringkv_protocol::{
    encode_request, parse_request, Bytes, BytesMut, Limits, ProtocolError, RequestParser,
};

fn request() -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8)
}

/// Everything one connection would see: the requests, then the error that closed it.
type Outcome = (Vec<Vec<Bytes>>, Option<ProtocolError>);

/// Feeds `wire` in chunks of `chunk_sizes` (cycled) to `parse`, as a connection's reads would.
fn feed(
    wire: &[u8],
    chunk_sizes: &[usize],
    mut parse: impl FnMut(&mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError>,
) -> (Outcome, BytesMut) {
    let mut buf = BytesMut::new();
    let mut requests = Vec::new();
    let mut offset = 0;
    for &size in chunk_sizes.iter().cycle() {
        if offset == wire.len() {
            break;
        }
        let end = (offset + size).min(wire.len());
        buf.extend_from_slice(&wire[offset..end]);
        offset = end;
        loop {
            match parse(&mut buf) {
                Ok(Some(args)) => requests.push(args),
                Ok(None) => break,
                Err(error) => return ((requests, Some(error)), buf),
            }
        }
    }
    ((requests, None), buf)
}

/// Bytes from a small alphabet of RESP's structural characters, digits and a few letters, so
/// that random inputs often look like requests (and fail in every way a request can).
fn resp_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    let pieces = prop_oneof![
        Just(b"*".to_vec()),
        Just(b"$".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"-".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\"".to_vec()),
        (0u8..=12).prop_map(|n| n.to_string().into_bytes()),
        "[a-z:]{1,3}".prop_map(String::into_bytes),
        request().prop_map(|args| {
            let mut wire = BytesMut::new();
            encode_request(&args, &mut wire);
            wire.to_vec()
        }),
    ];
    proptest::collection::vec(pieces, 0..24).prop_map(|pieces| pieces.concat())
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
        let expected: Vec<Vec<Bytes>> = requests
            .iter()
            .map(|args| args.iter().map(|arg| Bytes::copy_from_slice(arg)).collect())
            .collect();
        let ((stateless, error), rest) =
            feed(&wire, &chunk_sizes, |buf| parse_request(buf, &limits));
        prop_assert_eq!(error, None);
        prop_assert!(rest.is_empty());
        prop_assert_eq!(&stateless, &expected);
        let mut parser = RequestParser::new();
        let ((stateful, error), rest) =
            feed(&wire, &chunk_sizes, |buf| parser.parse(buf, &limits));
        prop_assert_eq!(error, None);
        prop_assert!(rest.is_empty());
        prop_assert!(parser.is_idle());
        prop_assert_eq!(&stateful, &expected);
        // Work linear in the input, whatever the chunking: each line byte is searched at most
        // twice, each digit and CRLF checked once more, plus at most one CR per read that
        // stopped between a CR and its LF.
        let reads_max = wire.len() as u64;
        prop_assert!(parser.bytes_examined() <= 3 * wire.len() as u64 + reads_max);
    }

    #[test]
    fn any_bytes_give_the_whole_input_outcome_whatever_the_chunking(
        wire in resp_like_bytes(),
        chunk_sizes in proptest::collection::vec(1usize..16, 1..8),
        small_limits in any::<bool>(),
    ) {
        let limits = if small_limits {
            Limits { bulk_bytes_max: 16, args_max: 4, inline_bytes_max: 8 }
        } else {
            Limits::default()
        };
        let (whole, _) = feed(&wire, &[wire.len().max(1)], |buf| parse_request(buf, &limits));
        let mut parser = RequestParser::new();
        let (chunked, _) = feed(&wire, &chunk_sizes, |buf| parser.parse(buf, &limits));
        prop_assert_eq!(chunked, whole);
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
