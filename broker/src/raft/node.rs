//! [`RaftNode`]: one broker's Raft replica of the rooms, with its storage, network and
//! proposal batcher wired together.
//!
//! Writes go through [`RaftNode::propose`] (batched, answered after commit and apply on this
//! node, which must be the leader). Reads come from this node's applied state: they are as
//! fresh as its last applied entry, which on the leader includes every acknowledged write.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;
use plaza_proto::cluster::{HistoryPage, PresenceStats, RoomsPage};
use plaza_proto::{Member, Position, RoomName};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::batcher::{self, Committed, Limits, Proposal, wall_clock_ms};
pub use super::errors::{ProposeError, ReadError, StartError};
use super::log_mem::MemLogStore;
use super::log_redb::RedbLogStore;
use super::snapshot::SnapshotStore;
use super::state_machine::{AppliedEvents, Shared, StateMachine};
use super::transport::{Network, RaftRpc, RaftRpcReply, RaftTransport, TransportError, serve_rpc};
use super::types::{BrokerNode, CommandError, NodeId, Raft, Response};
use plaza_rooms::config::RoomsConfig;
use plaza_rooms::{Applied, Command, Rooms};

/// Where a node keeps its log and snapshots.
#[derive(Debug, Clone)]
pub enum Storage {
    /// Nothing survives the process (tests). Never restart a node under the same id with it.
    Memory,
    /// `raft-log.redb` and `snapshot.bin` in this directory (created if missing).
    Dir(PathBuf),
}

/// A node's settings; every default is here.
#[derive(Debug, Clone)]
pub struct RaftNodeConfig {
    /// openraft's own settings (timeouts, snapshot policy...).
    pub raft: openraft::Config,
    /// The rooms' settings: must be the same on every node.
    pub rooms: RoomsConfig,
    /// Most commands in one log entry.
    pub max_batch: usize,
    /// Most batches in Raft (appended, not yet applied) at once.
    pub max_inflight_batches: usize,
    /// Proposals waiting for a batch; `propose` waits for room when it is full.
    pub queue: usize,
    /// How long `propose` waits for commit before giving up (the outcome is then unknown;
    /// retry with the same `idem` to be safe).
    pub propose_timeout: Duration,
    /// Entries' events buffered for [`RaftNode::subscribe`] receivers before they lag.
    pub event_capacity: usize,
    /// How often the leader commits `Command::Tick` (leases, TTLs, GC); `None` = never.
    pub tick: Option<Duration>,
}

impl Default for RaftNodeConfig {
    fn default() -> Self {
        Self {
            raft: openraft::Config {
                cluster_name: "plaza".into(),
                heartbeat_interval: 100,
                election_timeout_min: 400,
                election_timeout_max: 800,
                ..Default::default()
            },
            rooms: RoomsConfig::default(),
            max_batch: 1024,
            max_inflight_batches: 4,
            queue: 16 * 1024,
            propose_timeout: Duration::from_secs(5),
            event_capacity: 4096,
            tick: Some(Duration::from_secs(1)),
        }
    }
}

/// A snapshot of the node's Raft status, for `/metrics` and the status endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftStatus {
    /// This node.
    pub id: NodeId,
    /// Leader, follower, candidate or learner.
    pub state: ServerState,
    /// The current term.
    pub term: u64,
    /// The leader as this node knows it.
    pub leader: Option<NodeId>,
    /// The last entry in this node's log.
    pub last_log_index: Option<u64>,
    /// The last entry known to be committed (replicated to a majority).
    pub committed: Option<u64>,
    /// The last entry applied here (committed entries are applied promptly).
    pub last_applied: Option<u64>,
    /// The last entry covered by a snapshot.
    pub snapshot: Option<u64>,
    /// The last entry purged from the log.
    pub purged: Option<u64>,
    /// Voting members.
    pub voters: BTreeSet<NodeId>,
    /// Every member (voters and learners) with its address.
    pub nodes: BTreeMap<NodeId, BrokerNode>,
    /// On the leader: entries each follower is behind the leader's log.
    pub lag: BTreeMap<NodeId, u64>,
}

/// A running Raft replica. Cheap to clone; [`RaftNode::shutdown`] stops it.
#[derive(Clone)]
pub struct RaftNode {
    inner: Arc<Inner>,
}

struct Inner {
    id: NodeId,
    raft: Raft,
    /// Calls to peers outside Raft's own traffic (forwarded writes, read indexes).
    peers: Arc<dyn PeerCall>,
    sm: Arc<Shared>,
    proposals: mpsc::Sender<Proposal>,
    propose_timeout: Duration,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl RaftNode {
    /// Starts node `id` with `storage`, sending RPCs with `transport`. A node with existing
    /// data resumes from its snapshot and log; a new one waits to be added or initialized.
    pub async fn start<T: RaftTransport>(
        id: NodeId,
        config: RaftNodeConfig,
        storage: Storage,
        transport: T,
    ) -> Result<Self, StartError> {
        let raft_config = Arc::new(config.raft.clone().validate()?);
        let transport = Arc::new(transport);
        let peers: Arc<dyn PeerCall> = transport.clone();
        let network = Network { id, transport };
        let (snapshots, log) = match &storage {
            Storage::Memory => (SnapshotStore::memory(), None),
            Storage::Dir(dir) => {
                let snapshots = SnapshotStore::open(dir)?;
                (
                    snapshots,
                    Some(RedbLogStore::open(&dir.join("raft-log.redb"))?),
                )
            }
        };
        let sm = StateMachine::open(config.rooms.clone(), snapshots, config.event_capacity)?;
        let shared = sm.shared();
        let raft = match log {
            None => Raft::new(id, raft_config, network, MemLogStore::new(), sm).await,
            Some(log) => Raft::new(id, raft_config, network, log, sm).await,
        }
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let limits = Limits {
            max_batch: config.max_batch.max(1),
            max_inflight: config.max_inflight_batches,
        };
        let mut tasks = vec![tokio::spawn(batcher::run(
            raft.clone(),
            Arc::clone(&shared),
            rx,
            limits,
        ))];
        if let Some(period) = config.tick {
            tasks.push(tokio::spawn(ticker(raft.clone(), tx.downgrade(), period)));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                id,
                raft,
                peers,
                sm: shared,
                proposals: tx,
                propose_timeout: config.propose_timeout,
                tasks,
            }),
        })
    }

    /// Bootstraps a new cluster whose voters are `members` (call on one node, or on all with
    /// the same list: a node that is already initialized ignores it).
    pub async fn initialize(
        &self,
        members: BTreeMap<NodeId, BrokerNode>,
    ) -> Result<(), StartError> {
        let initialized = self
            .inner
            .raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if initialized {
            return Ok(());
        }
        match self.inner.raft.initialize(members).await {
            Ok(()) => Ok(()),
            // Another node's initialize won the race: fine.
            Err(openraft::error::RaftError::APIError(
                openraft::error::InitializeError::NotAllowed(_),
            )) => Ok(()),
            Err(e) => Err(StartError::Raft(e.to_string())),
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The openraft handle, for the transport's receiving side ([`super::serve_rpc`]) and
    /// membership changes.
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// Commits `commands` as part of a batch and returns their results, in order, once applied
    /// on this node. Fails with [`ProposeError::NotLeader`] on a follower.
    pub async fn propose(&self, commands: Vec<Command>) -> Result<Response, ProposeError> {
        Ok(self.propose_here(commands).await?.results)
    }

    /// [`Self::propose`] with the index of the entry that carried the commands.
    pub async fn propose_here(&self, commands: Vec<Command>) -> Result<Committed, ProposeError> {
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
        let deadline = Instant::now() + self.inner.propose_timeout;
        loop {
            let attempt = match self.current_leader() {
                Some((leader, _)) if leader == self.inner.id => here().await,
                Some((leader, Some(node))) => self
                    .forward(leader, &node, rpc(), deadline)
                    .await
                    .and_then(&reply),
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
        let outcome = tokio::select! {
            outcome = call => outcome,
            _ = deposed => Err(TransportError::Lost(format!("leader {leader} was replaced"))),
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

    /// Whether this node believes it is the leader (a deposed leader may not know yet).
    pub fn is_leader(&self) -> bool {
        self.inner.raft.metrics().borrow().current_leader == Some(self.inner.id)
    }

    /// The leader as this node knows it, with its address.
    pub fn current_leader(&self) -> Option<(NodeId, Option<BrokerNode>)> {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow();
        let leader = m.current_leader?;
        let node = m.membership_config.membership().get_node(&leader).cloned();
        Some((leader, node))
    }

    /// Leader, term, indexes, members and follower lag.
    pub async fn status(&self) -> RaftStatus {
        // Not in openraft 0.9's metrics: asked from the Raft core (None if it stopped).
        let committed = self
            .inner
            .raft
            .with_raft_state(|st| st.committed.map(|l| l.index))
            .await
            .ok()
            .flatten();
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let last = m.last_log_index.unwrap_or(0);
        let lag = m
            .replication
            .iter()
            .flatten()
            .map(|(id, matched)| (*id, last.saturating_sub(matched.map_or(0, |l| l.index))))
            .collect();
        RaftStatus {
            id: m.id,
            state: m.state,
            term: m.current_term,
            leader: m.current_leader,
            last_log_index: m.last_log_index,
            committed,
            last_applied: m.last_applied.map(|l| l.index),
            snapshot: m.snapshot.map(|l| l.index),
            purged: m.purged.map(|l| l.index),
            voters: membership.voter_ids().collect(),
            nodes: membership.nodes().map(|(id, n)| (*id, n.clone())).collect(),
            lag,
        }
    }

    /// Events of every entry applied from now on, in log order (see [`AppliedEvents`]).
    pub fn subscribe(&self) -> broadcast::Receiver<AppliedEvents> {
        self.inner.sm.subscribe()
    }

    /// Runs `f` on the applied rooms. Keep it short: apply waits while it runs.
    pub fn read<R>(&self, f: impl FnOnce(&Rooms) -> R) -> Result<R, ReadError> {
        Ok(self.read_at(f)?.1)
    }

    /// [`Self::read`], with the index of the last entry applied to the state `f` saw (events
    /// of later entries reach [`Self::subscribe`] receivers after this returns).
    pub fn read_at<R>(&self, f: impl FnOnce(&Rooms) -> R) -> Result<(u64, R), ReadError> {
        let applied = self.inner.sm.read();
        let index = applied.last_applied.map_or(0, |l| l.index);
        applied
            .rooms
            .as_ref()
            .map(|rooms| (index, f(rooms)))
            .ok_or(ReadError::NotReady)
    }

    /// The last applied log index here (0 before any).
    pub fn applied_index(&self) -> u64 {
        self.inner.sm.read().last_applied.map_or(0, |l| l.index)
    }

    /// `room`'s position in the applied state.
    pub fn position(&self, room: &RoomName) -> Result<Position, ReadError> {
        self.read(|r| r.position(room))
    }

    /// `room`'s history in the applied state (see [`Rooms::history`]).
    pub fn history(
        &self,
        room: &RoomName,
        since: Option<Position>,
        limit: Option<u32>,
    ) -> Result<HistoryPage, ReadError> {
        self.read(|r| r.history(wall_clock_ms(), room, since, limit))
    }

    /// `room`'s members in the applied state.
    pub fn presence(&self, room: &RoomName) -> Result<Vec<Member>, ReadError> {
        Ok(self.read(|r| r.presence(room))??)
    }

    /// `room`'s member counts in the applied state.
    pub fn presence_stats(&self, room: &RoomName) -> Result<PresenceStats, ReadError> {
        Ok(self.read(|r| r.presence_stats(room))??)
    }

    /// One page of the active rooms in the applied state (see [`Rooms::rooms`]).
    pub fn rooms(&self, after: Option<&RoomName>, limit: u32) -> Result<RoomsPage, ReadError> {
        self.read(|r| r.rooms(wall_clock_ms(), after, limit))
    }

    /// Sends `rpc()` to every other member at once and waits for all answers (each within
    /// `timeout`); returns the members that did not answer, with why.
    pub async fn call_peers(
        &self,
        rpc: impl Fn() -> RaftRpc,
        timeout: Duration,
    ) -> Vec<(NodeId, TransportError)> {
        let peers: Vec<(NodeId, BrokerNode)> = {
            let metrics = self.inner.raft.metrics();
            let m = metrics.borrow();
            m.membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != self.inner.id)
                .map(|(id, node)| (*id, node.clone()))
                .collect()
        };
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

    /// Stops Raft and the batcher; pending proposals fail. The data dir can be reopened by a
    /// new node once this returns.
    pub async fn shutdown(&self) {
        for task in &self.inner.tasks {
            task.abort();
        }
        let _ = self.inner.raft.shutdown().await;
    }
}

/// How long to wait before retrying a write or read index during an election.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

fn unexpected(reply: &RaftRpcReply) -> ProposeError {
    match reply {
        RaftRpcReply::Refused(why) => ProposeError::Unavailable(why.clone()),
        _ => ProposeError::Unavailable("the leader answered another RPC".into()),
    }
}

/// The object-safe face of a [`RaftTransport`], for calls outside openraft.
trait PeerCall: Send + Sync + 'static {
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

/// Commits `Command::Tick` every `period` while this node leads. Holds only a weak queue
/// handle so it never keeps a stopped node's batcher alive.
async fn ticker(raft: Raft, proposals: mpsc::WeakSender<Proposal>, period: Duration) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let leading = {
            let m = raft.metrics();
            let m = m.borrow();
            m.current_leader == Some(m.id)
        };
        let Some(tx) = proposals.upgrade() else { break };
        if leading {
            let (reply, _ignored) = oneshot::channel();
            let _ = tx.try_send(Proposal {
                commands: vec![Command::Tick],
                reply,
            });
        }
    }
}
