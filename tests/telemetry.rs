//! Observability against the real binary: `/metrics` after known traffic holds the right
//! values, `/healthz` and `/readyz` answer, request spans reach an in-process OTLP collector
//! with the caller's trace as parent, and JSON logs carry the request span's fields.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::broker::{BrokerProcess, http_get, metric};
use logbook::proto::v1 as pb;
use logbook::proto::v1::produce_service_client::ProduceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use parking_lot::Mutex;

/// An OTLP trace collector that keeps every span it receives.
#[derive(Debug, Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn record(value: &str) -> pb::Record {
    pb::Record {
        value: Some(value.as_bytes().to_vec().into()),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_traces_and_json_logs_after_known_traffic() {
    // The collector, on a free port.
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(
        &dir.path().join("data"),
        &["--otlp-endpoint", &otlp, "--log-format", "json"],
    );
    let admin = broker.admin_addr.clone();
    assert_eq!(http_get(&admin, "/healthz"), (200, "ok\n".to_string()));

    // Traffic with known counts: 3 produce requests of 2, 3 and 5 records, one failed
    // describe, then a consume of everything.
    let mut client = broker.client().await;
    client
        .create_topic("metered", 1, Default::default())
        .await
        .unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", broker.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut produce = ProduceServiceClient::new(channel);
    // The caller's trace: the broker's span for the first produce must continue it.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let mut produced_bytes = 0u64;
    for (i, n) in [2usize, 3, 5].into_iter().enumerate() {
        let records = (0..n).map(|j| record(&format!("r{i}-{j}"))).collect();
        let mut request = tonic::Request::new(pb::ProduceRequest {
            topic: "metered".into(),
            partition: Some(0),
            records,
            ..Default::default()
        });
        if i == 0 {
            request.metadata_mut().insert(
                "traceparent",
                format!("00-{trace_id}-{parent_id}-01").parse().unwrap(),
            );
        }
        request
            .metadata_mut()
            .insert("x-request-id", format!("req-{i}").parse().unwrap());
        produce.produce(request).await.unwrap();
    }
    let described = client.describe_topic("metered").await.unwrap();
    produced_bytes += described.partition_info[0].size_bytes;
    assert!(client.describe_topic("no-such-topic").await.is_err());
    let fetched = client
        .consume("metered", 0, 0, 1 << 20, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(fetched.records.len(), 10);

    // Readiness: the single node leads everything once it is up.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = http_get(&admin, "/readyz");
        if status == 200 {
            assert_eq!(body, "ready\n");
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (status, text) = http_get(&admin, "/metrics");
    assert_eq!(status, 200);
    let expect = |series: &str, value: f64| {
        assert_eq!(metric(&text, series), Some(value), "{series} in\n{text}");
    };
    expect("logbook_produce_records_total{topic=\"metered\"}", 10.0);
    expect("logbook_consume_records_total{topic=\"metered\"}", 10.0);
    // The log also holds Raft's control batches, so the high watermark is past 10.
    expect(
        "logbook_partition_high_watermark{topic=\"metered\",partition=\"0\"}",
        fetched.high_watermark as f64,
    );
    expect(
        "logbook_request_duration_seconds_count{method=\"ProduceService/Produce\",code=\"OK\"}",
        3.0,
    );
    expect(
        "logbook_request_duration_seconds_count{method=\"TopicService/DescribeTopic\",code=\"NOT_FOUND\"}",
        1.0,
    );
    expect("logbook_raft_is_leader{group=\"metered/0\"}", 1.0);
    expect("logbook_gossip_members{status=\"alive\"}", 1.0);
    let produce_bytes = metric(&text, "logbook_produce_bytes_total{topic=\"metered\"}").unwrap();
    // Three batches' bytes: what the log holds for them (the log also holds a Raft control
    // batch or two, so the partition is at least as large).
    assert!(
        produce_bytes > 0.0 && produce_bytes <= produced_bytes as f64,
        "{produce_bytes} vs {produced_bytes}"
    );
    let size = metric(
        &text,
        "logbook_partition_size_bytes{topic=\"metered\",partition=\"0\"}",
    )
    .unwrap();
    assert!(size >= produce_bytes, "{size} < {produce_bytes}");
    let term = metric(&text, "logbook_raft_term{group=\"metered/0\"}").unwrap();
    assert!(term >= 1.0);
    let applied = metric(&text, "logbook_raft_applied_index{group=\"metered/0\"}").unwrap();
    let committed = metric(&text, "logbook_raft_commit_index{group=\"metered/0\"}").unwrap();
    assert!(
        applied >= 3.0 && applied == committed,
        "{applied} {committed}"
    );
    assert!(
        metric(
            &text,
            "logbook_raft_leader_changes_total{group=\"metered/0\"}"
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        text.contains("logbook_snapshot_lag_bytes{group=\"metered/0\"}"),
        "{text}"
    );
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );

    // The first produce's span reached the collector, as a child of the caller's span.
    let deadline = Instant::now() + Duration::from_secs(30);
    let span = loop {
        let found = collector
            .spans
            .lock()
            .iter()
            .find(|s| hex(&s.trace_id) == trace_id && s.name == "ProduceService/Produce")
            .cloned();
        if let Some(span) = found {
            break span;
        }
        assert!(
            Instant::now() < deadline,
            "no produce span reached the collector"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(hex(&span.parent_span_id), parent_id);
    let attribute = |key: &str| {
        span.attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_ref())
            .map(|v| format!("{:?}", v.value))
            .unwrap_or_default()
    };
    assert!(
        attribute("topic").contains("metered"),
        "{:?}",
        span.attributes
    );
    assert!(
        attribute("request_id").contains("req-0"),
        "{:?}",
        span.attributes
    );
    assert!(attribute("code").contains("OK"), "{:?}", span.attributes);

    // JSON logs: every line is an object; the failed describe's line carries the span's
    // fields (method, code).
    let log = broker.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let failed = lines
        .iter()
        .find(|l| {
            l["span"]["method"] == "TopicService/DescribeTopic" && l["span"]["code"] == "NOT_FOUND"
        })
        .unwrap_or_else(|| panic!("no JSON line for the failed describe in\n{log}"));
    assert_eq!(failed["fields"]["message"], "request failed");
    assert_eq!(failed["span"]["topic"], "no-such-topic");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
