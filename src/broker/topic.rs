//! Topics and partitions on this node.
//!
//! ```text
//! <data_dir>/topics/<topic>/topic.json   settings (written last: a directory without it is an
//!                                        unfinished creation and is removed on start)
//! <data_dir>/topics/<topic>/<partition>/ a PartitionLog
//! ```

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::BrokerError;
use super::identity::write_atomically;
use crate::config::{MAX_PARTITIONS, limit};
use crate::log::{
    AppendTicket, CleanupPolicy, GroupCommit, LogConfig, LogError, Maintenance, PartitionLog,
    ValidatedBatch,
};

/// Settings file of a topic.
const TOPIC_FILE: &str = "topic.json";
/// Longest topic name (Kafka's limit).
const MAX_NAME_LEN: usize = 249;

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
    pub fn log_config(&self, defaults: &LogConfig) -> Result<LogConfig, BrokerError> {
        let invalid = |field, reason: String| BrokerError::InvalidArgument { field, reason };
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

/// One partition: its log, the group-commit writer in front of it, and its maintenance thread.
#[derive(Debug)]
pub struct Partition {
    /// Partition number.
    pub index: u32,
    /// The log.
    log: Arc<PartitionLog>,
    /// Group commit in front of the log.
    writer: GroupCommit,
    /// Retention and compaction (taken and stopped on close).
    maintenance: Mutex<Option<Maintenance>>,
}

impl Partition {
    /// Opens (recovering) the partition in `dir`.
    pub fn open(
        dir: &Path,
        index: u32,
        config: LogConfig,
        maintenance_every: Duration,
    ) -> Result<Self, BrokerError> {
        let policy = config.fsync;
        let log = Arc::new(PartitionLog::open(dir, config)?);
        let writer =
            GroupCommit::start(log.clone(), policy).map_err(|e| BrokerError::io(dir, e))?;
        let maintenance = Maintenance::spawn(log.clone(), maintenance_every)
            .map_err(|e| BrokerError::io(dir, e))?;
        Ok(Partition {
            index,
            log,
            writer,
            maintenance: Mutex::new(Some(maintenance)),
        })
    }

    /// The log (for reads).
    pub fn log(&self) -> &Arc<PartitionLog> {
        &self.log
    }

    /// Queues a batch on the group-commit writer (in call order); the ticket resolves once
    /// it is acknowledged.
    pub async fn submit(&self, batch: ValidatedBatch) -> Result<AppendTicket, LogError> {
        self.writer.submit(batch, 0).await
    }

    /// Offset after the last acknowledged record: what consumers may read below.
    pub fn high_watermark(&self) -> u64 {
        *self.writer.acked_offsets().borrow()
    }

    /// Watches the high watermark.
    pub fn watch_high_watermark(&self) -> watch::Receiver<u64> {
        self.writer.acked_offsets()
    }

    /// Stops maintenance (waiting for a pass in progress), finishes queued appends, syncs, and
    /// closes the log cleanly.
    pub async fn close(&self) -> Result<(), LogError> {
        let maintenance = self.maintenance.lock().take();
        if let Some(maintenance) = maintenance {
            // Dropping joins the thread, which may be in the middle of a compaction.
            let _ = tokio::task::spawn_blocking(move || drop(maintenance)).await;
        }
        self.writer.close().await?;
        self.log.close()
    }
}

/// A topic and its open partitions.
#[derive(Debug)]
pub struct Topic {
    /// Name.
    pub name: String,
    /// Persisted settings.
    pub settings: TopicSettings,
    /// Effective log settings of its partitions.
    pub log_config: LogConfig,
    /// Partitions, by number.
    pub partitions: Vec<Arc<Partition>>,
    /// Its directory.
    pub dir: PathBuf,
    /// Next partition for keyless records produced without a partition.
    round_robin: AtomicU32,
}

impl Topic {
    /// Creates the topic's directory, partitions and settings file (written last).
    pub fn create(
        topics_dir: &Path,
        name: &str,
        settings: TopicSettings,
        defaults: &LogConfig,
        maintenance_every: Duration,
    ) -> Result<Self, BrokerError> {
        validate_topic_name(name)?;
        if !(1..=MAX_PARTITIONS).contains(&settings.partitions) {
            return Err(BrokerError::InvalidArgument {
                field: "partitions",
                reason: format!(
                    "{} partitions: a topic has 1 to {MAX_PARTITIONS}",
                    settings.partitions
                ),
            });
        }
        let log_config = settings.log_config(defaults)?;
        let dir = topics_dir.join(name);
        // Leftovers of an unfinished creation (no settings file) are removed on start; an
        // existing directory here means another topic's data: never reuse it.
        fs::create_dir(&dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => BrokerError::TopicExists(name.to_string()),
            _ => BrokerError::io(&dir, e),
        })?;
        let topic = Self::open_partitions(name, settings, log_config, dir, maintenance_every)?;
        let json = serde_json::to_vec_pretty(&topic.settings).unwrap_or_default();
        write_atomically(&topic.dir.join(TOPIC_FILE), &json)?;
        Ok(topic)
    }

    /// Opens an existing topic directory. `Ok(None)` if it has no settings file (an unfinished
    /// creation).
    pub fn open(
        dir: &Path,
        defaults: &LogConfig,
        maintenance_every: Duration,
    ) -> Result<Option<Self>, BrokerError> {
        let path = dir.join(TOPIC_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(BrokerError::io(&path, e)),
        };
        let settings: TopicSettings = serde_json::from_slice(&bytes).map_err(|e| {
            BrokerError::io(
                &path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })?;
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let log_config = settings.log_config(defaults)?;
        Self::open_partitions(
            &name,
            settings,
            log_config,
            dir.to_path_buf(),
            maintenance_every,
        )
        .map(Some)
    }

    fn open_partitions(
        name: &str,
        settings: TopicSettings,
        log_config: LogConfig,
        dir: PathBuf,
        maintenance_every: Duration,
    ) -> Result<Self, BrokerError> {
        let partitions = (0..settings.partitions)
            .map(|i| {
                Partition::open(
                    &dir.join(i.to_string()),
                    i,
                    log_config.clone(),
                    maintenance_every,
                )
                .map(Arc::new)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Topic {
            name: name.to_string(),
            settings,
            log_config,
            partitions,
            dir,
            round_robin: AtomicU32::new(0),
        })
    }

    /// Partition `index`, or `UnknownPartition`.
    pub fn partition(&self, index: u32) -> Result<&Arc<Partition>, BrokerError> {
        self.partitions
            .get(index as usize)
            .ok_or_else(|| BrokerError::UnknownPartition {
                topic: self.name.clone(),
                partition: index,
                partitions: self.partitions.len() as u32,
            })
    }

    /// The partition for records with `key` (Kafka's default partitioner: murmur2), or the next
    /// one round-robin for keyless records.
    pub fn partition_for(&self, key: Option<&[u8]>) -> u32 {
        let count = self.partitions.len() as u32;
        match key {
            Some(key) => crate::client::partition_for_key(key, count),
            None => self.round_robin.fetch_add(1, Ordering::Relaxed) % count,
        }
    }

    /// Closes every partition (all of them, even if one fails; the first error is returned).
    pub async fn close(&self) -> Result<(), LogError> {
        let mut first = Ok(());
        for partition in &self.partitions {
            if let Err(e) = partition.close().await {
                tracing::error!(topic = %self.name, partition = partition.index, error = %e,
                    "closing partition failed");
                first = first.and(Err(e));
            }
        }
        first
    }
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
