//! The receiving side: accepts QUIC connections and their streams, one RPC per stream, and
//! hands each request to an [`RpcHandler`].
//!
//! ```text
//!   Endpoint::accept ─▶ connection task (ALPN check) ─▶ accept_bi (≤ N at once) ─▶ stream task
//!        read_request ─▶ RpcHandler::handle ─▶ write_reply          (frame.rs has the format)
//! ```
//!
//! Every connection and stream is its own task, so one slow or hostile stream never blocks the
//! others; a bad stream is reset and the rest of its connection keeps working.

use std::future::Future;
use std::sync::Arc;

use quinn::crypto::rustls::HandshakeData;
use quinn::{Connection, Endpoint, RecvStream, SendStream};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::QuicOptions;
use crate::frame::{
    self, CLOSE_SHUTDOWN, ERR_BAD_REQUEST, ERR_UNAVAILABLE, ERR_WRONG_ALPN, Incoming,
};

/// Answers requests of one protocol (one ALPN). Cloned into every stream task.
pub trait RpcHandler: Clone + Send + Sync + 'static {
    /// What a client sends.
    type Request: DeserializeOwned + Send + 'static;
    /// What it gets back.
    type Reply: Serialize + Send + 'static;
    /// Answers one request.
    fn handle(&self, request: Self::Request) -> impl Future<Output = Self::Reply> + Send;
}

/// Serves whole connections of the protocols it speaks (by ALPN). [`RpcService`] is the
/// one-RPC-per-stream kind; the edge protocol is a long-lived session per connection.
pub trait ConnectionHandler: Clone + Send + Sync + 'static {
    /// Whether connections that negotiated `alpn` are served here (others are closed with
    /// [`ERR_WRONG_ALPN`]).
    fn speaks(&self, alpn: &[u8]) -> bool;
    /// Serves one accepted connection that negotiated `alpn` until it ends or `cancel` fires.
    fn serve(
        &self,
        alpn: Vec<u8>,
        conn: Connection,
        cancel: CancellationToken,
    ) -> impl Future<Output = ()> + Send;
}

/// A [`ConnectionHandler`] answering one RPC per bidirectional stream with an [`RpcHandler`].
#[derive(Clone)]
pub struct RpcService<H> {
    alpn: &'static [u8],
    handler: H,
    options: QuicOptions,
}

impl<H: RpcHandler> RpcService<H> {
    /// Serves `alpn` with `handler`.
    pub fn new(alpn: &'static [u8], handler: H, options: QuicOptions) -> Self {
        Self {
            alpn,
            handler,
            options,
        }
    }
}

impl<H: RpcHandler> ConnectionHandler for RpcService<H> {
    fn speaks(&self, alpn: &[u8]) -> bool {
        alpn == self.alpn
    }

    async fn serve(&self, _alpn: Vec<u8>, conn: Connection, cancel: CancellationToken) {
        rpc_connection(conn, self.handler.clone(), self.options.clone(), cancel).await;
    }
}

/// Accepts connections on `endpoint` and hands each to `handler` by its negotiated ALPN until
/// `cancel` fires; returns once every connection task has ended.
pub async fn serve_connections<C: ConnectionHandler>(
    endpoint: Endpoint,
    handler: C,
    cancel: CancellationToken,
) {
    let tasks = TaskTracker::new();
    loop {
        // `accept` is cancel-safe: a connection not yet taken stays queued in the endpoint.
        let incoming = tokio::select! {
            () = cancel.cancelled() => break,
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break, // the endpoint was closed
            },
        };
        tasks.spawn(connection(incoming, handler.clone(), cancel.clone()));
    }
    tasks.close();
    tasks.wait().await;
}

async fn connection<C: ConnectionHandler>(
    incoming: quinn::Incoming,
    handler: C,
    cancel: CancellationToken,
) {
    let remote = incoming.remote_address();
    let conn = tokio::select! {
        () = cancel.cancelled() => return,
        conn = std::future::IntoFuture::into_future(incoming) => match conn {
            Ok(conn) => conn,
            Err(e) => {
                // Includes TLS failures: unknown CA, no client certificate.
                tracing::debug!(%remote, error = %e, "quic handshake failed");
                return;
            }
        },
    };
    match negotiated_alpn(&conn) {
        Some(alpn) if handler.speaks(&alpn) => handler.serve(alpn, conn, cancel).await,
        _ => {
            tracing::debug!(%remote, "quic connection without a served ALPN");
            conn.close(ERR_WRONG_ALPN, b"unsupported application protocol");
        }
    }
}

async fn rpc_connection<H: RpcHandler>(
    conn: Connection,
    handler: H,
    options: QuicOptions,
    cancel: CancellationToken,
) {
    let remote = conn.remote_address();
    let limit = Arc::new(Semaphore::new(options.max_concurrent_streams as usize));
    let streams = TaskTracker::new();
    loop {
        // Bounded concurrency: a stream is only taken once a slot is free; until then the peer's
        // extra streams wait in QUIC flow control.
        let permit = tokio::select! {
            () = cancel.cancelled() => break,
            permit = Arc::clone(&limit).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // never closed
            },
        };
        // `accept_bi` is cancel-safe: a stream is only removed from quinn when returned.
        let (send, recv) = tokio::select! {
            () = cancel.cancelled() => break,
            stream = conn.accept_bi() => match stream {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::debug!(%remote, error = %e, "quic connection ended");
                    break;
                }
            },
        };
        streams.spawn(stream(send, recv, handler.clone(), options.clone(), permit));
    }
    if cancel.is_cancelled() {
        conn.close(CLOSE_SHUTDOWN, b"shutting down");
    }
    streams.close();
    streams.wait().await;
}

fn negotiated_alpn(conn: &Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?
        .downcast::<HandshakeData>()
        .ok()?
        .protocol
}

async fn stream<H: RpcHandler>(
    mut send: SendStream,
    mut recv: RecvStream,
    handler: H,
    options: QuicOptions,
    _permit: OwnedSemaphorePermit,
) {
    let read = tokio::time::timeout(
        options.request_timeout,
        frame::read_request::<H::Request>(&mut send, &mut recv),
    )
    .await;
    let request = match read {
        Ok(Ok(Incoming::Request(request))) => request,
        Ok(Ok(Incoming::OtherVersion(version))) => {
            tracing::debug!(version, "refused a request in another protocol version");
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "bad request stream");
            frame::refuse(&mut send, &mut recv, ERR_BAD_REQUEST);
            return;
        }
        Err(_) => {
            tracing::debug!("request not received in time");
            frame::refuse(&mut send, &mut recv, ERR_UNAVAILABLE);
            return;
        }
    };
    let reply = handler.handle(request).await;
    if let Err(e) = frame::write_reply(&mut send, reply).await {
        tracing::debug!(error = %e, "reply not delivered");
    }
}
