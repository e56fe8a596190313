//! Group commit: concurrent producers share fdatasyncs, acknowledgements mean durable under
//! `fsync = always`, and the other policies behave as documented.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use logbook::log::{FsyncPolicy, GroupCommit, LogConfig, LogError, PartitionLog};

fn open(dir: &std::path::Path, fsync: FsyncPolicy) -> Arc<PartitionLog> {
    let cfg = LogConfig {
        fsync,
        segment_max_bytes: 64 * 1024,
        max_batch_bytes: 16 * 1024,
        retention_ms: None,
        ..LogConfig::default()
    };
    Arc::new(PartitionLog::open(dir, cfg).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_fsyncs_and_are_durable_when_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), FsyncPolicy::Always);
    let writer = Arc::new(GroupCommit::start(log.clone(), FsyncPolicy::Always).unwrap());
    let (producers, per_producer) = (100u64, 5u64);
    let mut tasks = Vec::new();
    for p in 0..producers {
        let (writer, log) = (writer.clone(), log.clone());
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..per_producer {
                let value = format!("{p}/{i}");
                let batch = common::batch(&[common::record("k", value.as_bytes(), 1)]);
                let range = writer.append(batch, 4).await.unwrap();
                // Acknowledged means synced.
                assert!(log.durable_offset() >= range.end, "acked before durable");
                acked.push((range, value));
            }
            acked
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_by_key(|(range, _)| range.start);
    let total = producers * per_producer;
    let starts: Vec<u64> = all.iter().map(|(r, _)| r.start).collect();
    assert_eq!(
        starts,
        (0..total).collect::<Vec<_>>(),
        "disjoint ranges covering the log"
    );
    let records = common::read_all(&log);
    for ((range, value), record) in all.iter().zip(&records) {
        assert_eq!(record.offset, range.start);
        assert_eq!(record.value.as_deref(), Some(value.as_bytes()));
    }
    assert!(
        log.sync_count() < total,
        "{} fsyncs for {total} appends: no grouping happened",
        log.sync_count()
    );
    assert_eq!(*writer.acked_offsets().borrow(), total);
}

#[tokio::test]
async fn never_acknowledges_without_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), FsyncPolicy::Never);
    let writer = GroupCommit::start(log.clone(), FsyncPolicy::Never).unwrap();
    for i in 0..10 {
        let range = writer
            .append(common::batch(&[common::record("k", b"v", i)]), 0)
            .await
            .unwrap();
        assert_eq!(range.start, i as u64);
    }
    assert_eq!(log.sync_count(), 0);
    assert_eq!(log.durable_offset(), 0);
    assert_eq!(log.log_end_offset(), 10);
    // Close syncs what is left.
    writer.close().await.unwrap();
    assert_eq!(log.durable_offset(), 10);
}

#[tokio::test]
async fn interval_syncs_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let policy = FsyncPolicy::Interval { ms: 20 };
    let log = open(dir.path(), policy);
    let writer = GroupCommit::start(log.clone(), policy).unwrap();
    let mut acked = writer.acked_offsets();
    for i in 0..5 {
        writer
            .append(common::batch(&[common::record("k", b"v", i)]), 0)
            .await
            .unwrap();
    }
    // Acknowledged once written; the watch says so.
    acked.wait_for(|end| *end == 5).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.durable_offset() < 5 {
        assert!(Instant::now() < deadline, "the background fsync never ran");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(log.sync_count() >= 1);
}

#[tokio::test]
async fn appends_after_close_fail_with_closed() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), FsyncPolicy::Always);
    let writer = GroupCommit::start(log.clone(), FsyncPolicy::Always).unwrap();
    writer
        .append(common::batch(&[common::record("k", b"v", 1)]), 0)
        .await
        .unwrap();
    writer.close().await.unwrap();
    log.close().unwrap();
    let err = log
        .append_batch(common::batch(&[common::record("k", b"v", 1)]), 0)
        .unwrap_err();
    assert!(matches!(err, LogError::Closed { .. }), "{err:?}");
    // Reads still work after close.
    assert_eq!(common::read_all(&log).len(), 1);
}
