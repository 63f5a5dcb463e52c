//! A connection's outbound side: a byte-bounded queue and the task that drains it into the
//! socket, with WebSocket pings and the closing handshake.
//!
//! Everything a client receives — replies and pushes — goes through its [`Outbox`], so their
//! order is the order they were queued. The hub queues without waiting; when the bytes
//! queued but not yet written exceed the limit, the client is a slow consumer: it is closed
//! with 4001 and the queue stops growing (DESIGN §2.6). Frames are `Utf8Bytes`, so a
//! publication encoded once is shared by every subscriber's queue.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use plaza_proto::client::DisconnectPush;
use plaza_proto::{CloseCode, Push, ServerFrame};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics as m;

/// Most frames written between two flushes.
const MAX_BATCH: usize = 256;
/// How long the closing handshake may take before the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The sending half of a connection, shared by its session and the hub.
#[derive(Debug)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Outgoing>,
    /// Bytes queued and not yet written; incremented by senders, decremented by the writer.
    queued: AtomicUsize,
    limit: usize,
    closer: Closer,
}

/// Ends a connection, once, with a reason the writer announces before the close frame.
#[derive(Debug, Clone, Default)]
pub struct Closer {
    token: CancellationToken,
    reason: Arc<Mutex<Option<(CloseCode, String)>>>,
}

impl Closer {
    /// Closes with `code`; the first reason given wins.
    pub fn close(&self, code: CloseCode, reason: impl Into<String>) {
        if let Ok(mut r) = self.reason.lock()
            && r.is_none()
            && !self.token.is_cancelled()
        {
            *r = Some((code, reason.into()));
            metrics::counter!(m::DISCONNECTS, "code" => code.name()).increment(1);
        }
        self.token.cancel();
    }

    /// Ends the connection without a disconnect push (the client went away).
    pub fn close_quietly(&self) {
        self.token.cancel();
    }

    /// Resolves once the connection is closing.
    pub async fn closed(&self) {
        self.token.cancelled().await;
    }

    /// Whether the edge closed the connection with a reason (rather than the client leaving).
    pub fn initiated_by_server(&self) -> bool {
        self.reason.lock().is_ok_and(|r| r.is_some())
    }

    /// Whether the connection is closing.
    pub fn is_closed(&self) -> bool {
        self.token.is_cancelled()
    }

    fn reason(&self) -> Option<(CloseCode, String)> {
        self.reason.lock().ok().and_then(|r| r.clone())
    }
}

impl Outbox {
    /// A queue allowing `limit` bytes in flight, and its receiving end for [`write_loop`].
    pub fn new(limit: usize) -> (Arc<Self>, mpsc::UnboundedReceiver<Outgoing>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let outbox = Self {
            tx,
            queued: AtomicUsize::new(0),
            limit,
            closer: Closer::default(),
        };
        (Arc::new(outbox), rx)
    }

    /// Queues a frame without waiting. Returns false, and closes the connection as a slow
    /// consumer, if that would exceed the limit; also false if the connection is closing.
    pub fn push(&self, frame: Utf8Bytes) -> bool {
        if self.closer.is_closed() {
            return false;
        }
        let len = frame.len();
        let before = self.queued.fetch_add(len, Ordering::AcqRel);
        if before + len > self.limit {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            metrics::counter!(m::SLOW_CONSUMERS).increment(1);
            self.closer
                .close(CloseCode::SlowConsumer, CloseCode::SlowConsumer.reason());
            return false;
        }
        self.tx
            .send(Outgoing {
                frame,
                counted: true,
            })
            .is_ok()
    }

    /// Queues a command's reply. Replies do not count towards the slow-consumer limit: their
    /// size is bounded by the command (a `history` reply may legitimately exceed the limit)
    /// and their number by the command rate, and cutting a client for the answer it asked for
    /// would make recovering large histories impossible.
    pub fn push_reply(&self, frame: Utf8Bytes) -> bool {
        !self.closer.is_closed()
            && self
                .tx
                .send(Outgoing {
                    frame,
                    counted: false,
                })
                .is_ok()
    }

    /// Queues an encoded server frame (a push, counted against the limit).
    pub fn push_frame(&self, frame: &ServerFrame) -> bool {
        self.push(Utf8Bytes::from(frame.encode()))
    }

    /// The connection's closer.
    pub fn closer(&self) -> &Closer {
        &self.closer
    }

    fn written(&self, bytes: usize) {
        self.queued.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// One queued frame; `counted` frames are part of the slow-consumer budget.
#[derive(Debug)]
pub struct Outgoing {
    frame: Utf8Bytes,
    counted: bool,
}

impl Outgoing {
    fn budget(&self) -> usize {
        if self.counted { self.frame.len() } else { 0 }
    }
}

/// Drains `rx` into the socket until the connection closes, pinging every `ping_interval`.
/// On close with a reason, flushes what is queued (unless the client is a slow consumer),
/// then sends the `disconnect` push and the close frame with the same code.
pub async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    outbox: Arc<Outbox>,
    ping_interval: Duration,
) {
    let closer = outbox.closer.clone();
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + ping_interval, ping_interval);
    loop {
        // All arms are cancel-safe: `recv` and `tick` lose nothing when another arm wins.
        tokio::select! {
            biased;
            _ = closer.closed() => break,
            frame = rx.recv() => {
                let Some(frame) = frame else { break };
                let written = tokio::select! {
                    r = write_batch(&mut sink, frame, &mut rx) => r,
                    _ = closer.closed() => break,
                };
                match written {
                    Ok(bytes) => outbox.written(bytes),
                    Err(()) => { closer.close_quietly(); break; }
                }
            }
            _ = ping.tick() => {
                let sent = tokio::select! {
                    r = sink.send(Message::Ping(Default::default())) => r.is_ok(),
                    _ = closer.closed() => break,
                };
                if !sent { closer.close_quietly(); break; }
            }
        }
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, finish(&mut sink, &mut rx, closer.reason())).await;
}

async fn write_batch(
    sink: &mut SplitSink<WebSocket, Message>,
    first: Outgoing,
    rx: &mut mpsc::UnboundedReceiver<Outgoing>,
) -> Result<usize, ()> {
    let mut bytes = first.budget();
    sink.feed(Message::Text(first.frame))
        .await
        .map_err(|_| ())?;
    for _ in 1..MAX_BATCH {
        let Ok(next) = rx.try_recv() else { break };
        bytes += next.budget();
        sink.feed(Message::Text(next.frame)).await.map_err(|_| ())?;
    }
    sink.flush().await.map_err(|_| ())?;
    Ok(bytes)
}

async fn finish(
    sink: &mut SplitSink<WebSocket, Message>,
    rx: &mut mpsc::UnboundedReceiver<Outgoing>,
    reason: Option<(CloseCode, String)>,
) {
    let Some((code, reason)) = reason else {
        let _ = sink.close().await;
        return;
    };
    if code != CloseCode::SlowConsumer {
        // Deliver what was queued before the close, e.g. the error reply that caused it.
        while let Ok(next) = rx.try_recv() {
            if sink.feed(Message::Text(next.frame)).await.is_err() {
                return;
            }
        }
    }
    let push = ServerFrame::Push(Push::Disconnect(DisconnectPush::new(code, reason.clone())));
    let _ = sink
        .feed(Message::Text(Utf8Bytes::from(push.encode())))
        .await;
    let frame = CloseFrame {
        code: code.code(),
        reason: Utf8Bytes::from(truncate_reason(reason)),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.close().await;
}

/// Close frame reasons are limited to 123 bytes.
fn truncate_reason(mut reason: String) -> String {
    if reason.len() > 123 {
        let mut cut = 123;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    reason
}
