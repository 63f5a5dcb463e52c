//! The server side of the opening handshake (RFC 6455 §4.2) and the permessage-deflate
//! negotiation (RFC 7692 §7.1): checks the upgrade request and says what the 101 carries.

use http::HeaderMap;
use http::header::{CONNECTION, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// The `Sec-WebSocket-Extensions` answer when permessage-deflate is accepted: no context
/// takeover either way, so frames can be shared and no inflater outlives a message.
pub const DEFLATE_RESPONSE: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// Why an upgrade request was refused (answered with 400 or 426).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// `Upgrade: websocket` or `Connection: upgrade` is missing.
    #[error("not a websocket upgrade request")]
    NotUpgrade,
    /// `Sec-WebSocket-Version` is not 13.
    #[error("unsupported Sec-WebSocket-Version (only 13)")]
    Version,
    /// `Sec-WebSocket-Key` is missing or not 16 base64-encoded bytes.
    #[error("missing or malformed Sec-WebSocket-Key")]
    Key,
}

/// What the 101 response carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accept {
    /// The `Sec-WebSocket-Accept` value.
    pub accept_key: String,
    /// Whether permessage-deflate was negotiated ([`DEFLATE_RESPONSE`] is then sent).
    pub deflate: bool,
}

fn has_token(headers: &HeaderMap, name: http::header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Checks an upgrade request; `deflate` says whether permessage-deflate may be negotiated.
pub fn accept(headers: &HeaderMap, deflate: bool) -> Result<Accept, HandshakeError> {
    if !has_token(headers, UPGRADE, "websocket") || !has_token(headers, CONNECTION, "upgrade") {
        return Err(HandshakeError::NotUpgrade);
    }
    if headers.get(SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        return Err(HandshakeError::Version);
    }
    let key = headers.get(SEC_WEBSOCKET_KEY).ok_or(HandshakeError::Key)?;
    use base64::Engine;
    match base64::engine::general_purpose::STANDARD.decode(key.as_bytes()) {
        Ok(k) if k.len() == 16 => {}
        _ => return Err(HandshakeError::Key),
    }
    let offers = headers
        .get_all(http::header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok());
    Ok(Accept {
        accept_key: derive_accept_key(key.as_bytes()),
        deflate: deflate
            && offers
                .flat_map(|v| v.split(','))
                .any(acceptable_deflate_offer),
    })
}

/// Whether one extension offer is a permessage-deflate offer we can accept as answered by
/// [`DEFLATE_RESPONSE`]: known parameters, each at most once, valid values, and a
/// `server_max_window_bits` (if any) of 15, the only window our compressor uses.
fn acceptable_deflate_offer(offer: &str) -> bool {
    let mut parts = offer.split(';').map(str::trim);
    if parts.next() != Some("permessage-deflate") {
        return false;
    }
    let mut seen = [false; 4];
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (param, None),
        };
        let window = |v: Option<&str>| v.and_then(|v| v.parse::<u8>().ok());
        let (slot, ok) = match name {
            "server_no_context_takeover" => (0, value.is_none()),
            "client_no_context_takeover" => (1, value.is_none()),
            "server_max_window_bits" => (2, window(value) == Some(15)),
            "client_max_window_bits" => (
                3,
                value.is_none() || window(value).is_some_and(|b| (8..=15).contains(&b)),
            ),
            _ => return false,
        };
        if !ok || seen[slot] {
            return false;
        }
        seen[slot] = true;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(ext: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(UPGRADE, "websocket".parse().unwrap());
        h.insert(CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        h.insert(SEC_WEBSOCKET_VERSION, "13".parse().unwrap());
        h.insert(
            SEC_WEBSOCKET_KEY,
            "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap(),
        );
        if let Some(e) = ext {
            h.insert(http::header::SEC_WEBSOCKET_EXTENSIONS, e.parse().unwrap());
        }
        h
    }

    #[test]
    fn accept_key_is_the_rfc_example() {
        let a = accept(&request(None), true).unwrap();
        assert_eq!(a.accept_key, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(!a.deflate);
        let mut bad = request(None);
        bad.insert(SEC_WEBSOCKET_VERSION, "8".parse().unwrap());
        assert_eq!(accept(&bad, true), Err(HandshakeError::Version));
    }

    #[test]
    fn deflate_offers_are_accepted_only_when_valid() {
        let ok = |e: &str| accept(&request(Some(e)), true).unwrap().deflate;
        assert!(ok("permessage-deflate; client_max_window_bits"));
        assert!(ok(
            "permessage-deflate; server_max_window_bits=15; client_max_window_bits=10"
        ));
        assert!(ok(
            "permessage-deflate; server_max_window_bits=10, permessage-deflate"
        ));
        assert!(!ok("permessage-deflate; server_max_window_bits=10"));
        assert!(!ok(
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover"
        ));
        assert!(!ok("permessage-deflate; foo"));
        assert!(!ok("x-webkit-deflate-frame"));
        assert!(
            !accept(&request(Some("permessage-deflate")), false)
                .unwrap()
                .deflate
        );
    }
}
