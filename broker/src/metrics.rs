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
