//! `logbook bench cluster`: three local nodes with RF=3 next to a single-node broker, in the
//! same run, under the load of `bench broker`; then leader failover time and the idle cost of
//! 1,000 partitions at RF=3.
//!
//! 1. single node (a one-voter Raft group per partition): maximum produce load, MB/s;
//! 2. three nodes, RF=3: the same load sent to the partition's leader, MB/s; `rf3_vs_single`;
//! 3. failover: one-record produces through the cluster client while the leader is SIGKILLed;
//!    the time from the kill to the first acknowledged produce;
//! 4. scale: a fresh three-node cluster with a 1,000-partition topic at RF=3 and no traffic:
//!    each node's CPU use (utime + stime from /proc) over `idle_secs`, and its `RssAnon`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::broker::{BenchError, BrokerBenchOptions, produce_run};
use crate::client::{Client, ClusterClient, ReadFrom};
use crate::log::NewRecord;

/// Settings of one run (also the flags of `logbook bench cluster`).
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterBenchOptions {
    /// Where the nodes' data directories go (emptied first, removed at the end).
    #[arg(long, default_value = "target/bench-cluster")]
    pub data_dir: PathBuf,
    /// Concurrent produce streams.
    #[arg(long, default_value_t = 16)]
    pub streams: usize,
    /// Value bytes per record.
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Records per produce request.
    #[arg(long, default_value_t = 16)]
    pub records_per_request: usize,
    /// Unacknowledged requests per stream.
    #[arg(long, default_value_t = 16)]
    pub in_flight: usize,
    /// MiB produced by each load run.
    #[arg(long, default_value_t = 256)]
    pub total_mib: u64,
    /// Partitions of the idle-scale topic.
    #[arg(long, default_value_t = 1000)]
    pub idle_partitions: u32,
    /// Seconds the idle CPU is measured over.
    #[arg(long, default_value_t = 10)]
    pub idle_secs: u64,
}

/// A broker child process.
pub(super) struct Node {
    child: Child,
    /// Its gRPC address.
    pub(super) addr: String,
}

impl Node {
    pub(super) fn start(data_dir: &Path, extra: &[String]) -> Result<Self, BenchError> {
        // The nodes' logs (errors only: peers going away is expected here) go next to their
        // data, not into the benchmark's output.
        std::fs::create_dir_all(data_dir)?;
        let log = std::fs::File::create(data_dir.with_extension("log"))?;
        let mut child = Command::new(std::env::current_exe()?)
            .args([
                "serve",
                "--listen-addr",
                "127.0.0.1:0",
                "--fsync",
                "always",
                "--admin-addr",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "error")
            // Credentials of the S3 server `bench snapshot` starts (the standard AWS chain).
            .env("AWS_ACCESS_KEY_ID", super::snapshot::S3_KEY)
            .env("AWS_SECRET_ACCESS_KEY", super::snapshot::S3_SECRET)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        let mut reader = BufReader::new(stdout);
        // The admin port's line comes first.
        reader.read_line(&mut line)?;
        line.clear();
        reader.read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("logbook listening on ")
            .ok_or_else(|| format!("unexpected broker output {line:?}"))?
            .to_string();
        Ok(Node { child, addr })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) fn kill(self) {
        drop(self);
    }
}

impl Drop for Node {
    /// A node never outlives the benchmark, whichever way it ends.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free for TCP and UDP on 127.0.0.1.
pub(super) fn free_port() -> Result<u16, BenchError> {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = tcp.local_addr()?.port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
}

/// Starts three nodes that form a cluster; waits until it has.
pub(super) async fn start_cluster(dir: &Path, extra: &[&str]) -> Result<Vec<Node>, BenchError> {
    Ok(start_cluster_seeds(dir, extra).await?.0)
}

/// [`start_cluster`], also returning the gossip seeds (`host:port,...`) a new node joins with.
pub(super) async fn start_cluster_seeds(
    dir: &Path,
    extra: &[&str],
) -> Result<(Vec<Node>, String), BenchError> {
    let gossip: Vec<String> = (0..3)
        .map(|_| free_port().map(|p| format!("127.0.0.1:{p}")))
        .collect::<Result<_, _>>()?;
    let seeds = gossip.join(",");
    let mut nodes = Vec::new();
    for (i, g) in gossip.iter().enumerate() {
        let mut args: Vec<String> = [
            "--gossip-addr",
            g,
            "--join",
            &seeds,
            "--bootstrap-expect",
            "3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        nodes.push(Node::start(&dir.join(format!("node{i}")), &args)?);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for node in &nodes {
        loop {
            let formed = match Client::connect(&node.addr).await {
                Ok(mut c) => c
                    .metadata()
                    .await
                    .is_ok_and(|m| m.servers.len() == 3 && !m.cluster_id.is_empty()),
                Err(_) => false,
            };
            if formed {
                break;
            }
            if Instant::now() > deadline {
                return Err("the cluster did not form within 60 s".into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok((nodes, seeds))
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / ticks.max(1.0))
}

/// `RssAnon` of `pid`, MB.
fn anon_rss_mb(pid: u32) -> f64 {
    super::broker::anon_rss_kb(pid).unwrap_or(0) as f64 / 1024.0
}

fn load_options(opts: &ClusterBenchOptions, data_dir: PathBuf) -> BrokerBenchOptions {
    BrokerBenchOptions {
        server: None,
        data_dir,
        streams: opts.streams,
        record_bytes: opts.record_bytes,
        records_per_request: opts.records_per_request,
        in_flight: opts.in_flight,
        partitions: 1,
        total_mib: opts.total_mib,
        runs: 1,
        tls: false,
    }
}

/// Runs the benchmark, printing as it goes; the last line is the summary.
pub fn run(opts: &ClusterBenchOptions) -> Result<(), BenchError> {
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

async fn bench(opts: &ClusterBenchOptions, dir: &Path) -> Result<(), BenchError> {
    let load = load_options(opts, dir.to_path_buf());
    let total = opts.total_mib << 20;
    println!(
        "logbook bench cluster: {} streams x {} records of {} B per request, {} in flight, {} MiB per run, fsync = always",
        opts.streams, opts.records_per_request, opts.record_bytes, opts.in_flight, opts.total_mib
    );

    // 1. A single node.
    let single = Node::start(&dir.join("single"), &[])?;
    let mut client = Client::connect(&single.addr).await?;
    client.create_topic("bench", 1, Default::default()).await?;
    let single_run = produce_run(&client, &load, total, None).await?;
    single.kill();
    println!(
        "  single node:          {:.0} MB/s, p50 {:.2} ms, p99 {:.2} ms",
        single_run.mb_s,
        single_run.latency.p50.as_secs_f64() * 1e3,
        single_run.latency.p99.as_secs_f64() * 1e3
    );

    // 2. Three nodes, RF=3, the same load on the partition's leader.
    let mut nodes = start_cluster(&dir.join("rf3"), &[]).await?;
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let mut admin = Client::connect(&addrs[0]).await?;
    admin.create_topic("bench", 1, Default::default()).await?;
    let cluster = ClusterClient::connect(&addrs, ReadFrom::Leader).await?;
    let leader = cluster.leader("bench", 0).ok_or("no leader")?;
    let leader_client = Client::connect(&leader).await?;
    let rf3_run = produce_run(&leader_client, &load, total, None).await?;
    let rf3_vs_single = rf3_run.mb_s / single_run.mb_s.max(1e-9);
    println!(
        "  three nodes, RF=3:    {:.0} MB/s, p50 {:.2} ms, p99 {:.2} ms ({rf3_vs_single:.2} of single)",
        rf3_run.mb_s,
        rf3_run.latency.p50.as_secs_f64() * 1e3,
        rf3_run.latency.p99.as_secs_f64() * 1e3
    );

    // 3. Failover: kill the leader, time until a produce is acknowledged again.
    let record = NewRecord {
        value: Some(bytes::Bytes::from_static(b"failover")),
        timestamp_ms: 1,
        ..NewRecord::default()
    };
    cluster
        .produce("bench", Some(0), std::slice::from_ref(&record))
        .await?;
    let victim = nodes
        .iter()
        .position(|n| n.addr == leader)
        .ok_or("leader is not one of ours")?;
    let killed = nodes.remove(victim);
    let at = Instant::now();
    killed.kill();
    // A request cut off by the kill is an error (it may or may not have been committed): the
    // next attempt goes to whichever node leads by then.
    loop {
        match cluster
            .produce("bench", Some(0), std::slice::from_ref(&record))
            .await
        {
            Ok(_) => break,
            Err(_) if at.elapsed() < Duration::from_secs(60) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let failover = at.elapsed();
    println!(
        "  leader failover:      {:.0} ms (SIGKILL to the first acknowledged produce; default election timeout 800-1200 ms, plus the 1200 ms lease)",
        failover.as_secs_f64() * 1e3
    );
    for n in nodes {
        n.kill();
    }

    // 4. 1,000 partitions at RF=3, idle.
    let nodes = start_cluster(&dir.join("scale"), &["--index-max-bytes", "65536"]).await?;
    let mut admin = Client::connect(&nodes[0].addr).await?;
    let created = Instant::now();
    admin
        .create_topic("idle", opts.idle_partitions, Default::default())
        .await?;
    println!(
        "  {} partitions at RF=3 created in {:.1} s",
        opts.idle_partitions,
        created.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before: Vec<Option<f64>> = nodes.iter().map(|n| cpu_seconds(n.pid())).collect();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(opts.idle_secs)).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let mut idle_max: f64 = 0.0;
    let mut rss_max: f64 = 0.0;
    for (n, b) in nodes.iter().zip(before) {
        let cpu = match (b, cpu_seconds(n.pid())) {
            (Some(b), Some(a)) => (a - b) / elapsed * 100.0,
            _ => f64::NAN,
        };
        let rss = anon_rss_mb(n.pid());
        println!(
            "  idle node {}: CPU {cpu:.1} % of one core, RssAnon {rss:.0} MB",
            n.addr
        );
        idle_max = idle_max.max(cpu);
        rss_max = rss_max.max(rss);
    }
    for n in nodes {
        n.kill();
    }
    println!(
        "bench-cluster: rf3_vs_single={rf3_vs_single:.2} failover_ms={:.0} idle_cpu_pct_1k={idle_max:.1} anon_rss_mb_1k={rss_max:.0}",
        failover.as_secs_f64() * 1e3
    );
    Ok(())
}
