//! Key-based compaction end to end: latest value per key, offsets preserved, tombstones,
//! control batches, merging, concurrent readers, background maintenance, and recovery of an
//! interrupted swap.

mod common;

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use logbook::log::{
    CleanupPolicy, LogConfig, Maintenance, PartitionLog, Record, ValidatedBatch,
    encode_control_batch, now_ms, split_batches,
};

fn config() -> LogConfig {
    LogConfig {
        segment_max_bytes: 4096,
        max_batch_bytes: 4096,
        cleanup_policy: CleanupPolicy::Compact,
        delete_retention_ms: 1000,
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn put(log: &PartitionLog, key: &str, value: &str, ts: i64) -> u64 {
    log.append_batch(
        common::batch(&[common::record(key, value.as_bytes(), ts)]),
        0,
    )
    .unwrap()
    .start
}

fn value_of(r: &Record) -> Option<String> {
    r.value
        .as_ref()
        .map(|v| String::from_utf8(v.to_vec()).unwrap())
}

/// (offset, key, value) of every record.
fn contents(log: &PartitionLog) -> Vec<(u64, Option<Bytes>, Option<String>)> {
    common::read_all(log)
        .iter()
        .map(|r| (r.offset, r.key.clone(), value_of(r)))
        .collect()
}

#[test]
fn compaction_keeps_the_latest_record_per_key_at_its_original_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    let now = now_ms();
    let mut latest: HashMap<&str, u64> = HashMap::new();
    let keys = ["a", "b", "c", "d", "e"];
    for round in 0..12 {
        for key in keys {
            let offset = put(&log, key, &format!("{key}-{round}-{}", "x".repeat(40)), now);
            latest.insert(key, offset);
        }
    }
    // An old tombstone for c (dropped), a fresh one for d (kept), a keyless record (kept),
    // and a control batch (kept).
    let c_tomb = log
        .append_batch(common::batch(&[common::tombstone("c", now - 10_000)]), 0)
        .unwrap()
        .start;
    let d_tomb = log
        .append_batch(common::batch(&[common::tombstone("d", now)]), 0)
        .unwrap()
        .start;
    let mut keyless = common::record("unused", b"no key", now);
    keyless.key = None;
    let keyless_offset = log
        .append_batch(common::batch(&[keyless]), 0)
        .unwrap()
        .start;
    let control = encode_control_batch(&[common::record("raft", b"membership", now)]).unwrap();
    let control_offset = log
        .append_batch(ValidatedBatch::new(control, 4096).unwrap(), 0)
        .unwrap()
        .start;
    log.roll().unwrap();
    let segments_before = log.segments().unwrap().len();
    let end = log.log_end_offset();

    let report = log.compact(now).unwrap();
    assert_eq!(report.tombstones_removed, 1);
    assert_eq!(
        report.superseded_removed,
        12 * 5 - 5 + 2,
        "all but the latest per key, plus c and d's last values"
    );
    assert!(
        report.segments_after < segments_before,
        "small segments were merged: {report:?}"
    );
    assert_eq!(
        log.log_end_offset(),
        end,
        "compaction does not move the end"
    );

    let after = contents(&log);
    let mut expected: Vec<(u64, Option<Bytes>, Option<String>)> = vec![
        (
            latest["a"],
            Some(Bytes::from("a")),
            Some(format!("a-11-{}", "x".repeat(40))),
        ),
        (
            latest["b"],
            Some(Bytes::from("b")),
            Some(format!("b-11-{}", "x".repeat(40))),
        ),
        (
            latest["e"],
            Some(Bytes::from("e")),
            Some(format!("e-11-{}", "x".repeat(40))),
        ),
        (d_tomb, Some(Bytes::from("d")), None),
        (keyless_offset, None, Some("no key".into())),
    ];
    expected.sort();
    assert_eq!(after, expected);
    assert!(!after.iter().any(|(o, _, _)| *o == c_tomb));

    // The control batch is still stored (consumers skip it).
    let raw = log.read(control_offset, 4096).unwrap();
    let first = split_batches(raw.batches).next().unwrap().unwrap();
    assert!(first.header.is_control());
    assert_eq!(first.header.base_offset, control_offset);

    // A read at a compacted-away offset returns the next record that exists.
    let gone = latest["a"] - 1;
    let read = log.read(gone, 1).unwrap();
    let next = logbook::log::decode_records(read.batches, gone).unwrap();
    assert!(next[0].offset > gone);

    // Same after a restart.
    drop(log);
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    assert_eq!(contents(&log), expected);
    // A second pass finds nothing to do.
    let again = log.compact(now).unwrap();
    assert_eq!((again.superseded_removed, again.tombstones_removed), (0, 0));
}

#[test]
fn records_above_the_cleanable_offset_do_not_supersede_older_ones() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    let now = now_ms();
    let old = put(&log, "k", &format!("old-{}", "o".repeat(2000)), now);
    log.roll().unwrap();
    let boundary = log.log_end_offset();
    put(&log, "k", &format!("new-{}", "n".repeat(2000)), now);
    log.roll().unwrap();

    // With replication the newer record may still be truncated away: only segments below the
    // cleanable offset (the commit index) take part.
    let report = log.compact_up_to(now, boundary).unwrap();
    assert_eq!(report.superseded_removed, 0);
    assert_eq!(contents(&log).first().map(|c| c.0), Some(old));
    // Once both are below it, the old one goes.
    let report = log.compact_up_to(now, log.log_end_offset()).unwrap();
    assert_eq!(report.superseded_removed, 1);
    assert_eq!(contents(&log).len(), 1);
}

#[test]
fn compaction_never_touches_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), config()).unwrap();
    let now = now_ms();
    for i in 0..3 {
        put(&log, "k", &format!("v{i}"), now);
    }
    let report = log.compact(now).unwrap();
    assert_eq!(report.groups_rewritten, 0);
    assert_eq!(contents(&log).len(), 3);
}

#[test]
fn readers_see_consistent_data_while_compaction_swaps_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(PartitionLog::open(dir.path(), config()).unwrap());
    let now = now_ms();
    for round in 0..40 {
        for key in 0..8 {
            put(
                &log,
                &format!("k{key}"),
                &format!("{key}:{round}:{}", "y".repeat(60)),
                now,
            );
        }
    }
    log.roll().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (log, stop) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) || reads == 0 {
                let records = common::read_all(&log);
                let mut last = None;
                for r in &records {
                    assert!(Some(r.offset) > last, "offsets increase");
                    last = Some(r.offset);
                    let key = String::from_utf8(r.key.clone().unwrap().to_vec()).unwrap();
                    let value = value_of(r).unwrap();
                    assert!(
                        value.starts_with(&format!("{}:", &key[1..])),
                        "{key} -> {value}"
                    );
                }
                assert!(records.len() >= 8, "every key stays readable");
                reads += 1;
            }
            reads
        })
    };
    for _ in 0..5 {
        log.compact(now).unwrap();
        for key in 0..8 {
            put(
                &log,
                &format!("k{key}"),
                &format!("{key}:new:{}", "z".repeat(60)),
                now,
            );
        }
        log.roll().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    log.compact(now).unwrap();
    let last: HashMap<String, String> = common::read_all(&log)
        .iter()
        .map(|r| {
            (
                String::from_utf8(r.key.clone().unwrap().to_vec()).unwrap(),
                value_of(r).unwrap(),
            )
        })
        .collect();
    assert_eq!(last.len(), 8);
    assert!(last.values().all(|v| v.contains(":new:")));
}

#[test]
fn background_maintenance_compacts_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(PartitionLog::open(dir.path(), config()).unwrap());
    let now = now_ms();
    for round in 0..30 {
        put(
            &log,
            "only-key",
            &format!("{round}:{}", "w".repeat(100)),
            now,
        );
    }
    log.roll().unwrap();
    let maintenance = Maintenance::spawn(log.clone(), Duration::from_millis(10)).unwrap();
    let report = maintenance
        .wait_for_passes(1, Duration::from_secs(30))
        .expect("a maintenance pass completes")
        .expect("the pass succeeds");
    let compaction = report
        .compaction
        .expect("compaction runs for cleanup_policy = compact");
    assert_eq!(compaction.superseded_removed, 29);
    drop(maintenance);
    let left = contents(&log);
    assert_eq!(left.len(), 1);
    assert!(left[0].2.as_deref().unwrap().starts_with("29:"));
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// Reopening with larger segments lets compaction merge all the small ones into one group.
fn merge_config() -> LogConfig {
    LogConfig {
        segment_max_bytes: 64 * 1024,
        ..config()
    }
}

/// Builds a log with many small sealed segments of overwritten keys, closed cleanly.
fn overwritten_log(dir: &Path) -> Vec<(u64, Option<Bytes>, Option<String>)> {
    let small = LogConfig {
        segment_max_bytes: 1024,
        max_batch_bytes: 1024,
        ..config()
    };
    let log = PartitionLog::open(dir, small).unwrap();
    for round in 0..20 {
        for key in ["p", "q", "r"] {
            put(
                &log,
                key,
                &format!("{key}{round}-{}", "v".repeat(50)),
                now_ms(),
            );
        }
    }
    log.roll().unwrap();
    let all = contents(&log);
    log.close().unwrap();
    all
}

#[test]
fn interrupted_swap_is_rolled_forward_and_leftovers_without_intent_are_discarded() {
    let root = tempfile::tempdir().unwrap();
    let before_dir = root.path().join("before");
    let before = overwritten_log(&before_dir);

    // The finished result, for comparison and as the source of "cleaned" files.
    let done_dir = root.path().join("done");
    copy_dir(&before_dir, &done_dir);
    let log = PartitionLog::open(&done_dir, merge_config()).unwrap();
    let report = log.compact(now_ms()).unwrap();
    assert_eq!(report.groups_rewritten, 1, "one merged group: {report:?}");
    let compacted = contents(&log);
    log.close().unwrap();
    drop(log);
    let base: u64 = 0;
    // The group is every sealed segment: all but the last (active, empty) one.
    let mut sealed: Vec<u64> = fs::read_dir(&before_dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".log").map(|b| b.parse::<u64>().unwrap())
        })
        .collect();
    sealed.sort();
    sealed.pop();
    assert!(sealed.len() >= 3, "{sealed:?}");
    let name = |b: u64, ext: &str| format!("{b:020}.{ext}");

    // Crash points of the swap, reconstructed on disk.
    for stage in [
        "intent-written",
        "index-renamed",
        "both-renamed",
        "one-old-deleted",
    ] {
        let dir = root.path().join(stage);
        copy_dir(&before_dir, &dir);
        let cleaned_log = done_dir.join(name(base, "log"));
        let cleaned_index = done_dir.join(name(base, "index"));
        match stage {
            "intent-written" => {
                fs::copy(&cleaned_log, dir.join(name(base, "log.cleaned"))).unwrap();
                fs::copy(&cleaned_index, dir.join(name(base, "index.cleaned"))).unwrap();
            }
            "index-renamed" => {
                fs::copy(&cleaned_log, dir.join(name(base, "log.cleaned"))).unwrap();
                fs::copy(&cleaned_index, dir.join(name(base, "index"))).unwrap();
            }
            _ => {
                fs::copy(&cleaned_log, dir.join(name(base, "log"))).unwrap();
                fs::copy(&cleaned_index, dir.join(name(base, "index"))).unwrap();
                if stage == "one-old-deleted" {
                    fs::remove_file(dir.join(name(sealed[1], "log"))).unwrap();
                    fs::remove_file(dir.join(name(sealed[1], "index"))).unwrap();
                }
            }
        }
        let list: Vec<String> = sealed.iter().map(u64::to_string).collect();
        fs::write(
            dir.join("compaction.intent"),
            format!("output {base}\nreplaced {}\n", list.join(" ")),
        )
        .unwrap();
        let log = PartitionLog::open(&dir, merge_config()).unwrap();
        assert!(log.recovery_report().compaction_rolled_forward, "{stage}");
        assert_eq!(contents(&log), compacted, "{stage}");
        assert!(!dir.join("compaction.intent").exists());
    }

    // Cleaned files but no intent: the crash came before the commit point; the old data stays.
    let dir = root.path().join("no-intent");
    copy_dir(&before_dir, &dir);
    fs::copy(
        done_dir.join(name(base, "log")),
        dir.join(name(base, "log.cleaned")),
    )
    .unwrap();
    fs::copy(
        done_dir.join(name(base, "index")),
        dir.join(name(base, "index.cleaned")),
    )
    .unwrap();
    let log = PartitionLog::open(&dir, merge_config()).unwrap();
    assert!(!log.recovery_report().compaction_rolled_forward);
    assert_eq!(log.recovery_report().leftovers_removed, 2);
    assert_eq!(contents(&log), before);
}
