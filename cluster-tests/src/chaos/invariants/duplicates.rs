//! `no-duplicate-delivery`: exactly-once within continuous coverage, and one position per
//! publication.
//!
//! - Within one segment of a client's continuous coverage of a room (see
//!   [`super`]), the client never receives the same (room, epoch, offset) twice,
//!   counting both live deliveries and subscribe replies' publications. (Across segments —
//!   after a reply with `recovered: false` — receiving something again is allowed.)
//! - The same publication id is never received, by anyone, at two different offsets of the
//!   same room and epoch (a retry the system failed to recognise as one). Positions of
//!   different epochs belong to different logs and are not compared.

use std::collections::HashMap;

use super::super::history::{History, Violation};
use super::{Earliest, Receipt, receipts, segments};

/// The invariant's name.
pub const NAME: &str = "no-duplicate-delivery";

/// Checks `no-duplicate-delivery`, returning the counterexample recorded first.
pub fn check(history: &History) -> Result<(), Violation> {
    let mut found = Earliest::default();

    for segment in segments(history) {
        let mut seen: HashMap<(&str, u64), Receipt<'_>> = HashMap::new();
        for r in &segment.receipts {
            if let Some(first) = seen.get(&(r.epoch, r.offset)) {
                found.note(
                    r.index,
                    format!(
                        "client {} received room {:?} epoch {:?} offset {} twice in one \
                         continuous subscription: id {:?} {} at {} ms, then id {:?} {} at {} ms",
                        r.client,
                        r.room,
                        r.epoch,
                        r.offset,
                        first.id,
                        first.how(),
                        first.at,
                        r.id,
                        r.how(),
                        r.at,
                    ),
                );
                break;
            }
            seen.insert((r.epoch, r.offset), *r);
        }
    }

    let mut position: HashMap<(&str, &str, &str), Receipt<'_>> = HashMap::new();
    for r in receipts(history) {
        match position.get(&(r.room, r.epoch, r.id)) {
            None => {
                position.insert((r.room, r.epoch, r.id), r);
            }
            Some(first) if first.offset != r.offset => {
                found.note(
                    r.index,
                    format!(
                        "publication id {:?} (room {:?}, epoch {:?}) was received at two \
                         offsets: {} by client {} at {} ms ({}), then {} by client {} at {} ms \
                         ({})",
                        r.id,
                        r.room,
                        r.epoch,
                        first.offset,
                        first.client,
                        first.at,
                        first.how(),
                        r.offset,
                        r.client,
                        r.at,
                        r.how(),
                    ),
                );
                break;
            }
            Some(_) => {}
        }
    }

    found.into_result(NAME)
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
    fn a_live_push_repeating_a_recovered_publication_is_a_duplicate() {
        let h = history(vec![
            subscribed(2, "r", "e", 0, 1),
            disconnected(2, 2),
            resubscribed(2, "r", 0, true, "e", 1, &[(1, "p1")], 3),
            // The edge replays p1 live as well.
            delivered(2, "r", "e", 1, "p1", 4),
        ]);
        let v = check(&h).expect_err("p1 twice");
        assert_eq!(v.invariant, NAME);
        assert!(
            v.example.contains("offset 1") && v.example.contains("\"p1\""),
            "{}",
            v.example
        );
        assert!(v.example.contains("client 2"), "{}", v.example);
    }

    #[test]
    fn receiving_again_after_lost_continuity_is_allowed() {
        let h = history(vec![
            subscribed(2, "r", "e", 0, 1),
            delivered(2, "r", "e", 1, "p1", 2),
            disconnected(2, 3),
            resubscribed(2, "r", 1, false, "e", 0, &[], 4),
            delivered(2, "r", "e", 1, "p1", 5),
        ]);
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn one_id_at_two_offsets_is_caught_across_clients() {
        let h = history(vec![
            subscribed(2, "r", "e", 0, 1),
            subscribed(3, "r", "e", 0, 2),
            delivered(2, "r", "e", 1, "p1", 3),
            delivered(3, "r", "e", 2, "p1", 4),
        ]);
        let v = check(&h).expect_err("p1 at 1 and 2");
        assert_eq!(v.invariant, NAME);
        assert!(
            v.example.contains("\"p1\"") && v.example.contains("then 2"),
            "{}",
            v.example
        );
    }

    #[test]
    fn one_id_in_two_epochs_is_not_compared() {
        let h = history(vec![
            subscribed(2, "r", "e", 0, 1),
            delivered(2, "r", "e", 1, "p1", 2),
            subscribed(2, "r", "f", 0, 3),
            delivered(2, "r", "f", 5, "p1", 4),
        ]);
        assert_eq!(check(&h), Ok(()));
    }
}
