//! The `logbook` command: parses the command line and wires the library's parts together.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use logbook::bench::log::{LogBenchOptions, run as run_log_bench};

/// logbook: a replicated, durable commit log.
#[derive(Debug, Parser)]
#[command(name = "logbook", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a benchmark and print its numbers next to the machine's own limits.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// The storage engine against the raw disk (write+fdatasync, reads, open time).
    Log(LogBenchArgs),
}

/// Options of `logbook bench log`.
#[derive(Debug, Args)]
struct LogBenchArgs {
    /// Working directory on the disk to measure (emptied first, removed at the end).
    #[arg(long, default_value = "target/bench-log")]
    dir: PathBuf,
    /// MiB written by each raw, durable and no-sync run.
    #[arg(long, default_value_t = 256)]
    total_mib: u64,
    /// Concurrent appenders.
    #[arg(long, default_value_t = 64)]
    appenders: usize,
    /// Value bytes per record.
    #[arg(long, default_value_t = 1024)]
    record_bytes: usize,
    /// Records per appended batch.
    #[arg(long, default_value_t = 16)]
    records_per_batch: usize,
    /// Appends each appender keeps outstanding (Kafka producers default to 5).
    #[arg(long, default_value_t = 5)]
    in_flight: usize,
    /// Interleaved rounds (medians are reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// MiB of the small log in the open-time test.
    #[arg(long, default_value_t = 100)]
    open_small_mib: u64,
    /// MiB of the large log in the open-time test.
    #[arg(long, default_value_t = 2048)]
    open_large_mib: u64,
    /// Segment size (MiB) of the open-time logs.
    #[arg(long, default_value_t = 128)]
    open_segment_mib: u64,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(BenchCommand::Log(args)) => {
            let opts = LogBenchOptions {
                dir: args.dir,
                total_mib: args.total_mib,
                appenders: args.appenders,
                record_bytes: args.record_bytes,
                records_per_batch: args.records_per_batch,
                in_flight: args.in_flight,
                rounds: args.rounds.max(1),
                open_small_mib: args.open_small_mib,
                open_large_mib: args.open_large_mib,
                open_segment_mib: args.open_segment_mib,
                ..LogBenchOptions::default()
            };
            run_log_bench(&opts).context("log benchmark failed")?;
        }
    }
    Ok(())
}
