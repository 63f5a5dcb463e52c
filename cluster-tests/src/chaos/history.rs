//! What a chaos run records: every operation a client attempted, what the system answered, and
//! what each client received — the input of the invariant checkers (`invariants/`).
//!
//! Times are milliseconds since the start of the run (from one monotonic clock). Events are
//! appended in the order the recorder saw them; per client that is the client's own order.

use serde::{Deserialize, Serialize};

/// A client of the workload (one WebSocket connection at a time, reconnecting as needed).
pub type ClientNo = u32;

/// One recorded fact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A client sent a publish with idempotency key `id` (also in its data as `{"id": id}`).
    /// Retries of the same publication reuse the same `id`.
    PublishSent {
        /// Who.
        client: ClientNo,
        /// Room name.
        room: String,
        /// Idempotency key, unique per publication of the run.
        id: String,
        /// When.
        at: u64,
    },
    /// The publish with key `id` was acknowledged at `epoch`/`offset` (`duplicate` when the
    /// system recognised a retry).
    PublishAcked {
        /// Who.
        client: ClientNo,
        /// Room name.
        room: String,
        /// Idempotency key.
        id: String,
        /// Epoch of the acknowledged position.
        epoch: String,
        /// Offset of the acknowledged position.
        offset: u64,
        /// Whether the system reported it as a duplicate of an earlier attempt.
        duplicate: bool,
        /// When.
        at: u64,
    },
    /// The publish with key `id` got an error reply or no reply (connection lost): its outcome
    /// is unknown until a later attempt with the same `id` is acknowledged.
    PublishFailed {
        /// Who.
        client: ClientNo,
        /// Room name.
        room: String,
        /// Idempotency key.
        id: String,
        /// Error code, or 0 when the connection was lost.
        code: u16,
        /// When.
        at: u64,
    },
    /// A subscribe reply. `recover` is the position the client asked to recover from (its last
    /// delivered position), `recovered` and `publications` are the reply's.
    Subscribed {
        /// Who.
        client: ClientNo,
        /// Room name.
        room: String,
        /// The position asked to recover from, if any.
        recover: Option<(String, u64)>,
        /// The reply's `recovered`.
        recovered: bool,
        /// The reply's current epoch.
        epoch: String,
        /// The reply's current offset.
        offset: u64,
        /// The reply's recovered publications: `(offset, id)` in reply order.
        publications: Vec<(u64, String)>,
        /// When.
        at: u64,
    },
    /// A live `pub` push (publications returned in a subscribe reply are in `Subscribed`).
    Delivered {
        /// Who.
        client: ClientNo,
        /// Room name.
        room: String,
        /// Epoch (the subscription's).
        epoch: String,
        /// Offset.
        offset: u64,
        /// The publication's `id` (from its data).
        id: String,
        /// When.
        at: u64,
    },
    /// The client's connection ended (it reconnects, possibly to another edge, and subscribes
    /// again with `recover`).
    Disconnected {
        /// Who.
        client: ClientNo,
        /// Close code, or 1006 when the socket just failed.
        code: u16,
        /// When.
        at: u64,
    },
    /// A presence reading taken by the checker after the faults healed: the users present in
    /// `room`, and the users the workload knows are connected and subscribed there.
    PresenceObserved {
        /// Room name.
        room: String,
        /// Users the system lists (sorted).
        observed: Vec<String>,
        /// Users actually connected and subscribed (sorted).
        expected: Vec<String>,
        /// How long after the last fault healed.
        after_heal_ms: u64,
        /// When.
        at: u64,
    },
    /// The presence watcher's final reading: the member list it kept from pushes since its
    /// last (re)load (`join`, `leave`, `presence_resync`), and the room's presence read on the
    /// same connection once the pushes went quiet after the faults healed.
    PresenceTracked {
        /// Room name.
        room: String,
        /// Client ids of the list kept from pushes (sorted).
        tracked: Vec<String>,
        /// Client ids of the `presence` reply (sorted).
        actual: Vec<String>,
        /// `presence_resync` pushes the watcher applied in the room.
        resyncs: u64,
        /// When.
        at: u64,
    },
    /// The state watcher's final reading (`state_watch.rs`): the map it kept from a state
    /// room's snapshot and change pushes through every fault, and the room's map read on a
    /// fresh subscription once the pushes went quiet (`None`: it never got through).
    StateTracked {
        /// Room name.
        room: String,
        /// The kept map: (key, value as JSON text, version), sorted by key.
        tracked: Vec<(String, String, u64)>,
        /// The offset the kept map is at.
        tracked_offset: u64,
        /// The room's map read at the end, like `tracked`.
        actual: Option<Vec<(String, String, u64)>>,
        /// The offset of that reading.
        actual_offset: u64,
        /// Subscriptions the watcher made (the first, then one per replaced connection).
        subscribes: u64,
        /// How many of them answered with a fresh snapshot.
        snapshots: u64,
        /// When.
        at: u64,
    },
    /// A broker's `/status` said it leads in `term` (Raft backend only).
    LeaderObserved {
        /// The broker id.
        node: u64,
        /// The term.
        term: u64,
        /// When.
        at: u64,
    },
}

/// A whole run's record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Every event, in recording order.
    pub events: Vec<Event>,
}

/// A broken invariant with its first counterexample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The invariant's name (e.g. `"no-lost-ack"`).
    pub invariant: &'static str,
    /// The first counterexample, for humans.
    pub example: String,
}
