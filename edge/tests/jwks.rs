//! Identity-provider tokens verified against a JWKS: a real edge (or a real `Verifier`) against
//! a real HTTP key-set server (`idp`), including rotation, outages and the refetch rate limit.

mod common;
mod idp;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Client, config, start, token};
use idp::{AUDIENCE, ISSUER, Idp, Key, Mode, claims, forge};
use plaza_edge::auth::{AuthError, Verifier};
use plaza_edge::config::{AuthConfig, EdgeConfig, JwksConfig};
use plaza_proto::{ErrorBody, ErrorCode};
use serde_json::json;

/// The test config with `jwks` identity providers next to the HMAC secret.
fn edge_config(jwks: Vec<JwksConfig>) -> EdgeConfig {
    let mut c = config();
    c.auth.jwks = jwks;
    c
}

/// A verifier for the test config with `jwks` (the edge builds the same one).
fn verifier(jwks: Vec<JwksConfig>) -> Verifier {
    Verifier::new(&edge_config(jwks).auth).unwrap()
}

/// Opens a socket and sends `connect` with `token`; the error body if it is refused.
async fn connect(addr: SocketAddr, token: &str) -> Result<Client, ErrorBody> {
    let mut c = Client::open(addr).await;
    let reply = c.call(json!({"op": "connect", "token": token})).await;
    match reply.result {
        Ok(_) => Ok(c),
        Err(e) => Err(e),
    }
}

fn refusal(r: Result<plaza_edge::auth::Identity, AuthError>) -> String {
    match r {
        Err(AuthError::Invalid(m)) => m,
        other => panic!("expected an Invalid refusal, got {other:?}"),
    }
}

/// Retries `verify` until it succeeds or `within` is over.
async fn eventually_verifies(v: &Verifier, token: &str, within: Duration) {
    let start = Instant::now();
    loop {
        match v.verify(token).await {
            Ok(_) => return,
            Err(e) if start.elapsed() > within => panic!("still refused after {within:?}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test]
async fn an_rs256_token_from_the_identity_provider_connects_to_a_running_edge() {
    let key = Key::rsa_a("a1");
    let idp = Idp::start(&[&key], Mode::Serve).await;
    let edge = start(edge_config(vec![idp.config()])).await;
    let addr = edge.local_addr();

    let mut ann = connect(addr, &key.sign(&claims("ann"))).await.unwrap();
    ann.subscribe("chat:lobby").await;
    let (mut bob, _) = Client::connected(addr, "bob").await; // HMAC still works too
    bob.subscribe("chat:lobby").await;
    ann.publish("chat:lobby", json!({"hi": "from an IdP user"}))
        .await;
    let (_, data) = common::publication(bob.next_push().await);
    assert_eq!(data, json!({"hi": "from an IdP user"}));
    assert_eq!(idp.requests(), 1, "one fetch served startup and the token");
    edge.shutdown().await;
}

#[tokio::test]
async fn after_the_provider_rotates_keys_new_tokens_verify_without_a_restart_and_old_connections_stay()
 {
    let old = Key::rsa_a("2025-old");
    let new = Key::rsa_b("2026-new");
    let idp = Idp::start(&[&old], Mode::Serve).await;
    let edge = start(edge_config(vec![idp.config()])).await;
    let addr = edge.local_addr();
    let mut ann = connect(addr, &old.sign(&claims("ann"))).await.unwrap();
    ann.subscribe("chat:rotation").await;

    idp.publish(&[&new]);
    tokio::time::sleep(idp.config().min_refetch_interval).await;
    let mut bob = connect(addr, &new.sign(&claims("bob"))).await.unwrap();
    bob.subscribe("chat:rotation").await;
    bob.publish("chat:rotation", json!(1)).await;
    let (_, data) = common::publication(ann.next_push().await);
    assert_eq!(
        data,
        json!(1),
        "the connection made with the old key still works"
    );
    ann.publish("chat:rotation", json!(2)).await;

    let refused = connect(addr, &old.sign(&claims("cid")))
        .await
        .err()
        .unwrap();
    assert_eq!(refused.code, ErrorCode::InvalidToken);
    assert!(
        refused.message.contains("unknown signing key"),
        "{refused:?}"
    );
    edge.shutdown().await;
}

#[tokio::test]
async fn es256_eddsa_and_ps256_tokens_verify() {
    let keys = [Key::ec("ec"), Key::ed("ed"), Key::pss("ps")];
    let idp = Idp::start(&keys.iter().collect::<Vec<_>>(), Mode::Serve).await;
    let v = verifier(vec![idp.config()]);
    for key in &keys {
        let id = v.verify(&key.sign(&claims("ann"))).await;
        assert_eq!(id.unwrap().user.as_str(), "ann", "{:?}", key.alg);
    }
    // The JWK pins its algorithm: the PS256 key does not verify RS256 signatures.
    let mut rs = keys[2].clone();
    rs.alg = jsonwebtoken::Algorithm::RS256;
    assert!(refusal(v.verify(&rs.sign(&claims("ann"))).await).contains("does not fit"));
    let edge = start(edge_config(vec![idp.config()])).await;
    connect(edge.local_addr(), &keys[1].sign(&claims("ann")))
        .await
        .unwrap();
    edge.shutdown().await;
}

#[tokio::test]
async fn bad_tokens_are_refused_over_the_socket_with_a_clear_reason() {
    let key = Key::rsa_a("a1");
    let idp = Idp::start(&[&key], Mode::Serve).await;
    let edge = start(edge_config(vec![idp.config()])).await;
    let now = plaza_edge::auth::unix_now();
    let with = |patch: serde_json::Value| {
        let mut c = claims("ann");
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let good = key.sign(&claims("ann"));
    // Load the key set, then let the rate-limit window pass so the unknown kid below refetches.
    connect(edge.local_addr(), &good).await.unwrap();
    tokio::time::sleep(idp.config().min_refetch_interval).await;
    let (head, rest) = good.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            key.sign(&with(json!({"exp": now - 600}))),
            "token expired",
        ),
        (
            "not yet valid",
            key.sign(&with(json!({"nbf": now + 600}))),
            "nbf",
        ),
        (
            "wrong iss",
            key.sign(&with(json!({"iss": "https://evil.test"}))),
            "unknown issuer",
        ),
        (
            "wrong aud",
            key.sign(&with(json!({"aud": "someone-else"}))),
            "wrong audience",
        ),
        ("no aud", key.sign(&with(json!({"aud": null}))), "aud"),
        (
            "unknown kid",
            key.sign_as("nope", &claims("ann")),
            "unknown signing key",
        ),
        (
            "wrong signature",
            Key::rsa_b("a1").sign(&claims("ann")),
            "bad signature",
        ),
        (
            "alg none",
            forge(
                r#"{"alg":"none","kid":"a1"}"#,
                &claims("ann").to_string(),
                "",
            ),
            "alg `none`",
        ),
        (
            "HS256 keyed with the RSA public key",
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                &claims("ann"),
                &jsonwebtoken::EncodingKey::from_secret(idp::RSA_A_PUBLIC_PEM),
            )
            .unwrap(),
            "algorithm confusion",
        ),
        (
            "truncated",
            good[..good.len() - 21].to_owned(),
            "bad signature|malformed token",
        ),
        (
            "cut at a dot",
            good[..good.rfind('.').unwrap()].to_owned(),
            "three",
        ),
        (
            "100 KB",
            format!("{good}{}", "A".repeat(100_000)),
            "auth.max_token_bytes",
        ),
        (
            "claims not JSON",
            format!("{head}.{}.{signature}", URL_SAFE_NO_PAD.encode("not json")),
            "malformed claims",
        ),
        (
            "capability claim of the wrong shape",
            key.sign(&with(json!({"plaza": {"rooms": ["chat:*"]}}))),
            "claim `plaza`",
        ),
    ];
    for (what, token, reason) in cases {
        let e = connect(edge.local_addr(), &token).await.err();
        let e = e.unwrap_or_else(|| panic!("{what}: accepted"));
        let expected = if what == "expired" {
            ErrorCode::TokenExpired
        } else {
            ErrorCode::InvalidToken
        };
        assert_eq!(e.code, expected, "{what}: {e:?}");
        let named = reason.split('|').any(|r| e.message.contains(r));
        assert!(named, "{what}: {:?} does not say {reason:?}", e.message);
        assert!(!e.message.contains(&token), "{what}: the token is echoed");
    }
    assert_eq!(
        idp.requests(),
        1 + 1,
        "startup, then one refetch for the unknown kid"
    );
    edge.shutdown().await;
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_at_most_once_per_min_refetch_interval() {
    let key = Key::ed("real");
    let idp = Idp::start(&[&key], Mode::Serve).await;
    let config = JwksConfig {
        min_refetch_interval: Duration::from_secs(1),
        ..idp.config()
    };
    let v = verifier(vec![config.clone()]);
    v.verify(&key.sign(&claims("ann"))).await.unwrap();
    assert_eq!(idp.requests(), 1);

    let garbage = |i: usize| {
        forge(
            &format!(r#"{{"alg":"EdDSA","kid":"made-up-{i}"}}"#),
            &claims("ann").to_string(),
            "c2ln",
        )
    };
    let flood = |from: usize| {
        let v = &v;
        futures_util::future::join_all(
            (from..from + 200).map(move |i| async move { v.verify(&garbage(i)).await }),
        )
    };
    tokio::time::sleep(config.min_refetch_interval).await;
    let started = Instant::now();
    for r in flood(0).await {
        assert!(refusal(r).contains("unknown signing key"));
    }
    assert_eq!(
        idp.requests(),
        2,
        "200 concurrent unknown kids share one refetch"
    );
    for r in flood(200).await {
        assert!(refusal(r).contains("unknown signing key"));
    }
    assert!(
        started.elapsed() < config.min_refetch_interval,
        "test too slow to prove it"
    );
    assert_eq!(
        idp.requests(),
        2,
        "inside min_refetch_interval: no fetch at all"
    );
    tokio::time::sleep(config.min_refetch_interval).await;
    for r in flood(400).await {
        assert!(refusal(r).contains("unknown signing key"));
    }
    assert_eq!(idp.requests(), 3, "the next interval allows one more");
    v.verify(&key.sign(&claims("ann"))).await.unwrap();
}

#[tokio::test]
async fn a_provider_down_slow_or_garbled_at_start_fails_tokens_clearly_until_it_recovers() {
    for (mode, reason) in [
        (Mode::Fail, "HTTP status 500"),
        (Mode::Hang, "timed out"),
        (Mode::Garbage, "not a JWKS"),
    ] {
        let key = Key::ec("k");
        let idp = Idp::start(&[&key], mode).await;
        let v = verifier(vec![idp.config()]);
        let token = key.sign(&claims("ann"));
        let m = match v.verify(&token).await {
            Err(AuthError::Unavailable(m)) => m,
            other => panic!("{mode:?}: expected Unavailable, got {other:?}"),
        };
        assert!(
            m.contains("unavailable") && m.contains(reason),
            "{mode:?}: {m}"
        );
        idp.set_mode(Mode::Serve);
        eventually_verifies(&v, &token, Duration::from_secs(3)).await;
    }
}

#[tokio::test]
async fn an_edge_started_while_the_provider_is_down_admits_users_once_it_recovers() {
    let key = Key::rsa_a("k");
    let idp = Idp::start(&[&key], Mode::Fail).await;
    let edge = start(edge_config(vec![idp.config()])).await;
    let token = key.sign(&claims("ann"));
    let e = connect(edge.local_addr(), &token).await.err().unwrap();
    assert!(e.message.contains("unavailable"), "{e:?}");
    assert!(
        e.temporary,
        "a provider outage is not the client's fault: {e:?}"
    );
    idp.set_mode(Mode::Serve);
    let start = Instant::now();
    while connect(edge.local_addr(), &token).await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(3), "never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    edge.shutdown().await;
}

#[tokio::test]
async fn a_provider_failing_mid_flight_leaves_the_last_good_set_in_use() {
    let key = Key::ed("k");
    let idp = Idp::start(&[&key], Mode::Serve).await;
    let mut config = idp.config();
    config.refresh_interval = Duration::from_millis(300);
    let v = verifier(vec![config]);
    let token = key.sign(&claims("ann"));
    v.verify(&token).await.unwrap();
    for mode in [Mode::Fail, Mode::Garbage, Mode::Hang] {
        idp.set_mode(mode);
        let before = idp.requests();
        let start = Instant::now();
        while idp.requests() == before {
            assert!(
                start.elapsed() < Duration::from_secs(3),
                "no background refresh"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        v.verify(&token)
            .await
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
    }
}

#[tokio::test]
async fn a_key_set_file_verifies_tokens_and_is_reread_on_refresh() {
    let (a, b) = (Key::ed("file-a"), Key::ec("file-b"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, idp::jwks(&[&a])).unwrap();
    let file = JwksConfig {
        issuer: ISSUER.into(),
        audience: Some(vec![AUDIENCE.into()]),
        file: Some(path.clone()),
        refresh_interval: Duration::from_millis(200),
        min_refetch_interval: Duration::from_millis(100),
        ..Default::default()
    };
    let edge = start(edge_config(vec![file])).await;
    connect(edge.local_addr(), &a.sign(&claims("ann")))
        .await
        .unwrap();
    std::fs::write(&path, idp::jwks(&[&b])).unwrap();
    let start = Instant::now();
    while connect(edge.local_addr(), &b.sign(&claims("bob")))
        .await
        .is_err()
    {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "file never re-read"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    edge.shutdown().await;
}

#[tokio::test]
async fn hmac_and_two_identity_providers_are_accepted_side_by_side() {
    let (one, two) = (Key::rsa_a("one"), Key::ed("two"));
    let idp_one = Idp::start(&[&one], Mode::Serve).await;
    let idp_two = Idp::start(&[&two], Mode::Serve).await;
    let mut second = idp_two.config();
    second.issuer = "https://second.test".into();
    second.algorithms = vec!["EdDSA".into()];
    let edge = start(edge_config(vec![idp_one.config(), second])).await;
    let addr = edge.local_addr();

    let mut from_two = claims("bea");
    from_two["iss"] = "https://second.test".into();
    connect(addr, &token("ann")).await.unwrap();
    connect(addr, &one.sign(&claims("bob"))).await.unwrap();
    connect(addr, &two.sign(&from_two)).await.unwrap();

    // Each issuer only trusts its own keys and algorithms.
    let e = connect(addr, &two.sign(&claims("eve")))
        .await
        .err()
        .unwrap();
    assert!(e.message.contains("unknown signing key"), "{e:?}");
    let e = connect(addr, &one.sign(&from_two)).await.err().unwrap();
    assert!(e.message.contains("RS256 not accepted"), "{e:?}");
    edge.shutdown().await;
}

#[tokio::test]
async fn an_edge_with_only_identity_providers_needs_no_hmac_secret() {
    let key = Key::rsa_a("k");
    let idp = Idp::start(&[&key], Mode::Serve).await;
    let mut c = edge_config(vec![idp.config()]);
    c.auth.hmac_secret = None;
    let edge = start(c).await;
    connect(edge.local_addr(), &key.sign(&claims("ann")))
        .await
        .unwrap();
    let e = connect(edge.local_addr(), &token("ann"))
        .await
        .err()
        .unwrap();
    assert!(
        e.message.contains("HMAC-signed tokens are not accepted"),
        "{e:?}"
    );
    edge.shutdown().await;
    let none = AuthConfig::default();
    assert!(Verifier::new(&none).is_err());
}

#[tokio::test]
async fn user_prefixes_keep_two_providers_users_with_the_same_sub_apart() {
    let (one, two) = (Key::ec("one"), Key::ec("two"));
    let idp_one = Idp::start(&[&one], Mode::Serve).await;
    let idp_two = Idp::start(&[&two], Mode::Serve).await;
    let mut first = idp_one.config();
    first.user_prefix = Some("one:".into());
    let mut second = idp_two.config();
    second.issuer = "https://second.test".into();
    second.user_prefix = Some("two:".into());
    let v = verifier(vec![first, second]);
    let mut from_two = claims("42");
    from_two["iss"] = "https://second.test".into();
    from_two["plaza"] = json!({"rooms": {"user:{sub}": ["subscribe"]}});
    let a = v.verify(&one.sign(&claims("42"))).await.unwrap();
    let b = v.verify(&two.sign(&from_two)).await.unwrap();
    assert_eq!(a.user.as_str(), "one:42");
    assert_eq!(b.user.as_str(), "two:42");
    let room = |s| plaza_proto::RoomName::new(s).unwrap();
    use plaza_edge::auth::Capability::Subscribe;
    assert!(
        b.grants.token_allows(&room("user:two:42"), Subscribe),
        "{{sub}} is the prefixed id"
    );
    assert!(!b.grants.token_allows(&room("user:one:42"), Subscribe));
}
