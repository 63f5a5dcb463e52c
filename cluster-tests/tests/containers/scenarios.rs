//! The scenarios each variant runs: chat and presence, a fault while publishing, a rolling restart.

use super::*;

/// Two clients on different edges, through `front`: chat both ways and see each other's
/// presence.
pub(crate) async fn chat_and_presence(front: &Frontend) {
    let secret = secret();
    let room = format!("chat:ct-{}-{}", front.name, rand::random::<u32>());
    let ids = edge_ids();
    assert_eq!(ids.len(), 2, "two running edges: {ids:?}");
    // The proxy spreads connections over the edges; open until both edges have one.
    let mut by_edge: BTreeMap<String, Client> = BTreeMap::new();
    for attempt in 0..12 {
        let user = format!("user{attempt}");
        let client = Client::connect_retrying(front, &token(&secret, &user)).await;
        let edge = edge_of(&client.id, &ids).expect("client on a known edge");
        by_edge.entry(edge).or_insert(client);
        if by_edge.len() == 2 {
            break;
        }
    }
    assert_eq!(by_edge.len(), 2, "{} never reached both edges", front.name);
    let mut pair: Vec<Client> = by_edge.into_values().collect();
    let mut b = pair.pop().expect("b");
    let mut a = pair.pop().expect("a");
    for c in [&mut a, &mut b] {
        let reply = c
            .call(json!({"op": "subscribe", "room": room, "presence": true}))
            .await
            .expect("subscribe");
        assert!(reply.get("ok").is_some(), "subscribe refused: {reply}");
    }
    // a sees b join.
    let b_id = b.id.clone();
    wait_push(&mut a, |p| {
        p["push"] == "join" && p["member"]["client"] == b_id.as_str()
    })
    .await;
    // Chat both ways, across the edges.
    say(&mut a, &mut b, &room, "hello from a").await;
    say(&mut b, &mut a, &room, "hello from b").await;
    let reply = a
        .call(json!({"op": "presence", "room": room}))
        .await
        .expect("presence");
    let members: BTreeSet<&str> = reply["ok"]["members"]
        .as_array()
        .unwrap_or_else(|| panic!("presence reply: {reply}"))
        .iter()
        .filter_map(|m| m["client"].as_str())
        .collect();
    assert_eq!(members, BTreeSet::from([a.id.as_str(), b.id.as_str()]));
    // b leaves: a sees it.
    let a_seen = a.id.clone();
    drop(b);
    let push = wait_push(&mut a, |p| p["push"] == "leave").await;
    assert_eq!(
        push["member"]["client"],
        b_id.as_str(),
        "leave seen by {a_seen}"
    );
}

/// `from` publishes `text` in `room`; `to` receives it from `from`.
pub(crate) async fn say(from: &mut Client, to: &mut Client, room: &str, text: &str) {
    let reply = from
        .call(json!({"op": "publish", "room": room, "data": {"text": text}}))
        .await
        .expect("publish");
    assert!(reply.get("ok").is_some(), "publish refused: {reply}");
    let push = wait_push(to, |p| p["push"] == "pub" && p["data"]["text"] == text).await;
    assert_eq!(push["from"]["client"], from.id.as_str());
}

pub(crate) async fn wait_push(client: &mut Client, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no matching push within 15 s");
        match client.next_push(left).await {
            Ok(push) if want(&push) => return push,
            Ok(_) => {}
            Err(e) => panic!("connection ended while waiting for a push: {e:?}"),
        }
    }
}

/// A publisher (through the first front end) publishes with idempotency keys while `fault`
/// runs once `at` publications are acknowledged; a subscriber (through the second front end,
/// on the other edge if the proxy puts it there) must get every acknowledged publication
/// exactly once, in order.
pub(crate) async fn publish_through_fault(name: &str, count: u64, at: u64, fault: impl FnOnce()) {
    let fronts = frontends();
    let secret = secret();
    let room = format!("chat:ct-{name}-{}", rand::random::<u32>());
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let reader = tokio::spawn(follow(
        fronts[1].clone(),
        token(&secret, "reader"),
        room.clone(),
        false,
        stop.clone(),
        seen.clone(),
        Arc::new(AtomicBool::new(true)),
    ));
    wait_until(
        "the reader subscribed",
        Duration::from_secs(30),
        async || !seen.lock().await.ids.is_empty(),
    )
    .await;
    let acked = Arc::new(AtomicU64::new(0));
    let publisher = tokio::spawn(publish_all(
        fronts[0].clone(),
        token(&secret, PUBLISHER),
        room,
        count,
        Duration::from_millis(40),
        acked.clone(),
    ));
    wait_until(
        "publications before the fault",
        Duration::from_secs(60),
        async || acked.load(Ordering::SeqCst) >= at,
    )
    .await;
    let started = Instant::now();
    fault();
    let acks = publisher.await.expect("publisher");
    eprintln!(
        "{name}: {count} publications acknowledged, the last {} s after the fault",
        started.elapsed().as_secs()
    );
    wait_until(
        "the reader caught up",
        Duration::from_secs(60),
        async || seen.lock().await.pubs.len() >= acks.len(),
    )
    .await;
    // A moment for duplicates, if any, to show.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    reader.await.expect("reader");
    let seen = seen.lock().await;
    assert_exactly_once("reader", &seen, &acks);
    eprintln!(
        "{name}: reader lost {} connection(s): {:?}",
        seen.closes.len(),
        seen.closes
    );
}

/// Broker status on the host port of broker `id`.
pub(crate) fn broker_status(addr: SocketAddr) -> Option<Value> {
    let (code, body) = http_get(addr, "/status")?;
    (code == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

pub(crate) fn brokers() -> BTreeMap<u64, SocketAddr> {
    env("PLAZA_CT_BROKERS")
        .split_whitespace()
        .map(|item| {
            let (id, addr) = item.split_once('=').expect("id=addr");
            (id.parse().expect("id"), addr.parse().expect("addr"))
        })
        .collect()
}

pub(crate) fn leader() -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (&id, &addr) in &brokers() {
            if let Some(status) = broker_status(addr)
                && status["state"] == "Leader"
            {
                return id;
            }
        }
        assert!(Instant::now() < deadline, "no broker leader within 30 s");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Rolling restart of the edges: each edge in turn gets `podman stop` (SIGTERM; 30 s like the
/// compose file's stop_grace_period) and then `podman start`, while clients through both front
/// ends follow a room with presence and a publisher publishes. Drained clients get 4000,
/// reconnect through their proxy to the other edge, recover without loss; clients that were
/// not drained see exactly the drained clients leave and come back, nothing else.
pub(crate) async fn rolling_restart() {
    let fronts = frontends();
    let secret = secret();
    let room = format!("chat:ct-rolling-{}", rand::random::<u32>());
    let stop = Arc::new(AtomicBool::new(false));
    let watching = Arc::new(AtomicBool::new(true));
    let mut followers: Vec<(String, Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>)> = Vec::new();
    let spawn_follower = |i: usize| {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let handle = tokio::spawn(follow(
            fronts[i % fronts.len()].clone(),
            token(&secret, &format!("member{i}")),
            room.clone(),
            true,
            stop.clone(),
            seen.clone(),
            watching.clone(),
        ));
        (
            format!("member{i} via {}", fronts[i % fronts.len()].name),
            seen,
            handle,
        )
    };
    for i in 0..6 {
        followers.push(spawn_follower(i));
    }
    for (_, seen, _) in &followers {
        wait_until("members subscribed", Duration::from_secs(30), async || {
            !seen.lock().await.ids.is_empty()
        })
        .await;
    }
    let acked = Arc::new(AtomicU64::new(0));
    let publisher = tokio::spawn(publish_all(
        fronts[0].clone(),
        token(&secret, PUBLISHER),
        room.clone(),
        u64::MAX,
        Duration::from_millis(200),
        acked.clone(),
    ));
    let edges = containers("edge");
    assert_eq!(edges.len(), 2, "two edge containers: {edges:?}");
    // Per step: the client ids drained off the stopped edge.
    let mut drained_ids: BTreeSet<String> = BTreeSet::new();
    let mut edge_history = Vec::new();
    for edge in &edges {
        let ids = edge_ids();
        edge_history.push(ids.clone());
        // At least two members on the other edge watch the presence of this step.
        let mut next = followers.len();
        loop {
            let mut on_other = 0;
            for (_, seen, _) in &followers {
                let seen = seen.lock().await;
                if let Some(id) = seen.ids.last()
                    && edge_of(id, &ids).is_some_and(|e| &e != edge)
                {
                    on_other += 1;
                }
            }
            if on_other >= 2 {
                break;
            }
            assert!(
                next < 20,
                "the proxies never put two members on the other edge"
            );
            followers.push(spawn_follower(next));
            let seen = followers.last().expect("new").1.clone();
            wait_until(
                "a new member subscribed",
                Duration::from_secs(30),
                async || !seen.lock().await.ids.is_empty(),
            )
            .await;
            next += 1;
        }
        let mut on_edge: Vec<(usize, String)> = Vec::new();
        for (i, (_, seen, _)) in followers.iter().enumerate() {
            let seen = seen.lock().await;
            let id = seen.ids.last().expect("subscribed").clone();
            if edge_of(&id, &ids).as_ref() == Some(edge) {
                on_edge.push((i, id));
            }
        }
        let before: Vec<usize> = {
            let mut v = Vec::new();
            for (_, seen, _) in &followers {
                v.push(seen.lock().await.ids.len());
            }
            v
        };
        let started = Instant::now();
        let edge_name = edge.clone();
        tokio::task::spawn_blocking(move || podman(&["stop", "--time", "30", &edge_name]))
            .await
            .expect("podman stop");
        eprintln!(
            "rolling restart: {edge} stopped in {} s, {} member(s) drained",
            started.elapsed().as_secs(),
            on_edge.len()
        );
        for (i, id) in &on_edge {
            let seen = followers[*i].1.clone();
            let count = before[*i];
            wait_until(
                "a drained member reconnected",
                Duration::from_secs(60),
                async || seen.lock().await.ids.len() > count,
            )
            .await;
            let seen = seen.lock().await;
            assert!(
                seen.closes
                    .iter()
                    .any(|(code, lost)| *code == 4000 && lost == id),
                "{}: drained without close 4000: {:?}",
                followers[*i].0,
                seen.closes
            );
            assert!(seen.disconnects.contains(&4000), "no disconnect push 4000");
            drained_ids.insert(id.clone());
        }
        let edge_name = edge.clone();
        tokio::task::spawn_blocking(move || {
            podman(&["start", &edge_name]);
            wait_healthy(&edge_name, Duration::from_secs(60));
        })
        .await
        .expect("podman start");
        // The proxies re-resolve the edges every 10 s.
        tokio::time::sleep(Duration::from_secs(11)).await;
    }
    let acks_before_stop = acked.load(Ordering::SeqCst);
    publisher.abort();
    let _ = publisher.await;
    assert!(
        acks_before_stop > 50,
        "only {acks_before_stop} publications during the restart"
    );
    // The publisher was aborted: the publications acknowledged are 0..acked (at most one more,
    // unacknowledged, may have been stored).
    let acked_now = acked.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The members' own disconnects below are the test ending, not presence to check.
    watching.store(false, Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    let mut reports = Vec::new();
    let mut leaves_seen = BTreeSet::new();
    let mut dump = format!("edge ids per step: {edge_history:?}\n");
    for (name, seen, _) in &followers {
        let seen = seen.lock().await;
        dump.push_str(&format!(
            "  {name}: ids {:?}, closes {:?}, presence {:?}\n",
            seen.ids, seen.closes, seen.presence
        ));
    }
    eprintln!("rolling restart, what each member saw:\n{dump}");
    for (name, seen, handle) in followers {
        handle.await.expect("follower");
        let seen = seen.lock().await;
        let seqs: Vec<u64> = seen.pubs.iter().map(|&(_, s)| s).collect();
        let first = seqs.first().copied().unwrap_or(0);
        assert_eq!(
            seen.not_recovered, 0,
            "{name}: a reconnect could not recover (reconnected after {:?} s; history holds 100): {:?}",
            seen.reconnect_secs, seen.unrecovered
        );
        // Members that joined before the publisher saw everything from 0; later ones from
        // their first publication on: in order, each once, with no gap.
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "{name}: publications lost, repeated or reordered: {seqs:?}"
        );
        assert!(
            seqs.last().copied().unwrap_or(0) + 1 >= acked_now,
            "{name}: missed the last publications (saw up to {:?}, {acked_now} acked)",
            seqs.last()
        );
        // Presence: only drained connections leave, and each connection (a reconnection, a
        // late member) joins at most once: no leave/join storm.
        let mut leaves = BTreeSet::new();
        let mut joins = BTreeSet::new();
        for (kind, member) in &seen.presence {
            if kind == "leave" {
                assert!(
                    drained_ids.contains(member),
                    "{name}: saw {member} leave, which was not drained"
                );
                assert!(leaves.insert(member.clone()), "{name}: {member} left twice");
            } else {
                assert!(
                    joins.insert(member.clone()),
                    "{name}: {member} joined twice"
                );
            }
        }
        leaves_seen.extend(leaves.iter().cloned());
        reports.push(format!(
            "{name}: {} pubs from {first}, reconnected in {:.1?} s, {} leaves / {} joins seen",
            seqs.len(),
            seen.reconnect_secs,
            leaves.len(),
            joins.len()
        ));
    }
    eprintln!(
        "rolling restart: {acked_now} publications, drained {} connection(s)\n  {}",
        drained_ids.len(),
        reports.join("\n  ")
    );
    assert!(!drained_ids.is_empty(), "no client was drained");
    // Members on the other edge watched each step: every drained connection's leave was seen.
    assert_eq!(
        leaves_seen, drained_ids,
        "drained connections whose leave nobody saw"
    );
}
