//! Snapshots as pointers: the snapshot store (an object store holding sealed segments and
//! manifests) and its layout.
//!
//! ```text
//! <prefix>/<cluster_id>/<topic>/<partition>/segments/<base_offset>-<crc32c>.log
//! <prefix>/<cluster_id>/<topic>/<partition>/manifests/<term>-<index>.json
//! <prefix>/<cluster_id>/meta/manifests/<term>-<index>.json
//! ```
//!
//! - [`store`]: the [`SnapshotStore`] trait and the local-directory backend ([`LocalStore`]);
//! - [`s3`]: the S3 backend ([`S3Store`], `aws-sdk-s3`);
//! - [`manifest`]: manifests, uploads, verified parallel downloads, garbage collection;
//! - [`s3_server`]: an S3-protocol server over a directory (`logbook s3-server`, tests).
//!
//! The tasks that use them live with the broker (`broker::snapshots`, `broker::restore`): this
//! module depends on nothing but the store crates.

pub mod manifest;
pub mod s3;
pub mod s3_server;
pub mod store;

pub use manifest::{
    GcReport, MANIFEST_VERSION, Manifest, PARALLEL_DOWNLOADS, RestoreError, SegmentObject,
    collect_garbage, fetch_segments, get_manifest, group_prefix, manifest_key, manifest_keys,
    put_manifest,
};
pub use s3::{S3Location, S3Store};
pub use s3_server::S3Server;
pub use store::{LocalStore, ObjectInfo, SnapshotStore, StoreError, validate_key};

/// Opens the store a URL names: `s3://bucket/prefix` (with `s3`'s endpoint, region and
/// addressing settings; credentials from the standard AWS chain), `file:///path` or a path.
pub async fn open_store(
    url: &str,
    s3: &S3Location,
) -> Result<std::sync::Arc<dyn SnapshotStore>, String> {
    if url.starts_with("s3://") {
        let mut location = S3Location::parse(url)?;
        location.region = s3.region.clone();
        location.endpoint = s3.endpoint.clone();
        location.force_path_style = s3.force_path_style;
        return Ok(std::sync::Arc::new(S3Store::connect(&location).await));
    }
    let path = url.strip_prefix("file://").unwrap_or(url);
    if path.is_empty() || path.contains("://") {
        return Err(format!(
            "snapshot store {url:?} is neither s3://bucket/prefix nor a directory"
        ));
    }
    LocalStore::open(path)
        .map(|s| std::sync::Arc::new(s) as std::sync::Arc<dyn SnapshotStore>)
        .map_err(|e| e.to_string())
}
