//! Node identity, stored on the data volume: a node id and a cluster id written on first start.
//! An empty data directory means a new node.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::BrokerError;

/// File holding the identity, in the data directory.
const IDENTITY_FILE: &str = "node.json";

/// Who this node is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// This node's id (never 0).
    pub node_id: u64,
    /// The cluster this node belongs to.
    pub cluster_id: String,
}

impl NodeIdentity {
    /// Reads `node.json` from `data_dir`, or creates it with fresh random ids.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, BrokerError> {
        let path = data_dir.join(IDENTITY_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                BrokerError::io(
                    &path,
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let identity = NodeIdentity {
                    node_id: fastrand::u64(1..u64::MAX >> 11),
                    cluster_id: format!("{:016x}", fastrand::u64(..)),
                };
                write_atomically(
                    &path,
                    &serde_json::to_vec_pretty(&identity).unwrap_or_default(),
                )?;
                Ok(identity)
            }
            Err(e) => Err(BrokerError::io(&path, e)),
        }
    }
}

impl NodeIdentity {
    /// Creates `node.json` in `data_dir` for node `node_id` of cluster `cluster_id` (a restore).
    pub fn create_with_id(
        data_dir: &Path,
        node_id: u64,
        cluster_id: &str,
    ) -> Result<Self, BrokerError> {
        let identity = NodeIdentity {
            node_id,
            cluster_id: cluster_id.to_string(),
        };
        write_atomically(
            &data_dir.join(IDENTITY_FILE),
            &serde_json::to_vec_pretty(&identity).unwrap_or_default(),
        )?;
        Ok(identity)
    }
}

/// Writes `bytes` to `path` atomically (see [`crate::log::write_atomically`]).
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), BrokerError> {
    crate::log::write_atomically(path, bytes).map_err(|e| BrokerError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_once_and_then_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = NodeIdentity::load_or_create(dir.path()).unwrap();
        assert_ne!(first.node_id, 0);
        let again = NodeIdentity::load_or_create(dir.path()).unwrap();
        assert_eq!(first, again);
    }
}
