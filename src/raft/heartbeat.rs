//! Coalescing heartbeats: pure keep-alives (AppendEntries without entries that tell the peer
//! nothing it has not acknowledged: same vote, same matched log id, same commit index) of every
//! group bound for the same peer are gathered for up to [`HEARTBEAT_WINDOW`] and sent as one
//! `AppendEntriesBatch` RPC. With 1,000 groups between two nodes, that is a few RPCs per
//! heartbeat interval instead of one per group.
//!
//! Everything else goes one RPC per group at once: entries (large, and a group's replication
//! must not wait behind another's), commit-index updates and log probes (a replication stream
//! sends nothing else until they are answered). A slow group holds its batch's answer up for at
//! most [`MAX_GROUP_WAIT`].

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::Status;
use tonic::transport::Channel;

use crate::proto::v1 as pb;
use crate::proto::v1::raft_service_client::RaftServiceClient;

/// How long the first heartbeat for a peer waits for others to join its batch.
pub const HEARTBEAT_WINDOW: Duration = Duration::from_millis(10);
/// Longest a peer may take over one group of a batch before it answers that group
/// DEADLINE_EXCEEDED (a keep-alive missed, retried at the next heartbeat).
pub const MAX_GROUP_WAIT: Duration = Duration::from_millis(50);
/// Most groups in one batch RPC (the rest go in the next).
pub const MAX_HEARTBEAT_BATCH: usize = 4096;

/// A heartbeat waiting for its batch.
struct Pending {
    request: pb::RaftAppendRequest,
    /// When the group gives up on it (openraft's RPC timeout).
    deadline: Instant,
    reply: oneshot::Sender<Result<pb::RaftAppendResponse, Status>>,
}

/// Per-peer heartbeat batchers, keyed by address; one task per peer that has heartbeats.
#[derive(Debug, Default)]
pub struct Heartbeats {
    peers: Mutex<HashMap<String, mpsc::UnboundedSender<Pending>>>,
}

impl Heartbeats {
    /// Drops every peer's batcher (each ends once its queue drains); the next heartbeat to a
    /// peer starts a new one on the channel it is given.
    pub fn reset(&self) {
        self.peers.lock().clear();
    }

    /// Sends `request` (an AppendEntries without entries) to the peer at `addr` over `channel`
    /// in the next batch for that peer; resolves with that group's answer, or fails by
    /// `timeout`.
    pub async fn send(
        &self,
        addr: &str,
        channel: &Channel,
        request: pb::RaftAppendRequest,
        timeout: Duration,
    ) -> Result<pb::RaftAppendResponse, Status> {
        let (reply, answer) = oneshot::channel();
        let mut pending = Pending {
            request,
            deadline: Instant::now() + timeout,
            reply,
        };
        // A batcher whose task ended (its runtime went away) is replaced once.
        let mut queued = false;
        for _ in 0..2 {
            let sender = {
                let mut peers = self.peers.lock();
                peers
                    .entry(addr.to_string())
                    .or_insert_with(|| {
                        let (tx, rx) = mpsc::unbounded_channel();
                        tokio::spawn(run(rx, channel.clone()));
                        tx
                    })
                    .clone()
            };
            match sender.send(pending) {
                Ok(()) => {
                    queued = true;
                    break;
                }
                Err(mpsc::error::SendError(back)) => {
                    pending = back;
                    self.peers.lock().remove(addr);
                }
            }
        }
        if !queued {
            return Err(Status::unavailable(
                "heartbeat batcher could not be started",
            ));
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(Status::unavailable("heartbeat batcher stopped")),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no heartbeat answer from {addr} within {timeout:?}"
            ))),
        }
    }
}

/// One peer's batcher: waits for a first heartbeat, gathers what arrives within the window,
/// and sends the batch without waiting for the previous one's answer.
async fn run(mut rx: mpsc::UnboundedReceiver<Pending>, channel: Channel) {
    let client = RaftServiceClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    while let Some(first) = rx.recv().await {
        tokio::time::sleep(HEARTBEAT_WINDOW).await;
        let mut batch = vec![first];
        while batch.len() < MAX_HEARTBEAT_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        tokio::spawn(send_batch(client.clone(), batch));
    }
}

async fn send_batch(mut client: RaftServiceClient<Channel>, batch: Vec<Pending>) {
    let now = Instant::now();
    // Heartbeats whose group gave up already are not sent (nor allowed to shorten the batch's
    // deadline).
    let batch: Vec<Pending> = batch
        .into_iter()
        .filter(|p| !p.reply.is_closed() && p.deadline > now)
        .collect();
    let Some(deadline) = batch.iter().map(|p| p.deadline).min() else {
        return;
    };
    let mut replies = Vec::with_capacity(batch.len());
    let mut requests = Vec::with_capacity(batch.len());
    for p in batch {
        replies.push(p.reply);
        requests.push(p.request);
    }
    let timeout = deadline
        .saturating_duration_since(now)
        .max(Duration::from_millis(1));
    // Each group gets most of the time (the rest is for the answer's way back) but at most
    // [`MAX_GROUP_WAIT`]: the whole batch is answered when its slowest group is.
    let group_timeout_ms = (timeout * 4 / 5)
        .min(MAX_GROUP_WAIT)
        .as_millis()
        .clamp(1, u128::from(u32::MAX)) as u32;
    let mut request = tonic::Request::new(pb::RaftAppendBatchRequest {
        requests,
        group_timeout_ms,
    });
    request.set_timeout(timeout);
    match client.append_entries_batch(request).await {
        Ok(response) => {
            let mut outcomes = response.into_inner().outcomes.into_iter();
            for reply in replies {
                let outcome = match outcomes.next() {
                    Some(pb::RaftAppendOutcome {
                        response: Some(r), ..
                    }) => Ok(r),
                    Some(o) if o.code == 0 => Err(Status::unavailable(format!(
                        "the peer answered no response and no error code: {}",
                        o.error
                    ))),
                    Some(o) => Err(Status::new(tonic::Code::from(o.code), o.error)),
                    None => Err(Status::internal(
                        "the peer answered fewer heartbeats than sent",
                    )),
                };
                let _ = reply.send(outcome);
            }
        }
        Err(status) => {
            for reply in replies {
                let _ = reply.send(Err(status.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::raft::test_peer::CountingPeer;

    fn heartbeat(group: &str) -> pb::RaftAppendRequest {
        pb::RaftAppendRequest {
            group: group.to_string(),
            ..Default::default()
        }
    }

    fn term(r: &pb::RaftAppendResponse) -> Option<u64> {
        match &r.result {
            Some(pb::raft_append_response::Result::HigherVote(v)) => Some(v.term),
            _ => None,
        }
    }

    #[tokio::test]
    async fn heartbeats_of_many_groups_share_rpcs_and_get_their_own_answers() {
        let (peer, addr, server) = CountingPeer::start().await;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let heartbeats = Arc::new(Heartbeats::default());

        let groups = 500u64;
        let calls = (1..=groups).map(|g| {
            let (heartbeats, channel, addr) = (heartbeats.clone(), channel.clone(), addr.clone());
            tokio::spawn(async move {
                heartbeats
                    .send(
                        &addr,
                        &channel,
                        heartbeat(&g.to_string()),
                        Duration::from_secs(5),
                    )
                    .await
            })
        });
        let answers = futures_util::future::join_all(calls).await;
        for (g, answer) in (1..=groups).zip(answers) {
            let response = answer.unwrap().unwrap();
            assert_eq!(
                term(&response),
                Some(g),
                "group {g} got another group's answer"
            );
        }
        let batches = peer.batches();
        assert!(batches >= 1, "no batch RPC was made");
        assert!(
            batches <= 10,
            "{groups} heartbeats took {batches} batch RPCs: they were not coalesced"
        );
        assert_eq!(peer.singles(), 0);

        // A group the peer does not have fails alone, with the peer's code.
        let (ok, missing) = tokio::join!(
            heartbeats.send(&addr, &channel, heartbeat("7"), Duration::from_secs(5)),
            heartbeats.send(
                &addr,
                &channel,
                heartbeat("missing"),
                Duration::from_secs(5)
            ),
        );
        assert_eq!(term(&ok.unwrap()), Some(7));
        assert_eq!(missing.unwrap_err().code(), tonic::Code::NotFound);

        // A peer nobody listens on: the heartbeat fails (no hang past its timeout).
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gone_addr = closed.local_addr().unwrap().to_string();
        drop(closed);
        let gone_channel = tonic::transport::Endpoint::from_shared(format!("http://{gone_addr}"))
            .unwrap()
            .connect_lazy();
        let gone = heartbeats
            .send(
                &gone_addr,
                &gone_channel,
                heartbeat("1"),
                Duration::from_secs(2),
            )
            .await;
        server.abort();
        assert_eq!(gone.unwrap_err().code(), tonic::Code::Unavailable);
    }
}
