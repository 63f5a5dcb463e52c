//! `plaza-backend`: `trait Backend`, the broker tier as an edge sees it, and its three
//! implementations.
//!
//! ```text
//!   plaza-edge (node.rs) ──EdgeLink calls──▶ memory::MemoryBackend ─▶ plaza_rooms::Rooms
//!                                          ├▶ nats::NatsBackend ─▶ JetStream streams + KV
//!                                          └▶ cluster::ClusterBackend ═QUIC plaza-edge/1═▶ brokers
//!   plaza-edge ◀──LinkEvents (room events, DisconnectUser)── every implementation
//! ```
//!
//! - [`memory`]: the room state machine in-process (`--dev`, tests, single-node).
//! - [`nats`]: an existing NATS JetStream cluster as the broker tier.
//! - [`cluster`]: the edge's half of `plaza-edge/1`, a client of a `plaza-broker` cluster.
//! - [`conformance`]: the suite every implementation passes (`conformance::run`).
//!
//! An edge calls [`Backend::attach`] once and gets an [`EdgeLink`] (its calls) and a stream of
//! [`LinkEvent`]s: every event of every room it subscribed to through that link
//! ([`LinkEvent::Room`]), plus requests the broker tier addresses to every edge
//! ([`LinkEvent::DisconnectUser`]). The contract
//! below is what every implementation — in-process memory, the Raft cluster, NATS — must keep,
//! and what [`conformance::run`] checks.
//!
//! # Contract
//!
//! - **Order.** Within a room, publications get strictly increasing offsets within an epoch
//!   (offsets need not be contiguous). A link receives a subscribed room's events in that order,
//!   with join/leave events in their place between publications.
//! - **Once per edge.** A link receives each event of a subscribed room exactly once, however
//!   many clients behind the edge want it: fan-out to clients is the edge's job.
//! - **Durable ack.** `publish` returns only once the publication is as durable as the
//!   implementation promises (memory: in the process; Raft: committed by a majority; NATS:
//!   JetStream ack), and after it has been sent to every link subscribed to the room.
//! - **No gap between history and live.** Every event of a room that happens after `subscribe`
//!   returns arrives on the stream; every publication before it is visible through `history`.
//!   So "subscribe, then read history since X" sees every publication after X exactly once when
//!   the caller drops live publications whose offset it already has.
//! - **Idempotency.** `publish` with an `idem` key already used in the same room within the
//!   idempotency window stores nothing and returns the original position with `duplicate: true`.
//! - **Presence.** Members added with `join` through a link belong to that link's edge. They
//!   leave when `leave` is called through a link of that edge (other edges cannot remove
//!   them), when the link is closed with [`EdgeLink::close`], or — when the edge vanishes
//!   without closing — once its lease (given to `attach`) runs out.
//! - **Bounded.** If the edge does not drain its event stream and the implementation's queue
//!   for it fills, the implementation ends the stream (the receiver yields `None`); the edge
//!   must treat that like a lost broker connection.
//! - **Every edge.** [`EdgeLink::disconnect_user`] reaches the stream of every edge attached
//!   when it is called, the caller's included, exactly once per link: the caller does not
//!   scatter-gather across edges, and an edge does not need to know the others.
//! - **Ephemeral.** [`EdgeLink::publish_ephemeral`] reaches, at most once, every link
//!   subscribed to the room when it is carried — the caller's included — as
//!   [`LinkEvent::Ephemeral`], in the order one link published them; it takes no offset, is
//!   never in `history`, and never passes through the durable path (no Raft entry, no
//!   JetStream message), so it neither waits for durable publications nor delays them. An
//!   edge whose event queue is full misses it (it is dropped and counted, the link lives on).
//! - **State rooms.** In a namespace with `state.enabled`, [`EdgeLink::state_write`] changes
//!   the room's map: each change takes the next offset (the key's version) and is a
//!   publication of the room — a change record, `plaza_proto::state::StateChange` — with every
//!   guarantee above (order, once per edge, durable ack, history). [`EdgeLink::state_read`]
//!   returns the map at a position that includes exactly the changes at or below it, so
//!   "subscribe, read the map, apply live changes above its position" ends equal to the
//!   tier's map. TTL expiry, released connections and a dead edge's tied keys are change
//!   records too. A compare-and-set on another version fails with
//!   [`BrokerError::StateConflict`] and changes nothing.
#![deny(missing_docs)]

pub mod cluster;
pub mod conformance;
pub mod memory;
pub mod nats;

pub use memory::MemoryBackend;

use std::future::Future;
use std::time::Duration;

use plaza_proto::cluster::{
    BrokerError, HistoryPage, LinkEvent, PresencePage, PresenceStats, PublishAck, RoomsPage,
};
use plaza_proto::events::{EventFilter, EventsPage, FeedPosition, WebhookClaim};
use plaza_proto::state::{StateAck, StateSnapshot, StateWrite};
use plaza_proto::{ClientId, EdgeId, Member, Payload, Position, RoomName, Sender, UserId};
use tokio::sync::mpsc;

/// An edge's event stream: the events of the rooms it subscribed to and the requests sent to
/// every edge. It ends when the link is lost.
pub type LinkEvents = mpsc::Receiver<LinkEvent>;

/// Queues `event` on an edge's stream; if the edge is not draining it (the queue is full),
/// ends the stream instead (see the "Bounded" contract). A stream already ended stays ended.
pub(crate) fn send_or_end(events: &mut Option<mpsc::Sender<LinkEvent>>, event: LinkEvent) {
    let full = events
        .as_ref()
        .is_some_and(|tx| tx.try_send(event).is_err());
    if full {
        tracing::warn!("the edge does not drain its broker events; ending the link");
        *events = None;
    }
}

/// Queues an ephemeral `event` on an edge's stream, or drops it if the queue is full: at most
/// once means a slow edge misses ephemeral traffic instead of being cut off for it.
pub(crate) fn send_ephemeral(events: Option<&mpsc::Sender<LinkEvent>>, event: LinkEvent) {
    if let Some(tx) = events
        && tx.try_send(event).is_err()
    {
        metrics::counter!(EPHEMERAL_DROPPED).increment(1);
    }
}

/// Most members a link's presence resync carries ([`RoomEventKind::PresenceResync`]); a room
/// with more says so with `next`, and its subscribers read the rest with `presence`. The edge
/// cuts it further to its `client.max_presence_page`.
///
/// [`RoomEventKind::PresenceResync`]: plaza_proto::cluster::RoomEventKind::PresenceResync
pub const PRESENCE_RESYNC_PAGE: u32 = 1000;

/// Ephemeral publications a backend dropped because an edge's event queue was full.
pub const EPHEMERAL_DROPPED: &str = "plaza_backend_ephemeral_dropped_total";

/// How an edge attaches to the broker tier.
#[derive(Debug, Clone)]
pub struct AttachOptions {
    /// The edge's id; unique among attached edges.
    pub edge: EdgeId,
    /// How long the edge's members outlive its last sign of life.
    pub lease: Duration,
}

/// The broker tier, from an edge's point of view.
pub trait Backend: Send + Sync + 'static {
    /// One edge's attachment.
    type Link: EdgeLink;

    /// Attaches an edge: returns its link and its event stream (its subscribed rooms' events
    /// and requests to every edge). The implementation keeps the edge's lease alive for as long
    /// as the link exists.
    fn attach(
        &self,
        options: AttachOptions,
    ) -> impl Future<Output = Result<(Self::Link, LinkEvents), BrokerError>> + Send;
}

/// One edge's calls to the broker tier. Cheap to clone; clones share the attachment.
pub trait EdgeLink: Clone + Send + Sync + 'static {
    /// Appends a publication to `room`'s log and returns its position once durable
    /// (see the contract on idempotency for `idem`).
    fn publish(
        &self,
        room: RoomName,
        data: Payload,
        from: Option<Sender>,
        idem: Option<String>,
    ) -> impl Future<Output = Result<PublishAck, BrokerError>> + Send;

    /// Hands an ephemeral publication to every link subscribed to `room` now (see the
    /// "Ephemeral" contract): no offset, nothing stored, never retried. Returns once it is on
    /// its way (queued to the subscribed links, or accepted by the tier for delivery).
    fn publish_ephemeral(
        &self,
        room: RoomName,
        data: Payload,
        from: Option<Sender>,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Adds `member` to `room`'s presence, owned by this link's edge. Emits a join event (in
    /// namespaces with join/leave events). Joining again with the same client id replaces the
    /// member without a second event. Fails with [`BrokerError::PresenceDisabled`] where the
    /// namespace has presence off.
    fn join(
        &self,
        room: RoomName,
        member: Member,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Removes a member of this link's edge from `room`'s presence and emits a leave event.
    /// Unknown members and members of other edges are ignored.
    fn leave(
        &self,
        room: RoomName,
        client: ClientId,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// One page of `room`'s members after `after`, in client id order, at most `limit` (capped
    /// at [`plaza_proto::cluster::MAX_PRESENCE_PAGE`]) long (namespaces with full presence
    /// only).
    fn presence(
        &self,
        room: RoomName,
        after: Option<ClientId>,
        limit: u32,
    ) -> impl Future<Output = Result<PresencePage, BrokerError>> + Send;

    /// Member and distinct-user counts of `room` (full or counts presence).
    fn presence_stats(
        &self,
        room: RoomName,
    ) -> impl Future<Output = Result<PresenceStats, BrokerError>> + Send;

    /// Reads `room`'s log. Without `since`: the newest `limit` publications (all held if
    /// `None`), oldest first. With `since`: the publications after it, oldest first, at most
    /// `limit`, and `complete` says whether none after `since` have been lost (epoch changed
    /// or pruned by size or age); if not complete, no publications are returned.
    fn history(
        &self,
        room: RoomName,
        since: Option<Position>,
        limit: Option<u32>,
    ) -> impl Future<Output = Result<HistoryPage, BrokerError>> + Send;

    /// Starts sending `room`'s events to this link's stream and returns the room's position at
    /// that moment. Subscribing to a subscribed room is a no-op returning the position.
    fn subscribe(
        &self,
        room: RoomName,
    ) -> impl Future<Output = Result<Position, BrokerError>> + Send;

    /// Stops sending `room`'s events. Events already queued may still arrive.
    fn unsubscribe(&self, room: RoomName) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Asks every edge to close every connection of `user`: each link attached when the call
    /// is made — this one included — receives [`LinkEvent::DisconnectUser`] with `user` and
    /// `reason` exactly once on its stream, whether or not it subscribed to any room, and its
    /// edge closes that user's connections (which then leave presence as usual). Returns once
    /// the request has been queued to every such link (for a networked tier: once the tier has
    /// accepted it for delivery to all of them). An edge whose link is lost or replaced in the
    /// meantime may miss it; its clients reconnect anyway and are not re-admitted by this call
    /// (blocking a user is the token issuer's job). Users with no connections are not an error.
    fn disconnect_user(
        &self,
        user: UserId,
        reason: String,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// One page of the active rooms — rooms with members or unexpired history — sorted by
    /// name, starting after `after` (exclusive; need not be an existing room), at most `limit`
    /// of them (at least one when any remain). Each comes with its member and distinct-user
    /// counts and latest offset. [`RoomsPage::next`] is the cursor for the following page,
    /// `None` on the last one. A read-only snapshot: rooms created or collected between pages
    /// may be missed or seen, but no room present throughout is skipped or listed twice.
    fn rooms(
        &self,
        after: Option<RoomName>,
        limit: u32,
    ) -> impl Future<Output = Result<RoomsPage, BrokerError>> + Send;

    /// Reads the lifecycle event feed: at most `limit` events after `since` (from the oldest
    /// retained when `None`) that pass `filter`, in feed order (see
    /// [`EventsPage`](plaza_proto::events::EventsPage)). A position of the tier's epoch that the
    /// feed has not reached is [`BrokerError::Invalid`]; one of another epoch or older than the
    /// retention is answered with `recovered: false` from the oldest retained event. Events are
    /// derived once by the broker tier, so every link of every edge reads the same feed.
    /// Implementations without a feed answer [`BrokerError::Unsupported`].
    fn events(
        &self,
        since: Option<FeedPosition>,
        limit: u32,
        filter: EventFilter,
    ) -> impl Future<Output = Result<EventsPage, BrokerError>> + Send;

    /// Claims (or renews) for this link's edge the lease of the one webhook sender of the
    /// whole broker tier, for `lease`. Answers whether the edge holds it now and the delivery
    /// cursor of every endpoint (see [`WebhookClaim`]). At most one edge holds a live claim at
    /// any time on the tier's clock; a claim not renewed runs out after `lease`, and then any
    /// edge may take it over. Implementations without a feed answer
    /// [`BrokerError::Unsupported`].
    fn claim_webhooks(
        &self,
        lease: Duration,
    ) -> impl Future<Output = Result<WebhookClaim, BrokerError>> + Send;

    /// Records that `endpoint` has been delivered (or given up on) through feed sequence
    /// `through`. Cursors never move back. Refused with [`BrokerError::Invalid`] unless this
    /// link's edge holds a live webhook claim, so a sender that lost its claim cannot move a
    /// cursor.
    fn ack_webhooks(
        &self,
        endpoint: String,
        through: u64,
    ) -> impl Future<Output = Result<(), BrokerError>> + Send;

    /// Changes a state room's map (see the "State rooms" contract); keys tied to a client
    /// belong to this link's edge. Fails with [`BrokerError::NotStateRoom`] outside state
    /// namespaces, [`BrokerError::StateConflict`] on a compare-and-set of another version and
    /// [`BrokerError::StateLimit`] beyond the namespace's limits.
    fn state_write(
        &self,
        room: RoomName,
        write: StateWrite,
    ) -> impl Future<Output = Result<StateAck, BrokerError>> + Send;

    /// Reads a state room's whole map with the position it is at.
    fn state_read(
        &self,
        room: RoomName,
    ) -> impl Future<Output = Result<StateSnapshot, BrokerError>> + Send;

    /// Detaches the edge cleanly: all its members leave now (not at lease expiry) and the
    /// event stream ends. Calls made afterwards fail.
    fn close(&self) -> impl Future<Output = ()> + Send;

    /// Whether calls can be served now (for the edge's readiness). A link that reaches its
    /// broker tier lazily (NATS before the server is reachable) says no until it can.
    fn ready(&self) -> bool {
        true
    }
}
