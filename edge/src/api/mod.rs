//! The server HTTP API under `/v1/api/`: what an application's back end (a Next.js server
//! action, a job, `curl`) uses to publish, inspect rooms and disconnect users. Reference:
//! `docs/api.md` and `docs/openapi.yaml`.
//!
//! ```text
//!  request ─▶ count (plaza_api_requests_total) ─▶ require_key (Bearer, constant time)
//!          ─▶ DefaultBodyLimit ─▶ handler: extract + validate ─▶ EdgeLink call (call_timeout)
//!          ◀─ JSON body, or {"error": {"code", "message"}} with the code's status
//! ```
//!
//! - `auth.rs`: API keys; [`error`]: the codes and statuses; `extract.rs`: bodies, queries and
//!   paths with the API's errors.
//! - [`publish`]: `publish`, `broadcast`; [`rooms`]: `rooms`, `presence`, `presence_stats`,
//!   `history`; [`users`]: `disconnect`.
//!
//! Every handler is one or a few broker calls: the API holds no state and works on any edge,
//! so a load balancer may send each request anywhere.

mod auth;
pub mod error;
mod extract;
pub mod publish;
pub mod rooms;
pub mod users;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{Method, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, get, post};
use plaza_backend::EdgeLink;
use plaza_proto::cluster::BrokerError;

pub use error::{ApiCode, ApiError};

use crate::metrics as m;
use crate::server::Ctx;

/// The API's routes under `/v1/api`, with authentication, the body limit and metrics; merge
/// it into the edge's router (whose state is the same `ctx`). Every other path under
/// `/v1/api` is answered here too (404 `not_found`, after authentication), so the whole prefix
/// speaks JSON errors, while the edge's other paths keep their own fallback.
pub fn router<L: EdgeLink>(ctx: &Arc<Ctx<L>>) -> Router<Arc<Ctx<L>>> {
    Router::new()
        .route("/v1/api/publish", post(publish::publish::<L>))
        .route("/v1/api/broadcast", post(publish::broadcast::<L>))
        .route("/v1/api/disconnect", post(users::disconnect::<L>))
        .route("/v1/api/rooms", get(rooms::list::<L>))
        .route("/v1/api/rooms/{room}/presence", get(rooms::presence::<L>))
        .route(
            "/v1/api/rooms/{room}/presence_stats",
            get(rooms::presence_stats::<L>),
        )
        .route("/v1/api/rooms/{room}/history", get(rooms::history::<L>))
        .route("/v1/api", any(not_found))
        .route("/v1/api/", any(not_found))
        .route("/v1/api/{*rest}", any(not_found))
        .method_not_allowed_fallback(method_not_allowed)
        // `route_layer`, not `layer`: the edge's own fallback (e.g. `/favicon.ico`) must not
        // ask for an API key once this router is merged in.
        .route_layer(DefaultBodyLimit::max(ctx.config.http.max_body_bytes))
        .route_layer(middleware::from_fn_with_state(
            ctx.clone(),
            auth::require_key::<L>,
        ))
        .route_layer(middleware::from_fn(count))
}

/// Runs a broker call with `broker.call_timeout`, timing it like the WebSocket sessions do.
async fn call<L: EdgeLink, T>(
    ctx: &Ctx<L>,
    name: &'static str,
    f: impl Future<Output = Result<T, BrokerError>>,
) -> Result<T, ApiError> {
    let start = std::time::Instant::now();
    let limit = ctx.config.broker.call_timeout;
    let result = tokio::time::timeout(limit, f).await;
    metrics::histogram!(m::BROKER_CALL_SECONDS, "call" => name)
        .record(start.elapsed().as_secs_f64());
    match result {
        Ok(r) => r.map_err(ApiError::from),
        Err(_) => Err(ApiCode::BackendUnavailable.with(format!(
            "broker call {name} timed out after {}",
            humantime::format_duration(limit)
        ))),
    }
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
