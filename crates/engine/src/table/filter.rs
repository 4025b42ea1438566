//! The table's Bloom filter over user keys (format in the module doc of
//! [`crate::table`]): xxh3-64 hashes, double hashing for `k` probes.

use bytes::Bytes;

/// Most probes a filter may ask for: beyond this the false-positive rate no
/// longer improves and a damaged probe count would only cost CPU.
const PROBES_MAX: u8 = 30;

/// Smallest bit array in bytes, so that tiny tables still filter well.
const FILTER_BYTES_MIN: usize = 8;

/// Hash of a user key as used by the filter.
pub(super) fn key_hash(user_key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(user_key)
}

/// Number of probes for `bits_per_key`: `round(bits_per_key * ln 2)` in 1..=30.
fn probes_for(bits_per_key: usize) -> u8 {
    let probes = (bits_per_key as f64 * std::f64::consts::LN_2).round() as usize;
    probes.clamp(1, PROBES_MAX as usize) as u8
}

/// Encodes a filter over `hashes` (one per distinct user key). Returns an
/// empty vector (match everything) when `bits_per_key` is 0.
// Format: bit array (m bytes), probe count k u8.
pub(super) fn build(hashes: &[u64], bits_per_key: usize) -> Vec<u8> {
    if bits_per_key == 0 {
        return Vec::new();
    }
    let bits = hashes.len().saturating_mul(bits_per_key);
    let bytes = bits.div_ceil(8).max(FILTER_BYTES_MIN);
    let bit_count = (bytes * 8) as u64;
    let probes = probes_for(bits_per_key);
    let mut out = vec![0u8; bytes + 1];
    for &hash in hashes {
        let mut h = hash;
        let delta = hash.rotate_right(33);
        for _ in 0..probes {
            let bit = (h % bit_count) as usize;
            out[bit / 8] |= 1 << (bit % 8);
            h = h.wrapping_add(delta);
        }
    }
    out[bytes] = probes;
    out
}

/// A decoded filter, held in memory by its table.
#[derive(Debug, Clone)]
pub(super) struct Filter {
    /// The bit array (empty: the filter matches every key).
    bits: Bytes,
    /// Probes per key.
    probes: u8,
}

impl Filter {
    /// Validates a filter block.
    pub(super) fn parse(mut block: Bytes) -> Result<Filter, &'static str> {
        if block.is_empty() {
            return Ok(Filter {
                bits: block,
                probes: 0,
            });
        }
        let probes = block[block.len() - 1];
        block.truncate(block.len() - 1);
        if probes == 0 || probes > PROBES_MAX || block.is_empty() {
            return Err("filter block: bad probe count or empty bit array");
        }
        Ok(Filter {
            bits: block,
            probes,
        })
    }

    /// False only when `user_key` is certainly not in the table. Does not allocate.
    pub(super) fn may_contain(&self, user_key: &[u8]) -> bool {
        self.may_contain_hash(key_hash(user_key))
    }

    /// [`Filter::may_contain`] for a precomputed [`key_hash`].
    pub(super) fn may_contain_hash(&self, hash: u64) -> bool {
        if self.bits.is_empty() {
            return true;
        }
        let bit_count = (self.bits.len() * 8) as u64;
        let mut h = hash;
        let delta = hash.rotate_right(33);
        for _ in 0..self.probes {
            let bit = (h % bit_count) as usize;
            if self.bits[bit / 8] & (1 << (bit % 8)) == 0 {
                return false;
            }
            h = h.wrapping_add(delta);
        }
        true
    }

    /// Bytes held in memory.
    pub(super) fn len(&self) -> usize {
        self.bits.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every added key passes; under 2% of others do at 10 bits per key.
    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let keys: Vec<Vec<u8>> = (0..10_000u32)
            .map(|i| format!("present-{i}").into_bytes())
            .collect();
        let hashes: Vec<u64> = keys.iter().map(|k| key_hash(k)).collect();
        let filter = Filter::parse(Bytes::from(build(&hashes, 10))).unwrap();
        assert_eq!(filter.probes, 7);
        for key in &keys {
            assert!(filter.may_contain(key));
        }
        let false_positives = (0..10_000u32)
            .filter(|i| filter.may_contain(format!("absent-{i}").as_bytes()))
            .count();
        assert!(
            false_positives < 200,
            "false positive rate {false_positives}/10000"
        );
    }

    /// No filter configured: every key may be present.
    #[test]
    fn zero_bits_per_key_matches_everything() {
        let filter = Filter::parse(Bytes::from(build(&[1, 2, 3], 0))).unwrap();
        assert!(filter.may_contain(b"anything"));
        assert_eq!(filter.len(), 0);
    }

    /// A probe count of 0 or above the limit, or no bit array, is corruption.
    #[test]
    fn damaged_probe_count_is_rejected() {
        assert!(Filter::parse(Bytes::from_static(&[0xff, 0])).is_err());
        assert!(Filter::parse(Bytes::from_static(&[0xff, 31])).is_err());
        assert!(Filter::parse(Bytes::from_static(&[7])).is_err());
    }
}
