//! `logbook bench broker`: a real broker (a child process, or one given with `--server`) under
//! produce streams, next to the data disk's own limits measured in the same run.
//!
//! 1. raw write+fdatasync bandwidth (best of the patterns of `bench log`) and one small
//!    fdatasync's latency, on the data directory's disk;
//! 2. maximum load: `streams` produce streams, each pipelining requests of `records_per_request`
//!    records of `record_bytes`, at most `in_flight` unacknowledged per stream; records/s, MB/s
//!    and request latency p50/p99/p999 (send to acknowledgement);
//! 3. half load: the same streams paced to half the measured maximum; latency again;
//! 4. consume: every partition read back from the start (raw record batches), MB/s;
//! 5. the broker's anonymous resident memory (`RssAnon` in /proc, leaving out mapped file
//!    pages), sampled throughout; the maximum-load run is repeated to see whether it grows.

use crate::security::tls::{ClientTls, TlsFiles};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc};

use super::log::{MIB, RAW_PATTERNS, mb_s, raw_sync_latency, raw_write, settle, template_batch};
use super::quantile;
use crate::client::Client;
use crate::proto::v1 as pb;
use crate::proto::v1::consume_service_client::ConsumeServiceClient;

/// Errors of the benchmark program.
pub type BenchError = Box<dyn std::error::Error + Send + Sync>;

/// Settings of one run (also the flags of `logbook bench broker`).
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerBenchOptions {
    /// Broker to target; by default one is started on --data-dir with fsync = always.
    #[arg(long)]
    pub server: Option<String>,
    /// Data directory of the started broker (emptied first, removed at the end); the raw disk
    /// limits are measured here too.
    #[arg(long, default_value = "target/bench-broker")]
    pub data_dir: PathBuf,
    /// Concurrent produce streams.
    #[arg(long, default_value_t = 16)]
    pub streams: usize,
    /// Value bytes per record.
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Records per produce request (one RecordBatch).
    #[arg(long, default_value_t = 16)]
    pub records_per_request: usize,
    /// Unacknowledged requests per stream.
    #[arg(long, default_value_t = 16)]
    pub in_flight: usize,
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 1)]
    pub partitions: u32,
    /// MiB produced by each maximum-load run.
    #[arg(long, default_value_t = 512)]
    pub total_mib: u64,
    /// Maximum-load runs (to see whether memory grows run over run).
    #[arg(long, default_value_t = 2)]
    pub runs: usize,
    /// Run the started broker with mutual TLS (a CA and certificates are made in DATA_DIR/certs)
    /// and connect with a client certificate.
    #[arg(long, conflicts_with = "server")]
    pub tls: bool,
}

/// Makes a CA, a node certificate for 127.0.0.1 and a client certificate in `dir`; returns the
/// broker's TLS flags and the client's TLS.
fn bench_tls(dir: &std::path::Path) -> Result<(Vec<String>, ClientTls), BenchError> {
    use crate::security::certs::{CertKind, Validity, init_ca, issue};
    init_ca(dir, "bench CA", Validity::days(1), true)?;
    let node = CertKind::Server {
        name: "bench".into(),
        dns: Vec::new(),
        ips: vec![std::net::IpAddr::from([127, 0, 0, 1])],
    };
    let node = issue(dir, &node, Validity::days(1), true)?;
    let client = CertKind::Client {
        name: "bench-client".into(),
    };
    let client = issue(dir, &client, Validity::days(1), true)?;
    let ca = dir.join("ca.pem");
    let flags = [
        ("--tls-cert-file", &node.cert_path),
        ("--tls-key-file", &node.key_path),
        ("--tls-ca-file", &ca),
    ]
    .into_iter()
    .flat_map(|(flag, path)| [flag.to_string(), path.display().to_string()])
    .collect();
    let files = TlsFiles {
        ca,
        cert: Some(client.cert_path),
        key: Some(client.key_path),
    };
    Ok((flags, ClientTls::new(files, "")?))
}

/// Latency percentiles.
#[derive(Debug, Clone, Copy, Default)]
pub struct Latency {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
}

/// Outcome of one produce run.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProduceRun {
    /// Records per second.
    pub records_per_s: f64,
    /// Record batch bytes per second, MB/s.
    pub mb_s: f64,
    /// Request latency.
    pub latency: Latency,
}

/// The numbers of a benchmark.
#[derive(Debug, Clone, Default)]
pub struct BrokerBenchSummary {
    /// Best raw write+fdatasync pattern, MB/s.
    pub raw_mb_s: f64,
    /// Median latency of one 4 KiB write + fdatasync.
    pub fsync_latency: Duration,
    /// Maximum-load runs.
    pub max_load: Vec<ProduceRun>,
    /// The half-load run.
    pub half_load: ProduceRun,
    /// Consume, MB/s.
    pub consume_mb_s: f64,
    /// Largest RssAnon of the broker seen in each maximum-load run, MB.
    pub anon_rss_mb: Vec<f64>,
}

/// Samples a process's `RssAnon` in the background, keeping the maximum.
struct RssSampler {
    max_kb: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// `RssAnon` of `pid` in kB.
pub(super) fn anon_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
}

impl RssSampler {
    fn start(pid: Option<u32>) -> Self {
        let max_kb = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = pid.map(|pid| {
            let (max_kb, stop) = (max_kb.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(kb) = anon_rss_kb(pid) {
                        max_kb.fetch_max(kb, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        });
        RssSampler {
            max_kb,
            stop,
            thread,
        }
    }

    /// Stops and returns the maximum in MB.
    fn finish(mut self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.max_kb.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

/// A broker child process.
struct BrokerChild {
    child: Child,
    addr: String,
}

impl BrokerChild {
    fn start(data_dir: &std::path::Path, extra: &[String]) -> Result<Self, BenchError> {
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
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
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
        Ok(BrokerChild { child, addr })
    }

    fn stop(mut self) {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// One produce run (to the topic `bench`): `total` bytes over `streams` streams, each paced to `rate` bytes/s if given.
pub async fn produce_run(
    client: &Client,
    opts: &BrokerBenchOptions,
    total: u64,
    rate: Option<f64>,
) -> Result<ProduceRun, BenchError> {
    let request_bytes = template_batch(opts.records_per_request, opts.record_bytes)?.len() as u64;
    let per_stream = total.div_ceil(request_bytes * opts.streams as u64);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..opts.streams {
        let mut client = client.clone();
        let batch: Bytes = template_batch(opts.records_per_request, opts.record_bytes)?;
        let partition = s as u32 % opts.partitions.max(1);
        let in_flight = Arc::new(Semaphore::new(opts.in_flight.max(1)));
        let interval =
            rate.map(|r| Duration::from_secs_f64(request_bytes as f64 * opts.streams as f64 / r));
        tasks.push(tokio::spawn(async move {
            let (sender, mut acks) = client.produce_stream().await?.into_parts();
            let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<Instant>();
            let permits = in_flight.clone();
            let pump = tokio::spawn(async move {
                let mut ticker = interval.map(tokio::time::interval);
                for _ in 0..per_stream {
                    if let Some(t) = ticker.as_mut() {
                        t.tick().await;
                    }
                    let Ok(permit) = permits.clone().acquire_owned().await else {
                        break;
                    };
                    permit.forget();
                    let request = pb::ProduceRequest {
                        topic: "bench".into(),
                        partition: Some(partition),
                        records: Vec::new(),
                        record_batch: batch.clone(),
                    };
                    let _ = sent_tx.send(Instant::now());
                    if sender.send(request).await.is_err() {
                        break;
                    }
                }
            });
            let mut latencies = Vec::with_capacity(per_stream as usize);
            for _ in 0..per_stream {
                let ack = acks.next_ack().await.ok_or("produce stream ended early")?;
                ack?;
                let sent = sent_rx.recv().await.ok_or("lost a send time")?;
                latencies.push(sent.elapsed());
                in_flight.add_permits(1);
            }
            pump.await?;
            Ok::<_, BenchError>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = start.elapsed();
    let requests = latencies.len() as u64;
    Ok(ProduceRun {
        records_per_s: (requests * opts.records_per_request as u64) as f64 / elapsed.as_secs_f64(),
        mb_s: mb_s(requests * request_bytes, elapsed),
        latency: Latency {
            p50: quantile(&mut latencies, 0.5),
            p99: quantile(&mut latencies, 0.99),
            p999: quantile(&mut latencies, 0.999),
        },
    })
}

/// Reads every partition from the start as raw batches; MB/s.
async fn consume_all(
    addr: &str,
    partitions: u32,
    tls: Option<ClientTls>,
) -> Result<f64, BenchError> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for partition in 0..partitions {
        let addr = addr.to_string();
        let tls = tls.clone();
        tasks.push(tokio::spawn(async move {
            let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?;
            let channel = match &tls {
                Some(tls) => endpoint.connect_with_connector(tls.connector()).await?,
                None => endpoint.connect().await?,
            };
            let mut consumer =
                ConsumeServiceClient::new(channel).max_decoding_message_size(usize::MAX);
            let mut offset = 0;
            let mut bytes = 0u64;
            loop {
                let response = consumer
                    .consume(pb::ConsumeRequest {
                        topic: "bench".into(),
                        partition,
                        offset,
                        max_bytes: 4 << 20,
                        max_wait_ms: 0,
                        record_batches: true,
                    })
                    .await?
                    .into_inner();
                if response.record_batches.is_empty() {
                    break;
                }
                bytes += response.record_batches.len() as u64;
                offset = response.next_offset;
            }
            Ok::<u64, BenchError>(bytes)
        }));
    }
    let mut bytes = 0;
    for task in tasks {
        bytes += task.await??;
    }
    Ok(mb_s(bytes, start.elapsed()))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs the benchmark, printing a table as it goes.
pub fn run(opts: &BrokerBenchOptions) -> Result<BrokerBenchSummary, BenchError> {
    let data_dir = opts.data_dir.clone();
    let _ = std::fs::remove_dir_all(&data_dir);
    std::fs::create_dir_all(&data_dir)?;
    let total = opts.total_mib * MIB;
    let mut summary = BrokerBenchSummary::default();

    // 1. The disk's own limits, on the data directory.
    let raw_dir = data_dir.join("raw");
    std::fs::create_dir_all(&raw_dir)?;
    for pattern in RAW_PATTERNS {
        summary.raw_mb_s = summary.raw_mb_s.max(raw_write(&raw_dir, total, pattern)?);
    }
    summary.fsync_latency = raw_sync_latency(&raw_dir, 200)?.0;
    std::fs::remove_dir_all(&raw_dir)?;
    settle();

    let (tls_flags, tls) = match opts.tls {
        true => {
            let (flags, tls) = bench_tls(&data_dir.join("certs"))?;
            (flags, Some(tls))
        }
        false => (Vec::new(), None),
    };
    let broker = match &opts.server {
        Some(_) => None,
        None => Some(BrokerChild::start(&data_dir.join("data"), &tls_flags)?),
    };
    let addr = opts
        .server
        .clone()
        .or_else(|| broker.as_ref().map(|b| b.addr.clone()))
        .ok_or("no broker")?;
    let pid = broker.as_ref().map(|b| b.child.id());
    println!(
        "logbook bench broker: {addr}{}, {} streams x {} records of {} B per request, {} in flight per stream, {} partition(s), {} MiB per run",
        if opts.tls { " (mutual TLS)" } else { "" },
        opts.streams,
        opts.records_per_request,
        opts.record_bytes,
        opts.in_flight,
        opts.partitions,
        opts.total_mib
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcome = runtime.block_on(async {
        let mut client = Client::connect_with(&addr, tls.as_ref()).await?;
        let _ = client.delete_topic("bench").await;
        client
            .create_topic("bench", opts.partitions, Default::default())
            .await?;
        for run in 0..opts.runs.max(1) {
            let sampler = RssSampler::start(pid);
            let result = produce_run(&client, opts, total, None).await?;
            summary.anon_rss_mb.push(sampler.finish());
            println!(
                "  max load run {}: {:.0} records/s, {:.0} MB/s, p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms, broker RssAnon max {:.0} MB",
                run + 1,
                result.records_per_s,
                result.mb_s,
                ms(result.latency.p50),
                ms(result.latency.p99),
                ms(result.latency.p999),
                summary.anon_rss_mb[run]
            );
            summary.max_load.push(result);
        }
        let best = summary.max_load.iter().map(|r| r.mb_s).fold(0.0, f64::max);
        let half_rate = best * 1e6 / 2.0;
        summary.half_load = produce_run(&client, opts, total / 4, Some(half_rate)).await?;
        summary.consume_mb_s = consume_all(&addr, opts.partitions, tls.clone()).await?;
        let _ = client.delete_topic("bench").await;
        Ok::<(), BenchError>(())
    });
    if let Some(broker) = broker {
        broker.stop();
    }
    let _ = std::fs::remove_dir_all(&data_dir);
    outcome?;

    let max = summary
        .max_load
        .iter()
        .copied()
        .max_by(|a, b| a.mb_s.total_cmp(&b.mb_s))
        .unwrap_or_default();
    let produce_vs_raw = max.mb_s / summary.raw_mb_s;
    let p99_vs_fsync =
        summary.half_load.latency.p99.as_secs_f64() / summary.fsync_latency.as_secs_f64().max(1e-9);
    let anon = summary.anon_rss_mb.iter().copied().fold(0.0, f64::max);
    println!();
    println!("{:<44} {:>12}  note", "measurement", "value");
    println!(
        "{:<44} {:>7.0} MB/s  best raw pattern of `bench log`",
        "raw write + fdatasync (limit)", summary.raw_mb_s
    );
    println!(
        "{:<44} {:>7.2} ms    4 KiB write + fdatasync, p50",
        "fsync latency",
        ms(summary.fsync_latency)
    );
    println!(
        "{:<44} {:>7.0} MB/s  {:.0} records/s, {:.2} of raw",
        "produce, maximum load", max.mb_s, max.records_per_s, produce_vs_raw
    );
    println!(
        "{:<44} {:>7.2} ms    p99 {:.2} ms, p999 {:.2} ms",
        "produce latency at maximum load, p50",
        ms(max.latency.p50),
        ms(max.latency.p99),
        ms(max.latency.p999)
    );
    println!(
        "{:<44} {:>7.2} ms    p50 {:.2} ms, p999 {:.2} ms; {:.1} fsync latencies",
        "produce latency at half load, p99",
        ms(summary.half_load.latency.p99),
        ms(summary.half_load.latency.p50),
        ms(summary.half_load.latency.p999),
        p99_vs_fsync
    );
    println!(
        "{:<44} {:>7.0} MB/s  raw batches, from the start",
        "consume", summary.consume_mb_s
    );
    println!(
        "{:<44} {:>7.0} MB    per run: {}",
        "broker RssAnon, maximum",
        anon,
        summary
            .anon_rss_mb
            .iter()
            .map(|m| format!("{m:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "bench-broker: produce_vs_raw={produce_vs_raw:.2} p99_vs_fsync={p99_vs_fsync:.1} consume_mb_s={:.0} anon_rss_mb={anon:.0}",
        summary.consume_mb_s
    );
    Ok(summary)
}
