//! Test helpers shared by the unit and property tests: a configuration with one namespace per
//! behaviour, and a driver that keeps the clock.

use std::time::Duration;

use plaza_proto::cluster::{HistoryPage, PublishAck, RoomEvent, RoomEventKind};
use plaza_proto::{ClientId, EdgeId, Member, Payload, Position, Publication, RoomName, UserId};

use super::{Applied, Command, Rooms, RoomsError};
use crate::config::{NamespaceOverrides, PresenceMode, RoomsConfig};

/// The epoch of every test state machine.
pub(super) const INSTANCE: &str = "i1";
/// Lease granted by [`Sim::attach`].
pub(super) const LEASE_MS: u64 = 1_000;
/// `room_idle_ttl` of [`config`].
pub(super) const IDLE_MS: u64 = 10_000;
/// `idempotency_window` of [`config`].
pub(super) const IDEM_MS: u64 = 1_000;

/// `chat` (defaults: 100 entries, 300 s), `small` (2 entries, 1 s), `none` (no history),
/// `counts`, `off` and `quiet` (full presence without join/leave events).
pub(super) fn config() -> RoomsConfig {
    let mut config = RoomsConfig {
        idempotency_window: Duration::from_millis(IDEM_MS),
        room_idle_ttl: Duration::from_millis(IDLE_MS),
        ..RoomsConfig::default()
    };
    let overrides = [
        (
            "small",
            NamespaceOverrides {
                history_size: Some(2),
                history_ttl: Some(Duration::from_secs(1)),
                ..Default::default()
            },
        ),
        (
            "none",
            NamespaceOverrides {
                history_size: Some(0),
                ..Default::default()
            },
        ),
        (
            "counts",
            NamespaceOverrides {
                presence: Some(PresenceMode::Counts),
                ..Default::default()
            },
        ),
        (
            "off",
            NamespaceOverrides {
                presence: Some(PresenceMode::Off),
                ..Default::default()
            },
        ),
        (
            "quiet",
            NamespaceOverrides {
                join_leave: Some(false),
                ..Default::default()
            },
        ),
    ];
    config.namespaces = overrides
        .into_iter()
        .map(|(n, o)| (n.to_owned(), o))
        .collect();
    config
}

/// A state machine and its clock.
pub(super) struct Sim {
    pub(super) rooms: Rooms,
    pub(super) now: u64,
}

impl Sim {
    pub(super) fn new() -> Self {
        Self::with_config(&config())
    }

    pub(super) fn with_config(config: &RoomsConfig) -> Self {
        Self {
            rooms: Rooms::new(config, INSTANCE),
            now: 0,
        }
    }

    pub(super) fn apply(&mut self, cmd: Command) -> Result<(Applied, Vec<RoomEvent>), RoomsError> {
        let mut events = Vec::new();
        let applied = self.rooms.apply(self.now, cmd, &mut events)?;
        Ok((applied, events))
    }

    pub(super) fn advance(&mut self, ms: u64) {
        self.now += ms;
    }

    pub(super) fn tick(&mut self) -> Vec<RoomEvent> {
        self.apply(Command::Tick)
            .map(|(_, events)| events)
            .unwrap_or_default()
    }

    /// Publishes without an idem key; returns the new position.
    pub(super) fn publish(&mut self, name: &str) -> Position {
        self.publish_with(room(name), None).0.position
    }

    pub(super) fn publish_with(
        &mut self,
        room: RoomName,
        idem: Option<&str>,
    ) -> (PublishAck, Vec<RoomEvent>) {
        let idem = idem.map(str::to_owned);
        match self.apply(Command::Publish {
            room,
            data: data(),
            from: None,
            idem,
        }) {
            Ok((Applied::Published(ack), events)) => (ack, events),
            other => panic!("publish failed: {other:?}"),
        }
    }

    pub(super) fn attach(&mut self, edge: &str) {
        self.attach_for(edge, LEASE_MS);
    }

    pub(super) fn attach_for(&mut self, edge: &str, lease_ms: u64) {
        let cmd = Command::AttachEdge {
            edge: EdgeId::new(edge),
            lease_ms,
        };
        self.apply(cmd).expect("attach never fails");
    }

    pub(super) fn join(
        &mut self,
        edge: &str,
        name: &str,
        client: &str,
        user: &str,
    ) -> Result<Vec<RoomEvent>, RoomsError> {
        let cmd = Command::Join {
            edge: EdgeId::new(edge),
            room: room(name),
            member: member(client, user),
        };
        self.apply(cmd).map(|(_, events)| events)
    }

    pub(super) fn leave(&mut self, name: &str, client: &str) -> Vec<RoomEvent> {
        let cmd = Command::Leave {
            room: room(name),
            client: ClientId::new(client),
        };
        self.apply(cmd)
            .map(|(_, events)| events)
            .unwrap_or_default()
    }

    pub(super) fn history(
        &self,
        name: &str,
        since: Option<Position>,
        limit: Option<u32>,
    ) -> HistoryPage {
        self.rooms.history(self.now, &room(name), since, limit)
    }
}

pub(super) fn room(name: &str) -> RoomName {
    RoomName::new(name).expect("valid test room name")
}

pub(super) fn pos(offset: u64) -> Position {
    Position {
        epoch: INSTANCE.to_owned(),
        offset,
    }
}

pub(super) fn data() -> Payload {
    Payload::from_json(r#"{"x":1}"#).expect("valid JSON")
}

pub(super) fn member(client: &str, user: &str) -> Member {
    Member {
        client: ClientId::new(client),
        user: UserId::new(user),
        info: None,
    }
}

pub(super) fn offsets(publications: &[Publication]) -> Vec<u64> {
    publications.iter().map(|p| p.offset).collect()
}

/// `(room, client)` of every leave event.
pub(super) fn left(events: &[RoomEvent]) -> Vec<(&str, &str)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            RoomEventKind::Leave(m) => Some((e.room.as_str(), m.client.as_str())),
            _ => None,
        })
        .collect()
}
