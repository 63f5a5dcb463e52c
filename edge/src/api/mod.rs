//! The server HTTP API under `/v1/api/`: what an application's back end (a Next.js server
//! action, a job, `curl`) uses to publish, inspect rooms and disconnect users. Reference:
//! `docs/api.md` and `docs/openapi.yaml`.
//!
//! ```text
//!  request ─▶ count (plaza_api_requests_total) ─▶ require_key (Bearer, constant time)
//!          ─▶ DefaultBodyLimit ─▶ handler: extract + validate ─▶ Node call (node/calls.rs)
//!          ◀─ JSON body, or {"error": {"code", "message"}} with the code's status
//! ```
//!
//! - `auth.rs`: API keys; [`error`]: the codes and statuses; `extract.rs`: bodies, queries and
//!   paths with the API's errors.
//! - [`publish`]: `publish`, `broadcast`; `ephemeral.rs`: `publish_ephemeral`; [`rooms`]:
//!   `rooms`, `presence`, `presence_stats`, `history`; [`users`]: `disconnect`; [`events`]: the
//!   lifecycle event feed.
//!
//! Every handler is one or a few broker calls: the API holds no state and works on any edge,
//! so a load balancer may send each request anywhere.

mod auth;
mod ephemeral;
pub mod error;
pub mod events;
mod extract;
pub mod publish;
pub mod rooms;
mod state;
pub mod users;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{Method, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use plaza_backend::EdgeLink;
use tower_http::catch_panic::CatchPanicLayer;

pub use error::{ApiCode, ApiError};

use crate::metrics as m;
use crate::node::Node;

/// The API's routes under `/v1/api`, with authentication, the body limit and metrics; merge
/// it into the edge's router (whose state is the same `node`). Every other path under
/// `/v1/api` is answered here too (404 `not_found`, after authentication), so the whole prefix
/// speaks JSON errors, while the edge's other paths keep their own fallback.
pub fn router<L: EdgeLink>(node: &Arc<Node<L>>) -> Router<Arc<Node<L>>> {
    Router::new()
        .route("/v1/api/publish", post(publish::publish::<L>))
        .route("/v1/api/broadcast", post(publish::broadcast::<L>))
        .route(
            "/v1/api/publish_ephemeral",
            post(ephemeral::publish_ephemeral::<L>),
        )
        .route("/v1/api/disconnect", post(users::disconnect::<L>))
        .route("/v1/api/rooms", get(rooms::list::<L>))
        .route("/v1/api/rooms/{room}/presence", get(rooms::presence::<L>))
        .route(
            "/v1/api/rooms/{room}/presence_stats",
            get(rooms::presence_stats::<L>),
        )
        .route("/v1/api/rooms/{room}/history", get(rooms::history::<L>))
        .route("/v1/api/events", get(events::events::<L>))
        .route("/v1/api/state/set", post(state::set::<L>))
        .route("/v1/api/state/delete", post(state::delete::<L>))
        .route("/v1/api/rooms/{room}/state", get(state::read::<L>))
        .route("/v1/api", any(not_found))
        .route("/v1/api/", any(not_found))
        .route("/v1/api/{*rest}", any(not_found))
        .method_not_allowed_fallback(method_not_allowed)
        // `route_layer`, not `layer`: the edge's own fallback (e.g. `/favicon.ico`) must not
        // ask for an API key once this router is merged in.
        .route_layer(DefaultBodyLimit::max(node.config.http.max_body_bytes))
        .route_layer(middleware::from_fn_with_state(
            node.clone(),
            auth::require_key::<L>,
        ))
        .route_layer(middleware::from_fn(count))
        // Outermost: a panicking handler is answered with a JSON 500 (and counted) instead of
        // a dropped connection.
        .route_layer(CatchPanicLayer::custom(panicked))
}

/// The answer to a request whose handler panicked. The panic's message is not echoed (it may
/// quote internals); the process's panic hook has printed it.
fn panicked(_payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    metrics::counter!(m::HANDLER_PANICS, "stage" => "api").increment(1);
    tracing::error!("a server API handler panicked; answered 500");
    ApiCode::Internal
        .with("internal error; it was logged")
        .into_response()
}

/// Counts every request by route template (bounded cardinality) and status; unknown paths
/// (the catch-all routes) count as `unmatched`.
async fn count(request: Request, next: Next) -> Response {
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str())
        .filter(|p| !p.contains('*') && p.len() > "/v1/api/".len())
        .unwrap_or("unmatched")
        .to_owned();
    let response = next.run(request).await;
    metrics::counter!(
        m::API_REQUESTS,
        "endpoint" => endpoint,
        "status" => response.status().as_u16().to_string(),
    )
    .increment(1);
    response
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiCode::NotFound.with(format!("no endpoint {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiCode::MethodNotAllowed.with(format!("{} does not accept {method}", uri.path()))
}
