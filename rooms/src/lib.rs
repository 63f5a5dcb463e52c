//! `plaza-rooms`: the room state machine — commands in, events out, time passed in as a
//! value — and the per-namespace options ([`config`]) that edges and brokers share.
//!
//! ```text
//!   Command ──apply(now)──▶ Rooms ──▶ Vec<RoomEvent> (in the order things happened)
//!                             │
//!   queries(now) ◀────────────┘  position · history · presence · presence_stats · rooms
//! ```
//!
//! Every backend drives this one type: the memory backend calls it under a mutex, the Raft
//! backend applies committed log entries to it on every node. So it does no I/O, reads no clock
//! and uses no randomness, and its outputs never depend on hash iteration order: the same
//! commands at the same times give the same events and the same [`RoomsState`] (the snapshot)
//! everywhere.
//!
//! # Offsets, epochs and recoverability
//!
//! All rooms share one sequence counter: each publication anywhere takes the next value as its
//! offset. A room's offsets therefore increase strictly but are not contiguous, and a room that
//! is garbage-collected and later recreated never reuses an offset within the epoch. The epoch
//! is the `instance` given at creation; it changes only when the whole state is lost.
//!
//! Each room keeps `pruned_through`, the highest offset at or below which publications may be
//! missing. "Everything since `{epoch, offset}`" is complete exactly when the epoch matches and
//! `pruned_through <= offset <= seq`. A new room's `pruned_through` starts at its GC bucket's
//! watermark (see `gc.rs`), so a position from a collected incarnation never claims a complete
//! recovery.
//!
//! # Time
//!
//! `now` is in milliseconds from an arbitrary origin. The state machine clamps it to the largest
//! value seen so far, so a clock that steps back (e.g. a new Raft leader stamping commands)
//! cannot un-expire anything.
#![deny(missing_docs)]

mod commands;
pub mod config;
mod edges;
mod feed;
mod formats;
mod gc;
mod history;
mod lifecycle;
mod listing;
mod presence;
mod room;
mod small_map;
mod state;
mod webhooks;

#[cfg(test)]
mod lifecycle_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod support;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use plaza_proto::cluster::{BrokerError, HistoryPage, PresencePage, PresenceStats, PublishAck};
use plaza_proto::events::{EventFilter, EventsPage, FeedPosition, WebhookClaim};
use plaza_proto::{ClientId, EdgeId, Member, Payload, Position, RoomName, Sender};
use serde::{Deserialize, Serialize};

pub use crate::config::{NamespaceOptions, NamespaceOverrides};
use crate::config::{Namespaces, PresenceMode, RoomsConfig};

pub use formats::{RoomsStateV1, RoomsStateV2};
pub use gc::GC_BUCKETS;
/// The webhook sender's claim and cursors, for backends that keep them outside the state
/// machine (NATS keeps them in a KV entry).
pub use webhooks::Webhooks;

use edges::Edges;
use gc::Watermarks;
use lifecycle::{EventSettings, Lifecycle};
use room::Room;

/// Longest accepted idempotency key, in bytes: keys are kept per room for the whole window, so
/// their size is bounded like every other input.
pub const MAX_IDEM_LEN: usize = plaza_proto::client::MAX_IDEM_LEN;

/// A change to the rooms. Serializable because the Raft backend replicates commands as log
/// entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Append a publication to `room` (creating the room if needed).
    Publish {
        /// The room.
        room: RoomName,
        /// The JSON value.
        data: Payload,
        /// The publishing client, if a client published.
        from: Option<Sender>,
        /// Idempotency key: a repeat within the window is acknowledged, not stored again.
        idem: Option<String>,
    },
    /// Add `member` to `room`'s presence, owned by `edge` (which must hold a live lease).
    Join {
        /// The owning edge.
        edge: EdgeId,
        /// The room.
        room: RoomName,
        /// The member.
        member: Member,
    },
    /// Remove a member from `room`'s presence; unknown members are ignored.
    Leave {
        /// The room.
        room: RoomName,
        /// The member's connection.
        client: ClientId,
    },
    /// Grant `edge` a lease of `lease_ms`, or refresh it if already attached (its members stay).
    AttachEdge {
        /// The edge.
        edge: EdgeId,
        /// Lease length; also the length of every renewal.
        lease_ms: u64,
    },
    /// Extend `edge`'s live lease by its length.
    RenewEdge {
        /// The edge.
        edge: EdgeId,
    },
    /// Remove `edge` and all its members now (a clean shutdown).
    DetachEdge {
        /// The edge.
        edge: EdgeId,
    },
    /// Let time pass: expire leases, idempotency keys and history, collect idle rooms.
    Tick,
    /// Remove a member from `room`'s presence if `edge` owns it (an edge removes only its own
    /// members); anything else is ignored.
    LeaveOwned {
        /// The edge asking.
        edge: EdgeId,
        /// The room.
        room: RoomName,
        /// The member's connection.
        client: ClientId,
    },
    /// Claim or renew the one webhook sender's lease for `edge` (see `webhooks.rs`).
    ClaimWebhooks {
        /// The edge that would send.
        edge: EdgeId,
        /// Lease length.
        lease_ms: u64,
    },
    /// Move `endpoint`'s delivery cursor to `through`; refused unless `edge` holds the claim.
    AckWebhooks {
        /// The sending edge.
        edge: EdgeId,
        /// The endpoint's configured name.
        endpoint: String,
        /// The last feed sequence delivered or given up on.
        through: u64,
    },
    /// Change a live-state room's map on behalf of `edge` (appended last: Raft log entries
    /// of older brokers stay decodable).
    StateWrite {
        /// The edge asking (owner of tied keys).
        edge: EdgeId,
        /// The room.
        room: RoomName,
        /// The change.
        write: plaza_proto::state::StateWrite,
    },
}

impl Command {
    /// About how many bytes the command takes in a log entry: exact enough to keep a batch of
    /// commands well under a frame (publications dominate; everything else is small).
    pub fn size_hint(&self) -> usize {
        const SMALL: usize = 256;
        match self {
            Command::Publish {
                room,
                data,
                from,
                idem,
            } => {
                SMALL
                    + room.as_str().len()
                    + data.len()
                    + idem.as_ref().map_or(0, String::len)
                    + from
                        .as_ref()
                        .map_or(0, |f| f.user.as_str().len() + f.client.as_str().len())
            }
            Command::Join { member, .. } => SMALL + member.info.as_ref().map_or(0, |i| i.len()),
            Command::StateWrite { room, write, .. } => {
                SMALL + room.as_str().len() + write.size_hint()
            }
            _ => SMALL,
        }
    }
}

/// What a successful command produced, besides events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// `Publish`: where the publication is (or the original, for a duplicate).
    Published(PublishAck),
    /// `ClaimWebhooks`: whether the claim is held, and the delivery cursors.
    WebhookClaim(WebhookClaim),
    /// `StateWrite`: the room's position after it.
    StateWritten(plaza_proto::state::StateAck),
    /// Every other command.
    Done,
}

/// Why a command or query was refused. Nothing changes when a command fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RoomsError {
    /// The room's namespace does not track presence in the form asked for.
    #[error("room {room}: presence is {mode:?} in namespace {namespace:?}")]
    PresenceDisabled {
        /// The room.
        room: RoomName,
        /// Its namespace.
        namespace: String,
        /// The namespace's presence mode.
        mode: PresenceMode,
    },
    /// The edge is not attached or its lease ran out; it must attach again.
    #[error("edge {edge} holds no live lease")]
    LeaseExpired {
        /// The edge.
        edge: EdgeId,
    },
    /// The idempotency key is longer than [`MAX_IDEM_LEN`].
    #[error("room {room}: idempotency key is {len} bytes long; at most {max} are allowed")]
    IdemTooLong {
        /// The room.
        room: RoomName,
        /// The key's length in bytes.
        len: usize,
        /// [`MAX_IDEM_LEN`].
        max: usize,
    },
    /// A webhook ack came from an edge that does not hold the sender claim.
    #[error("edge {edge} does not hold the webhook sender claim")]
    NotWebhookSender {
        /// The edge.
        edge: EdgeId,
    },
    /// An event feed read asked for a position the feed has not reached.
    #[error("event position {asked} is ahead of the feed (latest {latest})")]
    FutureEventPosition {
        /// The sequence asked for.
        asked: u64,
        /// The feed's latest sequence.
        latest: u64,
    },
    /// A state write or read in a namespace without live-state rooms.
    #[error("namespace {namespace:?} has no live-state rooms")]
    NotStateRoom {
        /// The namespace.
        namespace: String,
    },
    /// A `publish` to a live-state room, whose log holds only its map's changes.
    #[error("room {room} is a live-state room: change its map with state writes")]
    PublishInStateRoom {
        /// The room.
        room: RoomName,
    },
    /// A compare-and-set found another version (0: the key does not exist).
    #[error("state key {key:?} is at version {current}, not {expected}")]
    StateConflict {
        /// The key.
        key: String,
        /// The version asked for.
        expected: u64,
        /// The key's version.
        current: u64,
    },
    /// A state room limit: value size, keys per room, TTL range, key shape.
    #[error("{0}")]
    StateLimit(String),
}

impl From<RoomsError> for BrokerError {
    fn from(e: RoomsError) -> Self {
        match e {
            RoomsError::PresenceDisabled { namespace, .. } => Self::PresenceDisabled { namespace },
            RoomsError::LeaseExpired { edge } => Self::LeaseExpired(edge),
            RoomsError::NotStateRoom { namespace } => Self::NotStateRoom { namespace },
            RoomsError::StateConflict {
                key,
                expected,
                current,
            } => Self::StateConflict {
                key,
                expected,
                current,
            },
            RoomsError::StateLimit(why) => Self::StateLimit(why),
            e @ (RoomsError::IdemTooLong { .. }
            | RoomsError::PublishInStateRoom { .. }
            | RoomsError::FutureEventPosition { .. }
            | RoomsError::NotWebhookSender { .. }) => Self::Invalid(e.to_string()),
        }
    }
}

/// The replicated state: everything [`Rooms`] knows except its configuration. This is the
/// snapshot the Raft backend stores and ships; restore it with [`Rooms::from_state`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomsState {
    /// The epoch of every room.
    instance: String,
    /// The global sequence: the last offset handed out.
    seq: u64,
    /// The largest `now` seen; earlier values are clamped to it.
    clock: u64,
    /// Boxed: a B-tree node holds eleven entries, so an inline room (160 bytes) would cost
    /// every room slot that size whether used or not, and move it on every split.
    rooms: BTreeMap<RoomName, Box<Room>>,
    watermarks: Watermarks,
    edges: Edges,
    /// Idempotency keys in the order they expire (the window is fixed and the clock monotonic).
    /// An entry whose key was since overwritten is skipped when it comes up.
    idem_expiry: VecDeque<IdemExpiry>,
    /// `(deadline, room)` for every room whose `wakeup` is set.
    wakeups: BTreeSet<(u64, RoomName)>,
    /// Lifecycle events: the feed and the debounce (see `lifecycle.rs`).
    lifecycle: Lifecycle,
    /// The webhook sender's claim and delivery cursors (see `webhooks.rs`).
    webhooks: Webhooks,
    /// Live-state rooms' maps (see `state.rs`).
    state_rooms: state::StateRooms,
}

/// One idempotency key's deadline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct IdemExpiry {
    expires: u64,
    room: RoomName,
    key: String,
}

/// Configuration resolved once, in the units the state machine uses.
#[derive(Debug, Clone)]
struct Settings {
    namespaces: Namespaces,
    idem_window: u64,
    idle_ttl: u64,
    events: EventSettings,
}

/// The room state machine. See the module docs.
#[derive(Debug, Clone)]
pub struct Rooms {
    settings: Settings,
    state: RoomsState,
}

impl Rooms {
    /// An empty state machine whose rooms all have epoch `instance`.
    pub fn new(config: &RoomsConfig, instance: impl Into<String>) -> Self {
        let state = RoomsState {
            instance: instance.into(),
            seq: 0,
            clock: 0,
            rooms: BTreeMap::new(),
            watermarks: Watermarks::new(0),
            edges: Edges::default(),
            idem_expiry: VecDeque::new(),
            wakeups: BTreeSet::new(),
            lifecycle: Lifecycle::default(),
            webhooks: Webhooks::default(),
            state_rooms: state::StateRooms::default(),
        };
        Self {
            settings: Settings::from(config),
            state,
        }
    }

    /// A state machine restored from a snapshot taken with [`Rooms::state`].
    pub fn from_state(config: &RoomsConfig, state: RoomsState) -> Self {
        let watermarks = state.watermarks.restored(state.seq);
        Self {
            settings: Settings::from(config),
            state: RoomsState {
                watermarks,
                ..state
            },
        }
    }

    /// The state, for snapshots.
    pub fn state(&self) -> &RoomsState {
        &self.state
    }

    /// The epoch of every room.
    pub fn instance(&self) -> &str {
        &self.state.instance
    }

    /// `room`'s position: its last publication's offset, its creation point if it has none, or
    /// the global sequence if it does not exist.
    pub fn position(&self, room: &RoomName) -> Position {
        let offset = self
            .state
            .rooms
            .get(room)
            .map_or(self.state.seq, |r| r.last);
        self.at(offset)
    }

    /// Reads `room`'s history as of `now`, with the semantics of
    /// `EdgeLink::history` (in `plaza-backend`). Expired publications are never
    /// returned, even before a `Tick` drops them.
    pub fn history(
        &self,
        now: u64,
        room: &RoomName,
        since: Option<Position>,
        limit: Option<u32>,
    ) -> HistoryPage {
        let now = now.max(self.state.clock);
        let position = self.position(room);
        let since = match since {
            None => None,
            Some(p) if p.epoch != self.state.instance || p.offset > self.state.seq => {
                return HistoryPage {
                    position,
                    publications: Vec::new(),
                    complete: false,
                };
            }
            Some(p) => Some(p.offset),
        };
        let (publications, complete) = match self.state.rooms.get(room) {
            Some(r) => r.read(now, self.ttl_of(room), since, limit),
            None => {
                let watermark = self.state.watermarks.get(room, self.state.seq);
                (Vec::new(), since.is_none_or(|offset| offset >= watermark))
            }
        };
        HistoryPage {
            position,
            publications,
            complete,
        }
    }

    /// One page of `room`'s members after `after`, ordered by client id, at most `limit` (capped
    /// at [`plaza_proto::cluster::MAX_PRESENCE_PAGE`]) long (namespaces with full presence only).
    pub fn presence(
        &self,
        room: &RoomName,
        after: Option<&ClientId>,
        limit: u32,
    ) -> Result<PresencePage, RoomsError> {
        self.check_presence(room, &[PresenceMode::Full])?;
        Ok(self
            .state
            .rooms
            .get(room)
            .map(|r| r.presence.page(after, limit))
            .unwrap_or_default())
    }

    /// `room`'s client and distinct-user counts (full or counts presence).
    pub fn presence_stats(&self, room: &RoomName) -> Result<PresenceStats, RoomsError> {
        self.check_presence(room, &[PresenceMode::Full, PresenceMode::Counts])?;
        Ok(self
            .state
            .rooms
            .get(room)
            .map(|r| r.presence.stats())
            .unwrap_or_default())
    }

    /// Reads the lifecycle event feed: at most `limit` events after `since` that pass
    /// `filter` (see [`EventsPage`]). Fails only for a position of this epoch that the feed has
    /// not reached.
    pub fn events(
        &self,
        since: Option<&FeedPosition>,
        limit: u32,
        filter: &EventFilter,
    ) -> Result<EventsPage, RoomsError> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        self.state
            .lifecycle
            .read(&self.state.instance, since, limit, filter)
            .map_err(|e| RoomsError::FutureEventPosition {
                asked: e.asked,
                latest: e.latest,
            })
    }

    /// The event feed's size for metrics: `(retained events, latest sequence, debounced
    /// events waiting for their deadline)`. Retention bounds the first by
    /// `rooms.events.max_retained`.
    pub fn feed_stats(&self) -> (usize, u64, usize) {
        self.state.lifecycle.stats()
    }

    /// When `edge`'s lease runs out (on the state machine's clock), or `None` if it is not
    /// attached. Lets a driver stop serving an edge whose lease is gone.
    pub fn lease_expiry(&self, edge: &EdgeId) -> Option<u64> {
        self.state.edges.expires(edge)
    }

    fn check_presence(&self, room: &RoomName, allowed: &[PresenceMode]) -> Result<(), RoomsError> {
        let mode = self.settings.namespaces.of(room).presence;
        if allowed.contains(&mode) {
            return Ok(());
        }
        Err(RoomsError::PresenceDisabled {
            room: room.clone(),
            namespace: room.namespace().to_owned(),
            mode,
        })
    }

    fn at(&self, offset: u64) -> Position {
        Position {
            epoch: self.state.instance.clone(),
            offset,
        }
    }

    fn ttl_of(&self, room: &RoomName) -> u64 {
        millis(self.settings.namespaces.of(room).history_ttl)
    }
}

impl From<&RoomsConfig> for Settings {
    fn from(config: &RoomsConfig) -> Self {
        Self {
            namespaces: config.namespaces(),
            idem_window: millis(config.idempotency_window),
            idle_ttl: millis(config.room_idle_ttl),
            events: EventSettings::from(&config.events),
        }
    }
}

/// A duration in whole milliseconds, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
