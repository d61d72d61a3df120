//! Certificates made in the test (rcgen): a CA per test that needs one,
//! leaves it signs for servers and clients, written as PEM files with the
//! modes a node demands (keys 0600).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use ringlog::security::tls::{client_config, ClientTls, ClientTrust};

/// A certificate authority whose certificate is written to `ca_file`.
pub struct Authority {
    certificate: rcgen::Certificate,
    key: KeyPair,
    /// The CA certificate (PEM).
    pub ca_file: PathBuf,
}

/// A leaf certificate and its key, as files.
#[derive(Clone)]
pub struct Leaf {
    /// The certificate chain (PEM).
    pub cert_file: PathBuf,
    /// The private key (PEM, mode 0600).
    pub key_file: PathBuf,
}

impl Authority {
    /// A new CA named `name`, its certificate written into `dir`.
    pub fn new(dir: &Path, name: &str) -> Authority {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let certificate = params.self_signed(&key).unwrap();
        let ca_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, certificate.pem()).unwrap();
        Authority { certificate, key, ca_file }
    }

    /// A leaf for `names` (DNS names or IP addresses) valid from a year ago
    /// for ten years, or, when `expired`, only during 2020.
    pub fn leaf(&self, dir: &Path, file_name: &str, names: &[&str], expired: bool) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, file_name);
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 12, 31);
        } else {
            params.not_before = rcgen::date_time_ymd(2025, 1, 1);
            params.not_after = rcgen::date_time_ymd(2035, 1, 1);
        }
        let certificate = params.signed_by(&key, &self.certificate, &self.key).unwrap();
        let leaf =
            Leaf { cert_file: dir.join(format!("{file_name}.pem")), key_file: dir.join(format!("{file_name}.key")) };
        std::fs::write(&leaf.cert_file, certificate.pem()).unwrap();
        write_private(&leaf.key_file, &key.serialize_pem());
        leaf
    }

    /// A server leaf for this machine's loopback address and `localhost`.
    pub fn server(&self, dir: &Path, file_name: &str) -> Leaf {
        self.leaf(dir, file_name, &["127.0.0.1", "localhost"], false)
    }

    /// A client configuration trusting this CA (and showing `identity`).
    pub fn client_tls(&self, identity: Option<&Leaf>) -> ClientTls {
        let trust = ClientTrust {
            ca_file: Some(self.ca_file.clone()),
            insecure_skip_verify: false,
            identity: identity.map(|leaf| (leaf.cert_file.clone(), leaf.key_file.clone())),
        };
        Some(Arc::new(client_config(&trust).unwrap()))
    }
}

/// Write `text` to `path` readable by its owner only.
pub fn write_private(path: &Path, text: &str) {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text).unwrap();
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

/// The environment that turns TLS on for every listener with `leaf`.
pub fn tls_environment(leaf: &Leaf) -> Vec<(String, String)> {
    vec![
        ("RINGLOG_TLS_CERT_FILE".into(), leaf.cert_file.display().to_string()),
        ("RINGLOG_TLS_KEY_FILE".into(), leaf.key_file.display().to_string()),
    ]
}
