//! [`RaftNode`]: one broker's Raft replica of the rooms, with its storage, network and
//! proposal batcher wired together.
//!
//! Writes go through [`RaftNode::write`] (`write.rs`): proposed here on the leader (batched,
//! answered after commit and apply) or forwarded to the leader from a follower, and answered
//! once applied on this node too. Reads (`read.rs`) come from this node's applied state, after
//! a read barrier ([`RaftNode::read_barrier`]) where they must be linearizable.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::batcher::{self, Limits, Proposal};
pub use super::errors::{ProposeError, ReadError, StartError};
use super::health::Health;
use super::log_mem::MemLogStore;
use super::log_redb::RedbLogStore;
use super::snapshot::SnapshotStore;
use super::state_machine::{AppliedEvents, Shared, StateMachine};
use super::transport::{Network, RaftTransport};
use super::types::{BrokerNode, NodeId, Raft};
use super::write::PeerCall;
use plaza_rooms::Command;
use plaza_rooms::config::RoomsConfig;

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
    /// Most bytes of commands in one log entry (estimated): an entry must replicate within one
    /// heartbeat interval (openraft's deadline for an AppendEntries) and fit a 16 MiB QUIC
    /// frame; several entries are sent at most [`super::transport::MAX_APPEND_BYTES`] at a
    /// time.
    pub max_batch_bytes: usize,
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
                // LAN / loopback timing (docs/configuration.md, `[raft]`). The heartbeat
                // interval is also openraft's deadline for every AppendEntries, so it must
                // exceed the worst link round trip plus a follower's fsync: 100 ms leaves room
                // for 80 ms round trips. A follower campaigns after the leader lease
                // (= election_timeout_max) plus its election timeout with no AppendEntries:
                // 300 + 150..300 ms, about 0.55 s at the median, ≥ 3 heartbeats missed.
                heartbeat_interval: 100,
                election_timeout_min: 150,
                election_timeout_max: 300,
                ..Default::default()
            },
            rooms: RoomsConfig::default(),
            max_batch: 1024,
            max_batch_bytes: 1024 * 1024,
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
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) id: NodeId,
    pub(super) raft: Raft,
    /// Calls to peers outside Raft's own traffic (forwarded writes, read indexes).
    pub(super) peers: Arc<dyn PeerCall>,
    pub(super) sm: Arc<Shared>,
    pub(super) proposals: mpsc::Sender<Proposal>,
    pub(super) propose_timeout: Duration,
    /// Bounds incoming snapshot chunks ([`super::snapshot::ChunkTracker`]).
    pub(super) snapshot_chunks: super::snapshot::ChunkTracker,
    /// Whether a write here can commit now (round trips to the leader, check-quorum).
    pub(super) health: Arc<Health>,
    /// How long a write waits for a leader to be elected before it is refused.
    pub(super) election_wait: Duration,
    pub(super) tasks: Vec<JoinHandle<()>>,
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
        let election_max = Duration::from_millis(raft_config.election_timeout_max);
        let heartbeat = Duration::from_millis(raft_config.heartbeat_interval);
        let health = Arc::new(Health::new(election_max));
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
            max_batch_bytes: config.max_batch_bytes.max(1),
            max_inflight: config.max_inflight_batches,
        };
        let mut tasks = vec![tokio::spawn(batcher::run(
            raft.clone(),
            Arc::clone(&shared),
            rx,
            limits,
        ))];
        if let Some(period) = config.tick {
            tasks.push(tokio::spawn(ticker(
                raft.clone(),
                tx.downgrade(),
                period,
                Arc::clone(&health),
            )));
        }
        // Ping the leader twice per heartbeat so a follower's "can commit" is never older
        // than half a heartbeat plus a round trip.
        tasks.push(tokio::spawn(super::health::run(
            raft.clone(),
            Arc::clone(&health),
            Arc::clone(&peers),
            (heartbeat / 2).max(Duration::from_millis(10)),
        )));
        tasks.push(tokio::spawn(super::phases::watch(
            raft.clone(),
            Arc::clone(&health),
        )));
        Ok(Self {
            inner: Arc::new(Inner {
                id,
                raft,
                peers,
                sm: shared,
                proposals: tx,
                propose_timeout: config.propose_timeout,
                snapshot_chunks: super::snapshot::ChunkTracker::default(),
                health,
                election_wait: election_max * 2,
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

    /// Stops Raft and the batcher; pending proposals fail. The data dir can be reopened by a
    /// new node once this returns.
    pub async fn shutdown(&self) {
        for task in &self.inner.tasks {
            task.abort();
        }
        let _ = self.inner.raft.shutdown().await;
    }
}

/// Commits `Command::Tick` every `period` while this node leads and can commit (a fenced
/// leader must replicate nothing, so its followers' leases lapse). Holds only a weak queue
/// handle so it never keeps a stopped node's batcher alive.
async fn ticker(
    raft: Raft,
    proposals: mpsc::WeakSender<Proposal>,
    period: Duration,
    health: Arc<Health>,
) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let leading = {
            let m = raft.metrics();
            let m = m.borrow();
            m.current_leader == Some(m.id) && health.check(&m).is_ok()
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
