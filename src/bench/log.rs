//! `logbook bench log`: the storage engine against the raw disk, in one run, on one directory.
//!
//! 1. raw sequential write + one fdatasync (plain `std::fs`, 1 MiB writes, same total bytes), and
//!    the latency of one small write + fdatasync;
//! 2. durable appends through [`GroupCommit`] with `fsync = always`: concurrent appenders, each
//!    sending batches of 1 KiB records and waiting for each acknowledgement;
//! 3. the same with `fsync = never`; a sequential read of the whole log; random-offset reads;
//! 4. open time after an unclean stop (torn tail) for a small and a large log.
//!
//! Raw, durable and no-sync runs are interleaved for `rounds` rounds and the medians compared,
//! because this disk's bandwidth drifts from run to run.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;

use super::{median, quantile};
use crate::log::{
    FsyncPolicy, GroupCommit, IoContext, LogConfig, LogError, NewRecord, PartitionLog,
    ValidatedBatch, encode_batch,
};

/// Settings of one benchmark run (also the flags of `logbook bench log`).
#[derive(Debug, Clone, clap::Args)]
pub struct LogBenchOptions {
    /// Working directory on the disk to measure (emptied first, removed at the end).
    #[arg(long, default_value = "target/bench-log")]
    pub dir: PathBuf,
    /// MiB written by each raw, durable and no-sync run.
    #[arg(long, default_value_t = 512)]
    pub total_mib: u64,
    /// Concurrent appenders.
    #[arg(long, default_value_t = 64)]
    pub appenders: usize,
    /// Value bytes per record.
    #[arg(long, default_value_t = 1024)]
    pub record_bytes: usize,
    /// Records per appended batch (Kafka's default batch.size of 16 KiB holds 16 such records).
    #[arg(long, default_value_t = 16)]
    pub records_per_batch: usize,
    /// Appends each appender keeps outstanding (Kafka producers default to 5).
    #[arg(long, default_value_t = 5)]
    pub in_flight: usize,
    /// Interleaved rounds of raw / durable / no-sync runs (medians are reported).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// MiB of the small log in the open-time test.
    #[arg(long, default_value_t = 100)]
    pub open_small_mib: u64,
    /// MiB of the large log in the open-time test.
    #[arg(long, default_value_t = 2048)]
    pub open_large_mib: u64,
    /// Segment size (MiB) of the open-time logs.
    #[arg(long, default_value_t = 128)]
    pub open_segment_mib: u64,
    /// Random-offset reads to time.
    #[arg(long, default_value_t = 20_000)]
    pub random_reads: usize,
}

impl Default for LogBenchOptions {
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            options: LogBenchOptions,
        }
        <Wrapper as clap::Parser>::parse_from(["bench-log"]).options
    }
}

/// The numbers of one run.
#[derive(Debug, Clone, Default)]
pub struct LogBenchSummary {
    /// Raw sequential write + fdatasync, MB/s: the best median among the sync patterns.
    pub raw_mb_s: f64,
    /// Median MB/s of each raw pattern, by name.
    pub raw_patterns: Vec<(String, f64)>,
    /// Latency of one 4 KiB write + fdatasync: p50, p99.
    pub raw_sync_latency: (Duration, Duration),
    /// Durable group-commit appends, MB/s (median).
    pub durable_mb_s: f64,
    /// Average appends acknowledged per fdatasync in the durable runs.
    pub appends_per_sync: f64,
    /// Appends with `fsync = never`, MB/s (median).
    pub nosync_mb_s: f64,
    /// Sequential read of the whole log, MB/s.
    pub seq_read_mb_s: f64,
    /// Random-offset read latency (one batch): p50, p99.
    pub random_read_latency: (Duration, Duration),
    /// Open time after an unclean stop: (small log, large log), with segment counts.
    pub open_small: (Duration, usize),
    /// See `open_small`.
    pub open_large: (Duration, usize),
}

impl LogBenchSummary {
    /// `durable_mb_s / raw_mb_s`.
    pub fn durable_vs_raw(&self) -> f64 {
        self.durable_mb_s / self.raw_mb_s
    }

    /// `nosync_mb_s / raw_mb_s`.
    pub fn nosync_vs_raw(&self) -> f64 {
        self.nosync_mb_s / self.raw_mb_s
    }

    /// Open time of the large log over the small one.
    pub fn open_large_vs_small(&self) -> f64 {
        self.open_large.0.as_secs_f64() / self.open_small.0.as_secs_f64().max(1e-9)
    }
}

pub(crate) const MIB: u64 = 1 << 20;

pub(crate) fn mb_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64().max(1e-9) / 1e6
}

/// Raw patterns: `Some(n)`: one thread, 1 MiB writes, fdatasync every `n` MiB (0: only at the
/// end); `None`: one thread writing 1 MiB chunks while a second calls fdatasync in a loop.
pub(crate) const RAW_PATTERNS: [Option<u64>; 4] = [Some(0), Some(1), Some(8), None];

pub(crate) fn raw_pattern_name(pattern: Option<u64>) -> String {
    match pattern {
        Some(0) => "raw write, fdatasync at the end".into(),
        Some(n) => format!("raw write, fdatasync every {n} MiB"),
        None => "raw write + fdatasync loop in a 2nd thread".into(),
    }
}

/// Flushes all dirty pages (outside the timed part), so no run pays for the previous one's.
pub(crate) fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Raw sequential write of `total` bytes in 1 MiB writes, made durable per `pattern`.
pub(crate) fn raw_write(dir: &Path, total: u64, pattern: Option<u64>) -> Result<f64, LogError> {
    let path = dir.join("raw.bin");
    let chunk: Vec<u8> = (0..MIB).map(|_| fastrand::u8(..)).collect();
    settle();
    let start = Instant::now();
    {
        let mut file = fs::File::create(&path).at(&path)?;
        let done = std::sync::atomic::AtomicBool::new(false);
        let syncer = file.try_clone().at(&path)?;
        std::thread::scope(|scope| -> Result<(), LogError> {
            if pattern.is_none() {
                scope.spawn(|| {
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        let _ = syncer.sync_data();
                    }
                });
            }
            let mut written = 0;
            while written < total {
                let outcome = file.write_all(&chunk);
                if let Err(e) = outcome {
                    done.store(true, std::sync::atomic::Ordering::Relaxed);
                    return Err(LogError::io(&path, e));
                }
                written += MIB;
                if let Some(every) = pattern.filter(|n| *n > 0)
                    && (written / MIB).is_multiple_of(every)
                {
                    file.sync_data().at(&path)?;
                }
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        })?;
        file.sync_data().at(&path)?;
    }
    let elapsed = start.elapsed();
    fs::remove_file(&path).at(&path)?;
    Ok(mb_s(total, elapsed))
}

/// p50 and p99 of one 4 KiB write + fdatasync.
pub(crate) fn raw_sync_latency(
    dir: &Path,
    samples: usize,
) -> Result<(Duration, Duration), LogError> {
    let path = dir.join("raw-sync.bin");
    let mut file = fs::File::create(&path).at(&path)?;
    let block = vec![7u8; 4096];
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        file.write_all(&block).at(&path)?;
        file.sync_data().at(&path)?;
        times.push(start.elapsed());
    }
    drop(file);
    fs::remove_file(&path).at(&path)?;
    Ok((quantile(&mut times, 0.5), quantile(&mut times, 0.99)))
}

/// One encoded producer batch of `records` records of `value_bytes` each.
pub(crate) fn template_batch(records: usize, value_bytes: usize) -> Result<Bytes, LogError> {
    let value: Bytes = (0..value_bytes)
        .map(|_| fastrand::u8(..))
        .collect::<Vec<_>>()
        .into();
    let records: Vec<NewRecord> = (0..records)
        .map(|i| NewRecord {
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(value.clone()),
            headers: Vec::new(),
            timestamp_ms: crate::log::now_ms(),
        })
        .collect();
    Ok(encode_batch(&records)?.freeze())
}

fn bench_config(policy: FsyncPolicy) -> LogConfig {
    LogConfig {
        fsync: policy,
        ..LogConfig::default()
    }
}

/// Appends `total` bytes through group commit with `appenders` concurrent producers.
/// Returns (MB/s, appends per sync) and leaves the log open for the read tests.
fn group_commit_run(
    runtime: &tokio::runtime::Runtime,
    dir: &Path,
    opts: &LogBenchOptions,
    policy: FsyncPolicy,
    template: &Bytes,
) -> Result<(f64, f64, Arc<PartitionLog>), LogError> {
    let _ = fs::remove_dir_all(dir);
    let log = Arc::new(PartitionLog::open(dir, bench_config(policy))?);
    let writer =
        Arc::new(GroupCommit::start(log.clone(), policy).map_err(|e| LogError::io(dir, e))?);
    settle();
    let batch_bytes = template.len() as u64;
    let batches_total = (opts.total_mib * MIB).div_ceil(batch_bytes);
    let per_appender = batches_total.div_ceil(opts.appenders as u64);
    let max = LogConfig::default().max_batch_bytes as usize;
    let start = Instant::now();
    let outcome: Result<(), LogError> = runtime.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..opts.appenders {
            let writer = writer.clone();
            // Each appender sends its own batch (distinct bytes, as from distinct producers).
            let template = template_batch(opts.records_per_batch, opts.record_bytes)?;
            let in_flight = opts.in_flight.max(1);
            tasks.push(tokio::spawn(async move {
                let mut outstanding = futures_util::stream::FuturesOrdered::new();
                for _ in 0..per_appender {
                    let batch = ValidatedBatch::new(template.clone(), max)?;
                    let writer = writer.clone();
                    outstanding.push_back(async move { writer.append(batch, 0).await });
                    if outstanding.len() >= in_flight
                        && let Some(done) = outstanding.next().await
                    {
                        done?;
                    }
                }
                while let Some(done) = outstanding.next().await {
                    done?;
                }
                Ok::<(), LogError>(())
            }));
        }
        for task in tasks {
            task.await
                .map_err(|e| LogError::io(dir, std::io::Error::other(e)))??;
        }
        Ok(())
    });
    outcome?;
    let elapsed = start.elapsed();
    let appends = per_appender * opts.appenders as u64;
    let per_sync = appends as f64 / log.sync_count().max(1) as f64;
    runtime.block_on(writer.close())?;
    Ok((mb_s(appends * batch_bytes, elapsed), per_sync, log))
}

/// Reads the whole log front to back with 1 MiB reads.
fn sequential_read(log: &PartitionLog) -> Result<f64, LogError> {
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    let mut bytes = 0u64;
    let start = Instant::now();
    while offset < end {
        let read = log.read(offset, MIB as usize)?;
        bytes += read.batches.len() as u64;
        offset = read.next_offset;
    }
    Ok(mb_s(bytes, start.elapsed()))
}

/// p50 / p99 latency of reading the batch at a random offset.
fn random_reads(log: &PartitionLog, count: usize) -> Result<(Duration, Duration), LogError> {
    let (start, end) = (log.log_start_offset(), log.log_end_offset());
    let mut times = Vec::with_capacity(count);
    for _ in 0..count {
        let offset = fastrand::u64(start..end);
        let t = Instant::now();
        let read = log.read(offset, 1)?;
        times.push(t.elapsed());
        if read.batches.is_empty() {
            return Err(LogError::io(
                log.dir(),
                std::io::Error::other(format!("random read at {offset} returned nothing")),
            ));
        }
    }
    Ok((quantile(&mut times, 0.5), quantile(&mut times, 0.99)))
}

/// Builds a log of `mib` MiB, stops it uncleanly with a torn batch at the tail, and returns the
/// median time of `PartitionLog::open` (the tail is torn again before each open).
fn open_after_unclean_stop(
    dir: &Path,
    mib: u64,
    segment_mib: u64,
    template: &Bytes,
) -> Result<(Duration, usize), LogError> {
    let _ = fs::remove_dir_all(dir);
    let config = LogConfig {
        segment_max_bytes: segment_mib * MIB,
        fsync: FsyncPolicy::Never,
        ..LogConfig::default()
    };
    {
        let log = PartitionLog::open(dir, config.clone())?;
        let per_call = (4 * MIB / template.len() as u64).max(1) as usize;
        let mut written = 0u64;
        while written < mib * MIB {
            let mut batches = (0..per_call)
                .map(|_| ValidatedBatch::new(template.clone(), usize::MAX))
                .collect::<Result<Vec<_>, _>>()?;
            log.append(&mut batches, 0)?;
            written += (per_call * template.len()) as u64;
        }
        log.sync()?;
        // Dropped without `close`: the active index stays preallocated, as after a kill -9.
    }
    let mut times = Vec::new();
    let mut segments = 0;
    for _ in 0..7 {
        let active = fs::read_dir(dir)
            .at(dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .max()
            .ok_or_else(|| LogError::io(dir, std::io::Error::other("no segment")))?;
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(&active)
            .at(&active)?;
        file.write_all(&template[..template.len() / 2])
            .at(&active)?;
        file.sync_data().at(&active)?;
        drop(file);
        let start = Instant::now();
        let log = PartitionLog::open(dir, config.clone())?;
        times.push(start.elapsed());
        if log.recovery_report().tail.truncated_bytes == 0 {
            return Err(LogError::io(
                dir,
                std::io::Error::other("open did not truncate the torn tail"),
            ));
        }
        segments = log.segments()?.len();
    }
    fs::remove_dir_all(dir).at(dir)?;
    Ok((quantile(&mut times, 0.5), segments))
}

/// Runs the whole benchmark, printing a table as it goes.
pub fn run(opts: &LogBenchOptions) -> Result<LogBenchSummary, LogError> {
    let dir = &opts.dir;
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).at(dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| LogError::io(dir, e))?;
    let total = opts.total_mib * MIB;
    let template = template_batch(opts.records_per_batch, opts.record_bytes)?;
    println!(
        "logbook bench log: dir={} total={} MiB per run, {} rounds (medians), {} appenders, \
         {} records of {} B per batch ({} B batches)",
        dir.display(),
        opts.total_mib,
        opts.rounds,
        opts.appenders,
        opts.records_per_batch,
        opts.record_bytes,
        template.len()
    );

    let mut summary = LogBenchSummary::default();
    let mut raw: Vec<Vec<f64>> = vec![Vec::new(); RAW_PATTERNS.len()];
    let (mut durable, mut nosync, mut per_sync) = (vec![], vec![], vec![]);
    let mut last_log = None;
    for round in 0..opts.rounds.max(1) {
        for (i, pattern) in RAW_PATTERNS.iter().enumerate() {
            raw[i].push(raw_write(dir, total, *pattern)?);
        }
        let best_raw = raw.iter().map(|r| r[round]).fold(0.0, f64::max);
        let (mb, ps, log) = group_commit_run(
            &runtime,
            &dir.join("durable"),
            opts,
            FsyncPolicy::Always,
            &template,
        )?;
        durable.push(mb);
        per_sync.push(ps);
        drop(log);
        let (mb, _, log) = group_commit_run(
            &runtime,
            &dir.join("nosync"),
            opts,
            FsyncPolicy::Never,
            &template,
        )?;
        nosync.push(mb);
        println!(
            "  round {}: raw best {:.0} MB/s, durable {:.0} MB/s ({:.1} appends/fsync), no-sync {:.0} MB/s",
            round + 1,
            best_raw,
            durable[round],
            per_sync[round],
            mb
        );
        last_log = Some(log);
    }
    summary.raw_patterns = RAW_PATTERNS
        .iter()
        .zip(raw.iter_mut())
        .map(|(pattern, runs)| (raw_pattern_name(*pattern), median(runs)))
        .collect();
    summary.raw_mb_s = summary.raw_patterns.iter().map(|p| p.1).fold(0.0, f64::max);
    summary.durable_mb_s = median(&mut durable);
    summary.nosync_mb_s = median(&mut nosync);
    summary.appends_per_sync = median(&mut per_sync);
    summary.raw_sync_latency = raw_sync_latency(dir, 200)?;

    if let Some(log) = last_log {
        summary.seq_read_mb_s = sequential_read(&log)?;
        summary.random_read_latency = random_reads(&log, opts.random_reads)?;
    }
    let _ = fs::remove_dir_all(dir.join("durable"));
    let _ = fs::remove_dir_all(dir.join("nosync"));

    summary.open_small = open_after_unclean_stop(
        &dir.join("open-small"),
        opts.open_small_mib,
        opts.open_segment_mib,
        &template,
    )?;
    summary.open_large = open_after_unclean_stop(
        &dir.join("open-large"),
        opts.open_large_mib,
        opts.open_segment_mib,
        &template,
    )?;
    let _ = fs::remove_dir_all(dir);

    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!();
    println!("{:<48} {:>14}  note", "measurement", "value");
    for (pattern, mb) in &summary.raw_patterns {
        println!("{pattern:<48} {mb:>9.0} MB/s  1 MiB writes");
    }
    println!(
        "{:<48} {:>9.0} MB/s  best raw pattern: the baseline",
        "raw sequential write + fdatasync (limit)", summary.raw_mb_s
    );
    println!(
        "{:<48} {:>9.0} us    p99 {:.0} us",
        "raw 4 KiB write + fdatasync latency (p50)",
        us(summary.raw_sync_latency.0),
        us(summary.raw_sync_latency.1)
    );
    println!(
        "{:<48} {:>9.0} MB/s  {:.2} of raw, {:.1} appends per fdatasync",
        "durable append (fsync=always, group commit)",
        summary.durable_mb_s,
        summary.durable_vs_raw(),
        summary.appends_per_sync
    );
    let sequential = summary
        .raw_patterns
        .iter()
        .filter(|(name, _)| !name.contains("2nd thread"))
        .map(|p| p.1)
        .fold(0.0, f64::max);
    println!(
        "{:<48} {:>9.2}       durable / best single-thread raw pattern",
        "durable vs one-thread write+fdatasync",
        summary.durable_mb_s / sequential
    );
    println!(
        "{:<48} {:>9.0} MB/s  {:.2} of raw",
        "append (fsync=never)",
        summary.nosync_mb_s,
        summary.nosync_vs_raw()
    );
    println!(
        "{:<48} {:>9.0} MB/s  1 MiB reads, CRC checked, page cache warm",
        "sequential read", summary.seq_read_mb_s
    );
    println!(
        "{:<48} {:>9.1} us    p99 {:.1} us",
        "random-offset read latency (p50)",
        us(summary.random_read_latency.0),
        us(summary.random_read_latency.1)
    );
    println!(
        "{:<48} {:>9.2} ms    {} segments",
        format!("open after unclean stop, {} MiB", opts.open_small_mib),
        summary.open_small.0.as_secs_f64() * 1e3,
        summary.open_small.1
    );
    println!(
        "{:<48} {:>9.2} ms    {} segments",
        format!("open after unclean stop, {} MiB", opts.open_large_mib),
        summary.open_large.0.as_secs_f64() * 1e3,
        summary.open_large.1
    );
    println!(
        "bench-log: durable_vs_raw={:.2} nosync_vs_raw={:.2} open_2g_vs_100m={:.2}",
        summary.durable_vs_raw(),
        summary.nosync_vs_raw(),
        summary.open_large_vs_small()
    );
    Ok(summary)
}
