//! [`PartitionLog`]: the log of one topic partition, a directory of segments.
//!
//! Concurrency: mutations (append, roll, truncate, delete, compaction swaps) are serialised by the
//! `writer` mutex; the segment map sits behind a read-write lock that is held only for short,
//! in-memory steps, never across a write or fsync. Appended bytes become visible to readers only
//! after the write returns and the index entry and end position are published together, so a
//! reader never sees a half-written batch. `sync` runs concurrently with appends (it fsyncs what
//! was published when it started), which lets a group-commit writer overlap the next write with
//! the current fsync.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{IoSlice, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};

use super::batch::{BATCH_HEADER_LEN, BatchHeader, ValidatedBatch};
use super::config::LogConfig;
use super::error::{IoContext, LogError, Result};
use super::index::IndexEntry;
use super::segment::{
    ActiveRange, ActiveSegment, FileKind, SealedSegment, SegmentRead, TailRecovery,
    parse_segment_name, pread_exact, read_active, segment_path, sync_dir,
};

/// Name of the file holding the log start offset.
const LOG_START_FILE: &str = "log-start-offset";

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The result of a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// Zero or more whole batches. The first may start before the requested offset (it is the
    /// batch containing it); consumers skip records below the offset they asked for.
    pub batches: Bytes,
    /// Where the next read should start.
    pub next_offset: u64,
    /// Lowest readable offset when the read started.
    pub log_start_offset: u64,
    /// Offset of the next record to be appended when the read started.
    pub log_end_offset: u64,
}

/// What opening the log found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Recovery of the active segment's tail.
    pub tail: TailRecovery,
    /// An interrupted compaction was completed.
    pub compaction_rolled_forward: bool,
    /// Temporary files of interrupted operations that were removed.
    pub leftovers_removed: usize,
    /// Segments found.
    pub segments: usize,
}

/// One segment as seen from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Base offset (the file name).
    pub base_offset: u64,
    /// Size of the `.log` file.
    pub size_bytes: u64,
    /// True for the segment being appended to.
    pub active: bool,
}

/// What a retention pass deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Whole segments deleted.
    pub segments_deleted: usize,
    /// Their total size.
    pub bytes_deleted: u64,
    /// Log start offset afterwards.
    pub log_start_offset: u64,
}

/// A sealed segment known by name, mapped on first use.
#[derive(Debug)]
pub(crate) struct SegmentSlot {
    /// Base offset.
    pub base_offset: u64,
    /// The partition directory.
    dir: PathBuf,
    /// Load state.
    state: Mutex<SlotState>,
}

#[derive(Debug)]
enum SlotState {
    /// Not mapped yet; `Some(size)` if the size is known.
    Unloaded(Option<u64>),
    /// Mapped.
    Loaded(Arc<SealedSegment>),
    /// Replaced or deleted: look the segment up again.
    Retired,
}

impl SegmentSlot {
    pub(crate) fn new(dir: &Path, base_offset: u64, size: Option<u64>) -> Arc<Self> {
        Arc::new(SegmentSlot {
            base_offset,
            dir: dir.to_path_buf(),
            state: Mutex::new(SlotState::Unloaded(size)),
        })
    }

    /// Maps the segment if needed. `None` if the slot was retired.
    pub(crate) fn load(&self) -> Result<Option<Arc<SealedSegment>>> {
        let mut state = self.state.lock();
        match &*state {
            SlotState::Loaded(seg) => Ok(Some(seg.clone())),
            SlotState::Retired => Ok(None),
            SlotState::Unloaded(_) => {
                let seg = Arc::new(SealedSegment::load(&self.dir, self.base_offset, false)?);
                *state = SlotState::Loaded(seg.clone());
                Ok(Some(seg))
            }
        }
    }

    /// Remaps the segment with its index rebuilt from the log. `None` if the slot was retired.
    pub(crate) fn reload_rebuilding_index(&self) -> Result<Option<Arc<SealedSegment>>> {
        let mut state = self.state.lock();
        if matches!(*state, SlotState::Retired) {
            return Ok(None);
        }
        let seg = Arc::new(SealedSegment::load(&self.dir, self.base_offset, true)?);
        *state = SlotState::Loaded(seg.clone());
        Ok(Some(seg))
    }

    /// Size of the `.log` file, without mapping it.
    pub(crate) fn size(&self) -> Result<u64> {
        let mut state = self.state.lock();
        match &*state {
            SlotState::Loaded(seg) => Ok(seg.size()),
            SlotState::Unloaded(Some(size)) => Ok(*size),
            SlotState::Retired => Ok(0),
            SlotState::Unloaded(None) => {
                let path = segment_path(&self.dir, self.base_offset, "log");
                let size = fs::metadata(&path).at(&path)?.len();
                *state = SlotState::Unloaded(Some(size));
                Ok(size)
            }
        }
    }

    /// Marks the slot as replaced; readers holding it look the offset up again.
    pub(crate) fn retire(&self) {
        *self.state.lock() = SlotState::Retired;
    }
}

/// The segment map.
#[derive(Debug)]
pub(crate) struct LogState {
    /// Sealed segments by base offset.
    pub sealed: BTreeMap<u64, Arc<SegmentSlot>>,
    /// The segment being appended to; its base is above every sealed one.
    pub active: ActiveSegment,
    /// Lowest readable offset.
    pub log_start_offset: u64,
}

impl LogState {
    /// Base offset of the segment after the sealed one with `base`.
    pub(crate) fn next_base(&self, base: u64) -> u64 {
        self.sealed
            .range(base + 1..)
            .next()
            .map(|(b, _)| *b)
            .unwrap_or(self.active.base_offset)
    }
}

/// Where a read goes next.
enum Target {
    Sealed(Arc<SegmentSlot>),
    Active {
        file: Arc<fs::File>,
        path: PathBuf,
        range: ActiveRange,
    },
    Nothing,
}

/// Durable end offset, with an epoch bumped by truncation so that a sync that raced with a
/// truncation cannot mark removed offsets durable.
#[derive(Debug, Default)]
struct Durable {
    offset: u64,
    epoch: u64,
}

/// Failure and close state.
#[derive(Debug, Default)]
struct Status {
    failed: Option<String>,
    closed: bool,
}

/// The log of one topic partition. See the module docs for the concurrency model.
#[derive(Debug)]
pub struct PartitionLog {
    /// The partition directory.
    dir: PathBuf,
    /// Settings.
    config: LogConfig,
    /// Segment map.
    pub(crate) state: RwLock<LogState>,
    /// Serialises every mutation.
    pub(crate) writer: Mutex<()>,
    /// Failed / closed flags.
    status: Mutex<Status>,
    /// Offsets below this are on disk.
    durable: Mutex<Durable>,
    /// What opening found.
    recovery: RecoveryReport,
    /// Successful `sync` calls.
    syncs: AtomicU64,
    /// Generation of the segment map, bumped (and notified) whenever segments are replaced,
    /// deleted or truncated, so that a reader that lost a race can wait for the new map.
    map_generation: Mutex<u64>,
    /// Notified with `map_generation`.
    map_changed: Condvar,
    /// Retention deletes nothing at or above this offset (`u64::MAX`: no limit). With a
    /// snapshot store, this is where the snapshot store's coverage ends.
    retention_floor: AtomicU64,
}

/// How long a reader waits for the segment map to settle before giving up.
const MAP_SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

impl PartitionLog {
    /// Opens the log in `dir` (creating it if needed) and recovers it: finishes an interrupted
    /// compaction, removes leftovers, validates the active segment's tail from its last index
    /// entry and truncates a torn or corrupt tail. Sealed segments are not read: open time
    /// depends on the number of segment files, not on the bytes they hold.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Self> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).at(&dir)?;
        let mut recovery = RecoveryReport {
            compaction_rolled_forward: super::compaction::recover(&dir)?,
            ..RecoveryReport::default()
        };

        let mut logs = BTreeSet::new();
        let mut indexes = BTreeSet::new();
        for entry in fs::read_dir(&dir).at(&dir)? {
            let entry = entry.at(&dir)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            match parse_segment_name(name) {
                Some((base, FileKind::Log)) => {
                    logs.insert(base);
                }
                Some((base, FileKind::Index)) => {
                    indexes.insert(base);
                }
                None if name.ends_with(".tmp") || name.ends_with(".cleaned") => {
                    fs::remove_file(entry.path()).at(&entry.path())?;
                    recovery.leftovers_removed += 1;
                }
                None => {}
            }
        }
        for orphan in indexes.difference(&logs) {
            let path = segment_path(&dir, *orphan, "index");
            fs::remove_file(&path).at(&path)?;
            recovery.leftovers_removed += 1;
        }

        let checkpoint = read_log_start(&dir)?;
        if logs.is_empty() {
            logs.insert(checkpoint.unwrap_or(0));
        }
        let bases: Vec<u64> = logs.into_iter().collect();
        let (&active_base, sealed_bases) = bases.split_last().unwrap_or((&0, &[]));
        let mut sealed = BTreeMap::new();
        let mut removed = false;
        for (i, &base) in sealed_bases.iter().enumerate() {
            let next = bases[i + 1];
            // Wholly below the log start: an interrupted delete_before left it behind.
            if checkpoint.is_some_and(|start| next <= start) {
                remove_segment_files(&dir, base)?;
                removed = true;
                continue;
            }
            sealed.insert(base, SegmentSlot::new(&dir, base, None));
        }
        if removed {
            sync_dir(&dir)?;
        }
        recovery.segments = sealed.len() + 1;

        let (active, tail) =
            ActiveSegment::open(&dir, active_base, config.index_capacity(), now_ms())?;
        if tail.truncated_bytes > 0 || tail.index_rebuilt {
            tracing::warn!(dir = %dir.display(), truncated_bytes = tail.truncated_bytes,
                reason = tail.truncated_reason.as_deref().unwrap_or(""),
                index_rebuilt = tail.index_rebuilt, "recovered active segment");
        }
        recovery.tail = tail;
        let first_base = sealed.keys().next().copied().unwrap_or(active_base);
        let log_start = checkpoint.unwrap_or(first_base).min(active.next_offset);
        if checkpoint != Some(log_start) {
            write_log_start(&dir, log_start)?;
        }
        sync_dir(&dir)?;
        let durable = active.next_offset;
        Ok(PartitionLog {
            dir,
            config,
            state: RwLock::new(LogState {
                sealed,
                active,
                log_start_offset: log_start,
            }),
            writer: Mutex::new(()),
            status: Mutex::new(Status::default()),
            durable: Mutex::new(Durable {
                offset: durable,
                epoch: 0,
            }),
            recovery,
            syncs: AtomicU64::new(0),
            map_generation: Mutex::new(0),
            map_changed: Condvar::new(),
            retention_floor: AtomicU64::new(u64::MAX),
        })
    }

    /// Bumps the segment-map generation and wakes waiting readers.
    pub(crate) fn map_changed(&self) {
        *self.map_generation.lock() += 1;
        self.map_changed.notify_all();
    }

    fn map_generation(&self) -> u64 {
        *self.map_generation.lock()
    }

    /// Waits until the map generation differs from `seen` or `deadline` passes.
    fn wait_for_map_change(&self, seen: u64, deadline: Instant) -> Result<()> {
        let mut generation = self.map_generation.lock();
        while *generation == seen {
            if self
                .map_changed
                .wait_until(&mut generation, deadline)
                .timed_out()
            {
                return Err(LogError::io(
                    &self.dir,
                    std::io::Error::other("segment map did not settle during a read"),
                ));
            }
        }
        Ok(())
    }

    /// Incremented by every truncation; an append made under one value is gone if it changed.
    pub fn truncation_epoch(&self) -> u64 {
        self.durable.lock().epoch
    }

    /// Number of successful [`PartitionLog::sync`] calls (fdatasyncs on the write path).
    pub fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The settings the log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// What recovery found when the log was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Lowest readable offset.
    pub fn log_start_offset(&self) -> u64 {
        self.state.read().log_start_offset
    }

    /// Offset the next appended record will get.
    pub fn log_end_offset(&self) -> u64 {
        self.state.read().active.next_offset
    }

    /// Offsets below this are on disk (fdatasync returned after they were written).
    pub fn durable_offset(&self) -> u64 {
        self.durable.lock().offset
    }

    /// The segments, oldest first.
    pub fn segments(&self) -> Result<Vec<SegmentInfo>> {
        let (slots, active) = {
            let st = self.state.read();
            let slots: Vec<_> = st.sealed.values().cloned().collect();
            (slots, (st.active.base_offset, st.active.size))
        };
        let mut out = Vec::with_capacity(slots.len() + 1);
        for slot in slots {
            out.push(SegmentInfo {
                base_offset: slot.base_offset,
                size_bytes: slot.size()?,
                active: false,
            });
        }
        out.push(SegmentInfo {
            base_offset: active.0,
            size_bytes: active.1,
            active: true,
        });
        Ok(out)
    }

    /// Total bytes of all segment `.log` files.
    pub fn size_bytes(&self) -> Result<u64> {
        Ok(self.segments()?.iter().map(|s| s.size_bytes).sum())
    }

    fn check_writable(&self) -> Result<()> {
        let status = self.status.lock();
        if status.closed {
            return Err(LogError::Closed {
                dir: self.dir.clone(),
            });
        }
        if let Some(reason) = &status.failed {
            return Err(LogError::Failed {
                dir: self.dir.clone(),
                reason: reason.clone(),
            });
        }
        Ok(())
    }

    fn fail(&self, error: &LogError) {
        let mut status = self.status.lock();
        if status.failed.is_none() {
            tracing::error!(dir = %self.dir.display(), %error, "log failed; refusing writes until reopened");
            status.failed = Some(error.to_string());
        }
    }

    /// Appends one batch; see [`PartitionLog::append`].
    pub fn append_batch(&self, batch: ValidatedBatch, leader_epoch: i32) -> Result<Range<u64>> {
        self.append(&mut [batch], leader_epoch)
    }

    /// Appends `batches` in order, assigning consecutive offsets and stamping `leader_epoch`;
    /// returns the offsets assigned. Does not sync: call [`PartitionLog::sync`] (or use
    /// [`super::GroupCommit`]) to make them durable. Either every batch is appended or none is.
    pub fn append(&self, batches: &mut [ValidatedBatch], leader_epoch: i32) -> Result<Range<u64>> {
        self.append_in_epoch(batches, leader_epoch)
            .map(|(range, _)| range)
    }

    /// [`PartitionLog::append`], also returning the truncation epoch the batches were written in
    /// (read under the writer lock, so no truncation can slip between the two).
    pub(crate) fn append_in_epoch(
        &self,
        batches: &mut [ValidatedBatch],
        leader_epoch: i32,
    ) -> Result<(Range<u64>, u64)> {
        let _writer = self.writer.lock();
        self.check_writable()?;
        let start = self.log_end_offset();
        match self.append_locked(batches, leader_epoch) {
            Ok(end) => Ok((start..end, self.truncation_epoch())),
            Err(error) => {
                if let Err(undo) = self.undo_append(start) {
                    self.fail(&undo);
                }
                Err(error)
            }
        }
    }

    fn append_locked(&self, batches: &mut [ValidatedBatch], leader_epoch: i32) -> Result<u64> {
        let now = now_ms();
        let mut i = 0;
        while i < batches.len() {
            let (file, path, base, mut pos, mut next, mut max_ts, room, empty, age_ms) = {
                let st = self.state.read();
                let a = &st.active;
                (
                    a.file.clone(),
                    a.log_path.clone(),
                    a.base_offset,
                    a.size,
                    a.next_offset,
                    a.max_timestamp_ms,
                    self.config.index_capacity().saturating_sub(a.index.len()),
                    a.size == 0,
                    now.saturating_sub(a.opened_at_ms),
                )
            };
            if !empty && age_ms >= self.config.segment_max_age_ms as i64 {
                self.roll_locked()?;
                continue;
            }
            let mut entries = Vec::new();
            let mut end = i;
            while end < batches.len() && entries.len() < room {
                let len = batches[end].len() as u64;
                let last = next + batches[end].header().last_offset_delta as u64;
                let fits = (pos == 0 || pos + len <= self.config.segment_max_bytes)
                    && last - base <= u32::MAX as u64;
                if !fits {
                    break;
                }
                let batch = &mut batches[end];
                batch.assign(next, leader_epoch);
                max_ts = max_ts.max(batch.header().max_timestamp);
                entries.push(IndexEntry {
                    relative_offset: (next - base) as u32,
                    position: pos as u32,
                    max_timestamp_ms: max_ts,
                });
                pos += len;
                next = batch.header().next_offset();
                end += 1;
            }
            if end == i {
                if empty {
                    return Err(LogError::InvalidConfig(
                        "batch does not fit an empty segment".into(),
                    ));
                }
                self.roll_locked()?;
                continue;
            }
            write_all_batches(&file, &batches[i..end]).at(&path)?;
            let mut st = self.state.write();
            let a = &mut st.active;
            for entry in entries {
                a.index.push(entry);
            }
            if a.size == 0 {
                a.opened_at_ms = now;
            }
            a.size = pos;
            a.next_offset = next;
            a.max_timestamp_ms = max_ts;
            i = end;
        }
        Ok(self.log_end_offset())
    }

    /// After a failed append: drop unpublished bytes, then anything this call published.
    fn undo_append(&self, start: u64) -> Result<()> {
        {
            let st = self.state.read();
            let a = &st.active;
            a.file.set_len(a.size).at(&a.log_path)?;
            (&*a.file).seek(SeekFrom::Start(a.size)).at(&a.log_path)?;
        }
        self.truncate_locked(start)
    }

    /// Makes everything appended so far durable (fdatasync of the active segment; sealed
    /// segments were synced when they rolled). Safe to call concurrently with `append`.
    /// Returns the durable end offset. A failed fdatasync fails the log: the page cache state
    /// is unknown after it, so writes are refused until the log is reopened and re-validated.
    pub fn sync(&self) -> Result<u64> {
        self.check_writable()?;
        let epoch = self.truncation_epoch();
        let (file, path, point, _) = self.sync_target();
        if let Err(e) = file.sync_data() {
            let error = LogError::io(&path, e);
            self.fail(&error);
            return Err(error);
        }
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(self.mark_durable(point, epoch))
    }

    /// The active segment's file, what syncing it now would make durable, and its size.
    fn sync_target(&self) -> (Arc<fs::File>, PathBuf, DurablePoint, u64) {
        let st = self.state.read();
        let a = &st.active;
        let point = DurablePoint {
            offset: a.next_offset,
            segment: a.base_offset,
            index_entries: a.index.len(),
        };
        (a.file.clone(), a.log_path.clone(), point, a.size)
    }

    /// Records that everything up to `point` is on disk (unless a truncation intervened) and
    /// writes the index entries of that data to the index file.
    fn mark_durable(&self, point: DurablePoint, epoch: u64) -> u64 {
        let mut durable = self.durable.lock();
        if durable.epoch != epoch {
            return durable.offset;
        }
        durable.offset = durable.offset.max(point.offset);
        let st = self.state.read();
        if st.active.base_offset == point.segment
            && let Err(error) = st.active.index.persist(point.index_entries)
        {
            // Derived data: recovery rebuilds what is missing. Worth a log line, not a failure.
            tracing::warn!(dir = %self.dir.display(), %error, "could not write index entries");
        }
        durable.offset
    }

    /// Seals the active segment and starts a new one (no-op if the active one is empty).
    pub fn roll(&self) -> Result<()> {
        let _writer = self.writer.lock();
        self.check_writable()?;
        self.roll_locked()
    }

    pub(crate) fn roll_locked(&self) -> Result<()> {
        let epoch = self.truncation_epoch();
        let (file, path, point, size) = self.sync_target();
        if size == 0 {
            return Ok(());
        }
        let next = point.offset;
        // A sealed segment is trusted without a scan on open, so it must be fully on disk
        // before the next segment (which makes it "sealed" on open) can exist.
        if let Err(e) = file.sync_data() {
            let error = LogError::io(&path, e);
            self.fail(&error);
            return Err(error);
        }
        self.mark_durable(point, epoch);
        // If creating the next segment fails (disk full), the active one is untouched.
        remove_segment_files(&self.dir, next)?;
        let fresh = ActiveSegment::open(&self.dir, next, self.config.index_capacity(), now_ms())
            .inspect_err(|_| {
                let _ = remove_segment_files(&self.dir, next);
            })?
            .0;
        // Trim while the segment is still active: its readers only touch published entries,
        // whereas a reader mapping it as sealed scans the whole file. Once trimmed, its mapping
        // must never be written again, so the swap happens whatever the outcome.
        let trimmed = self.state.read().active.index.trim_and_sync();
        let old = {
            let mut st = self.state.write();
            let old = std::mem::replace(&mut st.active, fresh);
            st.sealed.insert(
                old.base_offset,
                SegmentSlot::new(&self.dir, old.base_offset, Some(old.size)),
            );
            old
        };
        drop(old);
        self.map_changed();
        // The new segment's directory entry must be durable before anything is acknowledged in it.
        if let Err(error) = trimmed.and_then(|_| sync_dir(&self.dir)) {
            self.fail(&error);
            return Err(error);
        }
        Ok(())
    }

    /// Reads whole batches starting with the one that contains `offset`, up to about
    /// `max_bytes` (at least one batch is returned if any exists). Sealed segments are read
    /// without copying. Every returned batch has passed its CRC check.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<ReadResult> {
        self.read_up_to(offset, max_bytes, u64::MAX)
    }

    /// Like [`PartitionLog::read`], but returns only batches whose last offset is below
    /// `max_offset` (for example the commit index or the durable offset).
    pub fn read_up_to(&self, offset: u64, max_bytes: usize, max_offset: u64) -> Result<ReadResult> {
        let deadline = Instant::now() + MAP_SETTLE_TIMEOUT;
        let mut after: Option<u64> = None;
        loop {
            let generation = self.map_generation();
            let (target, empty) = {
                let st = self.state.read();
                let (start, end) = (st.log_start_offset, st.active.next_offset);
                if offset < start || offset > end {
                    return Err(LogError::OffsetOutOfRange {
                        requested: offset,
                        log_start_offset: start,
                        log_end_offset: end,
                    });
                }
                let empty = ReadResult {
                    batches: Bytes::new(),
                    next_offset: offset,
                    log_start_offset: start,
                    log_end_offset: end,
                };
                if offset == end || offset >= max_offset {
                    return Ok(empty);
                }
                let sealed = match after {
                    None if offset >= st.active.base_offset => None,
                    None => st
                        .sealed
                        .range(..=offset)
                        .next_back()
                        .or_else(|| st.sealed.iter().next())
                        .map(|(_, slot)| slot.clone()),
                    Some(base) => st.sealed.range(base + 1..).next().map(|(_, s)| s.clone()),
                };
                let target = match sealed {
                    Some(slot) => Target::Sealed(slot),
                    None => match st.active.read_range(offset) {
                        Some(range) => Target::Active {
                            file: st.active.file.clone(),
                            path: st.active.log_path.clone(),
                            range,
                        },
                        None => Target::Nothing,
                    },
                };
                (target, empty)
            };
            let read = match target {
                Target::Nothing => return Ok(empty),
                Target::Active { file, path, range } => {
                    let read = read_active(&file, &path, range, offset, max_bytes, max_offset);
                    let raced = self.map_generation() != generation;
                    match read {
                        // A truncation moved the bytes under us: look again.
                        Ok(SegmentRead::IndexMismatch) | Err(LogError::Corruption { .. })
                            if raced =>
                        {
                            after = None;
                            continue;
                        }
                        Ok(SegmentRead::IndexMismatch) => {
                            return Err(LogError::corruption(
                                &path,
                                range.start,
                                "index entry does not point at the batch it names",
                            ));
                        }
                        other => other?,
                    }
                }
                Target::Sealed(slot) => {
                    match self.read_sealed(&slot, offset, max_bytes, max_offset)? {
                        Some(SegmentRead::Exhausted) => {
                            after = Some(slot.base_offset);
                            continue;
                        }
                        Some(read) => read,
                        None => {
                            // Replaced or deleted under us: wait for the new segment map.
                            self.wait_for_map_change(generation, deadline)?;
                            after = None;
                            continue;
                        }
                    }
                }
            };
            return Ok(match read {
                SegmentRead::Data { bytes, next_offset } => ReadResult {
                    batches: bytes,
                    next_offset,
                    ..empty
                },
                SegmentRead::Exhausted | SegmentRead::Limit | SegmentRead::IndexMismatch => empty,
            });
        }
    }

    /// Reads one sealed segment, rebuilding its index once if a lookup hits a bad entry.
    /// `None` if the slot was retired (or its files deleted) meanwhile.
    fn read_sealed(
        &self,
        slot: &SegmentSlot,
        offset: u64,
        max_bytes: usize,
        max_offset: u64,
    ) -> Result<Option<SegmentRead>> {
        let Some(seg) = self.load_slot(slot)? else {
            return Ok(None);
        };
        let read = seg.read(offset, max_bytes, max_offset)?;
        if !matches!(read, SegmentRead::IndexMismatch) {
            return Ok(Some(read));
        }
        tracing::warn!(segment = %seg.log_path.display(),
            "index entry does not match the log; rebuilding the index");
        let Some(seg) = slot.reload_rebuilding_index()? else {
            return Ok(None);
        };
        match seg.read(offset, max_bytes, max_offset)? {
            SegmentRead::IndexMismatch => Err(LogError::corruption(
                &seg.log_path,
                0,
                "index does not match the log even after a rebuild",
            )),
            read => Ok(Some(read)),
        }
    }

    /// Maps a sealed segment; a segment deleted between lookup and load counts as retired.
    fn load_slot(&self, slot: &SegmentSlot) -> Result<Option<Arc<SealedSegment>>> {
        match slot.load() {
            Err(LogError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Ok(None)
            }
            other => other,
        }
    }

    /// Removes every batch after `offset` (keeps `offset`). See [`PartitionLog::truncate_from`].
    pub fn truncate_after(&self, offset: u64) -> Result<()> {
        self.truncate_from(offset.saturating_add(1))
    }

    /// Removes every batch with offsets at or after `offset`, which must be a batch boundary
    /// (Raft conflict resolution). Durable when it returns. Afterwards the log ends at the end
    /// of the last kept batch (which is `offset` unless compaction left a gap before it).
    pub fn truncate_from(&self, offset: u64) -> Result<()> {
        let _writer = self.writer.lock();
        self.check_writable()?;
        self.truncate_locked(offset)
    }

    pub(crate) fn truncate_locked(&self, offset: u64) -> Result<()> {
        let (end, active_base) = {
            let st = self.state.read();
            (st.active.next_offset, st.active.base_offset)
        };
        if offset >= end {
            return Ok(());
        }
        // Plan first (this is where a cut inside a batch is refused), then change things. Once
        // files start changing, any failure fails the log: its state is no longer what the
        // in-memory map says, and only a reopen re-validates it.
        let applied = if offset >= active_base {
            let plan = self.plan_active_cut(offset)?;
            self.cut_active(plan)
        } else {
            let plan = self.plan_sealed_cut(offset)?;
            self.cut_into_sealed(offset, plan)
        };
        let applied = applied.and_then(|_| {
            let new_end = self.log_end_offset();
            {
                let mut durable = self.durable.lock();
                durable.epoch += 1;
                durable.offset = durable.offset.min(new_end);
            }
            if new_end < self.log_start_offset() {
                write_log_start(&self.dir, new_end)?;
                self.state.write().log_start_offset = new_end;
            }
            Ok(())
        });
        self.map_changed();
        if let Err(error) = &applied {
            self.fail(error);
        }
        applied
    }

    /// Where to cut the active segment (no changes yet).
    fn plan_active_cut(&self, offset: u64) -> Result<ActiveCut> {
        let st = self.state.read();
        let a = &st.active;
        let header_at = |pos| read_header(&a.file, &a.log_path, pos);
        let (keep, cut) = find_cut(
            a.index.len(),
            |i| a.index.entry(i),
            header_at,
            a.base_offset,
            offset,
            &a.log_path,
        )?;
        let (next_offset, max_timestamp_ms) = match keep.checked_sub(1).map(|i| a.index.entry(i)) {
            Some(last) => (
                header_at(last.position as u64)?.next_offset(),
                last.max_timestamp_ms,
            ),
            // Same answer a reopen gives for an empty segment.
            None => (a.base_offset, i64::MIN),
        };
        Ok(ActiveCut {
            keep,
            cut,
            next_offset,
            max_timestamp_ms,
        })
    }

    /// Cuts the active segment: publish the shorter log first (so readers stop before the cut),
    /// then shorten the file.
    fn cut_active(&self, plan: ActiveCut) -> Result<()> {
        let (file, path) = {
            let mut st = self.state.write();
            let a = &mut st.active;
            a.index.set_len(plan.keep)?;
            a.size = plan.cut;
            a.next_offset = plan.next_offset;
            a.max_timestamp_ms = plan.max_timestamp_ms;
            (a.file.clone(), a.log_path.clone())
        };
        file.set_len(plan.cut).at(&path)?;
        file.sync_data().at(&path)?;
        (&*file).seek(SeekFrom::Start(plan.cut)).at(&path)?;
        Ok(())
    }

    /// Which sealed segment a cut below the active segment lands in, and where (no changes yet).
    fn plan_sealed_cut(&self, offset: u64) -> Result<Option<SealedCut>> {
        let Some(slot) = self
            .state
            .read()
            .sealed
            .range(..offset)
            .next_back()
            .map(|(_, s)| s.clone())
        else {
            return Ok(None);
        };
        let seg = self.load_slot(&slot)?.ok_or_else(|| {
            LogError::io(
                &self.dir,
                std::io::Error::other("segment vanished during truncation"),
            )
        })?;
        let (keep, cut) = find_cut(
            seg.index.len(),
            |i| seg.index.entry(i),
            |pos| {
                BatchHeader::parse(seg.data.get(pos as usize..).unwrap_or(&[]))
                    .map_err(|e| LogError::corruption(&seg.log_path, pos, e))
            },
            seg.base_offset,
            offset,
            &seg.log_path,
        )?;
        Ok(Some(SealedCut {
            slot,
            seg,
            keep,
            cut,
        }))
    }

    /// Cuts into a sealed segment: it becomes the active one, as a new file holding its first
    /// `cut` bytes (never the mapped file itself, which readers may still hold).
    fn cut_into_sealed(&self, offset: u64, plan: Option<SealedCut>) -> Result<()> {
        let (doomed, active_base) = {
            let st = self.state.read();
            let doomed: Vec<u64> = st.sealed.range(offset..).map(|(b, _)| *b).collect();
            (doomed, st.active.base_offset)
        };
        // Readers of the target wait for the new map instead of remapping its files.
        if let Some(plan) = &plan {
            plan.slot.retire();
        }
        // Newest first, so that a crash part-way leaves a shorter but gap-free log.
        remove_segment_files(&self.dir, active_base)?;
        for base in doomed.iter().rev() {
            remove_segment_files(&self.dir, *base)?;
        }
        sync_dir(&self.dir)?;
        let new_base = match &plan {
            None => offset,
            Some(plan) => {
                rewrite_prefix(&self.dir, &plan.seg, plan.keep, plan.cut)?;
                plan.seg.base_offset
            }
        };
        let (active, _) =
            ActiveSegment::open(&self.dir, new_base, self.config.index_capacity(), now_ms())?;
        sync_dir(&self.dir)?;
        let retired = {
            let mut st = self.state.write();
            let retired = st.sealed.split_off(&new_base);
            st.active = active;
            if plan.is_none() {
                st.log_start_offset = st.log_start_offset.min(new_base);
            }
            retired
        };
        for slot in retired.values() {
            slot.retire();
        }
        if plan.is_none() {
            write_log_start(&self.dir, self.log_start_offset())?;
        }
        Ok(())
    }

    /// Makes `offset` the log start: offsets below it become unreadable and segments wholly
    /// below it are deleted. Fails with `OffsetOutOfRange` beyond the log end. Returns the
    /// number of segments deleted.
    pub fn delete_before(&self, offset: u64) -> Result<usize> {
        let _writer = self.writer.lock();
        self.check_writable()?;
        self.delete_before_locked(offset).map(|(n, _)| n)
    }

    fn delete_before_locked(&self, offset: u64) -> Result<(usize, u64)> {
        let (start, end, active_size) = {
            let st = self.state.read();
            (st.log_start_offset, st.active.next_offset, st.active.size)
        };
        if offset <= start {
            return Ok((0, 0));
        }
        if offset > end {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start_offset: start,
                log_end_offset: end,
            });
        }
        write_log_start(&self.dir, offset)?;
        self.state.write().log_start_offset = offset;
        if offset == end && active_size > 0 {
            self.roll_locked()?;
        }
        let doomed: Vec<Arc<SegmentSlot>> = {
            let mut st = self.state.write();
            let bases: Vec<u64> = st
                .sealed
                .keys()
                .copied()
                .filter(|b| st.next_base(*b) <= offset)
                .collect();
            bases.iter().filter_map(|b| st.sealed.remove(b)).collect()
        };
        let mut bytes = 0;
        for slot in &doomed {
            bytes += slot.size().unwrap_or(0);
            slot.retire();
            remove_segment_files(&self.dir, slot.base_offset)?;
        }
        if !doomed.is_empty() {
            self.map_changed();
            sync_dir(&self.dir)?;
        }
        Ok((doomed.len(), bytes))
    }

    /// Bytes available to unprivileged writers on the file system holding the log.
    pub fn free_bytes(&self) -> Result<u64> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.dir.as_os_str().as_bytes())
            .map_err(|e| LogError::io(&self.dir, std::io::Error::other(e)))?;
        let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: `path` is a valid NUL-terminated string and `stat` points to writable memory
        // of the right type; statvfs only writes to it, and we read it only after it succeeded.
        let rc = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
        if rc != 0 {
            return Err(LogError::io(&self.dir, std::io::Error::last_os_error()));
        }
        // SAFETY: statvfs returned 0, so it initialised `stat`.
        let stat = unsafe { stat.assume_init() };
        // The field types differ between platforms (u32 on some 32-bit targets).
        #[allow(clippy::unnecessary_cast)]
        let (blocks, block_size) = (stat.f_bavail as u64, stat.f_frsize as u64);
        Ok(blocks.saturating_mul(block_size))
    }

    /// Empties the log and makes it start (and end) at `offset`, which may lie beyond the
    /// current end: used when a Raft snapshot replaces everything this replica had. Durable when
    /// it returns.
    pub fn reset(&self, offset: u64) -> Result<()> {
        let _writer = self.writer.lock();
        self.check_writable()?;
        let applied = self.reset_locked(offset);
        self.map_changed();
        if let Err(error) = &applied {
            self.fail(error);
        }
        applied
    }

    fn reset_locked(&self, offset: u64) -> Result<()> {
        let (bases, active_base) = {
            let st = self.state.read();
            let bases: Vec<u64> = st.sealed.keys().copied().collect();
            (bases, st.active.base_offset)
        };
        // Order for crash safety: segments above `offset` go first (newest first: a crash
        // leaves a shorter prefix), then the log start moves, then the new (highest) segment
        // appears, then the old ones go. A reopen part-way finds the new segment active and
        // deletes the old ones as lying wholly below the log start.
        let all: Vec<u64> = bases.iter().copied().chain([active_base]).collect();
        for base in all.iter().rev().filter(|b| **b > offset) {
            remove_segment_files(&self.dir, *base)?;
        }
        sync_dir(&self.dir)?;
        write_log_start(&self.dir, offset)?;
        remove_segment_files(&self.dir, offset)?;
        let (active, _) =
            ActiveSegment::open(&self.dir, offset, self.config.index_capacity(), now_ms())?;
        sync_dir(&self.dir)?;
        for base in all.iter().rev().filter(|b| **b < offset) {
            remove_segment_files(&self.dir, *base)?;
        }
        sync_dir(&self.dir)?;
        let retired = {
            let mut st = self.state.write();
            st.active = active;
            st.log_start_offset = offset;
            std::mem::take(&mut st.sealed)
        };
        for slot in retired.values() {
            slot.retire();
        }
        let mut durable = self.durable.lock();
        durable.epoch += 1;
        durable.offset = offset;
        Ok(())
    }

    /// Deletes the oldest sealed segments that retention allows: while the log minus that
    /// segment is still at least `retention_bytes`, or while the segment's newest record is
    /// older than `retention_ms` before `now_ms`. The active segment is never deleted.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<RetentionReport> {
        // Planned and carried out under the writer lock: no truncation or roll can change the
        // segments between deciding and deleting.
        let _writer = self.writer.lock();
        self.check_writable()?;
        let (slots, active_base, active_size) = {
            let st = self.state.read();
            let slots: Vec<_> = st.sealed.values().cloned().collect();
            (slots, st.active.base_offset, st.active.size)
        };
        let mut sizes = Vec::with_capacity(slots.len());
        for slot in &slots {
            sizes.push(slot.size()?);
        }
        let mut total: u64 = sizes.iter().sum::<u64>() + active_size;
        let mut cut = None;
        let floor = self.retention_floor.load(Ordering::Acquire);
        for (i, slot) in slots.iter().enumerate() {
            let next_base = slots
                .get(i + 1)
                .map(|s| s.base_offset)
                .unwrap_or(active_base);
            if next_base > floor {
                break;
            }
            let by_bytes = self
                .config
                .retention_bytes
                .is_some_and(|max| total - sizes[i] >= max);
            let by_age = match self.config.retention_ms {
                Some(ms) if !by_bytes => match self.load_slot(slot)? {
                    Some(seg) => seg.max_timestamp_ms < now_ms.saturating_sub(ms as i64),
                    None => false,
                },
                _ => false,
            };
            if !(by_bytes || by_age) {
                break;
            }
            total -= sizes[i];
            cut = Some(next_base);
        }
        let Some(cut) = cut else {
            return Ok(RetentionReport {
                log_start_offset: self.log_start_offset(),
                ..RetentionReport::default()
            });
        };
        let (segments_deleted, bytes_deleted) = self.delete_before_locked(cut)?;
        if segments_deleted > 0 {
            tracing::info!(dir = %self.dir.display(), segments_deleted, bytes_deleted,
                log_start_offset = cut, "retention deleted segments");
        }
        Ok(RetentionReport {
            segments_deleted,
            bytes_deleted,
            log_start_offset: self.log_start_offset(),
        })
    }

    /// Limits retention to segments wholly below `offset` (what the snapshot store covers);
    /// `u64::MAX` removes the limit.
    pub fn set_retention_floor(&self, offset: u64) {
        self.retention_floor.store(offset, Ordering::Release);
    }

    /// The retention limit (see [`PartitionLog::set_retention_floor`]).
    pub fn retention_floor(&self) -> u64 {
        self.retention_floor.load(Ordering::Acquire)
    }

    /// Replaces everything in the log with `segments` (`(base_offset, file)`, oldest first,
    /// each file holding whole batches and on the same file system as the log), makes
    /// `log_start` the log start and continues at `next_offset` (installing a snapshot from
    /// the snapshot store). The files are moved, not copied. Durable when it returns.
    pub fn install_segments(
        &self,
        segments: &[(u64, PathBuf)],
        log_start: u64,
        next_offset: u64,
    ) -> Result<()> {
        let _writer = self.writer.lock();
        self.check_writable()?;
        let installed = self.install_locked(segments, log_start, next_offset);
        self.map_changed();
        if let Err(error) = &installed {
            self.fail(error);
        }
        installed
    }

    fn install_locked(
        &self,
        segments: &[(u64, PathBuf)],
        log_start: u64,
        next_offset: u64,
    ) -> Result<()> {
        if segments.iter().any(|(base, _)| *base >= next_offset) {
            return Err(LogError::io(
                &self.dir,
                std::io::Error::other("installed segments must start below the next offset"),
            ));
        }
        let (bases, active_base) = {
            let st = self.state.read();
            let bases: Vec<u64> = st.sealed.keys().copied().collect();
            (bases, st.active.base_offset)
        };
        // Newest first: a crash part-way leaves a shorter prefix of the old log.
        for base in bases.iter().copied().chain([active_base]).rev() {
            remove_segment_files(&self.dir, base)?;
        }
        sync_dir(&self.dir)?;
        write_log_start(&self.dir, log_start)?;
        for (base, file) in segments {
            let target = segment_path(&self.dir, *base, "log");
            fs::rename(file, &target).at(&target)?;
        }
        remove_segment_files(&self.dir, next_offset)?;
        let (active, _) = ActiveSegment::open(
            &self.dir,
            next_offset,
            self.config.index_capacity(),
            now_ms(),
        )?;
        sync_dir(&self.dir)?;
        let retired = {
            let mut st = self.state.write();
            st.active = active;
            st.log_start_offset = log_start;
            let fresh = segments
                .iter()
                .map(|(base, _)| (*base, SegmentSlot::new(&self.dir, *base, None)))
                .collect();
            std::mem::replace(&mut st.sealed, fresh)
        };
        for slot in retired.values() {
            slot.retire();
        }
        let mut durable = self.durable.lock();
        durable.epoch += 1;
        durable.offset = next_offset;
        Ok(())
    }

    /// Clean close: sync and trim the active index. Later writes fail with `Closed`; reads still work.
    pub fn close(&self) -> Result<()> {
        let _writer = self.writer.lock();
        if self.status.lock().closed {
            return Ok(());
        }
        self.sync()?;
        self.state.read().active.index.trim_and_sync()?;
        self.status.lock().closed = true;
        Ok(())
    }
}

/// Where to cut the active segment.
struct ActiveCut {
    /// Index entries kept.
    keep: usize,
    /// Byte position of the cut.
    cut: u64,
    /// Log end offset afterwards.
    next_offset: u64,
    /// Running max timestamp afterwards.
    max_timestamp_ms: i64,
}

/// Where to cut a sealed segment that becomes the active one.
struct SealedCut {
    /// Its slot in the segment map.
    slot: Arc<SegmentSlot>,
    /// The mapped segment.
    seg: Arc<SealedSegment>,
    /// Index entries kept.
    keep: usize,
    /// Byte position of the cut.
    cut: u64,
}

/// What a sync or roll made durable.
struct DurablePoint {
    /// Log end offset at the time.
    offset: u64,
    /// Base offset of the active segment at the time.
    segment: u64,
    /// Index entries of that segment covering the durable data.
    index_entries: usize,
}

/// Finds where to cut a segment so that offsets `>= offset` are removed: `(entries kept, byte
/// position)`. Fails if `offset` is inside a batch, or if the index entry found does not point
/// at the batch it names (the cut would then be wrong).
fn find_cut(
    entries: usize,
    entry: impl Fn(usize) -> IndexEntry,
    header_at: impl Fn(u64) -> Result<BatchHeader>,
    base: u64,
    offset: u64,
    path: &Path,
) -> Result<(usize, u64)> {
    let relative = offset.saturating_sub(base).min(u32::MAX as u64) as u32;
    // Last entry whose relative offset is <= relative.
    let (mut lo, mut hi) = (0usize, entries);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if entry(mid).relative_offset <= relative {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let Some(k) = lo.checked_sub(1) else {
        return Ok((0, 0));
    };
    let e = entry(k);
    let header = header_at(e.position as u64)?;
    if header.base_offset != base + e.relative_offset as u64 {
        return Err(LogError::corruption(
            path,
            e.position as u64,
            "index entry does not point at the batch it names",
        ));
    }
    if header.base_offset == offset {
        Ok((k, e.position as u64))
    } else if offset <= header.last_offset() {
        Err(LogError::NotBatchBoundary {
            offset,
            batch_base_offset: header.base_offset,
            batch_last_offset: header.last_offset(),
        })
    } else {
        Ok((k + 1, e.position as u64 + header.total_len() as u64))
    }
}

fn read_header(file: &fs::File, path: &Path, pos: u64) -> Result<BatchHeader> {
    let head = pread_exact(file, path, pos, BATCH_HEADER_LEN)?;
    BatchHeader::parse(&head).map_err(|e| LogError::corruption(path, pos, e))
}

/// Replaces a sealed segment's files by their first `cut` bytes / `keep` entries (write to a
/// temporary file, fsync, rename): the old mapping stays valid for readers that hold it.
fn rewrite_prefix(dir: &Path, seg: &SealedSegment, keep: usize, cut: u64) -> Result<()> {
    let log_path = segment_path(dir, seg.base_offset, "log");
    let tmp = segment_path(dir, seg.base_offset, "log.tmp");
    {
        let mut file = fs::File::create(&tmp).at(&tmp)?;
        file.write_all(&seg.data[..cut as usize]).at(&tmp)?;
        file.sync_all().at(&tmp)?;
    }
    fs::rename(&tmp, &log_path).at(&log_path)?;
    let entries: Vec<IndexEntry> = (0..keep).map(|i| seg.index.entry(i)).collect();
    super::index::SealedIndex::write(&segment_path(dir, seg.base_offset, "index"), &entries)?;
    sync_dir(dir)
}

/// Removes a segment's `.log` and `.index` (missing files are fine).
pub(crate) fn remove_segment_files(dir: &Path, base: u64) -> Result<()> {
    for ext in ["log", "index"] {
        let path = segment_path(dir, base, ext);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LogError::io(&path, e)),
        }
    }
    Ok(())
}

/// Writes all batches with vectored writes at the file's cursor.
fn write_all_batches(file: &fs::File, batches: &[ValidatedBatch]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = batches
        .iter()
        .flat_map(|b| b.parts())
        .map(IoSlice::new)
        .collect();
    let mut slices = &mut slices[..];
    let mut writer = file;
    while !slices.is_empty() {
        match writer.write_vectored(slices) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn read_log_start(dir: &Path) -> Result<Option<u64>> {
    let path = dir.join(LOG_START_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => match text.trim().parse() {
            Ok(offset) => Ok(Some(offset)),
            Err(_) => {
                tracing::warn!(path = %path.display(), "unreadable log start offset; using the first segment");
                Ok(None)
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LogError::io(&path, e)),
    }
}

/// Atomically replaces the log start checkpoint (temp file, fsync, rename, fsync dir).
fn write_log_start(dir: &Path, offset: u64) -> Result<()> {
    let path = dir.join(LOG_START_FILE);
    let tmp = dir.join(format!("{LOG_START_FILE}.tmp"));
    {
        let mut file = fs::File::create(&tmp).at(&tmp)?;
        writeln!(file, "{offset}").at(&tmp)?;
        file.sync_all().at(&tmp)?;
    }
    fs::rename(&tmp, &path).at(&path)?;
    sync_dir(dir)
}
