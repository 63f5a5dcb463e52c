//! The broker's side of `plaza-raft/1`: what a peer broker may ask of this one — Raft RPCs
//! (vote, append entries, snapshots, forwarded writes and read indexes), answered by the local
//! [`RaftNode`], and event broadcasts, handed to this broker's attached edges.
//!
//! ```text
//!   peer ══QUIC plaza-raft/1══▶ RpcService<PeerHandler> ─┬─ Broadcast ─▶ EdgeService::broadcast
//!                                                        └─ other RPCs ─▶ RaftNode::serve
//! ```

use plaza_net::RpcHandler;

use crate::raft::{RaftNode, RaftRpc, RaftRpcReply};
use crate::serve_edges::EdgeService;

/// The broker's handler of `plaza-raft/1` RPCs: Raft traffic and forwarded writes go to the
/// node; broadcasts to this broker's edges.
#[derive(Clone)]
pub(crate) struct PeerHandler {
    node: RaftNode,
    edges: EdgeService,
}

impl PeerHandler {
    /// Serves `node` and `edges`.
    pub(crate) fn new(node: RaftNode, edges: EdgeService) -> Self {
        Self { node, edges }
    }
}

impl RpcHandler for PeerHandler {
    type Request = RaftRpc;
    type Reply = RaftRpcReply;

    async fn handle(&self, request: RaftRpc) -> RaftRpcReply {
        match request {
            RaftRpc::Broadcast(event) => RaftRpcReply::Delivered(self.edges.broadcast(&event)),
            other => self.node.serve(other).await,
        }
    }
}
