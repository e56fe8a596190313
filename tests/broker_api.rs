//! Black-box tests of the broker's gRPC API against the real `logbook` binary on a free port.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::broker::{BrokerProcess, assert_contiguous, offsets_and_values, read_partition};
use logbook::client::{Client, Start, partition_for_key};
use logbook::log::{NewRecord, RecordHeader};
use logbook::proto::v1 as pb;
use logbook::proto::v1::produce_service_client::ProduceServiceClient;

fn rec(key: Option<&str>, value: &str) -> NewRecord {
    NewRecord {
        key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
        value: Some(Bytes::copy_from_slice(value.as_bytes())),
        headers: vec![RecordHeader {
            key: "source".into(),
            value: Some(Bytes::from_static(b"test")),
        }],
        timestamp_ms: 1_700_000_000_000,
    }
}

async fn values(client: &mut Client, topic: &str, partition: u32, from: u64) -> Vec<(u64, String)> {
    let fetched = client
        .consume(topic, partition, from, 1 << 20, Duration::ZERO)
        .await
        .unwrap();
    fetched
        .records
        .iter()
        .map(|r| {
            (
                r.offset,
                String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let mut client = broker.client().await;

    let config = pb::TopicConfig {
        retention_ms: Some(-1),
        cleanup_policy: pb::CleanupPolicy::Compact as i32,
        max_batch_bytes: Some(64 * 1024),
        ..Default::default()
    };
    let created = client.create_topic("orders", 4, config).await.unwrap();
    assert_eq!(created.partitions, 4);
    assert_eq!(created.partition_info.len(), 4);
    let c = created.config.unwrap();
    assert_eq!(c.retention_ms, Some(-1));
    assert_eq!(c.cleanup_policy, pb::CleanupPolicy::Compact as i32);
    assert_eq!(c.max_batch_bytes, Some(64 * 1024));

    client
        .create_topic("events", 0, Default::default())
        .await
        .unwrap();
    let names: Vec<_> = client
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.name, t.partitions))
        .collect();
    assert_eq!(
        names,
        vec![("events".to_string(), 1), ("orders".to_string(), 4)]
    );

    let ack = client
        .produce("orders", Some(2), &[rec(None, "x")])
        .await
        .unwrap();
    assert_contiguous(&ack, 1);
    let described = client.describe_topic("orders").await.unwrap();
    let p2 = &described.partition_info[2];
    assert_eq!(
        (p2.log_start_offset, p2.high_watermark),
        (0, ack.last_offset + 1)
    );
    assert_eq!(
        offsets_and_values(&read_partition(&mut client, "orders", 2).await),
        vec![(ack.base_offset, "x".to_string())]
    );
    assert!(p2.size_bytes > 0);

    let metadata = client.metadata().await.unwrap();
    assert_eq!(metadata.servers.len(), 1);
    assert_eq!(metadata.servers[0].address, broker.addr);
    assert_eq!(metadata.partitions.len(), 5);
    assert!(
        metadata
            .partitions
            .iter()
            .all(|p| p.leader_id == metadata.servers[0].node_id)
    );

    client.delete_topic("orders").await.unwrap();
    assert_eq!(client.list_topics().await.unwrap().len(), 1);
    assert_eq!(
        client.describe_topic("orders").await.unwrap_err().code(),
        Some(tonic::Code::NotFound)
    );
    // A new topic of the same name starts empty.
    client
        .create_topic("orders", 4, Default::default())
        .await
        .unwrap();
    // (Its high watermark may be above 0: Raft's control batches take offsets, but hold no
    // records.)
    for partition in 0..4 {
        assert!(
            read_partition(&mut client, "orders", partition)
                .await
                .is_empty(),
            "partition {partition} of the new topic holds no records"
        );
    }
    assert!(
        !broker
            .data_dir
            .join("topics")
            .read_dir()
            .unwrap()
            .any(|e| { e.unwrap().file_name().to_string_lossy().contains("deleted") })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_then_consume_with_keys_headers_and_both_request_forms() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let mut client = broker.client().await;
    client
        .create_topic("t", 3, Default::default())
        .await
        .unwrap();

    // Keyed: lands on the key's partition (Kafka's murmur2).
    let ack = client
        .produce(
            "t",
            None,
            &[rec(Some("user-7"), "a"), rec(Some("user-7"), "b")],
        )
        .await
        .unwrap();
    assert_eq!(ack.partition, partition_for_key(b"user-7", 3));
    assert_contiguous(&ack, 2);
    let keyed_ack = ack;
    // Explicit partition.
    let ack = client
        .produce("t", Some(0), &[rec(None, "c")])
        .await
        .unwrap();
    assert_eq!(ack.partition, 0);
    assert_contiguous(&ack, 1);
    let c_ack = ack;

    let keyed = partition_for_key(b"user-7", 3);
    let fetched = client
        .consume("t", keyed, 0, 1 << 20, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(fetched.records.len(), 2);
    assert_eq!(
        (fetched.records[0].offset, fetched.records[1].offset),
        (keyed_ack.base_offset, keyed_ack.last_offset)
    );
    let first = &fetched.records[0];
    assert_eq!(first.key.as_deref(), Some(&b"user-7"[..]));
    assert_eq!(first.value.as_deref(), Some(&b"a"[..]));
    assert_eq!(first.timestamp_ms, 1_700_000_000_000);
    assert_eq!(first.headers[0].key, "source");
    assert_eq!(fetched.high_watermark, keyed_ack.last_offset + 1);

    // The message form (records as protobuf, encoded by the broker) works too, and an absent
    // timestamp gets the broker's clock.
    let mut raw = ProduceServiceClient::connect(format!("http://{}", broker.addr))
        .await
        .unwrap();
    let response = raw
        .produce(pb::ProduceRequest {
            topic: "t".into(),
            partition: Some(0),
            records: vec![pb::Record {
                key: None,
                value: Some(Bytes::from_static(b"d")),
                headers: vec![],
                timestamp_ms: None,
            }],
            record_batch: Bytes::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.partition, 0);
    assert_contiguous(&response, 1);
    assert!(
        response.base_offset > c_ack.last_offset,
        "{response:?} after {c_ack:?}"
    );
    let got = client
        .consume("t", 0, response.base_offset, 1 << 20, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(got.records[0].offset, response.base_offset);
    assert_eq!(got.records[0].value.as_deref(), Some(&b"d"[..]));
    assert!(got.records[0].timestamp_ms > 1_700_000_000_000);
    // Reading from the middle returns records from that offset on.
    assert_eq!(
        values(&mut client, "t", keyed, keyed_ack.base_offset + 1).await,
        vec![(keyed_ack.last_offset, "b".to_string())]
    );
    // Partition 0 from the start: "c" then "d", each at its acknowledged offset.
    assert_eq!(
        offsets_and_values(&read_partition(&mut client, "t", 0).await),
        vec![
            (c_ack.base_offset, "c".to_string()),
            (response.base_offset, "d".to_string())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_stream_acknowledges_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let mut client = broker.client().await;
    client
        .create_topic("s", 1, Default::default())
        .await
        .unwrap();
    let mut stream = client.produce_stream().await.unwrap();
    let n = 300u64;
    let sender = async {
        for i in 0..n {
            let records: Vec<NewRecord> = (0..3).map(|j| rec(None, &format!("{i}.{j}"))).collect();
            stream_send(&mut stream, &records).await;
        }
        stream.finish();
        let mut acks = Vec::new();
        while let Some(ack) = stream.next_ack().await {
            acks.push(ack.unwrap());
        }
        acks
    };
    let acks = sender.await;
    assert_eq!(acks.len() as u64, n);
    for (i, ack) in acks.iter().enumerate() {
        assert_contiguous(ack, 3);
        if i > 0 {
            assert!(
                ack.base_offset > acks[i - 1].last_offset,
                "acks come back in request order: #{i} {ack:?} after {:?}",
                acks[i - 1]
            );
        }
    }
    let all = client
        .consume("s", 0, 0, 16 << 20, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(all.records.len() as u64, 3 * n);
    // The k-th record read is the k-th produced, at the offset its ack reported.
    let expected: Vec<(u64, String)> = acks
        .iter()
        .enumerate()
        .flat_map(|(i, ack)| (0..3).map(move |j| (ack.base_offset + j, format!("{i}.{j}"))))
        .collect();
    assert_eq!(offsets_and_values(&all.records), expected);
    assert_eq!(all.records[3 * 7 + 1].value.as_deref(), Some(&b"7.1"[..]));
}

async fn stream_send(stream: &mut logbook::client::ProduceStream, records: &[NewRecord]) {
    stream
        .send(logbook::client::produce_request("s", Some(0), records).unwrap())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_following_the_tail_sees_records_produced_after_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let mut client = broker.client().await;
    client
        .create_topic("tail", 1, Default::default())
        .await
        .unwrap();
    client
        .produce("tail", Some(0), &[rec(None, "before")])
        .await
        .unwrap();

    let mut follower = client
        .consume_stream("tail", 0, Start::Latest, 0)
        .await
        .unwrap();
    let mut everything = client
        .consume_stream("tail", 0, Start::Earliest, 0)
        .await
        .unwrap();
    for i in 0..5 {
        client
            .produce("tail", Some(0), &[rec(None, &format!("after-{i}"))])
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let fetched = tokio::time::timeout(Duration::from_secs(30), follower.next())
            .await
            .expect("the follower got the new records")
            .unwrap()
            .unwrap();
        seen.extend(fetched.records.into_iter().map(|r| r.value.unwrap()));
    }
    assert_eq!(
        seen,
        (0..5)
            .map(|i| Bytes::from(format!("after-{i}")))
            .collect::<Vec<_>>()
    );
    let first = tokio::time::timeout(Duration::from_secs(30), everything.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.records[0].value.as_deref(), Some(&b"before"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_returns_records_that_arrive_while_it_waits() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let mut client = broker.client().await;
    client
        .create_topic("poll", 1, Default::default())
        .await
        .unwrap();
    // Nothing arrives: an empty answer after the wait.
    let empty = client
        .consume("poll", 0, 0, 0, Duration::from_millis(100))
        .await
        .unwrap();
    assert!(empty.records.is_empty());
    // Only control batches (if anything) below: the consumer is sent to the high watermark.
    assert_eq!(empty.next_offset, empty.high_watermark);
    // Something arrives during the wait: the poll (from where the broker said to continue)
    // returns it.
    let mut poller = client.clone();
    let from = empty.next_offset;
    let waiting = tokio::spawn(async move {
        poller
            .consume("poll", 0, from, 0, Duration::from_secs(30))
            .await
            .unwrap()
    });
    let ack = client
        .produce("poll", Some(0), &[rec(None, "late")])
        .await
        .unwrap();
    let got = waiting.await.unwrap();
    assert_eq!(got.records.len(), 1);
    assert_eq!(got.records[0].offset, ack.base_offset);
    assert_eq!(got.records[0].value.as_deref(), Some(&b"late"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_every_acknowledged_record_and_the_node_identity() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let broker = BrokerProcess::start(&data, &[]);
    let mut client = broker.client().await;
    client
        .create_topic("keep", 2, Default::default())
        .await
        .unwrap();
    // Per partition, (offset, value) of every acknowledged record.
    let mut acked: [Vec<(u64, String)>; 2] = Default::default();
    for i in 0..50 {
        let value = format!("v{i}");
        let ack = client
            .produce("keep", Some(i % 2), &[rec(None, &value)])
            .await
            .unwrap();
        assert_eq!(ack.partition, i % 2);
        assert_contiguous(&ack, 1);
        acked[(i % 2) as usize].push((ack.base_offset, value));
    }
    let node = client.metadata().await.unwrap().servers[0].node_id;
    assert!(broker.terminate().success(), "graceful shutdown exits 0");

    let broker = BrokerProcess::start(&data, &[]);
    let mut client = broker.client().await;
    assert_eq!(client.metadata().await.unwrap().servers[0].node_id, node);
    let even = values(&mut client, "keep", 0, 0).await;
    let odd = values(&mut client, "keep", 1, 0).await;
    assert_eq!(even.len() + odd.len(), 50);
    assert_eq!(even, acked[0]);
    assert_eq!(odd, acked[1]);
    assert_eq!(even[3].1, "v6");
    assert_eq!(odd[3].1, "v7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_produce_stream_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // offset -> value of every acknowledged record, over all rounds.
    let mut acked: Vec<(u64, String)> = Vec::new();
    let flags = [
        "--fsync",
        "always",
        "--segment-max-bytes",
        "65536",
        "--max-batch-bytes",
        "16384",
    ];
    for round in 0..5 {
        let broker = BrokerProcess::start(&data, &flags);
        let mut client = broker.client().await;
        if round == 0 {
            client
                .create_topic("crash", 1, Default::default())
                .await
                .unwrap();
        }
        let (sender, mut acks) = client.produce_stream().await.unwrap().into_parts();
        let pump = tokio::spawn(async move {
            for i in 0u64.. {
                let value = format!("r{round}-{i}");
                let request =
                    logbook::client::produce_request("crash", Some(0), &[rec(None, &value)])
                        .unwrap();
                if sender.send(request).await.is_err() {
                    break;
                }
            }
        });
        // Acknowledgements come back in request order: the k-th holds "r{round}-{k}".
        let target = 20 + fastrand::u64(0..300);
        let mut k = 0u64;
        while k < target {
            let ack = tokio::time::timeout(Duration::from_secs(30), acks.next_ack())
                .await
                .expect("acknowledgements keep coming")
                .expect("the stream is open")
                .unwrap();
            assert_contiguous(&ack, 1);
            acked.push((ack.base_offset, format!("r{round}-{k}")));
            k += 1;
        }
        broker.kill(); // SIGKILL while requests are still in flight
        pump.abort();
        // Acknowledgements already on the wire before the kill count too.
        while let Some(Ok(ack)) = acks.next_ack().await {
            acked.push((ack.base_offset, format!("r{round}-{k}")));
            k += 1;
        }

        let broker = BrokerProcess::start(&data, &flags);
        let mut client = broker.client().await;
        let high = client.describe_topic("crash").await.unwrap().partition_info[0].high_watermark;
        let all = values_all(&mut client, "crash", high).await;
        // Offsets only grow (control batches may leave gaps), and nothing is read twice.
        assert!(
            all.windows(2).all(|w| w[0].0 < w[1].0),
            "offsets increase after SIGKILL #{round}"
        );
        let distinct: std::collections::HashSet<&String> = all.iter().map(|(_, v)| v).collect();
        assert_eq!(
            distinct.len(),
            all.len(),
            "no duplicates after SIGKILL #{round}"
        );
        let by_offset: std::collections::HashMap<u64, &String> =
            all.iter().map(|(o, v)| (*o, v)).collect();
        for (offset, value) in &acked {
            assert_eq!(
                by_offset.get(offset),
                Some(&value),
                "acknowledged record at {offset} after SIGKILL #{round}"
            );
        }
        // Acknowledgements (over all rounds) came back with increasing offsets.
        assert!(
            acked.windows(2).all(|w| w[0].0 < w[1].0),
            "acked offsets increase (round {round})"
        );
        drop(client);
        broker.kill();
    }
    assert!(acked.len() >= 100);
}

async fn values_all(client: &mut Client, topic: &str, high: u64) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < high {
        let fetched = client
            .consume(topic, 0, offset, 1 << 20, Duration::ZERO)
            .await
            .unwrap();
        for r in &fetched.records {
            out.push((
                r.offset,
                String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap(),
            ));
        }
        assert!(fetched.next_offset > offset, "reads must make progress");
        offset = fetched.next_offset;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_are_served_on_the_same_port() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", broker.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "logbook.v1.ProduceService".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in [
        "logbook.v1.TopicService",
        "logbook.v1.ProduceService",
        "logbook.v1.ConsumeService",
        "logbook.v1.MetadataService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == service),
            "{service} missing from {names:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_following_streams_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let mut client = broker.client().await;
    client
        .create_topic("bye", 1, Default::default())
        .await
        .unwrap();
    let mut follower = client
        .consume_stream("bye", 0, Start::Latest, 0)
        .await
        .unwrap();
    let status = tokio::task::spawn_blocking(move || broker.terminate())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
    match follower.next().await {
        Some(Err(e)) => assert_eq!(e.code(), Some(tonic::Code::Unavailable)),
        None => {}
        other => panic!("the stream should end on shutdown, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_request_ends_a_produce_stream_and_nothing_after_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let mut client = broker.client().await;
    client
        .create_topic("ok", 1, Default::default())
        .await
        .unwrap();
    let (sender, mut acks) = client.produce_stream().await.unwrap().into_parts();
    let request = |topic: &str, value: &str| {
        logbook::client::produce_request(topic, Some(0), &[rec(None, value)]).unwrap()
    };
    sender.send(request("ok", "first")).await.unwrap();
    sender.send(request("missing", "fails")).await.unwrap();
    for i in 0..20 {
        // May or may not be accepted by the channel; either way they must not be written.
        let _ = sender.send(request("ok", &format!("after-{i}"))).await;
    }
    drop(sender);
    let first = acks.next_ack().await.unwrap().unwrap();
    assert_contiguous(&first, 1);
    let error = acks.next_ack().await.unwrap().unwrap_err();
    assert_eq!(error.code(), Some(tonic::Code::NotFound));
    assert!(
        acks.next_ack().await.is_none(),
        "the stream ends at the failure"
    );
    assert_eq!(
        values(&mut client, "ok", 0, 0).await,
        vec![(first.base_offset, "first".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_partition_takes_records_with_any_keys_and_names_are_never_special() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let broker = BrokerProcess::start(&data, &[]);
    let mut client = broker.client().await;
    // A name that looks like a leftover of a delete is an ordinary topic.
    client
        .create_topic("x.deleted-1", 3, Default::default())
        .await
        .unwrap();
    let mixed: Vec<NewRecord> = (0..10).map(|i| rec(Some(&format!("k{i}")), "v")).collect();
    let ack = client
        .produce("x.deleted-1", Some(1), &mixed)
        .await
        .unwrap();
    assert_eq!(ack.partition, 1);
    assert_contiguous(&ack, 10);
    // The message form too.
    let mut raw = ProduceServiceClient::connect(format!("http://{}", broker.addr))
        .await
        .unwrap();
    let records = (0..10)
        .map(|i| pb::Record {
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from_static(b"v")),
            headers: vec![],
            timestamp_ms: None,
        })
        .collect();
    let response = raw
        .produce(pb::ProduceRequest {
            topic: "x.deleted-1".into(),
            partition: Some(2),
            records,
            record_batch: Bytes::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.partition, 2);
    assert_contiguous(&response, 10);
    assert!(broker.terminate().success());
    let broker = BrokerProcess::start(&data, &[]);
    let mut client = broker.client().await;
    let topic = client.describe_topic("x.deleted-1").await.unwrap();
    // The restart's leader election may add a control batch above the records.
    assert!(
        topic.partition_info[1].high_watermark > ack.last_offset,
        "{:?} after {ack:?}",
        topic.partition_info[1]
    );
    for (partition, ack) in [(1, &ack), (2, &response)] {
        let read = read_partition(&mut client, "x.deleted-1", partition).await;
        let got: Vec<(u64, Option<&[u8]>)> =
            read.iter().map(|r| (r.offset, r.key.as_deref())).collect();
        let keys: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
        let expected: Vec<(u64, Option<&[u8]>)> = (0..10)
            .map(|i| (ack.base_offset + i, Some(keys[i as usize].as_bytes())))
            .collect();
        assert_eq!(got, expected, "partition {partition}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_on_a_deleted_topic_ends_with_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let mut client = broker.client().await;
    client
        .create_topic("gone", 1, Default::default())
        .await
        .unwrap();
    client
        .produce("gone", Some(0), &[rec(None, "v")])
        .await
        .unwrap();
    let mut follower = client
        .consume_stream("gone", 0, Start::Earliest, 0)
        .await
        .unwrap();
    let first = follower.next().await.unwrap().unwrap();
    assert_eq!(first.records.len(), 1);
    client.delete_topic("gone").await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(30), follower.next())
        .await
        .expect("the stream ends when its topic is deleted");
    match end {
        Some(Err(e)) => assert_eq!(e.code(), Some(tonic::Code::NotFound)),
        other => panic!("expected NOT_FOUND, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_forever_for_a_client_that_stopped_reading() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&dir.path().join("data"), &[]);
    let mut client = broker.client().await;
    client
        .create_topic("big", 1, Default::default())
        .await
        .unwrap();
    let value = "b".repeat(60_000);
    for _ in 0..300 {
        let batch: Vec<NewRecord> = (0..10).map(|_| rec(None, &value)).collect();
        client.produce("big", Some(0), &batch).await.unwrap();
    }
    // A consumer that opens a stream over ~180 MB and never reads it.
    let _stalled = client
        .consume_stream("big", 0, Start::Earliest, 0)
        .await
        .unwrap();
    let status = tokio::task::spawn_blocking(move || broker.terminate())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
}
