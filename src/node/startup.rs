//! Before the shards start: environment checks (io_uring, locked memory),
//! the listen and advertised addresses, and the wait for every shard's
//! listeners.

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

use crate::cluster::keys::Registration;
use crate::config::NodeConfig;
use crate::security::settings::Listener;
use crate::shard::ShardId;

use super::{NodeError, ShardError, STOP_REQUESTED};

/// Smallest RLIMIT_MEMLOCK the executors work with.
pub const MIN_MEMLOCK_BYTES: u64 = 512 * 1024;

/// Check io_uring availability and locked-memory limits before starting.
pub fn startup_checks() -> Result<(), NodeError> {
    if let Ok(text) = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled") {
        if text.trim() == "2" {
            return Err(NodeError::IoUringDisabled);
        }
    }
    let ring = io_uring::IoUring::new(8).map_err(|source| NodeError::IoUringUnavailable { source })?;
    let mut probe = io_uring::Probe::new();
    ring.submitter().register_probe(&mut probe).map_err(|source| NodeError::IoUringProbe { source })?;
    for (opcode, name) in [
        (io_uring::opcode::Read::CODE, "read"),
        (io_uring::opcode::Write::CODE, "write"),
        (io_uring::opcode::Fsync::CODE, "fsync"),
        (io_uring::opcode::Fallocate::CODE, "fallocate"),
    ] {
        if !probe.is_supported(opcode) {
            return Err(NodeError::IoUringOperationMissing { operation: name });
        }
    }
    match memlock_limit() {
        Some(limit_bytes) if limit_bytes != libc::RLIM_INFINITY && limit_bytes < MIN_MEMLOCK_BYTES => {
            Err(NodeError::MemlockTooLow { limit_bytes, minimum_bytes: MIN_MEMLOCK_BYTES })
        }
        _ => Ok(()),
    }
}

/// This process's RLIMIT_MEMLOCK (soft), when it can be read.
fn memlock_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass.
    (unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } == 0).then_some(limit.rlim_cur)
}

/// Refuse an `io_memory_bytes` whose arenas, one per shard, would take
/// more than half the memory the node may use (the machine's, or its
/// cgroup's limit when lower): each shard allocates (and pins) its arena as
/// it starts, and a failed allocation aborts the process inside the
/// runtime, or the OOM killer ends it, instead of an error naming the setting.
pub fn check_io_memory_fits(io_memory_bytes: u64, shards: usize) -> Result<(), NodeError> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let Some(machine_bytes) = meminfo_bytes(&meminfo, "MemTotal:") else { return Ok(()) };
    let memory_bytes = cgroup_memory_limit().map_or(machine_bytes, |limit| limit.min(machine_bytes));
    let needed_bytes = io_memory_bytes.saturating_mul(shards as u64);
    if needed_bytes > memory_bytes / 2 {
        return Err(NodeError::IoMemoryExceedsMemory { io_memory_bytes, shards, memory_bytes });
    }
    Ok(())
}

/// The memory limit of this process's cgroup (v2 `memory.max`, or v1
/// `memory.limit_in_bytes`), when it has one.
fn cgroup_memory_limit() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroup_limit_files(&cgroups)
        .into_iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .filter_map(|text| text.trim().parse::<u64>().ok())
        .min()
}

/// The files that may hold this process's cgroup memory limit, from the
/// text of `/proc/self/cgroup` ("max" in them, or a file missing, means none).
fn cgroup_limit_files(cgroups: &str) -> Vec<String> {
    let mut files = Vec::new();
    for line in cgroups.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next(), fields.next(), fields.next());
        match (controllers, path) {
            (Some(""), Some(path)) => files.push(format!("/sys/fs/cgroup{path}/memory.max")),
            (Some(controllers), Some(path)) if controllers.split(',').any(|name| name == "memory") => {
                files.push(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"))
            }
            _ => {}
        }
    }
    files
}

/// The value of a `/proc/meminfo` or `/proc/PID/status` line given in kB.
fn meminfo_bytes(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find_map(|line| line.strip_prefix(key))?;
    let kib: u64 = line.split_whitespace().next()?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// How many times glommio 0.9 registers a shard's arena: once with each
/// of its rings (main, poll, latency); the kernel counts each in `VmPin`.
const IO_MEMORY_REGISTRATIONS: u64 = 3;

/// Once the shards run: warn when their direct-I/O arenas are not
/// registered with io_uring (docs/STORAGE.md, "Direct-I/O memory"). The
/// runtime then goes on unregistered and says so only through a logger
/// this node does not install; the kernel's count of pinned pages shows
/// what happened, whatever the cause (RLIMIT_MEMLOCK shared by the user's
/// processes, capabilities in a user namespace).
pub fn warn_if_io_memory_unregistered(io_memory_bytes: u64, shards: usize) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let Some(pinned_bytes) = meminfo_bytes(&status, "VmPin:") else { return };
    let memlock_limit = memlock_limit().unwrap_or(0);
    if let Some(warning) = io_memory_warning(pinned_bytes, io_memory_bytes, shards) {
        tracing::warn!(target: "ringlog::node", io_memory_bytes, shards, pinned_bytes, memlock_limit, "{warning}");
    }
}

/// Why the arenas of `shards` shards of `io_memory_bytes` each are not all
/// registered, given the bytes the process has pinned; None when they are.
fn io_memory_warning(pinned_bytes: u64, io_memory_bytes: u64, shards: usize) -> Option<String> {
    let expected_bytes = io_memory_bytes.saturating_mul(shards as u64).saturating_mul(IO_MEMORY_REGISTRATIONS);
    if pinned_bytes >= expected_bytes {
        return None;
    }
    Some(format!(
        "the shards' direct-I/O memory (storage.io_memory_bytes per shard) is not all registered with io_uring: \
         {pinned_bytes} bytes pinned of {expected_bytes}, so disk I/O pins its pages on every request and runs \
         slower. Registering needs CAP_IPC_LOCK, or an RLIMIT_MEMLOCK above {expected_bytes} bytes for this user \
         (each shard registers its memory {IO_MEMORY_REGISTRATIONS} times): raise LimitMEMLOCK or lower \
         storage.io_memory_bytes"
    ))
}

/// The startup barrier: every shard has recovered its partitions and bound
/// its listeners, and no other process shares them.
pub(super) fn wait_until_listening(
    ready: &mpsc::Receiver<Result<ShardId, ShardError>>,
    shards: usize,
    config: &NodeConfig,
) -> Result<(), NodeError> {
    for _ in 0..shards {
        match ready.recv() {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                STOP_REQUESTED.store(true, Ordering::SeqCst);
                return Err(NodeError::Shard(error));
            }
            Err(_) => return Err(NodeError::ShardExitedDuringStartup),
        }
    }
    verify_shard_listeners(config).inspect_err(|_| STOP_REQUESTED.store(true, Ordering::SeqCst))
}

/// Log, print the "listening" line, and tell systemd (Type=notify) that
/// the node has recovered and every listener is bound and verified.
pub(super) fn announce(config: &NodeConfig, shards: usize) {
    let mode = match config.cluster.etcd.is_empty() {
        true => "standalone".into(),
        false => format!("cluster, etcd {}", config.cluster.etcd.join(",")),
    };
    tracing::info!(target: "ringlog::node", listen = %config.listen, admin = %config.admin, shards,
        data_dir = %config.data_dir.display(), %mode, "ringlog node ready");
    let admin_scheme = if config.tls.listener(Listener::Admin).is_some() { "https" } else { "http" };
    println!(
        "ringlog listening on {} (admin {admin_scheme}://{}) with {shards} shards, data in {} ({mode})",
        config.listen,
        config.admin,
        config.data_dir.display()
    );
    crate::systemd::notify(&format!("READY=1\nSTATUS=serving clients on {}", config.listen));
}

/// Each address this node listens on, with the setting that names it; the
/// replication listener only in cluster mode. The first two are shared by
/// every shard with SO_REUSEPORT (the admin listener is the control
/// thread's alone).
pub(super) fn listen_addresses(config: &NodeConfig) -> Vec<(&'static str, &str)> {
    let mut addresses = vec![("listen", config.listen.as_str())];
    if !config.cluster.etcd.is_empty() {
        addresses.push(("replication_listen", config.replication_listen.as_str()));
    }
    if !config.kafka_listen.is_empty() {
        addresses.push(("kafka_listen", config.kafka_listen.as_str()));
    }
    addresses.push(("admin", config.admin.as_str()));
    addresses
}

/// The listeners reachable beyond loopback in plaintext, each with the
/// setting that names it (the defaults bind loopback only, so a laptop
/// never sees this).
pub(super) fn exposed_in_plaintext(config: &NodeConfig) -> Vec<&'static str> {
    let listener_of = |setting: &str| match setting {
        "listen" => Listener::Client,
        "replication_listen" => Listener::Replication,
        "kafka_listen" => Listener::Kafka,
        _ => Listener::Admin,
    };
    listen_addresses(config)
        .into_iter()
        .filter(|(setting, address)| !is_loopback(address) && config.tls.listener(listener_of(setting)).is_none())
        .map(|(setting, _)| setting)
        .collect()
}

/// One warning at startup when a listener is reachable beyond loopback
/// without TLS.
pub(super) fn warn_if_exposed(config: &NodeConfig) {
    let exposed = exposed_in_plaintext(config);
    if !exposed.is_empty() {
        tracing::warn!(target: "ringlog::node", listeners = %exposed.join(","),
            "listening beyond loopback without TLS: anyone on the network can read and change this traffic (set [tls] cert_file and key_file)");
    }
    // The client and the Kafka listener both let clients create and delete
    // topics, so either one beyond loopback without `[auth]` is open.
    let open = [("listen", config.listen.as_str()), ("kafka_listen", config.kafka_listen.as_str())]
        .into_iter()
        .filter(|(_, address)| !address.is_empty() && !is_loopback(address))
        .map(|(setting, _)| setting)
        .collect::<Vec<_>>();
    if !config.auth.enabled && !open.is_empty() {
        tracing::warn!(target: "ringlog::node", listeners = %open.join(","),
            "clients beyond loopback need no credentials: anyone who reaches these ports can create and delete topics (set [auth] enabled and a users file, docs/SECURITY.md)");
    }
}

/// Whether `address` (`host:port`) binds a loopback interface only.
fn is_loopback(address: &str) -> bool {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Refuse to start, before recovery, when another process listens on one
/// of our addresses (`net::ports`). The patience covers the listeners of a
/// SIGKILLed predecessor, which io_uring's teardown keeps for a moment.
pub(super) fn claim_addresses(config: &NodeConfig) -> Result<(), NodeError> {
    for (setting, address) in listen_addresses(config) {
        crate::net::ports::ensure_sole_listener(setting, address, Duration::from_secs(3))
            .map_err(|reason| address_unavailable(setting, address, reason))?;
    }
    Ok(())
}

/// Once every shard listens: no other process joined our SO_REUSEPORT
/// groups between the probe and the binds (`net::ports`).
pub(super) fn verify_shard_listeners(config: &NodeConfig) -> Result<(), NodeError> {
    for (setting, address) in listen_addresses(config) {
        if setting != "admin" {
            crate::net::ports::ensure_sole_listener(setting, address, Duration::ZERO)
                .map_err(|reason| address_unavailable(setting, address, reason))?;
        }
    }
    Ok(())
}

fn address_unavailable(setting: &'static str, address: &str, reason: String) -> NodeError {
    NodeError::AddressUnavailable { setting, address: address.to_string(), reason }
}

/// The address to reach `listen` from this machine (0.0.0.0 → 127.0.0.1).
pub(super) fn loopback_address(listen: &str) -> String {
    crate::config::loopback_address(listen)
}

/// `address` with its host replaced by `advertise` (when set), else made
/// reachable from this machine.
pub(super) fn advertised(address: &str, advertise: Option<&str>) -> String {
    crate::config::advertised_address(address, advertise)
}

/// The addresses this node registers in etcd.
pub(super) fn advertised_addresses(config: &NodeConfig) -> Registration {
    let advertise = config.cluster.advertise.as_deref();
    Registration {
        id: 0,
        client: advertised(&config.listen, advertise),
        replication: advertised(&config.replication_listen, advertise),
        admin: advertised(&config.admin, advertise),
        kafka: config.kafka_advertised(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listeners_beyond_loopback_without_tls_are_called_exposed() {
        let mut config = NodeConfig::default();
        assert!(exposed_in_plaintext(&config).is_empty(), "the defaults bind loopback only");
        config.listen = "0.0.0.0:7070".into();
        config.kafka_listen = "[::]:9092".into();
        config.admin = "localhost:7071".into();
        assert_eq!(exposed_in_plaintext(&config), ["listen", "kafka_listen"]);
        config.tls = toml::from_str("cert_file = 'n.pem'\nkey_file = 'n.key'\n[kafka]\nenabled = false").unwrap();
        assert_eq!(exposed_in_plaintext(&config), ["kafka_listen"], "TLS covers the client listener");
    }

    #[test]
    fn unregistered_io_memory_is_warned_about_from_the_pinned_count() {
        let io_memory = 128 << 20;
        let registered = 3 * 2 * io_memory;
        assert_eq!(io_memory_warning(registered, io_memory, 2), None, "three rings, two shards");
        let warning = io_memory_warning(0, io_memory, 2).expect("nothing pinned");
        assert!(warning.contains("0 bytes pinned of 805306368"), "{warning}");
        assert!(io_memory_warning(registered / 2, io_memory, 2).is_some(), "one shard of two unregistered");
        let status = "Name:\tringlog\nVmPin:\t  786432 kB\nVmRSS:\t 273848 kB\n";
        assert_eq!(meminfo_bytes(status, "VmPin:"), Some(805_306_368));
        assert_eq!(meminfo_bytes("MemTotal:       24567848 kB\n", "MemTotal:"), Some(24_567_848 * 1024));
        assert_eq!(meminfo_bytes(status, "VmLck:"), None);
    }

    #[test]
    fn the_cgroup_memory_limit_is_looked_for_under_v2_and_v1() {
        let v1 = "9:name=systemd:/\n4:memory:/process_api/a9\n0::/\n";
        assert_eq!(
            cgroup_limit_files(v1),
            ["/sys/fs/cgroup/memory/process_api/a9/memory.limit_in_bytes", "/sys/fs/cgroup//memory.max"]
        );
        assert_eq!(
            cgroup_limit_files("0::/system.slice/ringlog.service\n"),
            ["/sys/fs/cgroup/system.slice/ringlog.service/memory.max"]
        );
        assert_eq!(cgroup_limit_files("3:cpu,memory:/a\n"), ["/sys/fs/cgroup/memory/a/memory.limit_in_bytes"]);
        assert!(cgroup_limit_files("garbage").is_empty());
    }

    #[test]
    fn io_memory_beyond_half_the_machine_is_refused_naming_the_setting() {
        let error = check_io_memory_fits(1 << 30, 1 << 20).unwrap_err();
        assert!(matches!(error, NodeError::IoMemoryExceedsMemory { .. }) && error.is_environment());
        assert!(error.to_string().starts_with("storage.io_memory_bytes (1073741824) times 1048576 shards"), "{error}");
        assert!(check_io_memory_fits(64 << 10, 2).is_ok());
    }
}
