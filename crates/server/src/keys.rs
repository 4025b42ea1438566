//! The one place that knows how Redis keys, databases and server metadata
//! are laid out in the engine's flat, ordered key space.
//!
//! Format (every engine key starts with a one-byte *family*):
//!
//! ```text
//! meta:    [0x00][name bytes]...                      server metadata (db map, counts, ...)
//! data:    [0x01][u16 BE namespace][user key]         -> [u8 type tag][payload]
//! expiry:  [0x02][u64 BE expires_at_ms][u16 BE namespace][user key] -> empty
//! ```
//!
//! A *namespace* is a physical database id; logical databases 0..15 map to
//! namespaces through the table in the meta family (see `keyspace.rs`), so
//! FLUSHDB and SWAPDB only rewrite that table. The cluster will later insert
//! the slot number right after the family byte; only this module changes then.

use bytes::{BufMut, Bytes, BytesMut};

/// Family byte of server metadata.
pub(crate) const FAMILY_META: u8 = 0x00;
/// Family byte of user data.
pub(crate) const FAMILY_DATA: u8 = 0x01;
/// Family byte of the expiry index.
pub(crate) const FAMILY_EXPIRY: u8 = 0x02;

/// A physical database id.
pub(crate) type Namespace = u16;

/// Bytes the data-key header adds in front of a user key.
pub(crate) const DATA_HEADER_BYTES: usize = 3;
/// Bytes the expiry-key header adds in front of a user key.
pub(crate) const EXPIRY_HEADER_BYTES: usize = 11;

/// `[0x01][ns][key]`.
pub(crate) fn data_key(ns: Namespace, key: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(DATA_HEADER_BYTES + key.len());
    out.put_u8(FAMILY_DATA);
    out.put_u16(ns);
    out.put_slice(key);
    out.freeze()
}

/// Writes [`data_key`] into `out` (cleared first), for lookups that reuse a buffer.
pub(crate) fn write_data_key(out: &mut Vec<u8>, ns: Namespace, key: &[u8]) {
    out.clear();
    out.push(FAMILY_DATA);
    out.extend_from_slice(&ns.to_be_bytes());
    out.extend_from_slice(key);
}

/// `[0x01][ns]`: every data key of `ns` starts with it.
pub(crate) fn data_prefix(ns: Namespace) -> [u8; DATA_HEADER_BYTES] {
    let [high, low] = ns.to_be_bytes();
    [FAMILY_DATA, high, low]
}

/// The first key after every data key of `ns`, for an exclusive range end.
pub(crate) fn data_prefix_end(ns: Namespace) -> Vec<u8> {
    match ns.checked_add(1) {
        Some(next) => data_prefix(next).to_vec(),
        None => vec![FAMILY_DATA + 1],
    }
}

/// The user key of a data key of `ns`.
pub(crate) fn user_key_of_data(engine_key: &Bytes) -> Bytes {
    debug_assert!(engine_key.len() >= DATA_HEADER_BYTES);
    debug_assert_eq!(engine_key[0], FAMILY_DATA);
    engine_key.slice(DATA_HEADER_BYTES..)
}

/// `[0x02][expires_at_ms][ns][key]`.
pub(crate) fn expiry_key(expires_at_ms: u64, ns: Namespace, key: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(EXPIRY_HEADER_BYTES + key.len());
    out.put_u8(FAMILY_EXPIRY);
    out.put_u64(expires_at_ms);
    out.put_u16(ns);
    out.put_slice(key);
    out.freeze()
}

/// `[0x02][expires_at_ms]`: the first expiry key at or after that time.
pub(crate) fn expiry_bound(expires_at_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    out.push(FAMILY_EXPIRY);
    out.extend_from_slice(&expires_at_ms.to_be_bytes());
    out
}

/// Splits an expiry key into (expires_at_ms, namespace, user key).
pub(crate) fn decode_expiry_key(engine_key: &Bytes) -> Option<(u64, Namespace, Bytes)> {
    if engine_key.len() < EXPIRY_HEADER_BYTES || engine_key[0] != FAMILY_EXPIRY {
        return None;
    }
    let at = u64::from_be_bytes(engine_key[1..9].try_into().ok()?);
    let ns = u16::from_be_bytes(engine_key[9..11].try_into().ok()?);
    Some((at, ns, engine_key.slice(EXPIRY_HEADER_BYTES..)))
}

/// `[0x00]dbmap[logical db]` -> `u16 BE namespace`.
pub(crate) fn meta_db_map(logical: u8) -> Bytes {
    let mut out = BytesMut::with_capacity(7);
    out.put_u8(FAMILY_META);
    out.put_slice(b"dbmap");
    out.put_u8(logical);
    out.freeze()
}

/// `[0x00]nextns` -> `u16 BE` next namespace to try when allocating.
pub(crate) fn meta_next_namespace() -> Bytes {
    Bytes::from_static(b"\x00nextns")
}

/// `[0x00]drop[ns]` -> empty: a namespace whose keys are being deleted.
pub(crate) fn meta_drop(ns: Namespace) -> Bytes {
    let mut out = BytesMut::with_capacity(7);
    out.put_u8(FAMILY_META);
    out.put_slice(b"drop");
    out.put_u16(ns);
    out.freeze()
}

/// `[0x00]drop`: prefix of every drop marker.
pub(crate) const META_DROP_PREFIX: &[u8] = b"\x00drop";

/// `[0x00]counts` -> key counts saved at clean shutdown, see `keyspace.rs`.
pub(crate) fn meta_counts() -> Bytes {
    Bytes::from_static(b"\x00counts")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_keys_sort_by_time_then_namespace_then_key() {
        let a = expiry_key(5, 2, b"z");
        let b = expiry_key(6, 1, b"a");
        let c = expiry_key(6, 1, b"b");
        assert!(a < b && b < c);
        assert_eq!(
            decode_expiry_key(&c),
            Some((6, 1, Bytes::from_static(b"b")))
        );
    }

    #[test]
    fn data_prefix_end_bounds_the_namespace() {
        let key = data_key(7, b"\xff\xff");
        assert!(key[..] >= data_prefix(7)[..]);
        assert!(key.to_vec() < data_prefix_end(7));
        assert!(data_key(u16::MAX, b"\xff").to_vec() < data_prefix_end(u16::MAX));
    }
}
