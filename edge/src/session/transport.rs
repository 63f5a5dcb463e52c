//! The session's socket, on either WebSocket layer (`client.websocket`).
//!
//! ```text
//!   tungstenite: Reader (the session's task) ─ split ─ Writer (writer task, outbox::write_loop)
//!   lean:        one task: TcpStream ─▶ Decoder ─▶ session     Outbox ─take_batch─▶ OutQueue ─writev─▶ TcpStream
//!                the hub's fan-out, while the task has nothing in flight:  Outbox ─try_write─▶ TcpStream
//! ```
//!
//! On the lean layer a connection is a single task over an unsplit socket: the session's read
//! loop also writes ([`Transport::step`]), and while a command runs, [`Transport::drive`] keeps
//! writing beside it, so pushes are not held up behind a slow broker call. The writer keeps no
//! future: the outbox wakes the task through its waker when something is queued — except for
//! the hub's fan-out to a connection whose task has nothing in flight, which the publishing
//! thread writes into the socket itself (`outbox::Flushes`): a publication then costs the
//! subscriber one `writev` and no wake-up of its task. Nothing is
//! buffered while the connection is idle: the decoder reads into its worker thread's scratch
//! buffer, and the write queues give their storage back once the connection goes quiet.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes};
use futures_util::{FutureExt, StreamExt};
use plaza_proto::CloseCode;
use tokio::io::AsyncWriteExt;
use tokio::task::{AbortHandle, JoinHandle};

use crate::metrics as m;
use crate::outbox::{CLOSE_TIMEOUT, Outbox, Written, write_loop};
use crate::ws::compat::{Reader, Socket, Writer};
use crate::ws::conn::SharedTcp;
use crate::ws::{Decoder, Event, OutQueue, WsError};

/// How long a server-initiated close waits for the client's close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// A client connection's socket as the session drives it.
pub(super) enum Transport {
    /// tokio-tungstenite: the session reads, the writer task writes.
    Split {
        reader: Reader,
        writer: JoinHandle<()>,
    },
    /// The lean layer: the session's task reads and writes.
    Lean(LeanIo),
}

/// What [`Transport::step`] did.
pub(super) enum Step {
    /// The client sent something.
    Read(Incoming),
    /// A batch of the outbox was written (or the write failed, and the connection is closing).
    Wrote,
}

/// What the client sent, as the session sees it.
pub(super) enum Incoming {
    /// A text message.
    Text(Utf8Bytes),
    /// A binary message (refused by the protocol).
    Binary,
    /// A ping or pong: the client is alive.
    Control,
    /// The client closed the connection or went away.
    End,
    /// The client broke the WebSocket protocol or the socket failed.
    Error(axum::Error),
}

/// The lean layer's connection state, all of it in the session's task (the socket is in the
/// outbox, which the hub's fan-out may write directly while this task has nothing in flight).
pub(super) struct LeanIo {
    decoder: Decoder,
    /// Frames taken from the outbox and not yet written.
    out: OutQueue,
    /// The accounts of the frames in `out`, settled with the outbox once they are written.
    in_flight: Written,
    /// A write failed: nothing more is written.
    failed: bool,
}

impl Transport {
    /// Takes over an upgraded socket, with an outbox allowing `limit` bytes in flight; for
    /// tungstenite, starts the writer task (whose abort handle is returned).
    pub(super) fn new(socket: Socket, limit: usize) -> (Self, Arc<Outbox>, Option<AbortHandle>) {
        match socket {
            Socket::Tungstenite(ws) => {
                let outbox = Outbox::new(limit);
                let (sink, reader) = ws.split();
                let writer = tokio::spawn(guarded_writer(sink, outbox.clone()));
                let abort = writer.abort_handle();
                (Transport::Split { reader, writer }, outbox, Some(abort))
            }
            Socket::Lean(s) => {
                let outbox = Outbox::lean(limit, s.tcp, s.deflate);
                let lean = LeanIo {
                    decoder: Decoder::new(s.limits, s.deflate, &s.read_buf),
                    out: OutQueue::default(),
                    in_flight: Written::default(),
                    failed: false,
                };
                (Transport::Lean(lean), outbox, None)
            }
        }
    }

    /// Polls for the next thing the client sent (if `read`), or one batch of the outbox
    /// written (lean: pending until something is queued; on tungstenite the writer task
    /// writes). A failed write closes the connection quietly. Progress is kept in the
    /// transport — the decoder keeps a partly read frame, and what was taken from the outbox
    /// stays in the connection's queue until written — so a poll that is not repeated loses
    /// nothing.
    pub(super) fn poll_step(
        &mut self,
        outbox: &Outbox,
        read: bool,
        cx: &mut Context<'_>,
    ) -> Poll<Step> {
        match self {
            Transport::Split { reader, .. } if read => {
                let message = ready!(reader.poll_next_unpin(cx));
                Poll::Ready(Step::Read(match message {
                    None | Some(Ok(Message::Close(_))) => Incoming::End,
                    Some(Err(e)) => Incoming::Error(e),
                    Some(Ok(Message::Text(text))) => Incoming::Text(text),
                    Some(Ok(Message::Binary(_))) => Incoming::Binary,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => Incoming::Control,
                }))
            }
            Transport::Split { .. } => Poll::Pending,
            Transport::Lean(lean) => lean.poll_step(outbox, read, cx),
        }
    }

    /// Whether this task writes the socket (lean) and still can.
    pub(super) fn writes(&self) -> bool {
        matches!(self, Transport::Lean(lean) if !lean.failed)
    }

    /// Runs `work` (a command) to its end while writing what is queued meanwhile. (A plain
    /// future over its three references, not an async fn: it is part of the session's task
    /// while a command runs.)
    pub(super) fn drive<'a, T>(
        &'a mut self,
        outbox: &'a Outbox,
        mut work: impl Future<Output = T> + Unpin + 'a,
    ) -> impl Future<Output = T> + 'a {
        poll_fn(move |cx| {
            if let Poll::Ready(out) = Pin::new(&mut work).poll(cx) {
                return Poll::Ready(out);
            }
            if let Transport::Lean(lean) = self {
                while !lean.failed && lean.poll_write(outbox, cx).is_ready() {}
            }
            Poll::Pending
        })
    }

    /// Ends the connection: runs `cleanup` (leaving every room) while the closing frames are
    /// written, completes a server-initiated closing handshake, and closes the socket.
    pub(super) async fn finish(self, outbox: &Outbox, cleanup: impl Future<Output = ()>) {
        let server_initiated = outbox.initiated_by_server();
        match self {
            Transport::Split { mut reader, writer } => {
                cleanup.await;
                if server_initiated {
                    // Read (and discard) until the client's close frame, so the socket is not
                    // torn down under frames the client has yet to read.
                    let _ = tokio::time::timeout(CLOSE_LINGER, async {
                        while let Some(Ok(frame)) = reader.next().await {
                            if matches!(frame, Message::Close(_)) {
                                break;
                            }
                        }
                    })
                    .await;
                }
                let _ = writer.await;
            }
            Transport::Lean(mut lean) => {
                outbox.take_closing(&mut lean.out);
                let Some(socket) = outbox.socket() else {
                    cleanup.await;
                    return;
                };
                let mut io = SharedTcp(socket);
                let write = async {
                    if !lean.failed {
                        let flush = poll_fn(|cx| lean.out.poll_flush(&mut io, cx));
                        lean.failed =
                            !matches!(tokio::time::timeout(CLOSE_TIMEOUT, flush).await, Ok(Ok(())));
                    }
                };
                tokio::join!(cleanup, write);
                if server_initiated && !lean.failed && !lean.decoder.close_received() {
                    let _ = tokio::time::timeout(CLOSE_LINGER, async {
                        while let Ok(Some(event)) = lean.decoder.read(&mut io).await {
                            if matches!(event, Event::Close(_)) {
                                break;
                            }
                        }
                    })
                    .await;
                }
                let _ = io.shutdown().await;
            }
        }
    }
}

impl LeanIo {
    /// See [`Transport::poll_step`].
    fn poll_step(&mut self, outbox: &Outbox, read: bool, cx: &mut Context<'_>) -> Poll<Step> {
        if !self.failed && self.poll_write(outbox, cx).is_ready() {
            return Poll::Ready(Step::Wrote);
        }
        if !read {
            return Poll::Pending;
        }
        let Some(socket) = outbox.socket() else {
            return Poll::Ready(Step::Read(Incoming::End));
        };
        let event = ready!(self.decoder.poll_event(&mut SharedTcp(socket), cx));
        Poll::Ready(Step::Read(match event {
            Ok(None | Some(Event::Close(_))) => Incoming::End,
            Err(e) => Incoming::Error(axum::Error::new(e)),
            // The decoder checked the UTF-8 already; this only changes the type.
            Ok(Some(Event::Text(text))) => match Utf8Bytes::try_from(text) {
                Ok(text) => Incoming::Text(text),
                Err(_) => Incoming::Error(axum::Error::new(WsError::Utf8)),
            },
            Ok(Some(Event::Binary(_))) => Incoming::Binary,
            Ok(Some(Event::Ping(payload))) => {
                outbox.push_pong(payload);
                Incoming::Control
            }
            Ok(Some(Event::Pong)) => Incoming::Control,
        }))
    }

    /// Writes one batch: what is left of the last one, else the next taken from the outbox
    /// (`Pending` if it has none: the outbox wakes this task on the next push). Settles the
    /// batch's accounts once it is written. A failed write closes the connection quietly.
    fn poll_write(&mut self, outbox: &Outbox, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.out.is_empty() {
            match outbox.take_batch(&mut self.out, cx.waker()) {
                Some(bytes) => self.in_flight += bytes,
                None => {
                    // Quiet: hold no queue storage while waiting.
                    self.out.release();
                    return Poll::Pending;
                }
            }
        }
        let Some(socket) = outbox.socket() else {
            return Poll::Pending;
        };
        if let Err(e) = ready!(self.out.poll_flush(&mut SharedTcp(socket), cx)) {
            tracing::trace!(error = %e, "a connection's write failed");
            self.failed = true;
            outbox.close_quietly();
            return Poll::Ready(Err(e));
        }
        outbox.settle(std::mem::take(&mut self.in_flight));
        Poll::Ready(Ok(()))
    }
}

/// The tungstenite connection's writer, with a panic in it caught: the connection is then
/// closed (4003), so the session ends instead of reading for a client nobody writes to.
async fn guarded_writer(sink: Writer, outbox: Arc<Outbox>) {
    let closing = outbox.clone();
    if std::panic::AssertUnwindSafe(write_loop(sink, outbox))
        .catch_unwind()
        .await
        .is_err()
    {
        metrics::counter!(m::HANDLER_PANICS, "stage" => "writer").increment(1);
        tracing::error!("a connection writer panicked; closing the connection");
        closing.close(CloseCode::ServerError, "internal error; reconnect");
    }
}
