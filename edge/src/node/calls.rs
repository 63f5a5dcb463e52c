//! Every call the edge makes to the broker tier, for both front ends (WebSocket sessions and
//! the HTTP API), through one wrapper: the `broker.call_timeout`, the call-duration metric, and
//! the one mapping from [`BrokerError`] to client error codes. Publishing also checks the
//! namespace's `max_message_bytes` here, so no front end can forget it.
//!
//! Errors are [`ErrorBody`] (a client [`ErrorCode`] and a message); the HTTP API turns them into
//! its own codes of the same names (`api::error`).

use std::future::Future;

use plaza_backend::EdgeLink;
use plaza_proto::cluster::{
    BrokerError, HistoryPage, PresencePage, PresenceStats, PublishAck, RoomsPage,
};
use plaza_proto::events::{EventFilter, EventsPage, FeedPosition, WebhookClaim};
use plaza_proto::{
    ClientId, ErrorBody, ErrorCode, Member, Payload, Position, Publication, RoomName, Sender,
    UserId,
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
        self.call_raw(name, f).await.map_err(broker_error)
    }

    /// [`Self::call`] keeping the broker's error (a timeout is [`BrokerError::Unavailable`]),
    /// for a front end that answers some broker errors its own way.
    pub(super) async fn call_raw<T>(
        &self,
        name: &'static str,
        f: impl Future<Output = Result<T, BrokerError>>,
    ) -> Result<T, BrokerError> {
        let start = std::time::Instant::now();
        let limit = self.config.broker.call_timeout;
        let result = tokio::time::timeout(limit, f).await;
        metrics::histogram!(m::BROKER_CALL_SECONDS, "call" => name)
            .record(start.elapsed().as_secs_f64());
        result.unwrap_or_else(|_| {
            Err(BrokerError::Unavailable(format!(
                "broker call {name} timed out after {}",
                humantime::format_duration(limit)
            )))
        })
    }

    /// [`Self::call`] for a call that is safe to repeat: made again by `make` while the broker
    /// tier answers [`BrokerError::Unavailable`], with a growing pause (50 ms, doubling up to
    /// 400 ms), until `broker.retry_unavailable_for` has passed — all within the call timeout.
    /// A Raft election or a broker briefly out of touch with its leader then costs the client
    /// a slower answer, not an error.
    async fn call_idempotent<T, F, Fut>(&self, name: &'static str, make: F) -> CallResult<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, BrokerError>>,
    {
        self.call(
            name,
            retry_unavailable(name, self.config.broker.retry_unavailable_for, make),
        )
        .await
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
        if self.namespaces.of(&room).state.enabled {
            crate::state::refused("publish_in_state_room");
            return Err(ErrorCode::NotStateRoom.with(format!(
                "room {room} is a live-state room: its publications are its map's changes; \
                 use `set` and `delete`"
            )));
        }
        let link = self.link();
        if idem.is_none() {
            return self
                .call("publish", link.publish(room, data, from, idem))
                .await;
        }
        // The idempotency key makes a retry of an unknown outcome safe: the broker tier
        // answers a repeat with the first publication's position.
        self.call_idempotent("publish", || {
            link.publish(room.clone(), data.clone(), from.clone(), idem.clone())
        })
        .await
    }

    /// Hands an ephemeral publication to the broker tier (after the size check and the
    /// room's ephemeral rate): delivered at most once to whoever is subscribed now, no offset.
    /// `from` is `None` for the server API. The namespace's ephemeral mode is the caller's.
    pub async fn publish_ephemeral(
        &self,
        room: RoomName,
        data: Payload,
        from: Option<Sender>,
    ) -> CallResult<()> {
        self.check_message_size(&room, data.len())?;
        self.ephemeral_rooms.check(&room)?;
        self.call(
            "publish_ephemeral",
            self.link().publish_ephemeral(room, data, from),
        )
        .await?;
        metrics::counter!(m::EPHEMERAL_IN).increment(1);
        Ok(())
    }

    /// Makes sure `room` is subscribed upstream (once per room per edge; see the hub's
    /// subscribe protocol) and returns where that subscription began.
    pub async fn subscribe_upstream(&self, room: &RoomName) -> CallResult<Position> {
        let link = self.link();
        let retry_for = self.config.broker.retry_unavailable_for;
        let ensure = self.hub.ensure_upstream(room, || {
            retry_unavailable("subscribe", retry_for, || link.subscribe(room.clone()))
        });
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
        // Joining again replaces the member with itself.
        let link = self.link();
        self.call_idempotent("join", || link.join(room.clone(), member.clone()))
            .await
    }

    /// Removes this edge's member `client` from `room`'s presence.
    pub async fn leave(&self, room: RoomName, client: ClientId) -> CallResult<()> {
        let link = self.link();
        self.call_idempotent("leave", || link.leave(room.clone(), client.clone()))
            .await
    }

    /// One page of `room`'s members after `after`, in client id order.
    pub async fn presence(
        &self,
        room: RoomName,
        after: Option<ClientId>,
        limit: u32,
    ) -> CallResult<PresencePage> {
        let link = self.link();
        self.call_idempotent("presence", || {
            link.presence(room.clone(), after.clone(), limit)
        })
        .await
    }

    /// Member and distinct-user counts of `room`.
    pub async fn presence_stats(&self, room: RoomName) -> CallResult<PresenceStats> {
        let link = self.link();
        self.call_idempotent("presence_stats", || link.presence_stats(room.clone()))
            .await
    }

    /// Reads `room`'s log (see `EdgeLink::history`), at most `client.max_reply_bytes` of it:
    /// after `since`, the oldest publications that fit (the client pages on from the last one);
    /// without it, the newest that fit.
    pub async fn history(
        &self,
        room: RoomName,
        since: Option<Position>,
        limit: Option<u32>,
    ) -> CallResult<HistoryPage> {
        let from_start = since.is_some();
        let link = self.link();
        let mut page = self
            .call_idempotent("history", || {
                link.history(room.clone(), since.clone(), limit)
            })
            .await?;
        if cap_history(&mut page, from_start, self.config.client.max_reply_bytes) {
            metrics::counter!(m::LIMIT_HITS, "limit" => "reply_bytes").increment(1);
        }
        Ok(page)
    }

    /// Everything `room` published after `since`, for a subscriber's recovery: the page from
    /// `EdgeLink::history`, or — when it does not fit in one reply (`client.max_reply_bytes`) —
    /// an incomplete page without publications, so the subscriber is told `recovered: false`
    /// and pages through `history` instead of the edge holding an unbounded reply.
    pub async fn missed_since(&self, room: RoomName, since: Position) -> CallResult<HistoryPage> {
        let link = self.link();
        let mut page = self
            .call_idempotent("history", || {
                link.history(room.clone(), Some(since.clone()), None)
            })
            .await?;
        if reply_bytes(&page.publications) > self.config.client.max_reply_bytes {
            metrics::counter!(m::LIMIT_HITS, "limit" => "reply_bytes").increment(1);
            page.publications = Vec::new();
            page.complete = false;
        }
        Ok(page)
    }

    /// One page of the active rooms.
    pub async fn rooms(&self, after: Option<RoomName>, limit: u32) -> CallResult<RoomsPage> {
        self.call("rooms", self.link().rooms(after, limit)).await
    }

    /// One page of the lifecycle event feed (see `EdgeLink::events`). Errors stay broker errors:
    /// the server API answers `Unsupported` (NATS) with its own code; the rest go through
    /// [`broker_error`].
    pub async fn events(
        &self,
        since: Option<FeedPosition>,
        limit: u32,
        filter: EventFilter,
    ) -> Result<EventsPage, BrokerError> {
        self.call_raw("events", self.link().events(since, limit, filter))
            .await
    }

    /// Claims or renews this edge's webhook sender lease (see `EdgeLink::claim_webhooks`).
    pub async fn claim_webhooks(
        &self,
        lease: std::time::Duration,
    ) -> Result<WebhookClaim, BrokerError> {
        self.call_raw("claim_webhooks", self.link().claim_webhooks(lease))
            .await
    }

    /// Records an endpoint's delivery cursor (see `EdgeLink::ack_webhooks`).
    pub async fn ack_webhooks(&self, endpoint: String, through: u64) -> Result<(), BrokerError> {
        self.call_raw("ack_webhooks", self.link().ack_webhooks(endpoint, through))
            .await
    }

    /// Asks every edge to close every connection of `user`.
    pub async fn disconnect_user(&self, user: UserId, reason: String) -> CallResult<()> {
        self.call("disconnect_user", self.link().disconnect_user(user, reason))
            .await
    }
}

/// Runs the call `make` makes, again while it fails with [`BrokerError::Unavailable`] and
/// `window` has not passed since the first attempt (see `Node::call_idempotent`).
async fn retry_unavailable<T, F, Fut>(
    name: &'static str,
    window: std::time::Duration,
    make: F,
) -> Result<T, BrokerError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, BrokerError>>,
{
    let until = std::time::Instant::now() + window;
    let mut pause = std::time::Duration::from_millis(50);
    loop {
        match make().await {
            Err(BrokerError::Unavailable(why)) if std::time::Instant::now() + pause < until => {
                tracing::debug!(call = name, %why, "broker tier unavailable; retrying");
                metrics::counter!(m::BROKER_RETRIES, "call" => name).increment(1);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_millis(400));
            }
            done => return done,
        }
    }
}

/// Bytes a publication adds to a reply: its data and sender, plus the JSON around them.
fn publication_bytes(p: &Publication) -> usize {
    const FRAMING: usize = 48;
    FRAMING
        + p.data.len()
        + p.from
            .as_ref()
            .map_or(0, |f| f.user.as_str().len() + f.client.as_str().len())
}

fn reply_bytes(publications: &[Publication]) -> usize {
    publications.iter().map(publication_bytes).sum()
}

/// Cuts `page` to `max` bytes of publications, keeping the oldest (`from_start`) or the newest
/// ones (at least one, so a single large publication can still be read). Returns whether it
/// cut anything.
fn cap_history(page: &mut HistoryPage, from_start: bool, max: usize) -> bool {
    let publications = &mut page.publications;
    let mut total = 0;
    let fits = |total: &mut usize, p: &Publication| {
        *total += publication_bytes(p);
        *total <= max
    };
    let keep = if from_start {
        publications
            .iter()
            .take_while(|p| fits(&mut total, p))
            .count()
    } else {
        publications
            .iter()
            .rev()
            .take_while(|p| fits(&mut total, p))
            .count()
    }
    .max(1)
    .min(publications.len());
    if keep == publications.len() {
        return false;
    }
    if from_start {
        publications.truncate(keep);
    } else {
        publications.drain(..publications.len() - keep);
    }
    true
}

/// The one mapping from broker errors to client error codes (the HTTP API names its codes
/// after these).
pub(crate) fn broker_error(e: BrokerError) -> ErrorBody {
    let code = match &e {
        BrokerError::Unavailable(_) | BrokerError::LeaseExpired(_) => ErrorCode::BackendUnavailable,
        BrokerError::PresenceDisabled { .. } => ErrorCode::PresenceDisabled,
        BrokerError::Invalid(_) | BrokerError::Unsupported(_) => ErrorCode::BadRequest,
        BrokerError::NotStateRoom { .. } => ErrorCode::NotStateRoom,
        BrokerError::StateConflict { .. } => ErrorCode::StateConflict,
        BrokerError::StateLimit(_) => ErrorCode::LimitExceeded,
    };
    code.with(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(sizes: &[usize]) -> HistoryPage {
        HistoryPage {
            position: Position {
                epoch: "e".into(),
                offset: sizes.len() as u64,
            },
            publications: sizes
                .iter()
                .enumerate()
                .map(|(i, n)| Publication {
                    offset: i as u64 + 1,
                    data: Payload::from_json(&format!("\"{}\"", "x".repeat(*n))).unwrap(),
                    from: None,
                })
                .collect(),
            complete: true,
        }
    }

    fn offsets(p: &HistoryPage) -> Vec<u64> {
        p.publications.iter().map(|p| p.offset).collect()
    }

    #[test]
    fn history_is_cut_to_the_reply_budget_from_the_right_end() {
        let mut after = page(&[100, 100, 100, 100]);
        assert!(cap_history(&mut after, true, 350));
        assert_eq!(offsets(&after), [1, 2]);
        let mut latest = page(&[100, 100, 100, 100]);
        assert!(cap_history(&mut latest, false, 350));
        assert_eq!(offsets(&latest), [3, 4]);
        let mut fits = page(&[10, 10]);
        assert!(!cap_history(&mut fits, true, 1000));
        let mut huge = page(&[5000]);
        assert!(
            !cap_history(&mut huge, true, 1000),
            "one publication is always readable"
        );
        assert_eq!(offsets(&huge), [1]);
    }
}
