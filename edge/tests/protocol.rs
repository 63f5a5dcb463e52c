//! The protocol end to end against a real edge: delivery, presence, recovery, idempotency.

mod common;

use std::time::Duration;

use common::*;
use plaza_proto::client::Push;
use serde_json::json;

#[tokio::test]
async fn two_clients_in_a_room_see_each_others_publications_and_presence() {
    let edge = start_default().await;
    let (mut ann, ann_ok) = Client::connected(edge.local_addr(), "ann").await;
    let (mut bob, bob_ok) = Client::connected(edge.local_addr(), "bob").await;
    assert_eq!(ann_ok.user.as_str(), "ann");
    assert_ne!(ann_ok.client, bob_ok.client);
    assert_eq!(ann_ok.ping_interval, 25);
    assert!(ann_ok.expires_in.is_some_and(|s| s > 3500 && s <= 3600));

    ann.ok(json!({"op": "subscribe", "room": "chat:lobby", "presence": true}))
        .await;
    // Ann sees her own join first.
    let Push::Join(j) = ann.next_push().await else {
        panic!("join")
    };
    assert_eq!(j.member.client, ann_ok.client);
    bob.ok(json!({"op": "subscribe", "room": "chat:lobby", "presence": true}))
        .await;
    let Push::Join(j) = ann.next_push().await else {
        panic!("join")
    };
    assert_eq!(j.member.user.as_str(), "bob");
    assert_eq!(j.member.info.unwrap().as_str(), r#"{"name":"bob"}"#);
    let Push::Join(_) = bob.next_push().await else {
        panic!("bob's own join")
    };

    let sent = bob.publish("chat:lobby", json!({"text": "hi ann"})).await;
    for c in [&mut ann, &mut bob] {
        let Push::Pub(p) = c.next_push().await else {
            panic!("pub")
        };
        assert_eq!(p.offset, sent["offset"].as_u64().unwrap());
        assert_eq!(p.data.as_str(), r#"{"text":"hi ann"}"#);
        let from = p.from.unwrap();
        assert_eq!((from.user.as_str(), &from.client), ("bob", &bob_ok.client));
    }

    let members = ann
        .ok(json!({"op": "presence", "room": "chat:lobby"}))
        .await;
    let mut users: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"].as_str().unwrap())
        .collect();
    users.sort();
    assert_eq!(users, ["ann", "bob"]);
    let stats = ann
        .ok(json!({"op": "presence_stats", "room": "chat:lobby"}))
        .await;
    assert_eq!(stats, json!({"clients": 2, "users": 2}));
    edge.shutdown().await;
}

#[tokio::test]
async fn presence_stats_count_clients_and_distinct_users_across_tabs() {
    let edge = start_default().await;
    let mut tabs = Vec::new();
    for user in ["ann", "ann", "bob"] {
        let (mut c, _) = Client::connected(edge.local_addr(), user).await;
        c.subscribe("counts:stream").await;
        tabs.push(c);
    }
    let stats = tabs[0]
        .ok(json!({"op": "presence_stats", "room": "counts:stream"}))
        .await;
    assert_eq!(stats, json!({"clients": 3, "users": 2}));
    // Counts-only namespaces do not list members.
    let e = tabs[0]
        .err(json!({"op": "presence", "room": "counts:stream"}))
        .await;
    assert_eq!(e.code.code(), 114);
    edge.shutdown().await;
}

/// Finding 7 of the hostile-client review: `presence` listed the whole room in one reply, so one
/// command cost the broker tier and the edge the room's size. It now answers pages of at most
/// `client.max_presence_page` members, in client id order, with `next` leading to the rest.
#[tokio::test]
async fn presence_is_read_in_pages_of_at_most_the_configured_size() {
    let mut config = config();
    config.client.max_presence_page = 2;
    let edge = start(config).await;
    let mut tabs = Vec::new();
    for user in ["ann", "bob", "cid", "dee", "eve"] {
        let (mut c, _) = Client::connected(edge.local_addr(), user).await;
        c.subscribe("chat:paged").await;
        tabs.push(c);
    }
    let c = &mut tabs[0];
    let mut seen = Vec::new();
    let mut after = None::<String>;
    let mut pages = 0;
    loop {
        let mut ask = json!({"op": "presence", "room": "chat:paged", "limit": 50});
        if let Some(a) = &after {
            ask["after"] = json!(a);
        }
        let page = c.ok(ask).await;
        let members = page["members"].as_array().unwrap();
        assert!(members.len() <= 2, "a page over the maximum: {page}");
        seen.extend(
            members
                .iter()
                .map(|m| m["client"].as_str().unwrap().to_owned()),
        );
        pages += 1;
        match page.get("next") {
            Some(next) => after = Some(next.as_str().unwrap().to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted, "pages follow client id order without repeats");
    assert_eq!(seen.len(), 5);
    let e = c
        .err(json!({"op": "presence", "room": "chat:paged", "limit": 0}))
        .await;
    assert_eq!(e.code.code(), 102);
    edge.shutdown().await;
}

#[tokio::test]
async fn a_disconnect_emits_leave_to_presence_subscribers_at_once() {
    let edge = start_default().await;
    let (mut ann, _) = Client::connected(edge.local_addr(), "ann").await;
    ann.ok(json!({"op": "subscribe", "room": "chat:x", "presence": true}))
        .await;
    let _own_join = ann.next_push().await;
    let (mut bob, bob_ok) = Client::connected(edge.local_addr(), "bob").await;
    bob.subscribe("chat:x").await;
    let Push::Join(_) = ann.next_push().await else {
        panic!("join")
    };
    drop(bob);
    let started = std::time::Instant::now();
    let Push::Leave(l) = ann.next_push().await else {
        panic!("leave")
    };
    assert_eq!(l.member.client, bob_ok.client);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "leave took {:?}",
        started.elapsed()
    );
    let stats = ann
        .ok(json!({"op": "presence_stats", "room": "chat:x"}))
        .await;
    assert_eq!(stats, json!({"clients": 1, "users": 1}));
    edge.shutdown().await;
}

#[tokio::test]
async fn reconnecting_with_recover_gets_exactly_the_missed_publications_in_order() {
    let edge = start_default().await;
    let (mut pubr, _) = Client::connected(edge.local_addr(), "pub").await;
    pubr.subscribe("chat:rec").await;
    let (mut sub, _) = Client::connected(edge.local_addr(), "sub").await;
    let first = sub.subscribe("chat:rec").await;
    pubr.publish("chat:rec", json!(1)).await;
    let (seen, _) = publication(sub.next_push().await);
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    drop(sub);

    let mut missed = Vec::new();
    for n in 2..=6 {
        missed.push(
            pubr.publish("chat:rec", json!(n)).await["offset"]
                .as_u64()
                .unwrap(),
        );
    }
    let (mut sub, _) = Client::connected(edge.local_addr(), "sub").await;
    let ok = sub.ok(json!({"op": "subscribe", "room": "chat:rec", "recover": {"epoch": epoch, "offset": seen}})).await;
    assert_eq!(ok["recovered"], json!(true));
    let got: Vec<(u64, i64)> = ok["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["offset"].as_u64().unwrap(), p["data"].as_i64().unwrap()))
        .collect();
    assert_eq!(got, missed.iter().copied().zip(2..=6).collect::<Vec<_>>());
    assert_eq!(ok["offset"].as_u64(), missed.last().copied());
    // Then live ones, without repeats.
    let live = pubr.publish("chat:rec", json!(7)).await["offset"]
        .as_u64()
        .unwrap();
    assert_eq!(publication(sub.next_push().await), (live, json!(7)));
    sub.expect_silence(Duration::from_millis(200)).await;
    edge.shutdown().await;
}

#[tokio::test]
async fn recovery_past_the_history_window_says_recovered_false_with_the_current_position() {
    let edge = start_default().await;
    let (mut c, _) = Client::connected(edge.local_addr(), "ann").await;
    let first = c.subscribe("small:r").await;
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    let start = c.publish("small:r", json!("a")).await["offset"]
        .as_u64()
        .unwrap();
    let mut last = 0;
    for n in 0..5 {
        last = c.publish("small:r", json!(n)).await["offset"]
            .as_u64()
            .unwrap();
    }
    let (mut late, _) = Client::connected(edge.local_addr(), "bob").await;
    let ok = late.ok(json!({"op": "subscribe", "room": "small:r", "recover": {"epoch": epoch, "offset": start}})).await;
    assert_eq!(
        ok["recovered"],
        json!(false),
        "only 3 of 5 missed publications are held"
    );
    assert_eq!(ok["publications"], json!([]));
    assert_eq!(ok["offset"].as_u64(), Some(last));
    assert_eq!(ok["epoch"].as_str(), Some(epoch.as_str()));

    let (mut other, _) = Client::connected(edge.local_addr(), "cat").await;
    let ok = other.ok(json!({"op": "subscribe", "room": "small:r", "recover": {"epoch": "not-this-one", "offset": last}})).await;
    assert_eq!(
        ok["recovered"],
        json!(false),
        "another epoch cannot be recovered"
    );
    edge.shutdown().await;
}

#[tokio::test]
async fn publishing_twice_with_the_same_idem_delivers_once_with_the_same_offset() {
    let edge = start_default().await;
    let (mut c, _) = Client::connected(edge.local_addr(), "ann").await;
    c.subscribe("chat:idem").await;
    let a = c
        .ok(json!({"op": "publish", "room": "chat:idem", "data": {"n": 1}, "idem": "k-1"}))
        .await;
    let b = c
        .ok(json!({"op": "publish", "room": "chat:idem", "data": {"n": 1}, "idem": "k-1"}))
        .await;
    assert_eq!(a, b);
    assert_eq!(
        publication(c.next_push().await).0,
        a["offset"].as_u64().unwrap()
    );
    c.expect_silence(Duration::from_millis(300)).await;
    let h = c.ok(json!({"op": "history", "room": "chat:idem"})).await;
    assert_eq!(h["publications"].as_array().unwrap().len(), 1);
    edge.shutdown().await;
}

#[tokio::test]
async fn history_returns_the_newest_publications_oldest_first() {
    let edge = start_default().await;
    let (mut c, _) = Client::connected(edge.local_addr(), "ann").await;
    c.subscribe("chat:h").await;
    let mut offsets = Vec::new();
    for n in 0..5 {
        offsets.push(
            c.publish("chat:h", json!(n)).await["offset"]
                .as_u64()
                .unwrap(),
        );
    }
    let h = c
        .ok(json!({"op": "history", "room": "chat:h", "limit": 2}))
        .await;
    let got: Vec<u64> = h["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(got, offsets[3..]);
    assert_eq!(h["complete"], json!(true));
    let since = json!({"epoch": h["epoch"], "offset": offsets[1]});
    let h = c
        .ok(json!({"op": "history", "room": "chat:h", "since": since}))
        .await;
    let got: Vec<u64> = h["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(got, offsets[2..]);
    edge.shutdown().await;
}

#[tokio::test]
async fn unsubscribe_stops_delivery_and_leaves_presence() {
    let edge = start_default().await;
    let (mut ann, _) = Client::connected(edge.local_addr(), "ann").await;
    ann.ok(json!({"op": "subscribe", "room": "chat:u", "presence": true}))
        .await;
    let _ = ann.next_push().await;
    let (mut bob, _) = Client::connected(edge.local_addr(), "bob").await;
    bob.subscribe("chat:u").await;
    let Push::Join(_) = ann.next_push().await else {
        panic!("join")
    };
    assert_eq!(
        bob.ok(json!({"op": "unsubscribe", "room": "chat:u"})).await,
        json!({})
    );
    let Push::Leave(_) = ann.next_push().await else {
        panic!("leave")
    };
    ann.publish("chat:u", json!("after")).await;
    let _ = ann.next_push().await;
    bob.expect_silence(Duration::from_millis(300)).await;
    edge.shutdown().await;
}

#[tokio::test]
async fn many_subscribers_on_one_edge_each_get_every_publication_in_order() {
    let edge = start_default().await;
    let mut subs = Vec::new();
    for i in 0..20 {
        let (mut c, _) = Client::connected(edge.local_addr(), &format!("u{i}")).await;
        c.subscribe("chat:fan").await;
        subs.push(c);
    }
    let (mut p, _) = Client::connected(edge.local_addr(), "publisher").await;
    p.subscribe("chat:fan").await;
    let mut offsets = Vec::new();
    for n in 0..50 {
        offsets.push(
            p.publish("chat:fan", json!(n)).await["offset"]
                .as_u64()
                .unwrap(),
        );
    }
    for c in &mut subs {
        for (n, want) in offsets.iter().enumerate() {
            assert_eq!(publication(c.next_push().await), (*want, json!(n)));
        }
    }
    edge.shutdown().await;
}

#[tokio::test]
async fn ping_and_the_plaza_subprotocol_work() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let edge = start_default().await;
    let mut req = format!("ws://{}/v1/ws", edge.local_addr())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "plaza.v1".parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        "plaza.v1"
    );
    drop(ws);
    let (mut c, _) = Client::connected(edge.local_addr(), "ann").await;
    assert_eq!(c.ok(json!({"op": "ping"})).await, json!({}));
    edge.shutdown().await;
}

#[tokio::test]
async fn the_token_may_come_from_the_query_string() {
    let edge = start_default().await;
    let mut c = Client::open_url(&format!(
        "ws://{}/v1/ws?token={}",
        edge.local_addr(),
        token("qs")
    ))
    .await;
    let ok = c.ok(json!({"op": "connect"})).await;
    assert_eq!(ok["user"], json!("qs"));
    edge.shutdown().await;
}

/// Resubscribing with `recover` while another client publishes nonstop: across all rounds the
/// subscriber sees every publication exactly once and in order (replies + pushes), both when
/// the room stays live on the edge (another subscriber holds it) and when it does not.
#[tokio::test]
async fn recovering_while_publications_stream_in_loses_and_repeats_nothing() {
    for keep_room_live in [true, false] {
        let edge = start_default().await;
        let addr = edge.local_addr();
        let room = "chat:stream";
        let _holder = if keep_room_live {
            let (mut h, _) = Client::connected(addr, "holder").await;
            h.subscribe(room).await;
            Some(h)
        } else {
            None
        };
        let (mut publisher, _) = Client::connected(addr, "pub").await;
        publisher.subscribe(room).await;
        let total = 300;
        let publishing = tokio::spawn(async move {
            let mut offsets = Vec::new();
            for n in 0..total {
                offsets.push(
                    publisher.publish(room, json!(n)).await["offset"]
                        .as_u64()
                        .unwrap(),
                );
            }
            offsets
        });

        let mut seen: Vec<u64> = Vec::new();
        let mut position: Option<serde_json::Value> = None;
        while seen.len() < total {
            let (mut sub, _) = Client::connected(addr, "sub").await;
            let mut cmd = json!({"op": "subscribe", "room": room});
            if let Some(p) = &position {
                cmd["recover"] = p.clone();
            }
            let ok = sub.ok(cmd).await;
            let epoch = ok["epoch"].clone();
            if position.is_some() {
                assert_eq!(
                    ok["recovered"],
                    json!(true),
                    "recovery within the window must succeed"
                );
            } else {
                // First round: start from what was published before subscribing.
                let h = sub.ok(json!({"op": "history", "room": room})).await;
                for p in h["publications"].as_array().unwrap() {
                    seen.push(p["offset"].as_u64().unwrap());
                }
                // Those after the subscribe position also arrive as pushes.
                seen.retain(|o| *o <= ok["offset"].as_u64().unwrap());
            }
            for p in ok["publications"].as_array().unwrap() {
                seen.push(p["offset"].as_u64().unwrap());
            }
            // Read a few live pushes, then drop the connection mid-stream.
            for _ in 0..20 {
                if seen.len() >= total {
                    break;
                }
                let (offset, _) = publication(sub.next_push().await);
                seen.push(offset);
            }
            let last = seen
                .last()
                .copied()
                .unwrap_or(ok["offset"].as_u64().unwrap());
            position = Some(json!({"epoch": epoch, "offset": last}));
            drop(sub);
        }
        let published = publishing.await.unwrap();
        assert_eq!(
            seen, published,
            "keep_room_live={keep_room_live}: every publication once, in order"
        );
        edge.shutdown().await;
    }
}
