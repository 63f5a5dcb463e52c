//! Presence in the `PLAZA_PRESENCE` bucket, join/leave events in the rooms' streams, and
//! the active-room listing.

use std::collections::HashSet;

use async_nats::jetstream::consumer::DeliverPolicy;
use bytes::Bytes;
use futures_util::StreamExt;
use plaza_proto::cluster::{BrokerError, PresencePage, RoomInfo, RoomsPage};
use plaza_proto::{ClientId, Member, RoomName, UserId};
use serde::{Deserialize, Serialize};

use super::link::*;
use super::names::{self, RoomSubjects, untoken};
use super::{Shared, Stored, read_all};
use plaza_rooms::config::PresenceMode;

/// A presence entry's value.
#[derive(Serialize, Deserialize)]
pub(super) struct MemberEntry {
    pub member: Member,
}

/// A join/leave event in a room's stream; `update` (with `join: true`): a member's new info.
#[derive(Serialize, Deserialize)]
pub(super) struct PresenceEvent {
    pub join: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub update: bool,
    pub member: Member,
}

/// The members whose presence keys match `filter` (a KV key pattern).
pub(super) async fn members(shared: &Shared, filter: &str) -> Result<Vec<Member>, BrokerError> {
    Ok(presence_entries(shared, filter)
        .await?
        .into_iter()
        .map(|(_, member)| member)
        .collect())
}

/// One page of `room`'s members in client id order (namespaces with full presence only).
pub(super) async fn presence_page(
    shared: &Shared,
    room: &RoomName,
    after: Option<&ClientId>,
    limit: u32,
) -> Result<PresencePage, BrokerError> {
    let (_, subjects, ns) = shared.room(room)?;
    if ns.presence != PresenceMode::Full {
        return Err(BrokerError::PresenceDisabled {
            namespace: room.namespace().to_owned(),
        });
    }
    // The bucket has no order by client id to page on: the page is cut from the whole list
    // (the reply to the edge is still bounded by the page).
    let mut members = members(shared, &format!("{}.*.*", subjects.presence_prefix)).await?;
    members.sort_by(|a, b| a.client.cmp(&b.client));
    Ok(PresencePage::of_sorted(&members, after, limit))
}

/// `(key, member)` of the live presence entries matching `filter`.
pub(super) async fn presence_entries(
    shared: &Shared,
    filter: &str,
) -> Result<Vec<(String, Member)>, BrokerError> {
    let stored = read_all(
        &shared.setup()?.presence_stream,
        format!("$KV.{}.{filter}", names::PRESENCE_BUCKET),
        DeliverPolicy::LastPerSubject,
    )
    .await?;
    Ok(stored
        .into_iter()
        .filter(|s| !deleted(s))
        .filter_map(|s| {
            let entry: MemberEntry = serde_json::from_slice(&s.payload).ok()?;
            let key = s
                .subject
                .strip_prefix(&format!("$KV.{}.", names::PRESENCE_BUCKET))?
                .to_owned();
            Some((key, entry.member))
        })
        .collect())
}

/// Whether a KV message is a delete or purge marker.
pub(super) fn deleted(s: &Stored) -> bool {
    s.headers
        .as_ref()
        .and_then(|h| h.get("KV-Operation"))
        .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE")
}

/// Publishes a join or leave event into the room's stream (ordered with its publications).
pub(super) async fn presence_event(
    shared: &Shared,
    subjects: &RoomSubjects,
    join: bool,
    member: Member,
) -> Result<(), BrokerError> {
    let event = PresenceEvent {
        join,
        update: false,
        member,
    };
    publish_json(shared, subjects.presence_events.clone(), &event).await
}

/// Publishes a member's new info into the room's stream (`presence_update`).
pub(super) async fn presence_update_event(
    shared: &Shared,
    subjects: &RoomSubjects,
    member: Member,
) -> Result<(), BrokerError> {
    let event = PresenceEvent {
        join: true,
        update: true,
        member,
    };
    publish_json(shared, subjects.presence_events.clone(), &event).await
}

/// Publishes `value` as JSON to a stream's `subject` and waits for JetStream's ack.
pub(super) async fn publish_json<T: Serialize>(
    shared: &Shared,
    subject: String,
    value: &T,
) -> Result<(), BrokerError> {
    let body = bytes::Bytes::from(serde_json::to_vec(value).map_err(unavailable)?);
    let js = &shared.setup()?.js;
    while_stream_unknown(|| async {
        js.publish(subject.clone(), body.clone())
            .await
            .map_err(unavailable)?
            .await
            .map_err(unavailable)
    })
    .await?;
    Ok(())
}

/// Deletes presence key `key` if present and publishes the member's leave event, once even if
/// several edges try (compare-and-delete on the entry's revision).
pub(super) async fn remove_member(
    shared: &Shared,
    room: &RoomName,
    subjects: &RoomSubjects,
    key: &str,
) -> Result<(), BrokerError> {
    // Read from the stream leader: the bucket's `entry` may be served by any replica (direct
    // get), and a follower that has not applied a just-made join would make this leave a
    // no-op — a ghost member on a 3-replica bucket.
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    let subject = format!("$KV.{}.{key}", names::PRESENCE_BUCKET);
    let setup = shared.setup()?;
    let last = while_stream_unknown(|| {
        setup
            .presence_stream
            .get_last_raw_message_by_subject(&subject)
    })
    .await;
    let entry = match last {
        Ok(entry) => entry,
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(()),
        Err(e) => return Err(unavailable(e)),
    };
    let operation = entry.headers.get("KV-Operation").map(|v| v.as_str());
    if operation.is_some_and(|op| op == "DEL" || op == "PURGE") {
        return Ok(());
    }
    let Ok(value) = serde_json::from_slice::<MemberEntry>(&entry.payload) else {
        return Ok(());
    };
    match setup
        .presence
        .delete_expect_revision(key, Some(entry.sequence))
        .await
    {
        Ok(()) => {}
        // Someone else removed (or replaced) it first.
        Err(e) if e.kind() == async_nats::jetstream::kv::UpdateErrorKind::WrongLastRevision => {
            return Ok(());
        }
        // JetStream unavailable (a stream-leader election): the caller retries.
        Err(e) => return Err(unavailable(e)),
    }
    // The entry is gone now, so a retried leave would find nothing to announce: the record
    // and the leave event are retried here until they are stored (a stream-leader election
    // takes NATS 4–9 s), or subscribers would keep the member forever.
    let deadline = tokio::time::Instant::now() + LEAVE_EVENT_PATIENCE;
    let mut recorded = false;
    let ns = shared.namespaces.of(room);
    let announce = ns.presence == PresenceMode::Full && ns.join_leave;
    loop {
        if !recorded {
            let record = (false, false);
            recorded = super::events::record_membership(shared, record, room, &value.member)
                .await
                .is_ok();
        }
        let announced = recorded
            && (!announce
                || presence_event(shared, subjects, false, value.member.clone())
                    .await
                    .is_ok());
        if announced {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(BrokerError::Unavailable(format!(
                "room {room}: the member left, but its leave could not be announced within \
                 {LEAVE_EVENT_PATIENCE:?}"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// How long a leave keeps trying to record and announce a removed member.
const LEAVE_EVENT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(15);

/// A page of active rooms: rooms with held publications or state keys (from the streams'
/// subject lists) or members (from the presence bucket).
pub(super) async fn rooms_page(
    shared: &Shared,
    after: Option<RoomName>,
    limit: u32,
) -> Result<RoomsPage, BrokerError> {
    let mut rooms: std::collections::BTreeMap<String, (u64, u64, HashSet<UserId>)> =
        std::collections::BTreeMap::new();
    for ns in shared.setup()?.streams.values() {
        // Plain rooms' publications, and state rooms' key subjects.
        for filter in [
            format!("plaza.r.{}.*.m", ns.token),
            names::state_keys_filter(&ns.token),
        ] {
            let stream = ns.stream.clone();
            let info = stream
                .info_with_subjects(filter)
                .await
                .map_err(unavailable)?;
            let subjects: Vec<String> = info
                .map(|s| s.map(|(subject, _)| subject))
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<_, _>>()
                .map_err(unavailable)?;
            for subject in subjects {
                if let Some(name) = subject.split('.').nth(3).and_then(untoken) {
                    rooms.entry(name).or_default();
                }
            }
        }
    }
    for (key, member) in presence_entries(shared, ">").await? {
        if let Some(name) = key.split('.').nth(1).and_then(untoken) {
            let entry = rooms.entry(name).or_default();
            entry.0 += 1;
            entry.2.insert(member.user);
        }
    }
    let start = after.as_ref().map(RoomName::as_str);
    let limit = (limit.max(1)) as usize;
    let mut page = Vec::new();
    let mut remaining = rooms
        .into_iter()
        .filter(|(name, _)| start.is_none_or(|s| name.as_str() > s))
        .filter_map(|(name, v)| RoomName::new(&name).ok().map(|r| (r, v)));
    for (room, (clients, _, users)) in remaining.by_ref().take(limit) {
        let (ns, subjects, options) = shared.room(&room)?;
        let offset = last_sequence(&ns.stream, &subjects.chain).await?;
        let (clients, users) = if options.presence == PresenceMode::Off {
            (0, 0)
        } else {
            (clients, users.len() as u64)
        };
        page.push(RoomInfo {
            room,
            clients,
            users,
            offset,
        });
    }
    let next = if remaining.next().is_some() {
        page.last().map(|r| r.room.clone())
    } else {
        None
    };
    Ok(RoomsPage { rooms: page, next })
}

/// Adds (or updates) this edge's `member` of `room` (see `EdgeLink::join`): the presence
/// entry, its membership-log record and the join or update event.
pub(super) async fn join(
    inner: &LinkInner,
    room: RoomName,
    member: Member,
) -> Result<(), BrokerError> {
    let (_, subjects, ns) = inner.shared.room(&room)?;
    if ns.presence == PresenceMode::Off {
        return Err(BrokerError::PresenceDisabled {
            namespace: room.namespace().to_owned(),
        });
    }
    let events = ns.presence == PresenceMode::Full && ns.join_leave;
    // This member's earlier leave is still being retried: take it out of the retries
    // first, so a retry cannot remove the entry this join writes.
    let retried = {
        let state = inner.state();
        !state.failed_leaves.is_empty()
            && state
                .failed_leaves
                .contains(&(room.clone(), member.client.clone()))
    };
    let _retry = if retried {
        let guard = inner.leave_retry.lock().await;
        inner
            .state()
            .failed_leaves
            .remove(&(room.clone(), member.client.clone()));
        Some(guard)
    } else {
        None
    };
    let key = inner.member_key(&subjects, &member.client);
    let value = Bytes::from(
        serde_json::to_vec(&MemberEntry {
            member: member.clone(),
        })
        .map_err(unavailable)?,
    );
    let store = &inner.shared.setup()?.presence;
    let changed = inner
        .state()
        .members
        .get(&(room.clone(), member.client.clone()))
        .is_some_and(|known| known.info != member.info);
    let created = match while_stream_unknown(|| store.create(&key, value.clone())).await {
        Ok(_) => true,
        Err(e) if e.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists => {
            store.put(&key, value).await.map_err(unavailable)?;
            false
        }
        Err(e) => return Err(unavailable(e)),
    };
    inner
        .state()
        .members
        .insert((room.clone(), member.client.clone()), member.clone());
    let update = changed && !created;
    super::events::record_membership(&inner.shared, (true, update), &room, &member).await?;
    if created && events {
        presence_event(&inner.shared, &subjects, true, member).await?;
    } else if changed && events {
        presence_update_event(&inner.shared, &subjects, member).await?;
    }
    Ok(())
}
