//! [`NatsBackend`]: the broker tier as an existing NATS JetStream cluster — no `plaza-broker`
//! process. Names and layout: [`names`]; the per-edge link: [`link`].
//!
//! ```text
//!   publish ─▶ JetStream (expected last subject sequence = previous offset) ─▶ stream per ns
//!                   │ republish (stream order, with Nats-Sequence)          (history limits)
//!                   ▼
//!   plaza.l.<ns>.<room>.> ─▶ core NATS ─▶ only edges with local subscribers ─▶ LinkEvents
//!   presence ─▶ KV PLAZA_PRESENCE (+ join/leave events in the room's stream)
//!   leases   ─▶ KV PLAZA_EDGES (renewed by each edge; expired ones reaped by any live edge)
//!   events   ─▶ one deriver (KV lease) follows PLAZA_PRESENCE ─▶ stream PLAZA_EVENTS (the feed)
//!   state    ─▶ a state room's changes on one subject per key (last per key = the map)
//! ```
//!
//! **Offsets** are JetStream stream sequences: one sequence per namespace stream, so a room's
//! offsets strictly increase (not contiguously). The **epoch** is the stream's name and
//! creation time: a deleted and recreated stream restarts its sequence and gets a new epoch.
//! Every publication carries its room's previous offset (`Plaza-Prev`), enforced by publishing
//! with `Nats-Expected-Last-Subject-Sequence`, so the publications of a room form a chain:
//! history reads know whether anything after a position was pruned, and live delivery detects
//! a missed message and catches up from the stream.

mod derive;
mod deriver;
mod ephemeral;
mod events;
mod leases;
pub mod link;
mod live;
pub mod names;
mod presence;
mod publish;
mod read;
mod room_log;
mod state;
mod state_keys;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use plaza_proto::RoomName;
use plaza_proto::cluster::BrokerError;
use tokio::sync::broadcast;

pub use link::NatsLink;
use names::{EDGES_BUCKET, PRESENCE_BUCKET, RoomSubjects, ns_token, stream_name};
pub(crate) use read::{Stored, read_all, read_some};

use super::{AttachOptions, Backend, LinkEvents};
use plaza_rooms::config::{NamespaceOptions, Namespaces, RoomsConfig};

/// Settings of a [`NatsBackend`]; every default is here.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// Server URLs (`nats://host:4222`); the client fails over between them.
    pub servers: Vec<String>,
    /// JetStream replicas of every stream and bucket Plaza creates (1, 3 or 5).
    pub replicas: usize,
    /// How often each edge looks for other edges whose lease ran out (and removes their
    /// members). A dead edge's members leave at most this long after its lease.
    pub reap_every: Duration,
    /// Events buffered for the edge; if it does not drain them the stream ends.
    pub event_queue: usize,
    /// Longest a JetStream request may take.
    pub request_timeout: Duration,
    /// Optional credentials: user and password.
    pub user_password: Option<(String, String)>,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            servers: vec!["nats://127.0.0.1:4222".into()],
            replicas: 1,
            reap_every: Duration::from_secs(1),
            event_queue: 65_536,
            // Also the publish-ack wait: during a stream-leader election a publish should fail
            // (and be retried with its idem key) rather than hang.
            request_timeout: Duration::from_secs(2),
            user_password: None,
        }
    }
}

/// Why the backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// No server could be reached.
    #[error("cannot connect to NATS at {servers}: {source}")]
    Connect {
        /// The URLs tried.
        servers: String,
        /// Why.
        source: async_nats::ConnectError,
    },
    /// A stream or bucket could not be created or read.
    #[error("JetStream: {0}")]
    JetStream(String),
    /// An existing stream's settings differ from what the room config needs.
    #[error(
        "stream {stream} exists with {setting} = {found}, but the room config needs {wanted}; \
         change the config back, or edit/delete the stream (deleting it loses its history and \
         starts a new epoch)"
    )]
    Incompatible {
        /// The stream.
        stream: String,
        /// The setting.
        setting: &'static str,
        /// What the stream has.
        found: String,
        /// What Plaza needs.
        wanted: String,
    },
}

/// Checks that `url` is a NATS server URL (`nats://host:port`, `tls://…`, or `host:port`).
pub fn check_server_url(url: &str) -> Result<(), String> {
    url.parse::<async_nats::ServerAddr>()
        .map(|_| ())
        .map_err(|e| format!("{url:?} is not a NATS server URL: {e}"))
}

/// The broker tier on NATS JetStream. Cheap to clone.
#[derive(Clone)]
pub struct NatsBackend {
    shared: Arc<Shared>,
}

/// What the links share.
pub(crate) struct Shared {
    pub client: async_nats::Client,
    pub namespaces: Namespaces,
    pub configured: Vec<String>,
    pub rooms: RoomsConfig,
    pub options: NatsOptions,
    /// Fires after the client (re)connects: live subscriptions may have missed messages.
    pub reconnected: broadcast::Sender<()>,
    /// The streams and buckets, once they exist (NATS may be unreachable at start).
    setup: tokio::sync::OnceCell<Setup>,
}

/// The JetStream side, created or checked once NATS is reachable.
pub(crate) struct Setup {
    pub js: jetstream::Context,
    pub streams: HashMap<String, NsStream>,
    pub presence: kv::Store,
    pub presence_stream: stream::Stream,
    pub edges: kv::Store,
    pub edges_stream: stream::Stream,
    /// The lifecycle event feed and its state bucket.
    pub events: events::EventsSetup,
}

/// One namespace's stream.
pub(crate) struct NsStream {
    pub stream: stream::Stream,
    pub token: String,
    pub epoch: String,
}

impl Shared {
    /// Whether calls can be served: connected, streams and buckets set up.
    pub(crate) fn ready(&self) -> bool {
        self.setup.initialized()
            && self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// The streams and buckets, or `Unavailable` while NATS has not been reached yet.
    pub(crate) fn setup(&self) -> Result<&Setup, BrokerError> {
        self.setup.get().ok_or_else(|| {
            BrokerError::Unavailable("NATS is not reachable yet (streams not set up)".into())
        })
    }

    /// The namespace key of `room`: its namespace if configured, else the defaults.
    fn namespace_of<'a>(&'a self, room: &RoomName) -> Option<&'a str> {
        let ns = room.namespace();
        self.configured
            .iter()
            .find(|c| c.as_str() == ns)
            .map(String::as_str)
    }

    /// The stream, subjects and options of `room`.
    pub(crate) fn room(
        &self,
        room: &RoomName,
    ) -> Result<(&NsStream, RoomSubjects, &NamespaceOptions), BrokerError> {
        let key = stream_name(self.namespace_of(room));
        let stream = &self.setup()?.streams[&key];
        let options = self.namespaces.of(room);
        let subjects = RoomSubjects::new(&stream.token, room.as_str());
        let subjects = if options.state.enabled {
            subjects.for_state()
        } else {
            subjects
        };
        Ok((stream, subjects, options))
    }

    /// Creates or checks the streams and buckets (once; later calls return at once).
    async fn ensure_setup(&self) -> Result<&Setup, NatsError> {
        self.setup
            .get_or_try_init(|| setup(&self.client, &self.rooms, &self.configured, &self.options))
            .await
    }
}

/// Creates (or checks) every stream and bucket.
async fn setup(
    client: &async_nats::Client,
    rooms: &RoomsConfig,
    configured: &[String],
    options: &NatsOptions,
) -> Result<Setup, NatsError> {
    let js = jetstream::context::ContextBuilder::new()
        .timeout(options.request_timeout)
        .build(client.clone());
    let namespaces = rooms.namespaces();
    let mut streams = HashMap::new();
    let all = std::iter::once(None).chain(configured.iter().map(|n| Some(n.as_str())));
    for ns in all {
        let opts = match ns {
            Some(n) => namespaces.get(n),
            None => &rooms.defaults,
        };
        let name = stream_name(ns);
        let token = ns_token(ns);
        let windows = (rooms.idempotency_window, rooms.room_idle_ttl);
        let wanted = stream_config(&name, &token, opts, windows, options);
        let stream = ensure_stream(&js, wanted).await?;
        wait_for_leader(&stream, options.request_timeout).await?;
        let created = stream.cached_info().created;
        let epoch = format!(
            "{}-{:x}",
            name.to_lowercase(),
            created.unix_timestamp_nanos()
        );
        streams.insert(
            name,
            NsStream {
                stream,
                token,
                epoch,
            },
        );
    }
    let presence = ensure_bucket(&js, PRESENCE_BUCKET, options.replicas).await?;
    let edges = ensure_bucket(&js, EDGES_BUCKET, options.replicas).await?;
    let presence_stream = js
        .get_stream(format!("KV_{PRESENCE_BUCKET}"))
        .await
        .map_err(|e| NatsError::JetStream(e.to_string()))?;
    let edges_stream = js
        .get_stream(format!("KV_{EDGES_BUCKET}"))
        .await
        .map_err(|e| NatsError::JetStream(e.to_string()))?;
    wait_for_leader(&presence_stream, options.request_timeout).await?;
    wait_for_leader(&edges_stream, options.request_timeout).await?;
    let events = events::setup(&js, &rooms.events, options).await?;
    Ok(Setup {
        js,
        streams,
        presence,
        presence_stream,
        edges,
        edges_stream,
        events,
    })
}

impl NatsBackend {
    /// Connects to `options.servers` and creates (or checks) the streams and buckets `rooms`
    /// needs. Idempotent: edges starting together create the same things. If NATS cannot be
    /// reached within `options.request_timeout`, the backend starts anyway and keeps trying in
    /// the background (its links are not [`ready`](crate::EdgeLink::ready) until then);
    /// a stream with incompatible settings is an error at once.
    pub async fn connect(rooms: &RoomsConfig, options: NatsOptions) -> Result<Self, NatsError> {
        let (reconnected, _) = broadcast::channel(16);
        let events = reconnected.clone();
        let mut connect = async_nats::ConnectOptions::new()
            .name("plaza-edge")
            .retry_on_initial_connect()
            .request_timeout(Some(options.request_timeout))
            // A killed server is noticed by the socket closing; a silent one by two missed
            // pings. Reconnect attempts back off from 0 to at most RECONNECT_MAX (async-nats
            // grows to 4 s), so a client that tried the dead server a few times is not left
            // waiting seconds after another server is up.
            .ping_interval(PING_INTERVAL)
            .reconnect_delay_callback(|attempts| {
                let exp = u32::try_from(attempts.saturating_sub(1)).unwrap_or(u32::MAX);
                Duration::from_millis(2_u64.saturating_pow(exp)).min(RECONNECT_MAX)
            })
            .event_callback(move |event| {
                let events = events.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!("connected to NATS");
                            let _ = events.send(());
                        }
                        async_nats::Event::Disconnected => tracing::warn!("NATS disconnected"),
                        other => tracing::info!(event = %other, "NATS event"),
                    }
                }
            });
        if let Some((user, password)) = &options.user_password {
            connect = connect.user_and_password(user.clone(), password.clone());
        }
        // For errors and logs: credentials in a URL (`nats://user:pass@host`) never appear.
        let servers = options
            .servers
            .iter()
            .map(|url| names::redact_url(url))
            .collect::<Vec<_>>()
            .join(",");
        let addrs = options
            .servers
            .iter()
            .map(|s| s.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| NatsError::JetStream(format!("server URL: {e}")))?;
        let client = connect
            .connect(addrs)
            .await
            .map_err(|source| NatsError::Connect {
                servers: servers.clone(),
                source,
            })?;
        let shared = Arc::new(Shared {
            client,
            namespaces: rooms.namespaces(),
            configured: rooms.namespaces.keys().cloned().collect(),
            rooms: rooms.clone(),
            options,
            reconnected,
            setup: tokio::sync::OnceCell::new(),
        });
        // Give the first connection a moment; set up now only if it succeeded (requests on a
        // client that is not connected would each wait for their timeout).
        let connecting = tokio::time::Instant::now() + options_connect_wait();
        while shared.client.connection_state() != async_nats::connection::State::Connected
            && tokio::time::Instant::now() < connecting
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let first = if shared.client.connection_state() == async_nats::connection::State::Connected
        {
            shared.ensure_setup().await.map(|_| ())
        } else {
            Err(NatsError::JetStream("no server reachable yet".into()))
        };
        match first {
            Ok(()) => {}
            Err(e @ NatsError::Incompatible { .. }) => return Err(e),
            Err(e) => {
                tracing::warn!(servers, error = %e, "NATS not usable yet; retrying in the background");
                let retry = Arc::downgrade(&shared);
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let Some(shared) = retry.upgrade() else {
                            return;
                        };
                        match shared.ensure_setup().await {
                            Ok(_) => {
                                tracing::info!("NATS streams and buckets ready");
                                let _ = shared.reconnected.send(());
                                return;
                            }
                            Err(e @ NatsError::Incompatible { .. }) => {
                                tracing::error!(error = %e, "NATS setup refused");
                                return;
                            }
                            Err(e) => tracing::debug!(error = %e, "NATS still not usable"),
                        }
                    }
                });
            }
        }
        Ok(Self { shared })
    }

    /// Whether the client is connected and the streams and buckets are set up.
    pub fn ready(&self) -> bool {
        self.shared.ready()
    }
}

impl Backend for NatsBackend {
    type Link = NatsLink;

    async fn attach(&self, options: AttachOptions) -> Result<(NatsLink, LinkEvents), BrokerError> {
        link::attach(Arc::clone(&self.shared), options).await
    }
}

/// How often the client pings its server (two unanswered pings: the connection is dead).
const PING_INTERVAL: Duration = Duration::from_secs(2);
/// The longest pause between two reconnect attempts.
const RECONNECT_MAX: Duration = Duration::from_millis(250);

/// How long `connect` waits for the first connection before going on without it.
fn options_connect_wait() -> Duration {
    Duration::from_secs(2)
}

/// The stream a namespace needs.
fn stream_config(
    name: &str,
    token: &str,
    ns: &NamespaceOptions,
    (idempotency_window, room_idle_ttl): (Duration, Duration),
    options: &NatsOptions,
) -> stream::Config {
    // A room's last publication is always kept (it anchors the offset chain), even when the
    // namespace keeps no history; `history` then returns none.
    let per_subject = i64::try_from(ns.history_size.max(1)).unwrap_or(i64::MAX);
    // Publications older than the history TTL are filtered out when read, not removed: the
    // room's last publication must outlive its TTL so its offset (the room's position) stays.
    // Rooms idle for `room_idle_ttl` are forgotten (their position then reads as 0, and any
    // recovery from before is reported incomplete).
    // A state room's keys stay until deleted (the last change per key is the map), so a
    // state namespace's stream has no age limit; history reads still skip changes older than
    // the history TTL.
    let max_age = if ns.state.enabled {
        Duration::ZERO
    } else {
        ns.history_ttl
            .max(room_idle_ttl)
            .max(Duration::from_secs(1))
    };
    stream::Config {
        name: name.to_owned(),
        description: Some("Plaza room logs (publications and join/leave events)".into()),
        subjects: vec![format!("plaza.r.{token}.>")],
        max_messages_per_subject: per_subject,
        max_age,
        // JetStream refuses a dedupe window longer than max_age.
        duplicate_window: if max_age.is_zero() {
            idempotency_window
        } else {
            idempotency_window.min(max_age)
        },
        storage: stream::StorageType::File,
        num_replicas: options.replicas,
        discard: stream::DiscardPolicy::Old,
        allow_direct: true,
        republish: Some(stream::Republish {
            source: format!("plaza.r.{token}.>"),
            destination: format!("plaza.l.{token}.>"),
            headers_only: false,
        }),
        ..Default::default()
    }
}

/// Creates the stream, or checks that the existing one has the settings Plaza relies on.
async fn ensure_stream(
    js: &jetstream::Context,
    wanted: stream::Config,
) -> Result<stream::Stream, NatsError> {
    let mut stream = match js.get_stream(&wanted.name).await {
        Ok(stream) => stream,
        Err(_) => match js.create_stream(wanted.clone()).await {
            Ok(stream) => stream,
            // Another edge created it meanwhile.
            Err(_) => js
                .get_stream(&wanted.name)
                .await
                .map_err(|e| NatsError::JetStream(format!("stream {}: {e}", wanted.name)))?,
        },
    };
    let found = stream
        .info()
        .await
        .map_err(|e| NatsError::JetStream(e.to_string()))?
        .config
        .clone();
    let check = |setting: &'static str, f: String, w: String| {
        if f == w {
            Ok(())
        } else {
            Err(NatsError::Incompatible {
                stream: wanted.name.clone(),
                setting,
                found: f,
                wanted: w,
            })
        }
    };
    check(
        "subjects",
        format!("{:?}", found.subjects),
        format!("{:?}", wanted.subjects),
    )?;
    check(
        "max_msgs_per_subject",
        found.max_messages_per_subject.to_string(),
        wanted.max_messages_per_subject.to_string(),
    )?;
    check(
        "max_age",
        format!("{:?}", found.max_age),
        format!("{:?}", wanted.max_age),
    )?;
    check(
        "duplicate_window",
        format!("{:?}", found.duplicate_window),
        format!("{:?}", wanted.duplicate_window),
    )?;
    check(
        "republish",
        format!(
            "{:?}",
            found
                .republish
                .as_ref()
                .map(|r| (&r.source, &r.destination))
        ),
        format!(
            "{:?}",
            wanted
                .republish
                .as_ref()
                .map(|r| (&r.source, &r.destination))
        ),
    )?;
    check(
        "allow_direct",
        found.allow_direct.to_string(),
        wanted.allow_direct.to_string(),
    )?;
    Ok(stream)
}

/// Waits until a (replicated) stream has elected its leader, so the first requests after
/// creating it do not fail with "no stream found".
async fn wait_for_leader(stream: &stream::Stream, timeout: Duration) -> Result<(), NatsError> {
    let deadline = tokio::time::Instant::now() + timeout.max(Duration::from_secs(1)) * 2;
    loop {
        let ready = match stream.get_info().await {
            Ok(info) => info.cluster.as_ref().is_none_or(|c| c.leader.is_some()),
            Err(_) => false,
        };
        if ready {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(NatsError::JetStream(format!(
                "stream {} has no leader yet",
                stream.cached_info().config.name
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens a KV bucket, creating it if missing.
async fn ensure_bucket(
    js: &jetstream::Context,
    bucket: &str,
    replicas: usize,
) -> Result<kv::Store, NatsError> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    let config = kv::Config {
        bucket: bucket.to_owned(),
        history: 1,
        num_replicas: replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    match js.create_key_value(config).await {
        Ok(store) => Ok(store),
        Err(_) => js
            .get_key_value(bucket)
            .await
            .map_err(|e| NatsError::JetStream(format!("bucket {bucket}: {e}"))),
    }
}
