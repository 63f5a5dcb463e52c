//! Plaza's wire types, for both hops of a publication's journey.
//!
//! ```text
//!  browser ──ClientFrame (JSON)──▶ edge ──EdgeRequest (postcard)──▶ broker tier
//!  browser ◀─ServerFrame (JSON)─── edge ◀──BrokerEvent (postcard)── broker tier
//! ```
//!
//! - [`client`]: protocol v1 between a client and an edge: [`ClientFrame`] (commands) and
//!   [`ServerFrame`] (replies and pushes), JSON text frames over WebSocket.
//! - [`cluster`]: frames between an edge and a broker: [`EdgeRequest`] and [`BrokerEvent`],
//!   postcard-encoded with a version handshake ([`codec`]).
//! - [`links`]: the ALPN names of the broker tier's QUIC protocols and the edge protocol's
//!   connection close codes.
//! - [`close`]: the one table of error codes (in replies) and close codes (on the socket).
//! - [`model`]: values that appear on both hops (rooms, members, publications, positions).
//! - [`events`]: lifecycle events and the replayable event feed.
//! - [`state`]: live-state rooms: map entries, snapshots, writes and change records.
//!
//! No type travels both ways: a client sends `ClientFrame` and receives `ServerFrame`; an edge
//! sends `EdgeRequest` and receives `BrokerEvent`.
#![deny(missing_docs)]

pub mod client;
pub mod close;
pub mod cluster;
pub mod codec;
pub mod events;
pub mod links;
pub mod model;
pub mod state;

pub use client::{ClientFrame, Command, Push, Reply, ReplyOk, ServerFrame};
pub use close::{CloseCode, ErrorBody, ErrorCode};
pub use cluster::{BrokerEvent, EdgeRequest};
pub use model::{
    ClientId, EdgeId, Member, Payload, Position, Publication, RoomName, RoomNameError, Sender,
    UserId,
};
