//! The node's side of the link's life: events in, and re-attaching when the link is lost.
//!
//! ```text
//!   LinkEvents ─▶ Room(event) ─▶ Hub::dispatch      DisconnectUser ─▶ Users::disconnect
//!            └─ None (link lost) ─▶ detached ─▶ attach (backoff 100 ms … 5 s) ─▶ reattached
//! ```

use std::sync::Arc;
use std::time::Duration;

use plaza_backend::{AttachOptions, Backend, LinkEvents};
use plaza_proto::cluster::LinkEvent;
use tokio_util::sync::CancellationToken;

use super::Node;

/// Feeds broker events to the hub; when the link is lost, closes the affected clients and
/// re-attaches with backoff until `shutdown`.
pub(crate) async fn supervise<B: Backend>(
    node: Arc<Node<B::Link>>,
    backend: B,
    attach: AttachOptions,
    mut events: LinkEvents,
    shutdown: CancellationToken,
) {
    loop {
        loop {
            // `recv` is cancel-safe.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                event = events.recv() => match event {
                    Some(LinkEvent::Room(event)) => node.hub.dispatch(event),
                    Some(LinkEvent::DisconnectUser { user, reason }) => {
                        // Server API `disconnect`, sent to every edge by the broker tier.
                        let code = plaza_proto::CloseCode::Kicked;
                        let closed = node.users.disconnect(&user, code, &reason);
                        tracing::debug!(user = %user, closed, "disconnected a user on request");
                    }
                    None => break,
                },
            }
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
