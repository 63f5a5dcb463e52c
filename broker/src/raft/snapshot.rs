//! Where the state machine keeps its current snapshot: in memory, and optionally in one file
//! of the data dir so a restarted node restores from it (then replays the log after it).
//!
//! The file is `snapshot.bin`: postcard of [`SnapshotFile`] (meta + data). It is replaced
//! atomically: written to a temporary file, fsynced, renamed over the old one, and the
//! directory fsynced, so a crash leaves either the old or the new snapshot, never half of one.
//! openraft purges log entries covered by a snapshot only after `build_snapshot` /
//! `install_snapshot` return, and both persist here first, so the log and the snapshot
//! together always cover every committed entry.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use openraft::SnapshotMeta;
use serde::{Deserialize, Serialize};

use super::types::{BrokerNode, NodeId};
use plaza_rooms::{RoomsState, RoomsStateV1, RoomsStateV2};

/// Bumped if the snapshot layout ever changes incompatibly (2: the lifecycle event feed; 3:
/// live-state rooms' maps).
const FORMAT: u16 = 3;
const FILE: &str = "snapshot.bin";

/// The body of a snapshot (what is shipped to followers as the snapshot data).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SnapshotBody {
    /// [`FORMAT`].
    pub format: u16,
    /// `None` before the genesis entry was applied.
    pub rooms: Option<RoomsState>,
}

impl SnapshotBody {
    pub(super) fn new(rooms: Option<RoomsState>) -> Self {
        Self {
            format: FORMAT,
            rooms,
        }
    }

    pub(super) fn decode(data: &[u8]) -> io::Result<Self> {
        let (format, _) = postcard::take_from_bytes::<u16>(data).map_err(io::Error::other)?;
        if format == 1 {
            // Before lifecycle events: the same layout without the feed.
            let old: SnapshotBodyV1 = postcard::from_bytes(data).map_err(io::Error::other)?;
            return Ok(Self::new(old.rooms.map(RoomsState::from)));
        }
        if format == 2 {
            // Before live-state rooms: the same layout without the maps.
            let old: SnapshotBodyV2 = postcard::from_bytes(data).map_err(io::Error::other)?;
            return Ok(Self::new(old.rooms.map(RoomsState::from)));
        }
        let body: Self = postcard::from_bytes(data).map_err(io::Error::other)?;
        if body.format != FORMAT {
            return Err(io::Error::other(format!(
                "snapshot format {} is not supported (expected {FORMAT})",
                body.format
            )));
        }
        Ok(body)
    }
}

/// A [`SnapshotBody`] of format 1.
#[derive(Deserialize)]
struct SnapshotBodyV1 {
    #[allow(dead_code)]
    format: u16,
    rooms: Option<RoomsStateV1>,
}

/// A [`SnapshotBody`] of format 2.
#[derive(Deserialize)]
struct SnapshotBodyV2 {
    #[allow(dead_code)]
    format: u16,
    rooms: Option<RoomsStateV2>,
}

/// A snapshot as stored: its meta and the encoded [`SnapshotBody`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SnapshotFile {
    pub meta: SnapshotMeta<NodeId, BrokerNode>,
    pub data: Arc<Vec<u8>>,
}

/// The current snapshot, kept in memory and (with a directory) on disk. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct SnapshotStore {
    dir: Option<PathBuf>,
    /// Locked only for the swap, never across I/O or `.await`.
    current: Arc<Mutex<Option<SnapshotFile>>>,
}

impl SnapshotStore {
    /// A store that keeps snapshots in memory only.
    pub(crate) fn memory() -> Self {
        Self::default()
    }

    /// A store in `dir`, loading the snapshot a previous run left there.
    pub(crate) fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let path = dir.join(FILE);
        let current = match fs::read(&path) {
            Ok(bytes) => Some(postcard::from_bytes(&bytes).map_err(io::Error::other)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(Self {
            dir: Some(dir.to_owned()),
            current: Arc::new(Mutex::new(current)),
        })
    }

    pub(crate) fn current(&self) -> Option<SnapshotFile> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Makes `snapshot` the current one, durably if the store has a directory. Blocking I/O:
    /// call from `spawn_blocking`.
    pub(crate) fn save(&self, snapshot: SnapshotFile) -> io::Result<()> {
        if let Some(dir) = &self.dir {
            let bytes = postcard::to_stdvec(&snapshot).map_err(io::Error::other)?;
            let tmp = dir.join(format!("{FILE}.tmp"));
            let mut file = File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            drop(file);
            fs::rename(&tmp, dir.join(FILE))?;
            File::open(dir)?.sync_all()?;
        }
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(snapshot);
        Ok(())
    }
}

/// Where the snapshot being received stands, so a chunk can only continue it: openraft seeks to
/// any chunk's offset and writes there, growing the in-memory snapshot to `offset + len`, so one
/// chunk with an offset of 2^62 would make the node reserve that much. A chunk is accepted only
/// if it starts a snapshot (offset 0) or starts at or before the end of the bytes already
/// received for the same snapshot id (a leader resending a chunk after a timeout does that);
/// received bytes therefore only grow by what was actually sent.
#[derive(Debug, Default)]
pub(crate) struct ChunkTracker {
    /// The snapshot id being received and the end of its received bytes; locked only to check
    /// and update, never across `.await`.
    receiving: Mutex<Option<(String, u64)>>,
}

impl ChunkTracker {
    /// Checks a chunk of snapshot `id` at `offset` with `len` bytes and records it; on refusal
    /// returns the offset the chunk should have started at (at most).
    pub(crate) fn accept(&self, id: &str, offset: u64, len: usize) -> Result<(), u64> {
        let mut receiving = self
            .receiving
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let len = len as u64;
        if offset == 0 {
            *receiving = Some((id.to_owned(), len));
            return Ok(());
        }
        match receiving.as_mut() {
            Some((current, end)) if current == id && offset <= *end => {
                *end = (*end).max(offset.saturating_add(len));
                Ok(())
            }
            Some((current, end)) if current == id => Err(*end),
            _ => Err(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ChunkTracker, SnapshotBody};

    #[test]
    fn a_format_1_snapshot_from_before_lifecycle_events_still_decodes() {
        let rooms = plaza_rooms::Rooms::new(&Default::default(), "epoch");
        let state = rooms.state().clone();
        let mut bytes = postcard::to_stdvec(&SnapshotBody::new(Some(state.clone()))).unwrap();
        // Format 1 had no lifecycle feed and webhook cursors: 7 trailing bytes when empty.
        bytes[0] = 1;
        bytes.truncate(bytes.len() - 7);
        let body = SnapshotBody::decode(&bytes).unwrap();
        assert_eq!(body.rooms, Some(state));
        bytes[0] = 9;
        assert!(
            SnapshotBody::decode(&bytes).is_err(),
            "unknown formats are refused"
        );
    }

    #[test]
    fn a_snapshot_chunk_may_only_continue_the_bytes_received_so_far() {
        let chunks = ChunkTracker::default();
        assert_eq!(chunks.accept("s1", 5, 3), Err(0), "no snapshot started");
        assert_eq!(chunks.accept("s1", 0, 10), Ok(()));
        assert_eq!(chunks.accept("s1", 10, 10), Ok(()), "the next chunk");
        assert_eq!(chunks.accept("s1", 10, 10), Ok(()), "a resent chunk");
        assert_eq!(chunks.accept("s1", 1 << 62, 1), Err(20), "a huge offset");
        assert_eq!(chunks.accept("s1", 21, 1), Err(20), "a gap");
        assert_eq!(
            chunks.accept("s2", 20, 1),
            Err(0),
            "another snapshot's chunk"
        );
        assert_eq!(chunks.accept("s2", 0, 4), Ok(()), "another snapshot starts");
        assert_eq!(chunks.accept("s1", 10, 1), Err(0), "the old one is over");
    }
}
