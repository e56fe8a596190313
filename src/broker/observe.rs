//! What the admin port reports about this node: state gauges refreshed for a metrics scrape,
//! and readiness.

use std::sync::Arc;

use openraft::ServerState;

use super::{Broker, BrokerError, Partition};
use crate::cluster::membership::{MemberStatus, Membership};
use crate::telemetry::{GroupLabels, PartitionLabels, StatusLabels, metrics};

/// Topic and partition of a group name (`topic/partition`).
fn topic_partition(group: &str) -> Option<(&str, u32)> {
    let (topic, index) = group.rsplit_once('/')?;
    Some((topic, index.parse().ok()?))
}

/// What the Raft gauges show of one group's openraft metrics.
struct RaftState {
    term: u64,
    last_log_index: Option<u64>,
    applied_index: Option<u64>,
    leads: bool,
}

impl RaftState {
    fn of<N: openraft::NodeId, M: openraft::Node>(m: &openraft::RaftMetrics<N, M>) -> Self {
        RaftState {
            term: m.current_term,
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.as_ref().map(|l| l.index),
            leads: m.state == ServerState::Leader,
        }
    }
}

/// Sets the term, log and applied index and leadership gauges of `group`.
fn raft_gauges(group: &GroupLabels, state: RaftState) {
    let m = metrics();
    let index = |i: Option<u64>| i.map_or(-1, |i| i as i64);
    m.raft_term.get_or_create(group).set(state.term as i64);
    m.raft_last_log_index
        .get_or_create(group)
        .set(index(state.last_log_index));
    m.raft_applied_index
        .get_or_create(group)
        .set(index(state.applied_index));
    m.raft_is_leader
        .get_or_create(group)
        .set(i64::from(state.leads));
}

impl Broker {
    /// This node's replicas.
    pub fn local_replicas(&self) -> Vec<Arc<Partition>> {
        self.replicas.read().values().cloned().collect()
    }

    /// Refills the state gauges (partition offsets and sizes, Raft indexes, snapshot lag,
    /// gossip members) before a scrape.
    pub async fn refresh_metrics(&self) -> Result<(), BrokerError> {
        let replicas = self.local_replicas();
        let logs: Vec<_> = replicas.iter().map(|p| p.log().clone()).collect();
        let sizes = tokio::task::spawn_blocking(move || {
            logs.iter()
                .map(|log| log.size_bytes().unwrap_or(0))
                .collect::<Vec<u64>>()
        })
        .await
        .map_err(|e| BrokerError::io(&self.topics_dir, std::io::Error::other(e)))?;
        let m = metrics();
        m.clear_state_gauges();
        for (p, size) in replicas.iter().zip(sizes) {
            let group = GroupLabels {
                group: p.group().to_string(),
            };
            if let Some((topic, partition)) = topic_partition(p.group()) {
                let labels = PartitionLabels {
                    topic: topic.to_string(),
                    partition,
                };
                m.partition_high_watermark
                    .get_or_create(&labels)
                    .set(p.high_watermark() as i64);
                m.partition_log_start_offset
                    .get_or_create(&labels)
                    .set(p.log().log_start_offset() as i64);
                m.partition_size_bytes
                    .get_or_create(&labels)
                    .set(size as i64);
            }
            let raft = p.raft().metrics().borrow().clone();
            raft_gauges(&group, RaftState::of(&raft));
            m.raft_commit_index
                .get_or_create(&group)
                .set(p.commit_index().map_or(-1, |i| i as i64));
            if let Some(status) = p.snapshot_status() {
                m.snapshot_lag_bytes
                    .get_or_create(&group)
                    .set(status.lag_bytes as i64);
                m.snapshot_failures
                    .get_or_create(&group)
                    .set(status.failures as i64);
            }
        }
        let meta = self.meta.metrics().borrow().clone();
        let group = GroupLabels {
            group: crate::raft::META_GROUP.to_string(),
        };
        raft_gauges(&group, RaftState::of(&meta));
        for status in [
            MemberStatus::Alive,
            MemberStatus::Leaving,
            MemberStatus::Left,
            MemberStatus::Failed,
        ] {
            m.gossip_members
                .get_or_create(&StatusLabels {
                    status: format!("{status:?}").to_lowercase(),
                })
                .set(0);
        }
        for member in self.gossip().members() {
            m.gossip_members
                .get_or_create(&StatusLabels {
                    status: format!("{:?}", member.status).to_lowercase(),
                })
                .inc();
        }
        Ok(())
    }

    /// Whether this node is ready for traffic: not stopping, the metadata group has a
    /// leader, and every local replica knows its leader and has applied everything it knows
    /// to be committed. `Err` says what is missing.
    pub fn readiness(&self) -> Result<(), String> {
        if *self.shutdown.borrow() {
            return Err("shutting down".into());
        }
        if self.meta.metrics().borrow().current_leader.is_none() {
            return Err("the metadata group has no leader".into());
        }
        for p in self.local_replicas() {
            let raft = p.raft().metrics().borrow().clone();
            if raft.current_leader.is_none() {
                return Err(format!("{} has no leader", p.group()));
            }
            let applied = raft.last_applied.map(|l| l.index);
            if let Some(committed) = p.commit_index()
                && applied.is_none_or(|a| a < committed)
            {
                return Err(format!(
                    "{} is catching up: applied {applied:?} of {committed} committed",
                    p.group()
                ));
            }
        }
        Ok(())
    }
}
