//! The upgraded socket the session starts from, whichever implementation serves it
//! (`client.websocket`): tokio-tungstenite through axum, or this module's own layer.
//!
//! A tungstenite socket is split into a [`Reader`] (the session's task) and a [`Writer`] (the
//! connection's writer task, `outbox::write_loop`). A lean socket stays whole: the session's
//! one task reads and writes it (`session::transport`).

use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use tokio::net::TcpStream;

use plaza_proto::CloseCode;

use super::WsError;
use super::conn::Limits;

/// An upgraded client connection.
// Lives only until the session takes it apart, so the variants' size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Socket {
    /// axum's WebSocket (tokio-tungstenite).
    Tungstenite(WebSocket),
    /// Plaza's own layer on the raw socket.
    Lean(LeanSocket),
}

/// What the lean layer starts from.
pub(crate) struct LeanSocket {
    pub(crate) tcp: TcpStream,
    /// Bytes the HTTP layer read past the upgrade request.
    pub(crate) read_buf: Bytes,
    pub(crate) limits: Limits,
    /// permessage-deflate negotiated.
    pub(crate) deflate: bool,
}

/// A tungstenite connection's receiving half.
pub(crate) type Reader = SplitStream<WebSocket>;

/// A tungstenite connection's sending half.
pub(crate) type Writer = SplitSink<WebSocket, Message>;

/// How the session closes a connection after a lean-layer read error, as it does for
/// tungstenite's: the `plaza_bad_frames` kind, the close code and reason; `None` when the
/// socket is gone (nothing to send).
pub(crate) fn read_error_close(
    e: &WsError,
    max_frame: usize,
) -> Option<(&'static str, CloseCode, String)> {
    Some(match e {
        WsError::TooLarge => (
            "too_large",
            CloseCode::MessageTooLarge,
            format!("frame exceeds {max_frame} bytes"),
        ),
        WsError::Protocol(_) | WsError::Inflate => {
            ("websocket", CloseCode::BadRequest, e.to_string())
        }
        WsError::Utf8 => (
            "utf8",
            CloseCode::BadRequest,
            "text frame is not valid UTF-8".to_owned(),
        ),
        WsError::Io(_) => return None,
    })
}
