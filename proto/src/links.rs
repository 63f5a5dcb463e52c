//! Names and codes of the two QUIC protocols of the broker tier, shared by both ends of each.
//!
//! ```text
//!   broker ◀══ plaza-raft/1 (Raft RPCs, event broadcast) ══▶ broker
//!   edge   ═══ plaza-edge/1 (one long-lived session: cluster.rs frames) ══▶ broker
//! ```
//!
//! Each protocol is told apart by its ALPN on one shared UDP endpoint per broker. The request
//! framing and its version live in `plaza-net` (`frame.rs`); the edge protocol's version is
//! [`crate::cluster::PROTOCOL_VERSION`], sent in its `Hello`.

/// The ALPN of broker↔broker Raft RPCs.
pub const ALPN_RAFT: &[u8] = b"plaza-raft/1";

/// The ALPN of the edge protocol (an edge's session with one broker).
pub const ALPN_EDGE: &[u8] = b"plaza-edge/1";

/// Edge-protocol connection close codes (QUIC application close codes) a broker ends an edge's
/// connection with. What the edge does on each is written beside it.
pub mod edge_close {
    /// The broker could not deliver every event to this edge (its queue overflowed, or this
    /// broker must resync): reconnect and resume.
    pub const RESUME: u32 = 10;
    /// The edge's lease ran out (its members were removed): attach again and re-join.
    pub const LEASE_EXPIRED: u32 = 11;
    /// The edge broke the protocol (bad frame, call before hello, lease out of range).
    pub const PROTOCOL: u32 = 12;
    /// The edge's protocol version is not spoken here.
    pub const VERSION: u32 = 13;
    /// The broker cannot serve now (no quorum to attach, shutting down).
    pub const UNAVAILABLE: u32 = 14;
}
