//! Property tests: random command sequences with advancing time, checked after every step
//! against a plain model of what the state machine promises.
//!
//! Each test names one invariant; they share the driver so every invariant is checked on the
//! same kind of traffic (joins, leaves, leases, publishes with and without idem keys, ticks and
//! reads, in namespaces with every history and presence option, across room collections).

mod lifecycle;
mod ops;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use plaza_proto::cluster::{RoomEvent, RoomEventKind};
use plaza_proto::{ClientId, EdgeId, Member, Position, RoomName, UserId};
use proptest::prelude::*;

use ops::{EDGES, Op, ROOMS, Since, ops};

use super::support::{IDEM_MS, INSTANCE, LEASE_MS, Sim, config, data, room};
use super::{Applied, Command, RoomsError};
use crate::config::{PresenceMode, RoomsConfig};

/// Which invariant a test asserts (the driver keeps every model up to date regardless).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Check {
    Offsets,
    History,
    Presence,
    Idempotency,
    Recovery,
    Lifecycle,
}

/// The state machine and the models it is compared against.
struct Driver {
    sim: Sim,
    check: Check,
    /// Every stored publication ever, per room: `(offset, published at)`.
    log: BTreeMap<RoomName, Vec<(u64, u64)>>,
    positions: Vec<Position>,
    /// Attached edges and when their leases run out.
    leases: BTreeMap<EdgeId, u64>,
    /// `(room, client) → (user, owning edge)`.
    members: BTreeMap<(RoomName, ClientId), (UserId, EdgeId)>,
    /// Presence as a subscriber rebuilds it from join/leave events.
    announced: BTreeSet<(RoomName, ClientId)>,
    /// `(room, key) → (offset, expires)`.
    idem: BTreeMap<(RoomName, String), (u64, u64)>,
}

impl Driver {
    fn run(ops: &[Op], check: Check) -> Result<(), TestCaseError> {
        // A short idle TTL, so rooms get collected and recreated within one run.
        let config = RoomsConfig {
            room_idle_ttl: Duration::from_millis(2_000),
            ..config()
        };
        let mut d = Self {
            sim: Sim::with_config(&config),
            check,
            log: BTreeMap::new(),
            positions: Vec::new(),
            leases: BTreeMap::new(),
            members: BTreeMap::new(),
            announced: BTreeSet::new(),
            idem: BTreeMap::new(),
        };
        for op in ops {
            d.step(op)?;
            d.after_step()?;
        }
        if check == Check::Lifecycle {
            lifecycle::check_feed(&mut d.sim)?;
        }
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let now = self.sim.now;
        match op {
            Op::Publish { room: r, idem } => {
                self.publish(room(ROOMS[*r]), idem.map(|k| k.to_string()))?
            }
            Op::Join {
                edge,
                room: r,
                client,
                user,
            } => {
                let (edge, name) = (EdgeId::new(EDGES[*edge]), room(ROOMS[*r]));
                let member = Member {
                    client: ClientId::new(format!("c{client}")),
                    user: UserId::new(format!("u{user}")),
                    info: None,
                };
                let ok = config().namespaces().of(&name).presence != PresenceMode::Off
                    && self.leases.get(&edge).is_some_and(|&e| now < e);
                let key = (name.clone(), member.client.clone());
                let result = self.apply(Command::Join {
                    edge: edge.clone(),
                    room: name,
                    member: member.clone(),
                })?;
                prop_assert_eq!(result.is_ok(), ok, "join {:?}", result);
                if ok {
                    self.members.insert(key, (member.user, edge));
                }
            }
            Op::Leave { room: r, client } => {
                let (name, client) = (room(ROOMS[*r]), ClientId::new(format!("c{client}")));
                self.members.remove(&(name.clone(), client.clone()));
                let result = self.apply(Command::Leave { room: name, client })?;
                prop_assert!(result.is_ok());
            }
            Op::Attach { edge } => {
                let edge = EdgeId::new(EDGES[*edge]);
                self.leases.insert(edge.clone(), now + LEASE_MS);
                let result = self.apply(Command::AttachEdge {
                    edge,
                    lease_ms: LEASE_MS,
                })?;
                prop_assert!(result.is_ok());
            }
            Op::Renew { edge } => {
                let edge = EdgeId::new(EDGES[*edge]);
                let live = self.leases.get(&edge).is_some_and(|&e| now < e);
                if live {
                    self.leases.insert(edge.clone(), now + LEASE_MS);
                }
                let result = self.apply(Command::RenewEdge { edge })?;
                prop_assert_eq!(result.is_ok(), live);
            }
            Op::Detach { edge } => {
                let edge = EdgeId::new(EDGES[*edge]);
                self.drop_edge(&edge);
                let result = self.apply(Command::DetachEdge { edge })?;
                prop_assert!(result.is_ok());
            }
            Op::Tick => {
                let expired: Vec<EdgeId> = self
                    .leases
                    .iter()
                    .filter(|(_, e)| **e <= now)
                    .map(|(k, _)| k.clone())
                    .collect();
                for edge in expired {
                    self.drop_edge(&edge);
                }
                self.idem.retain(|_, (_, expires)| now < *expires);
                prop_assert!(self.apply(Command::Tick)?.is_ok());
            }
            Op::Advance(ms) => self.sim.advance(*ms),
            Op::Read {
                room: r,
                since,
                limit,
            } => self.read(room(ROOMS[*r]), since, *limit)?,
        }
        Ok(())
    }

    fn publish(&mut self, name: RoomName, idem: Option<String>) -> Result<(), TestCaseError> {
        let now = self.sim.now;
        let expected = idem
            .as_ref()
            .and_then(|k| self.idem.get(&(name.clone(), k.clone())))
            .filter(|(_, expires)| now < *expires)
            .map(|(offset, _)| *offset);
        let cmd = Command::Publish {
            room: name.clone(),
            data: data(),
            from: None,
            idem: idem.clone(),
        };
        let mut events = Vec::new();
        let Ok(Applied::Published(ack)) = self.sim.rooms.apply(now, cmd, &mut events) else {
            return Err(TestCaseError::fail("publish failed"));
        };
        self.observe(&events)?;
        self.positions.push(ack.position.clone());
        if self.check == Check::Offsets && !ack.duplicate {
            let offsets: Vec<u64> = events
                .iter()
                .filter_map(|e| match &e.kind {
                    RoomEventKind::Publication(p) => Some(p.offset),
                    _ => None,
                })
                .collect();
            prop_assert_eq!(
                offsets,
                vec![ack.position.offset],
                "one event, at the acked offset"
            );
        }
        if self.check == Check::Idempotency {
            prop_assert_eq!(
                ack.duplicate,
                expected.is_some(),
                "duplicate flag for {:?}",
                idem
            );
            if let Some(offset) = expected {
                prop_assert_eq!(ack.position.offset, offset, "a retry returns the original");
                prop_assert!(events.is_empty(), "a retry emits nothing");
            }
        }
        if !ack.duplicate {
            self.log
                .entry(name.clone())
                .or_default()
                .push((ack.position.offset, now));
            if let Some(key) = idem {
                self.idem
                    .insert((name, key), (ack.position.offset, now + IDEM_MS));
            }
        }
        Ok(())
    }

    fn read(
        &mut self,
        name: RoomName,
        since: &Since,
        limit: Option<u32>,
    ) -> Result<(), TestCaseError> {
        let latest = self.sim.rooms.position(&name);
        self.positions.push(latest.clone());
        let since = match since {
            Since::Latest => latest.clone(),
            Since::Known(i) => self.positions[i % self.positions.len()].clone(),
            Since::Raw(offset) => Position {
                epoch: INSTANCE.into(),
                offset: *offset,
            },
            Since::OtherEpoch(offset) => Position {
                epoch: "other".into(),
                offset: *offset,
            },
        };
        let page = self
            .sim
            .rooms
            .history(self.sim.now, &name, Some(since.clone()), limit);
        if self.check != Check::Recovery {
            return Ok(());
        }
        prop_assert_eq!(&page.position, &latest);
        if !page.complete {
            prop_assert!(
                page.publications.is_empty(),
                "an incomplete page lists nothing"
            );
            prop_assert!(
                since != latest,
                "reading from the latest position is always complete"
            );
            return Ok(());
        }
        prop_assert_eq!(&since.epoch, INSTANCE, "another epoch is never complete");
        let expected: Vec<u64> = self
            .log
            .get(&name)
            .into_iter()
            .flatten()
            .map(|(offset, _)| *offset)
            .filter(|offset| *offset > since.offset)
            .take(limit.map_or(usize::MAX, |l| l as usize))
            .collect();
        let got: Vec<u64> = page.publications.iter().map(|p| p.offset).collect();
        prop_assert_eq!(
            got,
            expected,
            "complete history since {} must list every later publication",
            since.offset
        );
        Ok(())
    }

    /// Applies `cmd`, observing its events; the outer error is a failed check.
    fn apply(&mut self, cmd: Command) -> Result<Result<Applied, RoomsError>, TestCaseError> {
        let mut events = Vec::new();
        let result = self.sim.rooms.apply(self.sim.now, cmd, &mut events);
        self.observe(&events)?;
        Ok(result)
    }

    fn drop_edge(&mut self, edge: &EdgeId) {
        self.leases.remove(edge);
        self.members.retain(|_, (_, owner)| owner != edge);
    }

    /// Folds events into the announced presence and checks publication offsets.
    fn observe(&mut self, events: &[RoomEvent]) -> Result<(), TestCaseError> {
        for e in events {
            prop_assert_eq!(&e.epoch, INSTANCE);
            let ns = config().namespaces().of(&e.room).clone();
            match &e.kind {
                RoomEventKind::Publication(p) => {
                    if self.check == Check::Offsets {
                        let prev = self
                            .log
                            .get(&e.room)
                            .and_then(|l| l.last())
                            .map_or(0, |l| l.0);
                        prop_assert!(
                            p.offset > prev,
                            "offset {} after {} in {}",
                            p.offset,
                            prev,
                            e.room
                        );
                    }
                }
                RoomEventKind::Join(m) | RoomEventKind::Leave(m) => {
                    prop_assert!(
                        ns.presence == PresenceMode::Full && ns.join_leave,
                        "event in {}",
                        e.room
                    );
                    let key = (e.room.clone(), m.client.clone());
                    let changed = if matches!(e.kind, RoomEventKind::Join(_)) {
                        self.announced.insert(key)
                    } else {
                        self.announced.remove(&key)
                    };
                    prop_assert!(changed, "join/leave events alternate per member: {:?}", e);
                }
                RoomEventKind::PresenceUpdate(m) => {
                    let key = (e.room.clone(), m.client.clone());
                    prop_assert!(
                        self.announced.contains(&key),
                        "update of a non-member: {:?}",
                        e
                    );
                }
                RoomEventKind::PresenceResync(_) => {
                    prop_assert!(false, "the state machine made a link's resync: {:?}", e);
                }
            }
        }
        Ok(())
    }

    fn after_step(&self) -> Result<(), TestCaseError> {
        let namespaces = config().namespaces();
        for name in ROOMS.map(room) {
            let ns = namespaces.of(&name);
            match self.check {
                Check::History => {
                    let page = self.sim.history(name.as_str(), None, None);
                    prop_assert!(
                        page.publications.len() <= ns.history_size,
                        "{} over size",
                        name
                    );
                    let ttl = ns.history_ttl.as_millis() as u64;
                    let log = self.log.get(&name).cloned().unwrap_or_default();
                    for p in &page.publications {
                        let at = log.iter().find(|(o, _)| *o == p.offset).map(|(_, at)| *at);
                        prop_assert!(
                            at.is_some(),
                            "{} returned unknown offset {}",
                            name,
                            p.offset
                        );
                        prop_assert!(
                            at.is_some_and(|at| self.sim.now < at + ttl),
                            "expired entry"
                        );
                    }
                    prop_assert!(
                        page.publications
                            .windows(2)
                            .all(|w| w[0].offset < w[1].offset)
                    );
                }
                Check::Presence => self.check_presence(&name, ns.presence, ns.join_leave)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn check_presence(
        &self,
        name: &RoomName,
        mode: PresenceMode,
        join_leave: bool,
    ) -> Result<(), TestCaseError> {
        let members: Vec<(&ClientId, &UserId)> = self
            .members
            .iter()
            .filter(|((r, _), _)| r == name)
            .map(|((_, c), (u, _))| (c, u))
            .collect();
        let users: BTreeSet<&UserId> = members.iter().map(|(_, u)| *u).collect();
        match mode {
            PresenceMode::Off => prop_assert!(members.is_empty()),
            PresenceMode::Counts | PresenceMode::Full => {
                let stats = self
                    .sim
                    .rooms
                    .presence_stats(name)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(
                    (stats.clients, stats.users),
                    (members.len() as u64, users.len() as u64)
                );
            }
        }
        if mode == PresenceMode::Full {
            let listed = self
                .sim
                .rooms
                .presence(name, None, u32::MAX)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let listed: Vec<(&ClientId, &UserId)> = listed
                .members
                .iter()
                .map(|m| (&m.client, &m.user))
                .collect();
            prop_assert_eq!(&listed, &members);
            if join_leave {
                let announced: Vec<&ClientId> = self
                    .announced
                    .iter()
                    .filter(|(r, _)| r == name)
                    .map(|(_, c)| c)
                    .collect();
                let expected: Vec<&ClientId> = members.iter().map(|(c, _)| *c).collect();
                prop_assert_eq!(announced, expected, "presence rebuilt from events");
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn offsets_strictly_increase_per_room(ops in ops()) {
        Driver::run(&ops, Check::Offsets)?;
    }

    #[test]
    fn history_never_exceeds_its_size_nor_shows_expired_entries(ops in ops()) {
        Driver::run(&ops, Check::History)?;
    }

    #[test]
    fn presence_equals_the_live_joined_members(ops in ops()) {
        Driver::run(&ops, Check::Presence)?;
    }

    #[test]
    fn a_retried_idem_publish_returns_the_original_offset(ops in ops()) {
        Driver::run(&ops, Check::Idempotency)?;
    }

    #[test]
    fn complete_history_never_misses_a_publication(ops in ops()) {
        Driver::run(&ops, Check::Recovery)?;
    }

    #[test]
    fn lifecycle_events_alternate_per_user_and_room_and_end_absent(ops in ops()) {
        Driver::run(&ops, Check::Lifecycle)?;
    }
}
