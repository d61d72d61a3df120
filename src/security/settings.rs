//! The `[tls]` section of the node's configuration (SPEC §11): one
//! certificate and key for every listener, and per-listener tables
//! (`[tls.client]`, `[tls.replication]`, `[tls.admin]`, `[tls.kafka]`)
//! that override any of its keys or turn TLS off for that listener.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::tls::{ClientTrust, MinVersion, ServerFiles};

/// The node's listeners, each with its own TLS settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The native client protocol (`listen`).
    Client,
    /// Followers (`replication_listen`).
    Replication,
    /// The admin HTTP API and console (`admin`).
    Admin,
    /// The Kafka protocol (`kafka_listen`).
    Kafka,
}

impl Listener {
    /// Every listener.
    pub const ALL: [Listener; 4] = [Listener::Client, Listener::Replication, Listener::Admin, Listener::Kafka];

    /// Its name in `[tls.<name>]` and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Listener::Client => "client",
            Listener::Replication => "replication",
            Listener::Admin => "admin",
            Listener::Kafka => "kafka",
        }
    }
}

/// `[tls]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// Certificate chain (PEM) for every listener; with `key_file` it turns TLS on.
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of `cert_file`; refused when group or others may read it.
    pub key_file: Option<PathBuf>,
    /// CAs whose client certificates every listener requires (mutual TLS).
    pub client_ca_file: Option<PathBuf>,
    /// CAs this node trusts when it connects to another node's replication
    /// listener (default: `client_ca_file`, else the system's roots).
    pub ca_file: Option<PathBuf>,
    /// Oldest TLS version accepted: "1.2" or "1.3".
    pub min_version: MinVersion,
    /// Longest a TLS handshake may take before the connection is closed.
    pub handshake_timeout_ms: u64,
    /// Overrides for the client listener.
    pub client: Option<ListenerTls>,
    /// Overrides for the replication listener.
    pub replication: Option<ListenerTls>,
    /// Overrides for the admin listener.
    pub admin: Option<ListenerTls>,
    /// Overrides for the Kafka listener.
    pub kafka: Option<ListenerTls>,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            ca_file: None,
            min_version: MinVersion::Tls12,
            handshake_timeout_ms: 10_000,
            client: None,
            replication: None,
            admin: None,
            kafka: None,
        }
    }
}

/// `[tls.<listener>]`: any key left out is `[tls]`'s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerTls {
    /// `false` serves this listener in plaintext even when `[tls]` is set.
    pub enabled: Option<bool>,
    /// This listener's certificate chain.
    pub cert_file: Option<PathBuf>,
    /// This listener's private key.
    pub key_file: Option<PathBuf>,
    /// CAs whose client certificates this listener requires.
    pub client_ca_file: Option<PathBuf>,
    /// Oldest TLS version this listener accepts.
    pub min_version: Option<MinVersion>,
}

/// A `[tls]` section that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TlsSettingsError {
    /// A certificate without its key, or a key without its certificate.
    #[error("[{section}] names {present} but not {missing}")]
    Incomplete {
        /// `tls` or `tls.<listener>`.
        section: String,
        /// The key that is set.
        present: &'static str,
        /// The key that is missing.
        missing: &'static str,
    },
    /// A TLS key that cannot take effect: no certificate resolves for it,
    /// so the listener would stay plaintext while the operator believes
    /// otherwise.
    #[error("[{section}] sets {key} but no cert_file and key_file apply there, so it would stay plaintext")]
    NoEffect {
        /// `tls` or `tls.<listener>`.
        section: String,
        /// The key without effect.
        key: &'static str,
    },
    /// `enabled = true` for a listener with no certificate anywhere.
    #[error("[tls.{listener}] enabled = true needs cert_file and key_file (in [tls] or [tls.{listener}])")]
    NoCertificate {
        /// The listener.
        listener: &'static str,
    },
    /// The handshake timeout is outside what makes sense.
    #[error("tls.handshake_timeout_ms must be in 100..=600000, got {0}")]
    HandshakeTimeout(u64),
}

impl TlsSettings {
    /// This listener's overrides, if any.
    fn overrides(&self, listener: Listener) -> Option<&ListenerTls> {
        match listener {
            Listener::Client => self.client.as_ref(),
            Listener::Replication => self.replication.as_ref(),
            Listener::Admin => self.admin.as_ref(),
            Listener::Kafka => self.kafka.as_ref(),
        }
    }

    /// What `listener` serves TLS with; `None`: plaintext.
    pub fn listener(&self, listener: Listener) -> Option<ServerFiles> {
        let overrides = self.overrides(listener).cloned().unwrap_or_default();
        if overrides.enabled == Some(false) {
            return None;
        }
        let cert_file = overrides.cert_file.or_else(|| self.cert_file.clone())?;
        let key_file = overrides.key_file.or_else(|| self.key_file.clone())?;
        Some(ServerFiles {
            cert_file,
            key_file,
            client_ca_file: overrides.client_ca_file.or_else(|| self.client_ca_file.clone()),
            min_version: overrides.min_version.unwrap_or(self.min_version),
        })
    }

    /// Whether any listener serves TLS.
    pub fn any_enabled(&self) -> bool {
        Listener::ALL.iter().any(|listener| self.listener(*listener).is_some())
    }

    /// How this node trusts another node's `listener` when it connects to
    /// it (a follower to its leader's replication listener, one admin API
    /// to another): with TLS when its own such listener serves it (the
    /// cluster's nodes share their settings), presenting its own
    /// certificate of that listener.
    pub fn peer_trust(&self, listener: Listener) -> Option<ClientTrust> {
        let own = self.listener(listener)?;
        Some(ClientTrust {
            ca_file: self.ca_file.clone().or_else(|| own.client_ca_file.clone()),
            insecure_skip_verify: false,
            identity: Some((own.cert_file, own.key_file)),
        })
    }

    /// Refuse a certificate without a key (and the reverse) anywhere, and
    /// a listener turned on with no certificate.
    pub fn validate(&self) -> Result<(), TlsSettingsError> {
        if !(100..=600_000).contains(&self.handshake_timeout_ms) {
            return Err(TlsSettingsError::HandshakeTimeout(self.handshake_timeout_ms));
        }
        check_pair("tls".into(), &self.cert_file, &self.key_file)?;
        for listener in Listener::ALL {
            let Some(overrides) = self.overrides(listener) else { continue };
            let section = format!("tls.{}", listener.name());
            check_pair(section.clone(), &overrides.cert_file, &overrides.key_file)?;
            if overrides.enabled == Some(true) && self.listener(listener).is_none() {
                return Err(TlsSettingsError::NoCertificate { listener: listener.name() });
            }
            let sets_keys = overrides.client_ca_file.is_some() || overrides.min_version.is_some();
            if sets_keys && overrides.enabled != Some(false) && self.listener(listener).is_none() {
                let key = if overrides.client_ca_file.is_some() { "client_ca_file" } else { "min_version" };
                return Err(TlsSettingsError::NoEffect { section, key });
            }
        }
        self.check_top_level_keys_take_effect()
    }

    /// `client_ca_file` and `ca_file` in `[tls]` need some listener with TLS.
    fn check_top_level_keys_take_effect(&self) -> Result<(), TlsSettingsError> {
        let key = match (&self.client_ca_file, &self.ca_file) {
            (Some(_), _) => "client_ca_file",
            (None, Some(_)) => "ca_file",
            (None, None) => return Ok(()),
        };
        match self.any_enabled() {
            true => Ok(()),
            false => Err(TlsSettingsError::NoEffect { section: "tls".into(), key }),
        }
    }
}

fn check_pair(
    section: String,
    cert_file: &Option<PathBuf>,
    key_file: &Option<PathBuf>,
) -> Result<(), TlsSettingsError> {
    match (cert_file, key_file) {
        (Some(_), None) => Err(TlsSettingsError::Incomplete { section, present: "cert_file", missing: "key_file" }),
        (None, Some(_)) => Err(TlsSettingsError::Incomplete { section, present: "key_file", missing: "cert_file" }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> TlsSettings {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn one_certificate_serves_every_listener_unless_a_listener_overrides_it() {
        let tls = settings(
            "cert_file = 'a.pem'\nkey_file = 'a.key'\n[kafka]\ncert_file = 'k.pem'\nkey_file = 'k.key'\n[admin]\nenabled = false\n",
        );
        assert_eq!(tls.listener(Listener::Client).unwrap().cert_file, PathBuf::from("a.pem"));
        assert_eq!(tls.listener(Listener::Kafka).unwrap().key_file, PathBuf::from("k.key"));
        assert!(tls.listener(Listener::Admin).is_none(), "enabled = false keeps the admin listener plaintext");
        assert!(tls.validate().is_ok());
    }

    #[test]
    fn no_certificate_means_plaintext_everywhere() {
        let tls = TlsSettings::default();
        assert!(!tls.any_enabled());
        assert!(tls.peer_trust(Listener::Replication).is_none());
    }

    #[test]
    fn a_certificate_without_its_key_is_refused() {
        let error = settings("cert_file = 'a.pem'").validate().unwrap_err();
        assert_eq!(error.to_string(), "[tls] names cert_file but not key_file");
        let error = settings("[kafka]\nkey_file = 'k.key'").validate().unwrap_err();
        assert_eq!(error.to_string(), "[tls.kafka] names key_file but not cert_file");
    }

    #[test]
    fn tls_keys_that_would_leave_a_listener_plaintext_are_refused() {
        let error = settings("client_ca_file = 'ca.pem'").validate().unwrap_err();
        assert_eq!(
            error.to_string(),
            "[tls] sets client_ca_file but no cert_file and key_file apply there, so it would stay plaintext"
        );
        assert!(settings("ca_file = 'ca.pem'").validate().is_err());
        let error = settings("[kafka]\nclient_ca_file = 'ca.pem'").validate().unwrap_err();
        assert!(matches!(error, TlsSettingsError::NoEffect { key: "client_ca_file", .. }), "{error}");
        let error =
            settings("cert_file = 'a.pem'\nkey_file = 'a.key'\n[kafka]\ncert_file = 'k.pem'").validate().unwrap_err();
        assert_eq!(error.to_string(), "[tls.kafka] names cert_file but not key_file", "an override is a whole pair");
        assert!(settings("cert_file = 'a.pem'\nkey_file = 'a.key'\nclient_ca_file = 'ca.pem'").validate().is_ok());
    }

    #[test]
    fn a_listener_enabled_without_any_certificate_is_refused() {
        let error = settings("[client]\nenabled = true").validate().unwrap_err();
        assert!(matches!(error, TlsSettingsError::NoCertificate { listener: "client" }));
    }

    #[test]
    fn followers_trust_the_ca_file_else_the_client_ca_and_present_their_certificate() {
        let tls = settings("cert_file = 'n.pem'\nkey_file = 'n.key'\nclient_ca_file = 'ca.pem'");
        let trust = tls.peer_trust(Listener::Replication).unwrap();
        assert_eq!(trust.ca_file, Some(PathBuf::from("ca.pem")));
        assert_eq!(trust.identity, Some((PathBuf::from("n.pem"), PathBuf::from("n.key"))));
        let tls = settings("cert_file = 'n.pem'\nkey_file = 'n.key'\nca_file = 'peers.pem'\nmin_version = '1.3'");
        assert_eq!(tls.peer_trust(Listener::Replication).unwrap().ca_file, Some(PathBuf::from("peers.pem")));
        assert_eq!(tls.listener(Listener::Client).unwrap().min_version, MinVersion::Tls13);
    }
}
