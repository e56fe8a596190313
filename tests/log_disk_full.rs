//! A full disk: appends fail with a disk-full error, nothing acknowledged is lost, the log stays
//! usable, and appends succeed again once space returns. Runs on a real 2 MiB tmpfs mounted by
//! the test (needs root, as the project's test machines and CI have).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use logbook::log::{LogConfig, LogError, PartitionLog};

/// A mounted tmpfs, unmounted on drop.
struct Tmpfs {
    path: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let parent = tempfile::tempdir().unwrap();
        let path = parent.path().join("fs");
        std::fs::create_dir(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs failed ({status}); this test needs root (CAP_SYS_ADMIN)"
        );
        Tmpfs {
            path,
            _parent: parent,
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_max_bytes: 256 * 1024,
        index_max_bytes: 16 * 1024,
        max_batch_bytes: 64 * 1024,
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn value(offset: u64) -> Vec<u8> {
    let mut v = offset.to_be_bytes().to_vec();
    v.resize(8 * 1024, (offset % 251) as u8);
    v
}

fn check(log: &PartitionLog, acked_end: u64) {
    let records = common::read_all(log);
    assert!(records.len() as u64 >= acked_end);
    for r in &records {
        assert_eq!(
            r.value.as_deref(),
            Some(&value(r.offset)[..]),
            "offset {}",
            r.offset
        );
    }
}

fn fill_until_full(log: &PartitionLog) -> (u64, LogError) {
    loop {
        let next = log.log_end_offset();
        let batch = common::batch(&[common::record("k", &value(next), 1)]);
        match log.append_batch(batch, 0).and_then(|_| log.sync()) {
            Ok(_) => {}
            Err(e) => return (log.log_end_offset(), e),
        }
    }
}

#[test]
fn full_disk_fails_appends_cleanly_and_recovers_when_space_returns() {
    let fs = Tmpfs::mount("2m");
    let dir: &Path = &fs.path.join("partition");
    let filler = fs.path.join("filler");
    std::fs::write(&filler, vec![0u8; 512 * 1024]).unwrap();

    let log = PartitionLog::open(dir, config()).unwrap();
    let (acked_end, error) = fill_until_full(&log);
    assert!(
        error.is_disk_full(),
        "expected a disk-full error, got {error:?}"
    );
    assert!(
        acked_end > 50,
        "wrote only {acked_end} records before the disk filled"
    );
    assert_eq!(
        log.log_end_offset(),
        acked_end,
        "the failed append left nothing behind"
    );
    check(&log, acked_end);
    // Still full: still a clean error, still nothing lost.
    let again = log.append_batch(
        common::batch(&[common::record("k", &value(acked_end), 1)]),
        0,
    );
    assert!(matches!(&again, Err(e) if e.is_disk_full()), "{again:?}");
    check(&log, acked_end);

    // Space returns: appends continue at the next offset.
    std::fs::remove_file(&filler).unwrap();
    let range = log
        .append_batch(
            common::batch(&[common::record("k", &value(acked_end), 1)]),
            0,
        )
        .unwrap();
    log.sync().unwrap();
    assert_eq!(range.start, acked_end);
    check(&log, acked_end + 1);

    // And everything survives a restart.
    drop(log);
    let log = PartitionLog::open(dir, config()).unwrap();
    assert_eq!(log.log_end_offset(), acked_end + 1);
    check(&log, acked_end + 1);
}
