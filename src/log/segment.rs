//! Segments: a `.log` file of batches plus its `.index`.
//!
//! The active segment is appended to with plain writes and read with `pread` (copies, because its
//! tail is still moving). Sealed segments are immutable, memory-mapped, and read without copying:
//! a read returns a `Bytes` slice of the mapping. A sealed file is never shrunk or rewritten in
//! place (that would fault readers of the mapping); it is replaced by rename or unlinked.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use memmap2::Mmap;

use super::batch::{BATCH_HEADER_LEN, BatchError, BatchHeader, check_batch};
use super::error::{IoContext, LogError, Result};
use super::index::{ActiveIndex, IndexEntry, SealedIndex};

/// Width of the zero-padded base offset in file names (Kafka's convention).
const NAME_DIGITS: usize = 20;

/// What a file in a partition directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// `<base>.log`
    Log,
    /// `<base>.index`
    Index,
}

/// `<dir>/<base, 20 digits>.<ext>`
pub fn segment_path(dir: &Path, base_offset: u64, ext: &str) -> PathBuf {
    dir.join(format!("{base_offset:0NAME_DIGITS$}.{ext}"))
}

/// Parses `<20 digits>.log` / `<20 digits>.index`; anything else is `None`.
pub fn parse_segment_name(name: &str) -> Option<(u64, FileKind)> {
    let (stem, ext) = name.split_once('.')?;
    let kind = match ext {
        "log" => FileKind::Log,
        "index" => FileKind::Index,
        _ => return None,
    };
    if stem.len() != NAME_DIGITS || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, kind))
}

/// Opens a directory and fsyncs it, making renames, creations and deletions in it durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// Result of scanning a log file for valid batches.
#[derive(Debug)]
pub struct Scan {
    /// Index entries for the valid batches found.
    pub entries: Vec<IndexEntry>,
    /// Byte position right after the last valid batch.
    pub valid_end: u64,
    /// Offset after the last valid batch (or the `expected_min` passed in if none).
    pub next_offset: u64,
    /// Running max timestamp after the last valid batch.
    pub max_timestamp_ms: i64,
    /// Why scanning stopped before the end of the data, and where.
    pub stopped: Option<(u64, String)>,
}

/// Scans `data` from `from` for consecutive valid batches of the segment with `base_offset`:
/// framing, CRC, offsets increasing from `expected_min`, and offsets and positions that fit the
/// index. Stops at the first failure.
pub fn scan(
    data: &[u8],
    from: u64,
    base_offset: u64,
    expected_min: u64,
    running_max_ts: i64,
) -> Scan {
    let mut out = Scan {
        entries: Vec::new(),
        valid_end: from,
        next_offset: expected_min,
        max_timestamp_ms: running_max_ts,
        stopped: None,
    };
    let mut pos = from as usize;
    while pos < data.len() {
        let header = match check_batch(&data[pos..]) {
            Ok(h) => h,
            Err(e) => {
                out.stopped = Some((pos as u64, e.to_string()));
                break;
            }
        };
        let fits = header.base_offset >= out.next_offset
            && header.base_offset >= base_offset
            && header.last_offset() - base_offset <= u32::MAX as u64
            && pos <= u32::MAX as usize;
        if !fits {
            out.stopped = Some((
                pos as u64,
                format!(
                    "batch offsets {}..={} out of order (expected >= {})",
                    header.base_offset,
                    header.last_offset(),
                    out.next_offset
                ),
            ));
            break;
        }
        out.max_timestamp_ms = out.max_timestamp_ms.max(header.max_timestamp);
        out.entries.push(IndexEntry {
            relative_offset: (header.base_offset - base_offset) as u32,
            position: pos as u32,
            max_timestamp_ms: out.max_timestamp_ms,
        });
        pos += header.total_len();
        out.valid_end = pos as u64;
        out.next_offset = header.next_offset();
    }
    out
}

/// Maps a whole file read-only as `Bytes` (empty files cannot be mapped).
fn map_file(file: &File, path: &Path) -> Result<Bytes> {
    let len = file.metadata().at(path)?.len();
    if len == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: segment files are never shrunk or rewritten in place while mapped: sealed ones are
    // replaced by rename or unlinked (both keep the mapped inode intact), and the active one is
    // only mapped during recovery, before anything truncates it.
    let mmap = unsafe { Mmap::map(file) }.at(path)?;
    Ok(Bytes::from_owner(mmap))
}

/// Checks that index `entry` points at a valid batch of the segment with `base_offset`.
fn entry_matches(data: &[u8], base_offset: u64, entry: IndexEntry) -> Option<BatchHeader> {
    let pos = entry.position as usize;
    let header = check_batch(data.get(pos..)?).ok()?;
    (header.base_offset == base_offset + entry.relative_offset as u64).then_some(header)
}

/// What a read of one segment produced.
#[derive(Debug)]
pub enum SegmentRead {
    /// Whole batches, and the offset after the last of them.
    Data {
        /// The batches.
        bytes: Bytes,
        /// Offset to continue from.
        next_offset: u64,
    },
    /// The segment holds nothing at or after the offset: continue with the next segment.
    Exhausted,
    /// The next batch ends at or beyond `max_offset`: nothing may be returned yet.
    Limit,
    /// The index entry for the offset does not point at the batch it names: rebuild the index.
    IndexMismatch,
}

/// Collects whole batches from `data` starting at `pos`, skipping batches that end before
/// `offset`, stopping at `max_bytes` (at least one batch is returned) or before a batch that
/// reaches `max_offset`. Returns the end position and next offset, or the error at the first batch.
fn walk(
    data: &[u8],
    mut pos: usize,
    offset: u64,
    max_bytes: usize,
    max_offset: u64,
) -> std::result::Result<(usize, usize, u64), (usize, BatchError)> {
    let mut start = pos;
    let mut next = offset;
    let mut taken = 0usize;
    // Base offsets are not covered by the CRC: check that they increase.
    let mut floor = 0u64;
    while pos < data.len() {
        let header = match check_batch(&data[pos..]) {
            Ok(h) if h.base_offset < floor => {
                let e = BatchError::BadField {
                    field: "base_offset",
                    value: h.base_offset as i64,
                };
                if taken == 0 {
                    return Err((pos, e));
                }
                break;
            }
            Ok(h) => h,
            Err(e) if taken == 0 => return Err((pos, e)),
            Err(_) => break,
        };
        floor = header.next_offset();
        if header.next_offset() <= offset {
            pos += header.total_len();
            start = pos;
            continue;
        }
        if header.last_offset() >= max_offset
            || (taken > 0 && taken + header.total_len() > max_bytes)
        {
            break;
        }
        taken += header.total_len();
        pos += header.total_len();
        next = header.next_offset();
    }
    Ok((start, start + taken, next))
}

/// The segment being appended to.
#[derive(Debug)]
pub struct ActiveSegment {
    /// Offset of the first batch (also the file name).
    pub base_offset: u64,
    /// Path of the `.log` file.
    pub log_path: PathBuf,
    /// The `.log` file, shared with syncers and readers (`pread`).
    pub file: Arc<File>,
    /// Its index.
    pub index: ActiveIndex,
    /// Bytes of whole, published batches.
    pub size: u64,
    /// Offset the next appended record gets.
    pub next_offset: u64,
    /// Largest record timestamp in the segment (`i64::MIN` when empty).
    pub max_timestamp_ms: i64,
    /// Wall-clock time (ms) this segment started taking data, for `segment_max_age_ms`.
    /// After a restart it counts from the time of opening.
    pub opened_at_ms: i64,
}

/// What recovery found and repaired when opening an active segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TailRecovery {
    /// Bytes of torn or corrupt tail cut off the `.log` file.
    pub truncated_bytes: u64,
    /// Why the tail was cut.
    pub truncated_reason: Option<String>,
    /// Bytes of the log scanned (from the last trusted index entry onward).
    pub scanned_bytes: u64,
    /// True when the index did not match the log and was rebuilt from scratch.
    pub index_rebuilt: bool,
}

impl ActiveSegment {
    /// Opens (or creates) the segment with `base_offset` as the active one, validating its tail
    /// from the last index entry onward and truncating whatever does not check out.
    pub fn open(
        dir: &Path,
        base_offset: u64,
        index_capacity: usize,
        now_ms: i64,
    ) -> Result<(Self, TailRecovery)> {
        let log_path = segment_path(dir, base_offset, "log");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&log_path)
            .at(&log_path)?;
        let len = file.metadata().at(&log_path)?.len();
        let mut index = ActiveIndex::open(
            &segment_path(dir, base_offset, "index"),
            index_capacity,
            len,
        )?;
        let data = map_file(&file, &log_path)?;
        let mut recovery = TailRecovery::default();

        // Trust the index up to its last entry if that entry points at a valid batch; rescan
        // that batch and everything after it.
        let trusted = index
            .last()
            .filter(|e| entry_matches(&data, base_offset, *e).is_some())
            .map(|_| index.len() - 1);
        let (keep, from, expected_min, running_ts) = match trusted {
            Some(k) => {
                let e = index.entry(k);
                let ts = k
                    .checked_sub(1)
                    .map(|p| index.entry(p).max_timestamp_ms)
                    .unwrap_or(i64::MIN);
                (
                    k,
                    e.position as u64,
                    base_offset + e.relative_offset as u64,
                    ts,
                )
            }
            None => {
                recovery.index_rebuilt = !index.is_empty() || len > 0;
                (0, 0, base_offset, i64::MIN)
            }
        };
        let found = scan(&data, from, base_offset, expected_min, running_ts);
        drop(data);
        recovery.scanned_bytes = len - from;
        index.set_len(keep)?;
        // More batches than the index holds (index_max_bytes was lowered): grow it rather than
        // drop valid data; the segment rolls at the next append.
        index.grow(keep + found.entries.len())?;
        for entry in &found.entries {
            index.push(*entry);
        }
        let (valid_end, next_offset, max_ts) =
            (found.valid_end, found.next_offset, found.max_timestamp_ms);
        if valid_end < len {
            recovery.truncated_bytes = len - valid_end;
            recovery.truncated_reason = found
                .stopped
                .map(|(pos, why)| format!("at byte {pos}: {why}"));
            file.set_len(valid_end).at(&log_path)?;
        }
        // What survived recovery is made durable, and only then indexed on disk.
        file.sync_data().at(&log_path)?;
        index.persist(index.len())?;
        (&file).seek(SeekFrom::Start(valid_end)).at(&log_path)?;
        Ok((
            ActiveSegment {
                base_offset,
                log_path,
                file: Arc::new(file),
                index,
                size: valid_end,
                next_offset,
                max_timestamp_ms: max_ts,
                opened_at_ms: now_ms,
            },
            recovery,
        ))
    }

    /// Finds where a read of `offset` starts: the position of the batch containing it (or the
    /// first batch after it), that batch's base offset according to the index, and the
    /// published end. `None` if the segment is empty.
    pub fn read_range(&self, offset: u64) -> Option<ActiveRange> {
        if self.index.is_empty() {
            return None;
        }
        let relative = offset.saturating_sub(self.base_offset).min(u32::MAX as u64) as u32;
        let k = self.index.floor(relative).unwrap_or(0);
        let entry = self.index.entry(k);
        Some(ActiveRange {
            start: entry.position as u64,
            start_offset: self.base_offset + entry.relative_offset as u64,
            end: self.size,
        })
    }
}

/// Where a read of the active segment starts and ends.
#[derive(Debug, Clone, Copy)]
pub struct ActiveRange {
    /// Byte position of the first batch to look at.
    pub start: u64,
    /// Base offset the index says that batch has.
    pub start_offset: u64,
    /// Published end of the segment.
    pub end: u64,
}

/// Reads exactly `len` bytes at `pos`.
pub fn pread_exact(file: &File, path: &Path, pos: u64, len: usize) -> Result<BytesMut> {
    let mut buf = BytesMut::zeroed(len);
    file.read_exact_at(&mut buf, pos).at(path)?;
    Ok(buf)
}

/// Reads batches from the active segment's file within `range` (published bytes). A file
/// shortened by a concurrent truncation reads as nothing, not as an error.
pub fn read_active(
    file: &File,
    path: &Path,
    range: ActiveRange,
    offset: u64,
    max_bytes: usize,
    max_offset: u64,
) -> Result<SegmentRead> {
    let end = range.end;
    // Find the first batch that ends at or after `offset` by reading headers only.
    let mut pos = range.start;
    let mut expected = range.start_offset;
    let first_len = loop {
        if pos + BATCH_HEADER_LEN as u64 > end {
            return Ok(SegmentRead::Exhausted);
        }
        let mut head = [0u8; BATCH_HEADER_LEN];
        match file.read_exact_at(&mut head, pos) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Ok(SegmentRead::Exhausted);
            }
            Err(e) => return Err(LogError::io(path, e)),
        }
        let header = BatchHeader::parse(&head).map_err(|e| LogError::corruption(path, pos, e))?;
        if pos == range.start && header.base_offset != expected {
            return Ok(SegmentRead::IndexMismatch);
        }
        if header.base_offset < expected {
            return Err(LogError::corruption(
                path,
                pos,
                "batch offsets go backwards",
            ));
        }
        if header.next_offset() > offset {
            break header.total_len();
        }
        expected = header.next_offset();
        pos += header.total_len() as u64;
    };
    let want = (end - pos).min(max_bytes.max(first_len) as u64) as usize;
    let mut buf = BytesMut::zeroed(want);
    let got = read_at_most(file, &mut buf, pos).at(path)?;
    buf.truncate(got);
    match walk(&buf, 0, offset, max_bytes, max_offset) {
        Ok((_, 0, _)) => Ok(SegmentRead::Limit),
        Ok((from, to, next_offset)) => Ok(SegmentRead::Data {
            bytes: buf.freeze().slice(from..to),
            next_offset,
        }),
        // A concurrent truncation can shorten the file under us: that is not corruption.
        Err((_, BatchError::Truncated { .. })) if got < want => Ok(SegmentRead::Exhausted),
        Err((at, e)) => Err(LogError::corruption(path, pos + at as u64, e)),
    }
}

/// `pread` until `buf` is full or end of file; returns bytes read.
fn read_at_most(file: &File, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// An immutable, memory-mapped segment.
#[derive(Debug)]
pub struct SealedSegment {
    /// Offset of the segment's name (its first batch may start later after compaction).
    pub base_offset: u64,
    /// Path of the `.log` file.
    pub log_path: PathBuf,
    /// The mapped `.log` file.
    pub data: Bytes,
    /// The mapped index.
    pub index: SealedIndex,
    /// Bytes covered by valid batches; less than `data.len()` only if the file is corrupt.
    pub valid_len: u64,
    /// Offset after the last batch (`base_offset` if empty).
    pub next_offset: u64,
    /// Largest record timestamp in the segment (`i64::MIN` if empty).
    pub max_timestamp_ms: i64,
}

impl SealedSegment {
    /// Maps a sealed segment. The index is checked in O(1) (its last entry must point at the
    /// last batch, which must end exactly at the end of the file); if that fails the index is
    /// rebuilt from the log and written back.
    /// `rebuild_index` forces the rebuild (after a lookup found a bad entry).
    pub fn load(dir: &Path, base_offset: u64, rebuild_index: bool) -> Result<Self> {
        let log_path = segment_path(dir, base_offset, "log");
        let index_path = segment_path(dir, base_offset, "index");
        let file = File::open(&log_path).at(&log_path)?;
        let data = map_file(&file, &log_path)?;
        let len = data.len() as u64;
        let mut index = SealedIndex::open(&index_path, len)?;
        let last_ok = match index.last() {
            _ if rebuild_index => false,
            None => len == 0,
            Some(e) => entry_matches(&data, base_offset, e)
                .is_some_and(|h| e.position as u64 + h.total_len() as u64 == len),
        };
        let (valid_len, next_offset, max_ts) = if last_ok {
            match index.last() {
                Some(e) => {
                    let h = BatchHeader::parse(&data[e.position as usize..])?;
                    (len, h.next_offset(), e.max_timestamp_ms)
                }
                None => (0, base_offset, i64::MIN),
            }
        } else {
            let found = scan(&data, 0, base_offset, base_offset, i64::MIN);
            if let Some((pos, why)) = &found.stopped {
                tracing::error!(segment = %log_path.display(), position = pos, reason = %why,
                    "sealed segment is corrupt; reads past this point will fail");
            } else {
                tracing::warn!(segment = %log_path.display(), "rebuilt sealed index from its log");
            }
            index = SealedIndex::write(&index_path, &found.entries)?;
            (found.valid_end, found.next_offset, found.max_timestamp_ms)
        };
        Ok(SealedSegment {
            base_offset,
            log_path,
            data,
            index,
            valid_len,
            next_offset,
            max_timestamp_ms: max_ts,
        })
    }

    /// Size of the `.log` file.
    pub fn size(&self) -> u64 {
        self.data.len() as u64
    }

    /// Reads whole batches for `offset` as a zero-copy slice of the mapping.
    pub fn read(&self, offset: u64, max_bytes: usize, max_offset: u64) -> Result<SegmentRead> {
        if self.index.is_empty() || offset >= self.next_offset {
            return self.corrupt_tail_or(SegmentRead::Exhausted);
        }
        let relative = offset.saturating_sub(self.base_offset).min(u32::MAX as u64) as u32;
        let k = self.index.floor(relative).unwrap_or(0);
        let entry = self.index.entry(k);
        let points_at_batch =
            BatchHeader::parse(self.data.get(entry.position as usize..).unwrap_or(&[]))
                .is_ok_and(|h| h.base_offset == self.base_offset + entry.relative_offset as u64);
        if !points_at_batch {
            return Ok(SegmentRead::IndexMismatch);
        }
        let valid = &self.data[..self.valid_len as usize];
        match walk(
            valid,
            entry.position as usize,
            offset,
            max_bytes,
            max_offset,
        ) {
            Ok((from, to, next_offset)) if to > from => Ok(SegmentRead::Data {
                bytes: self.data.slice(from..to),
                next_offset,
            }),
            Ok((from, _, _)) if from >= valid.len() => self.corrupt_tail_or(SegmentRead::Exhausted),
            Ok(_) => Ok(SegmentRead::Limit),
            Err((at, e)) => Err(LogError::corruption(&self.log_path, at as u64, e)),
        }
    }

    /// Past the valid bytes of a corrupt segment there is data we cannot read: say so rather
    /// than silently skipping to the next segment.
    fn corrupt_tail_or(&self, read: SegmentRead) -> Result<SegmentRead> {
        if self.valid_len < self.size() {
            Err(LogError::corruption(
                &self.log_path,
                self.valid_len,
                "batch failed validation when the index was rebuilt",
            ))
        } else {
            Ok(read)
        }
    }
}
