//! The edge's configuration: typed, nested like the crates, every default in one place, and
//! validated once at start.
//!
//! Layers, later ones win: built-in defaults → TOML file (`--config`) → `PLAZA_*` environment
//! variables → command-line flags. Environment variables name a key path with `__` between
//! levels: `PLAZA_CLIENT__PING_INTERVAL=30s` sets `client.ping_interval`,
//! `PLAZA_ROOMS__NAMESPACES__CHAT__PRESENCE=counts` sets `rooms.namespaces.chat.presence`.
//! Errors name the key; `main` exits with code 64 on any of them.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use plaza_broker::RoomsConfig;
use plaza_broker::config::duration;
use serde::{Deserialize, Serialize};

/// Exit code for a bad configuration (`EX_CONFIG` is 78, but 64 `EX_USAGE` is what operators
/// and our tests expect for "you gave me something wrong").
pub const EXIT_BAD_CONFIG: i32 = 64;

/// The whole edge configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// Address for HTTP and WebSocket (`--listen`); port 0 picks a free port.
    pub listen: SocketAddr,
    /// Development mode: memory backend, random secret, demo page and `/dev/token`.
    pub dev: bool,
    /// Which broker tier to use.
    pub backend: BackendKind,
    /// Log format.
    pub log_format: LogFormat,
    /// Token verification.
    pub auth: AuthConfig,
    /// Per-connection behaviour and limits.
    pub client: ClientConfig,
    /// Attachment to the broker tier.
    pub broker: BrokerLinkConfig,
    /// Graceful shutdown.
    pub drain: DrainConfig,
    /// Rate and connection limits.
    pub limits: LimitsConfig,
    /// HTTP-level policy: origins, trusted proxies, API body size.
    pub http: HttpConfig,
    /// The server HTTP API (`/v1/api/...`).
    pub api: ApiConfig,
    /// Room namespaces.
    pub rooms: RoomsConfig,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            dev: false,
            backend: BackendKind::Memory,
            log_format: LogFormat::Text,
            auth: AuthConfig::default(),
            client: ClientConfig::default(),
            broker: BrokerLinkConfig::default(),
            drain: DrainConfig::default(),
            limits: LimitsConfig::default(),
            http: HttpConfig::default(),
            api: ApiConfig::default(),
            rooms: RoomsConfig::default(),
        }
    }
}

/// The broker tier an edge uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// In-process state: one edge only, nothing survives a restart. For `--dev` and tests.
    Memory,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A secret value: never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

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
}

/// `[[auth.jwks]]`: one identity provider (Kinde, Auth0, Clerk, …) verified against its JWKS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwksConfig {
    /// The provider's `iss`; tokens are routed to this key set by their `iss` claim.
    pub issuer: String,
    /// Accepted `aud` values (one of), if set.
    pub audience: Option<Vec<String>>,
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
            url: None,
            file: None,
            allow_http: false,
            algorithms: JWKS_ALGORITHMS.iter().map(|s| s.to_string()).collect(),
            refresh_interval: Duration::from_secs(600),
            min_refetch_interval: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(5),
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
    /// Largest server API request body, in bytes.
    pub max_body_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// `[api]`: the server HTTP API under `/v1/api/`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Accepted API keys (`Authorization: Bearer <key>`); several allow rotation. Empty
    /// disables the API.
    pub keys: Vec<Secret>,
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
    /// WebSocket read buffer per connection, in bytes (small saves memory at scale).
    pub read_buffer_bytes: usize,
    /// WebSocket write buffer per connection, in bytes, before a write is pushed to the socket.
    pub write_buffer_bytes: usize,
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
            read_buffer_bytes: 4 * 1024,
            write_buffer_bytes: 16 * 1024,
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
    /// Room events buffered between the broker tier and this edge's hub.
    pub event_queue: usize,
}

impl Default for BrokerLinkConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(10),
            call_timeout: Duration::from_secs(5),
            event_queue: 65_536,
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

/// A configuration error, naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config error: {key}: {message}")]
pub struct ConfigError {
    /// The key path, e.g. `client.ping_interval`, or the file.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl EdgeConfig {
    /// Builds the configuration from a TOML file (if any), environment variables (only those
    /// starting with `PLAZA_` are read) and flag overrides (`(key path, TOML value or string)`
    /// pairs), then validates it.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[(&str, String)],
    ) -> Result<Self, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::new(path.display().to_string(), e.to_string()))?;
                text.parse::<toml::Table>().map_err(|e| {
                    ConfigError::new(path.display().to_string(), e.to_string().trim().to_owned())
                })?
            }
            None => toml::Table::new(),
        };
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("PLAZA_") else {
                continue;
            };
            if rest.is_empty() || rest == "LOG" {
                continue; // PLAZA_LOG is the log filter, read by main.
            }
            let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
            set_path(&mut table, &path, parse_value(&value))
                .map_err(|m| ConfigError::new(&name, m))?;
        }
        for (key, value) in overrides {
            let path: Vec<String> = key.split('.').map(str::to_owned).collect();
            set_path(&mut table, &path, parse_value(value))
                .map_err(|m| ConfigError::new(*key, m))?;
        }
        let config: EdgeConfig = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let key = e.path().to_string();
                let key = if key == "." { "config".to_owned() } else { key };
                ConfigError::new(key, e.into_inner().message().to_owned())
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but cannot work together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let c = &self.client;
        if c.ping_interval.is_zero() {
            return Err(ConfigError::new("client.ping_interval", "must be positive"));
        }
        if c.idle_timeout <= c.ping_interval {
            return Err(ConfigError::new(
                "client.idle_timeout",
                format!(
                    "must be longer than client.ping_interval ({}), or live clients would be cut",
                    humantime::format_duration(c.ping_interval)
                ),
            ));
        }
        if c.connect_timeout.is_zero() {
            return Err(ConfigError::new(
                "client.connect_timeout",
                "must be positive",
            ));
        }
        if c.max_frame_bytes < 256 {
            return Err(ConfigError::new(
                "client.max_frame_bytes",
                "must be at least 256",
            ));
        }
        if c.outbound_queue_bytes < c.max_frame_bytes {
            return Err(ConfigError::new(
                "client.outbound_queue_bytes",
                "must be at least client.max_frame_bytes",
            ));
        }
        if c.max_rooms == 0 {
            return Err(ConfigError::new("client.max_rooms", "must be at least 1"));
        }
        if c.read_buffer_bytes < 512 || c.write_buffer_bytes < 512 {
            return Err(ConfigError::new(
                "client.read_buffer_bytes",
                "buffers must be at least 512 bytes",
            ));
        }
        if self.broker.lease < Duration::from_millis(100) {
            return Err(ConfigError::new("broker.lease", "must be at least 100ms"));
        }
        if self.broker.event_queue == 0 {
            return Err(ConfigError::new("broker.event_queue", "must be at least 1"));
        }
        if self.drain.grace < self.drain.window {
            return Err(ConfigError::new(
                "drain.grace",
                "must be at least drain.window",
            ));
        }
        if self.auth.capability_claim.is_empty() {
            return Err(ConfigError::new(
                "auth.capability_claim",
                "must not be empty",
            ));
        }
        match &self.auth.hmac_secret {
            None if !self.dev && self.auth.jwks.is_empty() => {
                return Err(ConfigError::new(
                    "auth.hmac_secret",
                    "set it (PLAZA_AUTH__HMAC_SECRET) or configure [[auth.jwks]], or run with --dev",
                ));
            }
            Some(s) if s.0.len() < 32 => {
                return Err(ConfigError::new(
                    "auth.hmac_secret",
                    "must be at least 32 bytes",
                ));
            }
            _ => {}
        }
        if self.auth.max_token_bytes < 256 {
            return Err(ConfigError::new("auth.max_token_bytes", "must be at least 256"));
        }
        for (i, j) in self.auth.jwks.iter().enumerate() {
            let key = |k: &str| format!("auth.jwks[{i}].{k}");
            if j.issuer.is_empty() {
                return Err(ConfigError::new(key("issuer"), "required"));
            }
            match (&j.url, &j.file) {
                (None, None) | (Some(_), Some(_)) => {
                    return Err(ConfigError::new(
                        key("url"),
                        "set exactly one of url and file",
                    ));
                }
                (Some(url), None) => {
                    let https = url.starts_with("https://");
                    let http = url.starts_with("http://");
                    if !(https || (http && j.allow_http)) {
                        return Err(ConfigError::new(
                            key("url"),
                            "must be https:// (plain http:// only with allow_http = true)",
                        ));
                    }
                }
                (None, Some(_)) => {}
            }
            if j.algorithms.is_empty() {
                return Err(ConfigError::new(key("algorithms"), "must not be empty"));
            }
            if let Some(a) = j
                .algorithms
                .iter()
                .find(|a| !JWKS_ALGORITHMS.contains(&a.as_str()))
            {
                return Err(ConfigError::new(
                    key("algorithms"),
                    format!(
                        "{a:?} is not accepted for JWKS keys (use {})",
                        JWKS_ALGORITHMS.join(", ")
                    ),
                ));
            }
            if j.min_refetch_interval.is_zero() || j.refresh_interval < j.min_refetch_interval {
                return Err(ConfigError::new(
                    key("refresh_interval"),
                    "must be positive and at least min_refetch_interval",
                ));
            }
        }
        let l = &self.limits;
        for (k, v) in [
            ("limits.commands_per_second", l.commands_per_second),
            ("limits.command_burst", l.command_burst),
            ("limits.flood_disconnect_after", l.flood_disconnect_after),
            (
                "limits.connections_per_second_per_ip",
                l.connections_per_second_per_ip,
            ),
            ("limits.connection_burst_per_ip", l.connection_burst_per_ip),
            ("limits.connections_per_user", l.connections_per_user),
        ] {
            if v == 0 {
                return Err(ConfigError::new(k, "must be at least 1"));
            }
        }
        for (i, o) in self.http.allowed_origins.iter().enumerate() {
            if !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/') {
                return Err(ConfigError::new(
                    format!("http.allowed_origins[{i}]"),
                    format!(
                        "{o:?} must look like https://app.example.com or https://*.example.com"
                    ),
                ));
            }
        }
        if self.http.max_body_bytes < 1024 {
            return Err(ConfigError::new(
                "http.max_body_bytes",
                "must be at least 1024",
            ));
        }
        if let Some(i) = self.api.keys.iter().position(|k| k.0.len() < 16) {
            return Err(ConfigError::new(
                format!("api.keys[{i}]"),
                "must be at least 16 bytes",
            ));
        }
        self.rooms.validate().map_err(|m| {
            let (key, message) = m.split_once(": ").unwrap_or(("rooms", &m));
            ConfigError::new(key, message)
        })
    }
}

/// Reads an override value: TOML syntax if it parses (numbers, booleans, arrays), else a string.
fn parse_value(text: &str) -> toml::Value {
    format!("v = {text}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_owned()))
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty key")?;
    let mut at = table;
    for p in parents {
        let entry = at
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        at = entry
            .as_table_mut()
            .ok_or_else(|| format!("`{p}` is not a table"))?;
    }
    at.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_env() -> Vec<(String, String)> {
        vec![("PLAZA_AUTH__HMAC_SECRET".into(), "x".repeat(32))]
    }

    #[test]
    fn file_then_env_then_flags_win_in_that_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\n[client]\nping_interval = \"10s\"\nmax_rooms = 7\n[rooms.namespaces.chat]\npresence = \"counts\"\n",
        )
        .unwrap();
        let mut env = secret_env();
        env.push(("PLAZA_CLIENT__MAX_ROOMS".into(), "9".into()));
        env.push(("HOME".into(), "/ignored".into()));
        let c = EdgeConfig::load(Some(&path), env, &[("listen", "127.0.0.1:0".into())]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(c.client.ping_interval, Duration::from_secs(10));
        assert_eq!(c.client.max_rooms, 9);
        let ns = c.rooms.namespaces();
        assert_eq!(ns.get("chat").presence, plaza_broker::PresenceMode::Counts);
        assert_eq!(
            ns.get("chat").history_size,
            100,
            "unset fields inherit the defaults"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let mut env = secret_env();
        env.push(("PLAZA_CLIENT__PING_INTERVAL".into(), "soon".into()));
        let e = EdgeConfig::load(None, env, &[]).unwrap_err();
        assert_eq!(e.key, "client.ping_interval");
        assert!(e.message.contains("invalid duration"), "{e}");

        let e = EdgeConfig::load(None, secret_env(), &[("client.typo", "1".into())]).unwrap_err();
        assert_eq!(e.key, "client.typo", "{e}");

        let e = EdgeConfig::load(None, secret_env(), &[("client.idle_timeout", "5s".into())])
            .unwrap_err();
        assert_eq!(e.key, "client.idle_timeout");

        let e = EdgeConfig::load(None, Vec::new(), &[]).unwrap_err();
        assert_eq!(e.key, "auth.hmac_secret");

        let e = EdgeConfig::load(
            None,
            secret_env(),
            &[("rooms.namespaces.chat.allow", "[\"fly\"]".into())],
        )
        .unwrap_err();
        assert_eq!(e.key, "rooms.namespaces.chat.allow", "{e}");
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let c = EdgeConfig::load(None, secret_env(), &[]).unwrap();
        assert!(!format!("{c:?}").contains(&"x".repeat(32)));
    }
}
