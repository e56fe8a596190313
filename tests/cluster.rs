//! Multi-node clusters of real `logbook` processes on 127.0.0.1: formation by gossip with
//! `bootstrap_expect`, replication of every partition by Raft, follower reads, and leader
//! failover under SIGKILL. Every check goes through the replica checker in `common::cluster`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster::{Cluster, check_replicas, leader_addr, produce_unique, replicas};
use logbook::client::{Client, ClusterClient, ReadFrom};
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
        .unwrap_or_else(|e| panic!("create topic: {e:?}"));

    // The client library finds leaders itself and retries through the failover.
    let client = ClusterClient::connect(&cluster.addrs(), ReadFrom::Replicas)
        .await
        .unwrap();
    let leader = client.leader("events", 0).expect("a leader");
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    let mut killed_at: Option<Instant> = None;
    let mut failover = None;
    for i in 0..200 {
        if i == 100 {
            cluster.kill(&leader);
            killed_at = Some(Instant::now());
        }
        let (ack, value) = produce_unique(&client, "events", 0, &format!("v{i}")).await;
        assert!(
            acked.insert(ack.base_offset, value).is_none(),
            "offset acknowledged twice"
        );
        if let (Some(at), None) = (killed_at, failover) {
            failover = Some(at.elapsed());
        }
    }
    assert_ne!(
        client.leader("events", 0),
        Some(leader.clone()),
        "a new leader was elected"
    );
    eprintln!("failover (kill to first acknowledged produce): {failover:?}");
    let live = cluster.addrs();
    assert_eq!(live.len(), 2);
    let held = check_replicas(&live, "events", 0, &acked).await;
    assert!(held.len() >= 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_form_with_three_metadata_voters_and_the_cli_balances() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), 5);
    cluster.wait_formed(5).await;
    let addrs = cluster.addrs();
    let bootstrap = addrs.join(",");
    let out = common::broker::cli(
        &addrs[0],
        &[
            "topic",
            "create",
            "logs",
            "--partitions",
            "5",
            "--bootstrap",
            &bootstrap,
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut client = ClusterClient::connect(&addrs, ReadFrom::Replicas)
        .await
        .unwrap();
    let metadata = client.refresh().await.unwrap();
    let mut replicas_per_node: BTreeMap<u64, usize> = BTreeMap::new();
    for p in 0..5 {
        let ids = replicas(&metadata, "logs", p);
        assert_eq!(
            ids.iter().collect::<BTreeSet<_>>().len(),
            3,
            "RF=3 on 5 nodes"
        );
        for id in ids {
            *replicas_per_node.entry(id).or_default() += 1;
        }
    }
    assert_eq!(replicas_per_node.len(), 5, "every node holds replicas");
    assert!(
        replicas_per_node.values().all(|n| *n == 3),
        "15 replicas spread evenly: {replicas_per_node:?}"
    );
    // Produce with the CLI through the bootstrap list (keyed lines to their partitions' leaders),
    // then read everything back with the library spreading reads over the replicas.
    let lines: String = (0..100).map(|i| format!("k{i}:v{i}\n")).collect();
    let out = common::broker::cli(
        &addrs[0],
        &[
            "produce",
            "--topic",
            "logs",
            "--key-separator",
            ":",
            "--bootstrap",
            &bootstrap,
        ],
        &lines,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Followers may lag a moment behind the leaders: passes over all partitions (each read
    // from the next replica) until every line was seen or the deadline passes.
    let mut values = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while values.len() < 100 && Instant::now() < deadline {
        for p in 0..5 {
            let mut offset = 0;
            loop {
                let fetched = client
                    .consume("logs", p, offset, 1 << 20, Duration::ZERO)
                    .await
                    .unwrap();
                for r in &fetched.records {
                    values.insert(
                        String::from_utf8(r.value.as_deref().unwrap_or_default().to_vec()).unwrap(),
                    );
                }
                if fetched.next_offset <= offset {
                    break;
                }
                offset = fetched.next_offset;
            }
        }
    }
    assert_eq!(values.len(), 100, "every produced line read back once");
    client = ClusterClient::connect(&addrs[3..], ReadFrom::Leader)
        .await
        .unwrap();
    assert!(client.leader("logs", 0).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_under_load_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path(), 3);
    cluster.wait_formed(3).await;
    let mut admin = cluster.any_client().await;
    admin
        .create_topic("rolling", 2, Default::default())
        .await
        .unwrap();

    // A producer keeps writing through the restarts (the client follows the leaders).
    let client = std::sync::Arc::new(
        ClusterClient::connect(&cluster.addrs(), ReadFrom::Leader)
            .await
            .unwrap(),
    );
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let producer = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut acked: Vec<BTreeMap<u64, String>> = vec![BTreeMap::new(), BTreeMap::new()];
            let mut i = 0u64;
            while !*stop_rx.borrow_and_update() {
                let p = (i % 2) as u32;
                let value = format!("r{i}");
                i += 1;
                match client.produce("rolling", Some(p), &[record(&value)]).await {
                    Ok(ack) => {
                        assert!(acked[p as usize].insert(ack.base_offset, value).is_none());
                    }
                    // Not acknowledged (the retry window passed): not counted, and never
                    // resent with the same value.
                    Err(e) => eprintln!("produce failed: {e}"),
                }
            }
            acked
        })
    };
    for slot in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = cluster.stop_node(slot);
        assert!(status.success(), "node {slot} stops cleanly: {status}");
        cluster.start_node(slot);
        // Back in the cluster: its metadata lists the topic and it serves both partitions.
        let addr = cluster.addr(slot).unwrap();
        let mut c = Client::connect(&addr).await.unwrap();
        common::cluster::wait_for(
            Duration::from_secs(30),
            "the restarted node serves reads",
            || {
                let mut c = c.clone();
                async move {
                    let mut ok = true;
                    for p in 0..2 {
                        ok &= c.consume("rolling", p, 0, 1, Duration::ZERO).await.is_ok();
                    }
                    ok
                }
            },
        )
        .await;
        c.metadata().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_tx.send(true).unwrap();
    let acked = producer.await.unwrap();
    let addrs = cluster.addrs();
    for p in 0..2u32 {
        assert!(
            acked[p as usize].len() > 10,
            "the producer made progress on partition {p}"
        );
        check_replicas(&addrs, "rolling", p, &acked[p as usize]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_replaced_by_a_new_one_without_losing_quorum() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start_with(dir.path(), 3, &["--dead-node-grace-ms", "2000"]);
    cluster.wait_formed(3).await;
    let mut admin = cluster.any_client().await;
    admin
        .create_topic("keep", 2, Default::default())
        .await
        .unwrap();
    let client = std::sync::Arc::new(
        ClusterClient::connect(&cluster.addrs(), ReadFrom::Leader)
            .await
            .unwrap(),
    );
    let mut acked: Vec<BTreeMap<u64, String>> = vec![BTreeMap::new(), BTreeMap::new()];
    for i in 0..40u64 {
        let p = (i % 2) as u32;
        let value = format!("before{i}");
        let ack = client
            .produce("keep", Some(p), &[record(&value)])
            .await
            .unwrap();
        acked[p as usize].insert(ack.base_offset, value);
    }
    let old_id = {
        let metadata = client.refresh().await.unwrap();
        let victim = cluster.addr(2).unwrap();
        metadata
            .servers
            .iter()
            .find(|s| s.address == victim)
            .unwrap()
            .node_id
    };
    // The node dies and its disk is lost; a new machine (empty disk, so a new id) joins.
    let victim = cluster.addr(2).unwrap();
    cluster.kill(&victim);
    std::fs::remove_dir_all(dir.path().join("node2")).unwrap();
    let slot = cluster.add_node(&[]);
    let new_addr = cluster.addr(slot).unwrap();

    // Writes keep being acknowledged the whole time (quorum is never lost).
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut acked: Vec<BTreeMap<u64, String>> = vec![BTreeMap::new(), BTreeMap::new()];
            for i in 0..200u64 {
                let p = (i % 2) as u32;
                let (ack, value) = produce_unique(&client, "keep", p, &format!("during{i}")).await;
                acked[p as usize].insert(ack.base_offset, value);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acked
        })
    };
    // The controller moves the dead node's replicas to the new node and forgets the old id.
    let via = cluster.addr(0).unwrap();
    common::cluster::wait_for(Duration::from_secs(60), "the old node is replaced", || {
        let via = via.clone();
        let new_addr = new_addr.clone();
        async move {
            let Ok(mut c) = Client::connect(&via).await else {
                return false;
            };
            let Ok(m) = c.metadata().await else {
                return false;
            };
            let new_id = m
                .servers
                .iter()
                .find(|s| s.address == new_addr)
                .map(|s| s.node_id);
            let gone = m.servers.iter().all(|s| s.node_id != old_id);
            gone && new_id.is_some_and(|new_id| {
                (0..2).all(|p| {
                    let r = replicas(&m, "keep", p);
                    r.contains(&new_id) && !r.contains(&old_id) && r.len() == 3
                })
            })
        }
    })
    .await;
    let during = writer.await.unwrap();
    for (p, more) in during.into_iter().enumerate() {
        acked[p].extend(more);
    }
    // Every acknowledged record is on all three replicas, the new node included.
    let addrs = cluster.addrs();
    assert!(addrs.contains(&new_addr));
    for p in 0..2u32 {
        check_replicas(&addrs, "keep", p, &acked[p as usize]).await;
    }
}
