//! HTTP: the WebSocket upgrade at `/v1/ws`, health, readiness, metrics, and in dev mode the
//! demo page and `/dev/token`.

use std::sync::Arc;

use axum::Router;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use plaza_backend::EdgeLink;
use plaza_proto::CloseCode;
use plaza_proto::client::SUBPROTOCOL;
use serde::Deserialize;

use crate::client_ip::client_ip;
use crate::metrics as m;
use crate::node::Node;
use crate::ws::upgrade::Upgrade;

/// The edge's routes.
pub(crate) fn router<L: EdgeLink>(node: Arc<Node<L>>) -> Router {
    let mut router = Router::new()
        .route("/v1/ws", get(ws::<L>))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz::<L>))
        .merge(crate::api::router(&node))
        .route("/metrics", get(metrics::<L>));
    if node.dev_secret.is_some() {
        router = router
            .route("/", get(crate::dev::page))
            .route("/dev/token", get(crate::dev::token::<L>));
    }
    router.with_state(node)
}

#[derive(Deserialize)]
struct WsQuery {
    token: Option<String>,
}

async fn ws<L: EdgeLink>(
    State(node): State<Arc<Node<L>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<WsQuery>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let (mut parts, _body) = request.into_parts();
    let upgrade = match Upgrade::from_parts(&mut parts, &node.config.client, SUBPROTOCOL).await {
        Ok(upgrade) => upgrade,
        Err(refused) => return refused,
    };
    let origin = headers
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or("<invalid>"));
    if !node.origins.allows(origin) {
        metrics::counter!(m::LIMIT_HITS, "limit" => "origin").increment(1);
        let origin = origin
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect::<String>();
        return (
            StatusCode::FORBIDDEN,
            format!("origin {origin:?} is not allowed\n"),
        )
            .into_response();
    }
    let http = &node.config.http;
    let ip = client_ip(
        peer.ip(),
        &headers,
        &http.trusted_proxies,
        http.cf_connecting_ip,
    );
    if let Err(wait) = node.connection_rate.admit(ip) {
        let retry = wait.as_secs().max(1).to_string();
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, retry)],
            format!("too many new connections from {ip}; retry later\n"),
        )
            .into_response();
    }
    if node.drain.started() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "edge is draining; try another edge\n",
        )
            .into_response();
    }
    if !node.backend_up() {
        // Upgrade and close with the reconnectable 4004, so clients see a protocol code (a
        // refused handshake only shows as 1006) and retry with backoff.
        return upgrade.respond(|socket| {
            socket.close_now(
                CloseCode::BackendUnavailable.code(),
                "broker tier unavailable; reconnect",
            )
        });
    }
    let token = query.token.or_else(|| {
        let name = node.config.auth.token_cookie.as_deref()?;
        cookie(&headers, name)
    });
    let sessions = node.sessions.clone();
    upgrade.respond(move |socket| sessions.track_future(crate::session::run(socket, node, token)))
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

async fn readyz<L: EdgeLink>(State(node): State<Arc<Node<L>>>) -> Response {
    if node.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else if node.drain.started() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "broker tier unavailable\n").into_response()
    }
}

/// Headers a proxy adds to what it forwards.
const FORWARDING_HEADERS: [&str; 4] = [
    "forwarded",
    "x-forwarded-for",
    "x-real-ip",
    "cf-connecting-ip",
];

async fn metrics<L: EdgeLink>(State(node): State<Arc<Node<L>>>, headers: HeaderMap) -> Response {
    let forwarded = FORWARDING_HEADERS.iter().any(|h| headers.contains_key(*h));
    if forwarded && !node.config.http.metrics_through_proxies {
        metrics::counter!(m::LIMIT_HITS, "limit" => "metrics_via_proxy").increment(1);
        return (
            StatusCode::NOT_FOUND,
            "not found (metrics are not served through proxies; see http.metrics_through_proxies)\n",
        )
            .into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        node.metrics.render(),
    )
        .into_response()
}
