//! A recorded publish workload over WebSocket and the check of what a subscriber received:
//! every acknowledged publication exactly once, in offset order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::ws::Client;

/// One publish as the publishing client saw it.
pub struct Attempt {
    /// The publication's number (`data.n`).
    pub n: u64,
    /// When it was sent.
    pub sent: Instant,
    /// When its reply arrived.
    pub done: Instant,
    /// The offset if acknowledged.
    pub offset: Option<u64>,
    /// The error message otherwise.
    pub error: Option<String>,
}

/// Publishes `{"n": 0, 1, …}` one at a time until `stop` is set.
pub async fn publish_until(mut client: Client, room: &str, stop: Arc<AtomicBool>) -> Vec<Attempt> {
    // Clients publish to rooms they subscribed to (retrying temporary errors, as clients do).
    let mut tries = 0;
    loop {
        let reply = client.call(json!({"op": "subscribe", "room": room})).await;
        if reply.get("ok").is_some() {
            break;
        }
        tries += 1;
        let temporary = reply["error"]["temporary"].as_bool().unwrap_or(false);
        assert!(temporary && tries < 20, "subscribe: {reply}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut attempts = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        let reply = client
            .call(json!({"op": "publish", "room": room, "data": {"n": n}}))
            .await;
        if reply.get("ok").is_none() && n < 3 {
            eprintln!("publish {n} refused: {reply}");
        }
        let offset = reply
            .get("ok")
            .and_then(|ok| ok.get("offset"))
            .and_then(Value::as_u64);
        let error = reply["error"]["message"].as_str().map(str::to_owned);
        attempts.push(Attempt {
            n,
            sent,
            done: Instant::now(),
            offset,
            error,
        });
        n += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    attempts
}

/// Reads publications of `room` until every acknowledged one has arrived (or 15 s pass) and
/// checks they arrived exactly once and in offset order. Returns how many arrived.
pub async fn check_delivery(subscriber: &mut Client, attempts: &[Attempt]) -> usize {
    let acked: Vec<(u64, u64)> = attempts
        .iter()
        .filter_map(|a| a.offset.map(|o| (a.n, o)))
        .collect();
    let last = acked
        .iter()
        .map(|(_, o)| *o)
        .max()
        .expect("some publish succeeded");
    let mut seen: Vec<(u64, u64)> = Vec::new();
    while seen.last().is_none_or(|(_, o)| *o < last) {
        match subscriber.next_push(Duration::from_secs(15)).await {
            Ok(push) if push["push"] == "pub" => {
                let offset = push["offset"].as_u64().expect("offset");
                let n = push["data"]["n"].as_u64().expect("n");
                seen.push((n, offset));
            }
            Ok(_) => {}
            Err(e) => panic!(
                "subscriber stopped after {} publications (last acked offset {last}): {e:?}",
                seen.len()
            ),
        }
    }
    for pair in seen.windows(2) {
        assert!(
            pair[0].1 < pair[1].1,
            "publications out of order or repeated: {:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
    let mut ns: Vec<u64> = seen.iter().map(|(n, _)| *n).collect();
    ns.sort_unstable();
    let before = ns.len();
    ns.dedup();
    assert_eq!(before, ns.len(), "a publication was delivered twice");
    for (n, offset) in &acked {
        assert!(
            seen.contains(&(*n, *offset)),
            "acknowledged publication n={n} offset={offset} never arrived"
        );
    }
    seen.len()
}
