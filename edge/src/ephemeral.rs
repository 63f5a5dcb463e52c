//! Ephemeral publications on the edge: their own rate limits, the one broker call, and the
//! local fan-out of those that arrive.
//!
//! ```text
//!  publish {ephemeral}  ──namespace mode──▶ EphemeralRate (per connection) ──▶ RoomEphemeralRate
//!   (session or server API)                 (per room, this edge) ──▶ EdgeLink::publish_ephemeral
//!  LinkEvent::Ephemeral ──▶ Hub::dispatch_ephemeral ──encode once──▶ live subscribers' outboxes
//! ```
//!
//! Ephemeral traffic has limits of its own (`limits.ephemeral_*`): it costs the broker tier no
//! storage, so it is not charged to the per-user publish byte budget, but a typing or cursor
//! storm must not take the edge's capacity from other rooms. Every refusal is error 112,
//! counted in `plaza_limit_hits_total{limit}`.

use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota};
use plaza_proto::client::EphemeralPush;
use plaza_proto::cluster::Ephemeral;
use plaza_proto::{ErrorBody, ErrorCode, Push, RoomName, ServerFrame};

use crate::config::LimitsConfig;
use crate::metrics as m;

/// A rate of `per_second` with `burst` (both at least 1 after config validation).
pub(crate) fn quota(per_second: u32, burst: u32) -> Quota {
    // Config validation guarantees both are at least 1.
    let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

/// One connection's ephemeral publications per second. Created on its first ephemeral
/// publish, so connections that never send one pay nothing for it.
pub(crate) struct EphemeralRate(crate::limits::Bucket);

impl EphemeralRate {
    /// A limiter with the configured rate and burst.
    pub(crate) fn new(limits: &LimitsConfig) -> Self {
        Self(crate::limits::bucket(quota(
            limits.ephemeral_per_second,
            limits.ephemeral_burst,
        )))
    }

    /// Takes a token, or says why not.
    pub(crate) fn check(&self, limits: &LimitsConfig) -> Result<(), ErrorBody> {
        if self.0.check().is_ok() {
            return Ok(());
        }
        metrics::counter!(m::LIMIT_HITS, "limit" => "ephemeral_per_connection").increment(1);
        Err(ErrorCode::RateLimited.with(format!(
            "at most {} ephemeral publications per second per connection (burst {}); slow down",
            limits.ephemeral_per_second, limits.ephemeral_burst
        )))
    }
}

/// Ephemeral publications per second per room through this edge (clients and server API).
pub struct RoomEphemeralRate {
    by_room: DefaultKeyedRateLimiter<RoomName>,
    per_second: u32,
    burst: u32,
}

impl RoomEphemeralRate {
    /// A limiter with the configured rate and burst.
    pub fn new(limits: &LimitsConfig) -> Self {
        Self {
            by_room: DefaultKeyedRateLimiter::keyed(quota(
                limits.ephemeral_per_second_per_room,
                limits.ephemeral_burst_per_room,
            )),
            per_second: limits.ephemeral_per_second_per_room,
            burst: limits.ephemeral_burst_per_room,
        }
    }

    /// Takes a token for `room`, or says why not.
    pub fn check(&self, room: &RoomName) -> Result<(), ErrorBody> {
        if self.by_room.check_key(room).is_ok() {
            return Ok(());
        }
        metrics::counter!(m::LIMIT_HITS, "limit" => "ephemeral_per_room").increment(1);
        Err(ErrorCode::RateLimited.with(format!(
            "room {room}: at most {} ephemeral publications per second through this edge \
             (burst {}); slow down",
            self.per_second, self.burst
        )))
    }

    /// Forgets rooms whose buckets are full again; call periodically to bound memory.
    pub fn forget_idle(&self) {
        self.by_room.retain_recent();
        self.by_room.shrink_to_fit();
    }
}

/// The `ephemeral` push for `ephemeral`, encoded once for every local subscriber.
pub(crate) fn encode(ephemeral: Ephemeral) -> String {
    let Ephemeral { room, data, from } = ephemeral;
    ServerFrame::Push(Push::Ephemeral(EphemeralPush { room, data, from })).encode()
}
