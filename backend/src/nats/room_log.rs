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
    let latest = last_sequence(&ns.stream, &subjects.chain).await?;
    if after >= latest {
        return Ok((Vec::new(), after == latest, latest));
    }
    let stored = read_all(
        &ns.stream,
        subjects.chain.clone(),
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

/// A page of `room`'s history (see `EdgeLink::history`): since a position (or incomplete if
/// that position's successors are gone), or the newest `limit` oldest first.
pub(super) async fn history(
    inner: &LinkInner,
    room: &RoomName,
    since: Option<Position>,
    limit: Option<u32>,
) -> Result<HistoryPage, BrokerError> {
    let (ns, _, options) = inner.shared.room(room)?;
    let epoch = ns.epoch.clone();
    let limit = limit.map_or(usize::MAX, |l| l as usize);
    let keeps_history = options.history_size > 0;
    match since {
        Some(since) => {
            let latest = inner.last_offset(room).await?;
            let position = Position {
                epoch: epoch.clone(),
                offset: latest,
            };
            if since.epoch != epoch || since.offset > latest {
                return Ok(incomplete(position));
            }
            let (mut publications, complete, latest) =
                publications_after(inner, room, since.offset).await?;
            let position = Position {
                epoch,
                offset: latest,
            };
            if !complete || (!keeps_history && !publications.is_empty()) {
                return Ok(incomplete(position));
            }
            publications.truncate(limit);
            Ok(HistoryPage {
                position,
                publications,
                complete: true,
            })
        }
        None => {
            let (mut publications, _, latest) = publications_after(inner, room, 0).await?;
            if !keeps_history {
                publications.clear();
            }
            let skip = publications.len().saturating_sub(limit);
            publications.drain(..skip);
            Ok(HistoryPage {
                position: Position {
                    epoch,
                    offset: latest,
                },
                publications,
                complete: true,
            })
        }
    }
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
