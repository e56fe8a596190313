//! The `logbook` command: parses the command line and wires the library's parts together.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use logbook::bench::broker::{BrokerBenchOptions, run as run_broker_bench};
use logbook::bench::log::{LogBenchOptions, run as run_log_bench};
use logbook::broker::Broker;
use logbook::cli::{self, ConsumeArgs, ProduceArgs, ServerArgs, TopicCommand};
use logbook::client::{ClientError, exit_code};
use logbook::config::{BrokerConfig, ConfigFlags};

/// logbook: a replicated, durable commit log.
#[derive(Debug, Parser)]
#[command(name = "logbook", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `logbook health`: which probe, and the configuration that names the admin port.
#[derive(Debug, clap::Args)]
struct HealthArgs {
    /// Ask `/readyz` (caught up and serving) instead of `/healthz` (the process answers).
    #[arg(long)]
    ready: bool,
    #[command(flatten)]
    config: ConfigFlags,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a broker (defaults: data in ./data, listening on 127.0.0.1:7400).
    Serve(ConfigFlags),
    /// Print the effective configuration: defaults, then the file, LOGBOOK_* variables, flags.
    Config(ConfigFlags),
    /// Ask the local broker's admin port whether it is alive (`/healthz`) or ready (`--ready`);
    /// exit 0 if so (container HEALTHCHECK). The address is the configured `admin_addr`.
    Health(HealthArgs),
    /// Create, list, describe and delete topics.
    Topic {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: TopicCommand,
    },
    /// Produce one record per line of stdin (or --file).
    Produce {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        args: ProduceArgs,
    },
    /// Print records of a topic.
    Consume {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        args: ConsumeArgs,
    },
    /// List, inspect and create snapshots (list and inspect read the snapshot store directly).
    #[command(subcommand)]
    Snapshot(logbook::admin::SnapshotCommand),
    /// Rebuild a node's data directory from the snapshot store (after losing every node).
    Restore(logbook::admin::RestoreArgs),
    /// Serve a local directory over the S3 protocol (for laptops, tests and benchmarks).
    S3Server(logbook::admin::S3ServerArgs),
    /// Create a certificate authority and issue node and client certificates (PEM files).
    #[command(subcommand)]
    Certs(logbook::security::certs::CertsCommand),
    /// Run a benchmark and print its numbers next to the machine's own limits.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// The storage engine against the raw disk (write+fdatasync, reads, open time).
    Log(LogBenchOptions),
    /// A broker under produce streams and consumers, against the raw disk.
    Broker(BrokerBenchOptions),
    /// Three nodes at RF=3 next to a single node; failover time; idle cost of 1,000 partitions.
    Cluster(logbook::bench::cluster::ClusterBenchOptions),
    /// Snapshot restore against the S3 server's raw GET speed; leader egress of a replacement.
    Snapshot(logbook::bench::snapshot::SnapshotBenchOptions),
}

fn init_logging(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .init();
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match terminate.as_mut() {
                Some(signal) => { signal.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

fn serve(flags: ConfigFlags) -> anyhow::Result<()> {
    let config = BrokerConfig::load(&flags)?;
    let listen = config.listen_addr;
    let runtime = runtime()?;
    runtime.block_on(async move {
        // Inside the runtime: the OTLP exporter's gRPC client needs one.
        let _telemetry =
            logbook::telemetry::init(config.log_format, "info", &config.otlp_endpoint)?;
        let security = logbook::server::Security::from_config(&config).await?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        let admin_addr = config.admin_addr;
        let admin = tokio::net::TcpListener::bind(admin_addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on admin_addr {admin_addr}: {e}"))?;
        let local = listener.local_addr()?;
        let admin_local = admin.local_addr()?;
        let groups = Arc::new(logbook::raft::RaftGroups::default());
        let broker = Broker::open(config, local.to_string(), groups).await?;
        let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin_task = tokio::spawn(logbook::server::serve_admin(
            broker.clone(),
            admin,
            async move {
                let _ = admin_stopped.await;
            },
        ));
        // The readiness lines scripts and tests wait for (the admin line first).
        println!("logbook admin listening on {admin_local}");
        println!("logbook listening on {local}");
        std::io::stdout().flush()?;
        let served = logbook::server::serve(broker, listener, security, shutdown_signal()).await;
        let _ = stop_admin.send(());
        let _ = admin_task.await;
        served?;
        Ok(())
    })
}

fn health(args: HealthArgs) -> ExitCode {
    let config = match BrokerConfig::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(exit_code::USAGE as u8);
        }
    };
    let outcome = runtime()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
        .and_then(|rt| rt.block_on(logbook::server::probe(config.admin_addr, args.ready)));
    match outcome {
        Ok(body) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Err(reason) => {
            eprintln!("unhealthy: {reason}");
            ExitCode::from(exit_code::FAILURE as u8)
        }
    }
}

fn client_command(command: impl std::future::Future<Output = Result<(), ClientError>>) -> ExitCode {
    let outcome = match runtime() {
        Ok(rt) => rt.block_on(command),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit_code::FAILURE as u8);
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// Runs an admin command; failures print their cause chain and exit with FAILURE.
fn admin_command(command: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let outcome = runtime()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(command));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code::FAILURE as u8)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(flags) => match serve(flags) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(exit_code::FAILURE as u8)
            }
        },
        Command::Health(args) => health(args),
        Command::Config(flags) => match BrokerConfig::load(&flags) {
            Ok(config) => {
                print!("{}", config.to_toml());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(exit_code::USAGE as u8)
            }
        },
        Command::Topic { server, command } => {
            init_logging("warn");
            client_command(cli::topic(&server, command))
        }
        Command::Produce { server, args } => {
            init_logging("warn");
            client_command(cli::produce(&server, args))
        }
        Command::Consume { server, args } => {
            init_logging("warn");
            client_command(cli::consume(&server, args))
        }
        Command::Snapshot(command) => {
            init_logging("warn");
            admin_command(logbook::admin::snapshot(command))
        }
        Command::Restore(args) => {
            init_logging("warn");
            admin_command(logbook::admin::restore(args))
        }
        Command::Certs(command) => match logbook::security::certs::run(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(exit_code::FAILURE as u8)
            }
        },
        Command::S3Server(args) => {
            init_logging("info");
            admin_command(logbook::admin::s3_server(args))
        }
        Command::Bench(BenchCommand::Broker(options)) => {
            init_logging("error");
            match run_broker_bench(&options) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: broker benchmark failed: {e}");
                    ExitCode::from(exit_code::FAILURE as u8)
                }
            }
        }
        Command::Bench(BenchCommand::Cluster(options)) => {
            init_logging("error");
            match logbook::bench::cluster::run(&options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: cluster benchmark failed: {e}");
                    ExitCode::from(exit_code::FAILURE as u8)
                }
            }
        }
        Command::Bench(BenchCommand::Snapshot(options)) => {
            init_logging("error");
            match logbook::bench::snapshot::run(&options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: snapshot benchmark failed: {e}");
                    ExitCode::from(exit_code::FAILURE as u8)
                }
            }
        }
        Command::Bench(BenchCommand::Log(options)) => {
            init_logging("error");
            match run_log_bench(&options) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: log benchmark failed: {e}");
                    ExitCode::from(exit_code::FAILURE as u8)
                }
            }
        }
    }
}
