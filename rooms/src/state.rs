//! Live-state rooms: each state room's map key → value, with per-key TTLs and keys tied to a
//! connection (see `plaza_proto::state`).
//!
//! Every change of a map appends a change record to the room's log through the same path as a
//! publication (so it takes the next offset — the key's version — and reaches subscribers,
//! history and `recover` like one). The maps live beside the rooms, not in them: a room's
//! history may be trimmed or the room collected while its keys stay; recovery from a position
//! whose changes are gone is then incomplete and the client gets a fresh snapshot instead.
//!
//! Deletions the state machine decides itself — a TTL running out on `Tick`, a connection
//! releasing its tied keys, an edge detaching or its lease expiring — are change records too,
//! so every subscriber's map follows them.

use std::collections::{BTreeMap, BTreeSet};

use plaza_proto::cluster::RoomEvent;
use plaza_proto::state::{StateAck, StateChange, StateEntry, StateSnapshot, StateWrite};
use plaza_proto::{ClientId, EdgeId, Payload, RoomName, Sender};
use serde::{Deserialize, Serialize};

use super::{Rooms, RoomsError, millis};

/// One key's value and bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Entry {
    value: Payload,
    version: u64,
    /// The key is deleted once the clock reaches this.
    expires: Option<u64>,
    /// The connection the key is tied to.
    tied: Option<(EdgeId, ClientId)>,
}

/// Every state room's map, with indexes by expiry and by owning connection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct StateRooms {
    maps: BTreeMap<RoomName, BTreeMap<String, Entry>>,
    /// `(expires, room, key)` of every key with a TTL.
    expiry: BTreeSet<(u64, RoomName, String)>,
    /// Tied keys by edge, then connection.
    tied: BTreeMap<EdgeId, BTreeMap<ClientId, BTreeSet<(RoomName, String)>>>,
}

impl StateRooms {
    fn current(&self, room: &RoomName, key: &str) -> u64 {
        self.maps
            .get(room)
            .and_then(|m| m.get(key))
            .map_or(0, |e| e.version)
    }

    /// Removes `key` and its index entries; returns whether it existed.
    fn remove(&mut self, room: &RoomName, key: &str) -> bool {
        let Some(map) = self.maps.get_mut(room) else {
            return false;
        };
        let Some(old) = map.remove(key) else {
            return false;
        };
        if map.is_empty() {
            self.maps.remove(room);
        }
        if let Some(at) = old.expires {
            self.expiry.remove(&(at, room.clone(), key.to_owned()));
        }
        if let Some((edge, client)) = old.tied
            && let Some(clients) = self.tied.get_mut(&edge)
        {
            if let Some(keys) = clients.get_mut(&client) {
                keys.remove(&(room.clone(), key.to_owned()));
                if keys.is_empty() {
                    clients.remove(&client);
                }
            }
            if clients.is_empty() {
                self.tied.remove(&edge);
            }
        }
        true
    }

    fn insert(&mut self, room: &RoomName, key: String, entry: Entry) {
        if let Some(at) = entry.expires {
            self.expiry.insert((at, room.clone(), key.clone()));
        }
        if let Some((edge, client)) = &entry.tied {
            self.tied
                .entry(edge.clone())
                .or_default()
                .entry(client.clone())
                .or_default()
                .insert((room.clone(), key.clone()));
        }
        self.maps
            .entry(room.clone())
            .or_default()
            .insert(key, entry);
    }

    /// Keys tied to `client` of `edge` (all of the edge's when `client` is `None`).
    fn tied_to(&self, edge: &EdgeId, client: Option<&ClientId>) -> Vec<(RoomName, String)> {
        let Some(clients) = self.tied.get(edge) else {
            return Vec::new();
        };
        match client {
            Some(c) => clients
                .get(c)
                .map(|k| k.iter().cloned().collect())
                .unwrap_or_default(),
            None => clients.values().flatten().cloned().collect(),
        }
    }
}

impl Rooms {
    /// Applies a state write of `edge` (see [`StateWrite`]).
    pub(super) fn state_write(
        &mut self,
        now: u64,
        edge: EdgeId,
        room: RoomName,
        write: StateWrite,
        events: &mut Vec<RoomEvent>,
    ) -> Result<StateAck, RoomsError> {
        let ns = self.settings.namespaces.of(&room).state.clone();
        if !ns.enabled {
            return Err(RoomsError::NotStateRoom {
                namespace: room.namespace().to_owned(),
            });
        }
        match write {
            StateWrite::Set {
                key,
                value,
                expect,
                ttl_ms,
                tied,
                from,
            } => {
                if let Err(why) = plaza_proto::state::check_state_key(&key) {
                    return Err(RoomsError::StateLimit(why));
                }
                if value.len() > ns.max_value_bytes {
                    return Err(RoomsError::StateLimit(format!(
                        "value is {} bytes; at most {} are allowed",
                        value.len(),
                        ns.max_value_bytes
                    )));
                }
                let max_ttl = millis(ns.max_ttl);
                if let Some(ttl) = ttl_ms
                    && (ttl == 0 || ttl > max_ttl)
                {
                    return Err(RoomsError::StateLimit(format!(
                        "ttl must be 1..={max_ttl} ms, got {ttl}"
                    )));
                }
                if tied.is_some() && !self.state.edges.is_live(&edge, now) {
                    return Err(RoomsError::LeaseExpired { edge });
                }
                let current = self.state.state_rooms.current(&room, &key);
                check_expected(&key, expect, current)?;
                let keys = self
                    .state
                    .state_rooms
                    .maps
                    .get(&room)
                    .map_or(0, |m| m.len());
                if current == 0 && keys >= ns.max_keys {
                    return Err(RoomsError::StateLimit(format!(
                        "room {room} holds {keys} keys; at most {} are allowed",
                        ns.max_keys
                    )));
                }
                self.state.state_rooms.remove(&room, &key);
                let change = StateChange::Set {
                    key: key.clone(),
                    value: value.clone(),
                };
                let version = self.append(now, &room, change.encode(), from, events);
                let entry = Entry {
                    value,
                    version,
                    expires: ttl_ms.map(|t| now.saturating_add(t)),
                    tied: tied.map(|client| (edge, client)),
                };
                self.state.state_rooms.insert(&room, key, entry);
                Ok(StateAck {
                    position: self.at(version),
                })
            }
            StateWrite::Delete { key, expect, from } => {
                let current = self.state.state_rooms.current(&room, &key);
                check_expected(&key, expect, current)?;
                if current == 0 {
                    return Ok(StateAck {
                        position: self.position(&room),
                    });
                }
                let offset = self.delete_key(now, &room, &key, from, events);
                Ok(StateAck {
                    position: self.at(offset),
                })
            }
            StateWrite::Release { client } => {
                let keys = self.state.state_rooms.tied_to(&edge, Some(&client));
                let position = self.position(&room);
                let last = self.delete_keys(now, keys, events);
                Ok(StateAck {
                    position: last.map_or(position, |o| self.at(o)),
                })
            }
        }
    }

    /// `room`'s whole map at its current position.
    pub fn state_snapshot(&self, room: &RoomName) -> Result<StateSnapshot, RoomsError> {
        if !self.settings.namespaces.of(room).state.enabled {
            return Err(RoomsError::NotStateRoom {
                namespace: room.namespace().to_owned(),
            });
        }
        let entries = self
            .state
            .state_rooms
            .maps
            .get(room)
            .map(|m| {
                m.iter()
                    .map(|(key, e)| StateEntry {
                        key: key.clone(),
                        value: e.value.clone(),
                        version: e.version,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(StateSnapshot {
            position: self.position(room),
            entries,
        })
    }

    /// Deletes every key tied to a connection of `edge` (it detached or its lease ran out).
    pub(super) fn release_edge_keys(
        &mut self,
        now: u64,
        edge: &EdgeId,
        events: &mut Vec<RoomEvent>,
    ) {
        let keys = self.state.state_rooms.tied_to(edge, None);
        self.delete_keys(now, keys, events);
    }

    /// Deletes the keys whose TTL ran out by `now`.
    pub(super) fn expire_state(&mut self, now: u64, events: &mut Vec<RoomEvent>) {
        let mut due = Vec::new();
        while let Some((at, _, _)) = self.state.state_rooms.expiry.first()
            && *at <= now
        {
            if let Some((_, room, key)) = self.state.state_rooms.expiry.pop_first() {
                due.push((room, key));
            }
        }
        self.delete_keys(now, due, events);
    }

    fn delete_keys(
        &mut self,
        now: u64,
        keys: Vec<(RoomName, String)>,
        events: &mut Vec<RoomEvent>,
    ) -> Option<u64> {
        let mut last = None;
        for (room, key) in keys {
            if self.state.state_rooms.current(&room, &key) != 0 {
                last = Some(self.delete_key(now, &room, &key, None, events));
            }
        }
        last
    }

    fn delete_key(
        &mut self,
        now: u64,
        room: &RoomName,
        key: &str,
        from: Option<Sender>,
        events: &mut Vec<RoomEvent>,
    ) -> u64 {
        self.state.state_rooms.remove(room, key);
        let change = StateChange::Deleted {
            key: key.to_owned(),
        };
        self.append(now, room, change.encode(), from, events)
    }
}

fn check_expected(key: &str, expect: Option<u64>, current: u64) -> Result<(), RoomsError> {
    match expect {
        Some(expected) if expected != current => Err(RoomsError::StateConflict {
            key: key.to_owned(),
            expected,
            current,
        }),
        _ => Ok(()),
    }
}
