//! The lifecycle-event rules on NATS, I/O-free: what one membership change (or the passing of
//! time) adds to the event feed. The one deriver of the tier (`deriver.rs`) feeds it the
//! presence bucket's changes in stream order and appends what it returns.
//!
//! ```text
//!   presence put (new member) ─▶ up(user), up(room), up(room+user) ─▶ online? occupied? joined?
//!                               ─▶ member.joined
//!   presence delete            ─▶ member.left ─▶ down(...) ─▶ a "last one left" entity is
//!                                                          scheduled at now + debounce
//!   tick(now)                  ─▶ due entities ─▶ user.left, room.vacated, user.offline
//! ```
//!
//! The same rules as the Raft state machine's (`plaza_rooms` `lifecycle.rs`): a comeback
//! before a scheduled event is due cancels it, and then the matching "first one came" event
//! is not emitted either. What is *announced* (the last event of an entity was a "came" one)
//! is kept explicitly, so a new deriver can rebuild it from a snapshot plus the events
//! appended after it, and then reconcile with the presence bucket as it is now.

use std::collections::{BTreeMap, BTreeSet};

use plaza_proto::events::{EventType, LifecycleEvent};
use plaza_proto::{ClientId, Member, Payload, RoomName, UserId};
use plaza_rooms::config::Namespaces;
use serde::{Deserialize, Serialize};

/// What an event is about. Variant order is the order of events due at the same moment: a
/// user leaves the room, then the room empties, then the user goes offline.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(super) enum Entity {
    RoomUser(RoomName, UserId),
    Room(RoomName),
    User(UserId),
}

impl Entity {
    fn came(&self) -> EventType {
        match self {
            Self::RoomUser(..) => EventType::UserJoined,
            Self::Room(_) => EventType::RoomOccupied,
            Self::User(_) => EventType::UserOnline,
        }
    }

    fn went(&self) -> EventType {
        match self {
            Self::RoomUser(..) => EventType::UserLeft,
            Self::Room(_) => EventType::RoomVacated,
            Self::User(_) => EventType::UserOffline,
        }
    }

    fn event(&self, kind: EventType, time_ms: u64) -> StoredEvent {
        let (room, user) = match self {
            Self::RoomUser(room, user) => (Some(room.clone()), Some(user.clone())),
            Self::Room(room) => (Some(room.clone()), None),
            Self::User(user) => (None, Some(user.clone())),
        };
        StoredEvent {
            kind,
            time_ms,
            room,
            user,
            client: None,
            info: None,
        }
    }

    /// The entity a user- or room-level event is about (none for `member.*`).
    fn of(event: &StoredEvent) -> Option<Self> {
        match (event.kind, &event.room, &event.user) {
            (EventType::UserJoined | EventType::UserLeft, Some(r), Some(u)) => {
                Some(Self::RoomUser(r.clone(), u.clone()))
            }
            (EventType::RoomOccupied | EventType::RoomVacated, Some(r), _) => {
                Some(Self::Room(r.clone()))
            }
            (EventType::UserOnline | EventType::UserOffline, _, Some(u)) => {
                Some(Self::User(u.clone()))
            }
            _ => None,
        }
    }
}

/// An event as stored in the events stream: everything but its position, which is the
/// stream sequence (and the stream's epoch) it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct StoredEvent {
    pub kind: EventType,
    pub time_ms: u64,
    pub room: Option<RoomName>,
    pub user: Option<UserId>,
    pub client: Option<ClientId>,
    pub info: Option<Payload>,
}

impl StoredEvent {
    /// The event at `position`.
    pub(super) fn at(self, position: plaza_proto::events::FeedPosition) -> LifecycleEvent {
        LifecycleEvent {
            position,
            kind: self.kind,
            time_ms: self.time_ms,
            room: self.room,
            user: self.user,
            client: self.client,
            info: self.info,
        }
    }
}

/// The event settings the rules need.
pub(super) struct Rules<'a> {
    pub debounce_ms: u64,
    pub user_online: bool,
    pub namespaces: &'a Namespaces,
}

impl Rules<'_> {
    /// Whether the configuration wants `kind` (of `room`'s namespace, or the global switch
    /// for `user.online`/`user.offline`).
    fn wanted(&self, kind: EventType, room: Option<&RoomName>) -> bool {
        match room {
            Some(room) => self.namespaces.of(room).events.contains(&kind),
            None => self.user_online,
        }
    }
}

/// What the deriver knows; snapshotted as [`Snapshot`].
#[derive(Debug, Default)]
pub(super) struct Derivation {
    /// Members the deriver has seen join and not leave.
    members: BTreeMap<(RoomName, ClientId), UserId>,
    /// Members per entity (rebuilt from `members`, never stored).
    counts: BTreeMap<Entity, u32>,
    /// Entities whose last event was a "came" one (or would have been, where not wanted).
    announced: BTreeSet<Entity>,
    /// Scheduled "last one left" events: deadline (ms) per entity.
    pending: BTreeMap<Entity, u64>,
}

/// [`Derivation`] as stored in the state bucket, with the last feed sequence it includes.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Snapshot {
    /// The events stream's sequence this state includes (0 = none).
    pub through: u64,
    /// The membership log's sequence this state includes (0 = none).
    pub input: u64,
    members: Vec<(RoomName, ClientId, UserId)>,
    announced: Vec<Entity>,
    pending: Vec<(Entity, u64)>,
}

impl Derivation {
    /// The state a snapshot holds.
    pub(super) fn restore(snapshot: Snapshot) -> Self {
        let mut d = Self {
            members: snapshot
                .members
                .into_iter()
                .map(|(r, c, u)| ((r, c), u))
                .collect(),
            announced: snapshot.announced.into_iter().collect(),
            pending: snapshot.pending.into_iter().collect(),
            counts: BTreeMap::new(),
        };
        d.recount();
        d
    }

    /// The state as a snapshot that includes the feed through `through` and the membership
    /// log through `input`.
    pub(super) fn snapshot(&self, through: u64, input: u64) -> Snapshot {
        Snapshot {
            through,
            input,
            members: self
                .members
                .iter()
                .map(|((r, c), u)| (r.clone(), c.clone(), u.clone()))
                .collect(),
            announced: self.announced.iter().cloned().collect(),
            pending: self.pending.iter().map(|(e, d)| (e.clone(), *d)).collect(),
        }
    }

    fn recount(&mut self) {
        self.counts.clear();
        for ((room, _), user) in &self.members {
            for entity in entities(room, user) {
                *self.counts.entry(entity).or_default() += 1;
            }
        }
    }

    /// Takes in an event another deriver appended after the snapshot (or after what this one
    /// knows), so the announced and scheduled state matches the feed.
    pub(super) fn replay(&mut self, event: &StoredEvent) {
        match (event.kind, &event.room, &event.client, &event.user) {
            (EventType::MemberJoined, Some(room), Some(client), Some(user)) => {
                self.members
                    .insert((room.clone(), client.clone()), user.clone());
            }
            (EventType::MemberLeft, Some(room), Some(client), _) => {
                self.members.remove(&(room.clone(), client.clone()));
            }
            _ => {}
        }
        if let Some(entity) = Entity::of(event) {
            self.pending.remove(&entity);
            if event.kind == entity.came() {
                self.announced.insert(entity);
            } else {
                self.announced.remove(&entity);
            }
        }
    }

    /// Brings the state to the presence bucket as it is now (`present`: every member with its
    /// room) after a gap in what this deriver saw: members gone leave, new ones join, and
    /// entities announced without members are scheduled (those with members but never
    /// announced are announced).
    pub(super) fn reconcile(
        &mut self,
        rules: &Rules<'_>,
        now: u64,
        present: &[(RoomName, Member)],
    ) -> Vec<StoredEvent> {
        self.recount();
        let mut out = Vec::new();
        let now_keys: BTreeSet<(RoomName, ClientId)> = present
            .iter()
            .map(|(r, m)| (r.clone(), m.client.clone()))
            .collect();
        let gone: Vec<_> = self
            .members
            .keys()
            .filter(|k| !now_keys.contains(*k))
            .cloned()
            .collect();
        for (room, client) in gone {
            out.extend(self.leave(rules, now, &room, &client));
        }
        for (room, member) in present {
            out.extend(self.join(rules, now, room, member));
        }
        let entities: BTreeSet<Entity> = self
            .announced
            .iter()
            .chain(self.counts.keys())
            .cloned()
            .collect();
        for entity in entities {
            let present = self.counts.get(&entity).is_some_and(|n| *n > 0);
            let announced = self.announced.contains(&entity);
            if present && !announced {
                self.announced.insert(entity.clone());
                self.pending.remove(&entity);
                out.extend(self.emit(rules, &entity, entity.came(), now));
            } else if present {
                self.pending.remove(&entity);
            } else if announced && !self.pending.contains_key(&entity) {
                self.schedule(rules, now, entity, &mut out);
            }
        }
        out
    }

    /// `member` is in `room`'s presence (a new member, or one replaced with the same client
    /// id: then nothing, unless its user changed).
    pub(super) fn join(
        &mut self,
        rules: &Rules<'_>,
        now: u64,
        room: &RoomName,
        member: &Member,
    ) -> Vec<StoredEvent> {
        let key = (room.clone(), member.client.clone());
        let mut out = Vec::new();
        match self.members.get(&key) {
            Some(user) if *user == member.user => return out,
            Some(_) => out.extend(self.leave(rules, now, room, &member.client)),
            None => {}
        }
        self.members.insert(key, member.user.clone());
        // The order of the Raft backend's feed: online, occupied, joined, member.joined.
        let [room_user, room_entity, user] = entities(room, &member.user);
        for entity in [user, room_entity, room_user] {
            let count = self.counts.entry(entity.clone()).or_default();
            *count += 1;
            let first = *count == 1;
            // A comeback inside the debounce cancels the scheduled event and says nothing.
            if first
                && self.pending.remove(&entity).is_none()
                && self.announced.insert(entity.clone())
            {
                out.extend(self.emit(rules, &entity, entity.came(), now));
            }
        }
        if rules.wanted(EventType::MemberJoined, Some(room)) {
            out.push(StoredEvent {
                kind: EventType::MemberJoined,
                time_ms: now,
                room: Some(room.clone()),
                user: Some(member.user.clone()),
                client: Some(member.client.clone()),
                info: member.info.clone(),
            });
        }
        out
    }

    /// `member` changed its info (`presence_update`): `presence.updated` with the new info
    /// where wanted; a member not known yet joins instead.
    pub(super) fn update(
        &mut self,
        rules: &Rules<'_>,
        now: u64,
        room: &RoomName,
        member: &Member,
    ) -> Vec<StoredEvent> {
        let known = self.members.get(&(room.clone(), member.client.clone()));
        if known != Some(&member.user) {
            return self.join(rules, now, room, member);
        }
        if !rules.wanted(EventType::PresenceUpdated, Some(room)) {
            return Vec::new();
        }
        vec![StoredEvent {
            kind: EventType::PresenceUpdated,
            time_ms: now,
            room: Some(room.clone()),
            user: Some(member.user.clone()),
            client: Some(member.client.clone()),
            info: member.info.clone(),
        }]
    }

    /// The member `client` left `room` (nothing if unknown).
    pub(super) fn leave(
        &mut self,
        rules: &Rules<'_>,
        now: u64,
        room: &RoomName,
        client: &ClientId,
    ) -> Vec<StoredEvent> {
        let mut out = Vec::new();
        let Some(user) = self.members.remove(&(room.clone(), client.clone())) else {
            return out;
        };
        if rules.wanted(EventType::MemberLeft, Some(room)) {
            out.push(StoredEvent {
                kind: EventType::MemberLeft,
                time_ms: now,
                room: Some(room.clone()),
                user: Some(user.clone()),
                client: Some(client.clone()),
                info: None,
            });
        }
        for entity in entities(room, &user) {
            let count = self.counts.entry(entity.clone()).or_default();
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.counts.remove(&entity);
                if self.announced.contains(&entity) {
                    self.schedule(rules, now, entity, &mut out);
                }
            }
        }
        out
    }

    /// Every scheduled event due at `now`, in deadline order.
    pub(super) fn tick(&mut self, rules: &Rules<'_>, now: u64) -> Vec<StoredEvent> {
        let mut due: Vec<(u64, Entity)> = self
            .pending
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(e, d)| (*d, e.clone()))
            .collect();
        due.sort();
        let mut out = Vec::new();
        for (_, entity) in due {
            self.pending.remove(&entity);
            self.announced.remove(&entity);
            out.extend(self.emit(rules, &entity, entity.went(), now));
        }
        out
    }

    /// `(members, scheduled events)`, for metrics.
    pub(super) fn sizes(&self) -> (usize, usize) {
        (self.members.len(), self.pending.len())
    }

    fn schedule(
        &mut self,
        rules: &Rules<'_>,
        now: u64,
        entity: Entity,
        out: &mut Vec<StoredEvent>,
    ) {
        if rules.debounce_ms == 0 {
            self.announced.remove(&entity);
            out.extend(self.emit(rules, &entity, entity.went(), now));
        } else {
            self.pending
                .insert(entity, now.saturating_add(rules.debounce_ms));
        }
    }

    fn emit(
        &self,
        rules: &Rules<'_>,
        entity: &Entity,
        kind: EventType,
        now: u64,
    ) -> Option<StoredEvent> {
        let event = entity.event(kind, now);
        rules.wanted(kind, event.room.as_ref()).then_some(event)
    }
}

/// The entities a member of `room` counts towards: `[room+user, room, user]`.
fn entities(room: &RoomName, user: &UserId) -> [Entity; 3] {
    [
        Entity::RoomUser(room.clone(), user.clone()),
        Entity::Room(room.clone()),
        Entity::User(user.clone()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use plaza_rooms::config::RoomsConfig;

    fn rules(namespaces: &Namespaces, debounce_ms: u64) -> Rules<'_> {
        Rules {
            debounce_ms,
            user_online: true,
            namespaces,
        }
    }

    fn member(client: &str, user: &str) -> Member {
        Member {
            client: ClientId::new(client),
            user: UserId::new(user),
            info: None,
        }
    }

    fn kinds(events: &[StoredEvent]) -> Vec<EventType> {
        events.iter().map(|e| e.kind).collect()
    }

    #[test]
    fn two_tabs_go_offline_once_after_the_debounce() {
        let ns = RoomsConfig::default().namespaces();
        let r = rules(&ns, 100);
        let (a, b) = (RoomName::new("a").unwrap(), RoomName::new("b").unwrap());
        let mut d = Derivation::default();
        let mut all = d.join(&r, 0, &a, &member("t1", "u"));
        all.extend(d.join(&r, 1, &b, &member("t2", "u")));
        all.extend(d.leave(&r, 2, &a, &ClientId::new("t1")));
        all.extend(d.tick(&r, 50));
        all.extend(d.leave(&r, 60, &b, &ClientId::new("t2")));
        all.extend(d.tick(&r, 159));
        all.extend(d.tick(&r, 160));
        use EventType::*;
        assert_eq!(
            kinds(&all),
            [
                UserOnline,
                RoomOccupied,
                UserJoined,
                RoomOccupied,
                UserJoined,
                UserLeft,
                RoomVacated,
                UserLeft,
                RoomVacated,
                UserOffline
            ]
        );
    }

    #[test]
    fn a_reload_inside_the_debounce_is_invisible() {
        let ns = RoomsConfig::default().namespaces();
        let r = rules(&ns, 100);
        let room = RoomName::new("a").unwrap();
        let mut d = Derivation::default();
        let first = d.join(&r, 0, &room, &member("t1", "u"));
        assert_eq!(first.len(), 3);
        assert!(d.leave(&r, 10, &room, &ClientId::new("t1")).is_empty());
        assert!(d.join(&r, 20, &room, &member("t2", "u")).is_empty());
        assert!(d.tick(&r, 500).is_empty());
    }

    #[test]
    fn a_new_deriver_rebuilds_from_snapshot_feed_and_presence_without_repeats() {
        let ns = RoomsConfig::default().namespaces();
        let r = rules(&ns, 100);
        let room = RoomName::new("a").unwrap();
        let mut old = Derivation::default();
        old.join(&r, 0, &room, &member("t1", "u"));
        let snapshot = old.snapshot(3, 0);
        // After the snapshot the old deriver saw t1 leave and fired the debounced events.
        old.leave(&r, 10, &room, &ClientId::new("t1"));
        let fired = old.tick(&r, 110);
        assert_eq!(fired.len(), 3);
        let mut new = Derivation::restore(snapshot);
        for e in &fired {
            new.replay(e);
        }
        // Nobody is present now: nothing more is owed.
        assert!(new.reconcile(&r, 200, &[]).is_empty());
        assert!(new.tick(&r, 10_000).is_empty());
        // The user comes back: announced afresh, once.
        let back = new.reconcile(&r, 300, &[(room.clone(), member("t2", "u"))]);
        assert_eq!(back.len(), 3, "{back:?}");
    }

    #[test]
    fn a_member_that_left_while_no_deriver_ran_is_scheduled_on_takeover() {
        let ns = RoomsConfig::default().namespaces();
        let r = rules(&ns, 100);
        let room = RoomName::new("a").unwrap();
        let mut old = Derivation::default();
        old.join(&r, 0, &room, &member("t1", "u"));
        let mut new = Derivation::restore(old.snapshot(3, 0));
        assert!(new.reconcile(&r, 50, &[]).is_empty());
        use EventType::*;
        assert_eq!(
            kinds(&new.tick(&r, 150)),
            [UserLeft, RoomVacated, UserOffline]
        );
    }
}
