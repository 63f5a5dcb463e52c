//! The `plaza-broker` process: one Raft node on its QUIC endpoint, plus its HTTP status side.
//!
//! ```text
//!   BrokerConfig ─▶ ClusterTls ─▶ endpoint (UDP) ─┬─ serve_connections(Protocols) by ALPN:
//!                                                 │    plaza-raft/1 ─▶ PeerHandler  ◀── peers
//!                                                 │    plaza-edge/1 ─▶ EdgeService  ◀── edges
//!                                                 └─ QuicTransport ─▶ RaftNode ──▶ peers
//!   http_listen ─▶ /status /healthz /readyz /metrics (status.rs) ◀── RaftNode::status()
//!   shutdown future ─▶ readyz false ─▶ Raft shut down ─▶ serving stopped ─▶ endpoint closed
//! ```
//!
//! - [`config`]: [`BrokerConfig`], file → flags, validated, errors naming the key.
//! - [`status`]: the HTTP routes; [`admin`]: `POST /admin/members` (token-protected).
//!
//! Identities: every connection's certificate names a role (`plaza_net::tls::Role`). Only a
//! broker certificate may speak `plaza-raft/1`, and its Raft RPCs may only claim its own node id
//! (`crate::peers`); only an edge certificate may speak `plaza-edge/1`, attaching with an edge id
//! its name owns (`crate::serve_edges`). Anything else is closed with `ERR_WRONG_ROLE` and
//! counted in `plaza_broker_identity_refused_total`. The broker's own certificate must be a
//! broker certificate for its node id, or it does not start.
//!
//! Bootstrap: the peer with the lowest id initializes the cluster with every listed peer as a
//! voter if it has no Raft state yet (a restart with its data dir is a no-op); the others wait
//! to be contacted by the leader.

mod admin;
pub mod config;
mod status;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::BrokerConfig;
pub use plaza_process::{ConfigError, EXIT_BAD_CONFIG, LogFormat};

use plaza_net::frame::{CLOSE_SHUTDOWN, ERR_WRONG_ROLE};
use plaza_net::tls::{Role, peer_role};
use plaza_net::{
    ClusterTls, ConnectionHandler, EndpointError, QuicOptions, RpcService, TlsError,
    endpoint as quic_endpoint, serve_connections,
};
use plaza_proto::links::{ALPN_EDGE, ALPN_RAFT};

use crate::metrics as m;
use crate::peers::PeerHandler;
use crate::raft::{BrokerNode, NodeId, QuicTransport, RaftNode, StartError, Storage};
use crate::serve_edges::EdgeService;

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The TLS files are missing or unusable.
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    /// The QUIC endpoint could not be opened.
    #[error("raft_listen: {0}")]
    Endpoint(#[from] EndpointError),
    /// The Raft node could not start (storage, config) or bootstrap.
    #[error("raft: {0}")]
    Start(#[from] StartError),
    /// The HTTP listener could not be bound.
    #[error("http_listen {addr}: {source}")]
    Http {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// Longest a stopping leader spends handing leadership over before it just stops.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs the broker until `shutdown` completes, then stops it within `shutdown_grace`.
pub async fn run(config: BrokerConfig, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let id = config.id();
    let tls = match (&config.tls.ca, &config.tls.cert, &config.tls.key) {
        (Some(ca), Some(cert), Some(key)) => ClusterTls::load(ca, cert, key)?,
        _ => {
            return Err(
                TlsError::Config("tls.ca, tls.cert and tls.key are required".into()).into(),
            );
        }
    };
    check_own_role(&tls, id)?;
    // Broker links: a silently dead peer (or edge) is noticed within a second and a half;
    // keep-alives keep healthy idle links well inside that.
    let options = QuicOptions {
        idle_timeout: Duration::from_millis(1500),
        keep_alive: Duration::from_millis(250),
        ..QuicOptions::default()
    };
    let endpoint = quic_endpoint(&tls, config.raft_listen, &options, &[ALPN_RAFT, ALPN_EDGE])?;
    let raft_addr = endpoint.local_addr().unwrap_or(config.raft_listen);
    let transport = QuicTransport::new(endpoint.clone(), &tls, options.clone())?;
    let storage = match &config.data_dir {
        Some(dir) => Storage::Dir(dir.clone()),
        None => Storage::Memory,
    };
    let node = RaftNode::start(id, config.raft_node_config(), storage, transport).await?;

    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let edges = EdgeService::start(node.clone(), config.edges.clone(), cancel.clone());
    let protocols = Protocols {
        peers: PeerHandler::new(node.clone(), edges.clone()),
        options,
        edges,
    };
    tasks.spawn(serve_connections(
        endpoint.clone(),
        protocols,
        cancel.clone(),
    ));
    let serving = Arc::new(AtomicBool::new(true));
    let listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .map_err(|source| RunError::Http {
            addr: config.http_listen,
            source,
        })?;
    let http_addr = listener.local_addr().unwrap_or(config.http_listen);
    let app = status::router(status::HttpState::new(
        node.clone(),
        Arc::clone(&serving),
        config.admin_token.as_ref().map(|t| t.0.as_str()),
    ));
    let http_cancel = cancel.clone();
    tasks.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(http_cancel.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "http server failed");
        }
    });
    tracing::info!(node = id, raft = %raft_addr, http = %http_addr, "broker started");

    if let Some(members) = bootstrap_members(&config, raft_addr) {
        let voters: Vec<NodeId> = members.keys().copied().collect();
        tracing::info!(
            node = id,
            ?voters,
            "initializing the cluster unless already done"
        );
        node.initialize(members).await?;
    }

    shutdown.await;
    serving.store(false, Ordering::Relaxed);
    let was_leader = node.is_leader();
    tracing::info!(node = id, was_leader, "shutting down");
    let stop = async {
        // openraft 0.9 has no leadership transfer: a leader hands over itself (`handover.rs`:
        // catch up the best follower, ask it to campaign) so writes pause for about a round
        // trip; if that fails, the followers elect a new leader after their election timeout.
        if was_leader {
            match node.hand_over(HANDOVER_TIMEOUT).await {
                Ok(leader) => tracing::info!(node = id, ?leader, "leadership handed over"),
                Err(why) => tracing::warn!(node = id, why, "leadership hand-over failed"),
            }
        }
        node.shutdown().await;
        cancel.cancel();
        tasks.close();
        tasks.wait().await;
        endpoint.close(CLOSE_SHUTDOWN, b"shutting down");
        endpoint.wait_idle().await;
    };
    if tokio::time::timeout(config.shutdown_grace, stop)
        .await
        .is_err()
    {
        tracing::warn!(grace = ?config.shutdown_grace, "shutdown grace period ran out");
    }
    tracing::info!(node = id, "stopped");
    Ok(())
}

/// Refuses to start a broker whose certificate is not a broker certificate for its node id
/// (an edge's, another broker's, or one from before roles existed).
pub fn check_own_role(tls: &ClusterTls, id: NodeId) -> Result<(), TlsError> {
    match tls.role() {
        Ok(Role::Broker(cert_id)) if cert_id == id => Ok(()),
        Ok(role) => Err(TlsError::Config(format!(
            "tls.cert is the certificate of {role}, not of broker {id}; issue one with \
             `plaza-broker cert --brokers {id}=NAME`"
        ))),
        Err(e) => Err(TlsError::Config(format!("tls.cert: {e}"))),
    }
}

/// What the broker's QUIC port serves: peers (Raft and forwarded calls) and edges, each only to
/// certificates of the matching role.
#[derive(Clone)]
struct Protocols {
    peers: PeerHandler,
    options: QuicOptions,
    edges: EdgeService,
}

impl ConnectionHandler for Protocols {
    fn speaks(&self, alpn: &[u8]) -> bool {
        alpn == ALPN_RAFT || alpn == ALPN_EDGE
    }

    async fn serve(&self, alpn: Vec<u8>, conn: quinn::Connection, cancel: CancellationToken) {
        let edge_alpn = alpn == ALPN_EDGE;
        let label = if edge_alpn { "edge" } else { "raft" };
        let role = match peer_role(&conn) {
            Ok(role) => role,
            Err(e) => return refuse_identity(&conn, label, "no_role", &e.to_string()),
        };
        match (edge_alpn, role) {
            (true, Role::Edge(name)) => self.edges.serve(conn, name, cancel).await,
            (false, Role::Broker(peer)) => {
                let handler = self.peers.for_peer(peer);
                RpcService::new(ALPN_RAFT, handler, self.options.clone())
                    .serve(alpn, conn, cancel)
                    .await;
            }
            (true, role) => {
                let why = format!("{role} may not attach as an edge (edge certificates only)");
                refuse_identity(&conn, label, "not_edge", &why);
            }
            (false, role) => {
                let why = format!("{role} may not speak plaza-raft/1 (broker certificates only)");
                refuse_identity(&conn, label, "not_broker", &why);
            }
        }
    }
}

/// Closes `conn` with [`ERR_WRONG_ROLE`], logging and counting why.
pub(crate) fn refuse_identity(
    conn: &quinn::Connection,
    alpn: &'static str,
    reason: &'static str,
    why: &str,
) {
    tracing::warn!(remote = %conn.remote_address(), alpn, reason, why, "refused a peer's identity");
    metrics::counter!(m::IDENTITY_REFUSED, "alpn" => alpn, "reason" => reason).increment(1);
    conn.close(ERR_WRONG_ROLE, why.as_bytes());
}

/// The voters this node initializes the cluster with, if it is the one that should: the
/// lowest-id peer, or a lone node when no peers are configured.
fn bootstrap_members(
    config: &BrokerConfig,
    raft_addr: SocketAddr,
) -> Option<BTreeMap<NodeId, BrokerNode>> {
    let id = config.id();
    if config.peers.is_empty() {
        return Some(BTreeMap::from([(
            id,
            BrokerNode::new(raft_addr.to_string()),
        )]));
    }
    let lowest = config.peers.iter().map(|p| p.id).min()?;
    (lowest == id).then(|| {
        config
            .peers
            .iter()
            .map(|p| (p.id, BrokerNode::new(p.addr.clone())))
            .collect()
    })
}
