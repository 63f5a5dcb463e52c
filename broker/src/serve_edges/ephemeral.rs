//! Ephemeral publications on the broker tier: from an edge to this broker's subscribed edges at
//! once, and to every other broker's, without a Raft entry.
//!
//! ```text
//!   edge ─Call::PublishEphemeral─▶ read loop (inline, in frame order) ─▶ Router::route_ephemeral
//!                                                                     └▶ one queue per peer broker
//!   peer queue ─▶ sender task: drain a batch ─RaftRpc::Ephemeral(batch)─▶ peer ─▶ its Router
//! ```
//!
//! Order: an edge's frames are read in order and handled inline (not in a spawned call task),
//! local delivery happens under the router's lock, and each peer has one queue drained by one
//! task that sends a batch and waits for its answer before the next. So one publisher's
//! ephemeral publications reach every edge in the order it sent them.
//!
//! At most once, bounded: a peer queue that is full drops (and counts) what does not fit, a
//! batch a peer does not answer within [`RELAY_TIMEOUT`] is dropped, and nothing is retried.
//! Durable traffic never waits for any of it: the Raft path shares no queue with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use plaza_proto::cluster::Ephemeral;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Router;
use crate::metrics as m;
use crate::raft::{BrokerNode, NodeId, RaftNode, RaftRpc, RaftRpcReply};

/// Ephemeral publications queued for one peer broker before more are dropped.
const PEER_QUEUE: usize = 8192;
/// Most ephemeral publications in one relay RPC.
const MAX_BATCH: usize = 512;
/// How long a peer has to take a batch before it is dropped.
const RELAY_TIMEOUT: Duration = Duration::from_secs(1);

/// The broker's ephemeral relay. Cheap to clone.
#[derive(Clone)]
pub(super) struct Relay {
    inner: Arc<RelayInner>,
}

struct RelayInner {
    node: RaftNode,
    /// One sender per peer, with the address its task dials; replaced when the task ended or
    /// the peer moved. Locked briefly, never across `.await`.
    peers: Mutex<HashMap<NodeId, (BrokerNode, mpsc::Sender<Ephemeral>)>>,
    /// Ends the sender tasks.
    cancel: CancellationToken,
}

impl Relay {
    /// A relay sending through `node`'s peer connections; its tasks end with `cancel`.
    pub(super) fn new(node: RaftNode, cancel: CancellationToken) -> Self {
        Self {
            inner: Arc::new(RelayInner {
                node,
                peers: Mutex::new(HashMap::new()),
                cancel,
            }),
        }
    }

    /// Delivers `ephemeral` to this broker's subscribed edges now and queues it for every
    /// other member.
    pub(super) fn publish(&self, router: &Router, ephemeral: Ephemeral) {
        router.route_ephemeral(std::slice::from_ref(&ephemeral));
        metrics::counter!(m::EPHEMERAL_ROUTED, "source" => "edge").increment(1);
        let members = self.inner.node.peers();
        let mut peers = self
            .inner
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        peers.retain(|id, _| members.iter().any(|(member, _)| member == id));
        for (id, node) in members {
            let stale = peers
                .get(&id)
                .is_none_or(|(known, tx)| *known != node || tx.is_closed());
            if stale {
                let (tx, rx) = mpsc::channel(PEER_QUEUE);
                tokio::spawn(send_to_peer(self.clone(), id, node.clone(), rx));
                peers.insert(id, (node.clone(), tx));
            }
            let Some((_, tx)) = peers.get(&id) else {
                continue;
            };
            if tx.try_send(ephemeral.clone()).is_err() {
                metrics::counter!(m::EPHEMERAL_DROPPED, "reason" => "peer_queue").increment(1);
            }
        }
    }
}

/// Sends one peer's queue in batches, one at a time, until the relay stops or forgets the peer
/// (its sender is dropped).
async fn send_to_peer(
    relay: Relay,
    id: NodeId,
    node: BrokerNode,
    mut rx: mpsc::Receiver<Ephemeral>,
) {
    let cancel = relay.inner.cancel.clone();
    loop {
        let first = tokio::select! {
            () = cancel.cancelled() => return,
            first = rx.recv() => match first {
                Some(first) => first,
                None => return,
            },
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let count = batch.len() as u64;
        let sent = relay
            .inner
            .node
            .call_peer(id, &node, RaftRpc::Ephemeral(batch), RELAY_TIMEOUT);
        let failed = tokio::select! {
            () = cancel.cancelled() => return,
            reply = sent => match reply {
                Ok(RaftRpcReply::Delivered(_)) => None,
                Ok(other) => Some(format!("unexpected answer {other:?}")),
                Err(e) => Some(e.to_string()),
            },
        };
        if let Some(why) = failed {
            tracing::debug!(peer = id, why, dropped = count, "ephemeral relay failed");
            metrics::counter!(m::EPHEMERAL_DROPPED, "reason" => "peer_unreachable")
                .increment(count);
        }
    }
}
