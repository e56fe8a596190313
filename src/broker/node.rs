//! How a node joins and keeps a cluster: the metadata group, gossip, formation, the controller,
//! and the reconciler that opens and closes this node's replicas.
//!
//! - **Metadata group.** Every node runs it (`<data_dir>/meta/`); its committed log id is
//!   persisted, so a restarted node re-applies its metadata without waiting for a leader.
//! - **Formation** (`bootstrap_expect = N`): once gossip shows at least N live nodes, the one with
//!   the lowest node id asks the others whether a cluster exists already and, if none does,
//!   initializes the metadata group with up to three of them as voters. No node is special.
//! - **Controller** (the metadata leader): registers live gossip members in the metadata, adds
//!   them to the metadata group as learners and promotes learners that caught up until there are
//!   three voters (fewer on smaller clusters). Gossip only suggests; Raft membership decides.
//! - **Reconciler** (every node): opens a replica for every partition the metadata assigns to
//!   this node (the first replica of a new partition initializes its group with all replicas as
//!   voters) and removes replicas of deleted topics. Each replica reports its own leadership to
//!   the metadata (`SetLeader`), which is what clients are told.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use tonic::Status;

use super::RaftContext;
use super::{Broker, BrokerError, Partition};
use crate::cluster::discovery::Ec2TagDiscovery;
use crate::cluster::membership::{
    GossipConfig, GossipTiming, JoinBackoff, MemberStatus, Membership, MembershipError,
    SerfMembership, join_discovered_with_retry, join_with_retry,
};
use crate::cluster::{
    ClusterMetadata, MetaCommand, MetaRaft, MetaRaftHandle, MetaResponse, MetaStateMachine,
};
use crate::log::{FsyncPolicy, LogConfig, PartitionLog};
use crate::proto::v1 as pb;
use crate::raft::network::Handled;
use crate::raft::{LogStore, META_GROUP, Node, NodeId, PeerNetwork, partition_group};

/// How long creating a topic (or a standalone start) waits for partitions to get leaders.
pub const READY_WAIT: Duration = Duration::from_secs(30);
/// How often the background loops look again (they also wake on metadata changes).
const TICK: Duration = Duration::from_millis(200);
/// Voters of the metadata group when there are enough nodes.
const META_VOTERS: usize = 3;

/// Log settings of the metadata group's log (`<data_dir>/meta`): small, never deleted.
pub(super) fn meta_log_config() -> LogConfig {
    LogConfig {
        segment_max_bytes: 64 << 20,
        index_max_bytes: 1 << 20,
        retention_ms: None,
        retention_bytes: None,
        ..LogConfig::default()
    }
}

/// Opens (recovering) this node's member of the metadata group and registers it.
pub(super) async fn open_meta_group(
    data_dir: &Path,
    raft: &RaftContext,
) -> Result<(MetaRaftHandle, MetaStateMachine, Arc<PartitionLog>), BrokerError> {
    let dir = data_dir.join("meta");
    let config = meta_log_config();
    let dir_owned = dir.clone();
    let log = tokio::task::spawn_blocking(move || PartitionLog::open(&dir_owned, config))
        .await
        .map_err(|e| BrokerError::io(&dir, std::io::Error::other(e)))??;
    let log = Arc::new(log);
    let store = LogStore::<MetaRaft>::open_with(log.clone(), FsyncPolicy::Always, true)
        .map_err(|e| BrokerError::io(&dir, std::io::Error::other(e)))?;
    let state = MetaStateMachine::default();
    let config = raft
        .timing
        .config(META_GROUP)
        .map_err(|reason| BrokerError::InvalidArgument {
            field: "raft timing",
            reason,
        })?;
    let network = PeerNetwork::new(META_GROUP.to_string(), raft.channels.clone());
    let handle = openraft::Raft::new(raft.node_id, config, network, store, state.clone())
        .await
        .map_err(|e| BrokerError::io(&dir, std::io::Error::other(e.to_string())))?;
    raft.groups
        .insert(META_GROUP.to_string(), Arc::new(handle.clone()));
    Ok((handle, state, log))
}

/// Starts gossip (not yet joined).
pub(super) async fn start_gossip(
    config: &crate::config::BrokerConfig,
    node_id: NodeId,
    address: &str,
) -> Result<Arc<SerfMembership>, BrokerError> {
    let invalid = |reason: String| BrokerError::InvalidArgument {
        field: "gossip",
        reason,
    };
    let mut gossip = GossipConfig::new(node_id, config.gossip_addr, address.to_string());
    if !config.gossip_advertise_addr.is_empty() {
        gossip.advertise_addr = Some(
            resolve_advertise(&config.gossip_advertise_addr)
                .await
                .map_err(invalid)?,
        );
    }
    gossip.encryption_key = config.gossip_key().map_err(invalid)?;
    // Loopback clusters (tests, a laptop) detect failures quickly; real networks use serf's LAN
    // defaults.
    if config.gossip_addr.ip().is_loopback() {
        gossip.timing = GossipTiming::loopback();
    }
    let membership = SerfMembership::start(gossip)
        .await
        .map_err(|e| invalid(e.to_string()))?;
    tracing::info!(gossip = %membership.advertise_addr(), "gossip started");
    Ok(Arc::new(membership))
}

/// Joins gossip through the running EC2 instances with the tag (listed again before every
/// attempt, this node's own address left out), plus the fixed `seeds`.
async fn join_by_ec2_tag(
    gossip: &SerfMembership,
    discovery: Ec2TagDiscovery,
    seeds: Vec<String>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<usize, MembershipError> {
    let ec2 = discovery
        .connect()
        .await
        .map_err(|e| MembershipError::Discovery(e.to_string()))?;
    let own_ip = gossip.advertise_addr().ip();
    let discover = || {
        let (ec2, seeds) = (ec2.clone(), seeds.clone());
        async move {
            let found = ec2
                .seeds(Some(own_ip))
                .await
                .map_err(|e| MembershipError::Discovery(e.to_string()))?;
            tracing::debug!(found = ?found, "EC2 tag discovery");
            let all: Vec<String> = seeds.into_iter().chain(found).collect();
            if all.is_empty() {
                return Err(MembershipError::Discovery(format!(
                    "no other running instance is tagged {}",
                    ec2.tag()
                )));
            }
            Ok(all)
        }
    };
    join_discovered_with_retry(gossip, discover, JoinBackoff::default(), stop).await
}

/// Resolves `gossip_advertise_addr`: an `ip:port`, or a `host:port` whose name may not resolve
/// yet (a pod's or container's own DNS record appears shortly after it starts), so a name is
/// retried for up to 60 s. An IPv4 address is preferred when the name has both kinds.
async fn resolve_advertise(value: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    const ATTEMPTS: u32 = 60;
    let mut last_error = String::new();
    for attempt in 1..=ATTEMPTS {
        match tokio::net::lookup_host(value).await {
            Ok(addrs) => {
                let addrs: Vec<_> = addrs.collect();
                if let Some(addr) = addrs.iter().find(|a| a.is_ipv4()).or(addrs.first()) {
                    return Ok(*addr);
                }
                last_error = "no addresses".to_string();
            }
            // Not `host:port` at all: no point in waiting.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                return Err(format!(
                    "gossip_advertise_addr {value:?}: {e} (expected ip:port or host:port)"
                ));
            }
            Err(e) => last_error = e.to_string(),
        }
        if attempt < ATTEMPTS {
            tracing::info!(name = value, attempt, error = %last_error, "gossip_advertise_addr does not resolve yet");
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }
    Err(format!(
        "gossip_advertise_addr {value:?} did not resolve within {ATTEMPTS}s: {last_error}"
    ))
}

/// Starts the background tasks: gossip join, formation and controller, replica reconciler.
pub(super) fn spawn_tasks(broker: &Arc<Broker>) {
    let mut tasks = broker.tasks.lock();
    let config = &broker.config;
    if !config.join_aws_tag.is_empty() || !config.join.is_empty() {
        let discovery = (!config.join_aws_tag.is_empty()).then(|| Ec2TagDiscovery {
            tag: config.join_aws_tag.clone(),
            region: config.join_aws_region.clone(),
            endpoint: config.join_aws_endpoint.clone(),
            gossip_port: broker.gossip.advertise_addr().port(),
        });
        let (b, seeds) = (Arc::downgrade(broker), config.join.clone());
        let gossip = broker.gossip.clone();
        let mut shutdown = broker.shutdown_signal();
        tasks.push(tokio::spawn(async move {
            let stop = async move {
                let _ = shutdown.wait_for(|s| *s).await;
            };
            let (joined, via) = match discovery {
                Some(discovery) => (
                    join_by_ec2_tag(&gossip, discovery, seeds, stop).await,
                    "ec2_tag",
                ),
                None => (
                    join_with_retry(&*gossip, &seeds, JoinBackoff::default(), stop).await,
                    "seeds",
                ),
            };
            match joined {
                Ok(n) => tracing::info!(contacted = n, via, "joined the gossip cluster"),
                Err(e) => tracing::warn!(error = %e, "gossip join stopped"),
            }
            drop(b);
        }));
    }
    let weak = Arc::downgrade(broker);
    tasks.push(tokio::spawn(async move { control_loop(weak).await }));
    let weak = Arc::downgrade(broker);
    tasks.push(tokio::spawn(async move { reconcile_loop(weak).await }));
    let weak = Arc::downgrade(broker);
    tasks.push(tokio::spawn(async move {
        super::snapshots::meta_upload_loop(weak).await
    }));
    // Leader changes of the metadata group (partition groups count theirs in their leader
    // report task).
    let mut metrics = broker.meta.metrics();
    tasks.push(tokio::spawn(async move {
        let changes = crate::telemetry::metrics()
            .leader_changes
            .get_or_create_owned(&crate::telemetry::GroupLabels {
                group: crate::raft::META_GROUP.to_string(),
            });
        let mut last = None;
        loop {
            let leader = {
                let m = metrics.borrow_and_update();
                m.current_leader.map(|l| (m.current_term, l))
            };
            if leader.is_some() && leader != last {
                changes.inc();
                last = leader;
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    }));
}

/// Formation and controller loop.
async fn control_loop(broker: std::sync::Weak<Broker>) {
    loop {
        let Some(b) = broker.upgrade() else { return };
        if *b.shutdown.borrow() {
            return;
        }
        // Keep the address book current: gossip knows where every node is now.
        for (id, addr) in live_members(&b) {
            b.raft.channels.set_address(id, &addr);
        }
        let initialized = b.meta.is_initialized().await.unwrap_or(true);
        let outcome = if !initialized {
            try_form(&b).await
        } else if b.meta.metrics().borrow().state == ServerState::Leader {
            control(&b).await
        } else {
            Ok(())
        };
        if let Err(e) = outcome {
            tracing::debug!(error = %e, "controller pass failed; retrying");
        }
        let mut shutdown = b.shutdown_signal();
        drop(b);
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// Live gossip members: (id, gRPC address).
fn live_members(b: &Broker) -> BTreeMap<NodeId, String> {
    b.gossip
        .members()
        .into_iter()
        .filter(|m| m.status == MemberStatus::Alive)
        .map(|m| (m.node_id, m.grpc_addr))
        .collect()
}

/// Forms the cluster if this node is the lowest-id node of at least `bootstrap_expect` live
/// ones and no cluster exists yet.
async fn try_form(b: &Broker) -> Result<(), BrokerError> {
    let live = live_members(b);
    if live.len() < b.config.bootstrap_expect as usize {
        return Ok(());
    }
    if live.keys().next() != Some(&b.identity.node_id) {
        return Ok(());
    }
    // Someone may have formed a cluster already (and be about to add us): ask.
    for (id, addr) in &live {
        if *id == b.identity.node_id {
            continue;
        }
        let channel = b
            .raft
            .channels
            .get(addr)
            .map_err(BrokerError::Unavailable)?;
        let mut client = pb::metadata_service_client::MetadataServiceClient::new(channel);
        let mut request = tonic::Request::new(pb::GetMetadataRequest {});
        request.set_timeout(Duration::from_secs(1));
        let reply = client
            .get_metadata(request)
            .await
            .map_err(|s| BrokerError::Unavailable(format!("node {id} at {addr}: {s}")))?;
        if !reply.into_inner().cluster_id.is_empty() {
            return Ok(());
        }
    }
    let voters: BTreeMap<NodeId, Node> = live
        .iter()
        .take(META_VOTERS)
        .map(|(id, addr)| (*id, Node { addr: addr.clone() }))
        .collect();
    tracing::info!(voters = ?voters.keys().collect::<Vec<_>>(), "forming the cluster");
    match b.meta.initialize(voters).await {
        Ok(()) => {}
        Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => {}
        Err(e) => return Err(BrokerError::Unavailable(e.to_string())),
    }
    if live.len() == 1 {
        b.meta
            .trigger()
            .elect()
            .await
            .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
    }
    Ok(())
}

/// One controller pass on the metadata leader.
async fn control(b: &Broker) -> Result<(), BrokerError> {
    let metadata = b.metadata();
    if metadata.cluster_id.is_empty() {
        b.propose(MetaCommand::SetClusterId(b.identity.cluster_id.clone()))
            .await?;
    }
    let live = live_members(b);
    for (id, addr) in &live {
        if metadata.nodes.get(id).map(|n| &n.addr) != Some(addr) {
            b.propose(MetaCommand::RegisterNode {
                id: *id,
                addr: addr.clone(),
            })
            .await?;
        }
    }
    // Metadata group membership: every live node is a member; up to three are voters.
    let metrics = b.meta.metrics().borrow().clone();
    let membership = metrics.membership_config.membership().clone();
    let members: BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    for (id, addr) in &live {
        if !members.contains(id) {
            tracing::info!(node = id, %addr, "adding node to the metadata group as a learner");
            b.meta
                .add_learner(*id, Node { addr: addr.clone() }, false)
                .await
                .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        }
    }
    replace_dead_nodes(b, &metadata, &live, &voters).await?;
    if voters.len() < META_VOTERS {
        let last = metrics.last_log_index.unwrap_or(0);
        let caught_up = metrics.replication.as_ref().and_then(|r| {
            r.iter()
                .filter(|(id, _)| !voters.contains(id) && live.contains_key(id))
                .find(|(_, matched)| matched.map(|m| m.index + 1 >= last).unwrap_or(false))
                .map(|(id, _)| *id)
        });
        if let Some(id) = caught_up {
            tracing::info!(node = id, "promoting to metadata voter");
            b.meta
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        }
    }
    Ok(())
}

/// Replaces a node gossip has reported gone for longer than `dead_node_grace_ms` (one node at
/// a time): its replicas are reassigned to live nodes (the partition leaders then add them and
/// drop the dead one, never below a majority of live voters), and once no replica is left on
/// it, it leaves the metadata group and the metadata.
async fn replace_dead_nodes(
    b: &Broker,
    metadata: &ClusterMetadata,
    live: &BTreeMap<NodeId, String>,
    meta_voters: &BTreeSet<NodeId>,
) -> Result<(), BrokerError> {
    let now = Instant::now();
    let grace = Duration::from_millis(b.config.dead_node_grace_ms);
    let dead = {
        let mut failed = b.failed_since.lock();
        failed.retain(|id, _| metadata.nodes.contains_key(id) && !live.contains_key(id));
        for id in metadata.nodes.keys() {
            if !live.contains_key(id) {
                failed.entry(*id).or_insert(now);
            }
        }
        failed
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= grace)
            .map(|(id, _)| *id)
            .min()
    };
    let Some(dead) = dead else { return Ok(()) };
    let mut counts = metadata.replica_counts();
    let mut moved = 0;
    let mut stuck = 0;
    for (topic, t) in &metadata.topics {
        for (index, replicas) in t.replicas.iter().enumerate() {
            if !replicas.contains(&dead) {
                continue;
            }
            let mut candidates: Vec<NodeId> = live
                .keys()
                .filter(|id| metadata.nodes.contains_key(id) && !replicas.contains(id))
                .copied()
                .collect();
            candidates.sort_by_key(|id| (counts.get(id).copied().unwrap_or(0), *id));
            let Some(new) = candidates.first().copied() else {
                stuck += 1;
                continue;
            };
            *counts.entry(new).or_default() += 1;
            let mut next: Vec<NodeId> = replicas.iter().copied().filter(|id| *id != dead).collect();
            next.push(new);
            tracing::info!(%topic, partition = index, dead, new, "reassigning replica of a dead node");
            b.propose(MetaCommand::SetReplicas {
                topic: topic.clone(),
                partition: index as u32,
                replicas: next,
            })
            .await?;
            moved += 1;
        }
    }
    if moved > 0 || stuck > 0 {
        if stuck > 0 {
            tracing::warn!(
                dead,
                partitions = stuck,
                "no live node to move replicas of a dead node to; waiting"
            );
        }
        return Ok(());
    }
    // No replica left on it: out of the metadata group, then out of the metadata.
    let unavailable = |e: &dyn std::fmt::Display| BrokerError::Unavailable(e.to_string());
    if meta_voters.contains(&dead) {
        if meta_voters.len() <= 1 {
            return Ok(());
        }
        tracing::info!(node = dead, "removing a dead node from the metadata voters");
        b.meta
            .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([dead])), false)
            .await
            .map_err(|e| unavailable(&e))?;
        return Ok(());
    }
    let members: BTreeSet<NodeId> = b
        .meta
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .nodes()
        .map(|(id, _)| *id)
        .collect();
    if members.contains(&dead) {
        b.meta
            .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([dead])), false)
            .await
            .map_err(|e| unavailable(&e))?;
    }
    tracing::info!(node = dead, "dead node replaced and removed");
    b.propose(MetaCommand::RemoveNode { id: dead }).await?;
    b.failed_since.lock().remove(&dead);
    Ok(())
}

/// Replica reconciler loop: wakes on metadata changes and every tick.
async fn reconcile_loop(broker: std::sync::Weak<Broker>) {
    let Some(b) = broker.upgrade() else { return };
    let mut metadata = b.meta_state.watch();
    let mut shutdown = b.shutdown_signal();
    drop(b);
    let mut previous: Arc<ClusterMetadata> = Arc::default();
    loop {
        let Some(b) = broker.upgrade() else { return };
        let current = b.metadata();
        if let Err(e) = reconcile(&b, &previous, &current).await {
            tracing::warn!(error = %e, "reconciling replicas failed; retrying");
        } else {
            previous = current;
        }
        if let Some(id) = Some(b.metadata().cluster_id.clone()).filter(|c| !c.is_empty())
            && id != b.identity.cluster_id
        {
            tracing::debug!(cluster_id = %id, "member of cluster");
        }
        drop(b);
        tokio::select! {
            _ = metadata.changed() => {}
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// Opens replicas assigned to this node and removes those of topics deleted since `previous`.
async fn reconcile(
    b: &Arc<Broker>,
    previous: &ClusterMetadata,
    current: &ClusterMetadata,
) -> Result<(), BrokerError> {
    let me = b.identity.node_id;
    for name in previous.topics.keys() {
        if !current.topics.contains_key(name) {
            remove_topic_replicas(b, name).await?;
        }
    }
    for (name, topic) in &current.topics {
        let log_config = topic.settings.log_config(&b.log_defaults)?;
        for (index, replicas) in topic.replicas.iter().enumerate() {
            if !replicas.contains(&me) {
                continue;
            }
            let group = partition_group(name, index as u32);
            if b.replicas.read().contains_key(&group) {
                continue;
            }
            let _admin = b.admin.lock().await;
            if b.replicas.read().contains_key(&group) || *b.shutdown.borrow() {
                continue;
            }
            let dir = b.topics_dir.join(name).join(index.to_string());
            let fresh = !dir.exists();
            // The first replica of a partition that never had a leader initializes its group
            // with every replica as a voter; the others wait to hear from it.
            let voters: BTreeMap<NodeId, Node> = if fresh
                && replicas.first() == Some(&me)
                && !current.leaders.contains_key(&group)
            {
                replicas
                    .iter()
                    .filter_map(|id| {
                        current.nodes.get(id).map(|n| {
                            (
                                *id,
                                Node {
                                    addr: n.addr.clone(),
                                },
                            )
                        })
                    })
                    .collect()
            } else {
                BTreeMap::new()
            };
            if !voters.is_empty() && voters.len() != replicas.len() {
                // Some replica's address is not known yet: try again on the next pass.
                continue;
            }
            let every = Duration::from_millis(b.config.maintenance_interval_ms);
            let partition = Partition::open(
                &dir,
                group.clone(),
                index as u32,
                log_config.clone(),
                &b.raft,
                voters,
                &super::topic::ReplicaServices {
                    maintenance_every: every,
                    snapshots: b.snapshot_settings(),
                },
            )
            .await?;
            let partition = Arc::new(partition);
            b.replicas.write().insert(group.clone(), partition.clone());
            spawn_leader_reports(b, partition);
            tracing::info!(%group, "replica opened");
        }
    }
    Ok(())
}

/// While this replica leads its group: reports the leadership to the metadata, and moves the
/// group's membership toward the replicas the metadata assigns (new replicas join as learners
/// and become voters, together replacing the old voter set, once they have caught up).
fn spawn_leader_reports(b: &Arc<Broker>, partition: Arc<Partition>) {
    let weak = Arc::downgrade(b);
    let mut metrics = partition.raft().metrics();
    let raft = partition.raft().clone();
    let group = partition.group().to_string();
    drop(partition);
    let task = tokio::spawn(async move {
        let mut last_membership_pass = Instant::now() - TICK;
        let mut last_leader = None;
        let leader_changes = crate::telemetry::metrics()
            .leader_changes
            .get_or_create_owned(&crate::telemetry::GroupLabels {
                group: group.clone(),
            });
        loop {
            let (leads, leader) = {
                let m = metrics.borrow_and_update();
                // A leader is a (term, node): the same node elected again is a change too.
                (
                    m.state == ServerState::Leader,
                    m.current_leader.map(|l| (m.current_term, l)),
                )
            };
            if leader.is_some() && leader != last_leader {
                leader_changes.inc();
                last_leader = leader;
            }
            if leads {
                let Some(b) = weak.upgrade() else { return };
                let me = b.identity.node_id;
                if b.metadata().leaders.get(&group) != Some(&me) {
                    let command = MetaCommand::SetLeader {
                        group: group.clone(),
                        leader: me,
                    };
                    if let Err(e) = b.propose(command).await {
                        tracing::debug!(%group, error = %e, "could not report leadership");
                    }
                }
                if last_membership_pass.elapsed() >= TICK {
                    last_membership_pass = Instant::now();
                    if let Err(e) = reconcile_membership(&b, &raft, &group).await {
                        tracing::debug!(%group, error = %e, "membership change failed; retrying");
                    }
                }
            }
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    });
    b.tasks.lock().push(task);
}

/// One step of moving a partition group's membership to its assigned replicas (on its leader).
async fn reconcile_membership(
    b: &Broker,
    raft: &crate::raft::PartitionRaftHandle,
    group: &str,
) -> Result<(), BrokerError> {
    let Some((topic, index)) = group.rsplit_once('/') else {
        return Ok(());
    };
    let index: usize = index.parse().unwrap_or(usize::MAX);
    let metadata = b.metadata();
    let Some(assigned) = metadata
        .topics
        .get(topic)
        .and_then(|t| t.replicas.get(index))
    else {
        return Ok(());
    };
    let assigned: BTreeSet<NodeId> = assigned.iter().copied().collect();
    let m = raft.metrics().borrow().clone();
    let membership = m.membership_config.membership().clone();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    if voters == assigned {
        return Ok(());
    }
    let members: BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
    let unavailable = |e: &dyn std::fmt::Display| BrokerError::Unavailable(e.to_string());
    for id in assigned.difference(&members) {
        let Some(node) = metadata.nodes.get(id) else {
            return Ok(());
        };
        tracing::info!(%group, node = id, "adding replica as a learner");
        raft.add_learner(
            *id,
            Node {
                addr: node.addr.clone(),
            },
            false,
        )
        .await
        .map_err(|e| unavailable(&e))?;
    }
    // Every new replica must have caught up before the voter set changes.
    let last = m.last_log_index.unwrap_or(0);
    let caught_up = |id: &NodeId| {
        voters.contains(id)
            || m.replication.as_ref().is_some_and(|r| {
                r.get(id)
                    .is_some_and(|matched| matched.is_some_and(|l| l.index + 1 >= last))
            })
    };
    if !assigned.iter().all(caught_up) {
        return Ok(());
    }
    tracing::info!(%group, from = ?voters, to = ?assigned, "changing replicas");
    raft.change_membership(ChangeMembers::ReplaceAllVoters(assigned), false)
        .await
        .map_err(|e| unavailable(&e))?;
    Ok(())
}

/// Closes and deletes this node's replicas of topic `name`.
pub(super) async fn remove_topic_replicas(b: &Broker, name: &str) -> Result<(), BrokerError> {
    let _admin = b.admin.lock().await;
    let prefix = format!("{name}/");
    let doomed: Vec<Arc<Partition>> = {
        let mut map = b.replicas.write();
        let keys: Vec<String> = map
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .cloned()
            .collect();
        keys.iter().filter_map(|k| map.remove(k)).collect()
    };
    for p in &doomed {
        p.close().await?;
    }
    let source = b.topics_dir.join(name);
    if !source.exists() {
        return Ok(());
    }
    let doomed_dir = b.config.data_dir.join("trash").join(format!(
        "{}-{}",
        crate::log::now_ms(),
        fastrand::u32(..)
    ));
    let topics_dir = b.topics_dir.clone();
    tokio::task::spawn_blocking(move || -> Result<(), BrokerError> {
        // The rename is the commit point: after it the replicas are gone even across a crash.
        std::fs::rename(&source, &doomed_dir).map_err(|e| BrokerError::io(&source, e))?;
        std::fs::File::open(&topics_dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| BrokerError::io(&topics_dir, e))?;
        std::fs::remove_dir_all(&doomed_dir).map_err(|e| BrokerError::io(&doomed_dir, e))
    })
    .await
    .map_err(|e| BrokerError::io(&b.topics_dir, std::io::Error::other(e)))?
}

/// Waits until every partition of `name` has a leader known to the metadata and, for those
/// with a replica here, this node's replica is open.
pub(super) async fn wait_topic_ready(
    b: &Broker,
    name: &str,
    timeout: Duration,
) -> Result<(), BrokerError> {
    let deadline = Instant::now() + timeout;
    let mut metadata = b.meta_state.watch();
    loop {
        let current = b.metadata();
        // The proposal may have been applied on the metadata leader before it reached this
        // node's copy: an absent topic is waited for too.
        let ready = current.topics.get(name).is_some_and(|topic| {
            topic.replicas.iter().enumerate().all(|(i, replicas)| {
                let group = partition_group(name, i as u32);
                current.leaders.contains_key(&group)
                    && (!replicas.contains(&b.identity.node_id)
                        || b.replicas.read().contains_key(&group))
            })
        });
        if ready {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(BrokerError::Unavailable(format!(
                "topic {name:?}: not every partition has a leader after {timeout:?}"
            )));
        }
        let _ = tokio::time::timeout(left.min(TICK), metadata.changed()).await;
    }
}

/// A standalone node is ready once it leads the metadata group and every replica the metadata
/// assigns to it is open with a leader.
pub(super) async fn wait_standalone_ready(b: &Broker) -> Result<(), BrokerError> {
    let deadline = Instant::now() + READY_WAIT;
    loop {
        let metadata = b.metadata();
        let registered = metadata.nodes.contains_key(&b.identity.node_id);
        let pending: Vec<String> = metadata
            .topics
            .iter()
            .flat_map(|(name, t)| {
                (0..t.replicas.len() as u32).map(move |i| partition_group(name, i))
            })
            .filter(|g| {
                b.replicas
                    .read()
                    .get(g)
                    .is_none_or(|p| p.current_leader().is_none())
            })
            .collect();
        if registered && pending.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(BrokerError::Unavailable(format!(
                "not ready after {READY_WAIT:?}: registered = {registered}, partitions without a leader: {pending:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Proposes `command` on the metadata leader (this node or the one Raft names).
pub(super) async fn propose(b: &Broker, command: MetaCommand) -> Result<MetaResponse, BrokerError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let outcome = match b.meta.client_write(command.clone()).await {
            Ok(response) => return Ok(response.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward))) => {
                match forward.leader_node {
                    Some(node) => forward_proposal(b, &node.addr, &command).await,
                    None => Err(BrokerError::Unavailable(
                        "the metadata group has no leader".into(),
                    )),
                }
            }
            Err(e) => Err(BrokerError::Unavailable(e.to_string())),
        };
        match outcome {
            Ok(response) => return Ok(response),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, "metadata proposal failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn forward_proposal(
    b: &Broker,
    addr: &str,
    command: &MetaCommand,
) -> Result<MetaResponse, BrokerError> {
    let channel = b
        .raft
        .channels
        .get(addr)
        .map_err(BrokerError::Unavailable)?;
    let mut client = pb::raft_service_client::RaftServiceClient::new(channel);
    let json = serde_json::to_vec(command).map_err(|e| BrokerError::Unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(pb::MetaProposal {
        command_json: Bytes::from(json),
    });
    request.set_timeout(Duration::from_secs(5));
    let reply = client
        .propose_meta(request)
        .await
        .map_err(|s| BrokerError::Unavailable(format!("metadata leader at {addr}: {s}")))?;
    let refused = reply.into_inner().refused;
    Ok(if refused.is_empty() {
        MetaResponse::Ok
    } else {
        MetaResponse::Refused(refused)
    })
}

impl crate::raft::MetaProposer for Broker {
    fn propose(&self, command_json: Bytes) -> Handled<'_, String> {
        Box::pin(async move {
            let command: MetaCommand = serde_json::from_slice(&command_json)
                .map_err(|e| Status::invalid_argument(format!("bad metadata command: {e}")))?;
            match self.meta.client_write(command).await {
                Ok(response) => Ok(match response.data {
                    MetaResponse::Ok => String::new(),
                    MetaResponse::Refused(why) => why,
                }),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Err(
                    Status::failed_precondition("this node does not lead the metadata group"),
                ),
                Err(e) => Err(Status::unavailable(e.to_string())),
            }
        })
    }
}
