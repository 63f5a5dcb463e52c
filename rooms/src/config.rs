//! Per-namespace room options, shared by the edge (limits, permissions) and the broker tier
//! (history, presence). Every default lives here.

use std::collections::BTreeMap;
use std::time::Duration;

use plaza_proto::events::EventType;
use serde::{Deserialize, Serialize};

/// How a namespace tracks presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceMode {
    /// Members with their info; `presence` and `presence_stats` both work.
    Full,
    /// Only counts (`presence_stats`); for large audiences.
    Counts,
    /// No presence at all.
    Off,
}

/// Whether and how a namespace carries ephemeral publications (see DESIGN.md §2.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EphemeralMode {
    /// Refused: every publication is durable (`ephemeral: true` gets error 115).
    Off,
    /// A publish is durable unless it says `ephemeral: true`.
    Allowed,
    /// A publish is ephemeral unless it says `ephemeral: false` (typing, cursor namespaces).
    Default,
}

impl EphemeralMode {
    /// Whether a publish asking for `requested` (`None`: not said) is ephemeral; `None` if it
    /// asks for an ephemeral publication where they are off.
    pub fn resolve(self, requested: Option<bool>) -> Option<bool> {
        match (self, requested) {
            (Self::Off, Some(true)) => None,
            (_, Some(asked)) => Some(asked),
            (Self::Default, None) => Some(true),
            (Self::Off | Self::Allowed, None) => Some(false),
        }
    }
}

/// Options of one namespace, fully resolved. Unset fields take the built-in defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NamespaceOptions {
    /// Publications kept per room for recovery and `history` (0 = none).
    pub history_size: usize,
    /// How long a publication stays in history.
    #[serde(with = "crate::config::duration")]
    pub history_ttl: Duration,
    /// Presence tracking.
    pub presence: PresenceMode,
    /// Whether join/leave events are emitted (only with `presence = "full"`).
    pub join_leave: bool,
    /// Whether clients may publish (otherwise only the server API can).
    pub client_publish: bool,
    /// Largest publication `data`, in bytes of JSON text.
    pub max_message_bytes: usize,
    /// Capabilities every authenticated user has on every room of the namespace, in addition to
    /// those in the token: any of `subscribe`, `publish`, `presence`.
    pub allow: Vec<String>,
    /// Room-scoped lifecycle events the namespace's rooms emit into the event feed
    /// (`room.*`, `member.*`, `user.joined`, `user.left`); see `docs/webhooks.md`.
    pub events: Vec<EventType>,
    /// Ephemeral publications: `off`, `allowed` (opt in per publish) or `default`.
    pub ephemeral: EphemeralMode,
    /// Live-state rooms (`[rooms.namespaces.<ns>.state]`): off unless `enabled`.
    pub state: StateOptions,
}

/// Largest map a state room may hold (`max_keys × max_value_bytes`), in bytes: a `subscribe`
/// reply carries it whole.
pub const MAX_STATE_BYTES: usize = 16 * 1024 * 1024;

/// A namespace's live-state room options (see `plaza_proto::state`). A state namespace's rooms
/// hold a map key → JSON value; `history_size` is how many changes `recover` can replay
/// before it answers with a fresh snapshot instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateOptions {
    /// Whether the namespace's rooms are state rooms (then `publish` is refused in them).
    pub enabled: bool,
    /// Most keys one room holds; a `set` of a new key beyond it is refused (117).
    pub max_keys: usize,
    /// Largest value, in bytes of JSON text (109 beyond).
    pub max_value_bytes: usize,
    /// Longest per-key TTL a `set` may ask for.
    #[serde(with = "crate::config::duration")]
    pub max_ttl: Duration,
    /// Conflation: at most this many pushes of a room's changes per second to each edge's
    /// subscribers, each carrying the latest value of every key changed since the last one
    /// (0 = every change is pushed).
    pub conflate_per_second: u32,
}

impl Default for StateOptions {
    fn default() -> Self {
        Self {
            enabled: false,
            max_keys: 1000,
            max_value_bytes: 4096,
            max_ttl: Duration::from_secs(24 * 3600),
            conflate_per_second: 0,
        }
    }
}

impl NamespaceOptions {
    /// The largest JSON value the namespace carries: a publication, or in a state namespace a
    /// change record (a value with its key).
    pub fn largest_payload(&self) -> usize {
        let state = if self.state.enabled {
            self.state.max_value_bytes + plaza_proto::state::MAX_STATE_KEY_LEN * 6 + 32
        } else {
            0
        };
        self.max_message_bytes.max(state)
    }
}

/// The room-scoped events a namespace emits unless configured otherwise: the debounced ones
/// (`member.*` are one per connection and opt-in).
pub fn default_room_events() -> Vec<EventType> {
    vec![
        EventType::RoomOccupied,
        EventType::RoomVacated,
        EventType::UserJoined,
        EventType::UserLeft,
    ]
}

impl Default for NamespaceOptions {
    fn default() -> Self {
        Self {
            history_size: 100,
            history_ttl: Duration::from_secs(300),
            presence: PresenceMode::Full,
            join_leave: true,
            client_publish: true,
            max_message_bytes: 64 * 1024,
            allow: Vec::new(),
            events: default_room_events(),
            ephemeral: EphemeralMode::Allowed,
            state: StateOptions::default(),
        }
    }
}

/// A namespace's options as written in config: unset fields inherit from the defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceOverrides {
    /// See [`NamespaceOptions::history_size`].
    pub history_size: Option<usize>,
    /// See [`NamespaceOptions::history_ttl`].
    #[serde(default, with = "crate::config::duration::option")]
    pub history_ttl: Option<Duration>,
    /// See [`NamespaceOptions::presence`].
    pub presence: Option<PresenceMode>,
    /// See [`NamespaceOptions::join_leave`].
    pub join_leave: Option<bool>,
    /// See [`NamespaceOptions::client_publish`].
    pub client_publish: Option<bool>,
    /// See [`NamespaceOptions::max_message_bytes`].
    pub max_message_bytes: Option<usize>,
    /// See [`NamespaceOptions::allow`].
    pub allow: Option<Vec<String>>,
    /// See [`NamespaceOptions::events`].
    pub events: Option<Vec<EventType>>,
    /// See [`NamespaceOptions::ephemeral`].
    pub ephemeral: Option<EphemeralMode>,
    /// See [`NamespaceOptions::state`] (a whole table: unset fields take the built-in
    /// defaults, not `rooms.defaults.state`).
    pub state: Option<StateOptions>,
}

impl NamespaceOverrides {
    fn resolve(&self, d: &NamespaceOptions) -> NamespaceOptions {
        NamespaceOptions {
            history_size: self.history_size.unwrap_or(d.history_size),
            history_ttl: self.history_ttl.unwrap_or(d.history_ttl),
            presence: self.presence.unwrap_or(d.presence),
            join_leave: self.join_leave.unwrap_or(d.join_leave),
            client_publish: self.client_publish.unwrap_or(d.client_publish),
            max_message_bytes: self.max_message_bytes.unwrap_or(d.max_message_bytes),
            allow: self.allow.clone().unwrap_or_else(|| d.allow.clone()),
            events: self.events.clone().unwrap_or_else(|| d.events.clone()),
            ephemeral: self.ephemeral.unwrap_or(d.ephemeral),
            state: self.state.clone().unwrap_or_else(|| d.state.clone()),
        }
    }
}

/// The `[rooms]` config section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomsConfig {
    /// Options for namespaces not listed in `namespaces` (and rooms without a `:`).
    pub defaults: NamespaceOptions,
    /// Per-namespace overrides, by namespace name.
    pub namespaces: BTreeMap<String, NamespaceOverrides>,
    /// How long an `idem` key is remembered.
    #[serde(with = "crate::config::duration")]
    pub idempotency_window: Duration,
    /// A room with no members and no history is forgotten after this long without activity.
    #[serde(with = "crate::config::duration")]
    pub room_idle_ttl: Duration,
    /// The lifecycle event feed (`[rooms.events]`).
    pub events: EventsConfig,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self {
            defaults: NamespaceOptions::default(),
            namespaces: BTreeMap::new(),
            idempotency_window: Duration::from_secs(120),
            room_idle_ttl: Duration::from_secs(3600),
            events: EventsConfig::default(),
        }
    }
}

/// The `[rooms.events]` section: the lifecycle event feed kept by the broker tier. Every node
/// of a broker tier must use the same values (they decide what the replicated state holds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// How long a user's or a room's "last one left" waits for a comeback before `user.left`,
    /// `room.vacated` or `user.offline` is emitted (a reload inside it emits nothing). Checked on
    /// the state machine's ticks, so events come up to one tick later. 0 emits at once.
    #[serde(with = "crate::config::duration")]
    pub debounce: Duration,
    /// How long events stay in the feed.
    #[serde(with = "crate::config::duration")]
    pub retention: Duration,
    /// Most events the feed holds; the oldest are dropped beyond it.
    pub max_retained: usize,
    /// Whether `user.online` / `user.offline` are emitted (counting a user's connections in
    /// every room with presence, whatever its namespace).
    pub user_online: bool,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            debounce: Duration::from_secs(3),
            retention: Duration::from_secs(3600),
            max_retained: 100_000,
            user_online: true,
        }
    }
}

impl RoomsConfig {
    /// Resolves every namespace against the defaults.
    pub fn namespaces(&self) -> Namespaces {
        Namespaces {
            defaults: self.defaults.clone(),
            by_name: self
                .namespaces
                .iter()
                .map(|(name, o)| (name.clone(), o.resolve(&self.defaults)))
                .collect(),
        }
    }

    /// The largest `max_message_bytes` of any namespace (the defaults included).
    pub fn largest_message_bytes(&self) -> usize {
        self.namespaces
            .values()
            .map(|o| o.resolve(&self.defaults).largest_payload())
            .chain(std::iter::once(self.defaults.largest_payload()))
            .max()
            .unwrap_or(0)
    }

    /// Checks values that parse but make no sense; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        let all = std::iter::once(("rooms.defaults".to_owned(), self.defaults.clone())).chain(
            self.namespaces
                .iter()
                .map(|(n, o)| (format!("rooms.namespaces.{n}"), o.resolve(&self.defaults))),
        );
        for (key, ns) in all {
            if ns.max_message_bytes == 0 {
                return Err(format!("{key}.max_message_bytes must be at least 1"));
            }
            if ns.state.enabled {
                if ns.state.max_keys == 0 || ns.state.max_value_bytes == 0 {
                    return Err(format!(
                        "{key}.state.max_keys and max_value_bytes must be at least 1"
                    ));
                }
                if ns.state.max_keys.saturating_mul(ns.state.max_value_bytes) > MAX_STATE_BYTES {
                    return Err(format!(
                        "{key}.state: max_keys × max_value_bytes must be at most {MAX_STATE_BYTES} \
                         (a subscribe reply carries the whole map)"
                    ));
                }
                if ns.state.max_ttl.is_zero() {
                    return Err(format!("{key}.state.max_ttl must be positive"));
                }
                if ns.state.conflate_per_second > 1000 {
                    return Err(format!(
                        "{key}.state.conflate_per_second must be at most 1000 (0 = off)"
                    ));
                }
            }
            if ns.history_size > 0 && ns.history_ttl.is_zero() {
                return Err(format!(
                    "{key}.history_ttl must be positive when history_size > 0"
                ));
            }
            if let Some(cap) = ns
                .allow
                .iter()
                .find(|c| !matches!(c.as_str(), "subscribe" | "publish" | "presence"))
            {
                return Err(format!(
                    "{key}.allow: unknown capability {cap:?} (expected subscribe, publish, presence)"
                ));
            }
        }
        for name in self.namespaces.keys() {
            if name.contains(':') || plaza_proto::RoomName::new(&format!("{name}:x")).is_err() {
                return Err(format!(
                    "rooms.namespaces.{name}: not a valid namespace name"
                ));
            }
        }
        for (key, ns) in std::iter::once(("rooms.defaults".to_owned(), self.defaults.clone()))
            .chain(
                self.namespaces
                    .iter()
                    .map(|(n, o)| (format!("rooms.namespaces.{n}"), o.resolve(&self.defaults))),
            )
        {
            if let Some(t) = ns.events.iter().find(|t| !t.is_room_scoped()) {
                return Err(format!(
                    "{key}.events lists {t}, which is not per namespace (see rooms.events.user_online)"
                ));
            }
        }
        if self.events.retention.is_zero() {
            return Err("rooms.events.retention must be positive".into());
        }
        if self.events.max_retained == 0 {
            return Err("rooms.events.max_retained must be at least 1".into());
        }
        if self.idempotency_window.is_zero() {
            return Err("rooms.idempotency_window must be positive".into());
        }
        Ok(())
    }
}

/// Resolved options for every namespace; cheap lookups by room.
#[derive(Debug, Clone, PartialEq)]
pub struct Namespaces {
    defaults: NamespaceOptions,
    by_name: BTreeMap<String, NamespaceOptions>,
}

impl Namespaces {
    /// The options of `namespace` (the defaults if it is not configured).
    pub fn get(&self, namespace: &str) -> &NamespaceOptions {
        self.by_name.get(namespace).unwrap_or(&self.defaults)
    }

    /// The options of the namespace `room` belongs to.
    pub fn of(&self, room: &plaza_proto::RoomName) -> &NamespaceOptions {
        self.get(room.namespace())
    }
}

impl Default for Namespaces {
    fn default() -> Self {
        RoomsConfig::default().namespaces()
    }
}

/// serde for `Duration` as human-readable strings: `"250ms"`, `"25s"`, `"2m"`, `"1h 30m"`.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes as e.g. `"2m 30s"`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Parses e.g. `"2m 30s"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }

    fn parse(s: &str) -> Result<Duration, String> {
        humantime::parse_duration(s).map_err(|e| {
            format!("invalid duration {s:?} ({e}); use e.g. \"500ms\", \"25s\", \"2m\"")
        })
    }

    /// For `Option<Duration>` fields.
    pub mod option {
        use std::time::Duration;

        use serde::{Deserializer, Serializer};

        /// Serializes `Some` as a duration string and `None` as none.
        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.serialize_some(&humantime::format_duration(*d).to_string()),
                None => s.serialize_none(),
            }
        }

        /// Parses a duration string; `null` / none is `None`.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            use serde::Deserialize;
            match Option::<String>::deserialize(d)? {
                None => Ok(None),
                Some(s) => super::parse(&s).map(Some).map_err(serde::de::Error::custom),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ephemeral_mode_resolves_a_publish_flag_against_the_namespace() {
        use EphemeralMode::*;
        assert_eq!(Off.resolve(None), Some(false));
        assert_eq!(Off.resolve(Some(false)), Some(false));
        assert_eq!(Off.resolve(Some(true)), None);
        assert_eq!(Allowed.resolve(None), Some(false));
        assert_eq!(Allowed.resolve(Some(true)), Some(true));
        assert_eq!(Default.resolve(None), Some(true));
        assert_eq!(Default.resolve(Some(false)), Some(false));
        let c: NamespaceOverrides = serde_json::from_str(r#"{"ephemeral":"default"}"#).unwrap();
        assert_eq!(c.ephemeral, Some(Default));
    }

    #[test]
    fn rooms_config_round_trips_through_json_and_postcard() {
        let mut c = RoomsConfig::default();
        c.namespaces.insert(
            "chat".into(),
            NamespaceOverrides {
                history_ttl: Some(Duration::from_secs(90)),
                ..Default::default()
            },
        );
        c.namespaces
            .insert("plain".into(), NamespaceOverrides::default());
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<RoomsConfig>(&json).unwrap(), c);
        let bin = postcard::to_stdvec(&c).unwrap();
        assert_eq!(postcard::from_bytes::<RoomsConfig>(&bin).unwrap(), c);
    }
}
