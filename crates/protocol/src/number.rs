//! Number parsing and printing shared by requests and frames.

use bytes::{BufMut, BytesMut};

/// Parses a decimal `i64` exactly as Redis' `string2ll` does for length lines: an optional `-`,
/// then digits with no leading zero (except `0` itself), nothing else — no `+`, no spaces, no
/// `-0`, no overflow. `None` if the text is not such a number.
pub fn parse_i64_strict(text: &[u8]) -> Option<i64> {
    if text == b"0" {
        return Some(0);
    }
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    if !matches!(digits.first(), Some(b'1'..=b'9')) {
        return None;
    }
    let mut magnitude: u64 = 0;
    for &byte in digits {
        if !byte.is_ascii_digit() {
            return None;
        }
        magnitude = magnitude
            .checked_mul(10)?
            .checked_add(u64::from(byte - b'0'))?;
    }
    if negative {
        // i64::MIN's magnitude is one more than i64::MAX.
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// Parses the value of a `:` reply leniently (optional sign, leading zeros allowed), since
/// replies come from servers that may format integers differently from Redis.
pub(crate) fn parse_i64_lenient(text: &[u8]) -> Option<i64> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// Appends the decimal form of `value`.
pub(crate) fn put_i64(out: &mut BytesMut, value: i64) {
    // 20 digits for u64::MAX, plus the sign.
    let mut digits = [0u8; 20];
    let mut magnitude = value.unsigned_abs();
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (magnitude % 10) as u8;
        magnitude /= 10;
        if magnitude == 0 {
            break;
        }
    }
    if value < 0 {
        out.put_u8(b'-');
    }
    out.put_slice(&digits[start..]);
}

/// Longest text [`format_double`] produces: sign, 17 significant digits, a point, and either
/// `e-308` or up to 4 leading zeros (`-0.0001234…`). 32 leaves room.
pub(crate) const DOUBLE_TEXT_BYTES_MAX: usize = 32;

/// Formats a double the way ringkv replies with it, in both RESP2 (as a bulk string) and RESP3
/// (after `,`).
///
/// The choice, following Redis 7.2+ (which replaced `%.17g` with the shortest-round-trip
/// `fpconv_dtoa`): the *shortest* digits that parse back to the same `f64`, laid out like
/// printf's `%.17g` — plain notation when the decimal exponent is in `-4..17`, otherwise
/// `d.ddde+XX` with at least two exponent digits; integral values carry no decimal point
/// (`3`, not `3.0`). Infinities are `inf` and `-inf`, NaN is `nan`, as Redis writes them.
/// Examples: `1.5`, `3`, `0.1`, `1e+17`, `1.5e-07`, `-0`.
pub fn format_double(value: f64) -> String {
    let mut text = [0u8; DOUBLE_TEXT_BYTES_MAX];
    let length = format_double_into(value, &mut text);
    // Only ASCII is ever written.
    String::from_utf8_lossy(&text[..length]).into_owned()
}

/// [`format_double`] into a stack buffer, returning the length written.
pub(crate) fn format_double_into(value: f64, text: &mut [u8; DOUBLE_TEXT_BYTES_MAX]) -> usize {
    if value.is_nan() {
        text[..3].copy_from_slice(b"nan");
        return 3;
    }
    if value.is_infinite() {
        let word: &[u8] = if value > 0.0 { b"inf" } else { b"-inf" };
        text[..word.len()].copy_from_slice(word);
        return word.len();
    }
    // `{:e}` prints the shortest round-trip digits: "-1.2345e-7", "1e20", "0e0".
    let mut scientific = StackText::default();
    std::fmt::Write::write_fmt(&mut scientific, format_args!("{value:e}"))
        .expect("a finite f64 in {:e} form fits in 32 bytes");
    let scientific = scientific.as_bytes();
    let (negative, rest) = match scientific {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, scientific),
    };
    let e_at = rest
        .iter()
        .position(|&b| b == b'e')
        .expect("{:e} output has an exponent");
    let exponent: i32 = std::str::from_utf8(&rest[e_at + 1..])
        .ok()
        .and_then(|text| text.parse().ok())
        .expect("{:e} exponent is an integer");
    let mut digits = [0u8; 17];
    let mut digit_count = 0;
    for &byte in rest[..e_at].iter().filter(|b| b.is_ascii_digit()) {
        digits[digit_count] = byte;
        digit_count += 1;
    }
    let digits = &digits[..digit_count];

    let mut out = TextWriter { text, length: 0 };
    if negative {
        out.push(b'-');
    }
    if !(-4..17).contains(&exponent) {
        out.push(digits[0]);
        if digits.len() > 1 {
            out.push(b'.');
            out.extend(&digits[1..]);
        }
        out.push(b'e');
        out.push(if exponent < 0 { b'-' } else { b'+' });
        let magnitude = exponent.unsigned_abs();
        if magnitude >= 100 {
            out.push(b'0' + (magnitude / 100) as u8);
        }
        out.push(b'0' + (magnitude / 10 % 10) as u8);
        out.push(b'0' + (magnitude % 10) as u8);
    } else if exponent >= 0 {
        let integral = exponent as usize + 1;
        if digits.len() <= integral {
            out.extend(digits);
            for _ in digits.len()..integral {
                out.push(b'0');
            }
        } else {
            out.extend(&digits[..integral]);
            out.push(b'.');
            out.extend(&digits[integral..]);
        }
    } else {
        out.extend(b"0.");
        for _ in 1..exponent.unsigned_abs() {
            out.push(b'0');
        }
        out.extend(digits);
    }
    out.length
}

/// A bounded writer over the output buffer of [`format_double_into`].
struct TextWriter<'a> {
    text: &'a mut [u8; DOUBLE_TEXT_BYTES_MAX],
    length: usize,
}

impl TextWriter<'_> {
    fn push(&mut self, byte: u8) {
        self.text[self.length] = byte;
        self.length += 1;
    }

    fn extend(&mut self, bytes: &[u8]) {
        self.text[self.length..self.length + bytes.len()].copy_from_slice(bytes);
        self.length += bytes.len();
    }
}

/// A `fmt::Write` sink on the stack, so formatting a double does not allocate.
#[derive(Default)]
struct StackText {
    bytes: [u8; DOUBLE_TEXT_BYTES_MAX],
    length: usize,
}

impl StackText {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.length]
    }
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        let end = self.length + text.len();
        if end > self.bytes.len() {
            return Err(std::fmt::Error);
        }
        self.bytes[self.length..end].copy_from_slice(text.as_bytes());
        self.length = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_parse_matches_string2ll() {
        assert_eq!(parse_i64_strict(b"0"), Some(0));
        assert_eq!(parse_i64_strict(b"5"), Some(5));
        assert_eq!(parse_i64_strict(b"-1"), Some(-1));
        assert_eq!(parse_i64_strict(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64_strict(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"+5",
            b"5x",
            b" 5",
            b"05",
            b"-0",
            b"00",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"99999999999999999999999",
        ] {
            assert_eq!(
                parse_i64_strict(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn put_i64_extremes() {
        for value in [0, 7, -7, 10, i64::MAX, i64::MIN] {
            let mut out = BytesMut::new();
            put_i64(&mut out, value);
            assert_eq!(&out[..], value.to_string().as_bytes());
        }
    }

    #[test]
    fn double_texts() {
        let cases: &[(f64, &str)] = &[
            (3.0, "3"),
            (-3.0, "-3"),
            (1.5, "1.5"),
            (0.1, "0.1"),
            (1.1, "1.1"),
            (0.0, "0"),
            (-0.0, "-0"),
            (100.0, "100"),
            (1e16, "10000000000000000"),
            (1e17, "1e+17"),
            (1.5e17, "1.5e+17"),
            (0.0001, "0.0001"),
            (0.00012345, "0.00012345"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e300, "1e+300"),
            (-2.2250738585072014e-308, "-2.2250738585072014e-308"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (123456.789, "123456.789"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "nan"),
        ];
        for &(value, text) in cases {
            assert_eq!(format_double(value), text, "{value:?}");
            if value.is_finite() {
                assert_eq!(text.parse::<f64>().unwrap().to_bits(), value.to_bits());
            }
        }
    }
}
