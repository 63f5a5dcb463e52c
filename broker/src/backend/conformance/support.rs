//! Helpers of the conformance suite: unique names, attaching, and waiting for events with
//! panics that say which guarantee broke.

use std::fmt::Debug;
use std::time::Duration;

use plaza_proto::cluster::{RoomEvent, RoomEventKind};
use plaza_proto::{ClientId, EdgeId, Member, Payload, Publication, RoomName, UserId};

use super::LEASE;
use crate::backend::{AttachOptions, Backend, RoomEvents};

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
pub(super) async fn attach<B: Backend>(backend: &B) -> (B::Link, RoomEvents) {
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
pub(super) async fn next(events: &mut RoomEvents, expecting: &str) -> RoomEvent {
    next_within(events, WAIT, expecting).await
}

/// The next event, which must arrive within `within`.
pub(super) async fn next_within(
    events: &mut RoomEvents,
    within: Duration,
    expecting: &str,
) -> RoomEvent {
    match tokio::time::timeout(within, events.recv()).await {
        Ok(Some(event)) => event,
        Ok(None) => panic!("event stream ended while expecting {expecting}"),
        Err(_) => panic!("no event within {within:?} while expecting {expecting}"),
    }
}

/// Asserts that no event arrives for [`QUIET`].
pub(super) async fn quiet(events: &mut RoomEvents, why: &str) {
    if let Ok(Some(event)) = tokio::time::timeout(QUIET, events.recv()).await {
        panic!("unexpected event ({why}): {event:?}");
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
    events: &mut RoomEvents,
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
    }
}
