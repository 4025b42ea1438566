//! Command errors and Redis' exact error texts, in one place so every
//! command family answers with the same words clients match on.

use std::borrow::Cow;

use ringkv_protocol::Frame;

/// `-WRONGTYPE …`.
pub(crate) const WRONG_TYPE: &str =
    "WRONGTYPE Operation against a key holding the wrong kind of value";
/// Redis' `shared.outofrangeerr` / `string2ll` failure.
pub(crate) const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
/// A float argument that `strtold` would refuse.
pub(crate) const NOT_FLOAT: &str = "ERR value is not a valid float";
/// `shared.syntaxerr`.
pub(crate) const SYNTAX: &str = "ERR syntax error";
/// INCR family overflow.
pub(crate) const INCR_OVERFLOW: &str = "ERR increment or decrement would overflow";
/// `shared.nokeyerr`.
pub(crate) const NO_SUCH_KEY: &str = "ERR no such key";
/// SELECT / MOVE / COPY with a db outside 0..databases.
pub(crate) const DB_INDEX_OUT_OF_RANGE: &str = "ERR DB index is out of range";
/// MOVE/COPY of a key onto itself.
pub(crate) const SAME_OBJECT: &str = "ERR source and destination objects are the same";
/// Commands refused before AUTH.
pub(crate) const NOAUTH: &str = "NOAUTH Authentication required.";
/// AUTH with a wrong password.
pub(crate) const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";
/// SCAN with a cursor that is not an unsigned integer.
pub(crate) const INVALID_CURSOR: &str = "ERR invalid cursor";
/// EXEC after a queued command was refused.
pub(crate) const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";
/// A string value that would exceed `proto-max-bulk-len` (SETRANGE, APPEND, SETBIT).
pub(crate) const STRING_TOO_LONG: &str =
    "ERR string exceeds maximum allowed size (proto-max-bulk-len)";

/// `ERR wrong number of arguments for 'name' command` (name as Redis' `fullname`, lower case,
/// `container|sub` for subcommands).
pub(crate) fn wrong_arity(name: &str) -> String {
    format!("ERR wrong number of arguments for '{name}' command")
}

/// `ERR invalid expire time in 'name' command`.
pub(crate) fn invalid_expire_time(name: &str) -> String {
    format!("ERR invalid expire time in '{name}' command")
}

/// `ERR unknown subcommand 'sub'. Try CONTAINER HELP.`
pub(crate) fn unknown_subcommand(container: &str, sub: &[u8]) -> String {
    format!(
        "ERR unknown subcommand '{}'. Try {} HELP.",
        printable(sub, 128),
        container.to_ascii_uppercase()
    )
}

/// Text of an argument as Redis prints it inside an error: lossy UTF-8, cut at `max` bytes, CR
/// and LF replaced by spaces (errors are single lines).
pub(crate) fn printable(bytes: &[u8], max: usize) -> String {
    let cut = &bytes[..bytes.len().min(max)];
    String::from_utf8_lossy(cut).replace(['\r', '\n'], " ")
}

/// Why a command failed; [`CmdError::into_frame`] turns it into the reply.
#[derive(Debug)]
pub(crate) enum CmdError {
    /// The key holds another type.
    WrongType,
    /// An integer argument or value out of range.
    NotInteger,
    /// A float argument or value that is not a number.
    NotFloat,
    /// Options that do not parse.
    Syntax,
    /// Any other Redis error: the whole text, code included (`"ERR …"`).
    Message(Cow<'static, str>),
    /// The storage engine failed.
    Engine(ringkv_engine::Error),
    /// The reply would pass `client-output-buffer-limit` (`Ctx::reply_bytes`); the
    /// connection is closed after this error.
    OutputLimit,
}

/// The error a client gets when its reply passes `client-output-buffer-limit`.
pub(crate) const OUTPUT_LIMIT: &str =
    "ERR reply exceeds client-output-buffer-limit; closing the connection";

impl CmdError {
    /// A [`CmdError::Message`] from a static text such as the constants above.
    pub(crate) fn msg(text: impl Into<Cow<'static, str>>) -> CmdError {
        CmdError::Message(text.into())
    }

    /// The reply for this error.
    pub(crate) fn into_frame(self) -> Frame {
        match self {
            CmdError::WrongType => Frame::error(WRONG_TYPE),
            CmdError::NotInteger => Frame::error(NOT_INTEGER),
            CmdError::NotFloat => Frame::error(NOT_FLOAT),
            CmdError::Syntax => Frame::error(SYNTAX),
            CmdError::Message(text) => Frame::error(text.into_owned()),
            CmdError::Engine(error) => engine_error_frame(&error),
            CmdError::OutputLimit => Frame::error(OUTPUT_LIMIT),
        }
    }
}

impl From<ringkv_store::Error> for CmdError {
    fn from(error: ringkv_store::Error) -> CmdError {
        match error {
            ringkv_store::Error::WrongType => CmdError::WrongType,
            ringkv_store::Error::Engine(error) => CmdError::Engine(error),
            other => CmdError::Message(format!("ERR {other}").into()),
        }
    }
}

impl From<ringkv_engine::Error> for CmdError {
    fn from(error: ringkv_engine::Error) -> CmdError {
        CmdError::Engine(error)
    }
}

/// Engine failures as Redis reports persistence trouble: `-MISCONF` for a disk or WAL that
/// refuses writes (clients and operators know it as "the server cannot persist"), with distinct
/// texts for a full disk (writes resume by themselves) and a failed write or fsync (a restart is
/// needed); `-ERR` for arguments out of the engine's limits.
pub(crate) fn engine_error_frame(error: &ringkv_engine::Error) -> Frame {
    use ringkv_engine::Error as E;
    match error {
        E::InvalidArgument(text) => Frame::error(format!("ERR {text}")),
        E::Closed => Frame::error("ERR server is shutting down"),
        E::Conflict => Frame::error("ERR write conflict, retry"),
        E::Corruption { .. } | E::Locked { .. } => Frame::error(format!("ERR storage error: {error}")),
        // Only the engine's own DiskFull: an fsync that failed with ENOSPC poisons the log (the
        // kernel may have dropped the pages) and comes back as an I/O error, below.
        E::DiskFull { .. } => Frame::error(format!(
            "MISCONF ringkv cannot persist writes: the disk is full ({}). Writes are suspended and resume by themselves once space is freed; reads still work; nothing acknowledged is lost.",
            one_line(&error.to_string())
        )),
        E::Poisoned { reason } => Frame::error(format!(
            "MISCONF ringkv refuses writes since a write or fsync of its log failed ({}): what is on disk is unknown until the server is restarted and recovers from it. Reads still work.",
            one_line(reason)
        )),
        // Other I/O failures, and whatever the engine adds later.
        _ => Frame::error(format!(
            "MISCONF ringkv cannot persist writes: {}. Commands that may modify the data set are disabled until the problem is fixed and the server restarted.",
            one_line(&error.to_string())
        )),
    }
}

/// Error replies are one line.
fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

/// Result of the keyspace and argument helpers.
pub(crate) type CmdResult<T> = Result<T, CmdError>;
