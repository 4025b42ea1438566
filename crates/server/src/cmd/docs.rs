//! Argument syntax of every command, for COMMAND DOCS (what `redis-cli` shows as a hint while
//! typing). The syntax string is parsed into Redis' argument tree (`oneof`, `block`,
//! `pure-token`, `key`, `string` arguments with `optional` flags), which redis-cli renders back
//! into exactly the syntax string and then trims by the words already typed.

use bytes::Bytes;
use ringkv_protocol::Frame;

/// The argument syntax of `name` (lower case), as Redis' documentation writes it: the
/// `syntax` of its spec, declared in its family file.
pub(crate) fn syntax(name: &str) -> Option<&'static str> {
    super::registry().lookup(name.as_bytes())?.1.syntax
}

/// One node of the argument tree.
#[derive(Debug, Clone, PartialEq)]
enum Arg {
    Word(String),
    /// Items in sequence (a `block`), possibly `optional`.
    Block(Vec<Arg>, bool),
    /// Alternatives (a `oneof`), possibly `optional`.
    OneOf(Vec<Arg>, bool),
}

/// Parses `a b [c|d e] f` into a list of arguments.
fn parse(syntax: &str) -> Vec<Arg> {
    let chars: Vec<char> = syntax.chars().collect();
    let mut at = 0;
    match parse_alternatives(&chars, &mut at) {
        Arg::Block(items, false) => items,
        other => vec![other],
    }
}

/// alternatives := sequence ('|' sequence)*; stops at ']' or the end.
fn parse_alternatives(chars: &[char], at: &mut usize) -> Arg {
    let mut alternatives = vec![parse_sequence(chars, at)];
    while *at < chars.len() && chars[*at] == '|' {
        *at += 1;
        alternatives.push(parse_sequence(chars, at));
    }
    if alternatives.len() == 1 {
        alternatives.pop().expect("one alternative")
    } else {
        Arg::OneOf(alternatives, false)
    }
}

/// sequence := item (' ' item)*; a single item stands alone.
fn parse_sequence(chars: &[char], at: &mut usize) -> Arg {
    let mut items = Vec::new();
    while *at < chars.len() && chars[*at] != '|' && chars[*at] != ']' {
        match chars[*at] {
            ' ' => *at += 1,
            '[' => {
                *at += 1;
                let inner = parse_alternatives(chars, at);
                if *at < chars.len() && chars[*at] == ']' {
                    *at += 1;
                }
                items.push(match inner {
                    Arg::Word(w) => Arg::Block(vec![Arg::Word(w)], true),
                    Arg::Block(items, _) => Arg::Block(items, true),
                    Arg::OneOf(alternatives, _) => Arg::OneOf(alternatives, true),
                });
            }
            _ => {
                let start = *at;
                while *at < chars.len() && !matches!(chars[*at], ' ' | '|' | '[' | ']') {
                    *at += 1;
                }
                items.push(Arg::Word(chars[start..*at].iter().collect()));
            }
        }
    }
    if items.len() == 1 {
        items.pop().expect("one item")
    } else {
        Arg::Block(items, false)
    }
}

fn is_token(word: &str) -> bool {
    word.chars().any(|c| c.is_ascii_uppercase())
        && word
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn is_key(word: &str) -> bool {
    matches!(
        word,
        "key" | "key1" | "key2" | "destkey" | "newkey" | "source" | "destination"
    )
}

fn optional_flag(fields: &mut Vec<(Frame, Frame)>, optional: bool) {
    if optional {
        fields.push((
            Frame::bulk("flags"),
            Frame::Array(vec![Frame::Simple(Bytes::from_static(b"optional"))]),
        ));
    }
}

fn arg_frame(arg: &Arg) -> Frame {
    let mut fields = Vec::new();
    match arg {
        Arg::Word(word) if is_token(word) => {
            fields.push((Frame::bulk("name"), Frame::bulk(word.to_ascii_lowercase())));
            fields.push((Frame::bulk("type"), Frame::bulk("pure-token")));
            fields.push((Frame::bulk("token"), Frame::bulk(word.clone())));
        }
        Arg::Word(word) => {
            fields.push((Frame::bulk("name"), Frame::bulk(word.clone())));
            let kind = if is_key(word) { "key" } else { "string" };
            fields.push((Frame::bulk("type"), Frame::bulk(kind)));
        }
        Arg::Block(items, optional) => {
            fields.push((Frame::bulk("name"), Frame::bulk("block")));
            fields.push((Frame::bulk("type"), Frame::bulk("block")));
            optional_flag(&mut fields, *optional);
            fields.push((
                Frame::bulk("arguments"),
                Frame::Array(items.iter().map(arg_frame).collect()),
            ));
        }
        Arg::OneOf(alternatives, optional) => {
            fields.push((Frame::bulk("name"), Frame::bulk("oneof")));
            fields.push((Frame::bulk("type"), Frame::bulk("oneof")));
            optional_flag(&mut fields, *optional);
            fields.push((
                Frame::bulk("arguments"),
                Frame::Array(alternatives.iter().map(arg_frame).collect()),
            ));
        }
    }
    Frame::Map(fields)
}

/// The `arguments` array of COMMAND DOCS for a syntax string.
pub(crate) fn arguments(syntax: &str) -> Frame {
    Frame::Array(parse(syntax).iter().map(arg_frame).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders arguments the way redis-cli's `cliAddArgument` does.
    fn render(args: &[Arg], separator: &str) -> String {
        args.iter()
            .map(|arg| match arg {
                Arg::Word(w) => w.clone(),
                Arg::Block(items, optional) => wrap(render(items, " "), *optional),
                Arg::OneOf(alternatives, optional) => wrap(render(alternatives, "|"), *optional),
            })
            .collect::<Vec<_>>()
            .join(separator)
    }

    fn wrap(text: String, optional: bool) -> String {
        if optional {
            format!("[{text}]")
        } else {
            text
        }
    }

    #[test]
    fn redis_cli_renders_every_syntax_back_exactly() {
        for spec in crate::cmd::registry().specs() {
            let syntax = syntax(spec.name).unwrap_or_default();
            assert_eq!(render(&parse(syntax), " "), syntax, "{}", spec.name);
        }
    }

    #[test]
    fn tokens_keys_and_groups_get_their_types() {
        let parsed = parse("key value [NX|XX] [GET]");
        assert_eq!(parsed.len(), 4);
        assert!(matches!(&parsed[2], Arg::OneOf(alts, true) if alts.len() == 2));
        assert!(is_token("NX") && is_token("SET-ACTIVE-EXPIRE") && !is_token("value"));
        assert!(is_key("key") && !is_key("value"));
    }

    #[test]
    fn every_registered_command_has_a_syntax() {
        let missing: Vec<&str> = crate::cmd::registry()
            .specs()
            .iter()
            .map(|spec| spec.name)
            .filter(|name| super::syntax(name).is_none())
            .collect();
        assert!(missing.is_empty(), "no syntax for {missing:?}");
    }
}
