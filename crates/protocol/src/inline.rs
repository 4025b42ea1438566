//! Splitting an inline command line (`SET "a b" 'c'`) into arguments, as Redis'
//! `sdssplitargs` does.

use std::ops::Range;

use crate::ProtocolError;

/// One argument of an inline line: a plain slice of the line when it has no quotes, else the
/// bytes after unquoting and unescaping.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum InlineArg {
    /// `line[range]` as is.
    Slice(Range<usize>),
    /// Unquoted, unescaped bytes.
    Owned(Vec<u8>),
}

/// C `isspace` in the "C" locale: what `sdssplitargs` skips between arguments and accepts
/// after a closing quote.
fn is_c_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Splits `line` (without its line ending) like `sdssplitargs`:
/// - arguments are separated by C whitespace;
/// - `"…"` supports `\n \r \t \b \a \xHH` and `\<any>` for that byte;
/// - `'…'` supports only `\'`;
/// - quotes may start mid-argument (`a"b c"` is `ab c`), but a closing quote must be followed
///   by whitespace or the end of the line;
/// - a NUL byte ends the line, since `sdssplitargs` reads a C string.
///
/// Returns [`ProtocolError::UnbalancedQuotes`] where `sdssplitargs` returns NULL.
pub(crate) fn split_inline(line: &[u8]) -> Result<Vec<InlineArg>, ProtocolError> {
    let line = match line.iter().position(|&b| b == 0) {
        Some(nul) => &line[..nul],
        None => line,
    };
    let mut args = Vec::new();
    let mut pos = 0;
    loop {
        while pos < line.len() && is_c_space(line[pos]) {
            pos += 1;
        }
        if pos == line.len() {
            return Ok(args);
        }
        let (arg, end) = split_one(line, pos)?;
        args.push(arg);
        pos = end;
    }
}

/// Reads the argument starting at `start` (not whitespace); returns it and where it ended.
fn split_one(line: &[u8], start: usize) -> Result<(InlineArg, usize), ProtocolError> {
    #[derive(PartialEq)]
    enum Quote {
        None,
        Double,
        Single,
    }
    let mut quote = Quote::None;
    // `None` while the argument is still a plain slice `line[start..pos]`.
    let mut owned: Option<Vec<u8>> = None;
    let mut pos = start;
    loop {
        let byte = line.get(pos).copied();
        match quote {
            Quote::Double => {
                let current = owned.as_mut().expect("quoted arguments are owned");
                match byte {
                    None => return Err(ProtocolError::UnbalancedQuotes),
                    Some(b'\\') => {
                        let hex = line
                            .get(pos + 1..pos + 4)
                            .filter(|escape| escape[0] == b'x')
                            .and_then(|escape| {
                                Some(hex_value(escape[1])? * 16 + hex_value(escape[2])?)
                            });
                        if let Some(value) = hex {
                            current.push(value);
                            pos += 4;
                        } else if let Some(&escaped) = line.get(pos + 1) {
                            current.push(match escaped {
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                b'b' => 0x08,
                                b'a' => 0x07,
                                other => other,
                            });
                            pos += 2;
                        } else {
                            // A backslash ending the line: kept, then the quote is unterminated.
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                    }
                    Some(b'"') => return close_quote(line, pos, owned),
                    Some(other) => {
                        current.push(other);
                        pos += 1;
                    }
                }
            }
            Quote::Single => {
                let current = owned.as_mut().expect("quoted arguments are owned");
                match byte {
                    None => return Err(ProtocolError::UnbalancedQuotes),
                    Some(b'\\') if line.get(pos + 1) == Some(&b'\'') => {
                        current.push(b'\'');
                        pos += 2;
                    }
                    Some(b'\'') => return close_quote(line, pos, owned),
                    Some(other) => {
                        current.push(other);
                        pos += 1;
                    }
                }
            }
            Quote::None => match byte {
                // Only these end an unquoted argument (not \v or \f, unlike the skipping).
                None | Some(b' ' | b'\n' | b'\r' | b'\t') => {
                    let arg = match owned {
                        Some(bytes) => InlineArg::Owned(bytes),
                        None => InlineArg::Slice(start..pos),
                    };
                    return Ok((arg, pos));
                }
                Some(opening @ (b'"' | b'\'')) => {
                    owned.get_or_insert_with(|| line[start..pos].to_vec());
                    quote = if opening == b'"' {
                        Quote::Double
                    } else {
                        Quote::Single
                    };
                    pos += 1;
                }
                Some(other) => {
                    if let Some(current) = owned.as_mut() {
                        current.push(other);
                    }
                    pos += 1;
                }
            },
        }
    }
}

/// A closing quote at `pos` ends the argument; it must be followed by whitespace or the end.
fn close_quote(
    line: &[u8],
    pos: usize,
    owned: Option<Vec<u8>>,
) -> Result<(InlineArg, usize), ProtocolError> {
    match line.get(pos + 1) {
        Some(&next) if !is_c_space(next) => Err(ProtocolError::UnbalancedQuotes),
        _ => {
            let bytes = owned.expect("quoted arguments are owned");
            Ok((InlineArg::Owned(bytes), pos + 1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtocolError> {
        Ok(split_inline(line)?
            .into_iter()
            .map(|arg| match arg {
                InlineArg::Slice(range) => line[range].to_vec(),
                InlineArg::Owned(bytes) => bytes,
            })
            .collect())
    }

    fn args(list: &[&[u8]]) -> Vec<Vec<u8>> {
        list.iter().map(|arg| arg.to_vec()).collect()
    }

    #[test]
    fn plain_words_are_slices() {
        assert_eq!(
            split_inline(b" SET  k\tv ").unwrap(),
            vec![
                InlineArg::Slice(1..4),
                InlineArg::Slice(6..7),
                InlineArg::Slice(8..9)
            ]
        );
    }

    #[test]
    fn blank_lines_have_no_arguments() {
        assert_eq!(split(b"").unwrap(), args(&[]));
        assert_eq!(split(b" \t\x0b\x0c ").unwrap(), args(&[]));
    }

    #[test]
    fn double_quote_escapes() {
        assert_eq!(
            split(br#"set "a b" "\n\r\t\b\a\\\"\x41\x4a\xzz\q""#).unwrap(),
            args(&[b"set", b"a b", b"\n\r\t\x08\x07\\\"AJxzzq"])
        );
    }

    #[test]
    fn single_quotes_only_escape_the_quote() {
        assert_eq!(
            split(br#"set 'it\'s \n' x"#).unwrap(),
            args(&[b"set", b"it's \\n", b"x"])
        );
    }

    #[test]
    fn quotes_may_start_mid_argument() {
        assert_eq!(split(br#"a"b c" d"#).unwrap(), args(&[b"ab c", b"d"]));
        assert_eq!(split(br#""""#).unwrap(), args(&[b""]));
    }

    #[test]
    fn vertical_tab_inside_an_argument_is_kept() {
        assert_eq!(split(b"a\x0bb c").unwrap(), args(&[b"a\x0bb", b"c"]));
    }

    #[test]
    fn nul_ends_the_line() {
        assert_eq!(split(b"get a\0b c").unwrap(), args(&[b"get", b"a"]));
    }

    #[test]
    fn unbalanced_quotes() {
        for line in [
            &br#"set "abc"#[..],
            br#"set 'abc"#,
            br#"set "a"b"#,
            br#"set 'a'b"#,
            br#"set "abc\"#,
            br#"set "\""#,
        ] {
            assert_eq!(
                split(line),
                Err(ProtocolError::UnbalancedQuotes),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
