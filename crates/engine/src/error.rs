//! The engine's error type. Expected outcomes (a missing key, a failed
//! compare-and-set) are plain values or a dedicated variant; I/O and
//! corruption errors carry the file and offset so an operator can act.

use std::path::PathBuf;

/// Result alias for engine operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system I/O error on a named file.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Bytes on disk do not match their checksum or their format.
    #[error("corruption in {path} at offset {offset}: {what}")]
    Corruption {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damaged record or block.
        offset: u64,
        /// What was expected and not found.
        what: String,
    },
    /// Another process (or another `Db` in this process) holds the directory.
    #[error("database directory {path} is locked by another process (lock file {path}/LOCK)")]
    Locked {
        /// The database directory.
        path: PathBuf,
    },
    /// A previous write or fsync failed; the engine refuses writes until it is
    /// reopened, because the kernel may have dropped the dirty pages and what
    /// is on disk is no longer known.
    #[error(
        "database refuses writes after an earlier failure: {reason}; restart to recover from disk"
    )]
    Poisoned {
        /// The first failure.
        reason: String,
    },
    /// The disk is full (or over quota): writes are refused until space
    /// returns; nothing acknowledged is lost and reads go on.
    #[error("writes suspended: disk full ({reason}); they resume once space is freed")]
    DiskFull {
        /// The failure that suspended writes.
        reason: String,
    },
    /// A write batch's `expect_version` did not hold.
    #[error("version conflict on a key of the write batch")]
    Conflict,
    /// An argument outside the engine's limits (key or value too large, …).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The database was closed.
    #[error("database is closed")]
    Closed,
    /// Inside [`crate::without_waiting`]: the write would have waited (writers are slowed
    /// down or stalled, or its fsync is due), so it was refused before changing anything.
    /// Run it again where waiting is allowed.
    #[error("the write would wait")]
    WouldBlock,
}

impl Error {
    /// Wraps an `io::Error` with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A corruption error for `path` at `offset`.
    pub fn corruption(path: impl Into<PathBuf>, offset: u64, what: impl Into<String>) -> Error {
        Error::Corruption {
            path: path.into(),
            offset,
            what: what.into(),
        }
    }

    /// True when the error is an I/O error whose cause is a full disk or quota.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::DiskFull { .. } => true,
            Error::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(code) if code == 28 /* ENOSPC */ || code == 122 /* EDQUOT */ || code == 27 /* EFBIG */
            ),
            _ => false,
        }
    }
}
