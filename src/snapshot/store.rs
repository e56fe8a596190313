//! The snapshot store: a flat key space of immutable objects (`a/b/c` keys, as in S3), behind
//! one trait so the local directory (the single-node default) and S3 are interchangeable.

use std::fmt::Debug;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;

/// Why a snapshot store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No object under this key.
    #[error("no object {key:?} in the snapshot store")]
    NotFound {
        /// The key asked for.
        key: String,
    },
    /// The key is not a valid object key.
    #[error("invalid snapshot store key {key:?}: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The store refused the request (credentials, permissions, bucket): retrying will not help
    /// until the configuration changes.
    #[error("snapshot store refused {operation} of {key:?}: {code}: {message}")]
    Refused {
        /// The operation (`put`, `get`, ...).
        operation: &'static str,
        /// The key (or prefix).
        key: String,
        /// The service's error code (`AccessDenied`, `SignatureDoesNotMatch`, `NoSuchBucket`, ...).
        code: String,
        /// The service's message.
        message: String,
    },
    /// The store could not be reached or failed (connection refused, timeout, 5xx): retry later.
    #[error("snapshot store unavailable during {operation} of {key:?}: {message}")]
    Unavailable {
        /// The operation.
        operation: &'static str,
        /// The key (or prefix).
        key: String,
        /// What failed.
        message: String,
    },
    /// The object's bytes failed the checksum the store keeps for it (corrupt at rest or in
    /// transit).
    #[error("snapshot store object {key:?} failed its checksum: {message}")]
    Checksum {
        /// The object.
        key: String,
        /// What the check said.
        message: String,
    },
    /// Reading or writing failed.
    #[error("snapshot store I/O on {key:?} failed: {source}")]
    Io {
        /// The key being read or written.
        key: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// An object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Its key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Where snapshots live: put, get, list and delete whole objects by key.
#[tonic::async_trait]
pub trait SnapshotStore: Send + Sync + Debug {
    /// Stores `bytes` under `key`, replacing any object there; durable when it returns.
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError>;
    /// Stores the file at `path` under `key`; returns its size. The file must never be changed
    /// in place afterwards (a store on the same file system may hard-link it; sealed segments
    /// are only ever replaced by rename).
    async fn put_file(&self, key: &str, path: &Path) -> Result<u64, StoreError>;
    /// The object under `key`.
    async fn get(&self, key: &str) -> Result<Bytes, StoreError>;
    /// Writes the object under `key` to the file `path` (replaced whole, never half written);
    /// returns its size.
    async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, StoreError>;
    /// The objects whose keys start with `prefix` (a string prefix, as in S3), sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError>;
    /// Deletes the object under `key`; deleting a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
}

/// Checks an object key: relative, `/`-separated, no empty, `.` or `..` parts, no NUL.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    let invalid = |reason| StoreError::InvalidKey {
        key: key.to_string(),
        reason,
    };
    if key.is_empty() {
        return Err(invalid("empty"));
    }
    if key.contains('\0') {
        return Err(invalid("contains NUL"));
    }
    if key.starts_with('/') || key.ends_with('/') {
        return Err(invalid("starts or ends with '/'"));
    }
    if key
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(invalid("has an empty, '.' or '..' part"));
    }
    if key.split('/').any(|part| part.starts_with(TMP_MARK)) {
        return Err(invalid(
            "a part starts with the store's temporary-file mark",
        ));
    }
    Ok(())
}

/// Files being written start with this; they are never listed or read as objects.
pub(crate) const TMP_MARK: &str = ".tmp-";

/// A snapshot store in a local directory: each object is a file at `<root>/<key>`, written to a
/// temporary file, fsynced and renamed into place (then the directory is fsynced), so an object
/// is either whole or absent. A file put on the same file system is hard-linked, not copied.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `root` (created if missing).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|source| StoreError::Io {
            key: String::new(),
            source,
        })?;
        Ok(LocalStore { root })
    }

    /// The directory holding the objects.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }
}

/// Runs blocking file work off the async runtime, naming `key` in its errors.
async fn blocking<T: Send + 'static>(
    key: &str,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, StoreError> {
    let owned = key.to_string();
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(StoreError::NotFound { key: owned })
        }
        Ok(Err(source)) => Err(StoreError::Io { key: owned, source }),
        Err(join) => Err(StoreError::Io {
            key: owned,
            source: std::io::Error::other(join.to_string()),
        }),
    }
}

/// Writes `fill`'s output to `target` atomically: a uniquely named temporary file next to it
/// (marked so it is never listed; removed if anything fails), fsync, rename, fsync of the
/// directory. Unlike [`crate::log::write_atomically`] it streams, and its temporary name can
/// neither collide with another object's key nor with a concurrent writer of the same key.
pub(crate) fn write_atomically(
    target: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<u64>,
) -> std::io::Result<u64> {
    let dir = target
        .parent()
        .ok_or_else(|| std::io::Error::other("an object path has no parent"))?;
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new().prefix(TMP_MARK).tempfile_in(dir)?;
    let size = fill(tmp.as_file_mut())?;
    tmp.as_file_mut().flush()?;
    tmp.as_file().sync_all()?;
    tmp.persist(target).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(size)
}

/// Puts a hard link to `source` at `target` (through a marked temporary name, then a rename and
/// a directory fsync), so a store on the log's own file system costs no second copy of a
/// segment. `None` when linking is not possible here (another file system): copy instead.
fn link_atomically(source: &Path, target: &Path) -> std::io::Result<Option<u64>> {
    let dir = target
        .parent()
        .ok_or_else(|| std::io::Error::other("an object path has no parent"))?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        "{TMP_MARK}link-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    match std::fs::hard_link(source, &tmp) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::CrossesDevices | std::io::ErrorKind::PermissionDenied
            ) || e.raw_os_error() == Some(libc::EXDEV)
                || e.raw_os_error() == Some(libc::EPERM)
                || e.raw_os_error() == Some(libc::EMLINK) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    }
    let size = std::fs::metadata(&tmp)?.len();
    if let Err(e) = std::fs::rename(&tmp, target) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::File::open(dir)?.sync_all()?;
    Ok(Some(size))
}

/// Every object file under `dir`, as keys relative to `root`.
fn walk(root: &Path, dir: &Path, out: &mut Vec<ObjectInfo>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk(root, &path, out)?;
        } else if kind.is_file() {
            let Ok(relative) = path.strip_prefix(root) else {
                continue;
            };
            let parts: Option<Vec<&str>> = relative
                .components()
                .map(|c| match c {
                    Component::Normal(s) => s.to_str(),
                    _ => None,
                })
                .collect();
            let Some(parts) = parts else { continue };
            let key = parts.join("/");
            if validate_key(&key).is_ok() {
                out.push(ObjectInfo {
                    key,
                    size: entry.metadata()?.len(),
                });
            }
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl SnapshotStore for LocalStore {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        blocking(key, move || {
            write_atomically(&path, |f| {
                f.write_all(&bytes)?;
                Ok(bytes.len() as u64)
            })
        })
        .await
        .map(|_| ())
    }

    async fn put_file(&self, key: &str, source: &Path) -> Result<u64, StoreError> {
        let path = self.path_of(key)?;
        let source = source.to_path_buf();
        blocking(key, move || {
            if let Some(size) = link_atomically(&source, &path)? {
                return Ok(size);
            }
            let mut input = std::fs::File::open(&source)?;
            write_atomically(&path, |f| std::io::copy(&mut input, f))
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let path = self.path_of(key)?;
        blocking(key, move || std::fs::read(path).map(Bytes::from)).await
    }

    async fn get_to_file(&self, key: &str, target: &Path) -> Result<u64, StoreError> {
        let path = self.path_of(key)?;
        let target = target.to_path_buf();
        blocking(key, move || {
            let mut input = std::fs::File::open(&path)?;
            write_atomically(&target, |f| std::io::copy(&mut input, f))
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let root = self.root.clone();
        let prefix_owned = prefix.to_string();
        // Walk only the deepest directory the prefix names whole.
        let start = match prefix.rfind('/') {
            Some(i) => {
                validate_key(&prefix[..i])?;
                root.join(&prefix[..i])
            }
            None => root.clone(),
        };
        let mut found = blocking(prefix, move || {
            let mut out = Vec::new();
            walk(&root, &start, &mut out)?;
            Ok(out)
        })
        .await?;
        found.retain(|o| o.key.starts_with(&prefix_owned));
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        match blocking(key, move || std::fs::remove_file(path)).await {
            Err(StoreError::NotFound { .. }) => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, LocalStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path().join("store")).unwrap();
        (dir, store)
    }

    async fn put(store: &LocalStore, key: &str, bytes: &'static [u8]) {
        store.put(key, Bytes::from_static(bytes)).await.unwrap();
    }

    async fn keys(store: &LocalStore, prefix: &str) -> Vec<String> {
        store
            .list(prefix)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect()
    }

    #[tokio::test]
    async fn objects_round_trip_and_list_by_prefix_in_key_order() {
        let (_dir, store) = store().await;
        let m = "c1/orders/0/manifests/3-10.json";
        put(&store, "c1/orders/0/manifests/3-20.json", b"m2").await;
        put(&store, m, b"m1").await;
        put(&store, "c1/orders/10/manifests/1-1.json", b"other").await;
        assert_eq!(store.get(m).await.unwrap(), Bytes::from_static(b"m1"));
        assert_eq!(
            keys(&store, "c1/orders/0/").await,
            [m, "c1/orders/0/manifests/3-20.json"]
        );
        assert_eq!(store.list("c1/orders/0/").await.unwrap()[0].size, 2);
        // A string prefix, as in S3: "c1/orders/1" also matches partition 10.
        assert_eq!(
            keys(&store, "c1/orders/1").await,
            ["c1/orders/10/manifests/1-1.json"]
        );
        assert!(keys(&store, "nothing/here/").await.is_empty());

        // Overwrite, then delete (twice: deleting a missing object is fine).
        put(&store, m, b"new").await;
        assert_eq!(store.get(m).await.unwrap(), Bytes::from_static(b"new"));
        store.delete(m).await.unwrap();
        store.delete(m).await.unwrap();
        assert!(matches!(
            store.get(m).await,
            Err(StoreError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn files_go_in_and_come_out_whole() {
        let (dir, store) = store().await;
        let source = dir.path().join("00000000000000000000.log");
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&source, &data).unwrap();
        let key = "c1/orders/0/segments/0-1234abcd.log";
        assert_eq!(
            store.put_file(key, &source).await.unwrap(),
            data.len() as u64
        );
        let target = dir.path().join("restored/0.log");
        assert_eq!(
            store.get_to_file(key, &target).await.unwrap(),
            data.len() as u64
        );
        assert_eq!(std::fs::read(&target).unwrap(), data);
        // On the same file system the object is a hard link: no second copy of the data.
        {
            use std::os::unix::fs::MetadataExt;
            assert_eq!(std::fs::metadata(&source).unwrap().nlink(), 2);
            // The log replaces a sealed file by rename: the object keeps its bytes.
            let replacement = dir.path().join("replacement");
            std::fs::write(&replacement, b"compacted").unwrap();
            std::fs::rename(&replacement, &source).unwrap();
            assert_eq!(&store.get(key).await.unwrap()[..], &data[..]);
        }
        // A missing object leaves no file behind.
        let missing = dir.path().join("restored/missing.log");
        assert!(matches!(
            store
                .get_to_file("c1/orders/0/segments/9-0.log", &missing)
                .await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(!missing.exists());
        // Temporary files of an interrupted write are never listed.
        std::fs::write(
            store.root().join("c1/orders/0/segments/.tmp-5-0.log-1-2"),
            b"half",
        )
        .unwrap();
        assert_eq!(keys(&store, "c1/").await, [key]);
    }

    #[tokio::test]
    async fn keys_that_could_escape_the_store_are_refused() {
        let (_dir, store) = store().await;
        for key in [
            "", "/abs", "a//b", "a/../b", "../x", "a/./b", "a/", "a/.tmp-x",
        ] {
            assert!(
                matches!(
                    store.put(key, Bytes::from_static(b"x")).await,
                    Err(StoreError::InvalidKey { .. })
                ),
                "{key:?} was accepted"
            );
        }
    }
}
