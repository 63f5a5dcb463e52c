//! Garbage-collection watermarks: what a recreated room must assume it may have lost.
//!
//! When an idle room is forgotten, the publications of that incarnation are gone. A client that
//! still holds a position from it and asks for "everything since" the recreated room must get
//! `complete = false`. Remembering every collected room would grow without bound, so rooms are
//! hashed onto a fixed number of buckets that each remember the global sequence number at the
//! last collection of any room in the bucket. A new room starts with `pruned_through` at its
//! bucket's watermark: conservative (a collision may make a recovery fail needlessly), never
//! wrong.

use plaza_proto::RoomName;
use serde::{Deserialize, Serialize};

/// Number of watermark buckets.
pub const GC_BUCKETS: usize = 1024;

/// One watermark per bucket of room names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Watermarks(Vec<u64>);

impl Watermarks {
    /// All buckets at `seq`: nothing at or below `seq` can be vouched for.
    pub(super) fn new(seq: u64) -> Self {
        Self(vec![seq; GC_BUCKETS])
    }

    /// Checks a restored table; one of the wrong shape is replaced by a conservative one.
    pub(super) fn restored(self, seq: u64) -> Self {
        if self.0.len() == GC_BUCKETS {
            self
        } else {
            Self::new(seq)
        }
    }

    /// The watermark of `room`'s bucket (`fallback` if the table is somehow short).
    pub(super) fn get(&self, room: &RoomName, fallback: u64) -> u64 {
        self.0.get(bucket(room)).copied().unwrap_or(fallback)
    }

    /// Records that a room of `room`'s bucket was collected when the sequence was at `seq`.
    pub(super) fn collected(&mut self, room: &RoomName, seq: u64) {
        if let Some(w) = self.0.get_mut(bucket(room)) {
            *w = (*w).max(seq);
        }
    }
}

/// The bucket of `room`: FNV-1a, so it is the same on every node and across restarts (unlike
/// std's randomly keyed hasher).
fn bucket(room: &RoomName) -> usize {
    (fnv1a(room.as_str().as_bytes()) % GC_BUCKETS as u64) as usize
}

/// 64-bit FNV-1a.
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET_BASIS, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn collecting_a_room_raises_only_its_bucket() {
        let mut w = Watermarks::new(0);
        let (a, b) = (
            RoomName::new("chat:a").unwrap(),
            RoomName::new("chat:b").unwrap(),
        );
        assert_ne!(bucket(&a), bucket(&b));
        w.collected(&a, 42);
        assert_eq!(w.get(&a, 0), 42);
        assert_eq!(w.get(&b, 0), 0);
        w.collected(&a, 7);
        assert_eq!(w.get(&a, 0), 42, "watermarks never go down");
    }

    #[test]
    fn a_restored_table_of_the_wrong_shape_becomes_conservative() {
        let w = Watermarks(vec![1, 2, 3]).restored(99);
        assert_eq!(w.get(&RoomName::new("x").unwrap(), 0), 99);
    }
}
