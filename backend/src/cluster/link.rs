//! [`ClusterLink`]: one edge's attachment to the cluster — the calls, the delivery state of its
//! subscribed rooms (deduplicated by offset) and the members it re-joins after a reconnect.
//! The task that keeps it connected is `driver.rs`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use plaza_proto::cluster::{
    BrokerError, Call, CallOk, EdgeRequest, Ephemeral, HistoryPage, LinkEvent, PresencePage,
    PresenceStats, PublishAck, RoomEvent, RoomEventKind, RoomsPage,
};
use plaza_proto::events::{EventFilter, EventsPage, FeedPosition, WebhookClaim};
use plaza_proto::{ClientId, Member, Payload, Position, RoomName, Sender, UserId};
use tokio::sync::{mpsc, watch};

use super::ClusterBackend;
use super::conn::BrokerConn;
use crate::EdgeLink;

/// One edge's attachment to the cluster. Cheap to clone; the driver task runs while a clone
/// exists.
#[derive(Clone)]
pub struct ClusterLink {
    pub(super) inner: Arc<LinkInner>,
}

pub(super) struct LinkInner {
    pub(super) backend: ClusterBackend,
    pub(super) hello: EdgeRequest,
    pub(super) lease: Duration,
    /// The session calls go to; `None` while reconnecting.
    pub(super) current: watch::Sender<Option<BrokerConn>>,
    pub(super) state: Mutex<LinkState>,
    pub(super) closed: AtomicBool,
}

pub(super) struct LinkState {
    /// The edge's stream; `None` once ended.
    pub(super) events: Option<mpsc::Sender<LinkEvent>>,
    /// Subscribed rooms.
    pub(super) rooms: HashMap<RoomName, Track>,
    /// Members joined through this link, re-joined after a reconnect.
    pub(super) members: HashMap<(RoomName, ClientId), Member>,
    /// Leaves whose call failed (no broker reachable in time): sent again when a session is up
    /// (`driver::resume`, `driver::retry_leaves`), so a member whose client is gone does not
    /// stay while the edge keeps its lease. A later join of the same member removes it.
    pub(super) unfinished_leaves: HashSet<(RoomName, ClientId)>,
}

/// A subscribed room's delivery state.
pub(super) struct Track {
    /// The position of the last publication delivered (or of the subscription).
    pub(super) last: Position,
    /// While resuming on a new session: that session's events, held back until the missed
    /// publications have been delivered.
    pub(super) resuming: Option<Vec<RoomEvent>>,
}

impl LinkState {
    /// Delivers `event` unless its publication was delivered already. Ends the stream if the
    /// edge does not keep up.
    pub(super) fn deliver(&mut self, event: RoomEvent) {
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

    pub(super) fn send(&mut self, event: LinkEvent) {
        crate::send_or_end(&mut self.events, event);
    }

    /// Passes an ephemeral publication on if the room is still subscribed; dropped if the
    /// edge's queue is full (at most once).
    pub(super) fn deliver_ephemeral(&mut self, ephemeral: Ephemeral) {
        if self.rooms.contains_key(&ephemeral.room) {
            crate::send_ephemeral(self.events.as_ref(), LinkEvent::Ephemeral(ephemeral));
        }
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
    pub(super) fn state(&self) -> MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends the event stream (the edge then attaches again).
    pub(super) fn end(&self, why: &str) {
        tracing::warn!(why, "ending the broker link");
        self.state().events = None;
        self.closed.store(true, Ordering::Release);
        if let Some(session) = self.current.send_replace(None) {
            session.close(why);
        }
    }

    pub(super) fn ended(&self) -> bool {
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

/// Whether repeating `call` cannot change the outcome. An ephemeral publication is never
/// repeated: at most once.
fn repeatable(call: &Call) -> bool {
    !matches!(
        call,
        Call::Publish { idem: None, .. } | Call::PublishEphemeral(_)
    )
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

    async fn publish_ephemeral(
        &self,
        room: RoomName,
        data: Payload,
        from: Option<Sender>,
    ) -> Result<(), BrokerError> {
        match self
            .call(Call::PublishEphemeral(Ephemeral { room, data, from }))
            .await?
        {
            CallOk::Done => Ok(()),
            _ => Err(unexpected("publish_ephemeral")),
        }
    }

    async fn join(&self, room: RoomName, member: Member) -> Result<(), BrokerError> {
        let key = (room.clone(), member.client.clone());
        // A leave of this member still waiting to be retried is superseded by this join.
        self.inner.state().unfinished_leaves.remove(&key);
        // A member already joined (a `presence_update`) is recorded with its new info before
        // the call: a resume meanwhile re-joins it with that info, never the old one (which
        // would announce a change back).
        let previous = {
            let mut state = self.inner.state();
            match state.members.get_mut(&key) {
                Some(known) => Some(std::mem::replace(known, member.clone())),
                None => None,
            }
        };
        let joined = self
            .call(Call::Join {
                room,
                member: member.clone(),
            })
            .await;
        let mut state = self.inner.state();
        match (joined, previous) {
            (Ok(_), _) => {
                state.members.insert(key, member);
                Ok(())
            }
            (Err(e), Some(previous)) => {
                state.members.insert(key, previous);
                Err(e)
            }
            (Err(e), None) => Err(e),
        }
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

    async fn presence(
        &self,
        room: RoomName,
        after: Option<ClientId>,
        limit: u32,
    ) -> Result<PresencePage, BrokerError> {
        match self.call(Call::Presence { room, after, limit }).await? {
            CallOk::Presence(page) => Ok(page),
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

    async fn events(
        &self,
        since: Option<FeedPosition>,
        limit: u32,
        filter: EventFilter,
    ) -> Result<EventsPage, BrokerError> {
        match self
            .call(Call::Events {
                since,
                limit,
                filter,
            })
            .await?
        {
            CallOk::Events(page) => Ok(page),
            _ => Err(unexpected("events")),
        }
    }

    async fn claim_webhooks(&self, lease: Duration) -> Result<WebhookClaim, BrokerError> {
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        match self.call(Call::ClaimWebhooks { lease_ms }).await? {
            CallOk::WebhookClaim(claim) => Ok(claim),
            _ => Err(unexpected("claim_webhooks")),
        }
    }

    async fn ack_webhooks(&self, endpoint: String, through: u64) -> Result<(), BrokerError> {
        match self.call(Call::AckWebhooks { endpoint, through }).await? {
            CallOk::Done => Ok(()),
            _ => Err(unexpected("ack_webhooks")),
        }
    }

    async fn state_write(
        &self,
        room: RoomName,
        write: plaza_proto::state::StateWrite,
    ) -> Result<plaza_proto::state::StateAck, BrokerError> {
        match self.call(Call::StateWrite { room, write }).await? {
            CallOk::StateWritten(ack) => Ok(ack),
            _ => Err(unexpected("state_write")),
        }
    }

    async fn state_read(
        &self,
        room: RoomName,
    ) -> Result<plaza_proto::state::StateSnapshot, BrokerError> {
        match self.call(Call::StateRead { room }).await? {
            CallOk::State(snapshot) => Ok(snapshot),
            _ => Err(unexpected("state_read")),
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
