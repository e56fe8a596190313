//! `logbook bench snapshot`: snapshots in S3 against the S3 server's own speed, in one run.
//!
//! 1. An S3-protocol server (`s3s-fs`, in this process, on the same disk) and three nodes
//!    (RF=3, snapshots in that server); `--gib` GiB produced into one partition; a snapshot of
//!    it taken on its leader.
//! 2. Raw GET: every object of that manifest fetched with `aws-sdk-s3`, four at a time, bytes
//!    discarded: what the server and the SDK deliver, MB/s.
//! 3. Restore: the same objects through the restore path (`fetch_segments`: four at a time,
//!    each written to a file, fsynced, CRC-checked and cut to the snapshot), MB/s;
//!    `restore_vs_raw_get` is the ratio.
//! 4. Replacement: a follower is SIGKILLed and its disk wiped; a new node joins, installs the
//!    snapshot from S3 and catches up. `leader_egress_fraction` is the bytes of Raft entries
//!    the new node received over the network divided by the bytes its replica holds.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{StreamExt, TryStreamExt};

use super::broker::{BenchError, BrokerBenchOptions, produce_run};
use super::cluster::{Node, free_port, start_cluster_seeds};
use crate::client::{Client, ClusterClient, ReadFrom};
use crate::snapshot::{
    PARALLEL_DOWNLOADS, S3Location, S3Server, S3Store, SnapshotStore, fetch_segments, get_manifest,
};

/// Access key of the benchmark's S3 server.
pub const S3_KEY: &str = "bench";
/// Its secret.
pub const S3_SECRET: &str = "bench-secret";

/// Settings of one run (also the flags of `logbook bench snapshot`).
#[derive(Debug, Clone, clap::Args)]
pub struct SnapshotBenchOptions {
    /// Where the nodes' data and the S3 server's files go (emptied first, removed at the end).
    #[arg(long, default_value = "target/bench-snapshot")]
    pub data_dir: PathBuf,
    /// GiB produced into the partition.
    #[arg(long, default_value_t = 2.0)]
    pub gib: f64,
    /// Segment size, MiB.
    #[arg(long, default_value_t = 64)]
    pub segment_mib: u64,
}

/// Runs the benchmark, printing as it goes; the last line is the summary.
pub fn run(opts: &SnapshotBenchOptions) -> Result<(), BenchError> {
    let dir = opts.data_dir.clone();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(bench(opts, &dir));
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

fn mb_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9)
}

async fn bench(opts: &SnapshotBenchOptions, dir: &Path) -> Result<(), BenchError> {
    let s3 = S3Server::bind(
        "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
        &dir.join("s3"),
        &["bench"],
        S3_KEY,
        S3_SECRET,
    )
    .await?;
    let endpoint = s3.endpoint();
    let segment = (opts.segment_mib << 20).to_string();
    let extra = [
        "--snapshot-store",
        "s3://bench/logbook",
        "--s3-endpoint",
        &endpoint,
        "--s3-force-path-style",
        "true",
        "--segment-max-bytes",
        &segment,
        "--snapshot-interval-ms",
        "3600000",
        "--snapshot-keep-entries",
        "100",
        "--dead-node-grace-ms",
        "2000",
    ];
    let total = (opts.gib * (1u64 << 30) as f64) as u64;
    println!(
        "logbook bench snapshot: {:.1} GiB in one partition at RF=3, {} MiB segments, S3 server s3s-fs on {endpoint}",
        opts.gib, opts.segment_mib
    );

    // 1. Data, and a fresh snapshot of it.
    let (mut nodes, seeds) = start_cluster_seeds(&dir.join("cluster"), &extra).await?;
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let mut admin = Client::connect(&addrs[0]).await?;
    admin.create_topic("bench", 1, Default::default()).await?;
    let cluster = ClusterClient::connect(&addrs, ReadFrom::Leader).await?;
    let leader = cluster.leader("bench", 0).ok_or("no leader")?;
    let load = BrokerBenchOptions {
        server: None,
        data_dir: dir.to_path_buf(),
        streams: 8,
        record_bytes: 1024,
        records_per_request: 64,
        in_flight: 8,
        partitions: 1,
        total_mib: total >> 20,
        runs: 1,
        tls: false,
    };
    let produced = produce_run(&Client::connect(&leader).await?, &load, total, None).await?;
    println!("  produced at {:.0} MB/s", produced.mb_s);
    let taken = Instant::now();
    let created = cluster.create_snapshot("bench", 0).await?;
    println!(
        "  snapshot {} ({} objects, {:.2} GB) in {:.1} s",
        created.manifest_key,
        created.objects,
        created.bytes as f64 / 1e9,
        taken.elapsed().as_secs_f64()
    );
    let location = S3Location {
        endpoint: endpoint.clone(),
        force_path_style: true,
        ..S3Location::parse("s3://bench/logbook").map_err(|e| e.to_string())?
    };
    let store: Arc<dyn SnapshotStore> =
        Arc::new(S3Store::with_credentials(&location, S3_KEY, S3_SECRET));
    let manifest = get_manifest(&*store, &created.manifest_key)
        .await
        .map_err(|e| e.to_string())?;
    let object_bytes: u64 = manifest.segments.iter().map(|s| s.size).sum();

    // 2. Raw GET of the same objects.
    let started = Instant::now();
    futures_util::stream::iter(manifest.segments.clone())
        .map(|object| {
            let store = store.clone();
            async move { store.get(&object.key).await.map(|b| b.len()) }
        })
        .buffer_unordered(PARALLEL_DOWNLOADS)
        .try_collect::<Vec<usize>>()
        .await
        .map_err(|e| e.to_string())?;
    let raw = mb_s(object_bytes, started.elapsed());
    println!("  raw GET:  {raw:.0} MB/s ({PARALLEL_DOWNLOADS} at a time, bytes discarded)");

    // 3. The restore path.
    let staging = dir.join("restore");
    let started = Instant::now();
    fetch_segments(store.clone(), &manifest, &staging, &|_| {})
        .await
        .map_err(|e| e.to_string())?;
    let restore = mb_s(object_bytes, started.elapsed());
    let restore_vs_raw_get = restore / raw.max(1e-9);
    println!(
        "  restore:  {restore:.0} MB/s (written, fsynced, CRC-checked; {restore_vs_raw_get:.2} of raw GET)"
    );
    let _ = std::fs::remove_dir_all(&staging);

    // 4. Replacement of a follower.
    let hw = admin
        .describe_topic("bench")
        .await?
        .partition_info
        .first()
        .map(|p| p.high_watermark)
        .unwrap_or(0);
    let victim = nodes
        .iter()
        .position(|n| n.addr != leader)
        .ok_or("no follower")?;
    nodes.remove(victim).kill();
    let _ = std::fs::remove_dir_all(dir.join("cluster").join(format!("node{victim}")));
    let gossip = format!("127.0.0.1:{}", free_port()?);
    let mut args: Vec<String> = [
        "--gossip-addr",
        &gossip,
        "--join",
        &seeds,
        "--bootstrap-expect",
        "3",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let started = Instant::now();
    let new = Node::start(&dir.join("cluster").join("new"), &args)?;
    let mut client = Client::connect(&new.addr).await?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let info = loop {
        if let Ok(t) = client.describe_topic("bench").await
            && let Some(p) = t.partition_info.first()
            && p.high_watermark >= hw
            && !p.snapshot_manifest.is_empty()
        {
            break p.clone();
        }
        if Instant::now() > deadline {
            return Err("the new node did not catch up within 10 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let caught_up = started.elapsed();
    let leader_egress_fraction =
        info.replication_bytes_received as f64 / info.size_bytes.max(1) as f64;
    println!(
        "  replacement: caught up in {:.1} s (start, gossip, {} ms dead-node grace, install, tail); {} bytes over Raft for {:.2} GB held ({leader_egress_fraction:.3})",
        caught_up.as_secs_f64(),
        2000,
        info.replication_bytes_received,
        info.size_bytes as f64 / 1e9
    );
    new.kill();
    for n in nodes {
        n.kill();
    }
    drop(s3);
    println!(
        "bench-snapshot: restore_vs_raw_get={restore_vs_raw_get:.2} leader_egress_fraction={leader_egress_fraction:.3}"
    );
    Ok(())
}
