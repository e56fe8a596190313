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

struct MetaBuilder;

impl
    StoreBuilder<
        logbook::cluster::MetaRaft,
        LogStore<logbook::cluster::MetaRaft>,
        logbook::cluster::MetaStateMachine,
        tempfile::TempDir,
    > for MetaBuilder
{
    async fn build(
        &self,
    ) -> Result<
        (
            tempfile::TempDir,
            LogStore<logbook::cluster::MetaRaft>,
            logbook::cluster::MetaStateMachine,
        ),
        StorageError<u64>,
    > {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = Arc::new(PartitionLog::open(dir.path(), LogConfig::default()).expect("open log"));
        let store = LogStore::open_with(log, FsyncPolicy::Always, true).expect("open raft log");
        Ok((dir, store, logbook::cluster::MetaStateMachine::default()))
    }
}

#[test]
fn metadata_group_storage_passes_openraft_suite() {
    Suite::test_all(MetaBuilder).expect("openraft storage suite");
}
