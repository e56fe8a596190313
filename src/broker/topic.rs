//! The partition replicas on this node (topic settings are defined with the cluster metadata
//! and re-exported here).
//!
//! ```text
//! <data_dir>/topics/<topic>/<partition>/ a replica: its PartitionLog, raft.json, applied.json
//! ```
//!
//! Topics themselves (settings, replica assignments) live in the cluster metadata.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use super::BrokerError;
pub use crate::cluster::metadata::TopicSettings;
use crate::log::{LogConfig, LogError, Maintenance, PartitionLog, ValidatedBatch};
use crate::raft::{
    Channels, LogStore, Node, NodeId, PartitionRaft, PartitionRaftHandle, PartitionStateMachine,
    PeerNetwork, RaftGroups, RaftTiming,
};

/// Free space kept beyond a batch and an index when appending (Raft state files, metadata).
const DISK_RESERVE_BYTES: u64 = 256 << 10;
/// Longest topic name (Kafka's limit).
const MAX_NAME_LEN: usize = 249;

/// Checks a topic name: 1 to 249 characters of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), BrokerError> {
    let invalid = |reason: &str| BrokerError::InvalidArgument {
        field: "name",
        reason: format!("topic name {name:?} {reason}"),
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(invalid(&format!(
            "must be 1 to {MAX_NAME_LEN} characters long"
        )));
    }
    if name == "." || name == ".." {
        return Err(invalid("is reserved"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(invalid(
            "may only contain letters, digits, '.', '_' and '-'",
        ));
    }
    Ok(())
}

/// What a partition needs to run its Raft group on this node.
#[derive(Debug, Clone)]
pub struct RaftContext {
    /// This node's id.
    pub node_id: NodeId,
    /// The address peers reach this node's gRPC server at.
    pub address: String,
    /// gRPC channels to peers (shared by every group).
    pub channels: Arc<Channels>,
    /// Groups served by this node's Raft service.
    pub groups: Arc<RaftGroups>,
    /// Raft timing.
    pub timing: RaftTiming,
}

/// Background work a replica runs besides Raft.
#[derive(Debug, Clone)]
pub struct ReplicaServices {
    /// How often retention and compaction run.
    pub maintenance_every: Duration,
    /// Segment uploads and snapshots (`None` without a snapshot store).
    pub snapshots: Option<super::snapshots::SnapshotSettings>,
}

/// One partition replica: its log, the Raft group replicating it, and its maintenance thread.
pub struct Partition {
    /// Partition number.
    pub index: u32,
    /// Name of its Raft group.
    group: String,
    /// The log.
    log: Arc<PartitionLog>,
    /// The Raft group (its log storage is `log`).
    raft: PartitionRaftHandle,
    /// Its state machine (the commit watermark).
    state: PartitionStateMachine,
    /// Where the group is registered for incoming Raft RPCs.
    groups: Arc<RaftGroups>,
    /// Retention and compaction (taken and stopped on close).
    maintenance: Mutex<Option<Maintenance>>,
    /// Combines queued produce requests into Raft entries.
    combiner: super::combiner::Combiner,
    /// Uploads segments and takes snapshots (when a snapshot store is set).
    snapshots: Option<super::snapshots::SnapshotTask>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("group", &self.group)
            .field("high_watermark", &self.high_watermark())
            .finish()
    }
}

/// A produce accepted by the partition's Raft leader, waiting to be committed and applied.
pub type PendingAppend = tokio::sync::oneshot::Receiver<super::combiner::Offsets>;

impl Partition {
    /// Opens (recovering) the replica in `dir` and starts its Raft group, initializing it with
    /// `voters` if it has never been initialized (an empty `voters` waits to be added).
    pub async fn open(
        dir: &Path,
        group: String,
        index: u32,
        config: LogConfig,
        raft: &RaftContext,
        voters: BTreeMap<NodeId, Node>,
        services: &ReplicaServices,
    ) -> Result<Self, BrokerError> {
        let (maintenance_every, snapshots) =
            (services.maintenance_every, services.snapshots.as_ref());
        let policy = config.fsync;
        let (dir_owned, config_owned) = (dir.to_path_buf(), config.clone());
        let log = tokio::task::spawn_blocking(move || PartitionLog::open(&dir_owned, config_owned))
            .await
            .map_err(|e| BrokerError::io(dir, std::io::Error::other(e)))??;
        let log = Arc::new(log);
        let store = LogStore::<PartitionRaft>::open(log.clone(), policy)
            .map_err(|e| BrokerError::io(dir, std::io::Error::other(e)))?;
        let mut state = PartitionStateMachine::open(store.shared().clone())
            .map_err(|e| BrokerError::io(dir, e))?;
        if let Some(settings) = snapshots {
            state = state.with_store(super::snapshots::link(settings));
            // Retention deletes only what a snapshot in the store covers.
            store
                .shared()
                .guard_retention()
                .map_err(|e| BrokerError::io(dir, std::io::Error::other(e)))?;
        }
        let network = PeerNetwork::new(group.clone(), raft.channels.clone());
        let raft_config =
            raft.timing
                .config(&group)
                .map_err(|reason| BrokerError::InvalidArgument {
                    field: "raft timing",
                    reason,
                })?;
        let handle = openraft::Raft::new(raft.node_id, raft_config, network, store, state.clone())
            .await
            .map_err(|e| BrokerError::io(dir, std::io::Error::other(e.to_string())))?;
        raft.groups.insert(group.clone(), Arc::new(handle.clone()));
        let sole_voter = voters.len() == 1 && voters.contains_key(&raft.node_id);
        if !voters.is_empty() && !handle.is_initialized().await.map_err(unavailable)? {
            match handle.initialize(voters).await {
                Ok(())
                | Err(openraft::error::RaftError::APIError(
                    openraft::error::InitializeError::NotAllowed(_),
                )) => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        // The only voter: campaign now rather than after an election timeout.
        if sole_voter {
            handle.trigger().elect().await.map_err(unavailable)?;
        }
        let maintenance = Maintenance::spawn(log.clone(), maintenance_every)
            .map_err(|e| BrokerError::io(dir, e))?;
        let combiner =
            super::combiner::Combiner::start(handle.clone(), group.clone(), raft.node_id);
        let snapshots = snapshots.map(|settings| {
            super::snapshots::SnapshotTask::spawn(
                group.clone(),
                log.clone(),
                handle.clone(),
                state.clone(),
                settings.clone(),
            )
        });
        Ok(Partition {
            snapshots,
            combiner,
            index,
            group,
            log,
            raft: handle,
            state,
            groups: raft.groups.clone(),
            maintenance: Mutex::new(Some(maintenance)),
        })
    }

    /// The log (for reads).
    pub fn log(&self) -> &Arc<PartitionLog> {
        &self.log
    }

    /// The Raft group.
    pub fn raft(&self) -> &PartitionRaftHandle {
        &self.raft
    }

    /// Its Raft group's name (`topic/partition`).
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The group's current leader as this replica knows it.
    pub fn current_leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Waits until the group has a leader (this node or another), up to `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64, BrokerError> {
        let mut metrics = self.raft.metrics();
        let waited =
            tokio::time::timeout(timeout, metrics.wait_for(|m| m.current_leader.is_some())).await;
        match waited {
            Ok(Ok(m)) => Ok(m.current_leader.unwrap_or_default()),
            Ok(Err(_)) => Err(unavailable(format!("{} stopped", self.group))),
            Err(_) => Err(unavailable(format!(
                "{} has no leader after {timeout:?}",
                self.group
            ))),
        }
    }

    /// Hands a batch to the Raft leader (in call order); the receiver resolves once it is
    /// committed (durable on a majority) and applied.
    pub async fn submit(&self, batch: ValidatedBatch) -> Result<PendingAppend, BrokerError> {
        // Refuse what would not fit rather than let the Raft append wait for space: the batch,
        // a new segment's preallocated index, and room for Raft's own small files.
        let needed = batch.len() as u64 + self.log.config().index_max_bytes + DISK_RESERVE_BYTES;
        let free = self.log.free_bytes()?;
        if free < needed {
            return Err(LogError::io(
                self.log.dir(),
                std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    format!("{free} bytes free, {needed} needed to append safely"),
                ),
            )
            .into());
        }
        self.combiner.submit(batch).await
    }

    /// Offset after the last committed and applied record: what consumers may read below.
    pub fn high_watermark(&self) -> u64 {
        self.state.high_watermark()
    }

    /// Watches the high watermark.
    pub fn watch_high_watermark(&self) -> watch::Receiver<u64> {
        self.state.watch_high_watermark()
    }

    /// Snapshots now (on the leader); see `SnapshotTask::create`.
    pub async fn create_snapshot(&self) -> Result<crate::snapshot::Manifest, BrokerError> {
        let Some(task) = &self.snapshots else {
            return Err(BrokerError::InvalidArgument {
                field: "snapshot_store",
                reason: "no snapshot store is configured (snapshot_store = none)".into(),
            });
        };
        task.create().await.map_err(BrokerError::Unavailable)
    }

    /// The commit index Raft last reported to this replica.
    pub fn commit_index(&self) -> Option<u64> {
        self.state.commit_index()
    }

    /// What the snapshot task has done (`None` without a snapshot store).
    pub fn snapshot_status(&self) -> Option<super::snapshots::SnapshotStatus> {
        self.snapshots.as_ref().map(|t| t.status())
    }

    /// The current snapshot's manifest, if any.
    pub fn current_snapshot(&self) -> Option<crate::snapshot::Manifest> {
        self.state.current_snapshot().map(|(_, m)| m)
    }

    /// Stops maintenance (waiting for a pass in progress), stops the Raft group, checkpoints
    /// the applied state, and closes the log cleanly.
    pub async fn close(&self) -> Result<(), LogError> {
        if let Some(task) = &self.snapshots {
            task.stop();
        }
        let maintenance = self.maintenance.lock().take();
        if let Some(maintenance) = maintenance {
            // Dropping joins the thread, which may be in the middle of a compaction.
            let _ = tokio::task::spawn_blocking(move || drop(maintenance)).await;
        }
        self.groups.remove(&self.group);
        self.state.close_watchers();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(group = %self.group, error = %e, "Raft group did not stop cleanly");
        }
        if let Err(e) = self.state.checkpoint() {
            tracing::warn!(group = %self.group, error = %e, "could not checkpoint the applied state");
        }
        self.log.close()
    }
}

/// A Raft error on a local group: the group is not available (shutting down or failed).
pub(crate) fn unavailable(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        for ok in ["orders", "a.b_c-9", &"x".repeat(249)] {
            validate_topic_name(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "has space",
            "slash/no",
            "ünï",
            &"x".repeat(250),
        ] {
            assert!(
                validate_topic_name(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn overrides_apply_over_defaults_and_are_checked() {
        let defaults = LogConfig::default();
        let settings = TopicSettings {
            partitions: 1,
            retention_ms: Some(-1),
            max_batch_bytes: Some(2048),
            ..TopicSettings::default()
        };
        let config = settings.log_config(&defaults).unwrap();
        assert_eq!(config.retention_ms, None);
        assert_eq!(config.max_batch_bytes, 2048);
        let bad = TopicSettings {
            retention_bytes: Some(-7),
            ..settings
        };
        assert!(bad.log_config(&defaults).is_err());
    }
}
