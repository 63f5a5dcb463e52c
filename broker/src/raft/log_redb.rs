//! The durable Raft log store, in one [redb](https://docs.rs/redb) file.
//!
//! Why redb rather than fjall (the other maintained pure-Rust embedded store): the Raft log is
//! small, append-mostly and must be fsynced before every acknowledgement. redb is a single-file
//! copy-on-write B-tree with ACID transactions whose `commit` is durable (fsync) by default, so
//! "the entries are on disk" is exactly "the write transaction committed" — one call, no WAL
//! or background flush/compaction threads to reason about. fjall is an LSM tree (journal +
//! segments + compaction) tuned for write-heavy large data sets, which the log (purged after
//! every snapshot) is not. redb is pure Rust, actively maintained, with a stable file format
//! since 1.0; 4.1 is the newest line whose MSRV (1.89) matches the workspace.
//!
//! Layout: table `logs` maps index → postcard(`Entry`); table `meta` holds `vote`,
//! `committed` and `last_purged` (postcard). Every method runs its transaction on the blocking
//! pool and awaits it, so writes are serialized in call order as openraft requires.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, Entry, LogState, RaftLogReader, StorageError, StorageIOError, Vote};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::{LogId, NodeId, TypeConfig};

const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

/// The redb log store. Cheap to clone; clones share the database (a clone is the reader).
#[derive(Clone)]
pub struct RedbLogStore {
    db: Arc<Database>,
}

type Result<T> = std::result::Result<T, StorageError<NodeId>>;
/// Errors inside a transaction: small, converted to openraft's (large) error once per call.
type IoResult<T> = std::io::Result<T>;

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// A failed log operation, as openraft wants it.
fn storage_err(e: std::io::Error) -> StorageError<NodeId> {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

fn encode<T: Serialize>(value: &T) -> IoResult<Vec<u8>> {
    postcard::to_stdvec(value).map_err(io_err)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> IoResult<T> {
    postcard::from_bytes(bytes).map_err(io_err)
}

impl RedbLogStore {
    /// Opens (or creates) the log at `path`. Fails if another store in this process or any
    /// other has it open.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let db = Database::create(path).map_err(std::io::Error::other)?;
        // Create both tables so readers never see them missing.
        let txn = db.begin_write().map_err(std::io::Error::other)?;
        txn.open_table(LOGS).map_err(std::io::Error::other)?;
        txn.open_table(META).map_err(std::io::Error::other)?;
        txn.commit().map_err(std::io::Error::other)?;
        Ok(Self { db: Arc::new(db) })
    }

    /// Runs `f` on the blocking pool with the database.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> IoResult<T> + Send + 'static,
    ) -> Result<T> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(io_err)
            .and_then(|r| r)
            .map_err(storage_err)
    }

    async fn put_meta<T: Serialize>(&self, key: &'static str, value: &T) -> Result<()> {
        let bytes = encode(value).map_err(storage_err)?;
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(io_err)?;
            txn.open_table(META)
                .map_err(io_err)?
                .insert(key, bytes.as_slice())
                .map_err(io_err)?;
            txn.commit().map_err(io_err)
        })
        .await
    }

    async fn get_meta<T: DeserializeOwned + Send + 'static>(
        &self,
        key: &'static str,
    ) -> Result<Option<T>> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(io_err)?;
            let table = txn.open_table(META).map_err(io_err)?;
            match table.get(key).map_err(io_err)? {
                Some(v) => decode(v.value()).map(Some),
                None => Ok(None),
            }
        })
        .await
    }
}

impl RaftLogReader<TypeConfig> for RedbLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>> {
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(io_err)?;
            let table = txn.open_table(LOGS).map_err(io_err)?;
            let mut out = Vec::new();
            for item in table.range::<u64>((start, end)).map_err(io_err)? {
                let (_, v) = item.map_err(io_err)?;
                out.push(decode(v.value())?);
            }
            Ok(out)
        })
        .await
    }
}

impl RaftLogStorage<TypeConfig> for RedbLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        let last_purged: Option<LogId> = self.get_meta(LAST_PURGED).await?;
        let last: Option<LogId> = self
            .blocking(|db| {
                let txn = db.begin_read().map_err(io_err)?;
                let table = txn.open_table(LOGS).map_err(io_err)?;
                match table.last().map_err(io_err)? {
                    Some((_, v)) => Ok(Some(decode::<Entry<TypeConfig>>(v.value())?.log_id)),
                    None => Ok(None),
                }
            })
            .await?;
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<()> {
        self.put_meta(VOTE, vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>> {
        self.get_meta(VOTE).await
    }

    /// Not fsynced: openraft awaits this inline on every commit, leader and followers alike,
    /// so an fsync here would stall heartbeats and elections behind the disk. The committed id
    /// is only a hint (openraft recovers without it), and the next durable append persists it.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<()> {
        let bytes = encode(&committed).map_err(storage_err)?;
        self.blocking(move |db| {
            let mut txn = db.begin_write().map_err(io_err)?;
            txn.set_durability(Durability::None).map_err(io_err)?;
            txn.open_table(META)
                .map_err(io_err)?
                .insert(COMMITTED, bytes.as_slice())
                .map_err(io_err)?;
            txn.commit().map_err(io_err)
        })
        .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>> {
        Ok(self.get_meta::<Option<LogId>>(COMMITTED).await?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let encoded = entries
            .into_iter()
            .map(|e| Ok((e.log_id.index, encode(&e)?)))
            .collect::<IoResult<Vec<_>>>()
            .map_err(storage_err)?;
        let outcome = self
            .blocking(move |db| {
                let txn = db.begin_write().map_err(io_err)?;
                {
                    let mut table = txn.open_table(LOGS).map_err(io_err)?;
                    for (index, bytes) in &encoded {
                        table.insert(index, bytes.as_slice()).map_err(io_err)?;
                    }
                }
                // Durability::Immediate (the default): returns after fsync.
                txn.commit().map_err(io_err)
            })
            .await;
        // Only now are the entries durable; report it (or the failure) to openraft.
        match &outcome {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        outcome
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<()> {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(io_err)?;
            txn.open_table(LOGS)
                .map_err(io_err)?
                .retain_in::<u64, _>(log_id.index.., |_, _| false)
                .map_err(io_err)?;
            txn.commit().map_err(io_err)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<()> {
        let purged = encode(&log_id).map_err(storage_err)?;
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(io_err)?;
            txn.open_table(LOGS)
                .map_err(io_err)?
                .retain_in::<u64, _>((Bound::Unbounded, Bound::Included(log_id.index)), |_, _| {
                    false
                })
                .map_err(io_err)?;
            txn.open_table(META)
                .map_err(io_err)?
                .insert(LAST_PURGED, purged.as_slice())
                .map_err(io_err)?;
            txn.commit().map_err(io_err)
        })
        .await
    }
}
