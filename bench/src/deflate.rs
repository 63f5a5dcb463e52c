//! `plaza-bench deflate`: permessage-deflate on the wire (issue 20). `suite` connects with
//! tokio-tungstenite, which neither offers nor decodes compressed frames; this subcommand
//! speaks WebSocket itself on raw sockets so it can.
//!
//! ```text
//!   plaza-edge (client.websocket = "lean", client.permessage_deflate = true)
//!   phase "plain":    N subscribers without the extension ─┐  the publisher sends M chat
//!   phase "deflate":  N subscribers offering it            ─┘  messages at R/s per phase
//!   per phase: wire bytes per delivery (frame headers included), edge CPU per delivery,
//!              every payload inflated and checked against what was published
//! ```
//!
//! Both phases run against the same edge process, one after the other, so the CPU ratio is
//! the cost of compression itself: one deflate per publication per edge, the same frame bytes
//! to every subscriber that negotiated it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::procstat;
use crate::servers::{PlazaWs, Proc, Server, edge_config, free_port, sibling, wait_ready};

/// Arguments of `plaza-bench deflate`.
#[derive(clap::Args, Debug)]
pub(crate) struct DeflateArgs {
    /// Subscribers per phase.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Publications per phase (at most a few hundred: the publisher does not read its own
    /// pushes).
    #[arg(long, default_value_t = 100)]
    messages: usize,
    /// Publications per second.
    #[arg(long, default_value_t = 20)]
    rate: u32,
    /// plaza-edge binary (default: next to this executable).
    #[arg(long)]
    edge_bin: Option<PathBuf>,
    /// A JSON file to publish instead of the built-in 1 KiB chat message.
    #[arg(long)]
    payload: Option<PathBuf>,
}

const SECRET: &str = "plaza-bench-deflate-secret-0123456789abcdef";
const ROOM: &str = "bench:deflate";

/// A 1 KiB JSON chat message: a sender, a paragraph of ordinary prose, a few reactions.
fn chat_message() -> Value {
    json!({
        "type": "message",
        "id": "msg_01J9ZK3Q8W5T2X7N4B6C1D0E9F",
        "author": {"id": "user_8f2a61", "name": "Ann Example", "avatar": "https://cdn.example.com/avatars/user_8f2a61.png"},
        "text": "Morning all! Quick update on the launch: the staging deploy went out last night and \
                 the smoke tests passed, but we saw a spike in reconnects from mobile clients around \
                 two o'clock. Dana traced it to the load balancer's idle timeout, which was shorter \
                 than our ping interval, so the fix is a config change rather than code. I'd like to \
                 roll it out to production after lunch unless anyone objects. Also, the design review \
                 for the notification centre moved to Thursday; please add your comments to the doc \
                 before then so we can close the open questions.",
        "sent_at": "2026-12-05T09:14:03.512Z",
        "thread": null,
        "reactions": [{"emoji": "thumbsup", "count": 4}, {"emoji": "eyes", "count": 1}],
        "mentions": ["user_31bc09"],
        "edited": false
    })
}

/// One phase's figures.
struct Phase {
    name: &'static str,
    negotiated: usize,
    deliveries: u64,
    wire_bytes: u64,
    compressed_frames: u64,
    cpu_secs: f64,
    mismatches: u64,
}

/// Runs both phases and prints the table.
pub(crate) async fn deflate(args: &DeflateArgs) -> Result<()> {
    let data = match &args.payload {
        Some(file) => serde_json::from_slice(&std::fs::read(file)?)?,
        None => chat_message(),
    };
    let text = data.to_string();
    let dir = std::env::temp_dir().join(format!("plaza-bench-deflate-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let edge = start_edge(args.edge_bin.as_ref(), &dir, SECRET)?;
    let url = edge.urls[0].clone();
    let pids = edge.pids();
    println!(
        "payload: {} bytes of JSON; {} subscribers, {} publications at {}/s per phase; load {}",
        text.len(),
        args.connections,
        args.messages,
        args.rate,
        procstat::loadavg()
    );
    let mut phases = Vec::new();
    for (name, offer) in [("plain", false), ("deflate", true)] {
        phases.push(phase(args, &url, &pids, &data, name, offer).await?);
    }
    println!(
        "\n| phase | negotiated | deliveries | wire bytes / delivery | compressed frames | edge CPU µs / delivery | payload mismatches |"
    );
    println!("|---|---|---|---|---|---|---|");
    for p in &phases {
        let per = |x: f64| x / p.deliveries.max(1) as f64;
        println!(
            "| {} | {} | {} | {:.0} | {} | {:.2} | {} |",
            p.name,
            p.negotiated,
            p.deliveries,
            per(p.wire_bytes as f64),
            p.compressed_frames,
            per(p.cpu_secs * 1e6),
            p.mismatches
        );
    }
    let (plain, compressed) = (&phases[0], &phases[1]);
    let bytes = |p: &Phase| p.wire_bytes as f64 / p.deliveries.max(1) as f64;
    let cpu = |p: &Phase| p.cpu_secs / p.deliveries.max(1) as f64;
    println!(
        "\nwire bytes: {:.2}x fewer with deflate; edge CPU per delivery: {:.2}x of plain",
        bytes(plain) / bytes(compressed).max(1.0),
        cpu(compressed) / cpu(plain).max(f64::MIN_POSITIVE)
    );
    drop(edge);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn phase(
    args: &DeflateArgs,
    url: &str,
    pids: &[u32],
    data: &Value,
    name: &'static str,
    offer: bool,
) -> Result<Phase> {
    let expected = Arc::new(data.to_string());
    let counters = Arc::new(Counters::default());
    let mut subscribers = Vec::with_capacity(args.connections);
    let mut negotiated = 0;
    for i in 0..args.connections {
        let token = token(&format!("s{i}"))?;
        let mut socket = Socket::open(url, &token, offer).await?;
        negotiated += usize::from(socket.deflate);
        socket.call(json!({"id": 1, "op": "connect"})).await?;
        socket
            .call(json!({"id": 2, "op": "subscribe", "room": ROOM}))
            .await?;
        let (counters, expected) = (Arc::clone(&counters), Arc::clone(&expected));
        subscribers.push(tokio::spawn(async move {
            if let Err(e) = socket.receive(&counters, &expected).await {
                let mut first = counters.error.lock().unwrap_or_else(|e| e.into_inner());
                first.get_or_insert_with(|| format!("{e:#}"));
            }
        }));
    }
    let mut publisher = Socket::open(url, &token("publisher")?, false).await?;
    publisher.call(json!({"id": 1, "op": "connect"})).await?;
    // Publishing needs a subscription; the publisher never reads its own pushes (a few
    // hundred KiB at most sit in socket buffers and its outbound queue).
    publisher
        .call(json!({"id": 3, "op": "subscribe", "room": ROOM}))
        .await?;
    // One publication answered before timing starts: a refused publish stops the run here.
    publisher
        .call(json!({"id": 2, "op": "publish", "room": ROOM, "data": {"warm": true}}))
        .await
        .context("publish")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    counters.counting.store(true, Ordering::Relaxed);
    let before = procstat::sample(pids);
    let wire_before = counters.wire.load(Ordering::Relaxed);
    let every = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let start = Instant::now();
    for n in 0..args.messages {
        let due = start + every * u32::try_from(n).unwrap_or(u32::MAX);
        tokio::time::sleep_until(due.into()).await;
        let id = n + 10;
        publisher
            .send(&json!({"id": id, "op": "publish", "room": ROOM, "data": data}).to_string())
            .await?;
    }
    let want = (args.messages * args.connections) as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while counters.deliveries.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = procstat::sample(pids);
    for s in subscribers {
        s.abort();
    }
    if let Some(why) = counters
        .error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    {
        eprintln!("phase {name}: a subscriber failed: {why}");
    }
    Ok(Phase {
        name,
        negotiated,
        deliveries: counters.deliveries.load(Ordering::Relaxed),
        wire_bytes: counters.wire.load(Ordering::Relaxed) - wire_before,
        compressed_frames: counters.compressed.load(Ordering::Relaxed),
        cpu_secs: after.cpu_secs - before.cpu_secs,
        mismatches: counters.mismatches.load(Ordering::Relaxed),
    })
}

fn token(user: &str) -> Result<String> {
    let claims = json!({
        "sub": user,
        "exp": crate::spec::now_ns() / 1_000_000_000 + 3600,
        "plaza": {"rooms": {"*": ["subscribe", "publish"]}},
    });
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &key,
    )?)
}

#[derive(Default)]
struct Counters {
    /// The first subscriber that failed, and why.
    error: std::sync::Mutex<Option<String>>,
    /// Deliveries are counted once this is set (after the warm-up publication).
    counting: std::sync::atomic::AtomicBool,
    deliveries: AtomicU64,
    wire: AtomicU64,
    compressed: AtomicU64,
    mismatches: AtomicU64,
}

/// A client WebSocket on a raw socket: masked text frames out; unmasked frames in, inflated
/// when RSV1 is set (no context takeover either way, so every message inflates on its own).
struct Socket {
    stream: BufReader<TcpStream>,
    deflate: bool,
}

impl Socket {
    async fn open(url: &str, token: &str, offer: bool) -> Result<Self> {
        let rest = url.strip_prefix("ws://").context("ws:// URL")?;
        let (host, path) = rest.split_once('/').context("URL path")?;
        let stream = TcpStream::connect(host).await?;
        stream.set_nodelay(true)?;
        let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
        let extension = if offer {
            "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; \
             server_no_context_takeover\r\n"
        } else {
            ""
        };
        let request = format!(
            "GET /{path}?token={token} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
             {extension}\r\n"
        );
        let mut stream = BufReader::new(stream);
        stream.get_mut().write_all(request.as_bytes()).await?;
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let byte = stream.read_u8().await?;
            head.push(byte);
            if head.len() > 16 * 1024 {
                bail!("response head too long");
            }
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        if !head.starts_with("http/1.1 101") {
            bail!("handshake refused: {}", head.lines().next().unwrap_or(""));
        }
        let deflate = head.contains("sec-websocket-extensions: permessage-deflate");
        Ok(Self { stream, deflate })
    }

    async fn send(&mut self, text: &str) -> Result<()> {
        self.control(0x1, text.as_bytes()).await
    }

    /// Sends one masked, final frame with `opcode`.
    async fn control(&mut self, opcode: u8, payload: &[u8]) -> Result<()> {
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask: [u8; 4] = rand::random();
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.get_mut().write_all(&frame).await?;
        Ok(())
    }

    /// Sends a command and waits for its reply (pushes before it are dropped).
    async fn call(&mut self, command: Value) -> Result<Value> {
        let id = command["id"].clone();
        self.send(&command.to_string()).await?;
        loop {
            let (message, _, _) = self.next().await?;
            let reply: Value = serde_json::from_slice(&message)?;
            if reply.get("id") == Some(&id) {
                if reply.get("error").is_some() {
                    bail!("{reply}");
                }
                return Ok(reply);
            }
        }
    }

    /// The next data message: its bytes (inflated), wire size, and whether it was compressed.
    async fn next(&mut self) -> Result<(Vec<u8>, u64, bool)> {
        let mut message = Vec::new();
        let mut wire = 0;
        let mut compressed = false;
        loop {
            let b0 = self.stream.read_u8().await?;
            let b1 = self.stream.read_u8().await?;
            let mut len = u64::from(b1 & 0x7f);
            let mut header = 2;
            if len == 126 {
                len = u64::from(self.stream.read_u16().await?);
                header += 2;
            } else if len == 127 {
                len = self.stream.read_u64().await?;
                header += 8;
            }
            if len > 64 * 1024 * 1024 {
                bail!("frame of {len} bytes");
            }
            let mut payload = vec![0; len as usize];
            self.stream.read_exact(&mut payload).await?;
            wire += header + len;
            let opcode = b0 & 0x0f;
            match opcode {
                0x8 => bail!("closed by the server"),
                0x9 => {
                    self.control(0xA, &payload).await?; // pong
                    continue;
                }
                0xA => continue,
                _ => {}
            }
            if opcode != 0 {
                compressed = b0 & 0x40 != 0;
            }
            message.extend_from_slice(&payload);
            if b0 & 0x80 != 0 {
                break;
            }
        }
        if compressed {
            message = inflate(&message)?;
        }
        Ok((message, wire, compressed))
    }

    /// Counts `pub` pushes until the connection ends, checking each payload.
    async fn receive(mut self, counters: &Counters, expected: &str) -> Result<()> {
        let want: Value = serde_json::from_str(expected)?;
        loop {
            let (message, wire, compressed) = self.next().await?;
            counters.wire.fetch_add(wire, Ordering::Relaxed);
            let push: Value = serde_json::from_slice(&message)?;
            if push.get("push").and_then(Value::as_str) != Some("pub") {
                continue;
            }
            if !counters.counting.load(Ordering::Relaxed) {
                continue;
            }
            counters.deliveries.fetch_add(1, Ordering::Relaxed);
            counters
                .compressed
                .fetch_add(u64::from(compressed), Ordering::Relaxed);
            if push.get("data") != Some(&want) {
                counters.mismatches.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Inflates one message compressed with no context takeover (RFC 7692 §7.2.2: the sender
/// dropped the trailing `00 00 ff ff`, which is put back).
fn inflate(compressed: &[u8]) -> Result<Vec<u8>> {
    let mut input = compressed.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut inflater = flate2::Decompress::new(false);
    let mut out = Vec::with_capacity(input.len() * 4);
    while (inflater.total_in() as usize) < input.len() {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(1024));
        }
        let read = inflater.total_in();
        let written = inflater.total_out();
        let rest = &input[read as usize..];
        inflater.decompress_vec(rest, &mut out, flate2::FlushDecompress::Sync)?;
        if inflater.total_in() == read && inflater.total_out() == written {
            bail!("the deflate stream stopped making progress");
        }
        if out.len() > 64 * 1024 * 1024 {
            bail!("inflated past 64 MiB");
        }
    }
    Ok(out)
}

/// One plaza-edge (memory backend) with the lean WebSocket layer and permessage-deflate on,
/// for `plaza-bench deflate`.
fn start_edge(edge_bin: Option<&PathBuf>, dir: &Path, secret: &str) -> Result<Server> {
    let edge_bin = sibling(&edge_bin.cloned(), "plaza-edge")?;
    let config = dir.join("plaza-edge.toml");
    std::fs::write(&config, edge_config(None))?;
    let port = free_port()?;
    let log = dir.join("plaza-edge.log");
    let mut command = Command::new(&edge_bin);
    command
        .arg("--config")
        .arg(&config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("PLAZA_AUTH__HMAC_SECRET", secret)
        .env("PLAZA_CLIENT__WEBSOCKET", PlazaWs::Lean.name())
        .env("PLAZA_CLIENT__PERMESSAGE_DEFLATE", "true")
        .env("PLAZA_LOG", "warn");
    let mut edge = Proc::spawn(&mut command, &log)?;
    wait_ready(port, &mut edge, &log)?;
    Ok(Server {
        procs: vec![edge],
        urls: vec![format!("ws://127.0.0.1:{port}/v1/ws")],
        nats_token: None,
    })
}
