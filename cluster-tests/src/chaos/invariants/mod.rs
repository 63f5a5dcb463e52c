//! The invariant checkers of the chaos suite: pure functions over a recorded [`History`], each
//! returning the first counterexample it finds as a [`Violation`].
//!
//! | checker | invariant |
//! |---|---|
//! | [`lost`] | `no-lost-ack`: an acknowledged publication inside a client's continuous coverage was received |
//! | [`duplicates`] | `no-duplicate-delivery`: nothing received twice in one segment; one id, one offset |
//! | [`order`] | `offsets-increase`: received offsets increase; acks agree on id ↔ offset |
//! | [`phantom`] | `no-phantom`: everything received was sent, at its acknowledged offset |
//! | [`recovered`] | `recovered-is-true`: a `recovered: true` reply lists every publication it owes |
//! | [`presence`] | `presence-converges`: presence readings after healing match reality |
//! | [`presence_tracked`] | `presence-tracked`: a member list kept from pushes through the faults equals presence |
//! | [`state_tracked`] | `state-tracked`: a state room's map kept from snapshots and change pushes through the faults equals the broker tier's |
//! | [`leader`] | `one-leader-per-term`: at most one node leads each Raft term |
//! | [`webhooks`] | `webhook-*`: a real receiver's deliveries against the event feed (Raft runs) |
//!
//! Several checkers reason about a client's *segments* of continuous coverage of a room. A
//! segment starts at a `Subscribed` reply and continues through later replies of the same
//! client and room that say `recovered: true` in the same epoch; a reply with `recovered:
//! false` or another epoch starts a new one. The segment's start is the reply's offset, or the
//! position the client asked to recover from when the opening reply itself says `recovered:
//! true` in that epoch. Its last position is the highest of its replies' offsets and of the
//! offsets received in it. Within a segment the client should have seen every publication
//! after the start, exactly once and in order; publications received while the client has no
//! segment in the room (which a sane recorder never produces) are ignored by these checks.

use std::collections::{BTreeMap, HashMap};

use super::history::{ClientNo, Event, History, Violation};

pub mod duplicates;
pub mod leader;
pub mod lost;
pub mod order;
pub mod phantom;
pub mod presence;
pub mod presence_tracked;
pub mod recovered;
pub mod state_tracked;
pub mod webhooks;

/// One checker.
#[derive(Debug, Clone, Copy)]
pub struct Checker {
    /// The invariant's name, as reported in [`Violation::invariant`].
    pub name: &'static str,
    /// Checks a history, returning the first counterexample.
    pub check: fn(&History) -> Result<(), Violation>,
}

/// Every checker, in report order.
pub fn all() -> Vec<Checker> {
    vec![
        Checker {
            name: lost::NAME,
            check: lost::check,
        },
        Checker {
            name: duplicates::NAME,
            check: duplicates::check,
        },
        Checker {
            name: order::NAME,
            check: order::check,
        },
        Checker {
            name: phantom::NAME,
            check: phantom::check,
        },
        Checker {
            name: recovered::NAME,
            check: recovered::check,
        },
        Checker {
            name: presence::NAME,
            check: presence::check,
        },
        Checker {
            name: presence_tracked::NAME,
            check: presence_tracked::check,
        },
        Checker {
            name: state_tracked::NAME,
            check: state_tracked::check,
        },
        Checker {
            name: leader::NAME,
            check: leader::check,
        },
    ]
}

/// Runs every checker; one result per checker (name, outcome), in [`all`]'s order.
pub fn check_all(history: &History) -> Vec<(&'static str, Result<(), Violation>)> {
    all()
        .into_iter()
        .map(|c| (c.name, (c.check)(history)))
        .collect()
}

/// Of the counterexamples a checker notes, the one recorded first (lowest event index), so
/// the report shows where the history first went wrong whatever order the checker scans in.
#[derive(Default)]
struct Earliest(Option<(usize, String)>);

impl Earliest {
    /// Keeps `example` if it was recorded before the one kept so far.
    fn note(&mut self, index: usize, example: String) {
        if self.0.as_ref().is_none_or(|(i, _)| index < *i) {
            self.0 = Some((index, example));
        }
    }

    /// The outcome of `invariant`: the kept counterexample, if any.
    fn into_result(self, invariant: &'static str) -> Result<(), Violation> {
        match self.0 {
            Some((_, example)) => Err(Violation { invariant, example }),
            None => Ok(()),
        }
    }
}

/// One publication as a client received it: a live `Delivered` push or an entry of a
/// `Subscribed` reply's `publications`.
#[derive(Debug, Clone, Copy)]
struct Receipt<'a> {
    /// Index of the recording event in [`History::events`].
    index: usize,
    /// Who received it.
    client: ClientNo,
    /// Room name.
    room: &'a str,
    /// Epoch (the subscription's, or the reply's).
    epoch: &'a str,
    /// Offset.
    offset: u64,
    /// The publication's idempotency key.
    id: &'a str,
    /// When it was recorded.
    at: u64,
    /// Whether it came in a subscribe reply (rather than as a live push).
    via_reply: bool,
}

impl Receipt<'_> {
    /// "delivered" or "recovered in a subscribe reply", for messages.
    fn how(&self) -> &'static str {
        if self.via_reply {
            "recovered in a subscribe reply"
        } else {
            "delivered live"
        }
    }
}

/// Every publication any client received, in recording order (a reply's publications in reply
/// order).
/// One acknowledgement of a publication (retries with the same id collapse into one).
struct Ack<'a> {
    /// The idempotency key.
    id: &'a str,
    /// Who published it.
    client: ClientNo,
    /// When the acknowledgement was first recorded.
    at: u64,
}

/// Acknowledged publications by (room, epoch), then offset: one entry per id, with the
/// earliest time it was acknowledged.
type AcksByOffset<'a> = BTreeMap<(&'a str, &'a str), BTreeMap<u64, Vec<Ack<'a>>>>;

/// Indexes every `PublishAcked` of `history` (see [`AcksByOffset`]).
fn acks_by_offset(history: &History) -> AcksByOffset<'_> {
    let mut acks = AcksByOffset::new();
    for event in &history.events {
        if let Event::PublishAcked {
            client,
            room,
            id,
            epoch,
            offset,
            at,
            ..
        } = event
        {
            let at_offset = acks
                .entry((room.as_str(), epoch.as_str()))
                .or_default()
                .entry(*offset)
                .or_default();
            match at_offset.iter_mut().find(|a| a.id == id) {
                Some(a) => a.at = a.at.min(*at),
                None => at_offset.push(Ack {
                    id,
                    client: *client,
                    at: *at,
                }),
            }
        }
    }
    acks
}

fn receipts(history: &History) -> Vec<Receipt<'_>> {
    let mut out = Vec::new();
    for (index, event) in history.events.iter().enumerate() {
        match event {
            Event::Subscribed {
                client,
                room,
                epoch,
                publications,
                at,
                ..
            } => {
                out.extend(publications.iter().map(|(offset, id)| Receipt {
                    index,
                    client: *client,
                    room,
                    epoch,
                    offset: *offset,
                    id,
                    at: *at,
                    via_reply: true,
                }));
            }
            Event::Delivered {
                client,
                room,
                epoch,
                offset,
                id,
                at,
            } => out.push(Receipt {
                index,
                client: *client,
                room,
                epoch,
                offset: *offset,
                id,
                at: *at,
                via_reply: false,
            }),
            _ => {}
        }
    }
    out
}

/// A stretch of one client's continuous coverage of one room in one epoch.
///
/// It starts at a `Subscribed` reply (at the position the client recovered from when that
/// reply says `recovered: true` in the asked epoch, else at the reply's offset) and takes in
/// every later reply of the same client and room with `recovered: true` and the same epoch,
/// plus every publication received meanwhile, until a reply with `recovered: false` or another
/// epoch starts the next segment.
#[derive(Debug, Clone)]
struct Segment<'a> {
    /// Whose coverage.
    client: ClientNo,
    /// Room name.
    room: &'a str,
    /// The epoch every reply of the segment reported.
    epoch: &'a str,
    /// The client has (or is owed) everything up to this offset: later publications must come.
    start: u64,
    /// When the opening reply was recorded.
    started_at: u64,
    /// The highest position the client got in the segment: the maximum of its replies'
    /// offsets and of the offsets received in this epoch.
    last: u64,
    /// What the client received in the segment, in receive order.
    receipts: Vec<Receipt<'a>>,
}

/// Every segment of every client and room, ordered by the recording of their opening reply.
/// Publications received while the client had no segment in that room (which a sane recorder
/// never produces) belong to none.
fn segments(history: &History) -> Vec<Segment<'_>> {
    let mut done: Vec<(usize, Segment<'_>)> = Vec::new();
    // (client, room) -> (index of the opening event, segment)
    let mut open: HashMap<(ClientNo, &str), (usize, Segment<'_>)> = HashMap::new();
    let mut received = receipts(history).into_iter().peekable();
    for (index, event) in history.events.iter().enumerate() {
        if let Event::Subscribed {
            client,
            room,
            recover,
            recovered,
            epoch,
            offset,
            at,
            ..
        } = event
        {
            let key = (*client, room.as_str());
            let continues = *recovered
                && open
                    .get(&key)
                    .is_some_and(|(_, s)| s.epoch == epoch.as_str());
            if continues {
                if let Some((_, s)) = open.get_mut(&key) {
                    s.last = s.last.max(*offset);
                }
            } else {
                let start = match recover {
                    Some((e, o)) if *recovered && e == epoch => *o,
                    _ => *offset,
                };
                let segment = Segment {
                    client: *client,
                    room,
                    epoch,
                    start,
                    started_at: *at,
                    last: start.max(*offset),
                    receipts: Vec::new(),
                };
                if let Some(previous) = open.insert(key, (index, segment)) {
                    done.push(previous);
                }
            }
        }
        // This event's receipts (a reply's publications, or a push) go to the segment open now.
        while let Some(r) = received.next_if(|r| r.index == index) {
            if let Some((_, s)) = open.get_mut(&(r.client, r.room)) {
                if r.epoch == s.epoch {
                    s.last = s.last.max(r.offset);
                }
                s.receipts.push(r);
            }
        }
    }
    done.extend(open.into_values());
    done.sort_by_key(|(index, _)| *index);
    done.into_iter().map(|(_, s)| s).collect()
}

/// Small constructors for hand-written histories in the checkers' unit tests.
#[cfg(test)]
mod test_util {
    use super::super::history::{Event, History};

    /// A history of `events`.
    pub(super) fn history(events: Vec<Event>) -> History {
        History { events }
    }

    /// `PublishSent`.
    pub(super) fn sent(client: u32, room: &str, id: &str, at: u64) -> Event {
        Event::PublishSent {
            client,
            room: room.into(),
            id: id.into(),
            at,
        }
    }

    /// `PublishAcked`, not a duplicate.
    pub(super) fn acked(
        client: u32,
        room: &str,
        id: &str,
        epoch: &str,
        offset: u64,
        at: u64,
    ) -> Event {
        Event::PublishAcked {
            client,
            room: room.into(),
            id: id.into(),
            epoch: epoch.into(),
            offset,
            duplicate: false,
            at,
        }
    }

    /// A fresh `Subscribed` (no recovery asked, `recovered: false`, no publications).
    pub(super) fn subscribed(client: u32, room: &str, epoch: &str, offset: u64, at: u64) -> Event {
        Event::Subscribed {
            client,
            room: room.into(),
            recover: None,
            recovered: false,
            epoch: epoch.into(),
            offset,
            publications: Vec::new(),
            at,
        }
    }

    /// A recovering `Subscribed`: asked to recover from `from` (in `epoch`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn resubscribed(
        client: u32,
        room: &str,
        from: u64,
        recovered: bool,
        epoch: &str,
        offset: u64,
        publications: &[(u64, &str)],
        at: u64,
    ) -> Event {
        Event::Subscribed {
            client,
            room: room.into(),
            recover: Some((epoch.into(), from)),
            recovered,
            epoch: epoch.into(),
            offset,
            publications: publications
                .iter()
                .map(|(o, id)| (*o, id.to_string()))
                .collect(),
            at,
        }
    }

    /// `Delivered`.
    pub(super) fn delivered(
        client: u32,
        room: &str,
        epoch: &str,
        offset: u64,
        id: &str,
        at: u64,
    ) -> Event {
        Event::Delivered {
            client,
            room: room.into(),
            epoch: epoch.into(),
            offset,
            id: id.into(),
            at,
        }
    }

    /// `Disconnected` (abnormal closure).
    pub(super) fn disconnected(client: u32, at: u64) -> Event {
        Event::Disconnected {
            client,
            code: 1006,
            at,
        }
    }

    /// A correct history of one publisher (client 1) and one subscriber (client 2) in room
    /// `r`, epoch `e`: the subscriber misses `p2` and `p3` while disconnected and recovers
    /// them, then gets `p4` live; `p3` needed a retry.
    pub(super) fn good() -> History {
        history(vec![
            subscribed(2, "r", "e", 0, 1),
            sent(1, "r", "p1", 2),
            acked(1, "r", "p1", "e", 1, 3),
            delivered(2, "r", "e", 1, "p1", 4),
            disconnected(2, 5),
            sent(1, "r", "p2", 6),
            acked(1, "r", "p2", "e", 2, 7),
            sent(1, "r", "p3", 8),
            Event::PublishFailed {
                client: 1,
                room: "r".into(),
                id: "p3".into(),
                code: 0,
                at: 9,
            },
            sent(1, "r", "p3", 10),
            Event::PublishAcked {
                client: 1,
                room: "r".into(),
                id: "p3".into(),
                epoch: "e".into(),
                offset: 4,
                duplicate: true,
                at: 11,
            },
            resubscribed(2, "r", 1, true, "e", 4, &[(2, "p2"), (4, "p3")], 12),
            sent(1, "r", "p4", 13),
            delivered(2, "r", "e", 6, "p4", 14),
            acked(1, "r", "p4", "e", 6, 15),
            // Sent and acknowledged after the subscriber's last position: not owed yet.
            sent(1, "r", "p5", 16),
            acked(1, "r", "p5", "e", 7, 17),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;

    #[test]
    fn a_correct_history_passes_every_checker() {
        let results = check_all(&good());
        assert_eq!(results.len(), 9);
        for (name, result) in results {
            assert_eq!(result, Ok(()), "{name}");
        }
    }

    #[test]
    fn names_are_distinct_and_match_the_violations() {
        let names: Vec<_> = all().iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "no-lost-ack",
                "no-duplicate-delivery",
                "offsets-increase",
                "no-phantom",
                "recovered-is-true",
                "presence-converges",
                "presence-tracked",
                "state-tracked",
                "one-leader-per-term",
            ]
        );
    }

    #[test]
    fn segments_follow_recovery_and_break_on_a_lost_continuity_or_new_epoch() {
        let h = history(vec![
            subscribed(1, "r", "e", 3, 1),
            delivered(1, "r", "e", 5, "a", 2),
            resubscribed(1, "r", 5, true, "e", 8, &[(7, "b")], 3),
            delivered(1, "r", "e", 9, "c", 4),
            resubscribed(1, "r", 9, false, "e", 12, &[], 5),
            // Recovered, but into another epoch: a new log, a new segment from the reply's offset.
            Event::Subscribed {
                client: 1,
                room: "r".into(),
                recover: Some(("e".into(), 12)),
                recovered: true,
                epoch: "f".into(),
                offset: 2,
                publications: Vec::new(),
                at: 6,
            },
            delivered(1, "r", "f", 3, "d", 7),
            // Another client's push does not land in client 1's segments.
            delivered(2, "r", "f", 3, "d", 8),
        ]);
        let s = segments(&h);
        let summary: Vec<_> = s
            .iter()
            .map(|s| {
                (
                    s.epoch,
                    s.start,
                    s.last,
                    s.receipts.iter().map(|r| r.id).collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("e", 3, 9, vec!["a", "b", "c"]),
                ("e", 12, 12, vec![]),
                ("f", 2, 3, vec!["d"]),
            ]
        );
    }
}
