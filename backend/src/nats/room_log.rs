//! Reading a room's JetStream stream: the last sequence, stored publications decoded from
//! their headers (`Plaza-Prev`, `Plaza-From`), and "everything after offset X" with its
//! completeness — what `history`, `subscribe` and the live followers' gap repair share.

use std::collections::HashSet;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::DeliverPolicy;
use bytes::Bytes;
use plaza_proto::cluster::{BrokerError, HistoryPage, PresenceStats};
use plaza_proto::{Member, Payload, Position, Publication, RoomName, Sender, UserId};

use super::leases::time_now;
use super::link::{FROM, LinkInner, PREV, unavailable};
use super::read_all;

/// The sequence of the last message on `subject` (0 when there is none).
pub(super) async fn last_sequence(
    stream: &async_nats::jetstream::stream::Stream,
    subject: &str,
) -> Result<u64, BrokerError> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    let last = while_stream_unknown(|| stream.get_last_raw_message_by_subject(subject)).await;
    match last {
        Ok(message) => Ok(message.sequence),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
        Err(e) => Err(unavailable(e)),
    }
}

/// How long a call answered "no stream found" is retried.
const STREAM_UNKNOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Runs `call` again while JetStream answers that no stream serves the subject: on a fresh
/// cluster a new stream's subject interest takes a moment to reach every server, and until then
/// a request routed through another server finds no responder. Nothing was stored by such an
/// answer, so repeating the call is safe; after [`STREAM_UNKNOWN_WAIT`] the error stands.
pub(super) async fn while_stream_unknown<T, E, F, Fut>(mut call: F) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + STREAM_UNKNOWN_WAIT;
    loop {
        match call().await {
            Err(e)
                if tokio::time::Instant::now() < deadline
                    && e.to_string().contains("no stream found") =>
            {
                tracing::debug!(error = %e, "stream not known here yet; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

pub(super) fn header_u64(headers: Option<&HeaderMap>, name: &str) -> Option<u64> {
    headers?.get(name)?.as_str().parse().ok()
}

/// A stored or republished publication as a [`Publication`], with its `Plaza-Prev`.
pub(super) fn publication(
    sequence: u64,
    headers: Option<&HeaderMap>,
    payload: &Bytes,
) -> Option<(u64, Publication)> {
    let prev = header_u64(headers, PREV)?;
    let data = Payload::from_json(std::str::from_utf8(payload).ok()?).ok()?;
    let from = headers
        .and_then(|h| h.get(FROM))
        .and_then(|v| serde_json::from_str::<Sender>(v.as_str()).ok());
    Some((
        prev,
        Publication {
            offset: sequence,
            data,
            from,
        },
    ))
}

/// Reads `room`'s publications after `after`, in order, without those older than the
/// namespace's history TTL: the publications, whether they are complete (the first held one's
/// predecessor is `after` and none after `after` expired, or there are none and `after` is the
/// latest), and the latest offset.
pub(super) async fn publications_after(
    link: &LinkInner,
    room: &RoomName,
    after: u64,
) -> Result<(Vec<Publication>, bool, u64), BrokerError> {
    let (ns, subjects, options) = link.shared.room(room)?;
    let latest = last_sequence(&ns.stream, &subjects.publications).await?;
    if after >= latest {
        return Ok((Vec::new(), after == latest, latest));
    }
    let stored = read_all(
        &ns.stream,
        subjects.publications.clone(),
        DeliverPolicy::ByStartSequence {
            start_sequence: after + 1,
        },
    )
    .await?;
    let oldest = time_now() - options.history_ttl;
    let mut out = Vec::with_capacity(stored.len());
    let mut complete = false;
    for (i, s) in stored.iter().enumerate() {
        let Some((prev, p)) = publication(s.sequence, s.headers.as_ref(), &s.payload) else {
            continue;
        };
        let expired = s.time < oldest;
        if i == 0 {
            complete = prev == after && !expired;
        }
        if !expired {
            out.push(p);
        }
    }
    Ok((out, complete, latest))
}

pub(super) fn incomplete(position: Position) -> HistoryPage {
    HistoryPage {
        position,
        publications: Vec::new(),
        complete: false,
    }
}

pub(super) fn stats(members: &[Member]) -> PresenceStats {
    let users: HashSet<&UserId> = members.iter().map(|m| &m.user).collect();
    PresenceStats {
        clients: members.len() as u64,
        users: users.len() as u64,
    }
}
