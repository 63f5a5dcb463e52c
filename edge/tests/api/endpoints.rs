//! What each endpoint does, observed through WebSocket clients.

use std::time::Duration;

use plaza_backend::memory::MemoryBackend;
use plaza_edge::api::ApiCode;
use plaza_proto::CloseCode;
use plaza_proto::client::Push;
use serde_json::{Value, json};

use super::common::*;
use super::http::Api;
use super::{api_config, api_edge};

#[tokio::test]
async fn publish_reaches_websocket_subscribers_as_a_server_publication() {
    let edge = api_edge().await;
    let api = Api::new(edge.local_addr());
    let (mut ann, _) = Client::connected(edge.local_addr(), "ann").await;
    ann.subscribe("chat:news").await;
    ann.subscribe("server:feed").await;

    let ok = api
        .post(
            "/v1/api/publish",
            json!({"room": "chat:news", "data": {"text": "hello"}}),
        )
        .await
        .ok();
    let offset = ok["offset"].as_u64().unwrap();
    assert!(ok["epoch"].as_str().is_some_and(|e| !e.is_empty()), "{ok}");
    let Push::Pub(p) = ann.next_push().await else {
        panic!("pub")
    };
    assert_eq!(p.offset, offset);
    assert_eq!(p.data.as_str(), r#"{"text":"hello"}"#);
    assert!(p.from.is_none(), "server publications have no sender");

    // Namespaces closed to client publishing are what the server API is for.
    let ok = api
        .post(
            "/v1/api/publish",
            json!({"room": "server:feed", "data": [1, 2, 3]}),
        )
        .await
        .ok();
    let (got, data) = publication(ann.next_push().await);
    assert_eq!(
        (got, data),
        (ok["offset"].as_u64().unwrap(), json!([1, 2, 3]))
    );
    edge.shutdown().await;
}

#[tokio::test]
async fn retrying_a_publish_with_its_idem_key_returns_the_same_offset_and_delivers_once() {
    let edge = api_edge().await;
    let api = Api::new(edge.local_addr());
    let (mut ann, _) = Client::connected(edge.local_addr(), "ann").await;
    ann.subscribe("chat:orders").await;
    let body = json!({"room": "chat:orders", "data": {"order": 7}, "idem": "order-7"});
    let first = api.post("/v1/api/publish", body.clone()).await.ok();
    let retry = api.post("/v1/api/publish", body).await.ok();
    assert_eq!(
        first, retry,
        "the retry is acknowledged with the original position"
    );
    let (offset, _) = publication(ann.next_push().await);
    assert_eq!(offset, first["offset"].as_u64().unwrap());
    ann.expect_silence(Duration::from_millis(200)).await;
    edge.shutdown().await;
}

#[tokio::test]
async fn broadcast_publishes_to_every_room_and_reports_each_result() {
    let edge = api_edge().await;
    let api = Api::new(edge.local_addr());
    let rooms = ["chat:b1", "chat:b2", "server:b3"];
    let mut clients = Vec::new();
    for room in rooms {
        let (mut c, _) = Client::connected(edge.local_addr(), "ann").await;
        c.subscribe(room).await;
        clients.push(c);
    }
    let ok = api
        .post(
            "/v1/api/broadcast",
            json!({"rooms": rooms, "data": {"alert": true}, "idem": "alert-1"}),
        )
        .await
        .ok();
    let results = ok["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    for ((result, room), client) in results.iter().zip(rooms).zip(&mut clients) {
        assert_eq!(result["room"], room, "results are in request order");
        assert!(result.get("error").is_none(), "{result}");
        let (offset, data) = publication(client.next_push().await);
        assert_eq!(offset, result["offset"].as_u64().unwrap());
        assert_eq!(data, json!({"alert": true}));
    }
    let retry = api
        .post(
            "/v1/api/broadcast",
            json!({"rooms": rooms, "data": {"alert": true}, "idem": "alert-1"}),
        )
        .await
        .ok();
    assert_eq!(retry, ok, "the idem key applies per room");

    // A per-room failure is reported for that room only.
    let big = json!({"text": "x".repeat(100)});
    let mixed = api
        .post(
            "/v1/api/broadcast",
            json!({"rooms": ["chat:b1", "tiny:b4"], "data": big}),
        )
        .await
        .ok();
    let results = mixed["results"].as_array().unwrap();
    assert!(results[0]["offset"].is_u64(), "{mixed}");
    assert_eq!(results[1]["room"], "tiny:b4");
    assert_eq!(
        results[1]["error"]["code"],
        ApiCode::MessageTooLarge.name(),
        "{mixed}"
    );
    edge.shutdown().await;
}

#[tokio::test]
async fn broadcast_refuses_empty_oversized_duplicate_or_invalid_room_lists() {
    let edge = api_edge().await;
    let api = Api::new(edge.local_addr());
    let (mut watcher, _) = Client::connected(edge.local_addr(), "ann").await;
    watcher.subscribe("chat:ok").await;
    let cases = [
        (json!([]), ApiCode::BadRequest),
        (json!(["chat:ok", "chat:ok"]), ApiCode::BadRequest),
        (json!(["chat:ok", "bad room"]), ApiCode::InvalidRoom),
    ];
    for (rooms, code) in cases {
        api.post("/v1/api/broadcast", json!({"rooms": rooms, "data": 1}))
            .await
            .error(code);
    }
    watcher.expect_silence(Duration::from_millis(200)).await;

    let mut config = api_config();
    config.http.max_body_bytes = 64 * 1024;
    let roomy = start(config).await;
    let too_many: Vec<String> = (0..=plaza_edge::api::publish::MAX_BROADCAST_ROOMS)
        .map(|i| format!("chat:{i}"))
        .collect();
    Api::new(roomy.local_addr())
        .post("/v1/api/broadcast", json!({"rooms": too_many, "data": 1}))
        .await
        .error(ApiCode::BadRequest);
    roomy.shutdown().await;
    edge.shutdown().await;
}

#[tokio::test]
async fn presence_stats_and_history_reflect_websocket_clients() {
    let edge = api_edge().await;
    let api = Api::new(edge.local_addr());
    let room = "chat:a/b";
    let path = |what: &str| format!("/v1/api/rooms/chat:a%2Fb/{what}");
    let mut clients = Vec::new();
    for user in ["ann", "ann", "bob"] {
        let (mut c, _) = Client::connected(edge.local_addr(), user).await;
        c.subscribe(room).await;
        clients.push(c);
    }
    let members = api.get(&path("presence")).await.ok();
    let mut users: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"].as_str().unwrap())
        .collect();
    users.sort();
    assert_eq!(users, ["ann", "ann", "bob"]);
    // Client ids are random, so members come in no particular user order: each carries its
    // own user's info.
    for m in members["members"].as_array().unwrap() {
        assert_eq!(m["info"]["name"], m["user"], "{m}");
    }
    assert!(
        members.get("next").is_none(),
        "one page holds three members"
    );
    // Paged: two members and `next`, then the third and no `next`.
    let page = api.get(&format!("{}?limit=2", path("presence"))).await.ok();
    assert_eq!(page["members"].as_array().unwrap().len(), 2);
    let next = page["next"].as_str().expect("a next cursor").to_owned();
    let rest = api
        .get(&format!("{}?limit=2&after={next}", path("presence")))
        .await
        .ok();
    assert_eq!(rest["members"].as_array().unwrap().len(), 1);
    assert!(rest.get("next").is_none());
    assert!(rest["members"][0]["client"].as_str().unwrap() > next.as_str());
    api.get(&format!("{}?limit=0", path("presence")))
        .await
        .error(ApiCode::BadRequest);
    let stats = api.get(&path("presence_stats")).await.ok();
    assert_eq!(stats, json!({"clients": 3, "users": 2}));
    // User-level: one entry per user, paged by user id; an unknown mode is refused.
    let users = api
        .get(&format!("{}?mode=users", path("presence")))
        .await
        .ok();
    assert_eq!(
        users,
        json!({"users": [
            {"user": "ann", "connections": 2, "info": {"name": "ann"}},
            {"user": "bob", "connections": 1, "info": {"name": "bob"}},
        ]})
    );
    let page = api
        .get(&format!("{}?mode=users&limit=1", path("presence")))
        .await
        .ok();
    assert_eq!(page["next"], "ann");
    let rest = api
        .get(&format!("{}?mode=users&after=ann", path("presence")))
        .await
        .ok();
    assert_eq!(rest["users"][0]["user"], "bob");
    assert!(rest.get("next").is_none());
    api.get(&format!("{}?mode=everyone", path("presence")))
        .await
        .error(ApiCode::BadRequest);

    let first = clients[0].publish(room, json!("one")).await;
    let second = clients[2].publish(room, json!("two")).await;
    let all = api.get(&path("history")).await.ok();
    assert_eq!(all["complete"], true);
    assert_eq!(all["offset"], second["offset"]);
    let pubs = all["publications"].as_array().unwrap();
    assert_eq!(pubs.len(), 2);
    assert_eq!(
        (&pubs[0]["data"], &pubs[1]["data"]),
        (&json!("one"), &json!("two"))
    );
    assert_eq!(pubs[1]["from"]["user"], "bob");
    let newest = api.get(&format!("{}?limit=1", path("history"))).await.ok();
    assert_eq!(newest["publications"][0]["data"], "two");
    let since = api
        .get(&format!(
            "{}?since_epoch={}&since_offset={}",
            path("history"),
            first["epoch"].as_str().unwrap(),
            first["offset"]
        ))
        .await
        .ok();
    assert_eq!(since["publications"].as_array().unwrap().len(), 1);
    assert_eq!(since["complete"], true);
    let other_epoch = api
        .get(&format!(
            "{}?since_epoch=gone&since_offset=1",
            path("history")
        ))
        .await
        .ok();
    assert_eq!(other_epoch["complete"], false);

    drop(clients.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = api.get(&path("presence_stats")).await.ok();
    assert_eq!(stats, json!({"clients": 2, "users": 1}), "bob left");

    // Presence modes are the namespace's.
    let (mut counted, _) = Client::connected(edge.local_addr(), "ann").await;
    counted.subscribe("counts:big").await;
    let stats = api
        .get("/v1/api/rooms/counts:big/presence_stats")
        .await
        .ok();
    assert_eq!(stats, json!({"clients": 1, "users": 1}));
    api.get("/v1/api/rooms/counts:big/presence")
        .await
        .error(ApiCode::PresenceDisabled);
    api.get("/v1/api/rooms/nopres:x/presence_stats")
        .await
        .error(ApiCode::PresenceDisabled);
    edge.shutdown().await;
}

#[tokio::test]
async fn disconnect_closes_every_connection_of_the_user_on_every_edge_and_no_one_else() {
    let config = api_config();
    let backend = MemoryBackend::new(config.rooms.clone());
    let one = plaza_edge::start(config.clone(), backend.clone(), None)
        .await
        .unwrap();
    let two = plaza_edge::start(config, backend, None).await.unwrap();
    let mut ann = Vec::new();
    let mut bob = Vec::new();
    for edge in [&one, &two] {
        for _ in 0..2 {
            ann.push(Client::connected(edge.local_addr(), "ann").await.0);
        }
        let (mut b, _) = Client::connected(edge.local_addr(), "bob").await;
        b.subscribe("chat:lobby").await;
        bob.push(b);
    }
    ann[0].subscribe("chat:lobby").await;
    let api = Api::new(one.local_addr());
    let before = api
        .get("/v1/api/rooms/chat:lobby/presence_stats")
        .await
        .ok();
    assert_eq!(before, json!({"clients": 3, "users": 2}));

    let ok = api
        .post(
            "/v1/api/disconnect",
            json!({"user": "ann", "reason": "banned"}),
        )
        .await
        .ok();
    assert_eq!(ok, json!({}));
    for (i, c) in ann.iter_mut().enumerate() {
        let closed = c.closed().await;
        assert_eq!(
            closed.code,
            Some(CloseCode::Kicked.code()),
            "ann's connection {i}: {closed:?}"
        );
        let push = closed
            .disconnect
            .expect("a disconnect push before the close");
        assert_eq!(push.reason, "banned");
    }
    for b in &mut bob {
        b.ok(json!({"op": "ping"})).await;
    }
    let after = api
        .get("/v1/api/rooms/chat:lobby/presence_stats")
        .await
        .ok();
    assert_eq!(
        after,
        json!({"clients": 2, "users": 1}),
        "ann left the room"
    );

    // Nobody connected: still fine; the default reason is used.
    api.post("/v1/api/disconnect", json!({"user": "nobody"}))
        .await
        .ok();
    api.post("/v1/api/disconnect", json!({"user": ""}))
        .await
        .error(ApiCode::BadRequest);
    api.post(
        "/v1/api/disconnect",
        json!({"user": "bob", "reason": "x".repeat(1000)}),
    )
    .await
    .error(ApiCode::BadRequest);
    for b in &mut bob {
        b.ok(json!({"op": "ping"})).await;
    }
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test]
async fn rooms_are_listed_by_name_with_counts_and_paginated() {
    let edge = api_edge().await;
    let api = Api::new(edge.local_addr());
    let mut clients = Vec::new();
    for (user, room) in [("ann", "chat:r1"), ("bob", "chat:r1"), ("ann", "chat:r3")] {
        let (mut c, _) = Client::connected(edge.local_addr(), user).await;
        c.subscribe(room).await;
        clients.push(c);
    }
    let published = api
        .post("/v1/api/publish", json!({"room": "chat:r2", "data": 1}))
        .await
        .ok();

    let first = api.get("/v1/api/rooms?limit=2").await.ok();
    let rooms = first["rooms"].as_array().unwrap();
    assert_eq!(rooms.len(), 2);
    assert_eq!(rooms[0]["room"], "chat:r1");
    assert_eq!(
        (&rooms[0]["clients"], &rooms[0]["users"]),
        (&json!(2), &json!(2))
    );
    assert_eq!(rooms[1]["room"], "chat:r2");
    assert_eq!(rooms[1]["clients"], 0);
    assert_eq!(rooms[1]["offset"], published["offset"]);
    assert_eq!(first["next"], "chat:r2");

    let second = api.get("/v1/api/rooms?limit=2&after=chat:r2").await.ok();
    let rooms = second["rooms"].as_array().unwrap();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0]["room"], "chat:r3");
    assert_eq!(
        (&rooms[0]["clients"], &rooms[0]["users"]),
        (&json!(1), &json!(1))
    );
    assert!(
        rooms[0]["offset"].as_u64() < published["offset"].as_u64(),
        "chat:r3 was created before chat:r2's publication"
    );
    assert_eq!(second["next"], Value::Null, "the last page");
    let everything = api.get("/v1/api/rooms?after=").await.ok();
    assert_eq!(everything["rooms"].as_array().unwrap().len(), 3);
    assert_eq!(everything["next"], Value::Null);

    api.get("/v1/api/rooms?limit=0")
        .await
        .error(ApiCode::BadRequest);
    api.get("/v1/api/rooms?after=bad%20room")
        .await
        .error(ApiCode::InvalidRoom);
    api.get("/v1/api/rooms?cursor=x")
        .await
        .error(ApiCode::BadRequest);
    edge.shutdown().await;
}
