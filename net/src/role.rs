//! Roles of cluster certificates: which role a certificate's subject common name grants
//! (`plaza-broker:<node id>`, `plaza-edge:<name>`), which edge ids an edge certificate owns, and
//! the role of a QUIC peer. Re-exported from [`crate::tls`], whose docs explain the scheme.

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Common-name prefix of a broker certificate: `plaza-broker:<node id>`.
pub const BROKER_CN_PREFIX: &str = "plaza-broker:";
/// Common-name prefix of an edge certificate: `plaza-edge:<name>`.
pub const EDGE_CN_PREFIX: &str = "plaza-edge:";
/// Longest edge name a certificate may carry.
pub const MAX_EDGE_NAME: usize = 64;

/// What a cluster certificate allows its holder to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Broker with this Raft node id: serves both ALPNs, may send Raft RPCs as this node.
    Broker(u64),
    /// Edge with this name: may attach over `plaza-edge/1` with edge ids it owns
    /// ([`edge_id_belongs`]), nothing else.
    Edge(String),
}

impl Role {
    /// The subject common name that encodes this role.
    pub fn common_name(&self) -> String {
        match self {
            Self::Broker(id) => format!("{BROKER_CN_PREFIX}{id}"),
            Self::Edge(name) => format!("{EDGE_CN_PREFIX}{name}"),
        }
    }

    /// Parses a common name written by [`Role::common_name`].
    pub fn from_common_name(cn: &str) -> Result<Self, RoleError> {
        let invalid = || RoleError::Invalid(cn.to_owned());
        if let Some(text) = cn.strip_prefix(BROKER_CN_PREFIX) {
            // One spelling per id: `plaza-broker:01` and `plaza-broker:+1` are refused.
            match text.parse::<u64>() {
                Ok(id) if id > 0 && id.to_string() == text => Ok(Self::Broker(id)),
                _ => Err(invalid()),
            }
        } else if let Some(name) = cn.strip_prefix(EDGE_CN_PREFIX) {
            if valid_edge_name(name) {
                Ok(Self::Edge(name.to_owned()))
            } else {
                Err(invalid())
            }
        } else {
            Err(RoleError::NoRole {
                subject: cn.to_owned(),
            })
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Broker(id) => write!(f, "broker {id}"),
            Self::Edge(name) => write!(f, "edge {name:?}"),
        }
    }
}

/// Why a certificate grants no role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    /// The peer presented no certificate (never after a successful mutual handshake).
    #[error("no certificate was presented")]
    NoCertificate,
    /// The certificate is not valid DER X.509.
    #[error("the certificate cannot be parsed: {0}")]
    Unparsable(String),
    /// The certificate names no Plaza role: it was issued before roles existed.
    #[error(
        "certificate {subject:?} names no Plaza role (it predates role-separated certificates); \
         issue new ones with `plaza-broker cert --brokers ... --edges ...` (see docs/security.md)"
    )]
    NoRole {
        /// The certificate's common name.
        subject: String,
    },
    /// The common name has a role prefix but no valid node id or edge name after it.
    #[error("certificate common name {0:?} has a malformed Plaza role")]
    Invalid(String),
}

/// Whether `name` may be an edge certificate's name: 1 to [`MAX_EDGE_NAME`] ASCII letters,
/// digits, `-`, `_` or `.` (no `/`, which separates an edge id's name from its suffix).
pub fn valid_edge_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_EDGE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether the edge holding certificate `name` owns edge id `edge_id`: the id is the name
/// itself or `<name>/<anything>` (several processes sharing one certificate tell themselves
/// apart by the suffix, but can never take an id under another certificate's name).
pub fn edge_id_belongs(name: &str, edge_id: &str) -> bool {
    edge_id == name
        || edge_id
            .strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The edge id an edge with certificate `name` uses for process id `local`: `local` if it
/// already belongs to `name`, else `<name>/<local>`.
pub fn edge_id_for(name: &str, local: &str) -> String {
    if edge_id_belongs(name, local) {
        local.to_owned()
    } else {
        format!("{name}/{local}")
    }
}

/// The role a DER certificate names in its subject common name.
pub fn certificate_role(cert: &CertificateDer<'_>) -> Result<Role, RoleError> {
    let (_, parsed) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| RoleError::Unparsable(e.to_string()))?;
    let mut names = parsed.subject().iter_common_name();
    let cn = match (names.next(), names.next()) {
        (Some(cn), None) => cn
            .as_str()
            .map_err(|e| RoleError::Unparsable(format!("common name: {e}")))?,
        (None, _) => {
            return Err(RoleError::NoRole {
                subject: parsed.subject().to_string(),
            });
        }
        (Some(_), Some(_)) => {
            return Err(RoleError::Invalid(parsed.subject().to_string()));
        }
    };
    Role::from_common_name(cn)
}

/// The role of the certificate the peer of an established QUIC connection presented (its leaf;
/// the chain was already verified against the cluster CA by the handshake).
pub fn peer_role(conn: &quinn::Connection) -> Result<Role, RoleError> {
    let identity = conn.peer_identity().ok_or(RoleError::NoCertificate)?;
    let chain = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| RoleError::NoCertificate)?;
    certificate_role(chain.first().ok_or(RoleError::NoCertificate)?)
}
