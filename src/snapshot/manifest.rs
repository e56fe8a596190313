//! Manifests and segment objects: what a snapshot is in the store, how segments get there, how
//! a replica gets them back (verified, in parallel, resumable) and how old objects go.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::store::{SnapshotStore, StoreError};

/// Version written in every manifest.
pub const MANIFEST_VERSION: u32 = 1;
/// Downloads run at once during a restore.
pub const PARALLEL_DOWNLOADS: usize = 4;

/// One object a manifest points at: a sealed segment, or the part of a segment below the
/// snapshot's end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentObject {
    /// Offset of the segment (its file name in the partition directory).
    pub base_offset: u64,
    /// Object key in the store.
    pub key: String,
    /// Object size.
    pub size: u64,
    /// CRC-32C of the object.
    pub crc32c: u32,
    /// Leading bytes of the object that belong to the snapshot (whole batches).
    pub used_bytes: u64,
}

impl SegmentObject {
    /// The object under `prefix` for a whole file of `size` bytes with `crc32c`.
    fn whole(prefix: &str, base_offset: u64, size: u64, crc32c: u32) -> Self {
        SegmentObject {
            base_offset,
            key: segment_key(prefix, base_offset, crc32c),
            size,
            crc32c,
            used_bytes: size,
        }
    }
}

/// A snapshot of one partition: the Raft position it stands for and the objects holding
/// `[log_start_offset, next_offset)`. This is openraft's snapshot data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version ([`MANIFEST_VERSION`]).
    pub version: u32,
    /// Cluster id.
    pub cluster_id: String,
    /// Raft group (`topic/partition`).
    pub group: String,
    /// Last Raft log id covered, as (term, index).
    pub last_log_id: Option<(u64, u64)>,
    /// Log id of the membership in force at `last_log_id`, as (term, index).
    pub membership_log_id: Option<(u64, u64)>,
    /// Its voter sets.
    pub configs: Vec<BTreeSet<u64>>,
    /// Its nodes (id, address).
    pub nodes: Vec<(u64, String)>,
    /// Lowest offset held.
    pub log_start_offset: u64,
    /// Offset after the last record covered.
    pub next_offset: u64,
    /// Objects, oldest first.
    pub segments: Vec<SegmentObject>,
    /// When it was written (ms since the epoch).
    pub created_ms: i64,
}

impl Manifest {
    /// Bytes of records the manifest covers.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.used_bytes).sum()
    }

    /// Its key in the store.
    pub fn key(&self) -> String {
        let (term, index) = self.last_log_id.unwrap_or((0, 0));
        manifest_key(&group_prefix(&self.cluster_id, &self.group), term, index)
    }
}

/// A snapshot of the metadata group: the cluster metadata as of a log id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetaManifest {
    /// Format version ([`MANIFEST_VERSION`]).
    pub version: u32,
    /// Cluster id.
    pub cluster_id: String,
    /// Last Raft log id of the metadata group covered, as (term, index).
    pub last_log_id: Option<(u64, u64)>,
    /// The metadata (topics, settings, assignments) as JSON.
    pub metadata: serde_json::Value,
    /// When it was written (ms since the epoch).
    pub created_ms: i64,
}

/// Group name of the metadata group in the store.
pub const META_GROUP: &str = "meta";

/// Why a snapshot could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An object's contents do not match the manifest.
    #[error(
        "object {key:?} is corrupt: expected {expected_size} bytes with CRC-32C {expected_crc:08x}, found {size} bytes with {crc:08x}"
    )]
    Corrupt {
        /// The object.
        key: String,
        /// Size the manifest names.
        expected_size: u64,
        /// CRC the manifest names.
        expected_crc: u32,
        /// Size found.
        size: u64,
        /// CRC found.
        crc: u32,
    },
    /// A manifest could not be parsed.
    #[error("manifest {key:?} is invalid: {reason}")]
    BadManifest {
        /// The manifest.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// Local file I/O failed.
    #[error("restore I/O on {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// `<cluster_id>/<group>`: where a group's objects live (`meta` for the metadata group).
pub fn group_prefix(cluster_id: &str, group: &str) -> String {
    format!("{cluster_id}/{group}")
}

/// Key of a segment object.
pub fn segment_key(prefix: &str, base_offset: u64, crc32c: u32) -> String {
    format!("{prefix}/segments/{base_offset:020}-{crc32c:08x}.log")
}

/// Key of a manifest (zero-padded so that key order is log order).
pub fn manifest_key(prefix: &str, term: u64, index: u64) -> String {
    format!("{prefix}/manifests/{term:020}-{index:020}.json")
}

/// `(term, index)` from a manifest key.
pub fn parse_manifest_key(key: &str) -> Option<(u64, u64)> {
    let name = key.rsplit('/').next()?.strip_suffix(".json")?;
    let (term, index) = name.split_once('-')?;
    Some((term.parse().ok()?, index.parse().ok()?))
}

/// CRC-32C and length of a file.
pub fn file_crc32c(path: &Path) -> std::io::Result<(u64, u32)> {
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut len, mut crc) = (0u64, 0u32);
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((len, crc));
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        len += n as u64;
    }
}

/// Uploads a whole segment file as the object for `base_offset` under `prefix`.
pub async fn upload_file(
    store: &dyn SnapshotStore,
    prefix: &str,
    base_offset: u64,
    path: &Path,
) -> Result<SegmentObject, RestoreError> {
    let owned = path.to_path_buf();
    let (size, crc32c) = tokio::task::spawn_blocking(move || file_crc32c(&owned))
        .await
        .map_err(|e| io_error(path, std::io::Error::other(e)))?
        .map_err(|e| io_error(path, e))?;
    let object = SegmentObject::whole(prefix, base_offset, size, crc32c);
    store.put_file(&object.key, path).await?;
    Ok(object)
}

/// Uploads `bytes` (whole batches from `base_offset`) as an object under `prefix`.
pub async fn upload_bytes(
    store: &dyn SnapshotStore,
    prefix: &str,
    base_offset: u64,
    bytes: Bytes,
) -> Result<SegmentObject, RestoreError> {
    let object = SegmentObject::whole(
        prefix,
        base_offset,
        bytes.len() as u64,
        crc32c::crc32c(&bytes),
    );
    store.put(&object.key, bytes).await?;
    Ok(object)
}

fn io_error(path: &Path, source: std::io::Error) -> RestoreError {
    RestoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a manifest; returns its key.
pub async fn put_manifest(
    store: &dyn SnapshotStore,
    manifest: &Manifest,
) -> Result<String, StoreError> {
    let key = manifest.key();
    let json = serde_json::to_vec_pretty(manifest).unwrap_or_default();
    store.put(&key, Bytes::from(json)).await?;
    Ok(key)
}

/// Keys of a group's manifests, newest first.
pub async fn manifest_keys(
    store: &dyn SnapshotStore,
    prefix: &str,
) -> Result<Vec<String>, StoreError> {
    let mut keys: Vec<String> = store
        .list(&format!("{prefix}/manifests/"))
        .await?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| parse_manifest_key(k).is_some())
        .collect();
    keys.sort_by_key(|k| std::cmp::Reverse(parse_manifest_key(k)));
    Ok(keys)
}

/// Reads and parses a manifest.
pub async fn get_manifest(store: &dyn SnapshotStore, key: &str) -> Result<Manifest, RestoreError> {
    let bytes = store.get(key).await?;
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| RestoreError::BadManifest {
            key: key.to_string(),
            reason: e.to_string(),
        })?;
    if manifest.version != MANIFEST_VERSION {
        return Err(RestoreError::BadManifest {
            key: key.to_string(),
            reason: format!("version {} is not {MANIFEST_VERSION}", manifest.version),
        });
    }
    Ok(manifest)
}

/// Downloads a manifest's objects into `staging` (in parallel, each verified against its
/// CRC-32C; objects already there from an interrupted attempt are kept) and cuts each to the
/// bytes the snapshot uses. Returns `(base_offset, file)` in manifest order. `progress` is
/// called with the bytes of every object done.
pub async fn fetch_segments(
    store: Arc<dyn SnapshotStore>,
    manifest: &Manifest,
    staging: &Path,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<Vec<(u64, PathBuf)>, RestoreError> {
    tokio::fs::create_dir_all(staging)
        .await
        .map_err(|e| io_error(staging, e))?;
    let results: BTreeMap<u64, PathBuf> = futures_util::stream::iter(manifest.segments.clone())
        .map(|object| {
            let store = store.clone();
            async move {
                let path = fetch_one(&*store, &object, staging).await?;
                progress(object.size);
                Ok::<_, RestoreError>((object.base_offset, path))
            }
        })
        .buffer_unordered(PARALLEL_DOWNLOADS)
        .try_collect()
        .await?;
    // Cut to the used bytes and give the files their segment names, in manifest order.
    let mut out = Vec::with_capacity(results.len());
    for object in &manifest.segments {
        let Some(path) = results.get(&object.base_offset) else {
            continue;
        };
        let target = staging.join(format!("{:020}.segment", object.base_offset));
        let (from, to, used) = (path.clone(), target.clone(), object.used_bytes);
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let file = std::fs::OpenOptions::new().write(true).open(&from)?;
            file.set_len(used)?;
            file.sync_all()?;
            std::fs::rename(&from, &to)
        })
        .await
        .map_err(|e| io_error(&target, std::io::Error::other(e)))?
        .map_err(|e| io_error(&target, e))?;
        out.push((object.base_offset, target));
    }
    Ok(out)
}

/// One object into `staging/<key's file name>`, verified.
async fn fetch_one(
    store: &dyn SnapshotStore,
    object: &SegmentObject,
    staging: &Path,
) -> Result<PathBuf, RestoreError> {
    let name = object.key.rsplit('/').next().unwrap_or(&object.key);
    let path = staging.join(name);
    let check = |path: PathBuf| async move {
        let p = path.clone();
        tokio::task::spawn_blocking(move || file_crc32c(&p))
            .await
            .map_err(|e| io_error(&path, std::io::Error::other(e)))?
            .map_err(|e| io_error(&path, e))
    };
    // Resuming: a verified object from an earlier attempt is kept.
    if tokio::fs::try_exists(&path).await.unwrap_or(false) {
        let (size, crc) = check(path.clone()).await?;
        if size == object.size && crc == object.crc32c {
            return Ok(path);
        }
    }
    store.get_to_file(&object.key, &path).await?;
    let (size, crc) = check(path.clone()).await?;
    if size != object.size || crc != object.crc32c {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(RestoreError::Corrupt {
            key: object.key.clone(),
            expected_size: object.size,
            expected_crc: object.crc32c,
            size,
            crc,
        });
    }
    Ok(path)
}

/// What a garbage collection pass deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Manifests deleted.
    pub manifests: usize,
    /// Segment objects deleted.
    pub segments: usize,
}

/// Manifests younger than this are kept whatever `snapshot_retain` says: a replica may be
/// installing one, or have adopted one as its current snapshot.
pub const GC_GRACE_MS: i64 = 10 * 60 * 1000;

/// Keeps the newest `retain` manifests of a group and those younger than `grace_ms`, deletes
/// the others, then deletes segment objects that no kept manifest references and that are not in
/// `pending` (uploaded but not yet in a manifest).
pub async fn collect_garbage(
    store: &dyn SnapshotStore,
    prefix: &str,
    retain: usize,
    grace_ms: i64,
    pending: &BTreeSet<String>,
) -> Result<GcReport, RestoreError> {
    let keys = manifest_keys(store, prefix).await?;
    let retain = retain.max(1);
    let now = crate::log::now_ms();
    let mut referenced: BTreeSet<String> = pending.clone();
    let mut doomed = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        // An unreadable manifest cannot say what it needs: delete nothing this pass.
        let m = get_manifest(store, key).await?;
        if i < retain || now - m.created_ms < grace_ms {
            referenced.extend(m.segments.into_iter().map(|s| s.key));
        } else {
            doomed.push(key);
        }
    }
    let mut report = GcReport::default();
    for key in doomed {
        store.delete(key).await?;
        report.manifests += 1;
    }
    for object in store.list(&format!("{prefix}/segments/")).await? {
        if !referenced.contains(&object.key) {
            store.delete(&object.key).await?;
            report.segments += 1;
        }
    }
    Ok(report)
}
