//! Pure logic behind the bitmap commands: bit offsets, SETBIT/GETBIT, BITCOUNT and BITPOS
//! range math (BYTE and BIT modes), BITOP, and BITFIELD parsing and signed/unsigned
//! get/set/increment with WRAP, SAT and FAIL overflow.
//!
//! Bits are numbered as Redis numbers them: bit 0 is the most significant bit of byte 0.
//! Everything mirrors Redis 7 `bitops.c`; the comments name the function each piece follows.

use super::string_ops::parse_i64;

/// "ERR bit offset is not an integer or out of range".
pub(crate) const BIT_OFFSET_ERROR: &str = "ERR bit offset is not an integer or out of range";
/// "ERR bit is not an integer or out of range".
pub(crate) const BIT_VALUE_ERROR: &str = "ERR bit is not an integer or out of range";
/// BITFIELD's type error, word for word.
pub(crate) const BITFIELD_TYPE_ERROR: &str =
    "ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.";
/// BITFIELD's bad OVERFLOW argument.
pub(crate) const BITFIELD_OVERFLOW_ERROR: &str = "ERR Invalid OVERFLOW type specified";
/// BITFIELD_RO given SET or INCRBY.
pub(crate) const BITFIELD_RO_ERROR: &str = "ERR BITFIELD_RO only supports the GET subcommand";
/// BITPOS with a bit other than 0 or 1.
pub(crate) const BITPOS_BIT_ERROR: &str = "ERR The bit argument must be 1 or 0.";
/// BITOP NOT with several sources (Redis ends it with a period).
pub(crate) const BITOP_NOT_ERROR: &str = "ERR BITOP NOT must be called with a single source key.";

/// Parses a bit offset as Redis' `getBitOffsetFromArgument`: a `string2ll` integer, or with
/// `#n` (BITFIELD only, `hash_multiplier` = the field width) `n × width`; negative offsets and
/// offsets at or past `bytes_max` × 8 (`proto-max-bulk-len`, 512 MiB by default) are refused.
pub(crate) fn parse_bit_offset(
    text: &[u8],
    hash_multiplier: Option<u32>,
    bytes_max: u64,
) -> Option<u64> {
    let (digits, multiplier) = match (text, hash_multiplier) {
        ([b'#', rest @ ..], Some(bits)) if !rest.is_empty() => (rest, Some(bits)),
        _ => (text, None),
    };
    let mut offset = parse_i64(digits)?;
    if let Some(bits) = multiplier {
        // Redis multiplies a `long long`; on overflow the result wraps (and is then usually
        // negative, hence refused).
        offset = offset.wrapping_mul(i64::from(bits));
    }
    let offset = u64::try_from(offset).ok()?;
    if (offset >> 3) >= bytes_max {
        return None;
    }
    Some(offset)
}

/// SETBIT's value: 0 or 1, else [`BIT_VALUE_ERROR`].
pub(crate) fn parse_bit_value(text: &[u8]) -> Option<bool> {
    match parse_i64(text)? {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

/// The bit at `offset` (0 past the end).
pub(crate) fn get_bit(value: &[u8], offset: u64) -> bool {
    let byte = (offset >> 3) as usize;
    let shift = 7 - (offset & 7) as u32;
    value.get(byte).is_some_and(|&b| (b >> shift) & 1 == 1)
}

/// Sets the bit at `offset`, growing `value` with zero bytes as needed; returns the old bit.
pub(crate) fn set_bit(value: &mut Vec<u8>, offset: u64, on: bool) -> bool {
    let byte = (offset >> 3) as usize;
    if value.len() <= byte {
        value.resize(byte + 1, 0);
    }
    let mask = 1u8 << (7 - (offset & 7));
    let old = value[byte] & mask != 0;
    if on {
        value[byte] |= mask;
    } else {
        value[byte] &= !mask;
    }
    old
}

/// A resolved BITCOUNT/BITPOS range: whole bytes `first..=last`, plus, in BIT mode, the masks
/// of bits outside the range in the first and last byte (Redis' `first_byte_neg_mask` and
/// `last_byte_neg_mask`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ByteRange {
    first: i64,
    last: i64,
    first_outside: u8,
    last_outside: u8,
}

/// Redis' index normalisation shared by BITCOUNT and BITPOS: negative indexes count from the
/// end, clamp to the value, and in BIT mode convert to bytes with edge masks.
fn resolve_range(length: usize, start: i64, end: i64, bit_mode: bool) -> ByteRange {
    let mut total = length as i64;
    if bit_mode {
        total <<= 3;
    }
    let mut start = if start < 0 {
        total.saturating_add(start)
    } else {
        start
    };
    let mut end = if end < 0 {
        total.saturating_add(end)
    } else {
        end
    };
    start = start.max(0);
    end = end.max(0);
    if end >= total {
        end = total - 1;
    }
    let (mut first_outside, mut last_outside) = (0u8, 0u8);
    if bit_mode && start <= end {
        first_outside = !((1u16 << (8 - (start & 7))) - 1) as u8;
        last_outside = ((1u16 << (7 - (end & 7))) - 1) as u8;
        start >>= 3;
        end >>= 3;
    }
    ByteRange {
        first: start,
        last: end,
        first_outside,
        last_outside,
    }
}

/// BITCOUNT over `start..=end` (bytes, or bits in BIT mode), or the whole value when `range`
/// is `None`, as Redis' `bitcountCommand`.
pub(crate) fn bitcount(value: &[u8], range: Option<(i64, i64, bool)>) -> i64 {
    let Some((start, end, bit_mode)) = range else {
        return popcount(value);
    };
    if start < 0 && end < 0 && start > end {
        return 0;
    }
    let range = resolve_range(value.len(), start, end, bit_mode);
    if range.first > range.last {
        return 0;
    }
    let (first, last) = (range.first as usize, range.last as usize);
    let mut count = popcount(&value[first..=last]);
    count -= i64::from((value[first] & range.first_outside).count_ones());
    count -= i64::from((value[last] & range.last_outside).count_ones());
    count
}

fn popcount(bytes: &[u8]) -> i64 {
    let chunks = bytes.chunks_exact(8);
    let tail: u64 = chunks
        .remainder()
        .iter()
        .map(|b| u64::from(b.count_ones()))
        .sum();
    let words: u64 = chunks
        .map(|chunk| u64::from(u64::from_ne_bytes(chunk.try_into().expect("8 bytes")).count_ones()))
        .sum();
    (words + tail) as i64
}

/// Redis' `redisBitpos`: position of the first `bit` in `bytes`; for a clear bit in bytes
/// that are all ones, the position just past the end; for a set bit in all zeros, -1.
fn first_bit(bytes: &[u8], bit: bool) -> i64 {
    for (index, &byte) in bytes.iter().enumerate() {
        let candidate = if bit { byte } else { !byte };
        if candidate != 0 {
            return (index as i64) * 8 + i64::from(candidate.leading_zeros());
        }
    }
    if bit {
        -1
    } else {
        (bytes.len() as i64) * 8
    }
}

/// BITPOS on an existing value, as Redis 7 `bitposCommand`: `start`/`end` in bytes or (BIT
/// mode) bits. Looking for a clear bit with no explicit `end`, the value counts as padded
/// with zeros to the right (so all ones answers the first bit past the end); with an explicit
/// `end` it does not (answers -1).
pub(crate) fn bitpos(
    value: &[u8],
    bit: bool,
    start: Option<i64>,
    end: Option<i64>,
    bit_mode: bool,
) -> i64 {
    let length = value.len() as i64;
    let end_given = end.is_some();
    let range = match start {
        None => ByteRange {
            first: 0,
            last: length - 1,
            first_outside: 0,
            last_outside: 0,
        },
        Some(start) => {
            let end = end.unwrap_or(if bit_mode {
                (length << 3) + 7
            } else {
                length - 1
            });
            resolve_range(value.len(), start, end, bit_mode)
        }
    };
    if range.first > range.last {
        return -1;
    }
    let (mut first, last) = (range.first as usize, range.last as usize);
    let mut bytes = last - first + 1;
    let position;
    'search: {
        if range.first_outside != 0 {
            let mut byte = if bit {
                value[first] & !range.first_outside
            } else {
                value[first] | range.first_outside
            };
            if range.last_outside != 0 && bytes == 1 {
                byte = if bit {
                    byte & !range.last_outside
                } else {
                    byte | range.last_outside
                };
            }
            let found = first_bit(&[byte], bit);
            if bytes == 1 || (found != -1 && found != 8) {
                position = found;
                break 'search;
            }
            first += 1;
            bytes -= 1;
        }
        let whole = bytes - usize::from(range.last_outside != 0);
        if whole > 0 {
            let found = first_bit(&value[first..first + whole], bit);
            if bytes == whole || (found != -1 && found != (whole as i64) * 8) {
                position = found;
                break 'search;
            }
            first += whole;
            bytes -= whole;
        }
        let byte = if bit {
            value[last] & !range.last_outside
        } else {
            value[last] | range.last_outside
        };
        position = first_bit(&[byte], bit);
    }
    if end_given && !bit && position == (bytes as i64) * 8 {
        return -1;
    }
    if position == -1 {
        -1
    } else {
        position + (first as i64) * 8
    }
}

/// A BITOP operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BitOp {
    And,
    Or,
    Xor,
    Not,
}

impl BitOp {
    /// AND, OR, XOR or NOT in any case; anything else is "ERR syntax error".
    pub(crate) fn parse(text: &[u8]) -> Option<BitOp> {
        [
            (b"AND".as_slice(), BitOp::And),
            (b"OR", BitOp::Or),
            (b"XOR", BitOp::Xor),
            (b"NOT", BitOp::Not),
        ]
        .into_iter()
        .find(|(name, _)| text.eq_ignore_ascii_case(name))
        .map(|(_, op)| op)
    }
}

/// BITOP's result over `sources` (a missing key is an empty string, padded with zeros to the
/// longest source); empty when every source is empty, which deletes the destination.
pub(crate) fn bitop(op: BitOp, sources: &[&[u8]]) -> Vec<u8> {
    let length = sources.iter().map(|source| source.len()).max().unwrap_or(0);
    if length == 0 {
        return Vec::new();
    }
    if op == BitOp::Not {
        debug_assert_eq!(sources.len(), 1);
        return sources[0].iter().map(|b| !b).collect();
    }
    let mut result = vec![0u8; length];
    let byte_at = |source: &[u8], index: usize| source.get(index).copied().unwrap_or(0);
    for (index, out) in result.iter_mut().enumerate() {
        let mut acc = byte_at(sources[0], index);
        for source in &sources[1..] {
            let byte = byte_at(source, index);
            match op {
                BitOp::And => acc &= byte,
                BitOp::Or => acc |= byte,
                BitOp::Xor => acc ^= byte,
                BitOp::Not => unreachable!("handled above"),
            }
        }
        *out = acc;
    }
    result
}

// ---------------------------------------------------------------------------------------------
// BITFIELD
// ---------------------------------------------------------------------------------------------

/// What BITFIELD does when a SET or INCRBY leaves the field's range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overflow {
    /// Modular arithmetic (the default).
    Wrap,
    /// Clamp to the minimum or maximum.
    Saturate,
    /// Do nothing and reply nil.
    Fail,
}

/// A field type: `i1`..`i64` or `u1`..`u63`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FieldType {
    pub signed: bool,
    pub bits: u32,
}

impl FieldType {
    /// Redis' `getBitfieldTypeFromArgument`; `None` → [`BITFIELD_TYPE_ERROR`].
    pub(crate) fn parse(text: &[u8]) -> Option<FieldType> {
        let (signed, width) = match text {
            [b'i' | b'I', rest @ ..] => (true, rest),
            [b'u' | b'U', rest @ ..] => (false, rest),
            _ => return None,
        };
        let bits = parse_i64(width)?;
        let max = if signed { 64 } else { 63 };
        if !(1..=max).contains(&bits) {
            return None;
        }
        Some(FieldType {
            signed,
            bits: bits as u32,
        })
    }
}

/// One BITFIELD operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldAction {
    Get,
    Set(i64),
    IncrBy(i64),
}

/// One parsed BITFIELD operation, with the OVERFLOW mode in force where it appeared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FieldOp {
    pub action: FieldAction,
    pub field: FieldType,
    pub offset: u64,
    pub overflow: Overflow,
}

/// A parsed BITFIELD command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BitfieldPlan {
    pub ops: Vec<FieldOp>,
    /// Highest bit a SET or INCRBY touches; `None` if the command only reads.
    pub highest_write_bit: Option<u64>,
}

/// Parses the arguments after `BITFIELD key`, as Redis' `bitfieldGeneric`. The error is the
/// full error text to reply with.
pub(crate) fn parse_bitfield<A: AsRef<[u8]>>(
    args: &[A],
    bytes_max: u64,
) -> Result<BitfieldPlan, &'static str> {
    const SYNTAX_ERROR: &str = "ERR syntax error";
    const INTEGER_ERROR: &str = "ERR value is not an integer or out of range";
    let mut ops = Vec::new();
    let mut overflow = Overflow::Wrap;
    let mut highest_write_bit: Option<u64> = None;
    let mut index = 0;
    while index < args.len() {
        let remaining = args.len() - index - 1;
        let subcommand = args[index].as_ref();
        let is = |name: &[u8]| subcommand.eq_ignore_ascii_case(name);
        enum Kind {
            Get,
            Set,
            IncrBy,
        }
        let kind = if is(b"GET") && remaining >= 2 {
            Kind::Get
        } else if is(b"SET") && remaining >= 3 {
            Kind::Set
        } else if is(b"INCRBY") && remaining >= 3 {
            Kind::IncrBy
        } else if is(b"OVERFLOW") && remaining >= 1 {
            let mode = args[index + 1].as_ref();
            overflow = if mode.eq_ignore_ascii_case(b"WRAP") {
                Overflow::Wrap
            } else if mode.eq_ignore_ascii_case(b"SAT") {
                Overflow::Saturate
            } else if mode.eq_ignore_ascii_case(b"FAIL") {
                Overflow::Fail
            } else {
                return Err(BITFIELD_OVERFLOW_ERROR);
            };
            index += 2;
            continue;
        } else {
            return Err(SYNTAX_ERROR);
        };
        let field = FieldType::parse(args[index + 1].as_ref()).ok_or(BITFIELD_TYPE_ERROR)?;
        let offset = parse_bit_offset(args[index + 2].as_ref(), Some(field.bits), bytes_max)
            .ok_or(BIT_OFFSET_ERROR)?;
        let action = match kind {
            Kind::Get => FieldAction::Get,
            Kind::Set | Kind::IncrBy => {
                let last = offset + u64::from(field.bits) - 1;
                highest_write_bit = Some(highest_write_bit.map_or(last, |bit| bit.max(last)));
                let value = parse_i64(args[index + 3].as_ref()).ok_or(INTEGER_ERROR)?;
                if matches!(kind, Kind::Set) {
                    FieldAction::Set(value)
                } else {
                    FieldAction::IncrBy(value)
                }
            }
        };
        ops.push(FieldOp {
            action,
            field,
            offset,
            overflow,
        });
        index += if matches!(action, FieldAction::Get) {
            3
        } else {
            4
        };
    }
    Ok(BitfieldPlan {
        ops,
        highest_write_bit,
    })
}

/// The unsigned field of `bits` bits at `offset` (bits past the end of `value` read as 0).
fn get_unsigned(value: &[u8], offset: u64, bits: u32) -> u64 {
    let mut result = 0u64;
    for index in 0..u64::from(bits) {
        result = (result << 1) | u64::from(get_bit(value, offset + index));
    }
    result
}

/// The signed field: the unsigned one with its top bit sign-extended.
fn get_signed(value: &[u8], offset: u64, bits: u32) -> i64 {
    let raw = get_unsigned(value, offset, bits);
    if bits < 64 && raw & (1u64 << (bits - 1)) != 0 {
        (raw | (u64::MAX << bits)) as i64
    } else {
        raw as i64
    }
}

/// Writes the low `bits` bits of `field` at `offset`; `value` is already long enough.
fn set_field(value: &mut [u8], offset: u64, bits: u32, field: u64) {
    for index in 0..u64::from(bits) {
        let on = (field >> (u64::from(bits) - 1 - index)) & 1 == 1;
        let bit = offset + index;
        let mask = 1u8 << (7 - (bit & 7));
        let byte = &mut value[(bit >> 3) as usize];
        if on {
            *byte |= mask;
        } else {
            *byte &= !mask;
        }
    }
}

/// Redis' `checkUnsignedBitfieldOverflow`: `Some(replacement)` when `value + increment`
/// leaves `0..2^bits`, else `None`. For FAIL the replacement is irrelevant.
fn unsigned_overflow(value: u64, increment: i64, bits: u32, overflow: Overflow) -> Option<u64> {
    let max = (1u64 << bits) - 1;
    let max_increment = max.wrapping_sub(value) as i64;
    let min_increment = value.wrapping_neg() as i64;
    let wrapped = || value.wrapping_add(increment as u64) & max;
    if value > max || (increment > 0 && increment > max_increment) {
        Some(match overflow {
            Overflow::Wrap => wrapped(),
            Overflow::Saturate | Overflow::Fail => max,
        })
    } else if increment < 0 && increment < min_increment {
        Some(match overflow {
            Overflow::Wrap => wrapped(),
            Overflow::Saturate | Overflow::Fail => 0,
        })
    } else {
        None
    }
}

/// Redis' `checkSignedBitfieldOverflow`.
fn signed_overflow(value: i64, increment: i64, bits: u32, overflow: Overflow) -> Option<i64> {
    let max: i64 = if bits == 64 {
        i64::MAX
    } else {
        (1i64 << (bits - 1)) - 1
    };
    let min = -max - 1;
    let max_increment = (max as u64).wrapping_sub(value as u64) as i64;
    let min_increment = min.wrapping_sub(value);
    let wrapped = || {
        let sum = (value as u64).wrapping_add(increment as u64);
        if bits < 64 {
            let mask = u64::MAX << bits;
            if sum & (1u64 << (bits - 1)) != 0 {
                (sum | mask) as i64
            } else {
                (sum & !mask) as i64
            }
        } else {
            sum as i64
        }
    };
    if value > max
        || (bits != 64 && increment > max_increment)
        || (value >= 0 && increment > 0 && increment > max_increment)
    {
        Some(match overflow {
            Overflow::Wrap => wrapped(),
            Overflow::Saturate | Overflow::Fail => max,
        })
    } else if value < min
        || (bits != 64 && increment < min_increment)
        || (value < 0 && increment < 0 && increment < min_increment)
    {
        Some(match overflow {
            Overflow::Wrap => wrapped(),
            Overflow::Saturate | Overflow::Fail => min,
        })
    } else {
        None
    }
}

/// Runs a read-only op (GET) on `value` (`None` = missing key).
pub(crate) fn bitfield_get(value: Option<&[u8]>, op: &FieldOp) -> i64 {
    let value = value.unwrap_or_default();
    if op.field.signed {
        get_signed(value, op.offset, op.field.bits)
    } else {
        get_unsigned(value, op.offset, op.field.bits) as i64
    }
}

/// Runs one op on `value`, which the caller grew to cover
/// [`BitfieldPlan::highest_write_bit`]. `None` = FAIL overflow (reply nil, nothing written).
pub(crate) fn bitfield_apply(value: &mut [u8], op: &FieldOp) -> Option<i64> {
    let FieldOp {
        action,
        field,
        offset,
        overflow,
    } = *op;
    let bits = field.bits;
    let (write, reply, overflowed) = match action {
        FieldAction::Get => return Some(bitfield_get(Some(value), op)),
        FieldAction::Set(new) if field.signed => {
            let old = get_signed(value, offset, bits);
            match signed_overflow(new, 0, bits, overflow) {
                Some(replacement) => (replacement as u64, old, true),
                None => (new as u64, old, false),
            }
        }
        FieldAction::IncrBy(increment) if field.signed => {
            let old = get_signed(value, offset, bits);
            let (new, overflowed) = match signed_overflow(old, increment, bits, overflow) {
                Some(replacement) => (replacement, true),
                None => (old + increment, false),
            };
            (new as u64, new, overflowed)
        }
        FieldAction::Set(new) => {
            let old = get_unsigned(value, offset, bits);
            match unsigned_overflow(new as u64, 0, bits, overflow) {
                Some(replacement) => (replacement, old as i64, true),
                None => (new as u64, old as i64, false),
            }
        }
        FieldAction::IncrBy(increment) => {
            let old = get_unsigned(value, offset, bits);
            let (new, overflowed) = match unsigned_overflow(old, increment, bits, overflow) {
                Some(replacement) => (replacement, true),
                None => (old.wrapping_add(increment as u64), false),
            };
            (new, new as i64, overflowed)
        }
    };
    if overflowed && overflow == Overflow::Fail {
        return None;
    }
    set_field(value, offset, bits, write);
    Some(reply)
}

#[cfg(test)]
mod tests {
    use super::super::string_ops::STRING_BYTES_MAX;
    use super::*;

    #[test]
    fn offsets_follow_redis() {
        assert_eq!(parse_bit_offset(b"7", None, STRING_BYTES_MAX), Some(7));
        assert_eq!(
            parse_bit_offset(b"4294967295", None, STRING_BYTES_MAX),
            Some(4_294_967_295)
        );
        // Redis 7.0.15: 2^32 is past 512 MiB of bits.
        assert_eq!(
            parse_bit_offset(b"4294967296", None, STRING_BYTES_MAX),
            None
        );
        assert_eq!(parse_bit_offset(b"-1", None, STRING_BYTES_MAX), None);
        assert_eq!(
            parse_bit_offset(b"#1", None, STRING_BYTES_MAX),
            None,
            "# only for BITFIELD"
        );
        assert_eq!(parse_bit_offset(b"#3", Some(8), STRING_BYTES_MAX), Some(24));
        assert_eq!(parse_bit_offset(b"#", Some(8), STRING_BYTES_MAX), None);
        assert_eq!(
            parse_bit_offset(b"#9223372036854775807", Some(8), STRING_BYTES_MAX),
            None
        );
        assert_eq!(parse_bit_value(b"1"), Some(true));
        assert_eq!(parse_bit_value(b"0"), Some(false));
        assert_eq!(parse_bit_value(b"2"), None);
        assert_eq!(parse_bit_value(b"-1"), None);
    }

    #[test]
    fn set_and_get_bits() {
        let mut value = Vec::new();
        assert!(!set_bit(&mut value, 7, true));
        assert_eq!(value, [0x01]);
        assert!(!set_bit(&mut value, 8 * 2, true));
        assert_eq!(value, [0x01, 0x00, 0x80]);
        assert!(set_bit(&mut value, 7, false));
        assert!(get_bit(&value, 16));
        assert!(!get_bit(&value, 1000));
    }

    #[test]
    fn bitcount_ranges() {
        // Redis docs: SET mykey "foobar".
        let foobar = b"foobar";
        assert_eq!(bitcount(foobar, None), 26);
        assert_eq!(bitcount(foobar, Some((0, 0, false))), 4);
        assert_eq!(bitcount(foobar, Some((1, 1, false))), 6);
        assert_eq!(bitcount(foobar, Some((1, 1, true))), 1);
        assert_eq!(bitcount(foobar, Some((5, 30, true))), 17);
        assert_eq!(bitcount(foobar, Some((-1, -2, false))), 0);
        assert_eq!(bitcount(foobar, Some((-2, -1, false))), 7);
        assert_eq!(bitcount(foobar, Some((0, 1000, false))), 26);
        assert_eq!(bitcount(b"", Some((0, -1, false))), 0);
    }

    #[test]
    fn bitpos_edge_cases() {
        // Redis docs examples.
        assert_eq!(bitpos(b"\xff\xf0\x00", false, None, None, false), 12);
        assert_eq!(bitpos(b"\x00\xff\xf0", true, Some(0), None, false), 8);
        assert_eq!(bitpos(b"\x00\xff\xf0", true, Some(2), None, false), 16);
        assert_eq!(bitpos(b"\x00\xff\xf0", true, Some(2), Some(-1), true), 8);
        assert_eq!(bitpos(b"\x00\xff\xf0", true, Some(7), Some(15), true), 8);
        assert_eq!(bitpos(b"\x00\x00\x00", true, None, None, false), -1);
        // All ones: a clear bit is found just past the end unless an end was given.
        assert_eq!(bitpos(b"\xff\xff\xff", false, None, None, false), 24);
        assert_eq!(bitpos(b"\xff\xff\xff", false, Some(0), None, false), 24);
        assert_eq!(bitpos(b"\xff\xff\xff", false, Some(0), Some(-1), false), -1);
        assert_eq!(bitpos(b"\xff\xff\xff", false, Some(5), Some(2), false), -1);
    }

    #[test]
    fn bitop_pads_and_negates() {
        assert_eq!(bitop(BitOp::And, &[b"\xff\x0f", b"\x0f"]), b"\x0f\x00");
        assert_eq!(bitop(BitOp::Or, &[b"\xf0", b"\x0f\x01"]), b"\xff\x01");
        assert_eq!(bitop(BitOp::Xor, &[b"\xff", b"\x0f", b""]), b"\xf0");
        assert_eq!(bitop(BitOp::Not, &[b"\x0f\xff"]), b"\xf0\x00");
        assert_eq!(bitop(BitOp::And, &[b"", b""]), b"");
        assert_eq!(BitOp::parse(b"xOr"), Some(BitOp::Xor));
        assert_eq!(BitOp::parse(b"nand"), None);
    }

    #[test]
    fn bitfield_types() {
        assert_eq!(
            FieldType::parse(b"i64"),
            Some(FieldType {
                signed: true,
                bits: 64
            })
        );
        assert_eq!(
            FieldType::parse(b"U63"),
            Some(FieldType {
                signed: false,
                bits: 63
            })
        );
        for bad in [&b"u64"[..], b"i65", b"i0", b"x8", b"i", b"i+8", b"i08", b""] {
            assert_eq!(
                FieldType::parse(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn bitfield_parsing_errors() {
        let parse =
            |words: &[&str]| parse_bitfield(words, STRING_BYTES_MAX).map(|plan| plan.ops.len());
        assert_eq!(parse(&["GET", "u8", "0", "set", "i8", "#1", "-3"]), Ok(2));
        assert_eq!(parse(&[]), Ok(0));
        assert_eq!(parse(&["GET", "u8"]), Err("ERR syntax error"));
        assert_eq!(parse(&["FOO"]), Err("ERR syntax error"));
        assert_eq!(parse(&["OVERFLOW", "maybe"]), Err(BITFIELD_OVERFLOW_ERROR));
        assert_eq!(parse(&["OVERFLOW"]), Err("ERR syntax error"));
        assert_eq!(parse(&["GET", "u64", "0"]), Err(BITFIELD_TYPE_ERROR));
        assert_eq!(parse(&["GET", "u8", "-1"]), Err(BIT_OFFSET_ERROR));
        assert_eq!(
            parse(&["SET", "u8", "0", "x"]),
            Err("ERR value is not an integer or out of range")
        );
        let plan = parse_bitfield(
            &["incrby", "u2", "100", "1", "GET", "u4", "0"],
            STRING_BYTES_MAX,
        )
        .expect("valid");
        assert_eq!(plan.highest_write_bit, Some(101));
        assert_eq!(
            parse_bitfield(&["get", "i5", "3"], STRING_BYTES_MAX)
                .expect("valid")
                .highest_write_bit,
            None
        );
    }

    fn run(value: &mut Vec<u8>, words: &[&str]) -> Vec<Option<i64>> {
        let plan = parse_bitfield(words, STRING_BYTES_MAX).expect("valid");
        if let Some(bit) = plan.highest_write_bit {
            let needed = (bit >> 3) as usize + 1;
            if value.len() < needed {
                value.resize(needed, 0);
            }
        }
        plan.ops
            .iter()
            .map(|op| bitfield_apply(value, op))
            .collect()
    }

    #[test]
    fn bitfield_redis_doc_examples() {
        // BITFIELD mykey INCRBY i5 100 1 GET u4 0 → 1, 0
        let mut value = Vec::new();
        assert_eq!(
            run(&mut value, &["INCRBY", "i5", "100", "1", "GET", "u4", "0"]),
            [Some(1), Some(0)]
        );
        // Overflow examples from the docs: u2 at 102 incremented by 1 four times.
        let mut value = Vec::new();
        let mut wrap = Vec::new();
        let mut sat = Vec::new();
        for _ in 0..4 {
            let replies = run(
                &mut value,
                &[
                    "incrby", "u2", "100", "1", "OVERFLOW", "SAT", "incrby", "u2", "102", "1",
                ],
            );
            wrap.push(replies[0]);
            sat.push(replies[1]);
        }
        assert_eq!(wrap, [Some(1), Some(2), Some(3), Some(0)]);
        assert_eq!(sat, [Some(1), Some(2), Some(3), Some(3)]);
        let mut value = Vec::new();
        assert_eq!(
            run(
                &mut value,
                &["OVERFLOW", "FAIL", "incrby", "u2", "102", "4"]
            ),
            [None]
        );
    }

    #[test]
    fn bitfield_signed_and_unsigned_edges() {
        let mut value = Vec::new();
        assert_eq!(
            run(
                &mut value,
                &["SET", "i8", "0", "-100", "GET", "i8", "0", "GET", "u8", "0"]
            ),
            [Some(0), Some(-100), Some(156)]
        );
        assert_eq!(
            run(&mut value, &["SET", "u8", "0", "-1", "GET", "u8", "0"]),
            [Some(156), Some(255)]
        );
        assert_eq!(
            run(
                &mut value,
                &["OVERFLOW", "SAT", "SET", "i8", "0", "1000", "GET", "i8", "0"]
            ),
            [Some(-1), Some(127)]
        );
        assert_eq!(
            run(
                &mut value,
                &["OVERFLOW", "SAT", "INCRBY", "i8", "0", "-1000"]
            ),
            [Some(-128)]
        );
        assert_eq!(
            run(&mut value, &["INCRBY", "i8", "0", "-1"]),
            [Some(127)],
            "wraps"
        );
        assert_eq!(
            run(
                &mut value,
                &["OVERFLOW", "FAIL", "INCRBY", "i8", "0", "1", "GET", "i8", "0"]
            ),
            [None, Some(127)]
        );
        let mut value = Vec::new();
        assert_eq!(
            run(
                &mut value,
                &[
                    "SET",
                    "i64",
                    "0",
                    "9223372036854775807",
                    "INCRBY",
                    "i64",
                    "0",
                    "1"
                ]
            ),
            [Some(0), Some(i64::MIN)]
        );
        assert_eq!(
            run(
                &mut value,
                &[
                    "OVERFLOW",
                    "SAT",
                    "INCRBY",
                    "i64",
                    "0",
                    "-1",
                    "INCRBY",
                    "i64",
                    "0",
                    "-9223372036854775808"
                ]
            ),
            [Some(i64::MIN), Some(i64::MIN)]
        );
        let mut value = Vec::new();
        assert_eq!(
            run(
                &mut value,
                &["SET", "u63", "1", "9223372036854775807", "GET", "u63", "1"]
            ),
            [Some(0), Some(i64::MAX)]
        );
        assert_eq!(
            run(&mut value, &["OVERFLOW", "SAT", "INCRBY", "u63", "1", "5"]),
            [Some(i64::MAX)]
        );
        assert_eq!(run(&mut value, &["INCRBY", "u63", "1", "1"]), [Some(0)]);
        assert_eq!(
            run(&mut value, &["OVERFLOW", "SAT", "INCRBY", "u63", "1", "-1"]),
            [Some(0)]
        );
        assert_eq!(
            bitfield_get(
                None,
                &parse_bitfield(&["GET", "i8", "0"], STRING_BYTES_MAX)
                    .expect("valid")
                    .ops[0]
            ),
            0
        );
    }
}
