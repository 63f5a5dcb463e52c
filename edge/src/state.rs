//! Live-state rooms on the edge: the per-connection write rate and conflation of the changes
//! pushed to local subscribers.
//!
//! ```text
//!  set/delete ──StateRate (per connection)──▶ node/state.rs checks ──▶ EdgeLink::state_write
//!  LinkEvent::Room (state room, conflate_per_second > 0) ──▶ Conflator ──▶ Hub::dispatch
//! ```
//!
//! Conflation works per room on this edge: a change arriving when the room's last push is at
//! least `1 / conflate_per_second` old, with nothing pending, is dispatched at once; otherwise
//! it waits, replacing any pending change of the same key, and all pending changes are
//! dispatched together (in offset order) when the interval is over. So each key is pushed at
//! most `conflate_per_second` times a second, the last change always goes out, and every
//! dispatch covers every change up to its highest offset — a subscriber's position never
//! passes a change it did not get (which per-key timers could not promise).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plaza_proto::cluster::{RoomEvent, RoomEventKind};
use plaza_proto::state::StateChange;
use plaza_proto::{ErrorBody, ErrorCode, RoomName};
use tokio::time::Instant;

use crate::config::LimitsConfig;
use crate::hub::Hub;
use crate::metrics as m;
use crate::outbox::Flushes;

/// One connection's state writes per second. Made on its first write.
pub(crate) struct StateRate(crate::limits::Bucket);

impl StateRate {
    /// A limiter with the configured rate and burst.
    pub(crate) fn new(limits: &LimitsConfig) -> Self {
        Self(crate::limits::bucket(crate::ephemeral::quota(
            limits.state_writes_per_second,
            limits.state_writes_burst,
        )))
    }

    /// Takes a token, or says why not.
    pub(crate) fn check(&self, limits: &LimitsConfig) -> Result<(), ErrorBody> {
        if self.0.check().is_ok() {
            return Ok(());
        }
        refused("rate_limited");
        metrics::counter!(m::LIMIT_HITS, "limit" => "state_writes_per_connection").increment(1);
        Err(ErrorCode::RateLimited.with(format!(
            "at most {} state writes per second per connection (burst {}); slow down",
            limits.state_writes_per_second, limits.state_writes_burst
        )))
    }
}

/// Counts a refused state write.
pub(crate) fn refused(reason: &'static str) {
    metrics::counter!(m::STATE_REFUSED, "reason" => reason).increment(1);
}

/// Conflation of state rooms' changes before the hub (see the module docs). Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Conflator {
    rooms: Arc<Mutex<HashMap<RoomName, Pending>>>,
}

struct Pending {
    /// When the room may be pushed to again.
    next_at: Instant,
    /// The latest waiting change of each key.
    changes: BTreeMap<String, RoomEvent>,
    /// Whether a flush task is waiting for `next_at`.
    scheduled: bool,
}

impl Conflator {
    /// Dispatches `event` of a room conflated to `per_second` now or at the end of the room's
    /// interval.
    pub(crate) fn dispatch(
        &self,
        hub: &Hub,
        event: RoomEvent,
        per_second: u32,
        flushes: &mut Flushes,
    ) {
        let key = match &event.kind {
            RoomEventKind::Publication(p) => {
                StateChange::decode(&p.data).map(|c| c.key().to_owned())
            }
            _ => None,
        };
        let Some(key) = key else {
            hub.dispatch(event, flushes);
            return;
        };
        let interval = Duration::from_secs(1) / per_second.max(1);
        let now = Instant::now();
        let room = event.room.clone();
        let mut rooms = self.lock();
        let pending = rooms.entry(room.clone()).or_insert_with(|| Pending {
            next_at: now,
            changes: BTreeMap::new(),
            scheduled: false,
        });
        if pending.changes.is_empty() && now >= pending.next_at {
            pending.next_at = now + interval;
            drop(rooms);
            hub.dispatch(event, flushes);
            return;
        }
        if pending.changes.insert(key, event).is_some() {
            metrics::counter!(m::STATE_CONFLATED).increment(1);
        }
        if !pending.scheduled {
            pending.scheduled = true;
            let at = pending.next_at;
            let (this, hub) = (self.clone(), hub.clone());
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                this.flush(&hub, &room, interval);
                // Forget the room once a whole interval passed without changes.
                tokio::time::sleep(interval).await;
                let mut rooms = this.lock();
                if rooms
                    .get(&room)
                    .is_some_and(|p| !p.scheduled && p.changes.is_empty())
                {
                    rooms.remove(&room);
                }
            });
        }
    }

    fn flush(&self, hub: &Hub, room: &RoomName, interval: Duration) {
        // Dispatched under the lock, so a change arriving meanwhile waits for the next flush
        // instead of overtaking these.
        let mut rooms = self.lock();
        let Some(pending) = rooms.get_mut(room) else {
            return;
        };
        pending.scheduled = false;
        pending.next_at = Instant::now() + interval;
        let mut changes: Vec<RoomEvent> =
            std::mem::take(&mut pending.changes).into_values().collect();
        changes.sort_by_key(|e| match &e.kind {
            RoomEventKind::Publication(p) => p.offset,
            _ => 0,
        });
        let mut flushes = Flushes::default();
        for event in changes {
            hub.dispatch(event, &mut flushes);
        }
        drop(rooms);
        flushes.run();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RoomName, Pending>> {
        // Every update is a whole insert/remove/take: a poisoned map is still consistent.
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }
}
