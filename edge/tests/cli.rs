//! The `plaza-edge` binary: config errors, `--dev`, and the `token` subcommand.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_plaza-edge");

fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn bad_config_exits_64_naming_the_key() {
    let out = run(&["--listen", "127.0.0.1:0"], &[]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth.hmac_secret"));

    let secret = (
        "PLAZA_AUTH__HMAC_SECRET",
        "0123456789abcdef0123456789abcdef",
    );
    let out = run(&["--listen", "nowhere"], &[secret]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("listen"),
        "{:?}",
        out
    );

    let out = run(
        &["--listen", "127.0.0.1:0"],
        &[secret, ("PLAZA_CLIENT__IDLE_TIMEOUT", "1s")],
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("client.idle_timeout"));

    let out = run(
        &["--listen", "127.0.0.1:0", "--backend", "cluster"],
        &[secret],
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("broker.brokers"),
        "{out:?}"
    );
    let out = run(
        &[
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "cluster",
            "--brokers",
            "127.0.0.1:7001",
        ],
        &[secret],
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("broker.tls.ca"),
        "{out:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("edge.toml");
    std::fs::write(&file, "[client]\nmax_rooms = \"many\"\n").unwrap();
    let out = run(&["--config", file.to_str().unwrap()], &[secret]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("client.max_rooms"),
        "{out:?}"
    );
}

#[tokio::test]
async fn the_token_subcommand_mints_tokens_the_edge_accepts() {
    let secret = "0123456789abcdef0123456789abcdef";
    let out = run(
        &[
            "token",
            "--secret",
            secret,
            "--user",
            "ann",
            "--room",
            "chat:*",
            "--room",
            "news=subscribe",
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let auth = plaza_edge::config::AuthConfig::default();
    let id = plaza_edge::auth::Verifier::hmac(secret.as_bytes(), &auth)
        .verify(&token)
        .await
        .unwrap();
    assert_eq!(id.user.as_str(), "ann");
    let room = |s| plaza_proto::RoomName::new(s).unwrap();
    use plaza_edge::auth::Capability::*;
    assert!(id.grants.token_allows(&room("chat:x"), Publish));
    assert!(id.grants.token_allows(&room("news"), Subscribe));
    assert!(!id.grants.token_allows(&room("news"), Publish));

    let out = run(&["token", "--secret", "short", "--user", "ann"], &[]);
    assert_eq!(out.status.code(), Some(64));
}

#[tokio::test]
async fn dev_mode_serves_the_demo_page_tokens_and_websocket() {
    let mut child = tokio::process::Command::new(BIN)
        .args(["--dev", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = async move {
        use tokio::io::AsyncBufReadExt;
        let mut reader = tokio::io::BufReader::new(stdout).lines();
        let mut lines = Vec::new();
        while lines.len() < 6 {
            match reader.next_line().await.unwrap() {
                Some(l) => lines.push(l),
                None => break,
            }
        }
        lines
    };
    let lines = tokio::time::timeout(Duration::from_secs(20), lines)
        .await
        .unwrap();
    let url = lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("demo page:"))
        .expect("demo url")
        .trim()
        .to_owned();
    let addr: std::net::SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let token = lines
        .iter()
        .find(|l| l.trim_start().starts_with("eyJ"))
        .expect("dev token")
        .trim()
        .to_owned();

    let (status, page) = common::http_get(addr, "/").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("<html") || page.contains("<!doctype"),
        "demo page"
    );
    let (status, body) = common::http_get(addr, "/dev/token?user=bob").await;
    assert_eq!(status, 200);
    let bob: String = {
        let start = body.find('{').unwrap();
        let v: serde_json::Value =
            serde_json::from_str(body[start..].lines().next().unwrap()).unwrap();
        v["token"].as_str().unwrap().to_owned()
    };
    assert_eq!(common::http_get(addr, "/dev/token").await.0, 400);

    let mut dev = common::Client::open(addr).await;
    dev.connect(&token).await;
    dev.ok(serde_json::json!({"op": "subscribe", "room": "chat:lobby", "presence": true}))
        .await;
    let _own = dev.next_push().await;
    let mut b = common::Client::open(addr).await;
    b.connect(&bob).await;
    b.subscribe("chat:lobby").await;
    let plaza_proto::Push::Join(j) = dev.next_push().await else {
        panic!("join")
    };
    assert_eq!(j.member.user.as_str(), "bob");
    b.publish("chat:lobby", serde_json::json!({"text": "hello"}))
        .await;
    assert_eq!(
        common::publication(dev.next_push().await).1,
        serde_json::json!({"text": "hello"})
    );

    // SIGTERM drains and exits cleanly.
    let pid = child.id().unwrap().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}
