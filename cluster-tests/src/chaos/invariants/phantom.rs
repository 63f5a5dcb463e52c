//! `no-phantom`: clients receive only what was really published, where it was acknowledged.
//!
//! Every publication a client received (live, or in a subscribe reply) has an id some client
//! sent to that room (a `PublishSent` recorded before the receipt), and when that id was
//! acknowledged in the receipt's epoch, it was received at the acknowledged offset.
//! (Acknowledgements recorded after the receipt count too: a push can beat its ack.)

use std::collections::HashMap;

use super::super::history::{ClientNo, Event, History, Violation};
use super::receipts;

/// The invariant's name.
pub const NAME: &str = "no-phantom";

/// Checks `no-phantom`, returning the first phantom receipt.
pub fn check(history: &History) -> Result<(), Violation> {
    // (room, id) -> index of the first PublishSent.
    let mut first_sent: HashMap<(&str, &str), usize> = HashMap::new();
    // (room, epoch, id) -> first acknowledgement (offset, client, at).
    let mut acked: HashMap<(&str, &str, &str), (u64, ClientNo, u64)> = HashMap::new();
    for (index, event) in history.events.iter().enumerate() {
        match event {
            Event::PublishSent { room, id, .. } => {
                first_sent.entry((room, id)).or_insert(index);
            }
            Event::PublishAcked {
                client,
                room,
                id,
                epoch,
                offset,
                at,
                ..
            } => {
                acked
                    .entry((room, epoch, id))
                    .or_insert((*offset, *client, *at));
            }
            _ => {}
        }
    }
    for r in receipts(history) {
        if first_sent
            .get(&(r.room, r.id))
            .is_none_or(|sent| *sent > r.index)
        {
            return Err(Violation {
                invariant: NAME,
                example: format!(
                    "client {} received id {:?} at room {:?} epoch {:?} offset {} ({} at {} \
                     ms), but no client had sent a publication with that id to that room",
                    r.client,
                    r.id,
                    r.room,
                    r.epoch,
                    r.offset,
                    r.how(),
                    r.at,
                ),
            });
        }
        if let Some((offset, client, at)) = acked.get(&(r.room, r.epoch, r.id))
            && *offset != r.offset
        {
            return Err(Violation {
                invariant: NAME,
                example: format!(
                    "client {} received id {:?} at room {:?} epoch {:?} offset {} ({} at {} \
                     ms), but it was acknowledged at offset {offset} (to client {client} at \
                     {at} ms)",
                    r.client,
                    r.id,
                    r.room,
                    r.epoch,
                    r.offset,
                    r.how(),
                    r.at,
                ),
            });
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
    fn an_id_nobody_sent_is_a_phantom() {
        let h = history(vec![
            subscribed(2, "r", "e", 0, 1),
            sent(1, "other-room", "ghost", 2),
            delivered(2, "r", "e", 1, "ghost", 3),
        ]);
        let v = check(&h).expect_err("ghost was never sent to r");
        assert_eq!(v.invariant, NAME);
        assert!(
            v.example.contains("\"ghost\"") && v.example.contains("offset 1"),
            "{}",
            v.example
        );
    }

    #[test]
    fn a_publication_received_before_it_was_sent_is_a_phantom() {
        let h = history(vec![
            subscribed(2, "r", "e", 0, 1),
            delivered(2, "r", "e", 1, "p1", 2),
            sent(1, "r", "p1", 3),
        ]);
        let v = check(&h).expect_err("p1 arrived before it was sent");
        assert_eq!(v.invariant, NAME);
        assert!(v.example.contains("\"p1\""), "{}", v.example);
    }

    #[test]
    fn a_publication_received_away_from_its_acked_offset_is_caught() {
        let h = history(vec![
            subscribed(2, "r", "e", 0, 1),
            sent(1, "r", "p1", 2),
            resubscribed(2, "r", 0, true, "e", 4, &[(4, "p1")], 3),
            acked(1, "r", "p1", "e", 3, 4),
        ]);
        let v = check(&h).expect_err("p1 received at 4, acked at 3");
        assert_eq!(v.invariant, NAME);
        assert!(
            v.example.contains("\"p1\"") && v.example.contains("offset 3"),
            "{}",
            v.example
        );
    }
}
