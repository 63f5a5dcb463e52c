//! Whether this node can commit *now*, judged from round trips rather than from traffic it
//! merely receives, and the leader's check-quorum step-down.
//!
//! ```text
//!   follower ──Ping every heartbeat──▶ leader      healthy: a Pong within `stale_after`
//!   leader: millis_since_quorum_ack ≤ stale_after  healthy
//!           > 2 × stale_after ─▶ fenced: heartbeats off, writes refused ─▶ followers elect
//! ```
//!
//! A node that only *hears* the cluster (its outbound traffic lost) still receives
//! AppendEntries and would look healthy to itself; only an answered round trip proves that a
//! write it forwards can reach the leader. A write on an unhealthy node waits one more window
//! for an answered ping (a CPU-starved machine answers late, not never) and is then answered
//! "cannot reach the leader" instead of waiting out the propose timeout, so the edge
//! re-attaches elsewhere (`plaza_backend::cluster`).
//!
//! openraft 0.9 never steps a leader down by itself: a leader that can send but not receive
//! keeps its followers' leases alive forever. [`run`] fences such a leader — it stops its
//! heartbeats (and [`Health::check`] refuses its writes, so nothing else is replicated), the
//! followers' leases lapse and they elect a new leader; the fence lifts when this node stops
//! leading.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use openraft::{RaftMetrics, ServerState};

use super::transport::{RaftRpc, RaftRpcReply};
use super::types::{BrokerNode, NodeId, Raft};
use super::write::PeerCall;

/// The health signal shared by the writer, the pinger and the status endpoint.
#[derive(Debug)]
pub(crate) struct Health {
    /// How old the last round trip to the leader (or the leader's last quorum ack) may be.
    stale_after: Duration,
    /// The leader this node follows, since when, and its last answered ping.
    contact: Mutex<Contact>,
    /// Check-quorum: this leader lost its majority and stopped heartbeating.
    fenced: AtomicBool,
    /// A graceful stop is handing leadership over: no new writes here.
    pub(super) handing_over: AtomicBool,
}

#[derive(Debug, Clone, Copy)]
struct Contact {
    leader: Option<NodeId>,
    since: Instant,
    last_round_trip: Option<Instant>,
}

impl Health {
    pub(super) fn new(stale_after: Duration) -> Self {
        Self {
            stale_after,
            contact: Mutex::new(Contact {
                leader: None,
                since: Instant::now(),
                last_round_trip: None,
            }),
            fenced: AtomicBool::new(false),
            handing_over: AtomicBool::new(false),
        }
    }

    fn contact(&self) -> std::sync::MutexGuard<'_, Contact> {
        self.contact
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes who leads (called on every metrics change); a new leader restarts the clock.
    fn follow(&self, leader: Option<NodeId>) {
        let mut c = self.contact();
        if c.leader != leader {
            *c = Contact {
                leader,
                since: Instant::now(),
                last_round_trip: None,
            };
        }
    }

    fn round_trip_to(&self, leader: NodeId) {
        let mut c = self.contact();
        if c.leader == Some(leader) {
            c.last_round_trip = Some(Instant::now());
        }
    }

    /// How long ago the last answered round trip to `leader` was (None: never).
    pub(crate) fn since_round_trip(&self, leader: NodeId) -> Option<Duration> {
        let c = self.contact();
        (c.leader == Some(leader))
            .then_some(c.last_round_trip)
            .flatten()
            .map(|t| t.elapsed())
    }

    /// How long this node has followed `leader` without an answered round trip to it (since
    /// the last one, or since it learned of the leader).
    fn silent_for(&self, leader: NodeId) -> Option<Duration> {
        let c = self.contact();
        (c.leader == Some(leader)).then(|| c.last_round_trip.unwrap_or(c.since).elapsed())
    }

    /// How old the last round trip (or quorum ack) may be before a write here is refused.
    pub(crate) fn window(&self) -> Duration {
        self.stale_after
    }

    /// Whether a graceful stop is handing leadership over.
    pub(crate) fn handing_over(&self) -> bool {
        self.handing_over.load(Ordering::Relaxed)
    }

    /// Whether this node is a fenced leader (check-quorum).
    pub(crate) fn fenced(&self) -> bool {
        self.fenced.load(Ordering::Relaxed)
    }

    /// `Ok` if a write here can be committed now: on the leader, a majority acknowledged it
    /// recently; on a follower, a round trip to the leader succeeded recently. `Err` says why
    /// not. `None` leader: an election is under way (the caller may wait for one).
    pub(crate) fn check(&self, m: &RaftMetrics<NodeId, BrokerNode>) -> Result<(), String> {
        let stale = self.stale_after.as_millis() as u64;
        if m.current_leader == Some(m.id) {
            if self.handing_over.load(Ordering::Relaxed) {
                return Err("the leader is handing leadership over (graceful stop)".into());
            }
            if self.fenced() {
                return Err("the leader lost contact with a majority and is stepping down".into());
            }
            return match m.millis_since_quorum_ack {
                Some(ms) if ms > stale => Err(format!(
                    "the leader has not heard from a majority for {ms} ms"
                )),
                _ => Ok(()),
            };
        }
        let Some(leader) = m.current_leader else {
            return Err("no leader (an election is under way)".into());
        };
        let c = *self.contact();
        if c.leader != Some(leader) || c.since.elapsed() < self.stale_after {
            return Ok(()); // just learned of this leader: the first pings are on their way
        }
        match c.last_round_trip.map(|t| t.elapsed()) {
            Some(ago) if ago <= self.stale_after => Ok(()),
            Some(ago) => Err(format!(
                "cannot reach leader {leader}: no round trip for {} ms",
                ago.as_millis()
            )),
            None => Err(format!(
                "cannot reach leader {leader}: no round trip in {} ms",
                c.since.elapsed().as_millis()
            )),
        }
    }
}

/// Pings the leader every `period` (followers) and fences a leader that lost its majority
/// for `2 × stale_after`; runs until the node stops.
pub(super) async fn run(
    raft: Raft,
    health: std::sync::Arc<Health>,
    peers: std::sync::Arc<dyn PeerCall>,
    period: Duration,
) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let fence_after = health.stale_after.as_millis() as u64 * 2;
    let campaign_after = health.stale_after;
    // Randomized like Raft's own timers (drawn once per silence), so the followers do not
    // split the vote.
    let jitter_ms = health.stale_after.as_millis() as u64 / 2;
    let draw = || Duration::from_millis(rand::random_range(0..=jitter_ms));
    let mut jitter = draw();
    let mut last_campaign: Option<Instant> = None;
    loop {
        interval.tick().await;
        let m = raft.metrics().borrow().clone();
        health.follow(m.current_leader);
        let leading = m.current_leader == Some(m.id) && m.state == ServerState::Leader;
        if leading {
            let stale = m.millis_since_quorum_ack.is_some_and(|ms| ms > fence_after);
            if stale && !health.fenced.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    node = m.id,
                    term = m.current_term,
                    since_quorum_ack_ms = m.millis_since_quorum_ack,
                    "check-quorum: lost contact with a majority; refusing writes and stopping \
                     heartbeats so the others elect a new leader"
                );
                metrics::counter!(crate::metrics::CHECK_QUORUM_FENCED).increment(1);
                raft.runtime_config().heartbeat(false);
            }
            continue;
        }
        if health.fenced.swap(false, Ordering::Relaxed) {
            tracing::info!(
                node = m.id,
                term = m.current_term,
                "check-quorum: no longer leading; fence lifted"
            );
            raft.runtime_config().heartbeat(true);
        }
        let Some(leader) = m.current_leader else {
            continue;
        };
        let Some(node) = m.membership_config.membership().get_node(&leader).cloned() else {
            continue;
        };
        if let Ok(RaftRpcReply::Pong { leading: true }) = peers
            .call(leader, &node, RaftRpc::Ping, health.stale_after)
            .await
        {
            health.round_trip_to(leader);
            jitter = draw();
            continue;
        }
        // openraft 0.9 adds `2 × election_timeout_max` to a follower's election timer once a
        // vote reply showed it a longer log, and keeps that penalty until its next campaign:
        // a dead leader could then go unreplaced for over a second (seen in leader churn).
        // A follower that has had no round trip to the leader for a whole lease (plus up to
        // half a lease of jitter; by then the other voters' leases on the leader have run out
        // too, so they grant the vote) campaigns itself, at most once per such period.
        let silent = health.silent_for(leader);
        if silent.is_some_and(|d| d >= campaign_after + jitter)
            && last_campaign.is_none_or(|t: Instant| t.elapsed() >= campaign_after)
        {
            last_campaign = Some(Instant::now());
            jitter = draw();
            tracing::info!(
                target: "plaza_broker::failover",
                node = m.id,
                leader,
                silent_ms = silent.map(|d| d.as_millis() as u64),
                "failover: no round trip to the leader for a lease; campaigning"
            );
            let _ = raft.trigger().elect().await;
        }
    }
}
