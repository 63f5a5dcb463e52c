//! A `wss://` client of the Plaza protocol through a front end.

use super::*;

/// A client of the Plaza protocol over TLS through nginx or Caddy, with its client id.
pub(crate) struct Client {
    pub(crate) ws: ws::Client<TlsStream<TcpStream>>,
    /// This connection's client id (its presence member id).
    pub(crate) id: String,
}

impl Client {
    pub(crate) async fn connect(front: &Frontend, token: &str) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(&front.ca).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(front.addr))
            .await
            .map_err(|_| "TCP connect timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let tls = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").expect("name"), tcp)
            .await
            .map_err(|e| format!("TLS with {}: {e}", front.name))?;
        let url = format!("wss://localhost:{}/v1/ws", front.addr.port());
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::client_async(url, tls),
        )
        .await
        .map_err(|_| "upgrade timed out".to_owned())?
        .map_err(|e| format!("upgrade through {}: {e}", front.name))?;
        let mut client = Self {
            ws: ws::Client::new(ws),
            id: String::new(),
        };
        let reply = client
            .call(json!({"op": "connect", "token": token}))
            .await
            .map_err(|e| format!("connect: {e:?}"))?;
        client.id = reply["ok"]["client"]
            .as_str()
            .ok_or_else(|| format!("connect refused: {reply}"))?
            .to_owned();
        Ok(client)
    }

    /// Connects, retrying for up to 60 s (an edge may be draining or restarting).
    pub(crate) async fn connect_retrying(front: &Frontend, token: &str) -> Self {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match Self::connect(front, token).await {
                Ok(client) => return client,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "no connection through {} within 60 s: {e}",
                        front.name
                    );
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
    }

    pub(crate) async fn call(&mut self, command: Value) -> Result<Value, Ended> {
        self.ws.try_call(command, Duration::from_secs(20)).await
    }

    pub(crate) async fn next_push(&mut self, timeout: Duration) -> Result<Value, Ended> {
        self.ws.next_push(timeout).await
    }
}
