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
//! as latency. Join/leave events that happened while no broker was connected are not replayed;
//! instead every resumed room with presence gets a [`RoomEventKind::PresenceResync`] (its
//! members read after the new subscription, delivered before the join/leave events that
//! follow), so an edge's presence subscribers can replace their lists.
//!
//! [`RoomEventKind::PresenceResync`]: plaza_proto::cluster::RoomEventKind::PresenceResync If a room's history no longer reaches back to
//! the last delivered offset, the link ends its stream instead of hiding the gap, and the edge
//! falls back to reconnecting its clients (who then recover with their own positions).
//!
//! A broker that stops serving — calls unanswered, or answered only "unavailable" because it
//! cannot reach the Raft leader (or leads without a majority) — is left after
//! `reroute_after` (the driver's watchdog), and its calls are retried on the next one.
//!
//! Calls wait for a connection (up to `call_timeout`). A call whose connection is lost before
//! its answer arrives is retried on the next one when repeating it is harmless (reads,
//! subscribe, join, leave, publish with an idempotency key); a publish without a key fails
//! with `Unavailable` instead, because it may have been committed.

mod conn;
mod driver;
mod link;

pub use link::ClusterLink;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plaza_net::tls::{Role, edge_id_for};
use plaza_proto::EdgeId;
use plaza_proto::cluster::{BrokerError, EdgeRequest, PROTOCOL_VERSION};
use quinn::{ClientConfig, Endpoint};
use tokio::sync::{mpsc, watch};

use self::conn::{BrokerConn, DialError, Target};
use self::driver::drive;
use self::link::{LinkInner, LinkState};
use super::{AttachOptions, Backend, LinkEvents};
use plaza_net::framing::FrameReader;
pub use plaza_net::{ClusterTls, QuicOptions, TlsError};
use plaza_proto::links::ALPN_EDGE;

/// How long to wait between rounds of dialling every broker.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// How long after losing a broker (or leaving it for not committing) the link dials only the
/// others; after that it is tried again with them.
const AVOID_LOST_FOR: Duration = Duration::from_secs(3);

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
    /// How long the current broker may fail to serve — calls unanswered, or answered only
    /// "unavailable" (it cannot reach the leader, or leads without a majority) — before the
    /// link re-attaches to another broker. Well under a second, so a client barely notices a
    /// broker that cannot commit; longer than a commit takes under load, so edges do not
    /// wander on a busy but healthy cluster.
    pub reroute_after: Duration,
    /// QUIC timeouts; the idle timeout is how long a silently dead broker goes unnoticed
    /// when no call is waiting (a waiting call notices within `reroute_after`).
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
            reroute_after: Duration::from_millis(600),
            // A dead broker must be noticed fast: its edges' clients wait for the failover.
            // Keep-alives every 200 ms keep a healthy idle link well inside the 1 s timeout.
            quic: QuicOptions {
                idle_timeout: Duration::from_millis(1000),
                keep_alive: Duration::from_millis(200),
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
    /// The name in the edge certificate: every edge id this backend attaches with is under it.
    name: String,
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
    /// cluster CA; brokers are verified against the same CA). The certificate must be an edge
    /// certificate (`plaza-edge:<name>`): brokers accept nothing else on `plaza-edge/1`.
    pub fn new(tls: &ClusterTls, options: ClusterOptions) -> Result<Self, ClusterError> {
        if options.brokers.is_empty() {
            return Err(ClusterError::NoBrokers);
        }
        let name = match tls.role() {
            Ok(Role::Edge(name)) => name,
            Ok(role) => {
                return Err(ClusterError::Tls(TlsError::Config(format!(
                    "the edge's certificate is the certificate of {role}; brokers only attach \
                     edge certificates (`plaza-broker cert --edges NAME`)"
                ))));
            }
            Err(e) => return Err(ClusterError::Tls(TlsError::Config(e.to_string()))),
        };
        let mut client = ClientConfig::new(Arc::new(tls.client_config(&[ALPN_EDGE])?));
        client.transport_config(options.quic.transport_config());
        let endpoint = Endpoint::client((std::net::Ipv6Addr::UNSPECIFIED, 0).into())
            .or_else(|_| Endpoint::client((std::net::Ipv4Addr::UNSPECIFIED, 0).into()))?;
        Ok(Self {
            inner: Arc::new(BackendInner {
                endpoint,
                client,
                options,
                name,
            }),
        })
    }

    /// Dials the brokers in turn from a random start until one welcomes `hello`; `avoid` (the
    /// broker just lost) is skipped while there are others: a dead broker behind a network
    /// often does not refuse a dial, it lets it run into `connect_timeout`, which would add a
    /// second to every round of a failover. Each configured name is resolved on every round, and a
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
            && targets.len() > 1
        {
            targets.retain(|t| t.label != avoid);
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
        // Brokers only accept edge ids under the certificate's name: `<name>/<edge id>`.
        let edge = EdgeId::new(edge_id_for(&self.inner.name, options.edge.as_str()));
        let hello = EdgeRequest::Hello {
            version: PROTOCOL_VERSION,
            edge: edge.clone(),
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
        tracing::info!(broker = session.broker(), %edge, "attached to the broker tier");
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
