//! `plaza-edge`: holds client WebSockets, authenticates and authorises them, and fans each
//! room event out to its local subscribers. It owns no authoritative state: the broker tier
//! ([`plaza_backend::Backend`]) does.
//!
//! ```text
//!  client ─ws─▶ server (/v1/ws) ─▶ session (one task per socket) ─▶ node ─▶ EdgeLink ─▶ broker tier
//!  app ──HTTP─▶ api (/v1/api/*) ──────────────────────────────────▶ node ─┘
//!  client ◀─ws─ outbox (per socket) ◀─ hub (one upstream subscription per room) ◀─ node ◀─ LinkEvents
//! ```
//!
//! - [`node`]: the edge's shared state, its link to the broker tier (re-attached after a
//!   failure) and the one wrapper every broker call goes through.
//! - [`config`]: typed configuration (file → `PLAZA_*` env → flags), validated once.
//! - [`auth`]: JWT verification (HMAC secret or identity providers' JWKS) and capabilities.
//! - [`server`]: HTTP routes; [`session`]: one client; [`outbox`]: its bounded send queue;
//!   [`hub`]: local fan-out, encode once per event.
//! - [`limits`], [`client_ip`], [`users`]: rate and connection limits, origin allowlist,
//!   client address behind trusted proxies, connections per user.
//! - [`api`]: the server HTTP API (`/v1/api/*`) authenticated with API keys.
//! - [`dev`]: the `--dev` demo page and token endpoint.
//! - `webhooks`: the one webhook sender of the deployment (elected through the broker tier),
//!   POSTing the lifecycle event feed to `[webhooks]` endpoints.
//!
//! [`start`] runs an edge on any backend; `main.rs` wires it to the CLI and signals.

pub mod api;
pub mod auth;
mod client_ip;
pub mod config;
pub mod dev;
mod ephemeral;
mod http;
mod hub;
mod limits;
mod metrics;
mod node;
mod outbox;
mod server;
mod session;
mod small_map;
mod state;
mod timers;
mod user_presence;
mod users;
mod webhooks;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use plaza_backend::{AttachOptions, Backend, EdgeLink};
use plaza_proto::EdgeId;
use plaza_proto::cluster::BrokerError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::Verifier;
use crate::config::EdgeConfig;
use crate::node::Node;

/// Why an edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The broker tier refused or could not be reached.
    #[error("cannot attach to the broker tier: {0}")]
    Attach(#[from] BrokerError),
    /// Token verification cannot be set up from `[auth]`.
    #[error("cannot set up token verification: {0}")]
    Auth(#[from] auth::AuthSetupError),
}

/// A running edge.
pub struct RunningEdge {
    addr: SocketAddr,
    shutdown: CancellationToken,
    done: JoinHandle<()>,
}

impl RunningEdge {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts the graceful drain (as SIGTERM does) without waiting.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Drains and waits until the edge has stopped.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.done.await;
    }

    /// Waits until the edge has stopped (after [`RunningEdge::begin_shutdown`] or a signal
    /// passed to [`start`]).
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// Starts an edge on `backend` and returns once it is listening. `dev_secret` enables the
/// dev routes. Cancelling [`RunningEdge::begin_shutdown`] drains it: readiness turns false,
/// new connections are refused, clients are disconnected (reconnectable) spread over
/// `drain.window`, and everything stops within `drain.grace`.
pub async fn start<B: Backend>(
    config: EdgeConfig,
    backend: B,
    dev_secret: Option<Vec<u8>>,
) -> Result<RunningEdge, StartError> {
    let verifier = Verifier::with_dev_key(&config.auth, dev_secret.as_deref())?;
    let edge_id = format!("{:08x}", rand::random::<u32>());
    let attach = AttachOptions {
        edge: EdgeId::new(edge_id.clone()),
        lease: config.broker.lease,
    };
    let (link, events) = backend.attach(attach.clone()).await?;
    let listener =
        listen(config.listen, config.http.listen_backlog).map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let node = Arc::new(Node::new(
        config,
        verifier,
        link,
        edge_id,
        crate::metrics::install(),
        dev_secret,
    ));
    let shutdown = CancellationToken::new();
    let stop_listening = CancellationToken::new();
    tokio::spawn(forget_idle_ips(node.clone(), shutdown.clone()));
    webhooks::spawn(&node, &shutdown);
    let supervisor = tokio::spawn(crate::node::supervise(
        node.clone(),
        backend,
        attach,
        events,
        shutdown.clone(),
    ));
    let limits = http::HttpLimits {
        header_read_timeout: node.config.http.header_read_timeout,
        max_connections_per_ip: node.config.limits.max_connections_per_ip,
        trusted_proxies: node.config.http.trusted_proxies.clone(),
        ipv6_prefix: node.config.limits.ipv6_prefix,
    };
    let http = tokio::spawn(http::serve(
        listener,
        server::router(node.clone()),
        limits,
        stop_listening.clone(),
    ));
    tracing::info!(addr = %addr, edge = %node.edge_id, "plaza-edge listening");
    let done = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            let deadline = tokio::time::Instant::now() + node.config.drain.grace;
            drain(&node).await;
            stop_listening.cancel();
            // Plain HTTP requests still in flight (or half-sent by a slow client) get what is
            // left of the grace period, then the server is dropped.
            let mut http = http;
            if tokio::time::timeout_at(deadline, &mut http).await.is_err() {
                tracing::warn!("grace period over; dropping open HTTP connections");
                http.abort();
            }
            let link = node.link();
            let _ = tokio::time::timeout(Duration::from_secs(2), link.close()).await;
            supervisor.abort();
            let _ = supervisor.await;
            tracing::info!("plaza-edge stopped");
        }
    });
    Ok(RunningEdge {
        addr,
        shutdown,
        done,
    })
}

/// Bounds the per-IP and per-user limiters' memory by forgetting quiet keys every minute.
async fn forget_idle_ips<L: EdgeLink>(node: Arc<Node<L>>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {
                node.connection_rate.forget_idle();
                node.failed_auth.forget_idle();
                node.publish_budget.forget_idle();
                node.ephemeral_rooms.forget_idle();
            }
        }
    }
}

/// Disconnects every client (reconnectable), spread over the drain window, and waits for the
/// sessions to end, at most until the grace period is over.
async fn drain<L: EdgeLink>(node: &Node<L>) {
    let started = tokio::time::Instant::now();
    tracing::info!(window = ?node.config.drain.window, "draining");
    ::metrics::gauge!(crate::metrics::DRAINING).set(1.0);
    node.start_drain();
    node.sessions.close();
    let grace = node.config.drain.grace;
    if tokio::time::timeout(grace, node.sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            left = node.sessions.len(),
            "grace period over; dropping remaining connections"
        );
    }
    tracing::info!(took = ?started.elapsed(), "drained");
}

/// Binds the listening socket with `backlog` pending connections (tokio's `bind` uses 1024).
fn listen(addr: std::net::SocketAddr, backlog: u32) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted edge can bind while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}
