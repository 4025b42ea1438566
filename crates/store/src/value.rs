//! The value envelope: what the store keeps under a data key.
//!
//! ```text
//! Format: [u8 header][u64 BE hlc, if HAS_HLC][u16 BE n][n bytes causal context, if HAS_CONTEXT][payload]
//! header: bits 0-3 type tag (1 = string), bit 6 HAS_CONTEXT, bit 7 HAS_HLC, bits 4-5 zero
//! ```
//!
//! A single node writes neither extra field, so its values are
//! `[tag][payload]`: one byte of overhead, and the format every data directory
//! written before the envelope already holds. Cluster mode (docs/cluster.md)
//! adds a hybrid-logical-clock timestamp (for last-writer-wins between
//! siblings, the same on every node) and a dotted version vector (the causal
//! context); the store carries both opaquely, the cluster layer gives them
//! meaning. Expiry and the engine's own version (its sequence number) are not
//! in the envelope: the engine keeps them beside the value.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{Error, Result};

/// Header bit: an HLC timestamp follows the header.
const HAS_HLC: u8 = 0x80;
/// Header bit: a causal context follows (after the HLC, if any).
const HAS_CONTEXT: u8 = 0x40;
/// Header bits that carry the type tag.
const TYPE_MASK: u8 = 0x0f;
/// Header bits no version of the format uses yet: a value with one set is from a newer
/// ringkv, or damaged.
const RESERVED_MASK: u8 = 0x30;

/// Largest causal context kept (a version vector of a few hundred nodes); a longer one is a
/// sign of a bug upstream, refused rather than stored.
pub const CONTEXT_BYTES_MAX: usize = u16::MAX as usize;

/// Type of a stored value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ValueType {
    /// A Redis string.
    String = 1,
    /// A cluster replica's versioned record of a key (siblings under a dotted version
    /// vector set, docs/cluster.md "Records"): the payload is the cluster layer's encoding,
    /// opaque here; the envelope's HLC and context summarise it.
    Record = 2,
}

impl ValueType {
    /// The tag bits of the header.
    pub fn tag(self) -> u8 {
        self as u8
    }

    /// The type for a tag, `None` for an unknown tag (corruption or a newer format).
    pub fn from_tag(tag: u8) -> Option<ValueType> {
        match tag {
            1 => Some(ValueType::String),
            2 => Some(ValueType::Record),
            _ => None,
        }
    }

    /// Name as TYPE and SCAN … TYPE spell it.
    pub fn name(self) -> &'static str {
        match self {
            // A record holds a string or a counter, which Redis clients know as strings.
            ValueType::String | ValueType::Record => "string",
        }
    }
}

/// The envelope's fields other than the payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Envelope {
    /// Hybrid-logical-clock timestamp of the write (cluster mode).
    pub hlc: Option<u64>,
    /// Causal context: an encoded dotted version vector (cluster mode).
    pub context: Option<Bytes>,
}

/// Encodes a value with no cluster fields: `[tag][payload]`.
pub fn encode_value(value_type: ValueType, payload: &[u8]) -> Bytes {
    encode_enveloped(value_type, &Envelope::default(), payload)
}

/// Encodes a value with its envelope fields.
pub fn encode_enveloped(value_type: ValueType, envelope: &Envelope, payload: &[u8]) -> Bytes {
    let context_len = envelope.context.as_ref().map_or(0, |c| 2 + c.len());
    let hlc_len = if envelope.hlc.is_some() { 8 } else { 0 };
    let mut out = BytesMut::with_capacity(1 + hlc_len + context_len + payload.len());
    let mut header = value_type.tag();
    if envelope.hlc.is_some() {
        header |= HAS_HLC;
    }
    if envelope.context.is_some() {
        header |= HAS_CONTEXT;
    }
    out.put_u8(header);
    if let Some(hlc) = envelope.hlc {
        out.put_u64(hlc);
    }
    if let Some(context) = &envelope.context {
        assert!(
            context.len() <= CONTEXT_BYTES_MAX,
            "causal context of {} bytes",
            context.len()
        );
        out.put_u16(context.len() as u16);
        out.put_slice(context);
    }
    out.put_slice(payload);
    out.freeze()
}

/// A decoded value: its type, envelope and where its payload starts in the raw bytes.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Its type.
    pub value_type: ValueType,
    /// HLC and causal context, when written.
    pub envelope: Envelope,
    /// Offset of the payload in the raw value.
    pub payload_at: usize,
}

/// Decodes the envelope of a raw stored value (sharing its bytes).
pub fn decode_value(raw: &Bytes) -> Result<Decoded> {
    let header = *raw.first().ok_or(Error::Corrupt("empty stored value"))?;
    if header & RESERVED_MASK != 0 {
        return Err(Error::Corrupt("unknown value envelope flags"));
    }
    let value_type =
        ValueType::from_tag(header & TYPE_MASK).ok_or(Error::Corrupt("unknown value type tag"))?;
    let mut at = 1;
    let mut envelope = Envelope::default();
    if header & HAS_HLC != 0 {
        let bytes = raw
            .get(at..at + 8)
            .ok_or(Error::Corrupt("value envelope cut short"))?;
        envelope.hlc = Some(u64::from_be_bytes(bytes.try_into().expect("8 bytes")));
        at += 8;
    }
    if header & HAS_CONTEXT != 0 {
        let bytes = raw
            .get(at..at + 2)
            .ok_or(Error::Corrupt("value envelope cut short"))?;
        let len = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
        at += 2;
        if raw.len() < at + len {
            return Err(Error::Corrupt("value envelope cut short"));
        }
        envelope.context = Some(raw.slice(at..at + len));
        at += len;
    }
    Ok(Decoded {
        value_type,
        envelope,
        payload_at: at,
    })
}

/// A live string value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrValue {
    /// The string.
    pub data: Bytes,
    /// Absolute expiry in Unix ms.
    pub expires_at_ms: Option<u64>,
    /// Engine version (sequence of the write that set it).
    pub version: u64,
}

/// A live value of any type.
#[derive(Debug, Clone)]
pub struct StoredValue {
    /// Its type.
    pub value_type: ValueType,
    /// The whole stored value, envelope included (what RENAME/COPY/MOVE carry over).
    pub raw: Bytes,
    /// Where the payload starts in `raw`.
    pub payload_at: usize,
    /// Absolute expiry in Unix ms.
    pub expires_at_ms: Option<u64>,
    /// Engine version.
    pub version: u64,
}

impl StoredValue {
    /// The value without its envelope.
    pub fn payload(&self) -> Bytes {
        self.raw.slice(self.payload_at..)
    }

    /// Length of the payload in bytes.
    pub fn payload_len(&self) -> usize {
        self.raw.len() - self.payload_at
    }

    pub(crate) fn from_entry(entry: ringkv_engine::Entry) -> Result<StoredValue> {
        let decoded = decode_value(&entry.value)?;
        Ok(StoredValue {
            value_type: decoded.value_type,
            raw: entry.value,
            payload_at: decoded.payload_at,
            expires_at_ms: entry.expires_at_ms,
            version: entry.version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_node_values_are_tag_then_payload() {
        let raw = encode_value(ValueType::String, b"hello");
        assert_eq!(&raw[..], b"\x01hello");
        let decoded = decode_value(&raw).expect("decodes");
        assert_eq!(decoded.value_type, ValueType::String);
        assert_eq!(decoded.envelope, Envelope::default());
        assert_eq!(&raw[decoded.payload_at..], b"hello");
    }

    #[test]
    fn cluster_fields_round_trip() {
        let envelope = Envelope {
            hlc: Some(0x0102_0304_0506_0708),
            context: Some(Bytes::from_static(b"dvv")),
        };
        let raw = encode_enveloped(ValueType::String, &envelope, b"v");
        let decoded = decode_value(&raw).expect("decodes");
        assert_eq!(decoded.envelope, envelope);
        assert_eq!(&raw[decoded.payload_at..], b"v");
        for cut in 1..raw.len() - 1 {
            // Every truncation inside the envelope is refused, not misread.
            let short = raw.slice(..cut);
            if cut < 1 + 8 + 2 + 3 {
                assert!(decode_value(&short).is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn unknown_flags_and_tags_are_corruption() {
        assert!(decode_value(&Bytes::from_static(b"")).is_err());
        assert!(decode_value(&Bytes::from_static(b"\x03x")).is_err());
        assert!(decode_value(&Bytes::from_static(b"\x0fx")).is_err());
        assert!(decode_value(&Bytes::from_static(b"\x11x")).is_err());
    }
}
