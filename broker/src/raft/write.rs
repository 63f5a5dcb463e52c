//! Writing through a [`RaftNode`]: proposing on the leader, forwarding from a follower, read
//! barriers, and the broker-level RPCs peers send each other (`Forward`, `ReadIndex`).
//!
//! ```text
//!   write(cmds) ─▶ leader here? ─yes─▶ propose_here ─▶ batcher ─▶ Raft ─▶ committed + applied
//!                     └─no─▶ forward ═RaftRpc::Forward═▶ leader's serve ─▶ propose_here
//!                            ─▶ wait until applied here (so reads and events here include it)
//! ```

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use openraft::SnapshotSegmentId;
use openraft::error::{InstallSnapshotError, RaftError, SnapshotMismatch};
use tokio::sync::oneshot;

use super::ProposeError;
use super::batcher::{Committed, Proposal};
use super::node::RaftNode;
use super::transport::{RaftRpc, RaftRpcReply, RaftTransport, TransportError, serve_rpc};
use super::types::{BrokerNode, CommandError, NodeId, Response};
use plaza_rooms::{Applied, Command};

impl RaftNode {
    /// Commits `commands` as part of a batch and returns their results, in order, once applied
    /// on this node. Fails with [`ProposeError::NotLeader`] on a follower.
    pub async fn propose(&self, commands: Vec<Command>) -> Result<Response, ProposeError> {
        Ok(self.propose_here(commands).await?.results)
    }

    /// [`Self::propose`] with the index of the entry that carried the commands.
    pub async fn propose_here(&self, commands: Vec<Command>) -> Result<Committed, ProposeError> {
        // A leader without a recent quorum ack (or handing over) refuses at once rather than
        // queueing a write that cannot commit.
        if self.is_leader() {
            // Handing over: the write certainly was not committed; "not the leader" makes the
            // caller (or the forwarding follower) retry on the new leader in a moment.
            if self.inner.health.handing_over() {
                return Err(ProposeError::NotLeader {
                    leader: None,
                    node: None,
                });
            }
            self.can_commit_soon()
                .await
                .map_err(ProposeError::Unavailable)?;
        }
        let (reply, rx) = oneshot::channel();
        let proposal = Proposal { commands, reply };
        let stopped = || ProposeError::Unavailable("raft node stopped".into());
        let wait = async {
            self.inner
                .proposals
                .send(proposal)
                .await
                .map_err(|_| stopped())?;
            rx.await.map_err(|_| stopped())?
        };
        tokio::time::timeout(self.inner.propose_timeout, wait)
            .await
            .map_err(|_| ProposeError::Timeout(self.inner.propose_timeout))?
    }

    /// Commits `commands` through whichever node leads: proposed here on the leader, forwarded
    /// to the leader from a follower (retried on a new leader while it certainly was not
    /// committed, e.g. during an election). Returns once the entry is applied on *this* node
    /// too, so reads and event routing here already include it.
    pub async fn write(&self, commands: Vec<Command>) -> Result<Response, ProposeError> {
        let committed = self
            .on_leader(
                "write",
                ProposeError::not_committed,
                || async {
                    self.propose_here(commands.clone())
                        .await
                        .map(|c| (c.index, c))
                },
                || RaftRpc::Forward(commands.clone()),
                |reply| match reply {
                    RaftRpcReply::Forwarded(result) => result.map(|c| (c.index, c)),
                    other => Err(unexpected(&other)),
                },
            )
            .await?;
        Ok(committed.results)
    }

    /// Waits until this node has applied everything the leader had committed when called, so
    /// a read here sees every write acknowledged before (a linearizable read, Raft's "read
    /// index"). Costs one round trip to the leader (a quorum check on the leader itself).
    pub async fn read_barrier(&self) -> Result<(), ProposeError> {
        // Asking for a read index twice is harmless, so even an unknown outcome is retried.
        let retry = |e: &ProposeError| e.not_committed() || matches!(e, ProposeError::Unknown(_));
        self.on_leader(
            "read",
            retry,
            || async { self.read_index_here().await.map(|i| (i, ())) },
            || RaftRpc::ReadIndex,
            |reply| match reply {
                RaftRpcReply::ReadIndex(result) => result.map(|i| (i, ())),
                other => Err(unexpected(&other)),
            },
        )
        .await
    }

    /// `Ok` if a write through this node can commit now; otherwise why not ("cannot reach
    /// leader 2: no round trip for 350 ms", "no leader", "lost contact with a majority").
    pub fn can_commit(&self) -> Result<(), String> {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow();
        self.inner.health.check(&m)
    }

    /// [`Self::can_commit`], given one more health window to come right before refusing. On a
    /// CPU-starved machine the pinger's answer (or the leader's quorum ack) can arrive a little
    /// past the window while the cluster is fine, and refusing then fails writes that would
    /// have committed (clients see the temporary 113 and retry). A node that really lost its
    /// leader refuses one window later, still well inside the edge's `reroute_after`; a write
    /// that arrives during an election waits for the new leader's first round trip instead of
    /// failing.
    async fn can_commit_soon(&self) -> Result<(), String> {
        let Err(mut why) = self.can_commit() else {
            return Ok(());
        };
        let until = Instant::now() + self.inner.health.window();
        while Instant::now() < until {
            tokio::time::sleep(HEALTH_RECHECK).await;
            match self.can_commit() {
                Ok(()) => return Ok(()),
                Err(again) => why = again,
            }
        }
        metrics::counter!(crate::metrics::UNHEALTHY_REFUSALS).increment(1);
        Err(why)
    }

    /// Runs one operation on the leader — `here` when this node leads, else `rpc` sent to the
    /// leader and its reply read with `reply` — retrying while `retry` says a failure was
    /// harmless (no leader yet, leader unreachable) until the propose timeout. Each success
    /// carries a log index; returns once this node has applied it.
    async fn on_leader<T, F: Future<Output = Result<(u64, T), ProposeError>>>(
        &self,
        what: &str,
        retry: impl Fn(&ProposeError) -> bool,
        here: impl Fn() -> F,
        rpc: impl Fn() -> RaftRpc,
        reply: impl Fn(RaftRpcReply) -> Result<(u64, T), ProposeError>,
    ) -> Result<T, ProposeError> {
        let started = Instant::now();
        let deadline = started + self.inner.propose_timeout;
        loop {
            let attempt = match self.current_leader() {
                Some((leader, _)) if leader == self.inner.id => here().await,
                Some((leader, Some(node))) => {
                    // No recent round trip to the leader (not even after one more window):
                    // say so, so the edge re-attaches to a broker that can commit instead of
                    // waiting here.
                    if let Err(why) = self.can_commit_soon().await {
                        return Err(ProposeError::Unavailable(why));
                    }
                    // The leader may have changed meanwhile: look again (as after a retry).
                    if self.current_leader().map(|(l, _)| l) != Some(leader) {
                        Err(ProposeError::NotLeader {
                            leader: None,
                            node: None,
                        })
                    } else {
                        self.forward(leader, &node, rpc(), deadline)
                            .await
                            .and_then(&reply)
                    }
                }
                // An election is under way: wait for it, but not longer than an election
                // should take (2 × election_timeout_max).
                _ if started.elapsed() >= self.inner.election_wait => {
                    return Err(ProposeError::Unavailable(format!(
                        "no leader elected within {:?}",
                        self.inner.election_wait
                    )));
                }
                _ => Err(ProposeError::NotLeader {
                    leader: None,
                    node: None,
                }),
            };
            match attempt {
                Ok((index, value)) => {
                    self.wait_applied(index, deadline).await;
                    return Ok(value);
                }
                Err(e) if retry(&e) && Instant::now() < deadline => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) if e.not_committed() => {
                    return Err(ProposeError::Unavailable(format!(
                        "no leader served the {what} within {:?} ({e})",
                        self.inner.propose_timeout
                    )));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The leader's half of [`Self::read_barrier`].
    async fn read_index_here(&self) -> Result<u64, ProposeError> {
        match self.inner.raft.ensure_linearizable().await {
            Ok(log_id) => Ok(log_id.map_or(0, |l| l.index)),
            Err(openraft::error::RaftError::APIError(
                openraft::error::CheckIsLeaderError::ForwardToLeader(f),
            )) => Err(ProposeError::NotLeader {
                leader: f.leader_id,
                node: f.leader_node,
            }),
            Err(e) => Err(ProposeError::Unavailable(e.to_string())),
        }
    }

    /// Sends a broker-level RPC to the leader. A call that never left (peer unreachable) is
    /// reported as [`ProposeError::NotLeader`] so the caller retries; one lost on the way as
    /// [`ProposeError::Unknown`].
    async fn forward(
        &self,
        leader: NodeId,
        node: &BrokerNode,
        rpc: RaftRpc,
        deadline: Instant,
    ) -> Result<RaftRpcReply, ProposeError> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let call = self.inner.peers.call(leader, node, rpc, timeout);
        // A leader that dies mid-call never answers (its connection only times out later):
        // give up as soon as this node stops following it.
        let mut metrics = self.inner.raft.metrics();
        let deposed = metrics.wait_for(|m| m.current_leader != Some(leader));
        // Nor wait on a leader this node has lost contact with (no answered ping lately, and
        // none in one more window: a late answer on a busy machine is not a lost leader).
        let unreachable = async {
            loop {
                tokio::time::sleep(FORWARD_HEALTH_CHECK).await;
                if let Err(why) = self.can_commit_soon().await {
                    return why;
                }
            }
        };
        let outcome = tokio::select! {
            outcome = call => outcome,
            _ = deposed => Err(TransportError::Lost(format!("leader {leader} was replaced"))),
            why = unreachable => Err(TransportError::Lost(why)),
        };
        match outcome {
            Ok(reply) => Ok(reply),
            Err(TransportError::Unreachable(_)) => Err(ProposeError::NotLeader {
                leader: None,
                node: None,
            }),
            Err(TransportError::Timeout) => Err(ProposeError::Timeout(timeout)),
            Err(e @ (TransportError::Lost(_) | TransportError::Network(_))) => {
                Err(ProposeError::Unknown(format!("leader {leader}: {e}")))
            }
            // Nothing was sent: certainly not committed.
            Err(e @ TransportError::TooLarge(_)) => Err(ProposeError::Unavailable(format!(
                "cannot forward the write to leader {leader}: {e}"
            ))),
        }
    }

    /// Waits (until `deadline` at most) for this node to apply entry `index`. Past the
    /// deadline the write still stands; reads here may just not show it yet.
    async fn wait_applied(&self, index: u64, deadline: Instant) {
        if self.applied_index() >= index {
            return;
        }
        let timeout = deadline.saturating_duration_since(Instant::now());
        let _ = self
            .inner
            .raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "forwarded write applied here")
            .await;
    }

    /// Answers the broker-level RPCs a peer sends this node ([`RaftRpc::Forward`],
    /// [`RaftRpc::ReadIndex`]) and the Raft ones; [`RaftRpc::Broadcast`] is the broker's.
    pub async fn serve(&self, rpc: RaftRpc) -> RaftRpcReply {
        match rpc {
            RaftRpc::Forward(commands) => RaftRpcReply::Forwarded(if self.is_leader() {
                self.propose_here(commands).await
            } else {
                let (leader, node) = self.current_leader().unzip();
                Err(ProposeError::NotLeader {
                    leader,
                    node: node.flatten(),
                })
            }),
            RaftRpc::ReadIndex => RaftRpcReply::ReadIndex(self.read_index_here().await),
            RaftRpc::Ping => RaftRpcReply::Pong {
                leading: self.is_leader(),
            },
            RaftRpc::Elect => RaftRpcReply::Electing(self.elect_now().await),
            RaftRpc::InstallSnapshot(req) => {
                let id = &req.meta.snapshot_id;
                if let Err(expect) =
                    self.inner
                        .snapshot_chunks
                        .accept(id, req.offset, req.data.len())
                {
                    tracing::warn!(
                        snapshot = %id,
                        offset = req.offset,
                        expect,
                        "refused a snapshot chunk past the bytes received"
                    );
                    metrics::counter!(crate::metrics::SNAPSHOT_CHUNKS_REFUSED).increment(1);
                    let segment = |offset| SnapshotSegmentId {
                        id: id.clone(),
                        offset,
                    };
                    let mismatch = SnapshotMismatch {
                        expect: segment(expect),
                        got: segment(req.offset),
                    };
                    return RaftRpcReply::InstallSnapshot(Err(RaftError::APIError(
                        InstallSnapshotError::SnapshotMismatch(mismatch),
                    )));
                }
                serve_rpc(&self.inner.raft, RaftRpc::InstallSnapshot(req)).await
            }
            other => serve_rpc(&self.inner.raft, other).await,
        }
    }

    /// [`Self::propose`] for one command.
    pub async fn propose_one(
        &self,
        command: Command,
    ) -> Result<Result<Applied, CommandError>, ProposeError> {
        let mut results = self.propose(vec![command]).await?;
        results
            .pop()
            .ok_or_else(|| ProposeError::Unavailable("no result for the command".into()))
    }

    /// Sends `rpc()` to every other member at once and waits for all answers (each within
    /// `timeout`); returns the members that did not answer, with why.
    pub async fn call_peers(
        &self,
        rpc: impl Fn() -> RaftRpc,
        timeout: Duration,
    ) -> Vec<(NodeId, TransportError)> {
        let peers = self.peers();
        let calls = peers.iter().map(|(id, node)| {
            let call = self.inner.peers.call(*id, node, rpc(), timeout);
            async move { (*id, call.await) }
        });
        futures_util::future::join_all(calls)
            .await
            .into_iter()
            .filter_map(|(id, reply)| match reply {
                Ok(RaftRpcReply::Refused(why)) => Some((id, TransportError::Network(why))),
                Ok(_) => None,
                Err(e) => Some((id, e)),
            })
            .collect()
    }
}

impl RaftNode {
    /// The other members of the cluster, as this node knows its membership now.
    pub fn peers(&self) -> Vec<(NodeId, BrokerNode)> {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow();
        m.membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != self.inner.id)
            .map(|(id, node)| (*id, node.clone()))
            .collect()
    }

    /// Sends one broker-level RPC to member `id` at `node` and waits for its answer.
    pub async fn call_peer(
        &self,
        id: NodeId,
        node: &BrokerNode,
        rpc: RaftRpc,
        timeout: Duration,
    ) -> Result<RaftRpcReply, TransportError> {
        self.inner.peers.call(id, node, rpc, timeout).await
    }
}

/// How long to wait before retrying a write or read index during an election.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// How often a forward in flight checks that the leader is still reachable.
const FORWARD_HEALTH_CHECK: Duration = Duration::from_millis(50);
/// How often [`RaftNode::can_commit_soon`] looks again during its extra window.
const HEALTH_RECHECK: Duration = Duration::from_millis(10);

fn unexpected(reply: &RaftRpcReply) -> ProposeError {
    match reply {
        RaftRpcReply::Refused(why) => ProposeError::Unavailable(why.clone()),
        _ => ProposeError::Unavailable("the leader answered another RPC".into()),
    }
}

/// The object-safe face of a [`RaftTransport`], for calls outside openraft.
pub(super) trait PeerCall: Send + Sync + 'static {
    fn call<'a>(
        &'a self,
        target: NodeId,
        node: &'a BrokerNode,
        rpc: RaftRpc,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<RaftRpcReply, TransportError>> + Send + 'a>>;
}

impl<T: RaftTransport> PeerCall for T {
    fn call<'a>(
        &'a self,
        target: NodeId,
        node: &'a BrokerNode,
        rpc: RaftRpc,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<RaftRpcReply, TransportError>> + Send + 'a>> {
        Box::pin(RaftTransport::call(self, target, node, rpc, timeout))
    }
}
