//! One room's history: the newest publications, bounded by count and age.
//!
//! Entries are appended in offset order with the (monotonic) time they were published, so both
//! the size bound and the age bound always drop a prefix. Every dropped offset is reported to
//! the caller, which raises the room's `pruned_through` watermark: that is what lets a reader
//! tell "nothing after X" apart from "something after X was lost".

use std::collections::VecDeque;

use plaza_proto::Publication;
use serde::{Deserialize, Serialize};

/// A publication and the time it was stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    /// Milliseconds on the state machine's clock.
    at: u64,
    publication: Publication,
}

/// The retained publications of one room, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct History {
    entries: VecDeque<Entry>,
}

impl History {
    /// Appends `publication` and trims to `size` entries. Returns the highest offset dropped,
    /// if any (with `size == 0` that is the publication itself).
    pub(super) fn push(&mut self, at: u64, publication: Publication, size: usize) -> Option<u64> {
        self.entries.push_back(Entry { at, publication });
        let mut dropped = None;
        while self.entries.len() > size {
            match self.entries.pop_front() {
                Some(e) => dropped = Some(e.publication.offset),
                None => break,
            }
        }
        dropped
    }

    /// Drops the entries that are expired at `now`. Returns the highest offset dropped.
    pub(super) fn expire(&mut self, now: u64, ttl: u64) -> Option<u64> {
        let mut dropped = None;
        while self
            .entries
            .front()
            .is_some_and(|e| is_expired(e.at, now, ttl))
        {
            dropped = self.entries.pop_front().map(|e| e.publication.offset);
        }
        dropped
    }

    /// When the oldest entry expires, if there is one.
    pub(super) fn next_expiry(&self, ttl: u64) -> Option<u64> {
        self.entries.front().map(|e| e.at.saturating_add(ttl))
    }

    /// Whether no entries are held (expired or not).
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The highest offset among entries held but already expired at `now` (they are about to be
    /// dropped by the next tick, and queries must treat them as gone).
    pub(super) fn expired_through(&self, now: u64, ttl: u64) -> Option<u64> {
        let n = self.first_live(now, ttl);
        n.checked_sub(1)
            .and_then(|i| self.entries.get(i))
            .map(|e| e.publication.offset)
    }

    /// The unexpired publications, oldest first.
    pub(super) fn live(&self, now: u64, ttl: u64) -> impl DoubleEndedIterator<Item = &Publication> {
        self.entries
            .range(self.first_live(now, ttl)..)
            .map(|e| &e.publication)
    }

    /// Index of the first unexpired entry. Expired entries form a prefix because `at` never
    /// decreases along the ring.
    fn first_live(&self, now: u64, ttl: u64) -> usize {
        self.entries.partition_point(|e| is_expired(e.at, now, ttl))
    }
}

/// A publication stored at `at` is expired once `ttl` has fully elapsed.
fn is_expired(at: u64, now: u64, ttl: u64) -> bool {
    now >= at.saturating_add(ttl)
}

#[cfg(test)]
mod tests {
    use plaza_proto::Payload;

    use super::*;

    fn publication(offset: u64) -> Publication {
        Publication {
            offset,
            data: Payload::from_json("1").unwrap(),
            from: None,
        }
    }

    fn offsets<'a>(it: impl Iterator<Item = &'a Publication>) -> Vec<u64> {
        it.map(|p| p.offset).collect()
    }

    #[test]
    fn pushing_past_the_size_drops_the_oldest_and_reports_it() {
        let mut h = History::default();
        assert_eq!(h.push(0, publication(1), 2), None);
        assert_eq!(h.push(0, publication(3), 2), None);
        assert_eq!(h.push(0, publication(7), 2), Some(1));
        assert_eq!(offsets(h.live(0, 10)), [3, 7]);
    }

    #[test]
    fn a_zero_size_history_keeps_nothing_and_reports_every_publication() {
        let mut h = History::default();
        assert_eq!(h.push(0, publication(5), 0), Some(5));
        assert!(h.is_empty());
    }

    #[test]
    fn expired_entries_are_hidden_before_they_are_dropped() {
        let mut h = History::default();
        h.push(0, publication(1), 10);
        h.push(5, publication(2), 10);
        assert_eq!(h.expired_through(9, 10), None);
        assert_eq!(offsets(h.live(10, 10)), [2]);
        assert_eq!(h.expired_through(10, 10), Some(1));
        assert_eq!(h.next_expiry(10), Some(10));
        assert_eq!(h.expire(15, 10), Some(2));
        assert!(h.is_empty());
        assert_eq!(h.next_expiry(10), None);
    }
}
