//! The in-process backend: the room state machine behind a mutex, for `--dev` and tests.
//!
//! ```text
//!   MemoryLink::publish ──lock──▶ Rooms::apply ──events──▶ route: try_send to every subscribed
//!                                                          link's bounded queue (same lock)
//!   ticker (every `tick`) ──lock──▶ RenewEdge for live links, then Tick (leases, TTLs, GC)
//!   MemoryLink::disconnect_user ──lock──▶ try_send to every attached link's queue
//!   MemoryLink::publish_ephemeral ──lock──▶ try_send to every subscribed link (no state machine)
//! ```
//!
//! Events are routed while the lock that applied them is still held, so every link sees every
//! room's events in apply order, and a `subscribe` (which registers and reads the position
//! under the same lock) can never miss or duplicate an event relative to `history`.
//!
//! A link is alive while any clone of its [`MemoryLink`] exists. The ticker renews only live
//! links' leases, so a link dropped without [`EdgeLink::close`] behaves like an edge that died:
//! its members leave when its lease runs out.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use plaza_proto::cluster::{
    BrokerError, Ephemeral, HistoryPage, LinkEvent, PresencePage, PresenceStats, PublishAck,
    RoomEvent, RoomsPage,
};
use plaza_proto::events::{EventFilter, EventsPage, FeedPosition, WebhookClaim};
use plaza_proto::state::{StateAck, StateSnapshot, StateWrite};
use plaza_proto::{ClientId, EdgeId, Member, Payload, Position, RoomName, Sender, UserId};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::MissedTickBehavior;

use super::{AttachOptions, Backend, EdgeLink, LinkEvents};
use plaza_rooms::config::RoomsConfig;
use plaza_rooms::{Applied, Command, Rooms, RoomsError};

/// Tuning of a [`MemoryBackend`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryOptions {
    /// Capacity of each link's event queue. A link whose queue is full when an event arrives
    /// is cut off (see the "Bounded" contract), so this bounds memory per slow edge.
    pub event_queue: usize,
    /// How often leases are renewed and time-based expiry runs. Leave events of a dead edge
    /// and history expiry are late by at most this much.
    pub tick: Duration,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        Self {
            event_queue: 65_536,
            tick: Duration::from_millis(100),
        }
    }
}

/// The broker tier in-process. Cheap to clone; clones share one state.
#[derive(Clone)]
pub struct MemoryBackend {
    shared: Arc<Shared>,
}

/// State shared by the backend handles, its links and (weakly) its ticker.
struct Shared {
    options: MemoryOptions,
    /// Origin of the state machine's clock.
    started: Instant,
    /// Everything mutable. Locked briefly by every call and tick; never held across `.await`
    /// (no method that locks it awaits anything).
    state: Mutex<State>,
    /// Set once the ticker task has been spawned (on the first `attach`, inside a runtime).
    ticker_started: AtomicBool,
}

struct State {
    rooms: Rooms,
    /// The current link of every attached edge.
    links: HashMap<EdgeId, LinkSlot>,
    /// Which edges receive each room's events (a vector: a room has a few edges at most, and
    /// a set would allocate four slots for the first).
    subscribers: HashMap<RoomName, Vec<EdgeId>>,
    /// Distinguishes a link from a later one attached with the same edge id.
    next_generation: u64,
}

/// The backend's side of one link.
struct LinkSlot {
    generation: u64,
    events: mpsc::Sender<LinkEvent>,
    rooms: HashSet<RoomName>,
    /// Alive while the edge holds any clone of the link; the ticker renews only those.
    handle: Weak<LinkInner>,
}

/// One edge's attachment to a [`MemoryBackend`]. Cheap to clone; the edge is considered alive
/// while any clone exists.
#[derive(Clone)]
pub struct MemoryLink {
    inner: Arc<LinkInner>,
}

struct LinkInner {
    shared: Arc<Shared>,
    edge: EdgeId,
    generation: u64,
}

impl MemoryBackend {
    /// A backend with default [`MemoryOptions`] and a fresh random epoch.
    pub fn new(config: RoomsConfig) -> Self {
        Self::with_options(config, MemoryOptions::default())
    }

    /// A backend with the given queue size and tick. The epoch is random per backend: a new
    /// process has lost the old one's history, and clients must be told so.
    pub fn with_options(config: RoomsConfig, options: MemoryOptions) -> Self {
        let epoch = format!("{:016x}", rand::random::<u64>());
        let state = State {
            rooms: Rooms::new(&config, epoch),
            links: HashMap::new(),
            subscribers: HashMap::new(),
            next_generation: 0,
        };
        let shared = Shared {
            options,
            started: Instant::now(),
            state: Mutex::new(state),
            ticker_started: AtomicBool::new(false),
        };
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Spawns the ticker once. It holds only a `Weak`, so it ends by itself when the last
    /// backend handle and link are gone.
    fn start_ticker(&self) -> Result<(), BrokerError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            BrokerError::Unavailable(
                "the memory backend must be used inside a tokio runtime".into(),
            )
        })?;
        if self.shared.ticker_started.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let shared = Arc::downgrade(&self.shared);
        let period = self.shared.options.tick.max(Duration::from_millis(1));
        runtime.spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(shared) = shared.upgrade() else {
                    break;
                };
                shared.tick();
            }
        });
        Ok(())
    }
}

impl Backend for MemoryBackend {
    type Link = MemoryLink;

    async fn attach(
        &self,
        options: AttachOptions,
    ) -> Result<(MemoryLink, LinkEvents), BrokerError> {
        self.start_ticker()?;
        let (tx, rx) = mpsc::channel(self.shared.options.event_queue.max(1));
        let lease_ms = u64::try_from(options.lease.as_millis()).unwrap_or(u64::MAX);
        let edge = options.edge;
        let mut state = self.shared.lock();
        let now = self.shared.now();
        // A previous link of the same edge is replaced: its stream ends, its members stay.
        state.drop_link(&edge);
        state.apply(
            now,
            Command::AttachEdge {
                edge: edge.clone(),
                lease_ms,
            },
        )?;
        let generation = state.next_generation;
        state.next_generation += 1;
        let inner = Arc::new(LinkInner {
            shared: Arc::clone(&self.shared),
            edge: edge.clone(),
            generation,
        });
        let slot = LinkSlot {
            generation,
            events: tx,
            rooms: HashSet::new(),
            handle: Arc::downgrade(&inner),
        };
        state.links.insert(edge, slot);
        Ok((MemoryLink { inner }, rx))
    }
}

impl Shared {
    /// Locks the state. A panic while it was held cannot leave it half-updated in a way later
    /// calls depend on (commands are applied whole), so a poisoned lock is simply taken over.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Milliseconds since the backend was created.
    fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Renews live links' leases, then lets the state machine expire what is due.
    fn tick(&self) {
        let mut state = self.lock();
        let now = self.now();
        let live: Vec<EdgeId> = state
            .links
            .iter()
            .filter(|(_, slot)| slot.handle.strong_count() > 0)
            .map(|(edge, _)| edge.clone())
            .collect();
        for edge in live {
            if state
                .apply(now, Command::RenewEdge { edge: edge.clone() })
                .is_err()
            {
                // The lease ran out anyway (the ticker was starved): the edge must re-attach.
                state.drop_link(&edge);
            }
        }
        // `Tick` cannot fail; its events are routed by `apply`.
        let _ = state.apply(now, Command::Tick);
        let expired: Vec<EdgeId> = state
            .links
            .keys()
            .filter(|edge| state.rooms.lease_expiry(edge).is_none())
            .cloned()
            .collect();
        for edge in expired {
            state.drop_link(&edge);
        }
    }
}

impl State {
    /// Applies `cmd` and routes its events (see [`State::route`]).
    fn apply(&mut self, now: u64, cmd: Command) -> Result<Applied, RoomsError> {
        let mut events = Vec::new();
        let result = self.rooms.apply(now, cmd, &mut events);
        self.route(now, events);
        result
    }

    /// Sends each event to every link subscribed to its room, in order. A link whose queue is
    /// full is cut off (see [`State::cut_off`]); a link whose receiver is gone just stops
    /// receiving.
    fn route(&mut self, now: u64, events: Vec<RoomEvent>) {
        let mut overflowed = Vec::new();
        for event in events {
            let Some(edges) = self.subscribers.get(&event.room) else {
                continue;
            };
            let (mut full, mut closed) = (Vec::new(), Vec::new());
            for edge in edges {
                let Some(slot) = self.links.get(edge) else {
                    continue;
                };
                match slot.events.try_send(LinkEvent::Room(event.clone())) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => full.push(edge.clone()),
                    Err(TrySendError::Closed(_)) => closed.push(edge.clone()),
                }
            }
            for edge in closed {
                self.unsubscribe_all(&edge);
            }
            for edge in full {
                // Dropped at once so the rest of this batch skips it.
                self.drop_link(&edge);
                overflowed.push(edge);
            }
        }
        self.cut_off(now, overflowed);
    }

    /// Sends an ephemeral publication to every link subscribed to its room; a link whose queue
    /// is full misses it (see [`crate::send_ephemeral`]).
    fn route_ephemeral(&self, ephemeral: Ephemeral) {
        let Some(edges) = self.subscribers.get(&ephemeral.room) else {
            return;
        };
        for edge in edges {
            if let Some(slot) = self.links.get(edge) {
                crate::send_ephemeral(Some(&slot.events), LinkEvent::Ephemeral(ephemeral.clone()));
            }
        }
    }

    /// Sends `event` to every attached link, subscribed to anything or not, with the same
    /// overflow handling as [`State::route`].
    fn broadcast(&mut self, now: u64, event: LinkEvent) {
        let (mut full, mut closed) = (Vec::new(), Vec::new());
        for (edge, slot) in &self.links {
            match slot.events.try_send(event.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => full.push(edge.clone()),
                Err(TrySendError::Closed(_)) => closed.push(edge.clone()),
            }
        }
        for edge in closed {
            self.unsubscribe_all(&edge);
        }
        self.cut_off(now, full);
    }

    /// Cuts off links whose queue overflowed: their stream ends and their edges are detached,
    /// whose leave events are routed in turn (which may cut off more links; each edge at most
    /// once, so this ends).
    fn cut_off(&mut self, now: u64, edges: Vec<EdgeId>) {
        if edges.is_empty() {
            return;
        }
        let mut events = Vec::new();
        for edge in edges {
            self.drop_link(&edge);
            // Detaching never fails.
            let _ = self
                .rooms
                .apply(now, Command::DetachEdge { edge }, &mut events);
        }
        self.route(now, events);
    }

    /// Forgets `edge`'s link: its sender is dropped (the stream ends once drained) and it is
    /// unsubscribed everywhere. The edge's lease and members are untouched.
    fn drop_link(&mut self, edge: &EdgeId) {
        self.unsubscribe_all(edge);
        self.links.remove(edge);
    }

    fn unsubscribe_all(&mut self, edge: &EdgeId) {
        let Some(slot) = self.links.get_mut(edge) else {
            return;
        };
        for room in slot.rooms.drain() {
            if let Some(edges) = self.subscribers.get_mut(&room) {
                edges.retain(|e| e != edge);
                if edges.is_empty() {
                    self.subscribers.remove(&room);
                }
            }
        }
    }
}

impl MemoryLink {
    /// Runs `f` on the state if this link is still the edge's current one.
    fn with_state<T>(
        &self,
        f: impl FnOnce(&mut State, u64, &EdgeId) -> Result<T, BrokerError>,
    ) -> Result<T, BrokerError> {
        let inner = &self.inner;
        let mut state = inner.shared.lock();
        match state.links.get(&inner.edge) {
            Some(slot) if slot.generation == inner.generation => {}
            _ => return Err(BrokerError::Unavailable("link closed".into())),
        }
        let now = inner.shared.now();
        f(&mut state, now, &inner.edge)
    }
}

impl EdgeLink for MemoryLink {
    async fn publish(
        &self,
        room: RoomName,
        data: Payload,
        from: Option<Sender>,
        idem: Option<String>,
    ) -> Result<PublishAck, BrokerError> {
        self.with_state(|state, now, _| {
            match state.apply(
                now,
                Command::Publish {
                    room,
                    data,
                    from,
                    idem,
                },
            )? {
                Applied::Published(ack) => Ok(ack),
                _ => Err(BrokerError::Unavailable(
                    "publish was not acknowledged".into(),
                )),
            }
        })
    }

    async fn publish_ephemeral(
        &self,
        room: RoomName,
        data: Payload,
        from: Option<Sender>,
    ) -> Result<(), BrokerError> {
        // Not applied to the state machine: routed straight to the subscribed links, under the
        // same lock, so one link's ephemeral publications keep their order.
        self.with_state(|state, _, _| {
            state.route_ephemeral(Ephemeral { room, data, from });
            Ok(())
        })
    }

    async fn join(&self, room: RoomName, member: Member) -> Result<(), BrokerError> {
        self.with_state(|state, now, edge| {
            state.apply(
                now,
                Command::Join {
                    edge: edge.clone(),
                    room,
                    member,
                },
            )?;
            Ok(())
        })
    }

    async fn leave(&self, room: RoomName, client: ClientId) -> Result<(), BrokerError> {
        self.with_state(|state, now, edge| {
            let edge = edge.clone();
            state.apply(now, Command::LeaveOwned { edge, room, client })?;
            Ok(())
        })
    }

    async fn presence(
        &self,
        room: RoomName,
        after: Option<ClientId>,
        limit: u32,
    ) -> Result<PresencePage, BrokerError> {
        self.with_state(|state, _, _| Ok(state.rooms.presence(&room, after.as_ref(), limit)?))
    }

    async fn presence_stats(&self, room: RoomName) -> Result<PresenceStats, BrokerError> {
        self.with_state(|state, _, _| Ok(state.rooms.presence_stats(&room)?))
    }

    async fn history(
        &self,
        room: RoomName,
        since: Option<Position>,
        limit: Option<u32>,
    ) -> Result<HistoryPage, BrokerError> {
        self.with_state(|state, now, _| Ok(state.rooms.history(now, &room, since, limit)))
    }

    async fn subscribe(&self, room: RoomName) -> Result<Position, BrokerError> {
        self.with_state(|state, _, edge| {
            if let Some(slot) = state.links.get_mut(edge) {
                slot.rooms.insert(room.clone());
            }
            let edges = state.subscribers.entry(room.clone()).or_default();
            if !edges.contains(edge) {
                edges.reserve_exact(1);
                edges.push(edge.clone());
            }
            Ok(state.rooms.position(&room))
        })
    }

    async fn unsubscribe(&self, room: RoomName) -> Result<(), BrokerError> {
        self.with_state(|state, _, edge| {
            if let Some(slot) = state.links.get_mut(edge) {
                slot.rooms.remove(&room);
            }
            if let Some(edges) = state.subscribers.get_mut(&room) {
                edges.retain(|e| e != edge);
                if edges.is_empty() {
                    state.subscribers.remove(&room);
                }
            }
            Ok(())
        })
    }

    async fn disconnect_user(&self, user: UserId, reason: String) -> Result<(), BrokerError> {
        self.with_state(|state, now, _| {
            state.broadcast(now, LinkEvent::DisconnectUser { user, reason });
            Ok(())
        })
    }

    async fn rooms(&self, after: Option<RoomName>, limit: u32) -> Result<RoomsPage, BrokerError> {
        self.with_state(|state, now, _| Ok(state.rooms.rooms(now, after.as_ref(), limit)))
    }

    async fn events(
        &self,
        since: Option<FeedPosition>,
        limit: u32,
        filter: EventFilter,
    ) -> Result<EventsPage, BrokerError> {
        self.with_state(|state, _, _| Ok(state.rooms.events(since.as_ref(), limit, &filter)?))
    }

    async fn claim_webhooks(&self, lease: Duration) -> Result<WebhookClaim, BrokerError> {
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        self.with_state(|state, now, edge| {
            let edge = edge.clone();
            match state.apply(now, Command::ClaimWebhooks { edge, lease_ms })? {
                Applied::WebhookClaim(claim) => Ok(claim),
                _ => Err(BrokerError::Unavailable("claim not answered".into())),
            }
        })
    }

    async fn ack_webhooks(&self, endpoint: String, through: u64) -> Result<(), BrokerError> {
        self.with_state(|state, now, edge| {
            let edge = edge.clone();
            let ack = Command::AckWebhooks {
                edge,
                endpoint,
                through,
            };
            state.apply(now, ack)?;
            Ok(())
        })
    }

    async fn state_write(
        &self,
        room: RoomName,
        write: StateWrite,
    ) -> Result<StateAck, BrokerError> {
        self.with_state(|state, now, edge| {
            let edge = edge.clone();
            match state.apply(now, Command::StateWrite { edge, room, write })? {
                Applied::StateWritten(ack) => Ok(ack),
                _ => Err(BrokerError::Unavailable("state write not answered".into())),
            }
        })
    }

    async fn state_read(&self, room: RoomName) -> Result<StateSnapshot, BrokerError> {
        self.with_state(|state, _, _| Ok(state.rooms.state_snapshot(&room)?))
    }

    async fn close(&self) {
        // A link that is already closed or replaced has nothing left to close.
        let _ = self.with_state(|state, now, edge| {
            state.drop_link(edge);
            state.apply(now, Command::DetachEdge { edge: edge.clone() })?;
            Ok(())
        });
    }
}
