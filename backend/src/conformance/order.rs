//! Order, fan-out and idempotency checks.

use plaza_proto::cluster::RoomEventKind;

use super::support::{
    attach, data, describe, member, next, offsets, ok, publication, publications, quiet, room,
    unique,
};
use crate::{Backend, EdgeLink};

/// Guarantee 1: offsets strictly increase within one epoch, also when other rooms publish in
/// between, and `subscribe` reports the latest one.
pub async fn offsets_increase_within_one_epoch<B: Backend>(backend: &B) {
    let (link, _events) = attach(backend).await;
    let (a, b) = (room("conf"), room("conf"));
    let start = ok(link.subscribe(a.clone()).await, "subscribe");
    let mut last = start.offset;
    for i in 0..20 {
        let ack = ok(
            link.publish(a.clone(), data(i), None, None).await,
            "publish",
        );
        assert!(
            !ack.duplicate,
            "a publish without idem key was reported as a duplicate"
        );
        assert_eq!(
            ack.position.epoch, start.epoch,
            "the epoch changed between publications"
        );
        assert!(
            ack.position.offset > last,
            "offset {} does not follow {last}: offsets must strictly increase",
            ack.position.offset
        );
        last = ack.position.offset;
        ok(
            link.publish(b.clone(), data(i), None, None).await,
            "publish to another room",
        );
    }
    let position = ok(link.subscribe(a.clone()).await, "subscribe again");
    assert_eq!(
        position.offset, last,
        "subscribe must return the room's latest offset"
    );
}

/// Guarantee 1 and "once per edge": every subscribed edge receives each publication exactly
/// once, in offset order, whoever published it; an edge subscribed elsewhere receives none.
pub async fn publications_reach_every_subscribed_edge_once_in_order<B: Backend>(backend: &B) {
    let (a, mut a_events) = attach(backend).await;
    let (b, mut b_events) = attach(backend).await;
    let (c, mut c_events) = attach(backend).await;
    let (shared, elsewhere) = (room("conf"), room("conf"));
    ok(a.subscribe(shared.clone()).await, "subscribe a");
    ok(b.subscribe(shared.clone()).await, "subscribe b");
    ok(c.subscribe(elsewhere).await, "subscribe c elsewhere");
    let mut acks = Vec::new();
    for i in 0..12 {
        let publisher = if i % 2 == 0 { &a } else { &c };
        acks.push(ok(
            publisher.publish(shared.clone(), data(i), None, None).await,
            "publish",
        ));
    }
    let expected: Vec<u64> = acks.iter().map(|ack| ack.position.offset).collect();
    for (who, events) in [("edge a", &mut a_events), ("edge b", &mut b_events)] {
        let got = publications(events, &shared, expected.len(), who).await;
        assert_eq!(
            offsets(&got),
            expected,
            "{who} must receive every publication in order"
        );
        for (i, p) in got.iter().enumerate() {
            assert_eq!(
                p.data,
                data(i),
                "{who} received the wrong data at offset {}",
                p.offset
            );
        }
        quiet(events, &format!("{who} must receive each publication once")).await;
    }
    quiet(
        &mut c_events,
        "an edge not subscribed to the room must receive nothing",
    )
    .await;
}

/// "Once per edge": subscribing several times does not multiply events.
pub async fn an_edge_receives_each_event_once_however_often_it_subscribed<B: Backend>(backend: &B) {
    let (link, mut events) = attach(backend).await;
    let target = room("conf");
    for _ in 0..3 {
        ok(link.subscribe(target.clone()).await, "subscribe");
    }
    for i in 0..3 {
        ok(
            link.publish(target.clone(), data(i), None, None).await,
            "publish",
        );
    }
    publications(&mut events, &target, 3, "the thrice-subscribed edge").await;
    quiet(
        &mut events,
        "three subscriptions must still deliver each event once",
    )
    .await;
}

/// `unsubscribe` stops delivery of events that happen after it returns.
pub async fn an_unsubscribed_edge_receives_no_more_events<B: Backend>(backend: &B) {
    let (link, mut events) = attach(backend).await;
    let target = room("conf");
    ok(link.subscribe(target.clone()).await, "subscribe");
    ok(
        link.publish(target.clone(), data(0), None, None).await,
        "publish",
    );
    publications(&mut events, &target, 1, "the subscribed edge").await;
    ok(link.unsubscribe(target.clone()).await, "unsubscribe");
    ok(
        link.publish(target.clone(), data(1), None, None).await,
        "publish after unsubscribe",
    );
    quiet(&mut events, "no events after unsubscribe returned").await;
}

/// Guarantee 5: join and leave events arrive in their place between publications.
pub async fn presence_events_are_ordered_with_publications<B: Backend>(backend: &B) {
    let (watcher, mut events) = attach(backend).await;
    let (actor, _actor_events) = attach(backend).await;
    let target = room("conf");
    let m = member(&format!("user-{}", unique()), None);
    ok(watcher.subscribe(target.clone()).await, "subscribe");
    ok(
        actor.publish(target.clone(), data(1), None, None).await,
        "publish p1",
    );
    ok(actor.join(target.clone(), m.clone()).await, "join");
    ok(
        actor.publish(target.clone(), data(2), None, None).await,
        "publish p2",
    );
    ok(actor.leave(target.clone(), m.client.clone()).await, "leave");
    let mut got = Vec::new();
    for step in ["p1", "join", "p2", "leave"] {
        got.push(describe(&next(&mut events, step).await));
    }
    let expected = [
        format!("pub {}", data(1).as_str()),
        format!("join {}", m.client),
        format!("pub {}", data(2).as_str()),
        format!("leave {}", m.client),
    ];
    assert_eq!(
        got, expected,
        "presence events must be in order with publications"
    );
    quiet(&mut events, "each event once").await;
}

/// Guarantee 4: a retried `idem` returns the original position and is delivered once; keys
/// are per room.
pub async fn idempotent_publish_is_stored_and_delivered_once<B: Backend>(backend: &B) {
    let (link, mut events) = attach(backend).await;
    let (target, other) = (room("conf"), room("conf"));
    let key = Some(format!("idem-{}", unique()));
    ok(link.subscribe(target.clone()).await, "subscribe");
    let first = ok(
        link.publish(target.clone(), data(1), None, key.clone())
            .await,
        "publish",
    );
    assert!(
        !first.duplicate,
        "the first publish with a key is not a duplicate"
    );
    let retry = ok(
        link.publish(target.clone(), data(1), None, key.clone())
            .await,
        "retry",
    );
    assert!(
        retry.duplicate,
        "a retried idem key must be reported as a duplicate"
    );
    assert_eq!(
        retry.position, first.position,
        "a retry must return the original position"
    );
    let got = publication(
        next(&mut events, "the idem publication").await,
        "idem publication",
    );
    assert_eq!(got.offset, first.position.offset);
    quiet(&mut events, "a retried publish must not be delivered again").await;
    let page = ok(link.history(target.clone(), None, None).await, "history");
    assert_eq!(
        offsets(&page.publications),
        [first.position.offset],
        "stored once"
    );

    let elsewhere = ok(
        link.publish(other, data(1), None, key).await,
        "same key, other room",
    );
    assert!(!elsewhere.duplicate, "idem keys are per room");
    let fresh = ok(
        link.publish(target.clone(), data(2), None, Some(unique()))
            .await,
        "new key",
    );
    assert!(!fresh.duplicate && fresh.position.offset > first.position.offset);
    let event = next(&mut events, "the publication with a new key").await;
    assert!(
        matches!(event.kind, RoomEventKind::Publication(p) if p.offset == fresh.position.offset)
    );
}
