//! One task per client connection: reads frames, runs commands, keeps the connection's
//! deadlines (connect, idle, token refresh and expiry, drain) — and on the lean WebSocket
//! layer also writes the connection's socket ([`transport`]).
//!
//! ```text
//!  socket ──text frame──▶ ClientFrame::decode ──Command──▶ Session::handle ──▶ Node (calls) / Hub
//!  socket ◀──Transport::pump (lean) / write_loop task (tungstenite)── Outbox ◀── replies, pushes
//! ```
//!
//! The deadlines need no timer of their own: the read loop checks them whenever the task runs,
//! and the edge's one timer (`timers.rs`) wakes the task when the earliest is due — an entry
//! is added only when the earliest deadline moves earlier, so the task holds no timer state.
//!
//! Commands of one connection run one at a time, in order, so a client's publications keep
//! their order. A `publish` reply and the `pub` push of the same publication travel different
//! paths (reply here, push through the hub) and may arrive in either order.

use std::future::Future;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use plaza_backend::EdgeLink;
use plaza_proto::client::{
    Connect, ConnectOk, DecodeError, Empty, History, HistoryOk, PresenceOk, PresenceQuery,
    PresenceStatsOk, PresenceUpdate, PresenceUsersOk, Publish, PublishOk, RefreshOk, RefreshPush,
    Subscribe, SubscribeOk, UnsubscribedPush,
};
use plaza_proto::{
    ClientFrame, ClientId, CloseCode, Command, ErrorBody, ErrorCode, Member, Position, Push, Reply,
    ReplyOk, RoomName, Sender, ServerFrame, UserId,
};
use plaza_rooms::config::PresenceMode;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::auth::{AuthError, Capability, Identity, unix_now};
use crate::hub::SessionId;
use crate::limits::{CommandRate, CommandVerdict};
use crate::metrics as m;
use crate::node::Node;
use crate::outbox::Outbox;
use crate::small_map::SmallMap;
use crate::timers::Tick;
use crate::ws::compat::Socket;
use transport::{Incoming, Step, Transport};

mod auth;
mod ephemeral;
mod guard;
mod presence_update;
mod rooms;
mod state;
mod transport;

type CommandResult = Result<Option<ReplyOk>, ErrorBody>;

struct Session<L: EdgeLink> {
    node: Arc<Node<L>>,
    /// Commands per second of this connection.
    rate: CommandRate,
    id: SessionId,
    outbox: Arc<Outbox>,
    stage: Stage,
    subs: SmallMap<RoomName, Sub>,
    last_seen: Tick,
    /// When to send the next WebSocket ping (through the outbox, so the writer needs no timer).
    next_ping: Tick,
    /// The deadline this session's entry in the edge's timer is for, until it passes.
    wakeup: Option<Tick>,
    /// What only some connections ever need, made on first use.
    rare: Option<Box<Rare>>,
    /// The end ran to completion (`cleanup`); otherwise dropping the session releases what
    /// the connection holds in the edge (see `guard.rs`).
    finished: bool,
}

/// Where a connection is in its life.
enum Stage {
    /// Waiting for `connect` since `opened`; `token` came with the upgrade request (query
    /// string or cookie), for a `connect` that carries none.
    Opening {
        opened: Tick,
        token: Option<Box<str>>,
    },
    /// Authenticated.
    Connected(Connected),
}

/// A session's state that most connections never need (boxed: an idle connection pays one
/// pointer for all of it).
#[derive(Default)]
struct Rare {
    /// Close the connection with this code once the current reply is queued.
    close_after: Option<(CloseCode, String)>,
    /// When this connection closes in the edge's drain.
    drain_at: Option<Instant>,
    /// Since when replies over `client.max_pending_reply_bytes` have waited without the writer
    /// making progress (commands are not read meanwhile).
    stalled_since: Option<Instant>,
    /// Ephemeral publications per second (made on the first one).
    ephemeral: Option<crate::ephemeral::EphemeralRate>,
    /// `presence_update`s per second (made on the first one).
    presence_updates: Option<presence_update::PresenceUpdateRate>,
    /// State writes per second (made on the first one).
    state_rate: Option<crate::state::StateRate>,
    /// The writer task of a tungstenite connection (the lean layer has none), aborted if the
    /// session ends without its cleanup.
    writer: Option<AbortHandle>,
}

impl Rare {
    /// The session's rare state, made if it has none yet.
    fn of(rare: &mut Option<Box<Rare>>) -> &mut Rare {
        rare.get_or_insert_with(Box::default)
    }
}

/// An authenticated connection. It holds a place among its user's connections on this edge
/// (`node.users`), released when the session is dropped (`guard.rs`).
struct Connected {
    client: ClientId,
    identity: Identity,
    refresh_at: Option<Tick>,
    expire_at: Option<Tick>,
}

struct Sub {
    /// Whether this connection is a member of the room's presence.
    joined: bool,
    /// Whether it receives join/leave pushes (needs the `presence` capability).
    presence: bool,
    /// Whether it set keys tied to the connection (released when the subscription ends).
    tied: bool,
}

/// Runs a client connection to its end, then removes its subscriptions and presence.
///
/// The setup happens here, outside the returned future, so that the future — which lives as
/// long as the connection — only holds what the read loop needs (an async fn would also keep
/// room for its arguments).
pub(crate) fn run<L: EdgeLink>(
    socket: Socket,
    node: Arc<Node<L>>,
    handshake_token: Option<String>,
) -> impl Future<Output = ()> + Send + 'static {
    let (mut transport, outbox, writer) =
        Transport::new(socket, node.config.client.outbound_queue_bytes);
    let ping_interval = node.config.client.ping_interval;
    metrics::counter!(m::CONNECTIONS_TOTAL).increment(1);
    metrics::gauge!(m::CONNECTIONS).increment(1);
    let now = Instant::now();
    let (opened, next_ping) = (node.timers.tick(now), node.timers.tick(now + ping_interval));
    let id = node.hub.next_session();
    let mut session = Session {
        rate: CommandRate::new(&node.config.limits),
        id,
        node,
        outbox,
        stage: Stage::Opening {
            opened,
            token: handshake_token.map(String::into_boxed_str),
        },
        subs: SmallMap::default(),
        last_seen: opened,
        next_ping,
        wakeup: None,
        rare: writer.map(|writer| {
            Box::new(Rare {
                writer: Some(writer),
                ..Rare::default()
            })
        }),
        finished: false,
    };
    // An `async move` block rather than an async fn: its captures are used in place, where an
    // async fn would also keep a copy of its arguments for the connection's whole life.
    async move {
        // The session's outbox, for the transport while a command borrows the session.
        let outbox = session.outbox.clone();
        // A panic anywhere in the read loop (a command handler included) is caught here: the
        // connection is closed with 4003 and ends through `finish` like any other.
        let read_loop = async {
            // Nothing is kept across rounds but the session: the connection's close, its
            // replies being written, the edge's drain and its deadlines (`timers.rs`) wake the
            // task through the waker registered in the outbox, and each source is
            // checked on every poll.
            loop {
                // In a block of its own, so that nothing of the wait stays in the task while a
                // command runs.
                let wake = {
                    // While the client leaves too many replies unread, its commands are not
                    // read (TCP backpressure) until the writer makes progress.
                    let backlogged = session.replies_backlogged();
                    let backlog = outbox.reply_backlog();
                    let deadline = session.next_deadline();
                    // When to look at the deadlines again: at the earliest one, or when this
                    // session's timer entry fires if that is sooner (the deadline moved later
                    // since it was added, e.g. at `connect`) — the entry is then gone, and the
                    // next round adds one for the deadline.
                    let due = session.schedule_wakeup(deadline);
                    let writes = transport.writes();
                    let draining = session.drain_at().is_some();
                    let drain = &session.node.drain;
                    let (outbox, transport) = (&*outbox, &mut transport);
                    // Polled in this order (the first ready wins). Every source is
                    // cancel-safe: reading and writing keep their progress in the transport,
                    // and the wakers and the deadline lose nothing.
                    std::future::poll_fn(move |cx| {
                        outbox.register_session(cx.waker());
                        if outbox.is_closed() {
                            return Poll::Ready(Wake::Closed);
                        }
                        if !draining && drain.started() {
                            return Poll::Ready(Wake::Drain);
                        }
                        if Instant::now() >= due {
                            return Poll::Ready(Wake::Deadline);
                        }
                        // Registered above: the writer wakes the task when it writes replies.
                        if backlogged && !writes && outbox.reply_backlog() < backlog {
                            return Poll::Ready(Wake::RepliesWritten);
                        }
                        if writes || !backlogged {
                            return transport.poll_step(outbox, !backlogged, cx).map(Wake::Step);
                        }
                        Poll::Pending
                    })
                    .await
                };
                let text = match session.on_wake(wake) {
                    ControlFlow::Break(()) => break,
                    ControlFlow::Continue(None) => continue,
                    ControlFlow::Continue(Some(text)) => text,
                };
                // Boxed, with the text: a command's future is large (history pages, nested
                // broker calls) and exists only while it runs; inline it would sit in every
                // idle connection.
                let command = Box::pin(session.on_text(text));
                transport.drive(&outbox, command).await;
            }
        };
        if let Err(panic) = AssertUnwindSafe(read_loop).catch_unwind().await {
            session.panicked("command", panic);
        }
        // The end of a connection is boxed like a command: it runs once, and inline its futures
        // would be part of every connection's footprint.
        let end =
            Box::pin(AssertUnwindSafe(transport.finish(&outbox, session.cleanup())).catch_unwind());
        match end.await {
            Ok(()) => session.finished(),
            Err(panic) => session.panicked("cleanup", panic),
        }
    }
}

/// What woke the read loop.
enum Wake {
    /// The connection is closing.
    Closed,
    /// The edge started draining.
    Drain,
    /// The earliest deadline passed.
    Deadline,
    /// The writer wrote replies the loop was waiting on (tungstenite).
    RepliesWritten,
    /// The transport read or wrote.
    Step(Step),
}

impl<L: EdgeLink> Session<L> {
    /// Acts on what woke the read loop: `Break` ends the connection, `Continue` carries the
    /// text of a command to run, if the client sent one. (A function of its own: the wake-up
    /// is consumed here, so the read loop keeps no slot for it while the command runs.)
    fn on_wake(&mut self, wake: Wake) -> ControlFlow<(), Option<Utf8Bytes>> {
        match wake {
            Wake::Closed => return ControlFlow::Break(()),
            Wake::Drain => self.start_drain(),
            Wake::Deadline => self.on_deadline(),
            Wake::RepliesWritten => self.unstall(),
            Wake::Step(Step::Wrote) => {}
            Wake::Step(Step::Read(Incoming::Text(text))) => {
                self.last_seen = self.tick(Instant::now());
                return ControlFlow::Continue(Some(text));
            }
            Wake::Step(Step::Read(Incoming::End)) => {
                self.outbox.close_quietly();
                return ControlFlow::Break(());
            }
            Wake::Step(Step::Read(Incoming::Error(e))) => {
                self.on_read_error(e);
                return ControlFlow::Break(());
            }
            Wake::Step(Step::Read(Incoming::Binary)) => {
                metrics::counter!(m::BAD_FRAMES, "kind" => "binary").increment(1);
                self.close(
                    CloseCode::BadRequest,
                    "binary frames are not supported; send JSON text frames",
                );
            }
            Wake::Step(Step::Read(Incoming::Control)) => {
                self.last_seen = self.tick(Instant::now());
            }
        }
        ControlFlow::Continue(None)
    }

    fn close(&self, code: CloseCode, reason: impl Into<String>) {
        self.outbox.close(code, reason);
    }

    /// Whether unwritten replies are over budget; starts the stall clock when they are.
    fn replies_backlogged(&mut self) -> bool {
        let over = self.outbox.reply_backlog() > self.node.config.client.max_pending_reply_bytes;
        if !over {
            self.unstall();
        } else {
            let rare = Rare::of(&mut self.rare);
            rare.stalled_since.get_or_insert_with(Instant::now);
        }
        over
    }

    /// The writer made progress: the stall clock stops.
    fn unstall(&mut self) {
        if let Some(rare) = &mut self.rare {
            rare.stalled_since = None;
        }
    }

    fn stalled_since(&self) -> Option<Instant> {
        self.rare.as_ref().and_then(|r| r.stalled_since)
    }

    fn drain_at(&self) -> Option<Instant> {
        self.rare.as_ref().and_then(|r| r.drain_at)
    }

    fn next_deadline(&self) -> Instant {
        let c = &self.node.config.client;
        let timers = &self.node.timers;
        let mut next =
            (timers.instant(self.last_seen) + c.idle_timeout).min(timers.instant(self.next_ping));
        if let Some(since) = self.stalled_since() {
            next = next.min(since + c.write_timeout);
        }
        match &self.stage {
            Stage::Opening { opened, .. } => {
                next = next.min(timers.instant(*opened) + c.connect_timeout);
            }
            Stage::Connected(conn) => {
                for t in [conn.refresh_at, conn.expire_at].into_iter().flatten() {
                    next = next.min(timers.instant(t));
                }
            }
        }
        self.drain_at().map_or(next, |d| next.min(d))
    }

    /// Makes sure the edge's timer wakes this session by `deadline`: a new entry if the one it
    /// has is for later (or has passed); a later deadline keeps the earlier entry, which then
    /// wakes the session early once. Returns when the session must look again: the deadline,
    /// or its entry's time if that is sooner.
    fn schedule_wakeup(&mut self, deadline: Instant) -> Instant {
        let now = Instant::now();
        let timers = &self.node.timers;
        if self.wakeup.is_some_and(|at| timers.instant(at) <= now) {
            self.wakeup = None;
        }
        // Compared as ticks: the entry is for the deadline's millisecond, rounded up.
        let wanted = timers.tick(deadline);
        if deadline > now && self.wakeup.is_none_or(|at| wanted < at) {
            timers.schedule(wanted, &self.outbox);
            self.wakeup = Some(wanted);
        }
        self.wakeup
            .map_or(deadline, |at| timers.instant(at).min(deadline))
    }

    /// `at` as the session keeps its moments.
    fn tick(&self, at: Instant) -> Tick {
        self.node.timers.tick(at)
    }

    /// Acts on whatever deadline has passed (nothing, if the round was only to renew the
    /// session's timer entry: every check compares with the clock).
    fn on_deadline(&mut self) {
        let now = Instant::now();
        let c = &self.node.config.client;
        if self.drain_at().is_some_and(|d| d <= now) {
            return self.close(CloseCode::Shutdown, "edge is draining; reconnect");
        }
        if self
            .stalled_since()
            .is_some_and(|since| now >= since + c.write_timeout)
        {
            metrics::counter!(m::SLOW_CONSUMERS).increment(1);
            return self.close(
                CloseCode::SlowConsumer,
                "replies left unread for too long (client.write_timeout)",
            );
        }
        let timers = &self.node.timers;
        if now >= timers.instant(self.last_seen) + c.idle_timeout {
            return self.close(
                CloseCode::IdleTimeout,
                "nothing received within the idle timeout",
            );
        }
        if now >= timers.instant(self.next_ping) {
            self.next_ping = timers.tick(now + c.ping_interval);
            self.outbox.push_ping();
        }
        let conn = match &mut self.stage {
            Stage::Connected(conn) => conn,
            Stage::Opening { opened, .. } => {
                if now >= timers.instant(*opened) + c.connect_timeout {
                    self.close(
                        CloseCode::ConnectTimeout,
                        "no connect command within the connect timeout",
                    );
                }
                return;
            }
        };
        if conn.expire_at.is_some_and(|t| timers.instant(t) <= now) {
            return self.close(
                CloseCode::TokenExpired,
                "token expired; reconnect with a fresh token",
            );
        }
        if conn.refresh_at.is_some_and(|t| timers.instant(t) <= now) {
            conn.refresh_at = None;
            let expires_in = conn.identity.expires_in(unix_now()).unwrap_or(0);
            self.outbox
                .push_frame(&ServerFrame::Push(Push::Refresh(RefreshPush {
                    expires_in,
                })));
        }
    }

    fn start_drain(&mut self) {
        let window = self.node.config.drain.window;
        let delay = window.mul_f64(rand::random::<f64>());
        Rare::of(&mut self.rare).drain_at = Some(Instant::now() + delay);
    }

    fn on_read_error(&self, e: axum::Error) {
        use tokio_tungstenite::tungstenite::Error as WsError;
        let inner = e.into_inner();
        if let Some(e) = inner.downcast_ref::<crate::ws::WsError>() {
            let max = self.node.config.client.max_frame_bytes;
            match crate::ws::compat::read_error_close(e, max) {
                Some((kind, code, reason)) => {
                    metrics::counter!(m::BAD_FRAMES, "kind" => kind).increment(1);
                    self.close(code, reason);
                }
                None => self.outbox.close_quietly(),
            }
            return;
        }
        match inner.downcast_ref::<WsError>() {
            Some(WsError::Capacity(_)) => {
                metrics::counter!(m::BAD_FRAMES, "kind" => "too_large").increment(1);
                let max = self.node.config.client.max_frame_bytes;
                self.close(
                    CloseCode::MessageTooLarge,
                    format!("frame exceeds {max} bytes"),
                );
            }
            Some(WsError::Protocol(p)) => {
                metrics::counter!(m::BAD_FRAMES, "kind" => "websocket").increment(1);
                self.close(
                    CloseCode::BadRequest,
                    format!("websocket protocol error: {p}"),
                );
            }
            Some(WsError::Utf8(_)) => {
                metrics::counter!(m::BAD_FRAMES, "kind" => "utf8").increment(1);
                self.close(CloseCode::BadRequest, "text frame is not valid UTF-8");
            }
            _ => self.outbox.close_quietly(),
        }
    }

    /// Runs one text frame's command (the frame is owned: it lives in the command's boxed
    /// future, not in the read loop's).
    async fn on_text(&mut self, text: Utf8Bytes) {
        let decoded = ClientFrame::decode(&text);
        let id = match &decoded {
            Ok(frame) => frame.id,
            Err(DecodeError::Command { id, .. }) => *id,
            Err(DecodeError::Malformed(reason)) => {
                metrics::counter!(m::BAD_FRAMES, "kind" => "malformed").increment(1);
                return self.close(DecodeError::CLOSE, reason.clone());
            }
        };
        // Every answerable frame costs a token, valid or not, so bad commands cannot flood.
        match self.rate.check() {
            CommandVerdict::Allow => {}
            CommandVerdict::Refuse => {
                let limit = self.node.config.limits.commands_per_second;
                let e = ErrorCode::RateLimited
                    .with(format!("more than {limit} commands per second; slow down"));
                return self.reply(id, Err(e));
            }
            CommandVerdict::Disconnect => {
                return self.close(CloseCode::RateLimited, "command flood");
            }
        }
        let frame = match decoded {
            Ok(frame) => frame,
            Err(DecodeError::Command { id, error }) => {
                metrics::counter!(m::COMMANDS, "op" => "invalid", "result" => error.code.name())
                    .increment(1);
                return self.reply(id, Err(error));
            }
            Err(DecodeError::Malformed(_)) => return,
        };
        let op = frame.command.op();
        let result = self.handle(frame.id, frame.command).await;
        let label = match &result {
            Ok(_) => "ok",
            Err(e) => e.code.name(),
        };
        metrics::counter!(m::COMMANDS, "op" => op, "result" => label).increment(1);
        match result {
            Ok(None) => {} // The reply was queued by the command itself.
            Ok(Some(ok)) => self.reply(frame.id, Ok(ok)),
            Err(e) => self.reply(frame.id, Err(e)),
        }
        if let Some((code, reason)) = self.rare.as_mut().and_then(|r| r.close_after.take()) {
            self.close(code, reason);
        }
    }

    fn reply(&self, id: u32, result: Result<ReplyOk, ErrorBody>) {
        self.outbox.push_reply(Utf8Bytes::from(
            ServerFrame::Reply(Reply { id, result }).encode(),
        ));
    }

    async fn handle(&mut self, id: u32, command: Command) -> CommandResult {
        if let Command::Connect(c) = command {
            return self.connect(c).await.map(Some);
        }
        if !matches!(self.stage, Stage::Connected(_)) {
            return Err(ErrorCode::NotConnected.with("send `connect` first"));
        }
        match command {
            Command::Connect(_) => unreachable_connect(),
            Command::Subscribe(s) => self.subscribe(id, s).await,
            Command::Unsubscribe(r) => self
                .unsubscribe(r.room)
                .await
                .map(|()| Some(ReplyOk::Empty(Empty {}))),
            Command::Publish(p) => self.publish(p).await.map(Some),
            Command::Presence(q) => self.presence(q).await.map(Some),
            Command::PresenceStats(r) => self.presence_stats(r.room).await.map(Some),
            Command::PresenceUpdate(u) => self.presence_update(u).await.map(Some),
            Command::History(h) => self.history(h).await.map(|ok| Some(ReplyOk::History(ok))),
            Command::Refresh(r) => self
                .refresh(&r.token)
                .await
                .map(|ok| Some(ReplyOk::Refresh(ok))),
            Command::Ping => Ok(Some(ReplyOk::Empty(Empty {}))),
            Command::Set(set) => self.set(set).await.map(Some),
            Command::Delete(delete) => self.delete(delete).await.map(Some),
        }
    }

    /// Removes every subscription and presence membership; runs once the connection closed.
    async fn cleanup(&mut self) {
        let subs: Vec<(RoomName, Sub)> = self.subs.take_all();
        for (room, sub) in subs {
            self.drop_sub(room, sub).await;
        }
    }
}

fn unreachable_connect() -> ! {
    unreachable!("connect is handled before dispatch")
}
