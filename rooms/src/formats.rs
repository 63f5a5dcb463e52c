//! Earlier layouts of [`RoomsState`] that broker snapshots stored, so a broker upgraded in place
//! restores its old snapshot (see `broker/src/raft/snapshot.rs`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use plaza_proto::RoomName;
use serde::Deserialize;

use super::edges::Edges;
use super::gc::Watermarks;
use super::lifecycle::Lifecycle;
use super::room::Room;
use super::webhooks::Webhooks;
use super::{IdemExpiry, RoomsState, state};

/// [`RoomsState`] as snapshots stored it before live-state rooms (broker snapshot format 2),
/// so a broker upgraded in place restores its old snapshot; it starts with no state maps.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RoomsStateV2 {
    instance: String,
    seq: u64,
    clock: u64,
    rooms: BTreeMap<RoomName, Box<Room>>,
    watermarks: Watermarks,
    edges: Edges,
    idem_expiry: VecDeque<IdemExpiry>,
    wakeups: BTreeSet<(u64, RoomName)>,
    lifecycle: Lifecycle,
    webhooks: Webhooks,
}

impl From<RoomsStateV2> for RoomsState {
    fn from(v2: RoomsStateV2) -> Self {
        Self {
            instance: v2.instance,
            seq: v2.seq,
            clock: v2.clock,
            rooms: v2.rooms,
            watermarks: v2.watermarks,
            edges: v2.edges,
            idem_expiry: v2.idem_expiry,
            wakeups: v2.wakeups,
            lifecycle: v2.lifecycle,
            webhooks: v2.webhooks,
            state_rooms: state::StateRooms::default(),
        }
    }
}

/// [`RoomsState`] as snapshots stored it before lifecycle events (broker snapshot format 1),
/// so a broker upgraded in place restores its old snapshot; it starts with an empty feed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RoomsStateV1 {
    instance: String,
    seq: u64,
    clock: u64,
    rooms: BTreeMap<RoomName, Box<Room>>,
    watermarks: Watermarks,
    edges: Edges,
    idem_expiry: VecDeque<IdemExpiry>,
    wakeups: BTreeSet<(u64, RoomName)>,
}

impl From<RoomsStateV1> for RoomsState {
    fn from(v1: RoomsStateV1) -> Self {
        Self {
            instance: v1.instance,
            seq: v1.seq,
            clock: v1.clock,
            rooms: v1.rooms,
            watermarks: v1.watermarks,
            edges: v1.edges,
            idem_expiry: v1.idem_expiry,
            wakeups: v1.wakeups,
            lifecycle: Lifecycle::default(),
            webhooks: Webhooks::default(),
            state_rooms: state::StateRooms::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RoomsConfig;
    use crate::{Command, Rooms};

    /// A format-2 snapshot is today's layout without the trailing state maps (three empty
    /// postcard maps when there are none): it decodes as `RoomsStateV2` into the same state.
    #[test]
    fn a_format_2_snapshot_restores_with_empty_state_maps() {
        let mut rooms = Rooms::new(&RoomsConfig::default(), "e");
        let room = RoomName::new("chat:a").unwrap();
        let data = plaza_proto::Payload::from_json("1").unwrap();
        let publish = Command::Publish {
            room,
            data,
            from: None,
            idem: None,
        };
        rooms.apply(5, publish, &mut Vec::new()).unwrap();
        let bytes = postcard::to_stdvec(rooms.state()).unwrap();
        assert_eq!(&bytes[bytes.len() - 3..], [0, 0, 0], "empty maps last");
        let old: RoomsStateV2 = postcard::from_bytes(&bytes[..bytes.len() - 3]).unwrap();
        assert_eq!(&RoomsState::from(old), rooms.state());
    }
}
