//! `GET /v1/api/events`: the lifecycle event feed as an application's back end reads it, with
//! real WebSocket clients coming and going, long-polling, every bad query, and a receiver that
//! stops reading for over a minute and catches up.

use std::collections::BTreeMap;
use std::time::Duration;

use plaza_edge::RunningEdge;
use plaza_edge::api::ApiCode;
use serde_json::Value;

use super::api_config;
use super::common::*;
use super::http::Api;

/// The debounce of these tests: short, so the rules show quickly.
const DEBOUNCE: Duration = Duration::from_millis(300);

async fn events_edge() -> RunningEdge {
    let mut c = api_config();
    c.rooms.events.debounce = DEBOUNCE;
    start(c).await
}

/// A connected client of `user` subscribed to (and so present in) `room`.
async fn tab(edge: &RunningEdge, user: &str, room: &str) -> Client {
    let (mut c, _) = Client::connected(edge.local_addr(), user).await;
    c.subscribe(room).await;
    c
}

/// One read of the feed.
async fn read(api: &Api, query: &str) -> Value {
    api.get(&format!("/v1/api/events?{query}")).await.ok()
}

/// `(type, user)` of the events of a page.
fn summary(page: &Value) -> Vec<(String, String)> {
    page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["user"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn pair(t: &str, u: &str) -> (String, String) {
    (t.to_owned(), u.to_owned())
}

#[tokio::test]
async fn a_long_poll_returns_the_offline_of_the_last_tab_and_a_reload_shows_nothing() {
    let edge = events_edge().await;
    let api = Api::new(edge.local_addr());
    let first = tab(&edge, "ann", "chat:lobby").await;
    let page = read(&api, "").await;
    assert_eq!(
        summary(&page),
        [
            pair("user.online", "ann"),
            pair("room.occupied", ""),
            pair("user.joined", "ann"),
        ]
    );
    assert_eq!(page["recovered"], true);
    let next = page["next"].as_str().unwrap().to_owned();
    assert_eq!(
        page["events"][0]["id"],
        format!("{}:1", page["events"][0]["epoch"].as_str().unwrap())
    );

    // A reload: the tab closes and a new one opens at once.
    drop(first);
    let second = tab(&edge, "ann", "chat:lobby").await;
    let page = read(&api, &format!("since={next}&wait=1.5")).await;
    assert_eq!(
        summary(&page),
        [],
        "a reload inside the debounce is invisible"
    );
    let next = page["next"].as_str().unwrap().to_owned();

    // The last tab closes: a long poll started before returns with the events.
    let poll = {
        let api = Api::new(edge.local_addr());
        let next = next.clone();
        tokio::spawn(async move {
            read(&api, &format!("since={next}&wait=20&types=user.offline")).await
        })
    };
    drop(second);
    let page = poll.await.unwrap();
    assert_eq!(summary(&page), [pair("user.offline", "ann")]);
    let all = read(&api, &format!("since={next}")).await;
    assert_eq!(
        summary(&all),
        [
            pair("user.left", "ann"),
            pair("room.vacated", ""),
            pair("user.offline", "ann"),
        ],
        "in order: the user leaves the room, the room empties, the user goes offline"
    );
    edge.shutdown().await;
}

#[tokio::test]
async fn bad_feed_queries_are_refused_with_400_and_other_epochs_are_not_recovered() {
    let edge = events_edge().await;
    let api = Api::new(edge.local_addr());
    let _ann = tab(&edge, "ann", "chat:a").await;
    let latest = read(&api, "").await["latest"].as_str().unwrap().to_owned();
    let (epoch, _) = latest.split_once(':').unwrap();
    let future = format!("since={epoch}:999999");
    for query in [
        "since=nonsense",
        "since=abc:-1",
        future.as_str(),
        "limit=0",
        "limit=1001",
        "limit=99999999999",
        "wait=-1",
        "wait=31",
        "wait=NaN",
        "types=room.exploded",
        "nonsense=1",
    ] {
        api.get(&format!("/v1/api/events?{query}"))
            .await
            .error(ApiCode::BadRequest);
    }
    let page = read(&api, "since=someotherepoch:5").await;
    assert_eq!(page["recovered"], false);
    assert_eq!(summary(&page).len(), 3, "from the oldest retained event");
    let page = read(&api, "types=user.online&namespace=chat").await;
    assert_eq!(summary(&page), [], "online/offline belong to no namespace");
    let page = read(&api, "namespace=chat&limit=1").await;
    assert_eq!(summary(&page), [pair("room.occupied", "")]);
    assert_eq!(
        page["next"],
        format!("{epoch}:2"),
        "skipped events are passed"
    );
    edge.shutdown().await;
}

/// A back end that stops reading for more than a minute while users come and go reads
/// everything it missed afterwards: contiguous positions, nothing lost, each user's
/// online/offline alternating exactly as many times as the user connected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_offline_for_over_a_minute_catches_up_with_nothing_missing_or_reordered() {
    const OFFLINE: Duration = Duration::from_secs(65);
    let edge = events_edge().await;
    let api = Api::new(edge.local_addr());
    let start = read(&api, "").await["latest"].as_str().unwrap().to_owned();

    // The receiver is "down" from here: nobody reads the feed while the users churn.
    let users = ["u1", "u2", "u3", "u4"];
    let mut churn = Vec::new();
    for (i, user) in users.into_iter().enumerate() {
        let addr = edge.local_addr();
        churn.push(tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + OFFLINE;
            let mut cycles = 0u32;
            while tokio::time::Instant::now() < deadline {
                let (mut c, _) = Client::connected(addr, user).await;
                c.subscribe(&format!("chat:room{}", i % 2)).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                drop(c);
                cycles += 1;
                // Well past the debounce, so each cycle is one online and one offline.
                tokio::time::sleep(DEBOUNCE * 5).await;
            }
            (user, cycles)
        }));
    }
    let mut cycles = BTreeMap::new();
    for task in churn {
        let (user, n) = task.await.unwrap();
        cycles.insert(user.to_owned(), n);
    }
    // The last cycles' offline events are due a debounce after their close.
    tokio::time::sleep(DEBOUNCE * 4).await;

    // Back up: page through from where the receiver stopped, small pages.
    let mut since = start.clone();
    let mut events = Vec::new();
    loop {
        let page = read(&api, &format!("since={since}&limit=50")).await;
        assert_eq!(
            page["recovered"], true,
            "nothing may be lost in the retention window"
        );
        events.extend(page["events"].as_array().unwrap().iter().cloned());
        since = page["next"].as_str().unwrap().to_owned();
        if page["next"] == page["latest"] {
            break;
        }
    }
    let first_seq = start.split_once(':').unwrap().1.parse::<u64>().unwrap() + 1;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e["seq"].as_u64(),
            Some(first_seq + i as u64),
            "positions are contiguous"
        );
    }
    for (user, n) in &cycles {
        let mine: Vec<&str> = events
            .iter()
            .filter(|e| e["user"] == user.as_str())
            .filter(|e| matches!(e["type"].as_str(), Some("user.online" | "user.offline")))
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        let expected: Vec<&str> = (0..*n)
            .flat_map(|_| ["user.online", "user.offline"])
            .collect();
        assert_eq!(mine, expected, "{user} connected {n} times");
    }
    assert!(
        cycles.values().all(|n| *n >= 20),
        "the churn ran: {cycles:?}"
    );
    edge.shutdown().await;
}
