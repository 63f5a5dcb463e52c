//! A broker tier with faults on purpose, by namespace, around a real [`MemoryBackend`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use plaza_backend::memory::{MemoryBackend, MemoryLink};
use plaza_backend::{AttachOptions, Backend, EdgeLink, LinkEvents};
use plaza_proto::cluster::{
    BrokerError, HistoryPage, PresencePage, PresenceStats, PublishAck, RoomsPage,
};
use plaza_proto::events::{EventFilter, EventsPage, FeedPosition, WebhookClaim};
use plaza_proto::{ClientId, Member, Payload, Position, RoomName, Sender, UserId};

/// A broker tier whose rooms in namespace `down` fail as unavailable, in namespace `blip`
/// fail as unavailable on their first [`BLIPS`] calls (an election's worth) and then serve, in
/// namespace `slow` never answer, and in namespace `boom` panic on `publish` (a handler bug);
/// everything else is a [`MemoryBackend`].
#[derive(Clone)]
pub(crate) struct Flaky(pub(crate) MemoryBackend);

#[derive(Clone)]
pub(crate) struct FlakyLink(MemoryLink, Arc<Mutex<HashMap<String, u32>>>);

/// Calls of a `blip` room that fail before it serves.
pub(crate) const BLIPS: u32 = 3;

impl Backend for Flaky {
    type Link = FlakyLink;

    async fn attach(&self, options: AttachOptions) -> Result<(FlakyLink, LinkEvents), BrokerError> {
        let (link, events) = self.0.attach(options).await?;
        Ok((FlakyLink(link, Arc::default()), events))
    }
}

impl FlakyLink {
    async fn outage(&self, room: &RoomName) -> Result<(), BrokerError> {
        match room.namespace() {
            "down" => Err(BrokerError::Unavailable("test: no quorum".into())),
            "blip" => {
                let mut calls = self.1.lock().unwrap();
                let n = calls.entry(room.to_string()).or_default();
                *n += 1;
                if *n <= BLIPS {
                    Err(BrokerError::Unavailable("test: election".into()))
                } else {
                    Ok(())
                }
            }
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
        self.outage(&room).await?;
        assert_ne!(room.namespace(), "boom", "test: a handler bug in publish");
        self.0.publish(room, data, from, idem).await
    }

    async fn publish_ephemeral(
        &self,
        room: RoomName,
        data: Payload,
        from: Option<Sender>,
    ) -> Result<(), BrokerError> {
        self.outage(&room).await?;
        self.0.publish_ephemeral(room, data, from).await
    }

    async fn join(&self, room: RoomName, member: Member) -> Result<(), BrokerError> {
        if room.namespace() == "blip" {
            self.outage(&room).await?;
        }
        self.0.join(room, member).await
    }

    async fn state_write(
        &self,
        room: RoomName,
        write: plaza_proto::state::StateWrite,
    ) -> Result<plaza_proto::state::StateAck, BrokerError> {
        self.outage(&room).await?;
        self.0.state_write(room, write).await
    }

    async fn state_read(
        &self,
        room: RoomName,
    ) -> Result<plaza_proto::state::StateSnapshot, BrokerError> {
        self.outage(&room).await?;
        self.0.state_read(room).await
    }

    async fn leave(&self, room: RoomName, client: ClientId) -> Result<(), BrokerError> {
        self.0.leave(room, client).await
    }

    async fn presence(
        &self,
        room: RoomName,
        after: Option<ClientId>,
        limit: u32,
    ) -> Result<PresencePage, BrokerError> {
        self.outage(&room).await?;
        self.0.presence(room, after, limit).await
    }

    async fn presence_stats(&self, room: RoomName) -> Result<PresenceStats, BrokerError> {
        self.outage(&room).await?;
        self.0.presence_stats(room).await
    }

    async fn history(
        &self,
        room: RoomName,
        since: Option<Position>,
        limit: Option<u32>,
    ) -> Result<HistoryPage, BrokerError> {
        self.outage(&room).await?;
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
            self.outage(room).await?;
        }
        self.0.rooms(after, limit).await
    }

    async fn events(
        &self,
        since: Option<FeedPosition>,
        limit: u32,
        filter: EventFilter,
    ) -> Result<EventsPage, BrokerError> {
        self.0.events(since, limit, filter).await
    }

    async fn claim_webhooks(
        &self,
        lease: std::time::Duration,
    ) -> Result<WebhookClaim, BrokerError> {
        self.0.claim_webhooks(lease).await
    }

    async fn ack_webhooks(&self, endpoint: String, through: u64) -> Result<(), BrokerError> {
        self.0.ack_webhooks(endpoint, through).await
    }

    async fn close(&self) {
        self.0.close().await
    }
}
