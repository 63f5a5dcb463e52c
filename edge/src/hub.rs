//! The edge's local fan-out: one upstream subscription per room, each event encoded once and
//! queued to every local subscriber.
//!
//! ```text
//!  broker tier ──RoomEvent──▶ Hub::dispatch ──encode once (encoded.rs)──▶ Outbox of every
//!                local subscriber ──(lean, task idle) Flushes, run by the caller lock-free──▶ socket
//! ```
//!
//! Joining a room is a small protocol between a session and the hub, so that a client gets
//! each publication exactly once even while it recovers missed ones:
//! 1. [`Hub::register`]: the subscriber is added in *buffering* state — from now on the room's
//!    events are kept for it — and gets the room's position if the room is already live here.
//! 2. [`Hub::ensure_upstream`]: the first subscriber subscribes upstream (one per room per
//!    edge, through the node's link); concurrent first subscribers wait for it.
//! 3. The session reads what it missed (`history` since its `recover` position).
//! 4. [`Hub::activate`]: under the lock, the reply is queued, then the buffered events whose
//!    offsets the reply did not already cover, and the subscriber turns live.
//!
//! The hub holds no link: the upstream subscribe and unsubscribe calls are handed in by the
//! node (`node/calls.rs`), which owns the link, so the hub is local fan-out only.
//!
//! The rooms map is behind a `std::sync::Mutex` that is never held across an `.await`; a
//! room's upstream subscribe and unsubscribe take turns (`turn.rs`).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use plaza_proto::cluster::{BrokerError, Ephemeral, RoomEvent, RoomEventKind};
use plaza_proto::{CloseCode, Position, RoomName, UserId};

use crate::metrics as m;
use crate::outbox::{Flushes, Outbox};
use crate::small_map::SmallMap;
use crate::user_presence::{Op, UserTable};

mod encoded;
#[cfg(test)]
mod tests;
mod turn;
mod users;

use encoded::{Audience, Encoded, SharedPush};
use turn::Taken;

/// Identifies a session within this edge.
pub(crate) type SessionId = u64;

/// Most events kept for one subscriber while it recovers; beyond that it is cut as a slow
/// consumer (it could not have kept up live either).
const MAX_BUFFERED: usize = 10_000;

/// The local fan-out hub. Cheap to clone.
#[derive(Clone, Default)]
pub struct Hub {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Entries are boxed: the table keeps spare slots, and a spare slot then costs a pointer
    /// instead of a whole entry.
    rooms: Mutex<HashMap<RoomName, Box<RoomEntry>>>,
    next_session: AtomicU64,
    /// The next room entry's generation (see `turn.rs`).
    next_generation: AtomicU32,
    /// `client.user_presence_debounce`: how long a user's last leave waits for a re-join.
    debounce: Duration,
    /// User leaves waiting for their debounce, in due order (the debounce is one constant).
    /// Entries whose user came back are skipped by the sweep.
    leaves: Mutex<VecDeque<(Instant, RoomName, UserId)>>,
    /// Whether the one sweep task of this hub runs.
    sweeping: AtomicBool,
    /// The latest epoch seen, shared by every room and subscriber that has it (see [`At`]).
    epoch: Mutex<Arc<str>>,
}

impl Shared {
    /// `epoch` as the hub's shared copy. Every room of an edge normally has the broker
    /// tier's one epoch, so rooms and subscribers hold a pointer to one string instead of
    /// a copy each (three per room with one subscriber), and a publication's fan-out
    /// allocates none.
    fn epoch(&self, epoch: &str) -> Arc<str> {
        let mut current = self.epoch.lock().unwrap_or_else(|p| p.into_inner());
        if **current != *epoch {
            *current = Arc::from(epoch);
        }
        current.clone()
    }
}

/// A position as the hub keeps it: the epoch shared (see [`Shared::epoch`]).
#[derive(Clone)]
struct At {
    epoch: Arc<str>,
    offset: u64,
}

impl At {
    fn position(&self) -> Position {
        Position {
            epoch: self.epoch.to_string(),
            offset: self.offset,
        }
    }
}

struct RoomEntry {
    subs: SmallMap<SessionId, LocalSub>,
    /// Whether the upstream subscription is in place.
    active: bool,
    /// An upstream subscribe or unsubscribe of the room is under way (see `turn.rs`).
    busy: bool,
    /// Tells this entry from a later one of the same name (see `turn.rs`).
    generation: u32,
    /// Wakes those waiting for `busy` to clear; made by the first one that waits.
    idle: Option<Arc<tokio::sync::Notify>>,
    /// Position of the latest publication dispatched here (or of the upstream subscription).
    position: Option<At>,
    /// Position returned by the upstream subscribe.
    subscribed_at: Option<At>,
    /// User-level presence, while a local subscriber asked for it (boxed: most rooms have
    /// none).
    users: Option<Box<UserTable>>,
}

impl RoomEntry {
    /// Drops the user table once no local subscriber wants user-level presence.
    fn trim_users(&mut self) {
        if self.users.is_some() && !self.subs.values().any(|s| s.users) {
            self.users = None;
        }
    }
}

struct LocalSub {
    outbox: Arc<Outbox>,
    presence: bool,
    /// Subscribed with `presence: "users"`.
    users: bool,
    state: SubState,
}

enum SubState {
    Buffering(Vec<Arc<Encoded>>),
    /// The last publication it was sent (or the position its subscribe reply covered).
    Live(At),
}

impl LocalSub {
    /// Queues `event` if this subscriber wants it and has not seen it; true if it queued a
    /// publication (counted in `plaza_publications_out_total` by the caller, once per event).
    /// Run `flushes` once the hub's lock is released.
    fn deliver(&mut self, event: &Arc<Encoded>, flushes: &mut Flushes) -> bool {
        match &mut self.state {
            SubState::Buffering(buffer) => {
                if buffer.len() >= MAX_BUFFERED {
                    self.outbox
                        .close(CloseCode::SlowConsumer, "too many events during subscribe");
                } else {
                    buffer.push(event.clone());
                }
                false
            }
            SubState::Live(last) => match &event.at {
                Some(at) => {
                    // Another epoch: the room's log was lost and restarted, offsets start over.
                    let newer = at.offset > last.offset
                        || !Arc::ptr_eq(&last.epoch, &at.epoch) && last.epoch != at.epoch;
                    if newer {
                        *last = at.clone();
                        return event.push_to(&self.outbox, flushes);
                    }
                    false
                }
                None => {
                    let wanted = match event.audience {
                        Audience::All => true,
                        Audience::Clients => self.presence,
                        Audience::Users => self.users,
                    };
                    if wanted {
                        event.push_to(&self.outbox, flushes);
                    }
                    false
                }
            },
        }
    }
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty hub whose user-level presence debounces last leaves by `debounce`
    /// (`client.user_presence_debounce`; zero: no debounce).
    pub fn with_user_debounce(debounce: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                debounce,
                ..Shared::default()
            }),
        }
    }

    /// A new session id (never 0).
    pub fn next_session(&self) -> SessionId {
        self.shared.next_session.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn rooms(&self) -> MutexGuard<'_, HashMap<RoomName, Box<RoomEntry>>> {
        // A panic while holding the lock leaves the map consistent (every update is a single
        // insert/remove/push), so a poisoned lock is safe to keep using.
        self.shared.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Step 1: adds a buffering subscriber. Returns the position of the last event dispatched
    /// for the room here, if any: every later event is buffered for the subscriber. (While the
    /// upstream subscription is still being set up this may be `None` or older than the
    /// position `ensure_upstream` reports; the subscriber uses the later of the two.)
    pub fn register(
        &self,
        room: &RoomName,
        session: SessionId,
        outbox: Arc<Outbox>,
        presence: bool,
        users: bool,
    ) -> Option<Position> {
        let mut rooms = self.rooms();
        let entry = rooms.entry(room.clone()).or_insert_with(|| {
            metrics::gauge!(m::HUB_ROOMS).increment(1);
            Box::new(RoomEntry {
                subs: SmallMap::default(),
                active: false,
                busy: false,
                generation: self.shared.next_generation.fetch_add(1, Ordering::Relaxed),
                idle: None,
                position: None,
                subscribed_at: None,
                users: None,
            })
        });
        entry.subs.insert(
            session,
            LocalSub {
                outbox,
                presence,
                users,
                state: SubState::Buffering(Vec::new()),
            },
        );
        if users && entry.users.as_ref().is_none_or(|t| t.overflowed()) {
            entry.users = Some(Box::new(UserTable::loading()));
        }
        metrics::gauge!(m::SUBSCRIPTIONS).increment(1);
        // Every event dispatched after this point is buffered for the subscriber, and every
        // one before it is at or below this position (both happen under this lock).
        entry.position.as_ref().map(At::position)
    }

    /// Step 2: makes sure the room is subscribed upstream, calling `subscribe` if it is not
    /// (at most one caller per room at a time); returns the position at which the upstream
    /// subscription began (a safe position for a subscriber registered before it).
    pub async fn ensure_upstream<F, Fut>(
        &self,
        room: &RoomName,
        subscribe: F,
    ) -> Result<Position, BrokerError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Position, BrokerError>>,
    {
        let ended = || BrokerError::Unavailable("subscription ended".into());
        let subscribed = |entry: &RoomEntry| match (entry.active, &entry.subscribed_at) {
            (true, Some(at)) => Some(at.position()),
            _ => None,
        };
        let turn = match self.turn(room, subscribed).await {
            Taken::Turn(turn) => turn,
            Taken::Decided(position) => return Ok(position),
            Taken::Gone => return Err(ended()),
        };
        let position = subscribe().await?;
        let at = At {
            epoch: self.shared.epoch(&position.epoch),
            offset: position.offset,
        };
        let mut rooms = self.rooms();
        let Some(entry) = rooms.get_mut(room).filter(|e| turn.owns(e)) else {
            turn.end(None);
            return Err(ended());
        };
        entry.active = true;
        if entry.position.is_none() {
            entry.position = Some(at.clone());
        }
        entry.subscribed_at = Some(at);
        turn.end(Some(&mut **entry));
        Ok(position)
    }

    /// Step 4: queues `reply`, then the events buffered since [`Hub::register`] that come
    /// after `delivered` (the position the reply covers), and turns the subscriber live.
    /// Returns false if the subscriber is gone (its connection closed meanwhile).
    pub fn activate(
        &self,
        room: &RoomName,
        session: SessionId,
        reply: Utf8Bytes,
        delivered: &Position,
    ) -> bool {
        let epoch = self.shared.epoch(&delivered.epoch);
        let mut rooms = self.rooms();
        let Some(sub) = rooms.get_mut(room).and_then(|e| e.subs.get_mut(&session)) else {
            return false;
        };
        let buffered = std::mem::replace(
            &mut sub.state,
            SubState::Live(At {
                epoch,
                offset: delivered.offset,
            }),
        );
        sub.outbox.push_reply(reply);
        if let SubState::Buffering(events) = buffered {
            let mut flushes = Flushes::default();
            let delivered = events
                .iter()
                .filter(|event| sub.deliver(event, &mut flushes))
                .count();
            metrics::counter!(m::PUBLICATIONS_OUT).increment(delivered as u64);
            drop(rooms);
            flushes.run();
        }
        true
    }

    /// Removes a subscriber; the last one out unsubscribes the room upstream with
    /// `unsubscribe` (a failure is only logged: the broker drops the subscription with the
    /// link anyway).
    pub async fn remove<F, Fut>(&self, room: &RoomName, session: SessionId, unsubscribe: F)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(), BrokerError>>,
    {
        {
            let mut rooms = self.rooms();
            let Some(entry) = rooms.get_mut(room) else {
                return;
            };
            if entry.subs.remove(&session).is_some() {
                metrics::gauge!(m::SUBSCRIPTIONS).decrement(1);
            }
            entry.trim_users();
            if !entry.subs.is_empty() {
                return;
            }
        }
        // Someone who subscribes meanwhile owns the upstream from then on.
        let turn = match self
            .turn(room, |e| (!e.subs.is_empty()).then_some(()))
            .await
        {
            Taken::Turn(turn) => turn,
            Taken::Decided(()) | Taken::Gone => return,
        };
        let was_active = {
            let mut rooms = self.rooms();
            match rooms.get_mut(room).filter(|e| turn.owns(e)) {
                Some(entry) if entry.subs.is_empty() => std::mem::replace(&mut entry.active, false),
                entry => return turn.end(entry.map(|e| &mut **e)),
            }
        };
        if was_active && let Err(e) = unsubscribe().await {
            tracing::debug!(room = %room, error = %e, "upstream unsubscribe failed");
        }
        let mut rooms = self.rooms();
        let entry = rooms.get_mut(room).filter(|e| turn.owns(e));
        if entry
            .as_ref()
            .is_some_and(|e| e.subs.is_empty() && !e.active)
        {
            turn.end(None);
            if let Some(mut entry) = rooms.remove(room) {
                entry.wake_waiters();
            }
            metrics::gauge!(m::HUB_ROOMS).decrement(1);
        } else {
            turn.end(entry.map(|e| &mut **e));
        }
    }

    /// Fans one event out to the room's local subscribers, encoding it once; the direct writes
    /// to lean connections are left in `flushes`: a batch of events that shares one writes
    /// each connection's share of the batch with one `writev`. Run it soon, and with no lock
    /// held.
    pub(crate) fn dispatch(&self, event: RoomEvent, flushes: &mut Flushes) {
        metrics::counter!(m::BROKER_EVENTS).increment(1);
        let room = event.room.clone();
        let kind = match &event.kind {
            RoomEventKind::Join(m) | RoomEventKind::PresenceUpdate(m) => Some(Op::Set(m.clone())),
            RoomEventKind::Leave(m) => Some(Op::Unset(m.clone())),
            RoomEventKind::PresenceResync(page) => Some(Op::Replace {
                members: page.members.clone(),
                upto: page.next.clone(),
            }),
            RoomEventKind::Publication(_) => None,
        };
        let encoded = Arc::new(Encoded::new(event, |epoch| self.shared.epoch(epoch)));
        // Written outside the hub's lock (by the caller): other rooms' events and subscribes
        // do not wait for this fan-out's socket writes.
        let due = self.fan_out(&room, kind, &encoded, flushes);
        self.schedule(&room, due);
    }

    /// Queues `encoded` for the room's subscribers (and the user-level changes `kind` makes);
    /// returns the debounced user leaves to schedule.
    fn fan_out(
        &self,
        room: &RoomName,
        kind: Option<Op>,
        encoded: &Arc<Encoded>,
        flushes: &mut Flushes,
    ) -> Vec<(UserId, Instant)> {
        let mut rooms = self.rooms();
        let Some(entry) = rooms.get_mut(room) else {
            return Vec::new();
        };
        if let Some(at) = &encoded.at {
            entry.position = Some(at.clone());
        }
        // Counted once per event: a metric lookup per delivery costs more than the push.
        let delivered = entry
            .subs
            .values_mut()
            .map(|sub| sub.deliver(encoded, flushes))
            .filter(|&delivered| delivered)
            .count();
        if delivered > 0 {
            metrics::counter!(m::PUBLICATIONS_OUT).increment(delivered as u64);
        }
        let (Some(table), Some(op)) = (entry.users.as_mut(), kind) else {
            return Vec::new();
        };
        let (changes, due) = table.apply(op, self.shared.debounce);
        for change in changes {
            let encoded = Arc::new(Encoded::user(room, change));
            for sub in entry.subs.values_mut() {
                sub.deliver(&encoded, flushes);
            }
        }
        due
    }

    /// Fans an ephemeral publication out to the room's live local subscribers, encoding it
    /// once. Subscribers still in their subscribe handshake miss it: ephemeral publications
    /// go to whoever is subscribed now and are never buffered or recovered. Direct writes are
    /// left in `flushes`, as for [`Hub::dispatch`].
    pub(crate) fn dispatch_ephemeral(&self, ephemeral: Ephemeral, flushes: &mut Flushes) {
        let room = ephemeral.room.clone();
        let mut frame = None;
        let rooms = self.rooms();
        let Some(entry) = rooms.get(&room) else {
            return;
        };
        let mut delivered = 0;
        for sub in entry.subs.values() {
            if let SubState::Live { .. } = sub.state {
                let frame = frame.get_or_insert_with(|| {
                    SharedPush::new(Utf8Bytes::from(crate::ephemeral::encode(ephemeral.clone())))
                });
                if frame.push_to(&sub.outbox, flushes) {
                    delivered += 1;
                }
            }
        }
        drop(rooms);
        if delivered > 0 {
            metrics::counter!(m::EPHEMERAL_OUT).increment(delivered);
        }
    }

    /// The upstream subscriptions are gone (the broker link was replaced): closes every
    /// subscribed connection (reconnectable, so clients recover through another edge or after
    /// re-attach) and forgets all rooms.
    pub fn reset(&self) {
        let mut rooms = std::mem::take(&mut *self.rooms());
        for entry in rooms.values_mut() {
            entry.wake_waiters();
            for sub in entry.subs.values() {
                sub.outbox.close(
                    CloseCode::BackendUnavailable,
                    "lost the broker tier; reconnect",
                );
            }
        }
        metrics::gauge!(m::HUB_ROOMS).set(0.0);
        metrics::gauge!(m::SUBSCRIPTIONS).set(0.0);
    }

    /// Removes `session` from every room at once, without upstream calls: the failure path of a
    /// connection whose own cleanup did not run. Rooms it leaves empty stay subscribed
    /// upstream until the next subscriber leaves them or the link is replaced. Returns how many
    /// rooms it was in.
    pub(crate) fn forget_session(&self, session: SessionId) -> usize {
        let mut removed = 0;
        for entry in self.rooms().values_mut() {
            if entry.subs.remove(&session).is_some() {
                metrics::gauge!(m::SUBSCRIPTIONS).decrement(1);
                entry.trim_users();
                removed += 1;
            }
        }
        removed
    }

    /// Number of rooms with local subscribers (for tests and status).
    pub fn room_count(&self) -> usize {
        self.rooms().len()
    }
}
