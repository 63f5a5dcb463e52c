//! Connection deadlines on one timer per edge instead of one per connection.
//!
//! A session keeps its deadlines itself (connect, idle, ping, token refresh and expiry, a
//! stalled writer, its turn in a drain) and checks them whenever its task runs; all it needs
//! from outside is a wake-up once the earliest is due. A tokio `Sleep` kept in every
//! connection's task for that is 112 bytes; here a connection has a 16-byte entry in one heap
//! that one task per edge pops as entries come due.
//!
//! ```text
//!   session ──schedule(at, outbox)──▶ heap of (at, Weak<Outbox>) ──due──▶ timer task ──▶ outbox.wake_session()
//!   drain   ──wake_all──────────────▶ every entry's session (each live session has one)
//! ```
//!
//! A session keeps its deadlines as [`Tick`]s (8 bytes each, in the timer's milliseconds)
//! rather than 16-byte `Instant`s.
//!
//! An entry is never removed early: a session whose deadline moved later is woken at the old
//! one, finds nothing due and schedules the new one. An entry of a connection that ended holds
//! only a `Weak` (the outbox's allocation, not its socket) until it comes due.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::outbox::Outbox;

/// A moment as the timer counts it: whole milliseconds since its base, rounded up, plus
/// one (never zero, so an `Option<Tick>` is 8 bytes too). Made and read by [`Timers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Tick(NonZeroU64);

/// The edge's connection timer. Cheap to share by reference (it lives in the node).
pub(crate) struct Timers {
    shared: Arc<Shared>,
}

struct Shared {
    /// Milliseconds are counted from here.
    base: Instant,
    state: Mutex<State>,
    /// Wakes the timer task when an entry earlier than its next wake-up is added.
    changed: Notify,
}

#[derive(Default)]
struct State {
    heap: BinaryHeap<Reverse<Entry>>,
    /// When the timer task wakes next (the earliest entry when it last looked).
    next: Option<u64>,
    /// Whether the timer task has been started (on the first entry, inside a runtime).
    running: bool,
}

/// A wake-up due at `at` (milliseconds since [`Shared::base`]); ordered by time only.
struct Entry {
    at: u64,
    outbox: Weak<Outbox>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            shared: Arc::new(Shared {
                base: Instant::now(),
                state: Mutex::new(State::default()),
                changed: Notify::new(),
            }),
        }
    }
}

impl Timers {
    /// `at` as a [`Tick`], rounded up to the millisecond: a deadline kept as a tick is never
    /// earlier than asked, and an entry scheduled for it comes due at the same millisecond.
    pub(crate) fn tick(&self, at: Instant) -> Tick {
        Tick(NonZeroU64::MIN.saturating_add(self.shared.millis(at)))
    }

    /// The moment `tick` stands for.
    pub(crate) fn instant(&self, tick: Tick) -> Instant {
        self.shared.base + Duration::from_millis(tick.0.get() - 1)
    }

    /// Wakes the session of `outbox` at `at` (or within a millisecond after).
    pub(crate) fn schedule(&self, at: Tick, outbox: &Arc<Outbox>) {
        let at = at.0.get() - 1;
        let mut state = self.shared.state();
        state.heap.push(Reverse(Entry {
            at,
            outbox: Arc::downgrade(outbox),
        }));
        if !state.running {
            state.running = true;
            tokio::spawn(run(self.shared.clone()));
        }
        if state.next.is_none_or(|next| at < next) {
            state.next = Some(at);
            drop(state);
            self.shared.changed.notify_one();
        }
    }

    /// Wakes every session that has an entry — every live one (the edge started draining).
    pub(crate) fn wake_all(&self) {
        let outboxes: Vec<Weak<Outbox>> = self
            .shared
            .state()
            .heap
            .iter()
            .map(|Reverse(e)| e.outbox.clone())
            .collect();
        for outbox in outboxes.iter().filter_map(Weak::upgrade) {
            outbox.wake_session();
        }
    }

    /// Entries waiting (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shared.state().heap.len()
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Every update is a single push or pop: a poisoned heap is still a heap.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An entry's deadline `at` in milliseconds since `base`, rounded up, and the clock's
    /// `now` rounded down ([`Shared::now`]): an entry is due only once its deadline has passed,
    /// never a fraction of a millisecond before it — a session woken before its deadline finds
    /// nothing due and, its entry gone, would sleep past it.
    fn millis(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.base).as_nanos();
        u64::try_from(nanos.div_ceil(1_000_000)).unwrap_or(u64::MAX)
    }

    /// The current time in whole milliseconds since `base`, rounded down.
    fn now(&self) -> u64 {
        let nanos = Instant::now()
            .saturating_duration_since(self.base)
            .as_nanos();
        u64::try_from(nanos / 1_000_000).unwrap_or(u64::MAX)
    }
}

/// The timer task: wakes the sessions whose entries are due, then sleeps until the next one
/// (or until an earlier one is added). Runs as long as the runtime.
async fn run(shared: Arc<Shared>) {
    let mut due: Vec<Weak<Outbox>> = Vec::new();
    loop {
        let changed = shared.changed.notified();
        let mut changed = std::pin::pin!(changed);
        changed.as_mut().enable();
        let now = shared.now();
        let next = {
            let mut state = shared.state();
            while let Some(Reverse(entry)) = state.heap.peek()
                && entry.at <= now
            {
                if let Some(Reverse(entry)) = state.heap.pop() {
                    due.push(entry.outbox);
                }
            }
            if state.heap.capacity() > 1024 && state.heap.len() < state.heap.capacity() / 4 {
                let keep = state.heap.len() * 2;
                state.heap.shrink_to(keep);
            }
            state.next = state.heap.peek().map(|Reverse(e)| e.at);
            state.next
        };
        for outbox in due.drain(..).filter_map(|w| w.upgrade()) {
            outbox.wake_session();
        }
        match next {
            Some(at) => {
                let at = shared.base + Duration::from_millis(at);
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = changed => {}
                }
            }
            None => changed.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::task::Poll;

    use super::*;

    /// Resolves once `outbox`'s session is woken.
    async fn woken(outbox: &Outbox) {
        let mut registered = false;
        poll_fn(|cx| {
            if registered {
                return Poll::Ready(());
            }
            outbox.register_session(cx.waker());
            registered = true;
            Poll::Pending
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_are_woken_at_their_deadlines_in_order() {
        let timers = Timers::default();
        let (a, b) = (Outbox::new(1024), Outbox::new(1024));
        let start = Instant::now();
        timers.schedule(timers.tick(start + Duration::from_millis(300)), &a);
        timers.schedule(timers.tick(start + Duration::from_millis(100)), &b);
        woken(&b).await;
        assert!(start.elapsed() >= Duration::from_millis(100));
        assert!(start.elapsed() < Duration::from_millis(300));
        woken(&a).await;
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert_eq!(timers.len(), 0, "due entries are gone");
    }

    #[tokio::test(start_paused = true)]
    async fn no_session_is_woken_before_its_deadline() {
        let timers = Timers::default();
        let start = Instant::now();
        let first = Outbox::new(1024);
        timers.schedule(timers.tick(start + Duration::from_secs(60)), &first);
        tokio::task::yield_now().await;
        // The timer task looks again at a moment that is not a whole millisecond, for an
        // entry due half a millisecond later: it must wait for it, not wake it early.
        tokio::time::advance(Duration::from_micros(10_200)).await;
        let due = start + Duration::from_micros(10_500);
        let session = Outbox::new(1024);
        timers.schedule(timers.tick(due), &session);
        woken(&session).await;
        assert!(
            Instant::now() >= due,
            "woken {:?} early",
            due - Instant::now()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_entry_wakes_the_timer_sooner_and_dead_sessions_are_skipped() {
        let timers = Timers::default();
        let late = Outbox::new(1024);
        let start = Instant::now();
        timers.schedule(timers.tick(start + Duration::from_secs(60)), &late);
        tokio::task::yield_now().await;
        let gone = Outbox::new(1024);
        timers.schedule(timers.tick(start + Duration::from_millis(5)), &gone);
        drop(gone);
        let soon = Outbox::new(1024);
        timers.schedule(timers.tick(start + Duration::from_millis(10)), &soon);
        woken(&soon).await;
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "not held up by the 60 s entry"
        );
        assert_eq!(timers.len(), 1);
        let all = Outbox::new(1024);
        timers.schedule(timers.tick(start + Duration::from_secs(30)), &all);
        let waiting = woken(&all);
        let mut waiting = std::pin::pin!(waiting);
        assert!(futures_util::poll!(waiting.as_mut()).is_pending());
        timers.wake_all();
        waiting.await;
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "woken by the drain, not the clock"
        );
    }
}
