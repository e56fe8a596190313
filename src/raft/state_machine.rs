//! The state machine of a partition: applying an entry only advances the commit watermark.
//!
//! The log is the state: what is applied is what consumers may read (below the high
//! watermark, the offset after the last applied entry). The last applied log id and membership
//! are checkpointed to `applied.json` at most once per [`CHECKPOINT_EVERY`] and on close; after
//! a restart openraft re-applies from the checkpoint, which only moves the watermark again.
//!
//! A snapshot is a manifest of the snapshot store ([`crate::snapshot::Manifest`]): the last log
//! id and membership it stands for and the store objects holding the log up to there. The
//! partition's snapshot task (`broker::snapshots`) uploads segments and writes manifests, then
//! hands the manifest here through the [`StoreLink`] and asks openraft to build a snapshot:
//! building does no I/O with the store, so a store outage cannot fail the Raft group. Installing
//! a snapshot this replica's log does not hold downloads the objects (in parallel, verified,
//! resumable) and replaces the log with them. The current snapshot is kept in `snapshot.json`.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, EntryPayload, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::log_store::LogShared;
use super::{Appended, LogId, Membership, Node, NodeId, PartitionRaft, StoredMembership, log_id};
use crate::log::BatchHeader;

/// Checkpoint file of the applied state.
pub const APPLIED_FILE: &str = "applied.json";
/// Longest time between checkpoints while entries are applied.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// The snapshot data of a partition group: a snapshot store manifest.
pub type PartitionSnapshot = crate::snapshot::Manifest;

/// Present while a snapshot install replaces a replica's log.
pub const INSTALL_MARKER: &str = "installing";
/// How long an install keeps retrying a failing store before it gives up (which stops the group).
const INSTALL_RETRY_FOR: Duration = Duration::from_secs(600);

/// Finishes what a crash during a snapshot install left (before the replica is opened): the log
/// may be half replaced, so the replica is emptied (its vote is kept) and gets the snapshot again
/// from the leader. Returns whether there was anything to do.
pub fn recover_interrupted_install(dir: &std::path::Path) -> std::io::Result<bool> {
    if !dir.join(INSTALL_MARKER).exists() {
        return Ok(false);
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let keep = name == super::log_store::RAFT_STATE_FILE
            || name == RESTORE_DIR
            || name == INSTALL_MARKER;
        if !keep && entry.file_type()?.is_file() {
            fs::remove_file(entry.path())?;
        }
    }
    super::log_store::forget_log_state(dir)?;
    fs::remove_file(dir.join(INSTALL_MARKER))?;
    crate::log::segment::sync_dir(dir).map_err(std::io::Error::other)?;
    tracing::warn!(dir = %dir.display(),
        "a snapshot install was interrupted; the replica starts empty and gets it again");
    Ok(true)
}

/// Where snapshot downloads are staged inside the partition directory (kept across attempts).
pub const RESTORE_DIR: &str = "restore";

/// The current snapshot (`snapshot.json`).
pub const SNAPSHOT_FILE: &str = "snapshot.json";

/// How a replica reaches the snapshot store.
#[derive(Debug)]
pub struct StoreLink {
    /// The store.
    pub store: Arc<dyn crate::snapshot::SnapshotStore>,
    /// The manifest the snapshot task wrote for the next snapshot openraft builds.
    pub ready: Mutex<Option<PartitionSnapshot>>,
}

/// `snapshot.json`: the current snapshot's meta and manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SavedSnapshot {
    snapshot_id: String,
    manifest: PartitionSnapshot,
}

/// `applied.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Checkpoint {
    /// Last applied log id as (term, index).
    last_applied: Option<(u64, u64)>,
    /// Log id of the last applied membership, as (term, index).
    membership_log_id: Option<(u64, u64)>,
    /// Voter sets of the last applied membership.
    configs: Vec<std::collections::BTreeSet<NodeId>>,
    /// Nodes of the last applied membership (id, address).
    nodes: Vec<(NodeId, String)>,
}

/// Applied state of one replica.
#[derive(Debug)]
struct Applied {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    last_checkpoint: Instant,
    snapshot: Option<(SnapshotMeta<NodeId, Node>, PartitionSnapshot)>,
    snapshots_built: u64,
}

/// The state machine of one partition replica. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PartitionStateMachine {
    shared: Arc<LogShared>,
    applied: Arc<Mutex<Applied>>,
    checkpoint_path: PathBuf,
    /// The high watermark (`None` once closed: watchers then see the channel end).
    high_watermark: Arc<Mutex<Option<watch::Sender<u64>>>>,
    /// Its last value (still readable after close).
    last_high_watermark: Arc<std::sync::atomic::AtomicU64>,
    /// The snapshot store, if one is configured.
    link: Option<Arc<StoreLink>>,
    /// Serialises writes of `applied.json` and `snapshot.json`; holds the last log id saved in
    /// `snapshot.json`.
    files: Arc<Mutex<Option<LogId>>>,
}

fn sm_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(AnyError::new(&e)).into()
}

impl PartitionStateMachine {
    /// The commit index Raft last reported to this replica.
    pub fn commit_index(&self) -> Option<u64> {
        self.shared.commit_index()
    }

    /// Opens the state machine of the replica whose Raft log is `shared`.
    pub fn open(shared: Arc<LogShared>) -> std::io::Result<Self> {
        let checkpoint_path = shared.log().dir().join(APPLIED_FILE);
        let checkpoint: Checkpoint = match fs::read(&checkpoint_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Checkpoint::default(),
            Err(e) => return Err(e),
        };
        let mut last_applied = checkpoint.last_applied.map(|(t, i)| log_id(t, i));
        // The checkpoint may name an entry a crash cut from the log (written, never synced,
        // yet applied under fsync = never): then nothing is known to be applied.
        let mut high_watermark = shared.log().log_start_offset();
        if let Some(applied) = last_applied {
            match shared
                .locate(applied.index)
                .map_err(std::io::Error::other)?
            {
                Some(at) if at.term == applied.leader_id.term => high_watermark = at.next_offset,
                _ if shared.last().is_none() => {}
                _ => last_applied = None,
            }
        }
        let membership = StoredMembership::new(
            checkpoint.membership_log_id.map(|(t, i)| log_id(t, i)),
            Membership::new(
                checkpoint.configs,
                checkpoint
                    .nodes
                    .into_iter()
                    .map(|(id, addr)| (id, Node { addr }))
                    .collect::<std::collections::BTreeMap<_, _>>(),
            ),
        );
        let machine = PartitionStateMachine {
            shared,
            applied: Arc::new(Mutex::new(Applied {
                last_applied,
                membership,
                last_checkpoint: Instant::now(),
                snapshot: None,
                snapshots_built: 0,
            })),
            checkpoint_path,
            high_watermark: Arc::new(Mutex::new(Some(watch::channel(high_watermark).0))),
            last_high_watermark: Arc::new(std::sync::atomic::AtomicU64::new(high_watermark)),
            link: None,
            files: Arc::new(Mutex::new(None)),
        };
        if let Some(saved) = machine.load_snapshot()? {
            // A snapshot is saved only after the applied state covering it was checkpointed;
            // one ahead of the checkpoint (a lost log tail) is not used.
            let applied = machine.applied.lock().last_applied;
            if saved.0.last_log_id <= applied {
                *machine.files.lock() = saved.0.last_log_id;
                machine.applied.lock().snapshot = Some(saved);
            } else {
                tracing::warn!(dir = %machine.shared.log().dir().display(),
                    snapshot = %saved.0.snapshot_id, "snapshot ahead of the applied state; ignored");
            }
        }
        Ok(machine)
    }

    /// Connects the replica to a snapshot store.
    pub fn with_store(mut self, link: Arc<StoreLink>) -> Self {
        self.link = Some(link);
        self
    }

    /// The snapshot store link, if any.
    pub fn store_link(&self) -> Option<&Arc<StoreLink>> {
        self.link.as_ref()
    }

    /// The last applied log id and the membership in force there (a consistent pair).
    pub fn applied(&self) -> (Option<LogId>, StoredMembership) {
        let applied = self.applied.lock();
        (applied.last_applied, applied.membership.clone())
    }

    /// The offset after entry `id` if this replica's log holds it (same index and term).
    pub fn entry_end(&self, id: LogId) -> Result<Option<u64>, crate::log::LogError> {
        Ok(self
            .shared
            .locate(id.index)?
            .filter(|at| at.term == id.leader_id.term)
            .map(|at| at.next_offset))
    }

    /// The current snapshot's last log id.
    pub fn snapshot_log_id(&self) -> Option<LogId> {
        self.applied
            .lock()
            .snapshot
            .as_ref()
            .and_then(|(meta, _)| meta.last_log_id)
    }

    /// The current snapshot's meta and manifest.
    pub fn current_snapshot(&self) -> Option<(SnapshotMeta<NodeId, Node>, PartitionSnapshot)> {
        self.applied.lock().snapshot.clone()
    }

    fn snapshot_path(&self) -> PathBuf {
        self.shared.log().dir().join(SNAPSHOT_FILE)
    }

    fn load_snapshot(
        &self,
    ) -> std::io::Result<Option<(SnapshotMeta<NodeId, Node>, PartitionSnapshot)>> {
        let saved: SavedSnapshot = match fs::read(self.snapshot_path()) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let meta = SnapshotMeta {
            last_log_id: saved.manifest.last_log_id.map(|(t, i)| log_id(t, i)),
            last_membership: manifest_membership(&saved.manifest),
            snapshot_id: saved.snapshot_id,
        };
        Ok(Some((meta, saved.manifest)))
    }

    fn save_snapshot(
        &self,
        meta: &SnapshotMeta<NodeId, Node>,
        manifest: &PartitionSnapshot,
    ) -> std::io::Result<()> {
        let mut saved_id = self.files.lock();
        // Never backwards: a build that finished after a newer install must not replace it.
        if saved_id.is_some() && meta.last_log_id < *saved_id {
            return Ok(());
        }
        let saved = SavedSnapshot {
            snapshot_id: meta.snapshot_id.clone(),
            manifest: manifest.clone(),
        };
        let json = serde_json::to_vec(&saved).unwrap_or_default();
        crate::log::write_atomically(&self.snapshot_path(), &json)?;
        *saved_id = meta.last_log_id;
        Ok(())
    }

    /// Watches the high watermark (offset after the last applied entry). The channel ends
    /// when the replica closes.
    pub fn watch_high_watermark(&self) -> watch::Receiver<u64> {
        match self.high_watermark.lock().as_ref() {
            Some(tx) => tx.subscribe(),
            // Closed: a receiver whose sender is already gone.
            None => watch::channel(self.high_watermark()).1,
        }
    }

    /// The high watermark.
    pub fn high_watermark(&self) -> u64 {
        self.last_high_watermark
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Ends every watch of the high watermark (the replica is closing or deleted).
    pub fn close_watchers(&self) {
        self.high_watermark.lock().take();
    }

    fn advance_high_watermark(&self, to: u64, exact: bool) {
        let guard = self.high_watermark.lock();
        let now = self.high_watermark();
        let next = if exact { to } else { now.max(to) };
        if next == now {
            return;
        }
        self.last_high_watermark
            .store(next, std::sync::atomic::Ordering::Release);
        if let Some(tx) = guard.as_ref() {
            tx.send_replace(next);
        }
    }

    /// Writes the checkpoint now (on close, and before anything relies on it).
    pub fn checkpoint(&self) -> std::io::Result<()> {
        // openraft builds snapshots in a task of its own, beside apply and install: the state
        // files are written one writer at a time, in the order their contents were read.
        let _files = self.files.lock();
        let checkpoint = {
            let mut applied = self.applied.lock();
            applied.last_checkpoint = Instant::now();
            let m = applied.membership.membership();
            Checkpoint {
                last_applied: applied.last_applied.map(|l| (l.leader_id.term, l.index)),
                membership_log_id: applied
                    .membership
                    .log_id()
                    .map(|l| (l.leader_id.term, l.index)),
                configs: m.get_joint_config().clone(),
                nodes: m.nodes().map(|(id, n)| (*id, n.addr.clone())).collect(),
            }
        };
        let json = serde_json::to_vec(&checkpoint).unwrap_or_default();
        crate::log::write_atomically(&self.checkpoint_path, &json)
    }

    /// A manifest of this replica's own log up to `next_offset`, without store objects (no
    /// snapshot store: a replica that does not hold these entries cannot install it).
    fn local_manifest(
        &self,
        last_applied: Option<LogId>,
        membership: &StoredMembership,
        next_offset: u64,
    ) -> Result<PartitionSnapshot, StorageError<NodeId>> {
        let log = self.shared.log();
        let segments = log.segments().map_err(sm_err)?;
        let mut out = Vec::new();
        for (i, seg) in segments.iter().enumerate() {
            if seg.base_offset >= next_offset || seg.size_bytes == 0 {
                continue;
            }
            let used_bytes = match segments.get(i + 1) {
                Some(next) if next.base_offset <= next_offset => seg.size_bytes,
                _ => self.bytes_below(seg.base_offset, seg.size_bytes, next_offset)?,
            };
            out.push(crate::snapshot::SegmentObject {
                base_offset: seg.base_offset,
                key: String::new(),
                size: seg.size_bytes,
                crc32c: 0,
                used_bytes,
            });
        }
        let mut manifest = manifest_for(last_applied, membership);
        manifest.log_start_offset = log.log_start_offset();
        manifest.next_offset = next_offset;
        manifest.segments = out;
        Ok(manifest)
    }

    /// Bytes of the segment starting at `base` that hold offsets below `end` (whole batches).
    /// Also returns the offset those bytes reach (`end` when the segment holds everything below
    /// it).
    pub fn used_bytes(
        &self,
        base: u64,
        size: u64,
        end: u64,
    ) -> Result<(u64, u64), crate::log::LogError> {
        self.span_below(base, size, end).map_err(|e| {
            crate::log::LogError::io(
                self.shared.log().dir(),
                std::io::Error::other(e.to_string()),
            )
        })
    }

    /// Downloads a snapshot's objects from the store and replaces the log with them.
    async fn fetch_and_install(
        &self,
        meta: &SnapshotMeta<NodeId, Node>,
        manifest: &PartitionSnapshot,
    ) -> Result<(), StorageError<NodeId>> {
        let fail = |reason: String| -> StorageError<NodeId> {
            let error = std::io::Error::other(reason);
            StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&error)).into()
        };
        let Some(link) = &self.link else {
            return Err(fail(format!(
                "snapshot {} needs {} segment(s) this replica does not hold, and no snapshot \
                 store is configured",
                meta.snapshot_id,
                manifest.segments.len()
            )));
        };
        if manifest.segments.iter().any(|s| s.key.is_empty()) {
            return Err(fail(format!(
                "snapshot {} was taken without a snapshot store; its segments cannot be fetched",
                meta.snapshot_id
            )));
        }
        let dir = self.shared.log().dir().to_path_buf();
        let staging = dir.join(RESTORE_DIR);
        let total = manifest.segments.iter().map(|s| s.size).sum::<u64>().max(1);
        let group = manifest.group.clone();
        tracing::info!(%group, snapshot = %meta.snapshot_id, objects = manifest.segments.len(),
            bytes = total, "installing snapshot from the snapshot store");
        let done = std::sync::atomic::AtomicU64::new(0);
        let progress = |bytes: u64| {
            let before = done.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
            let (was, now) = (before * 10 / total, (before + bytes) * 10 / total);
            if now > was {
                tracing::info!(%group, percent = now * 10, bytes = before + bytes,
                    "snapshot download progress");
            }
        };
        let started = Instant::now();
        // A failing store must not stop the group (openraft treats an install error as fatal):
        // retry with backoff for a while; objects already downloaded are kept between attempts.
        let deadline = started + INSTALL_RETRY_FOR;
        let mut backoff = Duration::from_secs(1);
        let files = loop {
            match crate::snapshot::fetch_segments(link.store.clone(), manifest, &staging, &progress)
                .await
            {
                Ok(files) => break files,
                Err(e) if Instant::now() + backoff < deadline => {
                    tracing::warn!(%group, snapshot = %meta.snapshot_id, error = %e,
                        retry_in_ms = backoff.as_millis() as u64, "snapshot download failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                Err(e) => return Err(fail(e.to_string())),
            }
        };
        let Some(last) = meta.last_log_id else {
            return Err(fail("a snapshot with segments but no log id".into()));
        };
        // From here the old log is being replaced: a crash before the marker goes makes the next
        // start empty the replica (see `recover_interrupted_install`), and the leader resends.
        let marker = self.shared.log().dir().join(INSTALL_MARKER);
        crate::log::write_atomically(&marker, meta.snapshot_id.as_bytes()).map_err(sm_err)?;
        let shared = self.shared.clone();
        let (start, next) = (manifest.log_start_offset, manifest.next_offset);
        tokio::task::spawn_blocking(move || shared.install(&files, start, next, last))
            .await
            .map_err(|e| sm_err(std::io::Error::other(e)))?
            .map_err(sm_err)?;
        if self.entry_end(last).map_err(sm_err)?.is_none() {
            return Err(fail(format!(
                "the installed log does not hold the snapshot's last entry {last}"
            )));
        }
        let _ = fs::remove_dir_all(&staging);
        tracing::info!(%group, snapshot = %meta.snapshot_id, bytes = total,
            ms = started.elapsed().as_millis() as u64, "snapshot installed");
        Ok(())
    }

    /// Bytes of the segment starting at `base` that hold offsets below `end`.
    fn bytes_below(&self, base: u64, size: u64, end: u64) -> Result<u64, StorageError<NodeId>> {
        self.span_below(base, size, end).map(|(bytes, _)| bytes)
    }

    /// [`Self::bytes_below`], also returning the offset those bytes reach.
    fn span_below(
        &self,
        base: u64,
        size: u64,
        end: u64,
    ) -> Result<(u64, u64), StorageError<NodeId>> {
        let log = self.shared.log();
        let mut offset = base;
        let mut bytes = 0u64;
        while offset < end && bytes < size {
            let read = log.read_up_to(offset, 1 << 20, end).map_err(sm_err)?;
            if read.batches.is_empty() {
                break;
            }
            let mut buf = read.batches;
            while !buf.is_empty() {
                let header = BatchHeader::parse(&buf).map_err(sm_err)?;
                let len = header.total_len().min(buf.len());
                let _ = buf.split_to(len);
                if header.base_offset >= end {
                    return Ok((bytes, offset));
                }
                bytes += len as u64;
                offset = header.next_offset();
            }
        }
        Ok((bytes.min(size), offset))
    }
}

/// Offsets an entry's batches (back to back) cover.
fn entry_span(mut bytes: &[u8]) -> Result<Appended, crate::log::BatchError> {
    let first = BatchHeader::parse(bytes)?;
    let mut next = first.next_offset();
    loop {
        let header = BatchHeader::parse(bytes)?;
        next = next.max(header.next_offset());
        bytes = bytes.get(header.total_len()..).unwrap_or(&[]);
        if bytes.is_empty() {
            break;
        }
    }
    Ok(Appended {
        base_offset: first.base_offset,
        next_offset: next,
    })
}

/// Writes the applied state and current snapshot of a replica restored from `manifest` (before
/// it is opened): everything up to the manifest's last log id is applied, under `membership`.
pub fn seed_restored(
    dir: &std::path::Path,
    manifest: &PartitionSnapshot,
    membership: &Membership,
) -> std::io::Result<()> {
    let last = manifest.last_log_id;
    let checkpoint = Checkpoint {
        last_applied: last,
        membership_log_id: last,
        configs: membership.get_joint_config().clone(),
        nodes: membership
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect(),
    };
    let mut restored = manifest.clone();
    restored.membership_log_id = last;
    restored.configs = checkpoint.configs.clone();
    restored.nodes = checkpoint.nodes.clone();
    let saved = SavedSnapshot {
        snapshot_id: snapshot_id(&restored),
        manifest: restored,
    };
    crate::log::write_atomically(
        &dir.join(APPLIED_FILE),
        &serde_json::to_vec(&checkpoint).unwrap_or_default(),
    )?;
    crate::log::write_atomically(
        &dir.join(SNAPSHOT_FILE),
        &serde_json::to_vec(&saved).unwrap_or_default(),
    )
}

/// An empty manifest standing for `last_applied` with `membership`.
pub fn manifest_for(
    last_applied: Option<LogId>,
    membership: &StoredMembership,
) -> PartitionSnapshot {
    let m = membership.membership();
    PartitionSnapshot {
        version: crate::snapshot::MANIFEST_VERSION,
        last_log_id: last_applied.map(|l| (l.leader_id.term, l.index)),
        membership_log_id: membership.log_id().map(|l| (l.leader_id.term, l.index)),
        configs: m.get_joint_config().clone(),
        nodes: m.nodes().map(|(id, n)| (*id, n.addr.clone())).collect(),
        created_ms: crate::log::now_ms(),
        ..PartitionSnapshot::default()
    }
}

/// The membership a manifest records.
pub fn manifest_membership(manifest: &PartitionSnapshot) -> StoredMembership {
    StoredMembership::new(
        manifest.membership_log_id.map(|(t, i)| log_id(t, i)),
        Membership::new(
            manifest.configs.clone(),
            manifest
                .nodes
                .iter()
                .map(|(id, addr)| (*id, Node { addr: addr.clone() }))
                .collect::<std::collections::BTreeMap<_, _>>(),
        ),
    )
}

/// Snapshot id of a manifest: `term-index`.
fn snapshot_id(manifest: &PartitionSnapshot) -> String {
    let (term, index) = manifest.last_log_id.unwrap_or((0, 0));
    format!("{term}-{index}")
}

impl RaftSnapshotBuilder<PartitionRaft> for PartitionStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<PartitionRaft>, StorageError<NodeId>> {
        let (last_applied, membership) = self.applied();
        let ready = self.link.as_ref().and_then(|l| l.ready.lock().take());
        let manifest = match ready {
            // The snapshot task's manifest (never beyond what this replica applied).
            Some(m) if m.last_log_id.map(|(t, i)| log_id(t, i)) <= last_applied => m,
            _ => match (self.current_snapshot(), &self.link) {
                // Nothing new from the store: the current snapshot stays.
                (Some((_, current)), Some(_)) => current,
                _ => self.local_manifest(last_applied, &membership, self.high_watermark())?,
            },
        };
        let meta = SnapshotMeta {
            last_log_id: manifest.last_log_id.map(|(t, i)| log_id(t, i)),
            last_membership: manifest_membership(&manifest),
            snapshot_id: snapshot_id(&manifest),
        };
        // After a restart, the applied state must cover the snapshot (openraft insists).
        self.checkpoint().map_err(sm_err)?;
        self.save_snapshot(&meta, &manifest).map_err(sm_err)?;
        {
            let mut applied = self.applied.lock();
            applied.snapshots_built += 1;
            applied.snapshot = Some((meta.clone(), manifest.clone()));
        }
        Ok(Snapshot {
            meta,
            snapshot: Box::new(manifest),
        })
    }
}

impl RaftStateMachine<PartitionRaft> for PartitionStateMachine {
    type SnapshotBuilder = PartitionStateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership), StorageError<NodeId>> {
        let applied = self.applied.lock();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Appended>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = openraft::Entry<PartitionRaft>> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut replies = Vec::new();
        let mut last = None;
        let mut membership = None;
        for entry in entries {
            let reply = match &entry.payload {
                EntryPayload::Normal(data) => match entry_span(&data.0) {
                    Ok(span) => span,
                    Err(e) => {
                        return Err(StorageIOError::apply(entry.log_id, AnyError::new(&e)).into());
                    }
                },
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(entry.log_id), m.clone()));
                    Appended::default()
                }
                EntryPayload::Blank => Appended::default(),
            };
            replies.push(reply);
            last = Some(entry.log_id);
        }
        let Some(last) = last else {
            return Ok(replies);
        };
        if let Some(end) = self.shared.locate(last.index).map_err(sm_err)? {
            self.advance_high_watermark(end.next_offset, false);
        }
        let due = {
            let mut applied = self.applied.lock();
            applied.last_applied = Some(last);
            if let Some(m) = membership {
                applied.membership = m;
            }
            applied.last_checkpoint.elapsed() >= CHECKPOINT_EVERY
        };
        if due {
            self.checkpoint().map_err(sm_err)?;
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<PartitionSnapshot>, StorageError<NodeId>> {
        Ok(Box::default())
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<PartitionSnapshot>,
    ) -> Result<(), StorageError<NodeId>> {
        let holds_it = match meta.last_log_id {
            None => true,
            Some(last) => self
                .shared
                .locate(last.index)
                .map_err(sm_err)?
                .is_some_and(|at| at.term == last.leader_id.term),
        };
        if !holds_it {
            if snapshot.segments.is_empty() {
                self.shared.reset(snapshot.next_offset).map_err(sm_err)?;
            } else {
                self.fetch_and_install(meta, &snapshot).await?;
            }
        }
        self.advance_high_watermark(snapshot.next_offset, true);
        {
            let mut applied = self.applied.lock();
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership.clone();
            applied.snapshot = Some((meta.clone(), (*snapshot).clone()));
        }
        self.checkpoint().map_err(sm_err)?;
        self.save_snapshot(meta, &snapshot).map_err(sm_err)?;
        match fs::remove_file(self.shared.log().dir().join(INSTALL_MARKER)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(sm_err(e)),
            _ => {}
        }
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<PartitionRaft>>, StorageError<NodeId>> {
        Ok(self
            .applied
            .lock()
            .snapshot
            .clone()
            .map(|(meta, manifest)| Snapshot {
                meta,
                snapshot: Box::new(manifest),
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_install_empties_the_replica_but_keeps_its_vote_and_downloads() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(!recover_interrupted_install(d).unwrap(), "nothing to do");
        let state = r#"{"vote_term":5,"voted_for":7,"vote_committed":true,"has_vote":true,"last_purged":[5,100],"committed":[5,120]}"#;
        fs::write(d.join(super::super::log_store::RAFT_STATE_FILE), state).unwrap();
        for name in [
            "00000000000000000000.log",
            "00000000000000000000.index",
            "00000000000000000420.log",
            APPLIED_FILE,
            SNAPSHOT_FILE,
            INSTALL_MARKER,
        ] {
            fs::write(d.join(name), b"x").unwrap();
        }
        fs::create_dir(d.join(RESTORE_DIR)).unwrap();
        fs::write(
            d.join(RESTORE_DIR)
                .join("00000000000000000000-0badc0de.log"),
            b"y",
        )
        .unwrap();

        assert!(recover_interrupted_install(d).unwrap());
        let mut left: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec!["raft.json".to_string(), RESTORE_DIR.to_string()]);
        // The vote stays (Raft safety); the log positions go with the log.
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(d.join("raft.json")).unwrap()).unwrap();
        assert_eq!(json["vote_term"], 5);
        assert_eq!(json["voted_for"], 7);
        assert_eq!(json["vote_committed"], true);
        assert!(
            json["last_purged"].is_null() && json["committed"].is_null(),
            "{json}"
        );
        // Downloads already verified are kept for the next attempt.
        assert!(
            d.join(RESTORE_DIR)
                .join("00000000000000000000-0badc0de.log")
                .exists()
        );
        assert!(!recover_interrupted_install(d).unwrap(), "done once");
    }
}
