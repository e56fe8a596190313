//! Raft on top of the commit log: openraft's type configurations, its log storage implemented
//! on [`PartitionLog`](crate::log::PartitionLog), the state machines and the gRPC network.
//!
//! **One write path.** A Raft log entry is one RecordBatch v2 batch in the partition's segment
//! files, stored once:
//!
//! | Raft | batch field |
//! |---|---|
//! | term | `partition_leader_epoch` |
//! | log index | `producer_id` (the CRC is recomputed when the leader stamps it) |
//! | normal entry (partition) | the producer's records, unchanged |
//! | normal entry (metadata group) | one record whose value is the JSON command |
//! | blank entry | a control batch with one record, key type [`CONTROL_BLANK`] |
//! | membership entry | a control batch with one record, key type [`CONTROL_MEMBERSHIP`], JSON value |
//!
//! Consumers skip control batches. Offsets are assigned by each replica's log in entry order, so
//! every replica gives the same entry the same offsets. Applying an entry only advances the
//! partition's commit watermark (the high watermark consumers read below).

// openraft's `StorageError` (over 200 bytes) is what its traits return; our helpers return it too.
#![allow(clippy::result_large_err)]

pub mod codec;
pub mod heartbeat;
pub mod log_store;
pub mod network;
pub mod state_machine;
#[cfg(test)]
mod test_peer;

use bytes::Bytes;

pub use codec::{CONTROL_BLANK, CONTROL_MEMBERSHIP, StoredPayload};
pub use log_store::{Located, LogShared, LogStore, RaftLogError};
pub use network::{
    Channels, META_GROUP, MetaProposer, PeerNetwork, RaftGroups, RaftRpcService, partition_group,
};
pub use state_machine::{PartitionSnapshot, PartitionStateMachine, StoreLink};

/// Node ids are random 64-bit numbers chosen on first start (see `broker::NodeIdentity`).
pub type NodeId = u64;
/// What Raft knows about a node: the address of its gRPC server (client API and Raft, one port).
pub type Node = openraft::BasicNode;

/// The payload of a normal partition entry: one whole RecordBatch v2 batch.
#[derive(Debug, Clone)]
pub struct RecordData(pub Bytes);

/// Where an applied partition entry landed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Appended {
    /// Offset of its first record.
    pub base_offset: u64,
    /// Offset after its last record.
    pub next_offset: u64,
}

openraft::declare_raft_types!(
    /// Type configuration of a partition's Raft group.
    pub PartitionRaft:
        D = RecordData,
        R = Appended,
        SnapshotData = PartitionSnapshot,
);

/// A partition's Raft handle.
pub type PartitionRaftHandle = openraft::Raft<PartitionRaft>;
/// A Raft log id (term, index).
pub type LogId = openraft::LogId<NodeId>;
/// A Raft vote.
pub type Vote = openraft::Vote<NodeId>;
/// A Raft membership (voter sets and nodes).
pub type Membership = openraft::Membership<NodeId, Node>;
/// A membership with the log id it was stored at.
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;

/// Builds a log id from a term and an index.
pub fn log_id(term: u64, index: u64) -> LogId {
    openraft::LogId::new(openraft::CommittedLeaderId::new(term, 0), index)
}

/// Timing of Raft groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftTiming {
    /// How often a leader sends heartbeats to each follower.
    pub heartbeat_ms: u64,
    /// A follower that hears nothing for a random time in `[min, max)` starts an election.
    pub election_timeout_min_ms: u64,
    /// See `election_timeout_min_ms`.
    pub election_timeout_max_ms: u64,
    /// Entries kept (logically) behind a snapshot: a follower further behind gets a snapshot.
    pub snapshot_keep_entries: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat_ms: 250,
            election_timeout_min_ms: 800,
            election_timeout_max_ms: 1200,
            snapshot_keep_entries: 1000,
        }
    }
}

impl RaftTiming {
    /// Checks the timing (heartbeats well inside the election timeout).
    pub fn validate(&self) -> Result<(), String> {
        self.config("check").map(|_| ())
    }

    /// The openraft configuration for a group called `name`.
    pub fn config(&self, name: &str) -> Result<std::sync::Arc<openraft::Config>, String> {
        let config = openraft::Config {
            cluster_name: name.to_string(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            // Snapshots are taken explicitly (retention, the snapshot store), never by count.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_payload_entries: 64,
            max_in_snapshot_log_to_keep: self.snapshot_keep_entries,
            // Installing a snapshot downloads its segments from the store: allow minutes.
            install_snapshot_timeout: 600_000,
            ..Default::default()
        };
        config
            .validate()
            .map(std::sync::Arc::new)
            .map_err(|e| e.to_string())
    }
}
