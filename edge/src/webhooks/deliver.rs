//! One endpoint's delivery loop: while this edge holds the claim, read the feed after the
//! endpoint's cursor, POST what matches in one batch, retry it with exponential backoff and
//! jitter until delivered or `webhooks.retry_window` is over, then acknowledge the cursor.
//! Strictly one batch at a time, so the endpoint sees events in feed order (hence in order per
//! room and per user).

use std::sync::Arc;
use std::time::Duration;

use plaza_backend::EdgeLink;
use plaza_proto::cluster::BrokerError;
use plaza_proto::events::{EventFilter, EventsPage, FeedPosition};
use rand::Rng;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Claim;
use super::post::{self, Batch, Outcome};
use crate::api::events::EventJson;
use crate::config::WebhookEndpoint;
use crate::metrics as m;
use crate::node::Node;

/// One endpoint's sender.
pub(super) struct Endpoint<L: EdgeLink> {
    node: Arc<Node<L>>,
    config: WebhookEndpoint,
    client: reqwest::Client,
    claim: watch::Receiver<Option<Claim>>,
}

impl<L: EdgeLink> Endpoint<L> {
    pub(super) fn new(
        node: Arc<Node<L>>,
        config: WebhookEndpoint,
        client: reqwest::Client,
        claim: watch::Receiver<Option<Claim>>,
    ) -> Self {
        Self {
            node,
            config,
            client,
            claim,
        }
    }

    /// Runs until the claim channel closes (the edge stops).
    pub(super) async fn run(mut self) {
        loop {
            let current = self.claim.borrow_and_update().clone();
            match current {
                Some(claim) if Instant::now() < claim.valid_until => {
                    self.while_holding(claim).await;
                }
                _ => {
                    if self.claim.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Whether the claim of `generation` is still ours and valid.
    fn holding(&self, generation: u64) -> bool {
        self.claim
            .borrow()
            .as_ref()
            .is_some_and(|c| c.generation == generation && Instant::now() < c.valid_until)
    }

    /// Delivers while the claim is held; returns once it ran out, moved or was re-acquired
    /// (then the cursors must be read again).
    async fn while_holding(&mut self, claim: Claim) {
        let name = self.config.name.clone();
        let webhooks = &self.node.config.webhooks;
        let mut at = FeedPosition {
            epoch: claim.epoch.clone(),
            seq: claim.cursors.get(&name).copied().unwrap_or(0),
        };
        let filter = EventFilter {
            types: self.config.types.clone(),
            namespace: None,
        };
        loop {
            if !self.holding(claim.generation) {
                return;
            }
            let page = match self
                .node
                .events(Some(at.clone()), webhooks.max_batch, filter.clone())
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(endpoint = %name, error = %e, "webhooks: cannot read the event feed");
                    tokio::time::sleep(webhooks.poll_interval).await;
                    continue;
                }
            };
            metrics::gauge!(m::WEBHOOK_LAG, "endpoint" => name.clone())
                .set(page.latest.seq.saturating_sub(page.next.seq) as f64);
            self.report_lost(&at, &page);
            let batch = self.matching(&page);
            if !batch.is_empty() && !self.deliver(claim.generation, &batch).await {
                return;
            }
            if page.next == at {
                tokio::time::sleep(webhooks.poll_interval).await;
                continue;
            }
            at = page.next;
            match self.node.ack_webhooks(name.clone(), at.seq).await {
                Ok(()) => {}
                Err(BrokerError::Invalid(_)) => return,
                // The next ack carries a later cursor; a new sender re-sends at most this.
                Err(e) => tracing::warn!(endpoint = %name, error = %e, "webhooks: ack failed"),
            }
        }
    }

    /// Counts and logs events lost between `at` and the page (retention, or a new epoch).
    fn report_lost(&self, at: &FeedPosition, page: &EventsPage) {
        if page.recovered {
            return;
        }
        let first = page
            .events
            .first()
            .map_or(page.next.seq, |e| e.position.seq);
        let lost = if page.next.epoch == at.epoch {
            first.saturating_sub(at.seq + 1)
        } else {
            0
        };
        metrics::counter!(m::WEBHOOK_EVENTS_LOST, "endpoint" => self.config.name.clone())
            .increment(lost);
        tracing::error!(
            endpoint = %self.config.name, from = %at, lost,
            "webhooks: events expired from the feed before they were delivered (or the broker \
             tier lost its state); delivery continues from the oldest retained event"
        );
    }

    /// The page's events this endpoint wants (its types are filtered by the feed read).
    fn matching(&self, page: &EventsPage) -> Vec<EventJson> {
        let namespaces = &self.config.namespaces;
        page.events
            .iter()
            .filter(|e| match &e.room {
                Some(room) => {
                    namespaces.is_empty() || namespaces.iter().any(|n| n == room.namespace())
                }
                None => true,
            })
            .cloned()
            .map(EventJson::from)
            .collect()
    }

    /// POSTs `batch` until delivered or the retry window is over (both return true), or the
    /// claim is lost (false: the next sender re-sends it).
    async fn deliver(&self, generation: u64, batch: &[EventJson]) -> bool {
        let webhooks = &self.node.config.webhooks;
        let name = &self.config.name;
        let body = serde_json::to_vec(&Batch {
            endpoint: name,
            events: batch,
        })
        .expect("events serialize");
        let secret = webhooks.secret.as_ref().map_or(&[][..], |s| s.0.as_bytes());
        let started = Instant::now();
        let mut backoff = webhooks.retry_initial;
        loop {
            if !self.holding(generation) {
                return false;
            }
            let sent = Instant::now();
            let outcome =
                post::post(&self.client, &self.config.url, name, secret, body.clone()).await;
            metrics::histogram!(m::WEBHOOK_POST_SECONDS, "endpoint" => name.clone())
                .record(sent.elapsed().as_secs_f64());
            metrics::counter!(m::WEBHOOK_POSTS, "endpoint" => name.clone(), "outcome" => outcome.label())
                .increment(1);
            if outcome == Outcome::Delivered {
                metrics::counter!(m::WEBHOOK_EVENTS_DELIVERED, "endpoint" => name.clone())
                    .increment(batch.len() as u64);
                return true;
            }
            if started.elapsed() >= webhooks.retry_window {
                metrics::counter!(m::WEBHOOK_EVENTS_GIVEN_UP, "endpoint" => name.clone())
                    .increment(batch.len() as u64);
                tracing::error!(
                    endpoint = %name, outcome = outcome.label(), events = batch.len(),
                    first = %batch[0].id, last = %batch[batch.len() - 1].id,
                    "webhooks: giving up on a batch after the retry window; its events stay in \
                     the feed (GET /v1/api/events)"
                );
                return true;
            }
            tracing::warn!(endpoint = %name, outcome = outcome.label(), retry_in = ?backoff, "webhooks: delivery failed");
            tokio::time::sleep(jittered(backoff)).await;
            backoff = (backoff * 2).min(webhooks.retry_max);
        }
    }
}

/// Between half and all of `backoff`, so many senders' retries do not line up.
fn jittered(backoff: Duration) -> Duration {
    let half = backoff / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}
