//! The presence watcher: one client that keeps each room's member list from pushes the way
//! the protocol tells clients to (protocol §12; [`crate::presence_list`]) through every fault —
//! reloading with `presence` only when its own connection is replaced — and at the end records
//! that list next to the room's presence ([`Event::PresenceTracked`], checked by
//! `presence-tracked`). A broker failover under its edge must not leave it with a ghost or
//! without a newcomer: the edge sends `presence_resync` instead of the pushes it missed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::json;

use super::history::Event;
use super::runner::{Recorder, SECRET};
use crate::presence_list::{PresenceList, entries};
use crate::token;
use crate::ws::{Client, Ended};

/// The watcher's user id; the presence checks expect it to be a member of every room.
pub(super) const WATCHER: &str = "presence-watcher";

/// How long the pushes must be quiet before the final reading.
const QUIET: Duration = Duration::from_secs(1);

/// Watches every room until `finish` is set, then records one [`Event::PresenceTracked`] per
/// room. Gives up (recording nothing, which the checker reports) after `give_up`.
pub(super) async fn watch(
    urls: Arc<Mutex<Vec<String>>>,
    rooms: Vec<String>,
    recorder: Recorder,
    finish: Arc<AtomicBool>,
    give_up: Instant,
) {
    let tok = token(SECRET, WATCHER);
    let mut attempt = 0usize;
    while Instant::now() < give_up {
        attempt += 1;
        let url = {
            let urls = urls.lock().unwrap_or_else(PoisonError::into_inner);
            if urls.is_empty() {
                None
            } else {
                Some(urls[attempt % urls.len()].clone())
            }
        };
        let Some(url) = url else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let Ok(mut client) = Client::try_connect(&url, &tok).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let Some(mut lists) = load(&mut client, &rooms).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue; // a refused subscribe or a lost connection: start over
        };
        if follow(&mut client, &rooms, &mut lists, &finish)
            .await
            .is_err()
        {
            continue;
        }
        if record(&mut client, &rooms, &lists, &recorder).await.is_ok() {
            return;
        }
    }
    eprintln!("the presence watcher gave up");
}

/// Subscribes to every room with `presence: true` and loads its members. Pushes that arrive
/// while a `presence` reply is on its way stay queued in the client and are applied on top
/// afterwards (harmless: they happened after the reading or are already in it).
async fn load(client: &mut Client, rooms: &[String]) -> Option<HashMap<String, PresenceList>> {
    let timeout = Duration::from_secs(10);
    let mut lists = HashMap::new();
    for room in rooms {
        let command = json!({"op": "subscribe", "room": room, "presence": true});
        let reply = client.try_call(command, timeout).await.ok()?;
        reply.get("ok")?;
        let reply = client
            .try_call(json!({"op": "presence", "room": room}), timeout)
            .await
            .ok()?;
        let mut list = PresenceList::default();
        list.replace(reply.get("ok")?.get("members")?);
        lists.insert(room.clone(), list);
    }
    Some(lists)
}

/// Applies pushes until `finish` is set and they have been quiet for [`QUIET`].
async fn follow(
    client: &mut Client,
    rooms: &[String],
    lists: &mut HashMap<String, PresenceList>,
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
                for room in rooms {
                    if let Some(list) = lists.get_mut(room) {
                        list.apply(room, &push);
                    }
                }
            }
            Err(Ended::Timeout) => {}
            Err(ended) => return Err(ended),
        }
    }
}

/// Reads every room's presence and records it next to the kept list.
async fn record(
    client: &mut Client,
    rooms: &[String],
    lists: &HashMap<String, PresenceList>,
    recorder: &Recorder,
) -> Result<(), Ended> {
    let mut readings = Vec::new();
    for room in rooms {
        let command = json!({"op": "presence", "room": room});
        let reply = client.try_call(command, Duration::from_secs(10)).await?;
        let actual: Vec<String> = entries(&reply["ok"]["members"]).map(|(c, _)| c).collect();
        let list = lists.get(room).cloned().unwrap_or_default();
        readings.push(Event::PresenceTracked {
            room: room.clone(),
            tracked: list.members.into_keys().collect(),
            actual,
            resyncs: list.resyncs,
            at: recorder.now(),
        });
    }
    for reading in readings {
        recorder.record(reading);
    }
    Ok(())
}
