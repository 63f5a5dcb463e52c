//! Helpers of the conformance suite: unique names, attaching, and waiting for events with
//! panics that say which guarantee broke.
//!
//! The room-event helpers ([`next`], [`quiet`], …) skip [`LinkEvent::DisconnectUser`]: it goes
//! to every edge, so on a backend shared with other runs another run's disconnect may arrive on
//! any stream. The disconnect checks read those with [`next_disconnect`]. They skip ephemeral
//! publications too, which the ephemeral checks read themselves (`ephemeral.rs`).

use std::fmt::Debug;
use std::time::Duration;

use plaza_proto::cluster::{LinkEvent, RoomEvent, RoomEventKind};
use plaza_proto::{ClientId, EdgeId, Member, Payload, Publication, RoomName, UserId};

use super::LEASE;
use crate::{AttachOptions, Backend, LinkEvents};

/// How long to wait for an event that must come.
pub(super) const WAIT: Duration = Duration::from_secs(5);
/// How long to watch for an event that must not come.
pub(super) const QUIET: Duration = Duration::from_millis(200);

/// A short random hex string, so calls never collide on a shared backend.
pub(super) fn unique() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A fresh room of `namespace`.
pub(super) fn room(namespace: &str) -> RoomName {
    let name = format!("{namespace}:{}", unique());
    RoomName::new(&name).unwrap_or_else(|e| panic!("suite bug: room name {name:?}: {e}"))
}

/// A fresh member of `user` (user ids are made unique by the caller when needed).
pub(super) fn member(user: &str, info: Option<&str>) -> Member {
    Member {
        client: ClientId::new(format!("client-{}", unique())),
        user: UserId::new(user),
        info: info.map(payload),
    }
}

/// A JSON payload from literal text.
pub(super) fn payload(json: &str) -> Payload {
    Payload::from_json(json).unwrap_or_else(|e| panic!("suite bug: {json:?} is not JSON: {e}"))
}

/// The `i`-th test payload.
pub(super) fn data(i: usize) -> Payload {
    payload(&format!(r#"{{"n":{i}}}"#))
}

/// Attaches a fresh edge with [`LEASE`].
pub(super) async fn attach<B: Backend>(backend: &B) -> (B::Link, LinkEvents) {
    let options = AttachOptions {
        edge: EdgeId::new(format!("edge-{}", unique())),
        lease: LEASE,
    };
    ok(backend.attach(options).await, "attach")
}

/// The value of a call that must succeed.
pub(super) fn ok<T, E: Debug>(result: Result<T, E>, call: &str) -> T {
    result.unwrap_or_else(|e| panic!("{call} failed: {e:?}"))
}

/// The next event, which must arrive within [`WAIT`].
pub(super) async fn next(events: &mut LinkEvents, expecting: &str) -> RoomEvent {
    next_within(events, WAIT, expecting).await
}

/// The next event, which must arrive within `within`.
pub(super) async fn next_within(
    events: &mut LinkEvents,
    within: Duration,
    expecting: &str,
) -> RoomEvent {
    match tokio::time::timeout(within, next_room_event(events)).await {
        Ok(Some(event)) => event,
        Ok(None) => panic!("event stream ended while expecting {expecting}"),
        Err(_) => panic!("no event within {within:?} while expecting {expecting}"),
    }
}

/// The next room event, skipping requests addressed to every edge. Cancel-safe.
async fn next_room_event(events: &mut LinkEvents) -> Option<RoomEvent> {
    loop {
        match events.recv().await? {
            LinkEvent::Room(event) => return Some(event),
            LinkEvent::DisconnectUser { .. } | LinkEvent::Ephemeral(_) => continue,
        }
    }
}

/// Asserts that no room event arrives for [`QUIET`].
pub(super) async fn quiet(events: &mut LinkEvents, why: &str) {
    if let Ok(Some(event)) = tokio::time::timeout(QUIET, next_room_event(events)).await {
        panic!("unexpected event ({why}): {event:?}");
    }
}

/// The reason of the next [`LinkEvent::DisconnectUser`] for `user` arriving within `within`,
/// or `None` if none does (room events and other users' requests are skipped). Panics if the
/// stream ends.
pub(super) async fn next_disconnect(
    events: &mut LinkEvents,
    user: &UserId,
    within: Duration,
    who: &str,
) -> Option<String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => return None,
            Ok(None) => panic!("{who}'s event stream ended while watching for disconnects"),
            Ok(Some(LinkEvent::DisconnectUser { user: u, reason })) if &u == user => {
                return Some(reason);
            }
            Ok(Some(_)) => {}
        }
    }
}

/// The publication an event must be.
pub(super) fn publication(event: RoomEvent, expecting: &str) -> Publication {
    match event.kind {
        RoomEventKind::Publication(p) => p,
        other => panic!("expected a publication ({expecting}), got {other:?}"),
    }
}

/// Receives `n` publications of `room` and returns them.
pub(super) async fn publications(
    events: &mut LinkEvents,
    room: &RoomName,
    n: usize,
    who: &str,
) -> Vec<Publication> {
    let mut got = Vec::with_capacity(n);
    for i in 0..n {
        let event = next(events, &format!("publication {i} of {n} on {who}")).await;
        assert_eq!(&event.room, room, "{who} received an event of another room");
        got.push(publication(event, who));
    }
    got
}

/// Offsets of publications.
pub(super) fn offsets(publications: &[Publication]) -> Vec<u64> {
    publications.iter().map(|p| p.offset).collect()
}

/// A short description of an event, for comparing sequences.
pub(super) fn describe(event: &RoomEvent) -> String {
    match &event.kind {
        RoomEventKind::Publication(p) => format!("pub {}", p.data.as_str()),
        RoomEventKind::Join(m) => format!("join {}", m.client),
        RoomEventKind::Leave(m) => format!("leave {}", m.client),
        RoomEventKind::PresenceUpdate(m) => format!("update {}", m.client),
        RoomEventKind::PresenceResync(page) => format!("resync {}", page.members.len()),
    }
}
