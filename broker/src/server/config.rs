//! The `plaza-broker` configuration: typed, every default in one place, validated once.
//!
//! Layers, later ones win: built-in defaults → TOML file (`--config`) → command-line flags
//! (given to [`BrokerConfig::load`] as `(key path, value)` pairs). Errors name the key; `main`
//! exits with [`EXIT_BAD_CONFIG`] on any of them.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use plaza_process::{ConfigError, EXIT_BAD_CONFIG, LogFormat};
use serde::{Deserialize, Serialize};

use crate::raft::{NodeId, RaftNodeConfig};
use plaza_rooms::config::{RoomsConfig, duration};

/// The whole broker configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    /// This node's Raft id (≥ 1); required unless taken from the hostname.
    pub node_id: Option<NodeId>,
    /// UDP address of the QUIC endpoint: Raft between brokers and edge attachments (by
    /// ALPN); port 0 picks one.
    pub raft_listen: SocketAddr,
    /// TCP address of `/status`, `/healthz`, `/readyz` and `/metrics`.
    pub http_listen: SocketAddr,
    /// Where the Raft log and snapshots live; required unless `in_memory`.
    pub data_dir: Option<PathBuf>,
    /// Keep nothing on disk (tests only: such a node must never rejoin under the same id).
    pub in_memory: bool,
    /// The cluster's initial voters. The node with the lowest id initializes the cluster with
    /// all of them when it has no Raft state yet; the others wait to be contacted. A node not
    /// in the list never initializes: it waits to be added with `POST /admin/members`.
    /// Empty: a single-node cluster of this node alone.
    pub peers: Vec<PeerConfig>,
    /// Bearer token of `POST /admin/members`; unset disables the endpoint.
    pub admin_token: Option<Secret>,
    /// The node's TLS identity (all three required).
    pub tls: TlsConfig,
    /// Log format.
    pub log_format: LogFormat,
    /// Longest a shutdown may take before the process exits anyway.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// Raft timing and batching.
    pub raft: RaftConfig,
    /// `[edges]`: limits and timings of attached edges.
    pub edges: crate::serve_edges::EdgeOptions,
    /// Room namespaces: must be the same on every broker (and the edges).
    pub rooms: RoomsConfig,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            node_id: None,
            raft_listen: SocketAddr::from(([0, 0, 0, 0], 7000)),
            http_listen: SocketAddr::from(([0, 0, 0, 0], 7080)),
            data_dir: None,
            in_memory: false,
            peers: Vec::new(),
            admin_token: None,
            tls: TlsConfig::default(),
            log_format: LogFormat::Text,
            shutdown_grace: Duration::from_secs(10),
            raft: RaftConfig::default(),
            edges: crate::serve_edges::EdgeOptions::default(),
            rooms: RoomsConfig::default(),
        }
    }
}

/// A secret value: never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One initial cluster member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its node id.
    pub id: NodeId,
    /// Its QUIC address as the other brokers dial it (`host:port`; the host is also the name
    /// its certificate is checked against).
    pub addr: String,
}

/// PEM files of the node's identity (see `plaza-broker cert`). In `cert` and `key`,
/// [`NODE_ID_PLACEHOLDER`] stands for the node id, so brokers sharing one config (a
/// StatefulSet with `--node-id-from-hostname`) each load their own certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The cluster CA certificate.
    pub ca: Option<PathBuf>,
    /// This node's certificate.
    pub cert: Option<PathBuf>,
    /// This node's private key.
    pub key: Option<PathBuf>,
}

/// Replaced by the node id in `tls.cert` and `tls.key`.
pub const NODE_ID_PLACEHOLDER: &str = "{node_id}";

impl TlsConfig {
    /// Replaces [`NODE_ID_PLACEHOLDER`] in the certificate and key paths with `id`.
    pub fn resolve_node_id(&mut self, id: NodeId) {
        for path in [&mut self.cert, &mut self.key].into_iter().flatten() {
            let text = path.to_string_lossy();
            if text.contains(NODE_ID_PLACEHOLDER) {
                *path = PathBuf::from(text.replace(NODE_ID_PLACEHOLDER, &id.to_string()));
            }
        }
    }
}

/// The `[raft]` section: the knobs of [`RaftNodeConfig`] worth exposing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    /// Leader heartbeat period.
    #[serde(with = "duration")]
    pub heartbeat_interval: Duration,
    /// Shortest election timeout.
    #[serde(with = "duration")]
    pub election_timeout_min: Duration,
    /// Longest election timeout.
    #[serde(with = "duration")]
    pub election_timeout_max: Duration,
    /// Log entries since the last snapshot that trigger a new one.
    pub snapshot_every: u64,
    /// Most commands in one log entry.
    pub max_batch: usize,
    /// Most bytes of commands in one log entry: an entry must replicate within one heartbeat
    /// interval (openraft's deadline for an AppendEntries) and fit a frame.
    pub max_batch_bytes: usize,
    /// How long a proposal waits for commit.
    #[serde(with = "duration")]
    pub propose_timeout: Duration,
    /// How often the leader commits a tick (leases, TTLs, GC).
    #[serde(with = "duration")]
    pub tick: Duration,
}

impl Default for RaftConfig {
    fn default() -> Self {
        let node = RaftNodeConfig::default();
        let snapshot_every = match node.raft.snapshot_policy {
            openraft::SnapshotPolicy::LogsSinceLast(n) => n,
            openraft::SnapshotPolicy::Never => 5000,
        };
        Self {
            heartbeat_interval: Duration::from_millis(node.raft.heartbeat_interval),
            election_timeout_min: Duration::from_millis(node.raft.election_timeout_min),
            election_timeout_max: Duration::from_millis(node.raft.election_timeout_max),
            snapshot_every,
            max_batch: node.max_batch,
            max_batch_bytes: node.max_batch_bytes,
            propose_timeout: node.propose_timeout,
            tick: node.tick.unwrap_or(Duration::from_secs(1)),
        }
    }
}

impl BrokerConfig {
    /// Builds the configuration from a TOML file (if any) and flag overrides (`(key path,
    /// TOML value or string)` pairs), then validates it.
    pub fn load(file: Option<&Path>, overrides: &[(&str, String)]) -> Result<Self, ConfigError> {
        let mut table = plaza_process::read_file(file)?;
        plaza_process::apply_overrides(&mut table, overrides)?;
        let mut config: BrokerConfig = plaza_process::deserialize(table)?;
        config.validate()?;
        config.tls.resolve_node_id(config.id());
        Ok(config)
    }

    /// The node id (validated to be set).
    pub fn id(&self) -> NodeId {
        self.node_id.unwrap_or_default()
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.node_id {
            None => {
                return Err(ConfigError::new(
                    "node_id",
                    "required (or pass --node-id-from-hostname)",
                ));
            }
            Some(0) => return Err(ConfigError::new("node_id", "must be at least 1")),
            Some(_) => {}
        }
        match (&self.data_dir, self.in_memory) {
            (None, false) => {
                return Err(ConfigError::new(
                    "data_dir",
                    "required (or set in_memory = true for tests)",
                ));
            }
            (Some(_), true) => {
                return Err(ConfigError::new(
                    "in_memory",
                    "cannot be combined with data_dir",
                ));
            }
            _ => {}
        }
        let mut seen = BTreeSet::new();
        for (i, peer) in self.peers.iter().enumerate() {
            if peer.id == 0 {
                return Err(ConfigError::new(
                    format!("peers[{i}].id"),
                    "must be at least 1",
                ));
            }
            if !seen.insert(peer.id) {
                return Err(ConfigError::new(
                    format!("peers[{i}].id"),
                    format!("node {} is listed twice", peer.id),
                ));
            }
            if peer
                .addr
                .rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                return Err(ConfigError::new(
                    format!("peers[{i}].addr"),
                    format!("{:?} is not host:port", peer.addr),
                ));
            }
        }
        if let Some(token) = &self.admin_token
            && token.0.len() < 16
        {
            return Err(ConfigError::new(
                "admin_token",
                "must be at least 16 characters",
            ));
        }
        for (key, value) in [
            ("tls.ca", &self.tls.ca),
            ("tls.cert", &self.tls.cert),
            ("tls.key", &self.tls.key),
        ] {
            if value.is_none() {
                return Err(ConfigError::new(key, "required (see `plaza-broker cert`)"));
            }
        }
        let r = &self.raft;
        if r.heartbeat_interval.is_zero() {
            return Err(ConfigError::new("raft.heartbeat_interval", "must not be 0"));
        }
        if r.election_timeout_min <= r.heartbeat_interval {
            return Err(ConfigError::new(
                "raft.election_timeout_min",
                "must be longer than raft.heartbeat_interval",
            ));
        }
        if r.election_timeout_max <= r.election_timeout_min {
            return Err(ConfigError::new(
                "raft.election_timeout_max",
                "must be longer than raft.election_timeout_min",
            ));
        }
        if r.max_batch == 0 {
            return Err(ConfigError::new("raft.max_batch", "must be at least 1"));
        }
        let frame = plaza_proto::codec::MAX_FRAME;
        if r.max_batch_bytes < 64 * 1024 || r.max_batch_bytes > frame / 4 {
            return Err(ConfigError::new(
                "raft.max_batch_bytes",
                format!(
                    "must be 64 KiB..={} bytes (a quarter of a frame)",
                    frame / 4
                ),
            ));
        }
        let largest = self.rooms.largest_message_bytes();
        if largest > r.max_batch_bytes / 2 {
            return Err(ConfigError::new(
                "rooms",
                format!(
                    "max_message_bytes of {largest} is more than half of raft.max_batch_bytes ({})",
                    r.max_batch_bytes
                ),
            ));
        }
        if r.snapshot_every == 0 {
            return Err(ConfigError::new(
                "raft.snapshot_every",
                "must be at least 1",
            ));
        }
        if r.tick.is_zero() {
            return Err(ConfigError::new("raft.tick", "must not be 0"));
        }
        let e = &self.edges;
        if e.event_queue == 0 {
            return Err(ConfigError::new("edges.event_queue", "must be at least 1"));
        }
        if e.max_inflight_calls == 0 {
            return Err(ConfigError::new(
                "edges.max_inflight_calls",
                "must be at least 1",
            ));
        }
        if e.hello_timeout.is_zero() {
            return Err(ConfigError::new("edges.hello_timeout", "must not be 0"));
        }
        if e.max_lease < e.min_lease {
            return Err(ConfigError::new(
                "edges.max_lease",
                "must not be shorter than edges.min_lease",
            ));
        }
        if e.renew_every.is_zero() || e.renew_every >= e.min_lease {
            return Err(ConfigError::new(
                "edges.renew_every",
                "must be more than 0 and shorter than edges.min_lease",
            ));
        }
        self.rooms.validate().map_err(|m| {
            // The message starts with the key: `rooms.defaults.history_ttl must be ...`.
            let (key, message) = m.split_once(' ').unwrap_or(("rooms", &m));
            ConfigError::new(key.trim_end_matches(':'), message)
        })?;
        Ok(())
    }

    /// The Raft node's settings.
    pub fn raft_node_config(&self) -> RaftNodeConfig {
        let r = &self.raft;
        let mut node = RaftNodeConfig {
            rooms: self.rooms.clone(),
            max_batch: r.max_batch,
            max_batch_bytes: r.max_batch_bytes,
            propose_timeout: r.propose_timeout,
            tick: Some(r.tick),
            ..RaftNodeConfig::default()
        };
        node.raft.heartbeat_interval = millis(r.heartbeat_interval);
        node.raft.election_timeout_min = millis(r.election_timeout_min);
        node.raft.election_timeout_max = millis(r.election_timeout_max);
        node.raft.snapshot_policy = openraft::SnapshotPolicy::LogsSinceLast(r.snapshot_every);
        node
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The node id of a StatefulSet pod: its hostname's trailing ordinal plus one
/// (`plaza-broker-0` → 1, `plaza-broker-2` → 3), since Raft ids start at 1.
pub fn node_id_from_hostname(hostname: &str) -> Result<NodeId, ConfigError> {
    let hostname = hostname.trim();
    // A pod's FQDN may be given: the ordinal ends the first label.
    let name = hostname.split('.').next().unwrap_or(hostname);
    name.rsplit_once('-')
        .and_then(|(_, ordinal)| ordinal.parse::<NodeId>().ok())
        .and_then(|ordinal| ordinal.checked_add(1))
        .ok_or_else(|| {
            ConfigError::new(
                "node_id",
                format!("hostname {hostname:?} does not end in -<ordinal>"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Vec<(&'static str, String)> {
        vec![
            ("node_id", "2".into()),
            ("in_memory", "true".into()),
            ("tls.ca", "ca.pem".into()),
            ("tls.cert", "node.pem".into()),
            ("tls.key", "node.key".into()),
        ]
    }

    #[test]
    fn the_node_id_placeholder_in_tls_paths_becomes_the_node_id() {
        let mut overrides = base();
        overrides.retain(|(k, _)| *k != "tls.cert" && *k != "tls.key");
        overrides.push(("tls.cert", "/tls/broker-{node_id}.pem".into()));
        overrides.push(("tls.key", "/tls/broker-{node_id}.key".into()));
        let config = BrokerConfig::load(None, &overrides).unwrap();
        assert_eq!(config.tls.cert, Some(PathBuf::from("/tls/broker-2.pem")));
        assert_eq!(config.tls.key, Some(PathBuf::from("/tls/broker-2.key")));
    }

    #[test]
    fn a_file_with_peers_and_timing_loads_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broker.toml");
        std::fs::write(
            &path,
            "node_id = 1\nraft_listen = \"127.0.0.1:7001\"\n\
             peers = [{ id = 1, addr = \"127.0.0.1:7001\" }, { id = 2, addr = \"b:7000\" }]\n\
             [raft]\nheartbeat_interval = \"50ms\"\n[rooms.namespaces.chat]\npresence = \"counts\"\n",
        )
        .unwrap();
        let c = BrokerConfig::load(Some(&path), &base()).unwrap();
        assert_eq!(c.id(), 2);
        assert_eq!(c.peers.len(), 2);
        assert_eq!(c.raft.heartbeat_interval, Duration::from_millis(50));
        assert_eq!(c.raft_node_config().raft.heartbeat_interval, 50);
    }

    #[test]
    fn errors_name_the_key() {
        let mut flags = base();
        flags.push(("raft.tick", "soon".into()));
        assert_eq!(
            BrokerConfig::load(None, &flags).unwrap_err().key,
            "raft.tick"
        );

        let mut flags = base();
        flags.retain(|(k, _)| *k != "node_id");
        assert_eq!(BrokerConfig::load(None, &flags).unwrap_err().key, "node_id");

        let mut flags = base();
        flags.retain(|(k, _)| *k != "in_memory");
        assert_eq!(
            BrokerConfig::load(None, &flags).unwrap_err().key,
            "data_dir"
        );

        let mut flags = base();
        flags.retain(|(k, _)| *k != "tls.key");
        assert_eq!(BrokerConfig::load(None, &flags).unwrap_err().key, "tls.key");

        let mut flags = base();
        flags.push((
            "peers",
            "[{ id = 1, addr = \"a:1\" }, { id = 1, addr = \"b:1\" }]".into(),
        ));
        assert_eq!(
            BrokerConfig::load(None, &flags).unwrap_err().key,
            "peers[1].id"
        );

        let mut flags = base();
        flags.push(("admin_token", "short".into()));
        assert_eq!(
            BrokerConfig::load(None, &flags).unwrap_err().key,
            "admin_token"
        );

        let mut flags = base();
        flags.push(("peers", "[{ id = 2, addr = \"nope\" }]".into()));
        assert_eq!(
            BrokerConfig::load(None, &flags).unwrap_err().key,
            "peers[0].addr"
        );

        let mut flags = base();
        flags.push(("typo", "1".into()));
        assert_eq!(BrokerConfig::load(None, &flags).unwrap_err().key, "typo");

        let mut flags = base();
        flags.push(("edges.renew_every", "1s".into()));
        assert_eq!(
            BrokerConfig::load(None, &flags).unwrap_err().key,
            "edges.renew_every"
        );

        let mut flags = base();
        flags.push(("edges.event_queue", "0".into()));
        assert_eq!(
            BrokerConfig::load(None, &flags).unwrap_err().key,
            "edges.event_queue"
        );
    }

    #[test]
    fn a_statefulset_ordinal_becomes_the_node_id() {
        assert_eq!(node_id_from_hostname("plaza-broker-0").unwrap(), 1);
        assert_eq!(node_id_from_hostname("plaza-broker-2\n").unwrap(), 3);
        assert_eq!(
            node_id_from_hostname("plaza-broker-4.brokers.ns.svc").unwrap(),
            5
        );
        assert!(node_id_from_hostname("plaza-broker").is_err());
        assert!(node_id_from_hostname("broker-x").is_err());
    }
}
