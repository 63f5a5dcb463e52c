//! History and recovery checks (guarantee 3).

use plaza_proto::cluster::PublishAck;
use plaza_proto::{Position, RoomName};

use super::support::{attach, data, next, offsets, ok, publication, room};
use super::{CONF_HISTORY, SHORT_TTL, SLACK};
use crate::{Backend, EdgeLink};

/// Publishes `n` publications to `room` and returns their acks.
async fn publish_n<L: EdgeLink>(link: &L, room: &RoomName, n: usize) -> Vec<PublishAck> {
    let mut acks = Vec::with_capacity(n);
    for i in 0..n {
        acks.push(ok(
            link.publish(room.clone(), data(i), None, None).await,
            "publish",
        ));
    }
    acks
}

fn ack_offsets(acks: &[PublishAck]) -> Vec<u64> {
    acks.iter().map(|a| a.position.offset).collect()
}

/// "No gap between history and live": subscribe, then read history since X while another edge
/// keeps publishing; dropping live publications already seen in history yields every
/// publication after X exactly once, in order.
pub async fn history_and_live_merge_without_gaps_or_duplicates<B: Backend>(backend: &B) {
    let (publisher, _publisher_events) = attach(backend).await;
    let (reader, mut events) = attach(backend).await;
    let target = room("log");
    let before = publish_n(&publisher, &target, 5).await;
    let since = before[1].position.clone();

    let concurrent = tokio::spawn({
        let (publisher, target) = (publisher.clone(), target.clone());
        async move {
            let mut acks = Vec::new();
            for i in 0..200 {
                acks.push(publisher.publish(target.clone(), data(i), None, None).await);
                if i % 16 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            acks
        }
    });
    tokio::task::yield_now().await;
    ok(reader.subscribe(target.clone()).await, "subscribe");
    let page = ok(
        reader
            .history(target.clone(), Some(since.clone()), None)
            .await,
        "history",
    );
    assert!(
        page.complete,
        "history since a recent position must be complete"
    );
    let mut merged = offsets(&page.publications);
    let concurrent = ok(concurrent.await, "publisher task");
    let during: Vec<PublishAck> = concurrent.into_iter().map(|r| ok(r, "publish")).collect();
    let last = during.last().map_or(0, |a| a.position.offset);
    let mut seen = merged.last().copied().unwrap_or(since.offset);
    while seen < last {
        let p = publication(next(&mut events, "a live publication").await, "live event");
        if p.offset > seen {
            merged.push(p.offset);
            seen = p.offset;
        }
    }
    let mut expected = ack_offsets(&before[2..]);
    expected.extend(ack_offsets(&during));
    assert_eq!(
        merged, expected,
        "history + live must give every publication after X once"
    );
}

/// Guarantee 3: recovery is complete exactly while every later publication is still in the
/// size window; otherwise nothing is returned.
pub async fn history_past_the_size_window_is_incomplete<B: Backend>(backend: &B) {
    let (link, _events) = attach(backend).await;
    let target = room("conf");
    let acks = publish_n(&link, &target, CONF_HISTORY + 5).await;
    let kept = &acks[5..];
    let edge = acks[4].position.clone();
    let page = ok(
        link.history(target.clone(), Some(edge), None).await,
        "history at the edge",
    );
    assert!(
        page.complete,
        "every publication after the window's start is still held"
    );
    assert_eq!(offsets(&page.publications), ack_offsets(kept));
    for lost in [&acks[3], &acks[0]] {
        let since = lost.position.clone();
        let page = ok(
            link.history(target.clone(), Some(since), None).await,
            "history",
        );
        assert!(
            !page.complete,
            "a publication after {} was pruned by size",
            lost.position.offset
        );
        assert!(
            page.publications.is_empty(),
            "an incomplete page must list nothing"
        );
    }
    let latest = acks.last().map(|a| a.position.clone());
    let page = ok(
        link.history(target, latest.clone(), None).await,
        "history since latest",
    );
    assert!(
        page.complete && page.publications.is_empty(),
        "nothing after the latest"
    );
    assert_eq!(
        Some(page.position),
        latest,
        "history reports the current position"
    );
}

/// Guarantee 3: a position from another epoch never recovers.
pub async fn history_since_another_epoch_is_incomplete<B: Backend>(backend: &B) {
    let (link, _events) = attach(backend).await;
    let target = room("conf");
    let acks = publish_n(&link, &target, 2).await;
    let foreign = Position {
        epoch: format!("not-{}", acks[0].position.epoch),
        offset: acks[0].position.offset,
    };
    let page = ok(link.history(target, Some(foreign), None).await, "history");
    assert!(
        !page.complete,
        "a position of another epoch must not be reported as recovered"
    );
    assert!(
        page.publications.is_empty(),
        "an incomplete page must list nothing"
    );
    assert_eq!(page.position.epoch, acks[0].position.epoch);
}

/// Guarantee 3: publications older than the namespace's TTL are gone, and a position that
/// needed them no longer recovers.
pub async fn history_since_an_expired_position_is_incomplete<B: Backend>(backend: &B) {
    let (link, _events) = attach(backend).await;
    let target = room("ttl");
    let acks = publish_n(&link, &target, 2).await;
    let (first, second) = (acks[0].position.clone(), acks[1].position.clone());
    let page = ok(
        link.history(target.clone(), Some(first.clone()), None)
            .await,
        "history",
    );
    assert!(page.complete, "within the TTL, recovery is complete");
    assert_eq!(offsets(&page.publications), [second.offset]);

    tokio::time::sleep(SHORT_TTL.mul_f32(1.2) + SLACK).await;
    let page = ok(
        link.history(target.clone(), Some(first), None).await,
        "history",
    );
    assert!(
        !page.complete,
        "a publication after the position expired: not recoverable"
    );
    assert!(
        page.publications.is_empty(),
        "an incomplete page must list nothing"
    );
    let page = ok(link.history(target.clone(), None, None).await, "history");
    assert!(
        page.publications.is_empty(),
        "expired publications must not be returned"
    );
    let page = ok(
        link.history(target, Some(second.clone()), None).await,
        "history",
    );
    assert!(page.complete, "nothing after the latest position was lost");
    assert_eq!(page.position, second, "expiry does not move the position");
}

/// `history` without `since` returns the newest `limit`, oldest first; with `since`, the
/// oldest `limit` after it.
pub async fn history_without_since_returns_the_newest_oldest_first<B: Backend>(backend: &B) {
    let (link, _events) = attach(backend).await;
    let target = room("conf");
    let acks = publish_n(&link, &target, 8).await;
    let all = ack_offsets(&acks);
    let page = ok(
        link.history(target.clone(), None, Some(3)).await,
        "history limit 3",
    );
    assert_eq!(
        offsets(&page.publications),
        all[5..],
        "the newest 3, oldest first"
    );
    assert!(page.complete, "a read without since is complete");
    for (p, i) in page.publications.iter().zip(5..) {
        assert_eq!(p.data, data(i), "publication data must round-trip");
    }
    let page = ok(
        link.history(target.clone(), None, None).await,
        "history without limit",
    );
    assert_eq!(
        offsets(&page.publications),
        all,
        "everything held, oldest first"
    );
    assert_eq!(page.position, acks[7].position, "the current position");
    let since = Some(acks[1].position.clone());
    let page = ok(
        link.history(target, since, Some(3)).await,
        "history since, limit 3",
    );
    assert!(page.complete);
    assert_eq!(
        offsets(&page.publications),
        all[2..5],
        "the oldest 3 after since"
    );
}
