//! The client commands of the `logbook` binary: `topic`, `produce`, `consume`. Output goes to
//! stdout (records, tables), messages to stderr; failures exit with the codes of
//! [`crate::client::exit_code`].

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;

use crate::client::{
    Client, ClientError, ClusterClient, ReadFrom, Start, partition_for_key, produce_request,
};
use crate::log::{CleanupPolicy, NewRecord, Record, now_ms};
use crate::proto::v1 as pb;

/// Where the broker is (all client commands).
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Broker address, host:port
    #[arg(
        long,
        global = true,
        env = "LOGBOOK_SERVER",
        default_value = "127.0.0.1:7400"
    )]
    pub server: String,
    /// Cluster nodes to discover the cluster through, comma-separated host:port (overrides
    /// --server)
    #[arg(long, global = true, env = "LOGBOOK_BOOTSTRAP", value_delimiter = ',')]
    pub bootstrap: Vec<String>,
    /// Where consumes go: round-robin over the replicas, or the leader only
    #[arg(long, global = true, value_enum, default_value_t = ReadFrom::Replicas)]
    pub read_from: ReadFrom,
    /// PEM CA that signs the brokers' certificates; turns on TLS
    #[arg(long, global = true, env = "LOGBOOK_CA", value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
    /// PEM client certificate (mutual TLS)
    #[arg(long, global = true, env = "LOGBOOK_CERT", value_name = "FILE")]
    pub cert: Option<std::path::PathBuf>,
    /// PEM private key of --cert
    #[arg(long, global = true, env = "LOGBOOK_KEY", value_name = "FILE")]
    pub key: Option<std::path::PathBuf>,
    /// Name to expect in the broker's certificate [default: the host of the address]
    #[arg(
        long,
        global = true,
        env = "LOGBOOK_TLS_SERVER_NAME",
        value_name = "NAME"
    )]
    pub tls_server_name: Option<String>,
}

impl ServerArgs {
    /// Connects to the cluster through `--bootstrap` (or `--server`).
    pub async fn cluster(&self) -> Result<ClusterClient, ClientError> {
        let seeds = if self.bootstrap.is_empty() {
            vec![self.server.clone()]
        } else {
            self.bootstrap.clone()
        };
        ClusterClient::connect_with(&seeds, self.read_from, self.tls()?).await
    }

    /// TLS from `--ca`, `--cert` and `--key` (`None` without `--ca`).
    pub fn tls(&self) -> Result<Option<crate::security::tls::ClientTls>, ClientError> {
        let invalid = |e: crate::security::tls::TlsError| {
            ClientError::Status(tonic::Status::invalid_argument(e.to_string()))
        };
        let files = crate::security::tls::TlsFiles::from_settings(
            self.ca.as_deref(),
            self.cert.as_deref(),
            self.key.as_deref(),
            ["--ca", "--cert", "--key"],
        )
        .map_err(invalid)?;
        files
            .map(|f| {
                crate::security::tls::ClientTls::new(
                    f,
                    self.tls_server_name.as_deref().unwrap_or(""),
                )
            })
            .transpose()
            .map_err(invalid)
    }
}

/// `logbook topic ...`
#[derive(Debug, clap::Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create(CreateTopicArgs),
    /// List topics.
    List,
    /// Show a topic's settings and, per partition, offsets and size.
    Describe {
        /// Topic name.
        name: String,
    },
    /// Delete a topic and its data.
    Delete {
        /// Topic name.
        name: String,
    },
}

/// `logbook topic create`
#[derive(Debug, clap::Args)]
pub struct CreateTopicArgs {
    /// Topic name: letters, digits, '.', '_', '-'.
    pub name: String,
    /// Number of partitions [default: the broker's default_partitions]
    #[arg(long, default_value_t = 0)]
    pub partitions: u32,
    /// Size retention per partition in bytes, -1 for none
    #[arg(long, allow_hyphen_values = true)]
    pub retention_bytes: Option<i64>,
    /// Time retention in ms, -1 for none
    #[arg(long, allow_hyphen_values = true)]
    pub retention_ms: Option<i64>,
    /// delete | compact
    #[arg(long)]
    pub cleanup_policy: Option<CleanupPolicy>,
    /// Largest record batch (one produce request) in bytes
    #[arg(long)]
    pub max_batch_bytes: Option<u64>,
    /// Segment size in bytes
    #[arg(long)]
    pub segment_max_bytes: Option<u64>,
}

/// `logbook produce`
#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    /// Topic to produce to.
    #[arg(long)]
    pub topic: String,
    /// Partition to produce to [default: by key, round-robin without keys]
    #[arg(long)]
    pub partition: Option<u32>,
    /// Key of every record.
    #[arg(long, conflicts_with = "key_separator")]
    pub record_key: Option<String>,
    /// Each line is `KEY<SEPARATOR>VALUE` (lines without the separator have no key).
    #[arg(long)]
    pub key_separator: Option<String>,
    /// Read lines from this file instead of stdin.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Records per produce request.
    #[arg(long, default_value_t = 500)]
    pub batch_records: usize,
}

/// Output format of `logbook consume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The value of each record, one per line.
    Text,
    /// One JSON object per record: topic, partition, offset, timestamp_ms, key, value, headers.
    Json,
}

/// `logbook consume`
#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    #[arg(long)]
    pub topic: String,
    /// Partition to read [default: all]
    #[arg(long)]
    pub partition: Option<u32>,
    /// Start at the earliest offset (default: only records produced from now on).
    #[arg(long, conflicts_with = "offset")]
    pub from_beginning: bool,
    /// Start at this offset (needs --partition).
    #[arg(long, requires = "partition")]
    pub offset: Option<u64>,
    /// Keep following the tail instead of stopping at the end.
    #[arg(long)]
    pub follow: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Stop after this many records.
    #[arg(long)]
    pub max_records: Option<u64>,
}

/// `logbook topic ...`
pub async fn topic(server: &ServerArgs, command: TopicCommand) -> Result<(), ClientError> {
    let mut client = server.cluster().await?.any().await?;
    match command {
        TopicCommand::Create(args) => {
            let config = pb::TopicConfig {
                retention_bytes: args.retention_bytes,
                retention_ms: args.retention_ms,
                cleanup_policy: match args.cleanup_policy {
                    None => pb::CleanupPolicy::Unspecified,
                    Some(CleanupPolicy::Delete) => pb::CleanupPolicy::Delete,
                    Some(CleanupPolicy::Compact) => pb::CleanupPolicy::Compact,
                } as i32,
                max_batch_bytes: args.max_batch_bytes,
                segment_max_bytes: args.segment_max_bytes,
            };
            let topic = client
                .create_topic(&args.name, args.partitions, config)
                .await?;
            println!(
                "created topic {} with {} partition(s)",
                topic.name, topic.partitions
            );
        }
        TopicCommand::List => {
            for topic in client.list_topics().await? {
                println!("{}\t{}", topic.name, topic.partitions);
            }
        }
        TopicCommand::Describe { name } => print_description(&client.describe_topic(&name).await?),
        TopicCommand::Delete { name } => {
            client.delete_topic(&name).await?;
            println!("deleted topic {name}");
        }
    }
    Ok(())
}

fn print_description(topic: &pb::TopicDescription) {
    let c = topic.config.unwrap_or_default();
    let policy = match pb::CleanupPolicy::try_from(c.cleanup_policy) {
        Ok(pb::CleanupPolicy::Compact) => "compact",
        _ => "delete",
    };
    println!("topic: {}", topic.name);
    println!("partitions: {}", topic.partitions);
    println!("retention_bytes: {}", c.retention_bytes.unwrap_or(-1));
    println!("retention_ms: {}", c.retention_ms.unwrap_or(-1));
    println!("cleanup_policy: {policy}");
    println!("max_batch_bytes: {}", c.max_batch_bytes.unwrap_or_default());
    println!(
        "segment_max_bytes: {}",
        c.segment_max_bytes.unwrap_or_default()
    );
    println!("partition\tlog_start_offset\thigh_watermark\tsize_bytes\tleader");
    for p in &topic.partition_info {
        println!(
            "{}\t{}\t{}\t{}\t{}",
            p.partition, p.log_start_offset, p.high_watermark, p.size_bytes, p.leader_id
        );
    }
}

/// Turns an input line into a record.
fn line_record(line: &str, args: &ProduceArgs, now: i64) -> NewRecord {
    let (key, value) = match (&args.record_key, &args.key_separator) {
        (Some(key), _) => (Some(key.as_str()), line),
        (None, Some(sep)) => match line.split_once(sep.as_str()) {
            Some((k, v)) => (Some(k), v),
            None => (None, line),
        },
        (None, None) => (None, line),
    };
    NewRecord {
        key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        headers: Vec::new(),
        timestamp_ms: now,
    }
}

/// Records waiting to be sent, by partition.
struct Pending {
    by_partition: BTreeMap<u32, Vec<NewRecord>>,
    next_round_robin: u32,
}

/// `logbook produce`: lines from stdin or `--file`, one record each, sent on a produce stream.
pub async fn produce(server: &ServerArgs, args: ProduceArgs) -> Result<(), ClientError> {
    let cluster = server.cluster().await?;
    let partitions = cluster.partitions(&args.topic).await?.max(1);
    let (lines_tx, mut lines_rx) = mpsc::channel::<std::io::Result<String>>(1024);
    let progress = reader_thread(args.file.clone(), lines_tx).map_err(|e| {
        ClientError::Status(tonic::Status::invalid_argument(format!(
            "cannot read input: {e}"
        )))
    })?;
    // One produce stream per partition leader. Acknowledgements are read while requests are
    // still being sent (HTTP/2 flow control would otherwise stall both sides on a large input).
    let mut streams = LeaderStreams {
        cluster: &cluster,
        senders: BTreeMap::new(),
        readers: Vec::new(),
    };
    let mut pending = Pending {
        by_partition: BTreeMap::new(),
        next_round_robin: fastrand::u32(..partitions),
    };
    let (mut sent, mut records) = (0u64, 0u64);
    let batch = args.batch_records.max(1);
    let mut stream_ended = false;
    while let Some(line) = lines_rx.recv().await {
        let line = line.map_err(|e| {
            ClientError::Status(tonic::Status::invalid_argument(format!(
                "cannot read input: {e}"
            )))
        })?;
        if let Some(bar) = &progress {
            bar.inc(line.len() as u64 + 1);
        }
        let record = line_record(&line, &args, now_ms());
        let partition = match (args.partition, &record.key) {
            (Some(p), _) => p,
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => pending.next_round_robin,
        };
        let queue = pending.by_partition.entry(partition).or_default();
        queue.push(record);
        records += 1;
        if queue.len() >= batch {
            let full = std::mem::take(queue);
            sent += 1;
            let request = produce_request(&args.topic, Some(partition), &full)?;
            if streams.send(&args.topic, partition, request).await.is_err() {
                stream_ended = true;
                break;
            }
            if args.record_key.is_none() && args.key_separator.is_none() && args.partition.is_none()
            {
                pending.next_round_robin = (pending.next_round_robin + 1) % partitions;
            }
        }
    }
    if !stream_ended {
        for (partition, rest) in std::mem::take(&mut pending.by_partition) {
            if rest.is_empty() {
                continue;
            }
            sent += 1;
            let request = produce_request(&args.topic, Some(partition), &rest)?;
            if streams.send(&args.topic, partition, request).await.is_err() {
                break;
            }
        }
    }
    // The broker's own error (if a stream ended early) comes from the acknowledgements.
    let acked = streams.finish().await?;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    if acked != sent {
        return Err(ClientError::Status(tonic::Status::aborted(format!(
            "only {acked} of {sent} produce requests were acknowledged"
        ))));
    }
    eprintln!("produced {records} record(s) to {}", args.topic);
    Ok(())
}

/// Produce streams to partition leaders, opened as needed, with their acknowledgement readers.
struct LeaderStreams<'a> {
    cluster: &'a ClusterClient,
    senders: BTreeMap<String, mpsc::Sender<pb::ProduceRequest>>,
    readers: Vec<tokio::task::JoinHandle<Result<u64, ClientError>>>,
}

impl LeaderStreams<'_> {
    /// Sends `request` on the stream to the partition's leader (opening it if needed). An
    /// error means that stream ended; its reason comes from [`LeaderStreams::finish`].
    async fn send(
        &mut self,
        topic: &str,
        partition: u32,
        request: pb::ProduceRequest,
    ) -> Result<(), ClientError> {
        let addr = match self.cluster.leader(topic, partition) {
            Some(addr) => addr,
            None => {
                self.cluster.refresh().await?;
                self.cluster.leader(topic, partition).ok_or_else(|| {
                    ClientError::Status(tonic::Status::unavailable(format!(
                        "{topic}/{partition} has no known leader"
                    )))
                })?
            }
        };
        if !self.senders.contains_key(&addr) {
            let mut client = self.cluster.node(&addr).await?;
            let (sender, mut acks) = client.produce_stream().await?.into_parts();
            self.readers.push(tokio::spawn(async move {
                let mut acked = 0u64;
                while let Some(ack) = acks.next_ack().await {
                    ack?;
                    acked += 1;
                }
                Ok::<u64, ClientError>(acked)
            }));
            self.senders.insert(addr.clone(), sender);
        }
        match self.senders.get(&addr) {
            Some(sender) => sender
                .send(request)
                .await
                .map_err(|_| ClientError::Status(tonic::Status::aborted("produce stream ended"))),
            None => Ok(()),
        }
    }

    /// Closes every stream and returns how many requests were acknowledged (or the first
    /// stream's error).
    async fn finish(self) -> Result<u64, ClientError> {
        drop(self.senders);
        let mut acked = 0;
        for reader in self.readers {
            acked += reader
                .await
                .map_err(|e| ClientError::Status(tonic::Status::internal(e.to_string())))??;
        }
        Ok(acked)
    }
}

/// Reads lines on a thread (stdin and files are blocking); returns a progress bar when reading
/// a file with an interactive terminal.
fn reader_thread(
    file: Option<PathBuf>,
    lines: mpsc::Sender<std::io::Result<String>>,
) -> std::io::Result<Option<ProgressBar>> {
    let (reader, progress): (Box<dyn BufRead + Send>, _) = match file {
        Some(path) => {
            let file = std::fs::File::open(&path)?;
            let len = file.metadata()?.len();
            let bar = std::io::stderr().is_terminal().then(|| {
                let bar = ProgressBar::new(len);
                if let Ok(style) = ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                ) {
                    bar.set_style(style);
                }
                bar
            });
            (
                Box::new(std::io::BufReader::with_capacity(1 << 20, file)),
                bar,
            )
        }
        None => (Box::new(std::io::BufReader::new(std::io::stdin())), None),
    };
    std::thread::spawn(move || {
        for line in reader.lines() {
            if lines.blocking_send(line).is_err() {
                break;
            }
        }
    });
    Ok(progress)
}

/// Prints records; returns false when stdout is gone (a closed pipe) so the caller stops.
fn print_records(
    out: &mut impl Write,
    topic: &str,
    partition: u32,
    records: &[Record],
    format: Format,
) -> bool {
    let text = |b: &Option<Bytes>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
    for r in records {
        let written = match format {
            Format::Text => writeln!(out, "{}", text(&r.value).unwrap_or_default()),
            Format::Json => {
                let headers: serde_json::Map<String, serde_json::Value> = r
                    .headers
                    .iter()
                    .map(|h| (h.key.clone(), text(&h.value).into()))
                    .collect();
                let object = serde_json::json!({
                    "topic": topic,
                    "partition": partition,
                    "offset": r.offset,
                    "timestamp_ms": r.timestamp_ms,
                    "key": text(&r.key),
                    "value": text(&r.value),
                    "headers": headers,
                });
                writeln!(out, "{object}")
            }
        };
        if written.is_err() {
            return false;
        }
    }
    out.flush().is_ok()
}

/// `logbook consume`
pub async fn consume(server: &ServerArgs, args: ConsumeArgs) -> Result<(), ClientError> {
    let cluster = server.cluster().await?;
    let count = cluster.partitions(&args.topic).await?;
    let partitions: Vec<u32> = match args.partition {
        Some(p) if p >= count => {
            // Let a broker give the usual NOT_FOUND for the partition.
            let mut client = cluster.any().await?;
            client.consume(&args.topic, p, 0, 1, Duration::ZERO).await?;
            vec![p]
        }
        Some(p) => vec![p],
        None => (0..count).collect(),
    };
    let start = match (args.offset, args.from_beginning) {
        (Some(offset), _) => Start::Offset(offset),
        (None, true) => Start::Earliest,
        (None, false) => Start::Latest,
    };
    let limit = args.max_records.unwrap_or(u64::MAX);
    if limit == 0 {
        return Ok(());
    }
    // One task per partition feeds a single printer.
    let (tx, mut rx) = mpsc::channel::<Result<(u32, Vec<Record>), ClientError>>(16);
    for partition in partitions {
        // Each partition is read from one of its replicas (round-robin or the leader).
        let addr = cluster.reader(&args.topic, partition).ok_or_else(|| {
            tonic::Status::unavailable(format!("{}/{partition} has no replica", args.topic))
        })?;
        let mut client = cluster.node(&addr).await?;
        let topic = client.describe_topic(&args.topic).await?;
        let (tx, topic_name) = (tx.clone(), args.topic.clone());
        let follow = args.follow;
        let info = topic
            .partition_info
            .iter()
            .find(|p| p.partition == partition)
            .cloned();
        tokio::spawn(async move {
            let result = if follow {
                follow_partition(&mut client, &topic_name, partition, start, &tx).await
            } else {
                read_partition(&mut client, &topic_name, partition, start, info, &tx).await
            };
            if let Err(e) = result {
                let _ = tx.send(Err(e)).await;
            }
        });
    }
    drop(tx);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printed = 0u64;
    while let Some(batch) = rx.recv().await {
        let (partition, mut records) = batch?;
        records.truncate((limit - printed).min(records.len() as u64) as usize);
        printed += records.len() as u64;
        if !print_records(&mut out, &args.topic, partition, &records, args.format)
            || printed >= limit
        {
            break;
        }
    }
    Ok(())
}

/// Reads one partition from `start` up to the high watermark seen when it started.
async fn read_partition(
    client: &mut Client,
    topic: &str,
    partition: u32,
    start: Start,
    info: Option<pb::PartitionInfo>,
    tx: &mpsc::Sender<Result<(u32, Vec<Record>), ClientError>>,
) -> Result<(), ClientError> {
    let info = info.unwrap_or_default();
    let end = info.high_watermark;
    let mut offset = match start {
        Start::Earliest => info.log_start_offset,
        Start::Latest => end,
        Start::Offset(o) => o,
    };
    loop {
        let fetched = client
            .consume(topic, partition, offset, 1 << 20, Duration::ZERO)
            .await?;
        let done = fetched.next_offset >= end || fetched.next_offset == offset;
        offset = fetched.next_offset;
        let records: Vec<Record> = fetched
            .records
            .into_iter()
            .filter(|r| r.offset < end)
            .collect();
        if !records.is_empty() && tx.send(Ok((partition, records))).await.is_err() {
            return Ok(());
        }
        if done {
            return Ok(());
        }
    }
}

/// Follows one partition from `start` until the printer stops or the stream fails.
async fn follow_partition(
    client: &mut Client,
    topic: &str,
    partition: u32,
    start: Start,
    tx: &mpsc::Sender<Result<(u32, Vec<Record>), ClientError>>,
) -> Result<(), ClientError> {
    let mut stream = client
        .consume_stream(topic, partition, start, 1 << 20)
        .await?;
    while let Some(fetched) = stream.next().await {
        let fetched = fetched?;
        if !fetched.records.is_empty() && tx.send(Ok((partition, fetched.records))).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}
