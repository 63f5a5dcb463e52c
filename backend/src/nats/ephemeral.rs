//! Ephemeral publications on NATS: plain core-NATS messages, never JetStream.
//!
//! ```text
//!   NatsLink::publish_ephemeral ──core publish──▶ plaza.l.<ns>.<room>.e ──▶ every edge whose
//!     live subscription (plaza.l.<ns>.<room>.*) is in place ──▶ follow() ──▶ LinkEvent::Ephemeral
//! ```
//!
//! The subject is outside the namespace streams (`plaza.r.<ns>.>`), so nothing is stored and no
//! stream sequence is spent; NATS keeps one connection's messages in order, so one edge's
//! ephemeral publications arrive in publisher order. Core NATS delivery is at most once, which
//! is exactly the promise. The room's follower task hands them on without touching its offset
//! bookkeeping.

use async_nats::HeaderMap;
use plaza_proto::cluster::{BrokerError, Ephemeral};
use plaza_proto::{Payload, RoomName, Sender};

use super::link::{FROM, LinkInner, unavailable};

/// Publishes `ephemeral` on its room's ephemeral subject. Returns once the client has queued
/// it (core NATS has no acknowledgement; the client flushes on its own within milliseconds).
pub(super) async fn publish(inner: &LinkInner, ephemeral: Ephemeral) -> Result<(), BrokerError> {
    let (_, subjects, _) = inner.shared.room(&ephemeral.room)?;
    let mut headers = HeaderMap::new();
    if let Some(from) = &ephemeral.from {
        let json = serde_json::to_string(from).map_err(unavailable)?;
        headers.insert(FROM, json.as_str());
    }
    inner
        .shared
        .client
        .publish_with_headers(subjects.ephemeral, headers, ephemeral.data.bytes().clone())
        .await
        .map_err(unavailable)
}

/// The ephemeral publication a message on a room's `.e` subject carries; `None` if it is not
/// valid (not JSON, or not from a Plaza edge), which is dropped.
pub(super) fn decode(room: &RoomName, message: &async_nats::Message) -> Option<Ephemeral> {
    let data = Payload::from_json(std::str::from_utf8(&message.payload).ok()?).ok()?;
    let from = message
        .headers
        .as_ref()
        .and_then(|h| h.get(FROM))
        .and_then(|v| serde_json::from_str::<Sender>(v.as_str()).ok());
    Some(Ephemeral {
        room: room.clone(),
        data,
        from,
    })
}
