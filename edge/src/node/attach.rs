//! The node's side of the link's life: events in, and re-attaching when the link is lost.
//!
//! ```text
//!   LinkEvents (up to 64 at a time) ─▶ Room(event) ─▶ Hub::dispatch ─▶ Flushes::run
//!                                                    DisconnectUser ─▶ Users::disconnect
//!                 (a presence resync is cut to `client.max_presence_page` first)
//!            └─ None (link lost) ─▶ detached ─▶ attach (backoff 100 ms … 5 s) ─▶ reattached
//! ```

use std::sync::Arc;
use std::time::Duration;

use plaza_backend::{AttachOptions, Backend, LinkEvents};
use plaza_proto::cluster::{LinkEvent, PresencePage, RoomEventKind};
use tokio_util::sync::CancellationToken;

use super::Node;
use crate::outbox::Flushes;

/// Feeds broker events to the hub; when the link is lost, closes the affected clients and
/// re-attaches with backoff until `shutdown`.
pub(crate) async fn supervise<B: Backend>(
    node: Arc<Node<B::Link>>,
    backend: B,
    attach: AttachOptions,
    mut events: LinkEvents,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        loop {
            // `recv_many` is cancel-safe.
            let got = tokio::select! {
                _ = shutdown.cancelled() => return,
                got = events.recv_many(&mut batch, BATCH) => got,
            };
            if got == 0 {
                break;
            }
            // The batch's pushes to each lean connection leave in one write.
            let mut flushes = Flushes::default();
            for event in batch.drain(..) {
                handle(&node, event, &mut flushes);
            }
            flushes.run();
        }
        node.detached();
        tracing::warn!("lost the broker tier; re-attaching");
        let mut backoff = Duration::from_millis(100);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                attached = backend.attach(attach.clone()) => match attached {
                    Ok((link, fresh)) => {
                        node.reattached(link);
                        events = fresh;
                        tracing::info!("re-attached to the broker tier");
                        break;
                    }
                    Err(e) => tracing::warn!(error = %e, retry_in = ?backoff, "attach failed"),
                },
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

/// Most link events fanned out before their writes are flushed.
const BATCH: usize = 64;

/// Hands one link event to the hub (or, for a server API `disconnect`, to the users).
fn handle<L: plaza_backend::EdgeLink>(node: &Node<L>, event: LinkEvent, flushes: &mut Flushes) {
    match event {
        LinkEvent::Room(mut event) => {
            if let RoomEventKind::PresenceResync(page) = &mut event.kind {
                cut_resync(page, node.config.client.max_presence_page);
            }
            node.dispatch(event, flushes);
        }
        LinkEvent::Ephemeral(e) => node.hub.dispatch_ephemeral(e, flushes),
        LinkEvent::DisconnectUser { user, reason } => {
            // Server API `disconnect`, sent to every edge by the broker tier.
            let code = plaza_proto::CloseCode::Kicked;
            let closed = node.users.disconnect(&user, code, &reason);
            tracing::debug!(user = %user, closed, "disconnected a user on request");
        }
    }
}

/// Cuts a link's presence resync to the edge's page size (`client.max_presence_page`): the
/// push then names the last member it carries as `next`, and clients page on with `presence`.
fn cut_resync(page: &mut PresencePage, max: u32) {
    metrics::counter!(crate::metrics::PRESENCE_RESYNCS).increment(1);
    let max = max.max(1) as usize;
    if page.members.len() > max {
        page.members.truncate(max);
        page.next = page.members.last().map(|m| m.client.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plaza_proto::{ClientId, Member, UserId};

    fn page(n: usize, next: Option<&str>) -> PresencePage {
        PresencePage {
            members: (0..n)
                .map(|i| Member {
                    client: ClientId::new(format!("c{i:02}")),
                    user: UserId::new("u"),
                    info: None,
                })
                .collect(),
            next: next.map(ClientId::new),
        }
    }

    #[test]
    fn a_resync_longer_than_a_page_is_cut_and_names_where_to_go_on() {
        let mut p = page(10, None);
        cut_resync(&mut p, 4);
        assert_eq!(p.members.len(), 4);
        assert_eq!(p.next, Some(ClientId::new("c03")));
        let mut p = page(3, Some("c02"));
        cut_resync(&mut p, 4);
        assert_eq!((p.members.len(), p.next), (3, Some(ClientId::new("c02"))));
    }
}
