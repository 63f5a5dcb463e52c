//! Keys of live-state rooms on NATS that leave without a client asking (see `state.rs`):
//! each link's own TTLs and tied keys ([`OwnKeys`], [`sweep`], [`release_all`]), a reaped
//! edge's tied keys ([`release_dead_edge`]) and the one state keeper for orphaned TTLs
//! ([`keep`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use plaza_proto::cluster::BrokerError;
use plaza_proto::state::{StateAck, StateWrite};
use plaza_proto::{ClientId, RoomName};

use super::Shared;
use super::events::now_ms;
use super::link::{LinkInner, last_sequence};
use super::names::{state_keys_filter, untoken};
use super::read::{Stored, read_all, read_some};
use super::state::{KeyChange, Written, ack, compare_and_delete, state_room, write};

/// How often a link deletes its keys whose TTL ran out.
const SWEEP_EVERY: Duration = Duration::from_millis(100);
/// A failed deletion (NATS unavailable) is tried again this much later.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// The state keeper's lease (another link takes over after it) and its key.
const KEEPER_LEASE: Duration = Duration::from_secs(3);
const KEEPER_KEY: &str = "state-keeper";
/// How often a link that is not the keeper tries to become it, and how often the keeper
/// reads new changes and deletes orphaned expired keys.
const KEEPER_EVERY: Duration = Duration::from_millis(500);
/// The keeper leaves an expired key this long to its writing link first.
const KEEPER_GRACE: Duration = Duration::from_secs(1);
/// Most changes the keeper reads from one stream per round (the rest on the next).
const KEEPER_BATCH: usize = 5000;

/// Whether the keeper role is held by this process (1) or not (0).
const KEEPER_GAUGE: &str = "plaza_backend_nats_state_keeper";
/// Keys deleted because their TTL ran out.
const EXPIRED: &str = "plaza_backend_nats_state_expired_total";
/// Keys deleted because their connection released them or their edge went away.
const RELEASED: &str = "plaza_backend_nats_state_released_total";

/// The keys a link wrote that it must delete later: tied to one of its connections, or
/// with a TTL. One entry per key (a newer write replaces it); an entry whose key changed
/// since costs one failed compare-and-delete.
#[derive(Default)]
pub(super) struct OwnKeys {
    /// Tied keys by connection: (room, key) → version.
    tied: HashMap<ClientId, HashMap<(RoomName, String), u64>>,
    /// Keys with a TTL (or a deletion to retry): (room, key) → (when, version).
    due: HashMap<(RoomName, String), (u64, u64)>,
    /// `due` ordered by time.
    queue: BTreeSet<(u64, RoomName, String)>,
}

impl OwnKeys {
    fn forget(&mut self, room: &RoomName, key: &str) {
        let id = (room.clone(), key.to_owned());
        if let Some((at, _)) = self.due.remove(&id) {
            self.queue.remove(&(at, id.0.clone(), id.1.clone()));
        }
        self.tied.retain(|_, keys| {
            keys.remove(&id);
            !keys.is_empty()
        });
    }

    fn schedule(&mut self, room: RoomName, key: String, at: u64, version: u64) {
        let id = (room, key);
        if let Some((old, _)) = self.due.insert(id.clone(), (at, version)) {
            self.queue.remove(&(old, id.0.clone(), id.1.clone()));
        }
        self.queue.insert((at, id.0, id.1));
    }

    /// Follows up a write of this link (a set to track, or a delete that ends tracking).
    pub(super) fn wrote(&mut self, room: &RoomName, key: &str, written: Option<Written>) {
        self.forget(room, key);
        let Some(w) = written else { return };
        if let Some(client) = w.tied {
            self.tied
                .entry(client)
                .or_default()
                .insert((w.room.clone(), w.key.clone()), w.version);
        }
        if let Some(at) = w.expires {
            self.schedule(w.room, w.key, at, w.version);
        }
    }

    /// Takes the keys tied to `client` (all connections' with `None`).
    fn take_tied(&mut self, client: Option<&ClientId>) -> Vec<((RoomName, String), u64)> {
        let taken: Vec<_> = match client {
            Some(c) => self
                .tied
                .remove(c)
                .map(|k| k.into_iter().collect())
                .unwrap_or_default(),
            None => self.tied.drain().flat_map(|(_, k)| k).collect(),
        };
        for ((room, key), _) in &taken {
            if let Some((at, _)) = self.due.remove(&(room.clone(), key.clone())) {
                self.queue.remove(&(at, room.clone(), key.clone()));
            }
        }
        taken
    }

    /// Takes the deletions due by `now`.
    fn take_due(&mut self, now: u64) -> Vec<((RoomName, String), u64)> {
        let mut out = Vec::new();
        while let Some((at, _, _)) = self.queue.first()
            && *at <= now
        {
            let Some((_, room, key)) = self.queue.pop_first() else {
                break;
            };
            if let Some((_, version)) = self.due.remove(&(room.clone(), key.clone())) {
                out.push(((room, key), version));
            }
        }
        out
    }
}

/// Deletes `keys` (compare-and-delete on each version) through `inner`; a key changed since
/// is left alone. Returns the last deletion's position and the keys that could not be
/// reached (NATS unavailable).
async fn delete_own(
    inner: &LinkInner,
    keys: Vec<((RoomName, String), u64)>,
) -> (Option<StateAck>, Vec<((RoomName, String), u64)>) {
    let mut last = None;
    let mut failed = Vec::new();
    for ((room, key), version) in keys {
        let lock = inner.room_lock(&room);
        match write(
            &inner.shared,
            &inner.edge_token,
            Some(lock),
            &room,
            compare_and_delete(key.clone(), version),
        )
        .await
        {
            Ok((ack, _)) => last = Some(ack),
            Err(BrokerError::StateConflict { .. } | BrokerError::NotStateRoom { .. }) => {}
            Err(e) => {
                tracing::debug!(%room, error = %e, "state key not deleted yet");
                failed.push(((room, key), version));
            }
        }
    }
    (last, failed)
}

/// Deletes every key tied to a connection of `inner`'s edge (the link closes). False if some
/// could not be deleted now: the caller then leaves the edge's lease to run out, so the edge
/// that reaps it deletes them (`release_dead_edge`).
pub(super) async fn release_all(inner: &LinkInner) -> bool {
    let keys = inner.state().own_keys.take_tied(None);
    let count = keys.len();
    let (_, failed) = delete_own(inner, keys).await;
    metrics::counter!(RELEASED).increment((count - failed.len()) as u64);
    if !failed.is_empty() {
        tracing::warn!(
            keys = failed.len(),
            "tied state keys not deleted on close; they go when this edge's lease runs out"
        );
    }
    failed.is_empty()
}

/// Deletes the keys tied to `client` of `inner`'s edge and answers with `room`'s position
/// after them. Keys that could not be deleted now are retried by the sweeper.
async fn release(
    inner: &LinkInner,
    room: &RoomName,
    client: &ClientId,
) -> Result<StateAck, BrokerError> {
    let keys = inner.state().own_keys.take_tied(Some(client));
    let count = keys.len();
    let (last, failed) = delete_own(inner, keys).await;
    metrics::counter!(RELEASED).increment((count - failed.len()) as u64);
    if !failed.is_empty() {
        let retry_at = now_ms() + millis(RETRY_AFTER);
        let mut state = inner.state();
        for ((r, key), version) in failed {
            state.own_keys.schedule(r, key, retry_at, version);
        }
    }
    match last {
        Some(ack) => Ok(ack),
        None => {
            let (ns, subjects, _) = inner.shared.room(room)?;
            let offset = last_sequence(&ns.stream, &subjects.chain).await?;
            Ok(ack(&ns.epoch, offset))
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Deletes the link's keys whose TTL ran out (and retries failed deletions), every
/// [`SWEEP_EVERY`], for as long as the link lives.
pub(super) async fn sweep(link: Weak<LinkInner>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(inner) = link.upgrade() else { return };
        let due = inner.state().own_keys.take_due(now_ms());
        if due.is_empty() {
            continue;
        }
        let count = due.len();
        let (_, failed) = delete_own(&inner, due).await;
        metrics::counter!(EXPIRED).increment((count - failed.len()) as u64);
        let retry_at = now_ms() + millis(RETRY_AFTER);
        let mut state = inner.state();
        for ((room, key), version) in failed {
            state.own_keys.schedule(room, key, retry_at, version);
        }
    }
}

/// The streams of the namespaces with state rooms: (stream, key-subject filter).
fn state_streams(shared: &Shared) -> Vec<(&super::NsStream, String)> {
    let Ok(setup) = shared.setup() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let defaults = std::iter::once((None, &shared.rooms.defaults));
    let named = shared
        .configured
        .iter()
        .map(|n| (Some(n.as_str()), shared.namespaces.get(n)));
    for (name, options) in defaults.chain(named) {
        if !options.state.enabled {
            continue;
        }
        if let Some(ns) = setup.streams.get(&super::names::stream_name(name)) {
            out.push((ns, state_keys_filter(&ns.token)));
        }
    }
    out
}

/// The room and key of a stored change on a key subject `plaza.r.<ns>.<room>.s.<key>`.
fn room_of(subject: &str) -> Option<RoomName> {
    let mut parts = subject.split('.').skip(3);
    let room = parts.next()?;
    RoomName::new(&untoken(room)?).ok()
}

/// Deletes every key tied to a connection of the edge with lease token `edge` (its lease ran
/// out and this link reaped it): scans the state namespaces' last changes for its name.
pub(super) async fn release_dead_edge(shared: &Shared, edge: &str) -> Result<(), BrokerError> {
    let prefix = format!("{edge} ");
    for (ns, filter) in state_streams(shared) {
        let stored = read_all(&ns.stream, filter, DeliverPolicy::LastPerSubject).await?;
        let mut latest: HashMap<&str, (&Stored, KeyChange)> = HashMap::new();
        for s in &stored {
            if let Some(c) = KeyChange::of_stored(s) {
                latest.insert(s.subject.as_str(), (s, c));
            }
        }
        for (s, change) in latest.into_values() {
            let tied_here = change
                .tied
                .as_deref()
                .is_some_and(|t| t.starts_with(&prefix));
            if !tied_here || change.current() == 0 {
                continue;
            }
            let Some(room) = room_of(&s.subject) else {
                continue;
            };
            let key = change.change.key().to_owned();
            match write(
                shared,
                edge,
                None,
                &room,
                compare_and_delete(key, change.version),
            )
            .await
            {
                Ok(_) => metrics::counter!(RELEASED).increment(1),
                Err(BrokerError::StateConflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Competes for the state keeper role as `term` for as long as the task runs (the link aborts
/// it); does nothing when no namespace has state rooms.
pub(super) async fn keep(shared: Arc<Shared>, term: String) {
    let any = shared.rooms.defaults.state.enabled
        || shared
            .configured
            .iter()
            .any(|n| shared.namespaces.get(n).state.enabled);
    if !any {
        return;
    }
    let mut every = tokio::time::interval(KEEPER_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if shared.setup().is_err() {
            continue;
        }
        let claimed =
            super::deriver::claim_role(&shared, KEEPER_KEY, KEEPER_LEASE, &term, None).await;
        let Ok(Some(revision)) = claimed else {
            continue;
        };
        tracing::info!(%term, "this edge keeps the state rooms' TTLs");
        metrics::gauge!(KEEPER_GAUGE).set(1.0);
        let outcome = Keeper::default().run(&shared, &term, revision).await;
        metrics::gauge!(KEEPER_GAUGE).set(0.0);
        if let Err(e) = outcome {
            tracing::warn!(%term, error = %e, "state keeper stopped");
        }
    }
}

/// Gives the keeper role up at once (a closing link), if `term` holds it.
pub(super) async fn release_keeper(shared: &Shared, term: &str) {
    super::deriver::release_role(shared, KEEPER_KEY, term).await;
}

/// The keeper's view: every key with a TTL, by stream and subject.
#[derive(Default)]
struct Keeper {
    /// (stream index, subject) → (expires, version, room, key).
    keys: HashMap<(usize, String), (u64, u64, RoomName, String)>,
    queue: BTreeSet<(u64, usize, String)>,
    /// Per stream: the last sequence read.
    read: Vec<u64>,
}

impl Keeper {
    fn follow(&mut self, stream: usize, s: &Stored) {
        self.read[stream] = self.read[stream].max(s.sequence);
        let id = (stream, s.subject.clone());
        if let Some((at, ..)) = self.keys.remove(&id) {
            self.queue.remove(&(at, stream, s.subject.clone()));
        }
        let Some(change) = KeyChange::of_stored(s) else {
            return;
        };
        let (Some(at), true) = (change.expires, change.current() != 0) else {
            return;
        };
        let Some(room) = room_of(&s.subject) else {
            return;
        };
        self.queue.insert((at, stream, s.subject.clone()));
        let key = change.change.key().to_owned();
        self.keys.insert(id, (at, change.version, room, key));
    }

    /// Holds the role until the lease is lost: reads every state stream's last changes, then
    /// follows them and deletes keys expired for longer than [`KEEPER_GRACE`].
    async fn run(mut self, shared: &Shared, term: &str, revision: u64) -> Result<(), BrokerError> {
        let mut revision = revision;
        let mut renewed = tokio::time::Instant::now();
        let streams = state_streams(shared);
        self.read = vec![0; streams.len()];
        for (i, (ns, filter)) in streams.iter().enumerate() {
            let stored =
                read_all(&ns.stream, filter.clone(), DeliverPolicy::LastPerSubject).await?;
            for s in &stored {
                self.follow(i, s);
            }
        }
        let mut every = tokio::time::interval(KEEPER_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if renewed.elapsed() >= KEEPER_LEASE / 3 {
                match super::deriver::claim_role(
                    shared,
                    KEEPER_KEY,
                    KEEPER_LEASE,
                    term,
                    Some(revision),
                )
                .await?
                {
                    Some(r) => {
                        revision = r;
                        renewed = tokio::time::Instant::now();
                    }
                    None => return Ok(()), // another link took over
                }
            }
            for (i, (ns, filter)) in streams.iter().enumerate() {
                let start_sequence = self.read[i] + 1;
                let policy = DeliverPolicy::ByStartSequence { start_sequence };
                let stored = read_some(&ns.stream, filter.clone(), policy, KEEPER_BATCH).await?;
                for s in &stored {
                    self.follow(i, s);
                }
            }
            let now = now_ms();
            let grace = millis(KEEPER_GRACE);
            while let Some((at, _, _)) = self.queue.first()
                && at.saturating_add(grace) <= now
                && renewed.elapsed() < KEEPER_LEASE * 3 / 4
            {
                let Some((_, stream, subject)) = self.queue.pop_first() else {
                    break;
                };
                let Some((_, version, room, key)) = self.keys.remove(&(stream, subject)) else {
                    continue;
                };
                match write(shared, "", None, &room, compare_and_delete(key, version)).await {
                    Ok(_) => metrics::counter!(EXPIRED).increment(1),
                    Err(BrokerError::StateConflict { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// Carries out a [`StateWrite`] through `inner` (sets and deletes through [`write`], releases
/// of the link's own keys through [`release`]).
pub(super) async fn state_write(
    inner: &LinkInner,
    room: RoomName,
    w: StateWrite,
) -> Result<StateAck, BrokerError> {
    inner.check_open()?;
    let key = match &w {
        StateWrite::Release { client } => {
            state_room(&inner.shared, &room)?;
            return release(inner, &room, client).await;
        }
        StateWrite::Set { key, .. } | StateWrite::Delete { key, .. } => key.clone(),
    };
    let lock = inner.room_lock(&room);
    let (ack, written) = write(&inner.shared, &inner.edge_token, Some(lock), &room, w).await?;
    inner.state().own_keys.wrote(&room, &key, written);
    Ok(ack)
}
