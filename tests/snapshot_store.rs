//! The S3 snapshot store against a real S3-protocol server (`s3s` + `s3s-fs`, started here on
//! a random port, SigV4 checked) reached through `aws-sdk-s3`: objects, multipart files,
//! wrong credentials, an unreachable store, corrupt objects, and garbage collection.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use logbook::snapshot::manifest::{segment_key, upload_bytes, upload_file};
use logbook::snapshot::{
    LocalStore, Manifest, RestoreError, S3Location, S3Server, S3Store, SnapshotStore, StoreError,
    collect_garbage, fetch_segments, manifest_keys, put_manifest,
};

const KEY: &str = "test-key";
const SECRET: &str = "test-secret";

struct Fixture {
    _dir: tempfile::TempDir,
    server: S3Server,
    store: S3Store,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let server = S3Server::bind(
        "127.0.0.1:0".parse().unwrap(),
        &dir.path().join("s3"),
        &["snaps"],
        KEY,
        SECRET,
    )
    .await
    .unwrap();
    let store = S3Store::with_credentials(&location(&server.endpoint()), KEY, SECRET);
    Fixture {
        _dir: dir,
        server,
        store,
    }
}

fn location(endpoint: &str) -> S3Location {
    S3Location {
        endpoint: endpoint.to_string(),
        force_path_style: true,
        ..S3Location::parse("s3://snaps/team/logbook").unwrap()
    }
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_and_multipart_files_round_trip_under_the_prefix() {
    let f = fixture().await;
    f.store
        .put("c1/t/0/manifests/a.json", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    f.store
        .put("c1/t/1/manifests/b.json", Bytes::from_static(b"[]"))
        .await
        .unwrap();
    assert_eq!(
        f.store.get("c1/t/0/manifests/a.json").await.unwrap(),
        Bytes::from_static(b"{}")
    );
    // The prefix is where the objects really are on the server.
    assert!(
        f.server
            .root()
            .join("snaps/team/logbook/c1/t/0/manifests/a.json")
            .is_file()
    );
    let listed: Vec<String> = f
        .store
        .list("c1/t/")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(
        listed,
        vec!["c1/t/0/manifests/a.json", "c1/t/1/manifests/b.json"]
    );

    // 20 MiB goes up in three parts and comes back whole.
    let data = pseudo_random(20 << 20, 7);
    let source = f._dir.path().join("big.log");
    std::fs::write(&source, &data).unwrap();
    let size = f
        .store
        .put_file("c1/t/0/segments/big.log", &source)
        .await
        .unwrap();
    assert_eq!(size, data.len() as u64);
    let target = f._dir.path().join("out/big.log");
    let got = f
        .store
        .get_to_file("c1/t/0/segments/big.log", &target)
        .await
        .unwrap();
    assert_eq!(got, data.len() as u64);
    assert!(
        std::fs::read(&target).unwrap() == data,
        "multipart object differs"
    );
    let info = f.store.list("c1/t/0/segments/").await.unwrap();
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].size, data.len() as u64);

    f.store.delete("c1/t/0/segments/big.log").await.unwrap();
    f.store.delete("c1/t/0/segments/big.log").await.unwrap();
    match f.store.get("c1/t/0/segments/big.log").await {
        Err(StoreError::NotFound { key }) => assert_eq!(key, "c1/t/0/segments/big.log"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_and_an_unreachable_store_are_clear_errors() {
    let f = fixture().await;
    let wrong = S3Store::with_credentials(&location(&f.server.endpoint()), KEY, "not-the-secret");
    match wrong.put("c1/x", Bytes::from_static(b"x")).await {
        Err(e @ StoreError::Refused { .. }) => {
            let text = e.to_string();
            assert!(text.contains("SignatureDoesNotMatch"), "{text}");
            assert!(text.contains("put"), "{text}");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    assert!(matches!(
        wrong.list("c1/").await,
        Err(StoreError::Refused { .. })
    ));

    // A port nobody listens on: unavailable (retry later), not refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let down =
        S3Store::with_credentials(&location(&format!("http://127.0.0.1:{port}")), KEY, SECRET);
    match down.get("c1/x").await {
        Err(e @ StoreError::Unavailable { .. }) => {
            assert!(e.to_string().contains("unavailable"), "{e}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

fn manifest(
    cluster: &str,
    group: &str,
    index: u64,
    segments: Vec<logbook::snapshot::SegmentObject>,
) -> Manifest {
    Manifest {
        version: logbook::snapshot::MANIFEST_VERSION,
        cluster_id: cluster.into(),
        group: group.into(),
        last_log_id: Some((1, index)),
        next_offset: index,
        segments,
        ..Manifest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_object_is_refused_and_a_good_one_is_verified_and_cut() {
    let f = fixture().await;
    let store: Arc<dyn SnapshotStore> = Arc::new(f.store.clone());
    let data = pseudo_random(300_000, 1);
    let path = f._dir.path().join("seg.log");
    std::fs::write(&path, &data).unwrap();
    let mut object = upload_file(&*store, "c1/t/0", 100, &path).await.unwrap();
    assert_eq!(
        object.key,
        segment_key("c1/t/0", 100, crc32c::crc32c(&data))
    );
    object.used_bytes = 200_000;
    let m = manifest("c1", "t/0", 9, vec![object.clone()]);

    // Good: verified and cut to the bytes the snapshot uses.
    let staging = f._dir.path().join("staging");
    let files = fetch_segments(store.clone(), &m, &staging, &|_| {})
        .await
        .unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].0, 100);
    assert_eq!(std::fs::read(&files[0].1).unwrap(), &data[..200_000]);

    // One flipped byte on the server: a clear error naming the object, and no file left.
    let on_server = f.server.root().join("snaps/team/logbook").join(&object.key);
    let mut bytes = std::fs::read(&on_server).unwrap();
    bytes[12_345] ^= 0x40;
    std::fs::write(&on_server, &bytes).unwrap();
    let staging2 = f._dir.path().join("staging2");
    // (The SDK checks the checksum s3s-fs stored with the object; our CRC would catch it too.)
    match fetch_segments(store.clone(), &m, &staging2, &|_| {}).await {
        Err(e @ RestoreError::Store(StoreError::Checksum { .. })) => {
            assert!(e.to_string().contains(&object.key), "{e}");
        }
        other => panic!("expected a checksum failure, got {other:?}"),
    }
    let left: Vec<_> = std::fs::read_dir(&staging2).unwrap().collect();
    assert!(
        left.is_empty(),
        "a corrupt download must not stay: {left:?}"
    );

    // A store that keeps no checksum of its own (a local directory): our CRC-32C catches it.
    let local: Arc<dyn SnapshotStore> =
        Arc::new(LocalStore::open(f._dir.path().join("local")).unwrap());
    local
        .put(&object.key, Bytes::from(bytes.clone()))
        .await
        .unwrap();
    match fetch_segments(local, &m, &f._dir.path().join("staging4"), &|_| {}).await {
        Err(e @ RestoreError::Corrupt { .. }) => {
            assert!(e.to_string().contains(&object.key), "{e}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }

    // A missing object is a clear error too.
    f.store.delete(&object.key).await.unwrap();
    assert!(matches!(
        fetch_segments(store, &m, &f._dir.path().join("staging3"), &|_| {}).await,
        Err(RestoreError::Store(StoreError::NotFound { .. }))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_keeps_what_the_newest_manifests_and_pending_uploads_need() {
    let f = fixture().await;
    let prefix = "c1/t/0";
    let a = upload_bytes(&f.store, prefix, 0, Bytes::from_static(b"aaaa"))
        .await
        .unwrap();
    let b = upload_bytes(&f.store, prefix, 4, Bytes::from_static(b"bbbb"))
        .await
        .unwrap();
    let c = upload_bytes(&f.store, prefix, 8, Bytes::from_static(b"cccc"))
        .await
        .unwrap();
    let d = upload_bytes(&f.store, prefix, 12, Bytes::from_static(b"dddd"))
        .await
        .unwrap();
    let pending = upload_bytes(&f.store, prefix, 16, Bytes::from_static(b"eeee"))
        .await
        .unwrap();
    let orphan = upload_bytes(&f.store, prefix, 20, Bytes::from_static(b"ffff"))
        .await
        .unwrap();
    // Three manifests; the oldest is the only one pointing at `a`.
    put_manifest(
        &f.store,
        &manifest("c1", "t/0", 1, vec![a.clone(), b.clone()]),
    )
    .await
    .unwrap();
    put_manifest(
        &f.store,
        &manifest("c1", "t/0", 2, vec![b.clone(), c.clone()]),
    )
    .await
    .unwrap();
    put_manifest(
        &f.store,
        &manifest("c1", "t/0", 3, vec![c.clone(), d.clone()]),
    )
    .await
    .unwrap();
    let keys = manifest_keys(&f.store, prefix).await.unwrap();
    assert_eq!(keys.len(), 3);
    assert!(
        keys[0].ends_with("00000000000000000001-00000000000000000003.json"),
        "{keys:?}"
    );

    let report = collect_garbage(
        &f.store,
        prefix,
        2,
        0,
        &BTreeSet::from([pending.key.clone()]),
    )
    .await
    .unwrap();
    assert_eq!(report.manifests, 1);
    assert_eq!(report.segments, 2, "a and the orphan");
    let left: BTreeSet<String> = f
        .store
        .list(&format!("{prefix}/segments/"))
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(
        left,
        BTreeSet::from([b.key.clone(), c.key, d.key, pending.key]),
        "orphan {} and a {} go",
        orphan.key,
        a.key
    );
    assert_eq!(manifest_keys(&f.store, prefix).await.unwrap().len(), 2);

    // A manifest younger than the grace period stays whatever `retain` says (a replica may be
    // installing it): with retain = 1, the newest stays by count, the young one by age.
    let mut young = manifest("c1", "t/0", 0, vec![b.clone()]);
    young.created_ms = logbook::log::now_ms();
    put_manifest(&f.store, &young).await.unwrap();
    let report = collect_garbage(
        &f.store,
        prefix,
        1,
        logbook::snapshot::manifest::GC_GRACE_MS,
        &BTreeSet::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        report.manifests, 1,
        "only the old, not newest manifest goes"
    );
    let kept = manifest_keys(&f.store, prefix).await.unwrap();
    assert_eq!(kept.len(), 2);
    assert!(kept[1].ends_with("-00000000000000000000.json"), "{kept:?}");
    assert!(
        f.store.get(&b.key).await.is_ok(),
        "the young manifest's object stays"
    );
}
