//! The commit-log storage engine: one [`PartitionLog`] per topic partition.
//!
//! | file | owns |
//! |---|---|
//! | `batch.rs` | Kafka RecordBatch v2: header view, validation, zero-copy record reader, encoding |
//! | `index.rs` | the memory-mapped offset index of a segment |
//! | `segment.rs` | active and sealed segments, tail scan and recovery, reads |
//! | `partition.rs` | [`PartitionLog`]: open, append, sync, read, roll, truncate, delete, retention |
//! | `compaction.rs` | key-based compaction with a crash-safe swap |
//! | `group_commit.rs` | [`GroupCommit`]: many producers, one write and one fdatasync per group |
//! | `maintenance.rs` | a background thread running retention and compaction |
//! | `config.rs`, `error.rs` | [`LogConfig`] and [`LogError`] |
//!
//! The on-disk format is described in the project README ("On-disk format").

pub mod batch;
mod compaction;
mod config;
mod error;
mod group_commit;
pub mod index;
mod maintenance;
mod partition;
pub mod segment;

pub use batch::{
    BatchError, BatchHeader, NewRecord, Record, RecordHeader, StoredBatch, ValidatedBatch,
    check_batch, decode_records, encode_batch, encode_control_batch, split_batches,
};
pub use compaction::{CompactionReport, MaintenanceReport};
pub use config::{CleanupPolicy, FsyncPolicy, LogConfig};
pub(crate) use error::IoContext;
pub use error::{LogError, Result};
pub use group_commit::{AppendTicket, GroupCommit, MAX_GROUP_BYTES};
pub use maintenance::Maintenance;
pub use partition::{
    PartitionLog, ReadResult, RecoveryReport, RetentionReport, SegmentInfo, now_ms,
};
pub use segment::TailRecovery;

/// Writes `bytes` to `path` through a temporary file, fsync and rename, then fsyncs the
/// directory: after a crash the file holds either the old or the new contents.
pub fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
