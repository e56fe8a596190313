//! Key-based compaction of sealed segments (Bitcask-style merge).
//!
//! One pass:
//! 1. Map every key in the sealed segments to the offset of its latest record.
//! 2. Group consecutive sealed segments whose combined size fits `segment_max_bytes`.
//! 3. For each group that has something to drop (or several small segments to merge), write
//!    `<base>.log.cleaned` and `<base>.index.cleaned` holding only the latest record per key,
//!    keyless records, control batches, and tombstones younger than `delete_retention_ms`.
//!    Records keep their offsets; batches that lost records are re-encoded, batches that lost
//!    all of them disappear (gaps in offsets are fine for readers).
//! 4. Swap: fsync the cleaned files, write and fsync `compaction.intent` naming the output and
//!    the segments it replaces, rename the cleaned files over the group's first segment, delete
//!    the others, fsync the directory, delete the intent.
//!
//! A crash before the intent is durable leaves the old segments (the cleaned files are removed
//! on open); a crash after it is rolled forward on open by [`recover`]. Either way every record
//! that was readable before is readable after, except records the compaction was allowed to drop.
//! The active segment is never compacted.

use std::collections::HashMap;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::batch::{Record, encode_with_offsets, split_batches};
use super::config::CleanupPolicy;
use super::error::{IoContext, LogError, Result};
use super::index::{INDEX_ENTRY_LEN, IndexEntry};
use super::partition::{PartitionLog, RetentionReport, SegmentSlot, remove_segment_files};
use super::segment::{SealedSegment, segment_path, sync_dir};

/// Name of the intent file that makes a compaction swap atomic.
const INTENT_FILE: &str = "compaction.intent";

/// What one compaction pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// Groups of segments rewritten.
    pub groups_rewritten: usize,
    /// Sealed segments before the pass.
    pub segments_before: usize,
    /// Sealed segments after the pass.
    pub segments_after: usize,
    /// Bytes of the rewritten groups before.
    pub bytes_before: u64,
    /// Bytes of their replacements.
    pub bytes_after: u64,
    /// Records dropped because a later record has the same key.
    pub superseded_removed: u64,
    /// Tombstones dropped because they were older than `delete_retention_ms`.
    pub tombstones_removed: u64,
}

/// What a maintenance pass (retention, then compaction if enabled) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Retention's result.
    pub retention: RetentionReport,
    /// Compaction's result (`None` when the cleanup policy is `delete`).
    pub compaction: Option<CompactionReport>,
}

/// The swap a compaction is committed to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Intent {
    /// Base offset of the output segment (`None`: the group compacted to nothing).
    output: Option<u64>,
    /// Base offsets of every segment in the group.
    replaced: Vec<u64>,
}

impl Intent {
    fn encode(&self) -> String {
        let output = self.output.map_or("none".to_string(), |b| b.to_string());
        let replaced: Vec<String> = self.replaced.iter().map(u64::to_string).collect();
        format!("output {output}\nreplaced {}\n", replaced.join(" "))
    }

    fn decode(text: &str) -> Option<Self> {
        let mut lines = text.lines();
        let output = match lines.next()?.strip_prefix("output ")? {
            "none" => None,
            base => Some(base.parse().ok()?),
        };
        let replaced = lines
            .next()?
            .strip_prefix("replaced ")?
            .split_whitespace()
            .map(|b| b.parse().ok())
            .collect::<Option<Vec<u64>>>()?;
        Some(Intent { output, replaced })
    }
}

/// Writes index entries to `path` and fsyncs it.
fn write_index_file(path: &Path, entries: &[IndexEntry]) -> Result<()> {
    let mut buf = Vec::with_capacity(entries.len() * INDEX_ENTRY_LEN);
    for e in entries {
        buf.extend_from_slice(&e.encode());
    }
    let mut file = fs::File::create(path).at(path)?;
    file.write_all(&buf).at(path)?;
    file.sync_all().at(path)
}

/// Carries out (or finishes) a committed swap. Idempotent.
fn apply_intent(dir: &Path, intent: &Intent) -> Result<()> {
    if let Some(base) = intent.output {
        // Index first: if we crash between the two renames the log is still the old one, and
        // the next attempt renames the cleaned log; a mismatched index is rebuilt on load.
        for ext in ["index", "log"] {
            let cleaned = segment_path(dir, base, &format!("{ext}.cleaned"));
            if cleaned.exists() {
                let target = segment_path(dir, base, ext);
                fs::rename(&cleaned, &target).at(&target)?;
            }
        }
    }
    sync_dir(dir)?;
    for base in intent.replaced.iter().rev() {
        if Some(*base) != intent.output {
            remove_segment_files(dir, *base)?;
        }
    }
    sync_dir(dir)?;
    let path = dir.join(INTENT_FILE);
    fs::remove_file(&path).at(&path)?;
    sync_dir(dir)
}

/// Finishes a compaction interrupted by a crash. Called by `PartitionLog::open` before it lists
/// segments. Returns true if there was one.
pub(crate) fn recover(dir: &Path) -> Result<bool> {
    let path = dir.join(INTENT_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(LogError::io(&path, e)),
    };
    match Intent::decode(&text) {
        Some(intent) => {
            tracing::warn!(dir = %dir.display(), ?intent, "finishing an interrupted compaction");
            apply_intent(dir, &intent)?;
            Ok(true)
        }
        None => {
            // The intent is written by rename, so it cannot be torn; treat garbage as no intent.
            tracing::error!(path = %path.display(), "unreadable compaction intent; discarding it");
            fs::remove_file(&path).at(&path)?;
            Ok(false)
        }
    }
}

/// Decides which records of a sealed segment compaction keeps.
struct Keeper<'a> {
    /// Latest offset of each key among the sealed segments.
    latest: &'a HashMap<Bytes, u64>,
    /// Tombstones with a timestamp below this are dropped.
    tombstone_horizon_ms: i64,
}

/// Why a record is dropped.
enum Discard {
    Superseded,
    ExpiredTombstone,
}

impl Keeper<'_> {
    fn verdict(&self, record: &Record) -> Option<Discard> {
        let key = record.key.as_ref()?;
        if self
            .latest
            .get(key)
            .is_some_and(|latest| *latest != record.offset)
        {
            return Some(Discard::Superseded);
        }
        if record.value.is_none() && record.timestamp_ms < self.tombstone_horizon_ms {
            return Some(Discard::ExpiredTombstone);
        }
        None
    }
}

/// Records of a segment's valid part, batch by batch; corruption is an error.
fn for_each_batch(
    seg: &SealedSegment,
    mut f: impl FnMut(&super::batch::StoredBatch, Option<Vec<Record>>) -> Result<()>,
) -> Result<()> {
    let mut pos = 0u64;
    // Base offsets are outside the CRC: they must start at the segment's base and increase.
    let mut floor = seg.base_offset;
    for batch in split_batches(seg.data.slice(..seg.valid_len as usize)) {
        let batch = batch.map_err(|e| LogError::corruption(&seg.log_path, pos, e))?;
        let at = pos;
        pos += batch.bytes.len() as u64;
        if batch.header.base_offset < floor {
            return Err(LogError::corruption(
                &seg.log_path,
                at,
                "batch offsets go backwards",
            ));
        }
        floor = batch.header.next_offset();
        if batch.header.is_control() {
            f(&batch, None)?;
            continue;
        }
        let records = batch
            .records()
            .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|e| LogError::corruption(&seg.log_path, at, e))?;
        f(&batch, Some(records))?;
    }
    Ok(())
}

impl PartitionLog {
    /// Runs retention, then compaction if the cleanup policy is `compact`.
    pub fn run_maintenance(&self, now_ms: i64) -> Result<MaintenanceReport> {
        let retention = self.enforce_retention(now_ms)?;
        let compaction = match self.config().cleanup_policy {
            CleanupPolicy::Compact => Some(self.compact(now_ms)?),
            CleanupPolicy::Delete => None,
        };
        Ok(MaintenanceReport {
            retention,
            compaction,
        })
    }

    /// One compaction pass over the sealed segments below the durable offset; see
    /// [`PartitionLog::compact_up_to`].
    pub fn compact(&self, now_ms: i64) -> Result<CompactionReport> {
        self.compact_up_to(now_ms, self.durable_offset())
    }

    /// One compaction pass (see the module docs) over the sealed segments that lie wholly
    /// below `cleanable_offset`. Only records that can no longer be removed may supersede
    /// older ones, so with replication this is the commit index: a newer record that a
    /// truncation could still remove must not cost the older one its place. Appends and reads
    /// continue while it runs; the writer lock is held only for each swap, and a swap is
    /// abandoned if a truncation happened meanwhile.
    pub fn compact_up_to(&self, now_ms: i64, cleanable_offset: u64) -> Result<CompactionReport> {
        let epoch = self.truncation_epoch();
        let slots: Vec<Arc<SegmentSlot>> = {
            let st = self.state.read();
            st.sealed
                .iter()
                .filter(|(base, _)| st.next_base(**base) <= cleanable_offset)
                .map(|(_, slot)| slot.clone())
                .collect()
        };
        let mut report = CompactionReport {
            segments_before: slots.len(),
            segments_after: slots.len(),
            ..CompactionReport::default()
        };
        let mut segs = Vec::with_capacity(slots.len());
        for slot in &slots {
            match slot.load()? {
                Some(seg) => segs.push(seg),
                None => return Ok(report), // the map changed under us; the next pass retries
            }
        }
        if segs.is_empty() {
            return Ok(report);
        }

        let mut latest: HashMap<Bytes, u64> = HashMap::new();
        for seg in &segs {
            for_each_batch(seg, |_, records| {
                for record in records.into_iter().flatten() {
                    if let Some(key) = record.key {
                        latest.insert(key, record.offset);
                    }
                }
                Ok(())
            })?;
        }
        let keeper = Keeper {
            latest: &latest,
            tombstone_horizon_ms: now_ms.saturating_sub(self.config().delete_retention_ms as i64),
        };
        let mut dirty = Vec::with_capacity(segs.len());
        for seg in &segs {
            let mut any = false;
            for_each_batch(seg, |_, records| {
                any |= records
                    .iter()
                    .flatten()
                    .any(|r| keeper.verdict(r).is_some());
                Ok(())
            })?;
            dirty.push(any);
        }

        let next_base = |i: usize| {
            segs.get(i + 1)
                .map(|s| s.base_offset)
                .unwrap_or_else(|| self.state.read().active.base_offset)
        };
        let mut i = 0;
        while i < segs.len() {
            let mut j = i + 1;
            let mut size = segs[i].size();
            while j < segs.len()
                && size + segs[j].size() <= self.config().segment_max_bytes
                && next_base(j) - segs[i].base_offset <= u32::MAX as u64
            {
                size += segs[j].size();
                j += 1;
            }
            if j - i > 1 || dirty[i] {
                self.rewrite_group(&slots[i..j], &segs[i..j], &keeper, epoch, &mut report)?;
            }
            i = j;
        }
        report.segments_after = self.state.read().sealed.len();
        Ok(report)
    }

    fn rewrite_group(
        &self,
        slots: &[Arc<SegmentSlot>],
        segs: &[Arc<SealedSegment>],
        keeper: &Keeper<'_>,
        epoch: u64,
        report: &mut CompactionReport,
    ) -> Result<()> {
        let dir = self.dir().to_path_buf();
        let base = segs[0].base_offset;
        let log_path = segment_path(&dir, base, "log.cleaned");
        let index_path = segment_path(&dir, base, "index.cleaned");
        let mut out = BufWriter::with_capacity(1 << 20, fs::File::create(&log_path).at(&log_path)?);
        let mut entries = Vec::new();
        let mut pos = 0u64;
        let mut max_ts = i64::MIN;
        let (mut superseded, mut tombstones) = (0u64, 0u64);
        for seg in segs {
            for_each_batch(seg, |batch, records| {
                let bytes = match records {
                    None => batch.bytes.clone(),
                    Some(records) => {
                        let total = records.len();
                        let kept: Vec<Record> = records
                            .into_iter()
                            .filter(|r| match keeper.verdict(r) {
                                None => true,
                                Some(Discard::Superseded) => {
                                    superseded += 1;
                                    false
                                }
                                Some(Discard::ExpiredTombstone) => {
                                    tombstones += 1;
                                    false
                                }
                            })
                            .collect();
                        if kept.is_empty() {
                            return Ok(());
                        } else if kept.len() == total {
                            batch.bytes.clone()
                        } else {
                            encode_with_offsets(&kept, batch.header.partition_leader_epoch, false)?
                                .freeze()
                        }
                    }
                };
                let header = super::batch::BatchHeader::parse(&bytes)?;
                let relative = header
                    .last_offset()
                    .checked_sub(base)
                    .filter(|r| *r <= u32::MAX as u64)
                    .map(|_| (header.base_offset - base) as u32)
                    .ok_or_else(|| {
                        LogError::corruption(&seg.log_path, 0, "batch offset outside its segment")
                    })?;
                max_ts = max_ts.max(header.max_timestamp);
                entries.push(IndexEntry {
                    relative_offset: relative,
                    position: pos as u32,
                    max_timestamp_ms: max_ts,
                });
                out.write_all(&bytes).at(&log_path)?;
                pos += bytes.len() as u64;
                Ok(())
            })?;
        }
        let file = out
            .into_inner()
            .map_err(|e| LogError::io(&log_path, e.into_error()))?;
        file.sync_all().at(&log_path)?;
        drop(file);
        let output = if entries.is_empty() {
            fs::remove_file(&log_path).at(&log_path)?;
            None
        } else {
            write_index_file(&index_path, &entries)?;
            Some(base)
        };

        let _writer = self.writer.lock();
        let current = self.truncation_epoch() == epoch && {
            let st = self.state.read();
            slots.iter().all(|slot| {
                st.sealed
                    .get(&slot.base_offset)
                    .is_some_and(|s| Arc::ptr_eq(s, slot))
            })
        };
        if !current {
            // Truncation or retention changed these segments meanwhile: drop our work.
            for path in [&log_path, &index_path] {
                let _ = fs::remove_file(path);
            }
            return Ok(());
        }
        let intent = Intent {
            output,
            replaced: segs.iter().map(|s| s.base_offset).collect(),
        };
        let intent_path = dir.join(INTENT_FILE);
        let tmp = dir.join(format!("{INTENT_FILE}.tmp"));
        {
            let mut file = fs::File::create(&tmp).at(&tmp)?;
            file.write_all(intent.encode().as_bytes()).at(&tmp)?;
            file.sync_all().at(&tmp)?;
        }
        fs::rename(&tmp, &intent_path).at(&intent_path)?;
        sync_dir(&dir)?;
        apply_intent(&dir, &intent)?;
        {
            let mut st = self.state.write();
            for slot in slots {
                st.sealed.remove(&slot.base_offset);
            }
            if let Some(base) = output {
                st.sealed
                    .insert(base, SegmentSlot::new(&dir, base, Some(pos)));
            }
        }
        for slot in slots {
            slot.retire();
        }
        self.map_changed();
        report.groups_rewritten += 1;
        report.bytes_before += segs.iter().map(|s| s.size()).sum::<u64>();
        report.bytes_after += pos;
        report.superseded_removed += superseded;
        report.tombstones_removed += tombstones;
        tracing::info!(dir = %dir.display(), base, segments = segs.len(), bytes_after = pos,
            superseded, tombstones, "compacted segment group");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intent_round_trips() {
        for intent in [
            Intent {
                output: Some(5),
                replaced: vec![5, 9, 12],
            },
            Intent {
                output: None,
                replaced: vec![0],
            },
        ] {
            assert_eq!(Intent::decode(&intent.encode()), Some(intent));
        }
        assert_eq!(Intent::decode("garbage"), None);
    }
}
