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
use plaza_rooms::RoomsState;

/// Bumped if the snapshot layout ever changes incompatibly.
const FORMAT: u16 = 1;
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
