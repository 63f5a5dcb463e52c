//! Timing every failover as this node sees it, so an operator (and the failover note) can say
//! where each millisecond went:
//!
//! ```text
//!   last round trip to the leader ─detection─▶ leader lost (election timer fired, or a
//!   candidate's vote arrived) ─election─▶ new leader known ─first commit─▶ an entry of the
//!   new term applied here
//! ```
//!
//! Each phase is logged (`failover:` lines, `target = plaza_broker::failover`) and observed in
//! a histogram (`plaza_broker_failover_seconds{phase}`). The edge logs the last phase, its
//! re-route, itself (`plaza_backend::cluster`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;

use super::health::Health;
use super::types::{NodeId, Raft};

/// One failover under way, as seen here.
struct Lost {
    /// The leader that was lost.
    leader: NodeId,
    /// When this node stopped following it.
    at: Instant,
    /// When the new leader became known.
    elected: Option<(NodeId, u64, Instant)>,
}

fn observe(phase: &'static str, took: Duration) {
    metrics::histogram!(crate::metrics::FAILOVER_SECONDS, "phase" => phase)
        .record(took.as_secs_f64());
}

/// Watches this node's Raft metrics until it stops, logging each failover phase.
pub(super) async fn watch(raft: Raft, health: Arc<Health>) {
    let mut metrics = raft.metrics();
    let mut leader: Option<NodeId> = metrics.borrow().current_leader;
    let mut lost: Option<Lost> = None;
    let mut campaigning = false;
    while metrics.changed().await.is_ok() {
        let m = metrics.borrow_and_update().clone();
        let now = Instant::now();
        if m.state == ServerState::Candidate && !campaigning {
            tracing::info!(
                target: "plaza_broker::failover",
                node = m.id,
                term = m.current_term,
                "failover: election started here"
            );
        }
        campaigning = m.state == ServerState::Candidate;
        if m.current_leader != leader {
            if let Some(old) = leader
                && lost.is_none()
            {
                // The round trip clock is about the leader just lost: read it before `follow`
                // (in the health task) resets it.
                let detection = health.since_round_trip(old);
                tracing::info!(
                    target: "plaza_broker::failover",
                    node = m.id,
                    lost = old,
                    term = m.current_term,
                    last_round_trip_ms = detection.map(|d| d.as_millis() as u64),
                    "failover: detection — stopped following the leader"
                );
                if let Some(d) = detection {
                    observe("detection", d);
                }
                lost = Some(Lost {
                    leader: old,
                    at: now,
                    elected: None,
                });
            }
            if let (Some(new), Some(l)) = (m.current_leader, lost.as_mut())
                && l.elected.is_none()
            {
                let took = now.duration_since(l.at);
                tracing::info!(
                    target: "plaza_broker::failover",
                    node = m.id,
                    lost = l.leader,
                    leader = new,
                    term = m.current_term,
                    election_ms = took.as_millis() as u64,
                    "failover: election — new leader known"
                );
                observe("election", took);
                l.elected = Some((new, m.current_term, now));
            }
            leader = m.current_leader;
        }
        if let Some(Lost {
            leader: old,
            at,
            elected: Some((new, term, elected_at)),
        }) = lost
            && m.last_applied.is_some_and(|l| l.leader_id.term >= term)
        {
            tracing::info!(
                target: "plaza_broker::failover",
                node = m.id,
                lost = old,
                leader = new,
                term,
                first_commit_ms = now.duration_since(elected_at).as_millis() as u64,
                total_ms = now.duration_since(at).as_millis() as u64,
                "failover: first commit of the new term applied here"
            );
            observe("first_commit", now.duration_since(elected_at));
            observe("total", now.duration_since(at));
            lost = None;
        }
    }
}
