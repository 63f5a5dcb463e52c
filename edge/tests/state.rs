//! Live-state rooms end to end against a real edge (memory backend): the subscribe snapshot,
//! changes as `pub` pushes, recovery (changes or a fresh snapshot), tied keys released with the
//! connection, conflation, the server API, and bad input with its codes and metrics.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use plaza_edge::config::EdgeConfig;
use plaza_proto::ErrorCode;
use plaza_proto::client::Push;
use plaza_rooms::config::{NamespaceOverrides, StateOptions};
use serde_json::{Value, json};

/// The test config plus `st` (state rooms, 4 keys, 5 changes of history) and `cf` (state
/// rooms conflated to 5 pushes a second), both open to every user.
fn state_config() -> EdgeConfig {
    let mut c = config();
    c.limits.state_writes_per_second = 1000;
    c.limits.state_writes_burst = 1000;
    for (ns, conflate) in [("st", 0), ("cf", 5)] {
        c.rooms.namespaces.insert(
            ns.into(),
            NamespaceOverrides {
                history_size: Some(5),
                allow: Some(vec!["subscribe".into(), "publish".into()]),
                state: Some(StateOptions {
                    enabled: true,
                    max_keys: 4,
                    max_value_bytes: 100,
                    max_ttl: Duration::from_secs(60),
                    conflate_per_second: conflate,
                }),
                ..Default::default()
            },
        );
    }
    c
}

/// A client's map: key → (value, version), and the offset it is at.
#[derive(Debug, Default, PartialEq)]
struct Map {
    keys: BTreeMap<String, (Value, u64)>,
    offset: u64,
}

impl Map {
    /// Replaces the map with a subscribe reply's `state` (if any) and applies its publications.
    fn reply(&mut self, ok: &Value) {
        if let Some(state) = ok["state"].as_array() {
            self.keys = state
                .iter()
                .map(|e| {
                    let key = e["key"].as_str().unwrap().to_owned();
                    (key, (e["value"].clone(), e["version"].as_u64().unwrap()))
                })
                .collect();
            self.offset = ok["offset"].as_u64().unwrap();
        }
        for p in ok["publications"].as_array().into_iter().flatten() {
            self.apply(p["offset"].as_u64().unwrap(), &p["data"]);
        }
    }

    fn apply(&mut self, offset: u64, change: &Value) {
        if offset <= self.offset {
            return;
        }
        self.offset = offset;
        let key = change["key"].as_str().unwrap().to_owned();
        if change["deleted"] == json!(true) {
            self.keys.remove(&key);
        } else {
            self.keys.insert(key, (change["value"].clone(), offset));
        }
    }

    fn push(&mut self, p: Push) {
        let (offset, change) = publication(p);
        self.apply(offset, &change);
    }

    fn values(&self) -> BTreeMap<&str, &Value> {
        self.keys
            .iter()
            .map(|(k, (v, _))| (k.as_str(), v))
            .collect()
    }
}

async fn set(c: &mut Client, room: &str, key: &str, value: Value) -> u64 {
    let ok = c
        .ok(json!({"op": "set", "room": room, "key": key, "value": value}))
        .await;
    ok["offset"].as_u64().unwrap()
}

#[tokio::test]
async fn subscribe_answers_with_a_snapshot_then_pushes_changes_and_recovery_converges() {
    let edge = start(state_config()).await;
    let addr = edge.local_addr();
    let (mut ann, _) = Client::connected(addr, "ann").await;
    ann.subscribe("st:board").await;
    set(&mut ann, "st:board", "a", json!(1)).await;
    set(&mut ann, "st:board", "b", json!({"x": 2})).await;

    let (mut bob, _) = Client::connected(addr, "bob").await;
    let ok = bob.subscribe("st:board").await;
    let mut map = Map::default();
    map.reply(&ok);
    assert_eq!(
        map.values(),
        BTreeMap::from([("a", &json!(1)), ("b", &json!({"x": 2}))]),
        "the snapshot holds every key: {ok}"
    );
    let epoch = ok["epoch"].as_str().unwrap().to_owned();
    let at = map.offset;

    set(&mut ann, "st:board", "a", json!(3)).await;
    ann.ok(json!({"op": "delete", "room": "st:board", "key": "b"}))
        .await;
    map.push(bob.next_push().await);
    map.push(bob.next_push().await);
    assert_eq!(map.values(), BTreeMap::from([("a", &json!(3))]));

    // Recovery from a position inside the history window: the changes since it.
    let (mut carol, _) = Client::connected(addr, "carol").await;
    let ok = carol
        .ok(json!({"op": "subscribe", "room": "st:board", "recover": {"epoch": epoch, "offset": at}}))
        .await;
    assert_eq!(ok["recovered"], json!(true), "{ok}");
    assert!(
        ok.get("state").is_none(),
        "no snapshot when changes suffice: {ok}"
    );
    let mut recovered = Map {
        keys: BTreeMap::from([
            ("a".to_owned(), (json!(1), 0)),
            ("b".to_owned(), (json!({"x": 2}), 0)),
        ]),
        offset: at,
    };
    recovered.reply(&ok);
    assert_eq!(recovered.values(), map.values());

    // Past the 5-change window: a fresh snapshot instead.
    for i in 0..6 {
        set(&mut ann, "st:board", "c", json!(i)).await;
    }
    for _ in 0..6 {
        map.push(bob.next_push().await);
    }
    let (mut dave, _) = Client::connected(addr, "dave").await;
    let ok = dave
        .ok(json!({"op": "subscribe", "room": "st:board", "recover": {"epoch": epoch, "offset": at}}))
        .await;
    assert_eq!(ok["recovered"], json!(false), "{ok}");
    let mut fresh = Map::default();
    fresh.reply(&ok);
    assert_eq!(
        fresh.values(),
        map.values(),
        "the fresh snapshot is the live map"
    );

    // The server API reads the same map.
    let (status, body) = http_get(addr, "/v1/api/rooms/st:board/state").await;
    assert!(
        status == 401 || status == 404,
        "the API needs a key: {status} {body}"
    );
}

#[tokio::test]
async fn tied_keys_are_deleted_when_their_connection_ends() {
    let edge = start(state_config()).await;
    let addr = edge.local_addr();
    let (mut watcher, _) = Client::connected(addr, "watcher").await;
    let mut map = Map::default();
    map.reply(&watcher.subscribe("st:cursors").await);
    let (mut ann, _) = Client::connected(addr, "ann").await;
    ann.subscribe("st:cursors").await;
    ann.ok(
        json!({"op": "set", "room": "st:cursors", "key": "ann", "value": {"x": 1}, "tied": true}),
    )
    .await;
    set(&mut ann, "st:cursors", "kept", json!(true)).await;
    map.push(watcher.next_push().await);
    map.push(watcher.next_push().await);
    assert_eq!(map.keys.len(), 2);
    drop(ann);
    map.push(watcher.next_push().await);
    assert_eq!(
        map.values(),
        BTreeMap::from([("kept", &json!(true))]),
        "the tied key left with its connection"
    );
}

#[tokio::test]
async fn conflation_caps_pushes_and_ends_on_the_last_value() {
    let edge = start(state_config()).await;
    let addr = edge.local_addr();
    let (mut ann, _) = Client::connected(addr, "ann").await;
    let (mut bob, _) = Client::connected(addr, "bob").await;
    ann.subscribe("cf:score").await;
    let mut map = Map::default();
    map.reply(&bob.subscribe("cf:score").await);
    const SETS: i64 = 60;
    for i in 0..SETS {
        set(&mut ann, "cf:score", "n", json!(i)).await;
    }
    set(&mut ann, "cf:score", "other", json!("end")).await;
    let mut pushes = 0;
    while map.keys.get("n").map(|e| &e.0) != Some(&json!(SETS - 1))
        || !map.keys.contains_key("other")
    {
        map.push(bob.next_push().await);
        pushes += 1;
    }
    assert!(
        pushes < SETS as usize / 2,
        "{pushes} pushes for {SETS} changes of one key at 5 pushes a second"
    );
    bob.expect_silence(Duration::from_millis(500)).await;
    assert!(metric(addr, "plaza_state_conflated_total").await >= 1.0);
}

#[tokio::test]
async fn bad_state_input_gets_clear_codes_and_metrics() {
    let mut config = state_config();
    config.limits.state_writes_per_second = 1;
    config.limits.state_writes_burst = 12;
    let edge = start(config).await;
    let addr = edge.local_addr();
    let (mut ann, _) = Client::connected(addr, "ann").await;
    ann.subscribe("st:r").await;
    ann.subscribe("chat:plain").await;

    let e = ann
        .err(json!({"op": "set", "room": "chat:plain", "key": "k", "value": 1}))
        .await;
    assert_eq!(e.code, ErrorCode::NotStateRoom, "{e:?}");
    let e = ann
        .err(json!({"op": "publish", "room": "st:r", "data": 1}))
        .await;
    assert_eq!(
        e.code,
        ErrorCode::NotStateRoom,
        "publish in a state room: {e:?}"
    );

    let v = set(&mut ann, "st:r", "k", json!(1)).await;
    let e = ann
        .err(json!({"op": "set", "room": "st:r", "key": "k", "value": 2, "version": v - 1}))
        .await;
    assert_eq!(e.code, ErrorCode::StateConflict, "{e:?}");
    assert_eq!(e.version, Some(v), "the conflict names the current version");

    let e = ann
        .err(json!({"op": "set", "room": "st:r", "key": "big", "value": "x".repeat(200)}))
        .await;
    assert_eq!(e.code, ErrorCode::MessageTooLarge, "{e:?}");
    for ttl in [json!(0), json!(3600), json!(-1)] {
        let e = ann
            .err(json!({"op": "set", "room": "st:r", "key": "t", "value": 1, "ttl": ttl}))
            .await;
        assert_eq!(e.code, ErrorCode::BadRequest, "ttl {ttl}: {e:?}");
    }
    for key in ["k2", "k3", "k4"] {
        set(&mut ann, "st:r", key, json!(1)).await;
    }
    let e = ann
        .err(json!({"op": "set", "room": "st:r", "key": "k5", "value": 1}))
        .await;
    assert_eq!(e.code, ErrorCode::LimitExceeded, "a fifth key: {e:?}");

    // The burst of 12 writes is spent within a few more.
    let mut limited = None;
    for _ in 0..10 {
        let r = ann
            .call(json!({"op": "set", "room": "st:r", "key": "k", "value": 0}))
            .await;
        if let Err(e) = r.result {
            limited = Some(e);
            break;
        }
    }
    assert_eq!(limited.map(|e| e.code), Some(ErrorCode::RateLimited));

    for reason in [
        "not_state_room",
        "publish_in_state_room",
        "conflict",
        "value_too_large",
        "bad_ttl",
        "too_many_keys",
        "rate_limited",
    ] {
        let series = format!("plaza_state_refused_total{{reason=\"{reason}\"}}");
        assert!(metric(addr, &series).await >= 1.0, "{series} counted");
    }
}
