//! Limits on what a client may send, each a server setting.

/// Default for [`Limits::bulk_bytes_max`]: 512 MiB, Redis' `proto-max-bulk-len`.
pub const BULK_BYTES_MAX_DEFAULT: usize = 512 * 1024 * 1024;
/// Default for [`Limits::args_max`]: 1 Mi arguments. Redis accepts up to `INT_MAX`; a million
/// arguments already covers `MSET` of 500 000 pairs while keeping the `Vec<Bytes>` of one request
/// bounded (16 MiB of slices).
pub const ARGS_MAX_DEFAULT: usize = 1024 * 1024;
/// Default for [`Limits::inline_bytes_max`]: 64 KiB, Redis' `PROTO_INLINE_MAX_SIZE`.
pub const INLINE_BYTES_MAX_DEFAULT: usize = 64 * 1024;

/// Limits on requests, each a setting of the server.
///
/// Every limit is checked against the *declared* size before any byte of the declared payload is
/// awaited, so a client cannot make the server buffer or allocate more than these numbers say.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest bulk string argument, in bytes (Redis' `proto-max-bulk-len`).
    pub bulk_bytes_max: usize,
    /// Most arguments in one request (the `*N` count).
    pub args_max: usize,
    /// Longest inline command line (counting its CR, not its LF) and longest `*`/`$` count
    /// line (counting its type byte, not its CRLF), in bytes (Redis' `PROTO_INLINE_MAX_SIZE`:
    /// Redis gives up once this many bytes arrived with no line ending).
    pub inline_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            bulk_bytes_max: BULK_BYTES_MAX_DEFAULT,
            args_max: ARGS_MAX_DEFAULT,
            inline_bytes_max: INLINE_BYTES_MAX_DEFAULT,
        }
    }
}
