//! Snapshots in S3 with real broker processes and a real S3-protocol server (`s3s-fs`, started
//! here, SigV4 credentials passed to the brokers through the standard AWS environment):
//! manifests that cover exactly the log, a replacement node that restores from S3 and gets only
//! the tail over Raft, and a store outage that produce and consume ride through.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::broker::{S3_KEY, S3_SECRET};
use common::cluster::{Cluster, check_replicas, produce_unique, replicas, wait_for};
use logbook::client::{Client, ClusterClient, ReadFrom};
use logbook::log::{BatchHeader, NewRecord};
use logbook::snapshot::{Manifest, S3Location, S3Server, S3Store, SnapshotStore, get_manifest};

/// Flags of every node: the S3 store, small segments, frequent snapshots.
fn s3_flags(endpoint: &str) -> Vec<String> {
    [
        "--snapshot-store",
        "s3://snaps/prod",
        "--s3-endpoint",
        endpoint,
        "--s3-force-path-style",
        "true",
        "--segment-max-bytes",
        "131072",
        "--max-batch-bytes",
        "65536",
        "--snapshot-interval-ms",
        "500",
        "--snapshot-keep-entries",
        "2",
        "--dead-node-grace-ms",
        "2000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Starts the S3 server (bucket `snaps`, the test credentials) on `addr` over `root`.
async fn start_s3(addr: &str, root: &std::path::Path) -> S3Server {
    S3Server::bind(addr.parse().unwrap(), root, &["snaps"], S3_KEY, S3_SECRET)
        .await
        .unwrap()
}

fn store(endpoint: &str) -> S3Store {
    let location = S3Location {
        endpoint: endpoint.to_string(),
        force_path_style: true,
        ..S3Location::parse("s3://snaps/prod").unwrap()
    };
    S3Store::with_credentials(&location, S3_KEY, S3_SECRET)
}

/// Produces `requests` requests of ten 1,000-byte records to each of `partitions`; returns
/// what was acknowledged per partition (offset -> value).
async fn produce_load(
    client: &ClusterClient,
    topic: &str,
    partitions: u32,
    requests: usize,
    tag: &str,
) -> Vec<BTreeMap<u64, String>> {
    let mut acked = vec![BTreeMap::new(); partitions as usize];
    for i in 0..requests {
        for p in 0..partitions {
            let values: Vec<String> = (0..10)
                .map(|j| format!("{tag}-p{p}-{i}-{j}-{}", "x".repeat(980)))
                .collect();
            let records: Vec<NewRecord> = values
                .iter()
                .map(|v| NewRecord {
                    value: Some(Bytes::from(v.clone())),
                    timestamp_ms: 1,
                    ..NewRecord::default()
                })
                .collect();
            let ack = client.produce(topic, Some(p), &records).await.unwrap();
            for (k, v) in values.into_iter().enumerate() {
                acked[p as usize].insert(ack.base_offset + k as u64, v);
            }
        }
    }
    acked
}

/// Downloads a manifest's objects and checks that their batches cover its offsets exactly:
/// from the first object's base up to `next_offset`, without gaps, overlaps or extra bytes.
async fn assert_manifest_covers_its_offsets(store: &S3Store, manifest: &Manifest) {
    assert!(!manifest.segments.is_empty(), "{manifest:?}");
    let mut expected = manifest.segments[0].base_offset;
    assert!(expected <= manifest.log_start_offset);
    for object in &manifest.segments {
        let bytes = store.get(&object.key).await.unwrap();
        assert_eq!(bytes.len() as u64, object.size, "{}", object.key);
        assert_eq!(crc32c::crc32c(&bytes), object.crc32c, "{}", object.key);
        let mut used = &bytes[..object.used_bytes as usize];
        while !used.is_empty() {
            let header = BatchHeader::parse(used).unwrap();
            assert!(
                header.base_offset >= expected,
                "{}: batch at {} overlaps (expected {expected})",
                object.key,
                header.base_offset
            );
            expected = header.next_offset();
            used = &used[header.total_len()..];
        }
    }
    assert_eq!(
        expected, manifest.next_offset,
        "objects end where the manifest says"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_node_restores_from_s3_and_gets_only_the_tail_over_raft() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = start_s3("127.0.0.1:0", &dir.path().join("s3")).await;
    let flags = s3_flags(&s3.endpoint());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut cluster = Cluster::start_with(dir.path(), 3, &flags);
    cluster.wait_formed(3).await;
    let mut admin = cluster.any_client().await;
    admin
        .create_topic("snap", 2, Default::default())
        .await
        .unwrap();
    let client = std::sync::Arc::new(
        ClusterClient::connect(&cluster.addrs(), ReadFrom::Leader)
            .await
            .unwrap(),
    );
    // About 1 MB per partition: eight or more sealed 128 KiB segments each.
    let mut acked = produce_load(&client, "snap", 2, 100, "before").await;

    // A fresh snapshot of each partition: its manifest names objects that hold exactly its
    // offsets, and every record acknowledged so far is below its end.
    let s3_store = store(&s3.endpoint());
    for p in 0..2u32 {
        let created = client.create_snapshot("snap", p).await.unwrap();
        assert!(created.objects >= 8, "{created:?}");
        let manifest = get_manifest(&s3_store, &created.manifest_key)
            .await
            .unwrap();
        assert_eq!(manifest.next_offset, created.next_offset);
        let last_acked = acked[p as usize].keys().next_back().copied().unwrap();
        assert!(manifest.next_offset > last_acked, "{created:?}");
        assert_manifest_covers_its_offsets(&s3_store, &manifest).await;
    }

    // Node 2 dies with its disk; a new node (empty disk) takes its place.
    let old_id = {
        let metadata = client.refresh().await.unwrap();
        let victim = cluster.addr(2).unwrap();
        metadata
            .servers
            .iter()
            .find(|s| s.address == victim)
            .unwrap()
            .node_id
    };
    let victim = cluster.addr(2).unwrap();
    cluster.kill(&victim);
    std::fs::remove_dir_all(dir.path().join("node2")).unwrap();
    let slot = cluster.add_node(&[]);
    let new_addr = cluster.addr(slot).unwrap();
    // A few writes while it joins (once both partitions have a live leader again).
    let via = cluster.addr(0).unwrap();
    wait_for(
        Duration::from_secs(30),
        "a live leader for both partitions",
        || {
            let (via, victim) = (via.clone(), victim.clone());
            async move {
                let mut live = true;
                for p in 0..2 {
                    let leader = common::cluster::leader_addr(&via, "snap", p).await;
                    live &= leader.is_some_and(|l| l != victim);
                }
                live
            }
        },
    )
    .await;
    client.refresh().await.unwrap();
    for i in 0..20u64 {
        let p = (i % 2) as u32;
        let (ack, value) = produce_unique(&client, "snap", p, &format!("during{i}")).await;
        acked[p as usize].insert(ack.base_offset, value);
    }
    wait_for(
        Duration::from_secs(90),
        "the new node holds both partitions",
        || {
            let (via, new_addr) = (via.clone(), new_addr.clone());
            async move {
                let Ok(mut c) = Client::connect(&via).await else {
                    return false;
                };
                let Ok(m) = c.metadata().await else {
                    return false;
                };
                let Some(new_id) = m
                    .servers
                    .iter()
                    .find(|s| s.address == new_addr)
                    .map(|s| s.node_id)
                else {
                    return false;
                };
                (0..2).all(|p| {
                    let r = replicas(&m, "snap", p);
                    r.contains(&new_id) && !r.contains(&old_id) && r.len() == 3
                })
            }
        },
    )
    .await;
    let addrs = cluster.addrs();
    for p in 0..2u32 {
        check_replicas(&addrs, "snap", p, &acked[p as usize]).await;
    }

    // What the leaders sent the new node over Raft is a small part of what it holds: the
    // history came from S3.
    let logs: String = cluster
        .nodes
        .iter()
        .flatten()
        .map(|n| {
            n.log()
                .lines()
                .filter(|l| l.contains("snap/") && !l.contains("DEBUG"))
                .map(|l| format!("{}: {l}\n", n.addr))
                .collect::<String>()
        })
        .collect();
    let mut new_node = Client::connect(&new_addr).await.unwrap();
    let described = new_node.describe_topic("snap").await.unwrap();
    let (mut received, mut size) = (0u64, 0u64);
    for info in &described.partition_info {
        assert!(
            !info.snapshot_manifest.is_empty(),
            "partition {} installed a snapshot: {info:?}\n{logs}",
            info.partition
        );
        received += info.replication_bytes_received;
        size += info.size_bytes;
    }
    let fraction = received as f64 / size as f64;
    eprintln!("new node: {received} bytes over Raft for {size} bytes held ({fraction:.3})");
    assert!(size > 2_000_000, "{described:?}");
    assert!(fraction < 0.1, "{received} of {size} bytes came over Raft");
    let log = cluster.nodes[slot].as_ref().unwrap().log();
    assert!(log.contains("snapshot installed"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_does_not_stop_produce_or_consume_and_uploads_resume() {
    let dir = tempfile::tempdir().unwrap();
    let s3_root = dir.path().join("s3");
    let s3 = start_s3("127.0.0.1:0", &s3_root).await;
    let s3_addr = s3.addr();
    let endpoint = s3.endpoint();
    let flags = s3_flags(&endpoint);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let cluster = Cluster::start_with(dir.path(), 3, &flags);
    cluster.wait_formed(3).await;
    let mut admin = cluster.any_client().await;
    admin
        .create_topic("out", 1, Default::default())
        .await
        .unwrap();
    let client = ClusterClient::connect(&cluster.addrs(), ReadFrom::Replicas)
        .await
        .unwrap();
    let mut acked = produce_load(&client, "out", 1, 20, "before").await;
    client.create_snapshot("out", 0).await.unwrap();

    // S3 goes away. Produce and consume go on; snapshots fail with a clear error.
    drop(s3);
    let during = produce_load(&client, "out", 1, 60, "during").await;
    acked[0].extend(during[0].clone());
    let addrs = cluster.addrs();
    check_replicas(&addrs, "out", 0, &acked[0]).await;
    let refused = client.create_snapshot("out", 0).await.unwrap_err();
    assert!(
        refused.to_string().contains("unavailable"),
        "a snapshot without S3: {refused}"
    );
    let leader = common::cluster::leader_addr(&addrs[0], "out", 0)
        .await
        .unwrap();
    let leader_log = cluster
        .nodes
        .iter()
        .flatten()
        .find(|n| n.addr == leader)
        .unwrap()
        .log();
    assert!(
        leader_log.contains("snapshot upload failed"),
        "the leader logs the failing uploads"
    );
    // ... and reports them.
    let mut on_leader = Client::connect(&leader).await.unwrap();
    let info = on_leader
        .describe_topic("out")
        .await
        .unwrap()
        .partition_info[0]
        .clone();
    assert!(info.snapshot_failures > 0, "{info:?}");

    // S3 is back on the same address: the next snapshot covers everything acknowledged.
    let s3 = start_s3(&s3_addr.to_string(), &s3_root).await;
    let s3_store = store(&s3.endpoint());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let created = loop {
        match client.create_snapshot("out", 0).await {
            Ok(c) => break c,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("snapshot not yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("snapshots do not work again after S3 returned: {e}"),
        }
    };
    let last_acked = acked[0].keys().next_back().copied().unwrap();
    assert!(created.next_offset > last_acked, "{created:?}");
    let mut on_leader = Client::connect(&leader).await.unwrap();
    let info = on_leader
        .describe_topic("out")
        .await
        .unwrap()
        .partition_info[0]
        .clone();
    assert_eq!(info.snapshot_failures, 0, "{info:?}");
    assert_eq!(info.snapshot_lag_bytes, 0, "{info:?}");
    let manifest = get_manifest(&s3_store, &created.manifest_key)
        .await
        .unwrap();
    assert_manifest_covers_its_offsets(&s3_store, &manifest).await;
    // Sealed segments went up as well (not only the tail).
    let group = created.manifest_key.split("/manifests/").next().unwrap();
    let objects = s3_store.list(&format!("{group}/segments/")).await.unwrap();
    assert!(objects.len() >= 5, "{objects:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_cluster_is_restored_from_s3_up_to_its_last_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = start_s3("127.0.0.1:0", &dir.path().join("s3")).await;
    let endpoint = s3.endpoint();
    let flags = s3_flags(&endpoint);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut cluster = Cluster::start_with(dir.path(), 3, &flags);
    cluster.wait_formed(3).await;
    let mut admin = cluster.any_client().await;
    admin
        .create_topic("a", 2, Default::default())
        .await
        .unwrap();
    let settings = logbook::proto::v1::TopicConfig {
        retention_ms: Some(3_600_000),
        ..Default::default()
    };
    admin.create_topic("b", 1, settings).await.unwrap();
    let client = ClusterClient::connect(&cluster.addrs(), ReadFrom::Leader)
        .await
        .unwrap();
    let mut acked = produce_load(&client, "a", 2, 30, "a").await;
    acked.extend(produce_load(&client, "b", 1, 30, "b").await);
    // The recovery point: a snapshot of every partition after the writes.
    let mut cluster_id = String::new();
    let mut points = Vec::new();
    for (topic, p) in [("a", 0u32), ("a", 1), ("b", 0)] {
        let created = client.create_snapshot(topic, p).await.unwrap();
        cluster_id = created.manifest_key.split('/').next().unwrap().to_string();
        points.push(created.next_offset);
    }
    let s3_store = store(&endpoint);
    let meta_prefix = format!("{cluster_id}/meta/manifests/");
    // The metadata leader writes a metadata manifest within snapshot_interval_ms of a change.
    wait_for(
        Duration::from_secs(30),
        "a metadata manifest with both topics",
        || {
            let (s3_store, meta_prefix) = (&s3_store, &meta_prefix);
            async move {
                let Ok(keys) = s3_store.list(meta_prefix).await else {
                    return false;
                };
                let Some(newest) = keys.last() else {
                    return false;
                };
                s3_store.get(&newest.key).await.is_ok_and(|body| {
                    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    json["metadata"]["topics"]["b"].is_object()
                })
            }
        },
    )
    .await;

    // `snapshot list` and `snapshot inspect` read the store directly.
    let store_flags = [
        "--store",
        "s3://snaps/prod",
        "--cluster-id",
        &cluster_id,
        "--s3-endpoint",
        &endpoint,
        "--s3-force-path-style",
    ];
    let mut args = vec!["snapshot", "list"];
    args.extend(store_flags);
    let listed = common::broker::cli("127.0.0.1:1", &args, "");
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{listed:?}");
    for group in ["a/0", "a/1", "b/0", "meta"] {
        assert!(text.contains(group), "{group} missing from:\n{text}");
    }
    let mut args = vec!["snapshot", "inspect", "--topic", "a", "--partition", "1"];
    args.extend(store_flags);
    let inspected = common::broker::cli("127.0.0.1:1", &args, "");
    assert!(inspected.status.success(), "{inspected:?}");
    assert!(String::from_utf8_lossy(&inspected.stderr).contains(" 0 missing"));

    // Every node is lost.
    for slot in 0..3 {
        let addr = cluster.addr(slot).unwrap();
        cluster.kill(&addr);
    }
    drop(cluster);

    // A new node is rebuilt from S3 and serves everything up to the recovery point.
    let port = common::cluster::free_port();
    let listen = format!("127.0.0.1:{port}");
    let data_dir = dir.path().join("restored");
    let data_dir_arg = data_dir.display().to_string();
    let mut args = vec![
        "restore",
        "--data-dir",
        &data_dir_arg,
        "--advertise-addr",
        &listen,
    ];
    args.extend(store_flags);
    let restored = common::broker::cli("127.0.0.1:1", &args, "");
    let out = String::from_utf8_lossy(&restored.stdout);
    assert!(restored.status.success(), "{restored:?}");
    assert!(out.contains("2 topic(s), 3 partition(s)"), "{out}");
    // Restoring over a node is refused.
    let again = common::broker::cli("127.0.0.1:1", &args, "");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a node"));

    let node = common::broker::BrokerProcess::start_in(
        None,
        &listen,
        &data_dir,
        &[
            "--snapshot-store",
            "s3://snaps/prod",
            "--s3-endpoint",
            &endpoint,
            "--s3-force-path-style",
            "true",
        ],
    );
    let mut c = node.client().await;
    let b = c.describe_topic("b").await.unwrap();
    assert_eq!(
        b.config.unwrap().retention_ms,
        Some(3_600_000),
        "settings came back: {out}"
    );
    assert!(!out.contains("no metadata manifest"), "{out}");
    for (i, (topic, p)) in [("a", 0u32), ("a", 1), ("b", 0)].into_iter().enumerate() {
        let held: BTreeMap<u64, String> = common::broker::offsets_and_values(
            &common::broker::read_partition(&mut c, topic, p).await,
        )
        .into_iter()
        .collect();
        let expected = if topic == "a" {
            &acked[p as usize]
        } else {
            &acked[2]
        };
        for (offset, value) in expected {
            assert!(*offset < points[i]);
            assert_eq!(held.get(offset), Some(value), "{topic}/{p} at {offset}");
        }
        // And it takes writes again, after the recovery point.
        let ack = c
            .produce(
                topic,
                Some(p),
                &[NewRecord {
                    value: Some(Bytes::from_static(b"after restore")),
                    timestamp_ms: 1,
                    ..NewRecord::default()
                }],
            )
            .await
            .unwrap();
        assert!(ack.base_offset >= points[i], "{ack:?}");
    }
}
