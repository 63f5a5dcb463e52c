//! Applying [`Command`]s: the only code that changes [`RoomsState`].

use std::collections::BTreeMap;

use plaza_proto::cluster::{PublishAck, RoomEvent, RoomEventKind};
use plaza_proto::{ClientId, EdgeId, Member, Payload, Publication, RoomName, Sender};

use super::gc::Watermarks;
use super::lifecycle::Ctx;
use super::presence::JoinOutcome;
use super::room::{IdemEntry, Room};
use super::{Applied, Command, IdemExpiry, MAX_IDEM_LEN, Rooms, RoomsError, RoomsState};
use crate::config::PresenceMode;

impl Rooms {
    /// Applies `cmd` at time `now` (milliseconds), appending the events it causes to `events`
    /// in the order they happen. A failed command emits nothing and changes no room, lease or
    /// member (it still advances the clock, which only ever moves forward).
    pub fn apply(
        &mut self,
        now: u64,
        cmd: Command,
        events: &mut Vec<RoomEvent>,
    ) -> Result<Applied, RoomsError> {
        let now = now.max(self.state.clock);
        self.state.clock = now;
        match cmd {
            Command::Publish {
                room,
                data,
                from,
                idem,
            } => self
                .publish(now, room, data, from, idem, events)
                .map(Applied::Published),
            Command::Join { edge, room, member } => self
                .join(now, edge, room, member, events)
                .map(|()| Applied::Done),
            Command::Leave { room, client } => {
                self.leave(now, &room, &client, None, events);
                Ok(Applied::Done)
            }
            Command::LeaveOwned { edge, room, client } => {
                self.leave(now, &room, &client, Some(&edge), events);
                Ok(Applied::Done)
            }
            Command::AttachEdge { edge, lease_ms } => {
                self.state.edges.attach(edge, lease_ms, now);
                Ok(Applied::Done)
            }
            Command::RenewEdge { edge } => {
                if self.state.edges.renew(&edge, now) {
                    Ok(Applied::Done)
                } else {
                    Err(RoomsError::LeaseExpired { edge })
                }
            }
            Command::DetachEdge { edge } => {
                self.detach(now, &edge, events);
                Ok(Applied::Done)
            }
            Command::Tick => {
                self.tick(now, events);
                Ok(Applied::Done)
            }
            Command::ClaimWebhooks { edge, lease_ms } => Ok(Applied::WebhookClaim(
                self.state
                    .webhooks
                    .claim(&self.state.instance, edge, lease_ms, now),
            )),
            Command::AckWebhooks {
                edge,
                endpoint,
                through,
            } => {
                if self.state.webhooks.ack(&edge, endpoint, through, now) {
                    Ok(Applied::Done)
                } else {
                    Err(RoomsError::NotWebhookSender { edge })
                }
            }
            Command::StateWrite { edge, room, write } => self
                .state_write(now, edge, room, write, events)
                .map(Applied::StateWritten),
        }
    }

    fn publish(
        &mut self,
        now: u64,
        name: RoomName,
        data: Payload,
        from: Option<Sender>,
        idem: Option<String>,
        events: &mut Vec<RoomEvent>,
    ) -> Result<PublishAck, RoomsError> {
        if let Some(key) = &idem
            && key.len() > MAX_IDEM_LEN
        {
            return Err(RoomsError::IdemTooLong {
                room: name,
                len: key.len(),
                max: MAX_IDEM_LEN,
            });
        }
        if self.settings.namespaces.of(&name).state.enabled {
            // The edges refuse this first; the state machine too, whatever calls it (the log
            // of a state room must stay its map's changes, or recovery would replay junk).
            return Err(RoomsError::PublishInStateRoom { room: name });
        }
        let idem_window = self.settings.idem_window;
        let state = &mut self.state;
        let room = room_entry(&mut state.rooms, &state.watermarks, state.seq, &name, now);
        if let Some(key) = &idem
            && let Some(offset) = room.idem(key, now)
        {
            let position = plaza_proto::Position {
                epoch: state.instance.clone(),
                offset,
            };
            return Ok(PublishAck {
                position,
                duplicate: true,
            });
        }
        let offset = self.append(now, &name, data, from, events);
        if let Some(key) = idem {
            let state = &mut self.state;
            let expires = now.saturating_add(idem_window);
            if let Some(room) = state.rooms.get_mut(&name) {
                room.idem.insert(key.clone(), IdemEntry { offset, expires });
            }
            state.idem_expiry.push_back(IdemExpiry {
                expires,
                room: name.clone(),
                key,
            });
            self.touch(&name);
        }
        let position = self.at(offset);
        Ok(PublishAck {
            position,
            duplicate: false,
        })
    }

    /// Appends a publication (or a state room's change record) to `name`'s log, creating the
    /// room if needed, and emits it; returns its offset.
    pub(super) fn append(
        &mut self,
        now: u64,
        name: &RoomName,
        data: Payload,
        from: Option<Sender>,
        events: &mut Vec<RoomEvent>,
    ) -> u64 {
        let size = self.settings.namespaces.of(name).history_size;
        let state = &mut self.state;
        let room = room_entry(&mut state.rooms, &state.watermarks, state.seq, name, now);
        state.seq += 1;
        let offset = state.seq;
        let publication = Publication { offset, data, from };
        let dropped = room.history.push(now, publication.clone(), size);
        room.pruned(dropped);
        room.last = offset;
        room.last_activity = now;
        events.push(event(state, name, RoomEventKind::Publication(publication)));
        self.touch(name);
        offset
    }

    fn join(
        &mut self,
        now: u64,
        edge: EdgeId,
        name: RoomName,
        member: Member,
        events: &mut Vec<RoomEvent>,
    ) -> Result<(), RoomsError> {
        let ns = self.settings.namespaces.of(&name);
        if ns.presence == PresenceMode::Off {
            let namespace = name.namespace().to_owned();
            return Err(RoomsError::PresenceDisabled {
                room: name,
                namespace,
                mode: ns.presence,
            });
        }
        if !self.state.edges.is_live(&edge, now) {
            return Err(RoomsError::LeaseExpired { edge });
        }
        let announce = ns.presence == PresenceMode::Full && ns.join_leave;
        let state = &mut self.state;
        let ctx = Ctx {
            settings: &self.settings.events,
            namespaces: &self.settings.namespaces,
            epoch: &state.instance,
            now,
        };
        let room = room_entry(&mut state.rooms, &state.watermarks, state.seq, &name, now);
        room.last_activity = now;
        let client = member.client.clone();
        let was_empty = room.presence.is_empty();
        let first_of_user = room.presence.connections_of(&member.user) == 0;
        let for_lifecycle = member.clone();
        let for_event = announce.then(|| member.clone());
        match room.presence.join(edge.clone(), member) {
            JoinOutcome::New => {
                state
                    .lifecycle
                    .joined(&ctx, &name, &for_lifecycle, was_empty, first_of_user);
                if let Some(member) = for_event {
                    events.push(event(state, &name, RoomEventKind::Join(member)));
                }
            }
            JoinOutcome::Replaced {
                previous_edge,
                previous,
            } => {
                if previous.user == for_lifecycle.user && previous.info != for_lifecycle.info {
                    // `presence_update`: the same connection with new info.
                    state.lifecycle.updated(&ctx, &name, &for_lifecycle);
                    if let Some(member) = for_event {
                        events.push(event(state, &name, RoomEventKind::PresenceUpdate(member)));
                    }
                } else if previous.user != for_lifecycle.user {
                    // The connection now belongs to another user: the old one left it.
                    let last = room.presence.connections_of(&previous.user) == 0;
                    let first = room.presence.connections_of(&for_lifecycle.user) == 1;
                    state.lifecycle.left(&ctx, &name, &previous, false, last);
                    state
                        .lifecycle
                        .joined(&ctx, &name, &for_lifecycle, false, first);
                }
                if previous_edge != edge {
                    state.edges.remove_member(&previous_edge, &name, &client);
                }
            }
        }
        state.edges.add_member(&edge, &name, &client);
        Ok(())
    }

    /// Removes `client` from `name`'s presence — only if `owner` owns it, when given (an edge
    /// going away takes only its own members).
    fn leave(
        &mut self,
        now: u64,
        name: &RoomName,
        client: &ClientId,
        owner: Option<&EdgeId>,
        events: &mut Vec<RoomEvent>,
    ) {
        let Some(room) = self.state.rooms.get_mut(name) else {
            return;
        };
        if owner.is_some_and(|owner| room.presence.owner(client) != Some(owner)) {
            return;
        }
        let Some(joined) = room.presence.leave(client) else {
            return;
        };
        room.last_activity = now;
        let is_empty = room.presence.is_empty();
        let last_of_user = room.presence.connections_of(&joined.member.user) == 0;
        let ctx = Ctx {
            settings: &self.settings.events,
            namespaces: &self.settings.namespaces,
            epoch: &self.state.instance,
            now,
        };
        self.state
            .lifecycle
            .left(&ctx, name, &joined.member, is_empty, last_of_user);
        self.state.edges.remove_member(&joined.edge, name, client);
        let ns = self.settings.namespaces.of(name);
        if ns.presence == PresenceMode::Full && ns.join_leave {
            events.push(event(
                &self.state,
                name,
                RoomEventKind::Leave(joined.member),
            ));
        }
        self.touch(name);
    }

    fn detach(&mut self, now: u64, edge: &EdgeId, events: &mut Vec<RoomEvent>) {
        for (room, client) in self.state.edges.remove(edge) {
            self.leave(now, &room, &client, Some(edge), events);
        }
        self.release_edge_keys(now, edge, events);
    }

    fn tick(&mut self, now: u64, events: &mut Vec<RoomEvent>) {
        while let Some(edge) = self.state.edges.next_expired(now) {
            self.detach(now, &edge, events);
        }
        let ctx = Ctx {
            settings: &self.settings.events,
            namespaces: &self.settings.namespaces,
            epoch: &self.state.instance,
            now,
        };
        self.state.lifecycle.tick(&ctx);
        self.expire_state(now, events);
        while let Some(first) = self.state.idem_expiry.front()
            && first.expires <= now
        {
            let Some(expired) = self.state.idem_expiry.pop_front() else {
                break;
            };
            let Some(room) = self.state.rooms.get_mut(&expired.room) else {
                continue;
            };
            if room
                .idem
                .get(&expired.key)
                .is_some_and(|e| e.expires == expired.expires)
            {
                room.idem.remove(&expired.key);
                self.touch(&expired.room);
            }
        }
        while let Some((deadline, _)) = self.state.wakeups.first()
            && *deadline <= now
        {
            let Some((_, name)) = self.state.wakeups.pop_first() else {
                break;
            };
            self.wake(now, &name);
        }
    }

    /// A room's wakeup came due: drop expired history, collect the room if it is idle, or else
    /// schedule its next deadline.
    fn wake(&mut self, now: u64, name: &RoomName) {
        let ttl = self.ttl_of(name);
        let Some(room) = self.state.rooms.get_mut(name) else {
            return;
        };
        room.wakeup = None;
        let dropped = room.history.expire(now, ttl);
        room.pruned(dropped);
        if room.is_collectable(now, self.settings.idle_ttl) {
            self.state.rooms.remove(name);
            self.state.watermarks.collected(name, self.state.seq);
        } else {
            self.touch(name);
        }
    }

    /// Makes sure `name`'s wakeup is no later than its next deadline. Called after anything
    /// that may bring the deadline forward; a wakeup that comes too early just reschedules.
    fn touch(&mut self, name: &RoomName) {
        let ttl = self.ttl_of(name);
        let Some(room) = self.state.rooms.get_mut(name) else {
            return;
        };
        let Some(deadline) = room.next_deadline(ttl, self.settings.idle_ttl) else {
            return;
        };
        if room.wakeup.is_some_and(|w| w <= deadline) {
            return;
        }
        if let Some(old) = room.wakeup.replace(deadline) {
            self.state.wakeups.remove(&(old, name.clone()));
        }
        self.state.wakeups.insert((deadline, name.clone()));
    }
}

/// `name`'s room, created at the current sequence with its bucket's GC watermark if needed.
/// Takes the state's fields one by one so the caller can keep using the others.
fn room_entry<'a>(
    rooms: &'a mut BTreeMap<RoomName, Box<Room>>,
    watermarks: &Watermarks,
    seq: u64,
    name: &RoomName,
    now: u64,
) -> &'a mut Room {
    rooms
        .entry(name.clone())
        .or_insert_with(|| Box::new(Room::new(seq, watermarks.get(name, seq), now)))
}

fn event(state: &RoomsState, room: &RoomName, kind: RoomEventKind) -> RoomEvent {
    RoomEvent {
        room: room.clone(),
        epoch: state.instance.clone(),
        kind,
    }
}
