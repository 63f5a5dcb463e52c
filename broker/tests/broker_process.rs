//! Three real `plaza-broker` processes on 127.0.0.1: certificates from the binary's `cert`
//! subcommand, bootstrap from a static peer list, leader killed with SIGKILL, a new leader
//! elected, the killed node restarted from its data dir rejoining and catching up, and a fourth
//! node added as a learner and promoted through `POST /admin/members`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_plaza-broker");
const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// A free port of each kind on loopback (bound, read, released: a tiny race, fine for tests).
fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn free_tcp() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// One broker process; killed (SIGKILL) on drop, so a panicking test leaves none behind.
struct Broker {
    id: u64,
    http: SocketAddr,
    child: Option<Child>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Broker {
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Cluster {
    dir: PathBuf,
    raft: Vec<SocketAddr>,
    http: Vec<SocketAddr>,
}

impl Cluster {
    /// The three initial voters (a fourth slot is for the node added later).
    fn peers(&self) -> String {
        self.raft[..3]
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn start(&self, id: u64) -> Broker {
        let i = (id - 1) as usize;
        let certs = self.dir.join("certs");
        let name = format!("broker-{id}");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))
            .unwrap();
        let child = Command::new(BIN)
            .arg("run")
            .args(["--node-id", &id.to_string()])
            .args(["--raft-listen", &self.raft[i].to_string()])
            .args(["--http-listen", &self.http[i].to_string()])
            .arg("--data-dir")
            .arg(self.dir.join(format!("data-{id}")))
            .args(["--peers", &self.peers()])
            .arg("--tls-ca")
            .arg(certs.join("ca.pem"))
            .arg("--tls-cert")
            .arg(certs.join(format!("node-{name}.pem")))
            .arg("--tls-key")
            .arg(certs.join(format!("node-{name}.key")))
            .env("PLAZA_LOG", "info")
            .env("PLAZA_BROKER_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Broker {
            id,
            http: self.http[i],
            child: Some(child),
        }
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for id in 1..=4 {
            let path = self.dir.join(format!("broker-{id}.log"));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!("--- broker-{id} (last lines, newest first)\n"));
            for line in tail {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

/// `GET path` over plain HTTP/1.0; `None` if the node does not answer.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    request(addr, &format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n"))
}

/// `POST /admin/members` with `body` and `token`.
fn admin(addr: SocketAddr, token: &str, body: &str) -> (u16, String) {
    let req = format!(
        "POST /admin/members HTTP/1.0\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    request(addr, &req).expect("admin endpoint did not answer")
}

fn request(addr: SocketAddr, req: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream.write_all(req.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

fn status(b: &Broker) -> Option<Value> {
    let (code, body) = get(b.http, "/status")?;
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}

/// Polls until `check` returns `Some` or `timeout` passes.
fn wait_for<T>(
    cluster: &Cluster,
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {timeout:?}\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The leader every given node reports, once they all agree on one.
fn agreed_leader(brokers: &[&Broker]) -> Option<u64> {
    let leaders: Vec<Option<u64>> = brokers
        .iter()
        .map(|b| status(b).and_then(|s| s["leader"].as_u64()))
        .collect();
    let first = leaders[0]?;
    let in_group = brokers.iter().any(|b| b.id == first);
    (in_group && leaders.iter().all(|l| *l == Some(first))).then_some(first)
}

fn applied(b: &Broker) -> u64 {
    status(b)
        .and_then(|s| s["last_applied"].as_u64())
        .unwrap_or(0)
}

fn generate_certs(dir: &Path) {
    let out = Command::new(BIN)
        .args(["cert", "--out"])
        .arg(dir)
        .args([
            "--brokers",
            "broker-1,broker-2,broker-3,broker-4",
            "--edges",
            "edge-1",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for file in ["ca.pem", "ca.key", "node-broker-2.pem", "node-broker-2.key"] {
        assert!(dir.join(file).exists(), "{file} missing");
    }
}

#[test]
fn broker_processes_elect_survive_a_leader_kill_rejoin_after_restart_and_admit_a_fourth() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    generate_certs(&tmp.path().join("certs"));
    let cluster = Cluster {
        dir: tmp.path().to_path_buf(),
        raft: (0..4).map(|_| free_udp()).collect(),
        http: (0..4).map(|_| free_tcp()).collect(),
    };
    let mut brokers: Vec<Broker> = (1..=3).map(|id| cluster.start(id)).collect();

    // Bootstrap: node 1 initializes; all three agree on a leader and list three voters.
    let all: Vec<&Broker> = brokers.iter().collect();
    let leader = wait_for(
        &cluster,
        "a leader all agree on",
        Duration::from_secs(15),
        || agreed_leader(&all),
    );
    let s = status(&brokers[0]).unwrap();
    assert_eq!(s["voters"], serde_json::json!([1, 2, 3]), "{s}");
    for b in &brokers {
        let (code, body) = get(b.http, "/readyz").unwrap();
        assert_eq!(code, 200, "{body}");
        assert_eq!(get(b.http, "/healthz").unwrap().0, 200);
    }
    let (code, metrics) = get(brokers[0].http, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(metrics.contains("plaza_broker_term"), "{metrics}");
    assert!(metrics.contains("plaza_broker_commit_index"), "{metrics}");

    // Kill -9 the leader: the two survivors elect another within a few seconds.
    let applied_before_kill = applied(&brokers[(leader - 1) as usize]);
    let killed_at = Instant::now();
    brokers[(leader - 1) as usize].kill();
    let survivors: Vec<&Broker> = brokers.iter().filter(|b| b.id != leader).collect();
    let new_leader = wait_for(&cluster, "a new leader", Duration::from_secs(5), || {
        agreed_leader(&survivors).filter(|l| *l != leader)
    });
    let failover = killed_at.elapsed();

    // The leader's ticks keep committing entries; let a few land without the dead node.
    let target = applied(survivors[0]).max(applied_before_kill) + 3;
    wait_for(
        &cluster,
        "progress without the dead node",
        Duration::from_secs(10),
        || (survivors.iter().all(|b| applied(b) >= target)).then_some(()),
    );

    // Restart it with its data dir: it follows the new leader and catches up.
    // Caught up: it applied everything the leader had applied when it came back (a fixed
    // mark; the leader's ticks keep moving its own index, which a loaded machine's follower
    // may trail by more than a few entries at any one moment).
    let leader_applied = applied(&brokers[(new_leader - 1) as usize]).max(target);
    brokers[(leader - 1) as usize] = cluster.start(leader);
    let restarted = &brokers[(leader - 1) as usize];
    let caught_up = wait_for(
        &cluster,
        "the restarted node to rejoin",
        Duration::from_secs(30),
        || {
            // Following a leader (the new one, or — when the returning node's stale vote set
            // off one more election on a loaded machine — whoever won that) and caught up.
            let s = status(restarted)?;
            (s["leader"].as_u64().is_some() && s["last_applied"].as_u64()? >= leader_applied)
                .then_some(s)
        },
    );
    assert_eq!(caught_up["voters"], serde_json::json!([1, 2, 3]));
    let rejoined_at = caught_up["last_applied"].clone();
    let failed_over_to = new_leader;
    let new_leader = caught_up["leader"].as_u64().unwrap_or(new_leader);

    // Node 4 is in no peer list: it waits until the leader adds it.
    brokers.push(cluster.start(4));
    let leader_http = cluster.http[(new_leader - 1) as usize];
    let follower_http = cluster.http[(leader - 1) as usize];
    let add = format!(
        r#"{{"action":"add_learner","id":4,"addr":"{}"}}"#,
        cluster.raft[3]
    );
    assert_eq!(admin(leader_http, "wrong-token-0123456789", &add).0, 401);
    let (code, body) = admin(follower_http, ADMIN_TOKEN, &add);
    assert_eq!(code, 421, "{body}");
    assert!(body.contains(&format!("\"leader\":{new_leader}")), "{body}");
    let (code, body) = admin(leader_http, ADMIN_TOKEN, &add);
    assert_eq!(code, 200, "{body}");
    let fourth = &brokers[3];
    wait_for(
        &cluster,
        "the learner to catch up",
        Duration::from_secs(10),
        || {
            let s = status(fourth)?;
            (s["leader"].as_u64() == Some(new_leader) && s["last_applied"].as_u64()? > 0)
                .then_some(())
        },
    );
    let (code, body) = admin(leader_http, ADMIN_TOKEN, r#"{"action":"promote","id":4}"#);
    assert_eq!(code, 200, "{body}");
    let s = wait_for(
        &cluster,
        "four voters everywhere",
        Duration::from_secs(10),
        || {
            brokers
                .iter()
                .map(status)
                .collect::<Option<Vec<_>>>()
                .filter(|all| {
                    all.iter()
                        .all(|s| s["voters"] == serde_json::json!([1, 2, 3, 4]))
                })
        },
    );
    assert_eq!(s[3]["leader"].as_u64(), Some(new_leader));
    println!(
        "leader {leader} killed: node {failed_over_to} elected after {failover:?}; \
         node {leader} rejoined at index {rejoined_at} (leader then: {new_leader}); node 4 \
         promoted; whole test {:?}",
        started.elapsed()
    );
}

#[test]
fn a_bad_config_exits_with_64_and_names_the_key() {
    let out = Command::new(BIN)
        .args(["run", "--node-id", "1", "--in-memory"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tls.ca"), "{stderr}");

    let out = Command::new(BIN)
        .args(["--node-id", "1", "--in-memory", "--peers", "1=127.0.0.1"])
        .args(["--tls-ca", "a", "--tls-cert", "b", "--tls-key", "c"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("config error: peers[0].addr:"), "{stderr}");

    // Unreadable TLS files are a configuration error too.
    let out = Command::new(BIN)
        .args([
            "--node-id",
            "1",
            "--in-memory",
            "--raft-listen",
            "127.0.0.1:0",
        ])
        .args(["--http-listen", "127.0.0.1:0"])
        .args([
            "--tls-ca",
            "/nonexistent/ca.pem",
            "--tls-cert",
            "b",
            "--tls-key",
            "c",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/ca.pem"), "{stderr}");
}

#[test]
fn a_broker_refuses_a_certificate_of_another_node_or_role_and_cert_refuses_nodes() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    generate_certs(&certs);
    let check = |id: &str, name: &str| {
        Command::new(BIN)
            .args(["--check-config", "--in-memory", "--node-id", id])
            .arg("--tls-ca")
            .arg(certs.join("ca.pem"))
            .arg("--tls-cert")
            .arg(certs.join(format!("node-{name}.pem")))
            .arg("--tls-key")
            .arg(certs.join(format!("node-{name}.key")))
            .output()
            .unwrap()
    };
    let ok = check("2", "broker-2");
    assert!(ok.status.success(), "{ok:?}");
    for (id, name, expect) in [("1", "broker-2", "broker 2"), ("1", "edge-1", "edge")] {
        let out = check(id, name);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{name} as node {id}: {stderr}");
        assert!(
            stderr.contains(expect) && stderr.contains("not of broker 1"),
            "{stderr}"
        );
    }
    // The old form, which issued certificates without roles, is refused with the new one.
    let out = Command::new(BIN)
        .args(["cert", "--out"])
        .arg(tmp.path().join("old"))
        .args(["--nodes", "broker-1,edge"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("--brokers") && stderr.contains("--edges"),
        "{stderr}"
    );
}

#[test]
fn a_lone_node_named_by_its_ordinal_leads_itself_and_stops_cleanly_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    generate_certs(&certs);
    let cluster = Cluster {
        dir: tmp.path().to_path_buf(),
        raft: vec![free_udp()],
        http: vec![free_tcp()],
    };
    let log = tmp.path().join("broker-1.log");
    let child = Command::new(BIN)
        .arg("--node-id-from-hostname")
        .env("HOSTNAME", "plaza-broker-0")
        .args(["--in-memory", "--log-format", "json"])
        .args(["--raft-listen", &cluster.raft[0].to_string()])
        .args(["--http-listen", &cluster.http[0].to_string()])
        .arg("--tls-ca")
        .arg(certs.join("ca.pem"))
        .arg("--tls-cert")
        .arg(certs.join("node-broker-1.pem"))
        .arg("--tls-key")
        .arg(certs.join("node-broker-1.key"))
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut broker = Broker {
        id: 1,
        http: cluster.http[0],
        child: Some(child),
    };
    wait_for(
        &cluster,
        "node 1 to lead itself",
        Duration::from_secs(10),
        || {
            let s = status(&broker)?;
            (s["id"] == 1 && s["leader"] == 1 && s["state"] == "Leader").then_some(())
        },
    );

    let mut child = broker.child.take().unwrap();
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("no exit within 10 s of SIGTERM\n{}", cluster.logs());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}\n{}", cluster.logs());
    let text = std::fs::read_to_string(&log).unwrap();
    let messages: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|l| l["fields"]["message"].clone())
        .collect();
    assert!(messages.contains(&"shutting down".into()), "{text}");
    assert!(messages.contains(&"stopped".into()), "{text}");
}
