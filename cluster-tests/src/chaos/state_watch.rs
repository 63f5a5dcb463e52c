//! Live-state rooms in a chaos run (issue 19): a writer changes one state room's map through
//! every fault — plain sets, deletes, create-only compare-and-sets, keys with a one-second TTL
//! and keys tied to its connection — and a watcher keeps the map the way the protocol tells
//! clients to (§11b): `subscribe`'s snapshot, then the change pushes above its offset, and on a
//! replaced connection a `subscribe` with `recover` from its position (the changes since, or a
//! fresh `state` when they are no longer held). Once the faults healed, the writes stopped and
//! the pushes went quiet, the watcher reads the room's map on a fresh subscription and records
//! both ([`Event::StateTracked`], checked by `state-tracked`): every client's map equals the
//! broker tier's.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::history::Event;
use super::runner::{Recorder, SECRET};
use crate::token;
use crate::ws::{Client, Ended};

/// The namespace whose rooms are state rooms in a chaos run (edges' and brokers' config).
pub const STATE_NAMESPACE: &str = "chstate";
/// The state room the writer changes.
pub(super) const STATE_ROOM: &str = "chstate:board";
/// Keys the writer uses.
const KEYS: u64 = 12;
/// How long the pushes must be quiet before the final reading.
const QUIET: Duration = Duration::from_secs(1);
/// How long one call may take before the client gives the connection up.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// One key: its value (JSON text) and version.
type Map = BTreeMap<String, (String, u64)>;

fn pick(urls: &Mutex<Vec<String>>, attempt: usize) -> Option<String> {
    let urls = urls.lock().unwrap_or_else(PoisonError::into_inner);
    (!urls.is_empty()).then(|| urls[attempt % urls.len()].clone())
}

/// Changes the state room until `writing` is cleared; returns how many writes succeeded.
pub(super) async fn write(
    urls: Arc<Mutex<Vec<String>>>,
    seed: u64,
    writing: Arc<AtomicBool>,
) -> u64 {
    let tok = token(SECRET, "state-writer");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut attempt = 0usize;
    let mut done = 0;
    while writing.load(Ordering::Relaxed) {
        attempt += 1;
        let Some(url) = pick(&urls, attempt) else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let Ok(mut client) = Client::try_connect(&url, &tok).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        // Tied keys need a subscription of the connection (they leave with it).
        let subscribe = json!({"op": "subscribe", "room": STATE_ROOM});
        if !matches!(client.try_call(subscribe, CALL_TIMEOUT).await, Ok(r) if r.get("ok").is_some())
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        while writing.load(Ordering::Relaxed) {
            let key = format!("k{}", rng.random_range(0..KEYS));
            let n: u32 = rng.random();
            let command = match rng.random_range(0..10) {
                0..=4 => json!({"op": "set", "room": STATE_ROOM, "key": key, "value": {"n": n}}),
                5 | 6 => json!({"op": "delete", "room": STATE_ROOM, "key": key}),
                7 => json!({"op": "set", "room": STATE_ROOM, "key": key, "value": n, "ttl": 1}),
                8 => json!({"op": "set", "room": STATE_ROOM, "key": key, "value": n, "tied": true}),
                _ => json!({"op": "set", "room": STATE_ROOM, "key": key, "value": n, "version": 0}),
            };
            match client.try_call(command, CALL_TIMEOUT).await {
                Ok(reply) if reply.get("ok").is_some() => done += 1,
                Ok(_) => {} // refused (a conflict, the broker tier unavailable): go on
                Err(_) => break,
            }
            client.clear_pushes();
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }
    done
}

/// The watcher's copy of the room.
#[derive(Default)]
struct Tracked {
    map: Map,
    epoch: Option<String>,
    offset: u64,
    /// Connections it (re)subscribed on, and how many of them got a fresh snapshot.
    subscribes: u64,
    snapshots: u64,
}

impl Tracked {
    /// Applies one change record at `offset` (ignored at or below the map's offset).
    fn apply(&mut self, offset: u64, data: &Value) {
        if offset <= self.offset {
            return;
        }
        self.offset = offset;
        let Some(key) = data.get("key").and_then(Value::as_str) else {
            return;
        };
        if data.get("deleted").and_then(Value::as_bool) == Some(true) {
            self.map.remove(key);
        } else if let Some(value) = data.get("value") {
            self.map.insert(key.to_owned(), (value.to_string(), offset));
        }
    }

    /// Takes a `subscribe` reply: a fresh `state`, or the changes since its position.
    fn take_reply(&mut self, ok: &Value) {
        self.subscribes += 1;
        let offset = ok.get("offset").and_then(Value::as_u64).unwrap_or(0);
        if let Some(state) = ok.get("state") {
            self.snapshots += 1;
            self.map = map_of(state);
            self.offset = offset;
        }
        if let Some(publications) = ok.get("publications").and_then(Value::as_array) {
            for p in publications {
                let at = p.get("offset").and_then(Value::as_u64).unwrap_or(0);
                self.apply(at, &p["data"]);
            }
        }
        self.offset = self.offset.max(offset);
        self.epoch = ok.get("epoch").and_then(Value::as_str).map(str::to_owned);
    }
}

/// The map of a `state` array.
fn map_of(state: &Value) -> Map {
    state
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let key = e.get("key")?.as_str()?.to_owned();
            let version = e.get("version")?.as_u64()?;
            Some((key, (e.get("value")?.to_string(), version)))
        })
        .collect()
}

/// Keeps the room's map until `finish` is set and the pushes went quiet, then records it next
/// to a fresh reading. Records [`Event::StateTracked`] with `actual: None` if it could not get
/// through before `give_up`.
pub(super) async fn watch(
    urls: Arc<Mutex<Vec<String>>>,
    recorder: Recorder,
    finish: Arc<AtomicBool>,
    give_up: Instant,
) {
    let tok = token(SECRET, "state-watcher");
    let mut tracked = Tracked::default();
    let mut attempt = 0usize;
    while Instant::now() < give_up {
        attempt += 1;
        let Some(url) = pick(&urls, attempt) else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let Ok(mut client) = Client::try_connect(&url, &tok).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut subscribe = json!({"op": "subscribe", "room": STATE_ROOM});
        if let Some(epoch) = &tracked.epoch {
            subscribe["recover"] = json!({"epoch": epoch, "offset": tracked.offset});
        }
        match client.try_call(subscribe, CALL_TIMEOUT).await {
            Ok(reply) if reply.get("ok").is_some() => tracked.take_reply(&reply["ok"]),
            _ => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        if follow(&mut client, &mut tracked, &finish).await.is_err() {
            continue;
        }
        if let Some(url) = pick(&urls, attempt + 1)
            && let Ok(actual) = read_map(&url, &tok).await
        {
            recorder.record(reading(&tracked, Some(actual), &recorder));
            return;
        }
    }
    eprintln!("the state watcher gave up");
    recorder.record(reading(&tracked, None, &recorder));
}

fn reading(tracked: &Tracked, actual: Option<(Map, u64)>, recorder: &Recorder) -> Event {
    let listed = |m: &Map| {
        m.iter()
            .map(|(k, (v, ver))| (k.clone(), v.clone(), *ver))
            .collect()
    };
    Event::StateTracked {
        room: STATE_ROOM.to_owned(),
        tracked: listed(&tracked.map),
        tracked_offset: tracked.offset,
        actual: actual.as_ref().map(|(m, _)| listed(m)),
        actual_offset: actual.map_or(0, |(_, o)| o),
        subscribes: tracked.subscribes,
        snapshots: tracked.snapshots,
        at: recorder.now(),
    }
}

/// Applies change pushes until `finish` is set and they have been quiet for [`QUIET`].
async fn follow(
    client: &mut Client,
    tracked: &mut Tracked,
    finish: &AtomicBool,
) -> Result<(), Ended> {
    let mut quiet_since = Instant::now();
    loop {
        if finish.load(Ordering::Relaxed) && quiet_since.elapsed() >= QUIET {
            return Ok(());
        }
        match client.next_push(Duration::from_millis(200)).await {
            Ok(push) => {
                quiet_since = Instant::now();
                let ours = push.get("room").and_then(Value::as_str) == Some(STATE_ROOM);
                if ours && push.get("push").and_then(Value::as_str) == Some("pub") {
                    let offset = push.get("offset").and_then(Value::as_u64).unwrap_or(0);
                    tracked.apply(offset, &push["data"]);
                }
            }
            Err(Ended::Timeout) => {}
            Err(ended) => return Err(ended),
        }
    }
}

/// The room's map and offset as a fresh subscription on another connection sees it.
async fn read_map(url: &str, tok: &str) -> Result<(Map, u64), String> {
    let mut client = Client::try_connect(url, tok).await?;
    let subscribe = json!({"op": "subscribe", "room": STATE_ROOM});
    let reply = client
        .try_call(subscribe, CALL_TIMEOUT)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let ok = reply.get("ok").ok_or_else(|| reply.to_string())?;
    let offset = ok.get("offset").and_then(Value::as_u64).unwrap_or(0);
    Ok((map_of(ok.get("state").unwrap_or(&Value::Null)), offset))
}
