//! Snapshots as pointers: the snapshot store (an object store holding sealed segments and
//! manifests) and its layout.
//!
//! ```text
//! <prefix>/<cluster_id>/<topic>/<partition>/segments/<base_offset>-<crc32c>.log
//! <prefix>/<cluster_id>/<topic>/<partition>/manifests/<term>-<index>.json
//! <prefix>/<cluster_id>/meta/manifests/<term>-<index>.json
//! ```
//!
//! Built so far (issue 5, started): the [`SnapshotStore`] trait and its local-directory backend
//! ([`LocalStore`]). The S3 backend, manifests, uploads as segments seal, restore and garbage
//! collection are not built yet.

pub mod store;

pub use store::{LocalStore, ObjectInfo, SnapshotStore, StoreError, validate_key};
