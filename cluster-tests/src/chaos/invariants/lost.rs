//! `no-lost-ack`: an acknowledged publication is never lost to a subscriber that had continuous
//! coverage of its position.
//!
//! For each segment of a client's continuous coverage of a room (see [`super`]),
//! every publication acknowledged in that room and the segment's epoch at an offset strictly
//! after the segment's start and at or before the highest position the client reached in the
//! segment must have been received (live or in a subscribe reply) by that client in that
//! segment. Publications beyond the client's last position are not owed yet, so a run that
//! stops mid-stream raises no false alarm; a reply with `recovered: false` or a new epoch
//! legitimately forgives everything before it.
//!
//! A publication counts as received when its id was received; one received at the wrong
//! offset is [`super::phantom`]'s business.

use std::collections::HashSet;
use std::ops::Bound;

use super::super::history::{History, Violation};
use super::{acks_by_offset, segments};

/// The invariant's name.
pub const NAME: &str = "no-lost-ack";

/// Checks `no-lost-ack`, returning the first lost publication (by segment, then offset).
pub fn check(history: &History) -> Result<(), Violation> {
    let acks = acks_by_offset(history);
    for segment in segments(history) {
        if segment.last <= segment.start {
            continue;
        }
        let Some(room_acks) = acks.get(&(segment.room, segment.epoch)) else {
            continue;
        };
        let received: HashSet<&str> = segment
            .receipts
            .iter()
            .filter(|r| r.epoch == segment.epoch)
            .map(|r| r.id)
            .collect();
        let owed = room_acks.range((
            Bound::Excluded(segment.start),
            Bound::Included(segment.last),
        ));
        for (offset, at_offset) in owed {
            if let Some(ack) = at_offset.iter().find(|a| !received.contains(a.id)) {
                return Err(Violation {
                    invariant: NAME,
                    example: format!(
                        "client {} never received publication id {:?} (room {:?}, epoch {:?}, \
                         offset {offset}, acknowledged to client {} at {} ms), although its \
                         continuous coverage since subscribing at {} ms (after offset {}) \
                         reached offset {}",
                        segment.client,
                        ack.id,
                        segment.room,
                        segment.epoch,
                        ack.client,
                        ack.at,
                        segment.started_at,
                        segment.start,
                        segment.last,
                    ),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;

    #[test]
    fn a_correct_history_passes() {
        assert_eq!(check(&good()), Ok(()));
    }

    #[test]
    fn a_publication_skipped_inside_coverage_is_lost() {
        let h = history(vec![
            subscribed(2, "r", "e", 0, 1),
            sent(1, "r", "p1", 2),
            acked(1, "r", "p1", "e", 1, 3),
            sent(1, "r", "p2", 4),
            acked(1, "r", "p2", "e", 2, 5),
            // p1 never arrives, but p2 (after it) does.
            delivered(2, "r", "e", 2, "p2", 6),
        ]);
        let v = check(&h).expect_err("p1 is lost");
        assert_eq!(v.invariant, NAME);
        assert!(
            v.example.contains("\"p1\"") && v.example.contains("offset 1"),
            "{}",
            v.example
        );
        assert!(v.example.contains("client 2"), "{}", v.example);
    }

    #[test]
    fn a_recovery_reply_that_leaves_a_hole_loses_it() {
        let h = history(vec![
            subscribed(2, "r", "e", 0, 1),
            sent(1, "r", "p1", 2),
            acked(1, "r", "p1", "e", 3, 3),
            disconnected(2, 4),
            // Claims recovery up to offset 3 but lists nothing.
            resubscribed(2, "r", 0, true, "e", 3, &[], 5),
        ]);
        let v = check(&h).expect_err("p1 is lost");
        assert_eq!(v.invariant, NAME);
        assert!(
            v.example.contains("\"p1\"") && v.example.contains("offset 3"),
            "{}",
            v.example
        );
    }

    #[test]
    fn lost_continuity_and_the_tail_of_a_run_are_forgiven() {
        let h = history(vec![
            subscribed(2, "r", "e", 0, 1),
            sent(1, "r", "p1", 2),
            acked(1, "r", "p1", "e", 1, 3),
            disconnected(2, 4),
            // The system admits the gap: p1 is not owed.
            resubscribed(2, "r", 0, false, "e", 1, &[], 5),
            sent(1, "r", "p2", 6),
            acked(1, "r", "p2", "e", 2, 7),
            // The run ends before p2 reaches client 2: not owed either.
        ]);
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn acks_of_another_room_or_epoch_are_not_owed() {
        let h = history(vec![
            subscribed(2, "r", "e", 0, 1),
            acked(1, "other", "x", "e", 1, 2),
            acked(1, "r", "y", "old", 1, 3),
            delivered(2, "r", "e", 2, "z", 4),
        ]);
        assert_eq!(check(&h), Ok(()));
    }
}
