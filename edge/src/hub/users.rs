//! User-level presence in the hub: the rooms' user tables (`crate::user_presence`), their
//! first read, pages of them, and the one sweep task that announces debounced user leaves.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use plaza_proto::client::UserMember;
use plaza_proto::{Member, RoomName, UserId};

use super::{Encoded, Hub, Shared};
use crate::outbox::Flushes;

impl Hub {
    /// Whether `room` has a user table waiting for its first presence read.
    pub(crate) fn users_loading(&self, room: &RoomName) -> bool {
        self.rooms()
            .get(room)
            .and_then(|e| e.users.as_ref())
            .is_some_and(|t| !t.ready())
    }

    /// Applies the first presence read of `room`'s user table (all its pages, in client id
    /// order). Returns false if the table overflowed meanwhile or is gone.
    pub(crate) fn load_users(&self, room: &RoomName, members: Vec<Member>) -> bool {
        let mut rooms = self.rooms();
        let Some(table) = rooms.get_mut(room).and_then(|e| e.users.as_mut()) else {
            return false;
        };
        if table.overflowed() {
            return false;
        }
        let due = table.load(members, self.shared.debounce);
        drop(rooms);
        self.schedule(room, due);
        true
    }

    /// One page of `room`'s users from its user table, if it has a loaded one.
    pub(crate) fn users_page(
        &self,
        room: &RoomName,
        after: Option<&UserId>,
        limit: usize,
    ) -> Option<(Vec<UserMember>, bool)> {
        let rooms = self.rooms();
        let table = rooms.get(room)?.users.as_ref()?;
        table.ready().then(|| table.page(after, limit))
    }

    /// Queues user leaves due later and makes sure the sweep runs.
    pub(super) fn schedule(&self, room: &RoomName, due: Vec<(UserId, Instant)>) {
        if due.is_empty() {
            return;
        }
        {
            let mut leaves = self.shared.leaves.lock().unwrap_or_else(|p| p.into_inner());
            for (user, at) in due {
                leaves.push_back((at, room.clone(), user));
            }
        }
        if !self.shared.sweeping.swap(true, Ordering::AcqRel) {
            let shared = Arc::downgrade(&self.shared);
            tokio::spawn(sweep(shared));
        }
    }

    /// Announces the user leaves whose debounce ran out by `now`; returns when the next is due.
    fn sweep_leaves(&self, now: Instant) -> Option<Instant> {
        loop {
            let (at, room, user) = {
                let mut leaves = self.shared.leaves.lock().unwrap_or_else(|p| p.into_inner());
                match leaves.front() {
                    Some((at, _, _)) if *at <= now => leaves.pop_front()?,
                    Some((at, _, _)) => return Some(*at),
                    None => return None,
                }
            };
            let mut rooms = self.rooms();
            let Some(entry) = rooms.get_mut(&room) else {
                continue;
            };
            let Some(change) = entry.users.as_mut().and_then(|t| t.leave_due(&user, at)) else {
                continue;
            };
            let encoded = Arc::new(Encoded::user(&room, change));
            let mut flushes = Flushes::default();
            for sub in entry.subs.values_mut() {
                sub.deliver(&encoded, &mut flushes);
            }
            drop(rooms);
            flushes.run();
        }
    }
}

/// The hub's one sweep task: announces debounced user leaves when they come due; ends with
/// the hub. Sleeps until the next due leave, or a debounce when there is none.
async fn sweep(shared: Weak<Shared>) {
    loop {
        let next = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let hub = Hub { shared };
            let idle = hub.shared.debounce.max(Duration::from_millis(100));
            hub.sweep_leaves(Instant::now())
                .unwrap_or_else(|| Instant::now() + idle)
        };
        tokio::time::sleep_until(next.into()).await;
    }
}
