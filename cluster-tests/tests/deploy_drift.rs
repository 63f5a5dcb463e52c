//! The deployment artifacts cannot drift from the binaries: every Plaza container in the
//! compose files (`docker/compose.*.yaml`) and in the Helm chart's rendered manifests (default
//! values and every `helm/examples/*.yaml`) is run as deployed — its command-line flags, its
//! environment and its mounted config files (ConfigMaps, Secrets, bind mounts) — with
//! `--check-config`, which loads and validates everything with the binaries' own loaders.
//!
//! The edge ignores `PLAZA_*` variables whose first part is no config section (other tools'
//! variables may share the environment), so each edge is also run with its config variables
//! folded into its config file, where an unknown key is an error. Brokers read only a few
//! fixed variables; any other `PLAZA_*` variable on a broker is reported.
//!
//! Needs helm and PyYAML (for reading YAML) from `.tools/`: `scripts/test-deploy.sh install`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use plaza_cluster_tests::binary;
use plaza_process::{parse_value, set_path};
use serde_json::Value;

/// Variables the edge reads that are not config keys (the image's probe reads the last).
const EDGE_NON_KEYS: &[&str] = &["PLAZA_LOG", "PLAZA_CONFIG", "PLAZA_HEALTHCHECK_URL"];
/// Every variable the broker reads.
const BROKER_VARS: &[&str] = &[
    "PLAZA_LOG",
    "PLAZA_BROKER_CONFIG",
    "PLAZA_BROKER_ADMIN_TOKEN",
    "PLAZA_HEALTHCHECK_URL",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

fn helm() -> PathBuf {
    let helm = root().join(".tools/helm/helm");
    assert!(
        helm.exists(),
        "{} is missing: run scripts/test-deploy.sh install",
        helm.display()
    );
    helm
}

/// Every YAML document in `text`, as JSON (PyYAML from `.tools/kubernetes-validate`; it
/// resolves anchors and `<<` merge keys as compose does).
fn yaml_docs(text: &str) -> Vec<Value> {
    let pythonpath = root().join(".tools/kubernetes-validate");
    assert!(
        pythonpath.join("yaml").exists(),
        "PyYAML is missing in {}: run scripts/test-deploy.sh install",
        pythonpath.display()
    );
    let script = "import sys, json, yaml\n\
                  docs = [d for d in yaml.safe_load_all(sys.stdin) if d is not None]\n\
                  json.dump(docs, sys.stdout)";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .env("PYTHONPATH", &pythonpath)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python3");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("write YAML");
    }
    let out = child.wait_with_output().expect("python3 output");
    assert!(
        out.status.success(),
        "YAML parse failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).expect("JSON from python") {
        Value::Array(docs) => docs,
        other => panic!("not a list: {other}"),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// One Plaza container as deployed, with its files laid out under a sandbox folder that
/// stands for the container's `/`.
struct Container {
    origin: String,
    binary: &'static str,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Mount points (container paths), rewritten into the sandbox wherever they appear.
    mounts: Vec<String>,
    sandbox: tempfile::TempDir,
}

impl Container {
    fn new(origin: String, command: &str) -> Self {
        let binary = if command.ends_with("plaza-broker") {
            "plaza-broker"
        } else {
            assert!(
                command.ends_with("plaza-edge"),
                "{origin}: unknown command {command}"
            );
            "plaza-edge"
        };
        Self {
            origin,
            binary,
            args: Vec::new(),
            env: Vec::new(),
            mounts: Vec::new(),
            sandbox: tempfile::tempdir().expect("sandbox"),
        }
    }

    /// The sandbox path of container path `path`.
    fn host(&self, path: &str) -> PathBuf {
        self.sandbox.path().join(path.trim_start_matches('/'))
    }

    /// Writes a file at container path `path`.
    fn put(&self, path: &str, contents: &[u8]) {
        let host = self.host(path);
        std::fs::create_dir_all(host.parent().expect("parent")).expect("mkdir");
        std::fs::write(host, contents).expect("write mounted file");
    }

    /// A container path (or a value starting with one) moved into the sandbox.
    fn rewrite(&self, value: &str) -> String {
        let mut mounts: Vec<&String> = self.mounts.iter().collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        // `--flag=/path` and plain `/path`.
        let (prefix, rest) = match value.split_once('=') {
            Some((flag, rest)) if flag.starts_with("--") => (format!("{flag}="), rest),
            _ => (String::new(), value),
        };
        for m in mounts {
            if rest == m.as_str() || rest.starts_with(&format!("{}/", m.trim_end_matches('/'))) {
                return format!("{prefix}{}", self.host(rest).display());
            }
        }
        value.to_owned()
    }

    /// Rewrites the container paths inside every mounted text file (TOML configs name the
    /// TLS files by their container paths).
    fn rewrite_files(&self) {
        let sandbox = self.sandbox.path().display().to_string();
        for entry in walk(self.sandbox.path()) {
            if entry.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let Ok(body) = std::fs::read_to_string(&entry) else {
                continue;
            };
            let mut out = body.clone();
            for m in &self.mounts {
                out = out.replace(&format!("\"{m}"), &format!("\"{sandbox}{m}"));
            }
            if out != body {
                std::fs::write(&entry, out).expect("rewrite config file");
            }
        }
    }

    fn final_args(&self) -> Vec<String> {
        self.args.iter().map(|a| self.rewrite(a)).collect()
    }

    fn final_env(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .map(|(k, v)| (k.clone(), self.rewrite(v)))
            .collect()
    }

    fn run(&self, args: &[String], env: &[(String, String)]) -> Output {
        Command::new(binary(self.binary))
            .args(args)
            .arg("--check-config")
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run the binary")
    }

    /// `--check-config` exactly as deployed.
    fn check(&self) -> Output {
        self.rewrite_files();
        self.run(&self.final_args(), &self.final_env())
    }

    /// Edges: the config variables folded into the config file (an unknown key fails there).
    /// Brokers: every `PLAZA_*` variable is one the broker reads.
    fn check_variables(&self) -> Result<(), String> {
        let env = self.final_env();
        if self.binary == "plaza-broker" {
            for (k, _) in &env {
                if k.starts_with("PLAZA_") && !BROKER_VARS.contains(&k.as_str()) {
                    return Err(format!("plaza-broker reads no variable {k}"));
                }
            }
            return Ok(());
        }
        let mut args = self.final_args();
        let file = match args.iter().position(|a| a == "--config") {
            Some(i) => Some(PathBuf::from(args.remove(i + 1))).inspect(|_| {
                args.remove(i);
            }),
            None => env
                .iter()
                .find(|(k, _)| k == "PLAZA_CONFIG")
                .map(|(_, v)| PathBuf::from(v)),
        };
        let mut table: toml::Table = match &file {
            Some(f) => std::fs::read_to_string(f)
                .expect("read config")
                .parse()
                .expect("config is TOML"),
            None => toml::Table::new(),
        };
        let mut rest = Vec::new();
        for (k, v) in env {
            match k.strip_prefix("PLAZA_") {
                Some(_) if EDGE_NON_KEYS.contains(&k.as_str()) => {}
                Some(key) => {
                    let path: Vec<String> = key.split("__").map(|p| p.to_lowercase()).collect();
                    let value = if path[0] == "auth" {
                        toml::Value::String(v.clone())
                    } else {
                        parse_value(&v)
                    };
                    set_path(&mut table, &path, value).map_err(|e| format!("{k}: {e}"))?;
                    continue;
                }
                None => {}
            }
            if k != "PLAZA_CONFIG" {
                rest.push((k, v));
            }
        }
        let folded = self.sandbox.path().join("folded.toml");
        std::fs::write(&folded, toml::to_string(&table).expect("TOML")).expect("write");
        args.push("--config".into());
        args.push(folded.display().to_string());
        let out = self.run(&args, &rest);
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    fn assert_ok(&self) {
        let out = self.check();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("config ok"),
            "{}: {} {:?} --check-config failed ({}):\n{}",
            self.origin,
            self.binary,
            self.final_args(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        if let Err(e) = self.check_variables() {
            panic!("{}: {e}", self.origin);
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A fresh cluster CA and role certificates from `plaza-broker cert` (broker names, ids by
/// position, and edge names, comma-separated), as `file name → PEM`.
fn certs(brokers: &str, edges: &str) -> BTreeMap<String, Vec<u8>> {
    let dir = tempfile::tempdir().expect("temp");
    let out = Command::new(binary("plaza-broker"))
        .args(["cert", "--out"])
        .arg(dir.path())
        .args(["--brokers", brokers, "--edges", edges])
        .output()
        .expect("plaza-broker cert");
    assert!(out.status.success(), "plaza-broker cert failed");
    walk(dir.path())
        .into_iter()
        .map(|p| {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("read cert"))
        })
        .collect()
}

// ---- compose --------------------------------------------------------------------------------

/// `docker/.env.example`, the values an operator starts from.
fn env_example() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(root().join("docker/.env.example")).expect(".env.example");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`
/// and `$$`.
fn interpolate(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix('{') {
            let end = r.find('}').expect("closing brace");
            let expr = &r[..end];
            rest = &r[end + 1..];
            let name_end = expr
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(expr.len());
            let (name, op) = expr.split_at(name_end);
            let value = vars.get(name).cloned();
            let resolved = match op {
                "" => value.unwrap_or_default(),
                _ if op.starts_with(":-") => {
                    value.filter(|v| !v.is_empty()).unwrap_or(op[2..].into())
                }
                _ if op.starts_with('-') => value.unwrap_or(op[1..].into()),
                _ if op.starts_with(":?") || op.starts_with('?') => value
                    .filter(|v| !v.is_empty() || op.starts_with('?'))
                    .unwrap_or_else(|| panic!("compose would refuse: {name} unset ({op})")),
                _ => panic!("unsupported interpolation ${{{expr}}}"),
            };
            out.push_str(&resolved);
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            out.push_str(&vars.get(&rest[..end]).cloned().unwrap_or_default());
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

/// Every Plaza container of compose file `name` (under `docker/`), with `edit` applied to
/// each service's JSON first (for the negative checks).
fn compose_containers(name: &str, edit: &dyn Fn(&str, &mut Value)) -> Vec<Container> {
    let dir = root().join("docker");
    let docs = yaml_docs(&std::fs::read_to_string(dir.join(name)).expect("compose file"));
    let vars = env_example();
    let certs = certs("broker-1,broker-2,broker-3", "edge");
    let services = docs[0]["services"].as_object().expect("services").clone();
    let mut out = Vec::new();
    for (service, mut spec) in services {
        edit(&service, &mut spec);
        let plaza_image = text(&spec["image"]).contains("PLAZA_IMAGE")
            || spec["build"]["dockerfile"] == "docker/Dockerfile";
        if !plaza_image {
            continue;
        }
        // The image's entrypoint is plaza-edge unless the service names another.
        let command = spec["entrypoint"][0]
            .as_str()
            .unwrap_or("/usr/local/bin/plaza-edge");
        let mut c = Container::new(format!("{name} service {service}"), command);
        for arg in spec["command"].as_array().into_iter().flatten() {
            c.args.push(interpolate(&text(arg), &vars));
        }
        match &spec["environment"] {
            Value::Object(map) => {
                for (k, v) in map {
                    c.env.push((k.clone(), interpolate(&text(v), &vars)));
                }
            }
            Value::Array(list) => {
                for item in list {
                    let item = text(item);
                    let (k, v) = item.split_once('=').unwrap_or((&item, ""));
                    c.env.push((k.to_owned(), interpolate(v, &vars)));
                }
            }
            _ => {}
        }
        let hostname = spec["hostname"].as_str().unwrap_or(&service).to_owned();
        c.env.push(("HOSTNAME".into(), hostname));
        for volume in spec["volumes"].as_array().into_iter().flatten() {
            let volume = text(volume);
            let mut parts = volume.split(':');
            let (src, dst) = (parts.next().expect("source"), parts.next().expect("target"));
            c.mounts.push(dst.to_owned());
            if src == "./certs" {
                for (file, pem) in &certs {
                    c.put(&format!("{dst}/{file}"), pem);
                }
            } else if let Some(rel) = src.strip_prefix("./") {
                let host = dir.join(rel);
                assert!(host.is_file(), "{name}: {service} mounts missing {src}");
                c.put(dst, &std::fs::read(host).expect("read mounted file"));
            } else {
                std::fs::create_dir_all(c.host(dst)).expect("volume dir");
            }
        }
        out.push(c);
    }
    out
}

const COMPOSE_FILES: &[&str] = &["compose.cluster.yaml", "compose.nats.yaml"];

#[test]
fn every_compose_container_passes_check_config_with_its_flags_env_and_files() {
    for file in COMPOSE_FILES {
        let containers = compose_containers(file, &|_, _| {});
        let edges = containers.iter().filter(|c| c.binary == "plaza-edge");
        assert!(edges.count() >= 1, "{file}: no edge service");
        for c in &containers {
            c.assert_ok();
        }
    }
    let brokers = compose_containers("compose.cluster.yaml", &|_, _| {})
        .into_iter()
        .filter(|c| c.binary == "plaza-broker")
        .count();
    assert_eq!(brokers, 3, "compose.cluster.yaml runs three brokers");
}

#[test]
fn misspelled_variables_and_flags_in_compose_services_are_caught() {
    let rename = |from: &'static str, to: &'static str| {
        move |_: &str, spec: &mut Value| {
            if let Some(env) = spec["environment"].as_object_mut()
                && let Some(v) = env.remove(from)
            {
                env.insert(to.into(), v);
            }
        }
    };
    // A key misspelled inside a section: the loader itself refuses it.
    let edge = compose_containers(
        "compose.cluster.yaml",
        &rename("PLAZA_BROKER__BROKERS", "PLAZA_BROKER__BROKER"),
    )
    .into_iter()
    .find(|c| c.binary == "plaza-edge")
    .expect("edge");
    let out = edge.check();
    assert_eq!(out.status.code(), Some(64), "misspelled key accepted");
    assert!(String::from_utf8_lossy(&out.stderr).contains("broker"));

    // A misspelled section: the edge ignores it, the folded check does not.
    let edge = compose_containers(
        "compose.nats.yaml",
        &rename("PLAZA_BACKEND", "PLAZA_BAKEND"),
    )
    .into_iter()
    .find(|c| c.binary == "plaza-edge")
    .expect("edge");
    let _ = edge.check();
    let err = edge
        .check_variables()
        .expect_err("PLAZA_BAKEND must be caught");
    assert!(err.contains("bakend"), "{err}");

    // A misspelled broker flag, and a variable the broker does not read.
    let misspell_flag = |service: &str, spec: &mut Value| {
        if service == "broker-1" {
            spec["command"][0] = Value::String("--node-idd=1".into());
        }
    };
    let broker = compose_containers("compose.cluster.yaml", &misspell_flag)
        .into_iter()
        .find(|c| c.origin.ends_with("broker-1"))
        .expect("broker-1");
    assert!(!broker.check().status.success(), "misspelled flag accepted");
    let broker = compose_containers(
        "compose.cluster.yaml",
        &rename("PLAZA_BROKER_ADMIN_TOKEN", "PLAZA_ADMIN_TOKEN"),
    )
    .into_iter()
    .find(|c| c.binary == "plaza-broker")
    .expect("broker");
    assert!(broker.check_variables().is_err());
}

// ---- helm -----------------------------------------------------------------------------------

/// `helm template` of the chart with `args` (values files, --set).
fn render(args: &[&str]) -> Vec<Value> {
    let out = Command::new(helm())
        .args(["template", "plaza"])
        .arg(root().join("helm/plaza"))
        .args(["--namespace", "plaza"])
        .args(args)
        .output()
        .expect("run helm");
    assert!(
        out.status.success(),
        "helm template {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_docs(&String::from_utf8_lossy(&out.stdout))
}

/// The values files to render: the defaults and every example.
fn values_sets() -> Vec<Vec<String>> {
    let mut sets = vec![Vec::new()];
    let mut examples: Vec<PathBuf> = std::fs::read_dir(root().join("helm/examples"))
        .expect("helm/examples")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    examples.sort();
    assert!(!examples.is_empty(), "no example values files");
    for e in examples {
        sets.push(vec!["-f".into(), e.display().to_string()]);
    }
    sets
}

/// A value for a key of a Secret the chart does not create (the operator's own).
fn placeholder(key: &str) -> Vec<u8> {
    match key {
        "api-keys" => br#"["placeholder-api-key-0123456789"]"#.to_vec(),
        "user" => b"plaza".to_vec(),
        _ => b"placeholder-secret-0123456789abcdefghijklmnop".to_vec(),
    }
}

/// Every Plaza container in the rendered manifests.
fn chart_containers(docs: &[Value], origin: &str) -> Vec<Container> {
    let by_kind = |kind: &str| -> BTreeMap<String, &Value> {
        docs.iter()
            .filter(|d| d["kind"] == kind)
            .map(|d| (text(&d["metadata"]["name"]), d))
            .collect()
    };
    let config_maps = by_kind("ConfigMap");
    let secrets = by_kind("Secret");
    let secret_data = |name: &str, key: &str| -> Option<Vec<u8>> {
        let s = secrets.get(name)?;
        if let Some(v) = s["stringData"][key].as_str() {
            return Some(v.as_bytes().to_vec());
        }
        let b64 = s["data"][key].as_str()?;
        Some(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("base64 secret"),
        )
    };
    // Enough brokers for every values file's replica count, and the edges' certificate.
    let generated_tls = certs(
        "broker-1,broker-2,broker-3,broker-4,broker-5,broker-6,broker-7",
        "plaza-edge",
    );
    let mut out = Vec::new();
    for workload in docs
        .iter()
        .filter(|d| d["kind"] == "Deployment" || d["kind"] == "StatefulSet")
    {
        let name = text(&workload["metadata"]["name"]);
        let pod = &workload["spec"]["template"]["spec"];
        let volumes: BTreeMap<String, &Value> = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| (text(&v["name"]), v))
            .collect();
        for container in pod["containers"].as_array().into_iter().flatten() {
            let Some(command) = container["command"][0].as_str() else {
                continue;
            };
            if !command.contains("plaza-") {
                continue;
            }
            let mut c = Container::new(
                format!(
                    "{origin}: {} {name}/{}",
                    workload["kind"], container["name"]
                ),
                command,
            );
            c.args = container["args"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            let hostname = if workload["kind"] == "StatefulSet" {
                format!("{name}-0")
            } else {
                format!("{name}-5d9c7b6f4-x2k8q")
            };
            c.env.push(("HOSTNAME".into(), hostname));
            for env in container["env"].as_array().into_iter().flatten() {
                let key = text(&env["name"]);
                if let Some(v) = env.get("value") {
                    c.env.push((key, text(v)));
                    continue;
                }
                let r = &env["valueFrom"]["secretKeyRef"];
                assert!(r.is_object(), "{}: env {key} from {env}", c.origin);
                let (secret, item) = (text(&r["name"]), text(&r["key"]));
                let value = match secret_data(&secret, &item) {
                    Some(v) => v,
                    None if secrets.contains_key(&secret) && r["optional"] == true => continue,
                    None => {
                        assert!(
                            !secrets.contains_key(&secret),
                            "{}: rendered Secret {secret} has no key {item}",
                            c.origin
                        );
                        placeholder(&item)
                    }
                };
                c.env
                    .push((key, String::from_utf8(value).expect("UTF-8 secret value")));
            }
            for mount in container["volumeMounts"].as_array().into_iter().flatten() {
                let path = text(&mount["mountPath"]);
                c.mounts.push(path.clone());
                let claims = workload["spec"]["volumeClaimTemplates"].as_array();
                let claimed = claims
                    .into_iter()
                    .flatten()
                    .any(|t| t["metadata"]["name"] == mount["name"]);
                let Some(volume) = volumes.get(&text(&mount["name"])) else {
                    assert!(claimed, "{}: no volume {mount}", c.origin);
                    std::fs::create_dir_all(c.host(&path)).expect("volume dir");
                    continue;
                };
                let files: Vec<(String, String)> = volume
                    .get("configMap")
                    .or_else(|| volume.get("secret"))
                    .and_then(|source| source["items"].as_array())
                    .into_iter()
                    .flatten()
                    .map(|i| (text(&i["key"]), text(&i["path"])))
                    .collect();
                if let Some(cm) = volume.get("configMap") {
                    let map = config_maps
                        .get(&text(&cm["name"]))
                        .unwrap_or_else(|| panic!("{}: ConfigMap {cm} not rendered", c.origin));
                    for (key, file) in &files {
                        let body = map["data"][key]
                            .as_str()
                            .unwrap_or_else(|| panic!("{}: ConfigMap key {key}", c.origin));
                        c.put(&format!("{path}/{file}"), body.as_bytes());
                    }
                } else if let Some(secret) = volume.get("secret") {
                    let secret = text(&secret["secretName"]);
                    for (key, file) in &files {
                        let body = secret_data(&secret, key).unwrap_or_else(|| {
                            assert!(
                                !secrets.contains_key(&secret),
                                "{}: Secret {secret} has no {key}",
                                c.origin
                            );
                            // The operator's TLS Secrets, made as the README says: the
                            // brokers' (broker-<id>.pem/.key) and the edges' (tls.pem/.key).
                            let from = match key.as_str() {
                                "tls.pem" => "node-plaza-edge.pem".to_owned(),
                                "tls.key" => "node-plaza-edge.key".to_owned(),
                                broker if broker.starts_with("broker-") => format!("node-{broker}"),
                                other => other.to_owned(),
                            };
                            generated_tls
                                .get(&from)
                                .cloned()
                                .unwrap_or_else(|| placeholder(key))
                        });
                        c.put(&format!("{path}/{file}"), &body);
                    }
                } else {
                    std::fs::create_dir_all(c.host(&path)).expect("volume dir");
                }
            }
            out.push(c);
        }
    }
    out
}

#[test]
fn every_chart_container_passes_check_config_for_every_values_file() {
    for set in values_sets() {
        let args: Vec<&str> = set.iter().map(String::as_str).collect();
        let origin = format!("helm template {}", set.join(" "));
        let docs = render(&args);
        let containers = chart_containers(&docs, &origin);
        let edges = containers
            .iter()
            .filter(|c| c.binary == "plaza-edge")
            .count();
        assert_eq!(edges, 1, "{origin}: one edge Deployment");
        let cluster = docs.iter().any(|d| {
            d["kind"] == "StatefulSet" && text(&d["metadata"]["name"]).ends_with("broker")
        });
        let brokers = containers
            .iter()
            .filter(|c| c.binary == "plaza-broker")
            .count();
        assert_eq!(brokers, usize::from(cluster), "{origin}: brokers");
        for c in &containers {
            c.assert_ok();
        }
    }
    // Both backends are covered by the default and example values.
    for backend in ["cluster", "nats"] {
        let covered = values_sets().iter().any(|set| {
            let args: Vec<&str> = set.iter().map(String::as_str).collect();
            render(&args).iter().any(|d| {
                d["kind"] == "ConfigMap"
                    && text(&d["data"]["edge.toml"]).contains(&format!("backend = \"{backend}\""))
            })
        });
        assert!(covered, "no values file renders backend {backend}");
    }
}

#[test]
fn misspelled_chart_values_reach_the_loader_and_are_refused() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--set", "edge.config.client.ping_intervall=25s"],
            "plaza-edge",
        ),
        (&["--set", "rooms.defaults.histroy_size=5"], "plaza-edge"),
        (&["--set", "broker.config.raft.tickk=1s"], "plaza-broker"),
        (
            &[
                "--set",
                "backend=nats",
                "--set",
                "edge.config.nats.reap_evry=1s",
            ],
            "plaza-edge",
        ),
    ];
    for (args, binary) in cases {
        let docs = render(args);
        let containers = chart_containers(&docs, &format!("{args:?}"));
        let c = containers
            .iter()
            .find(|c| c.binary == *binary)
            .expect("the container");
        let out = c.check();
        assert_eq!(
            out.status.code(),
            Some(64),
            "{args:?}: {binary} accepted a misspelled key"
        );
    }
    // And the integer keys survive the chart's TOML rendering (helm's toToml would write
    // `history_size = 100.0`, which the loader refuses).
    let docs = render(&["--set", "rooms.defaults.history_size=7"]);
    for c in chart_containers(&docs, "history_size=7") {
        c.assert_ok();
    }
}

#[test]
fn edges_and_brokers_get_the_same_room_config() {
    let rooms = |body: &str| -> toml::Value {
        let table: toml::Table = body.parse().expect("TOML");
        table.get("rooms").cloned().expect("a [rooms] section")
    };
    let dir = root().join("docker/config");
    let edge = std::fs::read_to_string(dir.join("edge.toml")).expect("edge.toml");
    let broker = std::fs::read_to_string(dir.join("broker.toml")).expect("broker.toml");
    assert_eq!(
        rooms(&edge),
        rooms(&broker),
        "docker/config: [rooms] differ"
    );
    for set in values_sets() {
        let args: Vec<&str> = set.iter().map(String::as_str).collect();
        for doc in render(&args).iter().filter(|d| d["kind"] == "ConfigMap") {
            if let Some(broker) = doc["data"]["broker.toml"].as_str() {
                let edge = doc["data"]["edge.toml"].as_str().expect("edge.toml");
                assert_eq!(rooms(edge), rooms(broker), "{set:?}: [rooms] differ");
            }
        }
    }
}

#[test]
fn the_chart_generated_cluster_certificate_lets_an_edge_attach_to_a_broker() {
    // The chart's own CA and role certificates (Helm's genCA / genSignedCert: RSA, PKCS#1
    // keys), broker 1's from the brokers' Secret and the edges' from theirs, used by a real
    // broker and a real edge over QUIC with mutual TLS.
    let docs = render(&[]);
    let secret = |suffix: &str| {
        docs.iter()
            .find(|d| d["kind"] == "Secret" && text(&d["metadata"]["name"]).ends_with(suffix))
            .unwrap_or_else(|| panic!("the generated {suffix} Secret"))
    };
    let (brokers, edges) = (secret("broker-tls"), secret("edge-tls"));
    let dir = tempfile::tempdir().expect("temp");
    for (secret, key, file) in [
        (brokers, "ca.pem", "ca.pem"),
        (brokers, "broker-1.pem", "broker.pem"),
        (brokers, "broker-1.key", "broker.key"),
        (edges, "tls.pem", "tls.pem"),
        (edges, "tls.key", "tls.key"),
    ] {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(text(&secret["data"][key]))
            .expect("base64");
        std::fs::write(dir.path().join(file), pem).expect("write");
    }
    let tls =
        |flag: &str, file: &str| vec![flag.to_owned(), dir.path().join(file).display().to_string()];
    let quic = plaza_cluster_tests::free_udp();
    let http = plaza_cluster_tests::free_tcp();
    let mut broker = Command::new(binary("plaza-broker"));
    broker
        .args(["--node-id", "1", "--in-memory"])
        .args([
            "--raft-listen",
            &quic.to_string(),
            "--http-listen",
            &http.to_string(),
        ])
        .args(tls("--tls-ca", "ca.pem"))
        .args(tls("--tls-cert", "broker.pem"))
        .args(tls("--tls-key", "broker.key"));
    let broker_log = dir.path().join("broker.log");
    let _broker = plaza_cluster_tests::Process::spawn(broker, &broker_log);
    let mut args = vec![
        "--backend".to_owned(),
        "cluster".to_owned(),
        "--brokers".to_owned(),
        quic.to_string(),
    ];
    args.extend(tls("--broker-tls-ca", "ca.pem"));
    args.extend(tls("--broker-tls-cert", "tls.pem"));
    args.extend(tls("--broker-tls-key", "tls.key"));
    let edge = plaza_cluster_tests::EdgeProcess::spawn(
        dir.path(),
        "edge",
        &args,
        "deploy-drift-test-secret-0123456789abcdef",
        std::time::Duration::from_secs(5),
    );
    // Ready only once attached to the broker (QUIC handshake both ways with these files).
    edge.wait_ready(std::time::Duration::from_secs(30));
}
