//! Edge leases in the `PLAZA_EDGES` bucket: renewing this edge's, and reaping edges whose
//! lease ran out (exactly once, by compare-and-set on the lease entry): their members and
//! their tied state keys.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use bytes::Bytes;
use plaza_proto::cluster::BrokerError;
use plaza_proto::{Member, RoomName};
use serde::{Deserialize, Serialize};

use super::link::*;
use super::names::{self, RoomSubjects, untoken};
use super::presence::{deleted, presence_entries, remove_member};
use super::read_all;
use crate::EdgeLink;

/// An edge-lease entry's value.
#[derive(Serialize, Deserialize)]
pub(super) struct LeaseEntry {
    pub edge: String,
    pub lease_ms: u64,
    /// Set while another edge removes this one's members.
    #[serde(default)]
    pub reaped_by: Option<String>,
}

/// Renews this edge's lease every third of it. If another edge reaped it meanwhile (the lease
/// ran out while NATS was unreachable), the members are gone: write the lease again and
/// re-join them.
pub(super) async fn keep_lease(link: Weak<LinkInner>) {
    let Some(period) = link
        .upgrade()
        .map(|l| (l.lease / 3).max(Duration::from_millis(50)))
    else {
        return;
    };
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(inner) = link.upgrade() else { return };
        let Ok(setup) = inner.shared.setup() else {
            continue; // not reachable yet
        };
        let reaped = match setup.edges.entry(&inner.edge_token).await {
            Ok(Some(entry)) => {
                entry.operation != async_nats::jetstream::kv::Operation::Put
                    || serde_json::from_slice::<LeaseEntry>(&entry.value)
                        .map_or(true, |l| l.reaped_by.is_some())
            }
            Ok(None) => true,
            Err(_) => continue, // unreachable: try again later
        };
        if let Err(e) = inner.write_lease().await {
            tracing::debug!(error = %e, "lease not renewed");
            continue;
        }
        inner.retry_failed_leaves().await;
        if reaped {
            tracing::warn!("this edge's lease had run out; re-joining its members");
            let members: Vec<(RoomName, Member)> = inner
                .state()
                .members
                .iter()
                .map(|((room, _), m)| (room.clone(), m.clone()))
                .collect();
            let link = NatsLink {
                inner: Arc::clone(&inner),
            };
            for (room, member) in members {
                let _ = link.join(room, member).await;
            }
        }
    }
}

/// Looks for edges whose lease ran out and removes their members (exactly one live edge wins
/// each dead edge: the claim is a compare-and-set on its lease entry).
pub(super) async fn reap(link: Weak<LinkInner>) {
    let Some(period) = link.upgrade().map(|l| l.shared.options.reap_every) else {
        return;
    };
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(inner) = link.upgrade() else { return };
        if let Err(e) = reap_once(&inner).await {
            tracing::debug!(error = %e, "lease check failed");
        }
    }
}

pub(super) async fn reap_once(inner: &LinkInner) -> Result<(), BrokerError> {
    let shared = &inner.shared;
    let leases = read_all(
        &shared.setup()?.edges_stream,
        format!("$KV.{}.>", names::EDGES_BUCKET),
        DeliverPolicy::LastPerSubject,
    )
    .await?;
    let now = time_now();
    for stored in leases.iter().filter(|s| !deleted(s)) {
        let Some(key) = stored
            .subject
            .strip_prefix(&format!("$KV.{}.", names::EDGES_BUCKET))
        else {
            continue;
        };
        if key == inner.edge_token {
            continue;
        }
        let Ok(lease) = serde_json::from_slice::<LeaseEntry>(&stored.payload) else {
            continue;
        };
        let Some(entry) = shared
            .setup()?
            .edges
            .entry(key)
            .await
            .map_err(unavailable)?
        else {
            continue;
        };
        let age = now - entry.created;
        let expired = age.whole_milliseconds() > i128::from(lease.lease_ms);
        let claim_stale = lease.reaped_by.is_some() && age.whole_milliseconds() > 30_000;
        if !expired || (lease.reaped_by.is_some() && !claim_stale) {
            continue;
        }
        let claim = LeaseEntry {
            reaped_by: Some(inner.edge.as_str().to_owned()),
            ..lease
        };
        let value = Bytes::from(serde_json::to_vec(&claim).map_err(unavailable)?);
        if shared
            .setup()?
            .edges
            .update(key, value, entry.revision)
            .await
            .is_err()
        {
            continue; // another edge claimed it, or it renewed just now
        }
        tracing::info!(edge = %claim.edge, "an edge's lease ran out; removing its members");
        for (member_key, _) in presence_entries(shared, &format!("*.*.{key}.*")).await? {
            let mut parts = member_key.split('.');
            let (Some(ns), Some(room)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Some(room) = untoken(room).and_then(|r| RoomName::new(&r).ok()) else {
                continue;
            };
            let subjects = RoomSubjects::new(ns, room.as_str());
            remove_member(shared, &room, &subjects, &member_key).await?;
        }
        super::state_keys::release_dead_edge(shared, key).await?;
        let _ = shared.setup()?.edges.delete(key).await;
    }
    Ok(())
}

pub(super) fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}
