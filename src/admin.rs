//! The snapshot commands of the `logbook` binary: `snapshot list|inspect|create`, `restore`
//! and `s3-server`. `list`, `inspect` and `restore` read the snapshot store directly (no broker
//! needs to run); `create` asks the partition's leader.

use std::path::PathBuf;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::ServerArgs;
use crate::client::ClientError;
use crate::snapshot::{S3Location, SnapshotStore, get_manifest, group_prefix, manifest_keys};

/// Where the snapshot store is (offline commands).
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Snapshot store: s3://bucket/prefix, file:///dir or a directory
    #[arg(long = "store", alias = "from", value_name = "URL")]
    pub store: String,
    /// Cluster id (the first part of every key; `logbook config` on a node does not show it,
    /// its data directory's node.json does)
    #[arg(long, value_name = "ID")]
    pub cluster_id: String,
    /// S3 endpoint URL for S3-compatible servers [default: AWS]
    #[arg(long, value_name = "URL", default_value = "")]
    pub s3_endpoint: String,
    /// S3 region [default: from the AWS environment, else us-east-1]
    #[arg(long, value_name = "REGION", default_value = "")]
    pub s3_region: String,
    /// Path-style S3 addressing
    #[arg(long)]
    pub s3_force_path_style: bool,
}

impl StoreArgs {
    async fn open(&self) -> anyhow::Result<Arc<dyn SnapshotStore>> {
        if crate::snapshot::validate_key(&self.cluster_id).is_err() || self.cluster_id.contains('/')
        {
            anyhow::bail!(
                "--cluster-id {:?} is not a cluster id (it is in any node's data_dir/node.json, \
                 and the first part of every key in the store)",
                self.cluster_id
            );
        }
        let location = S3Location {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            force_path_style: self.s3_force_path_style,
            ..S3Location::default()
        };
        crate::snapshot::open_store(&self.store, &location)
            .await
            .map_err(anyhow::Error::msg)
    }
}

/// `logbook snapshot ...`
#[derive(Debug, clap::Subcommand)]
pub enum SnapshotCommand {
    /// Manifests in the store per partition: log ids, offsets, objects, bytes, age.
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Only this topic.
        #[arg(long)]
        topic: Option<String>,
    },
    /// One manifest in full, and whether every object it names is in the store.
    Inspect {
        #[command(flatten)]
        store: StoreArgs,
        /// Topic.
        #[arg(long)]
        topic: String,
        /// Partition.
        #[arg(long, default_value_t = 0)]
        partition: u32,
        /// Manifest as `term-index` [default: the newest]
        #[arg(long)]
        manifest: Option<String>,
    },
    /// Snapshot partitions now, on their leaders.
    Create {
        #[command(flatten)]
        server: ServerArgs,
        /// Topic.
        #[arg(long)]
        topic: String,
        /// Partition [default: every partition]
        #[arg(long)]
        partition: Option<u32>,
    },
}

/// `logbook restore`
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// The new node's data directory (must not hold a node yet)
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Address the restored node will serve at (recorded in its Raft memberships)
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7400")]
    pub advertise_addr: String,
}

/// `logbook s3-server`
#[derive(Debug, clap::Args)]
pub struct S3ServerArgs {
    /// Directory holding the buckets (one subdirectory each)
    #[arg(long, value_name = "DIR", default_value = "./s3")]
    pub dir: PathBuf,
    /// Address to listen on
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9000")]
    pub listen: std::net::SocketAddr,
    /// Buckets to create
    #[arg(long, value_delimiter = ',', default_value = "logbook")]
    pub bucket: Vec<String>,
    /// Access key clients must sign with (its secret comes from AWS_SECRET_ACCESS_KEY only,
    /// never from a flag visible in `ps`)
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    pub access_key: String,
}

fn age(created_ms: i64) -> String {
    let secs = (crate::log::now_ms() - created_ms).max(0) / 1000;
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Runs a `snapshot` command.
pub async fn snapshot(command: SnapshotCommand) -> anyhow::Result<()> {
    match command {
        SnapshotCommand::List { store: args, topic } => {
            let store = args.open().await?;
            let objects = store.list(&format!("{}/", args.cluster_id)).await?;
            let mut groups: Vec<String> = objects
                .iter()
                .filter_map(|o| {
                    o.key[args.cluster_id.len() + 1..]
                        .split_once("/manifests/")
                        .map(|(g, _)| g.to_string())
                })
                .collect();
            groups.dedup();
            if let Some(t) = &topic {
                groups.retain(|g| g.rsplit_once('/').is_some_and(|(name, _)| name == t));
            }
            if groups.is_empty() {
                anyhow::bail!(
                    "no manifests of cluster {:?} in {}",
                    args.cluster_id,
                    args.store
                );
            }
            println!(
                "{:<24} {:>22} {:>12} {:>12} {:>8} {:>12} {:>6}",
                "GROUP", "LOG ID (term-index)", "START", "END", "OBJECTS", "BYTES", "AGE"
            );
            for group in groups {
                let prefix = group_prefix(&args.cluster_id, &group);
                for key in manifest_keys(&*store, &prefix).await? {
                    if group == crate::snapshot::manifest::META_GROUP {
                        let (t, i) =
                            crate::snapshot::manifest::parse_manifest_key(&key).unwrap_or((0, 0));
                        println!("{group:<24} {:>22}", format!("{t}-{i}"));
                        continue;
                    }
                    match get_manifest(&*store, &key).await {
                        Ok(m) => {
                            let (t, i) = m.last_log_id.unwrap_or((0, 0));
                            println!(
                                "{group:<24} {:>22} {:>12} {:>12} {:>8} {:>12} {:>6}",
                                format!("{t}-{i}"),
                                m.log_start_offset,
                                m.next_offset,
                                m.segments.len(),
                                m.bytes(),
                                age(m.created_ms)
                            );
                        }
                        Err(e) => println!("{group:<24} {key}: unreadable: {e}"),
                    }
                }
            }
            Ok(())
        }
        SnapshotCommand::Inspect {
            store: args,
            topic,
            partition,
            manifest,
        } => {
            let store = args.open().await?;
            let prefix = group_prefix(
                &args.cluster_id,
                &crate::raft::partition_group(&topic, partition),
            );
            let keys = manifest_keys(&*store, &prefix).await?;
            let key = match manifest {
                None => keys.first().cloned(),
                Some(id) => {
                    let (t, i) = id
                        .split_once('-')
                        .and_then(|(t, i)| Some((t.parse().ok()?, i.parse().ok()?)))
                        .ok_or_else(|| anyhow::anyhow!("--manifest {id:?} is not term-index"))?;
                    Some(crate::snapshot::manifest_key(&prefix, t, i))
                }
            }
            .ok_or_else(|| anyhow::anyhow!("no manifests under {prefix}"))?;
            let m = get_manifest(&*store, &key).await?;
            println!("{key}");
            println!("{}", serde_json::to_string_pretty(&m)?);
            let present: std::collections::BTreeMap<String, u64> = store
                .list(&format!("{prefix}/segments/"))
                .await?
                .into_iter()
                .map(|o| (o.key, o.size))
                .collect();
            let mut missing = 0;
            for s in &m.segments {
                if present.get(&s.key) != Some(&s.size) {
                    missing += 1;
                    eprintln!("missing or wrong size: {}", s.key);
                }
            }
            eprintln!(
                "{} object(s), {} bytes of records, {} missing; age {}",
                m.segments.len(),
                m.bytes(),
                missing,
                age(m.created_ms)
            );
            if missing > 0 {
                anyhow::bail!("{missing} object(s) of {key} are missing");
            }
            Ok(())
        }
        SnapshotCommand::Create {
            server,
            topic,
            partition,
        } => {
            let client = server.cluster().await?;
            let partitions: Vec<u32> = match partition {
                Some(p) => vec![p],
                None => (0..client.partitions(&topic).await?).collect(),
            };
            for p in partitions {
                let created = client
                    .create_snapshot(&topic, p)
                    .await
                    .map_err(|e: ClientError| anyhow::anyhow!("{topic}/{p}: {e}"))?;
                println!(
                    "{topic}/{p}: {} (log id {}-{}, offsets {}..{}, {} objects, {} bytes)",
                    created.manifest_key,
                    created.last_log_term,
                    created.last_log_index,
                    created.log_start_offset,
                    created.next_offset,
                    created.objects,
                    created.bytes
                );
            }
            Ok(())
        }
    }
}

/// Runs `restore`, with a progress bar on a terminal.
pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let store = args.store.open().await?;
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {bytes} downloaded ({bytes_per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let progress = {
        let bar = bar.clone();
        move |group: &str, bytes: u64| {
            bar.set_message(group.to_string());
            bar.inc(bytes);
        }
    };
    let report = crate::broker::restore::restore(
        store,
        &args.store.cluster_id,
        &args.data_dir,
        &args.advertise_addr,
        &progress,
    )
    .await?;
    bar.finish_and_clear();
    println!(
        "restored node {} of cluster {} into {}: {} topic(s), {} partition(s), {} bytes{}",
        report.node_id,
        args.store.cluster_id,
        args.data_dir.display(),
        report.topics,
        report.partitions.len(),
        report.bytes,
        if report.from_metadata {
            ""
        } else {
            " (no metadata manifest: topic settings are the defaults)"
        }
    );
    for (group, key, next) in &report.partitions {
        println!("  {group}: recovery point offset {next} ({key})");
    }
    for group in &report.empty {
        println!("  {group}: no usable manifest; starts empty");
    }
    println!(
        "start it with: logbook serve --data-dir {} --listen-addr {} --snapshot-store {}",
        args.data_dir.display(),
        args.advertise_addr,
        args.store.store
    );
    Ok(())
}

/// Runs `s3-server` until interrupted.
pub async fn s3_server(args: S3ServerArgs) -> anyhow::Result<()> {
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY")
        .map_err(|_| anyhow::anyhow!("set AWS_SECRET_ACCESS_KEY (the secret clients sign with)"))?;
    let buckets: Vec<&str> = args.bucket.iter().map(String::as_str).collect();
    let server = crate::snapshot::S3Server::bind(
        args.listen,
        &args.dir,
        &buckets,
        &args.access_key,
        &secret,
    )
    .await?;
    println!(
        "s3 server on {} serving {} (buckets: {})",
        server.endpoint(),
        args.dir.display(),
        args.bucket.join(", ")
    );
    server.wait().await;
    Ok(())
}
