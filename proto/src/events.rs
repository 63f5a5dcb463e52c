//! Lifecycle events: what the broker tier tells an application's backend about rooms and users
//! (a room became occupied or vacated, a user came online or went offline, ...), derived once
//! from the tier's ordered state and kept in a replayable feed.
//!
//! Every event has a [`FeedPosition`] (the feed's epoch and a sequence number that increases by
//! exactly one per event) and an id derived from it, so the same event has the same id on every
//! read of the feed and every webhook delivery.

use serde::{Deserialize, Serialize};

use crate::model::{ClientId, Payload, RoomName, UserId};

/// The kinds of lifecycle events, with their wire names (`room.occupied`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// A room got its first member (not sent if it was vacated within the debounce).
    #[serde(rename = "room.occupied")]
    RoomOccupied,
    /// A room's last member left and nobody joined within the debounce.
    #[serde(rename = "room.vacated")]
    RoomVacated,
    /// A connection joined a room's presence (not debounced).
    #[serde(rename = "member.joined")]
    MemberJoined,
    /// A connection left a room's presence (not debounced).
    #[serde(rename = "member.left")]
    MemberLeft,
    /// A user's first connection joined a room.
    #[serde(rename = "user.joined")]
    UserJoined,
    /// A user's last connection left a room and none came back within the debounce.
    #[serde(rename = "user.left")]
    UserLeft,
    /// A user's first connection anywhere joined any room with presence.
    #[serde(rename = "user.online")]
    UserOnline,
    /// A user's last connection anywhere left and none came back within the debounce.
    #[serde(rename = "user.offline")]
    UserOffline,
    /// A member changed its presence `info` (`presence_update`; not debounced).
    #[serde(rename = "presence.updated")]
    PresenceUpdated,
}

impl EventType {
    /// Every type, in a fixed order.
    pub const ALL: [EventType; 9] = [
        Self::RoomOccupied,
        Self::RoomVacated,
        Self::MemberJoined,
        Self::MemberLeft,
        Self::UserJoined,
        Self::UserLeft,
        Self::UserOnline,
        Self::UserOffline,
        Self::PresenceUpdated,
    ];

    /// The wire name, e.g. `"room.occupied"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoomOccupied => "room.occupied",
            Self::RoomVacated => "room.vacated",
            Self::MemberJoined => "member.joined",
            Self::MemberLeft => "member.left",
            Self::UserJoined => "user.joined",
            Self::UserLeft => "user.left",
            Self::UserOnline => "user.online",
            Self::UserOffline => "user.offline",
            Self::PresenceUpdated => "presence.updated",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// Whether the event belongs to one room (every type but `user.online`/`user.offline`).
    pub fn is_room_scoped(self) -> bool {
        !matches!(self, Self::UserOnline | Self::UserOffline)
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A place in the event feed: the feed's epoch and the sequence number of the last event seen
/// (0 = before the first event). Written `"<epoch>:<seq>"` on the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FeedPosition {
    /// The broker tier's instance; changes only if all state was lost.
    pub epoch: String,
    /// Sequence number of an event in that epoch.
    pub seq: u64,
}

impl FeedPosition {
    /// Parses `"<epoch>:<seq>"` (the epoch itself contains no `:`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (epoch, seq) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("position {text:?} is not \"<epoch>:<sequence>\""))?;
        if epoch.is_empty() || epoch.len() > 128 || epoch.contains(':') {
            return Err(format!("position {text:?} has an invalid epoch"));
        }
        let seq = seq
            .parse::<u64>()
            .map_err(|_| format!("position {text:?}: sequence {seq:?} is not a whole number"))?;
        Ok(Self {
            epoch: epoch.to_owned(),
            seq,
        })
    }
}

impl std::fmt::Display for FeedPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.epoch, self.seq)
    }
}

/// One lifecycle event, as kept in the feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LifecycleEvent {
    /// Where it is in the feed; its id is `position.to_string()`.
    pub position: FeedPosition,
    /// What happened.
    pub kind: EventType,
    /// When the broker tier decided it happened: milliseconds on the state machine's clock
    /// (the leader's wall clock on the Raft backend, process uptime in memory).
    pub time_ms: u64,
    /// The room (room-scoped types only). Never skipped: postcard is not self-describing.
    pub room: Option<RoomName>,
    /// The user (every type but `room.*`).
    pub user: Option<UserId>,
    /// The connection (`member.*` only).
    pub client: Option<ClientId>,
    /// The member's info (`member.joined` only).
    pub info: Option<Payload>,
}

impl LifecycleEvent {
    /// The stable id: the same on every read and every delivery.
    pub fn id(&self) -> String {
        self.position.to_string()
    }
}

/// Which events a feed read wants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFilter {
    /// Only these types (all when empty).
    pub types: Vec<EventType>,
    /// Only room-scoped events of rooms in this namespace (and no `user.online`/`offline`).
    pub namespace: Option<String>,
}

impl EventFilter {
    /// Whether `event` passes the filter.
    pub fn matches(&self, event: &LifecycleEvent) -> bool {
        self.accepts(event.kind, event.room.as_ref())
    }

    /// Whether an event of type `kind` about `room` passes.
    pub fn accepts(&self, kind: EventType, room: Option<&RoomName>) -> bool {
        if !self.types.is_empty() && !self.types.contains(&kind) {
            return false;
        }
        match &self.namespace {
            None => true,
            Some(ns) => room.is_some_and(|r| r.namespace() == ns),
        }
    }
}

/// One page of the event feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventsPage {
    /// Matching events after the requested position, in feed order.
    pub events: Vec<LifecycleEvent>,
    /// Pass as `since` to read on: the last event read (matching or not), or the requested
    /// position when none was read.
    pub next: FeedPosition,
    /// The feed's latest position.
    pub latest: FeedPosition,
    /// Whether nothing between the requested position and `events` was lost: false when the
    /// position is from another epoch or older than the retention window, in which case the
    /// page starts at the oldest event still retained.
    pub recovered: bool,
}

/// The answer to a webhook sender's claim: whether it is (still) the one sender, and how far
/// each endpoint has been delivered (feed sequences of the current epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookClaim {
    /// Whether the caller holds the claim now.
    pub granted: bool,
    /// The feed's epoch the cursors belong to.
    pub epoch: String,
    /// Per endpoint name: delivered (or given up on) through this sequence.
    pub cursors: std::collections::BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_through_text_and_bad_ones_are_refused() {
        let p = FeedPosition::parse("abc:42").unwrap();
        assert_eq!(p.to_string(), "abc:42");
        assert!(FeedPosition::parse("abc").is_err());
        assert!(FeedPosition::parse(":1").is_err());
        assert!(FeedPosition::parse("a:-1").is_err());
        assert!(FeedPosition::parse("a:b:1").is_err());
    }

    #[test]
    fn event_types_round_trip_through_their_names() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{t}\""));
        }
        assert_eq!(EventType::parse("room.exploded"), None);
    }
}
