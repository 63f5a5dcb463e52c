//! What the coordinator and its workers agree on: targets, scenarios, the per-worker plan, the
//! control messages on the worker's stdin/stdout, and the timestamped payload format.
//!
//! Every connection has a global index `i` (0 … connections−1). Which rooms it joins, whether it
//! publishes and whether it turns into a slow consumer follow from `i` and the scenario alone, so
//! a worker needs only its index range and the [`Plan`].

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Target {
    /// `plaza-edge`: Plaza's JSON protocol (`docs/protocol.md`).
    Plaza,
    /// `nats-server`'s WebSocket listener, NATS text protocol.
    Nats,
    /// Socket.IO 4 (`bench/peers/socketio/server.js`), Engine.IO v4 framing over WebSocket.
    Socketio,
    /// uWebSockets.js (`bench/peers/uws/server.js`), the subset of Plaza's JSON protocol the
    /// bench uses.
    Uws,
    /// Sockudo (Pusher protocol): private channels over WebSocket, publications through its
    /// signed HTTP events API.
    Sockudo,
}

impl Target {
    /// Lower-case name, as on the command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Target::Plaza => "plaza",
            Target::Nats => "nats",
            Target::Socketio => "socketio",
            Target::Uws => "uws",
            Target::Sockudo => "sockudo",
        }
    }
}

/// The load shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Scenario {
    /// Connected, authenticated, subscribed clients doing nothing: server RSS per connection.
    Idle,
    /// One room, every client subscribed, one publisher at rising rates.
    Fanout,
    /// Every client in a personal room and a group room, random publishes, steady reconnects.
    Rooms,
    /// Connections per second from nothing to "subscribed".
    Storm,
    /// Fan-out twice: all clients reading, then with every `slow_every`-th client not reading.
    Slow,
}

impl Scenario {
    /// Lower-case name, as on the command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Scenario::Idle => "idle",
            Scenario::Fanout => "fanout",
            Scenario::Rooms => "rooms",
            Scenario::Storm => "storm",
            Scenario::Slow => "slow",
        }
    }
}

/// Token signature algorithm for Plaza connections (and Socket.IO, which only knows HS256).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Alg {
    /// HMAC-SHA256 with the shared secret.
    Hs256,
    /// RSA PKCS#1 v1.5 SHA-256 with a private key whose public half the edge reads from a JWKS file.
    Rs256,
}

/// The issuer of RS256 bench tokens; the edge's `[[auth.jwks]]` entry must use it.
pub(crate) const RS_ISSUER: &str = "plaza-bench";
/// The `kid` of the RS256 bench key.
pub(crate) const RS_KID: &str = "bench-1";

/// Everything a worker needs besides its index range. Carries the signing material, so it only
/// travels over the worker's stdin and is never printed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Plan {
    /// Server under test.
    pub target: Target,
    /// Scenario.
    pub scenario: Scenario,
    /// WebSocket URLs; connection `i` uses `urls[i % urls.len()]`.
    pub urls: Vec<String>,
    /// Total connections over all workers.
    pub connections: usize,
    /// Loopback source addresses to spread connections over (1 = let the kernel choose).
    pub sources: usize,
    /// Connects in flight per worker.
    pub concurrency: usize,
    /// Payload bytes per publication (the timestamped string, before protocol framing).
    pub size: usize,
    /// Members per group room (`rooms`).
    pub group: usize,
    /// Every `slow_every`-th connection becomes a slow consumer (`slow`); 0 = none.
    pub slow_every: usize,
    /// Per cent of connections that reconnect each second (`rooms`).
    pub reconnect_pct: f64,
    /// Plaza: ephemeral publications instead of durable ones.
    #[serde(default)]
    pub ephemeral: bool,
    /// Plaza, fan-out: `set` in a live-state room (`sfan:all`) instead of publishing.
    #[serde(default)]
    pub state: bool,
    /// Plaza: publish through the server HTTP API instead of a WebSocket.
    #[serde(default)]
    pub api: bool,
    /// Token algorithm.
    pub alg: Alg,
    /// HS256 secret (Plaza, Socket.IO).
    pub secret: String,
    /// RS256 private key, PKCS#1 DER, base64 (when `alg` is RS256).
    pub rs_key: Option<String>,
    /// NATS `auth_token`.
    pub nats_token: Option<String>,
    /// Seconds to keep receiving after a phase's publishing ends.
    pub drain_secs: f64,
}

impl Plan {
    /// The rooms connection `i` subscribes to.
    pub(crate) fn rooms(&self, i: usize) -> Vec<String> {
        match self.scenario {
            Scenario::Idle => vec![format!("idle:{i}")],
            Scenario::Storm => vec![format!("storm:{i}")],
            Scenario::Fanout | Scenario::Slow => vec![self.fan_room().to_owned()],
            Scenario::Rooms => vec![format!("u:{i}"), format!("g:{}", i / self.group.max(1))],
        }
    }

    /// How many connections receive a publication to `room` (`rooms` scenario; 1 otherwise).
    /// The fan-out room: `sfan:all` (a live-state room) with `state`, else `fan:all`.
    pub(crate) fn fan_room(&self) -> &'static str {
        if self.state { "sfan:all" } else { "fan:all" }
    }

    pub(crate) fn recipients(&self, room: &str) -> u64 {
        if room == self.fan_room() {
            return self.connections as u64;
        }
        match room
            .strip_prefix("g:")
            .and_then(|g| g.parse::<usize>().ok())
        {
            Some(g) => {
                let group = self.group.max(1);
                self.connections.saturating_sub(g * group).min(group) as u64
            }
            None => 1,
        }
    }

    /// Whether connection `i` stops reading in the slow phase.
    pub(crate) fn is_slow(&self, i: usize) -> bool {
        self.scenario == Scenario::Slow && self.slow_every > 0 && i % self.slow_every == 1
    }

    /// Connections that keep reading (the ones whose latency counts).
    pub(crate) fn healthy(&self) -> u64 {
        (0..self.connections).filter(|i| !self.is_slow(*i)).count() as u64
    }
}

/// A worker's assignment: the first line on its stdin.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WorkerSpec {
    /// This worker's number.
    pub worker: usize,
    /// First global connection index.
    pub first: usize,
    /// Connections this worker opens.
    pub count: usize,
    /// The shared plan.
    pub plan: Plan,
}

/// Coordinator → worker, one JSON line each after the [`WorkerSpec`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub(crate) enum Command {
    /// Run one measured phase.
    Phase(PhaseSpec),
    /// Close every connection and exit.
    Stop,
}

/// One measured phase.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct PhaseSpec {
    /// Phase number, carried in payloads so late deliveries are not counted in the next phase.
    pub id: u32,
    /// Total publications per second over all workers (0 = none).
    pub rate: f64,
    /// Publishing time in seconds.
    pub secs: f64,
    /// Slow consumers stop reading during this phase.
    pub slow: bool,
    /// Storm phase: open every connection now and measure it.
    pub storm: bool,
}

/// Worker → coordinator, one JSON line each.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum Report {
    /// Connections are open (or, for `storm`, tokens are minted): ready for phases.
    Ready(ConnectStats),
    /// A phase ended.
    Phase(PhaseStats),
}

/// Connection setup figures.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct ConnectStats {
    /// Connections that reached "subscribed".
    pub ok: u64,
    /// Connections that failed on the way.
    pub failed: u64,
    /// First failure message, if any.
    pub first_error: Option<String>,
    /// Time from the first connect to the last subscribe, seconds.
    pub secs: f64,
    /// Connect-to-subscribed times in microseconds, `(value, count)` pairs.
    pub latency: Vec<(u64, u64)>,
    /// Wall-clock span (ns since the Unix epoch) of this worker's connecting.
    pub span_ns: (u64, u64),
}

/// One phase's figures from one worker.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct PhaseStats {
    /// Phase number.
    pub id: u32,
    /// Publications sent.
    pub sent: u64,
    /// Deliveries the sent publications should cause (to healthy clients).
    pub expected: u64,
    /// Deliveries counted (healthy clients, this phase's payloads).
    pub delivered: u64,
    /// Deliveries to slow consumers.
    pub delivered_slow: u64,
    /// Deliveries of earlier phases' payloads that arrived during this phase.
    pub late: u64,
    /// Error replies, failed sends, failed (re)connects, unexpected closes.
    pub errors: u64,
    /// First error message, if any.
    pub first_error: Option<String>,
    /// Connections closed by the server during the phase (slow consumers included).
    pub closed: u64,
    /// Reconnects done (`rooms`).
    pub reconnects: u64,
    /// End-to-end latencies in microseconds, `(value, count)` pairs.
    pub latency: Vec<(u64, u64)>,
    /// Storm only: connect figures.
    pub connect: Option<ConnectStats>,
}

/// Nanoseconds since the Unix epoch: a time base every process on the host shares.
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Builds a payload of exactly `size` bytes (at least the header's): `@T<ns>:<phase>:` + `x`s.
/// Only `[0-9@T:x]`, so it needs no escaping in JSON or any framing.
pub(crate) fn payload(ts_ns: u64, phase: u32, size: usize) -> String {
    let mut s = format!("@T{ts_ns}:{phase}:");
    while s.len() < size {
        s.push('x');
    }
    s
}

/// Finds a payload in `text` and returns its `(timestamp ns, phase)`.
pub(crate) fn parse_payload(text: &[u8]) -> Option<(u64, u32)> {
    let at = text.windows(2).position(|w| w == b"@T")?;
    let mut rest = &text[at + 2..];
    let mut ts: u64 = 0;
    while let Some((&c, tail)) = rest.split_first() {
        rest = tail;
        match c {
            b'0'..=b'9' => ts = ts.checked_mul(10)?.checked_add(u64::from(c - b'0'))?,
            b':' => break,
            _ => return None,
        }
    }
    let mut phase: u32 = 0;
    for &c in rest {
        match c {
            b'0'..=b'9' => phase = phase.checked_mul(10)?.checked_add(u32::from(c - b'0'))?,
            b':' => return Some((ts, phase)),
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_the_exact_size_and_parse_back() {
        let p = payload(1_700_000_000_123_456_789, 3, 100);
        assert_eq!(p.len(), 100);
        let framed = format!(r#"{{"push":"pub","room":"a","data":"{p}","offset":1}}"#);
        assert_eq!(
            parse_payload(framed.as_bytes()),
            Some((1_700_000_000_123_456_789, 3))
        );
        assert_eq!(parse_payload(b"no payload here"), None);
    }

    #[test]
    fn group_rooms_count_their_members() {
        let plan = Plan {
            target: Target::Plaza,
            scenario: Scenario::Rooms,
            urls: vec![],
            connections: 25,
            sources: 1,
            concurrency: 1,
            size: 100,
            group: 10,
            slow_every: 0,
            reconnect_pct: 0.0,
            ephemeral: false,
            state: false,
            api: false,
            alg: Alg::Hs256,
            secret: String::new(),
            rs_key: None,
            nats_token: None,
            drain_secs: 1.0,
        };
        assert_eq!(plan.rooms(13), vec!["u:13", "g:1"]);
        assert_eq!(plan.recipients("g:0"), 10);
        assert_eq!(plan.recipients("g:2"), 5);
        assert_eq!(plan.recipients("u:4"), 1);
    }
}
