//! Client library: connects to a broker over gRPC. Producers encode Kafka RecordBatch v2
//! batches on the client (the broker only validates and appends them); consumers fetch stored
//! batches and decode them on the client. The CLI and the benchmarks use it.

pub mod cluster;
mod partitioner;

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status, Streaming};

pub use cluster::{ClusterClient, ReadFrom, leader_hint};
pub use partitioner::{kafka_murmur2, partition_for_key};

use crate::log::{BatchError, NewRecord, Record, decode_records, encode_batch};
use crate::proto::v1::{
    self as pb, consume_service_client::ConsumeServiceClient,
    metadata_service_client::MetadataServiceClient, produce_service_client::ProduceServiceClient,
    topic_service_client::TopicServiceClient,
};

/// Largest response the client accepts.
const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// Exit codes of the CLI, by failure (scripts can branch on them).
pub mod exit_code {
    /// Any other failure.
    pub const FAILURE: i32 = 1;
    /// Bad command line (clap's own code).
    pub const USAGE: i32 = 2;
    /// The broker cannot be reached or is unavailable (retry later).
    pub const UNAVAILABLE: i32 = 3;
    /// The topic or partition does not exist.
    pub const NOT_FOUND: i32 = 4;
    /// An offset outside the partition's range.
    pub const OUT_OF_RANGE: i32 = 5;
    /// An invalid argument (bad name, setting, or a record batch that is too large).
    pub const INVALID: i32 = 6;
    /// The topic already exists.
    pub const ALREADY_EXISTS: i32 = 7;
}

/// What a client call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be made.
    #[error("cannot connect to logbook at {addr}: {reason} (is `logbook serve` running there?)")]
    Connect {
        /// The address tried.
        addr: String,
        /// Why it failed.
        reason: String,
    },
    /// The broker answered with an error status (details are in the status).
    #[error("{}", .0.message())]
    Status(#[from] Status),
    /// The records could not be encoded or the fetched batches decoded.
    #[error("records: {0}")]
    Batch(#[from] BatchError),
}

impl ClientError {
    /// The gRPC code, if the broker answered.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Status(s) => Some(s.code()),
            _ => None,
        }
    }

    /// The CLI exit code for this error (see [`exit_code`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Connect { .. } => exit_code::UNAVAILABLE,
            ClientError::Batch(_) => exit_code::INVALID,
            ClientError::Status(s) => match s.code() {
                Code::Unavailable => exit_code::UNAVAILABLE,
                Code::NotFound => exit_code::NOT_FOUND,
                Code::OutOfRange => exit_code::OUT_OF_RANGE,
                Code::InvalidArgument | Code::ResourceExhausted => exit_code::INVALID,
                Code::AlreadyExists => exit_code::ALREADY_EXISTS,
                _ => exit_code::FAILURE,
            },
        }
    }
}

/// Shorthand for client results.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Where a consume stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The lowest readable offset.
    Earliest,
    /// The high watermark: only records produced from now on.
    Latest,
    /// A given offset.
    Offset(u64),
}

/// Records fetched from one partition.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// Records at or after the offset asked for, control batches skipped.
    pub records: Vec<Record>,
    /// Where the next fetch should start.
    pub next_offset: u64,
    /// Lowest readable offset.
    pub log_start_offset: u64,
    /// Offset after the last acknowledged record.
    pub high_watermark: u64,
    /// Bytes of record batches received.
    pub bytes: usize,
}

fn fetched(response: pb::ConsumeResponse, from: u64) -> Result<Fetched> {
    let bytes = response.record_batches.len();
    Ok(Fetched {
        records: decode_records(response.record_batches, from)?,
        next_offset: response.next_offset,
        log_start_offset: response.log_start_offset,
        high_watermark: response.high_watermark,
        bytes,
    })
}

/// A connection to one broker.
#[derive(Debug, Clone)]
pub struct Client {
    /// The broker's address.
    addr: String,
    /// Topic administration.
    topics: TopicServiceClient<Channel>,
    /// Produce.
    produce: ProduceServiceClient<Channel>,
    /// Consume.
    consume: ConsumeServiceClient<Channel>,
    /// Metadata.
    metadata: MetadataServiceClient<Channel>,
}

impl Client {
    /// Connects to the broker at `addr` (`host:port`) in plaintext.
    pub async fn connect(addr: &str) -> Result<Self> {
        Self::connect_with(addr, None).await
    }

    /// Connects to the broker at `addr` (`host:port`), over TLS if `tls` is given.
    pub async fn connect_with(
        addr: &str,
        tls: Option<&crate::security::tls::ClientTls>,
    ) -> Result<Self> {
        let connect_error = |reason: String| ClientError::Connect {
            addr: addr.to_string(),
            reason,
        };
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| connect_error(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_adaptive_window(true);
        let connected = match tls {
            Some(tls) => endpoint.connect_with_connector(tls.connector()).await,
            None => endpoint.connect().await,
        };
        let channel = connected.map_err(|e| {
            let mut reason = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(inner) = source {
                reason = inner.to_string();
                source = inner.source();
            }
            connect_error(reason)
        })?;
        Ok(Client {
            addr: addr.to_string(),
            topics: TopicServiceClient::new(channel.clone()),
            produce: ProduceServiceClient::new(channel.clone())
                .max_encoding_message_size(MAX_RESPONSE_BYTES),
            consume: ConsumeServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_RESPONSE_BYTES),
            metadata: MetadataServiceClient::new(channel),
        })
    }

    /// The broker's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Creates a topic (`partitions == 0`: the broker's default).
    pub async fn create_topic(
        &mut self,
        name: &str,
        partitions: u32,
        config: pb::TopicConfig,
    ) -> Result<pb::TopicDescription> {
        let response = self
            .topics
            .create_topic(pb::CreateTopicRequest {
                name: name.to_string(),
                partitions,
                config: Some(config),
            })
            .await?;
        Ok(response.into_inner().topic.unwrap_or_default())
    }

    /// Deletes a topic.
    pub async fn delete_topic(&mut self, name: &str) -> Result<()> {
        self.topics
            .delete_topic(pb::DeleteTopicRequest {
                name: name.to_string(),
            })
            .await?;
        Ok(())
    }

    /// Lists topics.
    pub async fn list_topics(&mut self) -> Result<Vec<pb::TopicSummary>> {
        Ok(self
            .topics
            .list_topics(pb::ListTopicsRequest {})
            .await?
            .into_inner()
            .topics)
    }

    /// Describes a topic.
    pub async fn describe_topic(&mut self, name: &str) -> Result<pb::TopicDescription> {
        let response = self
            .topics
            .describe_topic(pb::DescribeTopicRequest {
                name: name.to_string(),
            })
            .await?;
        Ok(response.into_inner().topic.unwrap_or_default())
    }

    /// Snapshots a partition now (this node must lead it).
    pub async fn create_snapshot(
        &mut self,
        topic: &str,
        partition: u32,
    ) -> Result<pb::CreateSnapshotResponse> {
        let response = self
            .topics
            .create_snapshot(pb::CreateSnapshotRequest {
                topic: topic.to_string(),
                partition,
            })
            .await?;
        Ok(response.into_inner())
    }

    /// Servers and partition leaders.
    pub async fn metadata(&mut self) -> Result<pb::GetMetadataResponse> {
        Ok(self
            .metadata
            .get_metadata(pb::GetMetadataRequest {})
            .await?
            .into_inner())
    }

    /// Produces `records` as one batch to `partition` (or the records' key partition) and waits
    /// for the acknowledgement.
    pub async fn produce(
        &mut self,
        topic: &str,
        partition: Option<u32>,
        records: &[NewRecord],
    ) -> Result<pb::ProduceResponse> {
        let request = produce_request(topic, partition, records)?;
        Ok(self.produce.produce(request).await?.into_inner())
    }

    /// Sends a prepared produce request and waits for the acknowledgement.
    pub async fn produce_request(
        &mut self,
        request: pb::ProduceRequest,
    ) -> Result<pb::ProduceResponse> {
        Ok(self.produce.produce(request).await?.into_inner())
    }

    /// Opens a produce stream: requests are pipelined, acknowledgements come back in order.
    pub async fn produce_stream(&mut self) -> Result<ProduceStream> {
        let (sender, requests) = mpsc::channel(256);
        let acks = self
            .produce
            .produce_stream(ReceiverStream::new(requests))
            .await?
            .into_inner();
        Ok(ProduceStream {
            sender: Some(sender),
            acks,
        })
    }

    /// Fetches from `offset`, waiting up to `max_wait` if nothing is there yet.
    pub async fn consume(
        &mut self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: u32,
        max_wait: Duration,
    ) -> Result<Fetched> {
        let response = self
            .consume
            .consume(pb::ConsumeRequest {
                topic: topic.to_string(),
                partition,
                offset,
                max_bytes,
                max_wait_ms: max_wait.as_millis().min(u32::MAX as u128) as u32,
                record_batches: true,
            })
            .await?
            .into_inner();
        fetched(response, offset)
    }

    /// Follows a partition from `start`; the stream yields as records arrive.
    pub async fn consume_stream(
        &mut self,
        topic: &str,
        partition: u32,
        start: Start,
        max_bytes: u32,
    ) -> Result<ConsumeStream> {
        let (start, next) = match start {
            Start::Earliest => (
                pb::consume_stream_request::Start::Position(pb::StartPosition::Earliest as i32),
                0,
            ),
            Start::Latest => (
                pb::consume_stream_request::Start::Position(pb::StartPosition::Latest as i32),
                0,
            ),
            Start::Offset(o) => (pb::consume_stream_request::Start::Offset(o), o),
        };
        let responses = self
            .consume
            .consume_stream(pb::ConsumeStreamRequest {
                topic: topic.to_string(),
                partition,
                start: Some(start),
                max_bytes,
                record_batches: true,
            })
            .await?
            .into_inner();
        Ok(ConsumeStream { responses, next })
    }
}

/// Encodes `records` as the request the broker expects.
pub fn produce_request(
    topic: &str,
    partition: Option<u32>,
    records: &[NewRecord],
) -> Result<pb::ProduceRequest> {
    let batch: Bytes = encode_batch(records)?.freeze();
    Ok(pb::ProduceRequest {
        topic: topic.to_string(),
        partition,
        records: Vec::new(),
        record_batch: batch,
    })
}

/// An open produce stream.
#[derive(Debug)]
pub struct ProduceStream {
    /// Requests to the broker (`None` once finished).
    sender: Option<mpsc::Sender<pb::ProduceRequest>>,
    /// Acknowledgements, in request order.
    acks: Streaming<pb::ProduceResponse>,
}

impl ProduceStream {
    /// Queues a request (waits if 256 are already queued). Fails if the stream ended, in which
    /// case [`ProduceStream::next_ack`] returns the reason.
    pub async fn send(&mut self, request: pb::ProduceRequest) -> Result<()> {
        let sender = self
            .sender
            .as_ref()
            .ok_or_else(|| Status::failed_precondition("the produce stream was finished"))?;
        sender
            .send(request)
            .await
            .map_err(|_| Status::aborted("the produce stream ended"))?;
        Ok(())
    }

    /// No more requests: the broker acknowledges what is in flight, then ends the stream.
    pub fn finish(&mut self) {
        self.sender = None;
    }

    /// The next acknowledgement, in request order; `None` once the stream has ended cleanly.
    pub async fn next_ack(&mut self) -> Option<Result<pb::ProduceResponse>> {
        next_ack(&mut self.acks).await
    }

    /// Splits the stream so that one task sends while another reads acknowledgements. Dropping
    /// the sender finishes the stream.
    pub fn into_parts(self) -> (mpsc::Sender<pb::ProduceRequest>, ProduceAcks) {
        let sender = self.sender.unwrap_or_else(|| mpsc::channel(1).0);
        (sender, ProduceAcks { acks: self.acks })
    }
}

/// The acknowledgement half of a split [`ProduceStream`].
#[derive(Debug)]
pub struct ProduceAcks {
    /// Acknowledgements, in request order.
    acks: Streaming<pb::ProduceResponse>,
}

impl ProduceAcks {
    /// The next acknowledgement, in request order; `None` once the stream has ended cleanly.
    pub async fn next_ack(&mut self) -> Option<Result<pb::ProduceResponse>> {
        next_ack(&mut self.acks).await
    }
}

async fn next_ack(
    acks: &mut Streaming<pb::ProduceResponse>,
) -> Option<Result<pb::ProduceResponse>> {
    acks.message()
        .await
        .transpose()
        .map(|r| r.map_err(ClientError::from))
}

/// An open consume stream.
#[derive(Debug)]
pub struct ConsumeStream {
    /// Responses from the broker.
    responses: Streaming<pb::ConsumeResponse>,
    /// Offset the next response starts at (filters the first batch).
    next: u64,
}

impl ConsumeStream {
    /// The next records; `None` when the broker ended the stream cleanly.
    pub async fn next(&mut self) -> Option<Result<Fetched>> {
        match self.responses.message().await {
            Ok(Some(response)) => {
                let from = self.next.max(response.log_start_offset);
                self.next = response.next_offset;
                Some(fetched(response, from))
            }
            Ok(None) => None,
            Err(status) => Some(Err(status.into())),
        }
    }
}
