//! Why the node could not start or run: [`NodeError`] for `serve` and the
//! control thread, [`ShardError`] for one data shard's executor. Each
//! variant names what failed (the address, topic, shard or setting), so the
//! one line `ringlog serve` prints on failure says where to look.

use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;

use crate::shard::ShardId;
use crate::storage::StorageError;

/// Why the node could not run. [`NodeError::is_environment`] tells the
/// failures of the machine (exit 78) from the operational ones (exit 1).
#[derive(Debug, Error)]
pub enum NodeError {
    /// `kernel.io_uring_disabled` is 2 (environment).
    #[error("io_uring is disabled (kernel.io_uring_disabled = 2); enable it with sysctl kernel.io_uring_disabled=0")]
    IoUringDisabled,
    /// No io_uring instance could be created (environment).
    #[error("io_uring is not available ({source}); ringlog needs Linux 5.10+ with io_uring")]
    IoUringUnavailable {
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// The supported io_uring operations could not be listed (environment).
    #[error("cannot probe io_uring operations: {source}")]
    IoUringProbe {
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// The kernel's io_uring lacks an operation ringlog uses (environment).
    #[error("io_uring lacks the {operation} operation; upgrade the kernel")]
    IoUringOperationMissing {
        /// The operation's name (read, write, fsync, fallocate).
        operation: &'static str,
    },
    /// RLIMIT_MEMLOCK is below what the executors need (environment).
    #[error(
        "RLIMIT_MEMLOCK is {limit_bytes} bytes; ringlog needs at least {minimum_bytes} (ulimit -l {})",
        minimum_bytes / 1024
    )]
    MemlockTooLow {
        /// The process's soft limit.
        limit_bytes: u64,
        /// What ringlog needs.
        minimum_bytes: u64,
    },
    /// `storage.io_memory_bytes` times the shards would take more than half
    /// the memory the node may use (environment: the setting does not fit).
    #[error(
        "storage.io_memory_bytes ({io_memory_bytes}) times {shards} shards is more than half of the \
         {memory_bytes} bytes of memory this node may use (the machine's, or its cgroup's limit); each shard sets \
         it aside and pins it at start: lower it"
    )]
    IoMemoryExceedsMemory {
        /// The setting, per shard.
        io_memory_bytes: u64,
        /// The node's shards.
        shards: usize,
        /// `MemTotal` from /proc/meminfo, or the cgroup's limit when lower.
        memory_bytes: u64,
    },
    /// A shard's executor thread could not be started (environment).
    #[error("cannot start shard executor {shard}: {source}")]
    ShardExecutor {
        /// The shard.
        shard: ShardId,
        /// glommio's error.
        #[source]
        source: std::io::Error,
    },
    /// The data directory could not be created or locked (another node
    /// holds it, or the filesystem refused); the message names the path.
    #[error(transparent)]
    DataDirectory(StorageError),
    /// The users file could not be read (`auth.users_file`).
    #[error(transparent)]
    Users(#[from] crate::security::UsersError),
    /// The topic metadata under the data directory could not be read.
    #[error("cannot load topics from {}: {source}", data_dir.display())]
    LoadTopics {
        /// The data directory.
        data_dir: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Another process listens on one of this node's addresses, or the
    /// check could not be made (`net::ports`, whose message names both).
    #[error("{reason}")]
    AddressUnavailable {
        /// The setting that names the address (`listen`, `admin`, …).
        setting: &'static str,
        /// The address.
        address: String,
        /// What `net::ports` found.
        reason: String,
    },
    /// A certificate or key of `[tls]` cannot be used.
    #[error("TLS: {0}")]
    Tls(#[source] crate::security::tls::TlsError),
    /// The `[cluster]` etcd TLS files cannot be used.
    #[error("etcd access: {0}")]
    EtcdAccess(#[source] crate::cluster::error::ClusterError),
    /// SIGINT/SIGTERM handlers could not be installed.
    #[error("cannot install signal handlers: {source}")]
    SignalHandlers {
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An OS thread of the node could not be started.
    #[error("cannot start the {thread} thread: {source}")]
    Thread {
        /// Which thread (signal, control).
        thread: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The admin listener could not be bound or set up.
    #[error("cannot listen on {address}: {source}")]
    AdminListener {
        /// The `admin` address.
        address: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A shard ended before it reported whether it started.
    #[error("a shard exited during startup")]
    ShardExitedDuringStartup,
    /// A shard's executor panicked or could not be joined.
    #[error("shard {shard} failed: {source}")]
    ShardJoin {
        /// The shard.
        shard: ShardId,
        /// glommio's error.
        #[source]
        source: std::io::Error,
    },
    /// A shard failed (startup, serving or shutdown).
    #[error(transparent)]
    Shard(#[from] ShardError),
}

impl NodeError {
    /// Whether the machine cannot run ringlog (exit 78) rather than this
    /// run having failed (exit 1).
    pub fn is_environment(&self) -> bool {
        matches!(
            self,
            NodeError::IoUringDisabled
                | NodeError::IoUringUnavailable { .. }
                | NodeError::IoUringProbe { .. }
                | NodeError::IoUringOperationMissing { .. }
                | NodeError::MemlockTooLow { .. }
                | NodeError::IoMemoryExceedsMemory { .. }
                | NodeError::ShardExecutor { .. }
        )
    }
}

/// Why one data shard failed. Cloneable (sources behind `Arc`) because a
/// startup failure goes both to the startup barrier and out of the
/// executor as its result.
#[derive(Debug, Clone, Error)]
pub enum ShardError {
    /// A client or replication listener could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The shard.
        shard: ShardId,
        /// The address.
        address: String,
        /// The cause.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A topic's partitions could not be opened (recovered).
    #[error("cannot open topic {topic}: {source}")]
    OpenTopic {
        /// The shard.
        shard: ShardId,
        /// The topic.
        topic: String,
        /// The storage engine's error (path, position, offset).
        #[source]
        source: Arc<StorageError>,
    },
    /// Shutdown was requested before every shard had opened its partitions.
    #[error("shard {shard} stopped during startup")]
    StoppedDuringStartup {
        /// The shard.
        shard: ShardId,
    },
    /// The partitions could not be closed cleanly (flush, fsync, marker).
    #[error("shard {shard}: {source}")]
    Close {
        /// The shard.
        shard: ShardId,
        /// The storage engine's error.
        #[source]
        source: Arc<StorageError>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_failures_exit_as_environment_and_run_failures_do_not() {
        let memlock = NodeError::MemlockTooLow { limit_bytes: 65_536, minimum_bytes: 524_288 };
        assert!(memlock.is_environment());
        assert_eq!(memlock.to_string(), "RLIMIT_MEMLOCK is 65536 bytes; ringlog needs at least 524288 (ulimit -l 512)");
        let refused = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let bind = ShardError::Bind { shard: 1, address: "127.0.0.1:7070".into(), source: Arc::new(refused) };
        let error = NodeError::from(bind);
        assert!(!error.is_environment());
        assert!(error.to_string().starts_with("cannot listen on 127.0.0.1:7070: "), "{error}");
    }
}
