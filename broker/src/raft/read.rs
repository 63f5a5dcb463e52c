//! Reading a [`RaftNode`]'s applied state: rooms, positions, history, presence. Each read sees
//! the state as of this node's last applied entry; callers that need linearizable reads take a
//! read barrier first ([`RaftNode::read_barrier`]).

use plaza_proto::cluster::{HistoryPage, PresencePage, PresenceStats, RoomsPage};
use plaza_proto::events::{EventFilter, EventsPage, FeedPosition};
use plaza_proto::{ClientId, Position, RoomName};
use plaza_rooms::Rooms;

use super::ReadError;
use super::batcher::wall_clock_ms;
use super::node::RaftNode;

impl RaftNode {
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

    /// One page of `room`'s members in the applied state (see [`Rooms::presence`]).
    pub fn presence(
        &self,
        room: &RoomName,
        after: Option<&ClientId>,
        limit: u32,
    ) -> Result<PresencePage, ReadError> {
        Ok(self.read(|r| r.presence(room, after, limit))??)
    }

    /// A state room's whole map in the applied state (see [`Rooms::state_snapshot`]).
    pub fn state_snapshot(
        &self,
        room: &RoomName,
    ) -> Result<plaza_proto::state::StateSnapshot, ReadError> {
        Ok(self.read(|r| r.state_snapshot(room))??)
    }

    /// `room`'s member counts in the applied state.
    pub fn presence_stats(&self, room: &RoomName) -> Result<PresenceStats, ReadError> {
        Ok(self.read(|r| r.presence_stats(room))??)
    }

    /// One page of the lifecycle event feed in the applied state (see [`Rooms::events`]).
    pub fn events(
        &self,
        since: Option<&FeedPosition>,
        limit: u32,
        filter: &EventFilter,
    ) -> Result<EventsPage, ReadError> {
        Ok(self.read(|r| r.events(since, limit, filter))??)
    }

    /// One page of the active rooms in the applied state (see [`Rooms::rooms`]).
    pub fn rooms(&self, after: Option<&RoomName>, limit: u32) -> Result<RoomsPage, ReadError> {
        self.read(|r| r.rooms(wall_clock_ms(), after, limit))
    }
}
