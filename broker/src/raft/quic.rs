//! [`QuicTransport`]: the sending side of Raft over QUIC (`plaza-raft/1`); the receiving side
//! is `crate::peers` served on the broker's endpoint by `crate::server`.
//!
//! One cached connection per peer, one bidirectional stream per RPC. A connection is opened on
//! the first call to a peer and reused until it closes (peer restarted, idle timeout); then the
//! next call dials again. Failing to dial is reported as [`TransportError::Unreachable`] so
//! openraft backs off instead of hammering a dead peer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use quinn::{ClientConfig, Connection, Endpoint};

use plaza_net::QuicOptions;
use plaza_net::dial::{resolve, server_name};
use plaza_net::frame::{self, FrameError};
use plaza_net::tls::{ClusterTls, TlsError};
use plaza_proto::codec::CodecError;
use plaza_proto::links::ALPN_RAFT;

use super::{BrokerNode, NodeId, RaftRpc, RaftRpcReply, RaftTransport, TransportError};

/// Sends Raft RPCs over QUIC from one endpoint. Cheap to clone.
#[derive(Clone)]
pub struct QuicTransport {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Endpoint,
    client: ClientConfig,
    options: QuicOptions,
    /// One slot per peer. The map lock is held only to find or insert a slot, never across
    /// `.await`; the slot's async lock is held while dialling, so concurrent calls to a peer
    /// share one connection attempt instead of racing several.
    peers: Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<Option<Peer>>>>>,
}

struct Peer {
    addr: String,
    conn: Connection,
}

impl QuicTransport {
    /// Calls out from `endpoint` as the node holding `tls` (its certificate is presented to
    /// peers, and peers must hold certificates from the same CA).
    pub fn new(
        endpoint: Endpoint,
        tls: &ClusterTls,
        options: QuicOptions,
    ) -> Result<Self, TlsError> {
        let mut client = ClientConfig::new(Arc::new(tls.client_config(&[ALPN_RAFT])?));
        client.transport_config(options.transport_config());
        Ok(Self {
            inner: Arc::new(Inner {
                endpoint,
                client,
                options,
                peers: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The endpoint calls leave from.
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    /// A live connection to `target` at `node.addr`, dialling if there is none.
    async fn connection(
        &self,
        target: NodeId,
        node: &BrokerNode,
        deadline: Instant,
    ) -> Result<Connection, TransportError> {
        let slot = {
            let mut peers = self
                .inner
                .peers
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            Arc::clone(peers.entry(target).or_default())
        };
        let mut slot = slot.lock().await;
        if let Some(peer) = slot.as_ref()
            && peer.addr == node.addr
            && peer.conn.close_reason().is_none()
        {
            return Ok(peer.conn.clone());
        }
        *slot = None;
        let unreachable = |what: String| {
            TransportError::Unreachable(format!("node {target} at {}: {what}", node.addr))
        };
        let addr = resolve(&node.addr).await.map_err(unreachable)?;
        let connecting = self
            .inner
            .endpoint
            .connect_with(self.inner.client.clone(), addr, server_name(&node.addr))
            .map_err(|e| unreachable(e.to_string()))?;
        let budget = self
            .inner
            .options
            .connect_timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        let conn = tokio::time::timeout(budget, connecting)
            .await
            .map_err(|_| unreachable(format!("no QUIC handshake within {budget:?}")))?
            .map_err(|e| unreachable(e.to_string()))?;
        *slot = Some(Peer {
            addr: node.addr.clone(),
            conn: conn.clone(),
        });
        Ok(conn)
    }
}

impl RaftTransport for QuicTransport {
    async fn call(
        &self,
        target: NodeId,
        node: &BrokerNode,
        rpc: RaftRpc,
        timeout: Duration,
    ) -> Result<RaftRpcReply, TransportError> {
        let deadline = Instant::now() + timeout;
        let conn = self.connection(target, node, deadline).await?;
        // Opening a stream sends nothing: if it fails, the call certainly did not happen.
        let opened = tokio::time::timeout_at(deadline.into(), conn.open_bi()).await;
        let (send, recv) = match opened {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                return Err(TransportError::Unreachable(format!("node {target}: {e}")));
            }
            Err(_) => return Err(TransportError::Timeout),
        };
        let exchange = frame::exchange(send, recv, &rpc);
        match tokio::time::timeout_at(deadline.into(), exchange).await {
            Ok(Ok(reply)) => Ok(reply),
            Err(_) => Err(TransportError::Timeout),
            // An incompatible peer will not become compatible on a retry: back off.
            Ok(Err(e @ FrameError::UnsupportedVersion { .. })) => {
                Err(TransportError::Unreachable(format!("node {target}: {e}")))
            }
            // The connection died under the call (peer shut down or restarted): the next call
            // dials again. The peer may have acted on the request.
            Ok(Err(e)) if conn.close_reason().is_some() => {
                Err(TransportError::Lost(format!("node {target}: {e}")))
            }
            // Nothing left this node: the request is larger than a frame.
            Ok(Err(FrameError::Codec(e @ CodecError::TooLarge(_)))) => {
                Err(TransportError::TooLarge(format!("node {target}: {e}")))
            }
            Ok(Err(e)) => Err(TransportError::Network(format!("node {target}: {e}"))),
        }
    }
}
