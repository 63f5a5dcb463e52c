//! `state-tracked`: the map a client kept of a live-state room through every fault —
//! `subscribe`'s snapshot, the change pushes above its offset, and on a replaced connection a
//! `subscribe` with `recover` (the changes since, or a fresh snapshot) — equals the room's map
//! read on a fresh subscription once the faults healed, at the same offset (issue 19).
//!
//! Every reading must have `actual` (the watcher got through) equal to `tracked`, key by key
//! with values and versions, and the same offset.

use super::super::history::{Event, History, Violation};

/// The invariant's name.
pub const NAME: &str = "state-tracked";

/// Checks `state-tracked`, returning the first reading that differs.
pub fn check(history: &History) -> Result<(), Violation> {
    for event in &history.events {
        let Event::StateTracked {
            room,
            tracked,
            tracked_offset,
            actual,
            actual_offset,
            subscribes,
            snapshots,
            at,
        } = event
        else {
            continue;
        };
        let Some(actual) = actual else {
            return Err(Violation {
                invariant: NAME,
                example: format!(
                    "the state watcher of room {room:?} never read the room's map back \
                     ({subscribes} subscriptions)"
                ),
            });
        };
        if tracked == actual && tracked_offset == actual_offset {
            continue;
        }
        let differ: Vec<String> = differences(tracked, actual).into_iter().take(5).collect();
        return Err(Violation {
            invariant: NAME,
            example: format!(
                "at {at} ms the map kept in room {room:?} (offset {tracked_offset}, \
                 {subscribes} subscriptions, {snapshots} snapshots) differs from the room's \
                 (offset {actual_offset}): {}",
                differ.join("; ")
            ),
        });
    }
    Ok(())
}

/// The keys whose entries differ, described.
fn differences(tracked: &[(String, String, u64)], actual: &[(String, String, u64)]) -> Vec<String> {
    let mut out = Vec::new();
    for t in tracked {
        match actual.iter().find(|a| a.0 == t.0) {
            None => out.push(format!("{:?} kept ({} v{}) but gone", t.0, t.1, t.2)),
            Some(a) if a != t => out.push(format!(
                "{:?} kept as {} v{}, is {} v{}",
                t.0, t.1, t.2, a.1, a.2
            )),
            Some(_) => {}
        }
    }
    for a in actual {
        if !tracked.iter().any(|t| t.0 == a.0) {
            out.push(format!("{:?} missed ({} v{})", a.0, a.1, a.2));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::test_util::history;
    use super::*;

    fn entry(key: &str, value: &str, version: u64) -> (String, String, u64) {
        (key.to_owned(), value.to_owned(), version)
    }

    fn reading(
        tracked: Vec<(String, String, u64)>,
        actual: Option<Vec<(String, String, u64)>>,
        offsets: (u64, u64),
    ) -> Event {
        Event::StateTracked {
            room: "s:r".into(),
            tracked,
            tracked_offset: offsets.0,
            actual,
            actual_offset: offsets.1,
            subscribes: 2,
            snapshots: 1,
            at: 9000,
        }
    }

    #[test]
    fn equal_maps_at_one_offset_pass() {
        let map = vec![entry("a", "1", 3), entry("b", "{\"n\":2}", 7)];
        let h = history(vec![reading(map.clone(), Some(map), (9, 9))]);
        assert_eq!(check(&h), Ok(()));
        assert_eq!(check(&History::default()), Ok(()));
    }

    #[test]
    fn a_stale_value_a_ghost_or_a_missed_key_is_caught() {
        let tracked = vec![entry("a", "1", 3), entry("ghost", "0", 4)];
        let actual = vec![entry("a", "2", 8), entry("new", "5", 9)];
        let v =
            check(&history(vec![reading(tracked, Some(actual), (9, 9))])).expect_err("maps differ");
        assert_eq!(v.invariant, NAME);
        assert!(
            v.example.contains("\"a\" kept as 1 v3, is 2 v8"),
            "{}",
            v.example
        );
        assert!(v.example.contains("\"ghost\" kept"), "{}", v.example);
        assert!(v.example.contains("\"new\" missed"), "{}", v.example);
    }

    #[test]
    fn equal_maps_at_different_offsets_or_no_reading_fail() {
        let map = vec![entry("a", "1", 3)];
        let behind = reading(map.clone(), Some(map.clone()), (5, 9));
        assert!(
            check(&history(vec![behind])).is_err(),
            "missed trailing deletions"
        );
        let never = reading(map, None, (5, 0));
        let v = check(&history(vec![never])).expect_err("no reading");
        assert!(v.example.contains("never read"), "{}", v.example);
    }
}
