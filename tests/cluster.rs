//! Multi-node clusters of real `logbook` processes on 127.0.0.1: formation by gossip with
//! `bootstrap_expect`, replication of every partition by Raft, follower reads, and leader
//! failover under SIGKILL. Every check goes through the replica checker in `common::cluster`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster::{Cluster, check_replicas, leader_addr, replicas};
use logbook::client::Client;
use logbook::log::NewRecord;
use tonic::Code;

fn record(value: &str) -> NewRecord {
    NewRecord {
        value: Some(Bytes::from(value.to_string())),
        timestamp_ms: 1,
        ..NewRecord::default()
    }
}

/// Addresses of the replicas of `topic/partition`.
async fn replica_addrs(cluster: &Cluster, topic: &str, partition: u32) -> Vec<String> {
    let mut client = cluster.any_client().await;
    let metadata = client.metadata().await.unwrap();
    let ids = replicas(&metadata, topic, partition);
    metadata
        .servers
        .iter()
        .filter(|s| ids.contains(&s.node_id))
        .map(|s| s.address.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_form_replicate_and_serve_follower_reads() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 3);
    cluster.wait_formed(3).await;

    // Created through the last node, whichever leads the metadata group.
    let addrs = cluster.addrs();
    let mut via = Client::connect(&addrs[2]).await.unwrap();
    let topic = via
        .create_topic("orders", 3, Default::default())
        .await
        .unwrap();
    assert_eq!(topic.partitions, 3);
    let metadata = via.metadata().await.unwrap();
    assert_eq!(metadata.servers.len(), 3);
    for p in 0..3 {
        let ids: BTreeSet<u64> = replicas(&metadata, "orders", p).into_iter().collect();
        assert_eq!(ids.len(), 3, "partition {p} has three distinct replicas");
    }
    // Every node's metadata agrees on the topic.
    for addr in &addrs {
        let mut c = Client::connect(addr).await.unwrap();
        let names: Vec<String> = c
            .list_topics()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(names, vec!["orders".to_string()], "{addr}");
    }

    for p in 0..3u32 {
        let leader = leader_addr(&addrs[0], "orders", p).await.expect("a leader");
        let mut client = Client::connect(&leader).await.unwrap();
        let mut acked = BTreeMap::new();
        for i in 0..20 {
            let value = format!("p{p}-r{i}");
            let ack = client
                .produce("orders", Some(p), &[record(&value)])
                .await
                .unwrap();
            acked.insert(ack.base_offset, value);
        }
        // A produce sent to a follower is refused with the leader's address.
        let follower = addrs.iter().find(|a| **a != leader).unwrap();
        let mut f = Client::connect(follower).await.unwrap();
        let refused = f
            .produce("orders", Some(p), &[record("nope")])
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Some(Code::FailedPrecondition), "{refused}");
        assert!(
            refused.to_string().contains(&leader),
            "hint names the leader: {refused}"
        );
        // Follower reads return what was committed, at the same offsets, on every replica.
        let held = check_replicas(
            &replica_addrs(&cluster, "orders", p).await,
            "orders",
            p,
            &acked,
        )
        .await;
        assert_eq!(held.len(), 20, "nothing but the acknowledged records");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_sigkill_during_produce_fails_over_and_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 3);
    cluster.wait_formed(3).await;
    let mut admin = cluster.any_client().await;
    admin
        .create_topic("events", 1, Default::default())
        .await
        .unwrap();

    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    let mut leader = leader_addr(&cluster.addrs()[0], "events", 0).await.unwrap();
    let mut client = Client::connect(&leader).await.unwrap();
    // Each attempt carries a new value: a failed attempt that was in fact committed cannot
    // show up as a duplicate of a later one.
    let mut attempt = 0u64;
    let mut killed_at: Option<Instant> = None;
    let mut failover = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.len() < 200 {
        assert!(
            Instant::now() < deadline,
            "no failover within 60 s; acked {}",
            acked.len()
        );
        if acked.len() == 100 && killed_at.is_none() {
            cluster.kill(&leader);
            killed_at = Some(Instant::now());
        }
        attempt += 1;
        let value = format!("v{attempt}");
        match client.produce("events", Some(0), &[record(&value)]).await {
            Ok(ack) => {
                assert!(
                    acked.insert(ack.base_offset, value).is_none(),
                    "offset acknowledged twice"
                );
                if let (Some(at), None) = (killed_at, failover) {
                    failover = Some(at.elapsed());
                }
            }
            Err(_) => {
                // Find the new leader through any live node (the metadata follows leadership).
                tokio::time::sleep(Duration::from_millis(50)).await;
                for addr in cluster.addrs() {
                    if let Some(l) = leader_addr(&addr, "events", 0).await
                        && cluster.addrs().contains(&l)
                        && let Ok(c) = Client::connect(&l).await
                    {
                        leader = l;
                        client = c;
                        break;
                    }
                }
            }
        }
    }
    eprintln!("failover (kill to first acknowledged produce): {failover:?}");
    let live = cluster.addrs();
    assert_eq!(live.len(), 2);
    let held = check_replicas(&live, "events", 0, &acked).await;
    assert!(held.len() >= 200);
}
