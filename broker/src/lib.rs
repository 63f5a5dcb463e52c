//! `plaza-broker`: one node of the broker tier — the room state machine replicated with
//! openraft over QUIC, serving edges (`plaza-edge/1`) and its peers (`plaza-raft/1`) on one UDP
//! endpoint, plus its HTTP status and admin side.
//!
//! ```text
//!   edge ══plaza-edge/1══▶ serve_edges ─▶ RaftNode::write (forwarded to the leader) / reads
//!                              ▲                  │ committed ─▶ StateMachine ─▶ plaza_rooms::Rooms
//!                              └── router ◀── AppliedEvents (this node's applied state)
//!   peer ══plaza-raft/1══▶ peers::PeerHandler ─▶ RaftNode::serve · broadcasts ─▶ serve_edges
//!   raft::QuicTransport ══plaza-raft/1══▶ peers          server: process around all of it
//! ```
//!
//! - [`raft`]: [`raft::RaftNode`] — log stores, state machine, snapshots, batching, and the
//!   Raft transport seam with its QUIC implementation.
//! - [`serve_edges`]: the broker's side of the edge protocol (the edge's side is
//!   `plaza_backend::cluster`); its `router` sends applied events to attached edges.
//! - [`peers`]: the handler of peer RPCs.
//! - [`server`]: the `plaza-broker` process: config, endpoint, status/admin HTTP, shutdown.
//!
//! The room state machine is `plaza-rooms`; the shared QUIC pieces are `plaza-net`; the wire
//! frames and ALPN names are `plaza-proto`. This crate never links the NATS client.

mod metrics;
mod peers;
pub mod raft;
pub mod serve_edges;
pub mod server;
