//! The Raft state machine: committed [`Request`]s applied to [`Rooms`], in log order, on every
//! node.
//!
//! ```text
//!   committed entries ──apply──▶ Rooms (under a RwLock) ──events──▶ broadcast<AppliedEvents>
//!                                   ▲        │
//!                 reads (RaftNode) ─┘        └─▶ snapshot (postcard RoomsState + meta) ─▶ disk
//! ```
//!
//! Durability comes from the log plus snapshots, not from this state: `apply` only changes
//! memory. A restarted node loads its last snapshot (`snapshot.bin`, see `snapshot.rs`) and
//! openraft replays the committed log after it.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};

use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use plaza_proto::cluster::RoomEvent;
use tokio::sync::broadcast;

use super::snapshot::{SnapshotBody, SnapshotFile, SnapshotStore};
use super::types::{BrokerNode, LogId, NodeId, Request, Response, TypeConfig};
use plaza_rooms::Rooms;
use plaza_rooms::config::RoomsConfig;

/// The events one log entry produced, in order. One broadcast message per entry (not per
/// event) keeps the channel cheap at high publish rates.
#[derive(Debug, Clone)]
pub struct AppliedEvents {
    /// The entry that produced them; increases strictly, so a subscriber can drop repeats
    /// (a restarted node re-applies the log after its snapshot and emits them again).
    pub log_id: LogId,
    /// The events, in the order the state machine emitted them.
    pub events: Arc<[RoomEvent]>,
    /// True when the whole state was just replaced by a snapshot from the leader (a follower
    /// that fell behind a log purge): `events` is empty and the events of the entries the
    /// snapshot covers are never delivered, so a subscriber must re-read the position and
    /// history of every room it follows.
    pub resync: bool,
}

/// What has been applied so far.
pub(crate) struct Applied {
    /// `None` until the genesis entry is applied.
    pub rooms: Option<Rooms>,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership<NodeId, BrokerNode>,
}

/// State shared by the state machine, its snapshot builders and the node's readers.
pub(crate) struct Shared {
    config: RoomsConfig,
    /// Written only by `apply`/`install_snapshot`; never held across `.await`.
    applied: RwLock<Applied>,
    /// Bounded: a subscriber that falls behind gets `Lagged` and must resync from the rooms'
    /// history; apply never waits for subscribers.
    events: broadcast::Sender<AppliedEvents>,
    snapshots: SnapshotStore,
    /// Makes snapshot ids unique even for two builds at the same log id.
    builds: AtomicU64,
}

impl Shared {
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Applied> {
        self.applied.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<AppliedEvents> {
        self.events.subscribe()
    }
}

/// The [`RaftStateMachine`] over [`Rooms`]. Cheap to clone (a handle).
#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<Shared>,
}

impl StateMachine {
    /// A state machine restored from `snapshots`' current snapshot, if any.
    pub(crate) fn open(
        config: RoomsConfig,
        snapshots: SnapshotStore,
        event_capacity: usize,
    ) -> std::io::Result<Self> {
        let mut applied = Applied {
            rooms: None,
            last_applied: None,
            membership: StoredMembership::default(),
        };
        if let Some(file) = snapshots.current() {
            let body = SnapshotBody::decode(&file.data)?;
            applied.rooms = body.rooms.map(|s| Rooms::from_state(&config, s));
            applied.last_applied = file.meta.last_log_id;
            applied.membership = file.meta.last_membership.clone();
        }
        let (events, _) = broadcast::channel(event_capacity.max(1));
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                applied: RwLock::new(applied),
                events,
                snapshots,
                builds: AtomicU64::new(0),
            }),
        })
    }

    /// A fresh state machine whose snapshots live in memory only (tests, tools).
    pub fn in_memory(config: RoomsConfig) -> Self {
        Self::open(config, SnapshotStore::memory(), 1024).expect("no snapshot to decode")
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Applied> {
        self.shared
            .applied
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        // Copy under the lock, encode and write outside it.
        let (rooms, last_log_id, last_membership) = {
            let applied = self.shared.read();
            let rooms = applied.rooms.as_ref().map(|r| r.state().clone());
            (rooms, applied.last_applied, applied.membership.clone())
        };
        let data = postcard::to_stdvec(&SnapshotBody::new(rooms))
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let build = self.shared.builds.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match last_log_id {
            Some(id) => format!(
                "{}-{}-{}-{build}",
                id.leader_id.term, id.leader_id.node_id, id.index
            ),
            None => format!("none-{build}"),
        };
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        };
        let file = SnapshotFile {
            meta: meta.clone(),
            data: Arc::new(data),
        };
        let data = file.data.to_vec();
        let store = self.shared.snapshots.clone();
        spawn_blocking(move || store.save(file))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<NodeId, BrokerNode>), StorageError<NodeId>> {
        let applied = self.shared.read();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut responses = Vec::new();
        let mut produced = Vec::new();
        {
            let mut guard = self.write();
            let applied = &mut *guard;
            for entry in entries {
                applied.last_applied = Some(entry.log_id);
                let mut events = Vec::new();
                let response = match entry.payload {
                    EntryPayload::Blank => Vec::new(),
                    EntryPayload::Membership(m) => {
                        applied.membership = StoredMembership::new(Some(entry.log_id), m);
                        Vec::new()
                    }
                    EntryPayload::Normal(Request::Genesis { epoch }) => {
                        if applied.rooms.is_none() {
                            applied.rooms = Some(Rooms::new(&self.shared.config, epoch));
                        }
                        Vec::new()
                    }
                    EntryPayload::Normal(Request::Batch(batch)) => {
                        // The proposer always commits a genesis first; should a batch ever come
                        // first anyway, an epoch derived from its log id keeps nodes identical.
                        let rooms = applied.rooms.get_or_insert_with(|| {
                            let id = entry.log_id;
                            let epoch = format!("raft-{}-{}", id.leader_id.term, id.index);
                            Rooms::new(&self.shared.config, epoch)
                        });
                        batch
                            .commands
                            .into_iter()
                            .map(|cmd| rooms.apply(batch.now_ms, cmd, &mut events))
                            .collect()
                    }
                };
                if !events.is_empty() {
                    produced.push(AppliedEvents {
                        log_id: entry.log_id,
                        events: events.into(),
                        resync: false,
                    });
                }
                responses.push(response);
            }
        }
        for applied in produced {
            // No subscriber is fine: nobody is routing events yet.
            let _ = self.shared.events.send(applied);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BrokerNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let body = SnapshotBody::decode(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let file = SnapshotFile {
            meta: meta.clone(),
            data: Arc::new(data),
        };
        let store = self.shared.snapshots.clone();
        spawn_blocking(move || store.save(file))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        {
            let mut applied = self.write();
            applied.rooms = body
                .rooms
                .map(|s| Rooms::from_state(&self.shared.config, s));
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership.clone();
        }
        if let Some(log_id) = meta.last_log_id {
            let _ = self.shared.events.send(AppliedEvents {
                log_id,
                events: Arc::new([]),
                resync: true,
            });
        }
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        Ok(self.shared.snapshots.current().map(|file| Snapshot {
            meta: file.meta,
            snapshot: Box::new(Cursor::new(file.data.to_vec())),
        }))
    }
}

/// Runs blocking file I/O off the runtime's worker threads.
async fn spawn_blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)?
}
