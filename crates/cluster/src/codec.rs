//! Shared byte-level helpers for the cluster's compact encodings: LEB128
//! varints and a bounds-checked reader.
//!
//! **Owns:** the [`DecodeError`] every cluster decoder returns, and the rule
//! that a decoder never panics and never allocates more than the input could
//! hold (a length prefix is checked against the bytes that remain before any
//! `Vec::with_capacity`). See docs/cluster.md, "Encodings".

use thiserror::Error;

/// Why bytes from disk or the network could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The input ended before the structure was complete.
    #[error("truncated input: needed {needed} more bytes at offset {offset}")]
    Truncated {
        /// Offset in the input where the read started.
        offset: usize,
        /// Bytes the read still needed.
        needed: usize,
    },
    /// A varint ran past 10 bytes or past `u64::MAX`.
    #[error("malformed varint at offset {offset}")]
    BadVarint {
        /// Offset of the varint's first byte.
        offset: usize,
    },
    /// The first byte names a format version this code does not read.
    #[error("unknown format version {found} (expected {expected})")]
    BadVersion {
        /// Version byte found.
        found: u8,
        /// Version this code writes and reads.
        expected: u8,
    },
    /// Bytes were left after a complete structure.
    #[error("{count} trailing bytes after the structure")]
    TrailingBytes {
        /// How many bytes were left over.
        count: usize,
    },
    /// The structure decoded but breaks an invariant (order, bound, sum).
    #[error("invalid structure: {0}")]
    Invalid(&'static str),
}

/// Appends `value` as an unsigned LEB128 varint (1–10 bytes).
pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A cursor over input bytes; every read checks the bounds.
pub(crate) struct Reader<'a> {
    input: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(input: &'a [u8]) -> Self {
        Self { input, offset: 0 }
    }

    /// Bytes not yet read.
    pub(crate) fn remaining(&self) -> usize {
        self.input.len() - self.offset
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes(1)?[0])
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < len {
            return Err(DecodeError::Truncated {
                offset: self.offset,
                needed: len - self.remaining(),
            });
        }
        let slice = &self.input[self.offset..self.offset + len];
        self.offset += len;
        Ok(slice)
    }

    pub(crate) fn u128_le(&mut self) -> Result<u128, DecodeError> {
        let mut raw = [0u8; 16];
        raw.copy_from_slice(self.bytes(16)?);
        Ok(u128::from_le_bytes(raw))
    }

    /// Reads the leading format version byte and refuses any but `expected`.
    pub(crate) fn version(&mut self, expected: u8) -> Result<(), DecodeError> {
        let found = self.u8()?;
        if found != expected {
            return Err(DecodeError::BadVersion { found, expected });
        }
        Ok(())
    }

    pub(crate) fn varint(&mut self) -> Result<u64, DecodeError> {
        let start = self.offset;
        let mut value: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = match self.u8() {
                Ok(byte) => byte,
                Err(_) => {
                    return Err(DecodeError::Truncated {
                        offset: start,
                        needed: 1,
                    })
                }
            };
            let low = u64::from(byte & 0x7f);
            // The tenth byte may only carry the top bit of a u64.
            if shift == 63 && low > 1 {
                return Err(DecodeError::BadVarint { offset: start });
            }
            value |= low << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::BadVarint { offset: start })
    }

    /// A varint used as a count of items that each take at least
    /// `min_item_bytes`: refused when the remaining input cannot hold that
    /// many, so a hostile count never drives an allocation.
    pub(crate) fn count(&mut self, min_item_bytes: usize) -> Result<usize, DecodeError> {
        let count = self.varint()?;
        let fits = (self.remaining() / min_item_bytes.max(1)) as u64;
        if count > fits {
            return Err(DecodeError::Invalid("count larger than the input can hold"));
        }
        Ok(count as usize)
    }

    /// Ends decoding: an error if any byte is left.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { count }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varint_round_trips(value in any::<u64>()) {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            let mut reader = Reader::new(&out);
            prop_assert_eq!(reader.varint().unwrap(), value);
            prop_assert!(reader.finish().is_ok());
        }

        #[test]
        fn varint_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            let _ = Reader::new(&bytes).varint();
        }
    }

    #[test]
    fn varint_refuses_eleven_bytes_and_overflow() {
        let too_long = [0xffu8; 11];
        assert!(matches!(
            Reader::new(&too_long).varint(),
            Err(DecodeError::BadVarint { .. })
        ));
        let mut overflow = [0xffu8; 10];
        overflow[9] = 0x02;
        assert!(matches!(
            Reader::new(&overflow).varint(),
            Err(DecodeError::BadVarint { .. })
        ));
    }

    #[test]
    fn count_refuses_more_items_than_bytes() {
        let mut out = Vec::new();
        put_varint(&mut out, 1_000_000);
        out.extend_from_slice(&[0; 10]);
        assert!(Reader::new(&out).count(1).is_err());
    }
}
