//! The webhook sender: one per deployment, elected through the broker tier's replicated
//! state, POSTing the lifecycle event feed to the configured endpoints.
//!
//! ```text
//!   claim loop (every lease/3) ──ClaimWebhooks──▶ broker tier ──▶ granted? + cursors
//!        │ watch<Option<Claim>>
//!        ▼
//!   one task per endpoint: read feed after cursor ─▶ POST batch (signed) ─▶ retry with backoff
//!        ─▶ AckWebhooks(through) ─▶ next batch          (only while the claim is held)
//! ```
//!
//! Every edge runs the claim loop; the state machine grants the claim to one edge at a time
//! (`plaza_rooms` `webhooks.rs`). A holder sends only until three quarters of its lease after
//! it asked, and the tier lets another edge take over only after the whole lease, so two
//! senders never overlap. The delivery cursors live in the replicated state and only the
//! holder can move them: a new sender resumes from the last acknowledged batch, re-sending at
//! most the batch in flight (same ids, same order). Nothing here is on the path of a publish
//! or a presence change: a dead or slow endpoint only delays its own deliveries.

mod deliver;
pub(crate) mod post;

use std::collections::BTreeMap;
use std::sync::Arc;

use plaza_backend::EdgeLink;
use plaza_proto::cluster::BrokerError;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics as m;
use crate::node::Node;

/// The claim as the endpoint tasks see it.
#[derive(Debug, Clone)]
struct Claim {
    /// Changes whenever the claim is (re)acquired after a gap: cursors must be re-read.
    generation: u64,
    epoch: String,
    cursors: BTreeMap<String, u64>,
    /// Stop sending at this instant unless renewed.
    valid_until: Instant,
}

/// Starts the sender's tasks if endpoints are configured; they stop when `shutdown` is
/// cancelled.
pub(crate) fn spawn<L: EdgeLink>(node: &Arc<Node<L>>, shutdown: &CancellationToken) {
    let config = &node.config.webhooks;
    if config.endpoints.is_empty() {
        return;
    }
    let client = match post::client(config.timeout) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client; webhooks are off");
            return;
        }
    };
    let (tx, rx) = watch::channel(None);
    tokio::spawn(claim_loop(node.clone(), tx, shutdown.clone()));
    for endpoint in config.endpoints.clone() {
        let task = deliver::Endpoint::new(node.clone(), endpoint, client.clone(), rx.clone());
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = task.run() => {}
            }
        });
    }
}

/// Claims or renews the sender role every third of the lease and publishes the result.
async fn claim_loop<L: EdgeLink>(
    node: Arc<Node<L>>,
    tx: watch::Sender<Option<Claim>>,
    shutdown: CancellationToken,
) {
    let lease = node.config.webhooks.lease;
    let mut generation = 0;
    let mut every = tokio::time::interval(lease / 3);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = every.tick() => {}
        }
        let asked = Instant::now();
        match node.claim_webhooks(lease).await {
            Ok(claim) if claim.granted => {
                let held = tx
                    .borrow()
                    .as_ref()
                    .is_some_and(|c| Instant::now() < c.valid_until);
                if !held {
                    generation += 1;
                    tracing::info!(edge = %node.edge_id, "this edge is now the webhook sender");
                }
                tx.send_replace(Some(Claim {
                    generation,
                    epoch: claim.epoch,
                    cursors: claim.cursors,
                    valid_until: asked + lease * 3 / 4,
                }));
                metrics::gauge!(m::WEBHOOK_SENDER).set(1.0);
            }
            Ok(_) => {
                tx.send_replace(None);
                metrics::gauge!(m::WEBHOOK_SENDER).set(0.0);
            }
            Err(BrokerError::Unsupported(why)) => {
                tracing::error!(%why, "webhooks are configured but the broker tier cannot send them");
                break;
            }
            // Keep what we have: the endpoint tasks stop by themselves at `valid_until`.
            Err(e) => tracing::warn!(error = %e, "could not renew the webhook sender claim"),
        }
    }
    tx.send_replace(None);
    metrics::gauge!(m::WEBHOOK_SENDER).set(0.0);
}
