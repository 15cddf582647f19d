//! A raw QUIC attacker for the flood tests: its own quinn endpoint that speaks the transport's
//! handshake with a fresh identity per connection, so that a test can do on the streams what
//! the transport never would (hold partial frames, send garbage).

use p2ps::{Identity, NodeId};
use p2ps_transport::{quinn, tls};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The attacker: a QUIC endpoint of its own that dials with a fresh identity each time.
pub struct Attacker {
    /// The runtime its connections live on.
    pub rt: tokio::runtime::Runtime,
    /// Its endpoint (one UDP socket).
    pub endpoint: quinn::Endpoint,
    /// The node it attacks.
    pub target: NodeId,
    /// Where that node listens.
    pub addr: SocketAddr,
}

impl Attacker {
    /// An attacker bound to `bind` (a loopback address) that dials `target` at `addr`.
    pub fn new(bind: &str, target: NodeId, addr: SocketAddr) -> Result<Attacker, String> {
        if !addr.ip().is_loopback() {
            return Err(format!("refusing to attack {addr}: tests stay on loopback"));
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("the attacker's runtime: {e}"))?;
        let bind_addr: SocketAddr = bind
            .parse()
            .map_err(|e| format!("bind address {bind}: {e}"))?;
        let endpoint = {
            let _g = rt.enter();
            quinn::Endpoint::client(bind_addr)
                .map_err(|e| format!("binding the attacker to {bind}: {e}"))?
        };
        Ok(Attacker {
            rt,
            endpoint,
            target,
            addr,
        })
    }

    /// A client configuration with a fresh identity, keeping its connections alive.
    pub fn fresh_client(target: NodeId) -> Result<quinn::ClientConfig, String> {
        let id = Identity::generate().map_err(|e| e.to_string())?;
        let key = tls::certified_key(&id).map_err(|e| e.0)?;
        let verifier = Arc::new(tls::PeerServerVerifier::new(Some(target)));
        let crypto = tls::client_config(key, verifier, tls::ALPN).map_err(|e| e.to_string())?;
        let quic =
            quinn::crypto::rustls::QuicClientConfig::try_from(crypto).map_err(|e| e.to_string())?;
        let mut client = quinn::ClientConfig::new(Arc::new(quic));
        let mut t = quinn::TransportConfig::default();
        t.keep_alive_interval(Some(Duration::from_millis(500)));
        t.max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(Duration::from_secs(30)).map_err(|e| e.to_string())?,
        ));
        client.transport_config(Arc::new(t));
        Ok(client)
    }

    /// One handshake with a fresh identity (at most 5 s).
    pub async fn dial(
        endpoint: quinn::Endpoint,
        target: NodeId,
        addr: SocketAddr,
    ) -> Result<quinn::Connection, String> {
        let client = Attacker::fresh_client(target)?;
        let connecting = endpoint
            .connect_with(client, addr, tls::SERVER_NAME)
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(Duration::from_secs(5), connecting).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("handshake timed out".into()),
        }
    }

    /// Closes every connection and waits (bounded) until the node knows.
    pub fn close_all(&self) {
        self.endpoint.close(0u32.into(), b"done");
        let e = self.endpoint.clone();
        self.rt.block_on(async move {
            let _ = tokio::time::timeout(Duration::from_secs(3), e.wait_idle()).await;
        });
    }
}
