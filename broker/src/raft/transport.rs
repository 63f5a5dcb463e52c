//! The network seam: how Raft RPCs leave a node ([`RaftTransport`]) and how they are served on
//! arrival ([`serve_rpc`]).
//!
//! ```text
//!   openraft ──RaftNetwork──▶ PeerClient ──RaftRpc──▶ RaftTransport::call ──▶ (wire) ──▶
//!        serve_rpc(target Raft, RaftRpc) ──RaftRpcReply──▶ back the same way
//! ```
//!
//! A transport only moves one [`RaftRpc`] to a node and brings its [`RaftRpcReply`] back; both
//! are serde types, so the QUIC transport is "postcard frame out, postcard frame back" over one
//! bidirectional stream, and the in-process one ([`super::in_process`]) calls [`serve_rpc`] on
//! the target directly. Snapshots travel as openraft's chunked `InstallSnapshot` RPCs, so no
//! transport needs a streaming API.

use std::future::Future;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, RPCTypes};
use serde::{Deserialize, Serialize};

use plaza_proto::cluster::{Ephemeral, LinkEvent};

use super::batcher::Committed;
use super::errors::ProposeError;
use super::types::{BrokerNode, NodeId, Raft, Request, TypeConfig};
use plaza_rooms::Command;

/// One Raft RPC on its way to a peer.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRpc {
    /// Log replication and heartbeats.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Elections.
    Vote(VoteRequest<NodeId>),
    /// One chunk of a snapshot.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// Room commands a follower forwards to the leader (answered with
    /// [`RaftRpcReply::Forwarded`] once committed and applied on the leader).
    Forward(Vec<Command>),
    /// A follower asks the leader for a read index: the leader confirms it still leads and
    /// answers the index a linearizable read must wait for ([`RaftRpcReply::ReadIndex`]).
    ReadIndex,
    /// Deliver an event to every edge attached to the receiving broker (answered with
    /// [`RaftRpcReply::Delivered`]).
    Broadcast(LinkEvent),
    /// A follower's round trip to its leader ([`RaftRpcReply::Pong`]): proof that a write it
    /// forwards can reach the leader (see `health.rs`).
    Ping,
    /// A leader that is stopping asks its most up-to-date follower to campaign now
    /// ([`RaftRpcReply::Electing`]; see `handover.rs`).
    Elect,
    /// Ephemeral publications, in their order, for the receiving broker's edges subscribed to
    /// each room (answered with [`RaftRpcReply::Delivered`]). Never in the log.
    Ephemeral(Vec<Ephemeral>),
}

/// The peer's answer to a [`RaftRpc`] (the variant matches the request's).
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRpcReply {
    /// Answer to [`RaftRpc::AppendEntries`].
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// Answer to [`RaftRpc::Vote`].
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// Answer to [`RaftRpc::InstallSnapshot`].
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    /// Answer to [`RaftRpc::Forward`].
    Forwarded(Result<Committed, ProposeError>),
    /// Answer to [`RaftRpc::ReadIndex`].
    ReadIndex(Result<u64, ProposeError>),
    /// Answer to [`RaftRpc::Broadcast`]: how many edges it was queued to.
    Delivered(usize),
    /// The receiver does not serve this kind of RPC (e.g. an in-process test network asked to
    /// forward).
    Refused(String),
    /// Answer to [`RaftRpc::Ping`]: whether the receiver leads.
    Pong {
        /// The receiver believes it is the leader.
        leading: bool,
    },
    /// Answer to [`RaftRpc::Elect`]: the election was started (or why not).
    Electing(Result<(), String>),
}

/// Why a call did not get a reply. The variant decides openraft's reaction.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// The peer cannot be reached at all (down, not connected, refused): openraft backs off
    /// before retrying that peer.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The call was sent but the exchange failed (stream reset, bad frame): retried at once.
    #[error("network: {0}")]
    Network(String),
    /// The connection was lost while the call was under way: the peer may or may not have
    /// received and acted on it. openraft treats it like [`Self::Unreachable`]; a forwarded
    /// write must not be retried blindly.
    #[error("connection lost during the call: {0}")]
    Lost(String),
    /// No reply within the RPC's deadline.
    #[error("timed out")]
    Timeout,
    /// The request does not fit in one frame; nothing was sent. For AppendEntries openraft is
    /// told to send fewer entries at once (a network error would be retried forever while
    /// heartbeats keep the leader in place: a cluster-wide write stall).
    #[error("too large: {0}")]
    TooLarge(String),
}

/// Most bytes of log entries one AppendEntries carries (estimated with
/// [`Command::size_hint`]; a single larger entry still goes alone). Must be sendable within
/// one heartbeat interval, openraft's deadline for the call.
pub const MAX_APPEND_BYTES: usize = 1024 * 1024;

/// How many of `entries`, from the first, fit in `max` bytes (at least one).
fn entries_fitting(entries: &[openraft::Entry<TypeConfig>], max: usize) -> usize {
    let mut total = 0;
    let fit = entries
        .iter()
        .take_while(|e| {
            total += entry_bytes(e);
            total <= max
        })
        .count();
    fit.max(1).min(entries.len())
}

fn entry_bytes(entry: &openraft::Entry<TypeConfig>) -> usize {
    const SMALL: usize = 128;
    match &entry.payload {
        openraft::EntryPayload::Normal(Request::Batch(batch)) => {
            SMALL + batch.commands.iter().map(Command::size_hint).sum::<usize>()
        }
        _ => SMALL,
    }
}

/// Moves Raft RPCs between brokers. Implementations: [`super::InProcessTransport`] (tests) and,
/// later, QUIC. `call` must honour `timeout` (or return earlier) and must not reorder calls
/// openraft awaits one after the other.
pub trait RaftTransport: Send + Sync + 'static {
    /// Sends `rpc` to node `target` (reachable at `node.addr`) and returns its reply.
    fn call(
        &self,
        target: NodeId,
        node: &BrokerNode,
        rpc: RaftRpc,
        timeout: Duration,
    ) -> impl Future<Output = Result<RaftRpcReply, TransportError>> + Send;
}

/// Serves one incoming Raft RPC on the local node: the receiving half of every transport.
/// The broker-level RPCs (`Forward`, `ReadIndex`, `Broadcast`) need more than the Raft handle
/// and are answered with [`RaftRpcReply::Refused`] here (`Ping` and `Elect` are answered); [`super::RaftNode::serve`] and the
/// broker's handler answer them.
pub async fn serve_rpc(raft: &Raft, rpc: RaftRpc) -> RaftRpcReply {
    match rpc {
        RaftRpc::AppendEntries(req) => RaftRpcReply::AppendEntries(raft.append_entries(req).await),
        RaftRpc::Vote(req) => RaftRpcReply::Vote(raft.vote(req).await),
        RaftRpc::InstallSnapshot(req) => {
            RaftRpcReply::InstallSnapshot(raft.install_snapshot(req).await)
        }
        // Health pings and hand-over requests only need the Raft handle too, so in-process
        // test networks answer them like the broker does.
        RaftRpc::Ping => RaftRpcReply::Pong {
            leading: {
                let m = raft.metrics();
                let m = m.borrow();
                m.current_leader == Some(m.id)
            },
        },
        RaftRpc::Elect => {
            RaftRpcReply::Electing(raft.trigger().elect().await.map_err(|e| e.to_string()))
        }
        RaftRpc::Forward(_)
        | RaftRpc::ReadIndex
        | RaftRpc::Broadcast(_)
        | RaftRpc::Ephemeral(_) => RaftRpcReply::Refused("this node only serves Raft RPCs".into()),
    }
}

/// The [`RaftNetworkFactory`] over a transport: one [`PeerClient`] per target.
pub(crate) struct Network<T> {
    pub id: NodeId,
    pub transport: std::sync::Arc<T>,
}

impl<T: RaftTransport> RaftNetworkFactory<TypeConfig> for Network<T> {
    type Network = PeerClient<T>;

    async fn new_client(&mut self, target: NodeId, node: &BrokerNode) -> PeerClient<T> {
        PeerClient {
            id: self.id,
            target,
            node: node.clone(),
            transport: std::sync::Arc::clone(&self.transport),
        }
    }
}

/// openraft's view of one peer.
pub(crate) struct PeerClient<T> {
    id: NodeId,
    target: NodeId,
    node: BrokerNode,
    transport: std::sync::Arc<T>,
}

type RpcResult<R, E = openraft::error::Infallible> =
    Result<R, RPCError<NodeId, BrokerNode, RaftError<NodeId, E>>>;

// The error type is openraft's (`RaftNetwork` returns it as is); boxing it here would only
// move the allocation.
#[allow(clippy::result_large_err)]
impl<T: RaftTransport> PeerClient<T> {
    async fn call<E: std::error::Error>(
        &self,
        action: RPCTypes,
        rpc: RaftRpc,
        option: &RPCOption,
    ) -> Result<RaftRpcReply, RPCError<NodeId, BrokerNode, RaftError<NodeId, E>>> {
        let timeout = option.hard_ttl();
        self.transport
            .call(self.target, &self.node, rpc, timeout)
            .await
            .map_err(|e| self.transport_error(action, e, option))
    }

    fn transport_error<E: std::error::Error>(
        &self,
        action: RPCTypes,
        e: TransportError,
        option: &RPCOption,
    ) -> RPCError<NodeId, BrokerNode, RaftError<NodeId, E>> {
        let timeout = option.hard_ttl();
        match e {
            TransportError::Unreachable(m) | TransportError::Lost(m) => {
                RPCError::Unreachable(Unreachable::new(&AnyError::error(m)))
            }
            TransportError::Network(m) | TransportError::TooLarge(m) => {
                RPCError::Network(NetworkError::new(&AnyError::error(m)))
            }
            TransportError::Timeout => RPCError::Timeout(Timeout {
                action,
                id: self.id,
                target: self.target,
                timeout,
            }),
        }
    }

    fn remote<R, E: std::error::Error>(
        &self,
        r: Result<R, RaftError<NodeId, E>>,
    ) -> RpcResult<R, E> {
        r.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

#[allow(clippy::result_large_err)]
fn mismatched<E: std::error::Error>() -> RPCError<NodeId, BrokerNode, E> {
    RPCError::Network(NetworkError::new(&AnyError::error(
        "reply does not match the request",
    )))
}

impl<T: RaftTransport> RaftNetwork<TypeConfig> for PeerClient<T> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let entries = rpc.entries.len() as u64;
        // openraft gives an AppendEntries one heartbeat interval: several large entries at
        // once could never make it in time and would be retried forever. Send at most
        // MAX_APPEND_BYTES worth of entries (always at least one) and let openraft send the
        // rest in the next round.
        let fitting = entries_fitting(&rpc.entries, MAX_APPEND_BYTES);
        if fitting < rpc.entries.len() {
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(fitting as u64),
            ));
        }
        let reply = self
            .transport
            .call(
                self.target,
                &self.node,
                RaftRpc::AppendEntries(rpc),
                option.hard_ttl(),
            )
            .await;
        let reply = match reply {
            // Half as many entries next time (openraft retries at once with the hint); one
            // entry is never too large, the batcher keeps entries far below a frame.
            Err(TransportError::TooLarge(why)) => {
                tracing::warn!(
                    target_node = self.target,
                    entries,
                    why,
                    "AppendEntries too large; splitting"
                );
                return Err(RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint((entries / 2).max(1)),
                ));
            }
            other => {
                other.map_err(|e| self.transport_error(RPCTypes::AppendEntries, e, &option))?
            }
        };
        match reply {
            RaftRpcReply::AppendEntries(r) => self.remote(r),
            _ => Err(mismatched()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        match self
            .call(
                RPCTypes::InstallSnapshot,
                RaftRpc::InstallSnapshot(rpc),
                &option,
            )
            .await?
        {
            RaftRpcReply::InstallSnapshot(r) => self.remote(r),
            _ => Err(mismatched()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        match self
            .call(RPCTypes::Vote, RaftRpc::Vote(rpc), &option)
            .await?
        {
            RaftRpcReply::Vote(r) => self.remote(r),
            _ => Err(mismatched()),
        }
    }
}
