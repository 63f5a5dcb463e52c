//! Both WebSocket layers (`client.websocket`: the default `lean`, and `tungstenite`) behave the
//! same to a client: fan-out in order to several subscribers while they also run commands, a
//! reply larger than the socket takes at once, and a server-initiated close that delivers what
//! was queued, the `disconnect` push and the close code; and a subscriber that stops reading
//! (its socket full, so the lean layer's direct writes from the fan-out stop part-way through
//! a frame and its task takes over) gets every publication whole and in order once it reads
//! again, without holding up the others. The rest of the edge's tests run on the default
//! layer.

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

async fn a_stalled_reader_resumes_whole_and_in_order(layer: WebSocketImpl) {
    let mut c = config();
    c.client.websocket = layer;
    c.limits.publish_bytes_per_second_per_user = 0;
    c.client.outbound_queue_bytes = 64 << 20;
    let edge = start(c).await;
    let addr = edge.local_addr();

    let (mut stalled, _) = Client::connected(addr, "stalled").await;
    stalled.subscribe("chat:stall").await;
    let (mut reader, _) = Client::connected(addr, "reader").await;
    reader.subscribe("chat:stall").await;
    let (mut publisher, _) = Client::connected(addr, "pub").await;
    publisher.subscribe("chat:stall").await;

    // ~5 MB, far more than the stalled client's socket buffers take while it does not read.
    const N: usize = 300;
    let pad = "y".repeat(16_000);
    for n in 0..N {
        publisher
            .publish("chat:stall", json!({"n": n, "pad": pad}))
            .await;
        // The reading subscriber keeps up meanwhile: the stalled one holds nobody up.
        let (_, data) = publication(reader.next_push().await);
        assert_eq!(data["n"], json!(n), "{layer:?}: the reader, in order");
    }
    // Its own command's reply queues behind the publications.
    stalled
        .send_text(r#"{"op":"history","id":7,"room":"chat:stall","limit":1}"#)
        .await;
    for n in 0..N {
        let (_, data) = publication(stalled.next_push().await);
        assert_eq!(
            data["n"],
            json!(n),
            "{layer:?}: every publication, in order"
        );
        assert_eq!(
            data["pad"].as_str().map(str::len),
            Some(16_000),
            "{layer:?}: whole"
        );
    }
    let reply = stalled.reply_to(7).await;
    assert!(reply.result.is_ok(), "{layer:?}: {:?}", reply.result.err());
    edge.shutdown().await;
}

#[tokio::test]
async fn the_lean_layer_resumes_a_stalled_reader_whole_and_in_order() {
    a_stalled_reader_resumes_whole_and_in_order(WebSocketImpl::Lean).await;
}

#[tokio::test]
async fn the_tungstenite_layer_resumes_a_stalled_reader_whole_and_in_order() {
    a_stalled_reader_resumes_whole_and_in_order(WebSocketImpl::Tungstenite).await;
}
