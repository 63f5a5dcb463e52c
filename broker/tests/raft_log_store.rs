//! The log stores: openraft's storage conformance suite on both, plus the redb store's own
//! round trip across a reopen.

use std::collections::BTreeSet;
use std::path::Path;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::testing::{StoreBuilder, Suite, log_id};
use openraft::{Entry, EntryPayload, LogId, Membership, RaftLogReader, StorageError, Vote};
use plaza_broker::raft::{
    Batch, BrokerNode, MemLogStore, RedbLogStore, Request, StateMachine, TypeConfig,
};
use plaza_rooms::Command;
use plaza_rooms::config::RoomsConfig;

struct Mem;

impl StoreBuilder<TypeConfig, MemLogStore, StateMachine> for Mem {
    async fn build(&self) -> Result<((), MemLogStore, StateMachine), StorageError<u64>> {
        Ok((
            (),
            MemLogStore::new(),
            StateMachine::in_memory(RoomsConfig::default()),
        ))
    }
}

struct Redb;

impl StoreBuilder<TypeConfig, RedbLogStore, StateMachine, tempfile::TempDir> for Redb {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, RedbLogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().unwrap();
        let log = RedbLogStore::open(&dir.path().join("log.redb")).unwrap();
        Ok((dir, log, StateMachine::in_memory(RoomsConfig::default())))
    }
}

#[test]
fn the_memory_log_store_passes_the_openraft_storage_suite() {
    Suite::test_all(Mem).unwrap();
}

#[test]
fn the_redb_log_store_passes_the_openraft_storage_suite() {
    Suite::test_all(Redb).unwrap();
}

fn entry(term: u64, index: u64, n: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(term, 1, index),
        payload: EntryPayload::Normal(Request::Batch(Batch {
            now_ms: n,
            commands: vec![Command::Tick],
        })),
    }
}

async fn indexes(store: &mut RedbLogStore) -> Vec<u64> {
    store
        .try_get_log_entries(0..u64::MAX)
        .await
        .unwrap()
        .iter()
        .map(|e| e.log_id.index)
        .collect()
}

fn open(path: &Path) -> RedbLogStore {
    RedbLogStore::open(path).unwrap()
}

#[tokio::test]
async fn the_redb_log_store_round_trips_entries_vote_truncate_and_purge_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.redb");
    let vote = Vote::new_committed(3, 2);
    let committed: LogId<u64> = log_id(2, 1, 7);
    let membership = Entry::<TypeConfig> {
        log_id: log_id(1, 1, 1),
        payload: EntryPayload::Membership(Membership::new(
            vec![BTreeSet::from([1, 2])],
            [(1, BrokerNode::new("a:1")), (2, BrokerNode::new("b:2"))]
                .into_iter()
                .collect::<std::collections::BTreeMap<_, _>>(),
        )),
    };
    {
        let mut store = open(&path);
        store.blocking_append([membership.clone()]).await.unwrap();
        store
            .blocking_append((2..=10).map(|i| entry(2, i, i)))
            .await
            .unwrap();
        store.save_vote(&vote).await.unwrap();
        store.save_committed(Some(committed)).await.unwrap();
        // Truncate from 9 (inclusive), then purge through 3.
        store.truncate(log_id(2, 1, 9)).await.unwrap();
        store.purge(log_id(2, 1, 3)).await.unwrap();
        assert_eq!(indexes(&mut store).await, (4..=8).collect::<Vec<_>>());
    }
    // Everything survives closing and reopening the file.
    let mut store = open(&path);
    assert_eq!(store.read_vote().await.unwrap(), Some(vote));
    assert_eq!(store.read_committed().await.unwrap(), Some(committed));
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(2, 1, 3)));
    assert_eq!(state.last_log_id, Some(log_id(2, 1, 8)));
    let entries = store.try_get_log_entries(4..9).await.unwrap();
    assert_eq!(entries, (4..=8).map(|i| entry(2, i, i)).collect::<Vec<_>>());
    assert_eq!(
        store.try_get_log_entries(5..6).await.unwrap(),
        vec![entry(2, 5, 5)]
    );

    // Appending after the truncation point replaces the tail; purging everything leaves the
    // purged id as the last log id.
    store.blocking_append([entry(3, 9, 99)]).await.unwrap();
    assert_eq!(indexes(&mut store).await, (4..=9).collect::<Vec<_>>());
    store.purge(log_id(3, 1, 9)).await.unwrap();
    drop(store);
    let mut store = open(&path);
    assert!(indexes(&mut store).await.is_empty());
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(3, 1, 9)));
    assert_eq!(state.last_log_id, Some(log_id(3, 1, 9)));

    // The file is exclusively locked while open.
    let _store = store;
    assert!(RedbLogStore::open(&path).is_err());
}
