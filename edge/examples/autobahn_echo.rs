//! An echo server for the Autobahn WebSocket conformance cases (`scripts/test-autobahn.sh`).
//!
//! Not part of any shipped binary: Autobahn's fuzzing client needs a server that echoes every
//! message, which Plaza's protocol never does, so the echo lives in this example (built only by
//! `cargo build --examples`) rather than behind a route a production config could enable.
//!
//! `autobahn_echo lean ADDR [--no-deflate]` serves Plaza's own WebSocket layer
//! (`plaza_edge::ws`) the way the edge does: hyper HTTP/1.1, the upgrade handed over as the raw
//! `TcpStream`, replies framed once with [`Prepared`] (compressed when negotiated).
//! `autobahn_echo tungstenite ADDR` serves tokio-tungstenite with the edge's previous settings,
//! the baseline the lean layer replaces.

use std::convert::Infallible;
use std::net::SocketAddr;

use anyhow::{Context, bail};
use axum::body::Body as Empty;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming as Body;
use hyper_util::rt::TokioIo;
use plaza_edge::ws::frame::OpCode;
use plaza_edge::ws::{Event, Limits, Prepared, WsConn, handshake};
use tokio::net::{TcpListener, TcpStream};

/// Autobahn sends messages of up to 16 MiB (cases 9.x); the edge's own limit is a config key.
const MAX: usize = 20 << 20;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (mode, addr) = match &args[..] {
        [_, mode, addr, ..] => (mode.clone(), addr.parse::<SocketAddr>()?),
        _ => bail!("usage: autobahn_echo lean|tungstenite ADDR [--no-deflate]"),
    };
    let deflate = !args.iter().any(|a| a == "--no-deflate");
    let listener = TcpListener::bind(addr).await.context("bind")?;
    eprintln!("autobahn_echo {mode} listening on {addr} (deflate: {deflate})");
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        match mode.as_str() {
            "lean" => tokio::spawn(lean(tcp, deflate)),
            "tungstenite" => tokio::spawn(tungstenite(tcp)),
            _ => bail!("unknown mode {mode}"),
        };
    }
}

async fn lean(tcp: TcpStream, deflate: bool) {
    let service = hyper::service::service_fn(move |req: Request<Body>| async move {
        Ok::<_, Infallible>(upgrade(req, deflate))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    let _ = conn.await;
}

fn upgrade(mut req: Request<Body>, deflate: bool) -> Response<Empty> {
    let accept = match handshake::accept(req.headers(), deflate) {
        Ok(a) => a,
        Err(e) => {
            let mut r = Response::new(Empty::empty());
            *r.status_mut() = StatusCode::BAD_REQUEST;
            eprintln!("refused: {e}");
            return r;
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let negotiated = accept.deflate;
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() else {
            eprintln!("upgraded connection is not a TcpStream");
            return;
        };
        let limits = Limits {
            max_frame: MAX,
            max_message: MAX,
        };
        echo(WsConn::new(
            parts.io.into_inner(),
            &parts.read_buf,
            limits,
            negotiated,
        ))
        .await;
    });
    let mut r = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::UPGRADE, "websocket")
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::SEC_WEBSOCKET_ACCEPT, accept.accept_key);
    if negotiated {
        r = r.header(
            http::header::SEC_WEBSOCKET_EXTENSIONS,
            handshake::DEFLATE_RESPONSE,
        );
    }
    r.body(Empty::empty()).unwrap_or_default()
}

async fn echo(mut conn: WsConn) {
    loop {
        let reply = match conn.recv().await {
            Ok(Some(Event::Text(t))) => Some((OpCode::Text, t)),
            Ok(Some(Event::Binary(b))) => Some((OpCode::Binary, b)),
            Ok(Some(Event::Ping(_) | Event::Pong)) => None,
            Ok(Some(Event::Close(_))) | Ok(None) => break,
            Err(e) => {
                if let Some(code) = e.close_code() {
                    conn.start_close(code, &e.to_string());
                }
                break;
            }
        };
        if let Some((op, data)) = reply {
            let prepared = Prepared::new(op, &data, conn.deflate(), 0);
            conn.queue(prepared.for_client(conn.deflate()).clone());
        }
        if conn.flush().await.is_err() {
            return;
        }
    }
    let _ = conn.shutdown().await;
    // Let the client's close frame (if any) arrive before the socket is dropped.
    while let Ok(Some(_)) = conn.recv().await {}
}

async fn tungstenite(tcp: TcpStream) {
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX))
        .max_frame_size(Some(MAX));
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await else {
        return;
    };
    while let Some(Ok(msg)) = ws.next().await {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            return;
        }
    }
}
