//! Whole-cluster restore (`logbook restore`): rebuilds a node's data directory from the
//! snapshot store after every node was lost.
//!
//! The restored node is a new node (new node id, the old cluster id) that holds every partition
//! of every topic in the newest metadata manifest, each rebuilt from the newest partition
//! manifest that downloads and verifies (older ones are tried next). It starts as a one-node
//! cluster: each partition group and the metadata group have it as their only voter, at a term
//! above the old one. More nodes can then join it. The recovery point of a partition is the end
//! of its last uploaded manifest; anything acknowledged after that is not in the store.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::EntryPayload;

use super::NodeIdentity;
use crate::cluster::metadata::{ClusterMetadata, MetaCommand, MetaRaft, TopicSettings};
use crate::log::{LogConfig, PartitionLog};
use crate::raft::{Membership, Node, NodeId, log_id};
use crate::snapshot::manifest::{META_GROUP, MetaManifest};
use crate::snapshot::{
    Manifest, SnapshotStore, fetch_segments, get_manifest, group_prefix, manifest_keys,
};

/// What a restore rebuilt.
#[derive(Debug, Clone, Default)]
pub struct RestoreReport {
    /// The new node's id.
    pub node_id: NodeId,
    /// Topics restored.
    pub topics: usize,
    /// Partitions restored from a manifest, as (group, manifest key, recovery point offset).
    pub partitions: Vec<(String, String, u64)>,
    /// Partitions with no usable manifest (restored empty).
    pub empty: Vec<String>,
    /// Bytes downloaded.
    pub bytes: u64,
    /// Whether the topics came from a metadata manifest (else from the partition manifests,
    /// with default settings).
    pub from_metadata: bool,
}

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreFailed {
    /// The target already holds a node.
    #[error("{} already holds a node (node.json); restore needs an empty data directory", .0.display())]
    NotEmpty(PathBuf),
    /// Nothing of this cluster is in the store.
    #[error("the snapshot store has no snapshots of cluster {0:?}")]
    NothingStored(String),
    /// The store or a download failed.
    #[error(transparent)]
    Store(#[from] crate::snapshot::RestoreError),
    /// Writing the data directory failed.
    #[error("restore failed writing {}: {reason}", path.display())]
    Write {
        /// Where.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

fn write_err(path: &Path, e: impl std::fmt::Display) -> RestoreFailed {
    RestoreFailed::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Rebuilds `data_dir` from the newest manifests of `cluster_id` in `store`. `address` is
/// where the restored node will serve (recorded in its Raft memberships). `progress` gets
/// (bytes done, bytes total of the partition being downloaded).
pub async fn restore(
    store: Arc<dyn SnapshotStore>,
    cluster_id: &str,
    data_dir: &Path,
    address: &str,
    progress: &(dyn Fn(&str, u64) + Send + Sync),
) -> Result<RestoreReport, RestoreFailed> {
    if data_dir.join("node.json").exists() {
        return Err(RestoreFailed::NotEmpty(data_dir.to_path_buf()));
    }
    // Every group with manifests: `<cluster>/<topic>/<partition>/manifests/...` and `meta`.
    let objects = store
        .list(&format!("{cluster_id}/"))
        .await
        .map_err(crate::snapshot::RestoreError::from)?;
    let mut groups: BTreeSet<String> = BTreeSet::new();
    for o in &objects {
        if let Some((group, _)) = o.key[cluster_id.len() + 1..].split_once("/manifests/") {
            groups.insert(group.to_string());
        }
    }
    if groups.is_empty() {
        return Err(RestoreFailed::NothingStored(cluster_id.to_string()));
    }
    let mut report = RestoreReport::default();
    let (metadata, meta_term) = match newest_metadata(&*store, cluster_id).await {
        Some((m, term)) => (Some(m), term),
        None => (None, 0),
    };
    report.from_metadata = metadata.is_some();
    let mut topics: BTreeMap<String, TopicSettings> = match &metadata {
        Some(m) => m
            .topics
            .iter()
            .map(|(name, t)| (name.clone(), t.settings.clone()))
            .collect(),
        None => BTreeMap::new(),
    };
    // Partitions the metadata does not know of (a topic created after its last manifest).
    for group in &groups {
        if group == META_GROUP {
            continue;
        }
        if let Some((topic, partition)) = group.rsplit_once('/')
            && let Ok(partition) = partition.parse::<u32>()
        {
            let settings = topics.entry(topic.to_string()).or_insert(TopicSettings {
                partitions: 0,
                ..TopicSettings::default()
            });
            settings.partitions = settings.partitions.max(partition + 1);
        }
    }

    std::fs::create_dir_all(data_dir).map_err(|e| write_err(data_dir, e))?;
    // What an earlier, failed restore left (node.json is written last, so there is no node).
    for leftover in ["meta", "topics"] {
        let path = data_dir.join(leftover);
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(|e| write_err(&path, e))?;
        }
    }
    let me: NodeId = fastrand::u64(1..u64::MAX >> 11);
    report.node_id = me;
    let membership = Membership::new(
        vec![BTreeSet::from([me])],
        BTreeMap::from([(
            me,
            Node {
                addr: address.to_string(),
            },
        )]),
    );
    for (topic, settings) in &topics {
        for partition in 0..settings.partitions {
            let group = crate::raft::partition_group(topic, partition);
            let dir = data_dir
                .join("topics")
                .join(topic)
                .join(partition.to_string());
            match restore_partition(&store, cluster_id, &group, &dir, &membership, progress).await?
            {
                Some((key, manifest)) => {
                    report.bytes += manifest.segments.iter().map(|s| s.size).sum::<u64>();
                    report.partitions.push((group, key, manifest.next_offset));
                }
                None => report.empty.push(group),
            }
        }
    }
    report.topics = topics.len();
    // Above the old metadata's term, so the new metadata manifests sort after the old ones.
    write_meta_group(data_dir, cluster_id, meta_term + 1, &membership, &topics)?;
    NodeIdentity::create_with_id(data_dir, me, cluster_id).map_err(|e| write_err(data_dir, e))?;
    Ok(report)
}

/// The newest metadata manifest that reads back, if any, with its term.
async fn newest_metadata(
    store: &dyn SnapshotStore,
    cluster_id: &str,
) -> Option<(ClusterMetadata, u64)> {
    let keys = manifest_keys(store, &group_prefix(cluster_id, META_GROUP))
        .await
        .ok()?;
    for key in keys {
        let Ok(bytes) = store.get(&key).await else {
            continue;
        };
        let Ok(manifest) = serde_json::from_slice::<MetaManifest>(&bytes) else {
            tracing::warn!(%key, "unreadable metadata manifest; trying an older one");
            continue;
        };
        let term = manifest.last_log_id.map_or(0, |(t, _)| t);
        if let Ok(metadata) = serde_json::from_value::<ClusterMetadata>(manifest.metadata) {
            return Some((metadata, term));
        }
    }
    None
}

/// Restores one partition from its newest usable manifest into `dir`.
async fn restore_partition(
    store: &Arc<dyn SnapshotStore>,
    cluster_id: &str,
    group: &str,
    dir: &Path,
    membership: &Membership,
    progress: &(dyn Fn(&str, u64) + Send + Sync),
) -> Result<Option<(String, Manifest)>, RestoreFailed> {
    let keys = manifest_keys(&**store, &group_prefix(cluster_id, group))
        .await
        .map_err(crate::snapshot::RestoreError::from)?;
    for key in keys {
        let manifest = match get_manifest(&**store, &key).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(%group, %key, error = %e, "manifest unusable; trying an older one");
                continue;
            }
        };
        let Some((term, index)) = manifest.last_log_id else {
            continue;
        };
        let staging = dir.join(crate::raft::state_machine::RESTORE_DIR);
        let report = |bytes: u64| progress(group, bytes);
        let files = match fetch_segments(store.clone(), &manifest, &staging, &report).await {
            Ok(files) => files,
            Err(e) => {
                tracing::warn!(%group, %key, error = %e,
                    "manifest's objects unusable; trying an older one");
                continue;
            }
        };
        let log = PartitionLog::open(dir, LogConfig::default()).map_err(|e| write_err(dir, e))?;
        log.install_segments(&files, manifest.log_start_offset, manifest.next_offset)
            .map_err(|e| write_err(dir, e))?;
        log.close().map_err(|e| write_err(dir, e))?;
        let _ = std::fs::remove_dir_all(&staging);
        let last = log_id(term, index);
        crate::raft::log_store::seed_restored_state(dir, term, Some(last), None)
            .map_err(|e| write_err(dir, e))?;
        crate::raft::state_machine::seed_restored(dir, &manifest, membership)
            .map_err(|e| write_err(dir, e))?;
        tracing::info!(%group, %key, next_offset = manifest.next_offset, "partition restored");
        return Ok(Some((key, manifest)));
    }
    Ok(None)
}

/// Writes a metadata group log that makes this node the only voter and recreates the topics
/// with every replica here.
fn write_meta_group(
    data_dir: &Path,
    cluster_id: &str,
    term: u64,
    membership: &Membership,
    topics: &BTreeMap<String, TopicSettings>,
) -> Result<(), RestoreFailed> {
    let me = membership.voter_ids().next().unwrap_or_default();
    let dir = data_dir.join("meta");
    let log =
        PartitionLog::open(&dir, super::node::meta_log_config()).map_err(|e| write_err(&dir, e))?;
    let address = membership
        .nodes()
        .next()
        .map(|(_, n)| n.addr.clone())
        .unwrap_or_default();
    let mut payloads: Vec<EntryPayload<MetaRaft>> = vec![
        EntryPayload::Membership(membership.clone()),
        EntryPayload::Normal(MetaCommand::SetClusterId(cluster_id.to_string())),
        EntryPayload::Normal(MetaCommand::RegisterNode {
            id: me,
            addr: address,
        }),
    ];
    for (name, settings) in topics {
        payloads.push(EntryPayload::Normal(MetaCommand::CreateTopic {
            name: name.clone(),
            settings: settings.clone(),
            replicas: vec![vec![me]; settings.partitions as usize],
        }));
    }
    let mut last = None;
    for (i, payload) in payloads.into_iter().enumerate() {
        let entry = openraft::Entry::<MetaRaft> {
            log_id: log_id(term, i as u64),
            payload,
        };
        let mut batches =
            crate::raft::codec::entry_to_batches(&entry).map_err(|e| write_err(&dir, e))?;
        log.append(&mut batches, term as i32)
            .map_err(|e| write_err(&dir, e))?;
        last = Some(entry.log_id);
    }
    log.sync().map_err(|e| write_err(&dir, e))?;
    log.close().map_err(|e| write_err(&dir, e))?;
    crate::raft::log_store::seed_restored_state(&dir, term, None, last)
        .map_err(|e| write_err(&dir, e))?;
    Ok(())
}
