//! A Raft peer for unit tests of our client side: a real tonic server on a loopback socket that
//! answers AppendEntries from the group's name and counts the RPCs it gets.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use crate::proto::v1 as pb;
use crate::proto::v1::raft_service_server::{RaftService, RaftServiceServer};
use crate::raft::network::append_outcome;

/// Answers each group with a vote whose term is the number in the group's name (so every
/// caller can tell its own answer), `ok` with success, anything else NOT_FOUND; counts RPCs.
#[derive(Default)]
pub struct CountingPeer {
    /// `AppendEntriesBatch` calls received.
    pub batches: AtomicUsize,
    /// Single `AppendEntries` calls received.
    pub singles: AtomicUsize,
}

impl CountingPeer {
    /// Serves a new peer on a free loopback port; returns it, its address and the server task.
    pub async fn start() -> (Arc<Self>, String, tokio::task::JoinHandle<()>) {
        let peer = Arc::new(CountingPeer::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address").to_string();
        let service = RaftServiceServer::new(peer.clone());
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        (peer, addr, server)
    }

    /// Single calls so far.
    pub fn singles(&self) -> usize {
        self.singles.load(Ordering::SeqCst)
    }

    /// Batch calls so far.
    pub fn batches(&self) -> usize {
        self.batches.load(Ordering::SeqCst)
    }
}

fn answer(group: &str) -> Result<pb::RaftAppendResponse, Status> {
    if group == "ok" {
        return Ok(pb::RaftAppendResponse {
            result: Some(pb::raft_append_response::Result::Success(pb::RaftEmpty {})),
        });
    }
    let term: u64 = group
        .parse()
        .map_err(|_| Status::not_found(format!("no group {group}")))?;
    Ok(pb::RaftAppendResponse {
        result: Some(pb::raft_append_response::Result::HigherVote(pb::RaftVote {
            term,
            ..Default::default()
        })),
    })
}

#[tonic::async_trait]
impl RaftService for Arc<CountingPeer> {
    async fn append_entries(
        &self,
        request: Request<pb::RaftAppendRequest>,
    ) -> Result<Response<pb::RaftAppendResponse>, Status> {
        self.singles.fetch_add(1, Ordering::SeqCst);
        answer(&request.into_inner().group).map(Response::new)
    }

    async fn vote(
        &self,
        _: Request<pb::RaftVoteRequest>,
    ) -> Result<Response<pb::RaftVoteResponse>, Status> {
        Err(Status::unimplemented("vote"))
    }

    async fn install_snapshot(
        &self,
        _: Request<pb::RaftSnapshotRequest>,
    ) -> Result<Response<pb::RaftSnapshotResponse>, Status> {
        Err(Status::unimplemented("install_snapshot"))
    }

    async fn append_entries_batch(
        &self,
        request: Request<pb::RaftAppendBatchRequest>,
    ) -> Result<Response<pb::RaftAppendBatchResponse>, Status> {
        self.batches.fetch_add(1, Ordering::SeqCst);
        let outcomes = request
            .into_inner()
            .requests
            .iter()
            .map(|r| append_outcome(answer(&r.group)))
            .collect();
        Ok(Response::new(pb::RaftAppendBatchResponse { outcomes }))
    }

    async fn propose_meta(
        &self,
        _: Request<pb::MetaProposal>,
    ) -> Result<Response<pb::MetaProposalResult>, Status> {
        Err(Status::unimplemented("propose_meta"))
    }
}
