//! A network cut between real broker processes, each in its own network namespace: the
//! isolated leader acknowledges nothing, the majority elects a new leader and keeps
//! acknowledging, and after the cut heals the replicas hold the same log (nothing diverges, the
//! write the isolated leader took is gone). Needs root (namespaces and iptables).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::broker::BrokerProcess;
use common::cluster::{FAST_RAFT, check_replicas, leader_addr, produce_unique};
use common::netlab::NetLab;
use logbook::client::{Client, ClusterClient, ReadFrom};
use logbook::log::NewRecord;

fn record(value: &str) -> NewRecord {
    NewRecord {
        value: Some(Bytes::from(value.to_string())),
        timestamp_ms: 1,
        ..NewRecord::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_acknowledges_nothing_and_logs_do_not_diverge() {
    let lab = NetLab::new(3);
    let dir = tempfile::tempdir().unwrap();
    let gossip: Vec<String> = lab.ips.iter().map(|ip| format!("{ip}:7946")).collect();
    let seeds = gossip.join(",");
    let mut nodes: Vec<Option<BrokerProcess>> = Vec::new();
    for (i, ip) in lab.ips.iter().enumerate() {
        let mut args = vec![
            "--gossip-addr",
            &gossip[i],
            "--join",
            &seeds,
            "--bootstrap-expect",
            "3",
            "--dead-node-grace-ms",
            "600000",
        ];
        args.extend(FAST_RAFT);
        nodes.push(Some(BrokerProcess::start_in(
            Some(&lab.namespaces[i]),
            &format!("{ip}:7400"),
            &dir.path().join(format!("node{i}")),
            &args,
        )));
    }
    let addrs: Vec<String> = nodes.iter().flatten().map(|n| n.addr.clone()).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for addr in &addrs {
        loop {
            let formed = match Client::connect(addr).await {
                Ok(mut c) => c
                    .metadata()
                    .await
                    .is_ok_and(|m| m.servers.len() == 3 && !m.cluster_id.is_empty()),
                Err(_) => false,
            };
            if formed {
                break;
            }
            if std::time::Instant::now() > deadline {
                for n in nodes.iter().flatten() {
                    eprintln!("=== {}\n{}", n.addr, n.log());
                }
                panic!("the cluster did not form");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut admin = Client::connect(&addrs[0]).await.unwrap();
    admin
        .create_topic("cut", 1, Default::default())
        .await
        .unwrap();
    let client = ClusterClient::connect(&addrs, ReadFrom::Leader)
        .await
        .unwrap();
    let mut acked = BTreeMap::new();
    for i in 0..20 {
        let value = format!("before{i}");
        let ack = client
            .produce("cut", Some(0), &[record(&value)])
            .await
            .unwrap();
        acked.insert(ack.base_offset, value);
    }
    let leader = leader_addr(&addrs[0], "cut", 0).await.unwrap();
    let isolated = addrs.iter().position(|a| *a == leader).unwrap();
    lab.isolate(isolated);

    // The isolated leader takes the write but can never commit it.
    let mut old = Client::connect(&leader).await.unwrap();
    let attempt = tokio::time::timeout(
        Duration::from_secs(5),
        old.produce("cut", Some(0), &[record("minority")]),
    )
    .await;
    assert!(
        !matches!(attempt, Ok(Ok(_))),
        "the isolated leader acknowledged a write: {attempt:?}"
    );

    // The majority elects a new leader and acknowledges writes.
    let majority: Vec<String> = addrs.iter().filter(|a| **a != leader).cloned().collect();
    let client = ClusterClient::connect(&majority, ReadFrom::Leader)
        .await
        .unwrap();
    for i in 0..20 {
        let (ack, value) = produce_unique(&client, "cut", 0, &format!("after{i}")).await;
        acked.insert(ack.base_offset, value);
    }
    assert_ne!(client.leader("cut", 0), Some(leader.clone()));

    // Healed: the old leader follows again and every replica holds the same log, without the
    // write only the isolated leader took.
    lab.heal(isolated);
    let held = check_replicas(&addrs, "cut", 0, &acked).await;
    assert!(
        held.iter().all(|(_, v)| v != "minority"),
        "an unacknowledged write of the isolated leader survived"
    );
    for node in nodes.iter_mut() {
        if let Some(n) = node.take() {
            n.kill();
        }
    }
}
