//! # ringkv-cluster
//!
//! The Dynamo-style cluster layer (DESIGN §5): key → slot hashing, the ring of
//! slot owners, preference lists, quorum coordination, version vectors,
//! hinted handoff, read repair, Merkle anti-entropy and gossip membership.
//!
//! **Owns:** placement and replication decisions between nodes.
//! **Must not touch:** on-disk formats (that is `ringkv-engine`) or RESP
//! framing (that is `ringkv-protocol`). It reaches the storage of a node
//! only through the engine's public API.
//!
//! Today it holds the one piece every layer already agrees on: the slot
//! function, the same as Redis Cluster's so cluster-aware clients can route.

/// Number of hash slots in the ring, as in Redis Cluster.
pub const SLOT_COUNT: u16 = 16384;

/// The slot of `key`: CRC16/XMODEM of the key, or of its `{hash tag}` when the
/// key has a non-empty one, modulo [`SLOT_COUNT`].
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
    fn slots_match_redis_cluster() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_eq!(hash_tag(b"foo{}{bar}"), b"foo{}{bar}");
        assert_eq!(hash_tag(b"foo{{bar}}zap"), b"{bar");
    }
}
