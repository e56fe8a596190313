//! The process's Prometheus metrics (`prometheus-client`, OpenMetrics text on `/metrics`).
//!
//! Counters and histograms are updated where things happen; gauges of state (partition
//! offsets and sizes, Raft indexes, snapshot lag, gossip members) are refilled from the
//! broker on each scrape, so a deleted topic's series disappear.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of per-topic counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    /// Topic name.
    pub topic: String,
}

/// Labels of per-partition gauges.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: u32,
}

/// Labels of per-Raft-group series (`meta` or `topic/partition`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabels {
    /// Group name.
    pub group: String,
}

/// Labels of request latency.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// gRPC method, `Service/Method`.
    pub method: String,
    /// gRPC status code name (`OK`, `NOT_FOUND`, ...).
    pub code: String,
}

/// Labels of failures with a reason.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Short reason.
    pub reason: String,
}

/// Labels of counts by status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// Status name.
    pub status: String,
}

/// Labels of ACL denials.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenialLabels {
    /// Action denied.
    pub action: String,
}

type Histograms = Family<RequestLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 us .. ~13 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

/// Every metric of the process.
#[derive(Debug)]
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// Records acknowledged to producers.
    pub produce_records: Family<TopicLabels, Counter>,
    /// Their encoded batch bytes.
    pub produce_bytes: Family<TopicLabels, Counter>,
    /// Records sent to consumers.
    pub consume_records: Family<TopicLabels, Counter>,
    /// Bytes of the batches they came in.
    pub consume_bytes: Family<TopicLabels, Counter>,
    /// gRPC request latency by method and code.
    pub request_duration: Histograms,
    /// TLS handshakes refused, by reason.
    pub tls_handshake_failures: Family<ReasonLabels, Counter>,
    /// Requests refused for a missing or non-node certificate.
    pub authentication_failures: Family<ReasonLabels, Counter>,
    /// Certificate reloads.
    pub tls_reloads: Counter,
    /// ACL denials, by action.
    pub acl_denials: Family<DenialLabels, Counter>,
    /// ACL policy reloads.
    pub acl_reloads: Counter,
    /// Leader changes seen by this node's replica of each group.
    pub leader_changes: Family<GroupLabels, Counter>,
    /// Bytes this replica uploaded to the snapshot store.
    pub snapshot_upload_bytes: Family<GroupLabels, Counter>,
    /// High watermark of each local replica.
    pub partition_high_watermark: Family<PartitionLabels, Gauge>,
    /// First offset of each local replica.
    pub partition_log_start_offset: Family<PartitionLabels, Gauge>,
    /// Bytes on disk of each local replica.
    pub partition_size_bytes: Family<PartitionLabels, Gauge>,
    /// Raft term of each local group.
    pub raft_term: Family<GroupLabels, Gauge>,
    /// Commit index this replica knows.
    pub raft_commit_index: Family<GroupLabels, Gauge>,
    /// Last applied index.
    pub raft_applied_index: Family<GroupLabels, Gauge>,
    /// Last log index.
    pub raft_last_log_index: Family<GroupLabels, Gauge>,
    /// 1 where this node leads the group.
    pub raft_is_leader: Family<GroupLabels, Gauge>,
    /// Sealed, committed bytes not yet in the snapshot store.
    pub snapshot_lag_bytes: Family<GroupLabels, Gauge>,
    /// Snapshot store failures in a row.
    pub snapshot_failures: Family<GroupLabels, Gauge>,
    /// Gossip members by status.
    pub gossip_members: Family<StatusLabels, Gauge>,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("logbook");
        let m = Metrics {
            produce_records: Family::default(),
            produce_bytes: Family::default(),
            consume_records: Family::default(),
            consume_bytes: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            tls_handshake_failures: Family::default(),
            authentication_failures: Family::default(),
            tls_reloads: Counter::default(),
            acl_denials: Family::default(),
            acl_reloads: Counter::default(),
            leader_changes: Family::default(),
            snapshot_upload_bytes: Family::default(),
            partition_high_watermark: Family::default(),
            partition_log_start_offset: Family::default(),
            partition_size_bytes: Family::default(),
            raft_term: Family::default(),
            raft_commit_index: Family::default(),
            raft_applied_index: Family::default(),
            raft_last_log_index: Family::default(),
            raft_is_leader: Family::default(),
            snapshot_lag_bytes: Family::default(),
            snapshot_failures: Family::default(),
            gossip_members: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "produce_records",
            "Records acknowledged to producers",
            m.produce_records.clone(),
        );
        r.register(
            "produce_bytes",
            "Bytes of acknowledged record batches",
            m.produce_bytes.clone(),
        );
        r.register(
            "consume_records",
            "Records sent to consumers",
            m.consume_records.clone(),
        );
        r.register(
            "consume_bytes",
            "Bytes of record batches sent to consumers",
            m.consume_bytes.clone(),
        );
        r.register(
            "request_duration_seconds",
            "gRPC request latency (to the response head) by method and status code",
            m.request_duration.clone(),
        );
        r.register(
            "tls_handshake_failures",
            "TLS handshakes refused, by reason",
            m.tls_handshake_failures.clone(),
        );
        r.register(
            "authentication_failures",
            "Requests refused for a missing certificate or a non-node certificate on the Raft service",
            m.authentication_failures.clone(),
        );
        r.register(
            "tls_reloads",
            "Certificate reloads from disk",
            m.tls_reloads.clone(),
        );
        r.register(
            "acl_denials",
            "Requests denied by the ACL policy, by action",
            m.acl_denials.clone(),
        );
        r.register(
            "acl_reloads",
            "ACL policy reloads from disk",
            m.acl_reloads.clone(),
        );
        r.register(
            "raft_leader_changes",
            "Leader changes seen by this node, per Raft group",
            m.leader_changes.clone(),
        );
        r.register(
            "snapshot_upload_bytes",
            "Bytes uploaded to the snapshot store, per group",
            m.snapshot_upload_bytes.clone(),
        );
        r.register(
            "partition_high_watermark",
            "High watermark of each local replica",
            m.partition_high_watermark.clone(),
        );
        r.register(
            "partition_log_start_offset",
            "First offset of each local replica",
            m.partition_log_start_offset.clone(),
        );
        r.register(
            "partition_size_bytes",
            "Bytes on disk of each local replica",
            m.partition_size_bytes.clone(),
        );
        r.register(
            "raft_term",
            "Raft term of each local group",
            m.raft_term.clone(),
        );
        r.register(
            "raft_commit_index",
            "Raft commit index known to this replica",
            m.raft_commit_index.clone(),
        );
        r.register(
            "raft_applied_index",
            "Last Raft index applied by this replica",
            m.raft_applied_index.clone(),
        );
        r.register(
            "raft_last_log_index",
            "Last Raft index in this replica's log",
            m.raft_last_log_index.clone(),
        );
        r.register(
            "raft_is_leader",
            "1 where this node leads the group",
            m.raft_is_leader.clone(),
        );
        r.register(
            "snapshot_lag_bytes",
            "Sealed, committed bytes not yet in the snapshot store",
            m.snapshot_lag_bytes.clone(),
        );
        r.register(
            "snapshot_failures",
            "Snapshot store failures in a row",
            m.snapshot_failures.clone(),
        );
        r.register(
            "gossip_members",
            "Gossip members by status",
            m.gossip_members.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Clears the gauges refilled on each scrape.
    pub fn clear_state_gauges(&self) {
        self.partition_high_watermark.clear();
        self.partition_log_start_offset.clear();
        self.partition_size_bytes.clear();
        self.raft_term.clear();
        self.raft_commit_index.clear();
        self.raft_applied_index.clear();
        self.raft_last_log_index.clear();
        self.raft_is_leader.clear();
        self.snapshot_lag_bytes.clear();
        self.snapshot_failures.clear();
        self.gossip_members.clear();
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        text
    }

    /// Counts an ACL denial.
    pub fn acl_denied(&self, action: &str) {
        self.acl_denials
            .get_or_create(&DenialLabels {
                action: action.to_string(),
            })
            .inc();
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}
