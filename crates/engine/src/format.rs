//! Encodings shared by the WAL, the memtable and the sorted tables:
//! internal keys, value kinds, varints.
//!
//! An *internal key* is a user key followed by an 8-byte trailer:
//!
//! ```text
//! Format: internal key
//! +----------------+------------------------------------------+
//! | user key bytes | trailer: u64 big-endian = seq << 8 | kind |
//! +----------------+------------------------------------------+
//! ```
//!
//! Internal keys order by user key ascending, then by trailer *descending*,
//! so the newest version of a key comes first. They must be compared with
//! [`compare_internal`], never bytewise (a user key may be a prefix of
//! another).
//!
//! The value stored next to an internal key depends on its kind: empty for
//! [`Kind::Delete`], the user value for [`Kind::Put`], and an 8-byte
//! big-endian expiry (Unix ms) followed by the user value for
//! [`Kind::PutExpiring`].

use std::cmp::Ordering;

/// Largest sequence number: 56 bits, the trailer keeps 8 bits for the kind.
pub const SEQ_MAX: u64 = (1 << 56) - 1;

/// Length of the internal key trailer.
pub const TRAILER_LEN: usize = 8;

/// What an internal key's entry means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// The key was deleted at this sequence.
    Delete = 0,
    /// The key was set to the value, with no expiry.
    Put = 1,
    /// The key was set to the value, expiring at the time in the value's first 8 bytes.
    PutExpiring = 2,
}

impl Kind {
    /// Decodes a kind byte; `None` for an unknown byte (corruption).
    pub fn from_u8(byte: u8) -> Option<Kind> {
        match byte {
            0 => Some(Kind::Delete),
            1 => Some(Kind::Put),
            2 => Some(Kind::PutExpiring),
            _ => None,
        }
    }
}

/// Packs a sequence and kind into a trailer.
pub fn trailer(seq: u64, kind: Kind) -> u64 {
    debug_assert!(seq <= SEQ_MAX);
    (seq << 8) | kind as u64
}

/// Appends the internal key for (`user_key`, `seq`, `kind`) to `out`.
pub fn push_internal_key(out: &mut Vec<u8>, user_key: &[u8], seq: u64, kind: Kind) {
    out.extend_from_slice(user_key);
    out.extend_from_slice(&trailer(seq, kind).to_be_bytes());
}

/// Builds an internal key.
pub fn internal_key(user_key: &[u8], seq: u64, kind: Kind) -> Vec<u8> {
    let mut out = Vec::with_capacity(user_key.len() + TRAILER_LEN);
    push_internal_key(&mut out, user_key, seq, kind);
    out
}

/// The user-key part of an internal key.
pub fn user_key(internal_key: &[u8]) -> &[u8] {
    debug_assert!(internal_key.len() >= TRAILER_LEN);
    &internal_key[..internal_key.len() - TRAILER_LEN]
}

/// The trailer of an internal key.
pub fn key_trailer(internal_key: &[u8]) -> u64 {
    let at = internal_key.len() - TRAILER_LEN;
    u64::from_be_bytes(internal_key[at..].try_into().expect("8 bytes"))
}

/// Sequence number of an internal key.
pub fn key_seq(internal_key: &[u8]) -> u64 {
    key_trailer(internal_key) >> 8
}

/// Kind byte of an internal key (decode with [`Kind::from_u8`]).
pub fn key_kind_byte(internal_key: &[u8]) -> u8 {
    key_trailer(internal_key) as u8
}

/// Orders internal keys: user key ascending, then trailer descending.
pub fn compare_internal(a: &[u8], b: &[u8]) -> Ordering {
    compare_user_keys(user_key(a), user_key(b)).then_with(|| key_trailer(b).cmp(&key_trailer(a)))
}

/// Orders user keys as byte strings (`<[u8]>::cmp`), deciding most pairs by their first
/// eight bytes as one big-endian integer: keys that differ there (most neighbours in a
/// merge of sources) cost no `memcmp` call, the merge's largest cost in a scan (issue 12,
/// docs/BENCHMARKS.md).
#[inline]
pub fn compare_user_keys(a: &[u8], b: &[u8]) -> Ordering {
    if let (Some(head_a), Some(head_b)) = (a.first_chunk::<8>(), b.first_chunk::<8>()) {
        let order = u64::from_be_bytes(*head_a).cmp(&u64::from_be_bytes(*head_b));
        if order.is_ne() {
            return order;
        }
    }
    a.cmp(b)
}

/// The internal key that sorts first among all versions of `user_key`
/// visible at `seq` (a seek target).
pub fn seek_key(user_key: &[u8], seq: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(user_key.len() + TRAILER_LEN);
    out.extend_from_slice(user_key);
    // The highest kind byte sorts first among equal sequences.
    out.extend_from_slice(&((seq << 8) | 0xff).to_be_bytes());
    out
}

/// Appends `value` as a LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads a LEB128 varint from the front of `input`; returns the value and
/// the bytes it used, or `None` when truncated or longer than 10 bytes.
pub fn get_varint(input: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, &byte) in input.iter().enumerate().take(10) {
        value |= ((byte & 0x7f) as u64) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Encodes the stored value of a put: expiry prefix when there is one.
pub fn encode_value(out: &mut Vec<u8>, value: &[u8], expires_at_ms: Option<u64>) -> Kind {
    match expires_at_ms {
        Some(at) => {
            out.extend_from_slice(&at.to_be_bytes());
            out.extend_from_slice(value);
            Kind::PutExpiring
        }
        None => {
            out.extend_from_slice(value);
            Kind::Put
        }
    }
}

/// Splits a stored value of `kind` into (user value range start, expiry).
/// Returns `None` when a `PutExpiring` value is shorter than its prefix.
pub fn decode_value(kind: Kind, stored: &[u8]) -> Option<(usize, Option<u64>)> {
    match kind {
        Kind::Delete | Kind::Put => Some((0, None)),
        Kind::PutExpiring => {
            let prefix: [u8; 8] = stored.get(..8)?.try_into().ok()?;
            Some((8, Some(u64::from_be_bytes(prefix))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_keys_order_newest_first_and_prefix_safe() {
        let a1 = internal_key(b"a", 1, Kind::Put);
        let a2 = internal_key(b"a", 2, Kind::Put);
        let ab = internal_key(b"ab", 1, Kind::Put);
        assert_eq!(compare_internal(&a2, &a1), Ordering::Less);
        assert_eq!(compare_internal(&a1, &ab), Ordering::Less);
        assert_eq!(compare_internal(&seek_key(b"a", 2), &a2), Ordering::Less);
        assert_eq!(compare_internal(&seek_key(b"a", 1), &a2), Ordering::Greater);
        assert_eq!(key_seq(&a2), 2);
        assert_eq!(user_key(&ab), b"ab");
    }

    proptest::proptest! {
        /// The fast path orders exactly as the byte strings do: short keys, shared
        /// prefixes of eight bytes and more, and high bytes (no sign in the integer).
        #[test]
        fn user_keys_order_as_byte_strings(
            prefix in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12),
            a in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12),
            b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12),
        ) {
            let a = [prefix.as_slice(), &a].concat();
            let b = [prefix.as_slice(), &b].concat();
            proptest::prop_assert_eq!(compare_user_keys(&a, &b), a.cmp(&b));
            proptest::prop_assert_eq!(compare_user_keys(&a, &a), Ordering::Equal);
        }
    }

    #[test]
    fn varints_round_trip() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(get_varint(&out), Some((v, out.len())));
            assert_eq!(get_varint(&out[..out.len() - 1]), None);
        }
    }
}
