//! Frames between an edge and the broker tier: [`EdgeRequest`] up, [`BrokerEvent`] down.
//!
//! One connection per edge carries many concurrent calls, matched by `req` ids, plus the room
//! events for every room the edge has subscribed to. Frames are postcard-encoded
//! ([`crate::codec`]); the first frame each way is the version handshake
//! ([`EdgeRequest::Hello`] → [`BrokerEvent::Welcome`] or [`BrokerEvent::Incompatible`]).
//!
//! The result types here ([`PublishAck`], [`HistoryPage`], [`PresencePage`], [`PresenceStats`], [`RoomsPage`],
//! [`LinkEvent`]) are also what `plaza_backend::Backend` returns, so every backend speaks the same
//! values whether it runs in-process or across the network.
//!
//! New variants are only ever appended to these enums: postcard encodes a variant by its index,
//! so appending keeps every existing frame's bytes. Changing an existing variant's fields
//! changes its bytes and bumps [`PROTOCOL_VERSION`] (edges and brokers of different versions
//! refuse each other at the handshake, naming the version).

use serde::{Deserialize, Serialize};

use crate::events::{EventFilter, EventsPage, FeedPosition, WebhookClaim};
use crate::model::{
    ClientId, EdgeId, Member, Payload, Position, Publication, RoomName, Sender, UserId,
};
use crate::state::{StateAck, StateSnapshot, StateWrite};

/// The edge↔broker protocol version this build speaks (2: `Presence` is paged; 3: live-state
/// rooms — `Call::StateWrite`/`Call::StateRead` and the state errors, which a version-2 broker
/// could not decode, so mixed versions are refused at the handshake instead of failing calls).
pub const PROTOCOL_VERSION: u16 = 3;

/// Most members one `Presence` call returns, whatever `limit` asks: the cost of one call is
/// bounded by the page, not by the room.
pub const MAX_PRESENCE_PAGE: u32 = 10_000;

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
    /// List one page of a room's members, in client id order.
    Presence {
        /// The room.
        room: RoomName,
        /// Start after this client id (the previous page's `next`); `None` for the first page.
        after: Option<ClientId>,
        /// Most members to return (at most [`MAX_PRESENCE_PAGE`]).
        limit: u32,
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
    /// Read the lifecycle event feed (answered with [`CallOk::Events`]).
    Events {
        /// Only events after this position (from the oldest retained when `None`).
        since: Option<FeedPosition>,
        /// At most this many events.
        limit: u32,
        /// Which events.
        filter: EventFilter,
    },
    /// Claim (or renew) the one webhook sender's lease for the calling edge (answered with
    /// [`CallOk::WebhookClaim`]).
    ClaimWebhooks {
        /// Lease length.
        lease_ms: u64,
    },
    /// Record that `endpoint` has been delivered through feed sequence `through` (only the
    /// claim's holder may; answered with [`CallOk::Done`]).
    AckWebhooks {
        /// The endpoint's configured name.
        endpoint: String,
        /// The last sequence delivered or given up on.
        through: u64,
    },
    /// Deliver an ephemeral publication to the room's subscribed edges now, on every broker,
    /// without a Raft entry (answered with [`CallOk::Done`] once handed to this broker's
    /// edges and queued for the other brokers). At most once; never retried.
    PublishEphemeral(Ephemeral),
    /// Change a state room's map (answered with [`CallOk::StateWritten`]); a Raft entry like
    /// a publication.
    StateWrite {
        /// The room.
        room: RoomName,
        /// The change.
        write: StateWrite,
    },
    /// Read a state room's whole map (answered with [`CallOk::State`]), linearizably.
    StateRead {
        /// The room.
        room: RoomName,
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
    /// An ephemeral publication in a room the edge subscribed to (no offset, not stored).
    Ephemeral(Ephemeral),
}

impl From<LinkEvent> for BrokerEvent {
    fn from(event: LinkEvent) -> Self {
        match event {
            LinkEvent::Room(e) => Self::Room(e),
            LinkEvent::DisconnectUser { user, reason } => Self::DisconnectUser { user, reason },
            LinkEvent::Ephemeral(e) => Self::Ephemeral(e),
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
    Presence(PresencePage),
    /// `PresenceStats`.
    PresenceStats(PresenceStats),
    /// `History`.
    History(HistoryPage),
    /// `Subscribe`: the room's position when the subscription started; every later event
    /// follows.
    Subscribed(Position),
    /// `Rooms`.
    Rooms(RoomsPage),
    /// `Events`.
    Events(EventsPage),
    /// `ClaimWebhooks`.
    WebhookClaim(WebhookClaim),
    /// `StateWrite`.
    StateWritten(StateAck),
    /// `StateRead`.
    State(StateSnapshot),
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

/// One page of a room's members, in client id order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PresencePage {
    /// The members, sorted by client id.
    pub members: Vec<Member>,
    /// Pass as `after` to read the next page; `None` on the last page.
    pub next: Option<ClientId>,
}

impl PresencePage {
    /// The page of `members` (sorted by client id) after `after`, at most `limit` long
    /// (capped at [`MAX_PRESENCE_PAGE`]).
    pub fn of_sorted<'a>(
        members: impl IntoIterator<Item = &'a Member>,
        after: Option<&ClientId>,
        limit: u32,
    ) -> Self {
        let limit = limit.clamp(1, MAX_PRESENCE_PAGE) as usize;
        let mut page: Vec<Member> = members
            .into_iter()
            .filter(|m| after.is_none_or(|a| m.client > *a))
            .take(limit + 1)
            .cloned()
            .collect();
        let next = (page.len() > limit).then(|| {
            page.truncate(limit);
            page.last().map(|m| m.client.clone())
        });
        Self {
            members: page,
            next: next.flatten(),
        }
    }
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
    /// An ephemeral publication in a room the edge subscribed to: delivered at most once, in
    /// its publisher's order, with no offset and outside the room's event order.
    Ephemeral(Ephemeral),
}

/// An ephemeral publication: fanned out to whoever is subscribed now, never stored, never
/// ordered against the room's durable events (typing indicators, cursors, reactions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ephemeral {
    /// The room.
    pub room: RoomName,
    /// The JSON value.
    pub data: Payload,
    /// The publishing client, if any.
    pub from: Option<Sender>,
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
    /// A member changed its presence `info` (only in namespaces with join/leave events): the
    /// member as it is now.
    PresenceUpdate(Member),
    /// The room's members now, made by the edge's link itself (never sent by a broker) when it
    /// may have missed join/leave events: it re-attached to another broker (cluster) or its
    /// NATS connection was re-established. Replaces a member list built from join/leave; the
    /// join/leave events after it apply on top. The first page only (`next` says more follow).
    PresenceResync(PresencePage),
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
    /// This broker tier does not offer what the call asks for (e.g. the event feed on NATS).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A state write or read on a room whose namespace is not a state namespace.
    #[error("namespace {namespace:?} has no live-state rooms")]
    NotStateRoom {
        /// The namespace.
        namespace: String,
    },
    /// A compare-and-set found another version: `current` is the key's version now (0: the
    /// key does not exist).
    #[error("state key {key:?} is at version {current}, not {expected}")]
    StateConflict {
        /// The key.
        key: String,
        /// The version the write expected.
        expected: u64,
        /// The key's version now (0: absent).
        current: u64,
    },
    /// A state room limit was reached (keys per room, value size, TTL).
    #[error("state limit: {0}")]
    StateLimit(String),
}

impl BrokerError {
    /// Whether retrying the call later may succeed.
    pub fn temporary(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::LeaseExpired(_))
    }
}
