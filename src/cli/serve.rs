//! `ringlog serve`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{fail, EXIT_ENVIRONMENT, EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
use crate::config::{ConfigError, NodeConfig};

/// Flags of `ringlog serve`; every other setting is in the config file or
/// `RINGLOG_*` variables (see docs/CONFIG.md, or `--print-config`).
#[derive(Debug, clap::Args)]
#[command(after_help = "Settings: defaults < --config FILE (TOML) < RINGLOG_* environment < flags.\n\
Every setting and its value: ringlog serve --print-config. Reference: docs/CONFIG.md.\n\
Environment: RINGLOG_<KEY> for top-level keys (RINGLOG_LISTEN), RINGLOG_<SECTION>_<KEY> for\n\
[storage], [limits] and [cluster] keys (RINGLOG_STORAGE_FSYNC=never, RINGLOG_LIMITS_MAX_CONNECTIONS=100).")]
pub struct ServeArgs {
    /// TOML config file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (default ./ringlog-data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Client listener (default 127.0.0.1:7070).
    #[arg(long)]
    listen: Option<String>,
    /// Admin HTTP listener (default 127.0.0.1:7071).
    #[arg(long)]
    admin: Option<String>,
    /// Data shards (default: one per core).
    #[arg(long)]
    shards: Option<usize>,
    /// etcd endpoints, comma separated (cluster mode).
    #[arg(long, value_delimiter = ',')]
    etcd: Vec<String>,
    /// etcd key prefix (default ringlog).
    #[arg(long)]
    cluster_prefix: Option<String>,
    /// Replication listener (default 127.0.0.1:7072).
    #[arg(long)]
    replication_listen: Option<String>,
    /// Kafka protocol listener (default 127.0.0.1:9092; empty disables it).
    #[arg(long)]
    kafka_listen: Option<String>,
    /// Host other nodes and clients use to reach this node.
    #[arg(long)]
    advertise: Option<String>,
    /// Print the effective settings as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

fn resolve(args: &ServeArgs) -> Result<NodeConfig, ConfigError> {
    let mut config = NodeConfig::load_unchecked(args.config.as_deref(), std::env::vars())?;
    if let Some(data_dir) = &args.data_dir {
        config.data_dir = data_dir.clone();
    }
    if let Some(listen) = &args.listen {
        config.listen = listen.clone();
    }
    if let Some(admin) = &args.admin {
        config.admin = admin.clone();
    }
    if let Some(shards) = args.shards {
        config.shards = shards;
    }
    if !args.etcd.is_empty() {
        config.cluster.etcd = args.etcd.clone();
    }
    if let Some(prefix) = &args.cluster_prefix {
        config.cluster.prefix = prefix.clone();
    }
    if let Some(replication_listen) = &args.replication_listen {
        config.replication_listen = replication_listen.clone();
    }
    if let Some(kafka_listen) = &args.kafka_listen {
        config.kafka_listen = kafka_listen.clone();
    }
    if let Some(advertise) = &args.advertise {
        config.cluster.advertise = Some(advertise.clone());
    }
    config.validate()?;
    Ok(config)
}

/// A panic on any thread ends the process (after the usual message): a
/// node whose shard thread died would keep its lease and its connections
/// while that shard's partitions never moved again. Crashing hands it to
/// the supervisor, and recovery after a crash is the tested path.
fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
}

/// Run `serve`.
pub fn run(args: ServeArgs) -> ExitCode {
    let config = match resolve(&args) {
        Ok(config) => config,
        Err(message) => return fail(message, EXIT_USAGE),
    };
    if args.print_config {
        print!("{}", config.to_toml());
        return ExitCode::from(EXIT_OK);
    }
    abort_on_panic();
    match crate::node::serve(config) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(error) if error.is_environment() => fail(error, EXIT_ENVIRONMENT),
        Err(error) => fail(error, EXIT_FAILURE),
    }
}
