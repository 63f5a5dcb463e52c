//! The edge's HTTP/1.1 listener: accepts TCP connections and serves the router on them with the
//! limits a public server needs before any request is parsed.
//!
//! ```text
//!   accept ─▶ per-IP open connections ≤ http.max_connections_per_ip (trusted proxies exempt)
//!          ─▶ TCP_NODELAY ─▶ hyper http1 (request head within http.header_read_timeout,
//!             which also bounds an idle keep-alive) ─▶ router (ConnectInfo = peer address)
//!   stop ─▶ no more accepts ─▶ graceful shutdown of every open connection ─▶ return
//! ```
//!
//! A slowloris client (a request head trickled byte by byte, or a keep-alive connection held
//! without a request) is cut at the header timeout, and one address cannot hold more than its
//! share of sockets: both apply before the per-IP handshake rate, which needs a whole request
//! head. Upgraded WebSockets leave hyper's accounting here and live in their session tasks.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::limits::ip_key;
use crate::metrics as m;

/// The listener's settings (from `[http]` and `[limits]`).
#[derive(Debug, Clone)]
pub(crate) struct HttpLimits {
    /// Longest a client may take to send a request head (and to start the next one on a
    /// keep-alive connection).
    pub(crate) header_read_timeout: Duration,
    /// Most open connections from one address (IPv6: one /`ipv6_prefix`); 0 = no limit.
    pub(crate) max_connections_per_ip: usize,
    /// Proxies, exempt from the per-IP limit (every client behind them shares their address).
    pub(crate) trusted_proxies: Vec<IpNet>,
    /// Prefix length IPv6 addresses are grouped by.
    pub(crate) ipv6_prefix: u8,
}

/// Open connections per address key; a slot is given back when its connection ends.
#[derive(Default)]
struct OpenByIp(Mutex<HashMap<IpAddr, usize>>);

struct Slot {
    open: Arc<OpenByIp>,
    key: IpAddr,
}

impl OpenByIp {
    fn take(self: &Arc<Self>, key: IpAddr, max: usize) -> Option<Slot> {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(key).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot {
            open: Arc::clone(self),
            key,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.open.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// Serves `app` on `listener` until `stop` fires, then shuts every open connection down
/// gracefully and returns once they have ended.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    stop: CancellationToken,
) {
    let open = Arc::new(OpenByIp::default());
    let connections = TaskTracker::new();
    loop {
        // `accept` is cancel-safe.
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = if limits.max_connections_per_ip == 0
            || limits
                .trusted_proxies
                .iter()
                .any(|p| p.contains(&peer.ip()))
        {
            None
        } else {
            match open.take(
                ip_key(peer.ip(), limits.ipv6_prefix),
                limits.max_connections_per_ip,
            ) {
                Some(slot) => Some(slot),
                None => {
                    metrics::counter!(m::LIMIT_HITS, "limit" => "open_connections_per_ip")
                        .increment(1);
                    drop(tcp);
                    continue;
                }
            }
        };
        // Small frames must not wait for Nagle's algorithm.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        connections.spawn(connection(
            tcp,
            peer,
            app.clone(),
            limits.header_read_timeout,
            stop.clone(),
            slot,
        ));
    }
    connections.close();
    connections.wait().await;
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    header_read_timeout: Duration,
    stop: CancellationToken,
    _slot: Option<Slot>,
) {
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(request.map(axum::body::Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let conn = builder
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "http connection ended");
            }
        }
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
