//! Abuse limits that the edge enforces before work reaches the broker tier: commands per
//! second per connection, published bytes per second per user, new connections per second per
//! client IP, failed server API key attempts per client IP, and the browser origin allowlist.
//! Every refusal is counted in `plaza_limit_hits_total{limit}`.
//!
//! ```text
//!  handshake ──OriginPolicy──▶ 403 │ ──ConnectionRate (per client IP)──▶ 429 │ ──▶ upgrade
//!  command   ──CommandRate (per connection)──▶ error 112 … flood ──▶ close 4007
//!  publish   ──PublishBudget (per user, all its connections here)──▶ error 112
//!  API call  ──FailedAuth (per client IP)──▶ 429 │ ──key check──▶ 401 (counted) │ ──▶ handler
//! ```

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock, QuantaInstant, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use plaza_proto::UserId;

use crate::config::LimitsConfig;
use crate::metrics as m;

/// The clock every rate limiter reads. Making one calibrates the TSC and asks the CPU for its
/// features (`cpuid`, which traps to the hypervisor in a VM): ≈ 5 % of an edge's CPU in a
/// connect storm when each connection's limiter made its own.
static CLOCK: LazyLock<DefaultClock> = LazyLock::new(DefaultClock::default);

/// A handle on [`CLOCK`] (clones share the calibration).
pub(crate) fn clock() -> DefaultClock {
    CLOCK.clone()
}

/// [`CLOCK`] for the per-connection buckets, as a zero-sized handle: nanoseconds since its
/// first reading. With governor's own clock in it a bucket is ≈ 90 bytes, most of them the
/// clock's calibration; with this one it is 32.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SharedClock;

impl Clock for SharedClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        static START: LazyLock<QuantaInstant> = LazyLock::new(|| CLOCK.now());
        CLOCK.now().duration_since(*START)
    }
}

/// A direct (unkeyed) token bucket on the shared clock.
pub(crate) type Bucket = RateLimiter<NotKeyed, InMemoryState, SharedClock, NoOpMiddleware<Nanos>>;

/// A direct token bucket of `quota` on the shared clock.
pub(crate) fn bucket(quota: Quota) -> Bucket {
    Bucket::direct_with_clock(quota, SharedClock)
}

/// A token bucket quota of `per_second` with `burst` (both at least 1 after validation).
pub(crate) fn quota(per_second: u32, burst: u32) -> Quota {
    // Config validation guarantees both are at least 1.
    let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(rate).allow_burst(burst)
}

/// What a connection's command limiter decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommandVerdict {
    /// Run the command.
    Allow,
    /// Refuse it with a temporary error; the client should slow down.
    Refuse,
    /// The client keeps flooding: close the connection.
    Disconnect,
}

/// Token bucket over one connection's commands, plus the flood detector.
pub(crate) struct CommandRate {
    bucket: Bucket,
    refused_in_a_row: u32,
    flood_after: u32,
}

impl CommandRate {
    /// A limiter for one connection.
    pub(crate) fn new(limits: &LimitsConfig) -> Self {
        Self {
            bucket: bucket(quota(limits.commands_per_second, limits.command_burst)),
            refused_in_a_row: 0,
            flood_after: limits.flood_disconnect_after,
        }
    }

    /// Takes a token for one command.
    pub(crate) fn check(&mut self) -> CommandVerdict {
        if self.bucket.check().is_ok() {
            self.refused_in_a_row = 0;
            return CommandVerdict::Allow;
        }
        metrics::counter!(m::LIMIT_HITS, "limit" => "commands_per_second").increment(1);
        self.refused_in_a_row += 1;
        if self.refused_in_a_row >= self.flood_after {
            CommandVerdict::Disconnect
        } else {
            CommandVerdict::Refuse
        }
    }
}

/// What one publication costs in [`PublishBudget`] besides its data and idempotency key: the
/// per-publication state the broker tier keeps (position, sender, indexes).
pub(crate) const PUBLISH_OVERHEAD_BYTES: usize = 256;

/// Publication bytes per second per user on this edge, shared by all of the user's
/// connections: what bounds the state one user can make the broker tier keep (history in rooms
/// it may publish to, idempotency keys) to this rate times the history and dedupe windows.
pub struct PublishBudget {
    by_user: Option<DefaultKeyedRateLimiter<UserId>>,
}

impl PublishBudget {
    /// A budget with the configured rate and burst (`publish_bytes_per_second_per_user` 0: off).
    pub fn new(limits: &LimitsConfig) -> Self {
        let rate = limits.publish_bytes_per_second_per_user;
        Self {
            by_user: (rate > 0).then(|| {
                DefaultKeyedRateLimiter::keyed(quota(rate, limits.publish_burst_bytes_per_user))
            }),
        }
    }

    /// Charges `user` for publishing `bytes` (data + idempotency key), or says how long to wait.
    pub fn charge(&self, user: &UserId, bytes: usize) -> Result<(), Duration> {
        let Some(by_user) = &self.by_user else {
            return Ok(());
        };
        let cost = u32::try_from(bytes.saturating_add(PUBLISH_OVERHEAD_BYTES)).unwrap_or(u32::MAX);
        let cost = NonZeroU32::new(cost).unwrap_or(NonZeroU32::MIN);
        let refused = match by_user.check_key_n(user, cost) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(not_until)) => not_until.wait_time_from(clock().now()),
            // Larger than the burst: validation keeps the burst above the largest publication,
            // so this is a publication no budget could ever admit.
            Err(_) => Duration::MAX,
        };
        metrics::counter!(m::LIMIT_HITS, "limit" => "publish_bytes_per_user").increment(1);
        Err(refused)
    }

    /// Forgets users whose budgets are full again; call periodically to bound memory.
    pub fn forget_idle(&self) {
        if let Some(by_user) = &self.by_user {
            by_user.retain_recent();
            by_user.shrink_to_fit();
        }
    }
}

/// The key an address is limited by: IPv4 addresses as they are, IPv6 addresses by their first
/// `ipv6_prefix` bits (one host usually owns a whole /64, so per-/128 keys would let it mint
/// unlimited identities); IPv4-mapped IPv6 addresses as IPv4.
pub(crate) fn ip_key(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6);
                let prefix = u32::from(ipv6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
                IpAddr::V6((bits & mask).into())
            }
        },
    }
}

/// New WebSocket connections per client IP (IPv6: per prefix, see [`ip_key`]), shared by all
/// handshakes of the edge.
pub struct ConnectionRate {
    by_ip: DefaultKeyedRateLimiter<IpAddr>,
    ipv6_prefix: u8,
}

impl ConnectionRate {
    /// A limiter with the configured rate and burst.
    pub fn new(limits: &LimitsConfig) -> Self {
        Self {
            by_ip: DefaultKeyedRateLimiter::keyed(quota(
                limits.connections_per_second_per_ip,
                limits.connection_burst_per_ip,
            )),
            ipv6_prefix: limits.ipv6_prefix,
        }
    }

    /// Admits a new connection from `ip`, or says how long to wait.
    pub fn admit(&self, ip: IpAddr) -> Result<(), Duration> {
        let key = ip_key(ip, self.ipv6_prefix);
        self.by_ip.check_key(&key).map_err(|not_until| {
            metrics::counter!(m::LIMIT_HITS, "limit" => "connections_per_ip").increment(1);
            not_until.wait_time_from(clock().now())
        })
    }

    /// Forgets IPs whose buckets are full again; call periodically to bound memory.
    pub fn forget_idle(&self) {
        self.by_ip.retain_recent();
        self.by_ip.shrink_to_fit();
    }
}

/// Addresses tracked at most by [`FailedAuth`]; beyond it, new addresses are not throttled
/// until old windows expire (a bound on memory, ~64 B per address).
const FAILED_AUTH_TRACKED: usize = 65_536;

/// Failed server API key attempts per client address (IPv6: per prefix): after
/// `api.max_failed_auth_per_ip` failures within `api.failed_auth_window`, every API request from
/// that address is refused with 429 until the window ends, without looking at its key, so keys
/// cannot be guessed at the API's request rate.
pub struct FailedAuth {
    max: u32,
    window: Duration,
    ipv6_prefix: u8,
    /// First failure of the current window and failures in it, by address key.
    by_ip: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailedAuth {
    /// A tracker with the configured budget (`max` 0 disables it).
    pub fn new(max: u32, window: Duration, ipv6_prefix: u8) -> Self {
        Self {
            max,
            window,
            ipv6_prefix,
            by_ip: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `ip` may try a key now, or how long until it may.
    pub fn admit(&self, ip: IpAddr) -> Result<(), Duration> {
        if self.max == 0 {
            return Ok(());
        }
        let key = ip_key(ip, self.ipv6_prefix);
        let by_ip = self.by_ip.lock().unwrap_or_else(PoisonError::into_inner);
        match by_ip.get(&key) {
            Some(&(start, failures)) if failures >= self.max => {
                let left = self.window.saturating_sub(start.elapsed());
                if left.is_zero() {
                    return Ok(());
                }
                metrics::counter!(m::LIMIT_HITS, "limit" => "api_failed_auth").increment(1);
                Err(left)
            }
            _ => Ok(()),
        }
    }

    /// Records one failed attempt from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        if self.max == 0 {
            return;
        }
        let key = ip_key(ip, self.ipv6_prefix);
        let now = Instant::now();
        let mut by_ip = self.by_ip.lock().unwrap_or_else(PoisonError::into_inner);
        if by_ip.len() >= FAILED_AUTH_TRACKED && !by_ip.contains_key(&key) {
            let window = self.window;
            by_ip.retain(|_, (start, _)| now.duration_since(*start) < window);
            if by_ip.len() >= FAILED_AUTH_TRACKED {
                return;
            }
        }
        let entry = by_ip.entry(key).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    /// Forgets addresses whose window has ended; call periodically to bound memory.
    pub fn forget_idle(&self) {
        let now = Instant::now();
        let window = self.window;
        let mut by_ip = self.by_ip.lock().unwrap_or_else(PoisonError::into_inner);
        by_ip.retain(|_, (start, _)| now.duration_since(*start) < window);
        by_ip.shrink_to_fit();
    }
}

/// The browser origins allowed to open WebSockets.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    exact: Vec<String>,
    /// `(scheme + "://", "." + domain)` of `scheme://*.domain` patterns.
    wildcard: Vec<(String, String)>,
}

impl OriginPolicy {
    /// Builds the policy from `http.allowed_origins` (validated: each starts with a scheme).
    pub fn new(allowed: &[String]) -> Self {
        let mut policy = Self::default();
        for origin in allowed {
            let origin = origin.to_ascii_lowercase();
            match origin.split_once("://*.") {
                Some((scheme, domain)) => policy
                    .wildcard
                    .push((format!("{scheme}://"), format!(".{domain}"))),
                None => policy.exact.push(origin),
            }
        }
        policy
    }

    /// Whether a handshake with this `Origin` header (None: not a browser) may proceed.
    pub fn allows(&self, origin: Option<&str>) -> bool {
        let Some(origin) = origin else { return true };
        if self.exact.is_empty() && self.wildcard.is_empty() {
            return true;
        }
        let origin = origin.to_ascii_lowercase();
        self.exact.contains(&origin)
            || self.wildcard.iter().any(|(scheme, suffix)| {
                origin.strip_prefix(scheme.as_str()).is_some_and(|host| {
                    host.len() > suffix.len()
                        && host.ends_with(suffix.as_str())
                        && !host[..host.len() - suffix.len()].contains(['/', '@', ':'])
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hostile input, finding 6: per-IP keys were whole IPv6 addresses, so one host with a /64
    /// had 2⁶⁴ fresh buckets. Addresses of one /64 now share one.
    #[test]
    fn ipv6_addresses_of_one_prefix_share_a_rate_limit_bucket() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_key(a, 64), ip_key(b, 64));
        assert_ne!(ip_key(a, 64), ip_key(other, 64));
        assert_ne!(ip_key(a, 128), ip_key(b, 128));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(ip_key(mapped, 64), "192.0.2.7".parse::<IpAddr>().unwrap());
        let rate = ConnectionRate::new(&LimitsConfig {
            connections_per_second_per_ip: 1,
            connection_burst_per_ip: 1,
            ..Default::default()
        });
        assert!(rate.admit(a).is_ok());
        assert!(
            rate.admit(b).is_err(),
            "a second address of the same /64 got a fresh bucket"
        );
        assert!(rate.admit(other).is_ok());
    }

    #[test]
    fn failed_api_keys_lock_an_address_out_for_the_rest_of_the_window() {
        let failed = FailedAuth::new(3, Duration::from_millis(300), 64);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(failed.admit(a).is_ok());
            failed.failed(a);
        }
        let wait = failed.admit(a).unwrap_err();
        assert!(wait <= Duration::from_millis(300) && !wait.is_zero());
        assert!(failed.admit(b).is_ok(), "another address is not affected");
        std::thread::sleep(Duration::from_millis(350));
        assert!(failed.admit(a).is_ok(), "the window ended");
        failed.failed(a);
        assert!(
            failed.admit(a).is_ok(),
            "a new window starts from one failure"
        );
        failed.forget_idle();
        assert!(
            FailedAuth::new(0, Duration::from_secs(1), 64)
                .admit(a)
                .is_ok()
        );
    }

    fn limits(rate: u32, burst: u32, flood: u32) -> LimitsConfig {
        LimitsConfig {
            commands_per_second: rate,
            command_burst: burst,
            flood_disconnect_after: flood,
            ..Default::default()
        }
    }

    #[test]
    fn commands_beyond_the_burst_are_refused_then_a_flood_disconnects() {
        let mut rate = CommandRate::new(&limits(1, 3, 4));
        for _ in 0..3 {
            assert_eq!(rate.check(), CommandVerdict::Allow);
        }
        for _ in 0..3 {
            assert_eq!(rate.check(), CommandVerdict::Refuse);
        }
        assert_eq!(rate.check(), CommandVerdict::Disconnect);
    }

    #[test]
    fn connection_rate_is_per_ip() {
        let limits = LimitsConfig {
            connections_per_second_per_ip: 1,
            connection_burst_per_ip: 2,
            ..Default::default()
        };
        let rate = ConnectionRate::new(&limits);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(rate.admit(a).is_ok() && rate.admit(a).is_ok());
        let wait = rate.admit(a).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(rate.admit(b).is_ok());
    }

    #[test]
    fn origins_match_exactly_or_by_subdomain_wildcard() {
        let p = OriginPolicy::new(&[
            "https://app.example.com".into(),
            "https://*.example.org".into(),
        ]);
        assert!(p.allows(None), "non-browser clients send no Origin");
        assert!(p.allows(Some("https://app.example.com")));
        assert!(p.allows(Some("HTTPS://App.Example.com")));
        assert!(!p.allows(Some("http://app.example.com")), "scheme matters");
        assert!(
            !p.allows(Some("https://app.example.com:8443")),
            "port matters"
        );
        assert!(p.allows(Some("https://a.example.org")));
        assert!(p.allows(Some("https://a.b.example.org")));
        assert!(
            !p.allows(Some("https://example.org")),
            "the wildcard needs a subdomain"
        );
        assert!(!p.allows(Some("https://evilexample.org")));
        assert!(!p.allows(Some("https://example.org.evil.com")));
        assert!(!p.allows(Some("null")));
        assert!(
            OriginPolicy::new(&[]).allows(Some("https://anything.test")),
            "empty list allows all"
        );
    }
}
