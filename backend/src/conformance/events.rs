//! Lifecycle events and the event feed: the debounce rules and the feed's positions.
//!
//! The feed is global (every check of a shared backend writes to it), so each check uses fresh
//! users and rooms and looks only at its own events.

use std::time::Duration;

use plaza_proto::cluster::BrokerError;
use plaza_proto::events::{EventFilter, EventType, FeedPosition, LifecycleEvent};
use plaza_proto::{Member, RoomName, UserId};

use super::support::{WAIT, attach, ok, room, unique};
use super::{EVENT_DEBOUNCE, SLACK};
use crate::{Backend, EdgeLink};

/// The whole feed after `since`, paged through with small pages.
async fn feed_after<L: EdgeLink>(link: &L, since: &FeedPosition) -> Vec<LifecycleEvent> {
    let mut since = since.clone();
    let mut all = Vec::new();
    loop {
        let page = ok(
            link.events(Some(since.clone()), 7, EventFilter::default())
                .await,
            "events",
        );
        assert!(page.recovered, "the feed lost events within its retention");
        all.extend(page.events);
        if page.next == page.latest {
            return all;
        }
        assert!(page.next.seq > since.seq, "a page did not move on");
        since = page.next;
    }
}

/// The feed's latest position now.
async fn latest<L: EdgeLink>(link: &L) -> FeedPosition {
    ok(link.events(None, 1, EventFilter::default()).await, "events").latest
}

/// The types of `user`'s events (and of `room`'s room events) after `since`.
async fn kinds_of<L: EdgeLink>(
    link: &L,
    since: &FeedPosition,
    user: &UserId,
    room: Option<&RoomName>,
) -> Vec<EventType> {
    feed_after(link, since)
        .await
        .into_iter()
        .filter(|e| e.user.as_ref() == Some(user) || (room.is_some() && e.room.as_ref() == room))
        .map(|e| e.kind)
        .collect()
}

/// Waits until `user`'s events after `since` hold `kind` `times` times, then for a debounce
/// longer, and returns them.
async fn kinds_once_settled<L: EdgeLink>(
    link: &L,
    since: &FeedPosition,
    user: &UserId,
    room: Option<&RoomName>,
    (kind, times): (EventType, usize),
) -> Vec<EventType> {
    let deadline = tokio::time::Instant::now() + EVENT_DEBOUNCE + WAIT;
    loop {
        let kinds = kinds_of(link, since, user, room).await;
        if kinds.iter().filter(|k| **k == kind).count() >= times {
            // Anything wrongly emitted after it would come within a debounce.
            tokio::time::sleep(EVENT_DEBOUNCE + SLACK).await;
            return kinds_of(link, since, user, room).await;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {kind} within the debounce plus {WAIT:?}; events so far: {kinds:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tab(user: &UserId) -> Member {
    Member {
        client: plaza_proto::ClientId::new(format!("tab-{}", unique())),
        user: user.clone(),
        info: None,
    }
}

/// A member's new info (a re-join with other info: `presence_update`) emits one
/// `presence.updated` carrying the new info, in namespaces that ask for it (`upd`); a re-join
/// with the same info (a link's resume) emits nothing.
pub async fn a_presence_update_emits_presence_updated_with_the_new_info<B: Backend>(backend: &B) {
    let (link, _events) = attach(backend).await;
    let user = UserId::new(format!("user-{}", unique()));
    let r = room("upd");
    let since = latest(&link).await;
    let first = tab(&user);
    ok(link.join(r.clone(), first.clone()).await, "join");
    ok(
        link.join(r.clone(), first.clone()).await,
        "join again, same info",
    );
    let updated = Member {
        info: Some(super::support::payload(r#"{"status":"away"}"#)),
        ..first
    };
    ok(link.join(r.clone(), updated.clone()).await, "update");
    let deadline = tokio::time::Instant::now() + WAIT;
    let updates = loop {
        let updates: Vec<LifecycleEvent> = feed_after(&link, &since)
            .await
            .into_iter()
            .filter(|e| e.user.as_ref() == Some(&user) && e.kind == EventType::PresenceUpdated)
            .collect();
        if !updates.is_empty() || tokio::time::Instant::now() >= deadline {
            break updates;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(updates.len(), 1, "one presence.updated: {updates:?}");
    assert_eq!(updates[0].info, updated.info, "it carries the new info");
    assert_eq!(updates[0].client.as_ref(), Some(&updated.client));
    assert_eq!(updates[0].room.as_ref(), Some(&r));
    link.close().await;
}

/// Two tabs of one user in two rooms: the user comes online once, and goes offline exactly
/// once, a debounce after the last tab closes (not when the first one does).
pub async fn exactly_one_user_offline_after_the_last_tab_closes<B: Backend>(backend: &B) {
    let (link, _events) = attach(backend).await;
    let user = UserId::new(format!("user-{}", unique()));
    let (a, b) = (room("conf"), room("conf"));
    let since = latest(&link).await;
    let (tab1, tab2) = (tab(&user), tab(&user));
    ok(link.join(a.clone(), tab1.clone()).await, "join tab 1");
    ok(link.join(b.clone(), tab2.clone()).await, "join tab 2");
    ok(link.leave(a, tab1.client).await, "leave tab 1");
    ok(link.leave(b, tab2.client).await, "leave tab 2");
    let kinds = kinds_once_settled(&link, &since, &user, None, (EventType::UserOffline, 1)).await;
    let count = |k| kinds.iter().filter(|x| **x == k).count();
    assert_eq!(count(EventType::UserOnline), 1, "online once: {kinds:?}");
    assert_eq!(count(EventType::UserOffline), 1, "offline once: {kinds:?}");
    assert_eq!(kinds.first(), Some(&EventType::UserOnline), "{kinds:?}");
    link.close().await;
}

/// A reload (the last tab closes, a new one opens inside the debounce) emits neither
/// `user.left`/`user.offline` nor a second `user.joined`/`user.online`.
pub async fn a_reload_inside_the_debounce_emits_no_leave_or_offline<B: Backend>(backend: &B) {
    let (link, _events) = attach(backend).await;
    let user = UserId::new(format!("user-{}", unique()));
    let r = room("conf");
    let since = latest(&link).await;
    let first = tab(&user);
    ok(link.join(r.clone(), first.clone()).await, "join");
    ok(link.leave(r.clone(), first.client).await, "leave (reload)");
    let second = tab(&user);
    ok(link.join(r.clone(), second.clone()).await, "join again");
    tokio::time::sleep(EVENT_DEBOUNCE + SLACK * 2).await;
    let kinds = kinds_of(&link, &since, &user, None).await;
    assert_eq!(
        kinds,
        [EventType::UserOnline, EventType::UserJoined],
        "a reload inside the debounce is invisible"
    );
    ok(link.leave(r, second.client).await, "leave for good");
    let kinds = kinds_once_settled(&link, &since, &user, None, (EventType::UserOffline, 1)).await;
    assert_eq!(
        kinds,
        [
            EventType::UserOnline,
            EventType::UserJoined,
            EventType::UserLeft,
            EventType::UserOffline,
        ]
    );
    link.close().await;
}

/// `room.occupied` and `room.vacated` alternate, starting with occupied; every event's
/// position is one more than the previous one's, and ids are the same on every read.
pub async fn occupied_and_vacated_pair_up_and_positions_strictly_increase<B: Backend>(backend: &B) {
    let (link, _events) = attach(backend).await;
    let user = UserId::new(format!("user-{}", unique()));
    let r = room("conf");
    let since = latest(&link).await;
    for round in 0..2 {
        let member = tab(&user);
        ok(link.join(r.clone(), member.clone()).await, "join");
        ok(link.leave(r.clone(), member.client).await, "leave");
        let kinds = kinds_once_settled(
            &link,
            &since,
            &user,
            Some(&r),
            (EventType::UserOffline, round + 1),
        );
        let rooms: Vec<_> = kinds
            .await
            .into_iter()
            .filter(|k| matches!(k, EventType::RoomOccupied | EventType::RoomVacated))
            .collect();
        let expected: Vec<_> = (0..=round)
            .flat_map(|_| [EventType::RoomOccupied, EventType::RoomVacated])
            .collect();
        assert_eq!(rooms, expected, "round {round}");
    }
    let all = feed_after(&link, &since).await;
    for pair in all.windows(2) {
        assert_eq!(
            pair[1].position.seq,
            pair[0].position.seq + 1,
            "positions must increase by one: {:?} then {:?}",
            pair[0].position,
            pair[1].position
        );
        assert_eq!(pair[0].position.epoch, pair[1].position.epoch);
    }
    assert_eq!(
        feed_after(&link, &since).await,
        all,
        "a second read is the same"
    );
    link.close().await;
}

/// A position the feed has not reached is refused; one of another epoch is answered from the
/// oldest retained event with `recovered: false`; filters apply.
pub async fn the_feed_refuses_future_positions_and_flags_other_epochs<B: Backend>(backend: &B) {
    let (link, _events) = attach(backend).await;
    let user = UserId::new(format!("user-{}", unique()));
    let r = room("conf");
    ok(link.join(r.clone(), tab(&user)).await, "join");
    let now = latest(&link).await;
    let future = FeedPosition {
        epoch: now.epoch.clone(),
        seq: now.seq + 1_000_000,
    };
    match link.events(Some(future), 10, EventFilter::default()).await {
        Err(BrokerError::Invalid(_)) => {}
        other => panic!("a future position must be refused as invalid, got {other:?}"),
    }
    let other = FeedPosition {
        epoch: format!("not-{}", now.epoch),
        seq: 1,
    };
    let page = ok(
        link.events(Some(other), 10, EventFilter::default()).await,
        "events from another epoch",
    );
    assert!(!page.recovered, "another epoch cannot be recovered");
    let filter = EventFilter {
        types: vec![EventType::UserJoined],
        namespace: Some("conf".into()),
    };
    let page = ok(link.events(None, 1000, filter).await, "filtered events");
    assert!(
        page.events.iter().all(|e| e.kind == EventType::UserJoined
            && e.room.as_ref().is_some_and(|r| r.namespace() == "conf")),
        "the filter applies"
    );
    link.close().await;
}
