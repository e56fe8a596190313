//! openraft's own storage conformance suite (`openraft::testing::Suite`) run against the Raft
//! log storage and partition state machine built on `PartitionLog`: real segment files in a
//! temporary directory, real fsync.

use std::sync::Arc;

use logbook::log::{FsyncPolicy, LogConfig, PartitionLog};
use logbook::raft::{LogStore, PartitionRaft, PartitionStateMachine};
use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};

struct Builder {
    fsync: FsyncPolicy,
}

impl StoreBuilder<PartitionRaft, LogStore<PartitionRaft>, PartitionStateMachine, tempfile::TempDir>
    for Builder
{
    async fn build(
        &self,
    ) -> Result<
        (
            tempfile::TempDir,
            LogStore<PartitionRaft>,
            PartitionStateMachine,
        ),
        StorageError<u64>,
    > {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = LogConfig {
            // Small segments: entries span several segments and purges delete whole ones.
            segment_max_bytes: 1024,
            max_batch_bytes: 512,
            ..LogConfig::default()
        };
        let log = Arc::new(PartitionLog::open(dir.path(), config).expect("open log"));
        let store = LogStore::open(log, self.fsync).expect("open raft log");
        let sm = PartitionStateMachine::open(store.shared().clone()).expect("open state machine");
        Ok((dir, store, sm))
    }
}

#[test]
fn partition_log_store_passes_openraft_suite_with_fsync() {
    Suite::test_all(Builder {
        fsync: FsyncPolicy::Always,
    })
    .expect("openraft storage suite");
}

#[test]
fn partition_log_store_passes_openraft_suite_without_fsync() {
    Suite::test_all(Builder {
        fsync: FsyncPolicy::Never,
    })
    .expect("openraft storage suite");
}
