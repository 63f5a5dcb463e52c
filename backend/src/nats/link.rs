//! [`NatsLink`]: one edge's attachment to the NATS broker tier (the parts it delegates:
//! `live.rs`, `presence.rs`, `leases.rs`).
//!
//! - **Live events**: one core-NATS subscription per subscribed room (to the stream's
//!   republished subjects), each read by its own task in stream order. A publication whose
//!   `Plaza-Prev` is not the last delivered offset reveals a missed message (NATS core delivery
//!   is at most once: a reconnect, a slow subscriber, interest still propagating in a cluster);
//!   the task then reads the missed publications from the stream before going on. After a
//!   reconnect, and shortly after subscribing, every room task also checks the stream.
//! - **Presence**: members in KV under `<ns>.<room>.<edge>.<client>`; join/leave events are
//!   published into the room's stream, so they are ordered with its publications.
//! - **Lease**: the link renews `PLAZA_EDGES/<edge>` every third of its lease, and reaps other
//!   edges whose entry is older than their lease: it claims the entry with a compare-and-set
//!   (so exactly one edge reaps), removes the dead edge's members and publishes their leaves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use bytes::Bytes;
use plaza_proto::cluster::{
    BrokerError, HistoryPage, LinkEvent, PresenceStats, PublishAck, RoomsPage,
};
use plaza_proto::{ClientId, EdgeId, Member, Payload, Position, RoomName, Sender, UserId};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Shared;
use super::leases::{LeaseEntry, keep_lease, reap};
use super::live::{Disconnect, follow, forward_disconnects};
use super::names::{DISCONNECT_SUBJECT, RoomSubjects, token};
use super::presence::{MemberEntry, members, presence_event, remove_member, rooms_page};
use crate::{AttachOptions, EdgeLink, LinkEvents, send_or_end};
use plaza_proto::client::check_idem;
use plaza_rooms::config::PresenceMode;

/// Header: the room's previous publication offset (0 for the first).
pub(super) const PREV: &str = "Plaza-Prev";
/// Header: the publishing client, as JSON.
pub(super) const FROM: &str = "Plaza-From";
/// Header set by republish: the message's stream sequence.
pub(super) const SEQUENCE: &str = "Nats-Sequence";
/// How often a publish retries when other edges publish to the same room at the same time.
const MAX_PUBLISH_ATTEMPTS: usize = 64;

/// One edge's attachment to NATS. Cheap to clone; the edge counts as alive (its lease is
/// renewed) while a clone exists.
#[derive(Clone)]
pub struct NatsLink {
    pub(super) inner: Arc<LinkInner>,
}

pub(crate) struct LinkInner {
    pub(super) shared: Arc<Shared>,
    pub(super) edge: EdgeId,
    pub(super) edge_token: String,
    pub(super) lease: Duration,
    pub(super) state: Mutex<LinkState>,
    /// The last publication offset this link knows per room, to publish with the right
    /// expectation; the async lock also serializes this edge's publishes per room.
    pub(super) publishing: Mutex<HashMap<RoomName, Arc<tokio::sync::Mutex<u64>>>>,
    pub(super) closed: AtomicBool,
    pub(super) tasks: Mutex<Vec<JoinHandle<()>>>,
}

pub(super) struct LinkState {
    pub(super) events: Option<mpsc::Sender<LinkEvent>>,
    pub(super) rooms: HashMap<RoomName, JoinHandle<()>>,
    pub(super) members: HashMap<(RoomName, ClientId), Member>,
}

pub(super) fn unavailable(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(format!("NATS: {e}"))
}

pub(super) async fn attach(
    shared: Arc<Shared>,
    options: AttachOptions,
) -> Result<(NatsLink, LinkEvents), BrokerError> {
    let (tx, rx) = mpsc::channel(shared.options.event_queue.max(1));
    let edge_token = token(options.edge.as_str());
    let inner = Arc::new(LinkInner {
        shared,
        edge: options.edge,
        edge_token,
        lease: options.lease,
        state: Mutex::new(LinkState {
            events: Some(tx),
            rooms: HashMap::new(),
            members: HashMap::new(),
        }),
        publishing: Mutex::new(HashMap::new()),
        closed: AtomicBool::new(false),
        tasks: Mutex::new(Vec::new()),
    });
    // Not fatal either way: `keep_lease` writes the lease every lease/3 and re-joins this
    // edge's members if it finds none. A write can fail just after the buckets were created,
    // while not every server of a NATS cluster serves them yet ("no stream found").
    if inner.shared.ready()
        && let Err(e) = inner.write_lease().await
    {
        tracing::warn!(error = %e, "lease not written yet; the lease task retries");
    }
    let disconnects = inner
        .shared
        .client
        .subscribe(DISCONNECT_SUBJECT)
        .await
        .map_err(unavailable)?;
    if inner.shared.ready() {
        inner.shared.client.flush().await.map_err(unavailable)?;
    }
    let weak = Arc::downgrade(&inner);
    let tasks = vec![
        tokio::spawn(forward_disconnects(weak.clone(), disconnects)),
        tokio::spawn(keep_lease(weak.clone())),
        tokio::spawn(reap(weak)),
    ];
    *inner.tasks.lock().unwrap_or_else(PoisonError::into_inner) = tasks;
    Ok((NatsLink { inner }, rx))
}

impl Drop for LinkInner {
    /// The edge dropped every handle: stop renewing (its members leave when the lease runs
    /// out, removed by another edge) and stop every room task.
    fn drop(&mut self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
        for (_, task) in self.state().rooms.drain() {
            task.abort();
        }
    }
}

impl LinkInner {
    pub(super) fn state(&self) -> MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn check_open(&self) -> Result<(), BrokerError> {
        if self.closed.load(Ordering::Acquire) || self.state().events.is_none() {
            Err(BrokerError::Unavailable("link closed".into()))
        } else {
            Ok(())
        }
    }

    /// Sends an event to the edge; ends the stream if the edge does not keep up.
    pub(super) fn send(&self, event: LinkEvent) {
        send_or_end(&mut self.state().events, event);
    }

    /// Ends the stream (the edge then attaches again, and its clients recover themselves).
    pub(super) fn end(&self, why: &str) {
        tracing::warn!(why, "ending the NATS link");
        let mut state = self.state();
        state.events = None;
        for (_, task) in state.rooms.drain() {
            task.abort();
        }
    }

    pub(super) async fn write_lease(&self) -> Result<u64, BrokerError> {
        let lease = LeaseEntry {
            edge: self.edge.as_str().to_owned(),
            lease_ms: u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX),
            reaped_by: None,
        };
        let value = Bytes::from(serde_json::to_vec(&lease).map_err(unavailable)?);
        self.shared
            .setup()?
            .edges
            .put(&self.edge_token, value)
            .await
            .map_err(unavailable)
    }

    pub(super) fn member_key(&self, subjects: &RoomSubjects, client: &ClientId) -> String {
        format!(
            "{}.{}.{}",
            subjects.presence_prefix,
            self.edge_token,
            token(client.as_str())
        )
    }

    /// The room's latest publication offset (0 if it has none held).
    pub(super) async fn last_offset(&self, room: &RoomName) -> Result<u64, BrokerError> {
        let (ns, subjects, _) = self.shared.room(room)?;
        last_sequence(&ns.stream, &subjects.publications).await
    }
}

pub(super) use super::room_log::{
    header_u64, incomplete, last_sequence, publication, publications_after, stats,
    while_stream_unknown,
};

impl EdgeLink for NatsLink {
    async fn publish(
        &self,
        room: RoomName,
        data: Payload,
        from: Option<Sender>,
        idem: Option<String>,
    ) -> Result<PublishAck, BrokerError> {
        let inner = &self.inner;
        inner.check_open()?;
        // The key goes into a NATS header: a CR/LF would make async-nats panic, so it is
        // checked here too, not only by the edge's decoders.
        if let Some(Err(why)) = idem.as_deref().map(check_idem) {
            return Err(BrokerError::Invalid(format!("room {room}: {why}")));
        }
        let (ns, subjects, _) = inner.shared.room(&room)?;
        let lock = {
            let mut publishing = inner
                .publishing
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            Arc::clone(publishing.entry(room.clone()).or_default())
        };
        let mut known = lock.lock().await;
        if *known == 0 {
            // Unknown (or a new room): ask the stream once; conflicts below refresh it.
            *known = last_sequence(&ns.stream, &subjects.publications).await?;
        }
        let mut unknown_retries = 30;
        for _ in 0..MAX_PUBLISH_ATTEMPTS {
            let mut headers = HeaderMap::new();
            headers.insert(PREV, known.to_string().as_str());
            headers.insert(
                async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                known.to_string().as_str(),
            );
            if let Some(key) = &idem {
                let id = format!("{}/{key}", token(room.as_str()));
                headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
            }
            if let Some(from) = &from {
                let json = serde_json::to_string(from).map_err(unavailable)?;
                headers.insert(FROM, json.as_str());
            }
            let sent = inner
                .shared
                .setup()?
                .js
                .publish_with_headers(subjects.publications.clone(), headers, data.bytes().clone())
                .await
                .map_err(unavailable)?;
            match sent.await {
                Ok(ack) => {
                    if !ack.duplicate {
                        *known = ack.sequence;
                    }
                    return Ok(PublishAck {
                        position: Position {
                            epoch: ns.epoch.clone(),
                            offset: ack.sequence,
                        },
                        duplicate: ack.duplicate,
                    });
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    // Another edge published to the room first: learn its offset, retry.
                    *known = last_sequence(&ns.stream, &subjects.publications).await?;
                }
                // No stream answered (its interest has not reached this server yet on a fresh
                // cluster): nothing was stored, so try again shortly.
                Err(e) if e.kind() == PublishErrorKind::StreamNotFound && unknown_retries > 0 => {
                    unknown_retries -= 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    *known = 0;
                    return Err(unavailable(e));
                }
            }
        }
        Err(BrokerError::Unavailable(format!(
            "room {room}: too many concurrent publishers; retry"
        )))
    }

    async fn join(&self, room: RoomName, member: Member) -> Result<(), BrokerError> {
        let inner = &self.inner;
        inner.check_open()?;
        let (_, subjects, ns) = inner.shared.room(&room)?;
        if ns.presence == PresenceMode::Off {
            return Err(BrokerError::PresenceDisabled {
                namespace: room.namespace().to_owned(),
            });
        }
        let events = ns.presence == PresenceMode::Full && ns.join_leave;
        let key = inner.member_key(&subjects, &member.client);
        let value = Bytes::from(
            serde_json::to_vec(&MemberEntry {
                member: member.clone(),
            })
            .map_err(unavailable)?,
        );
        let store = &inner.shared.setup()?.presence;
        let created = match while_stream_unknown(|| store.create(&key, value.clone())).await {
            Ok(_) => true,
            Err(e) if e.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists => {
                store.put(&key, value).await.map_err(unavailable)?;
                false
            }
            Err(e) => return Err(unavailable(e)),
        };
        inner
            .state()
            .members
            .insert((room.clone(), member.client.clone()), member.clone());
        if created && events {
            presence_event(&inner.shared, &subjects, true, member).await?;
        }
        Ok(())
    }

    async fn leave(&self, room: RoomName, client: ClientId) -> Result<(), BrokerError> {
        let inner = &self.inner;
        inner.check_open()?;
        inner
            .state()
            .members
            .remove(&(room.clone(), client.clone()));
        let (_, subjects, _) = inner.shared.room(&room)?;
        let key = inner.member_key(&subjects, &client);
        remove_member(&inner.shared, &room, &subjects, &key).await
    }

    async fn presence(&self, room: RoomName) -> Result<Vec<Member>, BrokerError> {
        self.inner.check_open()?;
        let (_, subjects, ns) = self.inner.shared.room(&room)?;
        if ns.presence != PresenceMode::Full {
            return Err(BrokerError::PresenceDisabled {
                namespace: room.namespace().to_owned(),
            });
        }
        members(
            &self.inner.shared,
            &format!("{}.*.*", subjects.presence_prefix),
        )
        .await
    }

    async fn presence_stats(&self, room: RoomName) -> Result<PresenceStats, BrokerError> {
        self.inner.check_open()?;
        let (_, subjects, ns) = self.inner.shared.room(&room)?;
        if ns.presence == PresenceMode::Off {
            return Err(BrokerError::PresenceDisabled {
                namespace: room.namespace().to_owned(),
            });
        }
        let all = members(
            &self.inner.shared,
            &format!("{}.*.*", subjects.presence_prefix),
        )
        .await?;
        Ok(stats(&all))
    }

    async fn history(
        &self,
        room: RoomName,
        since: Option<Position>,
        limit: Option<u32>,
    ) -> Result<HistoryPage, BrokerError> {
        let inner = &self.inner;
        inner.check_open()?;
        let (ns, _, options) = inner.shared.room(&room)?;
        let epoch = ns.epoch.clone();
        let limit = limit.map_or(usize::MAX, |l| l as usize);
        let keeps_history = options.history_size > 0;
        match since {
            Some(since) => {
                let latest = inner.last_offset(&room).await?;
                let position = Position {
                    epoch: epoch.clone(),
                    offset: latest,
                };
                if since.epoch != epoch || since.offset > latest {
                    return Ok(incomplete(position));
                }
                let (mut publications, complete, latest) =
                    publications_after(inner, &room, since.offset).await?;
                let position = Position {
                    epoch,
                    offset: latest,
                };
                if !complete || (!keeps_history && !publications.is_empty()) {
                    return Ok(incomplete(position));
                }
                publications.truncate(limit);
                Ok(HistoryPage {
                    position,
                    publications,
                    complete: true,
                })
            }
            None => {
                let (mut publications, _, latest) = publications_after(inner, &room, 0).await?;
                if !keeps_history {
                    publications.clear();
                }
                let skip = publications.len().saturating_sub(limit);
                publications.drain(..skip);
                Ok(HistoryPage {
                    position: Position {
                        epoch,
                        offset: latest,
                    },
                    publications,
                    complete: true,
                })
            }
        }
    }

    async fn subscribe(&self, room: RoomName) -> Result<Position, BrokerError> {
        let inner = &self.inner;
        inner.check_open()?;
        let (ns, subjects, _) = inner.shared.room(&room)?;
        let epoch = ns.epoch.clone();
        if inner.state().rooms.contains_key(&room) {
            let offset = inner.last_offset(&room).await?;
            return Ok(Position { epoch, offset });
        }
        let subscriber = inner
            .shared
            .client
            .subscribe(subjects.live.clone())
            .await
            .map_err(unavailable)?;
        // The server has the subscription once the flush returns: every message it routes
        // from now on reaches us (in a cluster, others learn of it a little later: the room
        // task re-checks the stream).
        inner.shared.client.flush().await.map_err(unavailable)?;
        let offset = inner.last_offset(&room).await?;
        let reconnected = inner.shared.reconnected.subscribe();
        let task = tokio::spawn(follow(
            Arc::downgrade(&self.inner),
            room.clone(),
            epoch.clone(),
            offset,
            subscriber,
            reconnected,
        ));
        let mut state = inner.state();
        if let Some(previous) = state.rooms.insert(room, task) {
            previous.abort();
        }
        Ok(Position { epoch, offset })
    }

    async fn unsubscribe(&self, room: RoomName) -> Result<(), BrokerError> {
        if let Some(task) = self.inner.state().rooms.remove(&room) {
            task.abort();
        }
        Ok(())
    }

    async fn disconnect_user(&self, user: UserId, reason: String) -> Result<(), BrokerError> {
        self.inner.check_open()?;
        let body = serde_json::to_vec(&Disconnect { user, reason }).map_err(unavailable)?;
        let client = &self.inner.shared.client;
        client
            .publish(DISCONNECT_SUBJECT, body.into())
            .await
            .map_err(unavailable)?;
        client.flush().await.map_err(unavailable)
    }

    async fn rooms(&self, after: Option<RoomName>, limit: u32) -> Result<RoomsPage, BrokerError> {
        self.inner.check_open()?;
        rooms_page(&self.inner.shared, after, limit).await
    }

    fn ready(&self) -> bool {
        self.inner.shared.ready() && self.inner.state().events.is_some()
    }

    async fn close(&self) {
        let inner = &self.inner;
        if inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        for task in inner
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
        let members: Vec<(RoomName, ClientId)> =
            inner.state().members.drain().map(|(k, _)| k).collect();
        for (room, client) in members {
            let Ok((_, subjects, _)) = inner.shared.room(&room) else {
                break; // NATS never became usable: the lease will lapse instead
            };
            let key = inner.member_key(&subjects, &client);
            if let Err(e) = remove_member(&inner.shared, &room, &subjects, &key).await {
                tracing::warn!(error = %e, "could not remove a member on detach");
            }
        }
        if let Ok(setup) = inner.shared.setup() {
            let _ = setup.edges.delete(&inner.edge_token).await;
        }
        inner.end("detached");
    }
}
