//! The cluster metadata and the state machine of the metadata Raft group: nodes, topics and
//! partition assignments. Every node is a member of the group (the first three as voters, the
//! rest as learners), so every node has the metadata locally.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::sync::Arc;

use bytes::Bytes;
use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, EntryPayload, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::limit;
use crate::log::{CleanupPolicy, LogConfig, LogError, ValidatedBatch};
use crate::raft::codec::{StoredPayload, json_batch, json_from_batch};
use crate::raft::{LogId, Node, NodeId, StoredMembership};

/// A topic's persisted settings: the partition count and overrides of the broker defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSettings {
    /// Number of partitions.
    pub partitions: u32,
    /// Size retention per partition (-1: none); broker default when absent.
    pub retention_bytes: Option<i64>,
    /// Time retention in ms (-1: none); broker default when absent.
    pub retention_ms: Option<i64>,
    /// Cleanup policy; broker default when absent.
    pub cleanup_policy: Option<CleanupPolicy>,
    /// Largest record batch; broker default when absent.
    pub max_batch_bytes: Option<u64>,
    /// Segment size; broker default when absent.
    pub segment_max_bytes: Option<u64>,
}

impl TopicSettings {
    /// The partitions' log settings: `defaults` with this topic's overrides.
    pub fn log_config(&self, defaults: &LogConfig) -> Result<LogConfig, InvalidTopicSetting> {
        let invalid = |field, reason: String| InvalidTopicSetting { field, reason };
        let mut config = defaults.clone();
        if let Some(v) = self.retention_bytes {
            config.retention_bytes =
                limit(v, "retention_bytes").map_err(|r| invalid("retention_bytes", r))?;
        }
        if let Some(v) = self.retention_ms {
            config.retention_ms =
                limit(v, "retention_ms").map_err(|r| invalid("retention_ms", r))?;
        }
        if let Some(v) = self.cleanup_policy {
            config.cleanup_policy = v;
        }
        if let Some(v) = self.max_batch_bytes {
            config.max_batch_bytes = v;
        }
        if let Some(v) = self.segment_max_bytes {
            config.segment_max_bytes = v;
        }
        config
            .validate()
            .map_err(|e| invalid("config", e.to_string()))?;
        Ok(config)
    }
}

/// A topic setting that does not make a valid log configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct InvalidTopicSetting {
    /// The setting.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

openraft::declare_raft_types!(
    /// Type configuration of the metadata group (its commands are JSON in one-record batches).
    pub MetaRaft:
        D = MetaCommand,
        R = MetaResponse,
        SnapshotData = Cursor<Vec<u8>>,
);

/// The metadata group's Raft handle.
pub type MetaRaftHandle = openraft::Raft<MetaRaft>;

/// A node known to the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Address of its gRPC server (client API and Raft).
    pub addr: String,
}

/// A topic: its settings and, per partition, its replicas (the first is the preferred leader).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    /// Settings (partition count and overrides).
    pub settings: TopicSettings,
    /// Replicas of each partition, by partition number.
    pub replicas: Vec<Vec<NodeId>>,
}

/// Everything the metadata group holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMetadata {
    /// The cluster id (set once, by the node that formed the cluster).
    pub cluster_id: String,
    /// Nodes, by id.
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    /// Topics, by name.
    pub topics: BTreeMap<String, TopicMeta>,
    /// The last known leader of each partition group (`topic/partition` → node), as reported
    /// by the leaders themselves. A hint for clients: Raft decides.
    pub leaders: BTreeMap<String, NodeId>,
}

impl ClusterMetadata {
    /// How many partition replicas each node holds.
    pub fn replica_counts(&self) -> BTreeMap<NodeId, usize> {
        let mut counts: BTreeMap<NodeId, usize> = self.nodes.keys().map(|id| (*id, 0)).collect();
        for topic in self.topics.values() {
            for replicas in &topic.replicas {
                for id in replicas {
                    *counts.entry(*id).or_default() += 1;
                }
            }
        }
        counts
    }

    /// How many partitions each node is the preferred leader of.
    pub fn leader_counts(&self) -> BTreeMap<NodeId, usize> {
        let mut counts: BTreeMap<NodeId, usize> = self.nodes.keys().map(|id| (*id, 0)).collect();
        for topic in self.topics.values() {
            for replicas in &topic.replicas {
                if let Some(first) = replicas.first() {
                    *counts.entry(*first).or_default() += 1;
                }
            }
        }
        counts
    }
}

/// A change to the metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaCommand {
    /// Sets the cluster id (ignored once set).
    SetClusterId(String),
    /// Adds a node or updates its address.
    RegisterNode {
        /// Node id.
        id: NodeId,
        /// Its gRPC address.
        addr: String,
    },
    /// Forgets a node (after its replicas were moved away).
    RemoveNode {
        /// Node id.
        id: NodeId,
    },
    /// Creates a topic with the given replica assignment.
    CreateTopic {
        /// Name.
        name: String,
        /// Settings.
        settings: TopicSettings,
        /// Replicas per partition.
        replicas: Vec<Vec<NodeId>>,
    },
    /// Deletes a topic.
    DeleteTopic {
        /// Name.
        name: String,
    },
    /// Changes the replicas of one partition.
    SetReplicas {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// New replica list.
        replicas: Vec<NodeId>,
    },
    /// Records the leader a partition group reported.
    SetLeader {
        /// Group name (`topic/partition`).
        group: String,
        /// Its leader.
        leader: NodeId,
    },
}

/// The outcome of a command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaResponse {
    /// Applied.
    #[default]
    Ok,
    /// Refused (for example: the topic exists); nothing changed.
    Refused(String),
}

impl StoredPayload for MetaCommand {
    fn to_batches(&self) -> Result<Vec<ValidatedBatch>, LogError> {
        Ok(vec![json_batch(self)?])
    }

    fn from_batches(batch: Bytes) -> Result<Self, LogError> {
        json_from_batch(batch)
    }
}

impl ClusterMetadata {
    /// Applies one command.
    pub fn apply(&mut self, command: &MetaCommand) -> MetaResponse {
        match command {
            MetaCommand::SetClusterId(id) => {
                if self.cluster_id.is_empty() {
                    self.cluster_id = id.clone();
                }
            }
            MetaCommand::RegisterNode { id, addr } => {
                self.nodes.insert(*id, NodeInfo { addr: addr.clone() });
            }
            MetaCommand::RemoveNode { id } => {
                self.nodes.remove(id);
            }
            MetaCommand::CreateTopic {
                name,
                settings,
                replicas,
            } => {
                if self.topics.contains_key(name) {
                    return MetaResponse::Refused(format!("topic {name:?} already exists"));
                }
                self.topics.insert(
                    name.clone(),
                    TopicMeta {
                        settings: settings.clone(),
                        replicas: replicas.clone(),
                    },
                );
            }
            MetaCommand::DeleteTopic { name } => {
                if self.topics.remove(name).is_none() {
                    return MetaResponse::Refused(format!("topic {name:?} does not exist"));
                }
                let prefix = format!("{name}/");
                self.leaders.retain(|group, _| !group.starts_with(&prefix));
            }
            MetaCommand::SetReplicas {
                topic,
                partition,
                replicas,
            } => {
                let Some(slot) = self
                    .topics
                    .get_mut(topic)
                    .and_then(|t| t.replicas.get_mut(*partition as usize))
                else {
                    return MetaResponse::Refused(format!("no partition {topic}/{partition}"));
                };
                *slot = replicas.clone();
            }
            MetaCommand::SetLeader { group, leader } => {
                self.leaders.insert(group.clone(), *leader);
            }
        }
        MetaResponse::Ok
    }
}

/// Applied state of the metadata group.
#[derive(Debug, Default)]
struct MetaApplied {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    snapshot: Option<(SnapshotMeta<NodeId, Node>, Vec<u8>)>,
    snapshots_built: u64,
}

/// The metadata state machine: the metadata in memory, published on a watch channel. It is
/// rebuilt on start by re-applying the group's log (metadata is small).
#[derive(Debug, Clone)]
pub struct MetaStateMachine {
    applied: Arc<Mutex<MetaApplied>>,
    metadata: Arc<watch::Sender<Arc<ClusterMetadata>>>,
}

impl Default for MetaStateMachine {
    fn default() -> Self {
        MetaStateMachine {
            applied: Arc::default(),
            metadata: Arc::new(watch::channel(Arc::new(ClusterMetadata::default())).0),
        }
    }
}

fn sm_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(AnyError::new(&e)).into()
}

impl MetaStateMachine {
    /// Watches the metadata.
    pub fn watch(&self) -> watch::Receiver<Arc<ClusterMetadata>> {
        self.metadata.subscribe()
    }

    /// The metadata now.
    pub fn current(&self) -> Arc<ClusterMetadata> {
        self.metadata.borrow().clone()
    }

    /// The voter sets and learners of the group's last applied membership.
    pub fn membership(&self) -> (BTreeSet<NodeId>, BTreeSet<NodeId>) {
        let applied = self.applied.lock();
        let m = applied.membership.membership();
        let voters: BTreeSet<NodeId> = m.voter_ids().collect();
        let learners: BTreeSet<NodeId> = m.learner_ids().collect();
        (voters, learners)
    }
}

impl RaftSnapshotBuilder<MetaRaft> for MetaStateMachine {
    #[allow(clippy::result_large_err)]
    async fn build_snapshot(&mut self) -> Result<Snapshot<MetaRaft>, StorageError<NodeId>> {
        let data = serde_json::to_vec(&*self.current()).map_err(sm_err)?;
        let mut applied = self.applied.lock();
        applied.snapshots_built += 1;
        let snapshot_id = match applied.last_applied {
            Some(l) => format!(
                "{}-{}-{}",
                l.leader_id.term, l.index, applied.snapshots_built
            ),
            None => format!("0-0-{}", applied.snapshots_built),
        };
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership.clone(),
            snapshot_id,
        };
        applied.snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<MetaRaft> for MetaStateMachine {
    type SnapshotBuilder = MetaStateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership), StorageError<NodeId>> {
        let applied = self.applied.lock();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MetaResponse>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = openraft::Entry<MetaRaft>> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut replies = Vec::new();
        let mut metadata = (*self.current()).clone();
        let mut changed = false;
        let mut applied = self.applied.lock();
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            match &entry.payload {
                EntryPayload::Normal(command) => {
                    replies.push(metadata.apply(command));
                    changed = true;
                }
                EntryPayload::Membership(m) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    replies.push(MetaResponse::Ok);
                }
                EntryPayload::Blank => replies.push(MetaResponse::Ok),
            }
        }
        drop(applied);
        if changed {
            self.metadata.send_replace(Arc::new(metadata));
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let metadata: ClusterMetadata = if data.is_empty() {
            ClusterMetadata::default()
        } else {
            serde_json::from_slice(&data).map_err(|e| {
                StorageError::from(StorageIOError::read_snapshot(
                    Some(meta.signature()),
                    AnyError::new(&e),
                ))
            })?
        };
        {
            let mut applied = self.applied.lock();
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership.clone();
            applied.snapshot = Some((meta.clone(), data));
        }
        self.metadata.send_replace(Arc::new(metadata));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<MetaRaft>>, StorageError<NodeId>> {
        Ok(self
            .applied
            .lock()
            .snapshot
            .clone()
            .map(|(meta, data)| Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data)),
            }))
    }
}

/// Places `partitions` partitions with `replication` replicas each on `nodes`: each partition
/// goes to the nodes holding the fewest replicas so far, and its first replica (the preferred
/// leader) is the one among them leading the fewest partitions, so replicas and leadership
/// both spread evenly.
pub fn place_replicas(
    metadata: &ClusterMetadata,
    nodes: &[NodeId],
    partitions: u32,
    replication: usize,
) -> Vec<Vec<NodeId>> {
    let mut replicas_of: BTreeMap<NodeId, usize> = metadata.replica_counts();
    let mut leaders_of: BTreeMap<NodeId, usize> = metadata.leader_counts();
    let replication = replication.min(nodes.len()).max(1);
    let mut out = Vec::with_capacity(partitions as usize);
    for p in 0..partitions {
        let mut candidates: Vec<NodeId> = nodes.to_vec();
        // Fewest replicas first; ties broken by rotating with the partition number.
        candidates.sort_by_key(|id| {
            (
                replicas_of.get(id).copied().unwrap_or(0),
                (id.wrapping_add(p as u64)) % nodes.len().max(1) as u64,
                *id,
            )
        });
        let mut chosen: Vec<NodeId> = candidates.into_iter().take(replication).collect();
        chosen.sort_by_key(|id| (leaders_of.get(id).copied().unwrap_or(0), *id));
        for id in &chosen {
            *replicas_of.entry(*id).or_default() += 1;
        }
        if let Some(first) = chosen.first() {
            *leaders_of.entry(*first).or_default() += 1;
        }
        out.push(chosen);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_spreads_replicas_and_leaders_evenly() {
        let mut metadata = ClusterMetadata::default();
        for id in [11, 22, 33] {
            metadata.nodes.insert(
                id,
                NodeInfo {
                    addr: format!("n{id}"),
                },
            );
        }
        let placed = place_replicas(&metadata, &[11, 22, 33], 6, 3);
        assert_eq!(placed.len(), 6);
        let mut leaders: BTreeMap<NodeId, usize> = BTreeMap::new();
        for replicas in &placed {
            let set: BTreeSet<_> = replicas.iter().collect();
            assert_eq!(set.len(), 3, "three distinct replicas: {replicas:?}");
            *leaders.entry(replicas[0]).or_default() += 1;
        }
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        // Replication is capped by the cluster size.
        let small = place_replicas(&metadata, &[11], 2, 3);
        assert_eq!(small, vec![vec![11], vec![11]]);
    }

    #[test]
    fn commands_apply_and_refuse_cleanly() {
        let mut m = ClusterMetadata::default();
        let create = MetaCommand::CreateTopic {
            name: "t".into(),
            settings: TopicSettings {
                partitions: 1,
                ..TopicSettings::default()
            },
            replicas: vec![vec![1]],
        };
        assert_eq!(m.apply(&create), MetaResponse::Ok);
        assert!(matches!(m.apply(&create), MetaResponse::Refused(_)));
        m.apply(&MetaCommand::SetLeader {
            group: "t/0".into(),
            leader: 1,
        });
        assert_eq!(m.leaders.get("t/0"), Some(&1));
        assert_eq!(
            m.apply(&MetaCommand::DeleteTopic { name: "t".into() }),
            MetaResponse::Ok
        );
        assert!(m.leaders.is_empty());
        let batch = MetaCommand::SetClusterId("c".into()).to_batches().unwrap();
        assert_eq!(
            MetaCommand::from_batches(batch[0].to_bytes()).unwrap(),
            MetaCommand::SetClusterId("c".into())
        );
    }
}
