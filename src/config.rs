//! Node settings: defaults < TOML file < `RINGLOG_*` environment < flags.
//! Every limit has a key here; `docs/CONFIG.md` documents them and
//! `ringlog serve --print-config` prints the effective values.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::security::settings::TlsSettings;
use crate::storage::config::{current_key_name, older_key_name};
use crate::storage::StorageConfig;

/// Bounds on what clients can make the node hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request or response frame, checked before allocation.
    pub max_frame_bytes: usize,
    /// Largest record value.
    pub max_record_bytes: usize,
    /// Open connections per node, across shards: the client and the
    /// replication listener share the count.
    pub max_connections: usize,
    /// Requests a connection may have in flight (pipelining depth).
    pub max_inflight_requests_per_connection: usize,
    /// Bytes of answers a client connection may owe (encoded and not yet
    /// written, or reserved for a fetch in flight at its `max_bytes`):
    /// beyond it the connection reads no new request until its client
    /// reads its answers.
    pub max_answer_bytes_per_connection: usize,
    /// A connection whose peer takes none of its bytes for this long (a
    /// write to it makes no progress) is closed: its answers, the requests
    /// waiting behind them and its slot are freed.
    pub write_stall_timeout_ms: u64,
    /// Depth of each bounded cross-shard request queue.
    pub cross_shard_queue_depth: usize,
    /// Partitions a topic may have.
    pub max_partitions_per_topic: u32,
    /// Topics a node may hold.
    pub max_topics: usize,
    /// Longest long-poll a fetch may ask for.
    pub max_fetch_wait_ms: u64,
    /// Partitions one Kafka Fetch may name (a larger one closes the
    /// connection: each costs a read and an answer entry).
    pub max_partitions_per_fetch: usize,
    /// Partitions one Kafka Produce may name (a larger one closes the
    /// connection: each is a produce started at once, chained per partition).
    pub max_partitions_per_produce: usize,
    /// How often each shard applies retention to its partitions.
    pub retention_check_interval_ms: u64,
    /// How often the control thread hands freed heap pages back to the OS
    /// (glibc `malloc_trim`); 0 never.
    pub heap_trim_interval_ms: u64,
    /// Buffers of finished requests and answers (Kafka frames, answers and
    /// transcoded batches, native produce batches) each shard keeps for the next ones
    /// (capacity summed), so a large request is not zero filled before the
    /// socket overwrites it, nor faulted in again after the heap trim; 0
    /// keeps none.
    pub buffer_pool_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_frame_bytes: 17 << 20,
            max_record_bytes: 1 << 20,
            max_connections: 10_000,
            max_inflight_requests_per_connection: 128,
            max_answer_bytes_per_connection: 256 << 20,
            write_stall_timeout_ms: 60_000,
            cross_shard_queue_depth: 1024,
            max_partitions_per_topic: 10_000,
            max_topics: 10_000,
            max_fetch_wait_ms: 30_000,
            max_partitions_per_fetch: 10_000,
            max_partitions_per_produce: 10_000,
            retention_check_interval_ms: 10_000,
            heap_trim_interval_ms: 1_000,
            buffer_pool_bytes: 16 << 20,
        }
    }
}

/// Bounds on Kafka consumer groups (their coordinator's state in memory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupsConfig {
    /// Groups with members a node coordinates at once.
    pub max_groups: usize,
    /// Members one group may have.
    pub max_members_per_group: usize,
    /// Protocol metadata and assignments one group may hold, summed over
    /// its members (each protocol also counts a fixed overhead).
    pub max_group_metadata_bytes: usize,
    /// Protocols one JoinGroup may offer (clients offer two or three).
    pub max_protocols_per_member: usize,
    /// Shortest session timeout a member may ask for.
    pub min_session_timeout_ms: u64,
    /// Longest session timeout a member may ask for.
    pub max_session_timeout_ms: u64,
}

impl Default for GroupsConfig {
    fn default() -> Self {
        GroupsConfig {
            max_groups: 1_000,
            max_members_per_group: 1_000,
            max_group_metadata_bytes: 1 << 20,
            max_protocols_per_member: 32,
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
        }
    }
}

/// Cluster membership settings (used when `etcd` is not empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// etcd endpoints; empty means standalone.
    pub etcd: Vec<String>,
    /// Key prefix in etcd.
    pub prefix: String,
    /// Lease TTL for registration and election.
    pub lease_ttl_s: u64,
    /// Host other nodes and clients use to reach this one.
    pub advertise: Option<String>,
    /// Minimum in-sync replicas for `acks=all`.
    pub min_insync_replicas: usize,
    /// A follower lagging longer than this leaves the ISR.
    pub replica_lag_max_ms: u64,
    /// Bounded send queue per follower: answers queued for one follower's
    /// connection beyond this disconnect it at once.
    pub follower_queue_bytes: usize,
    /// Cluster secret for replication handshakes (default: created once in
    /// etcd at `PREFIX/secret` and read from there).
    pub secret: Option<Secret>,
    /// Bound on every etcd request (a lost quorum hangs rather than fails).
    pub etcd_request_timeout_ms: u64,
    /// How often the control thread reads the election and campaigns.
    pub election_poll_interval_ms: u64,
    /// Most partitions one follower read (`ReplicaFetchMany`) names; a
    /// follower with more per leader shard sends several reads.
    pub replica_fetch_max_partitions: usize,
    /// Soft bound on the batch bytes of one answer to a follower read (at
    /// least one batch is sent, so a follower always progresses).
    pub replica_fetch_max_bytes: usize,
    /// Soft bound on one partition's batch bytes in that answer.
    pub replica_fetch_partition_max_bytes: usize,
    /// Answer bodies a leader's shard keeps for the next follower reading
    /// the same range (their bytes summed; 0 keeps none).
    pub replica_answer_cache_bytes: usize,
    /// CAs that sign etcd's certificate (TLS to etcd; endpoints `https://…`).
    pub etcd_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) shown to etcd (`--client-cert-auth`).
    pub etcd_cert_file: Option<PathBuf>,
    /// Its key (PEM, owner-only like every key).
    pub etcd_key_file: Option<PathBuf>,
    /// etcd user (etcd's `auth enable`).
    pub etcd_user: Option<String>,
    /// That user's password (never printed: `--print-config` redacts it).
    pub etcd_password: Option<Secret>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            etcd: Vec::new(),
            prefix: "ringlog".into(),
            lease_ttl_s: 5,
            advertise: None,
            min_insync_replicas: 1,
            replica_lag_max_ms: 10_000,
            follower_queue_bytes: 64 << 20,
            secret: None,
            etcd_request_timeout_ms: 1_500,
            election_poll_interval_ms: 250,
            replica_fetch_max_partitions: 10_000,
            replica_fetch_max_bytes: 8 << 20,
            replica_fetch_partition_max_bytes: 4 << 20,
            replica_answer_cache_bytes: 32 << 20,
            etcd_ca_file: None,
            etcd_cert_file: None,
            etcd_key_file: None,
            etcd_user: None,
            etcd_password: None,
        }
    }
}

/// A setting that must never be printed: `Debug` and serialization (so
/// `--print-config`) show `"<redacted>"`; [`Secret::expose`] is the one way
/// to the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// Reads a secret from text, and from a number (`RINGLOG_…=123456` arrives
/// as an integer: refusing it would print it in the type error). The
/// placeholder `--print-config` writes is refused: a config made from that
/// output would otherwise run with "<redacted>" as a publicly known secret.
struct SecretVisitor;

impl serde::de::Visitor<'_> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a secret (text)")
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Secret, E> {
        if value == REDACTED {
            return Err(E::custom("a secret reads \"<redacted>\" (copied from --print-config?): give its real value"));
        }
        Ok(Secret(value.to_string()))
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Secret, E> {
        Ok(Secret(value.to_string()))
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Secret, E> {
        Ok(Secret(value.to_string()))
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
        deserializer.deserialize_any(SecretVisitor)
    }
}

/// What a secret prints as.
pub const REDACTED: &str = "<redacted>";

impl Secret {
    /// The secret's value, for the code that must compare or send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl std::ops::Deref for Secret {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

/// Client authentication on the native (and later Kafka) listener
/// (docs/SECURITY.md, SPEC §11).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Every client connection must authenticate (SCRAM-SHA-256) before
    /// any other request.
    pub enabled: bool,
    /// The users file (SCRAM credentials, roles, topic patterns); needed
    /// standalone when `enabled`.
    pub users_file: Option<PathBuf>,
    /// Failed authentications one source address may have in a minute
    /// before its attempts are refused at once until the minute is over.
    pub max_failures_per_minute: u32,
    /// Source addresses each shard tracks failures for (oldest evicted).
    pub max_tracked_sources: usize,
    /// PBKDF2 iterations for new users' credentials.
    pub scram_iterations: u32,
    /// How long a connection may take to authenticate (each frame before
    /// it is done must arrive whole within this); then it is closed.
    pub authentication_timeout_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: false,
            users_file: None,
            max_failures_per_minute: 10,
            max_tracked_sources: 10_000,
            scram_iterations: 4096,
            authentication_timeout_ms: 10_000,
        }
    }
}

/// Everything `ringlog serve` runs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Client listener address.
    pub listen: String,
    /// Admin HTTP address.
    pub admin: String,
    /// Replication listener address.
    pub replication_listen: String,
    /// Kafka protocol listener address (empty: no Kafka listener).
    pub kafka_listen: String,
    /// Data shards (0 = one per core).
    pub shards: usize,
    /// Bearer token for mutating admin endpoints (none: loopback only).
    pub admin_token: Option<Secret>,
    /// Storage settings (defaults for every partition).
    pub storage: StorageConfig,
    /// Limits.
    pub limits: LimitsConfig,
    /// Cluster settings.
    pub cluster: ClusterConfig,
    /// Kafka consumer-group bounds.
    pub groups: GroupsConfig,
    /// TLS on the listeners and between nodes (`[tls]`, SPEC §11).
    pub tls: TlsSettings,
    /// Client authentication.
    pub auth: AuthConfig,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("./ringlog-data"),
            listen: "127.0.0.1:7070".into(),
            admin: "127.0.0.1:7071".into(),
            replication_listen: "127.0.0.1:7072".into(),
            kafka_listen: "127.0.0.1:9092".into(),
            shards: 0,
            admin_token: None,
            storage: StorageConfig::default(),
            limits: LimitsConfig::default(),
            cluster: ClusterConfig::default(),
            groups: GroupsConfig::default(),
            tls: TlsSettings::default(),
            auth: AuthConfig::default(),
        }
    }
}

/// Sections whose keys an environment variable can name as `RINGLOG_<SECTION>_<KEY>`.
const SECTIONS: [&str; 6] = ["storage", "limits", "cluster", "groups", "tls", "auth"];

fn env_value(text: &str, is_list: bool) -> toml::Value {
    if is_list {
        let items = text.split(',').map(str::trim).filter(|item| !item.is_empty());
        return toml::Value::Array(items.map(|item| toml::Value::String(item.to_string())).collect());
    }
    if let Ok(integer) = text.parse::<i64>() {
        return toml::Value::Integer(integer);
    }
    match text {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(text.to_string()),
    }
}

/// Why the settings cannot be used: each variant names the key (or file,
/// or variable) and the value that was refused.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        /// The file named by `--config`.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not TOML.
    #[error("config {}: {source}", path.display())]
    Parse {
        /// The file named by `--config`.
        path: PathBuf,
        /// The parser's complaint (with line and column).
        #[source]
        source: toml::de::Error,
    },
    /// A `RINGLOG_*` variable names no setting.
    #[error("environment variable {name} names no setting")]
    UnknownVariable {
        /// The variable.
        name: String,
    },
    /// A section the environment writes into is not a table in the file.
    #[error("[{section}] must be a table")]
    NotATable {
        /// The section.
        section: &'static str,
    },
    /// The defaults could not be rendered to find the known keys (a bug).
    #[error("cannot render the default settings: {0}")]
    Defaults(#[source] toml::ser::Error),
    /// A key has a value of the wrong type (or the file a key nobody knows).
    #[error("invalid config: {0}")]
    Invalid(#[source] toml::de::Error),
    /// A value lies outside what the node can run with.
    #[error("{key} must be {expected}, got {value}")]
    OutOfRange {
        /// The setting, `section.key`.
        key: &'static str,
        /// The refused value.
        value: u64,
        /// What it must be ("in 1..=10000", "> 0", …).
        expected: String,
    },
    /// Two settings that must keep a distance from each other do not.
    #[error("{key} ({value}) must be {rule} {other_key} ({other_value})")]
    Conflict {
        /// The setting that is refused.
        key: &'static str,
        /// Its value.
        value: u64,
        /// The rule between the two ("at most", …).
        rule: &'static str,
        /// The setting it is measured against.
        other_key: &'static str,
        /// That setting's value.
        other_value: u64,
    },
    /// Two of this node's listeners name one address.
    #[error("{first} and {second} are both {address}")]
    SharedAddress {
        /// The earlier listener setting.
        first: &'static str,
        /// The later one.
        second: &'static str,
        /// The address both name.
        address: String,
    },
    /// etcd credentials or TLS files with an endpoint that is not TLS.
    #[error("cluster.etcd endpoint {endpoint} is not https:// but cluster.etcd_user or cluster.etcd_*_file is set: the password would go out in plaintext")]
    PlaintextEtcd {
        /// The plaintext endpoint.
        endpoint: String,
    },
    /// A setting is given without the one it goes with.
    #[error("{key} needs {needs}")]
    Needs {
        /// The setting given.
        key: &'static str,
        /// The setting missing.
        needs: &'static str,
    },
    /// A text setting is empty.
    #[error("{key} must not be empty, got {value:?}")]
    Empty {
        /// The setting.
        key: &'static str,
        /// The refused value.
        value: String,
    },
    /// The `[tls]` section is refused.
    #[error(transparent)]
    Tls(crate::security::settings::TlsSettingsError),
    /// Authentication is on but no user could ever log in.
    #[error("auth.enabled needs auth.users_file on a standalone node (create it with `ringlog user add NAME --role admin --users-file FILE`)")]
    AuthWithoutUsers,
    /// A storage setting is refused (`StorageConfig::validate`).
    #[error(transparent)]
    Storage(#[from] crate::storage::config::ConfigError),
}

/// Refuse `value` of `key` unless it lies in `range`.
fn require_range(key: &'static str, value: u64, range: RangeInclusive<u64>) -> Result<(), ConfigError> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(ConfigError::OutOfRange { key, value, expected: format!("in {}..={}", range.start(), range.end()) })
}

/// Refuse `value` of `key` below `minimum`.
fn require_at_least(key: &'static str, value: u64, minimum: u64) -> Result<(), ConfigError> {
    if value >= minimum {
        return Ok(());
    }
    Err(ConfigError::OutOfRange { key, value, expected: format!("at least {minimum}") })
}

/// Refuse a zero `value` of `key`.
fn require_positive(key: &'static str, value: u64) -> Result<(), ConfigError> {
    if value > 0 {
        return Ok(());
    }
    Err(ConfigError::OutOfRange { key, value, expected: "> 0".into() })
}

/// Apply `RINGLOG_*` variables (e.g. `RINGLOG_LISTEN`, `RINGLOG_STORAGE_FSYNC`)
/// onto a TOML table. Variables that name no setting are reported.
fn apply_environment(
    table: &mut toml::Table,
    variables: impl Iterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let known = toml::Table::try_from(NodeConfig::default()).map_err(ConfigError::Defaults)?;
    for (name, value) in variables {
        let Some(key) = name.strip_prefix("RINGLOG_") else { continue };
        let key = key.to_ascii_lowercase();
        // RINGLOG_SERVER is the client-side bootstrap list, not a node
        // setting; RINGLOG_LOG_FORMAT is every command's --log-format;
        // RINGLOG_FAULT_INJECT is the test seam of shard/faults.rs.
        if key == "server" || key == "log_format" || key == "fault_inject" {
            continue;
        }
        let (section, field) = match SECTIONS.iter().find(|section| key.starts_with(&format!("{section}_"))) {
            Some(section) => (Some(*section), key[section.len() + 1..].to_string()),
            None => (None, key.clone()),
        };
        let field = match section {
            Some("storage") => current_key_name(&field).to_string(),
            _ => field,
        };
        let target_known = match section {
            Some(section) => known.get(section).and_then(toml::Value::as_table),
            None => Some(&known),
        };
        // Optional settings have no default, so they are absent from the rendered defaults.
        let optional = matches!(
            (section, field.as_str()),
            (None, "admin_token")
                | (
                    Some("cluster"),
                    "advertise"
                        | "secret"
                        | "etcd_ca_file"
                        | "etcd_cert_file"
                        | "etcd_key_file"
                        | "etcd_user"
                        | "etcd_password"
                )
                | (Some("tls"), "cert_file" | "key_file" | "client_ca_file" | "ca_file")
                | (Some("auth"), "users_file")
        );
        let known_field = target_known.is_some_and(|table| table.contains_key(&field)) || optional;
        if !known_field {
            return Err(ConfigError::UnknownVariable { name });
        }
        let target_known = target_known.expect("known section");
        let is_list = target_known.get(&field).is_some_and(toml::Value::is_array);
        let parsed = env_value(&value, is_list);
        let target = match section {
            Some(section) => table
                .entry(section)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or(ConfigError::NotATable { section })?,
            None => &mut *table,
        };
        if let Some(older) = section.filter(|section| *section == "storage").and(older_key_name(&field)) {
            // The variable overrides the file's setting under either name.
            target.remove(older);
        }
        target.insert(field, parsed);
    }
    Ok(())
}

impl NodeConfig {
    /// The Kafka address this node registers (`kafka_listen`'s port with
    /// the `cluster.advertise` host, else reachable from this machine);
    /// `None` when `kafka_listen` is empty.
    pub fn kafka_advertised(&self) -> Option<String> {
        let listen = Some(self.kafka_listen.as_str()).filter(|listen| !listen.is_empty())?;
        Some(advertised_address(listen, self.cluster.advertise.as_deref()))
    }

    /// Defaults, then the TOML file (if any), then `RINGLOG_*` variables.
    pub fn load(
        file: Option<&Path>,
        variables: impl Iterator<Item = (String, String)>,
    ) -> Result<NodeConfig, ConfigError> {
        let config = NodeConfig::load_unchecked(file, variables)?;
        config.validate()?;
        Ok(config)
    }

    /// [`NodeConfig::load`] without [`NodeConfig::validate`]: for callers
    /// that apply command-line flags on top and validate the result (a
    /// rule between settings, like `[auth]` needing users or a cluster,
    /// must see the flags).
    pub fn load_unchecked(
        file: Option<&Path>,
        variables: impl Iterator<Item = (String, String)>,
    ) -> Result<NodeConfig, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
                text.parse::<toml::Table>().map_err(|source| ConfigError::Parse { path: path.to_path_buf(), source })?
            }
            None => toml::Table::new(),
        };
        apply_environment(&mut table, variables)?;
        toml::Value::Table(table).try_into().map_err(ConfigError::Invalid)
    }

    /// Check every setting's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.storage.validate().map_err(ConfigError::Storage)?;
        self.validate_limits()?;
        self.validate_groups()?;
        self.validate_listeners()?;
        if self.shards > 256 {
            return Err(ConfigError::OutOfRange {
                key: "shards",
                value: self.shards as u64,
                expected: "at most 256".into(),
            });
        }
        self.validate_cluster()?;
        self.validate_replica_fetch()?;
        self.validate_auth()?;
        self.tls.validate().map_err(ConfigError::Tls)
    }

    /// Authentication needs users (a file standalone; a cluster may run
    /// with the node's internal admin only until users come from etcd) and
    /// bounded limiter and hashing costs.
    fn validate_auth(&self) -> Result<(), ConfigError> {
        let auth = &self.auth;
        require_positive("auth.max_failures_per_minute", u64::from(auth.max_failures_per_minute))?;
        require_range("auth.max_tracked_sources", auth.max_tracked_sources as u64, 1..=10_000_000)?;
        require_range("auth.scram_iterations", u64::from(auth.scram_iterations), 4096..=1_000_000)?;
        require_range("auth.authentication_timeout_ms", auth.authentication_timeout_ms, 100..=600_000)?;
        if auth.enabled && auth.users_file.is_none() && self.cluster.etcd.is_empty() {
            return Err(ConfigError::AuthWithoutUsers);
        }
        Ok(())
    }

    /// Frames, records and batches fit inside each other; every queue and
    /// count is positive.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        let limits = &self.limits;
        require_range("limits.max_frame_bytes", limits.max_frame_bytes as u64, 1024..=(1 << 30))?;
        if self.storage.max_batch_bytes + 1024 > limits.max_frame_bytes {
            return Err(ConfigError::Conflict {
                key: "storage.max_batch_bytes",
                value: self.storage.max_batch_bytes as u64,
                rule: "at least 1 KiB below",
                other_key: "limits.max_frame_bytes",
                other_value: limits.max_frame_bytes as u64,
            });
        }
        if limits.max_record_bytes > self.storage.max_batch_bytes {
            return Err(ConfigError::Conflict {
                key: "limits.max_record_bytes",
                value: limits.max_record_bytes as u64,
                rule: "at most",
                other_key: "storage.max_batch_bytes",
                other_value: self.storage.max_batch_bytes as u64,
            });
        }
        require_positive("limits.max_connections", limits.max_connections as u64)?;
        let inflight = limits.max_inflight_requests_per_connection as u64;
        require_positive("limits.max_inflight_requests_per_connection", inflight)?;
        let answer_bytes = limits.max_answer_bytes_per_connection as u64;
        require_range("limits.max_answer_bytes_per_connection", answer_bytes, (1 << 20)..=(1 << 40))?;
        require_range("limits.write_stall_timeout_ms", limits.write_stall_timeout_ms, 100..=3_600_000)?;
        require_positive("limits.cross_shard_queue_depth", limits.cross_shard_queue_depth as u64)?;
        require_positive("limits.max_topics", limits.max_topics as u64)?;
        require_positive("limits.max_partitions_per_fetch", limits.max_partitions_per_fetch as u64)?;
        require_positive("limits.max_partitions_per_produce", limits.max_partitions_per_produce as u64)?;
        require_at_least("limits.retention_check_interval_ms", limits.retention_check_interval_ms, 100)?;
        require_range("limits.buffer_pool_bytes", limits.buffer_pool_bytes as u64, 0..=(1 << 30))?;
        require_range("limits.max_partitions_per_topic", u64::from(limits.max_partitions_per_topic), 1..=10_000)
    }

    /// Group bounds are positive and the session timeouts a range.
    fn validate_groups(&self) -> Result<(), ConfigError> {
        let groups = &self.groups;
        require_positive("groups.max_groups", groups.max_groups as u64)?;
        require_positive("groups.max_members_per_group", groups.max_members_per_group as u64)?;
        require_at_least("groups.max_group_metadata_bytes", groups.max_group_metadata_bytes as u64, 1024)?;
        require_positive("groups.max_protocols_per_member", groups.max_protocols_per_member as u64)?;
        require_positive("groups.min_session_timeout_ms", groups.min_session_timeout_ms)?;
        if groups.max_session_timeout_ms < groups.min_session_timeout_ms {
            return Err(ConfigError::Conflict {
                key: "groups.max_session_timeout_ms",
                value: groups.max_session_timeout_ms,
                rule: "at least",
                other_key: "groups.min_session_timeout_ms",
                other_value: groups.min_session_timeout_ms,
            });
        }
        Ok(())
    }

    /// No two of this node's listeners share an address: shards share
    /// their address with SO_REUSEPORT, so two listeners of ours on one
    /// address would split its connections between them.
    fn validate_listeners(&self) -> Result<(), ConfigError> {
        let mut listeners = vec![("listen", &self.listen), ("admin", &self.admin)];
        if !self.cluster.etcd.is_empty() {
            listeners.push(("replication_listen", &self.replication_listen));
        }
        if !self.kafka_listen.is_empty() {
            listeners.push(("kafka_listen", &self.kafka_listen));
        }
        for (index, (setting, address)) in listeners.iter().enumerate() {
            if let Some((other, _)) = listeners[..index].iter().find(|(_, earlier)| earlier == address) {
                return Err(ConfigError::SharedAddress { first: other, second: setting, address: address.to_string() });
            }
        }
        Ok(())
    }

    /// Lease, etcd request and election timing fit inside each other.
    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let cluster = &self.cluster;
        let pairs = [
            (
                "cluster.etcd_cert_file",
                cluster.etcd_cert_file.is_some(),
                "cluster.etcd_key_file",
                cluster.etcd_key_file.is_some(),
            ),
            (
                "cluster.etcd_user",
                cluster.etcd_user.is_some(),
                "cluster.etcd_password",
                cluster.etcd_password.is_some(),
            ),
        ];
        for (first, first_set, second, second_set) in pairs {
            match (first_set, second_set) {
                (true, false) => return Err(ConfigError::Needs { key: first, needs: second }),
                (false, true) => return Err(ConfigError::Needs { key: second, needs: first }),
                _ => {}
            }
        }
        // A password or a CA over http:// would go out in plaintext, or
        // silently not be used.
        let secured = cluster.etcd_user.is_some() || cluster.etcd_ca_file.is_some() || cluster.etcd_cert_file.is_some();
        if let Some(plain) = cluster.etcd.iter().find(|endpoint| !endpoint.starts_with("https://")).filter(|_| secured)
        {
            return Err(ConfigError::PlaintextEtcd { endpoint: plain.clone() });
        }
        require_positive("cluster.min_insync_replicas", cluster.min_insync_replicas as u64)?;
        if cluster.lease_ttl_s < 2 {
            return Err(ConfigError::OutOfRange {
                key: "cluster.lease_ttl_s",
                value: cluster.lease_ttl_s,
                expected: "at least 2 (etcd's minimum lease is about 1.5 s)".into(),
            });
        }
        let ttl_ms = cluster.lease_ttl_s * 1000;
        if !(100..ttl_ms).contains(&cluster.etcd_request_timeout_ms) {
            return Err(ConfigError::OutOfRange {
                key: "cluster.etcd_request_timeout_ms",
                value: cluster.etcd_request_timeout_ms,
                expected: format!("at least 100 and below the lease TTL ({ttl_ms} ms)"),
            });
        }
        if !(10..=ttl_ms / 2).contains(&cluster.election_poll_interval_ms) {
            return Err(ConfigError::OutOfRange {
                key: "cluster.election_poll_interval_ms",
                value: cluster.election_poll_interval_ms,
                expected: format!("at least 10 and at most half the lease TTL ({} ms)", ttl_ms / 2),
            });
        }
        // Below a follower's long-poll cadence every follower would be cut
        // off as idle (0 cuts them all); above an hour a dead one holds acks=all.
        require_range("cluster.replica_lag_max_ms", cluster.replica_lag_max_ms, 1_000..=3_600_000)?;
        if cluster.prefix.trim_matches('/').is_empty() {
            return Err(ConfigError::Empty { key: "cluster.prefix", value: cluster.prefix.clone() });
        }
        Ok(())
    }

    /// The multi-partition replica read bounds must be positive; they are
    /// capped by the frame size where used (see the `replica_read_*`
    /// methods), so a node with small frames still starts with defaults.
    fn validate_replica_fetch(&self) -> Result<(), ConfigError> {
        let cluster = &self.cluster;
        let partitions = cluster.replica_fetch_max_partitions as u64;
        require_range("cluster.replica_fetch_max_partitions", partitions, 1..=100_000)?;
        require_positive("cluster.replica_fetch_max_bytes", cluster.replica_fetch_max_bytes as u64)?;
        let partition_bytes = cluster.replica_fetch_partition_max_bytes as u64;
        require_positive("cluster.replica_fetch_partition_max_bytes", partition_bytes)?;
        let cache_bytes = cluster.replica_answer_cache_bytes as u64;
        require_range("cluster.replica_answer_cache_bytes", cache_bytes, 0..=(1 << 30))
    }

    /// Most partitions one replica read names: the setting, capped so the
    /// read fits half a frame (a topic name is at most 200 bytes, an entry
    /// at most 256).
    pub fn replica_read_partitions(&self) -> usize {
        self.cluster.replica_fetch_max_partitions.min(self.limits.max_frame_bytes / 2 / 256).max(1)
    }

    /// Soft bound on an answer's batch bytes: the setting, capped at half a frame.
    pub fn replica_read_bytes(&self) -> usize {
        self.cluster.replica_fetch_max_bytes.min(self.limits.max_frame_bytes / 2).max(1)
    }

    /// Soft bound on one partition's batch bytes in an answer.
    pub fn replica_read_partition_bytes(&self) -> usize {
        self.cluster.replica_fetch_partition_max_bytes.min(self.replica_read_bytes())
    }

    /// The effective settings as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|error| format!("# cannot render config: {error}\n"))
    }
}

/// The address to reach `listen` from this machine (0.0.0.0 → 127.0.0.1,
/// `[::]` → `[::1]`).
pub fn loopback_address(listen: &str) -> String {
    match listen.rsplit_once(':') {
        Some(("0.0.0.0", port)) => format!("127.0.0.1:{port}"),
        Some(("[::]", port)) => format!("[::1]:{port}"),
        _ => listen.to_string(),
    }
}

/// `address` (`host:port`) with its host replaced by `advertise` (a host,
/// when set; an IPv6 one is bracketed), else made reachable from this
/// machine.
pub fn advertised_address(address: &str, advertise: Option<&str>) -> String {
    match (advertise, address.rsplit_once(':')) {
        (Some(host), Some((_, port))) if host.contains(':') && !host.starts_with('[') => format!("[{host}]:{port}"),
        (Some(host), Some((_, port))) => format!("{host}:{port}"),
        _ => loopback_address(address),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_addresses_keep_the_port_and_bracket_an_ipv6_host() {
        assert_eq!(advertised_address("0.0.0.0:9093", Some("node-1.example")), "node-1.example:9093");
        assert_eq!(advertised_address("0.0.0.0:9093", Some("::1")), "[::1]:9093");
        assert_eq!(advertised_address("[::]:9093", Some("[fd00::7]")), "[fd00::7]:9093");
        assert_eq!(advertised_address("0.0.0.0:9093", None), "127.0.0.1:9093");
        assert_eq!(advertised_address("[::]:9093", None), "[::1]:9093");
        let config = NodeConfig { kafka_listen: String::new(), ..NodeConfig::default() };
        assert_eq!(config.kafka_advertised(), None, "no Kafka listener, no Kafka address");
    }

    fn vars(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect::<Vec<_>>().into_iter()
    }

    #[test]
    fn a_redacted_secret_is_refused_and_a_numeric_one_is_read_without_being_echoed() {
        let error = NodeConfig::load(None, vars(&[("RINGLOG_ADMIN_TOKEN", REDACTED)])).unwrap_err();
        assert!(error.to_string().contains("--print-config"), "{error}");
        let numeric = NodeConfig::load(None, vars(&[("RINGLOG_ADMIN_TOKEN", "918273645")])).unwrap();
        assert_eq!(numeric.admin_token.as_ref().map(|token| token.expose()), Some("918273645"));
    }

    #[test]
    fn etcd_credentials_need_their_pair_and_an_https_endpoint() {
        let error = NodeConfig::load(None, vars(&[("RINGLOG_CLUSTER_ETCD_USER", "root")])).unwrap_err();
        assert_eq!(error.to_string(), "cluster.etcd_user needs cluster.etcd_password");
        let error = NodeConfig::load(None, vars(&[("RINGLOG_CLUSTER_ETCD_KEY_FILE", "k.pem")])).unwrap_err();
        assert_eq!(error.to_string(), "cluster.etcd_key_file needs cluster.etcd_cert_file");
        let plaintext = vars(&[
            ("RINGLOG_CLUSTER_ETCD", "http://127.0.0.1:2379"),
            ("RINGLOG_CLUSTER_ETCD_USER", "root"),
            ("RINGLOG_CLUSTER_ETCD_PASSWORD", "secret-words"),
        ]);
        let error = NodeConfig::load(None, plaintext).unwrap_err().to_string();
        assert!(error.contains("not https://") && !error.contains("secret-words"), "{error}");
        let secured = vars(&[
            ("RINGLOG_CLUSTER_ETCD", "https://127.0.0.1:2379"),
            ("RINGLOG_CLUSTER_ETCD_USER", "root"),
            ("RINGLOG_CLUSTER_ETCD_PASSWORD", "secret-words"),
        ]);
        assert!(NodeConfig::load(None, secured).is_ok());
    }

    #[test]
    fn a_replica_lag_max_of_zero_or_beyond_an_hour_is_refused() {
        for bad in ["0", "999", "3600001"] {
            let error =
                NodeConfig::load(None, vars(&[("RINGLOG_CLUSTER_REPLICA_LAG_MAX_MS", bad)])).unwrap_err().to_string();
            assert!(error.contains("replica_lag_max_ms"), "{bad}: {error}");
        }
        assert!(NodeConfig::load(None, vars(&[("RINGLOG_CLUSTER_REPLICA_LAG_MAX_MS", "1000")])).is_ok());
    }

    #[test]
    fn replica_read_bounds_must_be_positive_and_are_capped_by_the_frame() {
        for (key, bad) in [
            ("RINGLOG_CLUSTER_REPLICA_FETCH_MAX_PARTITIONS", "0"),
            ("RINGLOG_CLUSTER_REPLICA_FETCH_MAX_PARTITIONS", "100001"),
            ("RINGLOG_CLUSTER_REPLICA_FETCH_MAX_BYTES", "0"),
            ("RINGLOG_CLUSTER_REPLICA_FETCH_PARTITION_MAX_BYTES", "0"),
        ] {
            let error = NodeConfig::load(None, vars(&[(key, bad)])).unwrap_err().to_string();
            assert!(error.contains("replica_fetch"), "{key}={bad}: {error}");
        }
        // Defaults on a node with 2 MiB frames: capped, not refused.
        let small = NodeConfig::load(
            None,
            vars(&[
                ("RINGLOG_LIMITS_MAX_FRAME_BYTES", "2097152"),
                ("RINGLOG_STORAGE_MAX_BATCH_BYTES", "1048576"),
                ("RINGLOG_LIMITS_MAX_RECORD_BYTES", "1048576"),
            ]),
        )
        .unwrap();
        assert_eq!(small.replica_read_partitions(), 4096);
        assert_eq!(small.replica_read_bytes(), 1 << 20);
        assert_eq!(small.replica_read_partition_bytes(), 1 << 20);
        let defaults = NodeConfig::default();
        assert_eq!(defaults.replica_read_partitions(), 10_000);
        assert_eq!(defaults.replica_read_partition_bytes(), 4 << 20);
    }

    #[test]
    fn defaults_match_the_spec() {
        let config = NodeConfig::load(None, vars(&[])).unwrap();
        assert_eq!(config.listen, "127.0.0.1:7070");
        assert_eq!(config.admin, "127.0.0.1:7071");
        assert_eq!(config.replication_listen, "127.0.0.1:7072");
        assert_eq!(config.data_dir, PathBuf::from("./ringlog-data"));
        assert_eq!(config.cluster.prefix, "ringlog");
        assert_eq!(config.cluster.lease_ttl_s, 5);
        assert_eq!(config.cluster.min_insync_replicas, 1);
        assert_eq!(config.storage.segment_bytes, 1 << 30);
        assert_eq!(config.storage.fsync, crate::storage::FsyncPolicy::Always);
    }

    #[test]
    fn environment_overrides_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ringlog.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:9000\"\n[storage]\nfsync = \"never\"\nsegment_bytes = 33554432\n")
            .unwrap();
        let config = NodeConfig::load(
            Some(&file),
            vars(&[("RINGLOG_STORAGE_FSYNC", "interval"), ("RINGLOG_CLUSTER_ETCD", "a:1,b:2"), ("HOME", "/x")]),
        )
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:9000");
        assert_eq!(config.storage.fsync, crate::storage::FsyncPolicy::Interval);
        assert_eq!(config.storage.segment_bytes, 32 << 20);
        assert_eq!(config.cluster.etcd, vec!["a:1".to_string(), "b:2".to_string()]);
        // Every command's --log-format, not a node setting: no error.
        NodeConfig::load(None, vars(&[("RINGLOG_LOG_FORMAT", "json")])).unwrap();
    }

    #[test]
    fn a_storage_key_renamed_to_the_max_convention_loads_under_both_names() {
        let dir = tempfile::tempdir().unwrap();
        let older = dir.path().join("older.toml");
        std::fs::write(&older, "[storage]\nwrite_buffers_max = 5\n").unwrap();
        assert_eq!(NodeConfig::load(Some(&older), vars(&[])).unwrap().storage.max_write_buffers, 5);
        let current = dir.path().join("current.toml");
        std::fs::write(&current, "[storage]\nmax_write_buffers = 6\n").unwrap();
        assert_eq!(NodeConfig::load(Some(&current), vars(&[])).unwrap().storage.max_write_buffers, 6);
        for name in ["RINGLOG_STORAGE_WRITE_BUFFERS_MAX", "RINGLOG_STORAGE_MAX_WRITE_BUFFERS"] {
            let config = NodeConfig::load(None, vars(&[(name, "7")])).unwrap();
            assert_eq!(config.storage.max_write_buffers, 7, "{name}");
            // The variable overrides a file that uses the other spelling.
            for file in [&older, &current] {
                let config = NodeConfig::load(Some(file), vars(&[(name, "8")])).unwrap();
                assert_eq!(config.storage.max_write_buffers, 8, "{name} over {}", file.display());
            }
        }
    }

    #[test]
    fn the_example_config_of_the_systemd_unit_loads() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd/ringlog.toml");
        let config = NodeConfig::load(Some(&example), vars(&[])).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/ringlog"), "the unit's StateDirectory");
        assert_eq!(config.cluster.etcd.len(), 3);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_clear_errors() {
        let same = [("RINGLOG_LISTEN", "127.0.0.1:9000"), ("RINGLOG_ADMIN", "127.0.0.1:9000")];
        let error = NodeConfig::load(None, vars(&same)).unwrap_err().to_string();
        assert_eq!(error, "listen and admin are both 127.0.0.1:9000");
        let clustered = [("RINGLOG_CLUSTER_ETCD", "http://e:2379"), ("RINGLOG_REPLICATION_LISTEN", "127.0.0.1:7070")];
        let error = NodeConfig::load(None, vars(&clustered)).unwrap_err().to_string();
        assert_eq!(error, "listen and replication_listen are both 127.0.0.1:7070");
        // Standalone, the replication address is not listened on.
        NodeConfig::load(None, vars(&clustered[1..])).unwrap();
        let error = NodeConfig::load(None, vars(&[("RINGLOG_STORAGE_NOPE", "1")])).unwrap_err().to_string();
        assert!(error.contains("RINGLOG_STORAGE_NOPE"), "{error}");
        let error = NodeConfig::load(None, vars(&[("RINGLOG_STORAGE_FSYNC", "sometimes")])).unwrap_err().to_string();
        assert!(error.contains("invalid config"), "{error}");
        let error = NodeConfig::load(None, vars(&[("RINGLOG_LIMITS_MAX_FRAME_BYTES", "10")])).unwrap_err().to_string();
        assert!(error.contains("max_frame_bytes"), "{error}");
    }

    #[test]
    fn an_out_of_range_setting_is_refused_naming_its_key_and_value() {
        let error = NodeConfig::load(None, vars(&[("RINGLOG_LIMITS_MAX_PARTITIONS_PER_TOPIC", "20000")])).unwrap_err();
        assert!(
            matches!(
                error,
                ConfigError::OutOfRange { key: "limits.max_partitions_per_topic", value: 20_000, ref expected }
                    if expected == "in 1..=10000"
            ),
            "{error:?}"
        );
        assert_eq!(error.to_string(), "limits.max_partitions_per_topic must be in 1..=10000, got 20000");
        let error = NodeConfig::load(None, vars(&[("RINGLOG_LIMITS_MAX_CONNECTIONS", "0")])).unwrap_err();
        assert_eq!(error.to_string(), "limits.max_connections must be > 0, got 0");
    }

    #[test]
    fn settings_that_must_nest_are_refused_naming_both_keys_and_values() {
        let record = [("RINGLOG_LIMITS_MAX_RECORD_BYTES", "2097152"), ("RINGLOG_STORAGE_MAX_BATCH_BYTES", "1048576")];
        let error = NodeConfig::load(None, vars(&record)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "limits.max_record_bytes (2097152) must be at most storage.max_batch_bytes (1048576)"
        );
        let error = NodeConfig::load(None, vars(&[("RINGLOG_CLUSTER_PREFIX", "/")])).unwrap_err();
        assert_eq!(error.to_string(), "cluster.prefix must not be empty, got \"/\"");
    }

    #[test]
    fn secrets_never_appear_in_print_config_or_debug_output() {
        let secrets = [
            ("RINGLOG_ADMIN_TOKEN", "token-must-not-leak"),
            ("RINGLOG_CLUSTER_SECRET", "secret-must-not-leak"),
            ("RINGLOG_CLUSTER_ETCD_USER", "root"),
            ("RINGLOG_CLUSTER_ETCD_PASSWORD", "etcd-password-must-not-leak"),
            ("RINGLOG_AUTH_USERS_FILE", "/etc/ringlog/users.json"),
        ];
        let config = NodeConfig::load(None, vars(&secrets)).unwrap();
        assert_eq!(config.admin_token.as_deref(), Some("token-must-not-leak"));
        assert_eq!(config.cluster.secret.as_ref().map(Secret::expose), Some("secret-must-not-leak"));
        for shown in [config.to_toml(), format!("{config:?}"), format!("{config:#?}")] {
            assert!(!shown.contains("must-not-leak"), "{shown}");
            assert!(shown.contains(REDACTED), "{shown}");
        }
        assert!(config.to_toml().contains("users_file = \"/etc/ringlog/users.json\""));
    }

    #[test]
    fn auth_needs_a_users_file_standalone_and_bounded_costs() {
        let error = NodeConfig::load(None, vars(&[("RINGLOG_AUTH_ENABLED", "true")])).unwrap_err();
        assert!(matches!(error, ConfigError::AuthWithoutUsers), "{error}");
        assert!(error.to_string().contains("auth.users_file"));
        let with_file = [("RINGLOG_AUTH_ENABLED", "true"), ("RINGLOG_AUTH_USERS_FILE", "/tmp/users.json")];
        // The Kafka listener authenticates with SASL (`requests::kafka::sasl`).
        let config = NodeConfig::load(None, vars(&with_file)).unwrap();
        assert!(config.auth.enabled);
        assert!(!config.kafka_listen.is_empty());
        assert_eq!(config.auth.max_failures_per_minute, 10);
        assert_eq!(config.auth.max_tracked_sources, 10_000);
        assert_eq!(config.auth.scram_iterations, 4096);
        let error = NodeConfig::load(None, vars(&[("RINGLOG_AUTH_SCRAM_ITERATIONS", "100")])).unwrap_err();
        assert!(error.to_string().contains("auth.scram_iterations"), "{error}");
    }

    #[test]
    fn an_unreadable_config_file_is_refused_naming_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.toml");
        let error = NodeConfig::load(Some(&missing), vars(&[])).unwrap_err();
        assert!(matches!(&error, ConfigError::Read { path, .. } if *path == missing), "{error:?}");
        assert!(error.to_string().starts_with(&format!("cannot read config {}: ", missing.display())), "{error}");
    }
}
