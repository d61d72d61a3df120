//! TLS for every listener and every connection the node or its client
//! makes (docs/SECURITY.md): rustls with ring's cipher suites, TLS 1.2 or
//! 1.3, optional client certificates (mutual TLS).
//!
//! A listener's configuration lives in a [`ServerTls`] that a SIGHUP swaps
//! whole ([`ServerTls::reload`]): each new connection takes the current
//! configuration when it is accepted, a connection already open keeps the
//! one it was accepted with, so a rotation drops no connection. A reload
//! that fails (a half-written key, a certificate that does not match it)
//! keeps the configuration in use and says why.
//!
//! Files are read whole but bounded: a certificate chain or CA bundle
//! larger than [`MAX_PEM_FILE_BYTES`] is refused rather than read.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Largest PEM file (certificate chain, key, CA bundle) the node reads.
pub const MAX_PEM_FILE_BYTES: u64 = 4 << 20;

/// Permission bits a private key file must not have: any access by the
/// group or by others (the rule ssh applies to its keys).
const KEY_FORBIDDEN_MODE_BITS: u32 = 0o077;

/// Why TLS cannot be set up; each variant names the file.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file is larger than any certificate chain or key.
    #[error("{} is larger than {MAX_PEM_FILE_BYTES} bytes; not a PEM certificate or key", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A PEM file holds nothing usable.
    #[error("{}: {what}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// A private key may be read by users other than its owner.
    #[error(
        "key file {} is accessible by group or others (mode {mode:03o}); run chmod 600 on it",
        path.display()
    )]
    KeyNotPrivate {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// rustls refused the certificates, the key or the settings.
    #[error("{context}: {source}")]
    Rustls {
        /// What was being set up.
        context: String,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
    /// The client CA bundle cannot verify clients.
    #[error("client CA {}: {what}", path.display())]
    ClientVerifier {
        /// The CA file.
        path: PathBuf,
        /// Why.
        what: String,
    },
    /// An address has no host a certificate could name.
    #[error("{address}: no host name or IP address to verify the certificate against")]
    ServerName {
        /// The address.
        address: String,
    },
}

/// The oldest TLS version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum MinVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    Tls13,
}

/// What one listener serves TLS with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    /// The certificate chain (PEM), leaf first.
    pub cert_file: PathBuf,
    /// The private key (PEM), readable by its owner only.
    pub key_file: PathBuf,
    /// CAs whose client certificates are required (mutual TLS), if any.
    pub client_ca_file: Option<PathBuf>,
    /// The oldest version accepted.
    pub min_version: MinVersion,
}

/// The TLS a client connects with (`None`: plaintext).
pub type ClientTls = Option<Arc<ClientConfig>>;

/// How a connecting side decides to trust a server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTrust {
    /// CAs to trust; `None`: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Trust any certificate (testing only: anyone on the path can read
    /// and change the traffic).
    pub insecure_skip_verify: bool,
    /// A certificate and key to present (mutual TLS; nodes to nodes).
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// The crypto this node uses everywhere: ring's (AES-GCM and ChaCha20
/// suites, X25519 and P-256 key exchange), AES-128-GCM first: as safe as
/// AES-256 here (128-bit keys are far beyond brute force) and a third
/// cheaper per byte, which is what a log's throughput pays.
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    let aes_128_first = |suite: &rustls::SupportedCipherSuite| {
        let name = format!("{:?}", suite.suite());
        !name.contains("AES_128")
    };
    provider.cipher_suites.sort_by_key(aes_128_first);
    Arc::new(provider)
}

/// TLS 1.3 alone.
static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];

fn versions(min_version: MinVersion) -> &'static [&'static rustls::SupportedProtocolVersion] {
    match min_version {
        MinVersion::Tls12 => rustls::ALL_VERSIONS,
        MinVersion::Tls13 => &TLS13_ONLY,
    }
}

fn rustls_error(context: impl Into<String>) -> impl FnOnce(rustls::Error) -> TlsError {
    let context = context.into();
    move |source| TlsError::Rustls { context, source }
}

/// Read a PEM file, refusing one too large to be a certificate or key.
pub fn read_pem_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    let read_error = |source| TlsError::Read { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(read_error)?;
    if bytes.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(TlsError::TooLarge { path: path.to_path_buf() });
    }
    Ok(bytes)
}

/// Every certificate in a PEM file (at least one).
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_pem_file(path)?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Pem { path: path.to_path_buf(), what: error.to_string() })?;
    if certificates.is_empty() {
        return Err(TlsError::Pem { path: path.to_path_buf(), what: "no CERTIFICATE block".into() });
    }
    Ok(certificates)
}

/// Refuse a key file the group or others may access.
pub fn check_key_is_private(path: &Path) -> Result<(), TlsError> {
    let metadata = std::fs::metadata(path).map_err(|source| TlsError::Read { path: path.to_path_buf(), source })?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & KEY_FORBIDDEN_MODE_BITS != 0 {
        return Err(TlsError::KeyNotPrivate { path: path.to_path_buf(), mode });
    }
    Ok(())
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1), checked private first.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    check_key_is_private(path)?;
    let bytes = read_pem_file(path)?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|error| TlsError::Pem { path: path.to_path_buf(), what: error.to_string() })
}

/// A root store of every certificate in a CA file.
fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(path)? {
        roots
            .add(certificate)
            .map_err(|error| TlsError::Pem { path: path.to_path_buf(), what: format!("not a usable CA: {error}") })?;
    }
    Ok(roots)
}

/// The system's trusted roots (`/etc/ssl/certs` and friends).
fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(target: "ringlog::tls", %error, "a system CA certificate could not be loaded");
    }
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    tracing::debug!(target: "ringlog::tls", added, ignored, "system roots loaded");
    roots
}

/// A listener's rustls configuration built from its files.
pub fn server_config(files: &ServerFiles) -> Result<ServerConfig, TlsError> {
    let key = read_private_key(&files.key_file)?;
    let certificates = read_certificates(&files.cert_file)?;
    server_config_of(files, certificates, key)
}

/// A listener's rustls configuration from certificates and a key already read.
fn server_config_of(
    files: &ServerFiles,
    certificates: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, TlsError> {
    let context = format!("TLS settings for {}", files.cert_file.display());
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(files.min_version))
        .map_err(rustls_error(context))?;
    let builder = match &files.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let roots = Arc::new(read_roots(ca_file)?);
            let client_ca = WebPkiClientVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|error| TlsError::ClientVerifier { path: ca_file.clone(), what: error.to_string() })?;
            let own = certificates[0].clone();
            builder.with_client_cert_verifier(Arc::new(ClientCaOrOwn { client_ca, own }))
        }
    };
    let context = format!("{} with {}", files.cert_file.display(), files.key_file.display());
    let mut config = builder.with_single_cert(certificates, key).map_err(rustls_error(context))?;
    // The node's listeners protect records themselves after the handshake
    // (security/session.rs), with the keys rustls hands over.
    config.enable_secret_extraction = true;
    Ok(config)
}

/// A listener's TLS configuration, swappable while connections use the old one.
pub struct ServerTls {
    files: ServerFiles,
    current: ArcSwap<Loaded>,
}

/// What one load of a listener's files gives.
struct Loaded {
    /// For the listener.
    server: Arc<ServerConfig>,
    /// For the node's own connections to the listener over loopback (the
    /// admin API's mutations): trusts exactly the listener's certificate,
    /// whatever names it carries, and shows it when clients must show one.
    loopback: Arc<ClientConfig>,
    /// The listener's own (leaf) certificate.
    certificate: CertificateDer<'static>,
}

impl Loaded {
    /// Each file is read once, so the listener and the loopback client
    /// can never disagree about a certificate replaced in between.
    fn read(files: &ServerFiles) -> Result<Loaded, TlsError> {
        let key = read_private_key(&files.key_file)?;
        let certificates = read_certificates(&files.cert_file)?;
        let own = certificates[0].clone();
        let server = Arc::new(server_config_of(files, certificates.clone(), key.clone_key())?);
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(rustls::ALL_VERSIONS)
            .map_err(rustls_error("loopback TLS settings"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(WithoutCa {
                pinned: Some(certificates[0].clone()),
                provider: provider(),
            }));
        let context = format!("{} as a client certificate", files.cert_file.display());
        let mut loopback = match files.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(_) => builder.with_client_auth_cert(certificates, key).map_err(rustls_error(context))?,
        };
        // The Rust client protects records itself (security/session.rs).
        loopback.enable_secret_extraction = true;
        Ok(Loaded { server, loopback: Arc::new(loopback), certificate: own })
    }
}

impl ServerTls {
    /// Load the files (the node refuses to start when they are unusable).
    pub fn load(files: ServerFiles) -> Result<ServerTls, TlsError> {
        let loaded = Loaded::read(&files)?;
        Ok(ServerTls { files, current: ArcSwap::from_pointee(loaded) })
    }

    /// The configuration a connection accepted now uses.
    pub fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.load().server)
    }

    /// The listener's own certificate (which mutual TLS accepts from the
    /// node itself, and which therefore names no user).
    pub fn certificate(&self) -> CertificateDer<'static> {
        self.current.load().certificate.clone()
    }

    /// The configuration the node connects to this listener with over loopback.
    pub fn loopback_client(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.current.load().loopback)
    }

    /// Read the files again and use them for new connections; on failure
    /// the configuration in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = Loaded::read(&self.files)?;
        self.current.store(Arc::new(loaded));
        Ok(())
    }

    /// The files this configuration is read from.
    pub fn files(&self) -> &ServerFiles {
        &self.files
    }
}

/// A connecting side's rustls configuration.
pub fn client_config(trust: &ClientTrust) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(rustls_error("client TLS settings"))?;
    let builder = match (trust.insecure_skip_verify, &trust.ca_file) {
        (true, _) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(WithoutCa { pinned: None, provider: provider() })),
        (false, Some(ca_file)) => builder.with_root_certificates(read_roots(ca_file)?),
        (false, None) => builder.with_root_certificates(system_roots()),
    };
    let mut config = match &trust.identity {
        None => builder.with_no_client_auth(),
        Some((cert_file, key_file)) => {
            let key = read_private_key(key_file)?;
            let certificates = read_certificates(cert_file)?;
            let context = format!("client certificate {}", cert_file.display());
            builder.with_client_auth_cert(certificates, key).map_err(rustls_error(context))?
        }
    };
    // Followers and the client protect records themselves after the
    // handshake (security/session.rs).
    config.enable_secret_extraction = true;
    Ok(config)
}

/// Whether a (verified) certificate names `user` as a DNS name in its
/// subjectAltName: how a client certificate stands for a user (SASL
/// EXTERNAL). Host-name matching is looser than an identity may be, so
/// only names it cannot blur are accepted: lowercase (it ignores case),
/// no trailing dot (it ignores one), and a certificate that a wildcard
/// makes valid for the name's siblings too is refused (`*.example` must
/// not stand for every user under it).
pub fn certificate_names(certificate: &CertificateDer<'_>, user: &str) -> bool {
    let exact_form = !user.is_empty()
        && user.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || b".-".contains(&byte))
        && !user.ends_with('.')
        && !user.starts_with('.');
    if !exact_form {
        return false;
    }
    let Ok(parsed) = webpki::EndEntityCert::try_from(certificate) else { return false };
    let valid_for = |name: &str| match ServerName::try_from(name) {
        Ok(name @ ServerName::DnsName(_)) => parsed.verify_is_valid_for_subject_name(&name).is_ok(),
        _ => false,
    };
    let sibling = match user.split_once('.') {
        Some((_, rest)) => format!("ringlog-wildcard-probe.{rest}"),
        None => "ringlog-wildcard-probe".to_string(),
    };
    valid_for(user) && !valid_for(&sibling)
}

/// The name a server's certificate must carry: the host of `host:port`
/// (an IP address or a DNS name).
pub fn server_name(address: &str) -> Result<ServerName<'static>, TlsError> {
    if let Ok(ip) = address.parse::<std::net::IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    let host = match address.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => address,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|_| TlsError::ServerName { address: address.to_string() })
}

/// Mutual TLS: a client certificate must chain to the client CA, or be
/// the listener's own certificate (the node's own loopback connections,
/// which show it; whoever holds its key can be the server anyway).
#[derive(Debug)]
struct ClientCaOrOwn {
    client_ca: Arc<dyn ClientCertVerifier>,
    own: CertificateDer<'static>,
}

impl ClientCertVerifier for ClientCaOrOwn {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.client_ca.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match end_entity.as_ref() == self.own.as_ref() {
            true => Ok(ClientCertVerified::assertion()),
            false => self.client_ca.verify_client_cert(end_entity, intermediates, now),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.client_ca.verify_tls12_signature(message, certificate, signature)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.client_ca.verify_tls13_signature(message, certificate, signature)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.client_ca.supported_verify_schemes()
    }
}

/// A server certificate check without a CA: the node's own connection to
/// its own listener pins the certificate the listener was loaded with (no
/// CA and no name involved); `--insecure-skip-verify` pins nothing and
/// accepts any. Both still check the handshake's signatures, so the
/// session keys are those of the certificate's holder.
#[derive(Debug)]
struct WithoutCa {
    /// The only certificate accepted; `None`: any (insecure).
    pinned: Option<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for WithoutCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.pinned {
            Some(pinned) if end_entity.as_ref() != pinned.as_ref() => {
                Err(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer))
            }
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, certificate, signature, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, certificate, signature, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &[u8], mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_key_file_the_group_or_others_can_access_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            let key = write(dir.path(), "node.key", b"irrelevant", mode);
            let error = read_private_key(&key).unwrap_err();
            assert!(matches!(error, TlsError::KeyNotPrivate { mode: refused, .. } if refused == mode), "{error}");
            assert!(error.to_string().contains("chmod 600"));
        }
        let key = write(dir.path(), "node.key", b"not pem", 0o600);
        assert!(matches!(read_private_key(&key), Err(TlsError::Pem { .. })), "a private file is read, then parsed");
    }

    #[test]
    fn a_pem_file_larger_than_any_certificate_is_refused_without_reading_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.pem");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(MAX_PEM_FILE_BYTES + 1).unwrap();
        assert!(matches!(read_certificates(&path), Err(TlsError::TooLarge { .. })));
        let empty = write(dir.path(), "empty.pem", b"", 0o644);
        assert!(matches!(read_certificates(&empty), Err(TlsError::Pem { .. })), "no certificate is an error");
    }

    fn certificate_for(names: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let certificate = rcgen::CertificateParams::new(names).unwrap().self_signed(&key).unwrap();
        certificate.der().clone()
    }

    #[test]
    fn a_client_certificate_names_a_user_exactly_never_by_case_trailing_dot_or_wildcard() {
        let alice = certificate_for(&["alice"]);
        assert!(certificate_names(&alice, "alice"));
        for blurred in ["ALICE", "Alice", "alice.", "", "bob"] {
            assert!(!certificate_names(&alice, blurred), "{blurred:?}");
        }
        let wildcard = certificate_for(&["*.svc.example"]);
        assert!(!certificate_names(&wildcard, "alice.svc.example"), "a wildcard stands for no one");
        let exact = certificate_for(&["bob.svc.example"]);
        assert!(certificate_names(&exact, "bob.svc.example"));
        assert!(!certificate_names(&exact, "eve.svc.example"));
    }

    #[test]
    fn aes_128_gcm_is_offered_first() {
        let suites = provider().cipher_suites.clone();
        let first_tls13 = suites.iter().find(|suite| suite.version() == &rustls::version::TLS13).unwrap();
        assert_eq!(first_tls13.suite(), rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        assert!(suites.iter().any(|suite| suite.suite() == rustls::CipherSuite::TLS13_AES_256_GCM_SHA384), "kept");
    }

    #[test]
    fn the_name_a_server_certificate_must_carry_is_the_host_of_the_address() {
        assert_eq!(server_name("127.0.0.1:7070").unwrap(), ServerName::try_from("127.0.0.1").unwrap());
        assert_eq!(server_name("[::1]:7070").unwrap(), ServerName::try_from("::1").unwrap());
        assert_eq!(server_name("broker.example:9092").unwrap(), ServerName::try_from("broker.example").unwrap());
        assert!(server_name("bad host:1").is_err());
        assert_eq!(
            server_name("::1").unwrap(),
            ServerName::try_from("::1").unwrap(),
            "a bare IPv6 address has no port"
        );
    }
}
