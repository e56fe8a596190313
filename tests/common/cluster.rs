//! Local clusters of real `logbook` processes on 127.0.0.1, and the replica checker.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use logbook::client::Client;
use logbook::proto::v1 as pb;

use super::broker::{BrokerProcess, offsets_and_values, read_partition};

/// A port free for both TCP and UDP on 127.0.0.1 (gossip uses both).
pub fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Flags that make Raft and gossip quick on loopback.
pub const FAST_RAFT: [&str; 4] = [
    "--raft-heartbeat-ms",
    "100",
    "--raft-election-timeout-ms",
    "500",
];

/// A cluster of broker processes (a slot is `None` once its node was killed or stopped).
pub struct Cluster {
    /// The nodes.
    pub nodes: Vec<Option<BrokerProcess>>,
    /// Gossip address of each node.
    pub gossip: Vec<String>,
    /// Where the nodes' data directories are.
    dir: std::path::PathBuf,
    /// `--bootstrap-expect` of the cluster.
    expect: usize,
    /// Extra flags of every node.
    extra: Vec<String>,
}

impl Cluster {
    /// Starts `n` nodes in `dir` that find each other by gossip and form once all `n` are up.
    pub fn start(dir: &Path, n: usize) -> Cluster {
        Self::start_with(dir, n, &[])
    }

    /// [`Cluster::start`] with extra flags for every node.
    pub fn start_with(dir: &Path, n: usize, extra: &[&str]) -> Cluster {
        let gossip: Vec<String> = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let seeds = gossip.join(",");
        let expect = n.to_string();
        let _ = (seeds, expect);
        let mut cluster = Cluster {
            nodes: (0..n).map(|_| None).collect(),
            gossip,
            dir: dir.to_path_buf(),
            expect: n,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        for i in 0..n {
            cluster.start_node(i);
        }
        cluster
    }

    /// Starts (or restarts, on its data directory and gossip address) node `slot`.
    pub fn start_node(&mut self, slot: usize) {
        let seeds = self.gossip.join(",");
        self.nodes[slot] = Some(self.launch(slot, &seeds, &[]));
    }

    /// Starts a brand-new node (empty data directory `node<slot>`, new gossip port, extra
    /// flags) that joins through the existing nodes' gossip addresses; returns its slot.
    pub fn add_node(&mut self, extra: &[&str]) -> usize {
        let slot = self.nodes.len();
        let seeds = self.gossip.join(",");
        self.gossip.push(format!("127.0.0.1:{}", free_port()));
        let node = self.launch(slot, &seeds, extra);
        self.nodes.push(Some(node));
        slot
    }

    /// Runs node `slot` on `node<slot>` with its gossip address, `seeds` and the flags every
    /// node gets, plus `extra`.
    fn launch(&self, slot: usize, seeds: &str, extra: &[&str]) -> BrokerProcess {
        let expect = self.expect.to_string();
        let mut args: Vec<&str> = vec![
            "--gossip-addr",
            &self.gossip[slot],
            "--join",
            seeds,
            "--bootstrap-expect",
            &expect,
        ];
        args.extend(FAST_RAFT);
        args.extend(self.extra.iter().map(String::as_str));
        args.extend(extra);
        BrokerProcess::start(&self.dir.join(format!("node{slot}")), &args)
    }

    /// Stops node `slot` with SIGTERM (a graceful shutdown) and waits for it to exit.
    pub fn stop_node(&mut self, slot: usize) -> std::process::ExitStatus {
        self.nodes[slot].take().expect("a running node").terminate()
    }

    /// Address of node `slot` (if running).
    pub fn addr(&self, slot: usize) -> Option<String> {
        self.nodes[slot].as_ref().map(|n| n.addr.clone())
    }

    /// Addresses of the running nodes.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .flatten()
            .map(|n| n.addr.clone())
            .collect()
    }

    /// A client of the first running node.
    pub async fn any_client(&self) -> Client {
        let addr = self.addrs().into_iter().next().expect("a running node");
        Client::connect(&addr).await.unwrap()
    }

    /// SIGKILLs the node at `addr`; returns its slot.
    pub fn kill(&mut self, addr: &str) -> usize {
        let slot = self
            .nodes
            .iter()
            .position(|n| n.as_ref().is_some_and(|n| n.addr == addr))
            .expect("a running node with that address");
        self.nodes[slot].take().unwrap().kill();
        slot
    }

    /// Waits until every running node's metadata lists `servers` servers.
    pub async fn wait_formed(&self, servers: usize) {
        for addr in self.addrs() {
            let mut client = Client::connect(&addr).await.unwrap();
            wait_for(
                Duration::from_secs(60),
                &format!("{addr} sees {servers} servers"),
                || {
                    let mut client = client.clone();
                    async move {
                        client
                            .metadata()
                            .await
                            .is_ok_and(|m| m.servers.len() == servers && !m.cluster_id.is_empty())
                    }
                },
            )
            .await;
            client.metadata().await.unwrap();
        }
    }
}

/// Polls `check` until it is true, panicking with `what` after `timeout`.
pub async fn wait_for<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The leader's address of `topic/partition` per the metadata of the node at `via`.
pub async fn leader_addr(via: &str, topic: &str, partition: u32) -> Option<String> {
    // The node's metadata may not name a leader yet (its copy lags, or an election runs):
    // wait for one, for a while.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = named_leader(via, topic, partition).await;
        if found.is_some() || Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn named_leader(via: &str, topic: &str, partition: u32) -> Option<String> {
    let mut client = Client::connect(via).await.ok()?;
    let metadata = client.metadata().await.ok()?;
    let leader = metadata
        .partitions
        .iter()
        .find(|p| p.topic == topic && p.partition == partition)?
        .leader_id;
    metadata
        .servers
        .iter()
        .find(|s| s.node_id == leader)
        .map(|s| s.address.clone())
}

/// Replica ids of `topic/partition` per `metadata`.
pub fn replicas(metadata: &pb::GetMetadataResponse, topic: &str, partition: u32) -> Vec<u64> {
    metadata
        .partitions
        .iter()
        .find(|p| p.topic == topic && p.partition == partition)
        .map(|p| p.replica_ids.clone())
        .unwrap_or_default()
}

/// The checker: on every node in `replica_addrs`, waits until its replica of
/// `topic/partition` has everything acknowledged, then asserts that every acknowledged
/// `(offset, value)` is present at its offset, that no value appears twice, and that every
/// replica holds the same records in the same order. Returns what the replicas hold.
pub async fn check_replicas(
    replica_addrs: &[String],
    topic: &str,
    partition: u32,
    acked: &BTreeMap<u64, String>,
) -> Vec<(u64, String)> {
    let needed = acked.keys().next_back().map_or(0, |o| o + 1);
    let mut seen: Option<Vec<(u64, String)>> = None;
    for addr in replica_addrs {
        let mut client = Client::connect(addr).await.unwrap();
        wait_for(
            Duration::from_secs(30),
            &format!("{addr} has {topic}/{partition} up to {needed}"),
            || {
                let mut client = client.clone();
                async move {
                    client
                        .consume(topic, partition, 0, 1, Duration::ZERO)
                        .await
                        .is_ok_and(|f| f.high_watermark >= needed)
                }
            },
        )
        .await;
        let records = offsets_and_values(&read_partition(&mut client, topic, partition).await);
        let values: BTreeSet<&String> = records.iter().map(|(_, v)| v).collect();
        assert_eq!(values.len(), records.len(), "{addr}: a value appears twice");
        let held: BTreeMap<u64, &String> = records.iter().map(|(o, v)| (*o, v)).collect();
        for (offset, value) in acked {
            assert_eq!(
                held.get(offset).copied(),
                Some(value),
                "{addr}: acknowledged record at {offset} missing or different"
            );
        }
        match &seen {
            None => seen = Some(records),
            Some(first) => {
                let n = first.len().min(records.len());
                assert_eq!(
                    &first[..n],
                    &records[..n],
                    "{addr}: replicas diverge for {topic}/{partition}"
                );
            }
        }
    }
    seen.unwrap_or_default()
}

/// Produces one record `<prefix>.<attempt>` to `topic/partition` through the cluster client,
/// resending under a new value after an ambiguous failure (the connection died mid-request, so
/// the earlier attempt may or may not be committed; a new value keeps acknowledged records
/// unique). Returns the acknowledgement and the value acknowledged.
pub async fn produce_unique(
    client: &logbook::client::ClusterClient,
    topic: &str,
    partition: u32,
    prefix: &str,
) -> (pb::ProduceResponse, String) {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let value = format!("{prefix}.{attempt}");
        let record = logbook::log::NewRecord {
            value: Some(bytes::Bytes::from(value.clone())),
            timestamp_ms: 1,
            ..Default::default()
        };
        match client.produce(topic, Some(partition), &[record]).await {
            Ok(ack) => return (ack, value),
            Err(e) if attempt < 20 => eprintln!("{prefix} attempt {attempt}: {e}"),
            Err(e) => panic!("{prefix}: no acknowledgement after {attempt} attempts: {e}"),
        }
    }
}
