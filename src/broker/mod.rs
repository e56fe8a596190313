//! The broker: the topics and partitions on this node and the operations the gRPC services
//! expose, independent of gRPC. (With the cluster issue, a partition becomes a Raft group.)

mod identity;
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
pub use topic::{Partition, PendingAppend, RaftContext, Topic, TopicSettings, validate_topic_name};

use crate::config::BrokerConfig;
use crate::log::{LogConfig, LogError, NewRecord, ValidatedBatch, encode_batch, now_ms};
use crate::raft::{Channels, RaftGroups, RaftTiming};
use openraft::error::ClientWriteError;

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
    /// This node.
    node_id: u64,
    /// Resolves once the entry is committed and applied.
    pending: PendingAppend,
}

impl PendingProduce {
    /// Waits until the records are acknowledged: committed (durable on a majority of the
    /// partition's replicas) and applied.
    pub async fn acknowledged(self) -> Result<Produced, BrokerError> {
        let written = self
            .pending
            .await
            .map_err(|_| BrokerError::Unavailable(format!("{} stopped", self.group)))?;
        match written {
            Ok(response) => Ok(Produced {
                partition: self.partition,
                base_offset: response.data.base_offset,
                last_offset: response.data.next_offset.saturating_sub(1),
            }),
            Err(ClientWriteError::ForwardToLeader(forward)) => Err(BrokerError::NotLeader {
                group: self.group,
                node_id: self.node_id,
                leader_id: forward.leader_id,
                leader_addr: forward.leader_node.map(|n| n.addr),
            }),
            Err(e) => Err(BrokerError::Unavailable(e.to_string())),
        }
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
    /// Lowest readable offset.
    pub log_start_offset: u64,
    /// Offset after the last acknowledged record.
    pub high_watermark: u64,
    /// Bytes on disk.
    pub size_bytes: u64,
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

/// The broker of one node.
#[derive(Debug)]
pub struct Broker {
    /// Its configuration.
    config: BrokerConfig,
    /// Default log settings of topics.
    log_defaults: LogConfig,
    /// Node id and cluster id.
    identity: NodeIdentity,
    /// `<data_dir>/topics`.
    topics_dir: PathBuf,
    /// Open topics by name.
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serialises topic creation and deletion (file I/O) without blocking lookups.
    admin: tokio::sync::Mutex<()>,
    /// Address clients and peers reach this node at.
    address: String,
    /// What partitions need to run their Raft groups.
    raft: RaftContext,
    /// Flips to true when the broker shuts down; streams end on it.
    shutdown: watch::Sender<bool>,
    /// Exclusive lock on the data directory, held while the broker lives.
    _lock: fs::File,
}

impl Broker {
    /// Opens the data directory (creating it), locks it, loads the node identity and opens
    /// (recovering) every topic, starting its partitions' Raft groups. `address` is where
    /// clients and peers reach this node's gRPC server; `groups` is what its Raft service
    /// routes to.
    pub async fn open(
        config: BrokerConfig,
        address: String,
        groups: Arc<RaftGroups>,
    ) -> Result<Self, BrokerError> {
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
        // Deleted topics are moved here before their files are removed; finish interrupted ones.
        let trash_dir = data_dir.join("trash");
        if trash_dir.exists() {
            fs::remove_dir_all(&trash_dir).map_err(|e| BrokerError::io(&trash_dir, e))?;
        }
        fs::create_dir_all(&trash_dir).map_err(|e| BrokerError::io(&trash_dir, e))?;
        let every = Duration::from_millis(config.maintenance_interval_ms);
        let raft = RaftContext {
            node_id: identity.node_id,
            address: address.clone(),
            channels: Arc::new(Channels::default()),
            groups,
            timing: RaftTiming::default(),
        };
        let mut topics = BTreeMap::new();
        for entry in fs::read_dir(&topics_dir).map_err(|e| BrokerError::io(&topics_dir, e))? {
            let entry = entry.map_err(|e| BrokerError::io(&topics_dir, e))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if !path.is_dir() {
                continue;
            }
            match Topic::open(&path, &log_defaults, every, &raft).await? {
                Some(topic) => {
                    topics.insert(name, Arc::new(topic));
                }
                None => {
                    tracing::warn!(dir = %path.display(), "removing an unfinished topic creation");
                    fs::remove_dir_all(&path).map_err(|e| BrokerError::io(&path, e))?;
                }
            }
        }
        tracing::info!(node_id = identity.node_id, cluster_id = %identity.cluster_id,
            topics = topics.len(), data_dir = %data_dir.display(), "broker opened");
        Ok(Broker {
            config,
            log_defaults,
            identity,
            topics_dir,
            topics: RwLock::new(topics),
            admin: tokio::sync::Mutex::new(()),
            address,
            raft,
            shutdown: watch::channel(false).0,
            _lock: lock,
        })
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

    /// Resolves when the broker starts shutting down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// The topic called `name`.
    pub fn topic(&self, name: &str) -> Result<Arc<Topic>, BrokerError> {
        self.topics
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))
    }

    /// Partition `index` of topic `name`.
    pub fn partition(&self, name: &str, index: u32) -> Result<Arc<Partition>, BrokerError> {
        self.topic(name)?.partition(index).cloned()
    }

    /// Creates a topic (`settings.partitions == 0` takes the default count).
    pub async fn create_topic(
        &self,
        name: &str,
        mut settings: TopicSettings,
    ) -> Result<TopicStatus, BrokerError> {
        validate_topic_name(name)?;
        if settings.partitions == 0 {
            settings.partitions = self.config.default_partitions;
        }
        let _admin = self.admin.lock().await;
        if self.topics.read().contains_key(name) {
            return Err(BrokerError::TopicExists(name.to_string()));
        }
        let (dir, defaults, name_owned) = (
            self.topics_dir.clone(),
            self.log_defaults.clone(),
            name.to_string(),
        );
        let every = Duration::from_millis(self.config.maintenance_interval_ms);
        let topic =
            Topic::create(&dir, &name_owned, settings, &defaults, every, &self.raft).await?;
        let topic = Arc::new(topic);
        self.topics.write().insert(name.to_string(), topic.clone());
        tracing::info!(
            topic = name,
            partitions = topic.partitions.len(),
            "topic created"
        );
        describe(&topic).await
    }

    /// Deletes a topic and its data.
    pub async fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        let _admin = self.admin.lock().await;
        let topic = self
            .topics
            .write()
            .remove(name)
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_string()))?;
        // Closed before the move: a partition writes new segment files by path.
        topic.close().await?;
        let doomed =
            self.config
                .data_dir
                .join("trash")
                .join(format!("{}-{}", now_ms(), fastrand::u32(..)));
        let (source, topics_dir) = (topic.dir.clone(), self.topics_dir.clone());
        tokio::task::spawn_blocking(move || -> Result<(), BrokerError> {
            // The rename is the commit point: after it the topic is gone even across a crash.
            fs::rename(&source, &doomed).map_err(|e| BrokerError::io(&source, e))?;
            fs::File::open(&topics_dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| BrokerError::io(&topics_dir, e))?;
            fs::remove_dir_all(&doomed).map_err(|e| BrokerError::io(&doomed, e))
        })
        .await
        .map_err(|e| BrokerError::io(&self.topics_dir, std::io::Error::other(e)))??;
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }

    /// Topic names and partition counts.
    pub fn list_topics(&self) -> Vec<(String, u32)> {
        self.topics
            .read()
            .values()
            .map(|t| (t.name.clone(), t.partitions.len() as u32))
            .collect()
    }

    /// Settings and per-partition state of a topic.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicStatus, BrokerError> {
        describe(&self.topic(name)?).await
    }

    /// Every topic, in name order (for metadata).
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.topics.read().values().cloned().collect()
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

    /// Validates records and queues them on their partition, returning once queued: records
    /// submitted one after another keep that order in the log, while their acknowledgements
    /// can be awaited together (how a produce stream pipelines).
    pub async fn submit_produce(
        &self,
        topic: &str,
        partition: Option<u32>,
        payload: ProducePayload,
    ) -> Result<PendingProduce, BrokerError> {
        let topic = self.topic(topic)?;
        let max = topic.log_config.max_batch_bytes as usize;
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
                    None => key_partition(&topic, records.iter().map(|r| r.key.as_deref()))?,
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
                    key_partition(&topic, keys.iter().map(|k| k.as_deref()))?
                } else {
                    None
                };
                (batch, keys)
            }
        };
        let index = match (partition, keys_partition) {
            (Some(p), _) => p,
            (None, Some(p)) => p,
            (None, None) => topic.partition_for(None),
        };
        let pending = topic.partition(index)?.submit(batch).await?;
        Ok(PendingProduce {
            partition: index,
            group: crate::raft::partition_group(&topic.name, index),
            node_id: self.identity.node_id,
            pending,
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

    /// First step of shutting down: following streams and long polls end.
    pub fn stop_streams(&self) {
        self.shutdown.send_replace(true);
    }

    /// Last step of shutting down (once in-flight requests are done): every partition finishes
    /// its queued appends, syncs and closes cleanly.
    pub async fn close(&self) -> Result<(), BrokerError> {
        self.stop_streams();
        let mut first = Ok(());
        for topic in self.topics() {
            if let Err(e) = topic.close().await {
                first = first.and(Err(e.into()));
            }
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
    topic: &Topic,
    keys: impl Iterator<Item = Option<&'a [u8]>>,
) -> Result<Option<u32>, BrokerError> {
    let mut chosen = None;
    for key in keys.flatten() {
        let p = topic.partition_for(Some(key));
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

async fn describe(topic: &Arc<Topic>) -> Result<TopicStatus, BrokerError> {
    let topic = topic.clone();
    tokio::task::spawn_blocking(move || {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for p in &topic.partitions {
            partitions.push(PartitionStatus {
                partition: p.index,
                log_start_offset: p.log().log_start_offset(),
                high_watermark: p.high_watermark(),
                size_bytes: p.log().size_bytes()?,
            });
        }
        Ok(TopicStatus {
            name: topic.name.clone(),
            settings: topic.settings.clone(),
            log_config: topic.log_config.clone(),
            partitions,
        })
    })
    .await
    .map_err(|e| BrokerError::io("topics", std::io::Error::other(e)))?
}
