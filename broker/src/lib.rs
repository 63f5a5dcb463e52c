//! The broker tier: room state, the [`Backend`] seam, and its implementations.
//!
//! ```text
//!   edge ──EdgeLink calls──▶ Backend impl ──Command──▶ rooms::Rooms (I/O-free state machine)
//!   edge ◀──RoomEvent stream── Backend impl ◀──events── rooms::Rooms
//! ```
//!
//! - [`rooms`]: the room state machine: offsets and epochs, history, idempotency window,
//!   presence with per-user counts, edge leases. Commands in, events out, time passed in.
//! - [`backend`]: `trait Backend` / `trait EdgeLink` — the broker tier as an edge sees it, with
//!   its contract — plus [`backend::memory::MemoryBackend`] (the state machine in-process) and
//!   [`backend::conformance`], the suite every backend must pass.
//! - [`config`]: per-namespace options shared by edges and brokers.
//! - [`raft`]: the room state machine replicated with openraft (log store, snapshots,
//!   batching); [`quic`]: its QUIC transport with mutual TLS; [`server`]: the `plaza-broker`
//!   process around them. The edge's cluster backend comes next (issue 4).

pub mod backend;
pub mod config;
pub mod edges;
mod metrics;
pub mod process;
pub mod quic;
pub mod raft;
pub mod rooms;
pub mod server;

pub use backend::memory::MemoryBackend;
pub use backend::{Backend, EdgeLink};
pub use config::{NamespaceOptions, Namespaces, PresenceMode, RoomsConfig};
