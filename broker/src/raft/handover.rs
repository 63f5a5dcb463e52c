//! Graceful leadership hand-over before a leader stops (a rolling upgrade), on openraft 0.9,
//! which has no `transfer_leader`:
//!
//! ```text
//!   leader: refuse new writes ─▶ wait until the best follower matched the whole log
//!           ─▶ RaftRpc::Elect to it ═▶ follower: raft.trigger().elect()
//!           ─▶ the old leader grants the vote (it never renews the lease on its own vote)
//!           ─▶ new leader commits its blank entry; the old one shuts down
//! ```
//!
//! Writes pause for about one round trip and a few fsyncs instead of an election timeout.
//! The third node refuses the vote while its lease on the old leader runs, which does not
//! matter: the candidate and the old leader are a majority of three. If anything fails the
//! stop goes on and the followers elect a leader after their election timeout, as before.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use openraft::ServerState;

use super::node::RaftNode;
use super::transport::{RaftRpc, RaftRpcReply};
use super::types::NodeId;

/// How long a hand-over waits for the asked follower to win before trying again.
const CAMPAIGN_WAIT: Duration = Duration::from_millis(300);

/// How long the leader's state must stay caught up between two looks.
const SETTLE: Duration = Duration::from_millis(10);

impl RaftNode {
    /// On the leader: hands leadership to the follower with the longest log, waiting at most
    /// `timeout`; returns the new leader. On a follower, does nothing (`Ok(None)`). New writes
    /// here are refused from the call on, and this node no longer campaigns (it is stopping).
    pub async fn hand_over(&self, timeout: Duration) -> Result<Option<NodeId>, String> {
        if !self.is_leader() {
            return Ok(None);
        }
        let started = Instant::now();
        let deadline = started + timeout;
        self.inner
            .health
            .handing_over
            .store(true, Ordering::Relaxed);
        let raft = &self.inner.raft;
        // Once it steps down it must not win an election of its own.
        raft.runtime_config().elect(false);
        let id = self.inner.id;
        let mut last_error = String::from("no attempt");
        while Instant::now() < deadline {
            if !self.is_leader() {
                break; // stepped down: wait for whoever wins below
            }
            let target = match self.caught_up_follower(deadline).await {
                Ok(target) => target,
                Err(why) => {
                    last_error = why;
                    break;
                }
            };
            if let Err(why) = self.ask_to_campaign(target, deadline).await {
                last_error = why;
                continue;
            }
            // The candidate wins within a round trip or two, or loses to a longer log (an
            // entry appended meanwhile): then try again.
            let wait = (deadline.saturating_duration_since(Instant::now())).min(CAMPAIGN_WAIT);
            let moved = raft
                .wait(Some(wait))
                .metrics(
                    |m| m.current_leader.is_some_and(|l| l != id),
                    "another node leads",
                )
                .await;
            if let Ok(m) = moved {
                tracing::info!(
                    target: "plaza_broker::failover",
                    node = id,
                    leader = ?m.current_leader,
                    term = m.current_term,
                    took_ms = started.elapsed().as_millis() as u64,
                    "failover: leadership handed over (graceful stop)"
                );
                return Ok(m.current_leader);
            }
            last_error = format!("follower {target} did not win its election");
        }
        // Not leading any more (or gave up): the others elect a leader by themselves.
        let left = deadline.saturating_duration_since(Instant::now());
        match raft
            .wait(Some(left))
            .metrics(
                |m| m.current_leader.is_some_and(|l| l != id),
                "another node leads",
            )
            .await
        {
            Ok(m) if !self.is_leader() => {
                tracing::info!(
                    target: "plaza_broker::failover",
                    node = id,
                    leader = ?m.current_leader,
                    term = m.current_term,
                    took_ms = started.elapsed().as_millis() as u64,
                    "failover: leadership handed over (graceful stop, after a retry)"
                );
                Ok(m.current_leader)
            }
            _ => Err(format!("no hand-over within {timeout:?}: {last_error}")),
        }
    }

    /// Waits until a follower has every entry this leader has (nothing queued, appended but
    /// uncommitted, or unreplicated to it) and returns the one furthest ahead.
    async fn caught_up_follower(&self, deadline: Instant) -> Result<NodeId, String> {
        let mut metrics = self.inner.raft.metrics();
        let mut settled = 0;
        loop {
            let (target, caught_up) = {
                let m = metrics.borrow_and_update();
                if m.state != ServerState::Leader {
                    return Err("no longer the leader".into());
                }
                let last = m.last_log_index;
                let best = m
                    .replication
                    .iter()
                    .flatten()
                    .filter(|(id, _)| **id != self.inner.id)
                    .max_by_key(|(_, matched)| matched.map(|l| l.index))
                    .map(|(id, matched)| (*id, matched.map(|l| l.index)));
                let Some((id, matched)) = best else {
                    return Err("no follower to hand over to".into());
                };
                let queue_empty =
                    self.inner.proposals.capacity() == self.inner.proposals.max_capacity();
                let applied = m.last_applied.map(|l| l.index) == last;
                (id, matched >= last && queue_empty && applied)
            };
            // Two looks a few ms apart: the batcher may hold a batch between queue and log.
            settled = if caught_up { settled + 1 } else { 0 };
            if settled >= 2 {
                return Ok(target);
            }
            if Instant::now() >= deadline {
                return Err(format!("follower {target} did not catch up in time"));
            }
            let _ = tokio::time::timeout(SETTLE, metrics.changed()).await;
        }
    }

    /// Sends [`RaftRpc::Elect`] to `target`.
    async fn ask_to_campaign(&self, target: NodeId, deadline: Instant) -> Result<(), String> {
        let node = {
            let m = self.inner.raft.metrics().borrow().clone();
            m.membership_config.membership().get_node(&target).cloned()
        };
        let Some(node) = node else {
            return Err(format!("no address for follower {target}"));
        };
        let left = deadline.saturating_duration_since(Instant::now());
        match self
            .inner
            .peers
            .call(target, &node, RaftRpc::Elect, left)
            .await
        {
            Ok(RaftRpcReply::Electing(Ok(()))) => Ok(()),
            Ok(RaftRpcReply::Electing(Err(why))) => Err(why),
            Ok(other) => Err(format!("follower {target} answered {other:?}")),
            Err(e) => Err(format!("follower {target}: {e}")),
        }
    }

    /// A follower's half of [`Self::hand_over`]: start an election now.
    pub(super) async fn elect_now(&self) -> Result<(), String> {
        tracing::info!(
            target: "plaza_broker::failover",
            node = self.inner.id,
            "failover: the leader hands over; campaigning now"
        );
        self.inner
            .raft
            .trigger()
            .elect()
            .await
            .map_err(|e| e.to_string())
    }
}
