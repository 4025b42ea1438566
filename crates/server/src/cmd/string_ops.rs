//! Pure logic behind the string commands: SET/GETEX option parsing, GETRANGE/SETRANGE index
//! math, Redis' integer parsing, INCRBYFLOAT's long-double arithmetic and formatting, and LCS.
//!
//! Nothing here touches the keyspace or the network, so every rule can be unit-tested with
//! exact values. Each rule follows Redis 7 (`t_string.c`, `util.c`); the comments name the
//! Redis function a piece mirrors so the two can be compared.

use std::cmp::Ordering;

/// Longest string value Redis accepts (`proto-max-bulk-len`, 512 MiB by default). SETRANGE,
/// APPEND and SETBIT refuse to grow a value beyond it.
pub(crate) const STRING_BYTES_MAX: u64 = 512 * 1024 * 1024;

/// Redis' `MAX_LONG_DOUBLE_CHARS`: `string2ld` rejects texts this long or longer.
const FLOAT_TEXT_BYTES_MAX: usize = 5 * 1024;

/// Integers are parsed as Redis' `string2ll` (no `+`, spaces or leading zeros, no overflow):
/// INCR's value and argument, SETRANGE's offset, bit offsets and every other integer argument.
pub(crate) use crate::args::parse_i64;

/// INCR/DECR/INCRBY/DECRBY: `current + increment`, or `None` where Redis answers
/// "increment or decrement would overflow".
pub(crate) fn checked_increment(current: i64, increment: i64) -> Option<i64> {
    current.checked_add(increment)
}

// ---------------------------------------------------------------------------------------------
// SET / GETEX options
// ---------------------------------------------------------------------------------------------

/// Which command's options are being parsed: SET and GETEX share Redis'
/// `parseExtendedStringArgumentsOrReply`, each allowing a subset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OptionsFor {
    Set,
    Getex,
}

/// How an expiry argument is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExpireUnit {
    /// `EX seconds`: relative, seconds.
    Seconds,
    /// `PX milliseconds`: relative, milliseconds.
    Milliseconds,
    /// `EXAT unix-seconds`: absolute, seconds.
    UnixSeconds,
    /// `PXAT unix-milliseconds`: absolute, milliseconds.
    UnixMilliseconds,
}

/// The condition SET is subject to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SetCondition<'a> {
    Always,
    /// `NX`: only if the key does not exist.
    IfMissing,
    /// `XX`: only if the key exists.
    IfExists,
    /// `IFEQ value` (Valkey 8.1 / Redis 8.4): only if the key holds a string equal to `value`.
    IfEqual(&'a [u8]),
}

/// Parsed SET or GETEX options (syntax only; the expiry text is checked by
/// [`resolve_expiry`] later, in Redis' order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SetOptions<'a> {
    pub condition: SetCondition<'a>,
    /// The expiry option and its unparsed argument.
    pub expire: Option<(ExpireUnit, &'a [u8])>,
    /// `KEEPTTL` (SET only).
    pub keep_ttl: bool,
    /// `GET` (SET only): reply with the old value.
    pub get: bool,
    /// `PERSIST` (GETEX only).
    pub persist: bool,
}

/// Parses the options after `SET key value` or `GETEX key`, as Redis'
/// `parseExtendedStringArgumentsOrReply` does: any order, any case; an option that conflicts
/// with one already seen, is not allowed for the command, or lacks its argument is a syntax
/// error (`Err(())`, answered with "ERR syntax error"). A repeated expiry of the same kind is
/// accepted and the last one wins, as in Redis.
pub(crate) fn parse_set_options<'a, A: AsRef<[u8]>>(
    options: &'a [A],
    command: OptionsFor,
) -> Result<SetOptions<'a>, ()> {
    let mut parsed = SetOptions {
        condition: SetCondition::Always,
        expire: None,
        keep_ttl: false,
        get: false,
        persist: false,
    };
    let is_set = command == OptionsFor::Set;
    let mut index = 0;
    while index < options.len() {
        let option = options[index].as_ref();
        let next = options.get(index + 1).map(AsRef::as_ref);
        let expire_kind = parsed.expire.map(|(unit, _)| unit);
        // An expiry option may repeat itself but not follow another kind, KEEPTTL or PERSIST.
        let expiry_allowed = |unit: ExpireUnit| {
            !parsed.keep_ttl && !parsed.persist && expire_kind.is_none_or(|kind| kind == unit)
        };
        let expiry_unit = if option.eq_ignore_ascii_case(b"EX") {
            Some(ExpireUnit::Seconds)
        } else if option.eq_ignore_ascii_case(b"PX") {
            Some(ExpireUnit::Milliseconds)
        } else if option.eq_ignore_ascii_case(b"EXAT") {
            Some(ExpireUnit::UnixSeconds)
        } else if option.eq_ignore_ascii_case(b"PXAT") {
            Some(ExpireUnit::UnixMilliseconds)
        } else {
            None
        };
        if let Some(unit) = expiry_unit {
            match next {
                Some(argument) if expiry_allowed(unit) => {
                    parsed.expire = Some((unit, argument));
                    index += 2;
                    continue;
                }
                _ => return Err(()),
            }
        }
        let condition_free = parsed.condition == SetCondition::Always
            || matches!(
                (parsed.condition, option.to_ascii_uppercase().as_slice()),
                (SetCondition::IfMissing, b"NX") | (SetCondition::IfExists, b"XX")
            );
        if is_set && option.eq_ignore_ascii_case(b"NX") && condition_free {
            parsed.condition = SetCondition::IfMissing;
        } else if is_set && option.eq_ignore_ascii_case(b"XX") && condition_free {
            parsed.condition = SetCondition::IfExists;
        } else if is_set
            && option.eq_ignore_ascii_case(b"IFEQ")
            && parsed.condition == SetCondition::Always
            && next.is_some()
        {
            parsed.condition = SetCondition::IfEqual(next.unwrap_or_default());
            index += 1;
        } else if is_set && option.eq_ignore_ascii_case(b"GET") {
            parsed.get = true;
        } else if is_set
            && option.eq_ignore_ascii_case(b"KEEPTTL")
            && parsed.expire.is_none()
            && !parsed.persist
        {
            parsed.keep_ttl = true;
        } else if !is_set
            && option.eq_ignore_ascii_case(b"PERSIST")
            && parsed.expire.is_none()
            && !parsed.keep_ttl
        {
            parsed.persist = true;
        } else {
            return Err(());
        }
        index += 1;
    }
    Ok(parsed)
}

/// Why an expiry argument was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExpiryError {
    /// "ERR value is not an integer or out of range".
    NotInteger,
    /// "ERR invalid expire time in '<command>' command".
    Invalid,
}

/// Turns an expiry argument into an absolute deadline in Unix milliseconds, as Redis'
/// `getExpireMillisecondsOrReply`: the number must be a `string2ll` integer greater than 0,
/// seconds must not overflow when multiplied by 1000, and a relative time must not overflow
/// when added to `now_ms`. A deadline already in the past is valid (the key then expires
/// at once).
pub(crate) fn resolve_expiry(
    unit: ExpireUnit,
    text: &[u8],
    now_ms: i64,
) -> Result<i64, ExpiryError> {
    let amount = parse_i64(text).ok_or(ExpiryError::NotInteger)?;
    let in_seconds = matches!(unit, ExpireUnit::Seconds | ExpireUnit::UnixSeconds);
    if amount <= 0 || (in_seconds && amount > i64::MAX / 1000) {
        return Err(ExpiryError::Invalid);
    }
    let milliseconds = if in_seconds { amount * 1000 } else { amount };
    let deadline = match unit {
        ExpireUnit::Seconds | ExpireUnit::Milliseconds => {
            // Redis adds and then checks for a non-positive result (signed overflow).
            milliseconds.wrapping_add(now_ms)
        }
        ExpireUnit::UnixSeconds | ExpireUnit::UnixMilliseconds => milliseconds,
    };
    if deadline <= 0 {
        return Err(ExpiryError::Invalid);
    }
    Ok(deadline)
}

// ---------------------------------------------------------------------------------------------
// GETRANGE / SETRANGE / APPEND
// ---------------------------------------------------------------------------------------------

/// The byte range GETRANGE returns for `start..=end` (negative = from the end) over a value
/// of `length` bytes, as Redis' `getrangeCommand`; `None` = the empty string.
pub(crate) fn getrange_bounds(
    start: i64,
    end: i64,
    length: usize,
) -> Option<std::ops::Range<usize>> {
    let length = i64::try_from(length).expect("a value held in memory is shorter than i64::MAX");
    if start < 0 && end < 0 && start > end {
        return None;
    }
    let start = if start < 0 { length + start } else { start }.max(0);
    let end = if end < 0 { length + end } else { end }.max(0);
    let end = end.min(length - 1);
    if start > end || length == 0 {
        return None;
    }
    Some(start as usize..end as usize + 1)
}

/// Why SETRANGE/APPEND refused to grow a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeError {
    /// "ERR offset is out of range" (negative offset).
    OffsetOutOfRange,
    /// "ERR string exceeds maximum allowed size (proto-max-bulk-len)".
    TooLong,
}

/// Checks a SETRANGE offset before the key is looked at (Redis: negative → "offset is out of
/// range").
pub(crate) fn check_setrange_offset(offset: i64) -> Result<u64, RangeError> {
    u64::try_from(offset).map_err(|_| RangeError::OffsetOutOfRange)
}

/// Redis' `checkStringLength`: the value `offset + added` bytes long must not exceed
/// `bytes_max` (`proto-max-bulk-len`, [`STRING_BYTES_MAX`] by default).
pub(crate) fn check_string_length(
    offset: u64,
    added: u64,
    bytes_max: u64,
) -> Result<usize, RangeError> {
    match offset.checked_add(added) {
        Some(total) if total <= bytes_max => Ok(total as usize),
        _ => Err(RangeError::TooLong),
    }
}

/// SETRANGE on an existing (or empty, for a missing key) value: `patch` written at `offset`,
/// zero-padding any gap. The caller checked the length with [`check_string_length`] and that
/// `patch` is not empty.
pub(crate) fn apply_setrange(current: &[u8], offset: usize, patch: &[u8]) -> Vec<u8> {
    let end = offset + patch.len();
    let mut value = Vec::with_capacity(end.max(current.len()));
    value.extend_from_slice(current);
    if value.len() < end {
        value.resize(end, 0);
    }
    value[offset..end].copy_from_slice(patch);
    value
}

// ---------------------------------------------------------------------------------------------
// INCRBYFLOAT: x87 80-bit long double, emulated
// ---------------------------------------------------------------------------------------------

/// Why INCRBYFLOAT failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FloatError {
    /// "ERR value is not a valid float".
    NotAFloat,
    /// "ERR increment would produce NaN or Infinity".
    NanOrInfinity,
}

/// INCRBYFLOAT's arithmetic: parses both texts as Redis' `string2ld` (glibc `strtold`, no
/// leading space, whole text consumed, no overflow or underflow to zero, no NaN), adds them in
/// x87 80-bit extended precision, and formats the sum as Redis' `ld2string(…, LD_STR_HUMAN)`:
/// `%.17Lf` with trailing zeros and a trailing point removed, `-0` written `0`.
///
/// Redis does this with the C `long double`, which on x86-64 Linux is the 80-bit format with a
/// 64-bit significand; Rust has no such type, so [`LongDouble`] emulates it bit-exactly. That
/// precision is why `10.5 + 0.1` prints `10.6` (an `f64` sum prints `10.59999999999999964`).
pub(crate) fn increment_by_float(current: &[u8], increment: &[u8]) -> Result<Vec<u8>, FloatError> {
    let current = LongDouble::parse(current).ok_or(FloatError::NotAFloat)?;
    let increment = LongDouble::parse(increment).ok_or(FloatError::NotAFloat)?;
    let sum = current.add(increment);
    if !sum.is_finite() {
        return Err(FloatError::NanOrInfinity);
    }
    Ok(sum.format_human())
}

/// Smallest exponent of a [`LongDouble`]: the 80-bit format's minimum normal exponent
/// (-16382) minus the 63 fraction bits. Subnormals use it with a significand below 2^63.
const LONG_DOUBLE_EXPONENT_MIN: i64 = -16382 - 63;
/// Largest exponent of a finite [`LongDouble`]: 16383 - 63.
const LONG_DOUBLE_EXPONENT_MAX: i64 = 16383 - 63;

/// An x87 80-bit extended-precision value: `(-1)^negative × significand × 2^exponent`.
/// Canonical: a normal value has bit 63 of `significand` set; a subnormal has exponent
/// [`LONG_DOUBLE_EXPONENT_MIN`]; zero has significand 0. `infinite` marks ±infinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LongDouble {
    negative: bool,
    significand: u64,
    exponent: i64,
    infinite: bool,
}

impl LongDouble {
    const fn zero(negative: bool) -> LongDouble {
        LongDouble {
            negative,
            significand: 0,
            exponent: 0,
            infinite: false,
        }
    }

    const fn infinity(negative: bool) -> LongDouble {
        LongDouble {
            negative,
            significand: 0,
            exponent: 0,
            infinite: true,
        }
    }

    fn is_finite(self) -> bool {
        !self.infinite
    }

    /// Parses `text` as Redis' `string2ld`. `None` where Redis says "not a valid float".
    pub(crate) fn parse(text: &[u8]) -> Option<LongDouble> {
        if text.is_empty() || text.len() >= FLOAT_TEXT_BYTES_MAX {
            return None;
        }
        let (negative, body) = match text {
            [b'-', rest @ ..] => (true, rest),
            [b'+', rest @ ..] => (false, rest),
            _ => (false, text),
        };
        if body.eq_ignore_ascii_case(b"inf") || body.eq_ignore_ascii_case(b"infinity") {
            return Some(LongDouble::infinity(negative));
        }
        let parsed = if body.len() > 2 && body[0] == b'0' && (body[1] | 0x20) == b'x' {
            parse_hexadecimal(&body[2..])?
        } else {
            parse_decimal(body)?
        };
        let value = match parsed {
            Parsed::Zero => LongDouble::zero(negative),
            Parsed::Value(mut value) => {
                value.negative = negative;
                value
            }
        };
        Some(value)
    }

    /// Round-to-nearest-even sum, as the FPU computes it.
    pub(crate) fn add(self, other: LongDouble) -> LongDouble {
        if self.infinite || other.infinite {
            // inf + -inf is NaN; both are refused by the caller, so report infinity.
            let negative = if self.infinite {
                self.negative
            } else {
                other.negative
            };
            return LongDouble::infinity(negative);
        }
        if other.significand == 0 {
            if self.significand == 0 {
                return LongDouble::zero(self.negative && other.negative);
            }
            return self;
        }
        if self.significand == 0 {
            return other;
        }
        let (large, small) = if self.exponent >= other.exponent {
            (self, other)
        } else {
            (other, self)
        };
        const GUARD_BITS: u32 = 62;
        let large_bits = u128::from(large.significand) << GUARD_BITS;
        let shift = large.exponent - small.exponent;
        let small_full = u128::from(small.significand) << GUARD_BITS;
        let small_bits = if shift >= 127 {
            1 // only a sticky bit remains
        } else {
            let shift = shift as u32;
            let kept = small_full >> shift;
            let lost = small_full & ((1u128 << shift) - 1);
            kept | u128::from(lost != 0)
        };
        let exponent = large.exponent - i64::from(GUARD_BITS);
        if large.negative == small.negative {
            return round_long_double(large.negative, large_bits + small_bits, false, exponent);
        }
        match large_bits.cmp(&small_bits) {
            Ordering::Equal => LongDouble::zero(false),
            Ordering::Greater => {
                round_long_double(large.negative, large_bits - small_bits, false, exponent)
            }
            Ordering::Less => {
                round_long_double(small.negative, small_bits - large_bits, false, exponent)
            }
        }
    }

    /// `%.17Lf`, then trailing zeros and point trimmed, `-0` → `0` (Redis' LD_STR_HUMAN).
    pub(crate) fn format_human(self) -> Vec<u8> {
        debug_assert!(self.is_finite());
        let mut integral: Vec<u8>;
        let mut fraction: u64 = 0;
        const FRACTION_DIGITS: u32 = 17;
        const FRACTION_SCALE: u64 = 10u64.pow(FRACTION_DIGITS);
        if self.significand == 0 {
            integral = b"0".to_vec();
        } else if self.exponent >= 0 {
            let mut number = BigUint::from_u64(self.significand);
            number.shift_left(self.exponent as u64);
            integral = number.to_decimal();
        } else {
            let shift = (-self.exponent) as u64;
            let whole = if shift >= 64 {
                0
            } else {
                self.significand >> shift
            };
            let part = if shift >= 64 {
                self.significand
            } else {
                self.significand & ((1u64 << shift) - 1)
            };
            // part / 2^shift < 1; scaled by 10^17 it fits in 121 bits.
            let scaled = u128::from(part) * u128::from(FRACTION_SCALE);
            let (mut digits, round_up) = if shift >= 122 {
                (0u128, false) // below half a unit in the last place
            } else {
                let shift = shift as u32;
                let digits = scaled >> shift;
                let rest = scaled & ((1u128 << shift) - 1);
                let half = 1u128 << (shift - 1);
                let round_up = rest > half || (rest == half && digits & 1 == 1);
                (digits, round_up)
            };
            let mut whole = whole;
            if round_up {
                digits += 1;
                if digits == u128::from(FRACTION_SCALE) {
                    digits = 0;
                    whole += 1;
                }
            }
            fraction = digits as u64;
            integral = whole.to_string().into_bytes();
        }
        let mut text = Vec::with_capacity(integral.len() + 20);
        if self.negative {
            text.push(b'-');
        }
        text.append(&mut integral);
        if fraction != 0 {
            let mut digits = format!(".{fraction:017}").into_bytes();
            while digits.last() == Some(&b'0') {
                digits.pop();
            }
            text.extend_from_slice(&digits);
        }
        if text == b"-0" {
            text.remove(0);
        }
        text
    }
}

/// Result of parsing a finite number's digits.
enum Parsed {
    Zero,
    Value(LongDouble),
}

/// Rounds `value × 2^exponent` (plus a sticky fraction below it when `sticky`) to the nearest
/// [`LongDouble`], ties to even, with subnormals and overflow to infinity. `value != 0`.
fn round_long_double(negative: bool, value: u128, sticky: bool, exponent: i64) -> LongDouble {
    debug_assert!(value != 0);
    let bit_length = i64::from(128 - value.leading_zeros());
    let target = (exponent + bit_length - 64).max(LONG_DOUBLE_EXPONENT_MIN);
    let shift = target - exponent;
    let (mut significand, mut target) = if shift <= 0 {
        ((value << (-shift) as u32) as u64, target)
    } else if shift > 128 {
        (0u64, target)
    } else {
        let shift = shift as u32;
        let kept = if shift == 128 { 0 } else { value >> shift };
        let rest = if shift == 128 {
            value
        } else {
            value & ((1u128 << shift) - 1)
        };
        let half = 1u128 << (shift - 1);
        let round_up = rest > half || (rest == half && (sticky || kept & 1 == 1));
        let mut kept = kept + u128::from(round_up);
        let mut target = target;
        if kept == 1u128 << 64 {
            kept >>= 1;
            target += 1;
        }
        (kept as u64, target)
    };
    if significand == 0 {
        return LongDouble::zero(negative);
    }
    if target > LONG_DOUBLE_EXPONENT_MAX {
        return LongDouble::infinity(negative);
    }
    // A subnormal that rounded up into the normal range is already canonical.
    if significand >> 63 == 0 && target > LONG_DOUBLE_EXPONENT_MIN {
        let zeros = significand.leading_zeros();
        significand <<= zeros;
        target -= i64::from(zeros);
    }
    LongDouble {
        negative,
        significand,
        exponent: target,
        infinite: false,
    }
}

/// Decimal `digits[.digits][e[+-]digits]` (as strtold reads it) to the nearest value.
/// `None` if any byte is left over or the value overflows or underflows to zero (ERANGE).
fn parse_decimal(text: &[u8]) -> Option<Parsed> {
    let mut digits: Vec<u8> = Vec::new();
    let mut decimal_exponent: i64 = 0;
    let mut index = 0;
    let mut any_digit = false;
    while index < text.len() && text[index].is_ascii_digit() {
        any_digit = true;
        if !(digits.is_empty() && text[index] == b'0') {
            digits.push(text[index] - b'0');
        }
        index += 1;
    }
    if index < text.len() && text[index] == b'.' {
        index += 1;
        while index < text.len() && text[index].is_ascii_digit() {
            any_digit = true;
            if !(digits.is_empty() && text[index] == b'0') {
                digits.push(text[index] - b'0');
            }
            decimal_exponent -= 1;
            index += 1;
        }
    }
    if !any_digit {
        return None;
    }
    if index < text.len() && (text[index] | 0x20) == b'e' {
        index += 1;
        // strtold would stop before an 'e' with no digits, leaving it unconsumed.
        decimal_exponent += signed_exponent(text, &mut index)?;
    }
    if index != text.len() {
        return None;
    }
    while digits.last() == Some(&0) {
        digits.pop();
        decimal_exponent += 1;
    }
    if digits.is_empty() {
        return Some(Parsed::Zero);
    }
    // The value is 0.DDD × 10^magnitude; beyond these bounds it surely over- or underflows.
    let magnitude = decimal_exponent + digits.len() as i64;
    if magnitude > 4934 {
        return None;
    }
    if magnitude < -4952 {
        return None;
    }
    let mut number = BigUint::zero();
    for &digit in &digits {
        number.multiply_add(10, u32::from(digit));
    }
    let value = if decimal_exponent >= 0 {
        number.multiply_power_of_ten(decimal_exponent as u64);
        let (top, sticky, exponent) = number.top_bits();
        round_long_double(false, top, sticky, exponent)
    } else {
        let mut divisor = BigUint::from_u64(1);
        divisor.multiply_power_of_ten((-decimal_exponent) as u64);
        // Scale so the quotient has 67 or 68 bits: enough for 64 bits plus rounding bits.
        let scale = 67 - (number.bit_length() as i64 - divisor.bit_length() as i64);
        if scale >= 0 {
            number.shift_left(scale as u64);
        } else {
            divisor.shift_left((-scale) as u64);
        }
        let (quotient, remainder_nonzero) = number.divide_small_quotient(&divisor, 68);
        round_long_double(false, quotient, remainder_nonzero, -scale)
    };
    if value.infinite || value.significand == 0 {
        return None; // ERANGE: Redis refuses overflow and underflow to zero
    }
    Some(Parsed::Value(value))
}

/// Hexadecimal float after `0x`: `h[.h][p[+-]d]`, exact up to rounding.
fn parse_hexadecimal(text: &[u8]) -> Option<Parsed> {
    let mut value: u128 = 0;
    let mut sticky = false;
    let mut exponent: i64 = 0;
    let mut index = 0;
    let mut any_digit = false;
    let mut in_fraction = false;
    while index < text.len() {
        let byte = text[index];
        if byte == b'.' && !in_fraction {
            in_fraction = true;
            index += 1;
            continue;
        }
        let Some(digit) = (byte as char).to_digit(16) else {
            break;
        };
        any_digit = true;
        if value >> 120 == 0 {
            value = value << 4 | u128::from(digit);
            if in_fraction {
                exponent -= 4;
            }
        } else {
            sticky |= digit != 0;
            if !in_fraction {
                exponent += 4;
            }
        }
        index += 1;
    }
    if !any_digit {
        return None;
    }
    if index < text.len() && (text[index] | 0x20) == b'p' {
        index += 1;
        exponent += signed_exponent(text, &mut index)?;
    }
    if index != text.len() {
        return None;
    }
    if value == 0 {
        return Some(Parsed::Zero);
    }
    let value = round_long_double(false, value, sticky, exponent);
    if value.infinite || value.significand == 0 {
        return None;
    }
    Some(Parsed::Value(value))
}

/// Just enough arbitrary-precision unsigned arithmetic for exact decimal ↔ binary conversion.
/// Little-endian 32-bit limbs, no leading zero limbs.
#[derive(Debug, Clone)]
struct BigUint {
    limbs: Vec<u32>,
}

impl BigUint {
    fn zero() -> BigUint {
        BigUint { limbs: Vec::new() }
    }

    fn from_u64(value: u64) -> BigUint {
        let mut number = BigUint {
            limbs: vec![value as u32, (value >> 32) as u32],
        };
        number.trim();
        number
    }

    fn trim(&mut self) {
        while self.limbs.last() == Some(&0) {
            self.limbs.pop();
        }
    }

    fn bit_length(&self) -> u64 {
        match self.limbs.last() {
            None => 0,
            Some(&top) => (self.limbs.len() as u64) * 32 - u64::from(top.leading_zeros()),
        }
    }

    fn multiply_add(&mut self, factor: u32, addend: u32) {
        let mut carry = u64::from(addend);
        for limb in &mut self.limbs {
            let product = u64::from(*limb) * u64::from(factor) + carry;
            *limb = product as u32;
            carry = product >> 32;
        }
        if carry != 0 {
            self.limbs.push(carry as u32);
        }
    }

    fn multiply_power_of_ten(&mut self, mut power: u64) {
        while power >= 9 {
            self.multiply_add(1_000_000_000, 0);
            power -= 9;
        }
        if power > 0 {
            self.multiply_add(10u32.pow(power as u32), 0);
        }
    }

    fn shift_left(&mut self, bits: u64) {
        if self.limbs.is_empty() {
            return;
        }
        let limb_shift = (bits / 32) as usize;
        let bit_shift = (bits % 32) as u32;
        if bit_shift != 0 {
            let mut carry = 0u32;
            for limb in &mut self.limbs {
                let next = *limb >> (32 - bit_shift);
                *limb = (*limb << bit_shift) | carry;
                carry = next;
            }
            if carry != 0 {
                self.limbs.push(carry);
            }
        }
        if limb_shift != 0 {
            self.limbs.splice(0..0, std::iter::repeat_n(0, limb_shift));
        }
    }

    fn bit(&self, index: u64) -> bool {
        let limb = (index / 32) as usize;
        limb < self.limbs.len() && (self.limbs[limb] >> (index % 32)) & 1 == 1
    }

    /// The top 128 bits (or all, if fewer), whether any bit below them is set, and the
    /// exponent of the lowest bit returned: `self ≈ top × 2^exponent`.
    fn top_bits(&self) -> (u128, bool, i64) {
        let length = self.bit_length();
        let low = length.saturating_sub(128);
        let mut top: u128 = 0;
        for index in (low..length).rev() {
            top = top << 1 | u128::from(self.bit(index));
        }
        let sticky = (0..low).any(|index| self.bit(index));
        (top, sticky, low as i64)
    }

    fn compare(&self, other: &BigUint) -> Ordering {
        self.limbs
            .len()
            .cmp(&other.limbs.len())
            .then_with(|| self.limbs.iter().rev().cmp(other.limbs.iter().rev()))
    }

    fn subtract(&mut self, other: &BigUint) {
        debug_assert!(self.compare(other) != Ordering::Less);
        let mut borrow = 0i64;
        for (index, limb) in self.limbs.iter_mut().enumerate() {
            let subtrahend = i64::from(other.limbs.get(index).copied().unwrap_or(0)) + borrow;
            let mut difference = i64::from(*limb) - subtrahend;
            borrow = 0;
            if difference < 0 {
                difference += 1 << 32;
                borrow = 1;
            }
            *limb = difference as u32;
        }
        debug_assert_eq!(borrow, 0);
        self.trim();
    }

    /// `self / divisor` where the quotient is known to be below `2^quotient_bits` (≤ 127):
    /// the quotient and whether the remainder is non-zero. Consumes `self` as the remainder.
    fn divide_small_quotient(&mut self, divisor: &BigUint, quotient_bits: u32) -> (u128, bool) {
        let mut quotient: u128 = 0;
        for bit in (0..quotient_bits).rev() {
            let mut shifted = divisor.clone();
            shifted.shift_left(u64::from(bit));
            if self.compare(&shifted) != Ordering::Less {
                self.subtract(&shifted);
                quotient |= 1u128 << bit;
            }
        }
        (quotient, !self.limbs.is_empty())
    }

    fn to_decimal(&self) -> Vec<u8> {
        if self.limbs.is_empty() {
            return b"0".to_vec();
        }
        let mut limbs = self.limbs.clone();
        let mut chunks: Vec<u32> = Vec::new();
        while !limbs.is_empty() {
            let mut remainder = 0u64;
            for limb in limbs.iter_mut().rev() {
                let current = (remainder << 32) | u64::from(*limb);
                *limb = (current / 1_000_000_000) as u32;
                remainder = current % 1_000_000_000;
            }
            chunks.push(remainder as u32);
            while limbs.last() == Some(&0) {
                limbs.pop();
            }
        }
        let mut text = chunks.pop().expect("non-zero has a chunk").to_string();
        for chunk in chunks.iter().rev() {
            text.push_str(&format!("{chunk:09}"));
        }
        text.into_bytes()
    }
}

// ---------------------------------------------------------------------------------------------
// LCS
// ---------------------------------------------------------------------------------------------

/// One IDX match: inclusive byte ranges in `a` and `b`, and their length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LcsMatch {
    pub a: (usize, usize),
    pub b: (usize, usize),
    pub length: usize,
}

/// What [`lcs`] computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LcsResult {
    /// Length of the longest common subsequence.
    pub length: usize,
    /// The subsequence itself.
    pub text: Vec<u8>,
    /// IDX matches, last match first (Redis walks the table backwards), those shorter than
    /// `min_match_length` left out.
    pub matches: Vec<LcsMatch>,
}

/// Whether the LCS table for `a` and `b` fits the limit Redis sets: `(len(a)+1) × (len(b)+1)`
/// 4-byte cells must fit in `bytes_max` (`proto-max-bulk-len`), else "ERR Insufficient
/// memory, transient memory for LCS exceeds proto-max-bulk-len".
pub(crate) fn lcs_fits(a_length: usize, b_length: usize, bytes_max: u64) -> bool {
    let cells = (a_length as u64 + 1).checked_mul(b_length as u64 + 1);
    matches!(cells.and_then(|cells| cells.checked_mul(4)), Some(bytes) if bytes <= bytes_max)
}

/// The longest common subsequence of `a` and `b`, with the match ranges exactly as Redis'
/// `lcsCommand` emits them (same dynamic-programming table, same backward walk and tie
/// breaking: on a mismatch it steps back in `a` only when that keeps a strictly longer LCS).
/// The caller checked [`lcs_fits`].
pub(crate) fn lcs(a: &[u8], b: &[u8], min_match_length: u64) -> LcsResult {
    let columns = b.len() + 1;
    let mut table = vec![0u32; (a.len() + 1) * columns];
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            table[i * columns + j] = if a[i - 1] == b[j - 1] {
                table[(i - 1) * columns + j - 1] + 1
            } else {
                table[(i - 1) * columns + j].max(table[i * columns + j - 1])
            };
        }
    }
    let length = table[a.len() * columns + b.len()] as usize;
    let mut text = vec![0u8; length];
    let mut matches = Vec::new();
    let mut remaining = length;
    let (mut i, mut j) = (a.len(), b.len());
    // The current range, if any: (a_start, a_end, b_start, b_end).
    let mut range: Option<(usize, usize, usize, usize)> = None;
    while i > 0 && j > 0 {
        let mut emit = false;
        if a[i - 1] == b[j - 1] {
            text[remaining - 1] = a[i - 1];
            range = Some(match range {
                None => (i - 1, i - 1, j - 1, j - 1),
                // A match always follows a match diagonally, so the range just grows.
                Some((a_start, a_end, b_start, b_end)) => {
                    debug_assert!(a_start == i && b_start == j);
                    (a_start - 1, a_end, b_start - 1, b_end)
                }
            });
            let (a_start, _, b_start, _) = range.expect("just set");
            if a_start == 0 || b_start == 0 {
                emit = true;
            }
            remaining -= 1;
            i -= 1;
            j -= 1;
        } else {
            if table[(i - 1) * columns + j] > table[i * columns + j - 1] {
                i -= 1;
            } else {
                j -= 1;
            }
            emit = range.is_some();
        }
        if emit {
            if let Some((a_start, a_end, b_start, b_end)) = range.take() {
                let match_length = a_end - a_start + 1;
                if min_match_length == 0 || match_length as u64 >= min_match_length {
                    matches.push(LcsMatch {
                        a: (a_start, a_end),
                        b: (b_start, b_end),
                        length: match_length,
                    });
                }
            }
        }
    }
    LcsResult {
        length,
        text,
        matches,
    }
}

/// Reads an optionally signed decimal exponent at `*index` (after its `e`/`p`), clamped to
/// ±1 000 000 (far past any finite long double); `None` when no digit follows.
fn signed_exponent(text: &[u8], index: &mut usize) -> Option<i64> {
    let negative = match text.get(*index) {
        Some(b'-') => {
            *index += 1;
            true
        }
        Some(b'+') => {
            *index += 1;
            false
        }
        _ => false,
    };
    let start = *index;
    let mut exponent: i64 = 0;
    while *index < text.len() && text[*index].is_ascii_digit() {
        exponent = (exponent * 10 + i64::from(text[*index] - b'0')).min(1_000_000);
        *index += 1;
    }
    (*index > start).then_some(if negative { -exponent } else { exponent })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incr_float(current: &str, increment: &str) -> Result<String, FloatError> {
        increment_by_float(current.as_bytes(), increment.as_bytes())
            .map(|text| String::from_utf8(text).expect("ascii"))
    }

    #[test]
    fn increments_overflow_like_redis() {
        assert_eq!(checked_increment(i64::MAX, 1), None);
        assert_eq!(checked_increment(i64::MIN, -1), None);
        assert_eq!(checked_increment(i64::MAX, -1), Some(i64::MAX - 1));
    }

    fn options(words: &[&'static str]) -> Result<SetOptions<'static>, ()> {
        let leaked: &'static [&'static [u8]] = Box::leak(
            words
                .iter()
                .map(|word| word.as_bytes())
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        );
        parse_set_options(leaked, OptionsFor::Set)
    }

    #[test]
    fn set_options_any_order_any_case() {
        let parsed = options(&["get", "Px", "100", "nX"]).expect("valid");
        assert_eq!(parsed.condition, SetCondition::IfMissing);
        assert_eq!(parsed.expire, Some((ExpireUnit::Milliseconds, &b"100"[..])));
        assert!(parsed.get);
        let parsed = options(&["KEEPTTL", "XX"]).expect("valid");
        assert!(parsed.keep_ttl);
        assert_eq!(parsed.condition, SetCondition::IfExists);
        let parsed = options(&["ifeq", "old", "EXAT", "5", "GET"]).expect("valid");
        assert_eq!(parsed.condition, SetCondition::IfEqual(b"old"));
        // Redis 7 accepts a repeated expiry of the same kind; the last one wins.
        let parsed = options(&["EX", "1", "EX", "2"]).expect("valid");
        assert_eq!(parsed.expire, Some((ExpireUnit::Seconds, &b"2"[..])));
        assert!(options(&["NX", "NX", "GET", "GET"]).is_ok());
    }

    #[test]
    fn set_options_conflicts_are_syntax_errors() {
        for words in [
            &["NX", "XX"][..],
            &["XX", "NX"],
            &["EX", "1", "PX", "1"],
            &["KEEPTTL", "EX", "1"],
            &["PXAT", "1", "KEEPTTL"],
            &["EX"],
            &["IFEQ"],
            &["IFEQ", "v", "NX"],
            &["XX", "IFEQ", "v"],
            &["IFEQ", "a", "IFEQ", "b"],
            &["PERSIST"],
            &["foo"],
        ] {
            assert_eq!(options(words), Err(()), "{words:?}");
        }
    }

    #[test]
    fn getex_options() {
        let words: [&[u8]; 1] = [b"persist"];
        assert!(
            parse_set_options(&words, OptionsFor::Getex)
                .expect("valid")
                .persist
        );
        for words in [
            &[&b"NX"[..]][..],
            &[b"GET"],
            &[b"KEEPTTL"],
            &[b"PERSIST", b"EX", b"1"],
            &[b"IFEQ", b"x"],
        ] {
            assert_eq!(parse_set_options(words, OptionsFor::Getex), Err(()));
        }
    }

    #[test]
    fn expiry_resolution_matches_redis() {
        let now = 1_700_000_000_000;
        assert_eq!(
            resolve_expiry(ExpireUnit::Seconds, b"10", now),
            Ok(now + 10_000)
        );
        assert_eq!(
            resolve_expiry(ExpireUnit::Milliseconds, b"10", now),
            Ok(now + 10)
        );
        assert_eq!(resolve_expiry(ExpireUnit::UnixSeconds, b"1", now), Ok(1000));
        assert_eq!(
            resolve_expiry(ExpireUnit::UnixMilliseconds, b"1", now),
            Ok(1)
        );
        assert_eq!(
            resolve_expiry(ExpireUnit::Seconds, b"x", now),
            Err(ExpiryError::NotInteger)
        );
        assert_eq!(
            resolve_expiry(ExpireUnit::Seconds, b"+1", now),
            Err(ExpiryError::NotInteger)
        );
        // Checked against Redis 7.0.15: each is "invalid expire time in 'set' command".
        for (unit, text) in [
            (ExpireUnit::Seconds, &b"0"[..]),
            (ExpireUnit::Seconds, b"-1"),
            (ExpireUnit::Seconds, b"9223372036854775"),
            (ExpireUnit::Seconds, b"9223372036854776"),
            (ExpireUnit::Milliseconds, b"9223372036854775807"),
            (ExpireUnit::UnixSeconds, b"9223372036854775807"),
            (ExpireUnit::UnixMilliseconds, b"0"),
        ] {
            assert_eq!(
                resolve_expiry(unit, text, now),
                Err(ExpiryError::Invalid),
                "{unit:?} {text:?}"
            );
        }
        assert_eq!(
            resolve_expiry(ExpireUnit::UnixMilliseconds, b"9223372036854775807", now),
            Ok(i64::MAX)
        );
    }

    #[test]
    fn getrange_like_redis() {
        // "Hello World" examples from the Redis docs.
        let length = 11;
        assert_eq!(getrange_bounds(0, 3, length), Some(0..4));
        assert_eq!(getrange_bounds(-3, -1, length), Some(8..11));
        assert_eq!(getrange_bounds(0, -1, length), Some(0..11));
        assert_eq!(getrange_bounds(10, 100, length), Some(10..11));
        assert_eq!(getrange_bounds(-100, 2, length), Some(0..3));
        assert_eq!(getrange_bounds(-1, -5, length), None);
        assert_eq!(getrange_bounds(5, 3, length), None);
        assert_eq!(getrange_bounds(11, 20, length), None);
        assert_eq!(
            getrange_bounds(0, -100, length),
            Some(0..1),
            "end clamps to 0, like Redis"
        );
        assert_eq!(getrange_bounds(0, -1, 0), None);
        assert_eq!(getrange_bounds(i64::MIN, i64::MAX, length), Some(0..11));
    }

    #[test]
    fn setrange_limits() {
        assert_eq!(check_setrange_offset(-1), Err(RangeError::OffsetOutOfRange));
        assert_eq!(check_setrange_offset(5), Ok(5));
        // Redis 7.0.15: offset 536870911 with 1 byte is fine, 2 bytes are too long.
        assert_eq!(
            check_string_length(536_870_911, 1, STRING_BYTES_MAX),
            Ok(536_870_912)
        );
        assert_eq!(
            check_string_length(536_870_911, 2, STRING_BYTES_MAX),
            Err(RangeError::TooLong)
        );
        assert_eq!(
            check_string_length(u64::MAX, 2, STRING_BYTES_MAX),
            Err(RangeError::TooLong)
        );
        assert_eq!(apply_setrange(b"Hello World", 6, b"Redis"), b"Hello Redis");
        assert_eq!(apply_setrange(b"", 3, b"ab"), b"\0\0\0ab");
        assert_eq!(apply_setrange(b"abcdef", 1, b"X"), b"aXcdef");
    }

    #[test]
    fn incrbyfloat_formats_like_redis() {
        // Outputs of Redis 7.0.15 on x86-64 (80-bit long double).
        assert_eq!(incr_float("10.5", "0.1").as_deref(), Ok("10.6"));
        assert_eq!(incr_float("3.0e3", "200").as_deref(), Ok("3200"));
        assert_eq!(incr_float("5.0e3", "0").as_deref(), Ok("5000"));
        assert_eq!(incr_float("10", "-5").as_deref(), Ok("5"));
        assert_eq!(incr_float("0", "0.1").as_deref(), Ok("0.1"));
        assert_eq!(
            incr_float("9223372036854775807", "1").as_deref(),
            Ok("9223372036854775808")
        );
        assert_eq!(incr_float("1", "-1").as_deref(), Ok("0"));
        assert_eq!(incr_float("-0", "0").as_deref(), Ok("0"));
        assert_eq!(incr_float("0x10", "0x1p-1").as_deref(), Ok("16.5"));
        assert_eq!(incr_float("1.5e-4950", "0").as_deref(), Ok("0"));
        assert_eq!(incr_float("+.5", "1.").as_deref(), Ok("1.5"));
        assert_eq!(incr_float("0.1", "0.2").as_deref(), Ok("0.3"));
        assert_eq!(
            incr_float("1", "0.00000000000000001").as_deref(),
            Ok("1.00000000000000001")
        );
        assert_eq!(incr_float("1", "1e-18").as_deref(), Ok("1"));
    }

    #[test]
    fn incrbyfloat_huge_values_print_every_digit() {
        // `INCRBYFLOAT f 1e4932` from 5000 prints the exact binary value (Redis 7.0.15).
        let text = incr_float("5000", "1e4932").expect("finite");
        assert!(text
            .starts_with("1000000000000000000006018949387963891323837774254533114773785041352533"));
        assert!(text.ends_with("6538418113791886622720"));
        assert_eq!(text.len(), 4933);
    }

    #[test]
    fn incrbyfloat_errors() {
        for bad in [
            "", " 1", "1 ", "abc", "1e", "1e+", ".", "nan", "1e5000", "1e-5000", "1\0x", "--1",
        ] {
            assert_eq!(incr_float(bad, "1"), Err(FloatError::NotAFloat), "{bad:?}");
            assert_eq!(incr_float("1", bad), Err(FloatError::NotAFloat), "{bad:?}");
        }
        assert_eq!(incr_float("1", "inf"), Err(FloatError::NanOrInfinity));
        assert_eq!(
            incr_float("1e4932", "1e4932"),
            Err(FloatError::NanOrInfinity)
        );
        assert_eq!(incr_float("-inf", "inf"), Err(FloatError::NanOrInfinity));
        let long = "1".repeat(FLOAT_TEXT_BYTES_MAX);
        assert_eq!(incr_float(&long, "1"), Err(FloatError::NotAFloat));
    }

    #[test]
    fn long_double_parse_is_correctly_rounded() {
        // 0.1 in 80-bit: 0xCCCCCCCCCCCCCCCD × 2^-67.
        let tenth = LongDouble::parse(b"0.1").expect("valid");
        assert_eq!(
            (tenth.significand, tenth.exponent),
            (0xCCCC_CCCC_CCCC_CCCD, -67)
        );
        let one = LongDouble::parse(b"1").expect("valid");
        assert_eq!((one.significand, one.exponent), (1 << 63, -63));
        let max = LongDouble::parse(b"1.18973149535723176502e+4932").expect("LDBL_MAX");
        assert_eq!(
            (max.significand, max.exponent),
            (u64::MAX, LONG_DOUBLE_EXPONENT_MAX)
        );
        let min_subnormal =
            LongDouble::parse(b"3.64519953188247460253e-4951").expect("denormal min");
        assert_eq!(
            (min_subnormal.significand, min_subnormal.exponent),
            (1, LONG_DOUBLE_EXPONENT_MIN)
        );
    }

    #[test]
    fn lcs_matches_redis_examples() {
        // From the Redis LCS documentation: ohmytext / mynewtext.
        let result = lcs(b"ohmytext", b"mynewtext", 0);
        assert_eq!(result.text, b"mytext");
        assert_eq!(result.length, 6);
        assert_eq!(
            result.matches,
            vec![
                LcsMatch {
                    a: (4, 7),
                    b: (5, 8),
                    length: 4
                },
                LcsMatch {
                    a: (2, 3),
                    b: (0, 1),
                    length: 2
                },
            ]
        );
        let result = lcs(b"ohmytext", b"mynewtext", 4);
        assert_eq!(
            result.matches,
            vec![LcsMatch {
                a: (4, 7),
                b: (5, 8),
                length: 4
            }]
        );
        assert_eq!(lcs(b"", b"abc", 0).length, 0);
        assert_eq!(lcs(b"abc", b"xyz", 0).matches, vec![]);
    }

    #[test]
    fn lcs_limit() {
        assert!(lcs_fits(1000, 1000, STRING_BYTES_MAX));
        assert!(
            !lcs_fits(12000, 12000, STRING_BYTES_MAX),
            "Redis 7.0.15 refuses two 12000-byte strings"
        );
    }
}
