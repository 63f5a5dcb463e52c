//! The broker tier on Raft: the room state machine replicated by openraft.
//!
//! ```text
//!   write(cmds) ─▶ (follower: forward to the leader) ─▶ propose on the leader ─▶ batcher
//!               ─▶ Raft (leader) ──AppendEntries──▶ RaftTransport (QUIC) ─▶ peers
//!                                  │ log: RedbLogStore (fsync) | MemLogStore
//!                                  ▼ committed
//!                     StateMachine: Batch{now_ms, cmds} ─▶ plaza_rooms::Rooms ─▶ AppliedEvents
//!                                  │ snapshots: postcard(RoomsState) + meta ─▶ data dir
//!   reads (position, history, presence) ◀─ applied state of this node
//! ```
//!
//! - [`types`]: the openraft type config, [`Batch`] / [`Request`] entries, [`CommandError`].
//! - [`node`]: [`RaftNode`] — start, initialize, status, shutdown; `write.rs`: writes
//!   (proposed here or forwarded to the leader), read barriers and the peer RPCs behind them;
//!   `read.rs`: reads of the applied state.
//! - `health`: whether this node can commit now (round trips to the leader; the leader's
//!   check-quorum fence); `phases`: failover phase timings; `handover`: graceful leadership
//!   hand-over before a leader stops.
//! - `batcher`: group commit of concurrent proposals into one entry.
//! - [`state_machine`]: [`StateMachine`] — apply, snapshot build/install/restore, events.
//! - [`log_redb`] / [`log_mem`]: the durable and the in-memory log stores.
//! - [`transport`]: the network seam ([`RaftTransport`], [`RaftRpc`], [`serve_rpc`]);
//!   [`quic`]: [`QuicTransport`], the seam over QUIC (`plaza-raft/1`), whose receiving side
//!   is [`crate::peers`]; [`in_process`]: the test transport with kill/partition.
//!
//! Edges reach a node through [`crate::serve_edges`], which writes with [`RaftNode::write`]
//! and routes [`AppliedEvents`] to them; the process around a node is [`crate::server`].

mod batcher;
mod errors;
mod handover;
mod health;
pub mod in_process;
pub mod log_mem;
pub mod log_redb;
pub mod node;
mod phases;
pub mod quic;
mod read;
mod snapshot;
pub mod state_machine;
pub mod transport;
pub mod types;
mod write;

pub use batcher::Committed;
pub use in_process::{InProcessNetwork, InProcessTransport};
pub use log_mem::MemLogStore;
pub use log_redb::RedbLogStore;
pub use node::{
    ProposeError, RaftNode, RaftNodeConfig, RaftStatus, ReadError, StartError, Storage,
};
pub use quic::QuicTransport;
pub use state_machine::{AppliedEvents, StateMachine};
pub use transport::{RaftRpc, RaftRpcReply, RaftTransport, TransportError, serve_rpc};
pub use types::{
    Batch, BrokerNode, CommandError, LogId, NodeId, Raft, Request, Response, TypeConfig,
};
