//! `GET /v1/api/events`: the lifecycle event feed, read from a position, with optional
//! long-polling (`wait`) and filters. The broker tier derives and keeps the events; any edge
//! reads the same feed, so a back end that was down reads what it missed from any of them.
//!
//! ```text
//!  ?since=<epoch>:<seq>&limit=&wait=&types=a,b&namespace=
//!    ─▶ validate (400s) ─▶ Node::events ─▶ nothing yet and wait > 0? sleep poll interval, again
//!    ◀─ {events, next, latest, recovered}
//! ```

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use plaza_backend::EdgeLink;
use plaza_proto::cluster::BrokerError;
use plaza_proto::events::{EventFilter, EventType, EventsPage, FeedPosition, LifecycleEvent};
use plaza_proto::{ClientId, Payload, RoomName, UserId};
use serde::{Deserialize, Serialize};

use super::error::{ApiCode, ApiError};
use super::extract::ApiQuery;
use crate::metrics as m;
use crate::node::Node;
use crate::node::calls::broker_error;

/// `GET /v1/api/events` query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventsQuery {
    /// `"<epoch>:<seq>"`: only events after it. Absent: from the oldest retained.
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
    /// Seconds to wait for an event when none is there yet (0 = answer at once).
    #[serde(default)]
    wait: Option<f64>,
    /// Comma-separated event types.
    #[serde(default)]
    types: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

/// One event as the HTTP API (and webhooks) show it.
#[derive(Debug, Serialize)]
pub struct EventJson {
    /// Stable id: `"<epoch>:<seq>"`, the same on every read and delivery.
    pub id: String,
    /// The event type, e.g. `"user.offline"`.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The feed's epoch.
    pub epoch: String,
    /// The event's sequence in the feed (increases by one per event).
    pub seq: u64,
    /// When the broker tier decided it, in milliseconds on its clock.
    pub time_ms: u64,
    /// The room, for room-scoped events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<RoomName>,
    /// The user, for `user.*` and `member.*` events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<UserId>,
    /// The connection, for `member.*` events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientId>,
    /// The member's info, for `member.joined`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<Payload>,
}

impl From<LifecycleEvent> for EventJson {
    fn from(e: LifecycleEvent) -> Self {
        Self {
            id: e.id(),
            kind: e.kind,
            epoch: e.position.epoch,
            seq: e.position.seq,
            time_ms: e.time_ms,
            room: e.room,
            user: e.user,
            client: e.client,
            info: e.info,
        }
    }
}

/// The response body.
#[derive(Debug, Serialize)]
pub(super) struct EventsResponse {
    events: Vec<EventJson>,
    /// Pass as `since` to read on.
    next: String,
    /// The feed's latest position.
    latest: String,
    /// False when events between `since` and the first returned one were lost (another epoch,
    /// or older than the retention window).
    recovered: bool,
}

pub(super) async fn events<L: EdgeLink>(
    State(node): State<Arc<Node<L>>>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<EventsResponse>, ApiError> {
    let api = &node.config.api;
    let since = match q.since.as_deref() {
        None | Some("") => None,
        Some(text) => Some(FeedPosition::parse(text).map_err(|e| ApiCode::BadRequest.with(e))?),
    };
    let limit = match q.limit {
        None => api.max_events_limit,
        Some(0) => return Err(ApiCode::BadRequest.with("`limit` must be at least 1")),
        Some(n) if n > api.max_events_limit => {
            metrics::counter!(m::LIMIT_HITS, "limit" => "events_limit").increment(1);
            return Err(ApiCode::BadRequest.with(format!(
                "`limit` {n} is larger than api.max_events_limit ({})",
                api.max_events_limit
            )));
        }
        Some(n) => n,
    };
    let wait = match q.wait {
        None => Duration::ZERO,
        Some(w) if !w.is_finite() || w < 0.0 => {
            return Err(ApiCode::BadRequest.with("`wait` must be a number of seconds, 0 or more"));
        }
        Some(w) if w > api.max_events_wait.as_secs_f64() => {
            metrics::counter!(m::LIMIT_HITS, "limit" => "events_wait").increment(1);
            return Err(ApiCode::BadRequest.with(format!(
                "`wait` {w} s is longer than api.max_events_wait ({} s)",
                api.max_events_wait.as_secs_f64()
            )));
        }
        Some(w) => Duration::from_secs_f64(w),
    };
    let filter = EventFilter {
        types: parse_types(q.types.as_deref())?,
        namespace: q.namespace.filter(|n| !n.is_empty()),
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut since = since;
    let mut recovered = true;
    loop {
        let page = node
            .events(since.clone(), limit, filter.clone())
            .await
            .map_err(api_error)?;
        recovered &= page.recovered;
        let now = tokio::time::Instant::now();
        if !page.events.is_empty() || now >= deadline {
            return Ok(Json(response(page, recovered)));
        }
        // Nothing (matching) yet: read on from where this read stopped, after a pause.
        since = Some(page.next);
        tokio::time::sleep_until(deadline.min(now + api.events_poll_interval)).await;
    }
}

fn response(page: EventsPage, recovered: bool) -> EventsResponse {
    EventsResponse {
        events: page.events.into_iter().map(EventJson::from).collect(),
        next: page.next.to_string(),
        latest: page.latest.to_string(),
        recovered,
    }
}

fn parse_types(types: Option<&str>) -> Result<Vec<EventType>, ApiError> {
    let Some(types) = types.filter(|t| !t.is_empty()) else {
        return Ok(Vec::new());
    };
    types
        .split(',')
        .map(|name| {
            EventType::parse(name.trim()).ok_or_else(|| {
                ApiCode::BadRequest.with(format!("unknown event type {name:?} in `types`"))
            })
        })
        .collect()
}

fn api_error(e: BrokerError) -> ApiError {
    match e {
        BrokerError::Unsupported(why) => ApiCode::NotSupported.with(why),
        e => ApiError::from(broker_error(e)),
    }
}
