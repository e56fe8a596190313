//! The broker: the topics and partitions on this node and the operations the gRPC services
//! expose, independent of gRPC. (With the cluster issue, a partition becomes a Raft group.)

mod combiner;
mod identity;
pub mod node;
mod observe;
pub mod restore;
pub mod snapshots;
mod topic;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::RwLock;
use tokio::sync::watch;

pub use identity::NodeIdentity;
pub use topic::{Partition, PendingAppend, RaftContext, TopicSettings, validate_topic_name};

use crate::cluster::membership::{Membership, SerfMembership};
use crate::cluster::{
    ClusterMetadata, MetaCommand, MetaRaftHandle, MetaResponse, MetaStateMachine, TopicMeta,
    place_replicas,
};
use crate::config::{BrokerConfig, MAX_PARTITIONS};
use crate::log::{
    LogConfig, LogError, NewRecord, PartitionLog, ValidatedBatch, encode_batch, now_ms,
};
use crate::raft::{Channels, RaftGroups};

/// Default byte budget of a read.
pub const DEFAULT_READ_BYTES: usize = 1 << 20;

/// What can go wrong in a broker operation. Mapped once to gRPC statuses by the server.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No topic with this name.
    #[error("topic {0:?} does not exist")]
    UnknownTopic(String),
    /// The topic has no such partition.
    #[error("topic {topic:?} has {partitions} partition(s); partition {partition} does not exist")]
    UnknownPartition {
        /// Topic name.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// How many the topic has.
        partitions: u32,
    },
    /// A topic with this name exists already.
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    /// A request field is invalid.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The request is larger than `max_request_bytes`.
    #[error("request of {size} bytes is larger than max_request_bytes = {limit}")]
    RequestTooLarge {
        /// Size of the request.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The storage engine failed (offset out of range, batch too large, disk full, ...).
    #[error(transparent)]
    Log(#[from] LogError),
    /// The broker is shutting down.
    #[error("the broker is shutting down")]
    ShuttingDown,
    /// This node does not lead the partition; the request must go to the leader.
    #[error("node {node_id} is not the leader of {group}{}", leader_hint(.leader_id, .leader_addr))]
    NotLeader {
        /// Raft group (`topic/partition` or `meta`).
        group: String,
        /// This node.
        node_id: u64,
        /// The leader, if known.
        leader_id: Option<u64>,
        /// The leader's address, if known.
        leader_addr: Option<String>,
    },
    /// A Raft group is not available (no quorum, stopping, or failed); retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Another process uses the data directory.
    #[error("data directory {} is in use by another broker", .0.display())]
    DataDirLocked(PathBuf),
    /// A file operation failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl From<crate::cluster::metadata::InvalidTopicSetting> for BrokerError {
    fn from(e: crate::cluster::metadata::InvalidTopicSetting) -> Self {
        BrokerError::InvalidArgument {
            field: e.field,
            reason: e.reason,
        }
    }
}

fn leader_hint(id: &Option<u64>, addr: &Option<String>) -> String {
    match (id, addr) {
        (Some(id), Some(addr)) => format!("; the leader is node {id} at {addr}"),
        (Some(id), None) => format!("; the leader is node {id}"),
        _ => "; no leader is known (an election may be running)".into(),
    }
}

impl BrokerError {
    /// Wraps an I/O error with its path.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        BrokerError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
}

/// Records to produce, as messages or as one encoded RecordBatch v2.
#[derive(Debug, Clone)]
pub enum ProducePayload {
    /// Records to encode (timestamps default to the broker's clock).
    Records(Vec<NewRecord>),
    /// An encoded batch from the client library.
    Batch(Bytes),
}

/// Where produced records went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Produced {
    /// Partition written to.
    pub partition: u32,
    /// Offset of the first record.
    pub base_offset: u64,
    /// Offset of the last record.
    pub last_offset: u64,
}

/// Records handed to a partition's Raft leader, waiting for their acknowledgement.
#[derive(Debug)]
pub struct PendingProduce {
    /// Partition they were queued on.
    partition: u32,
    /// Raft group of the partition.
    group: String,
    /// Resolves once the entry is committed and applied.
    pending: PendingAppend,
    /// Bytes of the record batch (for the produce metrics).
    bytes: u64,
}

impl PendingProduce {
    /// Waits until the records are acknowledged: committed (durable on a majority of the
    /// partition's replicas) and applied.
    pub async fn acknowledged(self) -> Result<Produced, BrokerError> {
        let offsets = self
            .pending
            .await
            .map_err(|_| BrokerError::Unavailable(format!("{} stopped", self.group)))??;
        let topic = self
            .group
            .rsplit_once('/')
            .map_or(self.group.as_str(), |(t, _)| t);
        let labels = crate::telemetry::TopicLabels {
            topic: topic.to_string(),
        };
        let m = crate::telemetry::metrics();
        m.produce_records
            .get_or_create(&labels)
            .inc_by(offsets.1.saturating_sub(offsets.0) + 1);
        m.produce_bytes.get_or_create(&labels).inc_by(self.bytes);
        Ok(Produced {
            partition: self.partition,
            base_offset: offsets.0,
            last_offset: offsets.1,
        })
    }
}

/// What a read returned.
#[derive(Debug, Clone)]
pub struct Consumed {
    /// Whole RecordBatch v2 batches (the first may start before the requested offset).
    pub batches: Bytes,
    /// Where the next read should start.
    pub next_offset: u64,
    /// Lowest readable offset.
    pub log_start_offset: u64,
    /// Offset after the last acknowledged record.
    pub high_watermark: u64,
}

/// A partition as described to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStatus {
    /// Partition number.
    pub partition: u32,
    /// Lowest readable offset (on this node's replica; 0 if it has none).
    pub log_start_offset: u64,
    /// Offset after the last committed record (on this node's replica; 0 if it has none).
    pub high_watermark: u64,
    /// Bytes on disk (of this node's replica; 0 if it has none).
    pub size_bytes: u64,
    /// The partition's leader, if known.
    pub leader_id: Option<u64>,
    /// Its replicas.
    pub replicas: Vec<u64>,
    /// Bytes of Raft entries this replica received from leaders since the node started.
    pub replication_bytes_received: u64,
    /// Key of this replica's current snapshot manifest ("" if none).
    pub snapshot_manifest: String,
    /// Bytes of sealed, committed segments not uploaded yet (on the leader).
    pub snapshot_lag_bytes: u64,
    /// Snapshot store failures in a row.
    pub snapshot_failures: u64,
}

/// A topic as described to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicStatus {
    /// Name.
    pub name: String,
    /// Persisted settings (overrides of the broker defaults).
    pub settings: TopicSettings,
    /// Effective log settings.
    pub log_config: LogConfig,
    /// Per-partition state.
    pub partitions: Vec<PartitionStatus>,
}

/// The broker of one node: its replicas of partitions (each a Raft group), its member of the
/// metadata group, and its gossip membership. See [`node`] for how a cluster forms and is kept.
pub struct Broker {
    /// Its configuration.
    config: BrokerConfig,
    /// Default log settings of topics.
    log_defaults: LogConfig,
    /// Node id and cluster id.
    identity: NodeIdentity,
    /// `<data_dir>/topics`.
    topics_dir: PathBuf,
    /// This node's replicas, by group name (`topic/partition`).
    replicas: RwLock<BTreeMap<String, Arc<Partition>>>,
    /// Next partition per topic for keyless records produced without a partition.
    round_robin: parking_lot::Mutex<BTreeMap<String, u32>>,
    /// The metadata group.
    meta: MetaRaftHandle,
    /// Its state machine (the metadata, locally).
    meta_state: MetaStateMachine,
    /// Its log.
    meta_log: Arc<PartitionLog>,
    /// Gossip membership.
    gossip: Arc<SerfMembership>,
    /// Serialises opening and closing replicas.
    admin: tokio::sync::Mutex<()>,
    /// Address clients and peers reach this node at.
    address: String,
    /// What partitions need to run their Raft groups.
    raft: RaftContext,
    /// Flips to true when the broker shuts down; streams and background tasks end on it.
    shutdown: watch::Sender<bool>,
    /// Background tasks (formation, controller, replica reconciler, leader reports).
    tasks: parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Controller: since when each registered node has been missing from gossip.
    failed_since: parking_lot::Mutex<BTreeMap<u64, std::time::Instant>>,
    /// The snapshot store (`None` when `snapshot_store = none`).
    snapshot_store: Option<Arc<dyn crate::snapshot::SnapshotStore>>,
    /// Exclusive lock on the data directory, held while the broker lives.
    _lock: fs::File,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("node_id", &self.identity.node_id)
            .field("address", &self.address)
            .field("replicas", &self.replicas.read().len())
            .finish()
    }
}

impl Broker {
    /// Opens the data directory (creating it), locks it, loads the node identity, starts the
    /// metadata group and gossip, and starts the background tasks that form the cluster and
    /// open this node's replicas. `address` is where clients and peers reach this node's gRPC
    /// server; `groups` is what its Raft service routes to. A standalone node
    /// (`bootstrap_expect = 1`, no seeds) is ready when this returns; a cluster node becomes
    /// ready once its peers are found.
    pub async fn open(
        config: BrokerConfig,
        address: String,
        groups: Arc<RaftGroups>,
    ) -> Result<Arc<Self>, BrokerError> {
        let log_defaults = config
            .log_config()
            .map_err(|reason| BrokerError::InvalidArgument {
                field: "config",
                reason,
            })?;
        let data_dir = config.data_dir.clone();
        let topics_dir = data_dir.join("topics");
        fs::create_dir_all(&topics_dir).map_err(|e| BrokerError::io(&topics_dir, e))?;
        let lock_path = data_dir.join(".lock");
        let lock = fs::File::create(&lock_path).map_err(|e| BrokerError::io(&lock_path, e))?;
        if lock.try_lock().is_err() {
            return Err(BrokerError::DataDirLocked(data_dir));
        }
        let identity = NodeIdentity::load_or_create(&data_dir)?;
        let tls_error = |reason: String| BrokerError::InvalidArgument {
            field: "tls",
            reason,
        };
        // Peers are reached with this node's certificate (it names the node: CN=node:...).
        let channels = match config.tls_files().map_err(|e| tls_error(e.to_string()))? {
            Some(files) => Channels::with_tls(
                crate::security::tls::ClientTls::new(files, &config.tls_peer_server_name)
                    .map_err(|e| tls_error(e.to_string()))?,
            ),
            None => Channels::default(),
        };
        // Deleted topics are moved here before their files are removed; finish interrupted ones.
        let trash_dir = data_dir.join("trash");
        if trash_dir.exists() {
            fs::remove_dir_all(&trash_dir).map_err(|e| BrokerError::io(&trash_dir, e))?;
        }
        fs::create_dir_all(&trash_dir).map_err(|e| BrokerError::io(&trash_dir, e))?;
        let address = if config.advertise_addr.is_empty() {
            address
        } else {
            config.advertise_addr.clone()
        };
        let raft = RaftContext {
            node_id: identity.node_id,
            address: address.clone(),
            channels: Arc::new(channels),
            groups,
            timing: config.raft_timing(),
        };
        let snapshot_store = match config.snapshot_store_url() {
            None => None,
            Some(url) => Some(
                crate::snapshot::open_store(&url, &config.s3_location())
                    .await
                    .map_err(|reason| BrokerError::InvalidArgument {
                        field: "snapshot_store",
                        reason,
                    })?,
            ),
        };
        let (meta, meta_state, meta_log) = node::open_meta_group(&data_dir, &raft).await?;
        let gossip = node::start_gossip(&config, identity.node_id, &address).await?;
        let broker = Arc::new(Broker {
            config,
            log_defaults,
            identity,
            topics_dir,
            replicas: RwLock::new(BTreeMap::new()),
            round_robin: parking_lot::Mutex::new(BTreeMap::new()),
            meta,
            meta_state,
            meta_log,
            gossip,
            admin: tokio::sync::Mutex::new(()),
            address,
            raft,
            shutdown: watch::channel(false).0,
            tasks: parking_lot::Mutex::new(Vec::new()),
            failed_since: parking_lot::Mutex::new(BTreeMap::new()),
            snapshot_store,
            _lock: lock,
        });
        let proposer: Arc<dyn crate::raft::MetaProposer> = broker.clone();
        broker.raft.groups.set_proposer(Arc::downgrade(&proposer));
        node::spawn_tasks(&broker);
        if broker.is_standalone() {
            node::wait_standalone_ready(&broker).await?;
        }
        tracing::info!(node_id = broker.identity.node_id, address = %broker.address,
            data_dir = %broker.config.data_dir.display(), "broker opened");
        Ok(broker)
    }

    /// A single node with nobody to find: `bootstrap_expect = 1` and no seeds.
    pub fn is_standalone(&self) -> bool {
        self.config.bootstrap_expect <= 1 && self.config.join.is_empty()
    }

    /// The configuration the broker runs with.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Node id and cluster id.
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// The Raft groups this node serves (what its Raft RPC service routes to).
    pub fn raft_groups(&self) -> Arc<RaftGroups> {
        self.raft.groups.clone()
    }

    /// The address clients and peers reach this node at.
    pub fn address(&self) -> String {
        self.address.clone()
    }

    /// The cluster metadata as this node knows it.
    pub fn metadata(&self) -> Arc<ClusterMetadata> {
        self.meta_state.current()
    }

    /// Snapshot settings of this node's replicas (`None` without a snapshot store). Keys are
    /// under the cluster id the metadata records (this node's own before the cluster formed).
    pub fn snapshot_settings(&self) -> Option<snapshots::SnapshotSettings> {
        let store = self.snapshot_store.clone()?;
        let metadata = self.metadata();
        let cluster_id = if metadata.cluster_id.is_empty() {
            self.identity.cluster_id.clone()
        } else {
            metadata.cluster_id.clone()
        };
        Some(snapshots::SnapshotSettings {
            store,
            cluster_id,
            interval: Duration::from_millis(self.config.snapshot_interval_ms),
            retain: self.config.snapshot_retain as usize,
        })
    }

    /// The snapshot store, if one is configured.
    pub fn snapshot_store(&self) -> Option<Arc<dyn crate::snapshot::SnapshotStore>> {
        self.snapshot_store.clone()
    }

    /// The gossip membership.
    pub fn gossip(&self) -> &Arc<SerfMembership> {
        &self.gossip
    }

    /// The metadata group.
    pub fn meta_raft(&self) -> &MetaRaftHandle {
        &self.meta
    }

    /// Resolves when the broker starts shutting down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Settings and partition count of topic `name`.
    pub fn topic(&self, name: &str) -> Result<TopicMeta, BrokerError> {
        self.metadata()
            .topics
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))
    }

    /// This node's replica of partition `index` of topic `name`. A partition this node holds
    /// no replica of is `NotLeader` with a hint to its leader.
    pub fn partition(&self, name: &str, index: u32) -> Result<Arc<Partition>, BrokerError> {
        let topic = self.topic(name)?;
        let count = topic.replicas.len() as u32;
        if index >= count {
            return Err(BrokerError::UnknownPartition {
                topic: name.to_string(),
                partition: index,
                partitions: count,
            });
        }
        let group = crate::raft::partition_group(name, index);
        if let Some(p) = self.replicas.read().get(&group) {
            return Ok(p.clone());
        }
        let metadata = self.metadata();
        let leader_id = metadata.leaders.get(&group).copied().or_else(|| {
            topic
                .replicas
                .get(index as usize)
                .and_then(|r| r.first().copied())
        });
        let replicas = topic
            .replicas
            .get(index as usize)
            .cloned()
            .unwrap_or_default();
        if replicas.contains(&self.identity.node_id) {
            // Assigned here but not open yet (just created, or catching up).
            return Err(BrokerError::Unavailable(format!(
                "{group} is not open on this node yet"
            )));
        }
        Err(BrokerError::NotLeader {
            leader_addr: leader_id.and_then(|id| metadata.nodes.get(&id).map(|n| n.addr.clone())),
            group,
            node_id: self.identity.node_id,
            leader_id,
        })
    }

    /// Snapshots partition `index` of topic `name` now (on its leader): uploads what the
    /// store lacks and writes a manifest, which it returns.
    pub async fn create_snapshot(
        &self,
        name: &str,
        index: u32,
    ) -> Result<crate::snapshot::Manifest, BrokerError> {
        let partition = self.partition(name, index)?;
        if partition.raft().metrics().borrow().state != openraft::ServerState::Leader {
            let metadata = self.metadata();
            let leader_id = partition.current_leader();
            return Err(BrokerError::NotLeader {
                leader_addr: leader_id
                    .and_then(|id| metadata.nodes.get(&id).map(|n| n.addr.clone())),
                group: partition.group().to_string(),
                node_id: self.identity.node_id,
                leader_id,
            });
        }
        partition.create_snapshot().await
    }

    /// Creates a topic (`settings.partitions == 0` takes the default count): its replicas are
    /// placed on the cluster's nodes, the metadata group records it, and this returns once
    /// every partition has a leader.
    pub async fn create_topic(
        &self,
        name: &str,
        mut settings: TopicSettings,
    ) -> Result<TopicStatus, BrokerError> {
        validate_topic_name(name)?;
        if settings.partitions == 0 {
            settings.partitions = self.config.default_partitions;
        }
        if !(1..=MAX_PARTITIONS).contains(&settings.partitions) {
            return Err(BrokerError::InvalidArgument {
                field: "partitions",
                reason: format!(
                    "{} partitions: a topic has 1 to {MAX_PARTITIONS}",
                    settings.partitions
                ),
            });
        }
        settings.log_config(&self.log_defaults)?;
        let metadata = self.metadata();
        if metadata.topics.contains_key(name) {
            return Err(BrokerError::TopicExists(name.to_string()));
        }
        let nodes: Vec<u64> = metadata.nodes.keys().copied().collect();
        if nodes.is_empty() {
            return Err(BrokerError::Unavailable(
                "the cluster has not formed yet (no nodes in the metadata)".into(),
            ));
        }
        let replicas = place_replicas(
            &metadata,
            &nodes,
            settings.partitions,
            self.config.replication_factor as usize,
        );
        let command = MetaCommand::CreateTopic {
            name: name.to_string(),
            settings,
            replicas,
        };
        match self.propose(command).await? {
            MetaResponse::Ok => {}
            MetaResponse::Refused(_) => return Err(BrokerError::TopicExists(name.to_string())),
        }
        node::wait_topic_ready(self, name, node::READY_WAIT).await?;
        tracing::info!(topic = name, "topic created");
        self.describe_topic(name).await
    }

    /// Deletes a topic: the metadata group records it and every node removes its replicas.
    pub async fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        self.topic(name)?;
        match self
            .propose(MetaCommand::DeleteTopic {
                name: name.to_string(),
            })
            .await?
        {
            MetaResponse::Ok => {}
            MetaResponse::Refused(_) => return Err(BrokerError::UnknownTopic(name.to_string())),
        }
        // This node's replicas go now (the reconciler would remove them shortly anyway), so
        // the topic is gone here when the call returns.
        node::remove_topic_replicas(self, name).await?;
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }

    /// Topic names and partition counts.
    pub fn list_topics(&self) -> Vec<(String, u32)> {
        self.metadata()
            .topics
            .iter()
            .map(|(name, t)| (name.clone(), t.replicas.len() as u32))
            .collect()
    }

    /// Settings and per-partition state of a topic (offsets and sizes of this node's replicas).
    pub async fn describe_topic(&self, name: &str) -> Result<TopicStatus, BrokerError> {
        let topic = self.topic(name)?;
        let metadata = self.metadata();
        let log_config = topic.settings.log_config(&self.log_defaults)?;
        let mut partitions = Vec::with_capacity(topic.replicas.len());
        for (i, replicas) in topic.replicas.iter().enumerate() {
            let group = crate::raft::partition_group(name, i as u32);
            let local = self.replicas.read().get(&group).cloned();
            let mut status = PartitionStatus {
                partition: i as u32,
                log_start_offset: 0,
                high_watermark: 0,
                size_bytes: 0,
                leader_id: metadata.leaders.get(&group).copied(),
                replicas: replicas.clone(),
                replication_bytes_received: self.raft.groups.received_bytes(&group),
                snapshot_manifest: String::new(),
                snapshot_lag_bytes: 0,
                snapshot_failures: 0,
            };
            if let Some(p) = local {
                if let Some(m) = p.current_snapshot().filter(|m| !m.cluster_id.is_empty()) {
                    status.snapshot_manifest = m.key();
                }
                if let Some(task) = p.snapshot_status() {
                    status.snapshot_lag_bytes = task.lag_bytes;
                    status.snapshot_failures = task.failures;
                }
                let log = p.log().clone();
                status.log_start_offset = log.log_start_offset();
                status.high_watermark = p.high_watermark();
                status.size_bytes = tokio::task::spawn_blocking(move || log.size_bytes())
                    .await
                    .map_err(|e| BrokerError::io(&self.topics_dir, std::io::Error::other(e)))??;
                if let Some(leader) = p.current_leader() {
                    status.leader_id = Some(leader);
                }
            }
            partitions.push(status);
        }
        Ok(TopicStatus {
            name: name.to_string(),
            settings: topic.settings,
            log_config,
            partitions,
        })
    }

    /// Appends records to a partition (chosen by key if not given) and waits until they are
    /// acknowledged.
    pub async fn produce(
        &self,
        topic: &str,
        partition: Option<u32>,
        payload: ProducePayload,
    ) -> Result<Produced, BrokerError> {
        self.submit_produce(topic, partition, payload)
            .await?
            .acknowledged()
            .await
    }

    /// Validates records and hands them to their partition's Raft leader, returning once
    /// queued: records submitted one after another keep that order in the log, while their
    /// acknowledgements can be awaited together (how a produce stream pipelines).
    pub async fn submit_produce(
        &self,
        topic: &str,
        partition: Option<u32>,
        payload: ProducePayload,
    ) -> Result<PendingProduce, BrokerError> {
        let meta = self.topic(topic)?;
        let count = meta.replicas.len() as u32;
        let max = meta
            .settings
            .log_config(&self.log_defaults)?
            .max_batch_bytes as usize;
        let (batch, keys_partition) = match payload {
            ProducePayload::Records(mut records) => {
                if records.is_empty() {
                    return Err(no_records());
                }
                let now = now_ms();
                for record in &mut records {
                    if record.timestamp_ms < 0 {
                        record.timestamp_ms = now;
                    }
                }
                let keys = match partition {
                    Some(_) => None,
                    None => key_partition(count, records.iter().map(|r| r.key.as_deref()))?,
                };
                let bytes = encode_batch(&records).map_err(LogError::from)?;
                (ValidatedBatch::new(bytes.freeze(), max)?, keys)
            }
            ProducePayload::Batch(bytes) => {
                if bytes.is_empty() {
                    return Err(no_records());
                }
                let batch = ValidatedBatch::new(bytes, max)?;
                if batch.header().is_control() {
                    return Err(BrokerError::InvalidArgument {
                        field: "record_batch",
                        reason: "control batches are written by the broker, not by producers"
                            .into(),
                    });
                }
                let keys = if partition.is_none() {
                    let keys: Vec<Option<Bytes>> = batch
                        .records()
                        .map(|r| r.map(|r| r.key))
                        .collect::<Result<_, _>>()
                        .map_err(LogError::from)?;
                    key_partition(count, keys.iter().map(|k| k.as_deref()))?
                } else {
                    None
                };
                (batch, keys)
            }
        };
        let index = match (partition, keys_partition) {
            (Some(p), _) => p,
            (None, Some(p)) => p,
            (None, None) => {
                let mut rr = self.round_robin.lock();
                let next = rr.entry(topic.to_string()).or_insert(0);
                let p = *next % count.max(1);
                *next = next.wrapping_add(1);
                p
            }
        };
        let bytes = batch.len() as u64;
        let pending = self.partition(topic, index)?.submit(batch).await?;
        Ok(PendingProduce {
            partition: index,
            group: crate::raft::partition_group(topic, index),
            pending,
            bytes,
        })
    }

    /// Reads from `offset` (up to the high watermark), waiting up to `max_wait` for records if
    /// none are there yet.
    pub async fn consume(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        max_wait: Duration,
    ) -> Result<Consumed, BrokerError> {
        let partition = self.partition(topic, partition)?;
        let mut high_watermark = partition.watch_high_watermark();
        if !max_wait.is_zero() && offset == *high_watermark.borrow() {
            let mut shutdown = self.shutdown_signal();
            tokio::select! {
                _ = wait_above(&mut high_watermark, offset) => {}
                _ = tokio::time::sleep(max_wait) => {}
                _ = wait_until_set(&mut shutdown) => return Err(BrokerError::ShuttingDown),
            }
        }
        read(&partition, offset, max_bytes).await
    }

    /// Proposes a metadata change, on this node if it leads the metadata group, else on the
    /// leader (found through Raft, retried while an election runs).
    pub async fn propose(&self, command: MetaCommand) -> Result<MetaResponse, BrokerError> {
        node::propose(self, command).await
    }

    /// First step of shutting down: following streams, long polls and background tasks end.
    pub fn stop_streams(&self) {
        self.shutdown.send_replace(true);
    }

    /// Last step of shutting down (once in-flight requests are done): background tasks stop,
    /// gossip says goodbye, every replica stops its Raft group and closes its log.
    pub async fn close(&self) -> Result<(), BrokerError> {
        self.stop_streams();
        let tasks: Vec<_> = self.tasks.lock().drain(..).collect();
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
        if let Err(e) = self.gossip.leave().await {
            tracing::warn!(error = %e, "gossip leave failed");
        }
        let replicas: Vec<Arc<Partition>> = {
            let mut map = self.replicas.write();
            std::mem::take(&mut *map).into_values().collect()
        };
        let mut first = Ok(());
        for partition in replicas {
            if let Err(e) = partition.close().await {
                first = first.and(Err(e.into()));
            }
        }
        self.raft.groups.remove(crate::raft::META_GROUP);
        if let Err(e) = self.meta.shutdown().await {
            tracing::warn!(error = %e, "metadata group did not stop cleanly");
        }
        if let Err(e) = self.meta_log.close() {
            first = first.and(Err(e.into()));
        }
        tracing::info!("broker closed");
        first
    }
}

/// Waits until the watched offset is above `offset`; false if the sender is gone (the partition
/// closed).
pub async fn wait_above(watched: &mut watch::Receiver<u64>, offset: u64) -> bool {
    watched.wait_for(|v| *v > offset).await.is_ok()
}

/// Waits until the watched flag is set (or its sender is gone).
pub async fn wait_until_set(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}

fn no_records() -> BrokerError {
    BrokerError::InvalidArgument {
        field: "records",
        reason: "a produce request needs at least one record".into(),
    }
}

/// The partition the keyed records of a request map to (`None` if no record has a key).
/// Keyed records that map to different partitions are refused: send them separately (the client
/// library does) or name a partition.
fn key_partition<'a>(
    count: u32,
    keys: impl Iterator<Item = Option<&'a [u8]>>,
) -> Result<Option<u32>, BrokerError> {
    let mut chosen = None;
    for key in keys.flatten() {
        let p = crate::client::partition_for_key(key, count);
        match chosen {
            None => chosen = Some(p),
            Some(c) if c != p => {
                return Err(BrokerError::InvalidArgument {
                    field: "records",
                    reason: format!(
                        "keyed records map to partitions {c} and {p}; send them separately or set partition"
                    ),
                });
            }
            Some(_) => {}
        }
    }
    Ok(chosen)
}

/// Reads whole batches from `offset`, never past the high watermark. An offset past the high
/// watermark is out of range (the high watermark is the end consumers see).
pub async fn read(
    partition: &Arc<Partition>,
    offset: u64,
    max_bytes: usize,
) -> Result<Consumed, BrokerError> {
    let high_watermark = partition.high_watermark();
    let log = partition.log().clone();
    if offset > high_watermark {
        return Err(LogError::OffsetOutOfRange {
            requested: offset,
            log_start_offset: log.log_start_offset(),
            log_end_offset: high_watermark,
        }
        .into());
    }
    let read =
        tokio::task::spawn_blocking(move || log.read_up_to(offset, max_bytes, high_watermark))
            .await
            .map_err(|e| BrokerError::io(partition.log().dir(), std::io::Error::other(e)))?
            .map_err(|e| match e {
                LogError::OffsetOutOfRange {
                    requested,
                    log_start_offset,
                    ..
                } => LogError::OffsetOutOfRange {
                    requested,
                    log_start_offset,
                    log_end_offset: high_watermark,
                },
                other => other,
            })?;
    // Nothing readable below the high watermark from here (compaction left a gap up to it):
    // the next read starts at the high watermark, so readers never spin on the same offset.
    let next_offset = if read.batches.is_empty() && offset < high_watermark {
        high_watermark
    } else {
        read.next_offset
    };
    Ok(Consumed {
        batches: read.batches,
        next_offset,
        log_start_offset: read.log_start_offset,
        high_watermark,
    })
}
