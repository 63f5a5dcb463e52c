//! `presence-converges`: once the faults have healed (and the runner has waited out the
//! presence lease), a room's presence lists exactly the users connected and subscribed there.
//!
//! Every `PresenceObserved` must have `observed == expected`, compared as sets.

use std::collections::BTreeSet;

use super::super::history::{Event, History, Violation};

/// The invariant's name.
pub const NAME: &str = "presence-converges";

/// Checks `presence-converges`, returning the first reading that differs.
pub fn check(history: &History) -> Result<(), Violation> {
    for event in &history.events {
        let Event::PresenceObserved {
            room,
            observed,
            expected,
            after_heal_ms,
            at,
        } = event
        else {
            continue;
        };
        let observed: BTreeSet<&str> = observed.iter().map(String::as_str).collect();
        let expected: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
        if observed == expected {
            continue;
        }
        let missing: Vec<&str> = expected.difference(&observed).copied().collect();
        let extra: Vec<&str> = observed.difference(&expected).copied().collect();
        return Err(Violation {
            invariant: NAME,
            example: format!(
                "presence of room {room:?} at {at} ms ({after_heal_ms} ms after the last fault \
                 healed) misses {missing:?} and lists {extra:?} who are not there (observed \
                 {observed:?}, expected {expected:?})"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;

    fn reading(observed: &[&str], expected: &[&str]) -> Event {
        Event::PresenceObserved {
            room: "r".into(),
            observed: observed.iter().map(|u| u.to_string()).collect(),
            expected: expected.iter().map(|u| u.to_string()).collect(),
            after_heal_ms: 1500,
            at: 9000,
        }
    }

    #[test]
    fn a_correct_history_passes() {
        assert_eq!(check(&good()), Ok(()));
        let h = history(vec![
            reading(&["u1", "u2"], &["u1", "u2"]),
            reading(&[], &[]),
        ]);
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn a_stale_or_missing_user_is_caught() {
        let h = history(vec![
            reading(&["u1"], &["u1"]),
            reading(&["u1", "ghost"], &["u1", "u2"]),
        ]);
        let v = check(&h).expect_err("ghost listed, u2 missing");
        assert_eq!(v.invariant, NAME);
        assert!(v.example.contains("misses [\"u2\"]"), "{}", v.example);
        assert!(v.example.contains("lists [\"ghost\"]"), "{}", v.example);
        assert!(v.example.contains("1500 ms after"), "{}", v.example);
    }
}
