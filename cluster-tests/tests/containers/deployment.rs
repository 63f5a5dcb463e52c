//! The deployment under test: the compose project's containers, the front ends, the brokers.

use super::*;

pub(crate) fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: these tests run from scripts/test-containers.sh")
    })
}

pub(crate) fn project() -> String {
    env("PLAZA_CT_PROJECT")
}

pub(crate) fn secret() -> String {
    std::fs::read_to_string(env("PLAZA_CT_SECRET_FILE"))
        .expect("read the secret file")
        .trim()
        .to_owned()
}

/// A TLS front end (nginx or Caddy) and the CA its certificate comes from.
#[derive(Clone, Debug)]
pub(crate) struct Frontend {
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
    pub(crate) ca: PathBuf,
}

pub(crate) fn frontends() -> Vec<Frontend> {
    let list: Vec<Frontend> = env("PLAZA_CT_FRONTENDS")
        .split_whitespace()
        .map(|item| {
            let mut parts = item.splitn(3, '@');
            let name = parts.next().expect("name").to_owned();
            let addr = parts.next().expect("address").parse().expect("ip:port");
            let ca = PathBuf::from(parts.next().expect("CA file"));
            Frontend { name, addr, ca }
        })
        .collect();
    assert!(
        list.len() >= 2,
        "expected nginx and Caddy in PLAZA_CT_FRONTENDS"
    );
    list
}

/// Runs podman; panics with its output unless it succeeds.
pub(crate) fn podman(args: &[&str]) -> String {
    let output = Command::new("podman")
        .args(args)
        .output()
        .expect("run podman");
    assert!(
        output.status.success(),
        "podman {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The containers of compose service `service`, by name.
pub(crate) fn containers(service: &str) -> Vec<String> {
    let out = podman(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=com.docker.compose.project={}", project()),
        "--filter",
        &format!("label=com.docker.compose.service={service}"),
        "--format",
        "{{.Names}}",
    ]);
    let mut names: Vec<String> = out.lines().map(str::to_owned).collect();
    names.sort();
    assert!(!names.is_empty(), "no container of service {service}");
    names
}

pub(crate) fn running(container: &str) -> bool {
    podman(&["inspect", "--format", "{{.State.Running}}", container]).trim() == "true"
}

/// Waits until `podman healthcheck run` passes for `container`.
pub(crate) fn wait_healthy(container: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let ok = Command::new("podman")
            .args(["healthcheck", "run", container])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{container} not healthy within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// After a `podman kill`: the restart policy brings the container back; if the engine does
/// not (Podman restarts only containers that exited on their own), the test starts it, as an
/// operator would. Returns whether the policy restarted it.
pub(crate) fn bring_back(container: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if running(container) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    podman(&["start", container]);
    false
}

/// The edge id (the prefix of its client ids) of each running edge container, from the last
/// `plaza-edge listening` line of its log.
pub(crate) fn edge_ids() -> BTreeMap<String, String> {
    let mut ids = BTreeMap::new();
    for container in containers("edge") {
        if !running(&container) {
            continue;
        }
        let output = Command::new("podman")
            .args(["logs", &container])
            .output()
            .expect("podman logs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let id = text
            .lines()
            .filter(|l| l.contains("plaza-edge listening"))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["fields"]["edge"].as_str().map(str::to_owned))
            .next_back();
        if let Some(id) = id {
            ids.insert(id, container);
        }
    }
    ids
}

/// The container an edge client id belongs to (its prefix is the edge id).
pub(crate) fn edge_of(client: &str, ids: &BTreeMap<String, String>) -> Option<String> {
    let prefix = client.split('-').next()?;
    ids.get(prefix).cloned()
}
