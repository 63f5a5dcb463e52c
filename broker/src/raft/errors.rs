//! What can go wrong when starting a node, proposing, or reading, each carrying what the
//! caller needs to act (e.g. where the leader is).

use std::time::Duration;

use super::types::{BrokerNode, NodeId};
use plaza_rooms::RoomsError;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The openraft settings are inconsistent.
    #[error("raft config: {0}")]
    Config(#[from] openraft::ConfigError),
    /// The data dir could not be opened or holds an unreadable snapshot.
    #[error("storage: {0}")]
    Storage(#[from] std::io::Error),
    /// openraft refused to start.
    #[error("raft: {0}")]
    Raft(String),
}

/// Why a proposal did not produce results. Serializable: a follower forwarding a write gets the
/// leader's answer unchanged.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader; `leader` (if known) is, reachable at `node`.
    #[error("not the leader (leader: {leader:?})")]
    NotLeader {
        /// The current leader's id.
        leader: Option<NodeId>,
        /// The current leader's address.
        node: Option<BrokerNode>,
    },
    /// The node is stopping or broken.
    #[error("raft unavailable: {0}")]
    Unavailable(String),
    /// No commit within the timeout; the commands may or may not have been applied.
    #[error("no commit within {0:?}")]
    Timeout(Duration),
    /// The leader was lost while the commands were on their way to it: they may or may not
    /// have been committed (retry with the same `idem` to be safe).
    #[error("outcome unknown: {0}")]
    Unknown(String),
}

impl ProposeError {
    /// Whether the commands certainly were not committed, so proposing them again (e.g. to a
    /// new leader) cannot apply them twice.
    pub fn not_committed(&self) -> bool {
        matches!(self, Self::NotLeader { .. })
    }
}

impl From<ProposeError> for plaza_proto::cluster::BrokerError {
    fn from(e: ProposeError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// Why a local read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The cluster has not committed its genesis entry yet (or this node has not applied it).
    #[error("the rooms are not initialized yet")]
    NotReady,
    /// The rooms refused the query.
    #[error(transparent)]
    Rooms(#[from] RoomsError),
}
