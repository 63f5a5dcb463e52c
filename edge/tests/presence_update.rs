//! `presence_update` end to end against a real edge: the `update` push to presence
//! subscribers, `presence` showing the new info, and bad input — no capability, no
//! subscription, oversized info, a flood — each refused with its code and counted.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use plaza_edge::auth::Capability;
use plaza_proto::ErrorCode;
use plaza_proto::client::Push;
use serde_json::{Value, json};

/// The member of an `update` push as JSON, or a panic.
fn updated(p: Push) -> Value {
    match p {
        Push::Update(u) => serde_json::to_value(&u.member).unwrap(),
        other => panic!("expected an update push, got {other:?}"),
    }
}

/// Skips `join` pushes (own and others') until the next other push.
async fn next_non_join(c: &mut Client) -> Push {
    loop {
        match c.next_push().await {
            Push::Join(_) => {}
            other => return other,
        }
    }
}

#[tokio::test]
async fn an_update_reaches_presence_subscribers_and_presence_shows_the_new_info() {
    let edge = start_default().await;
    let addr = edge.local_addr();
    let (mut ann, ann_info) = Client::connected(addr, "ann").await;
    let (mut bob, _) = Client::connected(addr, "bob").await;
    let (mut cy, _) = Client::connected(addr, "cy").await;
    for c in [&mut ann, &mut bob] {
        c.ok(json!({"op": "subscribe", "room": "chat:upd", "presence": true}))
            .await;
    }
    cy.subscribe("chat:upd").await; // a member without presence pushes
    let reply = ann
        .ok(json!({"op": "presence_update", "room": "chat:upd", "info": {"status": "away"}}))
        .await;
    assert_eq!(reply, json!({}));
    let member = updated(next_non_join(&mut bob).await);
    assert_eq!(member["client"], ann_info.client.as_str());
    assert_eq!(member["user"], "ann");
    assert_eq!(member["info"], json!({"status": "away"}));
    assert_eq!(
        updated(next_non_join(&mut ann).await),
        member,
        "own update too"
    );
    let listed = bob.ok(json!({"op": "presence", "room": "chat:upd"})).await;
    let ann_listed = listed["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user"] == "ann")
        .cloned();
    assert_eq!(ann_listed, Some(member));
    // The same info again changes nothing and pushes nothing; `null` clears it.
    ann.ok(json!({"op": "presence_update", "room": "chat:upd", "info": {"status": "away"}}))
        .await;
    ann.ok(json!({"op": "presence_update", "room": "chat:upd", "info": null}))
        .await;
    let cleared = updated(next_non_join(&mut bob).await);
    assert_eq!(cleared["info"], Value::Null);
    cy.expect_silence(Duration::from_millis(300)).await;
    edge.shutdown().await;
}

#[tokio::test]
async fn bad_presence_updates_are_refused_with_their_codes_and_counted() {
    let mut config = config();
    config.client.max_presence_info_bytes = 32;
    config.limits.presence_updates_per_second = 1;
    config.limits.presence_update_burst = 3;
    let edge = start(config).await;
    let addr = edge.local_addr();
    let (mut ann, _) = Client::connected(addr, "ann").await;
    let update =
        |room: &str, info: Value| json!({"op": "presence_update", "room": room, "info": info});

    let e = ann.err(update("chat:nosub", json!(1))).await;
    assert_eq!(e.code, ErrorCode::NotSubscribed, "{}", e.message);
    let e = ann
        .err(json!({"op": "presence_update", "room": "chat:nosub"}))
        .await;
    assert_eq!(e.code, ErrorCode::BadRequest, "missing info: {}", e.message);
    ann.subscribe("nopres:x").await;
    let e = ann.err(update("nopres:x", json!(1))).await;
    assert_eq!(e.code, ErrorCode::PresenceDisabled, "{}", e.message);

    ann.subscribe("chat:bad").await;
    let before = limit_hits(addr, "presence_info_bytes").await;
    let e = ann.err(update("chat:bad", json!("x".repeat(40)))).await;
    assert_eq!(e.code, ErrorCode::MessageTooLarge, "{}", e.message);
    assert_eq!(limit_hits(addr, "presence_info_bytes").await, before + 1.0);

    let before = limit_hits(addr, "presence_updates_per_connection").await;
    let mut refused = 0;
    for i in 0..8 {
        if let Err(e) = ann.call(update("chat:bad", json!(i))).await.result {
            assert_eq!(e.code, ErrorCode::RateLimited, "{}", e.message);
            assert!(e.temporary);
            refused += 1;
        }
    }
    assert!(
        refused >= 4,
        "only {refused} of 8 refused beyond a burst of 3"
    );
    assert!(limit_hits(addr, "presence_updates_per_connection").await >= before + refused as f64);

    // Without `publish` on the room: subscribing and seeing presence is not enough.
    let viewer = token_with(
        "viewer",
        vec![(
            "chat:*".into(),
            vec![Capability::Subscribe, Capability::Presence],
        )],
        Some(Duration::from_secs(60)),
    );
    let mut v = Client::open(addr).await;
    v.connect(&viewer).await;
    v.subscribe("chat:bad").await;
    let e = v.err(update("chat:bad", json!({"status": "hi"}))).await;
    assert_eq!(e.code, ErrorCode::PermissionDenied, "{}", e.message);
    edge.shutdown().await;
}

async fn limit_hits(addr: SocketAddr, limit: &str) -> f64 {
    metric(
        addr,
        &format!("plaza_limit_hits_total{{limit=\"{limit}\"}}"),
    )
    .await
}
