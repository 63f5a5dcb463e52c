//! `[webhooks]`: where lifecycle events are POSTed, how they are signed, retried and given up
//! on. Config only: clients can never add or change an endpoint.

use std::time::Duration;

use plaza_proto::events::EventType;
use plaza_rooms::config::duration;
use serde::{Deserialize, Serialize};

use super::{ConfigError, Secret};

/// `[webhooks]`. With no endpoints, nothing is sent and no edge claims the sender role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// The HMAC-SHA256 key every delivery is signed with (`Plaza-Signature`); required when
    /// endpoints are configured. Never logged.
    pub secret: Option<Secret>,
    /// The endpoints; each gets every matching event, in feed order, in batches.
    pub endpoints: Vec<WebhookEndpoint>,
    /// The sender's claim: one edge of the whole deployment sends, renewing its claim every
    /// third of this; if it dies another edge takes over once the claim runs out.
    #[serde(with = "duration")]
    pub lease: Duration,
    /// Most events in one POST.
    pub max_batch: u32,
    /// How long one POST may take (connect included) before it counts as failed.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// First wait before retrying a failed POST; doubled per failure (with jitter).
    #[serde(with = "duration")]
    pub retry_initial: Duration,
    /// Longest wait between retries.
    #[serde(with = "duration")]
    pub retry_max: Duration,
    /// How long a batch is retried before it is given up on (counted and logged; the events
    /// stay in the feed for `rooms.events.retention`).
    #[serde(with = "duration")]
    pub retry_window: Duration,
    /// How often an idle sender reads the feed for new events.
    #[serde(with = "duration")]
    pub poll_interval: Duration,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            secret: None,
            endpoints: Vec::new(),
            lease: Duration::from_secs(10),
            max_batch: 100,
            timeout: Duration::from_secs(5),
            retry_initial: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            retry_window: Duration::from_secs(600),
            poll_interval: Duration::from_millis(250),
        }
    }
}

/// One webhook endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpoint {
    /// A stable name: its delivery position is kept under it (renaming restarts delivery from
    /// the oldest retained event). Also the `endpoint` label of its metrics.
    pub name: String,
    /// `https://` (or `http://`) URL the batches are POSTed to. Redirects are not followed.
    pub url: String,
    /// Only room events of these namespaces (all when empty). `user.online`/`user.offline`
    /// belong to no room and are sent whenever `types` allows them.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Only these event types (all when empty).
    #[serde(default)]
    pub types: Vec<EventType>,
}

impl WebhooksConfig {
    /// Checks the section; the error names the key.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.endpoints.is_empty() {
            return Ok(());
        }
        if self.secret.as_ref().is_none_or(|s| s.0.len() < 16) {
            return Err(ConfigError::new(
                "webhooks.secret",
                "must be set, at least 16 bytes, when endpoints are configured",
            ));
        }
        let positive = [
            ("webhooks.lease", self.lease),
            ("webhooks.timeout", self.timeout),
            ("webhooks.retry_initial", self.retry_initial),
            ("webhooks.retry_max", self.retry_max),
            ("webhooks.poll_interval", self.poll_interval),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, d)| d.is_zero()) {
            return Err(ConfigError::new(*key, "must be positive"));
        }
        if self.max_batch == 0 {
            return Err(ConfigError::new("webhooks.max_batch", "must be at least 1"));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, e) in self.endpoints.iter().enumerate() {
            let key = format!("webhooks.endpoints[{i}]");
            if e.name.is_empty() || e.name.len() > 64 || !names.insert(e.name.as_str()) {
                return Err(ConfigError::new(
                    format!("{key}.name"),
                    "must be 1-64 bytes and unique",
                ));
            }
            let scheme = e.url.split_once("://").map(|(s, _)| s);
            if !matches!(scheme, Some("https" | "http")) || reqwest::Url::parse(&e.url).is_err() {
                return Err(ConfigError::new(
                    format!("{key}.url"),
                    "must be an http:// or https:// URL",
                ));
            }
        }
        Ok(())
    }
}
