//! The gRPC services: thin translations between protobuf messages and [`Broker`] calls.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::status::to_status;
use crate::broker::{
    Broker, BrokerError, Consumed, DEFAULT_READ_BYTES, PendingProduce, ProducePayload, Produced,
    TopicSettings, TopicStatus, read, wait_above, wait_until_set,
};
use crate::log::{self, CleanupPolicy, LogError, NewRecord, RecordHeader};
use crate::proto::v1::{
    self as pb, consume_service_server::ConsumeService, metadata_service_server::MetadataService,
    produce_service_server::ProduceService, topic_service_server::TopicService,
};
use crate::security::Caller;
use crate::security::acl::{Acl, Action};
use crate::telemetry::{TopicLabels, metrics};

/// Largest byte budget a read may ask for.
const MAX_READ_BYTES: usize = 64 << 20;
/// Longest long poll.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Produce requests one stream may have waiting for acknowledgement.
const STREAM_IN_FLIGHT: usize = 64;

/// Implements every logbook service on top of one broker.
#[derive(Debug, Clone)]
pub struct Api {
    /// The broker served.
    broker: Arc<Broker>,
    /// Who may do what (`None`: ACLs off, everything allowed).
    acl: Option<Arc<Acl>>,
}

/// Records the topic (and partition) a request is about on its span.
fn note_topic(topic: &str, partition: Option<u32>) {
    let span = tracing::Span::current();
    span.record("topic", topic);
    if let Some(p) = partition {
        span.record("partition", p);
    }
}

/// The caller the request layer attached (anonymous if none).
fn caller_of<T>(request: &Request<T>) -> Caller {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_default()
}

impl Api {
    /// Serves `broker`, enforcing `acl` if given.
    pub fn new(broker: Arc<Broker>, acl: Option<Arc<Acl>>) -> Self {
        Api { broker, acl }
    }

    /// Whether `caller` may do `action` on `topic`; PERMISSION_DENIED naming the subject,
    /// action and topic if not. Nodes are not subject to ACLs.
    fn authorize(&self, caller: &Caller, action: Action, topic: &str) -> Result<(), Status> {
        let Some(acl) = &self.acl else { return Ok(()) };
        if caller.is_node() {
            return Ok(());
        }
        acl.check(caller.name(), action, topic).map_err(|denied| {
            metrics().acl_denied(action.as_str());
            tracing::warn!(subject = %caller.name(), action = %action, topic, "denied by ACL");
            Status::permission_denied(denied.to_string())
        })
    }

    /// The ACL policy's generation (0 without ACLs).
    fn acl_generation(&self) -> u64 {
        self.acl.as_ref().map_or(0, |acl| acl.generation())
    }

    /// Whether `caller` may see `topic` at all (any action on it).
    fn visible(&self, caller: &Caller, topic: &str) -> bool {
        match &self.acl {
            None => true,
            Some(_) if caller.is_node() => true,
            Some(acl) => [Action::Produce, Action::Consume, Action::Admin]
                .into_iter()
                .any(|a| acl.allows(caller.name(), a, topic)),
        }
    }

    fn check_size(&self, message: &impl Message) -> Result<(), Status> {
        let limit = self.broker.config().max_request_bytes as usize;
        let size = message.encoded_len();
        if size > limit {
            return Err(to_status(BrokerError::RequestTooLarge { size, limit }));
        }
        Ok(())
    }
}

fn to_cleanup(policy: i32) -> Option<CleanupPolicy> {
    match pb::CleanupPolicy::try_from(policy) {
        Ok(pb::CleanupPolicy::Delete) => Some(CleanupPolicy::Delete),
        Ok(pb::CleanupPolicy::Compact) => Some(CleanupPolicy::Compact),
        _ => None,
    }
}

fn from_cleanup(policy: CleanupPolicy) -> pb::CleanupPolicy {
    match policy {
        CleanupPolicy::Delete => pb::CleanupPolicy::Delete,
        CleanupPolicy::Compact => pb::CleanupPolicy::Compact,
    }
}

fn unlimited(v: Option<u64>) -> i64 {
    v.map_or(-1, |v| v as i64)
}

fn describe(status: TopicStatus) -> pb::TopicDescription {
    let c = &status.log_config;
    pb::TopicDescription {
        name: status.name,
        partitions: status.partitions.len() as u32,
        config: Some(pb::TopicConfig {
            retention_bytes: Some(unlimited(c.retention_bytes)),
            retention_ms: Some(unlimited(c.retention_ms)),
            cleanup_policy: from_cleanup(c.cleanup_policy) as i32,
            max_batch_bytes: Some(c.max_batch_bytes),
            segment_max_bytes: Some(c.segment_max_bytes),
        }),
        partition_info: status
            .partitions
            .into_iter()
            .map(|p| pb::PartitionInfo {
                partition: p.partition,
                log_start_offset: p.log_start_offset,
                high_watermark: p.high_watermark,
                size_bytes: p.size_bytes,
                leader_id: p.leader_id.unwrap_or(0),
                replication_bytes_received: p.replication_bytes_received,
                snapshot_manifest: p.snapshot_manifest,
                snapshot_lag_bytes: p.snapshot_lag_bytes,
                snapshot_failures: p.snapshot_failures,
            })
            .collect(),
    }
}

fn to_new_record(r: pb::Record) -> NewRecord {
    NewRecord {
        key: r.key,
        value: r.value,
        headers: r
            .headers
            .into_iter()
            .map(|h| RecordHeader {
                key: h.key,
                value: h.value,
            })
            .collect(),
        // Negative: the broker stamps its own clock.
        timestamp_ms: r.timestamp_ms.unwrap_or(-1),
    }
}

fn to_consumed(r: log::Record) -> pb::ConsumedRecord {
    pb::ConsumedRecord {
        offset: r.offset,
        timestamp_ms: r.timestamp_ms,
        key: r.key,
        value: r.value,
        headers: r
            .headers
            .into_iter()
            .map(|h| pb::Header {
                key: h.key,
                value: h.value,
            })
            .collect(),
    }
}

fn produced(p: Produced) -> pb::ProduceResponse {
    pb::ProduceResponse {
        partition: p.partition,
        base_offset: p.base_offset,
        last_offset: p.last_offset,
    }
}

/// Builds a consume response: decoded records from `from_offset` on, or the raw batches.
fn consume_response(
    topic: &str,
    consumed: Consumed,
    from_offset: u64,
    raw: bool,
) -> Result<pb::ConsumeResponse, Status> {
    let labels = TopicLabels {
        topic: topic.to_string(),
    };
    let m = metrics();
    m.consume_bytes
        .get_or_create(&labels)
        .inc_by(consumed.batches.len() as u64);
    let (records, record_batches) = if raw {
        // Records of data batches at or after the offset asked for (batches go out whole).
        let records: u64 = log::split_batches(consumed.batches.clone())
            .filter_map(Result::ok)
            .filter(|b| !b.header.is_control())
            .map(|b| {
                let h = &b.header;
                match from_offset.checked_sub(h.base_offset) {
                    None | Some(0) => u64::from(h.records_count),
                    Some(_) => h.last_offset().saturating_sub(from_offset) + 1,
                }
            })
            .sum();
        m.consume_records.get_or_create(&labels).inc_by(records);
        (Vec::new(), consumed.batches)
    } else {
        let records = log::decode_records(consumed.batches, from_offset)
            .map_err(|e| to_status(LogError::from(e).into()))?;
        m.consume_records
            .get_or_create(&labels)
            .inc_by(records.len() as u64);
        (
            records.into_iter().map(to_consumed).collect(),
            Default::default(),
        )
    };
    Ok(pb::ConsumeResponse {
        records,
        record_batches,
        next_offset: consumed.next_offset,
        log_start_offset: consumed.log_start_offset,
        high_watermark: consumed.high_watermark,
    })
}

fn read_budget(max_bytes: u32) -> usize {
    match max_bytes {
        0 => DEFAULT_READ_BYTES,
        n => (n as usize).min(MAX_READ_BYTES),
    }
}

/// Validates a produce request and queues its records (in call order); the returned future
/// resolves with the acknowledgement.
async fn submit_one(
    broker: &Broker,
    request: pb::ProduceRequest,
) -> Result<PendingProduce, Status> {
    let payload = if request.record_batch.is_empty() {
        ProducePayload::Records(request.records.into_iter().map(to_new_record).collect())
    } else if request.records.is_empty() {
        ProducePayload::Batch(request.record_batch)
    } else {
        return Err(to_status(BrokerError::InvalidArgument {
            field: "records",
            reason: "send either records or record_batch, not both".into(),
        }));
    };
    broker
        .submit_produce(&request.topic, request.partition, payload)
        .await
        .map_err(to_status)
}

async fn acknowledged(pending: PendingProduce) -> Result<pb::ProduceResponse, Status> {
    pending
        .acknowledged()
        .await
        .map(produced)
        .map_err(to_status)
}

#[tonic::async_trait]
impl TopicService for Api {
    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        note_topic(&request.get_ref().name, None);
        self.authorize(&caller_of(&request), Action::Admin, &request.get_ref().name)?;
        let request = request.into_inner();
        let config = request.config.unwrap_or_default();
        let settings = TopicSettings {
            partitions: request.partitions,
            retention_bytes: config.retention_bytes,
            retention_ms: config.retention_ms,
            cleanup_policy: to_cleanup(config.cleanup_policy),
            max_batch_bytes: config.max_batch_bytes,
            segment_max_bytes: config.segment_max_bytes,
        };
        // Run to completion even if the client goes away (a dropped handler would leave
        // the files and the topic map disagreeing).
        let broker = self.broker.clone();
        let status =
            tokio::spawn(async move { broker.create_topic(&request.name, settings).await })
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(to_status)?;
        Ok(Response::new(pb::CreateTopicResponse {
            topic: Some(describe(status)),
        }))
    }

    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        note_topic(&request.get_ref().name, None);
        self.authorize(&caller_of(&request), Action::Admin, &request.get_ref().name)?;
        let broker = self.broker.clone();
        let name = request.into_inner().name;
        tokio::spawn(async move { broker.delete_topic(&name).await })
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(to_status)?;
        Ok(Response::new(pb::DeleteTopicResponse {}))
    }

    async fn list_topics(
        &self,
        request: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        let caller = caller_of(&request);
        let topics = self
            .broker
            .list_topics()
            .into_iter()
            .filter(|(name, _)| self.visible(&caller, name))
            .map(|(name, partitions)| pb::TopicSummary { name, partitions })
            .collect();
        Ok(Response::new(pb::ListTopicsResponse { topics }))
    }

    async fn describe_topic(
        &self,
        request: Request<pb::DescribeTopicRequest>,
    ) -> Result<Response<pb::DescribeTopicResponse>, Status> {
        let caller = caller_of(&request);
        let name = &request.get_ref().name;
        note_topic(name, None);
        if !self.visible(&caller, name) {
            metrics().acl_denied("describe");
            tracing::warn!(subject = %caller.name(), action = "describe", topic = %name, "denied by ACL");
            return Err(Status::permission_denied(format!(
                "subject {:?} may not describe topic {name:?} (it needs produce, consume or admin on it)",
                caller.name()
            )));
        }
        let status = self
            .broker
            .describe_topic(&request.into_inner().name)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::DescribeTopicResponse {
            topic: Some(describe(status)),
        }))
    }

    async fn create_snapshot(
        &self,
        request: Request<pb::CreateSnapshotRequest>,
    ) -> Result<Response<pb::CreateSnapshotResponse>, Status> {
        note_topic(&request.get_ref().topic, Some(request.get_ref().partition));
        self.authorize(
            &caller_of(&request),
            Action::Admin,
            &request.get_ref().topic,
        )?;
        let req = request.into_inner();
        let manifest = self
            .broker
            .create_snapshot(&req.topic, req.partition)
            .await
            .map_err(to_status)?;
        let (term, index) = manifest.last_log_id.unwrap_or((0, 0));
        Ok(Response::new(pb::CreateSnapshotResponse {
            manifest_key: manifest.key(),
            last_log_term: term,
            last_log_index: index,
            log_start_offset: manifest.log_start_offset,
            next_offset: manifest.next_offset,
            objects: manifest.segments.len() as u32,
            bytes: manifest.bytes(),
        }))
    }
}

/// A stream of responses fed by a spawned task.
type ResponseStream<T> = Pin<Box<dyn futures_util::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl ProduceService for Api {
    async fn produce(
        &self,
        request: Request<pb::ProduceRequest>,
    ) -> Result<Response<pb::ProduceResponse>, Status> {
        note_topic(&request.get_ref().topic, request.get_ref().partition);
        self.authorize(
            &caller_of(&request),
            Action::Produce,
            &request.get_ref().topic,
        )?;
        self.check_size(request.get_ref())?;
        let pending = submit_one(&self.broker, request.into_inner()).await?;
        acknowledged(pending).await.map(Response::new)
    }

    type ProduceStreamStream = ResponseStream<pb::ProduceResponse>;

    async fn produce_stream(
        &self,
        request: Request<Streaming<pb::ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let caller = caller_of(&request);
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_IN_FLIGHT);
        let api = self.clone();
        let mut shutdown = self.broker.shutdown_signal();
        tokio::spawn(async move {
            // Topics this stream was allowed to produce to, under which ACL generation (checked
            // again after a policy reload).
            let mut allowed: Vec<String> = Vec::new();
            let mut allowed_under = api.acl_generation();
            let mut pending = FuturesOrdered::new();
            let mut inbound_open = true;
            let mut cut_short = false;
            loop {
                tokio::select! {
                    // Deliver acknowledgements first.
                    biased;
                    Some(result) = pending.next(), if !pending.is_empty() => {
                        let result: Result<pb::ProduceResponse, Status> = result;
                        let failed = result.is_err();
                        if tx.send(result).await.is_err() || failed {
                            return;
                        }
                    }
                    _ = wait_until_set(&mut shutdown), if inbound_open => {
                        // Stop taking requests; acknowledge what is in flight, then end.
                        inbound_open = false;
                        cut_short = true;
                    }
                    message = inbound.message(), if inbound_open && pending.len() < STREAM_IN_FLIGHT => {
                        match message {
                            Ok(Some(request)) => {
                                // Queued here, one after another, so the stream's records keep
                                // their order in the log; acknowledgements are awaited together.
                                if api.acl_generation() != allowed_under {
                                    allowed.clear();
                                    allowed_under = api.acl_generation();
                                }
                                let permitted = if allowed.contains(&request.topic) {
                                    Ok(())
                                } else {
                                    api.authorize(&caller, Action::Produce, &request.topic)
                                        .map(|()| allowed.push(request.topic.clone()))
                                };
                                let queued = match permitted.and_then(|()| api.check_size(&request)) {
                                    Ok(()) => submit_one(&api.broker, request).await,
                                    Err(status) => Err(status),
                                };
                                if queued.is_err() {
                                    // The stream ends with this error: take nothing after it.
                                    inbound_open = false;
                                }
                                pending.push_back(async move { acknowledged(queued?).await });
                            }
                            Ok(None) => inbound_open = false,
                            Err(status) => {
                                let _ = tx.send(Err(status)).await;
                                return;
                            }
                        }
                    }
                    else => {
                        if cut_short {
                            // Requests the client may still have sent were never read.
                            let _ = tx.send(Err(to_status(BrokerError::ShuttingDown))).await;
                        }
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl ConsumeService for Api {
    async fn consume(
        &self,
        request: Request<pb::ConsumeRequest>,
    ) -> Result<Response<pb::ConsumeResponse>, Status> {
        note_topic(&request.get_ref().topic, Some(request.get_ref().partition));
        self.authorize(
            &caller_of(&request),
            Action::Consume,
            &request.get_ref().topic,
        )?;
        let r = request.into_inner();
        let wait = Duration::from_millis(r.max_wait_ms as u64).min(MAX_WAIT);
        let consumed = self
            .broker
            .consume(
                &r.topic,
                r.partition,
                r.offset,
                read_budget(r.max_bytes),
                wait,
            )
            .await
            .map_err(to_status)?;
        consume_response(&r.topic, consumed, r.offset, r.record_batches).map(Response::new)
    }

    type ConsumeStreamStream = ResponseStream<pb::ConsumeResponse>;

    async fn consume_stream(
        &self,
        request: Request<pb::ConsumeStreamRequest>,
    ) -> Result<Response<Self::ConsumeStreamStream>, Status> {
        note_topic(&request.get_ref().topic, Some(request.get_ref().partition));
        let stream_caller = caller_of(&request);
        self.authorize(&stream_caller, Action::Consume, &request.get_ref().topic)?;
        let r = request.into_inner();
        let partition = self
            .broker
            .partition(&r.topic, r.partition)
            .map_err(to_status)?;
        let start = match r.start {
            Some(pb::consume_stream_request::Start::Offset(offset)) => offset,
            Some(pb::consume_stream_request::Start::Position(p))
                if p == pb::StartPosition::Latest as i32 =>
            {
                partition.high_watermark()
            }
            _ => partition.log().log_start_offset(),
        };
        let (budget, raw) = (read_budget(r.max_bytes), r.record_batches);
        // Checked again whenever the ACL policy is reloaded (a revoked consumer stops).
        let (api, caller) = (self.clone(), stream_caller);
        let mut checked_under = api.acl_generation();
        // Fail fast on a bad offset, before the stream starts.
        let first = read(&partition, start, budget).await.map_err(to_status)?;
        let (tx, rx) = mpsc::channel(4);
        let mut shutdown = self.broker.shutdown_signal();
        let topic = r.topic.clone();
        tokio::spawn(async move {
            let mut high_watermark = partition.watch_high_watermark();
            let mut next = start;
            let mut pending = Some(first);
            loop {
                if *shutdown.borrow() {
                    let _ = tx.send(Err(to_status(BrokerError::ShuttingDown))).await;
                    return;
                }
                let consumed = match pending.take() {
                    Some(c) => c,
                    None if next < partition.high_watermark() => {
                        match read(&partition, next, budget).await {
                            Ok(c) => c,
                            Err(e) => {
                                let _ = tx.send(Err(to_status(e))).await;
                                return;
                            }
                        }
                    }
                    None => {
                        // Caught up: wait for new records, shutdown, or the client leaving.
                        // No polling.
                        tokio::select! {
                            open = wait_above(&mut high_watermark, next) => {
                                if !open {
                                    // The partition closed: the broker is stopping or the
                                    // topic was deleted.
                                    let error = if *shutdown.borrow() {
                                        BrokerError::ShuttingDown
                                    } else {
                                        BrokerError::UnknownTopic(topic)
                                    };
                                    let _ = tx.send(Err(to_status(error))).await;
                                    return;
                                }
                            }
                            _ = wait_until_set(&mut shutdown) => {}
                            _ = tx.closed() => return,
                        }
                        continue;
                    }
                };
                if consumed.batches.is_empty() {
                    // A gap up to the high watermark: continue from where the read says.
                    next = next.max(consumed.next_offset);
                    continue;
                }
                if api.acl_generation() != checked_under {
                    checked_under = api.acl_generation();
                    if let Err(status) = api.authorize(&caller, Action::Consume, &topic) {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
                let from = next;
                next = consumed.next_offset;
                let response = consume_response(&topic, consumed, from, raw);
                let failed = response.is_err();
                if tx.send(response).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tonic::async_trait]
impl MetadataService for Api {
    async fn get_metadata(
        &self,
        _request: Request<pb::GetMetadataRequest>,
    ) -> Result<Response<pb::GetMetadataResponse>, Status> {
        let metadata = self.broker.metadata();
        let mut leads: std::collections::BTreeMap<u64, Vec<pb::TopicPartition>> =
            std::collections::BTreeMap::new();
        let mut partitions = Vec::new();
        // Not filtered by ACLs: clients route with it, and a produce or consume to a topic
        // the caller may not use is answered PERMISSION_DENIED by name (clearer than "no
        // such topic").
        for (name, topic) in &metadata.topics {
            for (i, replicas) in topic.replicas.iter().enumerate() {
                let group = crate::raft::partition_group(name, i as u32);
                let leader = metadata.leaders.get(&group).copied();
                if let Some(leader) = leader {
                    leads.entry(leader).or_default().push(pb::TopicPartition {
                        topic: name.clone(),
                        partition: i as u32,
                    });
                }
                partitions.push(pb::PartitionMetadata {
                    topic: name.clone(),
                    partition: i as u32,
                    leader_id: leader.unwrap_or(0),
                    replica_ids: replicas.clone(),
                });
            }
        }
        let servers = metadata
            .nodes
            .iter()
            .map(|(id, node)| pb::ServerInfo {
                node_id: *id,
                address: node.addr.clone(),
                leads: leads.remove(id).unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::GetMetadataResponse {
            cluster_id: metadata.cluster_id.clone(),
            servers,
            partitions,
        }))
    }
}
