//! Dialling helpers both QUIC clients (a broker calling its peers, an edge calling brokers)
//! use: resolve `host:port` on every dial, and the TLS name to check the peer against.

use std::net::SocketAddr;

/// Resolves `host:port` (names go through the system resolver, e.g. a headless service).
pub async fn resolve(addr: &str) -> Result<SocketAddr, String> {
    tokio::net::lookup_host(addr)
        .await
        .map_err(|e| format!("cannot resolve: {e}"))?
        .next()
        .ok_or_else(|| "resolves to no address".to_string())
}

/// The TLS name to verify the peer's certificate against: the host part of `host:port`
/// (an IP literal is checked against the certificate's IP SANs).
pub fn server_name(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::server_name;

    #[test]
    fn the_server_name_is_the_host_part_of_the_address() {
        assert_eq!(server_name("127.0.0.1:7000"), "127.0.0.1");
        assert_eq!(server_name("broker-0.brokers:7000"), "broker-0.brokers");
        assert_eq!(server_name("[::1]:7000"), "::1");
        assert_eq!(server_name("localhost"), "localhost");
    }
}
