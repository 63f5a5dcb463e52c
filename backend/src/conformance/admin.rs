//! Checks of the operations behind the server HTTP API: disconnecting a user on every edge and
//! listing the active rooms.

use plaza_proto::cluster::RoomInfo;
use plaza_proto::{RoomName, UserId};

use super::support::{
    QUIET, WAIT, attach, data, member, next, next_disconnect, ok, publication, room, unique,
};
use crate::{Backend, EdgeLink};

fn user() -> String {
    format!("user-{}", unique())
}

/// `disconnect_user` reaches the stream of every attached edge — the caller's and one that
/// subscribed to nothing alike — exactly once, carries the reason, and leaves room events
/// flowing as before.
pub async fn a_user_disconnect_reaches_every_attached_edge_once<B: Backend>(backend: &B) {
    let (caller, mut caller_events) = attach(backend).await;
    let (other, mut other_events) = attach(backend).await;
    let target = room("conf");
    ok(caller.subscribe(target.clone()).await, "subscribe");
    let banned = UserId::new(user());
    ok(
        caller
            .disconnect_user(banned.clone(), "banned by an admin".into())
            .await,
        "disconnect_user",
    );
    for (events, who) in [
        (&mut caller_events, "the calling edge"),
        (&mut other_events, "an edge subscribed to nothing"),
    ] {
        let reason = next_disconnect(events, &banned, WAIT, who).await;
        assert_eq!(
            reason.as_deref(),
            Some("banned by an admin"),
            "{who} must receive the disconnect with its reason"
        );
        let again = next_disconnect(events, &banned, QUIET, who).await;
        assert_eq!(again, None, "{who} must receive the disconnect only once");
    }
    ok(
        other
            .disconnect_user(UserId::new(user()), "unrelated".into())
            .await,
        "disconnecting a user with no connections",
    );
    ok(
        other
            .publish(target.clone(), data(1), None, None)
            .await
            .map(|_| ()),
        "publish",
    );
    let event = next(&mut caller_events, "a publication after the disconnect").await;
    assert_eq!(event.room, target, "room events keep flowing");
    publication(event, "the publication after the disconnect");
}

/// `rooms` lists active rooms (members or history) in name order with exact member and user
/// counts, skips vacant ones, and pages with the `next` cursor without skipping or repeating.
pub async fn rooms_are_listed_in_name_order_with_counts_and_paginated<B: Backend>(backend: &B) {
    let (a, _a_events) = attach(backend).await;
    let (b, _b_events) = attach(backend).await;
    // Every room of this check shares a fresh prefix, so on a shared backend they are
    // adjacent in name order and the prefix itself is a cursor just before them.
    let prefix = format!("conf:{}", unique());
    let named = |suffix: &str| {
        let name = format!("{prefix}-{suffix}");
        RoomName::new(&name).unwrap_or_else(|e| panic!("suite bug: room name {name:?}: {e}"))
    };
    let (crowded, logged, mixed, vacant) = (named("a"), named("b"), named("c"), named("d"));
    let (u1, u2) = (user(), user());
    for (link, m) in [
        (&a, member(&u1, None)),
        (&b, member(&u1, None)),
        (&b, member(&u2, None)),
    ] {
        ok(link.join(crowded.clone(), m).await, "join");
    }
    let logged_at = ok(
        a.publish(logged.clone(), data(0), None, None).await,
        "publish",
    );
    ok(b.join(mixed.clone(), member(&u2, None)).await, "join");
    let mixed_at = ok(
        a.publish(mixed.clone(), data(1), None, None).await,
        "publish",
    );
    let leaving = member(&u1, None);
    ok(a.join(vacant.clone(), leaving.clone()).await, "join");
    ok(a.leave(vacant.clone(), leaving.client).await, "leave");

    let start = RoomName::new(&prefix).unwrap_or_else(|e| panic!("suite bug: {e}"));
    let first = ok(a.rooms(Some(start.clone()), 2).await, "rooms");
    let names: Vec<&RoomName> = first.rooms.iter().map(|r| &r.room).collect();
    assert_eq!(
        names,
        [&crowded, &logged],
        "a page holds `limit` rooms in name order"
    );
    assert_eq!(
        first.next.as_ref(),
        Some(&logged),
        "the cursor is the page's last room while more follow"
    );
    let counts = |r: &RoomInfo| (r.clients, r.users);
    assert_eq!(
        counts(&first.rooms[0]),
        (3, 2),
        "one user on two edges plus another user"
    );
    assert_eq!(
        counts(&first.rooms[1]),
        (0, 0),
        "a room with history only is active"
    );
    assert_eq!(first.rooms[1].offset, logged_at.position.offset);

    let second = ok(b.rooms(first.next.clone(), 2).await, "rooms");
    let Some(head) = second.rooms.first() else {
        panic!("the second page must start with {mixed}, got an empty page")
    };
    assert_eq!(
        head.room, mixed,
        "the next page starts right after the cursor"
    );
    assert_eq!(counts(head), (1, 1));
    assert_eq!(head.offset, mixed_at.position.offset, "the latest offset");
    assert!(
        second.rooms.iter().all(|r| r.room != vacant),
        "a room whose members all left and that has no history is not active"
    );
    for page in [&first, &second] {
        assert!(
            page.rooms.windows(2).all(|w| w[0].room < w[1].room),
            "pages are sorted by name: {:?}",
            page.rooms
        );
        if page.next.is_none() {
            continue;
        }
        assert_eq!(
            page.next.as_ref(),
            page.rooms.last().map(|r| &r.room),
            "the cursor is the last listed room"
        );
    }
}
