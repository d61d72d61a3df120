//! Node settings: defaults < TOML file < `RINGLOG_*` environment < flags.
//! Every limit has a key here; `docs/CONFIG.md` documents them and
//! `ringlog serve --print-config` prints the effective values.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
    /// Client connections per node (across shards).
    pub max_connections: usize,
    /// Requests a connection may have in flight (pipelining depth).
    pub max_inflight_requests_per_connection: usize,
    /// Depth of each bounded cross-shard request queue.
    pub cross_shard_queue_depth: usize,
    /// Partitions a topic may have.
    pub max_partitions_per_topic: u32,
    /// Topics a node may hold.
    pub max_topics: usize,
    /// Longest long-poll a fetch may ask for.
    pub max_fetch_wait_ms: u64,
    /// How often each shard applies retention to its partitions.
    pub retention_check_interval_ms: u64,
    /// How often the control thread hands freed heap pages back to the OS
    /// (glibc `malloc_trim`); 0 never.
    pub heap_trim_interval_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_frame_bytes: 17 << 20,
            max_record_bytes: 1 << 20,
            max_connections: 10_000,
            max_inflight_requests_per_connection: 128,
            cross_shard_queue_depth: 1024,
            max_partitions_per_topic: 10_000,
            max_topics: 10_000,
            max_fetch_wait_ms: 30_000,
            retention_check_interval_ms: 10_000,
            heap_trim_interval_ms: 1_000,
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
    pub secret: Option<String>,
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
    /// Data shards (0 = one per core).
    pub shards: usize,
    /// Bearer token for mutating admin endpoints (none: loopback only).
    pub admin_token: Option<String>,
    /// Storage settings (defaults for every partition).
    pub storage: StorageConfig,
    /// Limits.
    pub limits: LimitsConfig,
    /// Cluster settings.
    pub cluster: ClusterConfig,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("./ringlog-data"),
            listen: "127.0.0.1:7070".into(),
            admin: "127.0.0.1:7071".into(),
            replication_listen: "127.0.0.1:7072".into(),
            shards: 0,
            admin_token: None,
            storage: StorageConfig::default(),
            limits: LimitsConfig::default(),
            cluster: ClusterConfig::default(),
        }
    }
}

/// Sections whose keys an environment variable can name as `RINGLOG_<SECTION>_<KEY>`.
const SECTIONS: [&str; 3] = ["storage", "limits", "cluster"];

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

/// Apply `RINGLOG_*` variables (e.g. `RINGLOG_LISTEN`, `RINGLOG_STORAGE_FSYNC`)
/// onto a TOML table. Variables that name no setting are reported.
fn apply_environment(table: &mut toml::Table, variables: impl Iterator<Item = (String, String)>) -> Result<(), String> {
    let known = toml::Table::try_from(NodeConfig::default()).map_err(|error| error.to_string())?;
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
        let optional =
            matches!((section, field.as_str()), (None, "admin_token") | (Some("cluster"), "advertise" | "secret"));
        let known_field = target_known.is_some_and(|table| table.contains_key(&field)) || optional;
        if !known_field {
            return Err(format!("environment variable {name} names no setting"));
        }
        let target_known = target_known.expect("known section");
        let is_list = target_known.get(&field).is_some_and(toml::Value::is_array);
        let parsed = env_value(&value, is_list);
        let target = match section {
            Some(section) => table
                .entry(section)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| format!("[{section}] must be a table"))?,
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
    /// Defaults, then the TOML file (if any), then `RINGLOG_*` variables.
    pub fn load(file: Option<&Path>, variables: impl Iterator<Item = (String, String)>) -> Result<NodeConfig, String> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|error| format!("cannot read config {}: {error}", path.display()))?;
                text.parse::<toml::Table>().map_err(|error| format!("config {}: {error}", path.display()))?
            }
            None => toml::Table::new(),
        };
        apply_environment(&mut table, variables)?;
        let config: NodeConfig =
            toml::Value::Table(table).try_into().map_err(|error| format!("invalid config: {error}"))?;
        config.validate()?;
        Ok(config)
    }

    /// Check every setting's range.
    pub fn validate(&self) -> Result<(), String> {
        self.storage.validate().map_err(|error| error.to_string())?;
        let limits = &self.limits;
        if limits.max_frame_bytes < 1024 || limits.max_frame_bytes > (1 << 30) {
            return Err("limits.max_frame_bytes must be in 1024..=1073741824".into());
        }
        if self.storage.max_batch_bytes + 1024 > limits.max_frame_bytes {
            return Err("storage.max_batch_bytes must be at least 1 KiB below limits.max_frame_bytes".into());
        }
        if limits.max_record_bytes > self.storage.max_batch_bytes {
            return Err("limits.max_record_bytes must not exceed storage.max_batch_bytes".into());
        }
        for (name, value) in [
            ("limits.max_connections", limits.max_connections),
            ("limits.max_inflight_requests_per_connection", limits.max_inflight_requests_per_connection),
            ("limits.cross_shard_queue_depth", limits.cross_shard_queue_depth),
            ("limits.max_topics", limits.max_topics),
        ] {
            if value == 0 {
                return Err(format!("{name} must be > 0"));
            }
        }
        if limits.retention_check_interval_ms < 100 {
            return Err("limits.retention_check_interval_ms must be at least 100".into());
        }
        if !(1..=10_000).contains(&limits.max_partitions_per_topic) {
            return Err("limits.max_partitions_per_topic must be in 1..=10000".into());
        }
        let mut listeners = vec![("listen", &self.listen), ("admin", &self.admin)];
        if !self.cluster.etcd.is_empty() {
            listeners.push(("replication_listen", &self.replication_listen));
        }
        for (index, (setting, address)) in listeners.iter().enumerate() {
            // Shards share their address with SO_REUSEPORT: two listeners of
            // ours on one address would split its connections between them.
            if let Some((other, _)) = listeners[..index].iter().find(|(_, earlier)| earlier == address) {
                return Err(format!("{other} and {setting} are both {address}"));
            }
        }
        if self.shards > 256 {
            return Err("shards must be at most 256".into());
        }
        if self.cluster.lease_ttl_s == 0 || self.cluster.min_insync_replicas == 0 {
            return Err("cluster.lease_ttl_s and cluster.min_insync_replicas must be > 0".into());
        }
        if self.cluster.lease_ttl_s < 2 {
            return Err("cluster.lease_ttl_s must be at least 2 (etcd's minimum lease is about 1.5 s)".into());
        }
        let ttl_ms = self.cluster.lease_ttl_s * 1000;
        if !(100..ttl_ms).contains(&self.cluster.etcd_request_timeout_ms) {
            return Err("cluster.etcd_request_timeout_ms must be at least 100 and below the lease TTL".into());
        }
        if !(10..=ttl_ms / 2).contains(&self.cluster.election_poll_interval_ms) {
            return Err("cluster.election_poll_interval_ms must be at least 10 and at most half the lease TTL".into());
        }
        // Below a follower's long-poll cadence every follower would be cut
        // off as idle (0 cuts them all); above an hour a dead one holds acks=all.
        if !(1_000..=3_600_000).contains(&self.cluster.replica_lag_max_ms) {
            return Err("cluster.replica_lag_max_ms must be in 1000..=3600000".into());
        }
        self.validate_replica_fetch()?;
        if self.cluster.prefix.trim_matches('/').is_empty() {
            return Err("cluster.prefix must not be empty".into());
        }
        Ok(())
    }

    /// The multi-partition replica read bounds must be positive; they are
    /// capped by the frame size where used (see the `replica_read_*`
    /// methods), so a node with small frames still starts with defaults.
    fn validate_replica_fetch(&self) -> Result<(), String> {
        let cluster = &self.cluster;
        if !(1..=100_000).contains(&cluster.replica_fetch_max_partitions) {
            return Err("cluster.replica_fetch_max_partitions must be in 1..=100000".into());
        }
        if cluster.replica_fetch_max_bytes == 0 || cluster.replica_fetch_partition_max_bytes == 0 {
            return Err("cluster.replica_fetch_max_bytes and replica_fetch_partition_max_bytes must be > 0".into());
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
        pairs.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect::<Vec<_>>().into_iter()
    }

    #[test]
    fn a_replica_lag_max_of_zero_or_beyond_an_hour_is_refused() {
        for bad in ["0", "999", "3600001"] {
            let error = NodeConfig::load(None, vars(&[("RINGLOG_CLUSTER_REPLICA_LAG_MAX_MS", bad)])).unwrap_err();
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
            let error = NodeConfig::load(None, vars(&[(key, bad)])).unwrap_err();
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
        assert_eq!(NodeConfig::load(None, vars(&same)).unwrap_err(), "listen and admin are both 127.0.0.1:9000");
        let clustered = [("RINGLOG_CLUSTER_ETCD", "http://e:2379"), ("RINGLOG_REPLICATION_LISTEN", "127.0.0.1:7070")];
        let error = NodeConfig::load(None, vars(&clustered)).unwrap_err();
        assert_eq!(error, "listen and replication_listen are both 127.0.0.1:7070");
        // Standalone, the replication address is not listened on.
        NodeConfig::load(None, vars(&clustered[1..])).unwrap();
        let error = NodeConfig::load(None, vars(&[("RINGLOG_STORAGE_NOPE", "1")])).unwrap_err();
        assert!(error.contains("RINGLOG_STORAGE_NOPE"), "{error}");
        let error = NodeConfig::load(None, vars(&[("RINGLOG_STORAGE_FSYNC", "sometimes")])).unwrap_err();
        assert!(error.contains("invalid config"), "{error}");
        let error = NodeConfig::load(None, vars(&[("RINGLOG_LIMITS_MAX_FRAME_BYTES", "10")])).unwrap_err();
        assert!(error.contains("max_frame_bytes"), "{error}");
    }
}
