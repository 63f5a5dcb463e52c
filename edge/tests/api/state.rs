//! The state room endpoints (`state/set`, `state/delete`, `rooms/{room}/state`), observed
//! through a WebSocket subscriber.

use std::time::Duration;

use plaza_edge::api::ApiCode;
use plaza_rooms::config::{NamespaceOverrides, StateOptions};
use serde_json::json;

use super::api_config;
use super::common::*;
use super::http::Api;

#[tokio::test]
async fn the_server_api_sets_deletes_and_reads_state_with_cas_and_limits() {
    let mut config = api_config();
    config.rooms.namespaces.insert(
        "board".into(),
        NamespaceOverrides {
            allow: Some(vec!["subscribe".into()]),
            client_publish: Some(false),
            state: Some(StateOptions {
                enabled: true,
                max_keys: 2,
                max_value_bytes: 32,
                max_ttl: Duration::from_secs(60),
                conflate_per_second: 0,
            }),
            ..Default::default()
        },
    );
    let edge = start(config).await;
    let api = Api::new(edge.local_addr());
    let (mut ann, _) = Client::connected(edge.local_addr(), "ann").await;
    ann.subscribe("board:score").await;

    let ok = api
        .post(
            "/v1/api/state/set",
            json!({"room": "board:score", "key": "home", "value": 1, "version": 0}),
        )
        .await
        .ok();
    let v1 = ok["offset"].as_u64().unwrap();
    let (offset, change) = publication(ann.next_push().await);
    assert_eq!((offset, change), (v1, json!({"key": "home", "value": 1})));
    let conflict = api
        .post(
            "/v1/api/state/set",
            json!({"room": "board:score", "key": "home", "value": 2, "version": 0}),
        )
        .await;
    conflict.error(ApiCode::StateConflict);
    assert!(
        conflict.body.contains(&format!("version {v1}")),
        "{}",
        conflict.body
    );
    let state = api.get("/v1/api/rooms/board:score/state").await.ok();
    assert_eq!(
        state["state"],
        json!([{"key": "home", "value": 1, "version": v1}])
    );
    assert_eq!(state["offset"], json!(v1));

    api.post(
        "/v1/api/state/set",
        json!({"room": "board:score", "key": "big", "value": "x".repeat(64)}),
    )
    .await
    .error(ApiCode::MessageTooLarge);
    api.post(
        "/v1/api/state/set",
        json!({"room": "board:score", "key": "t", "value": 1, "ttl": 0}),
    )
    .await
    .error(ApiCode::BadRequest);
    api.post(
        "/v1/api/state/set",
        json!({"room": "board:score", "key": "away", "value": 0}),
    )
    .await
    .ok();
    api.post(
        "/v1/api/state/set",
        json!({"room": "board:score", "key": "third", "value": 0}),
    )
    .await
    .error(ApiCode::LimitExceeded);
    api.post(
        "/v1/api/state/set",
        json!({"room": "chat:x", "key": "k", "value": 0}),
    )
    .await
    .error(ApiCode::NotStateRoom);
    api.post("/v1/api/publish", json!({"room": "board:score", "data": 0}))
        .await
        .error(ApiCode::NotStateRoom);
    api.get("/v1/api/rooms/chat:x/state")
        .await
        .error(ApiCode::NotStateRoom);

    api.post(
        "/v1/api/state/delete",
        json!({"room": "board:score", "key": "home", "version": v1}),
    )
    .await
    .ok();
    let state = api.get("/v1/api/rooms/board:score/state").await.ok();
    let keys: Vec<&str> = state["state"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["away"]);
    edge.shutdown().await;
}
