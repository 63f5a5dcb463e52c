//! Broker calls of live-state rooms, for both front ends: the namespace checks (state room,
//! value size, TTL range) before the call and the error mapping after it, each refusal
//! counted in `plaza_state_refused_total{reason}`.

use plaza_backend::EdgeLink;
use plaza_proto::cluster::BrokerError;
use plaza_proto::state::{StateAck, StateSnapshot, StateWrite};
use plaza_proto::{ClientId, ErrorCode, Payload, RoomName, Sender};
use plaza_rooms::config::StateOptions;

use super::Node;
use super::calls::{CallResult, broker_error};
use crate::metrics as m;
use crate::outbox::Flushes;
use crate::state::refused;

/// A `set` as the front ends ask for it.
pub(crate) struct SetRequest {
    pub(crate) key: String,
    pub(crate) value: Payload,
    /// Compare-and-set on this version (0: the key must be absent).
    pub(crate) expect: Option<u64>,
    /// TTL in seconds.
    pub(crate) ttl: Option<u64>,
    /// Tie the key to this connection.
    pub(crate) tied: Option<ClientId>,
    pub(crate) from: Option<Sender>,
}

impl<L: EdgeLink> Node<L> {
    /// Hands a room event to the local fan-out, through the conflator in state namespaces
    /// with `state.conflate_per_second`.
    /// Direct writes to lean connections are left in `flushes` (see `Hub::dispatch`).
    pub(crate) fn dispatch(&self, event: plaza_proto::cluster::RoomEvent, flushes: &mut Flushes) {
        let state = &self.namespaces.of(&event.room).state;
        if state.enabled && state.conflate_per_second > 0 {
            self.conflator
                .dispatch(&self.hub, event, state.conflate_per_second, flushes);
        } else {
            self.hub.dispatch(event, flushes);
        }
    }

    /// `room`'s state options, or `not_state_room` if its namespace has no state rooms.
    pub(crate) fn state_options(&self, room: &RoomName) -> CallResult<&StateOptions> {
        let ns = &self.namespaces.of(room).state;
        if ns.enabled {
            return Ok(ns);
        }
        refused("not_state_room");
        Err(ErrorCode::NotStateRoom.with(format!(
            "namespace {:?} has no live-state rooms (set `state.enabled`)",
            room.namespace()
        )))
    }

    /// The `subscribe` reply of a state room whose client needs the whole map: the snapshot,
    /// with the position it covers (read after the upstream subscription is in place, so
    /// every later change is buffered for the subscriber).
    pub(crate) async fn state_subscribe_reply(
        &self,
        room: &RoomName,
    ) -> CallResult<(plaza_proto::client::SubscribeOk, plaza_proto::Position)> {
        let snapshot = self.state_read(room.clone()).await?;
        let position = snapshot.position;
        let ok = plaza_proto::client::SubscribeOk {
            epoch: position.epoch.clone(),
            offset: position.offset,
            recovered: false,
            publications: Vec::new(),
            state: Some(snapshot.entries),
        };
        Ok((ok, position))
    }

    /// Sets a key of a state room.
    pub(crate) async fn state_set(&self, room: RoomName, set: SetRequest) -> CallResult<StateAck> {
        let ns = self.state_options(&room)?;
        if set.value.len() > ns.max_value_bytes {
            refused("value_too_large");
            metrics::counter!(m::LIMIT_HITS, "limit" => "state_value_bytes").increment(1);
            return Err(ErrorCode::MessageTooLarge.with(format!(
                "value is {} bytes; namespace {:?} allows {}",
                set.value.len(),
                room.namespace(),
                ns.max_value_bytes
            )));
        }
        let max_ttl = ns.max_ttl.as_secs();
        let ttl_ms = match set.ttl {
            None => None,
            Some(ttl) if ttl == 0 || ttl > max_ttl => {
                refused("bad_ttl");
                return Err(ErrorCode::BadRequest.with(format!(
                    "`ttl` must be 1..={max_ttl} seconds (namespace {:?}), got {ttl}",
                    room.namespace()
                )));
            }
            Some(ttl) => Some(ttl * 1000),
        };
        let write = StateWrite::Set {
            key: set.key,
            value: set.value,
            expect: set.expect,
            ttl_ms,
            tied: set.tied,
            from: set.from,
        };
        self.state_write(room, write).await
    }

    /// Deletes a key of a state room.
    pub(crate) async fn state_delete(
        &self,
        room: RoomName,
        key: String,
        expect: Option<u64>,
        from: Option<Sender>,
    ) -> CallResult<StateAck> {
        self.state_options(&room)?;
        self.state_write(room, StateWrite::Delete { key, expect, from })
            .await
    }

    /// Deletes the keys `client` tied in `room` (its subscription or connection ended).
    pub(crate) async fn state_release(&self, room: RoomName, client: ClientId) -> CallResult<()> {
        self.state_options(&room)?;
        let release = StateWrite::Release { client };
        self.call_raw("state_write", self.link().state_write(room, release))
            .await
            .map_err(broker_error)?;
        Ok(())
    }

    /// A state room's whole map with its position.
    pub(crate) async fn state_read(&self, room: RoomName) -> CallResult<StateSnapshot> {
        self.state_options(&room)?;
        self.call_raw("state_read", self.link().state_read(room))
            .await
            .map_err(broker_error)
    }

    async fn state_write(&self, room: RoomName, write: StateWrite) -> CallResult<StateAck> {
        let result = self
            .call_raw("state_write", self.link().state_write(room, write))
            .await;
        match result {
            Ok(ack) => {
                metrics::counter!(m::STATE_WRITES).increment(1);
                Ok(ack)
            }
            Err(e) => Err(state_error(e)),
        }
    }
}

/// A state write's broker error as a client error, counted.
fn state_error(e: BrokerError) -> plaza_proto::ErrorBody {
    match e {
        BrokerError::StateConflict { current, .. } => {
            refused("conflict");
            let mut body = ErrorCode::StateConflict.with(e.to_string());
            body.version = Some(current);
            body
        }
        BrokerError::StateLimit(_) => {
            refused("too_many_keys");
            metrics::counter!(m::LIMIT_HITS, "limit" => "state_keys_per_room").increment(1);
            broker_error(e)
        }
        BrokerError::NotStateRoom { .. } => {
            refused("not_state_room");
            broker_error(e)
        }
        e => broker_error(e),
    }
}
