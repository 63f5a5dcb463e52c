//! Live-state room checks (the "State rooms" contract): a snapshot plus the changes after its
//! position equals the tier's map, also when recovering from history; TTLs expire keys;
//! compare-and-set conflicts name the current version; tied keys leave with their connection,
//! their link and their edge's lease; limits and non-state rooms are refused.
//!
//! Every check keeps its own map from what it receives ([`Map`]) and compares it with
//! [`EdgeLink::state_read`] — the client-side invariant "my map equals the server's".

use std::collections::BTreeMap;

use plaza_proto::cluster::{BrokerError, RoomEvent};
use plaza_proto::state::{StateChange, StateSnapshot, StateWrite};
use plaza_proto::{ClientId, Payload, Position, Publication, RoomName};

use super::support::{QUIET, attach, next, next_within, ok, payload, publication, room, unique};
use super::{LEASE, SLACK, STATE_MAX_KEYS, STATE_TTL};
use crate::{Backend, EdgeLink, LinkEvents};

/// A client's copy of a state room: key → (value, version), at a position.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Map {
    /// The keys.
    pub entries: BTreeMap<String, (Payload, u64)>,
    /// The offset every change at or below which is in `entries`.
    pub offset: u64,
}

impl Map {
    /// The map of a snapshot.
    pub fn of(snapshot: &StateSnapshot) -> Self {
        Self {
            entries: snapshot
                .entries
                .iter()
                .map(|e| (e.key.clone(), (e.value.clone(), e.version)))
                .collect(),
            offset: snapshot.position.offset,
        }
    }

    /// Applies one change publication; changes at or below `offset` are already in.
    pub fn apply(&mut self, p: &Publication) {
        if p.offset <= self.offset {
            return;
        }
        self.offset = p.offset;
        match StateChange::decode(&p.data) {
            Some(StateChange::Set { key, value }) => {
                self.entries.insert(key, (value, p.offset));
            }
            Some(StateChange::Deleted { key }) => {
                self.entries.remove(&key);
            }
            None => panic!("a state room's publication is not a change record: {p:?}"),
        }
    }
}

fn set(key: &str, value: Payload) -> StateWrite {
    StateWrite::Set {
        key: key.to_owned(),
        value,
        expect: None,
        ttl_ms: None,
        tied: None,
        from: None,
    }
}

fn cas(key: &str, value: Payload, expect: u64) -> StateWrite {
    StateWrite::Set {
        key: key.to_owned(),
        value,
        expect: Some(expect),
        ttl_ms: None,
        tied: None,
        from: None,
    }
}

fn tied(key: &str, client: &ClientId) -> StateWrite {
    StateWrite::Set {
        key: key.to_owned(),
        value: payload("true"),
        expect: None,
        ttl_ms: None,
        tied: Some(client.clone()),
        from: None,
    }
}

/// Reads changes of `room` from `events` into `map` until it holds `until` (an offset).
async fn follow(events: &mut LinkEvents, room: &RoomName, map: &mut Map, until: u64, who: &str) {
    while map.offset < until {
        let event: RoomEvent = next(events, &format!("{who}: changes up to {until}")).await;
        if &event.room == room {
            map.apply(&publication(event, who));
        }
    }
}

/// Writes through `link` and returns the new version.
async fn write<L: EdgeLink>(link: &L, room: &RoomName, w: StateWrite, what: &str) -> u64 {
    ok(link.state_write(room.clone(), w).await, what)
        .position
        .offset
}

async fn read<L: EdgeLink>(link: &L, room: &RoomName) -> Map {
    Map::of(&ok(link.state_read(room.clone()).await, "state_read"))
}

/// A subscriber that takes a snapshot midway through a writer's changes, then follows live
/// changes, ends with the tier's map; so does one recovering from history since an early
/// position; one recovering from before the history window gets `complete: false`.
pub async fn snapshot_plus_changes_equals_the_state<B: Backend>(backend: &B) {
    let (writer, _writer_events) = attach(backend).await;
    let (reader, mut events) = attach(backend).await;
    let target = room("state");
    let first = write(&writer, &target, set("a", payload("1")), "set a").await;
    write(&writer, &target, set("b", payload("2")), "set b").await;
    ok(reader.subscribe(target.clone()).await, "subscribe");
    let mut map = read(&reader, &target).await;
    assert_eq!(
        map.entries.len(),
        2,
        "the snapshot holds both keys: {map:?}"
    );
    let mut last = 0;
    for i in 0..20 {
        let key = ["a", "b", "c"][i % 3];
        let w = if i % 7 == 6 {
            StateWrite::Delete {
                key: key.into(),
                expect: None,
                from: None,
            }
        } else {
            set(key, payload(&i.to_string()))
        };
        last = write(&writer, &target, w, "change").await;
    }
    follow(&mut events, &target, &mut map, last, "live subscriber").await;
    let server = read(&reader, &target).await;
    assert_eq!(
        map.entries, server.entries,
        "snapshot + live changes = the tier's map"
    );

    // Recovery from the first change's position: history since it, folded onto the map as
    // it was then, ends equal too.
    let page = ok(
        reader
            .history(
                target.clone(),
                Some(Position {
                    epoch: server_epoch(&reader, &target).await,
                    offset: first,
                }),
                None,
            )
            .await,
        "history since the first change",
    );
    assert!(
        page.complete,
        "the changes since an offset in the window are all held"
    );
    let mut recovered = Map {
        entries: BTreeMap::from([("a".to_owned(), (payload("1"), first))]),
        offset: first,
    };
    for p in &page.publications {
        recovered.apply(p);
    }
    assert_eq!(
        recovered.entries, server.entries,
        "recovered map = the tier's map"
    );
}

async fn server_epoch<L: EdgeLink>(link: &L, room: &RoomName) -> String {
    ok(link.state_read(room.clone()).await, "state_read")
        .position
        .epoch
}

/// A key set with a TTL is deleted — as a change every subscriber receives — within the TTL
/// plus the backend's slack, and not before half of it; setting it again without a TTL keeps it.
pub async fn keys_expire_after_their_ttl<B: Backend>(backend: &B) {
    let (link, mut events) = attach(backend).await;
    let target = room("state");
    ok(link.subscribe(target.clone()).await, "subscribe");
    let mut map = read(&link, &target).await;
    let ttl_ms = u64::try_from(STATE_TTL.as_millis()).unwrap_or(u64::MAX);
    let expiring = StateWrite::Set {
        key: "gone".into(),
        value: payload("1"),
        expect: None,
        ttl_ms: Some(ttl_ms),
        tied: None,
        from: None,
    };
    let v = write(&link, &target, expiring, "set with ttl").await;
    let kept = write(&link, &target, set("kept", payload("2")), "set without ttl").await;
    let start = tokio::time::Instant::now();
    follow(&mut events, &target, &mut map, kept, "subscriber").await;
    assert!(map.entries.contains_key("gone"), "set with ttl: {v}");
    let event = next_within(&mut events, STATE_TTL + SLACK, "the ttl's deletion").await;
    let elapsed = start.elapsed();
    map.apply(&publication(event, "ttl deletion"));
    assert!(
        !map.entries.contains_key("gone") && map.entries.contains_key("kept"),
        "only the key with a ttl expired: {map:?}"
    );
    assert!(
        elapsed >= STATE_TTL / 2,
        "a key expired after {elapsed:?}, its ttl is {STATE_TTL:?}"
    );
    assert_eq!(map.entries, read(&link, &target).await.entries);
}

/// Compare-and-set: version 0 creates only an absent key; a stale version fails naming the
/// current one and changes nothing; the current version succeeds (sets and deletes alike).
pub async fn compare_and_set_conflicts_name_the_current_version<B: Backend>(backend: &B) {
    let (link, _events) = attach(backend).await;
    let target = room("state");
    let v1 = write(
        &link,
        &target,
        cas("n", payload("1"), 0),
        "create with version 0",
    )
    .await;
    let conflict = link
        .state_write(target.clone(), cas("n", payload("9"), 0))
        .await;
    assert!(
        matches!(&conflict, Err(BrokerError::StateConflict { current, expected: 0, .. }) if *current == v1),
        "creating an existing key: {conflict:?}"
    );
    let v2 = write(
        &link,
        &target,
        cas("n", payload("2"), v1),
        "set at the current version",
    )
    .await;
    assert!(v2 > v1, "versions increase: {v1} then {v2}");
    let stale = link
        .state_write(
            target.clone(),
            StateWrite::Delete {
                key: "n".into(),
                expect: Some(v1),
                from: None,
            },
        )
        .await;
    assert!(
        matches!(&stale, Err(BrokerError::StateConflict { current, .. }) if *current == v2),
        "a delete at a stale version: {stale:?}"
    );
    let map = read(&link, &target).await;
    assert_eq!(
        map.entries.get("n"),
        Some(&(payload("2"), v2)),
        "failed writes changed nothing"
    );
    write(
        &link,
        &target,
        StateWrite::Delete {
            key: "n".into(),
            expect: Some(v2),
            from: None,
        },
        "delete at the current version",
    )
    .await;
    assert!(read(&link, &target).await.entries.is_empty());
}

/// Keys tied to a connection are deleted when it releases them, when its link closes, and when
/// its edge vanishes without closing (within the lease); untied keys and other connections'
/// keys stay.
pub async fn tied_keys_leave_with_their_connection<B: Backend>(backend: &B) {
    let (watcher, mut events) = attach(backend).await;
    let target = room("state");
    ok(watcher.subscribe(target.clone()).await, "subscribe");
    let mut map = read(&watcher, &target).await;
    let client = |n: &str| ClientId::new(format!("{n}-{}", unique()));
    let (c1, c2) = (client("c1"), client("c2"));
    write(&watcher, &target, tied("c1", &c1), "tied set").await;
    write(&watcher, &target, tied("c2", &c2), "tied set").await;
    let v = write(&watcher, &target, set("free", payload("0")), "untied set").await;
    follow(&mut events, &target, &mut map, v, "watcher").await;
    let released = write(
        &watcher,
        &target,
        StateWrite::Release { client: c1.clone() },
        "release c1",
    )
    .await;
    follow(&mut events, &target, &mut map, released, "watcher").await;
    assert_eq!(
        map.entries.keys().collect::<Vec<_>>(),
        ["c2", "free"],
        "releasing c1 deleted only its key"
    );

    let (closing, _closing_events) = attach(backend).await;
    let c3 = client("c3");
    let v = write(
        &closing,
        &target,
        tied("c3", &c3),
        "tied set on a closing link",
    )
    .await;
    follow(&mut events, &target, &mut map, v, "watcher").await;
    closing.close().await;
    let event = next(&mut events, "the closed link's tied key deleted").await;
    map.apply(&publication(event, "close"));
    assert!(
        !map.entries.contains_key("c3"),
        "closing the link deleted its key"
    );

    let (doomed, doomed_events) = attach(backend).await;
    let c4 = client("c4");
    let v = write(
        &doomed,
        &target,
        tied("c4", &c4),
        "tied set on a doomed link",
    )
    .await;
    follow(&mut events, &target, &mut map, v, "watcher").await;
    drop((doomed, doomed_events));
    let event = next_within(
        &mut events,
        LEASE + SLACK * 2,
        "the dead edge's tied key deleted",
    )
    .await;
    map.apply(&publication(event, "lease expiry"));
    assert_eq!(
        map.entries.keys().collect::<Vec<_>>(),
        ["c2", "free"],
        "a dead edge's tied key is deleted, other keys stay"
    );
    tokio::time::sleep(QUIET).await;
    assert_eq!(map.entries, read(&watcher, &target).await.entries);
}

/// State writes outside state namespaces, too many keys, oversized values and TTLs of 0 or
/// beyond the namespace's maximum are refused and change nothing.
pub async fn state_limits_and_non_state_rooms_are_refused<B: Backend>(backend: &B) {
    let (link, _events) = attach(backend).await;
    let plain = room("conf");
    let refused = link
        .state_write(plain.clone(), set("k", payload("1")))
        .await;
    assert!(
        matches!(refused, Err(BrokerError::NotStateRoom { .. })),
        "set in a plain room: {refused:?}"
    );
    let read_plain = link.state_read(plain).await;
    assert!(
        matches!(read_plain, Err(BrokerError::NotStateRoom { .. })),
        "{read_plain:?}"
    );

    let target = room("state");
    for i in 0..STATE_MAX_KEYS {
        write(
            &link,
            &target,
            set(&format!("k{i}"), payload("1")),
            "set up to the key limit",
        )
        .await;
    }
    let too_many = link
        .state_write(target.clone(), set("one-more", payload("1")))
        .await;
    assert!(
        matches!(too_many, Err(BrokerError::StateLimit(_))),
        "a key beyond max_keys: {too_many:?}"
    );
    write(
        &link,
        &target,
        set("k0", payload("2")),
        "an existing key may change at the limit",
    )
    .await;
    let big = payload(&format!("\"{}\"", "x".repeat(super::STATE_MAX_VALUE)));
    let oversized = link.state_write(target.clone(), set("k1", big)).await;
    assert!(
        matches!(oversized, Err(BrokerError::StateLimit(_))),
        "{oversized:?}"
    );
    for ttl in [0, u64::MAX] {
        let w = StateWrite::Set {
            key: "k1".into(),
            value: payload("3"),
            expect: None,
            ttl_ms: Some(ttl),
            tied: None,
            from: None,
        };
        let bad = link.state_write(target.clone(), w).await;
        assert!(
            matches!(bad, Err(BrokerError::StateLimit(_))),
            "ttl {ttl}: {bad:?}"
        );
    }
    // A publication would put something other than the map's changes in the room's log.
    let published = link
        .publish(target.clone(), payload("\"chat\""), None, None)
        .await;
    assert!(
        matches!(published, Err(BrokerError::Invalid(_))),
        "publish in a state room: {published:?}"
    );
    let map = read(&link, &target).await;
    assert_eq!(map.entries.len(), STATE_MAX_KEYS);
    assert_eq!(map.entries.get("k1").map(|e| &e.0), Some(&payload("1")));
}
