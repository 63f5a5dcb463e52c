//! `offsets-increase`: a room's log is one sequence, and every client sees it in order.
//!
//! - Within one segment of a client's continuous coverage of a room (see
//!   [`super`]), the offsets the client receives strictly increase in receive order
//!   (a reply's publications in reply order, then live deliveries, in recording order).
//! - Across all acknowledgements, two different ids are never acknowledged at the same (room,
//!   epoch, offset), and the same id (idempotent retries) is always acknowledged at the same
//!   offset of a room and epoch. Different epochs are different logs: a retry acknowledged in
//!   a new epoch is not compared with the old one.

use std::collections::HashMap;

use super::super::history::{ClientNo, Event, History, Violation};
use super::{Earliest, segments};

/// The invariant's name.
pub const NAME: &str = "offsets-increase";

/// One acknowledgement, as remembered for comparison.
#[derive(Clone, Copy)]
struct Ack<'a> {
    /// The idempotency key.
    id: &'a str,
    /// The acknowledged offset.
    offset: u64,
    /// Who published.
    client: ClientNo,
    /// When it was recorded.
    at: u64,
}

/// Checks `offsets-increase`, returning the counterexample recorded first.
pub fn check(history: &History) -> Result<(), Violation> {
    let mut found = Earliest::default();

    for segment in segments(history) {
        let mut in_epoch = segment.receipts.iter().filter(|r| r.epoch == segment.epoch);
        let Some(mut previous) = in_epoch.next() else {
            continue;
        };
        for r in in_epoch {
            if r.offset <= previous.offset {
                found.note(
                    r.index,
                    format!(
                        "client {} received room {:?} epoch {:?} offset {} (id {:?}, {} at {} \
                         ms) after offset {} (id {:?}, {} at {} ms) in one continuous \
                         subscription",
                        r.client,
                        r.room,
                        r.epoch,
                        r.offset,
                        r.id,
                        r.how(),
                        r.at,
                        previous.offset,
                        previous.id,
                        previous.how(),
                        previous.at,
                    ),
                );
                break;
            }
            previous = r;
        }
    }

    let mut by_position: HashMap<(&str, &str, u64), Ack<'_>> = HashMap::new();
    let mut by_id: HashMap<(&str, &str, &str), Ack<'_>> = HashMap::new();
    for (index, event) in history.events.iter().enumerate() {
        let Event::PublishAcked {
            client,
            room,
            id,
            epoch,
            offset,
            at,
            ..
        } = event
        else {
            continue;
        };
        let ack = Ack {
            id,
            offset: *offset,
            client: *client,
            at: *at,
        };
        let first = *by_position.entry((room, epoch, *offset)).or_insert(ack);
        if first.id != ack.id {
            found.note(
                index,
                format!(
                    "room {room:?} epoch {epoch:?} offset {offset} was acknowledged for two \
                     publications: id {:?} (to client {} at {} ms) and id {id:?} (to client \
                     {client} at {at} ms)",
                    first.id, first.client, first.at,
                ),
            );
        }
        let first = *by_id.entry((room, epoch, id)).or_insert(ack);
        if first.offset != ack.offset {
            found.note(
                index,
                format!(
                    "publication id {id:?} (room {room:?}, epoch {epoch:?}) was acknowledged at \
                     two offsets: {} (to client {} at {} ms) and {offset} (to client {client} at \
                     {at} ms)",
                    first.offset, first.client, first.at,
                ),
            );
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
    fn a_delivery_going_backwards_is_caught() {
        let h = history(vec![
            subscribed(2, "r", "e", 0, 1),
            delivered(2, "r", "e", 5, "p5", 2),
            delivered(2, "r", "e", 4, "p4", 3),
        ]);
        let v = check(&h).expect_err("4 after 5");
        assert_eq!(v.invariant, NAME);
        assert!(
            v.example.contains("offset 4") && v.example.contains("\"p4\""),
            "{}",
            v.example
        );
        assert!(v.example.contains("client 2"), "{}", v.example);
    }

    #[test]
    fn a_live_push_older_than_the_recovered_publications_is_caught() {
        let h = history(vec![
            subscribed(2, "r", "e", 0, 1),
            disconnected(2, 2),
            resubscribed(2, "r", 0, true, "e", 3, &[(1, "p1"), (3, "p3")], 3),
            delivered(2, "r", "e", 2, "p2", 4),
        ]);
        let v = check(&h).expect_err("2 after 3");
        assert_eq!(v.invariant, NAME);
        assert!(
            v.example.contains("offset 2") && v.example.contains("\"p2\""),
            "{}",
            v.example
        );
    }

    #[test]
    fn a_new_segment_may_start_lower() {
        let h = history(vec![
            subscribed(2, "r", "e", 0, 1),
            delivered(2, "r", "e", 5, "p5", 2),
            subscribed(2, "r", "f", 0, 3),
            delivered(2, "r", "f", 1, "q1", 4),
        ]);
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn two_ids_at_one_offset_are_caught() {
        let h = history(vec![
            acked(1, "r", "p1", "e", 7, 1),
            acked(3, "r", "p2", "e", 7, 2),
        ]);
        let v = check(&h).expect_err("offset 7 twice");
        assert_eq!(v.invariant, NAME);
        assert!(
            v.example.contains("offset 7") && v.example.contains("\"p2\""),
            "{}",
            v.example
        );
    }

    #[test]
    fn a_retry_acknowledged_at_another_offset_is_caught() {
        let h = history(vec![
            acked(1, "r", "p1", "e", 7, 1),
            acked(1, "r", "p1", "e", 8, 2),
            // Same id in a new epoch: a new log, not compared.
            acked(1, "r", "p1", "f", 1, 3),
        ]);
        let v = check(&h).expect_err("p1 at 7 and 8");
        assert_eq!(v.invariant, NAME);
        assert!(
            v.example.contains("\"p1\"") && v.example.contains("8"),
            "{}",
            v.example
        );
    }
}
