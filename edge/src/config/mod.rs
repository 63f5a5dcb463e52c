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

pub use plaza_process::{EXIT_BAD_CONFIG, LogFormat};
use plaza_process::{parse_value, set_path};
use plaza_rooms::config::RoomsConfig;
use serde::{Deserialize, Serialize};

/// The whole edge configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// Address for HTTP and WebSocket (`--listen`); port 0 picks a free port.
    pub listen: SocketAddr,
    /// Development mode (demo page, `/dev/token` with a fresh dev-only key). Set only by the
    /// `--dev` flag ([`EdgeConfig::load_with_dev`]): never read from a file, the environment or
    /// a chart, so a production config cannot switch it on.
    #[serde(skip)]
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
    /// The NATS broker tier (`backend = "nats"`).
    pub nats: NatsConfig,
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
    /// Lifecycle event webhooks.
    pub webhooks: WebhooksConfig,
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
            nats: NatsConfig::default(),
            drain: DrainConfig::default(),
            limits: LimitsConfig::default(),
            http: HttpConfig::default(),
            api: ApiConfig::default(),
            rooms: RoomsConfig::default(),
            webhooks: WebhooksConfig::default(),
        }
    }
}

/// The broker tier an edge uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// In-process state: one edge only, nothing survives a restart. For `--dev` and tests.
    Memory,
    /// A `plaza-broker` cluster (`broker.brokers`, `broker.tls`).
    Cluster,
    /// A NATS JetStream cluster (`[nats]`).
    Nats,
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

mod sections;
mod validate;
mod webhooks;

pub use sections::*;
pub use webhooks::{WebhookEndpoint, WebhooksConfig};

/// A configuration error, naming the key (shared with `plaza-broker`).
pub use plaza_process::ConfigError;

impl EdgeConfig {
    /// Builds the configuration from a TOML file (if any), environment variables (only those
    /// starting with `PLAZA_` are read) and flag overrides (`(key path, TOML value or string)`
    /// pairs), then validates it.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[(&str, String)],
    ) -> Result<Self, ConfigError> {
        Self::load_with_dev(file, env, overrides, false)
    }

    /// [`EdgeConfig::load`] for `--dev` (`dev` comes from the command line only).
    pub fn load_with_dev(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[(&str, String)],
        dev: bool,
    ) -> Result<Self, ConfigError> {
        let mut table = plaza_process::read_file(file)?;
        if table.contains_key("dev") {
            return Err(dev_not_a_key("dev"));
        }
        let defaults = toml::Table::try_from(EdgeConfig::default()).unwrap_or_default();
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("PLAZA_") else {
                continue;
            };
            if rest.eq_ignore_ascii_case("DEV") {
                return Err(dev_not_a_key(&name));
            }
            let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
            // Only variables naming a config section or key are config: PLAZA_LOG (the log
            // filter), PLAZA_CONFIG (the file) and unrelated PLAZA_* variables of other tools
            // sharing the environment are not. A typo inside a section is still an error.
            if !defaults.contains_key(&path[0]) {
                continue;
            }
            let value = env_value(&defaults, &path, &value);
            set_path(&mut table, &path, value).map_err(|m| ConfigError::new(&name, m))?;
        }
        plaza_process::apply_overrides(&mut table, overrides)?;
        if overrides.iter().any(|(key, _)| *key == "dev") {
            return Err(dev_not_a_key("dev"));
        }
        let mut config: EdgeConfig = plaza_process::deserialize(table)?;
        config.dev = dev;
        config.validate()?;
        Ok(config)
    }
}

/// Dev mode mints tokens for anyone: it is the `--dev` flag only, so that no file,
/// environment variable or chart value can turn it on in production.
fn dev_not_a_key(key: &str) -> ConfigError {
    ConfigError::new(
        key,
        "dev mode is the --dev command-line flag only; it cannot be set in a config file, \
         an environment variable or a chart",
    )
}

/// Reads an environment value: as TOML (numbers, booleans, arrays) unless the key holds text
/// (its default is a string, or it is under `[auth]`), so that e.g. an all-digit secret stays
/// a string.
fn env_value(defaults: &toml::Table, path: &[String], text: &str) -> toml::Value {
    let parsed = parse_value(text);
    let mut at = Some(defaults);
    let mut default = None;
    for (i, p) in path.iter().enumerate() {
        let v = at.and_then(|t| t.get(p));
        if i + 1 == path.len() {
            default = v;
        }
        at = v.and_then(toml::Value::as_table);
    }
    let texty = matches!(default, Some(toml::Value::String(_))) || path[0] == "auth";
    let scalar = matches!(
        parsed,
        toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_)
    );
    if texty && scalar {
        toml::Value::String(text.to_owned())
    } else {
        parsed
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
        assert_eq!(
            ns.get("chat").presence,
            plaza_rooms::config::PresenceMode::Counts
        );
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

    /// Found by `edge/tests/fuzz_config.rs`: `PLAZA_AUTH__LEEWAY="60 years"` loaded, and
    /// then verifying any token panicked (jsonwebtoken's `now - leeway` overflowed).
    #[test]
    fn auth_leeway_of_60_years_is_refused_naming_the_key() {
        let mut env = secret_env();
        env.push(("PLAZA_AUTH__LEEWAY".into(), "60 years".into()));
        let e = EdgeConfig::load(None, env, &[]).unwrap_err();
        assert_eq!(e.key, "auth.leeway", "{e}");
        let c = EdgeConfig::load(None, secret_env(), &[("auth.leeway", "1day".into())]).unwrap();
        assert_eq!(c.auth.leeway, crate::auth::MAX_LEEWAY);
    }

    #[test]
    fn unrelated_plaza_variables_are_ignored_and_digit_secrets_stay_text() {
        let env = vec![
            ("PLAZA_CONFIG".to_owned(), "/etc/plaza.toml".to_owned()),
            ("PLAZA_URL".to_owned(), "https://x".to_owned()),
            ("PLAZA_LOG".to_owned(), "debug".to_owned()),
            ("PLAZA_AUTH__HMAC_SECRET".to_owned(), "1".repeat(40)),
            ("PLAZA_CLIENT__MAX_ROOMS".to_owned(), "7".to_owned()),
        ];
        let c = EdgeConfig::load(None, env, &[]).unwrap();
        assert_eq!(c.auth.hmac_secret.unwrap().0, "1".repeat(40));
        assert_eq!(c.client.max_rooms, 7);
        let e = EdgeConfig::load(
            None,
            [("PLAZA_CLIENT__TYPO".to_owned(), "1".to_owned())],
            &[],
        )
        .unwrap_err();
        assert_eq!(e.key, "client.typo");
    }

    #[test]
    fn a_partial_defaults_section_inherits_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.toml");
        std::fs::write(
            &path,
            "[rooms.defaults]\nhistory_size = 7\nallow = [\"subscribe\"]\n",
        )
        .unwrap();
        let c = EdgeConfig::load(Some(&path), secret_env(), &[]).unwrap();
        assert_eq!(c.rooms.defaults.history_size, 7);
        assert_eq!(
            c.rooms.defaults.presence,
            plaza_rooms::config::PresenceMode::Full
        );
    }

    #[test]
    fn the_example_config_in_the_repository_is_valid() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plaza.example.toml");
        let c = EdgeConfig::load(Some(&path), secret_env(), &[]).unwrap();
        assert_eq!(
            c.rooms.namespaces().get("live").presence,
            plaza_rooms::config::PresenceMode::Counts
        );
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let c = EdgeConfig::load(None, secret_env(), &[]).unwrap();
        assert!(!format!("{c:?}").contains(&"x".repeat(32)));
    }
}
