//! A connection's outbound side: a byte-bounded queue, drained into the socket with WebSocket
//! pings and the closing handshake.
//!
//! Everything a client receives — replies and pushes — goes through its [`Outbox`], so their
//! order is the order they were queued. The hub queues without waiting; when the bytes
//! queued but not yet written exceed the limit, the client is a slow consumer: it is closed
//! with 4001 and the queue stops growing (DESIGN §2.6). A publication encoded once is shared
//! by every subscriber's queue: as its text (`Utf8Bytes`) for tungstenite, which frames it per
//! connection, or as one complete frame (`Bytes`, compressed or not) for the lean layer.
//!
//! Who drains it depends on the WebSocket layer (`client.websocket`): on tungstenite, the
//! connection's writer task ([`write_loop`]); on the lean layer, the session's own task
//! (`session::transport`, through [`Outbox::take_batch`] and [`Outbox::settle`]) — or, for
//! the hub's fan-out to a lean connection whose task has nothing in flight, the publishing
//! thread itself: [`Outbox::push_shared`] queues without waking the task, and once the hub's
//! lock is released [`Flushes::run`] writes the queue's head straight into the socket
//! (`try_write`, never waiting). Only what the socket does not take wakes the task. Either
//! way the bytes leave in queue order: whoever writes takes them from the queue's head, under
//! its lock, and only one of the two writes at a time (`WriteState`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes};
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use plaza_proto::client::DisconnectPush;
use plaza_proto::{CloseCode, Push, ServerFrame};
use tokio::net::TcpStream;
use tokio::sync::Notify;

mod direct;
mod tungstenite;

pub(crate) use direct::Flushes;
pub(crate) use tungstenite::write_loop;

use crate::metrics as m;
use crate::ws::OutQueue;
use crate::ws::frame::{self, OpCode};

/// Most frames written between two flushes.
const MAX_BATCH: usize = 256;
/// How long the closing handshake may take before the socket is dropped.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// The sending half of a connection, shared by its session and the hub.
///
/// The queue is a plain `VecDeque` behind a mutex plus a [`Notify`] for the writer: an idle
/// connection's queue holds no allocation at all (a channel would keep a block of slots per
/// connection), and a drained queue gives back what a burst made it grow to.
#[derive(Debug)]
pub struct Outbox {
    queue: Mutex<Queue>,
    /// A lean connection's socket (shared with its task, which reads it and writes its
    /// batches), for writes from the pushing thread ([`Flushes::run`]). A connection with one
    /// takes complete frames ([`Outbox::push_shared`]): the lean layer writes them as they are.
    socket: Option<TcpStream>,
    /// A tungstenite connection's writer task (the lean layer has none): signalled when a
    /// frame is queued or the connection closes (a stored permit if the writer is busy).
    ready: Option<Box<Notify>>,
    /// The session's task: woken when a frame is queued for a lean connection (its task
    /// registers on every poll, so no future is kept for it), when replies were written, and
    /// when the connection closes.
    waker: AtomicWaker,
    /// Bytes queued and not yet written; incremented by senders, decremented by the writer.
    queued: AtomicUsize,
    limit: u32,
    /// Reply bytes queued and not yet written (not part of `queued`): the session stops
    /// reading commands while they exceed its budget, so a client that asks and never reads
    /// cannot make the edge hold answers without bound.
    replies: AtomicUsize,
    /// Set once, by the first [`Outbox::close`] or [`Outbox::close_quietly`]; every push asks.
    closed: AtomicBool,
    /// The code and reason the writer announces before the close frame (boxed: only a
    /// connection the edge closes has one).
    reason: Mutex<Option<Box<(CloseCode, String)>>>,
    /// The client negotiated permessage-deflate: pushes may be compressed frames.
    deflate: bool,
    /// The outbox is in a [`Flushes`] that has not run yet.
    flush_pending: AtomicBool,
}

/// The queued items and who may write them.
#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Outgoing>,
    /// Bytes of the front item (a [`Outgoing::Frame`]) already written by a direct write.
    front_written: usize,
    state: WriteState,
}

/// Who writes a lean connection's socket next.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum WriteState {
    /// The connection's task has nothing in flight: a pushing thread may write the queue's
    /// head directly.
    #[default]
    Idle,
    /// The task took a batch and is writing it; pushes wake it.
    Busy,
    /// The connection is closing: only the task writes.
    Sealed,
}

/// An empty WebSocket ping, as the server sends it.
const PING_FRAME: &[u8] = &[0x89, 0x00];

/// Capacity a drained queue may keep; beyond it the buffer is released.
const KEEP_CAPACITY: usize = 8;

impl Outbox {
    /// The outbox of a tungstenite connection, allowing `limit` bytes in flight (at most
    /// 4 GiB); its writer task, [`write_loop`], drains it.
    pub fn new(limit: usize) -> Arc<Self> {
        Self::with(limit, None, false, Some(Box::default()))
    }

    /// The outbox of a lean connection over `socket`, allowing `limit` bytes in flight;
    /// `deflate`: it negotiated permessage-deflate. The session's task drains it (and the
    /// hub's fan-out writes to it directly while the task has nothing in flight).
    pub(crate) fn lean(limit: usize, socket: TcpStream, deflate: bool) -> Arc<Self> {
        Self::with(limit, Some(socket), deflate, None)
    }

    fn with(
        limit: usize,
        socket: Option<TcpStream>,
        deflate: bool,
        ready: Option<Box<Notify>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            queue: Mutex::new(Queue::default()),
            socket,
            ready,
            waker: AtomicWaker::new(),
            queued: AtomicUsize::new(0),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            replies: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            reason: Mutex::new(None),
            deflate,
            flush_pending: AtomicBool::new(false),
        })
    }

    /// Bytes queued and not yet written (tests).
    #[cfg(test)]
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Queues a frame without waiting. Returns false, and closes the connection as a slow
    /// consumer, if that would exceed the limit; also false if the connection is closing.
    pub fn push(&self, frame: Utf8Bytes) -> bool {
        if !self.admit(frame.len()) {
            return false;
        }
        self.enqueue(Outgoing::Text {
            frame,
            counted: true,
        })
    }

    /// Counts `len` pushed bytes against the limit; past it (or while closing) refuses them and
    /// closes the connection as a slow consumer.
    fn admit(&self, len: usize) -> bool {
        if self.is_closed() {
            return false;
        }
        let before = self.queued.fetch_add(len, Ordering::AcqRel);
        if before + len > self.limit as usize {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            metrics::counter!(m::SLOW_CONSUMERS).increment(1);
            self.close(CloseCode::SlowConsumer, CloseCode::SlowConsumer.reason());
            return false;
        }
        true
    }

    /// The lean connection's socket (see [`Outbox::lean`]).
    pub(crate) fn socket(&self) -> Option<&TcpStream> {
        self.socket.as_ref()
    }

    /// Whether the connection takes complete frames ([`Outbox::push_shared`]).
    pub fn frames(&self) -> bool {
        self.socket.is_some()
    }

    /// Whether the client takes compressed frames.
    pub fn deflate(&self) -> bool {
        self.deflate
    }

    /// Queues a command's reply. Replies do not count towards the slow-consumer limit (a
    /// `history` reply may legitimately exceed it, and cutting a client for the answer it asked
    /// for would make recovering large histories impossible); they have their own account,
    /// [`Outbox::reply_backlog`], which the session keeps bounded by not reading further
    /// commands while it is over budget.
    pub fn push_reply(&self, frame: Utf8Bytes) -> bool {
        if self.is_closed() {
            return false;
        }
        self.replies.fetch_add(frame.len(), Ordering::AcqRel);
        self.enqueue(Outgoing::Text {
            frame,
            counted: false,
        })
    }

    /// Reply bytes queued and not yet written.
    pub fn reply_backlog(&self) -> usize {
        self.replies.load(Ordering::Acquire)
    }

    /// Registers the session's task to be woken by pushes, written replies ([`Outbox::settle`])
    /// and its timer.
    pub(crate) fn register_session(&self, waker: &Waker) {
        self.waker.register(waker);
    }

    /// Wakes the session's task (its timer is due, or the edge is draining).
    pub(crate) fn wake_session(&self) {
        self.waker.wake();
    }

    /// Queues an encoded server frame (a push, counted against the limit).
    pub fn push_frame(&self, frame: &ServerFrame) -> bool {
        self.push(Utf8Bytes::from(frame.encode()))
    }

    /// Queues a WebSocket ping (the session sends one every `client.ping_interval`). Once
    /// the writer has sent it with nothing queued behind it, the queue's buffer is released,
    /// so a connection that went quiet holds none.
    pub fn push_ping(&self) -> bool {
        !self.is_closed() && self.enqueue(Outgoing::Ping)
    }

    /// Queues the pong answering a client's ping (on the lean layer; tungstenite answers pings
    /// itself).
    pub fn push_pong(&self, payload: Bytes) -> bool {
        !self.is_closed() && self.enqueue(Outgoing::Pong(payload))
    }

    /// Closes the connection with `code`; the first reason given wins.
    pub fn close(&self, code: CloseCode, reason: impl Into<String>) {
        if let Ok(mut r) = self.reason.lock()
            && r.is_none()
            && !self.is_closed()
        {
            *r = Some(Box::new((code, reason.into())));
            metrics::counter!(m::DISCONNECTS, "code" => code.name()).increment(1);
        }
        self.close_quietly();
    }

    /// Ends the connection without a disconnect push (the client went away).
    pub fn close_quietly(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.waker.wake();
            if let Some(ready) = &self.ready {
                ready.notify_one();
            }
        }
    }

    /// Whether the connection is closing.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Resolves once the connection is closing (the tungstenite writer task: it is the only
    /// one waiting on `ready`, and a push it consumes here is still in the queue).
    async fn closed(&self) {
        let Some(ready) = &self.ready else {
            return std::future::pending().await;
        };
        loop {
            let mut notified = std::pin::pin!(ready.notified());
            // Registered before the flag is read, so a close in between still wakes it.
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }

    /// Whether the edge closed the connection with a reason (rather than the client leaving).
    pub fn initiated_by_server(&self) -> bool {
        self.reason.lock().is_ok_and(|r| r.is_some())
    }

    fn reason(&self) -> Option<(CloseCode, String)> {
        self.reason.lock().ok().and_then(|r| r.as_deref().cloned())
    }

    fn enqueue(&self, frame: Outgoing) -> bool {
        match self.queue.lock() {
            Ok(mut queue) => queue.items.push_back(frame),
            Err(_) => return false,
        }
        match &self.ready {
            Some(ready) => ready.notify_one(),
            None => self.waker.wake(),
        }
        true
    }

    /// Moves up to [`MAX_BATCH`] queued items into `out` as encoded frames (the lean layer's
    /// writer, `session::transport`); returns what they hold by account. `None` if nothing was
    /// queued: then `waker` is woken by the next push, and the queue's storage is given back
    /// (the connection is quiet). Settle the accounts with [`Outbox::settle`] once `out` is
    /// written.
    /// While the task has a batch in flight, pushes wake it and nobody else writes the
    /// socket; once it finds the queue empty, pushes from the hub may be written directly
    /// again ([`Outbox::push_shared`]).
    pub(crate) fn take_batch(&self, out: &mut OutQueue, waker: &Waker) -> Option<Written> {
        self.waker.register(waker);
        let mut queue = self.queue.lock().ok()?;
        if queue.items.is_empty() {
            if queue.state == WriteState::Busy {
                queue.state = WriteState::Idle;
            }
            Self::release(&mut queue, true);
            return None;
        }
        if queue.state == WriteState::Idle {
            queue.state = WriteState::Busy;
        }
        // Whatever flush is pending finds the task busy and only wakes it.
        self.flush_pending.store(false, Ordering::Release);
        let mut bytes = Written::default();
        let mut last_was_ping = false;
        let n = queue.items.len().min(MAX_BATCH);
        let mut skip = std::mem::take(&mut queue.front_written);
        for item in queue.items.drain(..n) {
            bytes += item.budget();
            last_was_ping = matches!(item, Outgoing::Ping);
            let mut frame = item.into_frame();
            // The part of the head a direct write sent already.
            bytes::Buf::advance(&mut frame, std::mem::take(&mut skip));
            out.push(frame);
        }
        if queue.items.is_empty() {
            Self::release(&mut queue, last_was_ping);
        }
        Some(bytes)
    }

    /// Queues the end of the connection in `out` (the lean layer): on a close with a reason,
    /// what is queued (unless the client is a slow consumer), the `disconnect` push and the
    /// close frame with the same code; otherwise a plain close frame.
    pub(crate) fn take_closing(&self, out: &mut OutQueue) {
        if let Ok(mut queue) = self.queue.lock() {
            queue.state = WriteState::Sealed;
        }
        let Some((code, reason)) = self.reason() else {
            out.push_close(1000, "");
            return;
        };
        if code != CloseCode::SlowConsumer {
            while let Some(bytes) = self.take_batch(out, Waker::noop()) {
                self.settle(bytes);
            }
        }
        let push = ServerFrame::Push(Push::Disconnect(DisconnectPush::new(code, reason.clone())));
        out.push(frame::encode(OpCode::Text, false, push.encode().as_bytes()));
        out.push_close(code.code(), &truncate_reason(reason));
    }

    /// The next queued item, if any (see [`Outbox::release`]).
    fn pop(&self) -> Option<Outgoing> {
        let mut queue = self.queue.lock().ok()?;
        let next = queue.items.pop_front();
        if queue.items.is_empty() {
            Self::release(&mut queue, matches!(next, Some(Outgoing::Ping)));
        }
        next
    }

    /// A drained queue keeps at most [`KEEP_CAPACITY`] slots, and none after a ping (the
    /// connection is quiet at least until the next one).
    fn release(queue: &mut Queue, after_ping: bool) {
        let keep = if after_ping { 0 } else { KEEP_CAPACITY };
        if queue.items.capacity() > keep {
            queue.items.shrink_to(keep);
        }
    }

    /// Takes written bytes off their accounts (and wakes a session waiting for replies to be
    /// written).
    pub(crate) fn settle(&self, bytes: Written) {
        self.queued.fetch_sub(bytes.pushes, Ordering::AcqRel);
        if bytes.replies > 0 {
            self.replies.fetch_sub(bytes.replies, Ordering::AcqRel);
            self.waker.wake();
        }
    }
}

/// What a batch wrote, by account.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Written {
    /// Push bytes (the slow-consumer budget).
    pushes: usize,
    /// Reply bytes.
    replies: usize,
}
impl std::ops::AddAssign for Written {
    fn add_assign(&mut self, other: Self) {
        self.pushes += other.pushes;
        self.replies += other.replies;
    }
}

/// One queued item: a text frame (`counted` ones are part of the slow-consumer budget) or a
/// WebSocket ping or pong.
#[derive(Debug)]
enum Outgoing {
    Text {
        frame: Utf8Bytes,
        counted: bool,
    },
    Ping,
    Pong(Bytes),
    /// A complete frame (a compressed push), counted against the limit.
    Frame(Bytes),
}

impl Outgoing {
    fn budget(&self) -> Written {
        match self {
            Outgoing::Text {
                frame,
                counted: true,
            } => Written {
                pushes: frame.len(),
                replies: 0,
            },
            Outgoing::Text {
                frame,
                counted: false,
            } => Written {
                pushes: 0,
                replies: frame.len(),
            },
            Outgoing::Frame(frame) => Written {
                pushes: frame.len(),
                replies: 0,
            },
            Outgoing::Ping | Outgoing::Pong(_) => Written::default(),
        }
    }

    /// The message for tungstenite, which frames it; `None` for a complete frame, which is
    /// only ever queued for a lean connection ([`Outbox::frames`]).
    fn into_message(self) -> Option<Message> {
        Some(match self {
            Outgoing::Text { frame, .. } => Message::Text(frame),
            Outgoing::Ping => Message::Ping(Default::default()),
            Outgoing::Pong(payload) => Message::Pong(payload),
            Outgoing::Frame(_) => return None,
        })
    }

    /// The encoded frame for the lean layer (a shared frame as it is, uncopied).
    fn into_frame(self) -> Bytes {
        match self {
            Outgoing::Text { frame, .. } => frame::encode(OpCode::Text, false, frame.as_bytes()),
            Outgoing::Ping => Bytes::from_static(PING_FRAME),
            Outgoing::Pong(payload) => frame::encode(OpCode::Pong, false, &payload),
            Outgoing::Frame(frame) => frame,
        }
    }
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
