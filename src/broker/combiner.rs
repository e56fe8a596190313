//! Combining produce requests into Raft entries.
//!
//! openraft 0.9 flushes each append before it takes the next, so one Raft entry per produce
//! request would mean one fdatasync per request. Instead, each partition has a combiner task:
//! at most [`MAX_IN_FLIGHT`] entries are with Raft at a time, and the requests that queue up
//! meanwhile go out together as the next entry (their batches back to back, in arrival order,
//! up to [`MAX_ENTRY_BYTES`]). Offsets within an entry are contiguous, so each request's
//! offsets follow from the entry's base offset and the record counts before it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use bytes::BytesMut;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use openraft::error::ClientWriteError;
use tokio::sync::{mpsc, oneshot};

use super::BrokerError;
use crate::log::ValidatedBatch;
use crate::raft::{PartitionRaftHandle, RecordData};

/// Entries handed to Raft and not yet committed, per partition.
pub const MAX_IN_FLIGHT: usize = 2;
/// Bytes of batches combined into one entry (a larger single request still goes alone).
pub const MAX_ENTRY_BYTES: usize = 1 << 20;
/// Longest wait for an entry's commit before its requests are answered UNAVAILABLE.
pub const ENTRY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Requests that may wait for the combiner before `submit` waits.
const QUEUE_DEPTH: usize = 4096;

/// Offsets a request got: first and last.
pub type Offsets = Result<(u64, u64), BrokerError>;

/// A request waiting to go into an entry.
struct Queued {
    batch: ValidatedBatch,
    reply: oneshot::Sender<Offsets>,
}

/// An entry with Raft: resolves once its requests have their answers.
type InFlight = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The sending side of a partition's combiner.
#[derive(Debug, Clone)]
pub struct Combiner {
    queue: mpsc::Sender<Queued>,
}

impl Combiner {
    /// Starts the combiner task of the group `group` led (or not) by this node.
    pub fn start(raft: PartitionRaftHandle, group: String, node_id: u64) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run(raft, group, node_id, rx));
        Combiner { queue }
    }

    /// Queues a batch; the receiver resolves with its offsets once the entry holding it is
    /// committed and applied.
    pub async fn submit(
        &self,
        batch: ValidatedBatch,
    ) -> Result<oneshot::Receiver<Offsets>, BrokerError> {
        let (reply, done) = oneshot::channel();
        self.queue
            .send(Queued { batch, reply })
            .await
            .map_err(|_| BrokerError::ShuttingDown)?;
        Ok(done)
    }
}

async fn run(
    raft: PartitionRaftHandle,
    group: String,
    node_id: u64,
    mut rx: mpsc::Receiver<Queued>,
) {
    let mut in_flight: FuturesOrdered<InFlight> = FuturesOrdered::new();
    let mut held: VecDeque<Queued> = VecDeque::new();
    let mut open = true;
    loop {
        if !open && held.is_empty() && in_flight.is_empty() {
            return;
        }
        tokio::select! {
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            queued = rx.recv(), if open && in_flight.len() < MAX_IN_FLIGHT => match queued {
                Some(q) => held.push_back(q),
                None => open = false,
            },
            else => {}
        }
        if in_flight.len() >= MAX_IN_FLIGHT || held.is_empty() {
            continue;
        }
        // Everything waiting goes into the next entry, up to the size limit.
        while let Ok(q) = rx.try_recv() {
            held.push_back(q);
        }
        // Not the leader (any more): answer at once with where the leader is, rather than
        // queueing behind a group that will only refuse.
        let not_leader = {
            let m = raft.metrics().borrow().clone();
            (m.state != openraft::ServerState::Leader).then(|| {
                let addr = m.current_leader.and_then(|id| {
                    m.membership_config
                        .membership()
                        .get_node(&id)
                        .map(|n| n.addr.clone())
                });
                (m.current_leader, addr)
            })
        };
        if let Some((leader_id, leader_addr)) = not_leader {
            for q in held.drain(..) {
                let _ = q.reply.send(Err(BrokerError::NotLeader {
                    group: group.clone(),
                    node_id,
                    leader_id,
                    leader_addr: leader_addr.clone(),
                }));
            }
            continue;
        }
        let mut bytes = BytesMut::new();
        let mut requests = Vec::new();
        while let Some(q) = held.front() {
            if !requests.is_empty() && bytes.len() + q.batch.len() > MAX_ENTRY_BYTES {
                break;
            }
            let Some(q) = held.pop_front() else { break };
            let count = q.batch.header().records_count as u64;
            bytes.extend_from_slice(&q.batch.into_bytes());
            requests.push((count, q.reply));
        }
        let pending = raft.client_write_ff(RecordData(bytes.freeze())).await;
        let (group, raft_closed) = (group.clone(), pending.is_err());
        let entry: InFlight = Box::pin(async move {
            let outcome = match pending {
                Ok(rx) => match tokio::time::timeout(ENTRY_TIMEOUT, rx).await {
                    Ok(answer) => {
                        answer.map_err(|_| BrokerError::Unavailable(format!("{group} stopped")))
                    }
                    // Leadership moved while the entry was in flight and nobody answers for it:
                    // its fate is unknown, and the partition must not stall behind it.
                    Err(_) => Err(BrokerError::Unavailable(format!(
                        "{group}: not committed within {ENTRY_TIMEOUT:?} (leadership may have moved)"
                    ))),
                },
                Err(e) => Err(BrokerError::Unavailable(e.to_string())),
            };
            match outcome {
                Ok(Ok(response)) => {
                    let mut base = response.data.base_offset;
                    for (count, reply) in requests {
                        let _ = reply.send(Ok((base, base + count.max(1) - 1)));
                        base += count;
                    }
                }
                Ok(Err(ClientWriteError::ForwardToLeader(forward))) => {
                    let addr = forward.leader_node.map(|n| n.addr);
                    for (_, reply) in requests {
                        let _ = reply.send(Err(BrokerError::NotLeader {
                            group: group.clone(),
                            node_id,
                            leader_id: forward.leader_id,
                            leader_addr: addr.clone(),
                        }));
                    }
                }
                Ok(Err(e)) => {
                    for (_, reply) in requests {
                        let _ = reply.send(Err(BrokerError::Unavailable(e.to_string())));
                    }
                }
                Err(e) => {
                    for (_, reply) in requests {
                        let _ = reply.send(Err(BrokerError::Unavailable(e.to_string())));
                    }
                }
            }
        });
        in_flight.push_back(entry);
        if raft_closed {
            open = false;
            rx.close();
        }
    }
}
