//! The config sections other than the top level, each with its defaults.

use std::time::Duration;

use plaza_rooms::config::duration;
use serde::{Deserialize, Serialize};

use super::Secret;

/// `[auth]`: how connect tokens are verified.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Shared secret for HS256/384/512 tokens.
    pub hmac_secret: Option<Secret>,
    /// Name of the claim holding capabilities (`{"rooms": {...}, "info": {...}}`).
    pub capability_claim: String,
    /// Required `iss`, if set.
    pub issuer: Option<String>,
    /// Required `aud` (one of), if set.
    pub audience: Option<Vec<String>>,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(with = "duration")]
    pub leeway: Duration,
    /// Cookie that may carry the token (for same-site browser apps), if set.
    pub token_cookie: Option<String>,
    /// Identity providers whose asymmetrically signed tokens are accepted (`[[auth.jwks]]`).
    pub jwks: Vec<JwksConfig>,
    /// Longest accepted token, in bytes; longer ones are refused before any parsing.
    pub max_token_bytes: usize,
    /// Refuse tokens from the shared-secret issuer that carry no `exp` (a leaked token without
    /// one would work forever). Identity providers' tokens always need `exp`.
    pub require_exp: bool,
}

/// `[[auth.jwks]]`: one identity provider (Kinde, Auth0, Clerk, …) verified against its JWKS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwksConfig {
    /// The provider's `iss`; tokens are routed to this key set by their `iss` claim.
    pub issuer: String,
    /// Accepted `aud` values (one of). Required unless `allow_any_audience`: one provider
    /// issues tokens for many applications, and without an audience check a token minted for
    /// any of them (another team's app, a test tenant) would be accepted here.
    pub audience: Option<Vec<String>>,
    /// Accept this provider's tokens whatever their `aud` (only for a provider tenant that
    /// issues tokens for this application alone). Off by default.
    pub allow_any_audience: bool,
    /// Where to fetch the JWKS (HTTPS unless `allow_http`).
    pub url: Option<String>,
    /// A JWKS file to load instead of fetching (re-read on refresh).
    pub file: Option<std::path::PathBuf>,
    /// Permit a plain-HTTP `url` (local testing only).
    pub allow_http: bool,
    /// Accepted `alg` values.
    pub algorithms: Vec<String>,
    /// Refetch the key set this often in the background.
    #[serde(with = "duration")]
    pub refresh_interval: Duration,
    /// A token with an unknown `kid` triggers a refetch at most this often, so a flood of
    /// made-up `kid`s cannot hammer the provider.
    #[serde(with = "duration")]
    pub min_refetch_interval: Duration,
    /// Give up on one fetch after this long (the last good key set stays in use).
    #[serde(with = "duration")]
    pub fetch_timeout: Duration,
    /// Prepended to `sub` to form the user id (e.g. `"kinde:"`), so that two providers'
    /// users with the same `sub` are different users here. `{sub}` in room patterns stands
    /// for the prefixed id.
    pub user_prefix: Option<String>,
}

/// Algorithms accepted for JWKS keys by default.
pub const JWKS_ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

impl Default for JwksConfig {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            audience: None,
            allow_any_audience: false,
            url: None,
            file: None,
            allow_http: false,
            algorithms: JWKS_ALGORITHMS.iter().map(|s| s.to_string()).collect(),
            refresh_interval: Duration::from_secs(600),
            min_refetch_interval: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(5),
            user_prefix: None,
        }
    }
}

/// `[limits]`: rates and counts that protect the edge from abusive or broken clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Sustained commands per second per connection (token bucket refill rate).
    pub commands_per_second: u32,
    /// Commands a connection may send in a burst (token bucket size).
    pub command_burst: u32,
    /// Rate-limited commands in a row after which the connection is closed (4007).
    pub flood_disconnect_after: u32,
    /// Sustained new WebSocket connections per second per client IP (429 beyond).
    pub connections_per_second_per_ip: u32,
    /// Burst of new connections per client IP.
    pub connection_burst_per_ip: u32,
    /// Open connections per user on this edge (4008 beyond).
    pub connections_per_user: u32,
    /// Publication bytes (data + idempotency key + 256 per publication) per second one user may
    /// publish through this edge, over all of its connections; beyond: error 112. Bounds the
    /// state one user can make the broker tier keep. 0 = no limit.
    pub publish_bytes_per_second_per_user: u32,
    /// Burst of `publish_bytes_per_second_per_user` (at least the largest publication).
    pub publish_burst_bytes_per_user: u32,
    /// Open TCP connections per client address (IPv6: per prefix), counted at accept, before
    /// any request is read; beyond it a connection is closed at once. 0 = no limit. Proxies in
    /// `http.trusted_proxies` are exempt (their clients share their address).
    pub max_connections_per_ip: usize,
    /// IPv6 clients are limited per prefix of this length (one host usually holds a whole
    /// /64, so per-address limits would not limit it at all).
    pub ipv6_prefix: u8,
    /// Sustained ephemeral publications per second per connection (error 112 beyond).
    pub ephemeral_per_second: u32,
    /// Burst of `ephemeral_per_second`.
    pub ephemeral_burst: u32,
    /// Sustained ephemeral publications per second per room through this edge, from all of its
    /// clients and the server API together (error 112 beyond): one room's typing storm cannot
    /// take the edge's or the broker tier's capacity from other rooms.
    pub ephemeral_per_second_per_room: u32,
    /// Burst of `ephemeral_per_second_per_room`.
    pub ephemeral_burst_per_room: u32,
    /// Sustained `presence_update`s per second per connection (error 112 beyond): each one is
    /// a write to the broker tier and a push to every presence subscriber of the room.
    pub presence_updates_per_second: u32,
    /// Burst of `presence_updates_per_second`.
    pub presence_update_burst: u32,
    /// Sustained state room `set`/`delete` commands per second per connection (error 112
    /// beyond). They are durable writes, so their bytes also count against the user's
    /// publish budget.
    pub state_writes_per_second: u32,
    /// Burst of `state_writes_per_second`.
    pub state_writes_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            commands_per_second: 50,
            command_burst: 100,
            flood_disconnect_after: 100,
            connections_per_second_per_ip: 20,
            connection_burst_per_ip: 50,
            connections_per_user: 50,
            publish_bytes_per_second_per_user: 256 * 1024,
            publish_burst_bytes_per_user: 1024 * 1024,
            max_connections_per_ip: 1000,
            ipv6_prefix: 64,
            ephemeral_per_second: 20,
            ephemeral_burst: 40,
            ephemeral_per_second_per_room: 500,
            ephemeral_burst_per_room: 1000,
            presence_updates_per_second: 2,
            presence_update_burst: 10,
            state_writes_per_second: 20,
            state_writes_burst: 40,
        }
    }
}

/// `[http]`: origin policy, proxies, and request sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Browser origins allowed to open WebSockets: exact (`https://app.example.com`) or a
    /// subdomain wildcard (`https://*.example.com`). Empty allows every origin. Requests
    /// without an `Origin` header (non-browser clients) are always allowed.
    pub allowed_origins: Vec<String>,
    /// Peers whose `X-Forwarded-For` / `CF-Connecting-IP` headers are believed, as CIDRs
    /// (e.g. Cloudflare's ranges or `10.0.0.0/8` for an in-cluster ingress).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Read the client address from `CF-Connecting-IP` (only when Cloudflare is the trusted
    /// proxy in front: any other proxy passes that header through from the client).
    pub cf_connecting_ip: bool,
    /// Largest server API request body, in bytes.
    pub max_body_bytes: usize,
    /// Longest a client may take to send a whole request head (and, on a keep-alive
    /// connection, to start the next request): cuts slowloris clients that trickle headers.
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    /// Pending TCP connections the listening socket queues before the edge accepts them
    /// (the kernel caps it at `net.core.somaxconn`); a connect storm beyond it sees SYN
    /// retries of a second or more.
    pub listen_backlog: u32,
    /// Serve `/metrics` to requests that came through a proxy (those carrying `Forwarded`,
    /// `X-Forwarded-For`, `X-Real-IP` or `CF-Connecting-IP`). Off: metrics are for scrapers
    /// that reach the edge directly, and a public proxy route to them would expose room
    /// counts, client counts and error rates to anyone.
    pub metrics_through_proxies: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            cf_connecting_ip: false,
            max_body_bytes: 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            listen_backlog: 4096,
            metrics_through_proxies: false,
        }
    }
}

/// `[api]`: the server HTTP API under `/v1/api/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Accepted API keys (`Authorization: Bearer <key>`); several allow rotation. Empty
    /// disables the API.
    pub keys: Vec<Secret>,
    /// Failed key attempts one client address (IPv6: per `limits.ipv6_prefix`) may make within
    /// `failed_auth_window`; beyond, its API requests get 429 until the window ends. 0 = off.
    pub max_failed_auth_per_ip: u32,
    /// The window of `max_failed_auth_per_ip`, from an address's first failure.
    #[serde(with = "duration")]
    pub failed_auth_window: Duration,
    /// Most events one `GET /v1/api/events` may ask for (`limit`); larger is a 400. Also the
    /// default `limit`.
    pub max_events_limit: u32,
    /// Longest `wait` (long-poll) of `GET /v1/api/events`; longer is a 400.
    #[serde(with = "duration")]
    pub max_events_wait: Duration,
    /// How often a long-polling `GET /v1/api/events` reads the feed again while it waits.
    #[serde(with = "duration")]
    pub events_poll_interval: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            max_failed_auth_per_ip: 20,
            failed_auth_window: Duration::from_secs(60),
            max_events_limit: 1000,
            max_events_wait: Duration::from_secs(30),
            events_poll_interval: Duration::from_millis(250),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            hmac_secret: None,
            capability_claim: "plaza".into(),
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(5),
            token_cookie: None,
            jwks: Vec::new(),
            max_token_bytes: 8 * 1024,
            require_exp: true,
        }
    }
}

/// `[client]`: per-connection behaviour and limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    /// How often the edge sends a WebSocket ping (keeps proxies such as Cloudflare, whose
    /// idle timeout is ~100 s, from closing quiet sockets).
    #[serde(with = "duration")]
    pub ping_interval: Duration,
    /// Close a connection from which nothing (not even a pong) arrived for this long.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// Close a connection that has not sent `connect` within this time.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Largest accepted WebSocket message, in bytes; larger ones close the connection (4503).
    pub max_frame_bytes: usize,
    /// Bytes queued for a client before it is disconnected as a slow consumer (4001).
    pub outbound_queue_bytes: usize,
    /// Rooms one connection may be subscribed to at once.
    pub max_rooms: usize,
    /// Push `refresh` this long before the token expires.
    #[serde(with = "duration")]
    pub refresh_ahead: Duration,
    /// Most publications one `history` call returns.
    pub max_history_limit: u32,
    /// Most members one `presence` call returns (a page; `next` leads to the rest).
    pub max_presence_page: u32,
    /// Largest presence `info` a `presence_update` may set, in bytes of JSON (error 109).
    pub max_presence_info_bytes: usize,
    /// User-level presence (`presence: "users"`): how long a user's last leave waits for a
    /// re-join (a page reload) before `user_leave` is pushed; zero pushes it at once.
    #[serde(with = "duration")]
    pub user_presence_debounce: Duration,
    /// Most members a room may have for user-level presence (`presence: "users"` and
    /// `presence` with `mode: "users"` read them all; beyond: error 117).
    pub max_user_presence_members: usize,
    /// Most bytes of publication data one reply carries (`history`; a `subscribe` recovery
    /// larger than this answers `recovered: false` and the client pages through `history`).
    pub max_reply_bytes: usize,
    /// Reply bytes a connection may have queued but not yet written before the edge stops
    /// reading its commands (TCP backpressure) until the client reads.
    pub max_pending_reply_bytes: usize,
    /// Close a connection (4001) whose queued frames make no progress for this long: a client
    /// that asks and never reads.
    #[serde(with = "duration")]
    pub write_timeout: Duration,
    /// WebSocket read buffer per connection, in bytes (small saves memory at scale).
    pub read_buffer_bytes: usize,
    /// WebSocket write buffer per connection, in bytes, before a write is pushed to the socket.
    pub write_buffer_bytes: usize,
    /// Which WebSocket implementation serves clients (`read_buffer_bytes` and
    /// `write_buffer_bytes` apply to `tungstenite` only; `lean` holds no buffer while idle).
    pub websocket: WebSocketImpl,
    /// Negotiate permessage-deflate (RFC 7692, no context takeover; `lean` only) with clients
    /// that offer it.
    pub permessage_deflate: bool,
}

/// `client.websocket`: the WebSocket implementation behind `/v1/ws`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebSocketImpl {
    /// tokio-tungstenite through axum (a read buffer per connection, no compression).
    Tungstenite,
    /// Plaza's own layer (`plaza_edge::ws`): no per-connection buffers while idle, frames
    /// written with `writev`, optional permessage-deflate.
    #[default]
    Lean,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            max_frame_bytes: 128 * 1024,
            outbound_queue_bytes: 1024 * 1024,
            max_rooms: 512,
            refresh_ahead: Duration::from_secs(30),
            max_history_limit: 1000,
            max_presence_page: 1000,
            max_presence_info_bytes: 1024,
            user_presence_debounce: Duration::from_secs(2),
            max_user_presence_members: 10_000,
            max_reply_bytes: 4 * 1024 * 1024,
            max_pending_reply_bytes: 1024 * 1024,
            write_timeout: Duration::from_secs(30),
            read_buffer_bytes: 1024,
            write_buffer_bytes: 16 * 1024,
            websocket: WebSocketImpl::default(),
            permessage_deflate: false,
        }
    }
}

/// `[broker]`: how the edge attaches to the broker tier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerLinkConfig {
    /// How long this edge's members outlive it if it dies without a clean shutdown.
    #[serde(with = "duration")]
    pub lease: Duration,
    /// Give up on a broker call after this long (the client gets a temporary error).
    #[serde(with = "duration")]
    pub call_timeout: Duration,
    /// Retry a call that is safe to repeat (subscribe, join, leave, reads, publishes with an
    /// idempotency key) while the broker tier answers "unavailable" (a Raft election, a broker
    /// that cannot reach its leader for a moment), for up to this long, before the client gets
    /// the temporary error; within `call_timeout`. `0s`: no retry.
    #[serde(with = "duration")]
    pub retry_unavailable_for: Duration,
    /// Room events buffered between the broker tier and this edge's hub.
    pub event_queue: usize,
    /// `backend = "cluster"`: the brokers' QUIC addresses (`host:port`); the edge attaches to
    /// one of them and moves to another if it fails.
    pub brokers: Vec<String>,
    /// `backend = "cluster"`: longest a dial to one broker may take.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// `backend = "cluster"`: move to another broker once the current one has left calls
    /// unanswered, or answered only "cannot commit", for this long (failover re-route).
    #[serde(with = "duration")]
    pub reroute_after: Duration,
    /// `backend = "cluster"`: the edge's TLS identity towards the brokers (mutual TLS with
    /// the cluster CA; `plaza-broker cert` makes one per edge).
    pub tls: BrokerTlsConfig,
}

impl Default for BrokerLinkConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(10),
            call_timeout: Duration::from_secs(5),
            retry_unavailable_for: Duration::from_secs(2),
            event_queue: 65_536,
            brokers: Vec::new(),
            connect_timeout: Duration::from_secs(1),
            reroute_after: Duration::from_millis(600),
            tls: BrokerTlsConfig::default(),
        }
    }
}

/// `[broker.tls]`: PEM files of the edge's identity in the broker cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerTlsConfig {
    /// The cluster CA certificate (brokers are verified against it).
    pub ca: Option<std::path::PathBuf>,
    /// This edge's certificate, signed by the cluster CA.
    pub cert: Option<std::path::PathBuf>,
    /// This edge's private key.
    pub key: Option<std::path::PathBuf>,
}

/// `[nats]`: the NATS JetStream broker tier (`backend = "nats"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URLs; the client fails over between them (and learns the rest of the cluster).
    pub servers: Vec<String>,
    /// JetStream replicas of the streams and buckets Plaza creates (1, 3 or 5).
    pub replicas: usize,
    /// How often this edge looks for edges whose lease ran out and removes their members.
    #[serde(with = "duration")]
    pub reap_every: Duration,
    /// User name, if the server requires one.
    pub user: Option<String>,
    /// Password of `user` (prefer `PLAZA_NATS__PASSWORD`).
    pub password: Option<super::Secret>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            servers: vec!["nats://127.0.0.1:4222".into()],
            replicas: 1,
            reap_every: Duration::from_secs(1),
            user: None,
            password: None,
        }
    }
}

/// `[drain]`: graceful shutdown on SIGTERM / ctrl-c.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrainConfig {
    /// Clients are disconnected (reconnectable) at random moments spread over this window,
    /// so they do not all reconnect to the other edges at once.
    #[serde(with = "duration")]
    pub window: Duration,
    /// Hard limit from the signal to process exit.
    #[serde(with = "duration")]
    pub grace: Duration,
}

impl Default for DrainConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(10),
            grace: Duration::from_secs(20),
        }
    }
}
