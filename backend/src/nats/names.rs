//! How rooms, namespaces, edges and clients map onto NATS names.
//!
//! ```text
//!   stream per namespace   PLAZA_NS_<hex(namespace)>   (PLAZA_DEFAULT for the defaults)
//!   publications           plaza.r.<ns>.<room>.m       (history: per-subject limit and max age)
//!   join/leave events      plaza.r.<ns>.<room>.p       (same stream: ordered with publications)
//!   state-room changes     plaza.r.<ns>.<room>.s.<key> (instead of .m: the last per key is the map)
//!   live (republished)     plaza.l.<ns>.<room>.>       (what edges subscribe to, per room)
//!   ephemeral (core only)  plaza.l.<ns>.<room>.e       (no stream: matched by the live subscription)
//!   user disconnects       plaza.ctl.disconnect
//!   presence (KV)          PLAZA_PRESENCE  <ns>.<room>.<edge>.<client> = member
//!   edge leases (KV)       PLAZA_EDGES     <edge> = lease
//!   lifecycle events       PLAZA_EVENTS    plaza.ev.<type>  (the feed; sequence = position)
//!   presence changes       PLAZA_MEMBERSHIP plaza.mb.c      (the event deriver's input)
//!   event state (KV)       PLAZA_EVENTS_STATE  deriver, snapshot, webhooks
//! ```
//!
//! `<ns>` is `d` for the default namespace or `n` + hex of the name; `<room>`, `<edge>` and
//! `<client>` (and a state room's `<key>`) are unpadded base64url of the id, so every token is valid in subjects and KV keys
//! whatever characters the id holds, and decodes back.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The subject of user-disconnect requests, received by every edge.
pub const DISCONNECT_SUBJECT: &str = "plaza.ctl.disconnect";
/// The presence bucket.
pub const PRESENCE_BUCKET: &str = "PLAZA_PRESENCE";
/// The edge-lease bucket.
pub const EDGES_BUCKET: &str = "PLAZA_EDGES";
/// The lifecycle event stream (the feed).
pub const EVENTS_STREAM: &str = "PLAZA_EVENTS";
/// The subjects of the event stream (`plaza.ev.<type>`).
pub const EVENTS_SUBJECTS: &str = "plaza.ev.>";
/// The membership log: every presence change in order (the deriver's input).
pub const MEMBERSHIP_STREAM: &str = "PLAZA_MEMBERSHIP";
/// The membership log's subject.
pub const MEMBERSHIP_SUBJECT: &str = "plaza.mb.c";
/// The bucket of the deriver's lease and snapshot and the webhook sender's claim.
pub const EVENTS_STATE_BUCKET: &str = "PLAZA_EVENTS_STATE";

/// A namespace's token (`d` for the defaults).
pub fn ns_token(namespace: Option<&str>) -> String {
    match namespace {
        None => "d".into(),
        Some(ns) => format!("n{}", hex(ns)),
    }
}

/// The stream holding a namespace's rooms.
pub fn stream_name(namespace: Option<&str>) -> String {
    match namespace {
        None => "PLAZA_DEFAULT".into(),
        Some(ns) => format!("PLAZA_NS_{}", hex(ns)),
    }
}

/// A token for any id.
pub fn token(id: &str) -> String {
    URL_SAFE_NO_PAD.encode(id)
}

/// The id a [`token`] came from.
pub fn untoken(token: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    String::from_utf8(bytes).ok()
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Where one room lives.
#[derive(Debug, Clone)]
pub struct RoomSubjects {
    /// Publications.
    pub publications: String,
    /// The room's log as a filter: `publications`, or in a state room every key's change
    /// subject (`….s.*`). Offsets chain along it (`Plaza-Prev`), and history reads it.
    pub chain: String,
    /// A state room's key subjects' prefix (`….s`).
    pub state_prefix: String,
    /// Join/leave events.
    pub presence_events: String,
    /// What an edge subscribes to for live events (both kinds, and ephemeral publications).
    pub live: String,
    /// Ephemeral publications: a core-NATS subject outside every stream (`plaza.r.>`) that the
    /// `live` wildcard matches, so no JetStream message is ever written for them.
    pub ephemeral: String,
    /// The presence KV key prefix (`<ns>.<room>`).
    pub presence_prefix: String,
}

impl RoomSubjects {
    /// The subjects of `room` in namespace token `ns`.
    pub fn new(ns: &str, room: &str) -> Self {
        let room = token(room);
        Self {
            publications: format!("plaza.r.{ns}.{room}.m"),
            chain: format!("plaza.r.{ns}.{room}.m"),
            state_prefix: format!("plaza.r.{ns}.{room}.s"),
            presence_events: format!("plaza.r.{ns}.{room}.p"),
            live: format!("plaza.l.{ns}.{room}.>"),
            ephemeral: format!("plaza.l.{ns}.{room}.e"),
            presence_prefix: format!("{ns}.{room}"),
        }
    }

    /// The same room as a state room: its log is the change subjects of its keys.
    pub fn for_state(mut self) -> Self {
        self.chain = format!("{}.*", self.state_prefix);
        self
    }

    /// The subject of one key's changes in a state room.
    pub fn state_key(&self, key: &str) -> String {
        format!("{}.{}", self.state_prefix, token(key))
    }
}

/// Every state room's key subjects in the namespace with token `ns`.
pub fn state_keys_filter(ns: &str) -> String {
    format!("plaza.r.{ns}.*.s.*")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_are_subject_safe() {
        for id in ["chat:lobby", "a.b*c>d", "user@x/y=z+w", "é"] {
            let t = token(id);
            assert!(
                t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "{t}"
            );
            assert_eq!(untoken(&t).as_deref(), Some(id));
        }
        assert_eq!(stream_name(Some("chat")), "PLAZA_NS_63686174");
        assert_eq!(ns_token(None), "d");
        let s = RoomSubjects::new("d", "chat:x");
        assert!(s.publications.starts_with("plaza.r.d."));
        assert!(s.live.ends_with(".>"));
        assert_eq!(s.chain, s.publications);
        let state = s.for_state();
        assert!(state.chain.ends_with(".s.*"));
        assert!(
            state
                .state_key("cursor:ann")
                .starts_with(&state.chain[..state.chain.len() - 1])
        );
    }
}

/// `url` without the user-info part (`nats://user:secret@host:4222` → `nats://…@host:4222`),
/// for logs and errors.
pub(crate) fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    match rest.rsplit_once('@') {
        Some((_, host)) if scheme.is_empty() => format!("…@{host}"),
        Some((_, host)) => format!("{scheme}://…@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod redact_tests {
    use super::redact_url;

    /// Hostile input, finding 11: NATS URLs with credentials reached logs and errors.
    #[test]
    fn credentials_in_a_nats_url_never_reach_logs() {
        assert_eq!(
            redact_url("nats://alice:s3cret@nats-1:4222"),
            "nats://…@nats-1:4222"
        );
        assert_eq!(redact_url("tls://token@nats:4222"), "tls://…@nats:4222");
        assert_eq!(redact_url("nats://nats-1:4222"), "nats://nats-1:4222");
        assert_eq!(redact_url("a:b@host:1"), "…@host:1");
    }
}
