//! `set` and `delete` in live-state rooms: the subscription, capability and namespace checks
//! of a publish, the connection's state write rate and the user's publish byte budget, then
//! the broker tier. Keys set with `tied: true` are released when the subscription ends.

use super::*;
use crate::node::state::SetRequest;
use crate::state::StateRate;
use plaza_proto::client::{StateDelete, StateSet};

impl<L: EdgeLink> Session<L> {
    pub(super) async fn set(&mut self, s: StateSet) -> Result<ReplyOk, ErrorBody> {
        let room = s.room.clone();
        self.check_state_write(&room, s.key.len() + s.value.len())?;
        let conn = self.connected();
        let from = Sender {
            user: conn.identity.user.clone(),
            client: conn.client.clone(),
        };
        let tied = s.tied.then(|| conn.client.clone());
        if tied.is_some()
            && let Some(sub) = self.subs.get_mut(&room)
        {
            // Marked before the call: if its answer is lost, the key is still released.
            sub.tied = true;
        }
        let set = SetRequest {
            key: s.key,
            value: s.value,
            expect: s.version,
            ttl: s.ttl,
            tied,
            from: Some(from),
        };
        let ack = self.node.state_set(room, set).await?;
        Ok(ReplyOk::Publish(PublishOk {
            epoch: ack.position.epoch,
            offset: ack.position.offset,
        }))
    }

    pub(super) async fn delete(&mut self, d: StateDelete) -> Result<ReplyOk, ErrorBody> {
        self.check_state_write(&d.room, d.key.len())?;
        let conn = self.connected();
        let from = Sender {
            user: conn.identity.user.clone(),
            client: conn.client.clone(),
        };
        let ack = self
            .node
            .state_delete(d.room, d.key, d.version, Some(from))
            .await?;
        Ok(ReplyOk::Publish(PublishOk {
            epoch: ack.position.epoch,
            offset: ack.position.offset,
        }))
    }

    /// Deletes the keys this connection tied in `room`.
    pub(super) async fn release_tied(&self, room: RoomName) {
        let client = self.connected().client.clone();
        if let Err(e) = self.node.state_release(room.clone(), client).await {
            tracing::warn!(room = %room, error = %e.message, "releasing tied keys failed; the edge's lease will remove them");
        }
    }

    /// What a state write needs before it reaches the broker tier.
    fn check_state_write(&mut self, room: &RoomName, bytes: usize) -> Result<(), ErrorBody> {
        if !self.subs.contains_key(room) {
            return Err(ErrorCode::NotSubscribed
                .with(format!("subscribe to {room} before writing to its state")));
        }
        self.check(room, Capability::Publish)?;
        self.node.state_options(room)?;
        if !self.node.namespaces.of(room).client_publish {
            return Err(ErrorCode::PublishDisabled.with(format!(
                "clients may not write in namespace {:?}",
                room.namespace()
            )));
        }
        let limits = &self.node.config.limits;
        Rare::of(&mut self.rare)
            .state_rate
            .get_or_insert_with(|| StateRate::new(limits))
            .check(limits)?;
        let user = &self.connected().identity.user;
        if self.node.publish_budget.charge(user, bytes).is_err() {
            crate::state::refused("rate_limited");
            return Err(ErrorCode::RateLimited.with(format!(
                "user's publish budget ({} bytes/s) is spent; slow down",
                limits.publish_bytes_per_second_per_user
            )));
        }
        Ok(())
    }
}
