//! Checks of values that parse but cannot work together; errors name the key.

use std::time::Duration;

use super::*;

impl EdgeConfig {
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
        if c.max_reply_bytes < 1024 {
            return Err(ConfigError::new(
                "client.max_reply_bytes",
                "must be at least 1024",
            ));
        }
        if c.max_pending_reply_bytes == 0 {
            return Err(ConfigError::new(
                "client.max_pending_reply_bytes",
                "must be positive",
            ));
        }
        if c.write_timeout.is_zero() {
            return Err(ConfigError::new("client.write_timeout", "must be positive"));
        }
        if c.max_rooms == 0 {
            return Err(ConfigError::new("client.max_rooms", "must be at least 1"));
        }
        if c.read_buffer_bytes < 512 {
            return Err(ConfigError::new(
                "client.read_buffer_bytes",
                "must be at least 512",
            ));
        }
        if c.write_buffer_bytes < 512 {
            return Err(ConfigError::new(
                "client.write_buffer_bytes",
                "must be at least 512",
            ));
        }
        if c.permessage_deflate && c.websocket != WebSocketImpl::Lean {
            return Err(ConfigError::new(
                "client.permessage_deflate",
                "needs client.websocket = \"lean\" (tungstenite has no permessage-deflate)",
            ));
        }
        if self.broker.lease < Duration::from_millis(100) {
            return Err(ConfigError::new("broker.lease", "must be at least 100ms"));
        }
        if self.backend == BackendKind::Cluster {
            if self.broker.brokers.is_empty() {
                return Err(ConfigError::new(
                    "broker.brokers",
                    "backend \"cluster\" needs at least one broker address (--brokers)",
                ));
            }
            let tls = &self.broker.tls;
            for (key, value) in [("ca", &tls.ca), ("cert", &tls.cert), ("key", &tls.key)] {
                if value.is_none() {
                    return Err(ConfigError::new(
                        format!("broker.tls.{key}"),
                        "backend \"cluster\" needs the edge's TLS identity (--broker-tls-ca, \
                         --broker-tls-cert, --broker-tls-key)",
                    ));
                }
            }
        }
        if self.backend == BackendKind::Nats {
            if self.nats.servers.is_empty() {
                return Err(ConfigError::new(
                    "nats.servers",
                    "backend \"nats\" needs at least one server URL (--nats)",
                ));
            }
            for url in &self.nats.servers {
                plaza_backend::nats::check_server_url(url)
                    .map_err(|e| ConfigError::new("nats.servers", e))?;
            }
            if !matches!(self.nats.replicas, 1 | 3 | 5) {
                return Err(ConfigError::new("nats.replicas", "must be 1, 3 or 5"));
            }
            if self.nats.reap_every.is_zero() {
                return Err(ConfigError::new("nats.reap_every", "must not be 0"));
            }
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
        if self.http.header_read_timeout.is_zero() {
            return Err(ConfigError::new(
                "http.header_read_timeout",
                "must be positive",
            ));
        }
        if !(16..=128).contains(&self.limits.ipv6_prefix) {
            return Err(ConfigError::new("limits.ipv6_prefix", "must be 16..=128"));
        }
        if self.auth.leeway > crate::auth::MAX_LEEWAY {
            return Err(ConfigError::new(
                "auth.leeway",
                format!(
                    "must be at most {} (it tolerates clock skew)",
                    humantime::format_duration(crate::auth::MAX_LEEWAY)
                ),
            ));
        }
        if self.auth.max_token_bytes < 256 {
            return Err(ConfigError::new(
                "auth.max_token_bytes",
                "must be at least 256",
            ));
        }
        for (i, j) in self.auth.jwks.iter().enumerate() {
            let key = |k: &str| format!("auth.jwks[{i}].{k}");
            if j.issuer.is_empty() {
                return Err(ConfigError::new(key("issuer"), "required"));
            }
            if self.auth.jwks[..i]
                .iter()
                .any(|other| other.issuer == j.issuer)
            {
                return Err(ConfigError::new(key("issuer"), "listed twice"));
            }
            if self.auth.issuer.as_deref() == Some(j.issuer.as_str()) {
                return Err(ConfigError::new(
                    key("issuer"),
                    "equals auth.issuer; HMAC tokens naming a JWKS issuer are refused",
                ));
            }
            match &j.audience {
                None if !j.allow_any_audience => {
                    return Err(ConfigError::new(
                        key("audience"),
                        "required: the `aud` value(s) your provider puts in tokens for this \
                         application (or allow_any_audience = true to accept tokens it issued \
                         for any application)",
                    ));
                }
                Some(list) if list.is_empty() || list.iter().any(String::is_empty) => {
                    return Err(ConfigError::new(
                        key("audience"),
                        "must list at least one non-empty value",
                    ));
                }
                _ => {}
            }
            if let Some(p) = &j.user_prefix
                && plaza_proto::RoomName::new(&format!("{p}x")).is_err()
            {
                return Err(ConfigError::new(
                    key("user_prefix"),
                    "may only use characters allowed in room names",
                ));
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
            ("limits.ephemeral_per_second", l.ephemeral_per_second),
            ("limits.ephemeral_burst", l.ephemeral_burst),
            (
                "limits.presence_updates_per_second",
                l.presence_updates_per_second,
            ),
            ("limits.presence_update_burst", l.presence_update_burst),
            (
                "limits.ephemeral_per_second_per_room",
                l.ephemeral_per_second_per_room,
            ),
            (
                "limits.ephemeral_burst_per_room",
                l.ephemeral_burst_per_room,
            ),
            ("limits.state_writes_per_second", l.state_writes_per_second),
            ("limits.state_writes_burst", l.state_writes_burst),
        ] {
            if v == 0 {
                return Err(ConfigError::new(k, "must be at least 1"));
            }
        }
        let largest = self.rooms.largest_message_bytes()
            + plaza_rooms::MAX_IDEM_LEN
            + crate::limits::PUBLISH_OVERHEAD_BYTES;
        if l.publish_bytes_per_second_per_user > 0
            && (l.publish_burst_bytes_per_user as usize) < largest
        {
            return Err(ConfigError::new(
                "limits.publish_burst_bytes_per_user",
                format!(
                    "must be at least {largest} (the largest max_message_bytes + the longest \
                     idempotency key + {} bytes), or no publication of that size could pass",
                    crate::limits::PUBLISH_OVERHEAD_BYTES
                ),
            ));
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
        if self.client.max_user_presence_members == 0 {
            return Err(ConfigError::new(
                "client.max_user_presence_members",
                "must be at least 1",
            ));
        }
        if self.client.max_presence_info_bytes == 0 {
            return Err(ConfigError::new(
                "client.max_presence_info_bytes",
                "must be at least 1",
            ));
        }
        if self.client.max_presence_page == 0
            || self.client.max_presence_page > plaza_proto::cluster::MAX_PRESENCE_PAGE
        {
            return Err(ConfigError::new(
                "client.max_presence_page",
                format!("must be 1 to {}", plaza_proto::cluster::MAX_PRESENCE_PAGE),
            ));
        }
        if self.http.listen_backlog == 0 {
            return Err(ConfigError::new(
                "http.listen_backlog",
                "must be at least 1",
            ));
        }
        if let Some(i) = self.api.keys.iter().position(|k| k.0.len() < 16) {
            return Err(ConfigError::new(
                format!("api.keys[{i}]"),
                "must be at least 16 bytes",
            ));
        }
        if self.api.max_events_limit == 0 {
            return Err(ConfigError::new(
                "api.max_events_limit",
                "must be at least 1",
            ));
        }
        if self.api.events_poll_interval.is_zero() {
            return Err(ConfigError::new(
                "api.events_poll_interval",
                "must be positive",
            ));
        }
        self.webhooks.validate()?;
        self.rooms.validate().map_err(|m| {
            let (key, message) = m.split_once(": ").unwrap_or(("rooms", &m));
            ConfigError::new(key, message)
        })
    }
}
