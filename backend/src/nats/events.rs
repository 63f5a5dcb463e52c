//! The lifecycle event feed on NATS: the `PLAZA_EVENTS` stream (one message per event, the
//! stream sequence is the feed sequence, the stream's creation time is the epoch), reading it,
//! and the `PLAZA_EVENTS_STATE` bucket (the deriver's lease and snapshot, the webhook
//! sender's claim and cursors).
//!
//! ```text
//!   deriver (one per tier) ──publish, expected last sequence = its last──▶ PLAZA_EVENTS
//!   any edge ──events(since, limit)──▶ stream info + ordered consumer from since+1
//!   webhook sender ──claim/ack: compare-and-set on PLAZA_EVENTS_STATE "webhooks"──▶ cursors
//! ```
//!
//! Only the deriver appends, and every append says which sequence it expects to follow, so a
//! deriver that lost its lease without noticing cannot append (the stream refuses it): the
//! feed is written by one writer at a time, in order, and sequences increase by one per event
//! (retention only ever drops the oldest).

use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use plaza_proto::cluster::BrokerError;
use plaza_proto::events::{EventFilter, EventsPage, FeedPosition, WebhookClaim};
use plaza_proto::{EdgeId, Member, RoomName};
use plaza_rooms::Webhooks;
use plaza_rooms::config::EventsConfig;

use super::derive::StoredEvent;
use super::link::unavailable;
use super::names::{
    EVENTS_STATE_BUCKET, EVENTS_STREAM, EVENTS_SUBJECTS, MEMBERSHIP_STREAM, MEMBERSHIP_SUBJECT,
};
use super::{NatsError, NatsOptions, Shared, read_some};

/// The events stream, the membership log and the state bucket.
pub(crate) struct EventsSetup {
    pub stream: stream::Stream,
    pub epoch: String,
    pub state: kv::Store,
    /// Every presence change, in the order it was made: the deriver's input.
    pub membership: stream::Stream,
}

/// One presence change in the membership log.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct MembershipChange {
    pub join: bool,
    /// A re-join with other info (`presence_update`).
    #[serde(default)]
    pub update: bool,
    pub room: RoomName,
    pub member: Member,
}

/// Header of every appended event: the membership log sequence the deriver had read through.
pub(super) const INPUT: &str = "Plaza-Input";

/// The state bucket's key of the webhook claim and cursors.
const WEBHOOKS_KEY: &str = "webhooks";

/// Creates or opens the events stream (adjusting its retention to the config) and the state
/// bucket.
pub(super) async fn setup(
    js: &jetstream::Context,
    events: &EventsConfig,
    options: &NatsOptions,
) -> Result<EventsSetup, NatsError> {
    let retention = events.retention.max(Duration::from_secs(1));
    let wanted = stream::Config {
        name: EVENTS_STREAM.to_owned(),
        description: Some("Plaza lifecycle events (the feed; one writer: the deriver)".into()),
        subjects: vec![EVENTS_SUBJECTS.to_owned()],
        max_age: retention,
        max_messages: i64::try_from(events.max_retained.max(1)).unwrap_or(i64::MAX),
        // Retries of one append (same message id) within this window are stored once.
        duplicate_window: Duration::from_secs(120).min(retention),
        storage: stream::StorageType::File,
        num_replicas: options.replicas,
        discard: stream::DiscardPolicy::Old,
        allow_direct: true,
        ..Default::default()
    };
    let err = |e: &dyn std::fmt::Display| NatsError::JetStream(format!("{EVENTS_STREAM}: {e}"));
    let mut stream = match js.get_stream(EVENTS_STREAM).await {
        Ok(stream) => stream,
        Err(_) => match js.create_stream(wanted.clone()).await {
            Ok(stream) => stream,
            Err(_) => js.get_stream(EVENTS_STREAM).await.map_err(|e| err(&e))?,
        },
    };
    let found = stream.info().await.map_err(|e| err(&e))?.config.clone();
    if found.max_age != wanted.max_age || found.max_messages != wanted.max_messages {
        // Retention is not part of the epoch: follow the config without losing the feed.
        tracing::info!("adjusting the retention of {EVENTS_STREAM} to the config");
        js.update_stream(wanted).await.map_err(|e| err(&e))?;
    }
    super::wait_for_leader(&stream, options.request_timeout).await?;
    let created = stream.cached_info().created;
    let epoch = format!("events-{:x}", created.unix_timestamp_nanos());
    let state = super::ensure_bucket(js, EVENTS_STATE_BUCKET, options.replicas).await?;
    let state_stream = js
        .get_stream(format!("KV_{EVENTS_STATE_BUCKET}"))
        .await
        .map_err(|e| err(&e))?;
    super::wait_for_leader(&state_stream, options.request_timeout).await?;
    let log = stream::Config {
        name: MEMBERSHIP_STREAM.to_owned(),
        description: Some("Plaza presence changes, in order (the event deriver's input)".into()),
        subjects: vec![MEMBERSHIP_SUBJECT.to_owned()],
        max_age: retention,
        storage: stream::StorageType::File,
        num_replicas: options.replicas,
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    };
    let membership = match js.get_stream(MEMBERSHIP_STREAM).await {
        Ok(stream) => stream,
        Err(_) => match js.create_stream(log).await {
            Ok(stream) => stream,
            Err(_) => js
                .get_stream(MEMBERSHIP_STREAM)
                .await
                .map_err(|e| err(&e))?,
        },
    };
    super::wait_for_leader(&membership, options.request_timeout).await?;
    Ok(EventsSetup {
        stream,
        epoch,
        state,
        membership,
    })
}

/// Appends a presence change to the membership log (after the presence bucket has it).
pub(super) async fn record_membership(
    shared: &Shared,
    (join, update): (bool, bool),
    room: &RoomName,
    member: &Member,
) -> Result<(), BrokerError> {
    let change = MembershipChange {
        join,
        update,
        room: room.clone(),
        member: member.clone(),
    };
    super::presence::publish_json(shared, MEMBERSHIP_SUBJECT.to_owned(), &change).await
}

/// `(first, last)` sequence of a stream; `first` is `last + 1` when it holds none.
pub(super) async fn bounds(stream: &stream::Stream) -> Result<(u64, u64), BrokerError> {
    let info = super::link::while_stream_unknown(|| stream.get_info())
        .await
        .map_err(unavailable)?;
    let last = info.state.last_sequence;
    let first = if info.state.messages == 0 {
        last + 1
    } else {
        info.state.first_sequence
    };
    Ok((first, last))
}

/// The messages of `stream` on `subjects` from sequence `from` on, at most `max`, decoded
/// from JSON: `(sequence, message, its headers, stored at in ms)`. Undecodable ones are
/// skipped (and logged).
pub(super) async fn read_json<T: serde::de::DeserializeOwned>(
    stream: &stream::Stream,
    subjects: &str,
    from: u64,
    max: usize,
) -> Result<Vec<(u64, T, Option<async_nats::HeaderMap>, u64)>, BrokerError> {
    let policy = DeliverPolicy::ByStartSequence {
        start_sequence: from.max(1),
    };
    let stored = read_some(stream, subjects.to_owned(), policy, max).await?;
    Ok(stored
        .into_iter()
        .filter_map(|s| match serde_json::from_slice::<T>(&s.payload) {
            Ok(value) => {
                let ms = u64::try_from(s.time.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
                Some((s.sequence, value, s.headers, ms))
            }
            Err(e) => {
                tracing::warn!(subjects, seq = s.sequence, error = %e, "undecodable message skipped");
                None
            }
        })
        .collect())
}

/// The stored events from sequence `from` on, at most `max` of them, with their sequences
/// and the membership log sequence the deriver had read through when it appended each.
pub(super) async fn read_from(
    stream: &stream::Stream,
    from: u64,
    max: usize,
) -> Result<Vec<(u64, StoredEvent, u64)>, BrokerError> {
    Ok(read_json::<StoredEvent>(stream, EVENTS_SUBJECTS, from, max)
        .await?
        .into_iter()
        .map(|(seq, event, headers, _)| {
            let input = super::link::header_u64(headers.as_ref(), INPUT).unwrap_or(0);
            (seq, event, input)
        })
        .collect())
}

/// Reads the feed (see [`crate::EdgeLink::events`]).
pub(super) async fn read_feed(
    shared: &Shared,
    since: Option<FeedPosition>,
    limit: u32,
    filter: &EventFilter,
) -> Result<EventsPage, BrokerError> {
    let events = &shared.setup()?.events;
    let at = |seq| FeedPosition {
        epoch: events.epoch.clone(),
        seq,
    };
    let (first, last) = bounds(&events.stream).await?;
    let asked = match &since {
        Some(p) if p.epoch == events.epoch => Some(p.seq),
        Some(_) => None,
        None => Some(0),
    };
    if let Some(asked) = asked
        && asked > last
    {
        return Err(BrokerError::Invalid(format!(
            "feed position {asked} is ahead of the feed (latest {})",
            at(last)
        )));
    }
    let (after, mut recovered) = match asked {
        Some(seq) if seq + 1 >= first => (seq, true),
        _ => (first - 1, false),
    };
    let mut page = Vec::new();
    let mut next = after;
    let want = usize::try_from((last - after).min(u64::from(limit.max(1)))).unwrap_or(1);
    if after < last {
        for (seq, event, _) in read_from(&events.stream, after + 1, want).await? {
            if seq > last {
                break;
            }
            if seq != next + 1 {
                // Dropped by retention between the bounds and the read.
                recovered = false;
            }
            next = seq;
            let event = event.at(at(seq));
            if filter.matches(&event) {
                page.push(event);
            }
        }
    }
    Ok(EventsPage {
        events: page,
        next: at(next),
        latest: at(last),
        recovered,
    })
}

/// Appends one event, expecting the stream's last sequence to be `last`; returns its
/// sequence. `Ok(None)`: another writer appended first (this deriver must step down).
pub(super) async fn append(
    shared: &Shared,
    term: &str,
    (last, input): (u64, u64),
    event: &StoredEvent,
) -> Result<Option<u64>, BrokerError> {
    use async_nats::jetstream::context::PublishErrorKind;
    let setup = shared.setup()?;
    let body = Bytes::from(serde_json::to_vec(event).map_err(unavailable)?);
    let subject = format!("plaza.ev.{}", event.kind.as_str());
    let started = tokio::time::Instant::now();
    loop {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
            last.to_string().as_str(),
        );
        // A retry after a lost ack is answered as a duplicate instead of being refused.
        let id = format!("{term}-{}", last + 1);
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
        headers.insert(INPUT, input.to_string().as_str());
        let sent = setup
            .js
            .publish_with_headers(subject.clone(), headers, body.clone())
            .await
            .map_err(unavailable)?;
        match tokio::time::timeout(super::link::ACK_ATTEMPT, sent).await {
            Ok(Ok(ack)) => return Ok(Some(ack.sequence)),
            Ok(Err(e)) if e.kind() == PublishErrorKind::WrongLastSequence => return Ok(None),
            Ok(Err(e)) if started.elapsed() >= shared.options.request_timeout => {
                return Err(unavailable(e));
            }
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(_) if started.elapsed() >= shared.options.request_timeout => {
                return Err(BrokerError::Unavailable(
                    "NATS: no ack for an event append".into(),
                ));
            }
            Err(_) => {}
        }
    }
}

/// A JSON value of the state bucket with its revision (`None` when absent or deleted).
pub(super) async fn read_state<T: serde::de::DeserializeOwned>(
    state: &kv::Store,
    key: &str,
) -> Result<Option<(T, u64)>, BrokerError> {
    match state.entry(key).await.map_err(unavailable)? {
        Some(entry) if entry.operation == kv::Operation::Put => {
            let value = serde_json::from_slice(&entry.value).map_err(|e| {
                BrokerError::Unavailable(format!("NATS: {EVENTS_STATE_BUCKET}/{key}: {e}"))
            })?;
            Ok(Some((value, entry.revision)))
        }
        Some(_) | None => Ok(None),
    }
}

/// Writes a JSON value if the key is still at `revision` (`None`: absent); returns the new
/// revision, or `None` if someone else wrote it first.
pub(super) async fn write_state<T: serde::Serialize>(
    state: &kv::Store,
    key: &str,
    value: &T,
    revision: Option<u64>,
) -> Result<Option<u64>, BrokerError> {
    use async_nats::jetstream::kv::{CreateErrorKind, UpdateErrorKind};
    let bytes = Bytes::from(serde_json::to_vec(value).map_err(unavailable)?);
    let unavailable = |e: &dyn std::fmt::Display| {
        BrokerError::Unavailable(format!("NATS: {EVENTS_STATE_BUCKET}/{key}: {e}"))
    };
    match revision {
        Some(revision) => match state.update(key, bytes, revision).await {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(unavailable(&e)),
        },
        // `create` also takes over a deleted key.
        None => match state.create(key, bytes).await {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(unavailable(&e)),
        },
    }
}

/// The wall clock in milliseconds: the tier's clock on NATS (each edge's; keep them in sync).
pub(super) fn now_ms() -> u64 {
    let nanos = super::leases::time_now().unix_timestamp_nanos();
    u64::try_from(nanos / 1_000_000).unwrap_or(0)
}

/// Claims or renews the webhook sender's lease for `edge` (see
/// [`crate::EdgeLink::claim_webhooks`]).
pub(super) async fn claim_webhooks(
    shared: &Shared,
    edge: &EdgeId,
    lease: Duration,
) -> Result<WebhookClaim, BrokerError> {
    let events = &shared.setup()?.events;
    let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
    for _ in 0..16 {
        let (mut webhooks, revision) =
            match read_state::<Webhooks>(&events.state, WEBHOOKS_KEY).await? {
                Some((w, r)) => (w, Some(r)),
                None => (Webhooks::default(), None),
            };
        let claim = webhooks.claim(&events.epoch, edge.clone(), lease_ms, now_ms());
        if !claim.granted {
            return Ok(claim);
        }
        if write_state(&events.state, WEBHOOKS_KEY, &webhooks, revision)
            .await?
            .is_some()
        {
            return Ok(claim);
        }
    }
    Err(BrokerError::Unavailable(
        "NATS: the webhook claim is contended; retry".into(),
    ))
}

/// Moves an endpoint's delivery cursor (see [`crate::EdgeLink::ack_webhooks`]).
pub(super) async fn ack_webhooks(
    shared: &Shared,
    edge: &EdgeId,
    endpoint: String,
    through: u64,
) -> Result<(), BrokerError> {
    let events = &shared.setup()?.events;
    for _ in 0..16 {
        let (mut webhooks, revision) =
            match read_state::<Webhooks>(&events.state, WEBHOOKS_KEY).await? {
                Some((w, r)) => (w, Some(r)),
                None => (Webhooks::default(), None),
            };
        if !webhooks.ack(edge, endpoint.clone(), through, now_ms()) {
            return Err(BrokerError::Invalid(
                "this edge does not hold the webhook sender claim".into(),
            ));
        }
        if write_state(&events.state, WEBHOOKS_KEY, &webhooks, revision)
            .await?
            .is_some()
        {
            return Ok(());
        }
    }
    Err(BrokerError::Unavailable(
        "NATS: the webhook cursors are contended; retry".into(),
    ))
}
