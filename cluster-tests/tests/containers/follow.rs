//! A subscriber that never loses a publication, and publishers that count their acknowledgements.

use super::*;

/// The user the publishers connect as (its presence is not counted).
pub(crate) const PUBLISHER: &str = "publisher";

/// What one reconnecting subscriber saw.
#[derive(Default, Debug)]
pub(crate) struct Seen {
    /// `(offset, seq)` of every publication, live or recovered, in arrival order.
    pub(crate) pubs: Vec<(u64, u64)>,
    /// Close codes of the connections it lost (4000 = drained), with the lost client id.
    pub(crate) closes: Vec<(u16, String)>,
    /// `disconnect` pushes' codes.
    pub(crate) disconnects: Vec<u64>,
    /// Presence pushes of members (the publisher left out): ("join" | "leave", client id).
    pub(crate) presence: Vec<(String, String)>,
    /// Client ids this subscriber had, in order.
    pub(crate) ids: Vec<String>,
    /// Reconnects whose `recover` came back `recovered: false` (must stay 0).
    pub(crate) not_recovered: u32,
    /// Seconds from each lost connection to the re-subscribed one.
    pub(crate) reconnect_secs: Vec<f64>,
    /// For each reconnect that did not recover: the position asked for and the reply.
    pub(crate) unrecovered: Vec<String>,
}

/// Subscribes to `room` through `front` and follows it until `stop`, reconnecting (through the
/// same front end) and recovering from its last position whenever the connection ends.
/// Presence pushes are recorded while `watching` (not while the test tears its clients down).
pub(crate) async fn follow(
    front: Frontend,
    token: String,
    room: String,
    presence: bool,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    watching: Arc<AtomicBool>,
) {
    let mut position: Option<(String, u64)> = None;
    let mut lost_at: Option<Instant> = None;
    while !stop.load(Ordering::SeqCst) {
        let mut client = Client::connect_retrying(&front, &token).await;
        let mut command = json!({"op": "subscribe", "room": room, "presence": presence});
        if let Some((epoch, offset)) = &position {
            command["recover"] = json!({"epoch": epoch, "offset": offset});
        }
        let reply = match client.call(command).await {
            Ok(reply) => reply,
            Err(_) => continue,
        };
        let Some(ok) = reply.get("ok") else {
            // 113 while the broker tier elects a leader: retry.
            assert_eq!(
                reply["error"]["temporary"], true,
                "subscribe refused: {reply}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        {
            let mut seen = seen.lock().await;
            seen.ids.push(client.id.clone());
            if let Some(at) = lost_at.take() {
                seen.reconnect_secs.push(at.elapsed().as_secs_f64());
            }
            if position.is_some() && ok["recovered"] != true {
                seen.not_recovered += 1;
                seen.unrecovered
                    .push(format!("recover from {position:?}: {ok}"));
            }
            for publication in ok["publications"].as_array().into_iter().flatten() {
                let offset = publication["offset"].as_u64().expect("offset");
                seen.pubs
                    .push((offset, publication["data"]["seq"].as_u64().expect("seq")));
            }
        }
        let epoch = ok["epoch"].as_str().expect("epoch").to_owned();
        let mut offset = ok["offset"].as_u64().expect("offset");
        position = Some((epoch.clone(), offset));
        loop {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            match client.next_push(Duration::from_millis(500)).await {
                Ok(push) => {
                    let mut seen = seen.lock().await;
                    match push["push"].as_str() {
                        Some("pub") if push["room"] == room.as_str() => {
                            let o = push["offset"].as_u64().expect("offset");
                            seen.pubs
                                .push((o, push["data"]["seq"].as_u64().expect("seq")));
                            offset = o;
                            position = Some((epoch.clone(), offset));
                        }
                        Some(kind @ ("join" | "leave"))
                            if push["member"]["user"] != PUBLISHER
                                && watching.load(Ordering::SeqCst) =>
                        {
                            let member = push["member"]["client"].as_str().unwrap_or("").to_owned();
                            seen.presence.push((kind.to_owned(), member));
                        }
                        Some("disconnect") => {
                            seen.disconnects.push(push["code"].as_u64().unwrap_or(0));
                        }
                        _ => {}
                    }
                }
                Err(Ended::Timeout) => {}
                Err(Ended::Closed(code, _)) => {
                    seen.lock().await.closes.push((code, client.id.clone()));
                    lost_at = Some(Instant::now());
                    break;
                }
                Err(Ended::Failed(e)) => {
                    eprintln!("{}: connection failed: {e}", client.id);
                    seen.lock().await.closes.push((1006, client.id.clone()));
                    lost_at = Some(Instant::now());
                    break;
                }
            }
        }
    }
}

/// Publishes `count` messages `{seq}` to `room` through `front`, one at a time, each with its
/// own idempotency key, retrying a message (same key) until it is acknowledged: on a
/// temporary error, or after reconnecting and re-subscribing when the connection ends.
/// Returns `(seq, offset)` of every acknowledgement.
pub(crate) async fn publish_all(
    front: Frontend,
    token: String,
    room: String,
    count: u64,
    pause: Duration,
    acked: Arc<AtomicU64>,
) -> Vec<(u64, u64)> {
    let run: u64 = rand::random();
    let mut acks = Vec::new();
    let mut client: Option<Client> = None;
    for seq in 0..count {
        let deadline = Instant::now() + Duration::from_secs(90);
        let idem = format!("ct-{run:x}-{seq}");
        loop {
            assert!(
                Instant::now() < deadline,
                "publication {seq} not acknowledged within 90 s"
            );
            if client.is_none() {
                let mut c = Client::connect_retrying(&front, &token).await;
                match c.call(json!({"op": "subscribe", "room": room})).await {
                    Ok(reply) if reply.get("ok").is_some() => client = Some(c),
                    _ => {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        continue;
                    }
                }
            }
            let c = client.as_mut().expect("connected");
            c.ws.clear_pushes();
            let command =
                json!({"op": "publish", "room": room, "data": {"seq": seq}, "idem": idem});
            match c.call(command).await {
                Ok(reply) => {
                    if let Some(offset) = reply["ok"]["offset"].as_u64() {
                        acks.push((seq, offset));
                        acked.store(seq + 1, Ordering::SeqCst);
                        break;
                    }
                    assert_eq!(
                        reply["error"]["temporary"], true,
                        "publish {seq} refused: {reply}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(_) => {
                    client = None;
                }
            }
        }
        tokio::time::sleep(pause).await;
    }
    acks
}

/// Every acknowledged publication reached `seen` exactly once, in order, with its offset.
pub(crate) fn assert_exactly_once(who: &str, seen: &Seen, acks: &[(u64, u64)]) {
    let seqs: Vec<u64> = seen.pubs.iter().map(|&(_, s)| s).collect();
    let want: Vec<u64> = acks.iter().map(|&(s, _)| s).collect();
    assert_eq!(
        seqs, want,
        "{who}: publications not exactly once in order (closes {:?})",
        seen.closes
    );
    let offsets: Vec<u64> = seen.pubs.iter().map(|&(o, _)| o).collect();
    let acked: Vec<u64> = acks.iter().map(|&(_, o)| o).collect();
    assert_eq!(
        offsets, acked,
        "{who}: offsets differ from the acknowledged ones"
    );
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "{who}: offsets not increasing"
    );
    assert_eq!(
        seen.not_recovered, 0,
        "{who}: a reconnect could not recover: {:?}",
        seen.unrecovered
    );
}

pub(crate) async fn wait_until(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
