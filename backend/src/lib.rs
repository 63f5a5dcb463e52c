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
#![deny(missing_docs)]

pub mod cluster;
pub mod conformance;
pub mod memory;
pub mod nats;

pub use memory::MemoryBackend;

use std::future::Future;
use std::time::Duration;

use plaza_proto::cluster::{
    BrokerError, HistoryPage, LinkEvent, PresenceStats, PublishAck, RoomsPage,
};
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

    /// The members of `room` (namespaces with full presence only).
    fn presence(
        &self,
        room: RoomName,
    ) -> impl Future<Output = Result<Vec<Member>, BrokerError>> + Send;

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

    /// Detaches the edge cleanly: all its members leave now (not at lease expiry) and the
    /// event stream ends. Calls made afterwards fail.
    fn close(&self) -> impl Future<Output = ()> + Send;

    /// Whether calls can be served now (for the edge's readiness). A link that reaches its
    /// broker tier lazily (NATS before the server is reachable) says no until it can.
    fn ready(&self) -> bool {
        true
    }
}
