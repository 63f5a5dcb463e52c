//! The broker's side of the edge protocol (ALPN `plaza-edge/1`): edges attach here, send
//! calls, and receive their rooms' events from this broker's applied state.
//!
//! ```text
//!   edge ══QUIC══▶ one bidi stream: Hello ─▶ AttachEdge committed ─▶ Welcome
//!     Call{req} ─▶ task ─▶ RaftNode::write (forwarded to the leader if needed) / local read ─┐
//!     KeepAlive ─▶ last_seen            renewer (every `renew_every`): RenewEdge for live edges
//!   edge ◀══ writer task ◀── attachment queue ◀── Result{req} ◀─────────────────────────────┘
//!                                          ◀── Room events (router.rs) / DisconnectUser
//! ```
//!
//! - Writes (publish, join, leave, attach/renew/detach) go through [`RaftNode::write`]: proposed
//!   on the leader, forwarded by a follower, answered after commit *and* local apply, so the
//!   edge's next read on this broker sees them.
//! - Reads (history, presence, counts, room list) wait for a read index from the leader
//!   ([`RaftNode::read_barrier`]) and then read the local state: linearizable, whichever
//!   broker the edge is attached to. Concurrent reads share one barrier (`reads.rs`), so a
//!   read flood costs quorum rounds at the round-trip rate, not the read rate.
//! - An attachment ends when the edge detaches (its members leave now), when the connection is
//!   lost (its members stay until the lease lapses, so the edge can resume on another broker),
//!   or when the router cuts it (the edge resumes).
//! - Bad input: a first frame that is not `Hello` or an unknown version closes the connection
//!   with a code naming the problem; undecodable frames close it with [`CLOSE_PROTOCOL`];
//!   `unsubscribe` from a room the attachment never subscribed to gets an `Invalid` error reply;
//!   `leave` removes only the edge's own members (others are ignored, as unknown ones are).

mod ephemeral;
mod reads;
mod router;

use std::sync::Arc;
use std::time::{Duration, Instant};

use plaza_proto::cluster::{
    BrokerError, BrokerEvent, Call, CallOk, EdgeRequest, Ephemeral, LinkEvent, answer_hello,
};
use plaza_proto::{EdgeId, RoomName};
use quinn::Connection;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use ephemeral::Relay;
use reads::ReadBarriers;
use router::{AttachmentId, Registered};
pub use router::{
    CLOSE_LEASE_EXPIRED, CLOSE_PROTOCOL, CLOSE_RESUME, CLOSE_UNAVAILABLE, CLOSE_VERSION, Router,
};

use crate::metrics as m;
use crate::raft::{RaftNode, RaftRpc, ReadError};
use plaza_net::framing::{FrameReader, write_encoded, write_one};
use plaza_net::tls::edge_id_belongs;
use plaza_rooms::config::duration;
use plaza_rooms::{Applied, Command, RoomsError};

/// The `[edges]` settings of a broker; every default is here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeOptions {
    /// Events and replies queued for one edge; an edge whose queue overflows is cut and
    /// resumes from its last offsets.
    pub event_queue: usize,
    /// Calls one edge may have in progress; further calls wait (backpressure on the edge).
    pub max_inflight_calls: usize,
    /// How long a new connection may take to say hello.
    #[serde(with = "duration")]
    pub hello_timeout: Duration,
    /// Shortest lease an edge may ask for.
    #[serde(with = "duration")]
    pub min_lease: Duration,
    /// Longest lease an edge may ask for.
    #[serde(with = "duration")]
    pub max_lease: Duration,
    /// How often live edges' leases are renewed (one Raft entry for all of them). Keep it
    /// well under the shortest lease in use.
    #[serde(with = "duration")]
    pub renew_every: Duration,
}

impl Default for EdgeOptions {
    fn default() -> Self {
        Self {
            event_queue: 65_536,
            max_inflight_calls: 1024,
            hello_timeout: Duration::from_secs(5),
            min_lease: Duration::from_millis(500),
            max_lease: Duration::from_secs(600),
            renew_every: Duration::from_millis(250),
        }
    }
}

/// Serves edges on one broker. Cheap to clone.
#[derive(Clone)]
pub struct EdgeService {
    inner: Arc<Inner>,
}

struct Inner {
    node: RaftNode,
    router: Router,
    options: EdgeOptions,
    reads: ReadBarriers,
    /// Ephemeral publications to this broker's edges and the other brokers (`ephemeral.rs`).
    relay: Relay,
}

impl EdgeService {
    /// Serves edges from `node`'s applied state. Spawns the routing and lease-renewal tasks,
    /// which end with `cancel` (or when the node stops).
    pub fn start(node: RaftNode, options: EdgeOptions, cancel: CancellationToken) -> Self {
        let applied = node.subscribe();
        let service = Self {
            inner: Arc::new(Inner {
                relay: Relay::new(node.clone(), cancel.clone()),
                node,
                router: Router::default(),
                reads: ReadBarriers::default(),
                options,
            }),
        };
        let routing = service.clone();
        let stop = cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = routing.inner.router.run(applied) => {}
                () = stop.cancelled() => {}
            }
        });
        let renewing = service.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = renewing.renew_leases() => {}
                () = cancel.cancelled() => {}
            }
        });
        service
    }

    /// Queues `event` to every edge attached here; returns how many got it.
    pub fn broadcast(&self, event: &LinkEvent) -> usize {
        self.inner.router.broadcast(event)
    }

    /// Queues ephemeral publications relayed by another broker to the edges attached here and
    /// subscribed to their rooms, in order; returns how many deliveries were queued.
    pub fn relayed(&self, batch: &[Ephemeral]) -> usize {
        metrics::counter!(m::EPHEMERAL_ROUTED, "source" => "peer").increment(batch.len() as u64);
        self.inner.router.route_ephemeral(batch)
    }

    /// Serves one edge connection, whose certificate is edge `name`'s, until it ends or
    /// `cancel` fires.
    pub async fn serve(&self, conn: Connection, name: String, cancel: CancellationToken) {
        let remote = conn.remote_address();
        tokio::select! {
            () = self.attachment(conn.clone(), &name) => {}
            () = cancel.cancelled() => {
                conn.close(CLOSE_UNAVAILABLE, b"broker shutting down");
            }
        }
        tracing::debug!(%remote, "edge attachment ended");
    }

    async fn attachment(&self, conn: Connection, name: &str) {
        let options = &self.inner.options;
        let stream = tokio::time::timeout(options.hello_timeout, conn.accept_bi()).await;
        let Ok(Ok((mut send, recv))) = stream else {
            refuse(
                &conn,
                CLOSE_PROTOCOL,
                "protocol",
                "no attachment stream opened in time",
            );
            return;
        };
        let mut reader = FrameReader::new(recv);
        let hello = tokio::time::timeout(options.hello_timeout, reader.next::<EdgeRequest>()).await;
        let (version, edge, lease_ms) = match hello {
            Ok(Ok(Some(EdgeRequest::Hello {
                version,
                edge,
                lease_ms,
            }))) => (version, edge, lease_ms),
            Ok(Ok(Some(_))) => {
                return refuse(
                    &conn,
                    CLOSE_PROTOCOL,
                    "protocol",
                    "the first frame must be Hello",
                );
            }
            Ok(Err(e)) => return refuse(&conn, CLOSE_PROTOCOL, "protocol", &e.to_string()),
            Ok(Ok(None)) | Err(_) => {
                return refuse(&conn, CLOSE_PROTOCOL, "protocol", "no Hello in time");
            }
        };
        if !edge_id_belongs(name, edge.as_str()) {
            // Attaching as another edge would take over its lease and let a `Detach` remove its
            // members: an edge certificate only ever speaks for its own edge ids.
            let why = format!(
                "edge id {:?} does not belong to the certificate of edge {name:?} (use {name:?} \
                 or \"{name}/...\")",
                edge.as_str().chars().take(64).collect::<String>()
            );
            return crate::server::refuse_identity(&conn, "edge", "edge_id", &why);
        }
        let answer = answer_hello(version);
        if let BrokerEvent::Incompatible { supported } = answer {
            // Say which version is spoken before closing, so the edge can report it.
            let _ = write_one(&mut send, &answer).await;
            let _ = send.finish();
            let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
            let why = format!("edge protocol {version} is not spoken here (only {supported})");
            return refuse(&conn, CLOSE_VERSION, "version", &why);
        }
        let lease = Duration::from_millis(lease_ms);
        if lease < options.min_lease || lease > options.max_lease {
            let why = format!(
                "lease of {lease:?} is outside {:?}..={:?}",
                options.min_lease, options.max_lease
            );
            return refuse(&conn, CLOSE_PROTOCOL, "lease", &why);
        }
        let attach = Command::AttachEdge {
            edge: edge.clone(),
            lease_ms,
        };
        if let Err(e) = self.write_one(attach).await {
            tracing::info!(%edge, error = %e, "cannot attach an edge now");
            conn.close(CLOSE_UNAVAILABLE, e.to_string().as_bytes());
            return;
        }
        if write_one(&mut send, &answer).await.is_err() {
            return;
        }
        tracing::info!(%edge, remote = %conn.remote_address(), "edge attached");
        let (tx, rx) = mpsc::channel(options.event_queue.max(1));
        let id = self
            .inner
            .router
            .add(edge.clone(), tx.clone(), conn.clone());
        let writer = tokio::spawn(write_encoded(send, rx));
        let detached = self.read_calls(id, &edge, &conn, reader, tx).await;
        self.inner.router.remove(id);
        if detached {
            let _ = self
                .write_one(Command::DetachEdge { edge: edge.clone() })
                .await;
            tracing::info!(%edge, "edge detached");
            // Let the queued replies go out before the connection closes.
            let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
            conn.close(quinn::VarInt::from_u32(0), b"detached");
        } else {
            writer.abort();
        }
    }

    /// Reads the edge's frames until it detaches (true) or the attachment ends otherwise.
    async fn read_calls(
        &self,
        id: AttachmentId,
        edge: &EdgeId,
        conn: &Connection,
        mut reader: FrameReader,
        tx: mpsc::Sender<bytes::Bytes>,
    ) -> bool {
        let limit = Arc::new(Semaphore::new(self.inner.options.max_inflight_calls.max(1)));
        let calls = TaskTracker::new();
        let detached = loop {
            let frame = match reader.next::<EdgeRequest>().await {
                Ok(Some(frame)) => frame,
                Ok(None) => break false,
                Err(plaza_net::frame::FrameError::Stream(_)) => break false,
                Err(e) => {
                    refuse(conn, CLOSE_PROTOCOL, "protocol", &e.to_string());
                    break false;
                }
            };
            self.inner.router.seen(id);
            match frame {
                EdgeRequest::KeepAlive => {}
                EdgeRequest::Detach => break true,
                EdgeRequest::Hello { .. } => {
                    refuse(conn, CLOSE_PROTOCOL, "protocol", "Hello sent twice");
                    break false;
                }
                EdgeRequest::Call {
                    req,
                    call: Call::PublishEphemeral(ephemeral),
                } => {
                    // Inline, not in a call task: the edge's order is the publisher's order.
                    self.inner.relay.publish(&self.inner.router, ephemeral);
                    metrics::counter!(m::EDGE_CALLS, "call" => "publish_ephemeral", "result" => "ok")
                        .increment(1);
                    let result = Ok(CallOk::Done);
                    if let Some(frame) = router::encode(&BrokerEvent::Result { req, result }) {
                        let _ = tx.send(frame).await;
                    }
                }
                EdgeRequest::Call { req, call } => {
                    let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
                        break false;
                    };
                    let service = self.clone();
                    let (edge, tx) = (edge.clone(), tx.clone());
                    calls.spawn(async move {
                        let name = call_name(&call);
                        let started = Instant::now();
                        let Some(result) = service.call(id, &edge, req, call).await else {
                            return; // already queued (subscribe)
                        };
                        let outcome = if result.is_ok() { "ok" } else { "error" };
                        metrics::counter!(m::EDGE_CALLS, "call" => name, "result" => outcome)
                            .increment(1);
                        metrics::histogram!(m::EDGE_CALL_SECONDS, "call" => name)
                            .record(started.elapsed().as_secs_f64());
                        let frame =
                            router::encode(&BrokerEvent::Result { req, result }).or_else(|| {
                                // Too large to send (e.g. a huge member list): say so.
                                let result = Err(BrokerError::Unavailable(
                                    "the answer is larger than a frame may be".into(),
                                ));
                                router::encode(&BrokerEvent::Result { req, result })
                            });
                        if let Some(frame) = frame {
                            let _ = tx.send(frame).await;
                        }
                        drop(permit);
                    });
                }
            }
        };
        calls.close();
        if detached {
            calls.wait().await;
        }
        detached
    }

    /// Answers one call; `None` when the answer was queued already (subscribe, whose reply
    /// must precede the room's events).
    async fn call(
        &self,
        id: AttachmentId,
        edge: &EdgeId,
        req: u64,
        call: Call,
    ) -> Option<Result<CallOk, BrokerError>> {
        let node = &self.inner.node;
        let router = &self.inner.router;
        Some(match call {
            Call::Publish {
                room,
                data,
                from,
                idem,
            } => match self
                .write_one(Command::Publish {
                    room,
                    data,
                    from,
                    idem,
                })
                .await
            {
                Ok(Applied::Published(ack)) => Ok(CallOk::Published(ack)),
                Ok(_) => Err(BrokerError::Unavailable("publish not stored".into())),
                Err(e) => Err(e),
            },
            Call::Join { room, member } => {
                let join = Command::Join {
                    edge: edge.clone(),
                    room,
                    member,
                };
                self.write_one(join).await.map(|_| CallOk::Done)
            }
            Call::Leave { room, client } => {
                // Only this edge's own members leave; others' are ignored.
                let leave = Command::LeaveOwned {
                    edge: edge.clone(),
                    room,
                    client,
                };
                self.write_one(leave).await.map(|_| CallOk::Done)
            }
            Call::Subscribe { room } => {
                let registered = router.subscribe(
                    id,
                    &room,
                    || {
                        node.read_at(|rooms| rooms.position(&room)).map_err(|e| {
                            BrokerEvent::Result {
                                req,
                                result: Err(read_error(e)),
                            }
                        })
                    },
                    |position| BrokerEvent::Result {
                        req,
                        result: Ok(CallOk::Subscribed(position)),
                    },
                );
                if let Registered::Gone = registered {
                    tracing::debug!(%edge, "subscribe on an attachment that is gone");
                }
                return None;
            }
            Call::Unsubscribe { room } => {
                if !router.subscribed(id, &room) {
                    return Some(Err(undeclared(&room)));
                }
                router.unsubscribe(id, &room);
                Ok(CallOk::Done)
            }
            Call::History { room, since, limit } => self
                .read(|n| n.history(&room, since, limit))
                .await
                .map(CallOk::History),
            Call::Presence { room, after, limit } => self
                .read(|n| n.presence(&room, after.as_ref(), limit))
                .await
                .map(CallOk::Presence),
            Call::PresenceStats { room } => self
                .read(|n| n.presence_stats(&room))
                .await
                .map(CallOk::PresenceStats),
            Call::Rooms { after, limit } => self
                .read(|n| n.rooms(after.as_ref(), limit))
                .await
                .map(CallOk::Rooms),
            Call::Events {
                since,
                limit,
                filter,
            } => self
                .read(|n| n.events(since.as_ref(), limit, &filter))
                .await
                .map(CallOk::Events),
            Call::ClaimWebhooks { lease_ms } => {
                let claim = Command::ClaimWebhooks {
                    edge: edge.clone(),
                    lease_ms,
                };
                match self.write_one(claim).await {
                    Ok(Applied::WebhookClaim(claim)) => Ok(CallOk::WebhookClaim(claim)),
                    Ok(_) => Err(BrokerError::Unavailable("claim not answered".into())),
                    Err(e) => Err(e),
                }
            }
            Call::AckWebhooks { endpoint, through } => {
                let ack = Command::AckWebhooks {
                    edge: edge.clone(),
                    endpoint,
                    through,
                };
                self.write_one(ack).await.map(|_| CallOk::Done)
            }
            Call::DisconnectUser { user, reason } => {
                let event = LinkEvent::DisconnectUser { user, reason };
                self.broadcast_everywhere(event).await;
                Ok(CallOk::Done)
            }
            Call::PublishEphemeral(ephemeral) => {
                // Normally handled inline by `read_calls`; the same here.
                self.inner.relay.publish(router, ephemeral);
                Ok(CallOk::Done)
            }
            Call::StateWrite { room, write } => {
                let write = Command::StateWrite {
                    edge: edge.clone(),
                    room,
                    write,
                };
                match self.write_one(write).await {
                    Ok(Applied::StateWritten(ack)) => Ok(CallOk::StateWritten(ack)),
                    Ok(_) => Err(BrokerError::Unavailable("state write not answered".into())),
                    Err(e) => Err(e),
                }
            }
            Call::StateRead { room } => self
                .read(|n| n.state_snapshot(&room))
                .await
                .map(CallOk::State),
        })
    }

    /// Commits one command through the leader.
    async fn write_one(&self, command: Command) -> Result<Applied, BrokerError> {
        let mut results = self.inner.node.write(vec![command]).await?;
        match results.pop() {
            Some(result) => result.map_err(BrokerError::from),
            None => Err(BrokerError::Unavailable("no result for the command".into())),
        }
    }

    /// A linearizable read of the local state.
    async fn read<T>(
        &self,
        f: impl FnOnce(&RaftNode) -> Result<T, ReadError>,
    ) -> Result<T, BrokerError> {
        self.inner.reads.barrier(&self.inner.node).await?;
        f(&self.inner.node).map_err(read_error)
    }

    /// Delivers `event` to the edges of this broker and of every other member.
    async fn broadcast_everywhere(&self, event: LinkEvent) {
        self.broadcast(&event);
        let failed = self
            .inner
            .node
            .call_peers(|| RaftRpc::Broadcast(event.clone()), Duration::from_secs(2))
            .await;
        for (peer, e) in failed {
            tracing::warn!(peer, error = %e, "broadcast did not reach a broker");
        }
    }

    /// Renews the leases of the edges attached here and heard from recently, every
    /// `renew_every`, in one Raft entry. An edge whose lease already ran out is told so (its
    /// connection closes with [`CLOSE_LEASE_EXPIRED`]) and attaches again.
    async fn renew_leases(&self) {
        let mut interval = tokio::time::interval(self.inner.options.renew_every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut previous = Instant::now();
        loop {
            interval.tick().await;
            let round = Instant::now();
            let live = self.inner.router.live_edges(previous);
            previous = round;
            if live.is_empty() {
                continue;
            }
            let commands = live
                .iter()
                .map(|(_, edge)| Command::RenewEdge { edge: edge.clone() })
                .collect();
            let results = match self.inner.node.write(commands).await {
                Ok(results) => results,
                Err(e) => {
                    tracing::debug!(error = %e, "lease renewal not committed");
                    continue;
                }
            };
            metrics::counter!(m::LEASE_RENEWALS).increment(live.len() as u64);
            for ((id, edge), result) in live.into_iter().zip(results) {
                if let Err(RoomsError::LeaseExpired { .. }) = result {
                    tracing::warn!(%edge, "edge lease ran out; it must attach again");
                    self.inner
                        .router
                        .close(id, CLOSE_LEASE_EXPIRED, "lease expired");
                }
            }
        }
    }
}

fn refuse(conn: &Connection, code: quinn::VarInt, reason: &'static str, why: &str) {
    tracing::info!(remote = %conn.remote_address(), reason, why, "refused an edge");
    metrics::counter!(m::EDGE_REFUSED, "reason" => reason).increment(1);
    conn.close(code, why.as_bytes());
}

fn undeclared(room: &RoomName) -> BrokerError {
    metrics::counter!(m::EDGE_REFUSED, "reason" => "undeclared_room").increment(1);
    BrokerError::Invalid(format!(
        "unsubscribe from room {room}, which this edge never subscribed to on this connection"
    ))
}

fn read_error(e: ReadError) -> BrokerError {
    match e {
        ReadError::NotReady => BrokerError::Unavailable("the cluster is starting up".into()),
        ReadError::Rooms(e) => e.into(),
    }
}

fn call_name(call: &Call) -> &'static str {
    match call {
        Call::Publish { .. } => "publish",
        Call::Join { .. } => "join",
        Call::Leave { .. } => "leave",
        Call::Presence { .. } => "presence",
        Call::PresenceStats { .. } => "presence_stats",
        Call::History { .. } => "history",
        Call::Subscribe { .. } => "subscribe",
        Call::Unsubscribe { .. } => "unsubscribe",
        Call::DisconnectUser { .. } => "disconnect_user",
        Call::Rooms { .. } => "rooms",
        Call::Events { .. } => "events",
        Call::ClaimWebhooks { .. } => "claim_webhooks",
        Call::AckWebhooks { .. } => "ack_webhooks",
        Call::PublishEphemeral(_) => "publish_ephemeral",
        Call::StateWrite { .. } => "state_write",
        Call::StateRead { .. } => "state_read",
    }
}
