//! The machinery of the settings table: what one declaration of a setting holds, and the
//! macro that turns the declarations in `config.rs` into the [`Config`] struct, its
//! `Default`, and a table of [`Setting`] descriptors.
//!
//! Everything outside `config.rs` works from the table, never from a list of names of its
//! own: the binary builds its flags and environment variables (`RINGKV_<NAME>`) and reads
//! the TOML file through it, CONFIG GET/SET/REWRITE and INFO go through it, and the test at
//! the end of this file checks `docs/config.md` and `ringkv.toml` against it. So adding a
//! setting is one declaration in `config.rs` plus the code that uses it (and, for a setting
//! CONFIG SET changes while something outside [`Config`] holds a copy of it, one line in
//! `cmd/server.rs`'s `apply_live`).
//!
//! Values are typed: each declaration names its field's Rust type, and a [`Codec`] (by
//! default [`Plain`]) parses text into that type and shows it back, so a flag, an
//! environment variable, a TOML value and a CONFIG SET argument are one parser.

use std::path::PathBuf;

use ringkv_engine::FsyncPolicy;

use crate::config::Config;

/// When a new value takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// CONFIG SET changes it on a running server.
    Live,
    /// Read at start only; CONFIG SET refuses it as Redis refuses an immutable config.
    Restart,
    /// Changed at run time by its own command (named here), not by CONFIG SET.
    Command(&'static str),
}

/// The TOML type of a setting's value in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A TOML integer (`port = 6379`).
    Integer,
    /// A TOML boolean (`protected-mode = true`).
    Boolean,
    /// A TOML string (`appendfsync = "always"`).
    String,
}

/// One setting: its key and everything derived from it. Built only by the `settings!` macro.
pub struct Setting {
    /// The key, kebab-case: TOML key, `--<name>` flag, `RINGKV_<NAME>` variable, CONFIG name.
    pub name: &'static str,
    /// One line for `--help` and rustdoc (the declaration's doc comment).
    pub doc: &'static str,
    /// Live (CONFIG SET) or read at start only.
    pub mode: Mode,
    /// A password: hidden in `--help`'s environment values, error messages and SLOWLOG.
    pub secret: bool,
    /// TOML type in the config file.
    pub kind: Kind,
    /// For a choice of names: the names (Redis' CONFIG SET error lists them).
    pub choices: &'static [&'static str],
    /// Smallest value of an integer setting (with its type's range).
    pub min: i128,
    /// Largest value of an integer setting (with its type's range).
    pub max: i128,
    /// The INFO section that shows this setting as `<name with _>:<value>`, if any.
    pub info: Option<&'static str>,
    /// The value as text; `None`: unset (an optional setting with no value).
    pub get: fn(&Config) -> Option<String>,
    /// The value as CONFIG GET answers it (Redis' form where it differs).
    pub reply: fn(&Config) -> String,
    /// Parses `text`, checks the bounds and stores the value.
    pub set: fn(&Setting, &mut Config, &str) -> Result<(), String>,
}

impl Setting {
    /// What a declaration leaves out: a setting read at start, not secret, no bounds but its
    /// type's, not in INFO. `get`/`set`/`reply` are always given by the macro.
    pub(crate) const BASE: Setting = Setting {
        name: "",
        doc: "",
        mode: Mode::Restart,
        secret: false,
        kind: Kind::String,
        choices: &[],
        min: i128::MIN,
        max: i128::MAX,
        info: None,
        get: |_| None,
        reply: |_| String::new(),
        set: |_, _, _| Err("not a setting".into()),
    };

    /// The `RINGKV_<NAME>` environment variable.
    pub fn env_var(&self) -> String {
        format!("RINGKV_{}", self.name.to_uppercase().replace('-', "_"))
    }

    /// The doc line, trimmed (doc comments keep a leading space per line).
    pub fn help(&self) -> String {
        self.doc.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// The default value as text; `None`: unset by default.
    pub fn default_text(&self) -> Option<String> {
        (self.get)(&Config::default())
    }

    /// Parses and stores `text` into `config`.
    pub fn apply(&self, config: &mut Config, text: &str) -> Result<(), String> {
        (self.set)(self, config, text)
    }

    /// Checks an integer against the declared bounds intersected with the type's range `range`.
    pub(crate) fn check_bounds(&self, value: i128, range: (i128, i128)) -> Result<(), String> {
        let low = self.min.max(range.0);
        let high = self.max.min(range.1);
        if value < low || value > high {
            return Err(format!(
                "argument must be between {low} and {high} inclusive"
            ));
        }
        Ok(())
    }

    /// The value of `config` for CONFIG REWRITE, typed as the file holds it; `None`: unset.
    pub fn toml_value(&self, config: &Config) -> Option<toml::Value> {
        let text = (self.get)(config)?;
        Some(match self.kind {
            Kind::Integer => toml::Value::Integer(text.parse().expect("an integer shows as one")),
            Kind::Boolean => toml::Value::Boolean(text == "yes"),
            Kind::String => toml::Value::String(text),
        })
    }

    /// A value read from the TOML file as the text [`Setting::apply`] parses; refuses a value
    /// of the wrong TOML type.
    pub fn text_of_toml(&self, value: &toml::Value) -> Result<String, String> {
        match (self.kind, value) {
            (Kind::Integer, toml::Value::Integer(n)) => Ok(n.to_string()),
            (Kind::Boolean, toml::Value::Boolean(b)) => Ok(if *b { "yes" } else { "no" }.into()),
            (Kind::String, toml::Value::String(s)) => Ok(s.clone()),
            (kind, other) => Err(format!(
                "invalid type: {}, expected {}",
                other.type_str(),
                match kind {
                    Kind::Integer => "an integer",
                    Kind::Boolean => "a boolean (true or false)",
                    Kind::String => "a string",
                }
            )),
        }
    }
}

/// Every setting, in declaration order.
pub fn all() -> impl Iterator<Item = &'static Setting> {
    crate::config::CONFIG_SETTINGS
        .iter()
        .chain(crate::config::REPLICATION_SETTINGS)
        .chain(crate::config::CLUSTER_SETTINGS)
}

/// The setting named `name` (kebab-case, as given), if there is one.
pub fn find(name: &str) -> Option<&'static Setting> {
    all().find(|s| s.name == name)
}

/// True if `name` (any case) is a secret setting: CONFIG SET of it is redacted in SLOWLOG.
pub(crate) fn is_secret(name: &[u8]) -> bool {
    all().any(|s| s.secret && s.name.as_bytes().eq_ignore_ascii_case(name))
}

/// How one Rust type is read from text and shown as text for a setting.
pub trait Codec<T> {
    /// TOML type in the file.
    const KIND: Kind;
    /// The names of a choice (empty otherwise): Redis' CONFIG SET error lists them.
    const CHOICES: &'static [&'static str] = &[];
    /// The range of an integer type, capped at `i64::MAX` as Redis' configs are.
    const RANGE: (i128, i128) = (i128::MIN, i128::MAX);
    /// Parses a flag, variable, TOML or CONFIG SET value.
    fn parse(text: &str) -> Result<T, String>;
    /// Shows the value (`None`: unset); [`Codec::parse`] reads it back.
    fn show(value: &T) -> Option<String>;
    /// CONFIG GET's text: the shown value, or empty when unset.
    fn reply(value: &T) -> String {
        Self::show(value).unwrap_or_default()
    }
    /// An integer value, for the bounds check.
    fn integer(_value: &T) -> Option<i128> {
        None
    }
}

/// The codec of a type's own text form.
pub struct Plain;

/// Redis' `memtoll`: an integer with an optional sign and a k/kb/m/mb/g/gb suffix (any case).
pub(crate) fn parse_integer(text: &str) -> Result<i128, String> {
    const NOT_AN_INTEGER: &str = "argument couldn't be parsed into an integer";
    let lower = text.trim().to_ascii_lowercase();
    let (negative, unsigned) = match lower.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let split = unsigned
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(unsigned.len());
    let (digits, unit) = unsigned.split_at(split);
    let multiplier: i128 = match unit {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return Err(NOT_AN_INTEGER.into()),
    };
    // 20 digits hold every u64; more would overflow i128 arithmetic below only far later, but
    // no setting takes such a number.
    if digits.is_empty() || digits.len() > 20 {
        return Err(NOT_AN_INTEGER.into());
    }
    let magnitude = digits.parse::<i128>().map_err(|_| NOT_AN_INTEGER)? * multiplier;
    Ok(if negative { -magnitude } else { magnitude })
}

macro_rules! integer_codec {
    ($($ty:ty),*) => {$(
        impl Codec<$ty> for Plain {
            const KIND: Kind = Kind::Integer;
            const RANGE: (i128, i128) = (
                <$ty>::MIN as i128,
                if (<$ty>::MAX as i128) < i64::MAX as i128 { <$ty>::MAX as i128 } else { i64::MAX as i128 },
            );
            fn parse(text: &str) -> Result<$ty, String> {
                let value = parse_integer(text)?;
                let (low, high) = <Plain as Codec<$ty>>::RANGE;
                if value < low || value > high {
                    return Err(format!("argument must be between {low} and {high} inclusive"));
                }
                Ok(value as $ty)
            }
            fn show(value: &$ty) -> Option<String> {
                Some(value.to_string())
            }
            fn integer(value: &$ty) -> Option<i128> {
                Some(*value as i128)
            }
        }
    )*};
}
integer_codec!(u16, usize, u64, i64);

/// `yes`/`no` (Redis' spelling) or `true`/`false`, any case.
impl Codec<bool> for Plain {
    const KIND: Kind = Kind::Boolean;
    fn parse(text: &str) -> Result<bool, String> {
        match text.to_ascii_lowercase().as_str() {
            "yes" | "true" => Ok(true),
            "no" | "false" => Ok(false),
            _ => Err("argument must be 'yes' or 'no'".into()),
        }
    }
    fn show(value: &bool) -> Option<String> {
        Some(if *value { "yes" } else { "no" }.into())
    }
}

impl Codec<String> for Plain {
    const KIND: Kind = Kind::String;
    fn parse(text: &str) -> Result<String, String> {
        Ok(text.to_string())
    }
    fn show(value: &String) -> Option<String> {
        Some(value.clone())
    }
}

impl Codec<PathBuf> for Plain {
    const KIND: Kind = Kind::String;
    fn parse(text: &str) -> Result<PathBuf, String> {
        Ok(PathBuf::from(text))
    }
    fn show(value: &PathBuf) -> Option<String> {
        Some(value.display().to_string())
    }
}

/// `"host port"`, the form of `replicaof`.
impl Codec<(String, u16)> for Plain {
    const KIND: Kind = Kind::String;
    fn parse(text: &str) -> Result<(String, u16), String> {
        crate::replication::parse_replicaof(text)
    }
    fn show(value: &(String, u16)) -> Option<String> {
        Some(format!("{} {}", value.0, value.1))
    }
}

/// An optional setting: the empty text is "unset".
impl<T> Codec<Option<T>> for Plain
where
    Plain: Codec<T>,
{
    const KIND: Kind = <Plain as Codec<T>>::KIND;
    const CHOICES: &'static [&'static str] = <Plain as Codec<T>>::CHOICES;
    const RANGE: (i128, i128) = <Plain as Codec<T>>::RANGE;
    fn parse(text: &str) -> Result<Option<T>, String> {
        if text.is_empty() {
            return Ok(None);
        }
        <Plain as Codec<T>>::parse(text).map(Some)
    }
    fn show(value: &Option<T>) -> Option<String> {
        value.as_ref().and_then(<Plain as Codec<T>>::show)
    }
    fn integer(value: &Option<T>) -> Option<i128> {
        value.as_ref().and_then(<Plain as Codec<T>>::integer)
    }
}

/// The WAL fsync policy, parsed by the engine (whose error text names the policy).
impl Codec<FsyncPolicy> for Plain {
    const KIND: Kind = Kind::String;
    const CHOICES: &'static [&'static str] = &["always", "everysec", "no"];
    fn parse(text: &str) -> Result<FsyncPolicy, String> {
        text.parse()
    }
    fn show(value: &FsyncPolicy) -> Option<String> {
        Some(value.to_string())
    }
}

/// A codec for an enum of names: `choice_codec!(Type { Variant = "name", … })`.
macro_rules! choice_codec {
    ($ty:ty { $($variant:ident = $text:literal),+ $(,)? }) => {
        impl Codec<$ty> for Plain {
            const KIND: Kind = Kind::String;
            const CHOICES: &'static [&'static str] = &[$($text),+];
            fn parse(text: &str) -> Result<$ty, String> {
                match text.to_ascii_lowercase().as_str() {
                    $($text => Ok(<$ty>::$variant),)+
                    _ => Err(format!(
                        "argument(s) must be one of the following: {}",
                        <Plain as Codec<$ty>>::CHOICES.join(", ")
                    )),
                }
            }
            fn show(value: &$ty) -> Option<String> {
                Some(match value { $(<$ty>::$variant => $text,)+ }.to_string())
            }
        }
    };
}
pub(crate) use choice_codec;

/// Declares settings: a struct whose fields they are, its `Default`, and their table.
///
/// ```text
/// settings_table! {
///     /// Struct docs.
///     #[derive(Debug, Clone)]
///     pub struct Config [in replication] {
///         /// Doc line: --help, rustdoc, the docs check.
///         field: Type = default_expression;
///         "key" [via Codec] { mode: Mode::Live, min: 1, secret: true, info: Some("clients") }
///     }
///     extra {
///         /// Fields of the struct that are not settings.
///         field: Type = default_expression;
///     }
///     table TABLE_NAME;
/// }
/// ```
/// `in replication` declares a struct that is the `replication` field of [`Config`]: the
/// table's accessors go through it. The options in braces are [`Setting`]'s fields; left
/// out, they are [`Setting::BASE`]'s.
macro_rules! settings_table {
    (
        $(#[$meta:meta])*
        pub struct $name:ident $(in $prefix:ident)? {
            $(
                $(#[doc = $doc:literal])+
                $field:ident : $ty:ty = $default:expr;
                $key:literal $(via $codec:ty)? { $($option:ident : $value:expr),* $(,)? }
            )*
        }
        extra {
            $(
                $(#[$extra_meta:meta])*
                $extra:ident : $extra_ty:ty = $extra_default:expr;
            )*
        }
        table $table:ident;
    ) => {
        $(#[$meta])*
        pub struct $name {
            $( $(#[doc = $doc])+ pub $field: $ty, )*
            $( $(#[$extra_meta])* pub $extra: $extra_ty, )*
        }

        impl $name {
            /// This struct inside a [`Config`](crate::config::Config).
            fn within(config: &$crate::config::Config) -> &$name {
                &(*config) $(.$prefix)?
            }
            /// This struct inside a [`Config`](crate::config::Config), to change.
            fn within_mut(config: &mut $crate::config::Config) -> &mut $name {
                &mut (*config) $(.$prefix)?
            }
        }

        impl Default for $name {
            fn default() -> $name {
                $name {
                    $( $field: $default, )*
                    $( $extra: $extra_default, )*
                }
            }
        }

        /// The settings of this struct, in declaration order.
        pub(crate) static $table: &[$crate::settings::Setting] = &[$(
            $crate::settings::Setting {
                name: $key,
                doc: concat!($($doc),+),
                kind: <settings_table!(@codec $($codec)?) as $crate::settings::Codec<$ty>>::KIND,
                choices: <settings_table!(@codec $($codec)?) as $crate::settings::Codec<$ty>>::CHOICES,
                get: |config| {
                    <settings_table!(@codec $($codec)?) as $crate::settings::Codec<$ty>>::show(
                        &$name::within(config).$field,
                    )
                },
                reply: |config| {
                    <settings_table!(@codec $($codec)?) as $crate::settings::Codec<$ty>>::reply(
                        &$name::within(config).$field,
                    )
                },
                set: |setting, config, text| {
                    type C = settings_table!(@codec $($codec)?);
                    let value: $ty = <C as $crate::settings::Codec<$ty>>::parse(text)?;
                    if let Some(n) = <C as $crate::settings::Codec<$ty>>::integer(&value) {
                        setting.check_bounds(n, <C as $crate::settings::Codec<$ty>>::RANGE)?;
                    }
                    $name::within_mut(config).$field = value;
                    Ok(())
                },
                $( $option: $value, )*
                ..$crate::settings::Setting::BASE
            },
        )*];
    };
    (@codec) => { $crate::settings::Plain };
    (@codec $codec:ty) => { $codec };
}
pub(crate) use settings_table;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every declared setting has a row in docs/config.md's tables and a line in the example
    /// `ringkv.toml`, and every row is a declared setting, with the "live" column matching
    /// the declaration; so the docs cannot drift from the table.
    #[test]
    fn docs_and_example_file_match_the_settings_table() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        let docs = std::fs::read_to_string(format!("{root}/docs/config.md")).unwrap();
        let example = std::fs::read_to_string(format!("{root}/ringkv.toml")).unwrap();
        let rows: Vec<(String, String)> = docs
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.strip_prefix('|')?.split('|').map(str::trim).collect();
                let key = cells.first()?.strip_prefix('`')?.strip_suffix('`')?;
                Some((key.to_string(), cells.get(2)?.to_string()))
            })
            .collect();
        let mut wrong = Vec::new();
        for setting in all() {
            match rows.iter().find(|(key, _)| key == setting.name) {
                None => wrong.push(format!("{} has no row in docs/config.md", setting.name)),
                Some((_, live)) => {
                    let expected = match setting.mode {
                        Mode::Live => live.starts_with("yes"),
                        Mode::Restart => live == "no",
                        Mode::Command(command) => live == command,
                    };
                    if !expected {
                        wrong.push(format!(
                            "{}: docs say live = {live:?}, declared {:?}",
                            setting.name, setting.mode
                        ));
                    }
                }
            }
            let in_example = example
                .lines()
                .map(|line| line.trim_start_matches('#').trim_start())
                .any(|line| line.starts_with(&format!("{} =", setting.name)));
            if !in_example {
                wrong.push(format!("{} is not in ringkv.toml", setting.name));
            }
            if setting.help().is_empty() {
                wrong.push(format!("{} has no doc line", setting.name));
            }
        }
        for (key, _) in &rows {
            if find(key).is_none() {
                wrong.push(format!(
                    "docs/config.md documents {key}, which is not declared"
                ));
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    /// Each setting's default reads back as itself, and its TOML form as the same value: the
    /// text forms the flag, the file and CONFIG REWRITE use agree.
    #[test]
    fn every_default_round_trips_through_text_and_toml() {
        let defaults = Config::default();
        for setting in all() {
            let mut config = Config::default();
            if let Some(text) = (setting.get)(&defaults) {
                setting.apply(&mut config, &text).unwrap();
                assert_eq!(
                    (setting.get)(&config).as_deref(),
                    Some(text.as_str()),
                    "{}",
                    setting.name
                );
                let value = setting.toml_value(&config).unwrap();
                let again = setting.text_of_toml(&value).unwrap();
                setting.apply(&mut config, &again).unwrap();
                assert_eq!((setting.get)(&config), Some(text), "{}", setting.name);
            }
        }
    }

    #[test]
    fn integers_take_redis_suffixes_and_bounds_use_redis_text() {
        assert_eq!(parse_integer("2mb"), Ok(2 << 20));
        assert_eq!(parse_integer("1k"), Ok(1000));
        assert_eq!(parse_integer("-1"), Ok(-1));
        assert!(parse_integer("many").is_err());
        assert!(parse_integer("").is_err());
        let maxclients = find("maxclients").unwrap();
        let mut config = Config::default();
        assert_eq!(
            maxclients.apply(&mut config, "0"),
            Err("argument must be between 1 and 4294967295 inclusive".into())
        );
        assert_eq!(
            maxclients.apply(&mut config, "many"),
            Err("argument couldn't be parsed into an integer".into())
        );
        maxclients.apply(&mut config, "50").unwrap();
        assert_eq!(config.maxclients, 50);
    }

    #[test]
    fn secrets_are_the_passwords_and_the_cluster_secret() {
        let secret: Vec<&str> = all().filter(|s| s.secret).map(|s| s.name).collect();
        assert_eq!(secret, ["requirepass", "masterauth", "cluster-secret"]);
        assert!(is_secret(b"REQUIREPASS"));
        assert!(is_secret(b"cluster-secret"));
        assert!(!is_secret(b"maxclients"));
    }
}
