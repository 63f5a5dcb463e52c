//! `POST /v1/api/publish_ephemeral`, observed through WebSocket clients.

use plaza_edge::api::ApiCode;
use plaza_proto::client::Push;
use plaza_rooms::config::{EphemeralMode, NamespaceOverrides};
use serde_json::json;

use super::api_config;
use super::common::*;
use super::http::Api;

#[tokio::test]
async fn ephemeral_server_publications_reach_subscribers_without_offset_and_are_not_stored() {
    let mut config = api_config();
    config.rooms.namespaces.insert(
        "durable".into(),
        NamespaceOverrides {
            ephemeral: Some(EphemeralMode::Off),
            allow: Some(vec!["subscribe".into()]),
            ..Default::default()
        },
    );
    config.limits.ephemeral_per_second_per_room = 1;
    config.limits.ephemeral_burst_per_room = 3;
    let edge = start(config).await;
    let api = Api::new(edge.local_addr());
    let (mut ann, _) = Client::connected(edge.local_addr(), "ann").await;
    ann.subscribe("server:score").await;

    let ok = api
        .post(
            "/v1/api/publish_ephemeral",
            json!({"room": "server:score", "data": {"home": 3}}),
        )
        .await
        .ok();
    assert_eq!(ok, json!({}));
    let Push::Ephemeral(e) = ann.next_push().await else {
        panic!("expected an ephemeral push")
    };
    assert_eq!(e.data.as_str(), r#"{"home":3}"#);
    assert!(e.from.is_none(), "server publications have no sender");
    let history = api.get("/v1/api/rooms/server:score/history").await.ok();
    assert_eq!(history["publications"], json!([]), "{history}");

    // Refusals: a namespace without ephemeral publications, the room's rate, bad bodies.
    api.post(
        "/v1/api/publish_ephemeral",
        json!({"room": "durable:x", "data": 1}),
    )
    .await
    .error(ApiCode::PublishDisabled);
    let mut limited = None;
    for i in 0..10 {
        let r = api
            .post(
                "/v1/api/publish_ephemeral",
                json!({"room": "server:score", "data": i}),
            )
            .await;
        if r.status != 200 {
            limited = Some(r);
            break;
        }
    }
    let limited = limited.expect("10 publishes passed a room burst of 3");
    limited.error(ApiCode::RateLimited);
    assert_eq!(limited.header("retry-after"), Some("1"));
    api.post(
        "/v1/api/publish_ephemeral",
        json!({"room": "server:score", "data": 1, "idem": "k"}),
    )
    .await
    .error(ApiCode::BadRequest);
    edge.shutdown().await;
}
