//! A live subscriber's duplicate filter, across the epoch changes the hub's shared epoch
//! copy has to follow.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use plaza_proto::cluster::{RoomEvent, RoomEventKind};
use plaza_proto::{Payload, Position, Publication, RoomName};

use super::Hub;
use crate::outbox::{Flushes, Outbox};

fn room() -> RoomName {
    RoomName::new("chat:epochs").unwrap()
}

fn publication(epoch: &str, offset: u64) -> RoomEvent {
    RoomEvent {
        room: room(),
        epoch: epoch.into(),
        kind: RoomEventKind::Publication(Publication {
            offset,
            data: Payload::from_json("1").unwrap(),
            from: None,
        }),
    }
}

/// A live subscriber at `epoch`/`offset` and its outbox.
fn live_subscriber(hub: &Hub, session: u64, epoch: &str, offset: u64) -> Arc<Outbox> {
    let outbox = Outbox::new(1 << 20);
    hub.register(&room(), session, outbox.clone(), false, false);
    let at = Position {
        epoch: epoch.into(),
        offset,
    };
    assert!(hub.activate(&room(), session, Utf8Bytes::from_static("{}"), &at));
    outbox
}

/// Dispatches `event`; whether it reached `outbox`.
fn delivered(hub: &Hub, outbox: &Outbox, event: RoomEvent) -> bool {
    let before = outbox.queued_bytes();
    let mut flushes = Flushes::default();
    hub.dispatch(event, &mut flushes);
    flushes.run();
    outbox.queued_bytes() > before
}

#[test]
fn a_subscriber_follows_a_restarted_log_and_still_drops_repeats() {
    let hub = Hub::new();
    let outbox = live_subscriber(&hub, 1, "e1", 5);
    assert!(!delivered(&hub, &outbox, publication("e1", 5)), "seen");
    assert!(delivered(&hub, &outbox, publication("e1", 6)));
    // The room's log was lost and started over in another epoch: offsets restart.
    assert!(delivered(&hub, &outbox, publication("e2", 1)));
    assert!(!delivered(&hub, &outbox, publication("e2", 1)), "a repeat");
    assert!(delivered(&hub, &outbox, publication("e2", 2)));
    // A subscriber that joined in the new epoch, and the room's position, share it.
    let late = live_subscriber(&hub, 2, "e2", 2);
    assert!(!delivered(&hub, &late, publication("e2", 2)));
    assert!(delivered(&hub, &late, publication("e2", 3)));
    let at = hub.register(&room(), 3, Outbox::new(1 << 20), false, false);
    assert_eq!(
        at,
        Some(Position {
            epoch: "e2".into(),
            offset: 3
        })
    );
}

#[test]
fn rooms_and_subscribers_share_one_copy_of_the_epoch() {
    let hub = Hub::new();
    let _a = live_subscriber(&hub, 1, "e1", 0);
    let mut flushes = Flushes::default();
    hub.dispatch(publication("e1", 1), &mut flushes);
    flushes.run();
    // The hub's copy, the room's position and the subscriber's filter: one string.
    let shared = hub.shared.epoch("e1");
    assert_eq!(Arc::strong_count(&shared), 4);
}
