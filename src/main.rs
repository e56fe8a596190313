//! The `logbook` command: parses the command line and wires the library's parts together.

use anyhow::Context;
use clap::{Parser, Subcommand};
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
    Log(LogBenchOptions),
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
        Command::Bench(BenchCommand::Log(options)) => {
            run_log_bench(&options).context("log benchmark failed")?;
        }
    }
    Ok(())
}
