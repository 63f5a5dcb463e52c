//! User-level presence (`subscribe` with `presence: "users"`) end to end against a real edge:
//! `user_join`/`user_update`/`user_leave` only on a user's first/last connection, the
//! debounced leave (a reload inside it pushes nothing, a leave after it does), the `presence`
//! query's user mode, and bad input.

mod common;

use std::time::{Duration, Instant};

use common::*;
use plaza_proto::ErrorCode;
use plaza_proto::client::{Push, UserPush};
use serde_json::json;

const DEBOUNCE: Duration = Duration::from_millis(600);

fn user_push(p: Push) -> (&'static str, UserPush) {
    match p {
        Push::UserJoin(u) => ("user_join", u),
        Push::UserUpdate(u) => ("user_update", u),
        Push::UserLeave(u) => ("user_leave", u),
        other => panic!("expected a user push, got {other:?}"),
    }
}

async fn unsubscribe(c: &mut Client, room: &str) {
    c.ok(json!({"op": "unsubscribe", "room": room})).await;
}

#[tokio::test]
async fn pushes_come_on_first_and_last_connection_and_a_reload_inside_the_debounce_is_silent() {
    let mut config = config();
    config.client.user_presence_debounce = DEBOUNCE;
    let edge = start(config).await;
    let addr = edge.local_addr();
    let room = "chat:users";
    let (mut obs, _) = Client::connected(addr, "obs").await;
    obs.ok(json!({"op": "subscribe", "room": room, "presence": "users"}))
        .await;
    let listed = obs
        .ok(json!({"op": "presence", "room": room, "mode": "users"}))
        .await;
    assert_eq!(listed["users"][0]["user"], "obs");
    assert_eq!(listed["users"][0]["connections"], 1);

    // Two tabs of ann: a join on the first, an update of the count on the second.
    let (mut tab1, _) = Client::connected(addr, "ann").await;
    let (mut tab2, _) = Client::connected(addr, "ann").await;
    tab1.subscribe(room).await;
    let (kind, p) = user_push(obs.next_push().await);
    assert_eq!(
        (kind, p.user.user.as_str(), p.user.connections),
        ("user_join", "ann", 1)
    );
    tab2.subscribe(room).await;
    let (kind, p) = user_push(obs.next_push().await);
    assert_eq!((kind, p.user.connections), ("user_update", 2));
    let listed = obs
        .ok(json!({"op": "presence", "room": room, "mode": "users"}))
        .await;
    assert_eq!(listed["users"].as_array().unwrap().len(), 2);
    assert_eq!(listed["users"][0]["user"], "ann");
    assert_eq!(listed["users"][0]["connections"], 2);
    // Paged by user id.
    let page = obs
        .ok(json!({"op": "presence", "room": room, "mode": "users", "limit": 1}))
        .await;
    assert_eq!(page["next"], "ann");
    let page = obs
        .ok(json!({"op": "presence", "room": room, "mode": "users", "after": "ann"}))
        .await;
    assert_eq!(page["users"][0]["user"], "obs");
    assert!(page.get("next").is_none());

    // One tab closes: the count drops, no leave.
    unsubscribe(&mut tab2, room).await;
    let (kind, p) = user_push(obs.next_push().await);
    assert_eq!((kind, p.user.connections), ("user_update", 1));

    // A reload: the last tab leaves and a new one joins inside the debounce — nothing.
    unsubscribe(&mut tab1, room).await;
    let (mut tab3, _) = Client::connected(addr, "ann").await;
    tab3.subscribe(room).await;
    obs.expect_silence(DEBOUNCE * 2).await;

    // A real leave: `user_leave` once the debounce ran out, not before.
    let left = Instant::now();
    drop(tab3);
    let (kind, p) = user_push(obs.next_push().await);
    assert_eq!(
        (kind, p.user.user.as_str(), p.user.connections),
        ("user_leave", "ann", 0)
    );
    assert!(
        left.elapsed() >= DEBOUNCE - Duration::from_millis(50),
        "left after {:?}, debounce {DEBOUNCE:?}",
        left.elapsed()
    );
    let listed = obs
        .ok(json!({"op": "presence", "room": room, "mode": "users"}))
        .await;
    assert_eq!(listed["users"].as_array().unwrap().len(), 1);
    edge.shutdown().await;
}

#[tokio::test]
async fn without_debounce_the_leave_is_immediate_and_connection_level_subscribers_see_no_user_pushes()
 {
    let mut config = config();
    config.client.user_presence_debounce = Duration::ZERO;
    let edge = start(config).await;
    let addr = edge.local_addr();
    let room = "chat:nodebounce";
    let (mut obs, _) = Client::connected(addr, "obs").await;
    obs.ok(json!({"op": "subscribe", "room": room, "presence": "users"}))
        .await;
    let (mut clients, _) = Client::connected(addr, "cy").await;
    clients
        .ok(json!({"op": "subscribe", "room": room, "presence": true}))
        .await;
    let (kind, _) = user_push(obs.next_push().await);
    assert_eq!(kind, "user_join");
    let (mut ann, _) = Client::connected(addr, "ann").await;
    ann.subscribe(room).await;
    assert_eq!(user_push(obs.next_push().await).0, "user_join");
    unsubscribe(&mut ann, room).await;
    let (kind, p) = user_push(obs.next_push().await);
    assert_eq!((kind, p.user.user.as_str()), ("user_leave", "ann"));
    // The connection-level subscriber got join/leave, never a user push.
    for _ in 0..3 {
        match clients.next_push().await {
            Push::Join(_) | Push::Leave(_) => {}
            other => panic!("connection-level subscriber got {other:?}"),
        }
    }
    clients.expect_silence(Duration::from_millis(200)).await;
    // The `presence` query in user mode works without a local user table too.
    let (mut reader, _) = Client::connected(addr, "dan").await;
    let listed = reader
        .ok(json!({"op": "presence", "room": room, "mode": "users"}))
        .await;
    let users: Vec<&str> = listed["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["cy", "obs"]);
    edge.shutdown().await;
}

#[tokio::test]
async fn bad_user_presence_input_is_refused_with_its_code() {
    let edge = start_default().await;
    let addr = edge.local_addr();
    let (mut ann, _) = Client::connected(addr, "ann").await;
    let e = ann
        .err(json!({"op": "subscribe", "room": "chat:x", "presence": "everyone"}))
        .await;
    assert_eq!(e.code, ErrorCode::BadRequest, "{}", e.message);
    let e = ann
        .err(json!({"op": "subscribe", "room": "chat:x", "presence": 3}))
        .await;
    assert_eq!(e.code, ErrorCode::BadRequest, "{}", e.message);
    let e = ann
        .err(json!({"op": "presence", "room": "chat:x", "mode": "all"}))
        .await;
    assert_eq!(e.code, ErrorCode::BadRequest, "{}", e.message);
    let e = ann
        .err(json!({"op": "subscribe", "room": "nopres:x", "presence": "users"}))
        .await;
    assert_eq!(e.code, ErrorCode::PresenceDisabled, "{}", e.message);
    // "clients" is the same as `true`.
    ann.ok(json!({"op": "subscribe", "room": "chat:x", "presence": "clients"}))
        .await;
    assert!(matches!(ann.next_push().await, Push::Join(_)));
    edge.shutdown().await;
}
