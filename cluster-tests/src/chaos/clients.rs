//! The recorded workload: each client connects, subscribes with recovery, publishes with
//! idempotency keys and retries, and records every event; a presence observer checks member
//! lists.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::history::{ClientNo, Event};
use super::runner::*;
use crate::token;

/// Reads every room's presence from a fresh client after the faults healed.
pub(super) async fn observe_presence(
    urls: &Arc<Mutex<Vec<String>>>,
    rooms: &[String],
    clients: usize,
    recorder: &Recorder,
    healed_at: u64,
) {
    let url = urls
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .first()
        .cloned();
    let Some(url) = url else { return };
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&url).await else {
        return;
    };
    let mut next = 1;
    let mut call = |command: Value| {
        let mut command = command;
        command["id"] = json!(next);
        next += 1;
        command
    };
    let connect = call(json!({"op": "connect", "token": token(SECRET, "observer")}));
    if ws.send(Message::text(connect.to_string())).await.is_err() {
        return;
    }
    for room in rooms {
        let command = call(json!({"op": "presence", "room": room}));
        let id = command["id"].clone();
        if ws.send(Message::text(command.to_string())).await.is_err() {
            return;
        }
        let reply = loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                    if v["id"] == id {
                        break v;
                    }
                }
                _ => return,
            }
        };
        let mut observed: Vec<String> = reply["ok"]["members"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter_map(|m| m["user"].as_str().map(str::to_owned))
                    // The presence watcher is a member too; `presence-tracked` covers it.
                    .filter(|user| user != super::presence_watch::WATCHER)
                    .collect()
            })
            .unwrap_or_default();
        observed.sort();
        observed.dedup();
        let mut expected: Vec<String> = (0..clients).map(|c| format!("c{c}")).collect();
        expected.sort();
        recorder.record(Event::PresenceObserved {
            room: room.clone(),
            observed,
            expected,
            after_heal_ms: recorder.now().saturating_sub(healed_at),
            at: recorder.now(),
        });
    }
}

/// Subscribe requests awaiting their reply: request id → (room, position asked to recover).
type Subscribing = HashMap<u64, (String, Option<(String, u64)>)>;

/// A publish in flight or waiting to be retried.
pub(super) struct Pending {
    pub(super) room: String,
    pub(super) id: String,
    pub(super) req: Option<u64>,
}

/// One workload client: connect to a random edge, subscribe to every room (recovering from
/// its last position), publish with idempotency keys (retrying failures with the same key),
/// and start over on another edge whenever the connection ends.
pub(super) async fn client(
    me: ClientNo,
    seed: u64,
    rooms: Vec<String>,
    urls: Arc<Mutex<Vec<String>>>,
    recorder: Recorder,
    publishing: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let user = format!("c{me}");
    let tok = token(SECRET, &user);
    let mut positions: HashMap<String, (String, u64)> = HashMap::new();
    let mut pending: Option<Pending> = None;
    let mut n = 0u64;
    while !stopping.load(Ordering::Relaxed) {
        let url = {
            let urls = urls.lock().unwrap_or_else(PoisonError::into_inner);
            if urls.is_empty() {
                None
            } else {
                Some(urls[rng.random_range(0..urls.len())].clone())
            }
        };
        let Some(url) = url else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let Ok(Ok((mut ws, _))) = tokio::time::timeout(
            Duration::from_secs(3),
            tokio_tungstenite::connect_async(&url),
        )
        .await
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut req = 0u64;
        let mut subscribing: Subscribing = HashMap::new();
        req += 1;
        let connect = json!({"id": req, "op": "connect", "token": tok});
        if ws.send(Message::text(connect.to_string())).await.is_err() {
            continue;
        }
        for room in &rooms {
            req += 1;
            let recover = positions.get(room).cloned();
            let mut command = json!({"id": req, "op": "subscribe", "room": room});
            if let Some((epoch, offset)) = &recover {
                command["recover"] = json!({"epoch": epoch, "offset": offset});
            }
            subscribing.insert(req, (room.clone(), recover));
            if ws.send(Message::text(command.to_string())).await.is_err() {
                break;
            }
        }
        if let Some(p) = pending.as_mut() {
            p.req = None; // resent below
        }
        let mut tick = tokio::time::interval(Duration::from_millis(rng.random_range(20..40)));
        let code = loop {
            tokio::select! {
                frame = ws.next() => {
                    let text = match frame {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(f))) => break f.map_or(1005, |f| u16::from(f.code)),
                        Some(Ok(_)) => continue,
                        Some(Err(_)) | None => break 1006,
                    };
                    let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
                    let retry = handle_frame(
                        me, &v, &recorder, &mut positions, &mut subscribing, &mut pending,
                    );
                    if retry {
                        // A refused subscribe (broker tier briefly unavailable): start over.
                        let _ = ws.close(None).await;
                        break 4004;
                    }
                }
                _ = tick.tick() => {
                    if stopping.load(Ordering::Relaxed) {
                        let _ = ws.close(None).await;
                        return;
                    }
                    if pending.as_ref().is_some_and(|p| p.req.is_some()) || !subscribing.is_empty() {
                        continue;
                    }
                    if pending.is_none() {
                        if !publishing.load(Ordering::Relaxed) {
                            continue;
                        }
                        n += 1;
                        let room = rooms[rng.random_range(0..rooms.len())].clone();
                        let id = format!("c{me}-{n}");
                        recorder.record(Event::PublishSent {
                            client: me, room: room.clone(), id: id.clone(), at: recorder.now(),
                        });
                        pending = Some(Pending { room, id, req: None });
                    }
                    let Some(p) = pending.as_mut() else { continue };
                    req += 1;
                    p.req = Some(req);
                    let command = json!({
                        "id": req, "op": "publish", "room": p.room,
                        "data": {"id": p.id}, "idem": p.id,
                    });
                    if ws.send(Message::text(command.to_string())).await.is_err() {
                        break 1006;
                    }
                }
            }
        };
        if let Some(p) = pending.as_mut()
            && p.req.take().is_some()
        {
            recorder.record(Event::PublishFailed {
                client: me,
                room: p.room.clone(),
                id: p.id.clone(),
                code: 0,
                at: recorder.now(),
            });
        }
        recorder.record(Event::Disconnected {
            client: me,
            code,
            at: recorder.now(),
        });
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..300))).await;
    }
}

/// Records one server frame; true when the connection should be started over (a subscribe
/// was refused).
pub(super) fn handle_frame(
    me: ClientNo,
    v: &Value,
    recorder: &Recorder,
    positions: &mut HashMap<String, (String, u64)>,
    subscribing: &mut Subscribing,
    pending: &mut Option<Pending>,
) -> bool {
    if v["push"] == "pub" {
        let (Some(room), Some(offset), Some(id)) = (
            v["room"].as_str(),
            v["offset"].as_u64(),
            v["data"]["id"].as_str(),
        ) else {
            return false;
        };
        let epoch = positions
            .get(room)
            .map(|(e, _)| e.clone())
            .unwrap_or_default();
        positions.insert(room.to_owned(), (epoch.clone(), offset));
        recorder.record(Event::Delivered {
            client: me,
            room: room.to_owned(),
            epoch,
            offset,
            id: id.to_owned(),
            at: recorder.now(),
        });
        return false;
    }
    let Some(req) = v["id"].as_u64() else {
        return false;
    };
    if let Some((room, recover)) = subscribing.remove(&req) {
        let Some(ok) = v.get("ok") else {
            return true;
        };
        let epoch = ok["epoch"].as_str().unwrap_or_default().to_owned();
        let offset = ok["offset"].as_u64().unwrap_or(0);
        let publications: Vec<(u64, String)> = ok["publications"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| {
                        Some((p["offset"].as_u64()?, p["data"]["id"].as_str()?.to_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        positions.insert(room.clone(), (epoch.clone(), offset));
        recorder.record(Event::Subscribed {
            client: me,
            room,
            recover,
            recovered: ok["recovered"].as_bool().unwrap_or(false),
            epoch,
            offset,
            publications,
            at: recorder.now(),
        });
        return false;
    }
    let Some(p) = pending.as_mut() else {
        return false;
    };
    if p.req != Some(req) {
        return false;
    }
    if let Some(ok) = v.get("ok") {
        recorder.record(Event::PublishAcked {
            client: me,
            room: p.room.clone(),
            id: p.id.clone(),
            epoch: ok["epoch"].as_str().unwrap_or_default().to_owned(),
            offset: ok["offset"].as_u64().unwrap_or(0),
            duplicate: ok["duplicate"].as_bool().unwrap_or(false),
            at: recorder.now(),
        });
        *pending = None;
    } else {
        let code = v["error"]["code"].as_u64().unwrap_or(0);
        recorder.record(Event::PublishFailed {
            client: me,
            room: p.room.clone(),
            id: p.id.clone(),
            code: u16::try_from(code).unwrap_or(0),
            at: recorder.now(),
        });
        p.req = None; // retried on a later tick with the same key
    }
    false
}
