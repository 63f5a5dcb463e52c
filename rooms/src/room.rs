//! One room: its position, history, presence, idempotency keys, and the bookkeeping that says
//! when it may be garbage-collected.

use std::collections::BTreeMap;

use plaza_proto::Publication;
use serde::{Deserialize, Serialize};

use super::history::History;
use super::presence::Presence;

/// A remembered idempotency key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct IdemEntry {
    /// Offset of the original publication.
    pub(super) offset: u64,
    /// The key is forgotten once the clock reaches this.
    pub(super) expires: u64,
}

/// The state of one room.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Room {
    /// Offset of the last publication, or the global sequence when the room was created.
    pub(super) last: u64,
    /// Publications at or below this offset may be missing (dropped from history, or
    /// published in a collected earlier incarnation of the room).
    pub(super) pruned_through: u64,
    /// Last publication, join or leave; the idle timer runs from here.
    pub(super) last_activity: u64,
    pub(super) history: History,
    pub(super) presence: Presence,
    pub(super) idem: BTreeMap<String, IdemEntry>,
    /// The deadline under which this room sits in the state machine's wakeup queue. It is never
    /// later than the room's next real deadline (history expiry or idle collection); it may be
    /// earlier, in which case the wakeup just recomputes and reschedules.
    pub(super) wakeup: Option<u64>,
}

impl Room {
    /// A room created when the global sequence is at `seq`, whose name's bucket was last
    /// collected at `watermark`.
    pub(super) fn new(seq: u64, watermark: u64, now: u64) -> Self {
        Self {
            last: seq,
            pruned_through: watermark,
            last_activity: now,
            history: History::default(),
            presence: Presence::default(),
            idem: BTreeMap::new(),
            wakeup: None,
        }
    }

    /// Raises `pruned_through` after history dropped `dropped`.
    pub(super) fn pruned(&mut self, dropped: Option<u64>) {
        if let Some(offset) = dropped {
            self.pruned_through = self.pruned_through.max(offset);
        }
    }

    /// The unexpired idempotency entry for `key`, if any.
    pub(super) fn idem(&self, key: &str, now: u64) -> Option<u64> {
        self.idem
            .get(key)
            .filter(|e| now < e.expires)
            .map(|e| e.offset)
    }

    /// Whether nothing but the clock keeps the room: no members, history or idempotency keys.
    fn is_vacant(&self) -> bool {
        self.presence.is_empty() && self.history.is_empty() && self.idem.is_empty()
    }

    /// Whether the room may be forgotten at `now`.
    pub(super) fn is_collectable(&self, now: u64, idle_ttl: u64) -> bool {
        self.is_vacant() && now >= self.last_activity.saturating_add(idle_ttl)
    }

    /// When the room next needs attention from `Tick`: its oldest history entry expires, or it
    /// becomes collectable. `None` while members or idempotency keys hold it (their removal
    /// reschedules it).
    pub(super) fn next_deadline(&self, history_ttl: u64, idle_ttl: u64) -> Option<u64> {
        self.history.next_expiry(history_ttl).or_else(|| {
            self.is_vacant()
                .then(|| self.last_activity.saturating_add(idle_ttl))
        })
    }

    /// Reads the history at `now`. Without `since`: the newest `limit` publications, oldest
    /// first. With `since` (an offset of this room's epoch, not past the global sequence): the
    /// publications after it and whether that list is complete; when it is not, the list is
    /// empty.
    pub(super) fn read(
        &self,
        now: u64,
        ttl: u64,
        since: Option<u64>,
        limit: Option<u32>,
    ) -> (Vec<Publication>, bool) {
        let limit = limit.map_or(usize::MAX, |l| l as usize);
        let Some(since) = since else {
            let mut newest: Vec<Publication> = self
                .history
                .live(now, ttl)
                .rev()
                .take(limit)
                .cloned()
                .collect();
            newest.reverse();
            return (newest, true);
        };
        let lost_through = self
            .pruned_through
            .max(self.history.expired_through(now, ttl).unwrap_or(0));
        if since < lost_through {
            return (Vec::new(), false);
        }
        let after = self
            .history
            .live(now, ttl)
            .skip_while(|p| p.offset <= since);
        (after.take(limit).cloned().collect(), true)
    }
}

#[cfg(test)]
mod tests {
    use plaza_proto::Payload;

    use super::*;

    fn room_with(offsets: &[u64], size: usize) -> Room {
        let mut room = Room::new(0, 0, 0);
        for &offset in offsets {
            let p = Publication {
                offset,
                data: Payload::from_json("0").unwrap(),
                from: None,
            };
            let dropped = room.history.push(0, p, size);
            room.pruned(dropped);
            room.last = offset;
        }
        room
    }

    fn offsets(read: (Vec<Publication>, bool)) -> (Vec<u64>, bool) {
        (read.0.iter().map(|p| p.offset).collect(), read.1)
    }

    #[test]
    fn reading_without_since_returns_the_newest_oldest_first() {
        let room = room_with(&[2, 4, 6, 8], 10);
        assert_eq!(
            offsets(room.read(0, 100, None, Some(2))),
            (vec![6, 8], true)
        );
        assert_eq!(
            offsets(room.read(0, 100, None, None)),
            (vec![2, 4, 6, 8], true)
        );
    }

    #[test]
    fn reading_since_a_pruned_offset_is_incomplete_and_empty() {
        let room = room_with(&[2, 4, 6, 8], 2);
        assert_eq!(room.pruned_through, 4);
        assert_eq!(offsets(room.read(0, 100, Some(3), None)), (vec![], false));
        assert_eq!(
            offsets(room.read(0, 100, Some(4), Some(1))),
            (vec![6], true)
        );
        assert_eq!(offsets(room.read(0, 100, Some(8), None)), (vec![], true));
    }

    #[test]
    fn reading_since_an_expired_offset_is_incomplete_even_before_a_tick() {
        let room = room_with(&[2, 4], 10);
        assert_eq!(
            offsets(room.read(99, 100, Some(0), None)),
            (vec![2, 4], true)
        );
        assert_eq!(offsets(room.read(100, 100, Some(0), None)), (vec![], false));
        assert_eq!(offsets(room.read(100, 100, Some(4), None)), (vec![], true));
    }

    #[test]
    fn a_vacant_room_becomes_collectable_after_the_idle_ttl() {
        let mut room = Room::new(0, 0, 10);
        assert_eq!(room.next_deadline(5, 100), Some(110));
        assert!(!room.is_collectable(109, 100));
        assert!(room.is_collectable(110, 100));
        room.idem.insert(
            "k".into(),
            IdemEntry {
                offset: 1,
                expires: 50,
            },
        );
        assert_eq!(room.next_deadline(5, 100), None);
        assert!(!room.is_collectable(1000, 100));
    }
}
