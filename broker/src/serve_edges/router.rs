//! Which attached edge receives which room's events: the broker's half of "each event once per
//! edge, in offset order, from the applied state".
//!
//! ```text
//!   RaftNode::subscribe() ──AppliedEvents (log order)──▶ Router::route ──try_send──▶ attachment queues
//!   Subscribe call ──lock──▶ read (position, applied index A) ──▶ register "from A" ──▶ reply queued
//! ```
//!
//! A subscription registered at applied index `A` receives the events of entries after `A`
//! only. The routing task has routed at most up to `A` when the registration happens (events
//! are broadcast after they are applied), and both happen under the router's lock, so the
//! subscriber sees every later event exactly once and the subscribe reply is queued before
//! any of them.
//!
//! When the router cannot keep that promise — an attachment's queue is full, the event broadcast
//! lagged, or a snapshot replaced the state — it cuts the affected attachments: their connection
//! is closed with a reconnect code and the edge resumes every room from its last offset on a
//! new attachment (catch-up from history).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use plaza_proto::cluster::{BrokerEvent, Ephemeral, LinkEvent};
use plaza_proto::links::edge_close;
use plaza_proto::{EdgeId, RoomName};
use quinn::{Connection, VarInt};
use tokio::sync::{broadcast, mpsc};

use crate::raft::AppliedEvents;
use plaza_net::framing::encode_frame;

/// Connection close code: [`edge_close::RESUME`] (reconnect and resume).
pub const CLOSE_RESUME: VarInt = VarInt::from_u32(edge_close::RESUME);
/// Connection close code: [`edge_close::LEASE_EXPIRED`] (attach again and re-join).
pub const CLOSE_LEASE_EXPIRED: VarInt = VarInt::from_u32(edge_close::LEASE_EXPIRED);
/// Connection close code: [`edge_close::PROTOCOL`] (the edge broke the protocol).
pub const CLOSE_PROTOCOL: VarInt = VarInt::from_u32(edge_close::PROTOCOL);
/// Connection close code: [`edge_close::VERSION`] (protocol version not spoken here).
pub const CLOSE_VERSION: VarInt = VarInt::from_u32(edge_close::VERSION);
/// Connection close code: [`edge_close::UNAVAILABLE`] (no quorum to attach, shutting down).
pub const CLOSE_UNAVAILABLE: VarInt = VarInt::from_u32(edge_close::UNAVAILABLE);

/// Identifies an attachment within this broker.
pub(super) type AttachmentId = u64;

/// The broker's routing table. Shared by the routing task and the attachments.
#[derive(Default)]
pub struct Router {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    attachments: HashMap<AttachmentId, Slot>,
    /// Room → subscribed attachments, each with the applied index its subscription started at.
    rooms: HashMap<RoomName, HashMap<AttachmentId, u64>>,
    next: AttachmentId,
}

struct Slot {
    edge: EdgeId,
    /// Encoded frames: each event is encoded once and its bytes shared by every attachment.
    events: mpsc::Sender<Bytes>,
    conn: Connection,
    rooms: HashSet<RoomName>,
    /// Last frame from the edge; leases are renewed only for edges heard from recently.
    last_seen: Instant,
}

/// What a subscription started at.
pub enum Registered {
    /// The reply has been queued ahead of every event of the room.
    Queued,
    /// The attachment is gone or its queue is full (it has been cut).
    Gone,
}

impl Router {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds an attachment; returns its id.
    pub fn add(&self, edge: EdgeId, events: mpsc::Sender<Bytes>, conn: Connection) -> AttachmentId {
        let mut state = self.lock();
        state.next += 1;
        let id = state.next;
        state.attachments.insert(
            id,
            Slot {
                edge,
                events,
                conn,
                rooms: HashSet::new(),
                last_seen: Instant::now(),
            },
        );
        metrics::gauge!(crate::metrics::EDGE_SESSIONS).set(state.attachments.len() as f64);
        id
    }

    /// Removes an attachment and its subscriptions.
    pub fn remove(&self, id: AttachmentId) {
        let mut state = self.lock();
        state.remove(id);
        metrics::gauge!(crate::metrics::EDGE_SESSIONS).set(state.attachments.len() as f64);
    }

    /// Notes that the edge of attachment `id` was heard from.
    pub fn seen(&self, id: AttachmentId) {
        if let Some(slot) = self.lock().attachments.get_mut(&id) {
            slot.last_seen = Instant::now();
        }
    }

    /// Whether attachment `id` is subscribed to `room`.
    pub fn subscribed(&self, id: AttachmentId, room: &RoomName) -> bool {
        self.lock()
            .attachments
            .get(&id)
            .is_some_and(|s| s.rooms.contains(room))
    }

    /// Subscribes attachment `id` to `room`: `read` gives the room's position and the applied
    /// index it was read at, and `reply` turns the position into the frame to queue ahead of
    /// the room's events. Both run under the routing lock.
    pub fn subscribe<P>(
        &self,
        id: AttachmentId,
        room: &RoomName,
        read: impl FnOnce() -> Result<(u64, P), BrokerEvent>,
        reply: impl FnOnce(P) -> BrokerEvent,
    ) -> Registered {
        let mut state = self.lock();
        let Some(slot) = state.attachments.get_mut(&id) else {
            return Registered::Gone;
        };
        let (index, frame) = match read() {
            Ok((index, position)) => (Some(index), reply(position)),
            Err(frame) => (None, frame),
        };
        let Some(frame) = encode(&frame) else {
            return Registered::Gone;
        };
        if slot.events.try_send(frame).is_err() {
            state.cut(id, "event queue full");
            return Registered::Gone;
        }
        if let Some(index) = index {
            // Re-subscribing keeps the earlier start: the edge already gets everything after.
            if slot.rooms.insert(room.clone()) {
                state
                    .rooms
                    .entry(room.clone())
                    .or_default()
                    .insert(id, index);
            }
        }
        Registered::Queued
    }

    /// Unsubscribes attachment `id` from `room`.
    pub fn unsubscribe(&self, id: AttachmentId, room: &RoomName) {
        let mut state = self.lock();
        if let Some(slot) = state.attachments.get_mut(&id) {
            slot.rooms.remove(room);
        }
        state.unlink(id, room);
    }

    /// Queues ephemeral publications, in order, to the attachments subscribed to each one's
    /// room (whatever index they subscribed at: ephemeral traffic is outside the log). A full
    /// queue drops the publication for that attachment instead of cutting it: at most once.
    /// Returns how many deliveries were queued.
    pub fn route_ephemeral(&self, batch: &[Ephemeral]) -> usize {
        let state = self.lock();
        let mut sent = 0;
        for ephemeral in batch {
            let Some(subs) = state.rooms.get(&ephemeral.room) else {
                continue;
            };
            let Some(frame) = encode(&BrokerEvent::Ephemeral(ephemeral.clone())) else {
                continue;
            };
            for id in subs.keys() {
                let Some(slot) = state.attachments.get(id) else {
                    continue;
                };
                if slot.events.try_send(frame.clone()).is_ok() {
                    sent += 1;
                } else {
                    metrics::counter!(crate::metrics::EPHEMERAL_DROPPED, "reason" => "edge_queue")
                        .increment(1);
                }
            }
        }
        sent
    }

    /// Queues `event` to every attachment; returns how many got it.
    pub fn broadcast(&self, event: &LinkEvent) -> usize {
        let mut state = self.lock();
        let Some(frame) = encode(&BrokerEvent::from(event.clone())) else {
            return 0;
        };
        let mut full = Vec::new();
        let mut sent = 0;
        for (id, slot) in &state.attachments {
            match slot.events.try_send(frame.clone()) {
                Ok(()) => sent += 1,
                Err(_) => full.push(*id),
            }
        }
        for id in full {
            state.cut(id, "event queue full");
        }
        sent
    }

    /// The edges to renew leases for: attachments heard from since `since` (the previous renewal
    /// round), so a lease never outlives the edge's last sign of life by more than one round.
    pub fn live_edges(&self, since: Instant) -> Vec<(AttachmentId, EdgeId)> {
        self.lock()
            .attachments
            .iter()
            .filter(|(_, s)| s.last_seen >= since)
            .map(|(id, s)| (*id, s.edge.clone()))
            .collect()
    }

    /// Closes attachment `id`'s connection with `code` and forgets it.
    pub fn close(&self, id: AttachmentId, code: VarInt, reason: &str) {
        let mut state = self.lock();
        if let Some(slot) = state.attachments.get(&id) {
            slot.conn.close(code, reason.as_bytes());
        }
        state.remove(id);
    }

    /// Routes applied events to the attachments until the node stops.
    pub async fn run(&self, mut applied: broadcast::Receiver<AppliedEvents>) {
        loop {
            match applied.recv().await {
                Ok(entry) if entry.resync => {
                    tracing::info!("state replaced by a snapshot: edges resume");
                    self.lock().cut_all("broker state resynced");
                }
                Ok(entry) => self.route(&entry),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(entries = n, "event routing fell behind: edges resume");
                    self.lock().cut_all("broker fell behind");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    }

    fn route(&self, entry: &AppliedEvents) {
        let index = entry.log_id.index;
        let mut state = self.lock();
        let mut full = Vec::new();
        for event in entry.events.iter() {
            let Some(subs) = state.rooms.get(&event.room) else {
                continue;
            };
            // Encoded once, when the first attachment wants it; every attachment shares the bytes.
            let mut frame = None;
            for (id, from) in subs {
                if index <= *from {
                    continue;
                }
                let Some(slot) = state.attachments.get(id) else {
                    continue;
                };
                let frame = frame.get_or_insert_with(|| encode(&BrokerEvent::Room(event.clone())));
                let Some(frame) = frame else { break };
                if slot.events.try_send(frame.clone()).is_err() {
                    full.push(*id);
                }
            }
        }
        full.sort_unstable();
        full.dedup();
        for id in full {
            state.cut(id, "event queue full");
        }
    }
}

/// Encodes a frame for the attachment queues; `None` (logged) if it cannot be encoded.
pub(super) fn encode(event: &BrokerEvent) -> Option<Bytes> {
    match encode_frame(event) {
        Ok(frame) => Some(frame),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a frame for an edge");
            None
        }
    }
}

impl State {
    fn remove(&mut self, id: AttachmentId) {
        if let Some(slot) = self.attachments.remove(&id) {
            for room in slot.rooms {
                self.unlink(id, &room);
            }
        }
    }

    fn unlink(&mut self, id: AttachmentId, room: &RoomName) {
        if let Some(subs) = self.rooms.get_mut(room) {
            subs.remove(&id);
            if subs.is_empty() {
                self.rooms.remove(room);
            }
        }
    }

    /// Closes an attachment that missed (or would miss) events; its edge resumes elsewhere.
    fn cut(&mut self, id: AttachmentId, why: &str) {
        if let Some(slot) = self.attachments.get(&id) {
            tracing::warn!(edge = %slot.edge, why, "cutting an edge attachment; it will resume");
            metrics::counter!(crate::metrics::EDGE_SESSIONS_CUT).increment(1);
            slot.conn.close(CLOSE_RESUME, why.as_bytes());
        }
        self.remove(id);
    }

    fn cut_all(&mut self, why: &str) {
        let ids: Vec<AttachmentId> = self.attachments.keys().copied().collect();
        for id in ids {
            self.cut(id, why);
        }
    }
}
