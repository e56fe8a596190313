//! Per-partition storage settings.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::LogError;
use super::index::INDEX_ENTRY_LEN;

/// When appended data is made durable with fdatasync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum FsyncPolicy {
    /// Every acknowledged append is on disk (one fdatasync per commit group). The default.
    #[default]
    Always,
    /// Appends are acknowledged once written; a background sync runs every `ms` milliseconds.
    Interval {
        /// Milliseconds between syncs.
        ms: u64,
    },
    /// Never sync on the write path (segments are still synced when they roll and on close).
    Never,
}

impl FsyncPolicy {
    /// The background sync period for `Interval`.
    pub fn interval(&self) -> Option<Duration> {
        match self {
            FsyncPolicy::Interval { ms } => Some(Duration::from_millis(*ms)),
            _ => None,
        }
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Never => f.write_str("never"),
            FsyncPolicy::Interval { ms } => write!(f, "interval({ms})"),
        }
    }
}

impl FromStr for FsyncPolicy {
    type Err = String;

    /// Parses `always`, `never` or `interval(MS)`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        match s {
            "always" => return Ok(FsyncPolicy::Always),
            "never" => return Ok(FsyncPolicy::Never),
            _ => {}
        }
        let ms = s
            .strip_prefix("interval(")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|ms| ms.trim().trim_end_matches("ms").parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .ok_or_else(|| {
                format!(
                    "invalid fsync policy {s:?}: expected always, never or interval(MS) with MS > 0"
                )
            })?;
        Ok(FsyncPolicy::Interval { ms })
    }
}

impl TryFrom<String> for FsyncPolicy {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<FsyncPolicy> for String {
    fn from(p: FsyncPolicy) -> String {
        p.to_string()
    }
}

/// What happens to old data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CleanupPolicy {
    /// Whole segments are deleted by retention (size and age).
    #[default]
    Delete,
    /// Sealed segments are compacted to the latest record per key (retention still applies if set).
    Compact,
}

impl fmt::Display for CleanupPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
        })
    }
}

impl FromStr for CleanupPolicy {
    type Err = String;

    /// Parses `delete` or `compact`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "delete" => Ok(CleanupPolicy::Delete),
            "compact" => Ok(CleanupPolicy::Compact),
            other => Err(format!(
                "invalid cleanup policy {other:?}: expected delete or compact"
            )),
        }
    }
}

/// Settings of one partition log. Field names are the configuration keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A segment rolls when appending would make its `.log` file larger than this.
    pub segment_max_bytes: u64,
    /// A non-empty segment rolls once its first batch is older than this.
    pub segment_max_age_ms: u64,
    /// Preallocated size of a segment's `.index` file; the segment rolls when it is full.
    pub index_max_bytes: u64,
    /// Largest accepted batch in bytes.
    pub max_batch_bytes: u64,
    /// When appended data is synced.
    pub fsync: FsyncPolicy,
    /// Delete old sealed segments while the log is larger than this (unset: no size limit).
    pub retention_bytes: Option<u64>,
    /// Delete sealed segments whose newest record is older than this (unset: keep forever).
    pub retention_ms: Option<u64>,
    /// Delete or compact.
    pub cleanup_policy: CleanupPolicy,
    /// Compaction drops a tombstone once it is older than this.
    pub delete_retention_ms: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_max_bytes: 1 << 30,
            segment_max_age_ms: 7 * 24 * 3600 * 1000,
            index_max_bytes: 10 << 20,
            max_batch_bytes: 1 << 20,
            fsync: FsyncPolicy::Always,
            retention_bytes: None,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            cleanup_policy: CleanupPolicy::Delete,
            delete_retention_ms: 24 * 3600 * 1000,
        }
    }
}

impl LogConfig {
    /// Checks ranges the on-disk format depends on (positions are 32-bit in the index).
    pub fn validate(&self) -> Result<(), LogError> {
        let bad = |msg: String| Err(LogError::InvalidConfig(msg));
        if self.segment_max_bytes < 1024 || self.segment_max_bytes > u32::MAX as u64 {
            return bad(format!(
                "segment_max_bytes = {} must be between 1024 and {}",
                self.segment_max_bytes,
                u32::MAX
            ));
        }
        if self.index_max_bytes < 4 * INDEX_ENTRY_LEN as u64 || self.index_max_bytes > 1 << 30 {
            return bad(format!(
                "index_max_bytes = {} must be between {} and {}",
                self.index_max_bytes,
                4 * INDEX_ENTRY_LEN,
                1u64 << 30
            ));
        }
        if self.max_batch_bytes < 128 || self.max_batch_bytes > self.segment_max_bytes {
            return bad(format!(
                "max_batch_bytes = {} must be between 128 and segment_max_bytes ({})",
                self.max_batch_bytes, self.segment_max_bytes
            ));
        }
        if self.segment_max_age_ms == 0 {
            return bad("segment_max_age_ms must be > 0".into());
        }
        Ok(())
    }

    /// Number of entries an index file holds.
    pub(crate) fn index_capacity(&self) -> usize {
        (self.index_max_bytes as usize) / INDEX_ENTRY_LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_policy_parses_and_prints_the_same_words() {
        for text in ["always", "never", "interval(250)"] {
            let policy: FsyncPolicy = text.parse().unwrap();
            assert_eq!(policy.to_string(), text);
        }
        assert_eq!(
            "interval(40ms)".parse::<FsyncPolicy>().unwrap(),
            FsyncPolicy::Interval { ms: 40 }
        );
        for bad in ["sometimes", "interval()", "interval(0)", "interval(-3)"] {
            assert!(
                bad.parse::<FsyncPolicy>().is_err(),
                "{bad} should not parse"
            );
        }
    }

    #[test]
    fn validation_rejects_segments_beyond_32_bit_positions() {
        let cfg = LogConfig {
            segment_max_bytes: 5 << 30,
            ..LogConfig::default()
        };
        assert!(matches!(cfg.validate(), Err(LogError::InvalidConfig(_))));
        LogConfig::default().validate().unwrap();
    }
}
