//! The node's TLS, loaded once at startup from `[tls]` and reloaded on
//! SIGHUP: one swappable server configuration per listener that serves
//! TLS, and the configuration a follower connects to its leader with.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::{ClientConfig, ServerConfig};

use super::settings::{Listener, TlsSettings};
use super::tls::{client_config, ClientTls, ClientTrust, ServerTls, TlsError};

/// Every TLS configuration of a node.
pub struct NodeTls {
    client: Option<ServerTls>,
    replication: Option<ServerTls>,
    admin: Option<ServerTls>,
    kafka: Option<ServerTls>,
    /// How a follower trusts its leader, and which certificate it shows.
    replication_peer: Option<PeerClient>,
    /// How this node's admin API asks another node's.
    admin_peer: Option<PeerClient>,
    /// Longest a handshake may take.
    pub handshake_timeout: Duration,
}

impl NodeTls {
    /// No TLS anywhere (tests and tools that start shards by hand).
    pub fn plaintext() -> NodeTls {
        NodeTls {
            client: None,
            replication: None,
            admin: None,
            kafka: None,
            replication_peer: None,
            admin_peer: None,
            handshake_timeout: Duration::from_secs(10),
        }
    }

    /// Read every certificate and key `settings` names; any unusable file
    /// (missing, not PEM, a key others can read, a key that is not the
    /// certificate's) stops the node from starting.
    pub fn load(settings: &TlsSettings) -> Result<NodeTls, TlsError> {
        let server = |listener| settings.listener(listener).map(ServerTls::load).transpose();
        let peer = |listener| settings.peer_trust(listener).map(PeerClient::load).transpose();
        Ok(NodeTls {
            client: server(Listener::Client)?,
            replication: server(Listener::Replication)?,
            admin: server(Listener::Admin)?,
            kafka: server(Listener::Kafka)?,
            replication_peer: peer(Listener::Replication)?,
            admin_peer: peer(Listener::Admin)?,
            handshake_timeout: Duration::from_millis(settings.handshake_timeout_ms),
        })
    }

    /// Whether any listener or outgoing connection uses TLS.
    pub fn any(&self) -> bool {
        Listener::ALL.iter().any(|listener| self.listener(*listener).is_some())
            || self.replication_peer.is_some()
            || self.admin_peer.is_some()
    }

    fn listener(&self, listener: Listener) -> Option<&ServerTls> {
        match listener {
            Listener::Client => self.client.as_ref(),
            Listener::Replication => self.replication.as_ref(),
            Listener::Admin => self.admin.as_ref(),
            Listener::Kafka => self.kafka.as_ref(),
        }
    }

    /// The configuration a connection accepted on `listener` now uses
    /// (`None`: the listener is plaintext).
    pub fn server(&self, listener: Listener) -> Option<Arc<ServerConfig>> {
        self.listener(listener).map(ServerTls::config)
    }

    /// `listener`'s own certificate, if it serves TLS.
    pub fn own_certificate(&self, listener: Listener) -> Option<rustls::pki_types::CertificateDer<'static>> {
        self.listener(listener).map(ServerTls::certificate)
    }

    /// The configuration the node's own loopback connections to `listener`
    /// use (`None`: the listener is plaintext).
    pub fn loopback_client(&self, listener: Listener) -> ClientTls {
        self.listener(listener).map(ServerTls::loopback_client)
    }

    /// The configuration a follower connects to its leader with (`None`:
    /// plaintext).
    pub fn replication_client(&self) -> ClientTls {
        self.replication_peer.as_ref().map(|peer| peer.current.load_full())
    }

    /// The configuration this node's admin API asks another node's with.
    pub fn admin_client(&self) -> ClientTls {
        self.admin_peer.as_ref().map(|peer| peer.current.load_full())
    }

    /// Read every file again (SIGHUP). Connections already open keep the
    /// configuration they started with; a listener whose files fail keeps
    /// its old one. Returns what failed, by listener name.
    pub fn reload(&self) -> Vec<(&'static str, TlsError)> {
        let mut failures = Vec::new();
        for listener in Listener::ALL {
            if let Some(Err(error)) = self.listener(listener).map(ServerTls::reload) {
                failures.push((listener.name(), error));
            }
        }
        for (name, peer) in [("replication (outgoing)", &self.replication_peer), ("admin (outgoing)", &self.admin_peer)]
        {
            if let Some(Err(error)) = peer.as_ref().map(PeerClient::reload) {
                failures.push((name, error));
            }
        }
        failures
    }
}

/// A configuration for connecting to other nodes, swappable like a listener's.
struct PeerClient {
    trust: ClientTrust,
    current: ArcSwap<ClientConfig>,
}

impl PeerClient {
    fn load(trust: ClientTrust) -> Result<PeerClient, TlsError> {
        let config = client_config(&trust)?;
        Ok(PeerClient { trust, current: ArcSwap::from_pointee(config) })
    }

    fn reload(&self) -> Result<(), TlsError> {
        self.current.store(Arc::new(client_config(&self.trust)?));
        Ok(())
    }
}
