//! The snapshot task of a partition replica (one per replica when a snapshot store is set).
//!
//! - **Leader.** Uploads every sealed segment below the high watermark once, as it seals (a
//!   segment rewritten by compaction is a new object: keys carry the CRC). When a segment was
//!   uploaded, every `snapshot_interval_ms` if entries were applied since (and the active
//!   segment holds at most 64 MiB; otherwise at its seal), or when asked, it
//!   writes a manifest (the sealed objects plus the applied part of the active segment as one
//!   more object), hands it to openraft as the next snapshot, and deletes what the newest
//!   `snapshot_retain` manifests no longer reference. openraft then purges its log behind the
//!   snapshot (logically: consumers still read it), which is what lets retention delete.
//! - **Follower.** Every `snapshot_interval_ms`, adopts the newest manifest in the store that it
//!   has applied as its own snapshot, so its retention can move too.
//! - **Outages.** Every store failure is logged with the upload lag and retried with backoff
//!   (1 s doubling to 30 s). Produce and consume never wait for the store; retention waits
//!   for it (nothing is deleted locally that no manifest covers).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};

use crate::log::PartitionLog;
use crate::log::segment::segment_path;
use crate::raft::state_machine::{StoreLink, manifest_for};
use crate::raft::{LogId, PartitionRaftHandle, PartitionStateMachine, log_id};
use crate::snapshot::{
    Manifest, RestoreError, SegmentObject, SnapshotStore, collect_garbage, get_manifest,
    group_prefix, manifest::parse_manifest_key, manifest_keys, put_manifest,
};

/// How often the task looks at the log.
const TICK: Duration = Duration::from_millis(500);
/// Largest active-segment tail a timed snapshot uploads (a seal or `snapshot create` always
/// snapshots).
const MAX_TIMED_TAIL_BYTES: u64 = 64 << 20;
/// Longest wait between retries while the store fails.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Snapshot settings of a node.
#[derive(Debug, Clone)]
pub struct SnapshotSettings {
    /// The store.
    pub store: Arc<dyn SnapshotStore>,
    /// Cluster id.
    pub cluster_id: String,
    /// Longest time between snapshots of a partition taking writes.
    pub interval: Duration,
    /// Manifests kept per partition.
    pub retain: usize,
}

/// What the task has done, for `snapshot list` and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotStatus {
    /// Segment objects uploaded by this replica.
    pub objects_uploaded: u64,
    /// Their bytes.
    pub bytes_uploaded: u64,
    /// Manifests written by this replica.
    pub manifests_written: u64,
    /// The newest manifest this replica wrote or adopted.
    pub last_manifest: Option<String>,
    /// Bytes of sealed, committed segments not uploaded yet (the upload lag).
    pub lag_bytes: u64,
    /// Store failures in a row (0 when the last attempt worked).
    pub failures: u64,
    /// The last store error.
    pub last_error: Option<String>,
}

/// A request to snapshot now.
type CreateRequest = oneshot::Sender<Result<Manifest, String>>;

/// The running task of one replica.
#[derive(Debug)]
pub struct SnapshotTask {
    requests: mpsc::Sender<CreateRequest>,
    status: Arc<Mutex<SnapshotStatus>>,
    task: tokio::task::JoinHandle<()>,
}

impl SnapshotTask {
    /// Starts the task of a replica.
    pub fn spawn(
        group: String,
        log: Arc<PartitionLog>,
        raft: PartitionRaftHandle,
        state: PartitionStateMachine,
        settings: SnapshotSettings,
    ) -> SnapshotTask {
        let (tx, rx) = mpsc::channel(8);
        let status = Arc::new(Mutex::new(SnapshotStatus::default()));
        let worker = Worker {
            prefix: group_prefix(&settings.cluster_id, &group),
            group,
            log,
            raft,
            state,
            settings,
            uploaded: BTreeMap::new(),
            status: status.clone(),
        };
        let task = tokio::spawn(worker.run(rx));
        SnapshotTask {
            requests: tx,
            status,
            task,
        }
    }

    /// Snapshots now (on the leader): uploads what is missing and writes a manifest.
    pub async fn create(&self) -> Result<Manifest, String> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(tx)
            .await
            .map_err(|_| "the snapshot task has stopped".to_string())?;
        rx.await
            .map_err(|_| "the snapshot task has stopped".to_string())?
    }

    /// Stops the task (an upload in progress is abandoned; nothing depends on it).
    pub fn stop(&self) {
        self.task.abort();
    }

    /// What the task has done so far.
    pub fn status(&self) -> SnapshotStatus {
        self.status.lock().clone()
    }
}

impl Drop for SnapshotTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A file's identity: compaction replaces a sealed segment by a new file.
type FileId = (u64, u64);

struct Worker {
    group: String,
    prefix: String,
    log: Arc<PartitionLog>,
    raft: PartitionRaftHandle,
    state: PartitionStateMachine,
    settings: SnapshotSettings,
    /// Sealed segments uploaded: base offset -> (file identity, object).
    uploaded: BTreeMap<u64, (FileId, SegmentObject)>,
    status: Arc<Mutex<SnapshotStatus>>,
}

impl Worker {
    async fn run(mut self, mut requests: mpsc::Receiver<CreateRequest>) {
        let metrics: watch::Receiver<_> = self.raft.metrics();
        let mut last_snapshot = Instant::now();
        let mut retry_at = Instant::now();
        let mut backoff = Duration::from_secs(1);
        // A fixed tick (not a sleep restarted by every metrics change, which under steady
        // heartbeats would never fire).
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let request = tokio::select! {
                r = requests.recv() => match r {
                    Some(r) => Some(r),
                    None => return,
                },
                _ = tick.tick() => None,
            };
            if metrics.has_changed().is_err() {
                return;
            }
            if request.is_none() && Instant::now() < retry_at {
                continue;
            }
            let leading = metrics.borrow().state == ServerState::Leader;
            let due = last_snapshot.elapsed() >= self.settings.interval;
            let outcome = if leading {
                self.leader_pass(request.is_some(), due).await
            } else if let Some(reply) = request {
                let leader = metrics.borrow().current_leader;
                let _ = reply.send(Err(format!(
                    "node is not the leader of {} (leader: {leader:?})",
                    self.group
                )));
                continue;
            } else if due {
                self.follower_pass().await
            } else {
                Ok(None)
            };
            match outcome {
                Ok(manifest) => {
                    if manifest.is_some() || due {
                        last_snapshot = Instant::now();
                    }
                    let recovered = {
                        let mut status = self.status.lock();
                        let was = status.failures;
                        status.failures = 0;
                        status.last_error = None;
                        was > 0
                    };
                    if recovered {
                        tracing::info!(group = %self.group, "snapshot store reachable again");
                    }
                    backoff = Duration::from_secs(1);
                    if let Some(reply) = request {
                        let _ = reply.send(manifest.ok_or_else(|| {
                            "nothing has been applied yet; no snapshot to take".to_string()
                        }));
                    }
                }
                Err(error) => {
                    let lag_bytes = self.lag_bytes();
                    let failures = {
                        let mut status = self.status.lock();
                        status.failures += 1;
                        status.last_error = Some(error.to_string());
                        status.lag_bytes = lag_bytes;
                        status.failures
                    };
                    tracing::warn!(group = %self.group, %error, lag_bytes, failures,
                        retry_in_ms = backoff.as_millis() as u64,
                        "snapshot upload failed; produce and consume go on, retention waits");
                    retry_at = Instant::now() + backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    if let Some(reply) = request {
                        let _ = reply.send(Err(error.to_string()));
                    }
                }
            }
        }
    }

    /// Bytes of sealed, committed segments not uploaded.
    fn lag_bytes(&self) -> u64 {
        let hw = self.state.high_watermark();
        let Ok(segments) = self.log.segments() else {
            return 0;
        };
        let mut lag = 0;
        for (i, seg) in segments.iter().enumerate() {
            let next = segments.get(i + 1).map(|s| s.base_offset);
            if seg.active || next.is_none_or(|n| n > hw) {
                continue;
            }
            if self
                .uploaded
                .get(&seg.base_offset)
                .is_none_or(|(id, _)| id.1 != seg.size_bytes)
            {
                lag += seg.size_bytes;
            }
        }
        lag
    }

    /// Uploads the sealed segment at `base` unless the same file is uploaded already.
    async fn upload_sealed(&mut self, base: u64) -> Result<(SegmentObject, bool), RestoreError> {
        let path = segment_path(self.log.dir(), base, "log");
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(|source| RestoreError::Io {
                path: path.clone(),
                source,
            })?;
        let id = (meta.ino(), meta.len());
        if let Some((known, object)) = self.uploaded.get(&base)
            && *known == id
        {
            return Ok((object.clone(), false));
        }
        let object = crate::snapshot::manifest::upload_file(
            &*self.settings.store,
            &self.prefix,
            base,
            &path,
        )
        .await?;
        // Compaction may have replaced the file while it was read: then the object's key (its
        // CRC) may not describe what was uploaded. Try again on the next pass.
        let after = tokio::fs::metadata(&path)
            .await
            .map_err(|source| RestoreError::Io {
                path: path.clone(),
                source,
            })?;
        if (after.ino(), after.len()) != id {
            return Err(io_err(
                &path,
                std::io::Error::other("the segment was rewritten while it was uploaded"),
            ));
        }
        let mut status = self.status.lock();
        status.objects_uploaded += 1;
        status.bytes_uploaded += object.size;
        drop(status);
        crate::telemetry::metrics()
            .snapshot_upload_bytes
            .get_or_create(&crate::telemetry::GroupLabels {
                group: self.group.clone(),
            })
            .inc_by(object.size);
        tracing::debug!(group = %self.group, key = %object.key, bytes = object.size, "segment uploaded");
        self.uploaded.insert(base, (id, object.clone()));
        Ok((object, true))
    }

    async fn leader_pass(
        &mut self,
        force: bool,
        due: bool,
    ) -> Result<Option<Manifest>, RestoreError> {
        let hw = self.state.high_watermark();
        let segments = self.log.segments().map_err(|e| io(self.log.dir(), e))?;
        let present: BTreeSet<u64> = segments.iter().map(|s| s.base_offset).collect();
        self.uploaded.retain(|base, _| present.contains(base));
        // Sealed segments below the high watermark, once each.
        let mut fresh = false;
        for (i, seg) in segments.iter().enumerate() {
            let next = segments.get(i + 1).map(|s| s.base_offset);
            if seg.active || seg.size_bytes == 0 || next.is_none_or(|n| n > hw) {
                continue;
            }
            fresh |= self.upload_sealed(seg.base_offset).await?.1;
        }
        self.status.lock().lag_bytes = self.lag_bytes();
        let (last_applied, membership) = self.state.applied();
        let Some(last) = last_applied else {
            return Ok(None);
        };
        let current = self.state.snapshot_log_id();
        let advanced = current.is_none_or(|c| c < last);
        if !(force || advanced && (fresh || due)) {
            return Ok(None);
        }
        // A timed snapshot copies the applied part of the active segment; when that is large,
        // wait for the segment to seal instead (then the tail is small).
        let tail = segments.last().map_or(0, |s| s.size_bytes);
        if !force && !fresh && tail > MAX_TIMED_TAIL_BYTES {
            return Ok(None);
        }
        let Some(next_offset) = self
            .state
            .entry_end(last)
            .map_err(|e| io(self.log.dir(), e))?
        else {
            return Ok(None);
        };
        // Listed again after the end was read: a segment that rolled meanwhile is in this list.
        let segments = self.log.segments().map_err(|e| io(self.log.dir(), e))?;
        // The manifest: whole sealed segments, then the part of the last one below the end.
        let mut objects = Vec::new();
        for (i, seg) in segments.iter().enumerate() {
            if seg.base_offset >= next_offset || seg.size_bytes == 0 {
                continue;
            }
            let next = segments.get(i + 1).map(|s| s.base_offset);
            if !seg.active && next.is_some_and(|n| n <= next_offset) {
                objects.push(self.upload_sealed(seg.base_offset).await?.0);
                continue;
            }
            let state = self.state.clone();
            let (base, size) = (seg.base_offset, seg.size_bytes);
            let (used, reached) =
                tokio::task::spawn_blocking(move || state.used_bytes(base, size, next_offset))
                    .await
                    .map_err(|e| io_err(self.log.dir(), std::io::Error::other(e)))?
                    .map_err(|e| io(self.log.dir(), e))?;
            if reached != next_offset {
                // Never write a manifest that claims offsets its objects do not hold.
                return Err(io_err(
                    self.log.dir(),
                    std::io::Error::other(format!(
                        "segment {base} reaches offset {reached}, the snapshot ends at {next_offset}"
                    )),
                ));
            }
            if used == 0 {
                continue;
            }
            objects.push(self.upload_prefix(seg.base_offset, used).await?);
        }
        let mut manifest = manifest_for(Some(last), &membership);
        manifest.cluster_id = self.settings.cluster_id.clone();
        manifest.group = self.group.clone();
        manifest.log_start_offset = self.log.log_start_offset();
        manifest.next_offset = next_offset;
        manifest.segments = objects;
        let key = put_manifest(&*self.settings.store, &manifest).await?;
        {
            let mut status = self.status.lock();
            status.manifests_written += 1;
            status.last_manifest = Some(key.clone());
        }
        tracing::info!(group = %self.group, %key, next_offset, bytes = manifest.bytes(),
            "snapshot manifest written");
        self.adopt(manifest.clone(), last).await;
        let pending: BTreeSet<String> =
            self.uploaded.values().map(|(_, o)| o.key.clone()).collect();
        let report = collect_garbage(
            &*self.settings.store,
            &self.prefix,
            self.settings.retain,
            crate::snapshot::manifest::GC_GRACE_MS,
            &pending,
        )
        .await?;
        if report.manifests + report.segments > 0 {
            tracing::info!(group = %self.group, manifests = report.manifests,
                segments = report.segments, "old snapshot objects deleted");
        }
        Ok(Some(manifest))
    }

    /// Uploads the first `used` bytes of the segment at `base` as one object.
    async fn upload_prefix(&self, base: u64, used: u64) -> Result<SegmentObject, RestoreError> {
        let path = segment_path(self.log.dir(), base, "log");
        let copy_from = path.clone();
        let tmp =
            tokio::task::spawn_blocking(move || -> std::io::Result<tempfile::NamedTempFile> {
                use std::io::Read;
                let mut tmp = tempfile::NamedTempFile::new()?;
                let mut input = std::fs::File::open(&copy_from)?.take(used);
                std::io::copy(&mut input, tmp.as_file_mut())?;
                Ok(tmp)
            })
            .await
            .map_err(|e| io_err(&path, std::io::Error::other(e)))?
            .map_err(|e| io_err(&path, e))?;
        crate::snapshot::manifest::upload_file(
            &*self.settings.store,
            &self.prefix,
            base,
            tmp.path(),
        )
        .await
    }

    /// Hands `manifest` to openraft as the next snapshot and waits until it is taken.
    async fn adopt(&self, manifest: Manifest, last: LogId) {
        if let Some(link) = self.state.store_link() {
            *link.ready.lock() = Some(manifest);
        }
        if let Err(e) = self.raft.trigger().snapshot().await {
            tracing::warn!(group = %self.group, error = %e, "could not trigger a snapshot");
            return;
        }
        let waited = self
            .raft
            .wait(Some(Duration::from_secs(10)))
            .metrics(|m| m.snapshot >= Some(last), "snapshot taken")
            .await;
        if let Err(e) = waited {
            tracing::warn!(group = %self.group, error = %e, "snapshot not taken in time");
        }
    }

    /// Adopts the newest manifest in the store this replica has applied.
    async fn follower_pass(&mut self) -> Result<Option<Manifest>, RestoreError> {
        let (last_applied, _) = self.state.applied();
        let current = self.state.snapshot_log_id();
        for key in manifest_keys(&*self.settings.store, &self.prefix).await? {
            let Some((term, index)) = parse_manifest_key(&key) else {
                continue;
            };
            let id = log_id(term, index);
            if current.is_some_and(|c| c >= id) {
                break;
            }
            if last_applied.is_none_or(|a| a < id) {
                continue;
            }
            if self
                .state
                .entry_end(id)
                .map_err(|e| io(self.log.dir(), e))?
                .is_none()
            {
                continue;
            }
            let manifest = get_manifest(&*self.settings.store, &key).await?;
            tracing::info!(group = %self.group, %key, "snapshot adopted from the store");
            self.status.lock().last_manifest = Some(key);
            self.adopt(manifest.clone(), id).await;
            return Ok(Some(manifest));
        }
        Ok(None)
    }
}

fn io(dir: &std::path::Path, e: crate::log::LogError) -> RestoreError {
    io_err(dir, std::io::Error::other(e.to_string()))
}

fn io_err(path: &std::path::Path, source: std::io::Error) -> RestoreError {
    RestoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Connects a replica's state machine to the store.
pub fn link(settings: &SnapshotSettings) -> Arc<StoreLink> {
    Arc::new(StoreLink {
        store: settings.store.clone(),
        ready: Mutex::new(None),
    })
}

/// On the metadata leader: writes a manifest of the cluster metadata to the store whenever it
/// changed (at most once per `snapshot_interval_ms`), keeping the newest `snapshot_retain`.
pub(super) async fn meta_upload_loop(broker: std::sync::Weak<super::Broker>) {
    use crate::snapshot::manifest::{META_GROUP, MetaManifest, manifest_key};
    let mut uploaded: Option<LogId> = None;
    let mut last_upload: Option<Instant> = None;
    loop {
        let Some(b) = broker.upgrade() else { return };
        let Some(settings) = b.snapshot_settings() else {
            return;
        };
        let m = b.meta.metrics().borrow().clone();
        let metadata = b.metadata();
        if m.state == ServerState::Leader
            && m.last_applied.is_some()
            && m.last_applied != uploaded
            && !metadata.cluster_id.is_empty()
            && last_upload.is_none_or(|t| t.elapsed() >= settings.interval)
        {
            let last = m.last_applied.map(|l| (l.leader_id.term, l.index));
            let (term, index) = last.unwrap_or((0, 0));
            let manifest = MetaManifest {
                version: crate::snapshot::MANIFEST_VERSION,
                cluster_id: settings.cluster_id.clone(),
                last_log_id: last,
                metadata: serde_json::to_value(&*metadata).unwrap_or_default(),
                created_ms: crate::log::now_ms(),
            };
            let prefix = group_prefix(&settings.cluster_id, META_GROUP);
            let key = manifest_key(&prefix, term, index);
            let json = bytes::Bytes::from(serde_json::to_vec_pretty(&manifest).unwrap_or_default());
            let outcome = async {
                settings.store.put(&key, json).await?;
                for old in manifest_keys(&*settings.store, &prefix)
                    .await?
                    .iter()
                    .skip(settings.retain.max(1))
                {
                    settings.store.delete(old).await?;
                }
                Ok::<_, crate::snapshot::StoreError>(())
            }
            .await;
            match outcome {
                Ok(()) => {
                    tracing::debug!(%key, "metadata snapshot written");
                    uploaded = m.last_applied;
                    last_upload = Some(Instant::now());
                }
                Err(error) => {
                    tracing::warn!(%error, "metadata snapshot upload failed; retrying later")
                }
            }
        }
        let mut shutdown = b.shutdown_signal();
        drop(b);
        tokio::select! {
            _ = tokio::time::sleep(settings.interval.min(Duration::from_secs(1))) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}
