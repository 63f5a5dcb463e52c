//! Presence checks (guarantee 5).

use std::collections::BTreeSet;
use std::time::Instant;

use plaza_proto::cluster::{BrokerError, LinkEvent, PresenceStats, RoomEventKind};
use plaza_proto::{ClientId, Member};

use super::support::{WAIT, attach, member, next, next_within, ok, quiet, room, unique};
use super::{LEASE, SLACK};
use crate::{Backend, EdgeLink};

fn by_client(mut members: Vec<Member>) -> Vec<Member> {
    members.sort_by(|a, b| a.client.cmp(&b.client));
    members
}

fn user() -> String {
    format!("user-{}", unique())
}

/// The client of a leave event, which the next event must be.
fn left(kind: RoomEventKind, expecting: &str) -> ClientId {
    match kind {
        RoomEventKind::Leave(m) => m.client,
        other => panic!("expected a leave event ({expecting}), got {other:?}"),
    }
}

/// Guarantee 5: presence lists every member with its info, and `presence_stats` counts
/// clients and distinct users exactly across edges and tabs.
pub async fn presence_lists_members_and_counts_users_across_edges<B: Backend>(backend: &B) {
    let (a, _a_events) = attach(backend).await;
    let (b, _b_events) = attach(backend).await;
    let target = room("conf");
    let (u1, u2) = (user(), user());
    let members = [
        (&a, member(&u1, Some(r#"{"name":"Ada","tab":1}"#))),
        (&a, member(&u1, None)),
        (&b, member(&u1, Some(r#"{"tab":3}"#))),
        (&b, member(&u2, Some("[1,2]"))),
    ];
    for (link, m) in &members {
        ok(link.join(target.clone(), m.clone()).await, "join");
    }
    let listed = by_client(ok(
        a.presence(target.clone(), None, u32::MAX)
            .await
            .map(|p| p.members),
        "presence",
    ));
    let expected = by_client(members.iter().map(|(_, m)| m.clone()).collect());
    assert_eq!(
        listed, expected,
        "presence must list every member of every edge, with info"
    );
    let stats = ok(b.presence_stats(target).await, "presence_stats");
    assert_eq!(
        stats,
        PresenceStats {
            clients: 4,
            users: 2
        },
        "one user on three clients"
    );
}

/// Presence is read in pages: client id order, at most `limit` members each, `next` on every
/// page but the last, and the pages together list every member exactly once, whichever edge
/// holds them.
pub async fn presence_pages_list_every_member_once_in_client_id_order<B: Backend>(backend: &B) {
    let (a, _a_events) = attach(backend).await;
    let (b, _b_events) = attach(backend).await;
    let target = room("conf");
    let mut joined = Vec::new();
    for i in 0..7 {
        let m = member(&user(), None);
        let link = if i % 2 == 0 { &a } else { &b };
        ok(link.join(target.clone(), m.clone()).await, "join");
        joined.push(m);
    }
    let mut listed = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = ok(a.presence(target.clone(), after, 3).await, "presence page");
        assert!(page.members.len() <= 3, "a page longer than its limit");
        pages += 1;
        listed.extend(page.members);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
        assert!(pages < 10, "pages never end");
    }
    assert_eq!(pages, 3, "7 members in pages of 3");
    assert_eq!(
        listed,
        by_client(joined),
        "the pages list every member once, in client id order"
    );
}

/// Joining again with the same client and the same info (a link's resume) changes nothing
/// and announces nothing; with new info (`presence_update`) it replaces the info and announces
/// one `PresenceUpdate` with the member as it is now, to every subscribed edge.
pub async fn rejoining_replaces_the_info_and_announces_only_a_change<B: Backend>(backend: &B) {
    let (link, mut events) = attach(backend).await;
    let (other, mut other_events) = attach(backend).await;
    let target = room("conf");
    ok(link.subscribe(target.clone()).await, "subscribe");
    ok(other.subscribe(target.clone()).await, "subscribe");
    let first = member(&user(), Some(r#"{"v":1}"#));
    ok(link.join(target.clone(), first.clone()).await, "join");
    next(&mut events, "the join event").await;
    next(&mut other_events, "the join event").await;
    ok(link.join(target.clone(), first.clone()).await, "join again");
    quiet(
        &mut events,
        "rejoining with the same info must emit nothing",
    )
    .await;
    let second = Member {
        info: Some(super::support::payload(r#"{"v":2}"#)),
        ..first
    };
    ok(
        link.join(target.clone(), second.clone()).await,
        "join with new info",
    );
    for (events, which) in [
        (&mut events, "this edge"),
        (&mut other_events, "another edge"),
    ] {
        match next(events, "the update event").await.kind {
            RoomEventKind::PresenceUpdate(m) => assert_eq!(m, second, "{which}"),
            other => panic!("expected an update event on {which}, got {other:?}"),
        }
    }
    quiet(&mut events, "one update, no join").await;
    assert_eq!(
        ok(
            link.presence(target, None, u32::MAX)
                .await
                .map(|p| p.members),
            "presence"
        ),
        [second],
        "the info is replaced"
    );
}

/// `counts` presence: members are counted but not listed and not announced.
pub async fn counts_presence_counts_members_without_listing_them<B: Backend>(backend: &B) {
    let (link, mut events) = attach(backend).await;
    let target = room("counts");
    ok(link.subscribe(target.clone()).await, "subscribe");
    let (u1, u2) = (user(), user());
    let tab = member(&u1, None);
    for m in [tab.clone(), member(&u1, None), member(&u2, None)] {
        ok(link.join(target.clone(), m).await, "join");
    }
    match link
        .presence(target.clone(), None, u32::MAX)
        .await
        .map(|p| p.members)
    {
        Err(BrokerError::PresenceDisabled { namespace }) => assert_eq!(namespace, "counts"),
        other => panic!("presence in a counts namespace must fail, got {other:?}"),
    }
    let stats = ok(link.presence_stats(target.clone()).await, "presence_stats");
    assert_eq!(
        stats,
        PresenceStats {
            clients: 3,
            users: 2
        }
    );
    ok(link.leave(target.clone(), tab.client).await, "leave");
    let stats = ok(link.presence_stats(target).await, "presence_stats");
    assert_eq!(
        stats,
        PresenceStats {
            clients: 2,
            users: 2
        }
    );
    quiet(&mut events, "a counts namespace emits no join/leave events").await;
}

/// Presence `off`: joins and presence queries fail with `PresenceDisabled`.
pub async fn presence_off_refuses_joins<B: Backend>(backend: &B) {
    let (link, _events) = attach(backend).await;
    let target = room("nopres");
    let refused = |r: &Result<_, BrokerError>| matches!(r, Err(BrokerError::PresenceDisabled { namespace }) if namespace == "nopres");
    let joined = link.join(target.clone(), member(&user(), None)).await;
    assert!(
        refused(&joined),
        "join with presence off must fail, got {joined:?}"
    );
    let listed = link
        .presence(target.clone(), None, u32::MAX)
        .await
        .map(|p| p.members);
    assert!(
        refused(&listed.map(|_| ())),
        "presence with presence off must fail"
    );
    let stats = link.presence_stats(target).await;
    assert!(
        refused(&stats.map(|_| ())),
        "presence_stats with presence off must fail"
    );
}

/// `join_leave = false`: presence works, no events are emitted.
pub async fn quiet_namespace_tracks_presence_without_events<B: Backend>(backend: &B) {
    let (link, mut events) = attach(backend).await;
    let target = room("quiet");
    ok(link.subscribe(target.clone()).await, "subscribe");
    let m = member(&user(), None);
    ok(link.join(target.clone(), m.clone()).await, "join");
    let listed = ok(
        link.presence(target.clone(), None, u32::MAX)
            .await
            .map(|p| p.members),
        "presence",
    );
    assert_eq!(
        listed,
        std::slice::from_ref(&m),
        "a quiet namespace still lists members"
    );
    ok(link.leave(target.clone(), m.client).await, "leave");
    assert!(
        ok(
            link.presence(target, None, u32::MAX)
                .await
                .map(|p| p.members),
            "presence"
        )
        .is_empty(),
        "the member left"
    );
    quiet(&mut events, "a quiet namespace emits no join/leave events").await;
}

/// Guarantee 5: `leave` removes the member and emits its leave event at once; leaving an
/// unknown client, or another edge's member, is a silent no-op.
pub async fn leave_emits_a_leave_event_at_once<B: Backend>(backend: &B) {
    let (watcher, mut events) = attach(backend).await;
    let (actor, _actor_events) = attach(backend).await;
    let target = room("conf");
    ok(watcher.subscribe(target.clone()).await, "subscribe");
    let m = member(&user(), None);
    ok(actor.join(target.clone(), m.clone()).await, "join");
    next(&mut events, "the join event").await;
    // An edge removes only its own members: another edge's leave is ignored.
    ok(
        watcher.leave(target.clone(), m.client.clone()).await,
        "leave another edge's member",
    );
    quiet(&mut events, "leaving another edge's member emits nothing").await;
    assert_eq!(
        ok(
            watcher
                .presence(target.clone(), None, u32::MAX)
                .await
                .map(|p| p.members),
            "presence"
        )
        .len(),
        1,
        "another edge removed a member it does not own"
    );
    let start = Instant::now();
    ok(actor.leave(target.clone(), m.client.clone()).await, "leave");
    let gone = left(
        next_within(&mut events, LEASE / 2, "the leave").await.kind,
        "leave",
    );
    assert_eq!(gone, m.client);
    assert!(
        start.elapsed() < LEASE / 2,
        "a leave must not wait for a lease"
    );
    assert!(
        ok(
            watcher
                .presence(target.clone(), None, u32::MAX)
                .await
                .map(|p| p.members),
            "presence"
        )
        .is_empty()
    );
    ok(
        actor
            .leave(target, ClientId::new(format!("nobody-{}", unique())))
            .await,
        "leave unknown",
    );
    quiet(&mut events, "leaving an unknown client emits nothing").await;
}

/// Guarantee 5: closing a link removes all its members at once (not at lease expiry), ends its
/// stream, and makes its later calls fail.
pub async fn closing_a_link_removes_its_members_at_once<B: Backend>(backend: &B) {
    let (watcher, mut events) = attach(backend).await;
    let (actor, mut actor_events) = attach(backend).await;
    let target = room("conf");
    ok(watcher.subscribe(target.clone()).await, "subscribe");
    let members = [member(&user(), None), member(&user(), None)];
    for m in &members {
        ok(actor.join(target.clone(), m.clone()).await, "join");
        next(&mut events, "a join event").await;
    }
    let start = Instant::now();
    actor.close().await;
    let mut gone = BTreeSet::new();
    for _ in &members {
        gone.insert(left(
            next_within(&mut events, LEASE / 2, "leave").await.kind,
            "close",
        ));
    }
    let expected: BTreeSet<ClientId> = members.iter().map(|m| m.client.clone()).collect();
    assert_eq!(gone, expected, "every member of the closed edge leaves");
    assert!(
        start.elapsed() < LEASE / 2,
        "close must not wait for the lease"
    );
    assert!(
        ok(
            watcher
                .presence(target.clone(), None, u32::MAX)
                .await
                .map(|p| p.members),
            "presence"
        )
        .is_empty()
    );
    let after = actor
        .publish(target.clone(), super::support::data(0), None, None)
        .await;
    assert!(
        after.is_err(),
        "calls on a closed link must fail, got {after:?}"
    );
    assert!(
        actor.join(target, member(&user(), None)).await.is_err(),
        "join after close"
    );
    let ended = tokio::time::timeout(WAIT, async {
        // Requests to every edge (another run's disconnects) may still be queued.
        loop {
            match actor_events.recv().await {
                None => return None,
                Some(LinkEvent::DisconnectUser { .. }) => continue,
                Some(event) => return Some(event),
            }
        }
    })
    .await;
    match ended {
        Ok(None) => {}
        other => panic!("a closed link's stream must end, got {other:?}"),
    }
}

/// Guarantee 5: an edge that vanishes without closing loses its members once its lease runs
/// out — not long before, and not much after — while a live edge's members stay: its lease is
/// kept alive for as long as its link exists.
pub async fn a_dropped_link_loses_its_members_within_the_lease<B: Backend>(backend: &B) {
    let (watcher, mut events) = attach(backend).await;
    let (actor, actor_events) = attach(backend).await;
    let target = room("conf");
    ok(watcher.subscribe(target.clone()).await, "subscribe");
    let (survivor, doomed) = (member(&user(), None), member(&user(), None));
    ok(
        watcher.join(target.clone(), survivor.clone()).await,
        "join on the live edge",
    );
    ok(
        actor.join(target.clone(), doomed.clone()).await,
        "join on the doomed edge",
    );
    next(&mut events, "the live member's join").await;
    next(&mut events, "the doomed member's join").await;
    let start = Instant::now();
    drop((actor, actor_events));
    let event = next_within(&mut events, LEASE + SLACK, "the dead edge's leave").await;
    let elapsed = start.elapsed();
    assert_eq!(
        left(event.kind, "lease expiry"),
        doomed.client,
        "only the dead edge's member"
    );
    assert!(
        elapsed >= LEASE / 2,
        "members of a live lease left after only {elapsed:?}"
    );
    tokio::time::sleep(SLACK).await;
    let present = ok(
        watcher
            .presence(target, None, u32::MAX)
            .await
            .map(|p| p.members),
        "presence",
    );
    assert_eq!(
        present,
        [survivor],
        "a live edge's members outlive its first lease period"
    );
}
