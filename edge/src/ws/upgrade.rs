//! The `/v1/ws` upgrade on either WebSocket implementation (`client.websocket`).
//!
//! ```text
//!   request ─▶ Upgrade::from_parts ─┬─ tungstenite: axum's WebSocketUpgrade (as before)
//!                                   └─ lean: handshake::accept + hyper's OnUpgrade
//!   Upgrade::respond(on_socket) ─▶ 101 ─▶ (upgraded) ─▶ on_socket(Socket)
//! ```
//!
//! A request the lean handshake refuses is handed to axum's extractor, so a malformed
//! upgrade gets the same rejection on both.

use std::future::Future;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_PROTOCOL, UPGRADE,
};
use http::request::Parts;
use http::{HeaderValue, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::compat::{LeanSocket, Socket};
use super::conn::Limits;
use super::{frame, handshake};
use crate::config::{ClientConfig, WebSocketImpl};

/// An accepted upgrade request, not yet answered.
pub(crate) enum Upgrade {
    /// axum's WebSocketUpgrade, configured as the edge always did.
    Tungstenite(WebSocketUpgrade),
    /// The lean layer.
    Lean {
        on_upgrade: OnUpgrade,
        accept: handshake::Accept,
        protocol: Option<HeaderValue>,
        limits: Limits,
    },
}

impl Upgrade {
    /// Checks the upgrade request; `Err` is the response refusing it.
    pub(crate) async fn from_parts(
        parts: &mut Parts,
        config: &ClientConfig,
        protocol: &'static str,
    ) -> Result<Self, Response> {
        if config.websocket == WebSocketImpl::Lean
            && let Ok(accept) = handshake::accept(&parts.headers, config.permessage_deflate)
            && let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>()
        {
            let offered = parts
                .headers
                .get_all(SEC_WEBSOCKET_PROTOCOL)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|p| p.trim() == protocol);
            return Ok(Upgrade::Lean {
                on_upgrade,
                accept,
                protocol: offered.then(|| HeaderValue::from_static(protocol)),
                limits: Limits {
                    max_frame: config.max_frame_bytes,
                    max_message: config.max_frame_bytes,
                },
            });
        }
        let upgrade = WebSocketUpgrade::from_request_parts(parts, &())
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Upgrade::Tungstenite(
            upgrade
                .protocols([protocol])
                .read_buffer_size(config.read_buffer_bytes)
                .write_buffer_size(config.write_buffer_bytes)
                // The writer feeds frames and waits for the flush once `write_buffer_size` is
                // passed, so the buffer holds at most that plus one frame; a frame may be a
                // whole history reply, hence no smaller hard cap here (our own queue is the
                // bound).
                .max_write_buffer_size(usize::MAX)
                .max_message_size(config.max_frame_bytes)
                .max_frame_size(config.max_frame_bytes),
        ))
    }

    /// Answers 101 and runs `on_socket` with the connection once it is upgraded.
    pub(crate) fn respond<F, Fut>(self, on_socket: F) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        match self {
            Upgrade::Tungstenite(upgrade) => upgrade
                .on_failed_upgrade(|e| tracing::debug!(error = %e, "websocket upgrade failed"))
                .on_upgrade(move |ws| on_socket(Socket::Tungstenite(ws))),
            Upgrade::Lean {
                on_upgrade,
                accept,
                protocol,
                limits,
            } => {
                let deflate = accept.deflate;
                tokio::spawn(async move {
                    let upgraded = match on_upgrade.await {
                        Ok(upgraded) => upgraded,
                        Err(e) => {
                            return tracing::debug!(error = %e, "websocket upgrade failed");
                        }
                    };
                    let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() else {
                        return tracing::error!("upgraded connection is not a TcpStream");
                    };
                    // A task of its own: this one's state (the upgrade's wait) would
                    // otherwise stay part of the connection's footprint for its whole life.
                    tokio::spawn(on_socket(Socket::Lean(LeanSocket {
                        tcp: parts.io.into_inner(),
                        read_buf: parts.read_buf,
                        limits,
                        deflate,
                    })));
                });
                let mut response = Response::new(Body::empty());
                *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                let h = response.headers_mut();
                h.insert(UPGRADE, HeaderValue::from_static("websocket"));
                h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
                if let Ok(key) = HeaderValue::from_str(&accept.accept_key) {
                    h.insert(SEC_WEBSOCKET_ACCEPT, key);
                }
                if let Some(p) = protocol {
                    h.insert(SEC_WEBSOCKET_PROTOCOL, p);
                }
                if deflate {
                    h.insert(
                        SEC_WEBSOCKET_EXTENSIONS,
                        HeaderValue::from_static(handshake::DEFLATE_RESPONSE),
                    );
                }
                response
            }
        }
    }
}

impl Socket {
    /// Sends a close frame with `code` and `reason` and ends the connection (used before a
    /// session exists, e.g. when the broker tier is down).
    pub(crate) async fn close_now(self, code: u16, reason: &str) {
        match self {
            Socket::Tungstenite(mut ws) => {
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                let _ = ws.send(Message::Close(Some(frame))).await;
            }
            Socket::Lean(mut s) => {
                let close: Bytes = frame::encode_close(code, reason);
                let _ = s.tcp.write_all(&close).await;
                let _ = s.tcp.shutdown().await;
            }
        }
    }
}
