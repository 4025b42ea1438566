//! Argument parsing shared by every command family, with Redis' exact
//! acceptance rules (so `SET k v EX 01` and `INCRBY k " 1"` fail as in Redis).

use crate::errors::{CmdError, CmdResult};

/// Parses an `i64` as Redis' `string2ll`: optional `-`, then digits with no
/// leading zero (`0` alone is fine), no `+`, no spaces, no `-0`, no overflow.
/// The same rule reads RESP lengths, so the protocol crate owns it.
pub(crate) use ringkv_protocol::parse_i64;

/// [`parse_i64`] or `ERR value is not an integer or out of range`.
pub(crate) fn i64_arg(text: &[u8]) -> CmdResult<i64> {
    parse_i64(text).ok_or(CmdError::NotInteger)
}

/// Parses a `u64` as Redis' `string2ull` (SCAN cursors): digits only, no sign.
pub(crate) fn parse_u64(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// Parses an `f64` as Redis' `string2d` (`strtod` on the whole string): no
/// leading space, nothing after the number, no NaN, and no overflow to
/// infinity or underflow to zero (`ERANGE`). `inf`/`-inf` written out are accepted.
pub(crate) fn parse_f64(text: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(text).ok()?;
    if text.is_empty() || text.starts_with(|c: char| c.is_ascii_whitespace()) {
        return None;
    }
    let value: f64 = text.parse().ok()?;
    if value.is_nan() {
        return None;
    }
    let spelled_infinite = text
        .trim_start_matches(['+', '-'])
        .to_ascii_lowercase()
        .starts_with("inf");
    if value.is_infinite() && !spelled_infinite {
        return None; // overflow: strtod sets ERANGE
    }
    if value == 0.0 && has_nonzero_mantissa_digit(text) {
        return None; // underflow: strtod sets ERANGE
    }
    Some(value)
}

fn has_nonzero_mantissa_digit(text: &str) -> bool {
    text.chars()
        .take_while(|c| !matches!(c, 'e' | 'E'))
        .any(|c| matches!(c, '1'..='9'))
}

/// [`parse_f64`] or `ERR value is not a valid float`.
pub(crate) fn f64_arg(text: &[u8]) -> CmdResult<f64> {
    parse_f64(text).ok_or(CmdError::NotFloat)
}

/// Case-insensitive match of an argument against an ASCII option name.
pub(crate) fn is(arg: &[u8], option: &str) -> bool {
    arg.eq_ignore_ascii_case(option.as_bytes())
}

/// The argument as lower-case text (for command and subcommand names).
pub(crate) fn lower(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_follow_string2ll() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"01",
            b"+1",
            b" 1",
            b"1 ",
            b"9223372036854775808",
            b"1.0",
        ] {
            assert_eq!(parse_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn floats_follow_string2d() {
        assert_eq!(parse_f64(b"1.5"), Some(1.5));
        assert_eq!(parse_f64(b"-inf"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_f64(b"1e3"), Some(1000.0));
        assert_eq!(parse_f64(b"0"), Some(0.0));
        assert_eq!(parse_f64(b"0e10"), Some(0.0));
        for bad in [&b""[..], b" 1", b"1 ", b"nan", b"1e400", b"1e-400", b"abc"] {
            assert_eq!(parse_f64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn cursors_are_unsigned() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"-1"), None);
        assert_eq!(parse_u64(b"18446744073709551616"), None);
    }
}
