//! [`NatsLink`]: one edge's attachment to the NATS broker tier.
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

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::context::PublishErrorKind;
use bytes::Bytes;
use futures_util::StreamExt;
use plaza_proto::cluster::{
    BrokerError, HistoryPage, LinkEvent, PresenceStats, PublishAck, RoomEvent, RoomEventKind,
    RoomInfo, RoomsPage,
};
use plaza_proto::{
    ClientId, EdgeId, Member, Payload, Position, Publication, RoomName, Sender, UserId,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use super::names::{self, DISCONNECT_SUBJECT, RoomSubjects, token, untoken};
use super::{Shared, Stored, read_all};
use crate::backend::{AttachOptions, EdgeLink, LinkEvents, send_or_end};
use crate::config::PresenceMode;
use crate::rooms::MAX_IDEM_LEN;

/// Header: the room's previous publication offset (0 for the first).
const PREV: &str = "Plaza-Prev";
/// Header: the publishing client, as JSON.
const FROM: &str = "Plaza-From";
/// Header set by republish: the message's stream sequence.
const SEQUENCE: &str = "Nats-Sequence";
/// How often a publish retries when other edges publish to the same room at the same time.
const MAX_PUBLISH_ATTEMPTS: usize = 64;
/// When a room task re-checks the stream after subscribing (interest may still be on its way
/// to the server that republishes, in a cluster).
const SETTLE_CHECKS: [Duration; 2] = [Duration::from_millis(250), Duration::from_secs(1)];

/// One edge's attachment to NATS. Cheap to clone; the edge counts as alive (its lease is
/// renewed) while a clone exists.
#[derive(Clone)]
pub struct NatsLink {
    inner: Arc<LinkInner>,
}

pub(crate) struct LinkInner {
    shared: Arc<Shared>,
    edge: EdgeId,
    edge_token: String,
    lease: Duration,
    state: Mutex<LinkState>,
    /// The last publication offset this link knows per room, to publish with the right
    /// expectation; the async lock also serializes this edge's publishes per room.
    publishing: Mutex<HashMap<RoomName, Arc<tokio::sync::Mutex<u64>>>>,
    closed: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

struct LinkState {
    events: Option<mpsc::Sender<LinkEvent>>,
    rooms: HashMap<RoomName, JoinHandle<()>>,
    members: HashMap<(RoomName, ClientId), Member>,
}

/// A presence entry's value.
#[derive(Serialize, Deserialize)]
struct MemberEntry {
    member: Member,
}

/// A join/leave event in a room's stream.
#[derive(Serialize, Deserialize)]
struct PresenceEvent {
    join: bool,
    member: Member,
}

/// An edge-lease entry's value.
#[derive(Serialize, Deserialize)]
struct LeaseEntry {
    edge: String,
    lease_ms: u64,
    /// Set while another edge removes this one's members.
    #[serde(default)]
    reaped_by: Option<String>,
}

/// A user-disconnect request.
#[derive(Serialize, Deserialize)]
struct Disconnect {
    user: UserId,
    reason: String,
}

fn unavailable(e: impl std::fmt::Display) -> BrokerError {
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
    if inner.shared.ready() {
        inner.write_lease().await?;
    } // else the lease task writes it once NATS is reachable
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
    fn state(&self) -> MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check_open(&self) -> Result<(), BrokerError> {
        if self.closed.load(Ordering::Acquire) || self.state().events.is_none() {
            Err(BrokerError::Unavailable("link closed".into()))
        } else {
            Ok(())
        }
    }

    /// Sends an event to the edge; ends the stream if the edge does not keep up.
    fn send(&self, event: LinkEvent) {
        send_or_end(&mut self.state().events, event);
    }

    /// Ends the stream (the edge then attaches again, and its clients recover themselves).
    fn end(&self, why: &str) {
        tracing::warn!(why, "ending the NATS link");
        let mut state = self.state();
        state.events = None;
        for (_, task) in state.rooms.drain() {
            task.abort();
        }
    }

    async fn write_lease(&self) -> Result<u64, BrokerError> {
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

    fn member_key(&self, subjects: &RoomSubjects, client: &ClientId) -> String {
        format!(
            "{}.{}.{}",
            subjects.presence_prefix,
            self.edge_token,
            token(client.as_str())
        )
    }

    /// The room's latest publication offset (0 if it has none held).
    async fn last_offset(&self, room: &RoomName) -> Result<u64, BrokerError> {
        let (ns, subjects, _) = self.shared.room(room)?;
        last_sequence(&ns.stream, &subjects.publications).await
    }
}

/// The sequence of the last message on `subject` (0 when there is none).
async fn last_sequence(
    stream: &async_nats::jetstream::stream::Stream,
    subject: &str,
) -> Result<u64, BrokerError> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => Ok(message.sequence),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
        Err(e) => Err(unavailable(e)),
    }
}

fn header_u64(headers: Option<&HeaderMap>, name: &str) -> Option<u64> {
    headers?.get(name)?.as_str().parse().ok()
}

/// A stored or republished publication as a [`Publication`], with its `Plaza-Prev`.
fn publication(
    sequence: u64,
    headers: Option<&HeaderMap>,
    payload: &Bytes,
) -> Option<(u64, Publication)> {
    let prev = header_u64(headers, PREV)?;
    let data = Payload::from_json(std::str::from_utf8(payload).ok()?).ok()?;
    let from = headers
        .and_then(|h| h.get(FROM))
        .and_then(|v| serde_json::from_str::<Sender>(v.as_str()).ok());
    Some((
        prev,
        Publication {
            offset: sequence,
            data,
            from,
        },
    ))
}

/// Reads `room`'s publications after `after`, in order, without those older than the
/// namespace's history TTL: the publications, whether they are complete (the first held one's
/// predecessor is `after` and none after `after` expired, or there are none and `after` is the
/// latest), and the latest offset.
async fn publications_after(
    link: &LinkInner,
    room: &RoomName,
    after: u64,
) -> Result<(Vec<Publication>, bool, u64), BrokerError> {
    let (ns, subjects, options) = link.shared.room(room)?;
    let latest = last_sequence(&ns.stream, &subjects.publications).await?;
    if after >= latest {
        return Ok((Vec::new(), after == latest, latest));
    }
    let stored = read_all(
        &ns.stream,
        subjects.publications.clone(),
        DeliverPolicy::ByStartSequence {
            start_sequence: after + 1,
        },
    )
    .await?;
    let oldest = time_now() - options.history_ttl;
    let mut out = Vec::with_capacity(stored.len());
    let mut complete = false;
    for (i, s) in stored.iter().enumerate() {
        let Some((prev, p)) = publication(s.sequence, s.headers.as_ref(), &s.payload) else {
            continue;
        };
        let expired = s.time < oldest;
        if i == 0 {
            complete = prev == after && !expired;
        }
        if !expired {
            out.push(p);
        }
    }
    Ok((out, complete, latest))
}

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
        if let Some(key) = &idem
            && key.len() > MAX_IDEM_LEN
        {
            return Err(BrokerError::Invalid(format!(
                "room {room}: idempotency key is {} bytes long; at most {MAX_IDEM_LEN} are allowed",
                key.len()
            )));
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
        let created = match store.create(&key, value.clone()).await {
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

fn incomplete(position: Position) -> HistoryPage {
    HistoryPage {
        position,
        publications: Vec::new(),
        complete: false,
    }
}

fn stats(members: &[Member]) -> PresenceStats {
    let users: HashSet<&UserId> = members.iter().map(|m| &m.user).collect();
    PresenceStats {
        clients: members.len() as u64,
        users: users.len() as u64,
    }
}

/// The members whose presence keys match `filter` (a KV key pattern).
async fn members(shared: &Shared, filter: &str) -> Result<Vec<Member>, BrokerError> {
    Ok(presence_entries(shared, filter)
        .await?
        .into_iter()
        .map(|(_, member)| member)
        .collect())
}

/// `(key, member)` of the live presence entries matching `filter`.
async fn presence_entries(
    shared: &Shared,
    filter: &str,
) -> Result<Vec<(String, Member)>, BrokerError> {
    let stored = read_all(
        &shared.setup()?.presence_stream,
        format!("$KV.{}.{filter}", names::PRESENCE_BUCKET),
        DeliverPolicy::LastPerSubject,
    )
    .await?;
    Ok(stored
        .into_iter()
        .filter(|s| !deleted(s))
        .filter_map(|s| {
            let entry: MemberEntry = serde_json::from_slice(&s.payload).ok()?;
            let key = s
                .subject
                .strip_prefix(&format!("$KV.{}.", names::PRESENCE_BUCKET))?
                .to_owned();
            Some((key, entry.member))
        })
        .collect())
}

/// Whether a KV message is a delete or purge marker.
fn deleted(s: &Stored) -> bool {
    s.headers
        .as_ref()
        .and_then(|h| h.get("KV-Operation"))
        .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE")
}

/// Publishes a join or leave event into the room's stream (ordered with its publications).
async fn presence_event(
    shared: &Shared,
    subjects: &RoomSubjects,
    join: bool,
    member: Member,
) -> Result<(), BrokerError> {
    let body = serde_json::to_vec(&PresenceEvent { join, member }).map_err(unavailable)?;
    shared
        .setup()?
        .js
        .publish(subjects.presence_events.clone(), body.into())
        .await
        .map_err(unavailable)?
        .await
        .map_err(unavailable)?;
    Ok(())
}

/// Deletes presence key `key` if present and publishes the member's leave event, once even if
/// several edges try (compare-and-delete on the entry's revision).
async fn remove_member(
    shared: &Shared,
    room: &RoomName,
    subjects: &RoomSubjects,
    key: &str,
) -> Result<(), BrokerError> {
    let Some(entry) = shared
        .setup()?
        .presence
        .entry(key)
        .await
        .map_err(unavailable)?
    else {
        return Ok(());
    };
    if entry.operation != async_nats::jetstream::kv::Operation::Put {
        return Ok(());
    }
    let Ok(value) = serde_json::from_slice::<MemberEntry>(&entry.value) else {
        return Ok(());
    };
    if shared
        .setup()?
        .presence
        .delete_expect_revision(key, Some(entry.revision))
        .await
        .is_err()
    {
        return Ok(()); // someone else removed (or replaced) it first
    }
    let ns = shared.namespaces.of(room);
    if ns.presence == PresenceMode::Full && ns.join_leave {
        presence_event(shared, subjects, false, value.member).await?;
    }
    Ok(())
}

/// A page of active rooms: rooms with held publications (from the streams' subject lists)
/// or members (from the presence bucket).
async fn rooms_page(
    shared: &Shared,
    after: Option<RoomName>,
    limit: u32,
) -> Result<RoomsPage, BrokerError> {
    let mut rooms: std::collections::BTreeMap<String, (u64, u64, HashSet<UserId>)> =
        std::collections::BTreeMap::new();
    for ns in shared.setup()?.streams.values() {
        let stream = ns.stream.clone();
        let filter = format!("plaza.r.{}.*.m", ns.token);
        let info = stream
            .info_with_subjects(filter)
            .await
            .map_err(unavailable)?;
        let subjects: Vec<String> = info
            .map(|s| s.map(|(subject, _)| subject))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(unavailable)?;
        for subject in subjects {
            if let Some(name) = subject.split('.').nth(3).and_then(untoken) {
                rooms.entry(name).or_default();
            }
        }
    }
    for (key, member) in presence_entries(shared, ">").await? {
        if let Some(name) = key.split('.').nth(1).and_then(untoken) {
            let entry = rooms.entry(name).or_default();
            entry.0 += 1;
            entry.2.insert(member.user);
        }
    }
    let start = after.as_ref().map(RoomName::as_str);
    let limit = (limit.max(1)) as usize;
    let mut page = Vec::new();
    let mut remaining = rooms
        .into_iter()
        .filter(|(name, _)| start.is_none_or(|s| name.as_str() > s))
        .filter_map(|(name, v)| RoomName::new(&name).ok().map(|r| (r, v)));
    for (room, (clients, _, users)) in remaining.by_ref().take(limit) {
        let (ns, subjects, options) = shared.room(&room)?;
        let offset = last_sequence(&ns.stream, &subjects.publications).await?;
        let (clients, users) = if options.presence == PresenceMode::Off {
            (0, 0)
        } else {
            (clients, users.len() as u64)
        };
        page.push(RoomInfo {
            room,
            clients,
            users,
            offset,
        });
    }
    let next = if remaining.next().is_some() {
        page.last().map(|r| r.room.clone())
    } else {
        None
    };
    Ok(RoomsPage { rooms: page, next })
}

/// Follows one room: delivers its live events in order, catching up from the stream whenever
/// one was missed.
async fn follow(
    link: Weak<LinkInner>,
    room: RoomName,
    epoch: String,
    mut last: u64,
    mut subscriber: async_nats::Subscriber,
    mut reconnected: broadcast::Receiver<()>,
) {
    let mut checks = SETTLE_CHECKS.iter();
    let mut next_check = checks.next().map(|d| tokio::time::Instant::now() + *d);
    loop {
        let check = async {
            match next_check {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            message = subscriber.next() => {
                let Some(message) = message else { return };
                let Some(inner) = link.upgrade() else { return };
                let sequence = header_u64(message.headers.as_ref(), SEQUENCE).unwrap_or(0);
                if message.subject.ends_with(".p") {
                    if let Ok(event) = serde_json::from_slice::<PresenceEvent>(&message.payload) {
                        let kind = if event.join {
                            RoomEventKind::Join(event.member)
                        } else {
                            RoomEventKind::Leave(event.member)
                        };
                        inner.send(LinkEvent::Room(RoomEvent { room: room.clone(), epoch: epoch.clone(), kind }));
                    }
                    continue;
                }
                let Some((prev, publication)) =
                    publication(sequence, message.headers.as_ref(), &message.payload)
                else {
                    continue;
                };
                if sequence <= last {
                    continue; // delivered already (by a catch-up)
                }
                if prev != last {
                    match catch_up(&inner, &room, &epoch, &mut last).await {
                        CatchUp::Done => {}
                        CatchUp::Ended => return,
                        CatchUp::Failed => {
                            // The stream is unreachable now: deliver nothing past the gap; it
                            // is all in the stream, read by the retry (or the next mismatch).
                            next_check = Some(tokio::time::Instant::now() + CATCH_UP_RETRY);
                            continue;
                        }
                    }
                }
                if sequence > last && prev == last {
                    last = sequence;
                    inner.send(LinkEvent::Room(RoomEvent {
                        room: room.clone(),
                        epoch: epoch.clone(),
                        kind: RoomEventKind::Publication(publication),
                    }));
                }
            }
            _ = reconnected.recv() => {
                let Some(inner) = link.upgrade() else { return };
                match catch_up(&inner, &room, &epoch, &mut last).await {
                    CatchUp::Done => {}
                    CatchUp::Ended => return,
                    CatchUp::Failed => {
                        next_check = Some(tokio::time::Instant::now() + CATCH_UP_RETRY);
                    }
                }
            }
            () = check => {
                next_check = checks.next().map(|d| tokio::time::Instant::now() + *d);
                let Some(inner) = link.upgrade() else { return };
                match catch_up(&inner, &room, &epoch, &mut last).await {
                    CatchUp::Done => {}
                    CatchUp::Ended => return,
                    CatchUp::Failed => {
                        next_check = Some(tokio::time::Instant::now() + CATCH_UP_RETRY);
                    }
                }
            }
        }
    }
}

/// How soon a catch-up that could not reach the stream is tried again.
const CATCH_UP_RETRY: Duration = Duration::from_millis(300);

/// How a catch-up went.
enum CatchUp {
    /// Everything after `last` that the stream holds was delivered.
    Done,
    /// The stream could not be read now; nothing was skipped, try again later.
    Failed,
    /// The missed publications were pruned before they could be read: the link ended.
    Ended,
}

/// Delivers the publications after `last` from the stream, in order. When they can no longer
/// all be read (pruned meanwhile) the link ends, so the edge's clients recover themselves
/// rather than miss them silently.
async fn catch_up(inner: &LinkInner, room: &RoomName, epoch: &str, last: &mut u64) -> CatchUp {
    match publications_after(inner, room, *last).await {
        Ok((publications, complete, _)) => {
            if !publications.is_empty() && !complete {
                inner.end(&format!(
                    "room {room}: publications after offset {last} were pruned before this edge \
                     could read them"
                ));
                return CatchUp::Ended;
            }
            for publication in publications {
                *last = publication.offset;
                inner.send(LinkEvent::Room(RoomEvent {
                    room: room.clone(),
                    epoch: epoch.to_owned(),
                    kind: RoomEventKind::Publication(publication),
                }));
            }
            CatchUp::Done
        }
        Err(e) => {
            tracing::debug!(room = %room, error = %e, "catch-up failed; retrying");
            CatchUp::Failed
        }
    }
}

async fn forward_disconnects(link: Weak<LinkInner>, mut subscriber: async_nats::Subscriber) {
    while let Some(message) = subscriber.next().await {
        let Some(inner) = link.upgrade() else { return };
        if let Ok(d) = serde_json::from_slice::<Disconnect>(&message.payload) {
            inner.send(LinkEvent::DisconnectUser {
                user: d.user,
                reason: d.reason,
            });
        }
    }
}

/// Renews this edge's lease every third of it. If another edge reaped it meanwhile (the lease
/// ran out while NATS was unreachable), the members are gone: write the lease again and
/// re-join them.
async fn keep_lease(link: Weak<LinkInner>) {
    let Some(period) = link
        .upgrade()
        .map(|l| (l.lease / 3).max(Duration::from_millis(50)))
    else {
        return;
    };
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(inner) = link.upgrade() else { return };
        let Ok(setup) = inner.shared.setup() else {
            continue; // not reachable yet
        };
        let reaped = match setup.edges.entry(&inner.edge_token).await {
            Ok(Some(entry)) => {
                entry.operation != async_nats::jetstream::kv::Operation::Put
                    || serde_json::from_slice::<LeaseEntry>(&entry.value)
                        .map_or(true, |l| l.reaped_by.is_some())
            }
            Ok(None) => true,
            Err(_) => continue, // unreachable: try again later
        };
        if let Err(e) = inner.write_lease().await {
            tracing::debug!(error = %e, "lease not renewed");
            continue;
        }
        if reaped {
            tracing::warn!("this edge's lease had run out; re-joining its members");
            let members: Vec<(RoomName, Member)> = inner
                .state()
                .members
                .iter()
                .map(|((room, _), m)| (room.clone(), m.clone()))
                .collect();
            let link = NatsLink {
                inner: Arc::clone(&inner),
            };
            for (room, member) in members {
                let _ = link.join(room, member).await;
            }
        }
    }
}

/// Looks for edges whose lease ran out and removes their members (exactly one live edge wins
/// each dead edge: the claim is a compare-and-set on its lease entry).
async fn reap(link: Weak<LinkInner>) {
    let Some(period) = link.upgrade().map(|l| l.shared.options.reap_every) else {
        return;
    };
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(inner) = link.upgrade() else { return };
        if let Err(e) = reap_once(&inner).await {
            tracing::debug!(error = %e, "lease check failed");
        }
    }
}

async fn reap_once(inner: &LinkInner) -> Result<(), BrokerError> {
    let shared = &inner.shared;
    let leases = read_all(
        &shared.setup()?.edges_stream,
        format!("$KV.{}.>", names::EDGES_BUCKET),
        DeliverPolicy::LastPerSubject,
    )
    .await?;
    let now = time_now();
    for stored in leases.iter().filter(|s| !deleted(s)) {
        let Some(key) = stored
            .subject
            .strip_prefix(&format!("$KV.{}.", names::EDGES_BUCKET))
        else {
            continue;
        };
        if key == inner.edge_token {
            continue;
        }
        let Ok(lease) = serde_json::from_slice::<LeaseEntry>(&stored.payload) else {
            continue;
        };
        let Some(entry) = shared
            .setup()?
            .edges
            .entry(key)
            .await
            .map_err(unavailable)?
        else {
            continue;
        };
        let age = now - entry.created;
        let expired = age.whole_milliseconds() > i128::from(lease.lease_ms);
        let claim_stale = lease.reaped_by.is_some() && age.whole_milliseconds() > 30_000;
        if !expired || (lease.reaped_by.is_some() && !claim_stale) {
            continue;
        }
        let claim = LeaseEntry {
            reaped_by: Some(inner.edge.as_str().to_owned()),
            ..lease
        };
        let value = Bytes::from(serde_json::to_vec(&claim).map_err(unavailable)?);
        if shared
            .setup()?
            .edges
            .update(key, value, entry.revision)
            .await
            .is_err()
        {
            continue; // another edge claimed it, or it renewed just now
        }
        tracing::info!(edge = %claim.edge, "an edge's lease ran out; removing its members");
        for (member_key, _) in presence_entries(shared, &format!("*.*.{key}.*")).await? {
            let mut parts = member_key.split('.');
            let (Some(ns), Some(room)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Some(room) = untoken(room).and_then(|r| RoomName::new(&r).ok()) else {
                continue;
            };
            let subjects = RoomSubjects::new(ns, room.as_str());
            remove_member(shared, &room, &subjects, &member_key).await?;
        }
        let _ = shared.setup()?.edges.delete(key).await;
    }
    Ok(())
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}
