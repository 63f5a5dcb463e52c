//! Group commit: concurrent proposals gathered into one Raft entry.
//!
//! ```text
//!   propose() ─┐                     ┌─ client_write_ff(Batch{now, cmds…}) ─▶ Raft
//!   propose() ─┼─▶ mpsc (bounded) ──▶│  batcher task: take the first proposal, then whatever
//!   propose() ─┘                     └─ else is queued, up to `max_batch` commands and
//!                                       `max_batch_bytes` (a proposal that would pass the
//!                                       byte limit opens the next batch instead)
//!                         waiter task per batch ◀── commit + apply ── split results ─▶ callers
//! ```
//!
//! Up to `max_inflight` batches are in Raft at once (pipelining: the next batch is appended
//! while the previous one replicates). While all slots are busy, proposals pile up in the
//! queue and the next batch takes them all, so batch size grows with load by itself and a
//! lone proposal is never delayed waiting for company. Entries reach the log in submission
//! order, so proposals queued earlier commit earlier.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::errors::ProposeError;
use super::state_machine::Shared;
use super::types::{Batch, BrokerNode, NodeId, Raft, Request, Response};
use plaza_rooms::Command;

/// One caller's commands and where to send their results.
pub(crate) struct Proposal {
    pub commands: Vec<Command>,
    pub reply: oneshot::Sender<Result<Committed, ProposeError>>,
}

/// Commands' results and the log entry that carried them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Committed {
    /// The index of the entry: applied on the leader when this is returned; a follower waits
    /// until it has applied it too before reading.
    pub index: u64,
    /// One result per command, in order.
    pub results: Response,
}

/// The batcher's settings.
pub(crate) struct Limits {
    pub max_batch: usize,
    /// Most bytes of commands in one entry ([`Command::size_hint`]): an entry must fit in one
    /// QUIC frame with room to spare, or replicating it would fail on every try.
    pub max_batch_bytes: usize,
    pub max_inflight: usize,
}

fn proposal_bytes(p: &Proposal) -> usize {
    p.commands.iter().map(Command::size_hint).sum()
}

/// Runs until the queue's senders are all gone (the node shut down).
pub(crate) async fn run(
    raft: Raft,
    sm: Arc<Shared>,
    mut rx: mpsc::Receiver<Proposal>,
    limits: Limits,
) {
    let inflight = Arc::new(Semaphore::new(limits.max_inflight.max(1)));
    // A proposal taken from the queue that did not fit in the previous batch.
    let mut carried: Option<Proposal> = None;
    loop {
        let Ok(permit) = Arc::clone(&inflight).acquire_owned().await else {
            break;
        };
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => break,
            },
        };
        let mut count = first.commands.len();
        let mut bytes = proposal_bytes(&first);
        let mut taken = vec![first];
        while count < limits.max_batch {
            match rx.try_recv() {
                Ok(p) => {
                    let size = proposal_bytes(&p);
                    if bytes + size > limits.max_batch_bytes {
                        carried = Some(p);
                        break;
                    }
                    count += p.commands.len();
                    bytes += size;
                    taken.push(p);
                }
                Err(_) => break,
            }
        }
        let has_epoch = sm.read().rooms.is_some();
        if !has_epoch && let Err(e) = genesis(&raft).await {
            fail(taken, &e);
            continue;
        }
        let mut commands = Vec::with_capacity(count);
        let mut replies = Vec::with_capacity(taken.len());
        for p in taken {
            replies.push((p.commands.len(), p.reply));
            commands.extend(p.commands);
        }
        let batch = Batch {
            now_ms: wall_clock_ms(),
            commands,
        };
        let pending = match raft.client_write_ff(Request::Batch(batch)).await {
            Ok(pending) => pending,
            Err(fatal) => {
                let e = ProposeError::Unavailable(fatal.to_string());
                for (_, reply) in replies {
                    let _ = reply.send(Err(e.clone()));
                }
                continue;
            }
        };
        // Short-lived: ends when the entry is applied or the Raft node drops it (shutdown),
        // and at most `max_inflight` exist, bounded by the permit it holds.
        tokio::spawn(async move {
            let outcome = pending.await;
            drop(permit);
            let (index, results) = match outcome {
                Ok(Ok(written)) => (written.log_id.index, written.data),
                Ok(Err(e)) => return fail_replies(replies, &write_error(e)),
                Err(_) => {
                    let e = ProposeError::Unavailable("raft node stopped".into());
                    return fail_replies(replies, &e);
                }
            };
            let mut results = results.into_iter();
            for (n, reply) in replies {
                let results = results.by_ref().take(n).collect();
                let _ = reply.send(Ok(Committed { index, results }));
            }
        });
    }
}

/// Commits the cluster's epoch if this node has not applied one yet (see `Request::Genesis`).
async fn genesis(raft: &Raft) -> Result<(), ProposeError> {
    let epoch = format!("{:016x}", rand::random::<u64>());
    match raft.client_write(Request::Genesis { epoch }).await {
        Ok(_) => Ok(()),
        Err(RaftError::APIError(e)) => Err(write_error(e)),
        Err(RaftError::Fatal(f)) => Err(ProposeError::Unavailable(f.to_string())),
    }
}

fn write_error(e: ClientWriteError<NodeId, BrokerNode>) -> ProposeError {
    match e {
        ClientWriteError::ForwardToLeader(f) => ProposeError::NotLeader {
            leader: f.leader_id,
            node: f.leader_node,
        },
        ClientWriteError::ChangeMembershipError(e) => ProposeError::Unavailable(e.to_string()),
    }
}

fn fail(taken: Vec<Proposal>, e: &ProposeError) {
    for p in taken {
        let _ = p.reply.send(Err(e.clone()));
    }
}

fn fail_replies(
    replies: Vec<(usize, oneshot::Sender<Result<Committed, ProposeError>>)>,
    e: &ProposeError,
) {
    for (_, reply) in replies {
        let _ = reply.send(Err(e.clone()));
    }
}

/// The leader's clock for [`Batch::now_ms`]: wall time, comparable across nodes (and clamped
/// to be monotonic by the state machine).
pub(crate) fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
