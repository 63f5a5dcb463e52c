//! The session's view of its WebSocket, whichever implementation serves it
//! (`client.websocket`): tokio-tungstenite through axum, or this module's own layer.
//!
//! Both look the same to the session and the outbox: a [`Reader`] that is a `Stream` of axum
//! [`Message`]s and a [`Writer`] that is a `Sink` of them. On the lean layer the socket is
//! split into tokio's owned halves (no lock between them); the reader answers a ping by
//! queueing the pong in the connection's outbox, so only the writer ever writes.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Sink, Stream, StreamExt};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use plaza_proto::CloseCode;

use super::WsError;
use super::conn::{Decoder, Event, Limits, OutQueue};
use super::frame::{self, OpCode};
use crate::outbox::Outbox;

/// An upgraded client connection, before the session splits it.
// Lives only between the upgrade and `split`, so the variants' size difference costs nothing.
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

impl Socket {
    /// Splits into the writer (for the outbox's writer task) and the reader (for the session);
    /// the lean reader queues its pongs in `outbox`.
    pub(crate) fn split(self, outbox: &Arc<Outbox>) -> (Writer, Reader) {
        match self {
            Socket::Tungstenite(ws) => {
                let (sink, stream) = ws.split();
                (Writer::Tungstenite(sink), Reader::Tungstenite(stream))
            }
            Socket::Lean(s) => {
                if s.deflate {
                    outbox.enable_deflate();
                }
                let (read, write) = s.tcp.into_split();
                let reader = LeanReader {
                    io: read,
                    decoder: Decoder::new(s.limits, s.deflate, &s.read_buf),
                    outbox: outbox.clone(),
                    done: false,
                };
                let writer = LeanWriter {
                    io: write,
                    out: OutQueue::default(),
                };
                (Writer::Lean(writer), Reader::Lean(Box::new(reader)))
            }
        }
    }
}

/// The receiving side: client messages in order, then `None`.
pub(crate) enum Reader {
    /// tokio-tungstenite.
    Tungstenite(SplitStream<WebSocket>),
    /// The lean layer (boxed: the session future holds it for the connection's life either way).
    Lean(Box<LeanReader>),
}

/// The lean layer's read half.
pub(crate) struct LeanReader {
    io: OwnedReadHalf,
    decoder: Decoder,
    outbox: Arc<Outbox>,
    /// An error was returned: the stream has ended.
    done: bool,
}

impl Stream for Reader {
    type Item = Result<Message, axum::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.get_mut() {
            Reader::Tungstenite(s) => s.poll_next_unpin(cx),
            Reader::Lean(r) => r.poll_next(cx),
        }
    }
}

impl LeanReader {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, axum::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        let event = match ready!(self.decoder.poll_event(&mut self.io, cx)) {
            Ok(Some(event)) => event,
            Ok(None) => return Poll::Ready(None),
            Err(e) => {
                self.done = true;
                return Poll::Ready(Some(Err(axum::Error::new(e))));
            }
        };
        let message = match event {
            Event::Text(text) => match Utf8Bytes::try_from(text) {
                Ok(text) => Message::Text(text),
                Err(e) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(axum::Error::new(e))));
                }
            },
            Event::Binary(data) => Message::Binary(data),
            Event::Ping(payload) => {
                self.outbox.push_pong(payload.clone());
                Message::Ping(payload)
            }
            Event::Pong => Message::Pong(Bytes::new()),
            Event::Close(close) => Message::Close(close.map(|(code, reason)| CloseFrame {
                code,
                reason: reason.into(),
            })),
        };
        Poll::Ready(Some(Ok(message)))
    }
}

/// What the outbox's writer hands to a [`Writer`].
pub(crate) enum WsOut {
    /// A message for the implementation to frame.
    Message(Message),
    /// A complete frame, encoded (and compressed) once for many connections: only for a lean
    /// connection that negotiated permessage-deflate.
    Frame(Bytes),
}

/// The sending side.
pub(crate) enum Writer {
    /// tokio-tungstenite.
    Tungstenite(SplitSink<WebSocket, Message>),
    /// The lean layer.
    Lean(LeanWriter),
}

/// The lean layer's write half: frames queued as shared `Bytes`, written with `writev`.
pub(crate) struct LeanWriter {
    io: OwnedWriteHalf,
    out: OutQueue,
}

impl LeanWriter {
    fn push(&mut self, message: Message) {
        match message {
            Message::Text(text) => self.push_data(OpCode::Text, Bytes::from(text)),
            Message::Binary(data) => self.push_data(OpCode::Binary, data),
            Message::Ping(p) => self.out.push(frame::encode(OpCode::Ping, false, &p)),
            Message::Pong(p) => self.out.push(frame::encode(OpCode::Pong, false, &p)),
            Message::Close(close) => {
                let (code, reason) =
                    close.map_or((1000, Utf8Bytes::default()), |c| (c.code, c.reason));
                self.out.push_close(code, reason.as_str());
            }
        }
    }

    /// A data frame as two queue entries: its header and the (shared, uncopied) payload.
    fn push_data(&mut self, opcode: OpCode, payload: Bytes) {
        let mut header = BytesMut::with_capacity(10);
        frame::put_header(&mut header, true, false, opcode, payload.len());
        self.out.push(header.freeze());
        self.out.push(payload);
    }
}

impl Sink<WsOut> for Writer {
    type Error = axum::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.get_mut() {
            Writer::Tungstenite(s) => Pin::new(s).poll_ready(cx),
            Writer::Lean(_) => Poll::Ready(Ok(())),
        }
    }

    fn start_send(self: Pin<&mut Self>, item: WsOut) -> Result<(), Self::Error> {
        match (self.get_mut(), item) {
            (Writer::Tungstenite(s), WsOut::Message(m)) => Pin::new(s).start_send(m),
            (Writer::Tungstenite(_), WsOut::Frame(_)) => Err(axum::Error::new(
                std::io::Error::other("a prepared frame for a tungstenite connection"),
            )),
            (Writer::Lean(w), WsOut::Message(m)) => {
                w.push(m);
                Ok(())
            }
            (Writer::Lean(w), WsOut::Frame(f)) => {
                w.out.push(f);
                Ok(())
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.get_mut() {
            Writer::Tungstenite(s) => Pin::new(s).poll_flush(cx),
            Writer::Lean(w) => w.out.poll_flush(&mut w.io, cx).map_err(axum::Error::new),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self.get_mut() {
            Writer::Tungstenite(s) => Pin::new(s).poll_close(cx),
            Writer::Lean(w) => {
                w.out.push_close(1000, "");
                ready!(w.out.poll_flush(&mut w.io, cx)).map_err(axum::Error::new)?;
                Pin::new(&mut w.io)
                    .poll_shutdown(cx)
                    .map_err(axum::Error::new)
            }
        }
    }
}

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
