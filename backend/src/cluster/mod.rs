//! [`ClusterBackend`]: the broker tier as a `plaza-broker` cluster, reached over QUIC (ALPN
//! `plaza-edge/1`; the broker's side is `plaza-broker`'s `serve_edges`).
//!
//! ```text
//!   EdgeLink calls ─▶ current BrokerConn ─▶ broker (any; it forwards writes to the leader)
//!   LinkEvents ◀── dedupe by offset ◀── reader ◀── room events from that broker's applied state
//!   driver: dial a broker ─▶ Hello/Welcome ─▶ resume ─▶ keep-alives ─▶ (lost) ─▶ dial another
//! ```
//!
//! A link survives the loss of its broker: the driver dials another one (the same edge id, so
//! the edge's lease and members carry over), re-joins the members it added (a no-op for those
//! still present) and resumes every subscribed room from the last offset it delivered —
//! subscribe again, read history since that offset, deliver what was missed, then the events
//! buffered meanwhile, dropping any offset already delivered. The event stream therefore stays
//! gap-free and duplicate-free across broker failures, and the edge never notices them except
//! as latency. Join/leave events that happened while no broker was connected are not replayed
//! (presence itself is exact: ask `presence`). If a room's history no longer reaches back to
//! the last delivered offset, the link ends its stream instead of hiding the gap, and the edge
//! falls back to reconnecting its clients (who then recover with their own positions).
//!
//! Calls wait for a connection (up to `call_timeout`). A call whose connection is lost before
//! its answer arrives is retried on the next one when repeating it is harmless (reads,
//! subscribe, join, leave, publish with an idempotency key); a publish without a key fails
//! with `Unavailable` instead, because it may have been committed.

mod conn;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use plaza_proto::cluster::{
    BrokerError, BrokerEvent, Call, CallOk, EdgeRequest, HistoryPage, LinkEvent, PROTOCOL_VERSION,
    PresenceStats, PublishAck, RoomEvent, RoomEventKind, RoomsPage,
};
use plaza_proto::{ClientId, Member, Payload, Position, RoomName, Sender, UserId};
use quinn::{ClientConfig, Endpoint};
use tokio::sync::{mpsc, watch};

use self::conn::{BrokerConn, DialError, Target};
use super::{AttachOptions, Backend, EdgeLink, LinkEvents};
use plaza_net::framing::FrameReader;
pub use plaza_net::{ClusterTls, QuicOptions, TlsError};
use plaza_proto::links::ALPN_EDGE;

/// Settings of a [`ClusterBackend`]; every default is here.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Broker addresses (`host:port`), resolved on every dial; a name may resolve to several
    /// brokers (e.g. a Kubernetes headless service). Dialled in turn from a random start, so
    /// edges spread over the brokers.
    pub brokers: Vec<String>,
    /// Longest a dial (QUIC handshake, hello, attach committed) may take. A broker that does
    /// not answer within it is skipped for the next.
    pub connect_timeout: Duration,
    /// Longest a call may take, waiting for a connection included.
    pub call_timeout: Duration,
    /// How long `attach` keeps trying when no broker answers.
    pub attach_timeout: Duration,
    /// How long a link keeps trying to reach a broker after losing one before it ends its
    /// event stream.
    pub give_up_after: Duration,
    /// Events buffered for the edge; if it does not drain them the stream ends.
    pub event_queue: usize,
    /// QUIC timeouts; the idle timeout is how long a silently dead broker goes unnoticed.
    pub quic: QuicOptions,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            brokers: Vec::new(),
            connect_timeout: Duration::from_secs(1),
            call_timeout: Duration::from_secs(10),
            attach_timeout: Duration::from_secs(10),
            give_up_after: Duration::from_secs(30),
            event_queue: 65_536,
            // A dead broker must be noticed fast: its edges' clients wait for the failover.
            quic: QuicOptions {
                idle_timeout: Duration::from_millis(1500),
                keep_alive: Duration::from_millis(300),
                ..QuicOptions::default()
            },
        }
    }
}

/// The broker tier as a `plaza-broker` cluster. Cheap to clone.
#[derive(Clone)]
pub struct ClusterBackend {
    inner: Arc<BackendInner>,
}

struct BackendInner {
    endpoint: Endpoint,
    client: ClientConfig,
    options: ClusterOptions,
}

/// Why a [`ClusterBackend`] could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The TLS identity is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// No local UDP socket.
    #[error("cannot open a UDP socket: {0}")]
    Socket(#[from] std::io::Error),
    /// No brokers configured.
    #[error("no broker addresses given")]
    NoBrokers,
}

impl ClusterBackend {
    /// A backend dialling `options.brokers` with `tls` (the edge's certificate, signed by the
    /// cluster CA; brokers are verified against the same CA).
    pub fn new(tls: &ClusterTls, options: ClusterOptions) -> Result<Self, ClusterError> {
        if options.brokers.is_empty() {
            return Err(ClusterError::NoBrokers);
        }
        let mut client = ClientConfig::new(Arc::new(tls.client_config(&[ALPN_EDGE])?));
        client.transport_config(options.quic.transport_config());
        let endpoint = Endpoint::client((std::net::Ipv6Addr::UNSPECIFIED, 0).into())
            .or_else(|_| Endpoint::client((std::net::Ipv4Addr::UNSPECIFIED, 0).into()))?;
        Ok(Self {
            inner: Arc::new(BackendInner {
                endpoint,
                client,
                options,
            }),
        })
    }

    /// Dials the brokers in turn from a random start until one welcomes `hello`; `avoid` (the
    /// broker just lost) is tried last. Each configured name is resolved on every round, and a
    /// name that resolves to several addresses (a DNS name over all brokers) contributes each.
    async fn dial_any(
        &self,
        hello: &EdgeRequest,
        avoid: Option<&str>,
    ) -> Result<(BrokerConn, FrameReader), DialError> {
        let mut last = None;
        let mut targets = Vec::new();
        for name in &self.inner.options.brokers {
            match Target::resolve_all(name).await {
                Ok(resolved) => targets.extend(resolved),
                Err(why) => last = Some(why),
            }
        }
        if targets.is_empty() {
            return Err(DialError::Unavailable(
                last.unwrap_or_else(|| "no broker address resolves".into()),
            ));
        }
        let start = rand::random_range(0..targets.len());
        targets.rotate_left(start);
        if let Some(avoid) = avoid
            && let Some(at) = targets.iter().position(|t| t.label == avoid)
        {
            let lost = targets.remove(at);
            targets.push(lost);
        }
        for target in &targets {
            match BrokerConn::dial(
                &self.inner.endpoint,
                &self.inner.client,
                target,
                hello.clone(),
                self.inner.options.connect_timeout,
            )
            .await
            {
                Ok(session) => return Ok(session),
                Err(e @ DialError::Incompatible(_)) => return Err(e),
                Err(DialError::Unavailable(why)) => {
                    tracing::debug!(broker = %target.label, why, "broker not available");
                    last = Some(why);
                }
            }
        }
        Err(DialError::Unavailable(
            last.unwrap_or_else(|| "no brokers".into()),
        ))
    }
}

impl Backend for ClusterBackend {
    type Link = ClusterLink;

    async fn attach(
        &self,
        options: AttachOptions,
    ) -> Result<(ClusterLink, LinkEvents), BrokerError> {
        let lease_ms = u64::try_from(options.lease.as_millis()).unwrap_or(u64::MAX);
        let hello = EdgeRequest::Hello {
            version: PROTOCOL_VERSION,
            edge: options.edge.clone(),
            lease_ms,
        };
        let deadline = Instant::now() + self.inner.options.attach_timeout;
        let (session, reader) = loop {
            match self.dial_any(&hello, None).await {
                Ok(dialled) => break dialled,
                Err(DialError::Incompatible(why)) => return Err(BrokerError::Invalid(why)),
                Err(DialError::Unavailable(why)) if Instant::now() >= deadline => {
                    return Err(BrokerError::Unavailable(format!(
                        "no broker accepted the edge within {:?}: {why}",
                        self.inner.options.attach_timeout
                    )));
                }
                Err(DialError::Unavailable(_)) => tokio::time::sleep(RECONNECT_PAUSE).await,
            }
        };
        tracing::info!(broker = session.broker(), edge = %options.edge, "attached to the broker tier");
        let (events, rx) = mpsc::channel(self.inner.options.event_queue.max(1));
        let (current, _) = watch::channel(None);
        let link = ClusterLink {
            inner: Arc::new(LinkInner {
                backend: self.clone(),
                hello,
                lease: options.lease,
                current,
                state: Mutex::new(LinkState {
                    events: Some(events),
                    rooms: HashMap::new(),
                    members: HashMap::new(),
                    unfinished_leaves: HashSet::new(),
                }),
                closed: AtomicBool::new(false),
            }),
        };
        tokio::spawn(drive(Arc::downgrade(&link.inner), session, reader));
        Ok((link, rx))
    }
}

/// How long to wait between rounds of dialling every broker.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// One edge's attachment to the cluster. Cheap to clone; the driver task runs while a clone
/// exists.
#[derive(Clone)]
pub struct ClusterLink {
    inner: Arc<LinkInner>,
}

struct LinkInner {
    backend: ClusterBackend,
    hello: EdgeRequest,
    lease: Duration,
    /// The session calls go to; `None` while reconnecting.
    current: watch::Sender<Option<BrokerConn>>,
    state: Mutex<LinkState>,
    closed: AtomicBool,
}

struct LinkState {
    /// The edge's stream; `None` once ended.
    events: Option<mpsc::Sender<LinkEvent>>,
    /// Subscribed rooms.
    rooms: HashMap<RoomName, Track>,
    /// Members joined through this link, re-joined after a reconnect.
    members: HashMap<(RoomName, ClientId), Member>,
    /// Leaves whose call failed (no broker reachable in time): sent again on the next session,
    /// so a member whose client is gone does not stay while the edge keeps its lease.
    unfinished_leaves: HashSet<(RoomName, ClientId)>,
}

/// A subscribed room's delivery state.
struct Track {
    /// The position of the last publication delivered (or of the subscription).
    last: Position,
    /// While resuming on a new session: that session's events, held back until the missed
    /// publications have been delivered.
    resuming: Option<Vec<RoomEvent>>,
}

impl LinkState {
    /// Delivers `event` unless its publication was delivered already. Ends the stream if the
    /// edge does not keep up.
    fn deliver(&mut self, event: RoomEvent) {
        let Some(track) = self.rooms.get_mut(&event.room) else {
            return; // unsubscribed
        };
        if let Some(held) = &mut track.resuming {
            held.push(event);
            return;
        }
        if let RoomEventKind::Publication(p) = &event.kind {
            if event.epoch == track.last.epoch && p.offset <= track.last.offset {
                return;
            }
            track.last = Position {
                epoch: event.epoch.clone(),
                offset: p.offset,
            };
        }
        self.send(LinkEvent::Room(event));
    }

    fn send(&mut self, event: LinkEvent) {
        super::send_or_end(&mut self.events, event);
    }
}

impl Drop for LinkInner {
    /// The edge dropped every handle without closing: end the session without detaching, so
    /// the broker tier treats the edge as gone and its members leave when the lease runs out.
    fn drop(&mut self) {
        if let Some(session) = self.current.send_replace(None) {
            session.close("link dropped");
        }
    }
}

impl LinkInner {
    fn state(&self) -> MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends the event stream (the edge then attaches again).
    fn end(&self, why: &str) {
        tracing::warn!(why, "ending the broker link");
        self.state().events = None;
        self.closed.store(true, Ordering::Release);
        if let Some(session) = self.current.send_replace(None) {
            session.close(why);
        }
    }

    fn ended(&self) -> bool {
        self.closed.load(Ordering::Acquire) || self.state().events.is_none()
    }

    /// The current session, waiting for one until `deadline`.
    async fn session(&self, deadline: Instant) -> Result<BrokerConn, BrokerError> {
        let mut rx = self.current.subscribe();
        loop {
            if self.ended() {
                return Err(BrokerError::Unavailable("the broker link is closed".into()));
            }
            if let Some(session) = rx.borrow_and_update().clone()
                && session.alive()
            {
                return Ok(session);
            }
            let changed = tokio::time::timeout_at(deadline.into(), rx.changed()).await;
            match changed {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(BrokerError::Unavailable("the link stopped".into())),
                Err(_) => {
                    return Err(BrokerError::Unavailable(
                        "no broker connection (reconnecting)".into(),
                    ));
                }
            }
        }
    }

    /// Sends `call` on the current session, retrying on the next one if the session is lost
    /// and repeating the call is harmless.
    async fn call(&self, call: Call) -> Result<CallOk, BrokerError> {
        let deadline = Instant::now() + self.backend.inner.options.call_timeout;
        loop {
            let session = self.session(deadline).await?;
            match tokio::time::timeout_at(deadline.into(), session.call(call.clone())).await {
                Ok(Ok(result)) => return result,
                Ok(Err(lost)) if !lost.sent || repeatable(&call) => {
                    // The driver replaces the session; `session` waits for the new one.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(Err(_)) => {
                    return Err(BrokerError::Unavailable(
                        "lost the broker connection before the answer; the publish may or may \
                         not have been stored (retry with an idempotency key)"
                            .into(),
                    ));
                }
                Err(_) => {
                    return Err(BrokerError::Unavailable(format!(
                        "no answer within {:?}",
                        self.backend.inner.options.call_timeout
                    )));
                }
            }
        }
    }
}

/// Whether repeating `call` cannot change the outcome.
fn repeatable(call: &Call) -> bool {
    !matches!(call, Call::Publish { idem: None, .. })
}

/// The link's driver: reads the session's frames, keeps it alive, and replaces it when lost.
async fn drive(link: std::sync::Weak<LinkInner>, mut session: BrokerConn, mut reader: FrameReader) {
    let mut resumed = true; // the first session has nothing to resume
    loop {
        let Some(inner) = link.upgrade() else { return };
        inner.current.send_replace(Some(session.clone()));
        let keepalive = tokio::spawn(keep_alive(session.clone(), inner.lease));
        let resume = (!resumed).then(|| tokio::spawn(resume(Arc::clone(&inner), session.clone())));
        drop(inner);
        read_frames(&link, &session, &mut reader).await;
        keepalive.abort();
        if let Some(resume) = resume {
            resume.abort();
        }
        session.close("session lost");
        let Some(inner) = link.upgrade() else { return };
        if inner.ended() {
            return;
        }
        inner.current.send_replace(None);
        tracing::warn!(broker = session.broker(), "lost the broker; reconnecting");
        let give_up = Instant::now() + inner.backend.inner.options.give_up_after;
        let dialled = loop {
            match inner
                .backend
                .dial_any(&inner.hello, Some(session.broker()))
                .await
            {
                Ok(dialled) => break Some(dialled),
                Err(DialError::Incompatible(why)) => {
                    inner.end(&why);
                    break None;
                }
                Err(DialError::Unavailable(why)) if Instant::now() >= give_up => {
                    inner.end(&format!("no broker reachable: {why}"));
                    break None;
                }
                Err(DialError::Unavailable(_)) => tokio::time::sleep(RECONNECT_PAUSE).await,
            }
            if inner.ended() {
                break None;
            }
        };
        let Some((next, next_reader)) = dialled else {
            return;
        };
        tracing::info!(
            broker = next.broker(),
            "re-attached to the broker tier; resuming"
        );
        (session, reader) = (next, next_reader);
        resumed = false;
    }
}

/// Handles the session's frames until it ends.
async fn read_frames(
    link: &std::sync::Weak<LinkInner>,
    session: &BrokerConn,
    reader: &mut FrameReader,
) {
    loop {
        let frame = match reader.next::<BrokerEvent>().await {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "broker session ended");
                return;
            }
        };
        let Some(inner) = link.upgrade() else { return };
        match frame {
            BrokerEvent::Result { req, result } => {
                if let Some(pending) = session.take_pending(req) {
                    // A subscription is tracked before the next frame (possibly the room's
                    // first event) is read.
                    if let (Some(room), Ok(CallOk::Subscribed(position))) =
                        (pending.subscribe, &result)
                    {
                        inner.state().rooms.entry(room).or_insert_with(|| Track {
                            last: position.clone(),
                            resuming: None,
                        });
                    }
                    let _ = pending.reply.send(result);
                }
            }
            BrokerEvent::Room(event) => inner.state().deliver(event),
            BrokerEvent::DisconnectUser { user, reason } => inner
                .state()
                .send(LinkEvent::DisconnectUser { user, reason }),
            BrokerEvent::Welcome { .. } | BrokerEvent::Incompatible { .. } => {
                tracing::warn!("unexpected handshake frame from the broker");
                return;
            }
        }
    }
}

/// Sends keep-alives often enough that the broker renews the lease.
async fn keep_alive(session: BrokerConn, lease: Duration) {
    let period = (lease / 4).max(Duration::from_millis(50));
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if !session.notify(EdgeRequest::KeepAlive).await {
            return;
        }
    }
}

/// Most resume calls in flight at once.
const RESUME_CONCURRENCY: usize = 64;

/// Brings a new session up to date: finishes leaves that failed, re-joins the link's members,
/// then resumes every subscribed room from its last delivered offset. If the session fails
/// meanwhile it is closed, and the driver starts over on the next one.
async fn resume(link: Arc<LinkInner>, session: BrokerConn) {
    let started = Instant::now();
    let leaves: Vec<(RoomName, ClientId)> = link.state().unfinished_leaves.drain().collect();
    for chunk in leaves.chunks(RESUME_CONCURRENCY) {
        let calls = chunk.iter().map(|(room, client)| {
            session.call(Call::Leave {
                room: room.clone(),
                client: client.clone(),
            })
        });
        let results = futures_util::future::join_all(calls).await;
        if results.iter().any(|r| !matches!(r, Ok(Ok(_)))) {
            // Keep them for the next session.
            link.state().unfinished_leaves.extend(chunk.iter().cloned());
        }
    }
    let (rooms, members) = {
        let mut state = link.state();
        for track in state.rooms.values_mut() {
            track.resuming = Some(Vec::new());
        }
        let rooms: Vec<(RoomName, Position)> = state
            .rooms
            .iter()
            .map(|(room, track)| (room.clone(), track.last.clone()))
            .collect();
        let members: Vec<(RoomName, Member)> = state
            .members
            .iter()
            .map(|((room, _), member)| (room.clone(), member.clone()))
            .collect();
        (rooms, members)
    };
    for chunk in members.chunks(RESUME_CONCURRENCY) {
        let joins = chunk.iter().map(|(room, member)| {
            session.call(Call::Join {
                room: room.clone(),
                member: member.clone(),
            })
        });
        for joined in futures_util::future::join_all(joins).await {
            match joined {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "re-joining a member failed"),
                Err(_) => return, // session lost: the driver starts over
            }
        }
    }
    for chunk in rooms.chunks(RESUME_CONCURRENCY) {
        let resumes = chunk
            .iter()
            .map(|(room, last)| resume_room(&link, &session, room, last));
        for resumed in futures_util::future::join_all(resumes).await {
            if let Err(why) = resumed {
                tracing::warn!(why, "resume failed; trying another session");
                session.close("resume failed");
                return;
            }
        }
    }
    tracing::info!(
        rooms = rooms.len(),
        members = members.len(),
        took = ?started.elapsed(),
        "resumed on the new broker"
    );
}

/// Resumes one room: subscribe, read what was missed since `last`, deliver it, then the
/// events held back meanwhile.
async fn resume_room(
    link: &LinkInner,
    session: &BrokerConn,
    room: &RoomName,
    last: &Position,
) -> Result<(), String> {
    let lost = |_| "session lost".to_string();
    match session
        .call(Call::Subscribe { room: room.clone() })
        .await
        .map_err(lost)?
    {
        Ok(_) => {}
        Err(e) => return Err(format!("subscribe {room}: {e}")),
    }
    let page = match session
        .call(Call::History {
            room: room.clone(),
            since: Some(last.clone()),
            limit: None,
        })
        .await
        .map_err(lost)?
    {
        Ok(CallOk::History(page)) => page,
        Ok(_) => return Err(format!("history {room}: unexpected answer")),
        Err(e) => return Err(format!("history {room}: {e}")),
    };
    if !page.complete {
        link.end(&format!(
            "room {room}: the history no longer reaches back to offset {} of epoch {}; \
             clients must recover themselves",
            last.offset, last.epoch
        ));
        return Ok(());
    }
    let mut state = link.state();
    let Some(track) = state.rooms.get_mut(room) else {
        return Ok(()); // unsubscribed meanwhile
    };
    let held = track.resuming.take().unwrap_or_default();
    let epoch = page.position.epoch;
    for publication in page.publications {
        state.deliver(RoomEvent {
            room: room.clone(),
            epoch: epoch.clone(),
            kind: RoomEventKind::Publication(publication),
        });
    }
    for event in held {
        state.deliver(event);
    }
    Ok(())
}

impl ClusterLink {
    async fn call(&self, call: Call) -> Result<CallOk, BrokerError> {
        self.inner.call(call).await
    }
}

fn unexpected(what: &str) -> BrokerError {
    BrokerError::Unavailable(format!("the broker answered {what} with another result"))
}

impl EdgeLink for ClusterLink {
    async fn publish(
        &self,
        room: RoomName,
        data: Payload,
        from: Option<Sender>,
        idem: Option<String>,
    ) -> Result<PublishAck, BrokerError> {
        match self
            .call(Call::Publish {
                room,
                data,
                from,
                idem,
            })
            .await?
        {
            CallOk::Published(ack) => Ok(ack),
            _ => Err(unexpected("publish")),
        }
    }

    async fn join(&self, room: RoomName, member: Member) -> Result<(), BrokerError> {
        let key = (room.clone(), member.client.clone());
        self.call(Call::Join {
            room,
            member: member.clone(),
        })
        .await?;
        self.inner.state().members.insert(key, member);
        Ok(())
    }

    async fn leave(&self, room: RoomName, client: ClientId) -> Result<(), BrokerError> {
        let key = (room.clone(), client.clone());
        self.inner.state().members.remove(&key);
        if let Err(e) = self.call(Call::Leave { room, client }).await {
            self.inner.state().unfinished_leaves.insert(key);
            return Err(e);
        }
        Ok(())
    }

    async fn presence(&self, room: RoomName) -> Result<Vec<Member>, BrokerError> {
        match self.call(Call::Presence { room }).await? {
            CallOk::Presence(members) => Ok(members),
            _ => Err(unexpected("presence")),
        }
    }

    async fn presence_stats(&self, room: RoomName) -> Result<PresenceStats, BrokerError> {
        match self.call(Call::PresenceStats { room }).await? {
            CallOk::PresenceStats(stats) => Ok(stats),
            _ => Err(unexpected("presence_stats")),
        }
    }

    async fn history(
        &self,
        room: RoomName,
        since: Option<Position>,
        limit: Option<u32>,
    ) -> Result<HistoryPage, BrokerError> {
        match self.call(Call::History { room, since, limit }).await? {
            CallOk::History(page) => Ok(page),
            _ => Err(unexpected("history")),
        }
    }

    async fn subscribe(&self, room: RoomName) -> Result<Position, BrokerError> {
        match self.call(Call::Subscribe { room }).await? {
            CallOk::Subscribed(position) => Ok(position),
            _ => Err(unexpected("subscribe")),
        }
    }

    async fn unsubscribe(&self, room: RoomName) -> Result<(), BrokerError> {
        if self.inner.state().rooms.remove(&room).is_none() {
            return Ok(());
        }
        self.call(Call::Unsubscribe { room }).await?;
        Ok(())
    }

    async fn disconnect_user(&self, user: UserId, reason: String) -> Result<(), BrokerError> {
        self.call(Call::DisconnectUser { user, reason }).await?;
        Ok(())
    }

    async fn rooms(&self, after: Option<RoomName>, limit: u32) -> Result<RoomsPage, BrokerError> {
        match self.call(Call::Rooms { after, limit }).await? {
            CallOk::Rooms(page) => Ok(page),
            _ => Err(unexpected("rooms")),
        }
    }

    async fn close(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let session = self.inner.current.borrow().clone();
        if let Some(session) = session
            && session.notify(EdgeRequest::Detach).await
        {
            // The broker commits the detach, then closes the connection.
            let _ = tokio::time::timeout(DETACH_TIMEOUT, session.closed()).await;
        }
        self.inner.state().members.clear();
        self.inner.end("detached");
    }
}

/// How long `close` waits for the broker to commit the detach.
const DETACH_TIMEOUT: Duration = Duration::from_secs(5);
