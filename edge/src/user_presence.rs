//! User-level presence (`subscribe` with `presence: "users"`), derived at the edge from the
//! connection-level presence events it already receives for a room.
//!
//! ```text
//!  join/leave/update/presence_resync ──▶ UserTable::apply ──▶ user_join/user_update pushes
//!                                                      └──▶ last connection gone: leave is
//!                                                           due after the debounce ──▶ sweep
//!                                                           ──▶ user_leave (unless re-joined)
//! ```
//!
//! A room keeps a [`UserTable`] only while at least one local subscriber asked for user-level
//! presence. The table is built from a full presence read when the first such subscriber
//! subscribes; the events that arrive during the read are kept and applied on top of it (they
//! are idempotent set/unset operations, so applying one the read already reflects changes
//! nothing). Memory is one entry per member connection of the room (bounded by the room's
//! presence) plus one per user, only for rooms with a local user-level subscriber.
//!
//! A user's `info` is the info of its member connection with the smallest client id: the same
//! on every edge and after every resync, whatever order events arrive in.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use plaza_proto::client::UserMember;
use plaza_proto::{ClientId, Member, Payload, UserId};

/// Most events kept for a table while its first presence read runs; beyond that the read is
/// abandoned and the table rebuilt by the next read (the subscriber gets an error).
const MAX_PENDING: usize = 10_000;

/// One connection-level change, as the broker tier reports it.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// The member is present with this info (join or update).
    Set(Member),
    /// The connection is no longer a member.
    Unset(Member),
    /// The room's members now, in client id order; with `upto`, only for client ids up to it
    /// (a cut resync page).
    Replace {
        members: Vec<Member>,
        upto: Option<ClientId>,
    },
}

/// What a change means to user-level subscribers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum UserChange {
    /// First connection of the user.
    Join(UserMember),
    /// Count or info changed.
    Update(UserMember),
    /// The user's last connection left and the debounce ran out (or is 0).
    Leave(UserMember),
}

#[derive(Default)]
struct UserState {
    /// The user's member connections and their info.
    clients: BTreeMap<ClientId, Option<Payload>>,
    /// The user as subscribers last heard of it (`None`: never announced).
    shown: Option<UserMember>,
    /// Set when the last connection left: the `user_leave` is due at this time.
    leaving: Option<Instant>,
}

impl UserState {
    fn now(&self, user: &UserId) -> Option<UserMember> {
        let (_, info) = self.clients.iter().next()?;
        Some(UserMember {
            user: user.clone(),
            connections: u32::try_from(self.clients.len()).unwrap_or(u32::MAX),
            info: info.clone(),
        })
    }
}

/// One room's user-level presence on this edge.
pub(crate) struct UserTable {
    /// `Some` while the first presence read runs: the events that arrived meanwhile.
    pending: Option<Vec<Op>>,
    users: BTreeMap<UserId, UserState>,
    /// The user of every member connection.
    owners: HashMap<ClientId, UserId>,
}

impl UserTable {
    /// A table waiting for its first presence read ([`UserTable::load`]).
    pub(crate) fn loading() -> Self {
        Self {
            pending: Some(Vec::new()),
            users: BTreeMap::new(),
            owners: HashMap::new(),
        }
    }

    /// Whether the first read has been applied.
    pub(crate) fn ready(&self) -> bool {
        self.pending.is_none()
    }

    /// Applies the first presence read, then the events that arrived during it, announcing
    /// nothing (no subscriber has the list yet). Returns the users whose leave is due later
    /// (the caller schedules them).
    pub(crate) fn load(
        &mut self,
        members: Vec<Member>,
        debounce: std::time::Duration,
    ) -> Vec<(UserId, Instant)> {
        let Some(pending) = self.pending.take() else {
            return Vec::new(); // Another subscriber's read came first.
        };
        for m in members {
            self.set(m);
        }
        for (user, state) in &mut self.users {
            let now = state.now(user);
            state.shown = now;
        }
        let mut due = Vec::new();
        for op in pending {
            for (user, leave_at) in self.apply_op(op, debounce) {
                match leave_at {
                    Some(at) => due.push((user, at)),
                    // Quietly: nobody has the list yet.
                    None => drop(self.announce(&user, true)),
                }
            }
        }
        due
    }

    /// Applies one event. Returns the user-level pushes it causes and the users whose leave
    /// is now due at a time (to schedule). While loading, the event is kept instead.
    pub(crate) fn apply(
        &mut self,
        op: Op,
        debounce: std::time::Duration,
    ) -> (Vec<UserChange>, Vec<(UserId, Instant)>) {
        if let Some(pending) = &mut self.pending {
            if pending.len() < MAX_PENDING {
                pending.push(op);
            }
            return (Vec::new(), Vec::new());
        }
        let mut changes = Vec::new();
        let mut due = Vec::new();
        for (user, leave_at) in self.apply_op(op, debounce) {
            match leave_at {
                Some(at) => due.push((user, at)),
                None => changes.extend(self.announce(&user, debounce.is_zero())),
            }
        }
        (changes, due)
    }

    /// Whether the read overflowed its event buffer (the table must be rebuilt).
    pub(crate) fn overflowed(&self) -> bool {
        self.pending
            .as_ref()
            .is_some_and(|p| p.len() >= MAX_PENDING)
    }

    /// Applies `op` to the connection sets; returns every touched user, with the time its
    /// leave becomes due if its last connection just went (debounce > 0).
    fn apply_op(
        &mut self,
        op: Op,
        debounce: std::time::Duration,
    ) -> Vec<(UserId, Option<Instant>)> {
        let mut touched: Vec<UserId> = Vec::new();
        match op {
            Op::Set(m) => touched.extend(self.set(m)),
            Op::Unset(m) => touched.extend(self.unset(&m.client)),
            Op::Replace { members, upto } => {
                let listed: HashMap<ClientId, ()> =
                    members.iter().map(|m| (m.client.clone(), ())).collect();
                let gone: Vec<ClientId> = self
                    .owners
                    .keys()
                    .filter(|c| !listed.contains_key(*c))
                    .filter(|c| upto.as_ref().is_none_or(|u| c.as_str() <= u.as_str()))
                    .cloned()
                    .collect();
                for c in gone {
                    touched.extend(self.unset(&c));
                }
                for m in members {
                    touched.extend(self.set(m));
                }
            }
        }
        touched.sort();
        touched.dedup();
        let now = Instant::now();
        touched
            .into_iter()
            .map(|user| {
                let state = self.users.get_mut(&user);
                let due = match state {
                    Some(s) if s.clients.is_empty() && !debounce.is_zero() && s.shown.is_some() => {
                        let at = now + debounce;
                        s.leaving = Some(at);
                        Some(at)
                    }
                    Some(s) => {
                        s.leaving = None;
                        None
                    }
                    None => None,
                };
                (user, due)
            })
            .collect()
    }

    fn set(&mut self, m: Member) -> Option<UserId> {
        if let Some(old) = self.owners.get(&m.client)
            && *old != m.user
        {
            // A client id never changes user; be safe anyway.
            let c = m.client.clone();
            self.unset(&c);
        }
        self.owners.insert(m.client.clone(), m.user.clone());
        let state = self.users.entry(m.user.clone()).or_default();
        state.clients.insert(m.client, m.info);
        Some(m.user)
    }

    fn unset(&mut self, client: &ClientId) -> Option<UserId> {
        let user = self.owners.remove(client)?;
        if let Some(state) = self.users.get_mut(&user) {
            state.clients.remove(client);
        }
        Some(user)
    }

    /// Compares `user` with what subscribers last heard and says what changed (without
    /// debounce when `immediate`: a user with no connections left leaves now).
    fn announce(&mut self, user: &UserId, immediate: bool) -> Option<UserChange> {
        let state = self.users.get_mut(user)?;
        let now = state.now(user);
        match (&state.shown, now) {
            (None, Some(now)) => {
                state.shown = Some(now.clone());
                Some(UserChange::Join(now))
            }
            (Some(shown), Some(now)) if *shown != now => {
                state.shown = Some(now.clone());
                Some(UserChange::Update(now))
            }
            (Some(_), Some(_)) => None,
            (Some(shown), None) if immediate => {
                let mut gone = shown.clone();
                gone.connections = 0;
                self.users.remove(user);
                Some(UserChange::Leave(gone))
            }
            (None, None) => {
                self.users.remove(user);
                None
            }
            (Some(_), None) => None,
        }
    }

    /// The sweep: `user`'s leave was due at `at`; announces it if the user is still gone and
    /// did not leave again later (a later leave has its own due time).
    pub(crate) fn leave_due(&mut self, user: &UserId, at: Instant) -> Option<UserChange> {
        let state = self.users.get(user)?;
        if !state.clients.is_empty() || state.leaving != Some(at) {
            return None;
        }
        self.announce(user, true)
    }

    /// One page of users as subscribers know them (users whose leave is pending included),
    /// in user id order after `after`.
    pub(crate) fn page(&self, after: Option<&UserId>, limit: usize) -> (Vec<UserMember>, bool) {
        let mut shown = self
            .users
            .iter()
            .filter(|(u, _)| after.is_none_or(|a| *u > a))
            .filter_map(|(_, s)| s.shown.clone());
        let page: Vec<UserMember> = shown.by_ref().take(limit).collect();
        let more = shown.next().is_some();
        (page, more)
    }
}

/// Users of a member list (in client id order, as presence pages are), one entry per user
/// with its connection count and the info of its smallest client id.
pub(crate) fn aggregate(members: impl IntoIterator<Item = Member>) -> BTreeMap<UserId, UserMember> {
    let mut users: BTreeMap<UserId, (ClientId, UserMember)> = BTreeMap::new();
    for m in members {
        let entry = users.entry(m.user.clone()).or_insert_with(|| {
            (
                m.client.clone(),
                UserMember {
                    user: m.user.clone(),
                    connections: 0,
                    info: m.info.clone(),
                },
            )
        });
        entry.1.connections = entry.1.connections.saturating_add(1);
        if m.client < entry.0 {
            entry.0 = m.client;
            entry.1.info = m.info;
        }
    }
    users.into_iter().map(|(u, (_, m))| (u, m)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn m(client: &str, user: &str) -> Member {
        Member {
            client: ClientId::new(client),
            user: UserId::new(user),
            info: None,
        }
    }

    #[test]
    fn first_and_last_connection_only() {
        let mut t = UserTable::loading();
        t.load(vec![], Duration::ZERO);
        let (c, _) = t.apply(Op::Set(m("a1", "ann")), Duration::ZERO);
        assert!(matches!(&c[..], [UserChange::Join(u)] if u.connections == 1));
        let (c, _) = t.apply(Op::Set(m("a2", "ann")), Duration::ZERO);
        assert!(matches!(&c[..], [UserChange::Update(u)] if u.connections == 2));
        let (c, _) = t.apply(Op::Unset(m("a1", "ann")), Duration::ZERO);
        assert!(matches!(&c[..], [UserChange::Update(u)] if u.connections == 1));
        let (c, _) = t.apply(Op::Unset(m("a2", "ann")), Duration::ZERO);
        assert!(matches!(&c[..], [UserChange::Leave(u)] if u.connections == 0));
        assert!(t.page(None, 10).0.is_empty());
    }

    #[test]
    fn rejoin_inside_the_debounce_is_silent() {
        let d = Duration::from_secs(5);
        let mut t = UserTable::loading();
        t.load(vec![m("a1", "ann")], d);
        let (c, due) = t.apply(Op::Unset(m("a1", "ann")), d);
        assert!(c.is_empty());
        let (user, at) = due[0].clone();
        let (c, _) = t.apply(Op::Set(m("a3", "ann")), d);
        assert!(c.is_empty(), "{c:?}");
        assert_eq!(t.leave_due(&user, at), None);
        let (_, due) = t.apply(Op::Unset(m("a3", "ann")), d);
        let (user, at) = due[0].clone();
        assert!(matches!(t.leave_due(&user, at), Some(UserChange::Leave(_))));
    }

    #[test]
    fn replace_reconciles_the_covered_range() {
        let mut t = UserTable::loading();
        t.load(
            vec![m("a1", "ann"), m("b1", "bob"), m("z1", "zed")],
            Duration::ZERO,
        );
        let (c, _) = t.apply(
            Op::Replace {
                members: vec![m("a1", "ann"), m("c1", "cat")],
                upto: Some(ClientId::new("c1")),
            },
            Duration::ZERO,
        );
        assert!(c.contains(&UserChange::Leave(UserMember {
            user: UserId::new("bob"),
            connections: 0,
            info: None
        })));
        assert!(
            c.iter()
                .any(|c| matches!(c, UserChange::Join(u) if u.user.as_str() == "cat"))
        );
        let users: Vec<String> = t
            .page(None, 10)
            .0
            .iter()
            .map(|u| u.user.to_string())
            .collect();
        assert_eq!(users, ["ann", "cat", "zed"]);
    }

    #[test]
    fn events_during_the_read_apply_on_top() {
        let mut t = UserTable::loading();
        t.apply(Op::Unset(m("a1", "ann")), Duration::ZERO);
        t.apply(Op::Set(m("b1", "bob")), Duration::ZERO);
        // The read saw a1 (before its leave) but not b1.
        t.load(vec![m("a1", "ann")], Duration::ZERO);
        let users: Vec<String> = t
            .page(None, 10)
            .0
            .iter()
            .map(|u| u.user.to_string())
            .collect();
        assert_eq!(users, ["bob"]);
    }
}
