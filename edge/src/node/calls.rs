//! Every call the edge makes to the broker tier, for both front ends (WebSocket sessions and
//! the HTTP API), through one wrapper: the `broker.call_timeout`, the call-duration metric, and
//! the one mapping from [`BrokerError`] to client error codes. Publishing also checks the
//! namespace's `max_message_bytes` here, so no front end can forget it.
//!
//! Errors are [`ErrorBody`] (a client [`ErrorCode`] and a message); the HTTP API turns them into
//! its own codes of the same names (`api::error`).

use std::future::Future;

use plaza_backend::EdgeLink;
use plaza_proto::cluster::{BrokerError, HistoryPage, PresenceStats, PublishAck, RoomsPage};
use plaza_proto::{
    ClientId, ErrorBody, ErrorCode, Member, Payload, Position, RoomName, Sender, UserId,
};

use super::Node;
use crate::hub::SessionId;
use crate::metrics as m;

/// What a broker call returns to a front end.
pub(super) type CallResult<T> = Result<T, ErrorBody>;

impl<L: EdgeLink> Node<L> {
    /// Runs one broker call with the configured timeout, timing it by `name`.
    async fn call<T>(
        &self,
        name: &'static str,
        f: impl Future<Output = Result<T, BrokerError>>,
    ) -> CallResult<T> {
        let start = std::time::Instant::now();
        let limit = self.config.broker.call_timeout;
        let result = tokio::time::timeout(limit, f).await;
        metrics::histogram!(m::BROKER_CALL_SECONDS, "call" => name)
            .record(start.elapsed().as_secs_f64());
        match result {
            Ok(r) => r.map_err(broker_error),
            Err(_) => Err(ErrorCode::BackendUnavailable.with(format!(
                "broker call {name} timed out after {}",
                humantime::format_duration(limit)
            ))),
        }
    }

    /// Fails with `message_too_large` if `len` bytes of data exceed `room`'s namespace limit.
    pub fn check_message_size(&self, room: &RoomName, len: usize) -> CallResult<()> {
        let max = self.namespaces.of(room).max_message_bytes;
        if len > max {
            metrics::counter!(m::LIMIT_HITS, "limit" => "message_bytes").increment(1);
            return Err(ErrorCode::MessageTooLarge.with(format!(
                "data is {len} bytes; namespace {:?} allows {max}",
                room.namespace(),
            )));
        }
        Ok(())
    }

    /// Publishes `data` to `room` (after the size check) and returns its position once durable.
    /// `from` is `None` for the server API.
    pub async fn publish(
        &self,
        room: RoomName,
        data: Payload,
        from: Option<Sender>,
        idem: Option<String>,
    ) -> CallResult<PublishAck> {
        self.check_message_size(&room, data.len())?;
        self.call("publish", self.link().publish(room, data, from, idem))
            .await
    }

    /// Makes sure `room` is subscribed upstream (once per room per edge; see the hub's
    /// subscribe protocol) and returns where that subscription began.
    pub async fn subscribe_upstream(&self, room: &RoomName) -> CallResult<Position> {
        let link = self.link();
        let ensure = self
            .hub
            .ensure_upstream(room, || link.subscribe(room.clone()));
        self.call("subscribe", ensure).await
    }

    /// Removes a local subscriber of `room`; the last one out unsubscribes upstream.
    pub async fn unsubscribe_local(&self, room: &RoomName, session: SessionId) {
        let link = self.link();
        self.hub
            .remove(room, session, || link.unsubscribe(room.clone()))
            .await;
    }

    /// Adds `member` to `room`'s presence, owned by this edge.
    pub async fn join(&self, room: RoomName, member: Member) -> CallResult<()> {
        self.call("join", self.link().join(room, member)).await
    }

    /// Removes this edge's member `client` from `room`'s presence.
    pub async fn leave(&self, room: RoomName, client: ClientId) -> CallResult<()> {
        self.call("leave", self.link().leave(room, client)).await
    }

    /// The members of `room`.
    pub async fn presence(&self, room: RoomName) -> CallResult<Vec<Member>> {
        self.call("presence", self.link().presence(room)).await
    }

    /// Member and distinct-user counts of `room`.
    pub async fn presence_stats(&self, room: RoomName) -> CallResult<PresenceStats> {
        self.call("presence_stats", self.link().presence_stats(room))
            .await
    }

    /// Reads `room`'s log (see `EdgeLink::history`).
    pub async fn history(
        &self,
        room: RoomName,
        since: Option<Position>,
        limit: Option<u32>,
    ) -> CallResult<HistoryPage> {
        self.call("history", self.link().history(room, since, limit))
            .await
    }

    /// One page of the active rooms.
    pub async fn rooms(&self, after: Option<RoomName>, limit: u32) -> CallResult<RoomsPage> {
        self.call("rooms", self.link().rooms(after, limit)).await
    }

    /// Asks every edge to close every connection of `user`.
    pub async fn disconnect_user(&self, user: UserId, reason: String) -> CallResult<()> {
        self.call("disconnect_user", self.link().disconnect_user(user, reason))
            .await
    }
}

/// The one mapping from broker errors to client error codes (the HTTP API names its codes
/// after these).
pub(crate) fn broker_error(e: BrokerError) -> ErrorBody {
    let code = match &e {
        BrokerError::Unavailable(_) | BrokerError::LeaseExpired(_) => ErrorCode::BackendUnavailable,
        BrokerError::PresenceDisabled { .. } => ErrorCode::PresenceDisabled,
        BrokerError::Invalid(_) => ErrorCode::BadRequest,
    };
    code.with(e.to_string())
}
