//! Frames between an edge and the broker tier: [`EdgeRequest`] up, [`BrokerEvent`] down.
//!
//! One connection per edge carries many concurrent calls, matched by `req` ids, plus the room
//! events for every room the edge has subscribed to. Frames are postcard-encoded
//! ([`crate::codec`]); the first frame each way is the version handshake
//! ([`EdgeRequest::Hello`] → [`BrokerEvent::Welcome`] or [`BrokerEvent::Incompatible`]).
//!
//! The result types here ([`PublishAck`], [`HistoryPage`], [`PresenceStats`], [`RoomsPage`],
//! [`LinkEvent`]) are also what `plaza_backend::Backend` returns, so every backend speaks the same
//! values whether it runs in-process or across the network.
//!
//! New variants are only ever appended to these enums: postcard encodes a variant by its index,
//! so appending keeps every existing frame's bytes.

use serde::{Deserialize, Serialize};

use crate::model::{
    ClientId, EdgeId, Member, Payload, Position, Publication, RoomName, Sender, UserId,
};

/// The edge↔broker protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// The broker's answer to an edge's [`EdgeRequest::Hello`] carrying `version`: the same
/// version is welcome; any other is refused with the version the broker speaks, so the edge
/// can say exactly what to upgrade.
pub fn answer_hello(version: u16) -> BrokerEvent {
    if version == PROTOCOL_VERSION {
        BrokerEvent::Welcome { version }
    } else {
        BrokerEvent::Incompatible {
            supported: PROTOCOL_VERSION,
        }
    }
}

/// What an edge sends to a broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EdgeRequest {
    /// First frame: who the edge is and which protocol it speaks.
    Hello {
        /// [`PROTOCOL_VERSION`] of the edge.
        version: u16,
        /// The edge's id.
        edge: EdgeId,
        /// How long the broker tier keeps the edge's members after its last sign of life.
        lease_ms: u64,
    },
    /// A call, answered by [`BrokerEvent::Result`] with the same `req`.
    Call {
        /// Chosen by the edge, unique among its calls in flight.
        req: u64,
        /// What to do.
        call: Call,
    },
    /// Renews the edge's lease.
    KeepAlive,
    /// The edge is shutting down cleanly: remove its members now instead of at lease expiry.
    Detach,
}

/// One operation on the broker tier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Call {
    /// Append a publication to a room's log.
    Publish {
        /// The room.
        room: RoomName,
        /// The JSON value.
        data: Payload,
        /// The publishing client, if any.
        from: Option<Sender>,
        /// Idempotency key.
        idem: Option<String>,
    },
    /// Add a member to a room's presence.
    Join {
        /// The room.
        room: RoomName,
        /// The member (its edge is the caller).
        member: Member,
    },
    /// Remove a member from a room's presence.
    Leave {
        /// The room.
        room: RoomName,
        /// The member's connection.
        client: ClientId,
    },
    /// List a room's members.
    Presence {
        /// The room.
        room: RoomName,
    },
    /// Count a room's members.
    PresenceStats {
        /// The room.
        room: RoomName,
    },
    /// Read a room's log.
    History {
        /// The room.
        room: RoomName,
        /// Only after this position.
        since: Option<Position>,
        /// At most this many.
        limit: Option<u32>,
    },
    /// Start receiving the room's events.
    Subscribe {
        /// The room.
        room: RoomName,
    },
    /// Stop receiving the room's events.
    Unsubscribe {
        /// The room.
        room: RoomName,
    },
    /// Close every connection of `user` on every attached edge (answered with
    /// [`CallOk::Done`]; each edge, the caller included, gets [`BrokerEvent::DisconnectUser`]).
    DisconnectUser {
        /// The user.
        user: UserId,
        /// Why, shown to the disconnected clients.
        reason: String,
    },
    /// List active rooms by name (answered with [`CallOk::Rooms`]).
    Rooms {
        /// Only rooms whose name sorts after this one (the previous page's
        /// [`RoomsPage::next`]).
        after: Option<RoomName>,
        /// At most this many.
        limit: u32,
    },
}

/// What a broker sends to an edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BrokerEvent {
    /// Handshake accepted.
    Welcome {
        /// The version both sides will speak.
        version: u16,
    },
    /// Handshake refused: the broker does not speak the edge's version.
    Incompatible {
        /// The version the broker speaks.
        supported: u16,
    },
    /// The answer to [`EdgeRequest::Call`] with the same `req`.
    Result {
        /// The call's id.
        req: u64,
        /// The outcome.
        result: Result<CallOk, BrokerError>,
    },
    /// Something happened in a room the edge subscribed to.
    Room(RoomEvent),
    /// Close every connection of `user` on this edge (sent to every attached edge).
    DisconnectUser {
        /// The user.
        user: UserId,
        /// Why, shown to the disconnected clients.
        reason: String,
    },
}

impl From<LinkEvent> for BrokerEvent {
    fn from(event: LinkEvent) -> Self {
        match event {
            LinkEvent::Room(e) => Self::Room(e),
            LinkEvent::DisconnectUser { user, reason } => Self::DisconnectUser { user, reason },
        }
    }
}

/// A successful call's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CallOk {
    /// `Publish`.
    Published(PublishAck),
    /// `Join`, `Leave`, `Unsubscribe`.
    Done,
    /// `Presence`.
    Presence(Vec<Member>),
    /// `PresenceStats`.
    PresenceStats(PresenceStats),
    /// `History`.
    History(HistoryPage),
    /// `Subscribe`: the room's position when the subscription started; every later event
    /// follows.
    Subscribed(Position),
    /// `Rooms`.
    Rooms(RoomsPage),
}

/// A durable publication's place in its room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishAck {
    /// Where it is: epoch and offset.
    pub position: Position,
    /// True when an earlier publication with the same `idem` was found and this one was not
    /// stored again; `position` is then the original's.
    pub duplicate: bool,
}

/// A slice of a room's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// The room's current position (latest offset).
    pub position: Position,
    /// Publications in offset order.
    pub publications: Vec<Publication>,
    /// With `since`: whether every publication after `since` is still held (same epoch and not
    /// yet pruned by size or age). When false, `publications` is empty. Without `since`: true.
    pub complete: bool,
}

/// Member counts of a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PresenceStats {
    /// Member connections.
    pub clients: u64,
    /// Distinct users among them.
    pub users: u64,
}

/// One page of the active rooms, in name order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RoomsPage {
    /// The rooms, sorted by name.
    pub rooms: Vec<RoomInfo>,
    /// Pass as `after` to read the next page; `None` on the last page.
    pub next: Option<RoomName>,
}

/// An active room (one with members or history) as listed by `Rooms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    /// The room.
    pub room: RoomName,
    /// Member connections (0 where presence is off).
    pub clients: u64,
    /// Distinct users among them.
    pub users: u64,
    /// The room's latest offset (in the tier's current epoch).
    pub offset: u64,
}

/// What arrives on an edge's event stream: room events of the rooms it subscribed to, and
/// requests addressed to every edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LinkEvent {
    /// Something happened in a room the edge subscribed to.
    Room(RoomEvent),
    /// Close every connection of `user` on this edge (server API `disconnect`).
    DisconnectUser {
        /// The user.
        user: UserId,
        /// Why, shown to the disconnected clients.
        reason: String,
    },
}

/// One event in a room, in the room's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomEvent {
    /// The room.
    pub room: RoomName,
    /// The room's epoch when the event happened.
    pub epoch: String,
    /// What happened.
    pub kind: RoomEventKind,
}

/// What happened in a room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RoomEventKind {
    /// A new publication.
    Publication(Publication),
    /// A member joined (only in namespaces with join/leave events).
    Join(Member),
    /// A member left.
    Leave(Member),
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum BrokerError {
    /// The broker tier can't serve the call now (no quorum, shutting down, timed out); retry.
    #[error("broker tier unavailable: {0}")]
    Unavailable(String),
    /// The namespace does not track presence in the requested form.
    #[error("presence is not available in namespace {namespace:?}")]
    PresenceDisabled {
        /// The namespace.
        namespace: String,
    },
    /// The edge's lease expired (its members were removed); it must attach again.
    #[error("lease of edge {0} expired")]
    LeaseExpired(EdgeId),
    /// The call is not valid (e.g. oversize idempotency key).
    #[error("invalid call: {0}")]
    Invalid(String),
}

impl BrokerError {
    /// Whether retrying the call later may succeed.
    pub fn temporary(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::LeaseExpired(_))
    }
}
