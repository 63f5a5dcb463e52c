//! `presence-tracked`: the member list a client kept from pushes through every fault (`join`,
//! `leave`, `presence_resync`; reloaded only when its own connection was replaced) equals the
//! room's presence once the faults healed — no ghost kept, no newcomer missed (issue 17).
//!
//! Every room must have a `PresenceTracked` reading with `tracked == actual`; a run with none
//! at all fails too (the watcher never got through).

use super::super::history::{Event, History, Violation};

/// The invariant's name.
pub const NAME: &str = "presence-tracked";

/// Checks `presence-tracked`, returning the first reading that differs.
pub fn check(history: &History) -> Result<(), Violation> {
    let mut readings = 0;
    for event in &history.events {
        let Event::PresenceTracked {
            room,
            tracked,
            actual,
            resyncs,
            at,
        } = event
        else {
            continue;
        };
        readings += 1;
        if tracked == actual {
            continue;
        }
        let ghosts: Vec<&String> = tracked.iter().filter(|c| !actual.contains(c)).collect();
        let missed: Vec<&String> = actual.iter().filter(|c| !tracked.contains(c)).collect();
        return Err(Violation {
            invariant: NAME,
            example: format!(
                "at {at} ms the list kept from pushes in room {room:?} holds ghosts {ghosts:?} \
                 and misses {missed:?} ({resyncs} resyncs applied)"
            ),
        });
    }
    let observed = history
        .events
        .iter()
        .any(|e| matches!(e, Event::PresenceObserved { .. }));
    if readings == 0 && observed {
        return Err(Violation {
            invariant: NAME,
            example: "the presence watcher recorded no reading".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_util::history;
    use super::*;

    fn reading(tracked: &[&str], actual: &[&str]) -> Event {
        Event::PresenceTracked {
            room: "r".into(),
            tracked: tracked.iter().map(|c| c.to_string()).collect(),
            actual: actual.iter().map(|c| c.to_string()).collect(),
            resyncs: 1,
            at: 9000,
        }
    }

    #[test]
    fn equal_lists_pass() {
        let h = history(vec![reading(&["a", "b"], &["a", "b"]), reading(&[], &[])]);
        assert_eq!(check(&h), Ok(()));
        assert_eq!(check(&History::default()), Ok(()));
    }

    #[test]
    fn a_ghost_or_a_missed_newcomer_is_caught() {
        let h = history(vec![reading(&["a", "ghost"], &["a", "new"])]);
        let v = check(&h).expect_err("ghost kept, newcomer missed");
        assert_eq!(v.invariant, NAME);
        assert!(v.example.contains("ghosts [\"ghost\"]"), "{}", v.example);
        assert!(v.example.contains("misses [\"new\"]"), "{}", v.example);
    }

    #[test]
    fn a_run_whose_watcher_never_read_fails() {
        let observed = Event::PresenceObserved {
            room: "r".into(),
            observed: Vec::new(),
            expected: Vec::new(),
            after_heal_ms: 0,
            at: 1,
        };
        let v = check(&history(vec![observed])).expect_err("no reading");
        assert!(v.example.contains("no reading"), "{}", v.example);
    }
}
