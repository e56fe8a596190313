//! The per-segment offset index: a memory-mapped file of fixed-width entries, one per batch.
//!
//! ```text
//! entry (16 bytes, big-endian):
//!   0  u32  relative_offset   batch base offset - segment base offset
//!   4  u32  position          byte position of the batch in the segment's .log file
//!   8  i64  max_timestamp_ms  largest record timestamp in this segment up to and including the batch
//! ```
//!
//! The active segment's index is preallocated to `index_max_bytes` (zero-filled) and trimmed to
//! its entries when the segment seals or the log closes cleanly. The number of entries in a
//! zero-padded file is found by binary search: entry 0 is always `(0, 0)` and every later entry has
//! a position > 0. The index is derived data: whenever it disagrees with the log it is rebuilt.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use memmap2::{Mmap, MmapMut, MmapOptions};
use parking_lot::Mutex;
use std::os::unix::fs::FileExt;

use super::error::{IoContext, Result};

/// Size of one index entry in bytes.
pub const INDEX_ENTRY_LEN: usize = 16;

/// One index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Batch base offset minus the segment's base offset.
    pub relative_offset: u32,
    /// Position of the batch in the `.log` file.
    pub position: u32,
    /// Running maximum of record timestamps in the segment, up to this batch.
    pub max_timestamp_ms: i64,
}

impl IndexEntry {
    /// Serialises the entry.
    pub fn encode(&self) -> [u8; INDEX_ENTRY_LEN] {
        let mut out = [0u8; INDEX_ENTRY_LEN];
        out[0..4].copy_from_slice(&self.relative_offset.to_be_bytes());
        out[4..8].copy_from_slice(&self.position.to_be_bytes());
        out[8..16].copy_from_slice(&self.max_timestamp_ms.to_be_bytes());
        out
    }

    /// Reads entry `i` of `buf`. Panics if `buf` is too short: callers bound `i` by the entry count.
    pub fn decode(buf: &[u8], i: usize) -> Self {
        let at = i * INDEX_ENTRY_LEN;
        let e = &buf[at..at + INDEX_ENTRY_LEN];
        IndexEntry {
            relative_offset: u32::from_be_bytes([e[0], e[1], e[2], e[3]]),
            position: u32::from_be_bytes([e[4], e[5], e[6], e[7]]),
            max_timestamp_ms: i64::from_be_bytes([
                e[8], e[9], e[10], e[11], e[12], e[13], e[14], e[15],
            ]),
        }
    }
}

/// Number of entries in a possibly zero-padded index buffer whose log file is `log_len` bytes.
/// Assumes the layout invariants; the caller validates the result against the log.
pub fn detect_entries(buf: &[u8], log_len: u64) -> usize {
    let slots = buf.len() / INDEX_ENTRY_LEN;
    if log_len == 0 || slots == 0 {
        return 0;
    }
    // First slot i >= 1 whose position is 0 (zero padding); positions are increasing before it.
    let (mut lo, mut hi) = (1usize, slots);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if IndexEntry::decode(buf, mid).position == 0 {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// Index of the last entry among the first `len` whose relative offset is `<= relative`.
pub fn floor_entry(buf: &[u8], len: usize, relative: u32) -> Option<usize> {
    // partition_point over entries: count of entries with relative_offset <= relative.
    let (mut lo, mut hi) = (0usize, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if IndexEntry::decode(buf, mid).relative_offset <= relative {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo.checked_sub(1)
}

/// Extends `file` to `len` bytes with blocks allocated (posix_fallocate).
fn allocate(file: &File, len: u64) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(len).map_err(std::io::Error::other)?;
    // SAFETY: plain syscall on a file descriptor we own; no memory is passed.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(rc))
    }
}

/// The writable index of the active segment.
///
/// The mapping is private (copy-on-write): entries are written to memory on append and reach the
/// file only through [`ActiveIndex::persist`], which the log calls after the fdatasync that made
/// the batches they point at durable. So the index on disk never points past durable log data,
/// and recovery can trust it up to its last entry even after a power loss that kept some pages
/// and lost others.
#[derive(Debug)]
pub struct ActiveIndex {
    /// Path of the `.index` file.
    path: PathBuf,
    /// The open file, written with `pwrite`.
    file: File,
    /// The private mapping, `capacity * INDEX_ENTRY_LEN` bytes.
    mmap: MmapMut,
    /// Valid entries (in the mapping).
    len: usize,
    /// Entries that fit.
    capacity: usize,
    /// Entries `[0, persisted)` are in the file exactly as in the mapping.
    persisted: Mutex<usize>,
}

impl ActiveIndex {
    /// Opens (or creates) the index at `path` for a log of `log_len` bytes, growing the file to
    /// `capacity` entries. The detected entries are not trusted yet: the caller validates them
    /// against the log and fixes the count with [`ActiveIndex::set_len`].
    pub fn open(path: &Path, capacity: usize, log_len: u64) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .at(path)?;
        let current = file.metadata().at(path)?.len();
        let capacity = capacity.max(current as usize / INDEX_ENTRY_LEN);
        let mut index = ActiveIndex {
            path: path.to_path_buf(),
            mmap: Self::map(&file, path, current, capacity)?,
            file,
            len: 0,
            capacity,
            persisted: Mutex::new(0),
        };
        index.len = detect_entries(&index.mmap, log_len);
        *index.persisted.get_mut() = index.len;
        Ok(index)
    }

    /// Sizes the file to `capacity` entries and maps it privately.
    fn map(file: &File, path: &Path, current: u64, capacity: usize) -> Result<MmapMut> {
        let bytes = (capacity * INDEX_ENTRY_LEN) as u64;
        if current < bytes {
            // Reserve real blocks, so that a full disk shows up here as an error rather than
            // later, as a failed index write.
            allocate(file, bytes).at(path)?;
        } else if current > bytes {
            file.set_len(bytes).at(path)?;
        }
        // SAFETY: a private mapping of our own file; the file is only shrunk (trim) once the
        // segment no longer writes to this mapping, and reads stay below the entry count.
        unsafe { MmapOptions::new().map_copy(file) }.at(path)
    }

    /// Makes room for `capacity` entries (keeps the current entries; call before pushing more
    /// than the configured capacity, e.g. after `index_max_bytes` was lowered).
    pub fn grow(&mut self, capacity: usize) -> Result<()> {
        if capacity <= self.capacity {
            return Ok(());
        }
        self.persist(self.len)?;
        let current = self.file.metadata().at(&self.path)?.len();
        self.mmap = Self::map(&self.file, &self.path, current, capacity)?;
        self.capacity = capacity;
        Ok(())
    }

    /// The raw mapped bytes (all slots).
    pub fn raw(&self) -> &[u8] {
        &self.mmap
    }

    /// Valid entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entries that fit.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// True when no further entry fits.
    pub fn is_full(&self) -> bool {
        self.len >= self.capacity
    }

    /// Entry `i` (must be `< len`).
    pub fn entry(&self, i: usize) -> IndexEntry {
        IndexEntry::decode(&self.mmap, i)
    }

    /// The last entry.
    pub fn last(&self) -> Option<IndexEntry> {
        self.len.checked_sub(1).map(|i| self.entry(i))
    }

    /// Appends an entry (in memory); returns false if the index is full.
    pub fn push(&mut self, entry: IndexEntry) -> bool {
        if self.is_full() {
            return false;
        }
        let at = self.len * INDEX_ENTRY_LEN;
        self.mmap[at..at + INDEX_ENTRY_LEN].copy_from_slice(&entry.encode());
        self.len += 1;
        true
    }

    /// Sets the number of valid entries, zeroing the dropped ones in memory and, where they had
    /// been persisted, in the file (so that a stale entry never outlives a truncation).
    pub fn set_len(&mut self, len: usize) -> Result<()> {
        let len = len.min(self.capacity);
        let from = len * INDEX_ENTRY_LEN;
        let to = self.len.max(len) * INDEX_ENTRY_LEN;
        self.mmap[from..to].fill(0);
        self.len = len;
        let persisted = self.persisted.get_mut();
        if len < *persisted {
            let zeros = vec![0u8; (*persisted - len) * INDEX_ENTRY_LEN];
            self.file.write_all_at(&zeros, from as u64).at(&self.path)?;
            *persisted = len;
        }
        Ok(())
    }

    /// Writes entries `[persisted, up_to)` to the file. Call only once the batches they point
    /// at are durable.
    pub fn persist(&self, up_to: usize) -> Result<()> {
        let mut persisted = self.persisted.lock();
        let up_to = up_to.min(self.len);
        if up_to > *persisted {
            let (from, to) = (*persisted * INDEX_ENTRY_LEN, up_to * INDEX_ENTRY_LEN);
            self.file
                .write_all_at(&self.mmap[from..to], from as u64)
                .at(&self.path)?;
            *persisted = up_to;
        }
        Ok(())
    }

    /// Index of the last entry with relative offset `<= relative`.
    pub fn floor(&self, relative: u32) -> Option<usize> {
        floor_entry(&self.mmap, self.len, relative)
    }

    /// Persists every entry, trims the file to them and fsyncs it: the index of a sealed
    /// segment, or of the active one on clean close. Call only once the log is durable.
    pub fn trim_and_sync(&self) -> Result<()> {
        self.persist(self.len)?;
        self.file
            .set_len((self.len * INDEX_ENTRY_LEN) as u64)
            .at(&self.path)?;
        self.file.sync_all().at(&self.path)
    }
}

/// The read-only index of a sealed segment.
#[derive(Debug)]
pub struct SealedIndex {
    /// The mapping (`None` for an empty file, which cannot be mapped).
    mmap: Option<Mmap>,
    /// Valid entries.
    len: usize,
}

impl SealedIndex {
    /// Maps the index at `path` for a log file of `log_len` bytes. A missing file gives an
    /// empty index, which the caller's validation then rejects and rebuilds.
    pub fn open(path: &Path, log_len: u64) -> Result<Self> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(SealedIndex { mmap: None, len: 0 });
            }
            Err(e) => return Err(super::LogError::io(path, e)),
        };
        let size = file.metadata().at(path)?.len();
        if size < INDEX_ENTRY_LEN as u64 {
            return Ok(SealedIndex { mmap: None, len: 0 });
        }
        // SAFETY: sealed index files are never modified in place; a rebuild writes a new file
        // and renames it over this one, which leaves this mapping on the old inode.
        let mmap = unsafe { Mmap::map(&file) }.at(path)?;
        let len = detect_entries(&mmap, log_len);
        Ok(SealedIndex {
            mmap: Some(mmap),
            len,
        })
    }

    /// Writes `entries` as the index at `path` (temp file, fsync, rename) and maps it.
    pub fn write(path: &Path, entries: &[IndexEntry]) -> Result<Self> {
        let tmp = path.with_extension("index.tmp");
        {
            let mut file = File::create(&tmp).at(&tmp)?;
            let mut buf = Vec::with_capacity(entries.len() * INDEX_ENTRY_LEN);
            for e in entries {
                buf.extend_from_slice(&e.encode());
            }
            file.write_all(&buf).at(&tmp)?;
            file.sync_all().at(&tmp)?;
        }
        std::fs::rename(&tmp, path).at(path)?;
        let file = File::open(path).at(path)?;
        let mmap = if entries.is_empty() {
            None
        } else {
            // SAFETY: as in `open`: the file is replaced, never modified in place.
            Some(unsafe { Mmap::map(&file) }.at(path)?)
        };
        Ok(SealedIndex {
            mmap,
            len: entries.len(),
        })
    }

    /// Valid entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entry `i` (must be `< len`).
    pub fn entry(&self, i: usize) -> IndexEntry {
        IndexEntry::decode(self.mmap.as_deref().unwrap_or(&[]), i)
    }

    /// The last entry.
    pub fn last(&self) -> Option<IndexEntry> {
        self.len.checked_sub(1).map(|i| self.entry(i))
    }

    /// Index of the last entry with relative offset `<= relative`.
    pub fn floor(&self, relative: u32) -> Option<usize> {
        floor_entry(self.mmap.as_deref().unwrap_or(&[]), self.len, relative)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(rel: u32, pos: u32) -> IndexEntry {
        IndexEntry {
            relative_offset: rel,
            position: pos,
            max_timestamp_ms: 0,
        }
    }

    #[test]
    fn detects_entries_in_zero_padded_buffer() {
        let mut buf = vec![0u8; 10 * INDEX_ENTRY_LEN];
        for (i, e) in [entry(0, 0), entry(3, 100), entry(9, 250)]
            .iter()
            .enumerate()
        {
            buf[i * INDEX_ENTRY_LEN..(i + 1) * INDEX_ENTRY_LEN].copy_from_slice(&e.encode());
        }
        assert_eq!(detect_entries(&buf, 300), 3);
        assert_eq!(detect_entries(&buf, 0), 0);
        assert_eq!(detect_entries(&buf[..INDEX_ENTRY_LEN], 300), 1);
        assert_eq!(floor_entry(&buf, 3, 0), Some(0));
        assert_eq!(floor_entry(&buf, 3, 8), Some(1));
        assert_eq!(floor_entry(&buf, 3, 9), Some(2));
        assert_eq!(floor_entry(&buf, 3, 1000), Some(2));
        assert_eq!(floor_entry(&buf, 0, 5), None);
    }

    #[test]
    fn active_index_set_len_zeroes_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut idx = ActiveIndex::open(&path, 8, 0).unwrap();
        for i in 0..5u32 {
            assert!(idx.push(entry(i, i * 10)));
        }
        idx.set_len(2).unwrap();
        assert_eq!(detect_entries(idx.raw(), 100), 2);
        // Nothing reaches the file before `persist`.
        let on_disk = std::fs::read(&path).unwrap();
        assert!(on_disk.iter().all(|b| *b == 0));
        idx.persist(2).unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(detect_entries(&on_disk, 100), 2);
        assert_eq!(&on_disk[16..32], &entry(1, 10).encode());
        idx.trim_and_sync().unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            2 * INDEX_ENTRY_LEN as u64
        );
        let sealed = SealedIndex::open(&path, 100).unwrap();
        assert_eq!(sealed.len(), 2);
        assert_eq!(sealed.last(), Some(entry(1, 10)));
    }
}
