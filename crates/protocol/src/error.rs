//! The one error type of the crate: a malformed request or reply.

/// A malformed request (or reply). `Display` is exactly the text Redis sends after `-ERR `,
/// e.g. `Protocol error: invalid bulk length`. The server replies `-ERR {error}` and closes the
/// connection, as Redis does: after a framing error the stream cannot be resynchronised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// `*` count that is not a number Redis' `string2ll` accepts, negative other than -1, or
    /// above [`Limits::args_max`](crate::Limits::args_max).
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// `$` length that is not a number, negative, or above
    /// [`Limits::bulk_bytes_max`](crate::Limits::bulk_bytes_max).
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// An argument of a multibulk request that does not start with `$`. Carries the byte found;
    /// CR and LF display as a space, as Redis' `addReplyErrorFormat` sanitises them.
    #[error("Protocol error: expected '$', got '{}'", display_byte(*.0))]
    ExpectedDollar(u8),
    /// No CRLF within [`Limits::inline_bytes_max`](crate::Limits::inline_bytes_max) bytes of the
    /// start of a `*` count line.
    #[error("Protocol error: too big mbulk count string")]
    TooBigMultibulkCount,
    /// No CRLF within [`Limits::inline_bytes_max`](crate::Limits::inline_bytes_max) bytes of the
    /// start of a `$` length line.
    #[error("Protocol error: too big bulk count string")]
    TooBigBulkCount,
    /// An inline command line longer than
    /// [`Limits::inline_bytes_max`](crate::Limits::inline_bytes_max).
    #[error("Protocol error: too big inline request")]
    TooBigInline,
    /// An inline command line with an unterminated quote, or a closing quote followed by
    /// something other than a space.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// A bulk payload whose declared length is not followed by CRLF. Redis does not check this
    /// (it skips two bytes blindly), so there is no Redis text to copy: we refuse the request,
    /// because the two sides no longer agree on where arguments end.
    #[error("Protocol error: expected CRLF after bulk payload")]
    BulkNotTerminated,
    /// Any other malformed value met by [`Frame::parse`](crate::Frame::parse) (replies, RESP3
    /// types). The text names what was wrong.
    #[error("Protocol error: {0}")]
    Malformed(&'static str),
}

/// How Redis' `%c` shows a byte once `addReplyErrorFormat` replaced CR and LF by spaces.
fn display_byte(byte: u8) -> char {
    match byte {
        b'\r' | b'\n' => ' ',
        other => char::from(other),
    }
}
