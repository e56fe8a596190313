//! The cluster: the metadata group (nodes, topics, replica assignments) and its controller,
//! gossip membership, and replica placement.

pub mod discovery;
pub mod membership;
pub mod metadata;

pub use metadata::{
    ClusterMetadata, MetaCommand, MetaRaft, MetaRaftHandle, MetaResponse, MetaStateMachine,
    NodeInfo, TopicMeta, place_replicas,
};
