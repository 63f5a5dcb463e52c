//! `presence_update`: replace this connection's presence `info` in a room it is a member of.
//!
//! ```text
//!  presence_update ─▶ subscribed + member? (108) ─▶ `publish` capability (106) ─▶ size (109)
//!                  ─▶ PresenceUpdateRate (112) ─▶ EdgeLink::join (same client, new info)
//!                  ─▶ broker tier: `update` push to presence subscribers, `presence.updated`
//! ```
//!
//! The capability is `publish` on the room: changing what every member sees about you is a
//! write to the room, like publishing. The update is a re-join of the same connection with
//! the new info; the broker tier announces it only when the info changed.

use super::*;
use crate::config::LimitsConfig;
use crate::limits::quota;

/// One connection's `presence_update`s per second.
pub(super) struct PresenceUpdateRate(crate::limits::Bucket);

impl PresenceUpdateRate {
    fn new(limits: &LimitsConfig) -> Self {
        Self(crate::limits::bucket(quota(
            limits.presence_updates_per_second,
            limits.presence_update_burst,
        )))
    }

    fn check(&self, limits: &LimitsConfig) -> Result<(), ErrorBody> {
        if self.0.check().is_ok() {
            return Ok(());
        }
        metrics::counter!(m::LIMIT_HITS, "limit" => "presence_updates_per_connection").increment(1);
        Err(ErrorCode::RateLimited.with(format!(
            "at most {} presence updates per second per connection (burst {}); slow down",
            limits.presence_updates_per_second, limits.presence_update_burst
        )))
    }
}

impl<L: EdgeLink> Session<L> {
    pub(super) async fn presence_update(
        &mut self,
        u: PresenceUpdate,
    ) -> Result<ReplyOk, ErrorBody> {
        let room = u.room;
        match self.subs.get(&room) {
            Some(sub) if sub.joined => {}
            Some(_) => {
                return Err(ErrorCode::PresenceDisabled.with(format!(
                    "namespace {:?} keeps no presence",
                    room.namespace()
                )));
            }
            None => {
                return Err(ErrorCode::NotSubscribed.with(format!(
                    "subscribe to {room} first: a connection is a member only while subscribed"
                )));
            }
        }
        self.check(&room, Capability::Publish)?;
        let max = self.node.config.client.max_presence_info_bytes;
        let size = u.info.as_ref().map_or(0, |i| i.len());
        if size > max {
            metrics::counter!(m::LIMIT_HITS, "limit" => "presence_info_bytes").increment(1);
            return Err(ErrorCode::MessageTooLarge
                .with(format!("presence info is {size} bytes; at most {max}")));
        }
        let limits = &self.node.config.limits;
        Rare::of(&mut self.rare)
            .presence_updates
            .get_or_insert_with(|| PresenceUpdateRate::new(limits))
            .check(limits)?;
        let mut member = self.member();
        member.info = u.info;
        self.node.join(room, member).await?;
        Ok(ReplyOk::Empty(Empty {}))
    }
}
