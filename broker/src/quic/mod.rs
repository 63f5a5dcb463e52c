//! QUIC between brokers (quinn + rustls/ring): Raft RPCs today, edge↔broker traffic later.
//!
//! ```text
//!   node A: openraft ─▶ QuicTransport::call ─▶ cached Connection ─▶ open_bi ─▶ request frame
//!   node B: serve(endpoint, RaftHandler) ─▶ accept ─▶ accept_bi ─▶ serve_rpc ─▶ reply frame
//! ```
//!
//! - [`tls`]: the cluster CA and node certificates (mutual TLS: only holders of a CA-signed
//!   certificate can connect either way), PEM load/generate/write.
//! - [`frame`]: one RPC per bidirectional stream, with magic bytes and a protocol version on
//!   every request.
//! - [`transport`]: [`QuicTransport`], the [`crate::raft::RaftTransport`] over QUIC.
//! - [`server`]: [`serve`], the accepting side, generic over an [`RpcHandler`] per ALPN.
//!
//! One UDP endpoint per broker both serves and dials. Each protocol has its own ALPN
//! ([`ALPN_RAFT`]; the edge protocol will add `plaza-edge/1`), so a later edge listener can
//! share the endpoint, the TLS material and the framing, and dispatch on the negotiated ALPN.

pub mod frame;
pub mod server;
pub mod session;
pub mod tls;
pub mod transport;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::{Endpoint, ServerConfig, TransportConfig, VarInt};

pub use server::{
    ConnectionHandler, RaftHandler, RpcHandler, RpcService, serve, serve_connections,
};
pub use tls::{ClusterTls, TlsError};
pub use transport::QuicTransport;

/// The ALPN of broker↔broker Raft RPCs.
pub const ALPN_RAFT: &[u8] = b"plaza-raft/1";

/// Timeouts and limits of the QUIC layer; every default is here.
#[derive(Debug, Clone)]
pub struct QuicOptions {
    /// Longest a dial may take (capped by the RPC's own timeout). On loopback or in one data
    /// centre a handshake takes milliseconds; a peer that does not answer is down.
    pub connect_timeout: Duration,
    /// A connection with no traffic for this long is dead (detects peers that vanished without
    /// closing; keep-alives keep healthy idle connections open).
    pub idle_timeout: Duration,
    /// Keep-alive period on idle connections (well under `idle_timeout`).
    pub keep_alive: Duration,
    /// Most RPC streams one connection may have in flight; further streams wait.
    pub max_concurrent_streams: u32,
    /// Longest the server waits for a whole request on a stream before resetting it.
    pub request_timeout: Duration,
}

impl Default for QuicOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(1),
            max_concurrent_streams: 64,
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl QuicOptions {
    pub(crate) fn transport_config(&self) -> Arc<TransportConfig> {
        let mut config = TransportConfig::default();
        config
            .max_concurrent_bidi_streams(VarInt::from_u32(self.max_concurrent_streams))
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .keep_alive_interval(Some(self.keep_alive))
            .max_idle_timeout(self.idle_timeout.try_into().ok());
        Arc::new(config)
    }
}

/// Why an endpoint could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The UDP socket could not be bound.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// Opens a broker's UDP endpoint on `bind` (port 0 picks one), serving Raft ([`ALPN_RAFT`])
/// with `tls` as its identity. Outgoing calls are made by a [`QuicTransport`] on the same
/// endpoint; incoming ones are answered once [`serve`] runs on it.
pub fn raft_endpoint(
    tls: &ClusterTls,
    bind: SocketAddr,
    options: &QuicOptions,
) -> Result<Endpoint, EndpointError> {
    endpoint(tls, bind, options, &[ALPN_RAFT])
}

/// Opens a broker's UDP endpoint on `bind` serving `alpns` (a running broker serves
/// [`ALPN_RAFT`] to its peers and [`crate::edges::ALPN_EDGE`] to edges on the same port).
pub fn endpoint(
    tls: &ClusterTls,
    bind: SocketAddr,
    options: &QuicOptions,
    alpns: &[&[u8]],
) -> Result<Endpoint, EndpointError> {
    let mut config = ServerConfig::with_crypto(Arc::new(tls.server_config(alpns)?));
    config.transport_config(options.transport_config());
    Endpoint::server(config, bind).map_err(|source| EndpointError::Bind { addr: bind, source })
}
