//! Ephemeral publication checks (DESIGN.md §2.9): at most once, in publisher order, to the
//! edges subscribed now; no offset, no history, and independent of durable traffic.
//!
//! Delivery is at most once, so a check first makes sure the path is open — it publishes
//! probes until every subscribed edge has seen one (a networked tier may still be spreading a
//! new subscription's interest) — and only then asserts that, with nothing failing and no
//! queue full, every publication arrives once and in order.

use std::time::Duration;

use plaza_proto::cluster::{Ephemeral, LinkEvent, RoomEventKind};
use plaza_proto::{ClientId, Payload, RoomName, Sender, UserId};

use super::support::{WAIT, attach, data, ok, payload, quiet, room, unique};
use crate::{Backend, EdgeLink, LinkEvents};

/// Publications per check.
const COUNT: usize = 40;

/// The next ephemeral publication on `events` within `within` (room events and requests to
/// every edge are skipped), or `None`. Panics if the stream ends.
async fn next_ephemeral(events: &mut LinkEvents, within: Duration, who: &str) -> Option<Ephemeral> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Err(_) => return None,
            Ok(None) => panic!("{who}'s event stream ended while waiting for ephemeral ones"),
            Ok(Some(LinkEvent::Ephemeral(e))) => return Some(e),
            Ok(Some(_)) => {}
        }
    }
}

/// Publishes probes through `publisher` until each of `receivers` has seen one, then drains
/// the probes still on their way.
async fn open_path<L: EdgeLink>(
    publisher: &L,
    room: &RoomName,
    receivers: &mut [(&str, &mut LinkEvents)],
) {
    let marker = unique();
    let probe = payload(&format!(r#"{{"probe":"{marker}"}}"#));
    let deadline = tokio::time::Instant::now() + WAIT;
    for (who, events) in receivers.iter_mut() {
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no ephemeral publication reached subscribed edge {who} within {WAIT:?}"
            );
            ok(
                publisher
                    .publish_ephemeral(room.clone(), probe.clone(), None)
                    .await,
                "publish_ephemeral (probe)",
            );
            if next_ephemeral(events, Duration::from_millis(200), who)
                .await
                .is_some()
            {
                break;
            }
        }
    }
    // The probe that opened the last path was its last; a final marker drains the rest.
    let end = payload(&format!(r#"{{"probe_end":"{marker}"}}"#));
    ok(
        publisher
            .publish_ephemeral(room.clone(), end.clone(), None)
            .await,
        "publish_ephemeral (end of probes)",
    );
    for (who, events) in receivers.iter_mut() {
        loop {
            match next_ephemeral(events, WAIT, who).await {
                Some(e) if e.data == end => break,
                Some(e) if e.data == probe => {}
                other => panic!("{who}: expected the end of the probes, got {other:?}"),
            }
        }
    }
}

/// Guarantee 9: ephemeral publications reach every edge subscribed to the room once each, in
/// the order they were published, with their sender; an edge subscribed elsewhere gets none;
/// and they take no offset and never appear in `history`.
pub async fn ephemeral_publications_reach_subscribers_in_order_and_are_never_stored<B: Backend>(
    backend: &B,
) {
    let (a, mut a_events) = attach(backend).await;
    let (b, mut b_events) = attach(backend).await;
    let (c, mut c_events) = attach(backend).await;
    let (shared, elsewhere) = (room("conf"), room("conf"));
    let start = ok(a.subscribe(shared.clone()).await, "subscribe a");
    ok(b.subscribe(shared.clone()).await, "subscribe b");
    ok(c.subscribe(elsewhere).await, "subscribe c elsewhere");
    open_path(
        &a,
        &shared,
        &mut [("a", &mut a_events), ("b", &mut b_events)],
    )
    .await;
    let from = Sender {
        user: UserId::new("typist"),
        client: ClientId::new(format!("client-{}", unique())),
    };
    for i in 0..COUNT {
        ok(
            a.publish_ephemeral(shared.clone(), data(i), Some(from.clone()))
                .await,
            "publish_ephemeral",
        );
    }
    for (who, events) in [("a", &mut a_events), ("b", &mut b_events)] {
        for i in 0..COUNT {
            let Some(e) = next_ephemeral(events, WAIT, who).await else {
                panic!("edge {who} got {i} of {COUNT} ephemeral publications, then none");
            };
            assert_eq!(
                e.room, shared,
                "edge {who}: ephemeral publication of another room"
            );
            assert_eq!(
                e.data,
                data(i),
                "edge {who}: ephemeral publications out of publisher order (or repeated)"
            );
            assert_eq!(e.from.as_ref(), Some(&from), "edge {who}: sender lost");
        }
        assert!(
            next_ephemeral(events, Duration::from_millis(200), who)
                .await
                .is_none(),
            "edge {who} received an ephemeral publication twice"
        );
    }
    assert!(
        next_ephemeral(&mut c_events, Duration::from_millis(200), "c")
            .await
            .is_none(),
        "an edge not subscribed to the room received its ephemeral publication"
    );
    let page = ok(a.history(shared.clone(), None, None).await, "history");
    assert!(
        page.publications.is_empty(),
        "ephemeral publications were stored: history holds {:?}",
        page.publications
    );
    assert_eq!(
        page.position, start,
        "ephemeral publications moved the room's position (they take no offset)"
    );
}

/// Guarantee 9: durable and ephemeral publications in one room interleave freely; each kind
/// keeps its own order (offsets for durable ones, publisher order for ephemeral ones), and an
/// unsubscribed edge receives no more ephemeral publications.
pub async fn durable_and_ephemeral_publications_keep_their_own_orders<B: Backend>(backend: &B) {
    let (a, _a_events) = attach(backend).await;
    let (b, mut b_events) = attach(backend).await;
    let shared = room("conf");
    ok(a.subscribe(shared.clone()).await, "subscribe a");
    ok(b.subscribe(shared.clone()).await, "subscribe b");
    open_path(&a, &shared, &mut [("b", &mut b_events)]).await;
    let rounds = 8;
    let durable = async {
        let mut offsets = Vec::new();
        for i in 0..rounds {
            let ack = ok(
                a.publish(shared.clone(), data(i), None, None).await,
                "durable publish",
            );
            offsets.push(ack.position.offset);
        }
        offsets
    };
    let ephemeral = async {
        for i in 0..rounds {
            ok(
                a.publish_ephemeral(shared.clone(), data(1000 + i), None)
                    .await,
                "publish_ephemeral",
            );
        }
    };
    let (offsets, ()) = tokio::join!(durable, ephemeral);
    let (mut seen_offsets, mut seen_ephemeral) = (Vec::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen_offsets.len() < rounds || seen_ephemeral.len() < rounds {
        match tokio::time::timeout_at(deadline, b_events.recv()).await {
            Err(_) => panic!(
                "b got {} of {rounds} durable and {} of {rounds} ephemeral publications",
                seen_offsets.len(),
                seen_ephemeral.len()
            ),
            Ok(None) => panic!("b's event stream ended"),
            Ok(Some(LinkEvent::Ephemeral(e))) => seen_ephemeral.push(e.data),
            Ok(Some(LinkEvent::Room(event))) => {
                if let RoomEventKind::Publication(p) = event.kind {
                    seen_offsets.push(p.offset);
                }
            }
            Ok(Some(_)) => {}
        }
    }
    assert_eq!(
        seen_offsets, offsets,
        "durable publications out of offset order"
    );
    let expected: Vec<Payload> = (0..rounds).map(|i| data(1000 + i)).collect();
    assert_eq!(
        seen_ephemeral, expected,
        "ephemeral publications out of order"
    );
    let page = ok(a.history(shared.clone(), None, None).await, "history");
    assert_eq!(
        page.publications.len(),
        rounds,
        "history must hold exactly the durable publications"
    );

    ok(b.unsubscribe(shared.clone()).await, "unsubscribe b");
    // Anything b's broker already had in flight may still arrive; what is published after the
    // unsubscribe returned must not.
    while next_ephemeral(&mut b_events, Duration::from_millis(200), "b")
        .await
        .is_some()
    {}
    ok(
        a.publish_ephemeral(shared.clone(), data(2000), None).await,
        "publish_ephemeral after b left",
    );
    quiet(&mut b_events, "room events after unsubscribe").await;
    assert!(
        next_ephemeral(&mut b_events, Duration::from_millis(300), "b")
            .await
            .is_none(),
        "an unsubscribed edge received an ephemeral publication"
    );
}
