//! The client's IP address as seen through trusted proxies.
//!
//! Forwarding headers are believed only when the TCP peer is a configured trusted proxy
//! (`http.trusted_proxies`); otherwise anyone could claim any address and dodge per-IP limits.
//! Behind Cloudflare, `CF-Connecting-IP` is used; otherwise `X-Forwarded-For` is read from the
//! right, skipping trusted proxies, and the first untrusted hop is the client.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// Resolves the client address of a request from `peer`. `cf` says whether to believe
/// `CF-Connecting-IP` (only right when Cloudflare is the trusted proxy in front).
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet], cf: bool) -> IpAddr {
    // `::ffff:a.b.c.d` from a dual-stack listener must match IPv4 CIDRs.
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    if cf && let Some(ip) = header_ip(headers, "cf-connecting-ip") {
        return ip;
    }
    let mut client = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                let ip = ip.to_canonical();
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            // A garbled hop: stop and use the last proxy we trust.
            Err(_) => break,
        }
    }
    client
}

fn header_ip(headers: &HeaderMap, name: &str) -> Option<IpAddr> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn headers_from_untrusted_peers_are_ignored() {
        let h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("cf-connecting-ip", "5.6.7.8"),
        ]);
        assert_eq!(client_ip(ip("9.9.9.9"), &h, &[], true), ip("9.9.9.9"));
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(client_ip(ip("9.9.9.9"), &h, &trusted, true), ip("9.9.9.9"));
    }

    #[test]
    fn a_trusted_proxy_s_headers_name_the_client() {
        let trusted: Vec<IpNet> = vec![
            "10.0.0.0/8".parse().unwrap(),
            "173.245.48.0/20".parse().unwrap(),
        ];
        let cf = headers(&[
            ("cf-connecting-ip", "203.0.113.7"),
            ("x-forwarded-for", "1.1.1.1"),
        ]);
        assert_eq!(
            client_ip(ip("173.245.48.5"), &cf, &trusted, true),
            ip("203.0.113.7")
        );
        // Without Cloudflare in front the header is the client's own claim: ignored.
        assert_eq!(
            client_ip(ip("173.245.48.5"), &cf, &trusted, false),
            ip("1.1.1.1")
        );
        // A dual-stack listener reports IPv4 peers as IPv4-mapped IPv6.
        let no_headers = HeaderMap::new();
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.2"), &no_headers, &trusted, false),
            ip("10.0.0.2")
        );
        // Rightmost untrusted hop wins; a client-supplied leftmost entry is not believed.
        let xff = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.3")]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &xff, &trusted, false),
            ip("203.0.113.9")
        );
        let split = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &split, &trusted, false),
            ip("203.0.113.9")
        );
        let none = headers(&[]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &none, &trusted, false),
            ip("10.0.0.2")
        );
        let garbled = headers(&[("x-forwarded-for", "203.0.113.9, not-an-ip, 10.0.0.3")]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &garbled, &trusted, false),
            ip("10.0.0.3")
        );
    }
}
