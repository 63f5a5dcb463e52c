//! The broker's HTTP side: `/status`, `/healthz`, `/readyz`, `/metrics` (and the routes of
//! [`super::admin`]).
//!
//! Everything is read from [`RaftNode::status`] at request time, so there is no background
//! task to keep in sync; `/metrics` sets its gauges from the same snapshot before rendering.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Serialize;

use crate::raft::{NodeId, RaftNode, RaftStatus};

/// What the handlers share. Cheap to clone.
#[derive(Clone)]
pub(super) struct HttpState {
    pub(super) node: RaftNode,
    /// The bearer token of `/admin/*`; `None` disables it.
    pub(super) admin_token: Option<Arc<str>>,
    /// Cleared when shutdown begins so `/readyz` fails before the node stops.
    serving: Arc<AtomicBool>,
    metrics: PrometheusHandle,
}

impl HttpState {
    /// Serves `node`'s status; `serving` gates `/readyz`; `admin_token` enables `/admin/*`.
    pub(super) fn new(node: RaftNode, serving: Arc<AtomicBool>, admin_token: Option<&str>) -> Self {
        Self {
            node,
            admin_token: admin_token.map(Arc::from),
            serving,
            metrics: install_metrics(),
        }
    }
}

/// The routes.
pub(super) fn router(state: HttpState) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/admin/members", post(super::admin::members))
        .with_state(state)
}

/// The `/status` body.
#[derive(Debug, Serialize)]
pub(super) struct StatusBody {
    /// This node.
    pub id: NodeId,
    /// `Leader`, `Follower`, `Candidate` or `Learner`.
    pub state: String,
    /// The leader as this node knows it.
    pub leader: Option<NodeId>,
    /// The current term.
    pub term: u64,
    /// The last entry in this node's log.
    pub last_log_index: Option<u64>,
    /// The last entry known committed.
    pub commit_index: Option<u64>,
    /// The last entry applied here.
    pub last_applied: Option<u64>,
    /// The last entry covered by a snapshot.
    pub snapshot_index: Option<u64>,
    /// Voting members.
    pub voters: Vec<NodeId>,
    /// Every member (voters and learners) with its Raft address.
    pub members: BTreeMap<NodeId, String>,
    /// On the leader: entries each follower is behind.
    pub lag: BTreeMap<NodeId, u64>,
}

impl From<RaftStatus> for StatusBody {
    fn from(s: RaftStatus) -> Self {
        Self {
            id: s.id,
            state: format!("{:?}", s.state),
            leader: s.leader,
            term: s.term,
            last_log_index: s.last_log_index,
            commit_index: s.committed,
            last_applied: s.last_applied,
            snapshot_index: s.snapshot,
            voters: s.voters.into_iter().collect(),
            members: s.nodes.into_iter().map(|(id, n)| (id, n.addr)).collect(),
            lag: s.lag,
        }
    }
}

async fn status(State(state): State<HttpState>) -> Json<StatusBody> {
    Json(state.node.status().await.into())
}

/// Ready when serving and a leader is known (this node can then take part in commits).
async fn ready(State(state): State<HttpState>) -> Response {
    if !state.serving.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    match state.node.current_leader() {
        Some((leader, _)) => format!("ok: leader {leader}").into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no leader known").into_response(),
    }
}

/// Gauges: `plaza_broker_is_leader`, `plaza_broker_leader_id` (0 when unknown),
/// `plaza_broker_term`, `plaza_broker_commit_index`, `plaza_broker_last_applied`,
/// `plaza_broker_last_log_index`, `plaza_broker_voters`, `plaza_broker_follower_lag{node}`,
/// and the lifecycle event feed: `plaza_broker_event_feed_retained` (bounded by
/// `rooms.events.max_retained`), `plaza_broker_event_feed_seq`, `plaza_broker_event_pending`.
async fn metrics(State(state): State<HttpState>) -> Response {
    let s = state.node.status().await;
    let gauge = |name: &'static str, v: u64| metrics::gauge!(name).set(v as f64);
    gauge("plaza_broker_is_leader", u64::from(s.leader == Some(s.id)));
    gauge("plaza_broker_leader_id", s.leader.unwrap_or(0));
    gauge("plaza_broker_term", s.term);
    gauge("plaza_broker_commit_index", s.committed.unwrap_or(0));
    gauge("plaza_broker_last_applied", s.last_applied.unwrap_or(0));
    gauge("plaza_broker_last_log_index", s.last_log_index.unwrap_or(0));
    gauge("plaza_broker_voters", s.voters.len() as u64);
    for (node, lag) in &s.lag {
        metrics::gauge!("plaza_broker_follower_lag", "node" => node.to_string()).set(*lag as f64);
    }
    if let Ok((retained, seq, pending)) = state.node.read(|r| r.feed_stats()) {
        gauge("plaza_broker_event_feed_retained", retained as u64);
        gauge("plaza_broker_event_feed_seq", seq);
        gauge("plaza_broker_event_pending", pending as u64);
    }
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// Installs the process-wide Prometheus recorder (once) and returns its handle; its
/// histograms are drained every few seconds whether or not anyone scrapes.
fn install_metrics() -> PrometheusHandle {
    plaza_process::install_metrics(PrometheusBuilder::new(), || {})
}
