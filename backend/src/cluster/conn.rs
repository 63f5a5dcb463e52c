//! One QUIC session from an edge to one broker: dial, hello, a writer task, a reader task, and
//! calls matched to their results by request id.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use plaza_proto::RoomName;
use plaza_proto::cluster::{BrokerError, BrokerEvent, Call, CallOk, EdgeRequest, PROTOCOL_VERSION};
use quinn::{ClientConfig, Connection, Endpoint};
use tokio::sync::{mpsc, oneshot};

use plaza_net::dial::server_name;
use plaza_net::framing::{FrameReader, write_frames, write_one};

/// Requests queued for the writer.
const OUTGOING_QUEUE: usize = 4096;

/// Why a dial failed.
#[derive(Debug)]
pub(super) enum DialError {
    /// This broker cannot serve now; another may.
    Unavailable(String),
    /// The broker speaks another protocol version: no broker of this release will do.
    Incompatible(String),
}

/// A call waiting for its result.
pub(super) struct Pending {
    pub reply: oneshot::Sender<Result<CallOk, BrokerError>>,
    /// For a subscribe: its room, which the reader starts tracking as soon as the result
    /// arrives (before the room's first event, which follows it on the stream).
    pub subscribe: Option<RoomName>,
    /// When the call was sent: a call unanswered for long means the broker is silent.
    pub sent: Instant,
}

/// A live session with one broker. Cloning shares it.
#[derive(Clone)]
pub(super) struct BrokerConn {
    inner: Arc<BrokerConnInner>,
}

struct BrokerConnInner {
    conn: Connection,
    broker: String,
    requests: mpsc::Sender<EdgeRequest>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_req: AtomicU64,
    /// Since when every answer has been "unavailable" (the broker cannot commit); `None` once
    /// a call succeeds.
    refusing_since: Mutex<Option<Instant>>,
}

impl BrokerConn {
    /// Dials `broker`, says hello as `edge` with `lease_ms`, and waits for the welcome. The
    /// session's frames are then read by the caller's [`BrokerConn::read_loop`].
    pub(super) async fn dial(
        endpoint: &Endpoint,
        client: &ClientConfig,
        target: &Target,
        hello: EdgeRequest,
        timeout: Duration,
    ) -> Result<(Self, FrameReader), DialError> {
        let broker = target.label.as_str();
        let unavailable = |what: String| DialError::Unavailable(format!("broker {broker}: {what}"));
        let dial = async {
            let connecting = endpoint
                .connect_with(client.clone(), target.addr, server_name(&target.name))
                .map_err(|e| unavailable(e.to_string()))?;
            let conn = connecting.await.map_err(|e| unavailable(e.to_string()))?;
            let (mut send, recv) = conn
                .open_bi()
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            write_one(&mut send, &hello)
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            let mut reader = FrameReader::new(recv);
            match reader.next::<BrokerEvent>().await {
                Ok(Some(BrokerEvent::Welcome { .. })) => Ok((conn, send, reader)),
                Ok(Some(BrokerEvent::Incompatible { supported })) => {
                    Err(DialError::Incompatible(format!(
                        "broker {broker} speaks edge protocol {supported}, this edge \
                         {PROTOCOL_VERSION}: run the same release on edges and brokers"
                    )))
                }
                Ok(Some(_)) => Err(unavailable("answered hello with another frame".into())),
                Ok(None) | Err(_) => Err(unavailable(match conn.close_reason() {
                    Some(reason) => format!("refused: {reason}"),
                    None => "closed during hello".into(),
                })),
            }
        };
        let (conn, send, reader) = tokio::time::timeout(timeout, dial)
            .await
            .map_err(|_| unavailable(format!("no welcome within {timeout:?}")))??;
        let (tx, rx) = mpsc::channel(OUTGOING_QUEUE);
        tokio::spawn(write_frames(send, rx));
        let session = Self {
            inner: Arc::new(BrokerConnInner {
                conn,
                broker: broker.to_owned(),
                requests: tx,
                pending: Mutex::new(HashMap::new()),
                next_req: AtomicU64::new(1),
                refusing_since: Mutex::new(None),
            }),
        };
        Ok((session, reader))
    }

    fn pending(&self) -> MutexGuard<'_, HashMap<u64, Pending>> {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The broker's address.
    pub(super) fn broker(&self) -> &str {
        &self.inner.broker
    }

    /// Whether the connection is still up.
    pub(super) fn alive(&self) -> bool {
        self.inner.conn.close_reason().is_none()
    }

    /// Sends `call` and waits for its result. `Err(Lost)` means the session was lost before
    /// the result arrived (see [`Lost::sent`]).
    pub(super) async fn call(&self, call: Call) -> Result<Result<CallOk, BrokerError>, Lost> {
        let req = self.inner.next_req.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        let subscribe = match &call {
            Call::Subscribe { room } => Some(room.clone()),
            _ => None,
        };
        self.pending().insert(
            req,
            Pending {
                reply,
                subscribe,
                sent: Instant::now(),
            },
        );
        if self
            .inner
            .requests
            .send(EdgeRequest::Call { req, call })
            .await
            .is_err()
        {
            self.pending().remove(&req);
            return Err(Lost { sent: false });
        }
        rx.await.map_err(|_| Lost { sent: true })
    }

    /// Sends a frame that has no answer (keep-alive, detach).
    pub(super) async fn notify(&self, frame: EdgeRequest) -> bool {
        self.inner.requests.send(frame).await.is_ok()
    }

    /// Takes the pending call `req` (its result arrived).
    pub(super) fn take_pending(&self, req: u64) -> Option<Pending> {
        self.pending().remove(&req)
    }

    /// Notes a call's result: an "unavailable" answer starts (or continues) a stretch of
    /// refusals, anything else ends it.
    pub(super) fn note_result(&self, result: &Result<CallOk, BrokerError>) {
        let mut since = self
            .inner
            .refusing_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match result {
            Err(BrokerError::Unavailable(_)) => {
                since.get_or_insert_with(Instant::now);
            }
            _ => *since = None,
        }
    }

    /// How long this broker has failed to serve: the longer of the oldest unanswered call's
    /// age and the current stretch of "unavailable" answers.
    pub(super) fn stuck_for(&self) -> Duration {
        let oldest = self
            .pending()
            .values()
            .map(|p| p.sent.elapsed())
            .max()
            .unwrap_or_default();
        let refusing = self
            .inner
            .refusing_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map(|t| t.elapsed())
            .unwrap_or_default();
        oldest.max(refusing)
    }

    /// Closes the connection and fails every pending call.
    pub(super) fn close(&self, why: &str) {
        self.inner
            .conn
            .close(quinn::VarInt::from_u32(0), why.as_bytes());
        self.pending().clear();
    }

    /// Waits until the connection is closed (by either side or by idle timeout).
    pub(super) async fn closed(&self) -> quinn::ConnectionError {
        self.inner.conn.closed().await
    }
}

/// One broker address to dial: a configured `host:port` may resolve to several (a DNS name
/// over all brokers, such as a headless service).
#[derive(Debug, Clone)]
pub(super) struct Target {
    /// The configured entry (its host is the TLS name checked against the certificate).
    pub name: String,
    /// One address it resolved to.
    pub addr: SocketAddr,
    /// `name` plus the address when they differ, for logs.
    pub label: String,
}

impl Target {
    /// Every address `name` resolves to (an unresolvable name yields none).
    pub(super) async fn resolve_all(name: &str) -> Result<Vec<Self>, String> {
        let addrs = tokio::net::lookup_host(name)
            .await
            .map_err(|e| format!("{name}: cannot resolve: {e}"))?;
        Ok(addrs
            .map(|addr| Self {
                name: name.to_owned(),
                addr,
                label: if addr.to_string() == name {
                    name.to_owned()
                } else {
                    format!("{name} ({addr})")
                },
            })
            .collect())
    }
}

/// A call whose session was lost before its result arrived.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lost {
    /// Whether the call had been handed to the connection (and so may have taken effect).
    pub sent: bool,
}
