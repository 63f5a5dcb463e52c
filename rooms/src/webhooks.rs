//! Who sends webhooks, and how far each endpoint has been delivered — in the replicated state,
//! so there is one sender cluster-wide and a new one resumes exactly where the last stopped.
//!
//! ```text
//!   edge ──ClaimWebhooks(lease)──▶ granted if free, expired or already its own ─▶ cursors
//!   sender ──AckWebhooks(endpoint, through)──▶ cursor moves forward (only for the holder)
//! ```
//!
//! The claim is a lease on the state machine's clock, like an edge's. Acks from anyone but the
//! current holder are refused, so a sender that lost its claim can never move a cursor; a new
//! holder re-sends from the cursor (at least once, same ids, same order).

use std::collections::BTreeMap;

use plaza_proto::EdgeId;
use plaza_proto::events::WebhookClaim;
use serde::{Deserialize, Serialize};

/// The sender's claim and the delivery cursors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Webhooks {
    /// The current sender and when its claim runs out.
    holder: Option<(EdgeId, u64)>,
    /// Per endpoint name: the feed sequence delivered (or given up on) through.
    cursors: BTreeMap<String, u64>,
}

impl Webhooks {
    /// Grants or renews `edge`'s claim if nobody else holds a live one.
    pub fn claim(&mut self, epoch: &str, edge: EdgeId, lease_ms: u64, now: u64) -> WebhookClaim {
        let free = match &self.holder {
            None => true,
            Some((holder, expires)) => *holder == edge || now >= *expires,
        };
        if free {
            self.holder = Some((edge, now.saturating_add(lease_ms)));
        }
        WebhookClaim {
            granted: free,
            epoch: epoch.to_owned(),
            cursors: self.cursors.clone(),
        }
    }

    /// Moves `endpoint`'s cursor to `through` (never back) if `edge` holds a live claim;
    /// returns whether it does.
    pub fn ack(&mut self, edge: &EdgeId, endpoint: String, through: u64, now: u64) -> bool {
        let holds = self
            .holder
            .as_ref()
            .is_some_and(|(holder, expires)| holder == edge && now < *expires);
        if holds {
            let cursor = self.cursors.entry(endpoint).or_default();
            *cursor = (*cursor).max(through);
        }
        holds
    }

    /// `endpoint`'s cursor, if it has one.
    #[cfg(test)]
    pub(super) fn cursor(&self, endpoint: &str) -> Option<u64> {
        self.cursors.get(endpoint).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_until_its_lease_runs_out() {
        let mut w = Webhooks::default();
        let (a, b) = (EdgeId::new("a"), EdgeId::new("b"));
        assert!(w.claim("e", a.clone(), 100, 0).granted);
        assert!(!w.claim("e", b.clone(), 100, 50).granted);
        assert!(w.claim("e", a.clone(), 100, 90).granted, "renewal");
        assert!(!w.claim("e", b.clone(), 100, 189).granted);
        assert!(w.claim("e", b, 100, 190).granted, "after the lease");
        assert!(!w.ack(&a, "x".into(), 5, 191), "the old holder is fenced");
        assert_eq!(w.cursor("x"), None);
    }

    #[test]
    fn cursors_only_move_forward_and_come_with_the_claim() {
        let mut w = Webhooks::default();
        let a = EdgeId::new("a");
        w.claim("e", a.clone(), 100, 0);
        assert!(w.ack(&a, "x".into(), 5, 1));
        assert!(w.ack(&a, "x".into(), 3, 2));
        assert_eq!(w.cursor("x"), Some(5));
        assert_eq!(
            w.claim("e", a, 100, 3).cursors,
            BTreeMap::from([("x".into(), 5)])
        );
    }
}
