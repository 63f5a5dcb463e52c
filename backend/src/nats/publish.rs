//! Durable publishing on the NATS backend: each publication carries its room's previous offset
//! (`Plaza-Prev`) and is published with JetStream's expected-last-subject-sequence check, so
//! concurrent publishers of one room (on any edge) are serialized by the stream itself; a
//! conflict refreshes the expectation and retries. The link remembers the last offset of at
//! most [`PUBLISHING_CACHE`] rooms besides those being published to.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use plaza_proto::client::check_idem;
use plaza_proto::cluster::{BrokerError, PublishAck};
use plaza_proto::{Payload, Position, RoomName, Sender};

use super::link::{
    ACK_ATTEMPT, FROM, LinkInner, MAX_PUBLISH_ATTEMPTS, PREV, last_sequence, unavailable,
};
use super::names::token;

/// Publishes `data` to `room` through `inner`'s link.
pub(super) async fn publish(
    inner: &LinkInner,
    room: RoomName,
    data: Payload,
    from: Option<Sender>,
    idem: Option<String>,
) -> Result<PublishAck, BrokerError> {
    inner.check_open()?;
    // The key goes into a NATS header: a CR/LF would make async-nats panic, so it is
    // checked here too, not only by the edge's decoders.
    if let Some(Err(why)) = idem.as_deref().map(check_idem) {
        return Err(BrokerError::Invalid(format!("room {room}: {why}")));
    }
    let (ns, subjects, options) = inner.shared.room(&room)?;
    if options.state.enabled {
        // A state room's log is its map's changes (`state.rs`).
        return Err(BrokerError::Invalid(format!(
            "room {room} is a live-state room: change its map with state writes"
        )));
    }
    let lock = inner.room_lock(&room);
    let mut known = lock.lock().await;
    if *known == 0 {
        // Unknown (or a new room): ask the stream once; conflicts below refresh it.
        *known = last_sequence(&ns.stream, &subjects.chain).await?;
    }
    let mut unknown_retries = 30;
    let started = std::time::Instant::now();
    for _ in 0..MAX_PUBLISH_ATTEMPTS {
        let mut headers = HeaderMap::new();
        headers.insert(PREV, known.to_string().as_str());
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            known.to_string().as_str(),
        );
        if let Some(key) = &idem {
            let id = format!("{}/{key}", token(room.as_str()));
            headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
        }
        if let Some(from) = &from {
            let json = serde_json::to_string(from).map_err(unavailable)?;
            headers.insert(FROM, json.as_str());
        }
        let sent = inner
            .shared
            .setup()?
            .js
            .publish_with_headers(subjects.publications.clone(), headers, data.bytes().clone())
            .await
            .map_err(unavailable)?;
        // A stream-leader election leaves the ack unanswered: wait one short attempt, and
        // when the publish carries an idempotency key send it again (JetStream answers a
        // repeat of a stored message id as a duplicate), so the stall is about the election
        // rather than the whole request timeout — and never stacks a second timeout on top.
        let acked = match tokio::time::timeout(ACK_ATTEMPT, sent).await {
            Ok(acked) => acked,
            Err(_)
                if idem.is_some() && started.elapsed() < inner.shared.options.request_timeout =>
            {
                continue;
            }
            Err(_) => {
                // Outcome unknown: keep `known` (a stale value costs one conflict, not a
                // read on every later publish).
                return Err(BrokerError::Unavailable(format!(
                    "room {room}: no publish ack within {:?}; the publication may or may \
                     not be stored (retry with an idempotency key)",
                    started.elapsed()
                )));
            }
        };
        match acked {
            Ok(ack) => {
                if !ack.duplicate {
                    *known = ack.sequence;
                }
                return Ok(PublishAck {
                    position: Position {
                        epoch: ns.epoch.clone(),
                        offset: ack.sequence,
                    },
                    duplicate: ack.duplicate,
                });
            }
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                // Another edge published to the room first: learn its offset, retry.
                *known = last_sequence(&ns.stream, &subjects.chain).await?;
            }
            // No stream answered (its interest has not reached this server yet on a fresh
            // cluster): nothing was stored, so try again shortly.
            Err(e) if e.kind() == PublishErrorKind::StreamNotFound && unknown_retries > 0 => {
                unknown_retries -= 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                *known = 0;
                return Err(unavailable(e));
            }
        }
    }
    Err(BrokerError::Unavailable(format!(
        "room {room}: too many concurrent publishers; retry"
    )))
}
