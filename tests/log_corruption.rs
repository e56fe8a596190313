//! Corruption: torn and flipped bytes in the active tail are cut on open; flipped bytes in a
//! sealed segment are a corruption error on read (never garbage, never a panic); a missing, short
//! or corrupt index is rebuilt from its log; random bytes fed to the batch decoder and to index
//! recovery never panic.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use logbook::log::{
    BatchHeader, LogConfig, LogError, PartitionLog, ValidatedBatch, decode_records, split_batches,
};
use proptest::prelude::*;

fn config() -> LogConfig {
    common::segment_config(8 * 1024)
}

fn segment_file(dir: &Path, base: u64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

/// Writes `n` batches of three records each; returns (base offset, file position, length) of each
/// batch in the order written, per segment base.
fn fill(log: &PartitionLog, n: usize) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for i in 0..n {
        let value = format!("value-{i}-").repeat(20);
        let records: Vec<_> = (0..3)
            .map(|j| common::record(&format!("k{j}"), value.as_bytes(), i as i64))
            .collect();
        let range = log.append_batch(common::batch(&records), 0).unwrap();
        out.push((range.start, range.end));
    }
    out
}

/// Positions of the batches in a `.log` file: (base offset, position, length).
fn batch_positions(path: &Path) -> Vec<(u64, u64, usize)> {
    let data = Bytes::from(fs::read(path).unwrap());
    let mut pos = 0;
    split_batches(data)
        .map(|b| {
            let b = b.unwrap();
            let at = pos;
            pos += b.bytes.len() as u64;
            (b.header.base_offset, at, b.bytes.len())
        })
        .collect()
}

fn flip(path: &Path, position: u64) {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, position).unwrap();
    byte[0] ^= 0x5a;
    file.write_all_at(&byte, position).unwrap();
    file.sync_all().unwrap();
}

#[test]
fn flipped_byte_in_the_active_tail_is_truncated_on_open() {
    for clean_close in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), config()).unwrap();
        let batches = fill(&log, 5);
        if clean_close {
            log.close().unwrap();
        }
        drop(log);
        let active = segment_file(dir.path(), 0, "log");
        let positions = batch_positions(&active);
        let (last_base, last_pos, last_len) = *positions.last().unwrap();
        flip(&active, last_pos + last_len as u64 - 10);

        let log = PartitionLog::open(dir.path(), config()).unwrap();
        let tail = &log.recovery_report().tail;
        assert_eq!(
            tail.truncated_bytes, last_len as u64,
            "clean_close={clean_close}"
        );
        assert!(tail.truncated_reason.as_deref().unwrap().contains("CRC"));
        assert_eq!(log.log_end_offset(), last_base);
        let records = common::read_all(&log);
        assert_eq!(
            records.len() as u64,
            batches[3].1,
            "the four intact batches remain"
        );
        // The log keeps working: the next append takes the truncated batch's offsets.
        let range = log
            .append_batch(common::batch(&[common::record("k", b"v", 1)]), 0)
            .unwrap();
        assert_eq!(range.start, last_base);
    }
}

#[test]
fn torn_write_at_the_tail_is_truncated_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    fill(&log, 3);
    let end = log.log_end_offset();
    drop(log);
    // Half of a further batch reached the disk.
    let mut extra = common::batch(&[common::record("k", &[7u8; 300], 1)])
        .to_bytes()
        .to_vec();
    extra[0..8].copy_from_slice(&(end as i64).to_be_bytes());
    extra.truncate(extra.len() / 2);
    let active = segment_file(dir.path(), 0, "log");
    let before = fs::metadata(&active).unwrap().len();
    OpenOptions::new()
        .append(true)
        .open(&active)
        .unwrap()
        .write_all(&extra)
        .unwrap();

    let log = PartitionLog::open(dir.path(), config()).unwrap();
    assert_eq!(
        log.recovery_report().tail.truncated_bytes,
        extra.len() as u64
    );
    assert_eq!(fs::metadata(&active).unwrap().len(), before);
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(common::read_all(&log).len() as u64, end);
}

#[test]
fn flipped_byte_in_a_sealed_segment_is_a_corruption_error_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    fill(&log, 40);
    let segments = log.segments().unwrap();
    assert!(segments.len() >= 3, "need sealed segments: {segments:?}");
    log.close().unwrap();
    drop(log);

    let first = segment_file(dir.path(), 0, "log");
    let positions = batch_positions(&first);
    let (bad_base, bad_pos, bad_len) = positions[2];
    let (next_base, _, _) = positions[3];
    flip(&first, bad_pos + bad_len as u64 / 2);

    let log = PartitionLog::open(dir.path(), config()).unwrap();
    // Sealed segments are not scanned on open.
    assert_eq!(log.recovery_report().tail.truncated_bytes, 0);
    match log.read(bad_base + 1, 1 << 20) {
        Err(LogError::Corruption {
            segment, position, ..
        }) => {
            assert_eq!(segment, first);
            assert_eq!(position, bad_pos);
        }
        other => panic!("expected a corruption error, got {other:?}"),
    }
    // Batches before it are returned (and the read stops short of the bad one).
    let before = log.read(0, 1 << 20).unwrap();
    assert_eq!(before.next_offset, bad_base);
    assert_eq!(
        decode_records(before.batches, 0).unwrap().len() as u64,
        bad_base
    );
    // Batches after it are still readable.
    let after = log.read(next_base, 1 << 20).unwrap();
    assert!(!after.batches.is_empty());
    assert_eq!(
        decode_records(after.batches, next_base).unwrap()[0].offset,
        next_base
    );
}

#[test]
fn missing_short_or_corrupt_sealed_index_is_rebuilt() {
    for damage in [
        "missing",
        "short",
        "garbage-middle",
        "garbage-all",
        "shifted-entry",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let log = PartitionLog::open(dir.path(), config()).unwrap();
        fill(&log, 40);
        let expected = common::read_all(&log);
        log.close().unwrap();
        drop(log);

        let index = segment_file(dir.path(), 0, "index");
        let len = fs::metadata(&index).unwrap().len();
        match damage {
            "missing" => fs::remove_file(&index).unwrap(),
            "short" => OpenOptions::new()
                .write(true)
                .open(&index)
                .unwrap()
                .set_len(len - 5)
                .unwrap(),
            "garbage-middle" => {
                let file = OpenOptions::new().write(true).open(&index).unwrap();
                file.write_all_at(&[0xab; 16], 16).unwrap();
            }
            "shifted-entry" => {
                // Entry 1 points one byte past its batch: only a lookup through it can notice.
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&index)
                    .unwrap();
                let mut position = [0u8; 4];
                file.read_exact_at(&mut position, 16 + 4).unwrap();
                let shifted = u32::from_be_bytes(position) + 1;
                file.write_all_at(&shifted.to_be_bytes(), 16 + 4).unwrap();
            }
            _ => {
                let noise: Vec<u8> = (0..len).map(|_| fastrand::u8(..)).collect();
                fs::write(&index, noise).unwrap();
            }
        }
        let log = PartitionLog::open(dir.path(), config()).unwrap();
        // Every offset, including each batch looked up through the damaged index, reads right.
        for record in &expected {
            let read = log.read(record.offset, 1).unwrap();
            let got = decode_records(read.batches, record.offset).unwrap();
            assert_eq!(
                got.first(),
                Some(record),
                "{damage}: offset {}",
                record.offset
            );
        }
        assert_eq!(common::read_all(&log), expected, "{damage}");
    }
}

#[test]
fn garbage_active_index_is_rebuilt_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    fill(&log, 4);
    let expected = common::read_all(&log);
    drop(log);
    let index = segment_file(dir.path(), 0, "index");
    let len = fs::metadata(&index).unwrap().len() as usize;
    fs::write(
        &index,
        (0..len).map(|_| fastrand::u8(..)).collect::<Vec<_>>(),
    )
    .unwrap();
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    assert!(log.recovery_report().tail.index_rebuilt);
    assert_eq!(log.recovery_report().tail.truncated_bytes, 0);
    assert_eq!(common::read_all(&log), expected);
}

/// A valid batch with random bytes changed and the CRC recomputed, so that the decoder's record
/// parsing (not just the CRC check) sees the damage.
fn mutated_batch(mutations: &[(usize, u8)]) -> BytesMut {
    let records: Vec<_> = (0..4)
        .map(|i| {
            common::with_header(
                common::record(&format!("key{i}"), &[i as u8; 40], i),
                "h",
                "v",
            )
        })
        .collect();
    let mut bytes = logbook::log::encode_batch(&records).unwrap();
    for (at, value) in mutations {
        let at = at % bytes.len();
        bytes[at] = *value;
    }
    if bytes.len() >= 61 {
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decoder_never_panics_on_random_bytes(data in prop::collection::vec(any::<u8>(), 0..400)) {
        let bytes = Bytes::from(data.clone());
        let _ = BatchHeader::parse(&data);
        let _ = logbook::log::batch::check_batch(&data);
        for batch in split_batches(bytes.clone()).flatten() {
            if let Ok(records) = batch.records() {
                records.for_each(drop);
            }
        }
        let _ = decode_records(bytes, 0);
        let _ = ValidatedBatch::new(BytesMut::from(&data[..]), 1 << 20);
    }

    #[test]
    fn decoder_never_panics_on_crc_valid_mutations(
        mutations in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6)
    ) {
        let bytes = mutated_batch(&mutations);
        let _ = ValidatedBatch::new(bytes.clone(), 1 << 20);
        let _ = decode_records(bytes.freeze(), 0);
    }

    #[test]
    fn open_never_panics_on_random_segment_and_index_bytes(
        log_bytes in prop::collection::vec(any::<u8>(), 0..2000),
        index_bytes in prop::collection::vec(any::<u8>(), 0..400),
        keep_valid_prefix in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut content = Vec::new();
        if keep_valid_prefix {
            let log = PartitionLog::open(dir.path(), config()).unwrap();
            fill(&log, 2);
            drop(log);
            content = fs::read(segment_file(dir.path(), 0, "log")).unwrap();
        }
        content.extend_from_slice(&log_bytes);
        fs::write(segment_file(dir.path(), 0, "log"), &content).unwrap();
        fs::write(segment_file(dir.path(), 0, "index"), &index_bytes).unwrap();
        let log = PartitionLog::open(dir.path(), config()).unwrap();
        // Whatever survived recovery is readable, front to back, without errors.
        let records = common::read_all(&log);
        if keep_valid_prefix {
            prop_assert!(records.len() >= 6, "the valid prefix survives");
        }
    }
}
