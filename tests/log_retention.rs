//! Retention by size and by age, and `delete_before`, end to end on real files.

mod common;

use logbook::log::{LogConfig, LogError, PartitionLog};

fn config() -> LogConfig {
    common::segment_config(4096)
}

/// Appends one batch of one record with `timestamp_ms`; returns its offset.
fn put(log: &PartitionLog, value_len: usize, timestamp_ms: i64) -> u64 {
    log.append_batch(
        common::batch(&[common::record("k", &vec![1u8; value_len], timestamp_ms)]),
        0,
    )
    .unwrap()
    .start
}

fn segment_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    names
}

#[test]
fn retention_by_bytes_deletes_the_oldest_whole_segments_but_never_the_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let retention_bytes = 10_000;
    let cfg = LogConfig {
        retention_bytes: Some(retention_bytes),
        ..config()
    };
    let log = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
    for _ in 0..60 {
        put(&log, 900, 1);
    }
    let before = log.segments().unwrap();
    assert!(before.len() >= 10, "{before:?}");
    let end = log.log_end_offset();

    let report = log.enforce_retention(logbook::log::now_ms()).unwrap();
    let after = log.segments().unwrap();
    let total: u64 = after.iter().map(|s| s.size_bytes).sum();
    assert!(report.segments_deleted > 0);
    assert_eq!(after.len(), before.len() - report.segments_deleted);
    assert!(
        total >= retention_bytes,
        "retention keeps at least retention_bytes"
    );
    assert!(
        total - after[0].size_bytes < retention_bytes,
        "the oldest remaining segment could not go without dropping below retention_bytes"
    );
    assert_eq!(
        after.last(),
        before.last(),
        "the active segment is untouched"
    );
    assert_eq!(
        segment_files(dir.path()).len(),
        after.len(),
        "deleted files are gone"
    );

    let start = log.log_start_offset();
    assert_eq!(start, after[0].base_offset);
    assert_eq!(report.log_start_offset, start);
    assert!(matches!(
        log.read(start - 1, 100),
        Err(LogError::OffsetOutOfRange { requested, log_start_offset, log_end_offset })
            if requested == start - 1 && log_start_offset == start && log_end_offset == end
    ));
    assert_eq!(common::read_all(&log).len() as u64, end - start);

    // The new start survives a restart.
    drop(log);
    let log = PartitionLog::open(dir.path(), cfg).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (start, end));
}

#[test]
fn retention_by_age_deletes_a_prefix_of_segments_by_their_newest_record() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_ms: Some(1000),
        ..config()
    };
    let log = PartitionLog::open(dir.path(), cfg).unwrap();
    // Segment 1: old records only.
    put(&log, 10, 100);
    put(&log, 10, 200);
    log.roll().unwrap();
    // Segment 2: an old record and a new one: kept while the new one is young.
    let seg2 = put(&log, 10, 100);
    put(&log, 10, 9000);
    log.roll().unwrap();
    // Segment 3: old, but behind segment 2.
    put(&log, 10, 300);
    log.roll().unwrap();
    // Active segment: old too, but never deleted.
    let active = put(&log, 10, 50);

    let report = log.enforce_retention(9500).unwrap();
    assert_eq!(report.segments_deleted, 1);
    assert_eq!(log.log_start_offset(), seg2);

    let report = log.enforce_retention(20_000).unwrap();
    assert_eq!(report.segments_deleted, 2);
    assert_eq!(log.log_start_offset(), active);
    assert_eq!(log.segments().unwrap().len(), 1);
    assert_eq!(common::read_all(&log).len(), 1);

    // Nothing left to delete: the active segment stays even though it is old.
    assert_eq!(log.enforce_retention(1 << 40).unwrap().segments_deleted, 0);
}

#[test]
fn delete_before_moves_the_start_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    for _ in 0..30 {
        put(&log, 500, 1);
    }
    let end = log.log_end_offset();
    assert!(matches!(
        log.delete_before(end + 1),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    // Mid-segment: the start moves, the segment holding it stays.
    let deleted = log.delete_before(17).unwrap();
    assert_eq!(log.log_start_offset(), 17);
    assert!(log.segments().unwrap()[0].base_offset <= 17);
    assert!(deleted > 0);
    let first = common::read_all(&log)[0].offset;
    assert_eq!(first, 17);
    drop(log);
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    assert_eq!(log.log_start_offset(), 17);
    // Everything: the log is empty but keeps its offsets.
    log.delete_before(end).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (end, end));
    assert_eq!(log.segments().unwrap().len(), 1);
    assert_eq!(put(&log, 10, 1), end);
}
