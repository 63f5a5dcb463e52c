//! Both WebSocket layers (`client.websocket`: the default `lean`, and `tungstenite`) behave the
//! same to a client: fan-out in order to several subscribers while they also run commands, a
//! reply larger than the socket takes at once, and a server-initiated close that delivers what
//! was queued, the `disconnect` push and the close code. The rest of the edge's tests run on
//! the default layer.

mod common;

use plaza_edge::config::WebSocketImpl;
use plaza_proto::{CloseCode, Push};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use common::{Client, config, publication, start};

async fn fan_out_commands_and_close(layer: WebSocketImpl) {
    let mut c = config();
    c.client.websocket = layer;
    c.limits.publish_bytes_per_second_per_user = 0;
    let edge = start(c).await;
    let addr = edge.local_addr();

    let mut subscribers = Vec::new();
    for i in 0..3 {
        let (mut s, _) = Client::connected(addr, &format!("sub{i}")).await;
        s.subscribe("chat:layers").await;
        subscribers.push(s);
    }
    let (mut publisher, _) = Client::connected(addr, "pub").await;
    publisher.subscribe("chat:layers").await;
    // Large publications make the history reply below ~100 KB, more than one write takes
    // on a loopback socket: it must still come back whole.
    let big = "x".repeat(20_000);
    for n in 0..100 {
        let data = if n % 25 == 0 {
            json!({"n": n, "pad": big})
        } else {
            json!({"n": n})
        };
        publisher.publish("chat:layers", data).await;
    }
    for s in &mut subscribers {
        for n in 0..100 {
            let (_, data) = publication(s.next_push().await);
            assert_eq!(
                data["n"],
                json!(n),
                "{layer:?}: every publication, in order"
            );
        }
        // Commands keep being answered on a connection that receives pushes.
        let page = s
            .ok(json!({"op": "history", "room": "chat:layers", "limit": 100}))
            .await;
        let pubs = page["publications"].as_array().expect("publications");
        assert_eq!(pubs.len(), 100, "{layer:?}: the whole history in one reply");
    }

    // A binary frame is refused with a close the client sees whole: its reason pushed
    // first, then the close frame with the same code.
    let victim = &mut subscribers[0];
    victim.send_raw(Message::Binary(vec![1, 2, 3].into())).await;
    let closed = victim.closed().await;
    assert_eq!(
        closed.code,
        Some(CloseCode::BadRequest.code()),
        "{layer:?}: close code"
    );
    let disconnect = closed
        .disconnect
        .expect("a disconnect push before the close");
    assert_eq!(disconnect.code, CloseCode::BadRequest, "{layer:?}");

    // The others are unaffected and see the victim leave nothing behind in their stream.
    publisher
        .publish("chat:layers", json!({"n": "after"}))
        .await;
    for s in &mut subscribers[1..] {
        match s.next_push().await {
            Push::Pub(p) => assert!(p.data.as_str().contains("after"), "{layer:?}"),
            other => panic!("{layer:?}: unexpected {other:?}"),
        }
    }
    edge.shutdown().await;
}

#[tokio::test]
async fn the_lean_layer_fans_out_answers_and_closes_like_tungstenite() {
    fan_out_commands_and_close(WebSocketImpl::Lean).await;
}

#[tokio::test]
async fn the_tungstenite_layer_fans_out_answers_and_closes() {
    fan_out_commands_and_close(WebSocketImpl::Tungstenite).await;
}
