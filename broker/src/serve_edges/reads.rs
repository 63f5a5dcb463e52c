//! Read barriers shared by concurrent reads (Raft "read index" batching).
//!
//! A linearizable read (`history`, `presence`, `presence_stats`, `rooms`, a subscribe's
//! position) needs one read barrier ([`RaftNode::read_barrier`]): a quorum check on the leader
//! and, on a follower, a round trip to it. Taken per read, a flood of reads — any number of
//! clients asking for presence at once — costs as many quorum rounds. Here at most one barrier
//! is in flight per broker; every read that arrives meanwhile waits for the *next* barrier, and
//! that one barrier serves all of them:
//!
//! ```text
//!  read A ─┐                 read C ─┐
//!  read B ─┴─▶ barrier 1 ─▶ A, B ok  read D ─┴─▶ barrier 2 ─▶ C, D ok
//!                 (C, D arrive while barrier 1 is in flight: they wait for barrier 2)
//! ```
//!
//! Each read is served by a barrier that *started after the read arrived*, so it sees every
//! write acknowledged before it arrived: batching keeps reads linearizable. Barriers run at
//! most one at a time, so their rate is bounded by the round trip, not by the read rate.
//! `plaza_broker_reads_total` counts reads, `plaza_broker_read_barriers_total` barriers.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::metrics as m;
use crate::raft::{ProposeError, RaftNode};

type Waiter = oneshot::Sender<Result<(), ProposeError>>;

/// The reads waiting for the next barrier, and whether one is in flight.
#[derive(Default)]
struct Queue {
    waiting: Vec<Waiter>,
    running: bool,
}

/// Shares read barriers between concurrent reads; one per broker.
#[derive(Clone, Default)]
pub(super) struct ReadBarriers {
    queue: Arc<Mutex<Queue>>,
}

impl ReadBarriers {
    /// Waits for a read barrier that started after this call: afterwards, `node`'s applied
    /// state holds every write acknowledged before the call.
    pub(super) async fn barrier(&self, node: &RaftNode) -> Result<(), ProposeError> {
        metrics::counter!(m::READS).increment(1);
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.waiting.push(tx);
            !std::mem::replace(&mut queue.running, true)
        };
        if start {
            // Its own task: the reads it serves must not depend on this caller staying alive.
            tokio::spawn(self.clone().run(node.clone()));
        }
        rx.await.unwrap_or_else(|_| {
            Err(ProposeError::Unavailable(
                "the read barrier task ended".into(),
            ))
        })
    }

    /// Runs barriers while reads wait for one, each serving those waiting when it started.
    async fn run(self, node: RaftNode) {
        loop {
            let batch = {
                let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                if queue.waiting.is_empty() {
                    queue.running = false;
                    return;
                }
                std::mem::take(&mut queue.waiting)
            };
            metrics::counter!(m::READ_BARRIERS).increment(1);
            let outcome = node.read_barrier().await;
            for waiter in batch {
                let _ = waiter.send(outcome.clone());
            }
        }
    }
}
