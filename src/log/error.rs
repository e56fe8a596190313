//! Errors of the storage engine: one enum whose variants a caller can act on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::batch::BatchError;

/// Everything that can go wrong in the `log` module.
///
/// `Clone` so that one failure can be reported to every producer of a commit group.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// The requested offset is not in the log; the log currently holds `[log_start_offset, log_end_offset)`.
    #[error(
        "offset {requested} is out of range: the log holds offsets {log_start_offset}..{log_end_offset}"
    )]
    OffsetOutOfRange {
        /// The offset that was asked for.
        requested: u64,
        /// The lowest readable offset.
        log_start_offset: u64,
        /// The offset the next appended record will get.
        log_end_offset: u64,
    },

    /// Stored bytes failed validation (CRC, framing, index): they are never returned as data.
    #[error("corrupt data in {} at byte {position}: {reason}", segment.display())]
    Corruption {
        /// The segment file (`.log` or `.index`) holding the bad bytes.
        segment: PathBuf,
        /// Byte position of the bad batch or entry in that file.
        position: u64,
        /// What check failed.
        reason: String,
    },

    /// An operating-system I/O call failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Arc<std::io::Error>,
    },

    /// A batch is larger than the configured `max_batch_bytes`.
    #[error("record batch of {size} bytes is larger than the limit of {max_bytes} bytes")]
    RecordTooLarge {
        /// Size of the rejected batch in bytes.
        size: usize,
        /// The configured limit.
        max_bytes: usize,
    },

    /// A batch handed to the log is malformed (bad framing, CRC, unsupported feature).
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),

    /// `truncate_*` was asked to cut through the middle of a batch.
    #[error(
        "offset {offset} is inside batch {batch_base_offset}..={batch_last_offset}; truncation works on batch boundaries"
    )]
    NotBatchBoundary {
        /// The requested truncation point.
        offset: u64,
        /// First offset of the batch containing it.
        batch_base_offset: u64,
        /// Last offset of that batch.
        batch_last_offset: u64,
    },

    /// An append was removed by a truncation (Raft conflict resolution) before it became
    /// durable; it was never acknowledged.
    #[error("append at offsets {start}..{end} was truncated away before it became durable")]
    Truncated {
        /// First offset the append had been given.
        start: u64,
        /// Offset after its last record.
        end: u64,
    },

    /// A configuration value is out of range.
    #[error("invalid log configuration: {0}")]
    InvalidConfig(String),

    /// An earlier write or sync failed in a way that leaves the on-disk state unknown (for example
    /// a failed fdatasync); the log refuses writes until it is reopened, which re-validates the tail.
    #[error("log at {} refuses writes after an earlier failure ({reason}); reopen it", dir.display())]
    Failed {
        /// The partition directory.
        dir: PathBuf,
        /// The first failure.
        reason: String,
    },

    /// The log (or its group-commit writer) has been closed.
    #[error("log at {} is closed", dir.display())]
    Closed {
        /// The partition directory.
        dir: PathBuf,
    },
}

impl LogError {
    /// Wraps an `io::Error` with the path it happened on.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        LogError::Io {
            path: path.as_ref().to_path_buf(),
            source: Arc::new(source),
        }
    }

    /// Builds a corruption error.
    pub fn corruption(segment: impl AsRef<Path>, position: u64, reason: impl ToString) -> Self {
        LogError::Corruption {
            segment: segment.as_ref().to_path_buf(),
            position,
            reason: reason.to_string(),
        }
    }

    /// True when the error is the disk running out of space (the broker reports it as
    /// UNAVAILABLE and keeps running; appends succeed again once space returns).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, LogError::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull)
    }
}

/// Shorthand for results of this module.
pub type Result<T, E = LogError> = std::result::Result<T, E>;

/// Attaches a path to `io::Result`s.
pub(crate) trait IoContext<T> {
    /// Converts the error into [`LogError::Io`] naming `path`.
    fn at(self, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|e| LogError::io(path, e))
    }
}
