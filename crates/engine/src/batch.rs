//! Atomic write batches: every operation of a batch becomes visible at once
//! and survives a crash together, or not at all.

use bytes::Bytes;

/// One operation of a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    /// Set `key` to `value`, expiring at `expires_at_ms` (Unix ms) when set.
    Put {
        /// The key.
        key: Bytes,
        /// The value.
        value: Bytes,
        /// Absolute expiry time, if any.
        expires_at_ms: Option<u64>,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: Bytes,
    },
}

impl BatchOp {
    /// The key the operation writes.
    pub fn key(&self) -> &Bytes {
        match self {
            BatchOp::Put { key, .. } | BatchOp::Delete { key } => key,
        }
    }
}

/// A group of writes applied atomically, with optional preconditions on the
/// current version of keys (compare-and-set).
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    pub(crate) ops: Vec<BatchOp>,
    /// (key, expected version): `None` means "the key must not exist".
    pub(crate) expectations: Vec<(Bytes, Option<u64>)>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    /// An empty batch with room for `ops` operations.
    pub fn with_capacity(ops: usize) -> WriteBatch {
        WriteBatch {
            ops: Vec::with_capacity(ops),
            expectations: Vec::new(),
        }
    }

    /// Sets `key` to `value`, with an optional absolute expiry in Unix ms.
    pub fn put(
        &mut self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        expires_at_ms: Option<u64>,
    ) -> &mut Self {
        self.ops.push(BatchOp::Put {
            key: key.into(),
            value: value.into(),
            expires_at_ms,
        });
        self
    }

    /// Deletes `key`.
    pub fn delete(&mut self, key: impl Into<Bytes>) -> &mut Self {
        self.ops.push(BatchOp::Delete { key: key.into() });
        self
    }

    /// Makes the batch conditional: it is applied only if the live version of
    /// `key` is `version` (`None`: the key is absent or expired). Otherwise
    /// [`crate::Db::write`] fails with [`crate::Error::Conflict`] and nothing
    /// is written.
    pub fn expect_version(&mut self, key: impl Into<Bytes>, version: Option<u64>) -> &mut Self {
        self.expectations.push((key.into(), version));
        self
    }

    /// Number of write operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    /// Removes every operation and expectation, keeping the allocation.
    pub fn clear(&mut self) {
        self.ops.clear();
        self.expectations.clear();
    }
}
