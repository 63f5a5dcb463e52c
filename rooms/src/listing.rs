//! Listing the active rooms, a page at a time, for the server API's `GET /v1/api/rooms`.
//!
//! Rooms already live in a `BTreeMap` ordered by name, so a page is a range scan that starts
//! right after the cursor: `O(log n + page)`, never a sort or a full scan. The cursor is the
//! last room of the previous page, which stays a valid starting point even if that room has
//! been collected since. A room the state machine still holds but that is vacant (no members,
//! no unexpired history: it only waits for idle collection or for its idempotency keys to
//! expire) is not active and is skipped; such rooms are few because collection removes them
//! within `room_idle_ttl`.

use std::ops::Bound;

use plaza_proto::RoomName;
use plaza_proto::cluster::{RoomInfo, RoomsPage};

use super::Rooms;
use super::room::Room;

impl Rooms {
    /// The active rooms (with members or unexpired history at `now`) whose names sort after
    /// `after`, in name order, at most `limit` of them (at least one is returned when any
    /// remain, so a zero limit cannot stall a caller's loop). `next` is the last listed room
    /// when more follow, `None` on the last page.
    pub fn rooms(&self, now: u64, after: Option<&RoomName>, limit: u32) -> RoomsPage {
        let now = now.max(self.state.clock);
        let limit = usize::try_from(limit.max(1)).unwrap_or(usize::MAX);
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut active = self
            .state
            .rooms
            .range::<RoomName, _>((start, Bound::Unbounded))
            .filter(|(name, room)| is_active(room, now, self.ttl_of(name)));
        let rooms: Vec<RoomInfo> = active
            .by_ref()
            .take(limit)
            .map(|(name, room)| {
                let stats = room.presence.stats();
                RoomInfo {
                    room: name.clone(),
                    clients: stats.clients,
                    users: stats.users,
                    offset: room.last,
                }
            })
            .collect();
        let next = match active.next() {
            Some(_) => rooms.last().map(|r| r.room.clone()),
            None => None,
        };
        RoomsPage { rooms, next }
    }
}

/// Whether a room has members or publications a reader could still see at `now`.
fn is_active(room: &Room, now: u64, ttl: u64) -> bool {
    !room.presence.is_empty() || room.history.live(now, ttl).next().is_some()
}

#[cfg(test)]
mod tests {
    use plaza_proto::cluster::RoomInfo;

    use super::super::support::{Sim, room};

    fn names(page: &[RoomInfo]) -> Vec<&str> {
        page.iter().map(|r| r.room.as_str()).collect()
    }

    #[test]
    fn rooms_are_listed_by_name_with_counts_and_offsets() {
        let mut sim = Sim::new();
        sim.attach("e1");
        sim.attach("e2");
        let b = sim.publish("chat:b");
        sim.join("e1", "chat:a", "c1", "ann").unwrap();
        sim.join("e2", "chat:a", "c2", "ann").unwrap();
        sim.join("e2", "chat:a", "c3", "bob").unwrap();
        let page = sim.rooms.rooms(sim.now, None, 10);
        assert_eq!(names(&page.rooms), ["chat:a", "chat:b"]);
        let a = &page.rooms[0];
        assert_eq!((a.clients, a.users), (3, 2), "two users on three clients");
        assert_eq!(
            a.offset, b.offset,
            "a room created after b starts at b's offset"
        );
        assert_eq!(page.rooms[1].offset, b.offset);
        assert_eq!((page.rooms[1].clients, page.rooms[1].users), (0, 0));
        assert_eq!(page.next, None, "everything fit on one page");
    }

    #[test]
    fn pages_follow_the_cursor_and_the_last_page_has_no_next() {
        let mut sim = Sim::new();
        for name in ["chat:d", "chat:a", "chat:c", "chat:b", "chat:e"] {
            sim.publish(name);
        }
        let first = sim.rooms.rooms(sim.now, None, 2);
        assert_eq!(names(&first.rooms), ["chat:a", "chat:b"]);
        assert_eq!(first.next, Some(room("chat:b")));
        let second = sim.rooms.rooms(sim.now, first.next.as_ref(), 2);
        assert_eq!(names(&second.rooms), ["chat:c", "chat:d"]);
        let third = sim.rooms.rooms(sim.now, second.next.as_ref(), 2);
        assert_eq!(names(&third.rooms), ["chat:e"]);
        assert_eq!(third.next, None);
        let exact = sim.rooms.rooms(sim.now, Some(&room("chat:c")), 2);
        assert_eq!(names(&exact.rooms), ["chat:d", "chat:e"]);
        assert_eq!(exact.next, None, "no more rooms after a full last page");
        let gone = sim.rooms.rooms(sim.now, Some(&room("chat:bb")), 1);
        assert_eq!(
            names(&gone.rooms),
            ["chat:c"],
            "a cursor that is not a room still works"
        );
        assert_eq!(
            names(&sim.rooms.rooms(sim.now, None, 0).rooms),
            ["chat:a"],
            "a zero limit still makes progress"
        );
    }

    #[test]
    fn vacant_and_expired_rooms_are_not_active() {
        let mut sim = Sim::new();
        sim.attach("e1");
        sim.join("e1", "chat:left", "c1", "ann").unwrap();
        sim.leave("chat:left", "c1");
        sim.publish("small:old");
        sim.publish("none:unkept");
        sim.publish("chat:kept");
        assert_eq!(
            names(&sim.rooms.rooms(sim.now, None, 10).rooms),
            ["chat:kept", "small:old"],
            "a room without members or kept history is not listed"
        );
        sim.advance(1_000);
        let page = sim.rooms.rooms(sim.now, None, 10);
        assert_eq!(
            names(&page.rooms),
            ["chat:kept"],
            "history past its TTL counts as gone even before a tick"
        );
    }
}
