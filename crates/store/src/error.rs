//! The store's errors. The server maps each to Redis' reply text; the store
//! itself knows nothing of RESP.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key holds a value of another type than the operation needs.
    #[error("wrong type")]
    WrongType,
    /// The storage engine failed (I/O, a full disk, a poisoned log, a limit).
    #[error(transparent)]
    Engine(#[from] ringkv_engine::Error),
    /// A stored value or replicated batch does not decode: says what.
    #[error("storage error: {0}")]
    Corrupt(&'static str),
    /// FLUSHDB/FLUSHALL found no free namespace: every id is held by a database or by a
    /// flushed one still being cleared.
    #[error("too many flushed databases still being deleted, retry later")]
    NamespacesExhausted,
}

/// Result of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
