//! The Raft type configuration and the values that travel through the log.
//!
//! A log entry carries a [`Request`]: normally a [`Batch`] of room commands stamped with the
//! leader's clock, so every node applies the same commands at the same `now` and reaches the
//! same state. Its response is one result per command, in order.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use plaza_rooms::{Applied, Command, RoomsError};

/// A broker's Raft node id (stable across restarts; e.g. the StatefulSet ordinal).
pub type NodeId = u64;

/// What the cluster knows about a member: where to reach it. Stored in the replicated
/// membership, so every node can tell a caller where the leader is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerNode {
    /// The broker's Raft/edge address (`host:port`), used by the transport.
    pub addr: String,
}

impl BrokerNode {
    /// A node reachable at `addr`.
    pub fn new(addr: impl Into<String>) -> Self {
        Self { addr: addr.into() }
    }
}

openraft::declare_raft_types!(
    /// The openraft type configuration of the broker tier.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = BrokerNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The handle of a running openraft node with our types.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log id with our node id type.
pub type LogId = openraft::LogId<NodeId>;

/// Room commands committed together as one log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// The proposing leader's wall clock in milliseconds since the Unix epoch. Followers apply
    /// with this value, never their own clock, so apply is deterministic; the state machine
    /// clamps it to the largest value seen, so a new leader whose clock is behind cannot undo
    /// expiries.
    pub now_ms: u64,
    /// Applied in order; each gets its own result.
    pub commands: Vec<Command>,
}

/// The application payload of a log entry. Variants are only ever appended (postcard encodes
/// the variant index, and old entries must stay readable).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Fixes the epoch of every room, once per cluster lifetime. Written by the first leader
    /// before its first batch; the first one applied wins and later ones are no-ops. The epoch
    /// is random rather than derived from config so that a wiped and re-bootstrapped cluster
    /// gets a new epoch and clients are told their positions are void.
    Genesis {
        /// The epoch (`Position::epoch`) of every room.
        epoch: String,
    },
    /// Room commands.
    Batch(Batch),
}

/// One result per command of a [`Batch`] (empty for other entries).
pub type Response = Vec<Result<Applied, CommandError>>;

/// A refused command as replicated in a batch's response: [`RoomsError`] is serializable
/// itself, so the answer travels unchanged.
pub type CommandError = RoomsError;
