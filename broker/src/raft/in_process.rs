//! An in-process [`RaftTransport`] for tests: a registry of nodes by id, where a call runs
//! [`serve_rpc`] on the target's `Raft` handle directly.
//!
//! Every request and reply is still encoded and decoded with postcard, so the tests exercise
//! the exact wire types the QUIC transport will send. Failures are simulated by removing a node
//! from the registry (killed) or isolating it (both directions unreachable, as in a partition).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::transport::{RaftRpc, RaftRpcReply, RaftTransport, TransportError, serve_rpc};
use super::types::{BrokerNode, NodeId, Raft};

/// The shared registry: one per simulated cluster. Cheap to clone.
#[derive(Clone, Default)]
pub struct InProcessNetwork {
    /// Locked only to look a node up; never across `.await`.
    inner: Arc<Mutex<Registry>>,
}

#[derive(Default)]
struct Registry {
    nodes: HashMap<NodeId, Raft>,
    isolated: HashSet<NodeId>,
}

impl InProcessNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// The transport node `id` sends with.
    pub fn transport(&self, id: NodeId) -> InProcessTransport {
        InProcessTransport {
            from: id,
            network: self.clone(),
        }
    }

    /// Makes node `id` reachable (called by `RaftNode::start`).
    pub fn register(&self, id: NodeId, raft: Raft) {
        self.lock().nodes.insert(id, raft);
    }

    /// Removes node `id`, as if its process died: calls to it fail as unreachable.
    pub fn unregister(&self, id: NodeId) {
        self.lock().nodes.remove(&id);
    }

    /// Cuts node `id` off from every other node, both ways, until [`Self::heal`].
    pub fn isolate(&self, id: NodeId) {
        self.lock().isolated.insert(id);
    }

    /// Undoes [`Self::isolate`].
    pub fn heal(&self, id: NodeId) {
        self.lock().isolated.remove(&id);
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One node's sending side of an [`InProcessNetwork`].
#[derive(Clone)]
pub struct InProcessTransport {
    from: NodeId,
    network: InProcessNetwork,
}

fn wire<T: serde::Serialize + serde::de::DeserializeOwned>(value: &T) -> Result<T, TransportError> {
    let bytes = postcard::to_stdvec(value).map_err(|e| TransportError::Network(e.to_string()))?;
    postcard::from_bytes(&bytes).map_err(|e| TransportError::Network(e.to_string()))
}

impl RaftTransport for InProcessTransport {
    async fn call(
        &self,
        target: NodeId,
        _node: &BrokerNode,
        rpc: RaftRpc,
        timeout: Duration,
    ) -> Result<RaftRpcReply, TransportError> {
        let raft = {
            let registry = self.network.lock();
            if registry.isolated.contains(&self.from) || registry.isolated.contains(&target) {
                return Err(TransportError::Unreachable(format!(
                    "node {target} is partitioned from node {}",
                    self.from
                )));
            }
            registry
                .nodes
                .get(&target)
                .cloned()
                .ok_or_else(|| TransportError::Unreachable(format!("node {target} is down")))?
        };
        let rpc = wire(&rpc)?;
        let reply = tokio::time::timeout(timeout, serve_rpc(&raft, rpc))
            .await
            .map_err(|_| TransportError::Timeout)?;
        wire(&reply)
    }
}
