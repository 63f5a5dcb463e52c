//! A broker tier that fails or stalls: every endpoint answers 503 `backend_unavailable` with
//! `Retry-After`, and a broadcast reports it per room; one unavailable only for a moment (an
//! election) is waited out for the calls that are safe to repeat.

use std::time::Duration;

use plaza_backend::memory::MemoryBackend;
use plaza_edge::api::ApiCode;
use serde_json::json;

use super::common::faulty::{BLIPS, Flaky};

use super::api_config;
use super::http::Api;

#[tokio::test]
async fn an_unavailable_or_silent_broker_tier_is_a_503_with_retry_after() {
    let mut config = api_config();
    config.broker.call_timeout = Duration::from_millis(200);
    let backend = Flaky(MemoryBackend::new(config.rooms.clone()));
    let edge = plaza_edge::start(config, backend, None).await.unwrap();
    let api = Api::new(edge.local_addr());
    for room in ["down:x", "slow:x"] {
        let requests = [
            api.post("/v1/api/publish", json!({"room": room, "data": 1}))
                .await,
            api.get(&format!("/v1/api/rooms/{room}/presence")).await,
            api.get(&format!("/v1/api/rooms/{room}/presence_stats"))
                .await,
            api.get(&format!("/v1/api/rooms/{room}/history")).await,
            api.get(&format!("/v1/api/rooms?after={room}")).await,
        ];
        for r in requests {
            r.error(ApiCode::BackendUnavailable);
            assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
        }
    }
    let ok = api
        .post(
            "/v1/api/broadcast",
            json!({"rooms": ["chat:up", "down:x", "slow:x"], "data": 1}),
        )
        .await
        .ok();
    let codes: Vec<&str> = ok["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["error"]["code"].as_str().unwrap_or("ok"))
        .collect();
    assert_eq!(
        codes,
        ["ok", "backend_unavailable", "backend_unavailable"],
        "{ok}"
    );
    edge.shutdown().await;
}

#[tokio::test]
async fn a_moment_of_unavailability_is_retried_for_calls_safe_to_repeat_only() {
    let mut config = api_config();
    config.broker.retry_unavailable_for = Duration::from_secs(2);
    let backend = Flaky(MemoryBackend::new(config.rooms.clone()));
    let edge = plaza_edge::start(config, backend, None).await.unwrap();
    let api = Api::new(edge.local_addr());

    // Reads and a publish with an idempotency key wait the blip out.
    api.get("/v1/api/rooms/blip:read/history").await.ok();
    api.get("/v1/api/rooms/blip:who/presence").await.ok();
    let ok = api
        .post(
            "/v1/api/publish",
            json!({"room": "blip:idem", "data": 1, "idem": "k-1"}),
        )
        .await
        .ok();
    assert_eq!(ok["offset"], json!(1), "published once: {ok}");
    // A publish without one is not repeated: its outcome would be unknown to the caller.
    api.post("/v1/api/publish", json!({"room": "blip:plain", "data": 1}))
        .await
        .error(ApiCode::BackendUnavailable);
    let history = api.get("/v1/api/rooms/blip:plain/history").await.ok();
    assert_eq!(history["publications"], json!([]), "{history}");
    edge.shutdown().await;

    // With retries off, the first answer stands.
    let mut config = api_config();
    config.broker.retry_unavailable_for = Duration::ZERO;
    let backend = Flaky(MemoryBackend::new(config.rooms.clone()));
    let edge = plaza_edge::start(config, backend, None).await.unwrap();
    let api = Api::new(edge.local_addr());
    for _ in 0..BLIPS {
        api.get("/v1/api/rooms/blip:read/history")
            .await
            .error(ApiCode::BackendUnavailable);
    }
    api.get("/v1/api/rooms/blip:read/history").await.ok();
    edge.shutdown().await;
}
