//! Prometheus metrics: names in one place, one recorder per process.
//!
//! The recorder is process-global (the `metrics` facade has one), so several edges started in
//! one test process share it; each edge still serves it at `/metrics`.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Open client connections (gauge).
pub(crate) const CONNECTIONS: &str = "plaza_connections";
/// Accepted WebSocket connections (counter).
pub(crate) const CONNECTIONS_TOTAL: &str = "plaza_connections_total";
/// Commands handled, by `op` and `result` (`ok` or an error code name).
pub(crate) const COMMANDS: &str = "plaza_commands_total";
/// Counter: connection handlers (command, cleanup, writer) that panicked, by `stage`.
pub(crate) const HANDLER_PANICS: &str = "plaza_handler_panics_total";
/// Publications accepted from clients.
pub(crate) const PUBLICATIONS_IN: &str = "plaza_publications_in_total";
/// Publication frames queued to clients (one per subscriber).
pub(crate) const PUBLICATIONS_OUT: &str = "plaza_publications_out_total";
/// Room events received from the broker tier.
pub(crate) const BROKER_EVENTS: &str = "plaza_broker_events_total";
/// Presence resyncs received from the link (it may have missed join/leave events).
pub(crate) const PRESENCE_RESYNCS: &str = "plaza_presence_resyncs_total";
/// Disconnects initiated by the edge, by `code` name.
pub(crate) const DISCONNECTS: &str = "plaza_disconnects_total";
/// Clients disconnected because their outbound queue overflowed.
pub(crate) const SLOW_CONSUMERS: &str = "plaza_slow_consumer_disconnects_total";
/// Refused tokens, by `reason`.
pub(crate) const AUTH_FAILURES: &str = "plaza_auth_failures_total";
/// Frames that were not valid commands, by `kind`.
pub(crate) const BAD_FRAMES: &str = "plaza_bad_frames_total";
/// Broker call latency in seconds, by `call` (histogram).
pub(crate) const BROKER_CALL_SECONDS: &str = "plaza_broker_call_seconds";
/// Idempotent broker calls repeated after an "unavailable" answer, by `call`.
pub(crate) const BROKER_RETRIES: &str = "plaza_broker_call_retries_total";
/// Rooms with local subscribers on this edge (gauge).
pub(crate) const HUB_ROOMS: &str = "plaza_hub_rooms";
/// Local subscriptions on this edge (gauge).
pub(crate) const SUBSCRIPTIONS: &str = "plaza_subscriptions";
/// Requests or commands refused by a limit, by `limit`.
pub(crate) const LIMIT_HITS: &str = "plaza_limit_hits_total";
/// 1 while the edge is draining (gauge).
pub(crate) const DRAINING: &str = "plaza_draining";
/// Server API requests, by `endpoint` (route template) and HTTP `status`.
pub(crate) const API_REQUESTS: &str = "plaza_api_requests_total";
/// JWKS fetch attempts, by `issuer` and `result` (`ok`, `timeout`, `http_status`, `request`,
/// `too_large`, `io`, `invalid`).
pub(crate) const JWKS_FETCHES: &str = "plaza_jwks_fetches_total";
/// Unknown-`kid` refetches skipped by the per-issuer rate limit, by `issuer`.
pub(crate) const JWKS_REFETCHES_SKIPPED: &str = "plaza_jwks_refetches_skipped_total";
/// Keys in the issuer's current key set, by `issuer` (gauge).
pub(crate) const JWKS_KEYS: &str = "plaza_jwks_keys";
/// 1 while this edge is the deployment's webhook sender (gauge).
pub(crate) const WEBHOOK_SENDER: &str = "plaza_webhook_sender";
/// Webhook POSTs, by `endpoint` and `outcome` (`delivered`, `redirect`, `status_4xx`,
/// `status_5xx`, `timeout`, `connect`, `other`).
pub(crate) const WEBHOOK_POSTS: &str = "plaza_webhook_posts_total";
/// Duration of webhook POSTs in seconds, by `endpoint` (histogram).
pub(crate) const WEBHOOK_POST_SECONDS: &str = "plaza_webhook_post_seconds";
/// Events delivered to an endpoint, by `endpoint`.
pub(crate) const WEBHOOK_EVENTS_DELIVERED: &str = "plaza_webhook_events_delivered_total";
/// Events given up on after `webhooks.retry_window`, by `endpoint` (still in the feed).
pub(crate) const WEBHOOK_EVENTS_GIVEN_UP: &str = "plaza_webhook_events_given_up_total";
/// Events that left the feed (retention) before they were delivered, by `endpoint`.
pub(crate) const WEBHOOK_EVENTS_LOST: &str = "plaza_webhook_events_lost_total";
/// Feed events not yet read by an endpoint's sender, by `endpoint` (gauge, on the sender).
pub(crate) const WEBHOOK_LAG: &str = "plaza_webhook_lag_events";

/// Installs the process-wide recorder (once) and returns its handle for `/metrics`; its
/// histograms are drained every few seconds whether or not anyone scrapes
/// ([`plaza_process::install_metrics`]).
pub(crate) fn install() -> PrometheusHandle {
    let buckets = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0,
    ];
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(BROKER_CALL_SECONDS.into()), &buckets)
        .unwrap_or_else(|_| PrometheusBuilder::new());
    plaza_process::install_metrics(builder, || {
        describe();
        register_zeroes();
    })
}

/// Registers the series alerts are written against, at zero, so a fresh edge exposes them
/// before the first event (a missing series is not the same as 0 to most alert rules).
fn register_zeroes() {
    for name in [
        CONNECTIONS_TOTAL,
        PUBLICATIONS_IN,
        PUBLICATIONS_OUT,
        BROKER_EVENTS,
        SLOW_CONSUMERS,
        PRESENCE_RESYNCS,
    ] {
        metrics::counter!(name).increment(0);
    }
    for name in [CONNECTIONS, HUB_ROOMS, SUBSCRIPTIONS, DRAINING] {
        metrics::gauge!(name).increment(0.0);
    }
    for limit in [
        "commands_per_second",
        "connections_per_ip",
        "connections_per_user",
        "rooms_per_connection",
        "message_bytes",
        "reply_bytes",
        "origin",
        "presence_info_bytes",
        "presence_updates_per_connection",
        "metrics_via_proxy",
        "api_failed_auth",
    ] {
        metrics::counter!(LIMIT_HITS, "limit" => limit).increment(0);
    }
    for code in plaza_proto::CloseCode::ALL {
        metrics::counter!(DISCONNECTS, "code" => code.name()).increment(0);
    }
    for stage in ["command", "cleanup", "writer", "api"] {
        metrics::counter!(HANDLER_PANICS, "stage" => stage).increment(0);
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(CONNECTIONS, "Open client connections");
    describe_counter!(CONNECTIONS_TOTAL, "Accepted WebSocket connections");
    describe_counter!(COMMANDS, "Client commands by op and result");
    describe_counter!(PUBLICATIONS_IN, "Publications accepted from clients");
    describe_counter!(
        HANDLER_PANICS,
        "Connection or API handlers that panicked (caught; the connection was closed with 4003, the request answered 500), by stage"
    );
    describe_counter!(PUBLICATIONS_OUT, "Publication frames queued to subscribers");
    describe_counter!(BROKER_EVENTS, "Room events received from the broker tier");
    describe_counter!(
        PRESENCE_RESYNCS,
        "Presence resyncs from the broker link (after a broker failover or NATS reconnect)"
    );
    describe_counter!(
        DISCONNECTS,
        "Disconnects initiated by the edge, by close code"
    );
    describe_counter!(
        SLOW_CONSUMERS,
        "Clients disconnected for not reading fast enough"
    );
    describe_counter!(AUTH_FAILURES, "Refused tokens by reason");
    describe_counter!(BAD_FRAMES, "Frames that were not valid commands, by kind");
    describe_histogram!(
        BROKER_CALL_SECONDS,
        metrics::Unit::Seconds,
        "Broker tier call latency"
    );
    describe_counter!(
        BROKER_RETRIES,
        "Idempotent broker calls repeated after an unavailable answer, by call"
    );
    describe_gauge!(HUB_ROOMS, "Rooms with local subscribers");
    describe_gauge!(SUBSCRIPTIONS, "Local room subscriptions");
    describe_gauge!(DRAINING, "1 while draining");
    describe_counter!(API_REQUESTS, "Server API requests by endpoint and status");
    describe_counter!(JWKS_FETCHES, "JWKS fetch attempts by issuer and result");
    describe_counter!(
        JWKS_REFETCHES_SKIPPED,
        "Unknown-kid JWKS refetches skipped by the rate limit"
    );
    describe_gauge!(JWKS_KEYS, "Keys in the current JWKS, by issuer");
    describe_counter!(
        LIMIT_HITS,
        "Requests or commands refused by a limit, by limit"
    );
    describe_counter!(STATE_WRITES, "State room sets and deletes accepted");
    describe_counter!(
        STATE_REFUSED,
        "State room writes refused, by reason (not_state_room, value_too_large, too_many_keys, bad_ttl, conflict, rate_limited, publish_in_state_room)"
    );
    describe_counter!(
        STATE_CONFLATED,
        "State room changes not pushed because a later change of the same key replaced them"
    );
}
/// Counter: ephemeral publications accepted from clients and the server API.
pub(crate) const EPHEMERAL_IN: &str = "plaza_ephemeral_in_total";
/// Counter: ephemeral publications queued to local subscribers.
pub(crate) const EPHEMERAL_OUT: &str = "plaza_ephemeral_out_total";
/// Counter: state room sets and deletes accepted from clients and the server API.
pub(crate) const STATE_WRITES: &str = "plaza_state_writes_total";
/// Counter: state room writes refused, by `reason`.
pub(crate) const STATE_REFUSED: &str = "plaza_state_refused_total";
/// Counter: state room changes replaced by a later one of the same key before being pushed.
pub(crate) const STATE_CONFLATED: &str = "plaza_state_conflated_total";
