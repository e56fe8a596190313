//! Every documented error returns its gRPC code and structured details, against the real binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::broker::{BrokerProcess, assert_contiguous, offsets_and_values, read_partition};
use logbook::client::{Client, ClientError};
use logbook::log::NewRecord;
use logbook::proto::v1 as pb;
use logbook::proto::v1::produce_service_client::ProduceServiceClient;
use tonic::Code;
use tonic_types::StatusExt;

fn status(error: ClientError) -> tonic::Status {
    match error {
        ClientError::Status(s) => s,
        other => panic!("expected a status, got {other:?}"),
    }
}

fn record(value: &[u8]) -> NewRecord {
    NewRecord {
        key: None,
        value: Some(Bytes::copy_from_slice(value)),
        headers: vec![],
        timestamp_ms: 1,
    }
}

fn error_info(s: &tonic::Status) -> (String, std::collections::HashMap<String, String>) {
    let info = s.get_details_error_info().expect("ErrorInfo details");
    assert_eq!(info.domain, "logbook");
    (info.reason, info.metadata)
}

async fn raw_produce(addr: &str) -> ProduceServiceClient<tonic::transport::Channel> {
    ProduceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
        .max_encoding_message_size(usize::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_error_has_its_code_and_details() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(
        &dir.path().join("data"),
        &[
            "--max-request-bytes",
            "262144",
            "--max-batch-bytes",
            "65536",
        ],
    );
    let mut client = broker.client().await;
    client
        .create_topic("t", 2, Default::default())
        .await
        .unwrap();
    let ack = client
        .produce("t", Some(0), &[record(b"a"), record(b"b")])
        .await
        .unwrap();
    assert_contiguous(&ack, 2);
    let high_watermark = ack.last_offset + 1;

    // Unknown topic: NOT_FOUND naming the topic.
    let s = status(
        client
            .produce("nope", None, &[record(b"x")])
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code(), Code::NotFound);
    let resource = s.get_details_resource_info().expect("ResourceInfo");
    assert_eq!(
        (
            resource.resource_type.as_str(),
            resource.resource_name.as_str()
        ),
        ("topic", "nope")
    );
    assert_eq!(error_info(&s).0, "UNKNOWN_TOPIC");

    // Unknown partition: NOT_FOUND with the partition count.
    let s = status(
        client
            .consume("t", 5, 0, 0, Duration::ZERO)
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code(), Code::NotFound);
    let (reason, meta) = error_info(&s);
    assert_eq!(reason, "UNKNOWN_PARTITION");
    assert_eq!(meta["partitions"], "2");

    // Offset past the high watermark: OUT_OF_RANGE with the low and high offsets.
    let past = high_watermark + 5;
    let s = status(
        client
            .consume("t", 0, past, 0, Duration::ZERO)
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code(), Code::OutOfRange);
    let (reason, meta) = error_info(&s);
    assert_eq!(reason, "OFFSET_OUT_OF_RANGE");
    assert_eq!(
        (
            meta["requested_offset"].clone(),
            meta["log_start_offset"].clone(),
            meta["high_watermark"].clone()
        ),
        (
            past.to_string(),
            "0".to_string(),
            high_watermark.to_string()
        )
    );
    let bad = s.get_details_bad_request().expect("BadRequest");
    assert_eq!(bad.field_violations[0].field, "offset");

    // A batch over the topic's max_batch_bytes: RESOURCE_EXHAUSTED with the limit.
    let s = status(
        client
            .produce("t", Some(0), &[record(&vec![b'x'; 100_000])])
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code(), Code::ResourceExhausted);
    let (reason, meta) = error_info(&s);
    assert_eq!(reason, "RECORD_BATCH_TOO_LARGE");
    assert_eq!(meta["limit_bytes"], "65536");

    // A request over max_request_bytes: RESOURCE_EXHAUSTED with the limit.
    let mut raw = raw_produce(&broker.addr).await;
    let big = pb::ProduceRequest {
        topic: "t".into(),
        partition: Some(0),
        records: (0..5)
            .map(|_| pb::Record {
                key: None,
                value: Some(Bytes::from(vec![b'y'; 60_000])),
                headers: vec![],
                timestamp_ms: None,
            })
            .collect(),
        record_batch: Bytes::new(),
    };
    let s = raw.produce(big).await.unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted);
    let (reason, meta) = error_info(&s);
    assert_eq!(reason, "REQUEST_TOO_LARGE");
    assert_eq!(meta["limit_bytes"], "262144");

    // Garbage instead of a record batch: INVALID_ARGUMENT on the field.
    let s = raw
        .produce(pb::ProduceRequest {
            topic: "t".into(),
            partition: Some(0),
            records: vec![],
            record_batch: Bytes::from_static(
                b"definitely not a record batch, but long enough to have a header..",
            ),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert_eq!(
        s.get_details_bad_request().unwrap().field_violations[0].field,
        "record_batch"
    );

    // Keyed records for different partitions in one request: INVALID_ARGUMENT.
    let spread: Vec<NewRecord> = (0..20)
        .map(|i| NewRecord {
            key: Some(Bytes::from(format!("k{i}"))),
            ..record(b"v")
        })
        .collect();
    let s = status(client.produce("t", None, &spread).await.unwrap_err());
    assert_eq!(s.code(), Code::InvalidArgument);
    assert_eq!(
        s.get_details_bad_request().unwrap().field_violations[0].field,
        "records"
    );

    // Invalid names: INVALID_ARGUMENT on "name"; existing topic: ALREADY_EXISTS.
    for name in ["", "has space", "../escape", &"x".repeat(250)] {
        let s = status(
            client
                .create_topic(name, 1, Default::default())
                .await
                .unwrap_err(),
        );
        assert_eq!(s.code(), Code::InvalidArgument, "{name:?}");
        assert_eq!(
            s.get_details_bad_request().unwrap().field_violations[0].field,
            "name"
        );
    }
    let s = status(
        client
            .create_topic("t", 1, Default::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code(), Code::AlreadyExists);
    // Bad settings: INVALID_ARGUMENT.
    let s = status(
        client
            .create_topic(
                "u",
                1,
                pb::TopicConfig {
                    retention_ms: Some(-5),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code(), Code::InvalidArgument);
    let s = status(
        client
            .create_topic("u", 100_000, Default::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code(), Code::InvalidArgument);

    // Nothing acknowledged was disturbed by any of it.
    let all = client.consume("t", 0, 0, 0, Duration::ZERO).await.unwrap();
    assert_eq!(all.records.len(), 2);
    assert_eq!(
        offsets_and_values(&all.records),
        vec![
            (ack.base_offset, "a".to_string()),
            (ack.last_offset, "b".to_string())
        ]
    );
    assert_eq!(all.high_watermark, high_watermark);
}

/// A mounted tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap()
            .success();
        assert!(
            ok,
            "mounting a tmpfs failed; this test needs root (CAP_SYS_ADMIN)"
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_unavailable_and_the_broker_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(&dir.path().join("fs"), "3m");
    let filler = fs.0.join("filler");
    std::fs::write(&filler, vec![0u8; 1 << 20]).unwrap();
    let broker = BrokerProcess::start(
        &fs.0.join("data"),
        &[
            "--index-max-bytes",
            "16384",
            "--segment-max-bytes",
            "262144",
            "--max-batch-bytes",
            "65536",
        ],
    );
    let mut client: Client = broker.client().await;
    client
        .create_topic("full", 1, Default::default())
        .await
        .unwrap();
    let value = vec![b'z'; 32 * 1024];
    // Offsets of the acknowledged records, in order.
    let mut acked: Vec<u64> = Vec::new();
    let full = loop {
        match client.produce("full", Some(0), &[record(&value)]).await {
            Ok(ack) => {
                assert_contiguous(&ack, 1);
                if let Some(&last) = acked.last() {
                    assert!(ack.base_offset > last, "{ack:?} after offset {last}");
                }
                acked.push(ack.base_offset);
                assert!(acked.len() < 1000, "the disk never filled up");
            }
            Err(e) => break status(e),
        }
    };
    assert_eq!(full.code(), Code::Unavailable, "{full:?}");
    assert_eq!(error_info(&full).0, "DISK_FULL");
    assert!(full.get_details_retry_info().is_some());
    // Still up, still serving what it acknowledged (and nothing of the failed request).
    let value_text = String::from_utf8(value.clone()).unwrap();
    let expected: Vec<(u64, String)> = acked.iter().map(|&o| (o, value_text.clone())).collect();
    assert_eq!(
        offsets_and_values(&read_partition(&mut client, "full", 0).await),
        expected
    );
    // Space returns: produce works again, after the last acknowledged offset.
    std::fs::remove_file(&filler).unwrap();
    let ack = client
        .produce("full", Some(0), &[record(b"again")])
        .await
        .unwrap();
    assert_contiguous(&ack, 1);
    let last = *acked
        .last()
        .expect("something was acknowledged before the disk filled");
    assert!(ack.base_offset > last, "{ack:?} after offset {last}");
    let mut expected = expected;
    expected.push((ack.base_offset, "again".to_string()));
    assert_eq!(
        offsets_and_values(&read_partition(&mut client, "full", 0).await),
        expected
    );
    drop(client);
    broker.kill();
}
