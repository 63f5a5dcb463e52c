//! `plaza-net`: what both ends of Plaza's QUIC links share (quinn + rustls/ring).
//!
//! ```text
//!   caller: dial::resolve ─▶ Endpoint::connect (tls::client_config, ALPN) ─▶ open_bi
//!              frame::exchange (one RPC per stream)  |  framing::write_one / FrameReader (session)
//!   server: endpoint() ─▶ serve_connections ─▶ ConnectionHandler by ALPN
//!              ├─ RpcService<H: RpcHandler>: accept_bi ─▶ frame::read_request ─▶ handle ─▶ reply
//!              └─ a long-lived session (the broker's side of plaza-edge/1) on its own stream
//! ```
//!
//! - [`tls`]: the cluster CA and node certificates (mutual TLS: only holders of a CA-signed
//!   certificate can connect either way), PEM load/generate/write.
//! - [`frame`]: one RPC per bidirectional stream, with magic bytes and a protocol version on
//!   every request; [`framing`]: length-prefixed frames on a long-lived stream.
//! - [`server`]: the accepting side, dispatching connections by negotiated ALPN.
//! - [`dial`]: resolving `host:port` and the TLS server name.
//!
//! The protocols themselves (Raft RPCs, the edge protocol) live with their owners: the Raft
//! transport and the edge server in `plaza-broker`, the edge's client in `plaza-backend`. The
//! ALPN names are in `plaza_proto::links`.
#![deny(missing_docs)]

pub mod dial;
pub mod frame;
pub mod framing;
mod role;
pub mod server;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::{Endpoint, ServerConfig, TransportConfig, VarInt};

pub use server::{ConnectionHandler, RpcHandler, RpcService, serve_connections};
pub use tls::{ClusterTls, TlsError};

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
    /// The quinn transport settings these options stand for (both ends use the same).
    pub fn transport_config(&self) -> Arc<TransportConfig> {
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

/// Opens a UDP endpoint on `bind` (port 0 picks one) that serves `alpns` with `tls` as its
/// identity and can also dial out (a running broker serves `plaza-raft/1` to its peers and
/// `plaza-edge/1` to edges on the same port; see `plaza_proto::links`).
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
