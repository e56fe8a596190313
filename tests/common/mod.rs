//! Helpers shared by the storage-engine tests.
#![allow(dead_code)]

pub mod broker;
pub mod cluster;
pub mod netlab;

use bytes::{Bytes, BytesMut};
use logbook::log::{
    LogConfig, NewRecord, PartitionLog, Record, RecordHeader, ValidatedBatch, decode_records,
    encode_batch,
};

/// A config with tiny segments and indexes so that rolls happen often.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_max_bytes: 4096,
        index_max_bytes: 8 * 16,
        max_batch_bytes: 4096,
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// A config with `segment_max_bytes` (and the largest batch) of `bytes`, no retention.
pub fn segment_config(bytes: u64) -> LogConfig {
    LogConfig {
        segment_max_bytes: bytes,
        max_batch_bytes: bytes,
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// A record with a key, a value and a timestamp.
pub fn record(key: &str, value: &[u8], timestamp_ms: i64) -> NewRecord {
    NewRecord {
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        value: Some(Bytes::copy_from_slice(value)),
        headers: Vec::new(),
        timestamp_ms,
    }
}

/// A tombstone (null value) for `key`.
pub fn tombstone(key: &str, timestamp_ms: i64) -> NewRecord {
    NewRecord {
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        value: None,
        headers: Vec::new(),
        timestamp_ms,
    }
}

/// Adds a header to a record.
pub fn with_header(mut r: NewRecord, key: &str, value: &str) -> NewRecord {
    r.headers.push(RecordHeader {
        key: key.to_string(),
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
    });
    r
}

/// Encodes and validates records as one batch.
pub fn batch(records: &[NewRecord]) -> ValidatedBatch {
    let bytes: BytesMut = encode_batch(records).expect("encode");
    ValidatedBatch::new(bytes, usize::MAX).expect("valid batch")
}

/// Reads every record (control batches skipped) from the log start to the end.
pub fn read_all(log: &PartitionLog) -> Vec<Record> {
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    let mut out = Vec::new();
    while offset < end {
        let read = log.read(offset, 64 * 1024).expect("read");
        if read.batches.is_empty() {
            break;
        }
        out.extend(decode_records(read.batches, offset).expect("decode"));
        assert!(read.next_offset > offset, "reads must make progress");
        offset = read.next_offset;
    }
    out
}
