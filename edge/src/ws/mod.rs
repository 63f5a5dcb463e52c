//! Plaza's own WebSocket layer on tokio's `TcpStream` (the edge's default,
//! `client.websocket = "lean"`): frame codec, opening handshake, permessage-deflate compressed
//! once per message, and the read and write state of a connection driven by one task.
//!
//! ```text
//!   HTTP upgrade (hyper) ─▶ handshake::accept ─▶ 101 ─▶ (TcpStream, leftover bytes)
//!   Decoder::poll_event ─▶ frame::parse_header ─▶ unmask ─▶ reassemble ─▶ deflate::inflate ─▶ Event
//!   a frame encoded (and compressed) once per message ─▶ OutQueue (shared Bytes) ─▶ writev
//! ```
//!
//! The edge's session drives a [`Decoder`] and an [`OutQueue`] from its one task
//! (`session::transport`); [`WsConn`] wraps the same two for a plain echo server.
//!
//! Conformance is checked with the Autobahn cases (`scripts/test-autobahn.sh`, driving the
//! `autobahn_echo` example).

pub(crate) mod compat;
pub mod conn;
pub mod deflate;
pub mod frame;
pub mod handshake;
pub(crate) mod upgrade;

pub use conn::{Decoder, Event, Limits, OutQueue, WsConn};
pub use deflate::Prepared;

/// Why a connection cannot go on; each maps to a close code.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// The client broke RFC 6455/7692 (close 1002).
    #[error("websocket protocol error: {0}")]
    Protocol(&'static str),
    /// A text message or close reason is not valid UTF-8 (close 1007).
    #[error("text is not valid UTF-8")]
    Utf8,
    /// A frame or message (after inflation) is over the limit (close 1009).
    #[error("frame or message too large")]
    TooLarge,
    /// A compressed message is not valid deflate data (close 1007).
    #[error("compressed message is not valid deflate data")]
    Inflate,
    /// The socket failed.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

impl WsError {
    /// The RFC 6455 close code for this error (`None`: the socket is gone, send nothing).
    pub fn close_code(&self) -> Option<u16> {
        match self {
            WsError::Protocol(_) => Some(1002),
            WsError::Utf8 | WsError::Inflate => Some(1007),
            WsError::TooLarge => Some(1009),
            WsError::Io(_) => None,
        }
    }
}
