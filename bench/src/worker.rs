//! `plaza-bench worker`: one process holding a share of the connections.
//!
//! ```text
//! stdin:  WorkerSpec, then Command lines (Phase …, Stop)
//! stdout: Report lines (Ready once, then one Phase per phase)
//!
//! slot task ×count ── open → join → session (reader loop; writer task fed by a channel)
//! publisher        ── open-loop schedule, sends through the slots' channels
//! reconnector      ── `rooms`: drops reconnect_pct % of slots per second
//! ```
//!
//! Runs on a current-thread runtime: the coordinator starts several workers, and the load
//! generator shares the machine with the server, so each worker should cost as little as it can.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::time::{Duration, MissedTickBehavior, sleep};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::pusher::{self, Publisher};
use crate::spec::Target;
use crate::spec::{
    Command, ConnectStats, PhaseSpec, PhaseStats, Plan, Report, Scenario, WorkerSpec, now_ns,
    payload,
};
use crate::tokens;
use crate::wire::{self, Credentials, Decoder, Event};

/// A latency histogram in microseconds, 1 µs … 10 min, 3 significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// `(value, count)` pairs of a histogram, for the report line.
pub(crate) fn pairs(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

/// Kernel receive buffer of slow consumers' sockets, bytes.
const SLOW_RCVBUF: u32 = 16 * 1024;

/// The current phase as the connection tasks see it.
#[derive(Clone, Copy, Debug, Default)]
struct PhaseNow {
    slow: bool,
}

/// Counters of the phase in progress; reset at each phase start.
struct Acc {
    /// The phase counted (`u32::MAX` between phases, until a delivery of the next one).
    id: u32,
    /// The last phase that ended here.
    finished: u32,
    delivered: u64,
    delivered_slow: u64,
    late: u64,
    errors: u64,
    first_error: Option<String>,
    closed: u64,
    reconnects: u64,
    latency: Histogram<u64>,
}

impl Acc {
    fn new(id: u32) -> Self {
        Self {
            id,
            finished: 0,
            delivered: 0,
            delivered_slow: 0,
            late: 0,
            errors: 0,
            first_error: None,
            closed: 0,
            reconnects: 0,
            latency: histogram(),
        }
    }

    fn error(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }
}

/// Connect figures of the initial connect (or storm) wave.
struct ConnectAcc {
    ok: u64,
    failed: u64,
    first_error: Option<String>,
    first_ns: u64,
    last_ns: u64,
    latency: Histogram<u64>,
}

struct Shared {
    plan: Plan,
    first: usize,
    tokens: Vec<String>,
    acc: Mutex<Acc>,
    connect: Mutex<ConnectAcc>,
    /// One per slot: the channel into its writer task while connected.
    slots: Vec<Mutex<Option<mpsc::UnboundedSender<Message>>>>,
    /// One per slot: wakes the slot to drop and reopen its connection.
    reconnect: Vec<Notify>,
    phase: watch::Sender<PhaseNow>,
    /// Slots wait for this before the first connect (`storm` opens them in a phase).
    go: watch::Sender<bool>,
    /// Initial connect attempts finished (ok or failed).
    attempted: Notify,
    limit: Semaphore,
    stop: CancellationToken,
}

impl Shared {
    fn global(&self, local: usize) -> usize {
        self.first + local
    }
}

/// Entry point of the `worker` subcommand.
pub(crate) fn main() -> Result<()> {
    crate::raise_nofile();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

fn emit(report: &Report) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, report)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

async fn run() -> Result<()> {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let spec: WorkerSpec = serde_json::from_str(
        &lines
            .next_line()
            .await?
            .context("no worker spec on stdin")?,
    )?;
    let plan = spec.plan;
    let minter = tokens::Minter::new(&plan)?;
    let tokens = (spec.first..spec.first + spec.count)
        .map(|i| minter.mint(i))
        .collect::<Result<Vec<_>>>()?;
    let storm = plan.scenario == Scenario::Storm;
    let shared = Arc::new(Shared {
        first: spec.first,
        tokens,
        acc: Mutex::new(Acc::new(u32::MAX)),
        connect: Mutex::new(ConnectAcc {
            ok: 0,
            failed: 0,
            first_error: None,
            first_ns: 0,
            last_ns: 0,
            latency: histogram(),
        }),
        slots: (0..spec.count).map(|_| Mutex::new(None)).collect(),
        reconnect: (0..spec.count).map(|_| Notify::new()).collect(),
        phase: watch::Sender::new(PhaseNow::default()),
        go: watch::Sender::new(!storm),
        attempted: Notify::new(),
        limit: Semaphore::new(plan.concurrency.max(1)),
        stop: CancellationToken::new(),
        plan,
    });
    let mut tasks = Vec::new();
    for local in 0..spec.count {
        tasks.push(tokio::spawn(slot(shared.clone(), local)));
    }
    if !storm {
        wait_attempted(&shared, spec.count).await;
    }
    emit(&Report::Ready(take_connect(&shared)))?;

    while let Some(line) = lines.next_line().await? {
        match serde_json::from_str::<Command>(&line)? {
            Command::Phase(p) => {
                let stats = phase(&shared, spec.worker, spec.count, &p).await;
                emit(&Report::Phase(stats))?;
            }
            Command::Stop => break,
        }
    }
    shared.stop.cancel();
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    Ok(())
}

async fn wait_attempted(shared: &Shared, count: usize) {
    loop {
        let notified = shared.attempted.notified();
        {
            let c = shared.connect.lock().expect("lock");
            if (c.ok + c.failed) as usize >= count {
                return;
            }
        }
        notified.await;
    }
}

fn take_connect(shared: &Shared) -> ConnectStats {
    let c = shared.connect.lock().expect("lock");
    ConnectStats {
        ok: c.ok,
        failed: c.failed,
        first_error: c.first_error.clone(),
        secs: c.last_ns.saturating_sub(c.first_ns) as f64 / 1e9,
        latency: pairs(&c.latency),
        span_ns: (c.first_ns, c.last_ns),
    }
}

async fn phase(shared: &Arc<Shared>, worker: usize, count: usize, p: &PhaseSpec) -> PhaseStats {
    {
        // Deliveries of this phase may have arrived before its command did (the publishing
        // worker may have started first): they were counted for it already, keep them.
        let mut acc = shared.acc.lock().expect("lock");
        if acc.id != p.id {
            *acc = Acc::new(p.id);
        }
    }
    shared.phase.send_replace(PhaseNow { slow: p.slow });
    let plan = &shared.plan;
    let mut connect = None;
    let (sent, expected) = if p.storm {
        shared.go.send_replace(true);
        wait_attempted(shared, count).await;
        connect = Some(take_connect(shared));
        (0, 0)
    } else {
        let reconnector = (plan.scenario == Scenario::Rooms && plan.reconnect_pct > 0.0)
            .then(|| tokio::spawn(reconnector(shared.clone(), p.secs)));
        let local_rate = match plan.scenario {
            Scenario::Fanout | Scenario::Slow if worker == 0 => p.rate,
            Scenario::Rooms => p.rate * count as f64 / plan.connections as f64,
            _ => 0.0,
        };
        let result = if local_rate > 0.0 {
            publish(shared, local_rate, p).await
        } else {
            sleep(Duration::from_secs_f64(p.secs)).await;
            (0, 0)
        };
        if let Some(r) = reconnector {
            let _ = r.await;
        }
        result
    };
    sleep(Duration::from_secs_f64(plan.drain_secs)).await;
    let mut acc = shared.acc.lock().expect("lock");
    let mut between = Acc::new(u32::MAX);
    between.finished = p.id;
    let done = std::mem::replace(&mut *acc, between);
    PhaseStats {
        id: p.id,
        sent,
        expected,
        delivered: done.delivered,
        delivered_slow: done.delivered_slow,
        late: done.late,
        errors: done.errors,
        first_error: done.first_error,
        closed: done.closed,
        reconnects: done.reconnects,
        latency: pairs(&done.latency),
        connect,
    }
}

/// Publishes open-loop at `rate` per second for the phase; returns `(sent, expected deliveries)`.
/// Each payload carries its *scheduled* send time, so a publisher that falls behind shows up
/// as latency instead of silently lowering the rate.
async fn publish(shared: &Arc<Shared>, rate: f64, p: &PhaseSpec) -> (u64, u64) {
    let plan = &shared.plan;
    let target = plan.target;
    let start = Instant::now();
    let start_ns = now_ns();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let healthy = plan.healthy();
    // `scheduled` counts schedule slots, `sent` the publications actually handed to a socket.
    let (mut scheduled, mut sent, mut expected, mut id) = (0u64, 0u64, 0u64, 1u32);
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let total = (p.secs * rate).round() as u64;
    // Sockudo takes publications over its HTTP API, not the WebSocket; so does Plaza with
    // `--plaza-api`.
    let mut http = None;
    if target == Target::Sockudo || target == Target::Plaza && plan.api {
        let errors = shared.clone();
        let on_error: Arc<dyn Fn(String) + Send + Sync> =
            Arc::new(move |e| errors.acc.lock().expect("lock").error(e));
        let host = plan.urls[0]
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap_or_default();
        match Publisher::connect(host, on_error).await {
            Ok(p) => http = Some((p, host.to_owned())),
            Err(e) => {
                shared.acc.lock().expect("lock").error(format!("{e:#}"));
                return (0, 0);
            }
        }
    }
    loop {
        tick.tick().await;
        let elapsed = start.elapsed().as_secs_f64();
        // Publication k is due at start + k / rate (k = 0 at once), `total` in the phase.
        let due = ((elapsed * rate) as u64 + 1).min(total);
        while scheduled < due {
            let ts = start_ns + (scheduled as f64 / rate * 1e9) as u64;
            scheduled += 1;
            let body = payload(ts, p.id, plan.size);
            let (local, room) = match plan.scenario {
                Scenario::Rooms => {
                    let local = rng.random_range(0..shared.slots.len());
                    let rooms = plan.rooms(shared.global(local));
                    let room = rooms[rng.random_range(0..rooms.len())].clone();
                    (local, room)
                }
                _ => (0, plan.fan_room().to_owned()),
            };
            let handed = if let Some((publisher, host)) = &mut http {
                let request = if target == Target::Plaza {
                    let key = crate::servers::BENCH_API_KEY;
                    let idem = format!("bench-{}-{}-{scheduled}", std::process::id(), p.id);
                    pusher::plaza_publish_request(key, host, &room, &body, &idem)
                } else {
                    pusher::events_request(&plan.secret, host, &pusher::channel(&room), &body)
                        .into()
                };
                publisher.send(request)
            } else {
                let msg = if plan.state {
                    wire::state_set(id, &room, scheduled % wire::STATE_KEYS, &body)
                } else {
                    wire::publish(target, id, &room, &body, plan.ephemeral)
                };
                id = id.checked_add(1).unwrap_or(1);
                let sender = shared.slots[local].lock().expect("lock").clone();
                // A connection that is reconnecting (or was closed) lets this slot of the
                // schedule pass unsent and uncounted.
                matches!(sender.map(|tx| tx.send(msg)), Some(Ok(())))
            };
            if handed {
                sent += 1;
                expected += if plan.scenario == Scenario::Rooms {
                    plan.recipients(&room)
                } else {
                    healthy
                };
            }
        }
        if elapsed >= p.secs {
            return (sent, expected);
        }
    }
}

async fn reconnector(shared: Arc<Shared>, secs: f64) {
    let per_tick = shared.slots.len() as f64 * shared.plan.reconnect_pct / 100.0 / 10.0;
    let ticks = (secs * 10.0) as u64;
    let mut carry = 0.0;
    let mut rng = rand::rngs::StdRng::from_os_rng();
    for _ in 0..ticks {
        sleep(Duration::from_millis(100)).await;
        carry += per_tick;
        while carry >= 1.0 {
            carry -= 1.0;
            let local = rng.random_range(0..shared.slots.len());
            shared.reconnect[local].notify_one();
        }
    }
}

enum End {
    Reconnect,
    Closed,
    Stopped,
}

async fn slot(shared: Arc<Shared>, local: usize) {
    let mut go = shared.go.subscribe();
    if go.wait_for(|g| *g).await.is_err() {
        return;
    }
    let plan = &shared.plan;
    let global = shared.global(local);
    let url = &plan.urls[global % plan.urls.len()];
    let source = (plan.sources > 1)
        .then(|| std::net::IpAddr::from([127, 0, 0, 2 + (global % plan.sources) as u8]));
    let rooms = plan.rooms(global);
    // A slow consumer gets a small kernel receive buffer, like a phone on a bad link: the
    // server's own queue, not loopback's multi-megabyte autotuned buffers, has to absorb it.
    let rcvbuf = plan.is_slow(global).then_some(SLOW_RCVBUF);
    let creds = Credentials {
        token: &shared.tokens[local],
        nats_token: plan.nats_token.as_deref(),
        secret: &plan.secret,
    };
    let mut initial = true;
    loop {
        let permit = shared.limit.acquire().await.expect("semaphore open");
        let started = Instant::now();
        let started_ns = now_ns();
        let opened = async {
            let mut ws = wire::open(url, source, rcvbuf).await?;
            wire::join(&mut ws, plan.target, &creds, &rooms).await?;
            anyhow::Ok(ws)
        };
        let opened = tokio::select! {
            r = opened => r,
            _ = shared.stop.cancelled() => return,
        };
        drop(permit);
        let ws = match opened {
            Ok(ws) => {
                if initial {
                    let mut c = shared.connect.lock().expect("lock");
                    c.ok += 1;
                    c.latency
                        .saturating_record(started.elapsed().as_micros().max(1) as u64);
                    if c.first_ns == 0 || started_ns < c.first_ns {
                        c.first_ns = started_ns;
                    }
                    c.last_ns = c.last_ns.max(now_ns());
                }
                ws
            }
            Err(e) => {
                if initial {
                    let mut c = shared.connect.lock().expect("lock");
                    c.failed += 1;
                    if c.first_error.is_none() {
                        c.first_error = Some(format!("{e:#}"));
                    }
                    drop(c);
                    shared.attempted.notify_waiters();
                    return;
                }
                shared
                    .acc
                    .lock()
                    .expect("lock")
                    .error(format!("reconnect: {e:#}"));
                tokio::select! {
                    _ = sleep(Duration::from_secs(1)) => continue,
                    _ = shared.stop.cancelled() => return,
                }
            }
        };
        if initial {
            initial = false;
            shared.attempted.notify_waiters();
        }
        let end = session(&shared, local, ws).await;
        *shared.slots[local].lock().expect("lock") = None;
        match end {
            End::Stopped => return,
            End::Reconnect => shared.acc.lock().expect("lock").reconnects += 1,
            End::Closed => {
                shared.acc.lock().expect("lock").closed += 1;
                if plan.scenario != Scenario::Rooms {
                    return;
                }
            }
        }
    }
}

async fn session(shared: &Arc<Shared>, local: usize, ws: wire::Ws) -> End {
    let plan = &shared.plan;
    let slow = plan.is_slow(shared.global(local));
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    *shared.slots[local].lock().expect("lock") = Some(tx.clone());
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.feed(m).await.is_err() {
                return;
            }
            while let Ok(m) = rx.try_recv() {
                if sink.feed(m).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    let mut phase = shared.phase.subscribe();
    let mut decoder = Decoder::new(plan.target);
    let end = loop {
        if slow && phase.borrow().slow {
            // A slow consumer: hold the socket, read nothing, until the phase changes.
            tokio::select! {
                _ = phase.changed() => continue,
                _ = shared.reconnect[local].notified() => break End::Reconnect,
                _ = shared.stop.cancelled() => break End::Stopped,
            }
        }
        tokio::select! {
            m = stream.next() => match m {
                Some(Ok(m)) => {
                    let mut closed = false;
                    decoder.feed(m, &mut |e| match e {
                        Event::Delivery(ts, id) => {
                            let us = now_ns().saturating_sub(ts) / 1000;
                            let mut acc = shared.acc.lock().expect("lock");
                            if acc.id == u32::MAX && id > acc.finished {
                                // The next phase has begun elsewhere before its command
                                // reached this worker.
                                *acc = Acc::new(id);
                            }
                            if id != acc.id {
                                acc.late += 1;
                            } else if slow {
                                acc.delivered_slow += 1;
                            } else {
                                acc.delivered += 1;
                                acc.latency.saturating_record(us.max(1));
                            }
                        }
                        Event::Error(text) => shared.acc.lock().expect("lock").error(text),
                        Event::Respond(reply) => {
                            let _ = tx.send(reply);
                        }
                        Event::Closed => closed = true,
                    });
                    if closed {
                        break End::Closed;
                    }
                }
                Some(Err(_)) | None => break End::Closed,
            },
            _ = phase.changed() => {}
            _ = shared.reconnect[local].notified() => break End::Reconnect,
            _ = shared.stop.cancelled() => break End::Stopped,
        }
    };
    drop(tx);
    *shared.slots[local].lock().expect("lock") = None;
    if matches!(end, End::Closed) {
        writer.abort();
    } else {
        let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    }
    end
}
