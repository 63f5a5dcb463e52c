//! `one-leader-per-term`: Raft's election safety — at most one node leads in any term.
//!
//! No two `LeaderObserved` readings name the same term with different nodes. (Only the Raft
//! backend records them; a history without any passes.)

use std::collections::HashMap;

use super::super::history::{Event, History, Violation};

/// The invariant's name.
pub const NAME: &str = "one-leader-per-term";

/// Checks `one-leader-per-term`, returning the first term with a second leader.
pub fn check(history: &History) -> Result<(), Violation> {
    // term -> (node, at) of the first reading.
    let mut leaders: HashMap<u64, (u64, u64)> = HashMap::new();
    for event in &history.events {
        let Event::LeaderObserved { node, term, at } = event else {
            continue;
        };
        let (first, first_at) = *leaders.entry(*term).or_insert((*node, *at));
        if first != *node {
            return Err(Violation {
                invariant: NAME,
                example: format!(
                    "term {term} had two leaders: broker {first} (seen at {first_at} ms) and \
                     broker {node} (seen at {at} ms)"
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

    fn leads(node: u64, term: u64, at: u64) -> Event {
        Event::LeaderObserved { node, term, at }
    }

    #[test]
    fn a_correct_history_passes() {
        assert_eq!(check(&good()), Ok(()));
        let h = history(vec![
            leads(1, 1, 10),
            leads(1, 1, 20),
            leads(2, 2, 30),
            leads(3, 3, 40),
        ]);
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn two_leaders_in_one_term_are_caught() {
        let h = history(vec![leads(1, 4, 10), leads(2, 5, 20), leads(3, 4, 30)]);
        let v = check(&h).expect_err("term 4 twice");
        assert_eq!(v.invariant, NAME);
        assert!(v.example.contains("term 4"), "{}", v.example);
        assert!(
            v.example.contains("broker 1") && v.example.contains("broker 3"),
            "{}",
            v.example
        );
    }
}
