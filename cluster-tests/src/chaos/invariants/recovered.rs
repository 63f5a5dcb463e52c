//! `recovered-is-true`: a subscribe reply that claims `recovered: true` delivers what it owes.
//!
//! For every `Subscribed` that asked to recover from `(e, o)` and got `recovered: true`:
//!
//! - `e` is the reply's epoch (recovering across a new log is impossible);
//! - the reply's publications all lie in `(o, reply offset]`, in strictly increasing order;
//! - every publication of that room and epoch acknowledged at an offset in `(o, reply offset]`
//!   *before the reply was recorded* (`PublishAcked.at < Subscribed.at`) is among the reply's
//!   publications, at its acknowledged offset.
//!
//! Acknowledgements recorded at or after the reply are not owed by it (the recorder may see
//! the ack late); [`super::lost`] still checks that they reach the client.

use std::ops::Bound;

use super::super::history::{Event, History, Violation};
use super::acks_by_offset;

/// The invariant's name.
pub const NAME: &str = "recovered-is-true";

/// Checks `recovered-is-true`, returning the first false recovery.
pub fn check(history: &History) -> Result<(), Violation> {
    let acks = acks_by_offset(history);

    for event in &history.events {
        let Event::Subscribed {
            client,
            room,
            recover: Some((from_epoch, from)),
            recovered: true,
            epoch,
            offset,
            publications,
            at,
        } = event
        else {
            continue;
        };
        let fail = |what: String| {
            Err(Violation {
                invariant: NAME,
                example: format!(
                    "client {client} subscribed to room {room:?} at {at} ms recovering from \
                     epoch {from_epoch:?} offset {from}; the reply (epoch {epoch:?}, offset \
                     {offset}) said recovered: true, but {what}"
                ),
            })
        };
        if from_epoch != epoch {
            return fail("the epoch changed".into());
        }
        let mut previous: Option<u64> = None;
        for (o, id) in publications {
            if *o <= *from || *o > *offset {
                return fail(format!(
                    "it listed id {id:?} at offset {o}, outside ({from}, {offset}]"
                ));
            }
            if let Some(p) = previous
                && *o <= p
            {
                return fail(format!(
                    "it listed id {id:?} at offset {o} after offset {p}"
                ));
            }
            previous = Some(*o);
        }
        if *offset <= *from {
            continue;
        }
        let Some(room_acks) = acks.get(&(room.as_str(), epoch.as_str())) else {
            continue;
        };
        let owed = room_acks.range((Bound::Excluded(*from), Bound::Included(*offset)));
        for (ack_offset, at_offset) in owed {
            for ack in at_offset.iter().filter(|a| a.at < *at) {
                if publications
                    .iter()
                    .any(|(o, id)| o == ack_offset && id == ack.id)
                {
                    continue;
                }
                let listed = match publications.iter().find(|(_, id)| id == ack.id) {
                    Some((o, _)) => format!("listed it at offset {o}"),
                    None => "did not list it".to_string(),
                };
                return fail(format!(
                    "id {:?}, acknowledged at offset {ack_offset} (to client {} at {} ms), \
                     is owed and the reply {listed}",
                    ack.id, ack.client, ack.at,
                ));
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
    fn a_publication_acked_before_the_reply_and_missing_from_it_is_caught() {
        let h = history(vec![
            acked(1, "r", "p2", "e", 2, 1),
            acked(1, "r", "p3", "e", 3, 2),
            resubscribed(2, "r", 1, true, "e", 3, &[(3, "p3")], 5),
        ]);
        let v = check(&h).expect_err("p2 missing");
        assert_eq!(v.invariant, NAME);
        assert!(
            v.example.contains("\"p2\"") && v.example.contains("offset 2"),
            "{}",
            v.example
        );
        assert!(v.example.contains("client 2"), "{}", v.example);
    }

    #[test]
    fn a_publication_acked_after_the_reply_is_not_owed_by_it() {
        let h = history(vec![
            resubscribed(2, "r", 1, true, "e", 3, &[(3, "p3")], 5),
            acked(1, "r", "p2", "e", 2, 6),
            acked(1, "r", "p3", "e", 3, 7),
        ]);
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn publications_outside_the_window_or_out_of_order_are_caught() {
        let outside = history(vec![resubscribed(2, "r", 4, true, "e", 6, &[(4, "p4")], 1)]);
        let v = check(&outside).expect_err("4 is not after 4");
        assert_eq!(v.invariant, NAME);
        assert!(
            v.example.contains("\"p4\"") && v.example.contains("offset 4"),
            "{}",
            v.example
        );

        let beyond = history(vec![resubscribed(2, "r", 4, true, "e", 6, &[(7, "p7")], 1)]);
        let v = check(&beyond).expect_err("7 is past the reply's offset");
        assert!(
            v.example.contains("\"p7\"") && v.example.contains("offset 7"),
            "{}",
            v.example
        );

        let unordered = history(vec![resubscribed(
            2,
            "r",
            4,
            true,
            "e",
            6,
            &[(6, "p6"), (5, "p5")],
            1,
        )]);
        let v = check(&unordered).expect_err("5 after 6");
        assert!(
            v.example.contains("\"p5\"") && v.example.contains("offset 5"),
            "{}",
            v.example
        );
    }

    #[test]
    fn recovering_across_an_epoch_change_is_caught() {
        let h = history(vec![Event::Subscribed {
            client: 2,
            room: "r".into(),
            recover: Some(("e".into(), 4)),
            recovered: true,
            epoch: "f".into(),
            offset: 0,
            publications: Vec::new(),
            at: 1,
        }]);
        let v = check(&h).expect_err("epoch changed");
        assert_eq!(v.invariant, NAME);
        assert!(
            v.example.contains("offset 4") && v.example.contains("\"f\""),
            "{}",
            v.example
        );
    }

    #[test]
    fn a_reply_admitting_lost_continuity_owes_nothing() {
        let h = history(vec![
            acked(1, "r", "p2", "e", 2, 1),
            resubscribed(2, "r", 1, false, "e", 3, &[], 5),
        ]);
        assert_eq!(check(&h), Ok(()));
    }
}
