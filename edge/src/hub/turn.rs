//! One upstream subscribe or unsubscribe per room at a time, without a lock object per room.
//!
//! A room's entry has a `busy` flag: whoever sets it (under the hub's lock) holds the room's
//! [`Turn`] and may call the broker tier for it; others wait on a `Notify` that the first of
//! them makes — so a room nobody contends for (nearly all of them) holds no allocation for
//! it. A turn ends when dropped (a failed call, a panic or a cancelled command included); the
//! entry's `generation` keeps a late turn from freeing a newer entry of the same name (after
//! a `reset`, or the room emptied and made again).

use std::sync::Arc;

use plaza_proto::RoomName;
use tokio::sync::Notify;

use super::{Hub, RoomEntry};

/// The right to call the broker tier for one room; see the module docs.
pub(super) struct Turn<'a> {
    hub: &'a Hub,
    room: &'a RoomName,
    generation: u32,
    /// Ended by [`Turn::end`] under the caller's lock; the drop then has nothing to do.
    ended: bool,
}

impl RoomEntry {
    /// Wakes whoever waits for this room's turn (they look at the room again).
    pub(super) fn wake_waiters(&mut self) {
        if let Some(idle) = self.idle.take() {
            idle.notify_waiters();
        }
    }
}

impl<'a> Turn<'a> {
    /// Whether `entry` is the one this turn was taken on.
    pub(super) fn owns(&self, entry: &RoomEntry) -> bool {
        entry.generation == self.generation
    }

    /// Ends the turn with the hub's lock held by the caller (`entry` is the room's entry, if
    /// it still has one).
    pub(super) fn end(mut self, entry: Option<&mut RoomEntry>) {
        if let Some(entry) = entry {
            self.release(entry);
        }
        self.ended = true;
    }

    /// Frees `entry` for the next turn and wakes its waiters, if it is this turn's.
    fn release(&self, entry: &mut RoomEntry) {
        if self.owns(entry) {
            entry.busy = false;
            entry.wake_waiters();
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        if let Some(entry) = self.hub.rooms().get_mut(self.room) {
            self.release(entry);
        }
    }
}

/// What [`Hub::turn`] came to.
pub(super) enum Taken<'a, R> {
    /// The caller holds the room's turn.
    Turn(Turn<'a>),
    /// `decide` answered without a turn.
    Decided(R),
    /// The room has no entry (any more).
    Gone,
}

impl Hub {
    /// Waits for `room`'s turn. Under the hub's lock, first (and again after every wait)
    /// `decide` looks at the entry: an answer ends the wait without a turn.
    pub(super) async fn turn<'a, R>(
        &'a self,
        room: &'a RoomName,
        decide: impl Fn(&RoomEntry) -> Option<R>,
    ) -> Taken<'a, R> {
        loop {
            let wait = {
                let mut rooms = self.rooms();
                let Some(entry) = rooms.get_mut(room) else {
                    return Taken::Gone;
                };
                if let Some(answer) = decide(entry) {
                    return Taken::Decided(answer);
                }
                if !entry.busy {
                    entry.busy = true;
                    return Taken::Turn(Turn {
                        hub: self,
                        room,
                        generation: entry.generation,
                        ended: false,
                    });
                }
                let idle: &Arc<Notify> = entry.idle.get_or_insert_with(Default::default);
                // Registered before the lock is released, so the end of the turn cannot slip
                // in between (boxed: only a contended room ever waits).
                let mut wait = Box::pin(idle.clone().notified_owned());
                wait.as_mut().enable();
                wait
            };
            wait.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use plaza_proto::Position;
    use plaza_proto::cluster::BrokerError;
    use tokio::sync::oneshot;

    use super::*;
    use crate::outbox::Outbox;

    fn room() -> RoomName {
        RoomName::new("chat:turns").unwrap()
    }

    fn at(offset: u64) -> Position {
        Position {
            epoch: "e".into(),
            offset,
        }
    }

    fn register(hub: &Hub, session: u64) {
        hub.register(&room(), session, Outbox::new(1024), false, false);
    }

    /// A hub with subscribers 1 and 2 registered in the room, the room, and a call counter.
    fn two_subscribers() -> (Hub, RoomName, AtomicUsize) {
        let hub = Hub::new();
        register(&hub, 1);
        register(&hub, 2);
        (hub, room(), AtomicUsize::new(0))
    }

    /// An upstream subscribe that counts its calls and answers after `delay`.
    async fn subscribe(
        calls: &AtomicUsize,
        delay: Duration,
        result: Result<Position, BrokerError>,
    ) -> Result<Position, BrokerError> {
        calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(delay).await;
        result
    }

    #[tokio::test]
    async fn concurrent_first_subscribers_subscribe_upstream_once() {
        let (hub, r, calls) = two_subscribers();
        let slow = Duration::from_millis(50);
        let (a, b) = tokio::join!(
            hub.ensure_upstream(&r, || subscribe(&calls, slow, Ok(at(7)))),
            hub.ensure_upstream(&r, || subscribe(&calls, slow, Ok(at(9)))),
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "one upstream subscribe per room"
        );
        assert_eq!((a.unwrap(), b.unwrap()), (at(7), at(7)));
        let entry = &hub.rooms()[&room()];
        assert!(
            !entry.busy && entry.idle.is_none(),
            "the turn ended and its waiter left"
        );
    }

    #[tokio::test]
    async fn a_failed_subscribe_passes_the_turn_to_the_next_subscriber() {
        let (hub, r, calls) = two_subscribers();
        let slow = Duration::from_millis(50);
        let failing = Err(BrokerError::Unavailable("down".into()));
        let (a, b) = tokio::join!(
            hub.ensure_upstream(&r, || subscribe(&calls, slow, failing)),
            async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                hub.ensure_upstream(&r, || subscribe(&calls, slow, Ok(at(3))))
                    .await
            },
        );
        assert!(a.is_err());
        assert_eq!(
            b.unwrap(),
            at(3),
            "the waiter subscribed once the turn was free"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_subscriber_arriving_during_the_last_unsubscribe_subscribes_again() {
        let hub = Hub::new();
        let r = room();
        let calls = AtomicUsize::new(0);
        register(&hub, 1);
        let quick = Duration::ZERO;
        hub.ensure_upstream(&r, || subscribe(&calls, quick, Ok(at(1))))
            .await
            .unwrap();
        let (unsubscribing, unsubscribed) = oneshot::channel::<()>();
        let (release, released) = oneshot::channel::<()>();
        let leave = hub.remove(&r, 1, || async move {
            let _ = unsubscribing.send(());
            let _ = released.await;
            Ok(())
        });
        let join = async {
            unsubscribed.await.unwrap();
            // The upstream unsubscribe is under way: a new subscriber must wait for it.
            register(&hub, 2);
            let joined = hub.ensure_upstream(&r, || subscribe(&calls, quick, Ok(at(5))));
            let mut joined = std::pin::pin!(joined);
            assert!(
                tokio::time::timeout(Duration::from_millis(30), joined.as_mut())
                    .await
                    .is_err(),
                "waits for the unsubscribe's turn"
            );
            release.send(()).unwrap();
            joined.await
        };
        let ((), joined) = tokio::join!(leave, join);
        assert_eq!(
            joined.unwrap(),
            at(5),
            "subscribed afresh after the unsubscribe"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(hub.room_count(), 1, "the room stays for its new subscriber");
        assert!(hub.rooms()[&room()].active);
    }

    #[tokio::test]
    async fn a_reset_wakes_the_waiters_and_a_late_turn_leaves_the_new_room_alone() {
        let (hub, r, calls) = two_subscribers();
        let first = hub.ensure_upstream(&r, || {
            subscribe(&calls, Duration::from_millis(100), Ok(at(1)))
        });
        let second = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let waiting = hub.ensure_upstream(&r, || subscribe(&calls, Duration::ZERO, Ok(at(2))));
            let mut waiting = std::pin::pin!(waiting);
            assert!(
                tokio::time::timeout(Duration::from_millis(10), waiting.as_mut())
                    .await
                    .is_err()
            );
            hub.reset();
            let waited = waiting.await;
            // The room is made again (same name) while the first turn is still out.
            register(&hub, 3);
            waited
        };
        let (first, second) = tokio::join!(first, second);
        assert!(
            second.is_err(),
            "a waiter of the reset room is told it ended"
        );
        assert!(first.is_err(), "the late turn's room is gone");
        let entry = &hub.rooms()[&room()];
        assert!(
            !entry.busy && !entry.active,
            "the late turn neither freed nor marked the new entry"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
