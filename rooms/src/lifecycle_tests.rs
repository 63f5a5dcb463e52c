//! Unit tests of lifecycle events: the debounce, the feed's positions and reads, retention.

use std::time::Duration;

use plaza_proto::events::{EventFilter, EventType, FeedPosition, LifecycleEvent};

use super::support::*;
use super::*;
use crate::config::NamespaceOverrides;

const DEBOUNCE_MS: u64 = 3_000;

fn feed(s: &Sim) -> Vec<LifecycleEvent> {
    s.rooms
        .events(None, u32::MAX, &EventFilter::default())
        .unwrap()
        .events
}

/// `(type, room, user)` of every event in the feed, oldest first.
fn summary(s: &Sim) -> Vec<(EventType, String, String)> {
    feed(s)
        .into_iter()
        .map(|e| {
            (
                e.kind,
                e.room.map(|r| r.as_str().to_owned()).unwrap_or_default(),
                e.user.map(|u| u.as_str().to_owned()).unwrap_or_default(),
            )
        })
        .collect()
}

fn fp(seq: u64) -> FeedPosition {
    FeedPosition {
        epoch: INSTANCE.to_owned(),
        seq,
    }
}

fn ev(kind: EventType, room: &str, user: &str) -> (EventType, String, String) {
    (kind, room.to_owned(), user.to_owned())
}

#[test]
fn the_first_connection_makes_the_user_online_and_the_room_occupied() {
    let mut s = Sim::new();
    s.attach("e");
    s.join("e", "chat:a", "c1", "u").unwrap();
    s.join("e", "chat:a", "c2", "u").unwrap();
    assert_eq!(
        summary(&s),
        [
            ev(EventType::UserOnline, "", "u"),
            ev(EventType::RoomOccupied, "chat:a", ""),
            ev(EventType::UserJoined, "chat:a", "u"),
        ]
    );
}

#[test]
fn the_last_tab_closing_emits_left_vacated_and_offline_once_after_the_debounce() {
    let mut s = Sim::new();
    s.attach("e");
    s.join("e", "chat:a", "c1", "u").unwrap();
    s.join("e", "chat:a", "c2", "u").unwrap();
    s.leave("chat:a", "c1");
    s.leave("chat:a", "c2");
    s.advance(DEBOUNCE_MS - 1);
    s.tick();
    assert_eq!(feed(&s).len(), 3, "nothing before the debounce is over");
    s.advance(1);
    s.tick();
    s.advance(60_000);
    s.tick();
    assert_eq!(
        summary(&s)[3..],
        [
            ev(EventType::UserLeft, "chat:a", "u"),
            ev(EventType::RoomVacated, "chat:a", ""),
            ev(EventType::UserOffline, "", "u"),
        ]
    );
}

#[test]
fn a_reload_inside_the_debounce_emits_nothing() {
    let mut s = Sim::new();
    s.attach_for("e", 1_000_000);
    s.join("e", "chat:a", "c1", "u").unwrap();
    s.leave("chat:a", "c1");
    s.advance(DEBOUNCE_MS - 1);
    s.tick();
    s.join("e", "chat:a", "c2", "u").unwrap();
    s.advance(60_000);
    s.tick();
    assert_eq!(feed(&s).len(), 3);
}

#[test]
fn a_user_moving_between_rooms_stays_online() {
    let mut s = Sim::new();
    s.attach("e");
    s.join("e", "chat:a", "c1", "u").unwrap();
    s.join("e", "chat:b", "c1", "u").unwrap();
    s.leave("chat:a", "c1");
    s.advance(DEBOUNCE_MS);
    s.tick();
    let kinds: Vec<_> = feed(&s).into_iter().map(|e| e.kind).collect();
    assert!(!kinds.contains(&EventType::UserOffline));
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == EventType::RoomVacated)
            .count(),
        1
    );
}

#[test]
fn an_expired_edge_lease_takes_its_users_offline_after_the_debounce() {
    let mut s = Sim::new();
    s.attach("e");
    s.join("e", "chat:a", "c1", "u").unwrap();
    s.advance(LEASE_MS);
    s.tick();
    s.advance(DEBOUNCE_MS);
    s.tick();
    let kinds: Vec<_> = feed(&s).into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds.last(), Some(&EventType::UserOffline));
}

#[test]
fn positions_increase_by_one_and_ids_are_stable() {
    let mut s = Sim::new();
    s.attach("e");
    for i in 0..5 {
        s.join("e", &format!("chat:r{i}"), &format!("c{i}"), "u")
            .unwrap();
    }
    let events = feed(&s);
    let seqs: Vec<u64> = events.iter().map(|e| e.position.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(events[0].id(), format!("{INSTANCE}:1"));
    assert_eq!(feed(&s), events, "reading again gives the same events");
}

#[test]
fn reads_page_filter_and_refuse_future_positions() {
    let mut s = Sim::new();
    s.attach("e");
    s.join("e", "chat:a", "c1", "u").unwrap();
    s.join("e", "quiet:b", "c2", "v").unwrap();
    let all = EventFilter::default();
    let page = s.rooms.events(Some(&fp(1)), 2, &all).unwrap();
    assert_eq!(page.events.len(), 2);
    assert_eq!(page.next, fp(3));
    assert_eq!(page.latest.seq, feed(&s).len() as u64);
    assert!(page.recovered);
    let ns = EventFilter {
        types: vec![],
        namespace: Some("quiet".into()),
    };
    let page = s.rooms.events(None, 100, &ns).unwrap();
    assert!(page.events.iter().all(|e| e.room == Some(room("quiet:b"))));
    assert_eq!(page.next, page.latest, "a filtered read still moves on");
    let latest = page.latest.seq;
    assert_eq!(
        s.rooms.events(Some(&fp(latest + 1)), 10, &all),
        Err(RoomsError::FutureEventPosition {
            asked: latest + 1,
            latest
        })
    );
    let other_epoch = FeedPosition {
        epoch: "other".into(),
        seq: 99,
    };
    let page = s.rooms.events(Some(&other_epoch), 100, &all).unwrap();
    assert!(!page.recovered);
    assert_eq!(page.events.len() as u64, latest);
}

#[test]
fn events_past_the_retention_are_dropped_and_a_read_from_before_says_so() {
    let mut config = config();
    config.events.retention = Duration::from_secs(10);
    config.events.max_retained = 4;
    let mut s = Sim::with_config(&config);
    s.attach_for("e", 1_000_000);
    s.join("e", "chat:a", "c1", "u").unwrap();
    s.join("e", "chat:b", "c2", "u").unwrap();
    let page = s.rooms.events(None, 100, &EventFilter::default()).unwrap();
    assert!(!page.recovered, "5 events, 4 kept");
    assert_eq!(page.events.first().map(|e| e.position.seq), Some(2));
    s.advance(11_000);
    s.tick();
    let page = s.rooms.events(Some(&fp(5)), 100, &EventFilter::default());
    assert!(
        page.unwrap().recovered,
        "the latest position is always fine"
    );
    let page = s.rooms.events(Some(&fp(4)), 100, &EventFilter::default());
    assert!(!page.unwrap().recovered);
}

#[test]
fn namespaces_choose_their_events_and_member_events_are_opt_in() {
    let mut config = config();
    config.namespaces.insert(
        "members".into(),
        NamespaceOverrides {
            events: Some(vec![EventType::MemberJoined, EventType::MemberLeft]),
            ..Default::default()
        },
    );
    config.events.user_online = false;
    let mut s = Sim::with_config(&config);
    s.attach("e");
    s.join("e", "members:a", "c1", "u").unwrap();
    s.leave("members:a", "c1");
    s.advance(DEBOUNCE_MS);
    s.tick();
    let kinds: Vec<_> = feed(&s).into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventType::MemberJoined, EventType::MemberLeft]);
}

#[test]
fn a_zero_debounce_emits_at_once() {
    let mut config = config();
    config.events.debounce = Duration::ZERO;
    let mut s = Sim::with_config(&config);
    s.attach("e");
    s.join("e", "chat:a", "c1", "u").unwrap();
    s.leave("chat:a", "c1");
    assert_eq!(feed(&s).len(), 6);
}

#[test]
fn a_restored_snapshot_fires_the_same_pending_events() {
    let mut s = Sim::new();
    s.attach("e");
    s.join("e", "chat:a", "c1", "u").unwrap();
    s.leave("chat:a", "c1");
    let mut restored = Sim {
        rooms: Rooms::from_state(&config(), s.rooms.state().clone()),
        now: s.now,
    };
    for sim in [&mut s, &mut restored] {
        sim.advance(DEBOUNCE_MS);
        sim.tick();
    }
    assert_eq!(feed(&s), feed(&restored));
    assert_eq!(feed(&s).len(), 6);
}

#[test]
fn a_state_snapshotted_before_lifecycle_events_restores_with_an_empty_feed() {
    let mut s = Sim::new();
    s.publish("chat:a");
    s.publish("chat:b");
    let state = s.rooms.state().clone();
    let bytes = postcard::to_stdvec(&state).unwrap();
    // The old layout is the same without the three trailing fields, which encode as 10 bytes
    // when empty (lifecycle: seq, feed, online, pending, deadlines; webhooks: holder, cursors;
    // state maps: maps, expiry, tied).
    let v1 = &bytes[..bytes.len() - 10];
    let old: RoomsStateV1 = postcard::from_bytes(v1).unwrap();
    assert_eq!(RoomsState::from(old), state);
}
