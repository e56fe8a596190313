//! Raft RPCs over gRPC: the client side (openraft's network factory) and the server side (a
//! tonic service routing each request to its group by name). Entries travel as their stored
//! batches, so a follower writes exactly the bytes the leader stored.
//!
//! Connections: one HTTP/2 channel per peer address, shared by every group. AppendEntries
//! without entries (heartbeats) of all groups bound for one peer are coalesced into batch RPCs
//! (see [`super::heartbeat`]).

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{RaftTypeConfig, Snapshot, SnapshotMeta, StoredMembership};
use parking_lot::RwLock;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use super::codec::{
    StoredPayload, batch_to_entry, entry_bytes, membership_from_json_str, membership_json,
};
use super::heartbeat::Heartbeats;
use super::{LogId, Node, NodeId, Vote, log_id};
use crate::proto::v1 as pb;
use crate::proto::v1::raft_service_client::RaftServiceClient;

/// Most entry bytes in one AppendEntries RPC (a single larger entry still goes alone).
pub const MAX_RPC_BYTES: usize = 4 << 20;
/// Name of the metadata group.
pub const META_GROUP: &str = "meta";

/// Name of a partition's group.
pub fn partition_group(topic: &str, partition: u32) -> String {
    format!("{topic}/{partition}")
}

/// Snapshot data that can be sent in one message.
pub trait SnapshotCodec: Sized {
    /// Encodes the snapshot data.
    fn encode(&self) -> Vec<u8>;
    /// Decodes it.
    fn decode(bytes: &[u8]) -> Result<Self, String>;
}

impl SnapshotCodec for super::PartitionSnapshot {
    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

impl SnapshotCodec for std::io::Cursor<Vec<u8>> {
    fn encode(&self) -> Vec<u8> {
        self.get_ref().clone()
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        Ok(std::io::Cursor::new(bytes.to_vec()))
    }
}

/// What every group's type configuration looks like here.
pub trait GroupTypes:
    RaftTypeConfig<NodeId = NodeId, Node = Node, Entry = openraft::Entry<Self>>
where
    Self::D: StoredPayload,
    Self::SnapshotData: SnapshotCodec,
{
}

impl<C> GroupTypes for C
where
    C: RaftTypeConfig<NodeId = NodeId, Node = Node, Entry = openraft::Entry<C>>,
    C::D: StoredPayload,
    C::SnapshotData: SnapshotCodec,
{
}

fn vote_to_pb(v: &Vote) -> pb::RaftVote {
    pb::RaftVote {
        term: v.leader_id.term,
        voted_for: v.leader_id.voted_for,
        committed: v.committed,
    }
}

fn vote_from_pb(v: Option<pb::RaftVote>) -> Vote {
    let v = v.unwrap_or_default();
    Vote {
        leader_id: openraft::LeaderId {
            term: v.term,
            voted_for: v.voted_for,
        },
        committed: v.committed,
    }
}

fn log_id_to_pb(l: &LogId) -> pb::RaftLogId {
    pb::RaftLogId {
        term: l.leader_id.term,
        index: l.index,
    }
}

fn log_id_from_pb(l: Option<pb::RaftLogId>) -> Option<LogId> {
    l.map(|l| log_id(l.term, l.index))
}

fn append_to_pb<C: GroupTypes>(
    group: &str,
    rpc: &AppendEntriesRequest<C>,
) -> Result<pb::RaftAppendRequest, crate::log::LogError>
where
    C::D: StoredPayload,
    C::SnapshotData: SnapshotCodec,
{
    // At most MAX_RPC_BYTES of entries (at least one): openraft gives an AppendEntries RPC one
    // heartbeat interval, so a follower catching up gets bounded pieces rather than a payload
    // that can never arrive in time. The caller reports the rest as a partial success.
    let mut entries = Vec::new();
    let mut bytes = 0;
    for e in &rpc.entries {
        let encoded = entry_bytes(e)?;
        if !entries.is_empty() && bytes + encoded.len() > MAX_RPC_BYTES {
            break;
        }
        bytes += encoded.len();
        entries.push(encoded);
    }
    Ok(pb::RaftAppendRequest {
        group: group.to_string(),
        vote: Some(vote_to_pb(&rpc.vote)),
        prev_log_id: rpc.prev_log_id.as_ref().map(log_id_to_pb),
        leader_commit: rpc.leader_commit.as_ref().map(log_id_to_pb),
        entries,
    })
}

fn append_from_pb<C: GroupTypes>(
    req: pb::RaftAppendRequest,
) -> Result<AppendEntriesRequest<C>, Status>
where
    C::D: StoredPayload,
    C::SnapshotData: SnapshotCodec,
{
    let entries = req
        .entries
        .into_iter()
        .map(|bytes| {
            // Every batch of the entry is checked (framing and CRC) before it is stored.
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let header = crate::log::check_batch(rest)
                    .map_err(|e| Status::invalid_argument(format!("bad entry: {e}")))?;
                rest = &rest[header.total_len()..];
            }
            batch_to_entry::<C>(bytes)
                .map_err(|e| Status::invalid_argument(format!("bad entry: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AppendEntriesRequest {
        vote: vote_from_pb(req.vote),
        prev_log_id: log_id_from_pb(req.prev_log_id),
        leader_commit: log_id_from_pb(req.leader_commit),
        entries,
    })
}

fn append_response_to_pb(r: AppendEntriesResponse<NodeId>) -> pb::RaftAppendResponse {
    use pb::raft_append_response::Result as R;
    let result = match r {
        AppendEntriesResponse::Success => R::Success(pb::RaftEmpty {}),
        AppendEntriesResponse::PartialSuccess(m) => R::PartialSuccess(pb::RaftPartial {
            matching: m.as_ref().map(log_id_to_pb),
        }),
        AppendEntriesResponse::Conflict => R::Conflict(pb::RaftEmpty {}),
        AppendEntriesResponse::HigherVote(v) => R::HigherVote(vote_to_pb(&v)),
    };
    pb::RaftAppendResponse {
        result: Some(result),
    }
}

fn append_response_from_pb(
    r: pb::RaftAppendResponse,
) -> Result<AppendEntriesResponse<NodeId>, String> {
    use pb::raft_append_response::Result as R;
    Ok(match r.result {
        Some(R::Success(_)) => AppendEntriesResponse::Success,
        Some(R::PartialSuccess(p)) => {
            AppendEntriesResponse::PartialSuccess(log_id_from_pb(p.matching))
        }
        Some(R::Conflict(_)) => AppendEntriesResponse::Conflict,
        Some(R::HigherVote(v)) => AppendEntriesResponse::HigherVote(vote_from_pb(Some(v))),
        None => return Err("empty append-entries response".into()),
    })
}

/// A boxed future of a Raft RPC handler.
pub type Handled<'a, T> = Pin<Box<dyn Future<Output = Result<T, Status>> + Send + 'a>>;

/// One group's Raft, as the RPC server sees it.
pub trait RaftEndpoint: Send + Sync + 'static {
    /// Handles AppendEntries.
    fn append(&self, req: pb::RaftAppendRequest) -> Handled<'_, pb::RaftAppendResponse>;
    /// Handles Vote.
    fn vote(&self, req: pb::RaftVoteRequest) -> Handled<'_, pb::RaftVoteResponse>;
    /// Handles a whole snapshot.
    fn install(&self, req: pb::RaftSnapshotRequest) -> Handled<'_, pb::RaftSnapshotResponse>;
}

fn raft_status(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("raft: {e}"))
}

impl<C: GroupTypes> RaftEndpoint for openraft::Raft<C>
where
    C::D: StoredPayload,
    C::SnapshotData: SnapshotCodec,
{
    fn append(&self, req: pb::RaftAppendRequest) -> Handled<'_, pb::RaftAppendResponse> {
        Box::pin(async move {
            let rpc = append_from_pb::<C>(req)?;
            let resp = self.append_entries(rpc).await.map_err(raft_status)?;
            Ok(append_response_to_pb(resp))
        })
    }

    fn vote(&self, req: pb::RaftVoteRequest) -> Handled<'_, pb::RaftVoteResponse> {
        Box::pin(async move {
            let rpc = VoteRequest {
                vote: vote_from_pb(req.vote),
                last_log_id: log_id_from_pb(req.last_log_id),
            };
            let resp = openraft::Raft::vote(self, rpc).await.map_err(raft_status)?;
            Ok(pb::RaftVoteResponse {
                vote: Some(vote_to_pb(&resp.vote)),
                vote_granted: resp.vote_granted,
                last_log_id: resp.last_log_id.as_ref().map(log_id_to_pb),
            })
        })
    }

    fn install(&self, req: pb::RaftSnapshotRequest) -> Handled<'_, pb::RaftSnapshotResponse> {
        Box::pin(async move {
            let membership = membership_from_json_str(&req.membership_json)
                .map_err(|e| Status::invalid_argument(format!("bad membership: {e}")))?;
            let data = C::SnapshotData::decode(&req.data)
                .map_err(|e| Status::invalid_argument(format!("bad snapshot data: {e}")))?;
            let snapshot = Snapshot {
                meta: SnapshotMeta {
                    last_log_id: log_id_from_pb(req.last_log_id),
                    last_membership: StoredMembership::new(
                        log_id_from_pb(req.membership_log_id),
                        membership,
                    ),
                    snapshot_id: req.snapshot_id,
                },
                snapshot: Box::new(data),
            };
            let resp = self
                .install_full_snapshot(vote_from_pb(req.vote), snapshot)
                .await
                .map_err(raft_status)?;
            Ok(pb::RaftSnapshotResponse {
                vote: Some(vote_to_pb(&resp.vote)),
            })
        })
    }
}

/// Proposes metadata changes on this node (when it leads the metadata group).
pub trait MetaProposer: Send + Sync + 'static {
    /// Applies the JSON command if this node leads the metadata group; `Ok(refusal)` where
    /// the metadata refused it, `FAILED_PRECONDITION` if this node does not lead.
    fn propose(&self, command_json: Bytes) -> Handled<'_, String>;
}

/// The Raft groups this node serves, by name.
#[derive(Default)]
pub struct RaftGroups {
    groups: RwLock<HashMap<String, Arc<dyn RaftEndpoint>>>,
    /// Bytes of entries received per group (AppendEntries, single or batched).
    received: parking_lot::Mutex<HashMap<String, u64>>,
    proposer: RwLock<Option<std::sync::Weak<dyn MetaProposer>>>,
}

impl std::fmt::Debug for RaftGroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftGroups")
            .field("groups", &self.groups.read().len())
            .finish()
    }
}

impl RaftGroups {
    /// Registers (or replaces) a group.
    pub fn insert(&self, name: String, endpoint: Arc<dyn RaftEndpoint>) {
        self.groups.write().insert(name, endpoint);
    }

    /// Unregisters a group.
    pub fn remove(&self, name: &str) {
        self.groups.write().remove(name);
    }

    /// Bytes of Raft entries received for `group` since this node started.
    pub fn received_bytes(&self, group: &str) -> u64 {
        self.received.lock().get(group).copied().unwrap_or(0)
    }

    fn count_received(&self, req: &pb::RaftAppendRequest) {
        let bytes: usize = req.entries.iter().map(|e| e.len()).sum();
        if bytes > 0 {
            *self.received.lock().entry(req.group.clone()).or_default() += bytes as u64;
        }
    }

    /// Sets what handles metadata proposals from peers.
    pub fn set_proposer(&self, proposer: std::sync::Weak<dyn MetaProposer>) {
        *self.proposer.write() = Some(proposer);
    }

    fn proposer(&self) -> Result<Arc<dyn MetaProposer>, Status> {
        self.proposer
            .read()
            .as_ref()
            .and_then(|p| p.upgrade())
            .ok_or_else(|| Status::unavailable("this node is not running the metadata group"))
    }

    fn get(&self, name: &str) -> Result<Arc<dyn RaftEndpoint>, Status> {
        self.groups
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no Raft group {name:?} on this node")))
    }
}

/// The gRPC Raft service.
#[derive(Debug, Clone)]
pub struct RaftRpcService {
    groups: Arc<RaftGroups>,
}

impl RaftRpcService {
    /// A service routing to `groups`.
    pub fn new(groups: Arc<RaftGroups>) -> Self {
        RaftRpcService { groups }
    }
}

#[tonic::async_trait]
impl pb::raft_service_server::RaftService for RaftRpcService {
    async fn append_entries(
        &self,
        request: Request<pb::RaftAppendRequest>,
    ) -> Result<Response<pb::RaftAppendResponse>, Status> {
        let req = request.into_inner();
        let group = self.groups.get(&req.group)?;
        self.groups.count_received(&req);
        group.append(req).await.map(Response::new)
    }

    async fn vote(
        &self,
        request: Request<pb::RaftVoteRequest>,
    ) -> Result<Response<pb::RaftVoteResponse>, Status> {
        let req = request.into_inner();
        let group = self.groups.get(&req.group)?;
        group.vote(req).await.map(Response::new)
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::RaftSnapshotRequest>,
    ) -> Result<Response<pb::RaftSnapshotResponse>, Status> {
        let req = request.into_inner();
        let group = self.groups.get(&req.group)?;
        group.install(req).await.map(Response::new)
    }

    async fn propose_meta(
        &self,
        request: Request<pb::MetaProposal>,
    ) -> Result<Response<pb::MetaProposalResult>, Status> {
        let proposer = self.groups.proposer()?;
        let refused = proposer.propose(request.into_inner().command_json).await?;
        Ok(Response::new(pb::MetaProposalResult { refused }))
    }

    async fn append_entries_batch(
        &self,
        request: Request<pb::RaftAppendBatchRequest>,
    ) -> Result<Response<pb::RaftAppendBatchResponse>, Status> {
        let batch = request.into_inner();
        let limit = (batch.group_timeout_ms > 0)
            .then(|| Duration::from_millis(u64::from(batch.group_timeout_ms)));
        let outcomes =
            futures_util::future::join_all(batch.requests.into_iter().map(|req| async move {
                let result = match self.groups.get(&req.group) {
                    Ok(group) => match limit {
                        Some(limit) => tokio::time::timeout(limit, group.append(req))
                            .await
                            .unwrap_or_else(|_| {
                                Err(Status::deadline_exceeded(format!(
                                    "the group took longer than {limit:?}"
                                )))
                            }),
                        None => group.append(req).await,
                    },
                    Err(e) => Err(e),
                };
                append_outcome(result)
            }))
            .await;
        Ok(Response::new(pb::RaftAppendBatchResponse { outcomes }))
    }
}

/// One group's part of an `AppendEntriesBatch` answer.
pub(crate) fn append_outcome(
    result: Result<pb::RaftAppendResponse, Status>,
) -> pb::RaftAppendOutcome {
    match result {
        Ok(response) => pb::RaftAppendOutcome {
            response: Some(response),
            error: String::new(),
            code: 0,
        },
        Err(status) => pb::RaftAppendOutcome {
            response: None,
            error: status.message().to_string(),
            code: status.code() as i32,
        },
    }
}

/// gRPC channels to peers, one per address, shared by every group, and the address book:
/// the current address of each node, kept up to date from gossip, which wins over the address
/// recorded in a group's membership (a node restarted on a new address stays reachable).
#[derive(Debug, Default)]
pub struct Channels {
    /// TLS to peers (`None`: plaintext).
    tls: Option<crate::security::tls::ClientTls>,
    /// The TLS generation the cached channels were made under: after a certificate reload
    /// they are replaced, so peers see the new certificate (an old one may have expired or
    /// been signed by a CA that is no longer trusted).
    tls_generation: std::sync::atomic::AtomicU64,
    channels: RwLock<HashMap<String, Channel>>,
    addresses: RwLock<HashMap<NodeId, String>>,
    /// Heartbeats gathered per peer address.
    heartbeats: Heartbeats,
}

impl Channels {
    /// Channels that connect to peers with `tls` (its certificate files are watched, so a
    /// rotated node certificate is used for connections opened after the change).
    pub fn with_tls(tls: crate::security::tls::ClientTls) -> Self {
        tls.spawn_watcher();
        Channels {
            tls: Some(tls),
            ..Default::default()
        }
    }

    /// Records the current address of `node`.
    pub fn set_address(&self, node: NodeId, addr: &str) {
        if self.addresses.read().get(&node).map(String::as_str) != Some(addr) {
            self.addresses.write().insert(node, addr.to_string());
        }
    }

    /// The current address of `node`, or `fallback` if none is recorded.
    pub fn address_of(&self, node: NodeId, fallback: &str) -> String {
        self.addresses
            .read()
            .get(&node)
            .cloned()
            .unwrap_or_else(|| fallback.to_string())
    }

    /// The channel to `addr` (connected lazily).
    pub fn get(&self, addr: &str) -> Result<Channel, String> {
        if let Some(tls) = &self.tls {
            let generation = tls.generation();
            let seen = std::sync::atomic::Ordering::AcqRel;
            if self.tls_generation.swap(generation, seen) != generation {
                tracing::info!("node certificate reloaded: reconnecting to peers");
                self.channels.write().clear();
                self.heartbeats.reset();
            }
        }
        if let Some(c) = self.channels.read().get(addr) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("bad peer address {addr:?}: {e}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_adaptive_window(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = match &self.tls {
            Some(tls) => endpoint.connect_with_connector_lazy(tls.connector()),
            None => endpoint.connect_lazy(),
        };
        self.channels
            .write()
            .insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

/// openraft's network factory for one group: clients for its peers.
pub struct PeerNetwork<C> {
    group: String,
    channels: Arc<Channels>,
    _types: PhantomData<C>,
}

impl<C> PeerNetwork<C> {
    /// The network of group `group`, over `channels`.
    pub fn new(group: String, channels: Arc<Channels>) -> Self {
        PeerNetwork {
            group,
            channels,
            _types: PhantomData,
        }
    }
}

/// A client for one peer of one group.
pub struct PeerClient<C> {
    group: String,
    target: NodeId,
    /// The address in the group's membership (used if the address book has none).
    addr: String,
    channels: Arc<Channels>,
    /// What the peer last acknowledged on this replication stream: (vote, matched log id,
    /// leader commit). An AppendEntries without entries that changes none of them is a pure
    /// keep-alive and may wait for a batch; one that carries news (a new commit index, a probe)
    /// goes at once, since the stream sends nothing else until it is answered.
    acknowledged: Option<(Vote, Option<LogId>, Option<LogId>)>,
    _types: PhantomData<C>,
}

impl<C: GroupTypes> RaftNetworkFactory<C> for PeerNetwork<C>
where
    C::D: StoredPayload,
    C::SnapshotData: SnapshotCodec,
{
    type Network = PeerClient<C>;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Self::Network {
        PeerClient {
            group: self.group.clone(),
            target,
            addr: node.addr.clone(),
            channels: self.channels.clone(),
            acknowledged: None,
            _types: PhantomData,
        }
    }
}

/// Why an RPC to a peer failed.
#[derive(Debug, thiserror::Error)]
#[error("Raft RPC to node {target} at {addr} failed: {reason}")]
struct PeerError {
    target: NodeId,
    addr: String,
    reason: String,
}

impl<C> PeerClient<C> {
    fn error(&self, reason: impl std::fmt::Display) -> PeerError {
        PeerError {
            target: self.target,
            addr: self.addr.clone(),
            reason: reason.to_string(),
        }
    }

    /// The peer's current address and the channel to it.
    fn channel(&self) -> Result<(String, Channel), PeerError> {
        let addr = self.channels.address_of(self.target, &self.addr);
        let channel = self.channels.get(&addr).map_err(|e| self.error(e))?;
        Ok((addr, channel))
    }

    fn client(&self) -> Result<RaftServiceClient<Channel>, PeerError> {
        let (_, channel) = self.channel()?;
        Ok(RaftServiceClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX))
    }

    /// Unreachable (back off) for connection problems and unknown groups, else a network error
    /// (retried at the next heartbeat).
    fn rpc_error<E: std::error::Error>(&self, status: Status) -> RPCError<NodeId, Node, E> {
        let error = self.error(format!("{}: {}", status.code(), status.message()));
        match status.code() {
            // A peer that is slow (DEADLINE_EXCEEDED) is not backed off from: openraft retries
            // a network error at the next heartbeat, but waits 500 ms after an unreachable one.
            tonic::Code::Unavailable | tonic::Code::NotFound => {
                RPCError::Unreachable(Unreachable::new(&error))
            }
            _ => RPCError::Network(NetworkError::new(&error)),
        }
    }
}

fn with_deadline<T>(message: T, option: &RPCOption) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(option.hard_ttl());
    request
}

impl<C: GroupTypes> RaftNetwork<C> for PeerClient<C>
where
    C::D: StoredPayload,
    C::SnapshotData: SnapshotCodec,
{
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        let message = append_to_pb(&self.group, &rpc)
            .map_err(|e| RPCError::Network(NetworkError::new(&self.error(e))))?;
        let sent = message.entries.len();
        let keep_alive = sent == 0
            && self.acknowledged.as_ref() == Some(&(rpc.vote, rpc.prev_log_id, rpc.leader_commit));
        let response = if keep_alive {
            let (addr, channel) = self
                .channel()
                .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
            self.channels
                .heartbeats
                .send(&addr, &channel, message, option.hard_ttl())
                .await
                .map_err(|s| self.rpc_error(s))?
        } else {
            let mut client = self
                .client()
                .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
            client
                .append_entries(with_deadline(message, &option))
                .await
                .map_err(|s| self.rpc_error(s))?
                .into_inner()
        };
        let response = append_response_from_pb(response)
            .map_err(|e| RPCError::Network(NetworkError::new(&self.error(e))))?;
        // Only a prefix was sent: a success covers that prefix only.
        let response = match response {
            AppendEntriesResponse::Success if sent < rpc.entries.len() => {
                AppendEntriesResponse::PartialSuccess(Some(rpc.entries[sent - 1].log_id))
            }
            other => other,
        };
        self.acknowledged = match &response {
            AppendEntriesResponse::Success => {
                let matched = rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id);
                Some((rpc.vote, matched, rpc.leader_commit))
            }
            _ => None,
        };
        Ok(response)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        let message = pb::RaftVoteRequest {
            group: self.group.clone(),
            vote: Some(vote_to_pb(&rpc.vote)),
            last_log_id: rpc.last_log_id.as_ref().map(log_id_to_pb),
        };
        let mut client = self
            .client()
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let response = client
            .vote(with_deadline(message, &option))
            .await
            .map_err(|s| self.rpc_error(s))?
            .into_inner();
        Ok(VoteResponse {
            vote: vote_from_pb(response.vote),
            vote_granted: response.vote_granted,
            last_log_id: log_id_from_pb(response.last_log_id),
        })
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot<C>,
        _cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<C, Fatal<NodeId>>> {
        let meta = &snapshot.meta;
        let message = pb::RaftSnapshotRequest {
            group: self.group.clone(),
            vote: Some(vote_to_pb(&vote)),
            last_log_id: meta.last_log_id.as_ref().map(log_id_to_pb),
            membership_log_id: meta.last_membership.log_id().as_ref().map(log_id_to_pb),
            membership_json: membership_json(meta.last_membership.membership()),
            snapshot_id: meta.snapshot_id.clone(),
            data: Bytes::from(snapshot.snapshot.encode()),
        };
        let mut client = self
            .client()
            .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))?;
        let response = client
            .install_snapshot(with_deadline(message, &option))
            .await
            .map_err(|s| {
                let error = self.error(format!("{}: {}", s.code(), s.message()));
                StreamingError::Network(NetworkError::new(&error))
            })?
            .into_inner();
        Ok(SnapshotResponse::new(vote_from_pb(response.vote)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::PartitionRaft;
    use crate::raft::test_peer::CountingPeer;

    fn request(commit: Option<u64>) -> AppendEntriesRequest<PartitionRaft> {
        AppendEntriesRequest {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(log_id(3, 10)),
            leader_commit: commit.map(|i| log_id(3, i)),
            entries: Vec::new(),
        }
    }

    /// Only keep-alives that tell the peer nothing new wait for a batch: the first request of
    /// a stream and a new commit index go at once (the stream sends nothing else meanwhile).
    #[tokio::test]
    async fn only_pure_keep_alives_are_batched() {
        let (peer, addr, server) = CountingPeer::start().await;
        let channels = Arc::new(Channels::default());
        let mut network = PeerNetwork::<PartitionRaft>::new("ok".to_string(), channels);
        let node = Node { addr: addr.clone() };
        let mut client = network.new_client(2, &node).await;
        let option = || RPCOption::new(Duration::from_secs(5));

        // (commit index sent, (single RPCs, batch RPCs) the peer has seen after it)
        let steps = [
            (8, (1, 0)), // nothing acknowledged yet on this stream: sent at once
            (8, (1, 1)), // the same again: a keep-alive, batched
            (9, (2, 1)), // a new commit index: at once
            (9, (2, 2)), // acknowledged, so a keep-alive again
        ];
        for (commit, expected) in steps {
            let r = client.append_entries(request(Some(commit)), option()).await;
            assert!(matches!(r, Ok(AppendEntriesResponse::Success)), "{r:?}");
            assert_eq!(
                (peer.singles(), peer.batches()),
                expected,
                "commit {commit}"
            );
        }
        server.abort();
    }
}
