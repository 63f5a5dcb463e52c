//! Names of the broker's own metrics (the Raft gauges are set in `server::status`).

/// Gauge: edge sessions attached to this broker.
pub(crate) const EDGE_SESSIONS: &str = "plaza_broker_edge_sessions";
/// Counter: edge sessions cut so their edge resumes elsewhere (queue overflow, resync).
pub(crate) const EDGE_SESSIONS_CUT: &str = "plaza_broker_edge_sessions_cut_total";
/// Counter: edge calls by `call` and `result` (`ok`, `error`).
pub(crate) const EDGE_CALLS: &str = "plaza_broker_edge_calls_total";
/// Histogram: seconds from an edge call's arrival to its answer, by `call`.
pub(crate) const EDGE_CALL_SECONDS: &str = "plaza_broker_edge_call_seconds";
/// Counter: edge connections refused or closed for bad input, by `reason` (`version`,
/// `protocol`, `lease`, `undeclared_room`).
pub(crate) const EDGE_REFUSED: &str = "plaza_broker_edge_refused_total";
/// Counter: QUIC connections or requests refused because of the peer's certificate, by `alpn`
/// (`raft`, `edge`) and `reason` (`no_role`: a certificate without a Plaza role; `not_broker`:
/// an edge certificate on the Raft ALPN; `not_edge`: a broker certificate on the edge ALPN;
/// `node_id`: a Raft RPC claiming another node's id; `edge_id`: a `Hello` with another edge's
/// id).
pub(crate) const IDENTITY_REFUSED: &str = "plaza_broker_identity_refused_total";
/// Counter: snapshot chunks refused because their offset is past the bytes received so far.
pub(crate) const SNAPSHOT_CHUNKS_REFUSED: &str = "plaza_broker_snapshot_chunks_refused_total";
/// Counter: lease renewals committed for attached edges.
pub(crate) const LEASE_RENEWALS: &str = "plaza_broker_lease_renewals_total";
/// Counter: linearizable reads served to edges (history, presence, positions, room lists).
pub(crate) const READS: &str = "plaza_broker_reads_total";
/// Counter: read barriers (quorum checks) taken for them; concurrent reads share one, so under
/// a read flood this grows with the round-trip rate, not the read rate.
pub(crate) const READ_BARRIERS: &str = "plaza_broker_read_barriers_total";
/// Counter: times this node, leading, lost contact with a majority and fenced itself
/// (check-quorum: heartbeats off, writes refused, so the others elect a new leader).
pub(crate) const CHECK_QUORUM_FENCED: &str = "plaza_broker_check_quorum_fenced_total";
/// Counter: writes and reads refused because this node could not commit (no recent round trip
/// to the leader, or a leader without a recent quorum ack) even after waiting one more health
/// window; the edge answers them with the temporary 113 and re-attaches if it persists.
pub(crate) const UNHEALTHY_REFUSALS: &str = "plaza_broker_unhealthy_refusals_total";
/// Histogram: seconds each failover phase took as this node saw it, by `phase` (`detection`:
/// last round trip to the old leader until this node stopped following it; `election`: until
/// a new leader was known; `first_commit`: until an entry of the new term was applied here;
/// `total`).
pub(crate) const FAILOVER_SECONDS: &str = "plaza_broker_failover_seconds";
/// Counter: ephemeral publications handed to edges attached here, by `source` (`edge`: from an
/// edge of this broker; `peer`: relayed by another broker).
pub(crate) const EPHEMERAL_ROUTED: &str = "plaza_broker_ephemeral_total";
/// Counter: ephemeral publications dropped, by `reason` (`edge_queue`: an attached edge's
/// queue was full; `peer_queue`: the relay queue to a broker was full; `peer_unreachable`: a
/// relay to a broker failed).
pub(crate) const EPHEMERAL_DROPPED: &str = "plaza_broker_ephemeral_dropped_total";
