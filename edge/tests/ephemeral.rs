//! Ephemeral publications end to end against a real edge: delivery without offsets, never in
//! history or recovery, namespace modes, bad input and their own rate limits.

mod common;

use std::net::SocketAddr;

use common::*;
use plaza_edge::config::EdgeConfig;
use plaza_proto::ErrorCode;
use plaza_proto::client::Push;
use plaza_rooms::config::{EphemeralMode, NamespaceOverrides};
use serde_json::{Value, json};

/// The test config plus `typing` (ephemeral by default) and `durable` (ephemeral off), both
/// open to every user.
fn ephemeral_config() -> EdgeConfig {
    let mut c = config();
    for (ns, mode) in [
        ("typing", EphemeralMode::Default),
        ("durable", EphemeralMode::Off),
    ] {
        c.rooms.namespaces.insert(
            ns.into(),
            NamespaceOverrides {
                ephemeral: Some(mode),
                allow: Some(vec!["subscribe".into(), "publish".into()]),
                ..Default::default()
            },
        );
    }
    c
}

/// The data and sender of an `ephemeral` push, or a panic.
fn ephemeral(p: Push) -> (Value, Option<String>) {
    match p {
        Push::Ephemeral(e) => (
            serde_json::from_str(e.data.as_str()).unwrap(),
            e.from.map(|f| f.user.as_str().to_owned()),
        ),
        other => panic!("expected an ephemeral push, got {other:?}"),
    }
}

#[tokio::test]
async fn ephemeral_publications_reach_subscribers_without_offsets_and_never_reach_history() {
    let edge = start(ephemeral_config()).await;
    let (mut ann, _) = Client::connected(edge.local_addr(), "ann").await;
    let (mut bob, _) = Client::connected(edge.local_addr(), "bob").await;
    let start = ann.subscribe("chat:eph").await;
    bob.subscribe("chat:eph").await;
    for i in 0..5 {
        let ok = ann
            .ok(json!({"op": "publish", "room": "chat:eph", "data": {"typing": i}, "ephemeral": true}))
            .await;
        assert_eq!(
            ok,
            json!({}),
            "an ephemeral publish is acknowledged without an offset"
        );
    }
    for c in [&mut ann, &mut bob] {
        for i in 0..5 {
            assert_eq!(
                ephemeral(c.next_push().await),
                (json!({"typing": i}), Some("ann".to_owned()))
            );
        }
    }
    let durable = ann.publish("chat:eph", json!("hello")).await;
    assert_eq!(
        publication(bob.next_push().await),
        (durable["offset"].as_u64().unwrap(), json!("hello"))
    );
    let history = bob.ok(json!({"op": "history", "room": "chat:eph"})).await;
    assert_eq!(
        history["publications"].as_array().unwrap().len(),
        1,
        "{history}"
    );

    // A client recovering from before the ephemeral ones gets the durable one only.
    let (mut carl, _) = Client::connected(edge.local_addr(), "carl").await;
    let recovered = carl
        .ok(json!({"op": "subscribe", "room": "chat:eph", "recover": {"epoch": start["epoch"], "offset": start["offset"]}}))
        .await;
    assert_eq!(recovered["recovered"], json!(true));
    let publications = recovered["publications"].as_array().unwrap();
    assert_eq!(publications.len(), 1, "{recovered}");
    assert_eq!(publications[0]["data"], json!("hello"));
}

#[tokio::test]
async fn the_namespace_decides_whether_a_publish_is_ephemeral_and_may_forbid_it() {
    let edge = start(ephemeral_config()).await;
    let (mut ann, _) = Client::connected(edge.local_addr(), "ann").await;
    ann.subscribe("typing:doc").await;
    ann.subscribe("durable:doc").await;

    // `typing`: ephemeral unless asked otherwise.
    let ok = ann
        .ok(json!({"op": "publish", "room": "typing:doc", "data": 1}))
        .await;
    assert_eq!(ok, json!({}));
    assert_eq!(ephemeral(ann.next_push().await).0, json!(1));
    let ok = ann
        .ok(json!({"op": "publish", "room": "typing:doc", "data": 2, "ephemeral": false}))
        .await;
    assert!(ok["offset"].is_u64(), "{ok}");
    assert_eq!(publication(ann.next_push().await).1, json!(2));
    let e = ann
        .err(json!({"op": "publish", "room": "typing:doc", "data": 3, "idem": "k"}))
        .await;
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert!(e.message.contains("ephemeral: false"), "{}", e.message);

    // `durable`: refused with a reason, durable by default.
    let e = ann
        .err(json!({"op": "publish", "room": "durable:doc", "data": 4, "ephemeral": true}))
        .await;
    assert_eq!(e.code, ErrorCode::PublishDisabled);
    assert!(e.message.contains("ephemeral"), "{}", e.message);
    let ok = ann
        .ok(json!({"op": "publish", "room": "durable:doc", "data": 5}))
        .await;
    assert!(ok["offset"].is_u64(), "{ok}");

    // Bad input: `idem` with `ephemeral: true`, oversize data, unsubscribed room.
    let e = ann
        .err(json!({"op": "publish", "room": "chat:x", "data": 6, "ephemeral": true, "idem": "k"}))
        .await;
    assert_eq!(e.code, ErrorCode::BadRequest);
    ann.subscribe("tiny:x").await;
    let big = "x".repeat(100);
    let e = ann
        .err(json!({"op": "publish", "room": "tiny:x", "data": big, "ephemeral": true}))
        .await;
    assert_eq!(e.code, ErrorCode::MessageTooLarge);
    let e = ann
        .err(json!({"op": "publish", "room": "chat:elsewhere", "data": 7, "ephemeral": true}))
        .await;
    assert_eq!(e.code, ErrorCode::NotSubscribed);
}

async fn limit_hits(addr: SocketAddr, limit: &str) -> f64 {
    metric(
        addr,
        &format!("plaza_limit_hits_total{{limit=\"{limit}\"}}"),
    )
    .await
}

/// Sends `n` ephemeral publishes to `room` and returns how many were refused as rate limited
/// (each with a temporary error naming `what`).
async fn flood(c: &mut Client, room: &str, n: usize, what: &str) -> usize {
    let mut refused = 0;
    for i in 0..n {
        let reply = c
            .call(json!({"op": "publish", "room": room, "data": i, "ephemeral": true}))
            .await;
        if let Err(e) = reply.result {
            assert_eq!(e.code, ErrorCode::RateLimited, "{}", e.message);
            assert!(e.temporary);
            assert!(e.message.contains(what), "{}", e.message);
            refused += 1;
        }
    }
    refused
}

#[tokio::test]
async fn ephemeral_floods_are_refused_per_connection_and_per_room_and_counted() {
    let mut config = ephemeral_config();
    config.limits.ephemeral_per_second = 1;
    config.limits.ephemeral_burst = 5;
    let edge = start(config).await;
    let addr = edge.local_addr();
    let (mut ann, _) = Client::connected(addr, "ann").await;
    ann.subscribe("chat:flood").await;
    let before = limit_hits(addr, "ephemeral_per_connection").await;
    let refused = flood(&mut ann, "chat:flood", 10, "per connection").await;
    assert!(
        refused >= 4,
        "only {refused} of 10 refused beyond a burst of 5"
    );
    assert!(limit_hits(addr, "ephemeral_per_connection").await >= before + refused as f64);
    // Durable publications have limits of their own and are not blocked by the ephemeral one.
    ann.publish("chat:flood", json!("still here")).await;

    let mut config = ephemeral_config();
    config.limits.ephemeral_per_second_per_room = 1;
    config.limits.ephemeral_burst_per_room = 6;
    let edge = start(config).await;
    let addr = edge.local_addr();
    let (mut ann, _) = Client::connected(addr, "ann").await;
    let (mut bob, _) = Client::connected(addr, "bob").await;
    ann.subscribe("chat:busy").await;
    bob.subscribe("chat:busy").await;
    bob.subscribe("chat:calm").await;
    let before = limit_hits(addr, "ephemeral_per_room").await;
    let refused = flood(&mut ann, "chat:busy", 4, "room chat:busy").await
        + flood(&mut bob, "chat:busy", 4, "room chat:busy").await;
    assert!(refused >= 1, "8 publishes passed a room burst of 6");
    assert!(limit_hits(addr, "ephemeral_per_room").await >= before + refused as f64);
    // Another room has its own budget.
    assert_eq!(flood(&mut bob, "chat:calm", 3, "").await, 0);
}
