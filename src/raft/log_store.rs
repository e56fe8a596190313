//! openraft's log storage on a [`PartitionLog`]: every entry is one stored batch.
//!
//! The vote and the last purged log id live in `raft.json` next to the segments (written
//! atomically and fsynced). Finding an entry by Raft index uses a small in-memory window of the
//! most recent entries (where replication and apply read) and otherwise a binary search over
//! offsets (each probe reads one batch header): the Raft index stored in a batch grows with its
//! offset.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::fs;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;

use bytes::Bytes;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, OptionalSend, RaftLogReader, RaftTypeConfig, StorageError, StorageIOError,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::codec::{StoredPayload, batch_to_entry, entry_to_batches};
use super::{LogId, Node, NodeId, Vote, log_id};
use crate::log::{BatchHeader, FsyncPolicy, LogError, PartitionLog};

/// File holding the vote and the last purged log id.
pub const RAFT_STATE_FILE: &str = "raft.json";
/// Entries kept in the in-memory window of recent entries.
const WINDOW: usize = 4096;
/// Bytes read per step when reading entries.
const READ_BYTES: usize = 1 << 20;

/// What can go wrong in the Raft log storage (reported to openraft as a storage error).
#[derive(Debug, thiserror::Error)]
pub enum RaftLogError {
    /// The commit log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// `raft.json` could not be read or written.
    #[error("Raft state file {}: {source}", path.display())]
    State {
        /// Its path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// An entry was appended after one with a higher or equal index (a bug: openraft
    /// truncates before it overwrites).
    #[error("entry {got} appended after entry {last:?}: Raft indexes must increase")]
    NotIncreasing {
        /// Index of the entry appended.
        got: u64,
        /// Index of the last entry in the log.
        last: Option<u64>,
    },
}

/// Where an entry is in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    /// Raft index.
    pub index: u64,
    /// Raft term.
    pub term: u64,
    /// Offset of its first record.
    pub base_offset: u64,
    /// Offset after its last record.
    pub next_offset: u64,
}

impl Located {
    fn from_header(h: &BatchHeader) -> Option<Self> {
        Some(Located {
            index: u64::try_from(h.producer_id).ok()?,
            term: u64::try_from(h.partition_leader_epoch).ok()?,
            base_offset: h.base_offset,
            next_offset: h.next_offset(),
        })
    }

    /// Its log id.
    pub fn log_id(&self) -> LogId {
        log_id(self.term, self.index)
    }
}

/// `raft.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct PersistedState {
    /// Term of the vote.
    vote_term: u64,
    /// Candidate voted for.
    voted_for: Option<NodeId>,
    /// Whether the vote is a committed (leader) vote.
    vote_committed: bool,
    /// Whether a vote was ever saved.
    has_vote: bool,
    /// Last purged log id, as (term, index).
    last_purged: Option<(u64, u64)>,
    /// Last committed log id, as (term, index) (only for groups that persist it).
    #[serde(default)]
    committed: Option<(u64, u64)>,
}

/// Recent entries: consecutive Raft indexes, the last one being the log's last entry.
#[derive(Debug, Default)]
struct Window {
    entries: VecDeque<Located>,
    /// The log's last entry (also when the window is empty after a reopen).
    last: Option<Located>,
}

/// Shared state of one replica's Raft log.
#[derive(Debug)]
pub struct LogShared {
    /// The commit log holding the entries.
    log: Arc<PartitionLog>,
    /// `raft.json`.
    state_path: PathBuf,
    /// Its contents.
    persisted: Mutex<PersistedState>,
    /// Recent entries.
    window: Mutex<Window>,
    /// fdatasync thread (under `fsync = always`).
    syncer: Syncer,
    /// When appends are acknowledged to Raft.
    fsync: FsyncPolicy,
    /// Whether the committed log id is persisted (so a restart re-applies without a leader).
    persist_committed: bool,
    /// Whether retention waits for Raft's purges (see [`LogShared::guard_retention`]).
    guarded: std::sync::atomic::AtomicBool,
    /// The commit index Raft last reported (plus one; 0 for none), for metrics and readiness.
    commit_index: std::sync::atomic::AtomicU64,
}

/// openraft's log storage (and log reader) for one replica. Cheap to clone.
pub struct LogStore<C> {
    shared: Arc<LogShared>,
    _types: PhantomData<C>,
}

impl<C> Clone for LogStore<C> {
    fn clone(&self) -> Self {
        LogStore {
            shared: self.shared.clone(),
            _types: PhantomData,
        }
    }
}

fn io_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

impl<C> LogStore<C> {
    /// Opens the Raft log of a replica whose commit log is `log`.
    pub fn open(log: Arc<PartitionLog>, fsync: FsyncPolicy) -> Result<Self, RaftLogError> {
        Self::open_with(log, fsync, false)
    }

    /// [`LogStore::open`], also persisting the committed log id when `persist_committed` (for
    /// the metadata group, whose state machine is rebuilt by re-applying its log on start).
    pub fn open_with(
        log: Arc<PartitionLog>,
        fsync: FsyncPolicy,
        persist_committed: bool,
    ) -> Result<Self, RaftLogError> {
        let state_path = log.dir().join(RAFT_STATE_FILE);
        let persisted = match fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| RaftLogError::State {
                path: state_path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => PersistedState::default(),
            Err(source) => {
                return Err(RaftLogError::State {
                    path: state_path,
                    source,
                });
            }
        };
        let syncer = Syncer::start(log.clone()).map_err(|source| RaftLogError::State {
            path: log.dir().to_path_buf(),
            source,
        })?;
        let shared = Arc::new(LogShared {
            log,
            state_path,
            persisted: Mutex::new(persisted),
            window: Mutex::new(Window::default()),
            syncer,
            fsync,
            persist_committed,
            guarded: std::sync::atomic::AtomicBool::new(false),
            commit_index: std::sync::atomic::AtomicU64::new(0),
        });
        let last = shared.read_last()?;
        shared.window.lock().last = last;
        Ok(LogStore {
            shared,
            _types: PhantomData,
        })
    }

    /// The shared state (for the state machine of the same replica).
    pub fn shared(&self) -> &Arc<LogShared> {
        &self.shared
    }
}

/// Writes the Raft state of a replica restored from a snapshot (before it is opened): a vote
/// at `term` for nobody (the replica campaigns at `term + 1`), `committed` if given, and
/// everything up to `last_purged` purged.
pub fn seed_restored_state(
    dir: &std::path::Path,
    term: u64,
    last_purged: Option<LogId>,
    committed: Option<LogId>,
) -> Result<(), RaftLogError> {
    let state = PersistedState {
        vote_term: term,
        voted_for: None,
        vote_committed: false,
        has_vote: true,
        last_purged: last_purged.map(|l| (l.leader_id.term, l.index)),
        committed: committed.map(|l| (l.leader_id.term, l.index)),
    };
    let path = dir.join(RAFT_STATE_FILE);
    let json = serde_json::to_vec(&state).unwrap_or_default();
    crate::log::write_atomically(&path, &json)
        .map_err(|source| RaftLogError::State { path, source })
}

/// Forgets the log positions in `raft.json` (purge point, committed) but keeps the vote: the
/// replica's log was emptied (see `state_machine::recover_interrupted_install`).
pub fn forget_log_state(dir: &std::path::Path) -> std::io::Result<()> {
    let path = dir.join(RAFT_STATE_FILE);
    let mut state: PersistedState = match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    state.last_purged = None;
    state.committed = None;
    crate::log::write_atomically(&path, &serde_json::to_vec(&state).unwrap_or_default())
}

impl LogShared {
    /// The commit index Raft last reported to this replica (`None` before any).
    pub fn commit_index(&self) -> Option<u64> {
        self.commit_index
            .load(std::sync::atomic::Ordering::Relaxed)
            .checked_sub(1)
    }

    /// The commit log.
    pub fn log(&self) -> &Arc<PartitionLog> {
        &self.log
    }

    /// The last entry in the log.
    pub fn last(&self) -> Option<Located> {
        self.window.lock().last
    }

    /// The first batch at or after `offset` (`None` at the end of the log).
    fn header_at(&self, offset: u64) -> Result<Option<BatchHeader>, LogError> {
        let read = match self.log.read(offset, 1) {
            Ok(read) => read,
            Err(LogError::OffsetOutOfRange { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if read.batches.is_empty() {
            return Ok(None);
        }
        Ok(Some(BatchHeader::parse(&read.batches)?))
    }

    fn read_last(&self) -> Result<Option<Located>, LogError> {
        let (start, end) = (self.log.log_start_offset(), self.log.log_end_offset());
        if end == start {
            return Ok(None);
        }
        let Some(last) = self
            .header_at(end - 1)?
            .as_ref()
            .and_then(Located::from_header)
        else {
            return Ok(None);
        };
        self.search(last.index)
    }

    /// The first entry with a Raft index of at least `index`.
    pub fn lower_bound(&self, index: u64) -> Result<Option<Located>, LogError> {
        {
            let window = self.window.lock();
            match window.last {
                None => return Ok(None),
                Some(last) if last.index < index => return Ok(None),
                _ => {}
            }
            if let Some(first) = window.entries.front()
                && first.index <= index
            {
                return Ok(window.entries.get((index - first.index) as usize).copied());
            }
        }
        self.search(index)
    }

    /// Binary search over offsets for the first batch with a Raft index of at least `index`,
    /// then the end of the entry it starts (an entry may span several batches).
    fn search(&self, index: u64) -> Result<Option<Located>, LogError> {
        let (mut lo, mut hi) = (self.log.log_start_offset(), self.log.log_end_offset());
        let mut found = None;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.header_at(mid)?.as_ref().and_then(Located::from_header) {
                Some(at) if at.index < index => lo = at.next_offset.max(mid + 1),
                Some(at) => {
                    found = Some(at);
                    hi = at.base_offset.min(mid);
                }
                None => hi = mid,
            }
        }
        let Some(first) = found else { return Ok(None) };
        Ok(Some(self.entry_end(first)?))
    }

    /// `first` (the entry's first batch) with `next_offset` moved past the entry's last batch.
    fn entry_end(&self, mut first: Located) -> Result<Located, LogError> {
        let mut offset = first.next_offset;
        loop {
            let Some(h) = self.header_at(offset)? else {
                return Ok(first);
            };
            match Located::from_header(&h) {
                Some(at) if at.index == first.index && h.base_offset >= offset => {
                    first.next_offset = at.next_offset;
                    offset = at.next_offset;
                }
                _ => return Ok(first),
            }
        }
    }

    /// The entry with Raft index `index`, if the log holds it.
    pub fn locate(&self, index: u64) -> Result<Option<Located>, LogError> {
        Ok(self.lower_bound(index)?.filter(|at| at.index == index))
    }

    /// Empties the log and makes it continue at `offset` (installing a snapshot).
    pub fn reset(&self, offset: u64) -> Result<(), LogError> {
        let mut window = self.window.lock();
        self.log.reset(offset)?;
        window.entries.clear();
        window.last = None;
        Ok(())
    }

    /// Replaces the log with downloaded segments (installing a snapshot from the store).
    /// Everything up to `last` (the snapshot's last entry) counts as purged from then on, so
    /// a restart never looks for entries below the new log start.
    pub fn install(
        &self,
        segments: &[(u64, PathBuf)],
        log_start: u64,
        next_offset: u64,
        last: LogId,
    ) -> Result<(), LogError> {
        let mut window = self.window.lock();
        self.log
            .install_segments(segments, log_start, next_offset)?;
        window.entries.clear();
        drop(window);
        let read = self.read_last()?;
        self.window.lock().last = read;
        let mut state = self.persisted.lock().clone();
        if state
            .last_purged
            .is_none_or(|(_, index)| index < last.index)
        {
            state.last_purged = Some((last.leader_id.term, last.index));
            self.save_state(&state)
                .map_err(|e| LogError::io(self.log.dir(), std::io::Error::other(e)))?;
            *self.persisted.lock() = state;
        }
        self.update_retention_floor()
    }

    /// Keeps retention behind what Raft has purged (which, with a snapshot store, is behind
    /// what the store holds): from now on retention deletes only entries covered by a snapshot.
    pub fn guard_retention(&self) -> Result<(), LogError> {
        self.guarded
            .store(true, std::sync::atomic::Ordering::Release);
        self.update_retention_floor()
    }

    fn update_retention_floor(&self) -> Result<(), LogError> {
        if !self.guarded.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        let floor = match self.last_purged() {
            None => self.log.log_start_offset(),
            Some(purged) => match self.lower_bound(purged.index + 1)? {
                Some(next) => next.base_offset,
                None => self.log.log_end_offset(),
            },
        };
        self.log.set_retention_floor(floor);
        Ok(())
    }

    fn save_state(&self, state: &PersistedState) -> Result<(), RaftLogError> {
        let json = serde_json::to_vec(state).unwrap_or_default();
        crate::log::write_atomically(&self.state_path, &json).map_err(|source| {
            RaftLogError::State {
                path: self.state_path.clone(),
                source,
            }
        })
    }

    fn last_purged(&self) -> Option<LogId> {
        self.persisted
            .lock()
            .last_purged
            .map(|(term, index)| log_id(term, index))
    }

    /// Reads the entries with Raft indexes in `[from, to)`, at most `limit` of them, as
    /// `(location, batch bytes)`.
    pub fn read_batches(
        &self,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<(Located, Bytes)>, LogError> {
        let mut out = Vec::new();
        if from >= to {
            return Ok(out);
        }
        let Some(start) = self.lower_bound(from)? else {
            return Ok(out);
        };
        let mut offset = start.base_offset;
        // Batches of the entry being gathered (an entry may span several batches and reads).
        let mut current: Option<(Located, Vec<Bytes>)> = None;
        'reading: loop {
            let read = match self.log.read(offset, READ_BYTES) {
                Ok(read) => read,
                Err(LogError::OffsetOutOfRange { .. }) => break,
                Err(e) => return Err(e),
            };
            if read.batches.is_empty() {
                break;
            }
            let mut buf = read.batches;
            while !buf.is_empty() {
                let header = BatchHeader::parse(&buf)?;
                let bytes = buf.split_to(header.total_len().min(buf.len()));
                offset = header.next_offset();
                let Some(at) = Located::from_header(&header) else {
                    continue;
                };
                match &mut current {
                    Some((entry, parts)) if entry.index == at.index => {
                        entry.next_offset = at.next_offset;
                        parts.push(bytes);
                        continue;
                    }
                    _ => {}
                }
                if let Some(done) = current.take() {
                    out.push(join_entry(done));
                }
                if at.index >= to || out.len() >= limit {
                    break 'reading;
                }
                if at.index >= from {
                    current = Some((at, vec![bytes]));
                }
            }
        }
        if let Some(done) = current.take()
            && out.len() < limit
        {
            out.push(join_entry(done));
        }
        Ok(out)
    }
}

/// One entry's batches as one buffer (copied only when there are several).
fn join_entry((at, parts): (Located, Vec<Bytes>)) -> (Located, Bytes) {
    if parts.len() == 1 {
        return (at, parts.into_iter().next().unwrap_or_default());
    }
    let mut out = bytes::BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
    for p in parts {
        out.extend_from_slice(&p);
    }
    (at, out.freeze())
}

fn range_of(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let from = match range.start_bound() {
        Bound::Included(v) => *v,
        Bound::Excluded(v) => v.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(v) => v.saturating_add(1),
        Bound::Excluded(v) => *v,
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

impl<C> LogStore<C>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = Node, Entry = openraft::Entry<C>>,
    C::D: StoredPayload,
{
    fn entries(
        &self,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<C::Entry>, StorageError<NodeId>> {
        // Purged entries stay readable for consumers until retention deletes them, but
        // openraft never gets them back.
        let from = match self.shared.last_purged() {
            Some(purged) => from.max(purged.index + 1),
            None => from,
        };
        if from >= to {
            return Ok(Vec::new());
        }
        let batches = self
            .shared
            .read_batches(from, to, limit)
            .map_err(read_err)?;
        batches
            .into_iter()
            .map(|(_, bytes)| batch_to_entry::<C>(bytes).map_err(read_err))
            .collect()
    }

    /// Appends `entries`; on failure also returns the entries not written (a failed append
    /// writes nothing of its group).
    fn append_now(&self, entries: Vec<C::Entry>) -> Result<(), (RaftLogError, Vec<C::Entry>)> {
        let mut entries = entries;
        match self.append_groups(&entries) {
            Ok(()) => Ok(()),
            Err(e) => {
                let last = self.shared.last().map(|l| l.index);
                entries.retain(|en| last.is_none_or(|l| en.log_id.index > l));
                Err((e, entries))
            }
        }
    }

    fn append_groups(&self, entries: &[C::Entry]) -> Result<(), RaftLogError> {
        let mut expected = self.shared.last().map(|l| l.index + 1);
        let mut i = 0;
        while i < entries.len() {
            let term = entries[i].log_id.leader_id.term;
            let mut batches = Vec::new();
            // (Raft index, batches of the entry), in order.
            let mut shape: Vec<(u64, usize)> = Vec::new();
            let mut j = i;
            while j < entries.len() && entries[j].log_id.leader_id.term == term {
                let index = entries[j].log_id.index;
                // openraft appends consecutive entries; the log only needs them increasing (the
                // binary search relies on it), and openraft's own test suite appends with gaps.
                if expected.is_some_and(|e| index < e) {
                    return Err(RaftLogError::NotIncreasing {
                        got: index,
                        last: expected.map(|e| e - 1),
                    });
                }
                expected = Some(index + 1);
                let entry_batches = entry_to_batches(&entries[j])?;
                shape.push((index, entry_batches.len()));
                batches.extend(entry_batches);
                j += 1;
            }
            self.shared.log.append(&mut batches, term as i32)?;
            let mut window = self.shared.window.lock();
            let mut k = 0;
            for (index, n) in shape {
                let (first, last) = (batches[k].header(), batches[k + n - 1].header());
                k += n;
                let at = Located {
                    index,
                    term,
                    base_offset: first.base_offset,
                    next_offset: last.next_offset(),
                };
                if window
                    .entries
                    .back()
                    .is_some_and(|b| b.index + 1 != at.index)
                {
                    window.entries.clear();
                }
                window.entries.push_back(at);
                window.last = Some(at);
            }
            while window.entries.len() > WINDOW {
                window.entries.pop_front();
            }
            drop(window);
            i = j;
        }
        Ok(())
    }
}

impl<C> RaftLogReader<C> for LogStore<C>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = Node, Entry = openraft::Entry<C>>,
    C::D: StoredPayload,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<C::Entry>, StorageError<NodeId>> {
        let (from, to) = range_of(&range);
        self.entries(from, to, usize::MAX)
    }
}

impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig<NodeId = NodeId, Node = Node, Entry = openraft::Entry<C>>,
    C::D: StoredPayload,
{
    type LogReader = LogStore<C>;

    async fn get_log_state(&mut self) -> Result<LogState<C>, StorageError<NodeId>> {
        let last_purged_log_id = self.shared.last_purged();
        let last_log_id = std::cmp::max(self.shared.last().map(|l| l.log_id()), last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError<NodeId>> {
        let mut state = self.shared.persisted.lock().clone();
        state.vote_term = vote.leader_id.term;
        state.voted_for = vote.leader_id.voted_for;
        state.vote_committed = vote.committed;
        state.has_vote = true;
        self.shared
            .save_state(&state)
            .map_err(|e| StorageError::from(StorageIOError::write_vote(AnyError::new(&e))))?;
        *self.shared.persisted.lock() = state;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError<NodeId>> {
        let state = self.shared.persisted.lock();
        if !state.has_vote {
            return Ok(None);
        }
        let mut vote = match state.voted_for {
            Some(node) => Vote::new(state.vote_term, node),
            None => Vote {
                leader_id: openraft::LeaderId {
                    term: state.vote_term,
                    voted_for: None,
                },
                committed: false,
            },
        };
        vote.committed = state.vote_committed;
        Ok(Some(vote))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId>,
    ) -> Result<(), StorageError<NodeId>> {
        self.shared.commit_index.store(
            committed.map_or(0, |l| l.index + 1),
            std::sync::atomic::Ordering::Relaxed,
        );
        if !self.shared.persist_committed {
            return Ok(());
        }
        let mut state = self.shared.persisted.lock().clone();
        state.committed = committed.map(|l| (l.leader_id.term, l.index));
        self.shared.save_state(&state).map_err(io_err)?;
        *self.shared.persisted.lock() = state;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError<NodeId>> {
        Ok(self
            .shared
            .persisted
            .lock()
            .committed
            .map(|(term, index)| log_id(term, index)))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<C>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<C::Entry> = entries.into_iter().collect();
        if entries.is_empty() {
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        // A full disk is not fatal: the entries are retried (skipping those already written)
        // until space returns or the log closes. Producers are refused up front meanwhile (see
        // `broker::Partition::submit`), so only a request racing that check waits here.
        let mut entries = entries;
        loop {
            match self.append_now(std::mem::take(&mut entries)) {
                Ok(()) => break,
                Err((RaftLogError::Log(e), rest)) if e.is_disk_full() => {
                    tracing::warn!(dir = %self.shared.log.dir().display(),
                        "disk full: Raft append waits for space");
                    entries = rest;
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                Err((e, _)) => return Err(io_err(e)),
            }
        }
        match self.shared.fsync {
            FsyncPolicy::Always => self
                .shared
                .syncer
                .request(Box::new(move |result| callback.log_io_completed(result))),
            FsyncPolicy::Interval { .. } | FsyncPolicy::Never => callback.log_io_completed(Ok(())),
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        let Some(at) = self.shared.lower_bound(log_id.index).map_err(io_err)? else {
            return Ok(());
        };
        self.shared
            .log
            .truncate_from(at.base_offset)
            .map_err(io_err)?;
        let mut window = self.shared.window.lock();
        while window
            .entries
            .back()
            .is_some_and(|b| b.index >= log_id.index)
        {
            window.entries.pop_back();
        }
        window.last = match window.entries.back() {
            Some(last) => Some(*last),
            None => {
                drop(window);
                let last = self.shared.read_last().map_err(io_err)?;
                window = self.shared.window.lock();
                last
            }
        };
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        let mut state = self.shared.persisted.lock().clone();
        if state
            .last_purged
            .is_some_and(|(_, index)| index >= log_id.index)
        {
            return Ok(());
        }
        state.last_purged = Some((log_id.leader_id.term, log_id.index));
        self.shared.save_state(&state).map_err(io_err)?;
        *self.shared.persisted.lock() = state;
        // Purged beyond the last entry: nothing here is of use; offsets continue at the end.
        if self
            .shared
            .last()
            .is_none_or(|last| last.index < log_id.index)
        {
            let end = self.shared.log.log_end_offset();
            self.shared.reset(end).map_err(io_err)?;
            self.shared.update_retention_floor().map_err(io_err)?;
            return Ok(());
        }
        // Purging is logical: consumers still read these records until retention deletes them
        // (which, once guarded, it may now do up to here).
        let mut window = self.shared.window.lock();
        while window
            .entries
            .front()
            .is_some_and(|f| f.index <= log_id.index)
        {
            window.entries.pop_front();
        }
        drop(window);
        self.shared.update_retention_floor().map_err(io_err)?;
        Ok(())
    }
}

/// A flush callback.
type SyncRequest = Box<dyn FnOnce(Result<(), std::io::Error>) + Send>;

/// Group commit for Raft appends: a thread that runs one fdatasync for every append queued
/// while the previous one ran, then completes their flush callbacks.
#[derive(Debug)]
struct Syncer {
    queue: Mutex<Option<std_mpsc::Sender<SyncRequest>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Syncer {
    fn start(log: Arc<PartitionLog>) -> std::io::Result<Self> {
        let (tx, rx) = std_mpsc::channel::<SyncRequest>();
        let thread = std::thread::Builder::new()
            .name("logbook-raft-sync".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut group = vec![first];
                    group.extend(rx.try_iter());
                    let result = log.sync().map(|_| ());
                    for done in group {
                        done(
                            result
                                .as_ref()
                                .map(|_| ())
                                .map_err(|e| std::io::Error::other(e.to_string())),
                        );
                    }
                }
            })?;
        Ok(Syncer {
            queue: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    fn request(&self, done: SyncRequest) {
        let queue = self.queue.lock();
        match queue.as_ref() {
            Some(tx) => {
                if let Err(std_mpsc::SendError(done)) = tx.send(done) {
                    done(Err(std::io::Error::other("the log is closed")));
                }
            }
            None => done(Err(std::io::Error::other("the log is closed"))),
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.queue.lock().take();
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}
