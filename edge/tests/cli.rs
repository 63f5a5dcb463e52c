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

/// Finding 11 of the hostile-client review: an identity provider without `audience` used to be
/// accepted with a warning, so tokens the provider minted for any other application worked here.
#[test]
fn a_jwks_provider_without_an_audience_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, r#"{"keys": []}"#).unwrap();
    let provider = format!(
        "[[auth.jwks]]\nissuer = \"https://idp.example\"\nfile = {:?}\n",
        jwks.display().to_string()
    );
    let file = dir.path().join("edge.toml");
    for (config, says) in [
        (provider.clone(), "auth.jwks[0].audience"),
        (format!("{provider}audience = []\n"), "at least one"),
    ] {
        std::fs::write(&file, config).unwrap();
        let out = run(
            &[
                "--config",
                file.to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ],
            &[],
        );
        assert_eq!(out.status.code(), Some(64), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{out:?}"
        );
    }
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

/// A token from `/dev/token?user=NAME`.
async fn dev_token(addr: std::net::SocketAddr, user: &str) -> String {
    let (status, body) = common::http_get(addr, &format!("/dev/token?user={user}")).await;
    assert_eq!(status, 200, "{body}");
    let start = body.find('{').unwrap();
    let v: serde_json::Value = serde_json::from_str(body[start..].lines().next().unwrap()).unwrap();
    v["token"].as_str().unwrap().to_owned()
}

/// Starts `plaza-edge` with `args` and `env`; returns the child and the address from its
/// `--dev` banner.
async fn start_dev(
    args: &[&str],
    env: &[(&str, &str)],
) -> (tokio::process::Child, std::net::SocketAddr) {
    let mut command = tokio::process::Command::new(BIN);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let url = async move {
        use tokio::io::AsyncBufReadExt;
        let mut reader = tokio::io::BufReader::new(stdout).lines();
        while let Some(l) = reader.next_line().await.unwrap() {
            if let Some(url) = l.trim().strip_prefix("demo page:") {
                return url.trim().to_owned();
            }
        }
        panic!("no dev banner");
    };
    let url = tokio::time::timeout(Duration::from_secs(20), url)
        .await
        .unwrap();
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    (child, addr)
}

/// Hostile input, finding 3: dev mode was an ordinary setting, so `PLAZA_DEV=true` (or
/// `dev = true` in a file, or the chart's `edge.config.dev`) on a production edge served
/// `/dev/token?user=<anyone>`. It is the `--dev` flag only now: every other way is refused with
/// exit code 64 before anything listens.
#[test]
fn dev_mode_cannot_be_switched_on_by_the_environment_or_a_config_file() {
    let secret = (
        "PLAZA_AUTH__HMAC_SECRET",
        "0123456789abcdef0123456789abcdef",
    );
    for value in ["true", "1", "false"] {
        let out = run(
            &["--listen", "127.0.0.1:0"],
            &[secret, ("PLAZA_DEV", value)],
        );
        assert_eq!(out.status.code(), Some(64), "PLAZA_DEV={value}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--dev command-line flag only"),
            "{out:?}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plaza.toml");
    std::fs::write(&file, "dev = true\n").unwrap();
    let out = run(
        &[
            "--listen",
            "127.0.0.1:0",
            "--config",
            file.to_str().unwrap(),
        ],
        &[secret],
    );
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dev command-line flag only"));
}

/// Hostile input, finding 3: `--dev` signed its tokens with the configured production
/// `hmac_secret`, so a dev token worked on every edge sharing that secret. Dev tokens are now
/// signed with a key made at start: the configured secret does not verify them (it still
/// verifies the application's own tokens), and another `--dev` process does not accept them.
#[tokio::test]
async fn dev_tokens_are_signed_with_a_fresh_dev_only_key_never_the_configured_secret() {
    let secret = "0123456789abcdef0123456789abcdef";
    let env = [("PLAZA_AUTH__HMAC_SECRET", secret)];
    let (mut one, a) = start_dev(&["--dev", "--listen", "127.0.0.1:0"], &env).await;
    let (mut two, b) = start_dev(&["--dev", "--listen", "127.0.0.1:0"], &env).await;
    let token = dev_token(a, "mallory").await;
    let auth = plaza_edge::config::AuthConfig::default();
    let refused = plaza_edge::auth::Verifier::hmac(secret.as_bytes(), &auth)
        .verify(&token)
        .await;
    assert!(
        refused.is_err(),
        "a dev token verified with the configured secret"
    );

    // It works on the edge that made it, not on another one with the same configured secret,
    // while the application's own tokens (signed with that secret) work on both.
    let mut here = common::Client::open(a).await;
    here.connect(&token).await;
    let mut there = common::Client::open(b).await;
    let e = there
        .err(serde_json::json!({"op": "connect", "token": token}))
        .await;
    assert_eq!(e.code, plaza_proto::ErrorCode::InvalidToken, "{e:?}");
    for addr in [a, b] {
        let app = plaza_edge::auth::mint(
            secret.as_bytes(),
            "plaza",
            &plaza_edge::dev::dev_token_spec("app-user"),
        )
        .unwrap();
        common::Client::open(addr).await.connect(&app).await;
    }
    one.kill().await.unwrap();
    two.kill().await.unwrap();
}

/// Hostile input, finding 3: `--dev` listens on loopback only unless `--dev-public` says
/// otherwise (then it warns on stderr).
#[test]
fn dev_mode_refuses_a_non_loopback_address_without_dev_public() {
    let out = run(&["--dev", "--listen", "0.0.0.0:0"], &[]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--dev-public"), "{stderr}");
    let out = run(&["--dev-public", "--listen", "127.0.0.1:0"], &[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "--dev-public needs --dev: {out:?}"
    );
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
        while lines.len() < 4 {
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
    assert!(
        !lines.iter().any(|l| l.contains("eyJ")),
        "the banner prints no token: {lines:?}"
    );

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
    let token = dev_token(addr, "dev").await;

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
