//! The one deriver of lifecycle events on NATS. Every link runs [`run`]; the one holding the
//! `deriver` lease in `PLAZA_EVENTS_STATE` reads the membership log (`PLAZA_MEMBERSHIP`: every
//! join and leave, appended by the edge that made it in the presence bucket) in order and
//! appends the events [`Derivation`] returns to `PLAZA_EVENTS`, each stamped with the log
//! position it had read through (`Plaza-Input`).
//!
//! ```text
//!   claim lease (CAS, every CLAIM_EVERY) ─▶ held? ─▶ take over:
//!     snapshot ─▶ log + feed after it, interleaved by Plaza-Input (nothing re-emitted)
//!     ─▶ check against the presence bucket ─▶ follow the log every POLL_EVERY, firing
//!     due debounced events ─▶ append      (renew the lease every third of it; snapshot
//!                                           every SNAPSHOT_EVERY)
//! ```
//!
//! Exactly one deriver appends at a time: each append expects the stream's last sequence to
//! be the deriver's last, so a deriver that lost its lease (paused, partitioned) is refused at
//! its next append and steps down. A new deriver decides nothing twice and misses nothing:
//! it rebuilds the old one's state exactly where that one stopped appending and goes on from
//! there in the log. An edge that dies takes its members with it when its lease runs out
//! (`leases.rs` removes them and logs the leaves), so `user.offline` follows one debounce
//! later whichever edge the user was on.

use std::sync::Arc;
use std::time::Duration;

use plaza_proto::cluster::BrokerError;
use plaza_proto::{Member, RoomName};
use serde::{Deserialize, Serialize};

use super::Shared;
use super::derive::{Derivation, Rules, Snapshot, StoredEvent};
use super::events::{
    MembershipChange, append, bounds, now_ms, read_from, read_json, read_state, write_state,
};
use super::link::unavailable;
use super::names::{MEMBERSHIP_SUBJECT, untoken};

/// How long the deriver's lease lasts without renewal (another edge takes over after it).
pub(super) const DERIVER_LEASE: Duration = Duration::from_secs(3);
/// How often a link that is not the deriver tries to become it.
const CLAIM_EVERY: Duration = Duration::from_millis(500);
/// How often the deriver stores a snapshot of its state (when it changed).
const SNAPSHOT_EVERY: Duration = Duration::from_secs(2);
/// The state bucket's keys.
const LEASE_KEY: &str = "deriver";
const SNAPSHOT_KEY: &str = "snapshot";
/// How often the deriver reads the membership log's new changes (and fires due events).
const POLL_EVERY: Duration = Duration::from_millis(100);
/// Most presence changes read per poll (the rest on the next one).
const MAX_CHANGES_PER_POLL: usize = 2000;
/// Largest snapshot stored (NATS refuses messages over its max payload, 1 MB by default);
/// above it a new deriver starts from the last one that fitted plus the feed.
const MAX_SNAPSHOT_BYTES: usize = 900 * 1024;

/// Whether this process holds the deriver role (1) or not (0).
pub(super) const DERIVER_GAUGE: &str = "plaza_backend_nats_event_deriver";
/// Members the deriver tracks.
const MEMBERS_GAUGE: &str = "plaza_backend_nats_event_deriver_members";
/// Debounced events the deriver has scheduled.
const SCHEDULED_GAUGE: &str = "plaza_backend_nats_event_deriver_scheduled";
/// Lifecycle events appended to the feed by this process's deriver.
pub(super) const APPENDED: &str = "plaza_backend_nats_events_appended_total";

/// The lease's value.
#[derive(Serialize, Deserialize)]
struct Lease {
    term: String,
    lease_ms: u64,
}

/// The snapshot's value: the state and the feed's epoch it belongs to.
#[derive(Serialize, Deserialize)]
struct Stored {
    epoch: String,
    state: Snapshot,
}

/// Competes for the deriver role as `term` for as long as the task runs (the link aborts it).
pub(super) async fn run(shared: Arc<Shared>, term: String) {
    let mut every = tokio::time::interval(CLAIM_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if shared.setup().is_err() {
            continue;
        }
        match claim(&shared, &term, None).await {
            Ok(Some(revision)) => {
                tracing::info!(%term, "this edge derives the lifecycle events");
                metrics::gauge!(DERIVER_GAUGE).set(1.0);
                let outcome = Session::start(&shared, &term, revision).await;
                metrics::gauge!(DERIVER_GAUGE).set(0.0);
                match outcome {
                    Ok(()) => tracing::info!(%term, "no longer the event deriver"),
                    Err(e) => tracing::warn!(%term, error = %e, "event deriver stopped"),
                }
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "deriver lease check failed"),
        }
    }
}

/// Takes or renews the deriver's lease: `Some(revision)` when held. `renewing`: the revision
/// this term wrote last (a renewal fails if anyone wrote since).
async fn claim(
    shared: &Shared,
    term: &str,
    renewing: Option<u64>,
) -> Result<Option<u64>, BrokerError> {
    claim_role(shared, LEASE_KEY, DERIVER_LEASE, term, renewing).await
}

/// Takes or renews the lease of a cluster-wide role kept under `key` in the event state
/// bucket (the deriver, the state keeper): `Some(revision)` when `term` holds it. A lease
/// nobody renewed for `lease` may be taken over.
pub(super) async fn claim_role(
    shared: &Shared,
    key: &str,
    lease: Duration,
    term: &str,
    renewing: Option<u64>,
) -> Result<Option<u64>, BrokerError> {
    let state = &shared.setup()?.events.state;
    let lease = Lease {
        term: term.to_owned(),
        lease_ms: u64::try_from(lease.as_millis()).unwrap_or(u64::MAX),
    };
    if let Some(revision) = renewing {
        return write_state(state, key, &lease, Some(revision)).await;
    }
    let entry = state.entry(key).await.map_err(unavailable)?;
    let revision = match entry {
        None => None,
        Some(entry) if entry.operation != async_nats::jetstream::kv::Operation::Put => {
            Some(entry.revision)
        }
        Some(entry) => {
            let current: Option<Lease> = serde_json::from_slice(&entry.value).ok();
            let age = super::leases::time_now() - entry.created;
            let expired = current.as_ref().is_none_or(|l| {
                l.term == term || age.whole_milliseconds() > i128::from(l.lease_ms)
            });
            if !expired {
                return Ok(None);
            }
            Some(entry.revision)
        }
    };
    write_state(state, key, &lease, revision).await
}

/// Gives the deriver's lease up at once (a closing link), if `term` holds it.
pub(super) async fn release(shared: &Shared, term: &str) {
    release_role(shared, LEASE_KEY, term).await;
}

/// Gives up the role kept under `key` at once, if `term` holds it.
pub(super) async fn release_role(shared: &Shared, key: &str, term: &str) {
    let Ok(setup) = shared.setup() else { return };
    if let Ok(Some((lease, revision))) = read_state::<Lease>(&setup.events.state, key).await
        && lease.term == term
    {
        let _ = setup
            .events
            .state
            .delete_expect_revision(key, Some(revision))
            .await;
    }
}

/// One tenure as the deriver.
struct Session<'a> {
    shared: &'a Shared,
    term: &'a str,
    derivation: Derivation,
    /// The feed's last sequence as this deriver knows it.
    last: u64,
    /// The membership log's sequence this deriver has read through.
    input: u64,
    /// The lease entry's revision this deriver wrote.
    lease_revision: u64,
    /// When the lease was last renewed (stop appending past three quarters of it).
    renewed: tokio::time::Instant,
}

impl<'a> Session<'a> {
    /// Takes over and derives until the lease is lost or another writer appended: rebuilds
    /// the previous deriver's state (snapshot, then the membership log and the feed after it,
    /// interleaved as that deriver read and appended them), checks it against the presence
    /// bucket, then follows the log.
    async fn start(
        shared: &'a Shared,
        term: &'a str,
        lease_revision: u64,
    ) -> Result<(), BrokerError> {
        let renewed = tokio::time::Instant::now();
        let events = &shared.setup()?.events;
        let snapshot = match read_state::<Stored>(&events.state, SNAPSHOT_KEY).await {
            Ok(Some((stored, _))) if stored.epoch == events.epoch => stored.state,
            Ok(_) => Snapshot::default(),
            Err(e) => {
                tracing::warn!(error = %e, "deriver snapshot unreadable; rebuilding from the feed");
                Snapshot::default()
            }
        };
        let (through, mut input) = (snapshot.through, snapshot.input);
        let mut session = Session {
            shared,
            term,
            derivation: Derivation::restore(snapshot),
            last: through,
            input,
            lease_revision,
            renewed,
        };
        // The feed after the snapshot, with the log position each event was appended at.
        let mut appended = Vec::new();
        let (_, last) = bounds(&events.stream).await?;
        let mut next = through + 1;
        while next <= last {
            let page = read_from(&events.stream, next, 1000).await?;
            let Some((seq, _, _)) = page.last() else {
                break;
            };
            next = seq + 1;
            appended.extend(page);
        }
        session.last = session.last.max(last);
        let target = appended.iter().map(|(_, _, i)| *i).max().unwrap_or(input);
        let mut appended = appended.into_iter().peekable();
        let rules = session.rules();
        while let Some((_, event, _)) = appended.next_if(|(_, _, i)| *i <= input) {
            session.derivation.replay(&event);
        }
        while input < target {
            let changes = read_log(events, input + 1, 1000).await?;
            if changes.is_empty() {
                break;
            }
            for (seq, time, change) in changes.into_iter().filter(|c| c.0 <= target) {
                // What the previous deriver appended for it is in the feed already.
                let _ = session.apply(&rules, time, &change);
                input = seq;
                while let Some((_, event, _)) = appended.next_if(|(_, _, i)| *i <= seq) {
                    session.derivation.replay(&event);
                }
            }
        }
        for (_, event, _) in appended {
            session.derivation.replay(&event);
        }
        session.input = target.max(input);
        let present = super::presence::presence_entries(shared, ">").await?;
        let present: Vec<(RoomName, Member)> = present
            .into_iter()
            .filter_map(|(key, member)| Some((room_of_key(&key)?, member)))
            .collect();
        let events = session.derivation.reconcile(&rules, now_ms(), &present);
        session.append_all(events).await?;
        session.follow().await
    }

    fn rules(&self) -> Rules<'a> {
        let events = &self.shared.rooms.events;
        Rules {
            debounce_ms: u64::try_from(events.debounce.as_millis()).unwrap_or(u64::MAX),
            user_online: events.user_online,
            namespaces: &self.shared.namespaces,
        }
    }

    fn apply(
        &mut self,
        rules: &Rules<'_>,
        time: u64,
        change: &MembershipChange,
    ) -> Vec<StoredEvent> {
        if change.join && change.update {
            self.derivation
                .update(rules, time, &change.room, &change.member)
        } else if change.join {
            self.derivation
                .join(rules, time, &change.room, &change.member)
        } else {
            self.derivation
                .leave(rules, time, &change.room, &change.member.client)
        }
    }

    /// Follows the membership log every [`POLL_EVERY`], firing due debounced events.
    async fn follow(&mut self) -> Result<(), BrokerError> {
        let events = &self.shared.setup()?.events;
        let mut renew = tokio::time::interval(DERIVER_LEASE / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut snapshot_every = tokio::time::interval(SNAPSHOT_EVERY);
        let mut poll = tokio::time::interval(POLL_EVERY);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut dirty = true;
        loop {
            tokio::select! {
                _ = poll.tick() => {
                    let (_, last) = bounds(&events.membership).await?;
                    if last > self.input {
                        let rules = self.rules();
                        for (seq, time, change) in read_log(events, self.input + 1, MAX_CHANGES_PER_POLL).await? {
                            let derived = self.apply(&rules, time, &change);
                            self.input = seq;
                            self.append_all(derived).await?;
                        }
                        dirty = true;
                    }
                    let derived = self.derivation.tick(&self.rules(), now_ms());
                    dirty |= !derived.is_empty();
                    self.append_all(derived).await?;
                }
                _ = renew.tick() => {
                    match claim(self.shared, self.term, Some(self.lease_revision)).await {
                        Ok(Some(revision)) => {
                            self.lease_revision = revision;
                            self.renewed = tokio::time::Instant::now();
                        }
                        Ok(None) => return Ok(()), // someone took the lease
                        Err(e) => tracing::debug!(error = %e, "deriver lease not renewed"),
                    }
                }
                _ = snapshot_every.tick() => {
                    if dirty {
                        self.store_snapshot().await;
                        dirty = false;
                    }
                }
            }
            let (members, pending) = self.derivation.sizes();
            metrics::gauge!(MEMBERS_GAUGE).set(members as f64);
            metrics::gauge!(SCHEDULED_GAUGE).set(pending as f64);
        }
    }

    /// Appends `events` in order; an error (or another writer) ends the tenure.
    async fn append_all(&mut self, events: Vec<StoredEvent>) -> Result<(), BrokerError> {
        for event in events {
            if self.renewed.elapsed() > DERIVER_LEASE * 3 / 4 {
                return Err(BrokerError::Unavailable(
                    "the deriver lease could not be renewed in time".into(),
                ));
            }
            match append(self.shared, self.term, (self.last, self.input), &event).await? {
                Some(seq) => {
                    self.last = seq;
                    metrics::counter!(APPENDED).increment(1);
                }
                None => {
                    return Err(BrokerError::Unavailable(
                        "another deriver appended to the event feed; stepping down".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    async fn store_snapshot(&self) {
        let Ok(setup) = self.shared.setup() else {
            return;
        };
        let stored = Stored {
            epoch: setup.events.epoch.clone(),
            state: self.derivation.snapshot(self.last, self.input),
        };
        let Ok(bytes) = serde_json::to_vec(&stored) else {
            return;
        };
        if bytes.len() > MAX_SNAPSHOT_BYTES {
            tracing::warn!(
                bytes = bytes.len(),
                "deriver snapshot too large to store; a new deriver replays more of the feed"
            );
            return;
        }
        if let Err(e) = setup.events.state.put(SNAPSHOT_KEY, bytes.into()).await {
            tracing::debug!(error = %e, "deriver snapshot not stored");
        }
    }
}

/// `(sequence, time in ms, change)` of the membership log from `from` on, at most `max`.
async fn read_log(
    events: &super::events::EventsSetup,
    from: u64,
    max: usize,
) -> Result<Vec<(u64, u64, MembershipChange)>, BrokerError> {
    let log = read_json::<MembershipChange>(&events.membership, MEMBERSHIP_SUBJECT, from, max);
    Ok(log
        .await?
        .into_iter()
        .map(|(seq, change, _, ms)| (seq, ms, change))
        .collect())
}

/// The room of a presence key (`<ns>.<room>.<edge>.<client>`).
fn room_of_key(key: &str) -> Option<RoomName> {
    let room = key.split('.').nth(1)?;
    untoken(room).and_then(|r| RoomName::new(&r).ok())
}
