//! The one place that knows how Redis keys, databases and server metadata
//! are laid out in the engine's flat, ordered key space. No other module
//! builds or decodes an engine key by hand.
//!
//! Format (every engine key starts with a one-byte *family*):
//!
//! ```text
//! meta:    [0x00][name bytes]...                          metadata (db map, counts, drops)
//! data:    [0x01][u16 BE namespace][user key]             -> value envelope (value.rs)
//!   or, slot-first (cluster mode):
//! data:    [0x01][u16 BE slot][u16 BE namespace][user key]
//! expiry:  [0x02][u64 BE expires_at_ms][u16 BE namespace][user key] -> empty
//! ```
//!
//! A *namespace* is a physical database id; logical databases 0..15 map to
//! namespaces through the table in the meta family (see `keyspace.rs`), so
//! FLUSHDB and SWAPDB only rewrite that table.
//!
//! The slot-first data layout ([`Layout::SlotFirst`]) puts the 14-bit slot of
//! the key (`CRC16(key) mod 16384`, `{hash tags}` honoured, as Redis Cluster)
//! right after the family byte, so one slot's keys are one contiguous range:
//! moving a slot, counting its keys and hashing it for anti-entropy read one
//! range ([`Layout::slot_span`]). Ordered range reads then hold within a slot.
//! The expiry index is the same in both layouts: it is ordered by time, and a
//! key's slot follows from the key. See docs/architecture.md.

use bytes::{BufMut, Bytes, BytesMut};

/// Family byte of metadata.
pub const FAMILY_META: u8 = 0x00;
/// Family byte of user data.
pub const FAMILY_DATA: u8 = 0x01;
/// Family byte of the expiry index.
pub const FAMILY_EXPIRY: u8 = 0x02;

/// A physical database id.
pub type Namespace = u16;

/// Number of hash slots, as in Redis Cluster.
pub const SLOT_COUNT: u16 = 16384;

/// Bytes the expiry-key header adds in front of a user key.
const EXPIRY_HEADER_BYTES: usize = 11;

/// `[0x00]drop`: prefix of every drop marker.
const META_DROP_PREFIX: &[u8] = b"\x00drop";

/// How data keys are laid out; chosen when a data directory is created and
/// never changed for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// `[0x01][ns][key]`: single node, a database's keys in one ordered range.
    #[default]
    Plain,
    /// `[0x01][slot][ns][key]`: cluster mode, a slot's keys in one range.
    SlotFirst,
}

/// What an engine key is, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKey<'a> {
    /// A user key of a namespace.
    Data {
        /// Its namespace.
        ns: Namespace,
        /// The user key.
        key: &'a [u8],
    },
    /// An expiry-index entry.
    Expiry {
        /// When the key expires, Unix ms.
        at: u64,
        /// Its namespace.
        ns: Namespace,
        /// The user key.
        key: &'a [u8],
    },
    /// A drop marker: namespace `ns` is being cleared.
    DropMarker(Namespace),
    /// The database map entry of logical database `db`.
    DbMap(u8),
    /// Other metadata (counts, next namespace) or a key of no known family.
    Other,
}

impl Layout {
    /// Bytes the data-key header adds in front of a user key.
    pub fn data_header_bytes(self) -> usize {
        match self {
            Layout::Plain => 3,
            Layout::SlotFirst => 5,
        }
    }

    /// The engine key of `key` in namespace `ns`.
    pub fn data_key(self, ns: Namespace, key: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(self.data_header_bytes() + key.len());
        out.put_u8(FAMILY_DATA);
        if self == Layout::SlotFirst {
            out.put_u16(key_slot(key));
        }
        out.put_u16(ns);
        out.put_slice(key);
        out.freeze()
    }

    /// Writes [`Layout::data_key`] into `out` (cleared first), for lookups that reuse a buffer.
    pub fn write_data_key(self, out: &mut Vec<u8>, ns: Namespace, key: &[u8]) {
        out.clear();
        out.push(FAMILY_DATA);
        if self == Layout::SlotFirst {
            out.extend_from_slice(&key_slot(key).to_be_bytes());
        }
        out.extend_from_slice(&ns.to_be_bytes());
        out.extend_from_slice(key);
    }

    /// The ranges `[start, end)` that together hold every data key of `ns`, in key order: one
    /// range in the plain layout, one per slot in the slot-first layout.
    pub fn namespace_spans(self, ns: Namespace) -> Vec<(Vec<u8>, Vec<u8>)> {
        match self {
            Layout::Plain => vec![self.namespace_span_in_slot(ns, 0)],
            Layout::SlotFirst => (0..SLOT_COUNT)
                .map(|slot| self.namespace_span_in_slot(ns, slot))
                .collect(),
        }
    }

    /// The range `[start, end)` of the data keys of `ns`: all of them in the plain layout
    /// (`slot` is ignored), those of `slot` in the slot-first layout.
    fn namespace_span_in_slot(self, ns: Namespace, slot: u16) -> (Vec<u8>, Vec<u8>) {
        let mut start = vec![FAMILY_DATA];
        if self == Layout::SlotFirst {
            start.extend_from_slice(&slot.to_be_bytes());
        }
        let mut end = start.clone();
        start.extend_from_slice(&ns.to_be_bytes());
        match ns.checked_add(1) {
            Some(next) => end.extend_from_slice(&next.to_be_bytes()),
            None if self == Layout::SlotFirst => end = slot_start(slot + 1),
            None => end = vec![FAMILY_DATA + 1],
        }
        (start, end)
    }

    /// The range `[start, end)` of every data key of `slot` (any namespace). Slot-first layout
    /// only: in the plain layout a slot is scattered.
    pub fn slot_span(self, slot: u16) -> Option<(Vec<u8>, Vec<u8>)> {
        assert!(slot < SLOT_COUNT, "slot {slot} out of range");
        match self {
            Layout::Plain => None,
            Layout::SlotFirst => Some((slot_start(slot), slot_start(slot + 1))),
        }
    }

    /// Bounds of the data keys of `ns` between two user-key bounds. Ordered ranges hold within
    /// a namespace (plain) or within one slot of it (slot-first: the slot of the bounds' keys,
    /// which a `{hash tag}` makes the same for related keys).
    pub fn data_bounds(
        self,
        ns: Namespace,
        start: std::ops::Bound<&[u8]>,
        end: std::ops::Bound<&[u8]>,
    ) -> (std::ops::Bound<Vec<u8>>, std::ops::Bound<Vec<u8>>) {
        use std::ops::Bound;
        // Slot-first: the range stays within the slot of whichever bound names a key.
        let slot = match (start, end) {
            (Bound::Included(k) | Bound::Excluded(k), _)
            | (_, Bound::Included(k) | Bound::Excluded(k)) => key_slot(k),
            _ => 0,
        };
        let (span_start, span_end) = self.namespace_span_in_slot(ns, slot);
        let start_key = match start {
            Bound::Included(k) => Bound::Included(self.data_key(ns, k).to_vec()),
            Bound::Excluded(k) => Bound::Excluded(self.data_key(ns, k).to_vec()),
            Bound::Unbounded => Bound::Included(span_start),
        };
        let end_key = match end {
            Bound::Included(k) => Bound::Included(self.data_key(ns, k).to_vec()),
            Bound::Excluded(k) => Bound::Excluded(self.data_key(ns, k).to_vec()),
            Bound::Unbounded => Bound::Excluded(span_end),
        };
        (start_key, end_key)
    }

    /// Decodes any engine key.
    pub fn decode(self, engine_key: &[u8]) -> EngineKey<'_> {
        match engine_key.first() {
            Some(&FAMILY_DATA) => match self.decode_data_key(engine_key) {
                Some((ns, key)) => EngineKey::Data { ns, key },
                None => EngineKey::Other,
            },
            Some(&FAMILY_EXPIRY) if engine_key.len() >= EXPIRY_HEADER_BYTES => {
                let at = u64::from_be_bytes(engine_key[1..9].try_into().expect("8 bytes"));
                let ns = u16::from_be_bytes([engine_key[9], engine_key[10]]);
                EngineKey::Expiry {
                    at,
                    ns,
                    key: &engine_key[EXPIRY_HEADER_BYTES..],
                }
            }
            Some(&FAMILY_META) => {
                let n = META_DROP_PREFIX.len();
                if engine_key.len() == n + 2 && engine_key.starts_with(META_DROP_PREFIX) {
                    return EngineKey::DropMarker(u16::from_be_bytes([
                        engine_key[n],
                        engine_key[n + 1],
                    ]));
                }
                if engine_key.len() == 7 && engine_key.starts_with(b"\x00dbmap") {
                    return EngineKey::DbMap(engine_key[6]);
                }
                EngineKey::Other
            }
            _ => EngineKey::Other,
        }
    }

    /// Splits a data key into (namespace, user key).
    pub fn decode_data_key(self, engine_key: &[u8]) -> Option<(Namespace, &[u8])> {
        let header = self.data_header_bytes();
        if engine_key.len() < header || engine_key[0] != FAMILY_DATA {
            return None;
        }
        let at = header - 2;
        let ns = u16::from_be_bytes([engine_key[at], engine_key[at + 1]]);
        Some((ns, &engine_key[header..]))
    }

    /// The user key of a data key, sharing its bytes.
    pub fn user_key_of_data(self, engine_key: &Bytes) -> Bytes {
        debug_assert!(self.decode_data_key(engine_key).is_some());
        engine_key.slice(self.data_header_bytes()..)
    }
}

fn slot_start(slot: u16) -> Vec<u8> {
    if slot >= SLOT_COUNT {
        return vec![FAMILY_DATA + 1];
    }
    let mut out = vec![FAMILY_DATA];
    out.extend_from_slice(&slot.to_be_bytes());
    out
}

/// The range `[start, end)` of every key of `family`.
pub fn family_span(family: u8) -> ([u8; 1], [u8; 1]) {
    ([family], [family + 1])
}

/// `[0x02][expires_at_ms][ns][key]`.
pub fn expiry_key(expires_at_ms: u64, ns: Namespace, key: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(EXPIRY_HEADER_BYTES + key.len());
    out.put_u8(FAMILY_EXPIRY);
    out.put_u64(expires_at_ms);
    out.put_u16(ns);
    out.put_slice(key);
    out.freeze()
}

/// `[0x02][expires_at_ms]`: the first expiry key at or after that time.
pub fn expiry_bound(expires_at_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(9);
    out.push(FAMILY_EXPIRY);
    out.extend_from_slice(&expires_at_ms.to_be_bytes());
    out
}

/// Splits an expiry key into (expires_at_ms, namespace, user key), sharing its bytes.
pub fn decode_expiry_key(engine_key: &Bytes) -> Option<(u64, Namespace, Bytes)> {
    match Layout::Plain.decode(engine_key) {
        EngineKey::Expiry { at, ns, .. } => Some((at, ns, engine_key.slice(EXPIRY_HEADER_BYTES..))),
        _ => None,
    }
}

/// `[0x00]dbmap[logical db]` -> `u16 BE namespace`.
pub fn meta_db_map(logical: u8) -> Bytes {
    let mut out = BytesMut::with_capacity(7);
    out.put_u8(FAMILY_META);
    out.put_slice(b"dbmap");
    out.put_u8(logical);
    out.freeze()
}

/// `[0x00]nextns` -> `u16 BE` next namespace to try when allocating.
pub fn meta_next_namespace() -> Bytes {
    Bytes::from_static(b"\x00nextns")
}

/// `[0x00]drop[ns]` -> empty: a namespace whose keys are being deleted.
pub fn meta_drop(ns: Namespace) -> Bytes {
    let mut out = BytesMut::with_capacity(META_DROP_PREFIX.len() + 2);
    out.put_slice(META_DROP_PREFIX);
    out.put_u16(ns);
    out.freeze()
}

/// The range `[start, end)` of every drop marker.
pub fn drop_marker_span() -> (Vec<u8>, Vec<u8>) {
    let mut end = META_DROP_PREFIX.to_vec();
    end.extend_from_slice(&[0xff, 0xff, 0xff]);
    (META_DROP_PREFIX.to_vec(), end)
}

/// `[0x00]counts` -> key counts saved at clean shutdown, see `keyspace.rs`.
pub fn meta_counts() -> Bytes {
    Bytes::from_static(b"\x00counts")
}

/// Encodes a namespace id as the value of a db-map or next-namespace entry.
pub fn encode_namespace(ns: Namespace) -> Vec<u8> {
    ns.to_be_bytes().to_vec()
}

/// Decodes a db-map or next-namespace value; `None` if it is not two bytes.
pub fn decode_namespace(value: &[u8]) -> Option<Namespace> {
    Some(u16::from_be_bytes(value.try_into().ok()?))
}

/// The slot of `key`: CRC16/XMODEM of the key, or of its `{hash tag}` when the
/// key has a non-empty one, modulo [`SLOT_COUNT`] (Redis Cluster's function, so
/// cluster-aware clients route the same way).
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) % SLOT_COUNT
}

/// The part of `key` that is hashed: the bytes between the first `{` and the
/// next `}` when that span is non-empty, else the whole key.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// CRC16/XMODEM (polynomial 0x1021, init 0), the checksum Redis Cluster uses.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= (byte as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
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
    fn namespace_span_bounds_the_namespace() {
        for layout in [Layout::Plain, Layout::SlotFirst] {
            for ns in [0, 7, u16::MAX] {
                for key in [&b""[..], b"a", b"\xff\xff", b"{user}x"] {
                    let data = layout.data_key(ns, key).to_vec();
                    let inside = layout
                        .namespace_spans(ns)
                        .iter()
                        .filter(|(s, e)| &data >= s && &data < e)
                        .count();
                    assert_eq!(inside, 1, "{layout:?} ns {ns} key {key:?}");
                    assert_eq!(layout.decode_data_key(&data), Some((ns, key)));
                    assert_eq!(layout.decode(&data), EngineKey::Data { ns, key });
                }
            }
        }
    }

    #[test]
    fn slot_first_keeps_a_slot_contiguous_across_namespaces() {
        let layout = Layout::SlotFirst;
        let (start, end) = layout.slot_span(key_slot(b"user1000")).expect("slot-first");
        for key in [
            &b"user1000"[..],
            b"{user1000}.following",
            b"{user1000}.followers",
        ] {
            for ns in [0, 3, u16::MAX] {
                let data = layout.data_key(ns, key).to_vec();
                assert!(data >= start && data < end);
            }
        }
        let other = layout.data_key(0, b"foo").to_vec();
        assert!(!(other >= start && other < end));
        assert_eq!(Layout::Plain.slot_span(0), None);
    }

    #[test]
    fn metadata_keys_decode() {
        let layout = Layout::Plain;
        assert_eq!(layout.decode(&meta_drop(513)), EngineKey::DropMarker(513));
        assert_eq!(layout.decode(&meta_db_map(9)), EngineKey::DbMap(9));
        assert_eq!(layout.decode(&meta_counts()), EngineKey::Other);
        let (start, end) = drop_marker_span();
        assert!(meta_drop(u16::MAX)[..] < end[..] && meta_drop(0)[..] >= start[..]);
        assert_eq!(decode_namespace(&encode_namespace(77)), Some(77));
    }

    #[test]
    fn slots_match_redis_cluster() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
    }
}
