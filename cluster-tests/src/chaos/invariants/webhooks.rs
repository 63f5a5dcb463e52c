//! The webhook invariants: what a real receiver got (every event of every POST, in arrival
//! order, repeats included) against the event feed read back after healing.
//!
//! | invariant | meaning |
//! |---|---|
//! | `webhook-at-least-once` | every event of the feed was delivered |
//! | `webhook-stable-ids` | a repeated id carries the same event every time |
//! | `webhook-order` | first arrivals come in strictly increasing feed sequence (a re-sent batch only repeats) |
//! | `webhook-replay-equals` | the feed replay equals the set of distinct events received |

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::chaos::history::Violation;
use crate::webhook_receiver::Received;

/// `webhook-at-least-once`.
pub const AT_LEAST_ONCE: &str = "webhook-at-least-once";
/// `webhook-stable-ids`.
pub const STABLE_IDS: &str = "webhook-stable-ids";
/// `webhook-order`.
pub const ORDER: &str = "webhook-order";
/// `webhook-replay-equals`.
pub const REPLAY_EQUALS: &str = "webhook-replay-equals";

fn violation(invariant: &'static str, example: String) -> Result<(), Violation> {
    Err(Violation { invariant, example })
}

fn id(event: &Value) -> &str {
    event["id"].as_str().unwrap_or("")
}

/// Every feed event was delivered at least once.
pub fn at_least_once(received: &[Received], feed: &[Value]) -> Result<(), Violation> {
    let got: BTreeSet<&str> = received.iter().map(Received::id).collect();
    match feed.iter().find(|e| !got.contains(id(e))) {
        Some(missing) => violation(
            AT_LEAST_ONCE,
            format!("feed event {} was never delivered", id(missing)),
        ),
        None => Ok(()),
    }
}

/// A repeated id carries the same event.
pub fn stable_ids(received: &[Received]) -> Result<(), Violation> {
    let mut by_id: BTreeMap<&str, &Value> = BTreeMap::new();
    for r in received {
        if let Some(first) = by_id.insert(r.id(), &r.event)
            && first != &r.event
        {
            return violation(
                STABLE_IDS,
                format!("{} delivered with different content", r.id()),
            );
        }
    }
    Ok(())
}

/// First arrivals are in strictly increasing feed order.
pub fn order(received: &[Received]) -> Result<(), Violation> {
    let mut last = 0;
    let mut seen = BTreeSet::new();
    for r in received {
        if seen.insert(r.id()) {
            if r.seq() <= last {
                return violation(ORDER, format!("{} arrived after seq {last}", r.id()));
            }
            last = r.seq();
        }
    }
    Ok(())
}

/// The feed replay equals the distinct events received (same ids, same content).
pub fn replay_equals(received: &[Received], feed: &[Value]) -> Result<(), Violation> {
    let mut distinct: BTreeMap<&str, &Value> = BTreeMap::new();
    for r in received {
        distinct.entry(r.id()).or_insert(&r.event);
    }
    let replay: BTreeMap<&str, &Value> = feed.iter().map(|e| (id(e), e)).collect();
    if let Some((id, _)) = distinct.iter().find(|(id, e)| replay.get(*id) != Some(*e)) {
        return violation(
            REPLAY_EQUALS,
            format!("received {id}, which the feed does not hold as delivered"),
        );
    }
    if distinct.len() != replay.len() {
        return violation(
            REPLAY_EQUALS,
            format!(
                "{} distinct received, {} in the feed",
                distinct.len(),
                replay.len()
            ),
        );
    }
    Ok(())
}

/// Every webhook invariant, in report order.
pub fn check_all(
    received: &[Received],
    feed: &[Value],
) -> Vec<(&'static str, Result<(), Violation>)> {
    vec![
        (AT_LEAST_ONCE, at_least_once(received, feed)),
        (STABLE_IDS, stable_ids(received)),
        (ORDER, order(received)),
        (REPLAY_EQUALS, replay_equals(received, feed)),
    ]
}
