//! [`NatsLink`]: one edge's attachment to the NATS broker tier (the parts it delegates:
//! `publish.rs`, `live.rs`, `presence.rs`, `leases.rs`).
//!
//! - **Live events**: one core-NATS subscription per subscribed room (to the stream's
//!   republished subjects), each read by its own task in stream order. A publication whose
//!   `Plaza-Prev` is not the last delivered offset reveals a missed message (NATS core delivery
//!   is at most once: a reconnect, a slow subscriber, interest still propagating in a cluster);
//!   the task then reads the missed publications from the stream before going on. After a
//!   reconnect, and shortly after subscribing, every room task also checks the stream.
//! - **Presence**: members in KV under `<ns>.<room>.<edge>.<client>`; join/leave events are
//!   published into the room's stream, so they are ordered with its publications.
//! - **Lease**: the link renews `PLAZA_EDGES/<edge>` every third of its lease, and reaps other
//!   edges whose entry is older than their lease: it claims the entry with a compare-and-set
//!   (so exactly one edge reaps), removes the dead edge's members and publishes their leaves.
//! - **Lifecycle events**: every link competes for the one deriver role (`deriver.rs`); any
//!   link reads the feed (`events.rs`) and may hold the webhook sender's claim.
//! - **State rooms** (`state.rs`): the link writes and reads maps, deletes the keys it wrote
//!   when their TTL runs out or their connection releases them, and competes for the one
//!   state keeper role (orphaned TTLs).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use plaza_proto::cluster::{
    BrokerError, HistoryPage, LinkEvent, PresencePage, PresenceStats, PublishAck, RoomsPage,
};
use plaza_proto::events::{EventFilter, EventsPage, FeedPosition, WebhookClaim};
use plaza_proto::{ClientId, EdgeId, Member, Payload, Position, RoomName, Sender, UserId};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Shared;
use super::leases::{LeaseEntry, keep_lease, reap};
use super::live::{Disconnect, follow, forward_disconnects};
use super::names::{DISCONNECT_SUBJECT, RoomSubjects, token};
use super::presence::{members, presence_page, remove_member, rooms_page};
use crate::{AttachOptions, EdgeLink, LinkEvents, send_or_end};
use plaza_rooms::config::PresenceMode;

/// Header: the room's previous publication offset (0 for the first).
pub(super) const PREV: &str = "Plaza-Prev";
/// Header: the publishing client, as JSON.
pub(super) const FROM: &str = "Plaza-From";
/// Header set by republish: the message's stream sequence.
pub(super) const SEQUENCE: &str = "Nats-Sequence";
/// How often a publish retries when other edges publish to the same room at the same time.
pub(super) const MAX_PUBLISH_ATTEMPTS: usize = 64;

/// How long one publish attempt waits for its JetStream ack before a keyed publish is sent
/// again (a healthy stream acks in milliseconds; a stream-leader election takes longer).
pub(super) const ACK_ATTEMPT: Duration = Duration::from_millis(500);

/// One edge's attachment to NATS. Cheap to clone; the edge counts as alive (its lease is
/// renewed) while a clone exists.
#[derive(Clone)]
pub struct NatsLink {
    pub(super) inner: Arc<LinkInner>,
}

/// Rooms whose last offset a link remembers before forgetting idle ones.
pub const PUBLISHING_CACHE: usize = 4096;

pub(crate) struct LinkInner {
    pub(super) shared: Arc<Shared>,
    pub(super) edge: EdgeId,
    pub(super) edge_token: String,
    pub(super) lease: Duration,
    pub(super) state: Mutex<LinkState>,
    /// The last publication offset this link knows per room, to publish with the right
    /// expectation; the async lock also serializes this edge's publishes per room. At most
    /// [`PUBLISHING_CACHE`] rooms beyond those being published to right now.
    pub(super) publishing: Mutex<HashMap<RoomName, Arc<tokio::sync::Mutex<u64>>>>,
    pub(super) closed: AtomicBool,
    /// Held while failed leaves are retried, and by a join of a member whose leave is being
    /// retried, so a retry never removes the entry of a member that joined again.
    pub(super) leave_retry: tokio::sync::Mutex<()>,
    pub(super) tasks: Mutex<Vec<JoinHandle<()>>>,
    /// This link's identity as the event deriver (the edge and a random part).
    pub(super) deriver_term: String,
}

pub(super) struct LinkState {
    pub(super) events: Option<mpsc::Sender<LinkEvent>>,
    pub(super) rooms: HashMap<RoomName, JoinHandle<()>>,
    pub(super) members: HashMap<(RoomName, ClientId), Member>,
    /// Members whose `leave` could not remove them from the presence bucket (JetStream was
    /// unavailable, e.g. during a stream-leader election): the lease task retries them until
    /// they are gone or join again. At most one entry per member this link ever held.
    pub(super) failed_leaves: HashSet<(RoomName, ClientId)>,
    /// State keys this link must delete later (TTLs, tied keys): see `state.rs`.
    pub(super) own_keys: super::state_keys::OwnKeys,
}

impl NatsLink {
    /// How many rooms' last offsets this link remembers (bounded by [`PUBLISHING_CACHE`] plus
    /// the rooms being published to right now); for tests and diagnostics.
    pub fn remembered_rooms(&self) -> usize {
        self.inner
            .publishing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

pub(super) fn unavailable(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(format!("NATS: {e}"))
}

pub(super) async fn attach(
    shared: Arc<Shared>,
    options: AttachOptions,
) -> Result<(NatsLink, LinkEvents), BrokerError> {
    let (tx, rx) = mpsc::channel(shared.options.event_queue.max(1));
    let edge_token = token(options.edge.as_str());
    let inner = Arc::new(LinkInner {
        shared,
        edge: options.edge,
        edge_token: edge_token.clone(),
        lease: options.lease,
        state: Mutex::new(LinkState {
            events: Some(tx),
            rooms: HashMap::new(),
            members: HashMap::new(),
            failed_leaves: HashSet::new(),
            own_keys: super::state_keys::OwnKeys::default(),
        }),
        publishing: Mutex::new(HashMap::new()),
        closed: AtomicBool::new(false),
        leave_retry: tokio::sync::Mutex::new(()),
        tasks: Mutex::new(Vec::new()),
        deriver_term: format!("{edge_token}-{:016x}", rand::random::<u64>()),
    });
    // Not fatal either way: `keep_lease` writes the lease every lease/3 and re-joins this
    // edge's members if it finds none. A write can fail just after the buckets were created,
    // while not every server of a NATS cluster serves them yet ("no stream found").
    if inner.shared.ready()
        && let Err(e) = inner.write_lease().await
    {
        tracing::warn!(error = %e, "lease not written yet; the lease task retries");
    }
    let disconnects = inner
        .shared
        .client
        .subscribe(DISCONNECT_SUBJECT)
        .await
        .map_err(unavailable)?;
    if inner.shared.ready() {
        inner.shared.client.flush().await.map_err(unavailable)?;
    }
    let weak = Arc::downgrade(&inner);
    let tasks = vec![
        tokio::spawn(forward_disconnects(weak.clone(), disconnects)),
        tokio::spawn(keep_lease(weak.clone())),
        tokio::spawn(reap(weak.clone())),
        tokio::spawn(super::state_keys::sweep(weak)),
        tokio::spawn(super::deriver::run(
            Arc::clone(&inner.shared),
            inner.deriver_term.clone(),
        )),
        tokio::spawn(super::state_keys::keep(
            Arc::clone(&inner.shared),
            inner.deriver_term.clone(),
        )),
    ];
    *inner.tasks.lock().unwrap_or_else(PoisonError::into_inner) = tasks;
    Ok((NatsLink { inner }, rx))
}

impl Drop for LinkInner {
    /// The edge dropped every handle: stop renewing (its members leave when the lease runs
    /// out, removed by another edge) and stop every room task.
    fn drop(&mut self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
        for (_, task) in self.state().rooms.drain() {
            task.abort();
        }
    }
}

impl LinkInner {
    pub(super) fn state(&self) -> MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn check_open(&self) -> Result<(), BrokerError> {
        if self.closed.load(Ordering::Acquire) || self.state().events.is_none() {
            Err(BrokerError::Unavailable("link closed".into()))
        } else {
            Ok(())
        }
    }

    /// Sends an event to the edge; ends the stream if the edge does not keep up.
    pub(super) fn send(&self, event: LinkEvent) {
        send_or_end(&mut self.state().events, event);
    }

    /// Queues an ephemeral event, dropping it if the edge's queue is full (at most once).
    pub(super) fn send_ephemeral(&self, event: LinkEvent) {
        crate::send_ephemeral(self.state().events.as_ref(), event);
    }

    /// Ends the stream (the edge then attaches again, and its clients recover themselves).
    pub(super) fn end(&self, why: &str) {
        tracing::warn!(why, "ending the NATS link");
        let mut state = self.state();
        state.events = None;
        for (_, task) in state.rooms.drain() {
            task.abort();
        }
    }

    pub(super) async fn write_lease(&self) -> Result<u64, BrokerError> {
        let lease = LeaseEntry {
            edge: self.edge.as_str().to_owned(),
            lease_ms: u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX),
            reaped_by: None,
        };
        let value = Bytes::from(serde_json::to_vec(&lease).map_err(unavailable)?);
        self.shared
            .setup()?
            .edges
            .put(&self.edge_token, value)
            .await
            .map_err(unavailable)
    }

    /// Removes this edge's member `client` of `room` from the presence bucket (with its
    /// membership-log record and `leave` event).
    pub(super) async fn remove_own_member(
        &self,
        room: &RoomName,
        client: &ClientId,
    ) -> Result<(), BrokerError> {
        let (_, subjects, _) = self.shared.room(room)?;
        let key = self.member_key(&subjects, client);
        remove_member(&self.shared, room, &subjects, &key).await
    }

    /// Retries the leaves that failed (see [`LinkState::failed_leaves`]); a member that joined
    /// again in the meantime is no longer retried.
    pub(super) async fn retry_failed_leaves(&self) {
        if self.state().failed_leaves.is_empty() {
            return;
        }
        let _retrying = self.leave_retry.lock().await;
        let pending: Vec<(RoomName, ClientId)> =
            self.state().failed_leaves.iter().cloned().collect();
        for key in pending {
            // A join of this member since took it out of the set (under the same lock).
            if !self.state().failed_leaves.contains(&key) {
                continue;
            }
            if self.remove_own_member(&key.0, &key.1).await.is_err() {
                return; // still unavailable: next round
            }
            self.state().failed_leaves.remove(&key);
        }
    }

    pub(super) fn member_key(&self, subjects: &RoomSubjects, client: &ClientId) -> String {
        format!(
            "{}.{}.{}",
            subjects.presence_prefix,
            self.edge_token,
            token(client.as_str())
        )
    }

    /// The lock that serializes this link's publishes (and state writes) to `room`, holding
    /// the room's last offset as this link knows it (0: unknown).
    pub(super) fn room_lock(&self, room: &RoomName) -> Arc<tokio::sync::Mutex<u64>> {
        let mut publishing = self
            .publishing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if publishing.len() >= PUBLISHING_CACHE && !publishing.contains_key(room) {
            // Forget rooms no publish is using right now (their next publish asks the
            // stream once): one user spraying publishes over new rooms must not grow this
            // map without bound.
            publishing.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        Arc::clone(publishing.entry(room.clone()).or_default())
    }

    /// The room's latest publication offset (0 if it has none held).
    pub(super) async fn last_offset(&self, room: &RoomName) -> Result<u64, BrokerError> {
        let (ns, subjects, _) = self.shared.room(room)?;
        last_sequence(&ns.stream, &subjects.chain).await
    }
}

pub(super) use super::room_log::{
    header_u64, last_sequence, publication, publications_after, stats, while_stream_unknown,
};

impl EdgeLink for NatsLink {
    async fn publish(
        &self,
        room: RoomName,
        data: Payload,
        from: Option<Sender>,
        idem: Option<String>,
    ) -> Result<PublishAck, BrokerError> {
        super::publish::publish(&self.inner, room, data, from, idem).await
    }

    async fn join(&self, room: RoomName, member: Member) -> Result<(), BrokerError> {
        self.inner.check_open()?;
        super::presence::join(&self.inner, room, member).await
    }

    async fn leave(&self, room: RoomName, client: ClientId) -> Result<(), BrokerError> {
        let inner = &self.inner;
        inner.check_open()?;
        inner
            .state()
            .members
            .remove(&(room.clone(), client.clone()));
        let result = inner.remove_own_member(&room, &client).await;
        if result.is_err() {
            // Not left behind as a ghost for the edge's whole life: retried by `keep_lease`.
            inner.state().failed_leaves.insert((room, client));
        }
        result
    }

    async fn presence(
        &self,
        room: RoomName,
        after: Option<ClientId>,
        limit: u32,
    ) -> Result<PresencePage, BrokerError> {
        self.inner.check_open()?;
        presence_page(&self.inner.shared, &room, after.as_ref(), limit).await
    }

    async fn presence_stats(&self, room: RoomName) -> Result<PresenceStats, BrokerError> {
        self.inner.check_open()?;
        let (_, subjects, ns) = self.inner.shared.room(&room)?;
        if ns.presence == PresenceMode::Off {
            return Err(BrokerError::PresenceDisabled {
                namespace: room.namespace().to_owned(),
            });
        }
        let all = members(
            &self.inner.shared,
            &format!("{}.*.*", subjects.presence_prefix),
        )
        .await?;
        Ok(stats(&all))
    }

    async fn history(
        &self,
        room: RoomName,
        since: Option<Position>,
        limit: Option<u32>,
    ) -> Result<HistoryPage, BrokerError> {
        self.inner.check_open()?;
        super::room_log::history(&self.inner, &room, since, limit).await
    }

    async fn subscribe(&self, room: RoomName) -> Result<Position, BrokerError> {
        let inner = &self.inner;
        inner.check_open()?;
        let (ns, subjects, _) = inner.shared.room(&room)?;
        let epoch = ns.epoch.clone();
        if inner.state().rooms.contains_key(&room) {
            let offset = inner.last_offset(&room).await?;
            return Ok(Position { epoch, offset });
        }
        let subscriber = inner
            .shared
            .client
            .subscribe(subjects.live.clone())
            .await
            .map_err(unavailable)?;
        // The server has the subscription once the flush returns: every message it routes
        // from now on reaches us (in a cluster, others learn of it a little later: the room
        // task re-checks the stream).
        inner.shared.client.flush().await.map_err(unavailable)?;
        let offset = inner.last_offset(&room).await?;
        let reconnected = inner.shared.reconnected.subscribe();
        let task = tokio::spawn(follow(
            Arc::downgrade(&self.inner),
            room.clone(),
            epoch.clone(),
            offset,
            subscriber,
            reconnected,
        ));
        let mut state = inner.state();
        if let Some(previous) = state.rooms.insert(room, task) {
            previous.abort();
        }
        Ok(Position { epoch, offset })
    }

    async fn publish_ephemeral(
        &self,
        room: RoomName,
        data: Payload,
        from: Option<Sender>,
    ) -> Result<(), BrokerError> {
        self.inner.check_open()?;
        let ephemeral = plaza_proto::cluster::Ephemeral { room, data, from };
        super::ephemeral::publish(&self.inner, ephemeral).await
    }

    async fn unsubscribe(&self, room: RoomName) -> Result<(), BrokerError> {
        if let Some(task) = self.inner.state().rooms.remove(&room) {
            task.abort();
        }
        Ok(())
    }

    async fn disconnect_user(&self, user: UserId, reason: String) -> Result<(), BrokerError> {
        self.inner.check_open()?;
        let body = serde_json::to_vec(&Disconnect { user, reason }).map_err(unavailable)?;
        let client = &self.inner.shared.client;
        client
            .publish(DISCONNECT_SUBJECT, body.into())
            .await
            .map_err(unavailable)?;
        client.flush().await.map_err(unavailable)
    }

    async fn rooms(&self, after: Option<RoomName>, limit: u32) -> Result<RoomsPage, BrokerError> {
        self.inner.check_open()?;
        rooms_page(&self.inner.shared, after, limit).await
    }

    async fn events(
        &self,
        since: Option<FeedPosition>,
        limit: u32,
        filter: EventFilter,
    ) -> Result<EventsPage, BrokerError> {
        self.inner.check_open()?;
        super::events::read_feed(&self.inner.shared, since, limit, &filter).await
    }

    async fn claim_webhooks(&self, lease: Duration) -> Result<WebhookClaim, BrokerError> {
        self.inner.check_open()?;
        super::events::claim_webhooks(&self.inner.shared, &self.inner.edge, lease).await
    }

    async fn ack_webhooks(&self, endpoint: String, through: u64) -> Result<(), BrokerError> {
        self.inner.check_open()?;
        super::events::ack_webhooks(&self.inner.shared, &self.inner.edge, endpoint, through).await
    }

    async fn state_write(
        &self,
        room: RoomName,
        write: plaza_proto::state::StateWrite,
    ) -> Result<plaza_proto::state::StateAck, BrokerError> {
        super::state_keys::state_write(&self.inner, room, write).await
    }

    async fn state_read(
        &self,
        room: RoomName,
    ) -> Result<plaza_proto::state::StateSnapshot, BrokerError> {
        self.inner.check_open()?;
        super::state::read(&self.inner.shared, &room).await
    }

    fn ready(&self) -> bool {
        self.inner.shared.ready() && self.inner.state().events.is_some()
    }

    async fn close(&self) {
        let inner = &self.inner;
        if inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        for task in inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
        let members: Vec<(RoomName, ClientId)> =
            inner.state().members.drain().map(|(k, _)| k).collect();
        for (room, client) in members {
            let Ok((_, subjects, _)) = inner.shared.room(&room) else {
                break; // NATS never became usable: the lease will lapse instead
            };
            let key = inner.member_key(&subjects, &client);
            if let Err(e) = remove_member(&inner.shared, &room, &subjects, &key).await {
                tracing::warn!(error = %e, "could not remove a member on detach");
            }
        }
        let released = inner.shared.setup().is_err() || super::state_keys::release_all(inner).await;
        if let Ok(setup) = inner.shared.setup()
            && released
        {
            // (Tied keys left behind: the lease runs out and its reaper deletes them.)
            let _ = setup.edges.delete(&inner.edge_token).await;
        }
        super::deriver::release(&inner.shared, &inner.deriver_term).await;
        super::state_keys::release_keeper(&inner.shared, &inner.deriver_term).await;
        inner.end("detached");
    }
}
