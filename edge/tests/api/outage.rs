//! A broker tier that fails or stalls: every endpoint answers 503 `backend_unavailable` with
//! `Retry-After`, and a broadcast reports it per room.

use std::time::Duration;

use plaza_backend::memory::{MemoryBackend, MemoryLink};
use plaza_backend::{AttachOptions, LinkEvents};
use plaza_backend::{Backend, EdgeLink};
use plaza_edge::api::ApiCode;
use plaza_proto::cluster::{BrokerError, HistoryPage, PresenceStats, PublishAck, RoomsPage};
use plaza_proto::{ClientId, Member, Payload, Position, RoomName, Sender, UserId};
use serde_json::json;

use super::api_config;
use super::http::Api;

/// A broker tier whose rooms in namespace `down` fail as unavailable and in namespace `slow`
/// never answer; everything else is a [`MemoryBackend`].
#[derive(Clone)]
struct Flaky(MemoryBackend);

#[derive(Clone)]
struct FlakyLink(MemoryLink);

impl Backend for Flaky {
    type Link = FlakyLink;

    async fn attach(&self, options: AttachOptions) -> Result<(FlakyLink, LinkEvents), BrokerError> {
        let (link, events) = self.0.attach(options).await?;
        Ok((FlakyLink(link), events))
    }
}

impl FlakyLink {
    async fn outage(room: &RoomName) -> Result<(), BrokerError> {
        match room.namespace() {
            "down" => Err(BrokerError::Unavailable("test: no quorum".into())),
            "slow" => std::future::pending().await,
            _ => Ok(()),
        }
    }
}

impl EdgeLink for FlakyLink {
    async fn publish(
        &self,
        room: RoomName,
        data: Payload,
        from: Option<Sender>,
        idem: Option<String>,
    ) -> Result<PublishAck, BrokerError> {
        Self::outage(&room).await?;
        self.0.publish(room, data, from, idem).await
    }

    async fn join(&self, room: RoomName, member: Member) -> Result<(), BrokerError> {
        self.0.join(room, member).await
    }

    async fn leave(&self, room: RoomName, client: ClientId) -> Result<(), BrokerError> {
        self.0.leave(room, client).await
    }

    async fn presence(&self, room: RoomName) -> Result<Vec<Member>, BrokerError> {
        Self::outage(&room).await?;
        self.0.presence(room).await
    }

    async fn presence_stats(&self, room: RoomName) -> Result<PresenceStats, BrokerError> {
        Self::outage(&room).await?;
        self.0.presence_stats(room).await
    }

    async fn history(
        &self,
        room: RoomName,
        since: Option<Position>,
        limit: Option<u32>,
    ) -> Result<HistoryPage, BrokerError> {
        Self::outage(&room).await?;
        self.0.history(room, since, limit).await
    }

    async fn subscribe(&self, room: RoomName) -> Result<Position, BrokerError> {
        self.0.subscribe(room).await
    }

    async fn unsubscribe(&self, room: RoomName) -> Result<(), BrokerError> {
        self.0.unsubscribe(room).await
    }

    async fn disconnect_user(&self, user: UserId, reason: String) -> Result<(), BrokerError> {
        self.0.disconnect_user(user, reason).await
    }

    async fn rooms(&self, after: Option<RoomName>, limit: u32) -> Result<RoomsPage, BrokerError> {
        if let Some(room) = &after {
            Self::outage(room).await?;
        }
        self.0.rooms(after, limit).await
    }

    async fn close(&self) {
        self.0.close().await
    }
}

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
