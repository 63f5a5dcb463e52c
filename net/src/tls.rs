//! Cluster TLS: one private CA per cluster, one certificate per broker and per edge signed by it,
//! and the rustls configs that make QUIC connections mutually authenticated.
//!
//! Both sides present a certificate and both verify the other against the cluster CA only (never
//! the system roots, never "accept anything"). Holding a CA-signed key makes a process a member
//! of the cluster, but not every member may do everything: each certificate names its **role**
//! in its subject common name ([`Role`]):
//!
//! - `plaza-broker:<node id>`: a broker, valid as TLS server and client, for the names it is
//!   dialled at; only brokers may speak `plaza-raft/1`, and only as their own node id;
//! - `plaza-edge:<name>`: an edge, a TLS client only (no server EKU, no DNS names); it may only
//!   attach with an edge id that is its name or starts with `<name>/` ([`edge_id_belongs`]).
//!
//! The role lives in the common name (not only in an EKU or a URI SAN) so that any CA tooling
//! that can set a subject, Helm's `genSignedCert` included, can issue role certificates. A
//! certificate without a role (issued before roles existed) is refused with
//! [`RoleError::NoRole`], which tells the operator to re-issue it with `plaza-broker cert`.
//!
//! The configs are built with an explicit ring provider, so nothing depends on (or installs) a
//! process-wide rustls default. [`generate`] makes a CA and role certificates with rcgen;
//! [`write_dir`] / [`ClusterTls::load`] store and load them as PEM (`plaza-broker cert`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS material could not be generated, loaded or turned into a config.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rcgen could not make a key or certificate.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the material (bad key, unusable CA...).
    #[error("tls config: {0}")]
    Config(String),
}

/// One broker's TLS identity: the cluster CA it trusts and its own CA-signed certificate.
#[derive(Debug)]
pub struct ClusterTls {
    /// The cluster CA: the only root peers are verified against.
    pub ca: CertificateDer<'static>,
    /// This node's certificate chain (leaf first).
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// This node's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for ClusterTls {
    fn clone(&self) -> Self {
        Self {
            ca: self.ca.clone(),
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// File names [`write_dir`] uses and [`ClusterTls::load_dir`] expects.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA's private key: needed only to issue node certificates, never by a running broker.
pub const CA_KEY_FILE: &str = "ca.key";

/// `node-<name>.pem` / `node-<name>.key`.
pub fn node_files(name: &str) -> (String, String) {
    (format!("node-{name}.pem"), format!("node-{name}.key"))
}

impl ClusterTls {
    /// Loads the CA certificate, the node's certificate chain and its private key from PEM files.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let ca = CertificateDer::from_pem_file(ca).map_err(|e| pem_error(ca, e))?;
        let cert_chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| pem_error(cert, e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error(cert, e))?;
        if cert_chain.is_empty() {
            return Err(TlsError::Pem {
                path: cert.into(),
                reason: "no certificate".into(),
            });
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, e))?;
        Ok(Self {
            ca,
            cert_chain,
            key,
        })
    }

    /// The role this identity's own certificate names.
    pub fn role(&self) -> Result<Role, RoleError> {
        certificate_role(self.cert_chain.first().ok_or(RoleError::NoCertificate)?)
    }

    /// Loads node `name`'s identity from a directory written by [`write_dir`].
    pub fn load_dir(dir: &Path, name: &str) -> Result<Self, TlsError> {
        let (cert, key) = node_files(name);
        Self::load(&dir.join(CA_CERT_FILE), &dir.join(cert), &dir.join(key))
    }

    /// The server side: requires a client certificate signed by the cluster CA and offers
    /// exactly the `alpn` protocols (a client offering none of them is refused).
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<QuicServerConfig, TlsError> {
        let provider = provider();
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider.clone())
            .build()
            .map_err(config_error)?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_error)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.cert_chain.clone(), self.key.clone_key())
            .map_err(config_error)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        QuicServerConfig::try_from(config).map_err(config_error)
    }

    /// The client side: verifies the server against the cluster CA (and the name dialled),
    /// presents this node's certificate, and offers the `alpn` protocols.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<QuicClientConfig, TlsError> {
        let provider = provider();
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_error)?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.cert_chain.clone(), self.key.clone_key())
            .map_err(config_error)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        QuicClientConfig::try_from(config).map_err(config_error)
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).map_err(config_error)?;
        Ok(Arc::new(roots))
    }
}

pub use crate::role::*;

/// The one crypto provider of the broker (ring), passed explicitly to every config.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_error(e: impl std::fmt::Display) -> TlsError {
    TlsError::Config(e.to_string())
}

fn pem_error(path: &Path, e: rustls_pki_types::pem::Error) -> TlsError {
    TlsError::Pem {
        path: path.into(),
        reason: e.to_string(),
    }
}

/// A freshly generated cluster CA with node certificates, all in PEM. Its `Debug` output
/// leaves the keys out.
#[derive(Clone)]
pub struct GeneratedCluster {
    /// The CA certificate.
    pub ca_cert_pem: String,
    /// The CA key (keep it offline; brokers never need it).
    pub ca_key_pem: String,
    /// `(node name, certificate PEM, key PEM)` per node, in the order asked for.
    pub nodes: Vec<(String, String, String)>,
}

impl std::fmt::Debug for GeneratedCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.nodes.iter().map(|(n, _, _)| n.as_str()).collect();
        f.debug_struct("GeneratedCluster")
            .field("ca_cert_pem", &self.ca_cert_pem)
            .field("ca_key_pem", &"[secret key elided]")
            .field("nodes", &names)
            .finish()
    }
}

impl GeneratedCluster {
    /// Node `name`'s identity, parsed as a running broker would load it.
    pub fn identity(&self, name: &str) -> Result<ClusterTls, TlsError> {
        let (_, cert, key) = self
            .nodes
            .iter()
            .find(|(n, _, _)| n == name)
            .ok_or_else(|| config_error(format!("no node {name:?} was generated")))?;
        let parse = |what: &str, e: rustls_pki_types::pem::Error| TlsError::Pem {
            path: format!("<generated {what} of {name}>").into(),
            reason: e.to_string(),
        };
        Ok(ClusterTls {
            ca: CertificateDer::from_pem_slice(self.ca_cert_pem.as_bytes())
                .map_err(|e| parse("ca", e))?,
            cert_chain: vec![
                CertificateDer::from_pem_slice(cert.as_bytes()).map_err(|e| parse("cert", e))?,
            ],
            key: PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| parse("key", e))?,
        })
    }
}

/// What [`generate`] issues a certificate for: a broker with its Raft node id, or an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRole {
    /// A broker with this node id (common name `plaza-broker:<id>`).
    Broker(u64),
    /// An edge (common name `plaza-edge:<name>`).
    Edge,
}

/// Generates a cluster CA named `cluster` and one certificate per `(name, role)`, signed by it.
///
/// A broker certificate is valid as TLS server and client and names the broker, `localhost` and
/// `127.0.0.1`, plus any `extra_sans` (e.g. a StatefulSet's pod DNS names). An edge certificate
/// is a TLS client certificate only, with no DNS names: it cannot pass for a broker to anyone
/// dialling one. Names must be distinct, broker ids distinct and non-zero, edge names
/// [`valid_edge_name`].
pub fn generate(
    cluster: &str,
    nodes: &[(&str, NodeRole)],
    extra_sans: &[&str],
) -> Result<GeneratedCluster, TlsError> {
    for (i, (name, role)) in nodes.iter().enumerate() {
        let clash = nodes[..i].iter().find(|(other, other_role)| {
            other == name
                || matches!((role, other_role), (NodeRole::Broker(a), NodeRole::Broker(b)) if a == b)
        });
        if let Some((other, _)) = clash {
            return Err(config_error(format!(
                "{name:?} repeats the name or broker id of {other:?}"
            )));
        }
        match role {
            NodeRole::Broker(0) => {
                return Err(config_error(format!(
                    "broker {name:?}: node ids start at 1"
                )));
            }
            NodeRole::Edge if !valid_edge_name(name) => {
                return Err(config_error(format!(
                    "edge name {name:?}: use 1 to {MAX_EDGE_NAME} letters, digits, '-', '_' or '.'"
                )));
            }
            _ => {}
        }
    }
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{cluster} cluster CA"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_cert_pem = ca_cert.pem();
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params, ca_key);

    let mut generated = Vec::with_capacity(nodes.len());
    for (name, role) in nodes {
        let (role, sans, usages) = match role {
            NodeRole::Broker(id) => {
                let mut sans: Vec<String> = Vec::new();
                for san in [*name, "localhost", "127.0.0.1"].iter().chain(extra_sans) {
                    if !sans.iter().any(|s| s == san) {
                        sans.push(san.to_string());
                    }
                }
                let usages = vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ];
                (Role::Broker(*id), sans, usages)
            }
            NodeRole::Edge => (
                Role::Edge(name.to_string()),
                Vec::new(),
                vec![ExtendedKeyUsagePurpose::ClientAuth],
            ),
        };
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(sans)?;
        params
            .distinguished_name
            .push(DnType::CommonName, role.common_name());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = usages;
        let cert = params.signed_by(&key, &issuer)?;
        generated.push((name.to_string(), cert.pem(), key.serialize_pem()));
    }
    Ok(GeneratedCluster {
        ca_cert_pem,
        ca_key_pem,
        nodes: generated,
    })
}

/// Writes `generated` into `dir` (created if missing) as `ca.pem`, `ca.key` and
/// `node-<name>.pem` / `node-<name>.key`; keys are written owner-readable only on Unix.
pub fn write_dir(generated: &GeneratedCluster, dir: &Path) -> Result<(), TlsError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut files = vec![
        (CA_CERT_FILE.to_string(), &generated.ca_cert_pem, false),
        (CA_KEY_FILE.to_string(), &generated.ca_key_pem, true),
    ];
    for (name, cert, key) in &generated.nodes {
        let (cert_file, key_file) = node_files(name);
        files.push((cert_file, cert, false));
        files.push((key_file, key, true));
    }
    for (file, contents, secret) in files {
        let path = dir.join(file);
        write_file(&path, contents.as_bytes(), secret).map_err(io(&path))?;
    }
    Ok(())
}

/// Writes a file, replacing it; a `secret` one is created owner-only (on Unix) so the key is
/// never readable by others, not even briefly.
fn write_file(path: &Path, contents: &[u8], secret: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(generated: &GeneratedCluster, name: &str) -> CertificateDer<'static> {
        generated.identity(name).unwrap().cert_chain[0].clone()
    }

    #[test]
    fn generated_certificates_name_their_role() {
        let generated = generate(
            "roles",
            &[
                ("broker-7", NodeRole::Broker(7)),
                ("edge-a", NodeRole::Edge),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            certificate_role(&leaf(&generated, "broker-7")),
            Ok(Role::Broker(7))
        );
        assert_eq!(
            certificate_role(&leaf(&generated, "edge-a")),
            Ok(Role::Edge("edge-a".into()))
        );
        assert_eq!(
            generated.identity("edge-a").unwrap().role(),
            Ok(Role::Edge("edge-a".into()))
        );
    }

    #[test]
    fn a_certificate_from_before_roles_is_refused_with_a_hint_to_regenerate() {
        // What `generate` issued before roles existed: the node name as common name, both EKUs.
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["edge-1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "edge-1");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let old = params.signed_by(&key, &issuer).unwrap();
        let err = certificate_role(old.der()).unwrap_err();
        assert_eq!(
            err,
            RoleError::NoRole {
                subject: "edge-1".into()
            }
        );
        assert!(err.to_string().contains("plaza-broker cert"), "{err}");
    }

    #[test]
    fn malformed_roles_are_refused() {
        for cn in [
            "plaza-broker:",
            "plaza-broker:0",
            "plaza-broker:01",
            "plaza-broker:+1",
            "plaza-broker:x",
            "plaza-edge:",
            "plaza-edge:a/b",
            "plaza-edge:a b",
        ] {
            assert_eq!(
                Role::from_common_name(cn),
                Err(RoleError::Invalid(cn.into())),
                "{cn}"
            );
        }
        let long = format!("plaza-edge:{}", "e".repeat(MAX_EDGE_NAME + 1));
        assert!(Role::from_common_name(&long).is_err());
        assert_eq!(
            Role::from_common_name("plaza-broker:12"),
            Ok(Role::Broker(12))
        );
    }

    #[test]
    fn an_edge_owns_only_ids_under_its_name() {
        assert!(edge_id_belongs("edge-1", "edge-1"));
        assert!(edge_id_belongs("edge-1", "edge-1/3fa2"));
        assert!(!edge_id_belongs("edge-1", "edge-10"));
        assert!(!edge_id_belongs("edge-1", "edge-2"));
        assert!(!edge_id_belongs("edge-1", "edge-2/edge-1"));
        assert!(!edge_id_belongs("edge-1", ""));
        assert_eq!(edge_id_for("edge-1", "3fa2"), "edge-1/3fa2");
        assert_eq!(edge_id_for("edge-1", "edge-1/x"), "edge-1/x");
    }

    #[test]
    fn generate_refuses_duplicate_ids_and_bad_names() {
        let twice = [("a", NodeRole::Broker(1)), ("b", NodeRole::Broker(1))];
        assert!(generate("c", &twice, &[]).is_err());
        assert!(generate("c", &[("a", NodeRole::Broker(0))], &[]).is_err());
        assert!(generate("c", &[("a/b", NodeRole::Edge)], &[]).is_err());
        assert!(generate("c", &[("a", NodeRole::Edge), ("a", NodeRole::Edge)], &[]).is_err());
    }
}
