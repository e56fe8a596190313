//! Truncation against concurrent readers, and what the index on disk may claim.

mod common;

use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use logbook::log::{LogConfig, LogError, PartitionLog, decode_records, index, split_batches};

fn config() -> LogConfig {
    common::segment_config(4096)
}

fn put(log: &PartitionLog, i: u64) -> u64 {
    let value = format!("{i}:{}", "r".repeat(200));
    log.append_batch(
        common::batch(&[common::record("k", value.as_bytes(), 1)]),
        0,
    )
    .unwrap()
    .start
}

fn crc_of_all(bytes: &Bytes) -> u32 {
    split_batches(bytes.clone())
        .map(|b| b.unwrap().header.crc)
        .fold(0, |acc, c| acc ^ c)
}

#[test]
fn buffers_read_from_a_sealed_segment_survive_truncations_into_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    for i in 0..60 {
        put(&log, i);
    }
    let segments = log.segments().unwrap();
    assert!(segments.len() >= 3, "{segments:?}");
    let second = segments[1].base_offset;
    // A zero-copy read of the first (sealed) segment, held across what follows.
    let held = log.read(0, 1 << 20).unwrap();
    let crc_before = crc_of_all(&held.batches);
    let records_before = decode_records(held.batches.clone(), 0).unwrap();

    // Cut exactly at the end of the first segment: it becomes the active one...
    log.truncate_from(second).unwrap();
    assert_eq!(log.log_end_offset(), second);
    // ...and is then shortened, and appended to again.
    log.truncate_from(3).unwrap();
    put(&log, 1000);
    log.sync().unwrap();

    // The held buffer still reads exactly as before (no SIGBUS, no changed bytes).
    assert_eq!(crc_of_all(&held.batches), crc_before);
    assert_eq!(
        decode_records(held.batches.clone(), 0).unwrap(),
        records_before
    );
    // And the log itself is what the truncations left.
    let now: Vec<u64> = common::read_all(&log).iter().map(|r| r.offset).collect();
    assert_eq!(now, vec![0, 1, 2, 3]);
}

#[test]
fn readers_racing_truncations_and_appends_see_only_whole_valid_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(PartitionLog::open(dir.path(), config()).unwrap());
    for i in 0..80 {
        put(&log, i);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (log, stop) = (log.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut offset = log.log_start_offset();
                    loop {
                        match log.read(offset, 2048) {
                            Ok(read) if read.batches.is_empty() => break,
                            Ok(read) => {
                                for record in decode_records(read.batches, offset).unwrap() {
                                    let value =
                                        String::from_utf8(record.value.unwrap().to_vec()).unwrap();
                                    assert!(value.ends_with(&"r".repeat(200)), "torn value");
                                }
                                offset = read.next_offset;
                                reads += 1;
                            }
                            // The log got shorter than where this reader was: start over.
                            Err(LogError::OffsetOutOfRange { .. }) => break,
                            Err(other) => panic!("reader failed: {other}"),
                        }
                    }
                }
                reads
            })
        })
        .collect();
    for round in 0..200u64 {
        let end = log.log_end_offset();
        let cut = end.saturating_sub(1 + round % 40);
        log.truncate_from(cut).unwrap();
        for i in 0..(1 + round % 40) {
            put(&log, 10_000 + i);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        assert!(reader.join().unwrap() > 0);
    }
}

#[test]
fn index_on_disk_never_points_past_fsynced_data() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    let index_path = dir.path().join(format!("{:020}.index", 0));
    let log_path = dir.path().join(format!("{:020}.log", 0));
    let entries_on_disk = || {
        let log_len = fs::metadata(&log_path).unwrap().len();
        index::detect_entries(&fs::read(&index_path).unwrap(), log_len)
    };
    for i in 0..3 {
        put(&log, i);
    }
    // Written but not synced: the index file has not heard of them.
    assert!(fs::read(&index_path).unwrap().iter().all(|b| *b == 0));
    log.sync().unwrap();
    assert_eq!(entries_on_disk(), 3);
    let synced_len = fs::metadata(&log_path).unwrap().len();
    put(&log, 3);
    put(&log, 4);
    assert_eq!(
        entries_on_disk(),
        3,
        "entries of unsynced batches stay in memory"
    );

    // A power loss that drops the unsynced tail: the index still matches the log on disk.
    drop(log);
    fs::OpenOptions::new()
        .write(true)
        .open(&log_path)
        .unwrap()
        .set_len(synced_len)
        .unwrap();
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    assert_eq!(log.log_end_offset(), 3);
    assert!(!log.recovery_report().tail.index_rebuilt);
    assert_eq!(common::read_all(&log).len(), 3);
}
