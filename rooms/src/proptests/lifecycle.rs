//! The lifecycle events' invariants after a random run: once every lease has run out and every
//! debounce is over, the feed's positions are contiguous, and for every user, room and
//! (room, user) the "first one came" and "last one left" events alternate, start with the
//! former and end with the latter (no reload pair, no missing or doubled offline).

use std::collections::BTreeMap;

use plaza_proto::events::{EventFilter, EventType};
use proptest::prelude::*;

use super::super::support::{LEASE_MS, Sim};

/// Lets every lease and debounce run out, then checks the whole feed.
pub(super) fn check_feed(sim: &mut Sim) -> Result<(), TestCaseError> {
    let debounce = 3_000;
    sim.advance(LEASE_MS + 1);
    sim.tick();
    sim.advance(debounce + 1);
    sim.tick();
    let page = sim
        .rooms
        .events(None, u32::MAX, &EventFilter::default())
        .expect("reading from the start never fails");
    let events = page.events;
    for pair in events.windows(2) {
        prop_assert_eq!(pair[1].position.seq, pair[0].position.seq + 1);
    }
    // key → the "came" / "left" sequence of the key.
    let mut runs: BTreeMap<String, Vec<bool>> = BTreeMap::new();
    for e in &events {
        let room = e.room.as_ref().map(|r| r.as_str().to_owned());
        let user = e.user.as_ref().map(|u| u.as_str().to_owned());
        let (key, came) = match e.kind {
            EventType::UserOnline => (format!("online {user:?}"), true),
            EventType::UserOffline => (format!("online {user:?}"), false),
            EventType::RoomOccupied => (format!("room {room:?}"), true),
            EventType::RoomVacated => (format!("room {room:?}"), false),
            EventType::UserJoined => (format!("in {room:?} {user:?}"), true),
            EventType::UserLeft => (format!("in {room:?} {user:?}"), false),
            EventType::MemberJoined | EventType::MemberLeft | EventType::PresenceUpdated => {
                continue;
            }
        };
        runs.entry(key).or_default().push(came);
    }
    for (key, run) in runs {
        for (i, came) in run.iter().enumerate() {
            prop_assert_eq!(*came, i % 2 == 0, "{}: {:?}", key, run);
        }
        prop_assert_eq!(run.last(), Some(&false), "{} ends present: {:?}", key, run);
    }
    Ok(())
}
