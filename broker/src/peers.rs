//! The broker's side of `plaza-raft/1`: what a peer broker may ask of this one — Raft RPCs
//! (vote, append entries, snapshots, forwarded writes and read indexes), answered by the local
//! [`RaftNode`], and event broadcasts, handed to this broker's attached edges.
//!
//! ```text
//!   peer ══QUIC plaza-raft/1══▶ RpcService<PeerHandler> ─┬─ Broadcast ─▶ EdgeService::broadcast
//!    (broker certificate,                                 ├─ Ephemeral ─▶ EdgeService::relayed
//!     node id bound to it)                                └─ other RPCs ─▶ RaftNode::serve
//! ```
//!
//! Only connections presenting a broker certificate get here (`crate::server` closes the
//! others), and each handler is bound to the node id of its connection's certificate: a vote,
//! append-entries or snapshot chunk whose vote names another node as candidate or leader is
//! refused, so one broker's key cannot campaign or lead as another node.

use plaza_net::RpcHandler;

use crate::metrics as m;
use crate::raft::{NodeId, RaftNode, RaftRpc, RaftRpcReply};
use crate::serve_edges::EdgeService;

/// The broker's handler of `plaza-raft/1` RPCs: Raft traffic and forwarded writes go to the
/// node; broadcasts to this broker's edges.
#[derive(Clone)]
pub(crate) struct PeerHandler {
    node: RaftNode,
    edges: EdgeService,
    /// The node id of the connection's certificate (`None` until bound with
    /// [`Self::for_peer`]; an unbound handler refuses every Raft RPC).
    peer: Option<NodeId>,
}

impl PeerHandler {
    /// Serves `node` and `edges`; bind it to a connection with [`Self::for_peer`].
    pub(crate) fn new(node: RaftNode, edges: EdgeService) -> Self {
        Self {
            node,
            edges,
            peer: None,
        }
    }

    /// This handler for a connection whose certificate is broker `peer`'s.
    pub(crate) fn for_peer(&self, peer: NodeId) -> Self {
        Self {
            peer: Some(peer),
            ..self.clone()
        }
    }

    /// The node a Raft RPC claims to come from: the candidate of a vote, the leader of an
    /// append-entries or a snapshot chunk.
    fn claimed_sender(request: &RaftRpc) -> Option<Option<NodeId>> {
        let vote = match request {
            RaftRpc::Vote(req) => &req.vote,
            RaftRpc::AppendEntries(req) => &req.vote,
            RaftRpc::InstallSnapshot(req) => &req.vote,
            RaftRpc::Forward(_)
            | RaftRpc::ReadIndex
            | RaftRpc::Broadcast(_)
            | RaftRpc::Ping
            | RaftRpc::Elect
            | RaftRpc::Ephemeral(_) => return None,
        };
        Some(vote.leader_id().voted_for())
    }
}

impl RpcHandler for PeerHandler {
    type Request = RaftRpc;
    type Reply = RaftRpcReply;

    async fn handle(&self, request: RaftRpc) -> RaftRpcReply {
        if let Some(claimed) = Self::claimed_sender(&request)
            && claimed != self.peer
        {
            let why = format!(
                "a Raft RPC as node {} from the certificate of node {}",
                claimed.map_or_else(|| "none".to_owned(), |id| id.to_string()),
                self.peer
                    .map_or_else(|| "none".to_owned(), |id| id.to_string()),
            );
            tracing::warn!(why, "refused a Raft RPC");
            metrics::counter!(m::IDENTITY_REFUSED, "alpn" => "raft", "reason" => "node_id")
                .increment(1);
            return RaftRpcReply::Refused(why);
        }
        match request {
            RaftRpc::Broadcast(event) => RaftRpcReply::Delivered(self.edges.broadcast(&event)),
            RaftRpc::Ephemeral(batch) => RaftRpcReply::Delivered(self.edges.relayed(&batch)),
            other => self.node.serve(other).await,
        }
    }
}
