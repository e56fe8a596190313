//! Client-side balancing over a cluster: produce goes to each partition's leader, consume is
//! spread over the partition's replicas (round-robin, or the leader only), and both refresh
//! the metadata and retry on `NOT_LEADER` (FAILED_PRECONDITION with the leader's address in
//! the details) and UNAVAILABLE until a deadline.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tonic::Code;
use tonic_types::StatusExt;

use super::{Client, ClientError, Fetched, Result, partition_for_key};
use crate::log::NewRecord;
use crate::proto::v1 as pb;

/// Where consumes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ReadFrom {
    /// Round-robin over every replica (followers serve reads up to their commit index).
    #[default]
    Replicas,
    /// The leader only.
    Leader,
}

/// How long a call keeps retrying through elections and failovers.
pub const RETRY_FOR: Duration = Duration::from_secs(30);
/// How long an address that failed to answer is avoided within one call.
pub const AVOID_FOR: Duration = Duration::from_secs(1);
/// How long one produce request waits for its acknowledgement.
pub const PRODUCE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where each partition lives.
#[derive(Debug, Clone, Default)]
struct Routes {
    /// Node id → address.
    nodes: HashMap<u64, String>,
    /// (topic, partition) → (leader id, replica ids).
    partitions: BTreeMap<(String, u32), (u64, Vec<u64>)>,
    /// Topic → partition count.
    counts: HashMap<String, u32>,
}

/// A client of a whole cluster, found through bootstrap addresses.
#[derive(Debug)]
pub struct ClusterClient {
    /// Addresses to (re)discover the cluster through.
    bootstrap: Vec<String>,
    /// Open connections by address.
    connections: Mutex<HashMap<String, Client>>,
    /// The last metadata seen.
    routes: Mutex<Routes>,
    /// Consume policy.
    read_from: ReadFrom,
    /// Round-robin position for replica reads and keyless produce.
    next: AtomicUsize,
    /// TLS for every connection (`None`: plaintext).
    tls: Option<crate::security::tls::ClientTls>,
}

/// The leader address a NOT_LEADER status names, if any.
pub fn leader_hint(status: &tonic::Status) -> Option<String> {
    if status.code() != Code::FailedPrecondition {
        return None;
    }
    let info = status.get_details_error_info()?;
    if info.reason != "NOT_LEADER" {
        return None;
    }
    info.metadata.get("leader_addr").cloned()
}

/// Whether a failed call may be tried again. With `idempotent` (reads), any transient failure
/// may; otherwise (produce) only failures where the request was certainly not written: no
/// connection, NOT_LEADER, or an UNAVAILABLE the broker itself answered before appending (it
/// carries RetryInfo). A connection lost mid-request is returned to the caller, who decides
/// (the request may have been committed; resending it could duplicate it).
fn retryable(e: &ClientError, idempotent: bool) -> bool {
    match e {
        // A TLS refusal (the broker's certificate is not trusted) will not go away by
        // retrying. (Refused client certificates come back as UNAUTHENTICATED, never retried.)
        ClientError::Connect { reason, .. } => !tls_refusal(reason),
        ClientError::Status(s) if idempotent => matches!(
            s.code(),
            Code::Unavailable
                | Code::FailedPrecondition
                | Code::DeadlineExceeded
                | Code::Unknown
                | Code::Cancelled
        ),
        ClientError::Status(s) => match s.code() {
            Code::FailedPrecondition => true,
            // Answered by the broker before appending, or no connection was made at all.
            Code::Unavailable => {
                s.get_details_retry_info().is_some() || s.message().contains("tcp connect error")
            }
            _ => false,
        },
        ClientError::Batch(_) => false,
    }
}

/// Whether a connection failure's text is a TLS refusal (an alert, or a certificate the
/// client does not accept). Only transport errors are matched, never a broker's status
/// message (which may name a topic like `alerts`).
fn tls_refusal(text: &str) -> bool {
    text.contains("alert") || text.contains("certificate") || text.contains("Certificate")
}

impl ClusterClient {
    /// Connects through the first reachable of `bootstrap` (`host:port` each) and reads the
    /// metadata.
    pub async fn connect(bootstrap: &[String], read_from: ReadFrom) -> Result<Self> {
        Self::connect_with(bootstrap, read_from, None).await
    }

    /// [`ClusterClient::connect`], over TLS if `tls` is given.
    pub async fn connect_with(
        bootstrap: &[String],
        read_from: ReadFrom,
        tls: Option<crate::security::tls::ClientTls>,
    ) -> Result<Self> {
        let client = ClusterClient {
            tls,
            bootstrap: bootstrap.to_vec(),
            connections: Mutex::new(HashMap::new()),
            routes: Mutex::new(Routes::default()),
            read_from,
            next: AtomicUsize::new(fastrand::usize(..1024)),
        };
        client.refresh().await?;
        Ok(client)
    }

    /// A connection to `addr` (reused).
    pub async fn node(&self, addr: &str) -> Result<Client> {
        if let Some(c) = self.connections.lock().get(addr) {
            return Ok(c.clone());
        }
        let c = Client::connect_with(addr, self.tls.as_ref()).await?;
        self.connections.lock().insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// Any reachable node: the known ones first, then the bootstrap list.
    pub async fn any(&self) -> Result<Client> {
        let mut candidates: Vec<String> = self.routes.lock().nodes.values().cloned().collect();
        candidates.extend(self.bootstrap.iter().cloned());
        let mut last = None;
        for addr in candidates {
            match self.node(&addr).await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Connect {
            addr: String::new(),
            reason: "no bootstrap address".into(),
        }))
    }

    /// Reads the metadata again (from any node that answers).
    pub async fn refresh(&self) -> Result<pb::GetMetadataResponse> {
        let mut candidates: Vec<String> = self.bootstrap.clone();
        candidates.extend(self.routes.lock().nodes.values().cloned());
        let mut last = None;
        for addr in candidates {
            let metadata = match self.node(&addr).await {
                Ok(mut c) => c.metadata().await,
                Err(e) => Err(e),
            };
            match metadata {
                Ok(m) => {
                    let mut routes = Routes::default();
                    for s in &m.servers {
                        routes.nodes.insert(s.node_id, s.address.clone());
                    }
                    for p in &m.partitions {
                        routes.partitions.insert(
                            (p.topic.clone(), p.partition),
                            (p.leader_id, p.replica_ids.clone()),
                        );
                        let count = routes.counts.entry(p.topic.clone()).or_default();
                        *count = (*count).max(p.partition + 1);
                    }
                    *self.routes.lock() = routes;
                    return Ok(m);
                }
                Err(e) => {
                    self.connections.lock().remove(&addr);
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Connect {
            addr: String::new(),
            reason: "no bootstrap address".into(),
        }))
    }

    /// Partition count of `topic` (refreshing the metadata if it is not known yet).
    pub async fn partitions(&self, topic: &str) -> Result<u32> {
        if let Some(n) = self.routes.lock().counts.get(topic) {
            return Ok(*n);
        }
        self.refresh().await?;
        self.routes
            .lock()
            .counts
            .get(topic)
            .copied()
            .ok_or_else(|| {
                tonic::Status::not_found(format!("topic {topic:?} does not exist")).into()
            })
    }

    /// The leader's address of a partition, per the last metadata.
    pub fn leader(&self, topic: &str, partition: u32) -> Option<String> {
        let routes = self.routes.lock();
        let (leader, _) = routes.partitions.get(&(topic.to_string(), partition))?;
        routes.nodes.get(leader).cloned()
    }

    /// The address of a replica of the partition other than those in `avoid` (the next one
    /// round-robin): a follower that knows the leader after an election answers NOT_LEADER
    /// with its address before the metadata has caught up.
    pub fn replica_avoiding(
        &self,
        topic: &str,
        partition: u32,
        avoid: &HashSet<String>,
    ) -> Option<String> {
        let routes = self.routes.lock();
        let (_, replicas) = routes.partitions.get(&(topic.to_string(), partition))?;
        let live: Vec<&String> = replicas
            .iter()
            .filter_map(|id| routes.nodes.get(id))
            .filter(|addr| !avoid.contains(*addr))
            .collect();
        if live.is_empty() {
            return None;
        }
        Some(live[self.next.fetch_add(1, Ordering::Relaxed) % live.len()].clone())
    }

    /// Where a request for the partition goes: `preferred` unless it failed to answer in
    /// this call (`avoid`), else another replica, else `preferred` all the same.
    fn route_avoiding(
        &self,
        preferred: Option<String>,
        topic: &str,
        partition: u32,
        avoid: &HashSet<String>,
    ) -> Option<String> {
        match preferred {
            Some(addr) if avoid.contains(&addr) => self
                .replica_avoiding(topic, partition, avoid)
                .or(Some(addr)),
            other => other,
        }
    }

    /// The address a consume of the partition goes to next (per the read policy).
    pub fn reader(&self, topic: &str, partition: u32) -> Option<String> {
        let routes = self.routes.lock();
        let (leader, replicas) = routes.partitions.get(&(topic.to_string(), partition))?;
        let id = match self.read_from {
            ReadFrom::Leader => *leader,
            ReadFrom::Replicas if !replicas.is_empty() => {
                replicas[self.next.fetch_add(1, Ordering::Relaxed) % replicas.len()]
            }
            ReadFrom::Replicas => *leader,
        };
        routes.nodes.get(&id).cloned()
    }

    /// Runs `call` against the node `pick` chooses, following NOT_LEADER hints and refreshing
    /// the metadata on failures, until it succeeds, fails for good, or [`RETRY_FOR`] passes.
    /// `pick` is told which addresses did not answer during this call.
    async fn with_retries<T, F, Fut>(
        &self,
        idempotent: bool,
        mut pick: impl FnMut(&Self, &HashSet<String>) -> Option<String>,
        mut call: F,
    ) -> Result<T>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + RETRY_FOR;
        let mut hinted: Option<String> = None;
        // Addresses that failed to answer, and when: avoided for [`AVOID_FOR`] (a node can
        // come back, or still lead after a lost connection).
        let mut failed_at: HashMap<String, Instant> = HashMap::new();
        loop {
            failed_at.retain(|_, at| at.elapsed() < AVOID_FOR);
            let unreachable: HashSet<String> = failed_at.keys().cloned().collect();
            let target = hinted.take().or_else(|| pick(self, &unreachable));
            if target.is_none() && Instant::now() < deadline {
                // Nothing was sent, so even a produce may go on waiting: for an election to
                // name a leader, or for a failed node's avoidance to end.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = self.refresh().await;
                continue;
            }
            let outcome = match &target {
                Some(addr) => match self.node(addr).await {
                    Ok(c) => call(c).await,
                    Err(e) => Err(e),
                },
                None => Err(tonic::Status::unavailable("no known leader or replica").into()),
            };
            let transport_failed = match &outcome {
                Err(ClientError::Connect { .. }) => true,
                Err(ClientError::Status(s)) => {
                    matches!(
                        s.code(),
                        Code::Unavailable
                            | Code::Cancelled
                            | Code::Unknown
                            | Code::DeadlineExceeded
                    ) && s.get_details_retry_info().is_none()
                }
                _ => false,
            };
            if transport_failed {
                // That node is gone or cut off: forget its connection and look again, whether
                // or not this call is retried.
                if let Some(addr) = &target {
                    self.connections.lock().remove(addr);
                    failed_at.insert(addr.clone(), Instant::now());
                }
                let _ = self.refresh().await;
            }
            match outcome {
                Ok(v) => return Ok(v),
                Err(e) if !retryable(&e, idempotent) || Instant::now() >= deadline => {
                    return Err(e);
                }
                Err(e) => {
                    if let ClientError::Status(s) = &e {
                        // A hint at a node that just failed to answer is stale (the
                        // follower has not noticed yet): wait as if there were none.
                        hinted = leader_hint(s).filter(|addr| !failed_at.contains_key(addr));
                    }
                    if hinted.is_none() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        let _ = self.refresh().await;
                    }
                }
            }
        }
    }

    /// Produces `records` as one batch to `partition` (or the key's partition, or the next one
    /// round-robin) on its leader; returns the acknowledgement. Retried through elections while
    /// the request was certainly not written; a connection lost mid-request is an error (the
    /// records may or may not have been committed).
    pub async fn produce(
        &self,
        topic: &str,
        partition: Option<u32>,
        records: &[NewRecord],
    ) -> Result<pb::ProduceResponse> {
        let count = self.partitions(topic).await?;
        let partition = match (partition, records.iter().find_map(|r| r.key.as_ref())) {
            (Some(p), _) => p,
            (None, Some(key)) => partition_for_key(key, count),
            (None, None) => {
                (self.next.fetch_add(1, Ordering::Relaxed) % count.max(1) as usize) as u32
            }
        };
        let request = super::produce_request(topic, Some(partition), records)?;
        self.with_retries(
            false,
            |c, avoid| c.route_avoiding(c.leader(topic, partition), topic, partition, avoid),
            |mut client| {
                let request = request.clone();
                async move {
                    // A leader cut off from its followers never answers: give up on it.
                    match tokio::time::timeout(PRODUCE_TIMEOUT, client.produce_request(request))
                        .await
                    {
                        Ok(outcome) => outcome,
                        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                            "no acknowledgement from {} within {PRODUCE_TIMEOUT:?}",
                            client.addr()
                        ))
                        .into()),
                    }
                }
            },
        )
        .await
    }

    /// Snapshots a partition now, on its leader.
    pub async fn create_snapshot(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<pb::CreateSnapshotResponse> {
        self.partitions(topic).await?;
        self.with_retries(
            true,
            |c, avoid| c.route_avoiding(c.leader(topic, partition), topic, partition, avoid),
            |mut client| async move { client.create_snapshot(topic, partition).await },
        )
        .await
    }

    /// Fetches from a replica of the partition (per the read policy).
    pub async fn consume(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: u32,
        max_wait: Duration,
    ) -> Result<Fetched> {
        let leader = self.leader(topic, partition);
        self.with_retries(
            true,
            |c, avoid| c.route_avoiding(c.reader(topic, partition), topic, partition, avoid),
            |mut client| {
                let leader = leader.clone();
                async move {
                    let fetched = client
                        .consume(topic, partition, offset, max_bytes, max_wait)
                        .await;
                    match fetched {
                        // A follower that has not caught up to `offset` yet: ask another
                        // replica (the leader's answer is final).
                        Err(ClientError::Status(s))
                            if s.code() == Code::OutOfRange
                                && leader.as_deref().is_some_and(|l| l != client.addr()) =>
                        {
                            Err(tonic::Status::unavailable(format!(
                                "replica {} is behind offset {offset}",
                                client.addr()
                            ))
                            .into())
                        }
                        other => other,
                    }
                }
            },
        )
        .await
    }
}
