//! Lifecycle events: derived from membership changes as the state machine applies them, so
//! they are decided once, in log order, identically on every node — never per edge.
//!
//! ```text
//!   join  ──▶ user.online? room.occupied? user.joined? member.joined ──▶ feed (seq + 1 each)
//!   leave ──▶ member.left now; user.left / room.vacated / user.offline scheduled at now+debounce
//!   Tick  ──▶ due scheduled events ──▶ feed;  retention (age, count) drops the oldest
//! ```
//!
//! A "last one left" event waits out the debounce in `pending`; a comeback before it is due
//! (a page reload, a drained edge whose clients reconnect elsewhere) cancels it, and then the
//! matching "first one came" event is not emitted either, so a reload produces nothing. Due
//! events fire on `Tick`, whose time is the log's, so every replica fires them at the same
//! entry. The feed's sequence increases by exactly one per event: a reader sees a gap only if
//! retention dropped events, and says so (`recovered: false`).

use std::collections::{BTreeMap, BTreeSet};

use plaza_proto::events::{EventFilter, EventType, EventsPage, FeedPosition};
use plaza_proto::{ClientId, Member, RoomName, UserId};
use serde::{Deserialize, Serialize};

use crate::config::{EventsConfig, Namespaces};
use crate::feed::{Feed, NewEvent};
use crate::millis;
use crate::small_map::SmallMap;

/// A debounced event waiting for its deadline. Variant order is the order of events due at
/// the same moment: a user leaves the room, then the room empties, then the user goes offline.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
enum Pending {
    UserLeft(RoomName, UserId),
    Vacated(RoomName),
    Offline(UserId),
}

/// The feed and what the debounce remembers. Part of the replicated state (snapshots).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Lifecycle {
    /// Sequence number of the last event emitted (0 before any).
    seq: u64,
    /// Retained events, oldest first; their sequence numbers are contiguous.
    feed: Feed,
    /// Each user's connections that are members of any room with presence, with the number of
    /// rooms each is a member of. A user is online while present here.
    online: BTreeMap<UserId, SmallMap<ClientId, u32>>,
    /// `(deadline, event)` of every scheduled event.
    pending: BTreeSet<(u64, Pending)>,
    /// The deadline of every scheduled event, to cancel it by key.
    deadlines: BTreeMap<Pending, u64>,
}

/// The event settings in the state machine's units.
#[derive(Debug, Clone)]
pub(super) struct EventSettings {
    debounce: u64,
    retention: u64,
    max_retained: usize,
    user_online: bool,
}

impl From<&EventsConfig> for EventSettings {
    fn from(c: &EventsConfig) -> Self {
        Self {
            debounce: millis(c.debounce),
            retention: millis(c.retention),
            max_retained: c.max_retained.max(1),
            user_online: c.user_online,
        }
    }
}

/// What a lifecycle change needs besides the state: settings and the clock.
pub(super) struct Ctx<'a> {
    pub(super) settings: &'a EventSettings,
    pub(super) namespaces: &'a Namespaces,
    pub(super) epoch: &'a str,
    pub(super) now: u64,
}

/// Why a feed read was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FuturePosition {
    pub(super) asked: u64,
    pub(super) latest: u64,
}

impl Lifecycle {
    /// `member` joined `room`. `room_was_empty`: it had no members before; `first_of_user`:
    /// the user had no other connection in it.
    pub(super) fn joined(
        &mut self,
        ctx: &Ctx<'_>,
        room: &RoomName,
        member: &Member,
        room_was_empty: bool,
        first_of_user: bool,
    ) {
        let user = &member.user;
        let clients = self.online.entry(user.clone()).or_default();
        let came_online = clients.is_empty();
        *clients.get_or_default(member.client.clone()) += 1;
        if came_online && !self.cancel(&Pending::Offline(user.clone())) {
            self.emit(ctx, EventType::UserOnline, None, Some(user), None);
        }
        if room_was_empty && !self.cancel(&Pending::Vacated(room.clone())) {
            self.emit(ctx, EventType::RoomOccupied, Some(room), None, None);
        }
        if first_of_user && !self.cancel(&Pending::UserLeft(room.clone(), user.clone())) {
            self.emit(ctx, EventType::UserJoined, Some(room), Some(user), None);
        }
        self.emit(
            ctx,
            EventType::MemberJoined,
            Some(room),
            Some(user),
            Some(member),
        );
    }

    /// `member` of `room` changed its presence info (not debounced: every change is news).
    pub(super) fn updated(&mut self, ctx: &Ctx<'_>, room: &RoomName, member: &Member) {
        self.emit(
            ctx,
            EventType::PresenceUpdated,
            Some(room),
            Some(&member.user),
            Some(member),
        );
    }

    /// `member` left `room`. `room_is_empty`: nobody is left; `last_of_user`: the user has no
    /// other connection in it.
    pub(super) fn left(
        &mut self,
        ctx: &Ctx<'_>,
        room: &RoomName,
        member: &Member,
        room_is_empty: bool,
        last_of_user: bool,
    ) {
        let user = &member.user;
        self.emit(
            ctx,
            EventType::MemberLeft,
            Some(room),
            Some(user),
            Some(member),
        );
        if last_of_user {
            self.schedule(ctx, Pending::UserLeft(room.clone(), user.clone()));
        }
        if room_is_empty {
            self.schedule(ctx, Pending::Vacated(room.clone()));
        }
        let went_offline = match self.online.get_mut(user) {
            Some(clients) => {
                if let Some(rooms) = clients.get_mut(&member.client) {
                    *rooms = rooms.saturating_sub(1);
                    if *rooms == 0 {
                        clients.remove(&member.client);
                    }
                }
                clients.is_empty()
            }
            None => false,
        };
        if went_offline {
            self.online.remove(user);
            self.schedule(ctx, Pending::Offline(user.clone()));
        }
    }

    /// Emits every scheduled event due at `ctx.now` and drops events past the retention.
    pub(super) fn tick(&mut self, ctx: &Ctx<'_>) {
        while let Some((deadline, _)) = self.pending.first()
            && *deadline <= ctx.now
        {
            let Some((_, due)) = self.pending.pop_first() else {
                break;
            };
            self.deadlines.remove(&due);
            self.fire(ctx, due);
        }
        let oldest_kept = ctx.now.saturating_sub(ctx.settings.retention);
        while self.feed.front_time().is_some_and(|t| t < oldest_kept) {
            self.feed.pop_front();
        }
    }

    /// The feed after `since` (see [`EventsPage`]).
    pub(super) fn read(
        &self,
        epoch: &str,
        since: Option<&FeedPosition>,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<EventsPage, FuturePosition> {
        let first = self.feed.first_seq().unwrap_or(self.seq + 1);
        let asked = match since {
            Some(p) if p.epoch == epoch => Some(p.seq),
            Some(_) => None,
            None => Some(0),
        };
        if let Some(asked) = asked
            && asked > self.seq
        {
            return Err(FuturePosition {
                asked,
                latest: self.seq,
            });
        }
        let (after, recovered) = match asked {
            Some(seq) if seq + 1 >= first => (seq, true),
            _ => (first - 1, false),
        };
        let skip = usize::try_from(after + 1 - first).unwrap_or(usize::MAX);
        let (events, last) = self.feed.read(skip, limit, filter);
        let next = last.unwrap_or(after);
        Ok(EventsPage {
            events,
            next: self.at(epoch, next),
            latest: self.at(epoch, self.seq),
            recovered,
        })
    }

    /// `(retained events, latest sequence, scheduled debounced events)`.
    pub(super) fn stats(&self) -> (usize, u64, usize) {
        (self.feed.len(), self.seq, self.pending.len())
    }

    fn at(&self, epoch: &str, seq: u64) -> FeedPosition {
        FeedPosition {
            epoch: epoch.to_owned(),
            seq,
        }
    }

    /// Emits the "last one left" event now (no debounce) or schedules it.
    fn schedule(&mut self, ctx: &Ctx<'_>, pending: Pending) {
        if ctx.settings.debounce == 0 {
            self.fire(ctx, pending);
            return;
        }
        let deadline = ctx.now.saturating_add(ctx.settings.debounce);
        if let Some(old) = self.deadlines.insert(pending.clone(), deadline) {
            self.pending.remove(&(old, pending.clone()));
        }
        self.pending.insert((deadline, pending));
    }

    /// Cancels a scheduled event; returns whether one was scheduled.
    fn cancel(&mut self, pending: &Pending) -> bool {
        match self.deadlines.remove(pending) {
            Some(deadline) => {
                self.pending.remove(&(deadline, pending.clone()));
                true
            }
            None => false,
        }
    }

    fn fire(&mut self, ctx: &Ctx<'_>, due: Pending) {
        match due {
            Pending::UserLeft(room, user) => {
                self.emit(ctx, EventType::UserLeft, Some(&room), Some(&user), None)
            }
            Pending::Vacated(room) => {
                self.emit(ctx, EventType::RoomVacated, Some(&room), None, None)
            }
            Pending::Offline(user) => {
                self.emit(ctx, EventType::UserOffline, None, Some(&user), None)
            }
        }
    }

    /// Appends an event to the feed if its namespace (or, for online/offline, the config)
    /// wants it.
    fn emit(
        &mut self,
        ctx: &Ctx<'_>,
        kind: EventType,
        room: Option<&RoomName>,
        user: Option<&UserId>,
        member: Option<&Member>,
    ) {
        let wanted = match room {
            Some(room) => ctx.namespaces.of(room).events.contains(&kind),
            None => ctx.settings.user_online,
        };
        if !wanted {
            return;
        }
        self.seq += 1;
        let event = NewEvent {
            kind,
            time_ms: ctx.now,
            room,
            user,
            member,
        };
        self.feed.push(ctx.epoch, self.seq, event);
        while self.feed.len() > ctx.settings.max_retained {
            self.feed.pop_front();
        }
    }
}
