//! HTTP: the WebSocket upgrade at `/v1/ws`, health, readiness, metrics, and in dev mode the
//! demo page and `/dev/token`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use std::net::SocketAddr;

use axum::extract::ws::{CloseFrame, Message};
use axum::extract::{ConnectInfo, Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use plaza_backend::EdgeLink;
use plaza_proto::CloseCode;
use plaza_proto::client::SUBPROTOCOL;
use plaza_rooms::config::Namespaces;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Verifier;
use crate::client_ip::client_ip;
use crate::config::EdgeConfig;
use crate::hub::Hub;
use crate::metrics as m;

/// What every request and session of one edge shares.
pub struct Ctx<L: EdgeLink> {
    /// The validated configuration.
    pub config: EdgeConfig,
    /// Resolved namespace options.
    pub namespaces: Namespaces,
    /// Token verifier.
    pub verifier: Verifier,
    /// Local fan-out and the broker link.
    pub hub: Hub<L>,
    /// Connections by user.
    pub users: Arc<crate::users::Users>,
    /// Browser origins allowed to connect.
    pub origins: crate::limits::OriginPolicy,
    /// New connections per client IP.
    pub connection_rate: crate::limits::ConnectionRate,
    /// This edge's id (prefix of client ids).
    pub edge_id: String,
    /// Cancelled when the edge starts draining: sessions disconnect over the drain window.
    pub drain: CancellationToken,
    /// Whether the broker link is up (for `/readyz`).
    pub backend_up: AtomicBool,
    /// Tracks session tasks so shutdown can wait for them.
    pub sessions: TaskTracker,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// The dev-mode token secret, only in `--dev`.
    pub dev_secret: Option<Vec<u8>>,
}

impl<L: EdgeLink> Ctx<L> {
    /// Whether the edge accepts new connections.
    pub fn ready(&self) -> bool {
        !self.drain.is_cancelled() && self.backend_up()
    }

    /// Whether the broker tier is usable: attached, and the link itself ready.
    pub fn backend_up(&self) -> bool {
        self.backend_up.load(Ordering::Relaxed) && self.hub.link().ready()
    }
}

/// The edge's routes.
pub fn router<L: EdgeLink>(ctx: Arc<Ctx<L>>) -> Router {
    let mut router = Router::new()
        .route("/v1/ws", get(ws::<L>))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz::<L>))
        .merge(crate::api::router(&ctx))
        .route("/metrics", get(metrics::<L>));
    if ctx.dev_secret.is_some() {
        router = router
            .route("/", get(crate::dev::page))
            .route("/dev/token", get(crate::dev::token::<L>));
    }
    router.with_state(ctx)
}

#[derive(Deserialize)]
struct WsQuery {
    token: Option<String>,
}

async fn ws<L: EdgeLink>(
    State(ctx): State<Arc<Ctx<L>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<WsQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let origin = headers
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or("<invalid>"));
    if !ctx.origins.allows(origin) {
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
    let http = &ctx.config.http;
    let ip = client_ip(
        peer.ip(),
        &headers,
        &http.trusted_proxies,
        http.cf_connecting_ip,
    );
    if let Err(wait) = ctx.connection_rate.admit(ip) {
        let retry = wait.as_secs().max(1).to_string();
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, retry)],
            format!("too many new connections from {ip}; retry later\n"),
        )
            .into_response();
    }
    if ctx.drain.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "edge is draining; try another edge\n",
        )
            .into_response();
    }
    if !ctx.backend_up() {
        // Upgrade and close with the reconnectable 4004, so clients see a protocol code (a
        // refused handshake only shows as 1006) and retry with backoff.
        return upgrade
            .protocols([SUBPROTOCOL])
            .on_upgrade(|mut socket| async move {
                let frame = CloseFrame {
                    code: CloseCode::BackendUnavailable.code(),
                    reason: "broker tier unavailable; reconnect".into(),
                };
                let _ = socket.send(Message::Close(Some(frame))).await;
            });
    }
    let token = query.token.or_else(|| {
        let name = ctx.config.auth.token_cookie.as_deref()?;
        cookie(&headers, name)
    });
    let c = &ctx.config.client;
    let upgrade = upgrade
        .protocols([SUBPROTOCOL])
        .read_buffer_size(c.read_buffer_bytes)
        .write_buffer_size(c.write_buffer_bytes)
        // The writer feeds frames and waits for the flush once `write_buffer_size` is
        // passed, so the buffer holds at most that plus one frame; a frame may be a whole
        // history reply, hence no smaller hard cap here (our own queue is the bound).
        .max_write_buffer_size(usize::MAX)
        .max_message_size(c.max_frame_bytes)
        .max_frame_size(c.max_frame_bytes);
    let sessions = ctx.sessions.clone();
    upgrade
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "websocket upgrade failed"))
        .on_upgrade(move |socket| sessions.track_future(crate::session::run(socket, ctx, token)))
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

async fn readyz<L: EdgeLink>(State(ctx): State<Arc<Ctx<L>>>) -> Response {
    if ctx.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else if ctx.drain.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "broker tier unavailable\n").into_response()
    }
}

async fn metrics<L: EdgeLink>(State(ctx): State<Arc<Ctx<L>>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        ctx.metrics.render(),
    )
        .into_response()
}
