//! The `ringlog` command line: argument parsing, exit codes, output.

mod acl;
mod bench;
mod check;
mod client;
mod consume;
mod demo;
mod nodes;
mod payload;
mod produce;
mod serve;
mod topic;
mod user;
pub mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for success.
pub const EXIT_OK: u8 = 0;
/// Exit code for an operational failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for a usage error.
pub const EXIT_USAGE: u8 = 2;
/// Exit code for an unusable environment (no io_uring, memlock too low…).
pub const EXIT_ENVIRONMENT: u8 = 78;

/// ringlog: a thread-per-core, io_uring append-only log node.
#[derive(Debug, Parser)]
#[command(name = "ringlog", version, about)]
pub struct Cli {
    /// Log lines on stderr: text, or one JSON object per line for log shippers.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "RINGLOG_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colored on a terminal).
    Text,
    /// One JSON object per line: timestamp, level, target, message, fields.
    Json,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (standalone without --etcd).
    Serve(serve::ServeArgs),
    /// Create, list or delete topics.
    Topic {
        /// What to do.
        #[command(subcommand)]
        action: topic::TopicAction,
        #[command(flatten)]
        server: client::ServerArgs,
    },
    /// Append records read from stdin, one value per line.
    Produce(produce::ProduceArgs),
    /// Print records of a topic.
    Consume(consume::ConsumeArgs),
    /// List the cluster's replicas (leader first).
    Nodes {
        /// Print the same JSON array as GET /api/nodes.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: nodes::AdminArgs,
    },
    /// Remove a replica that is gone for good from the cluster.
    ForgetNode {
        /// The node id.
        id: u64,
        #[command(flatten)]
        admin: nodes::AdminArgs,
    },
    /// Add, list or remove users (`[auth]`): offline with --users-file, else through the admin API.
    User {
        /// What to do.
        #[command(subcommand)]
        action: user::UserAction,
        #[command(flatten)]
        admin: nodes::AdminArgs,
    },
    /// List what each user may do, or change a user's role and topics.
    Acl {
        /// What to do.
        #[command(subcommand)]
        action: acl::AclAction,
        #[command(flatten)]
        admin: nodes::AdminArgs,
    },
    /// Load generator: produce, consume or e2e, with latency percentiles.
    Bench(bench::BenchArgs),
    /// Verify every segment, batch CRC, offset and index in a data directory.
    Check {
        /// Data directory (or any directory holding partitions).
        dir: PathBuf,
        /// Truncate damaged tails and rebuild bad indexes (takes the data dir lock).
        #[arg(long)]
        repair: bool,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run the storage engine end to end on a local partition and print figures.
    StorageDemo {
        /// Data directory.
        #[arg(long, default_value = "./ringlog-data")]
        data_dir: PathBuf,
        /// Records to append.
        #[arg(long, default_value_t = 100_000)]
        records: u64,
        /// Records per batch.
        #[arg(long, default_value_t = 100)]
        batch: u32,
        /// Durability policy: always, interval or never.
        #[arg(long, default_value = "always")]
        fsync: String,
    },
    /// Print a shell completion script (e.g. `ringlog completions bash > /etc/bash_completion.d/ringlog`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Internal: append batches and print acknowledgements (used by crash tests).
    #[command(hide = true, name = "__append-worker")]
    AppendWorker {
        /// Partition directory.
        #[arg(long)]
        dir: PathBuf,
        /// Concurrent appenders.
        #[arg(long, default_value_t = 4)]
        appenders: u32,
        /// Durability policy.
        #[arg(long, default_value = "always")]
        fsync: String,
        /// Segment size (small values exercise rolling).
        #[arg(long, default_value_t = 1 << 20)]
        segment_bytes: u64,
    },
}

/// Set up logging: `RUST_LOG`-style filter, default `info`, to stderr.
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init(),
        // Flattened, so `message` and the event's fields sit at the top
        // level where shippers (Vector, Fluent Bit, Loki) look for them.
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Every `serve` setting with its default, for `serve --help`.
pub fn serve_settings_help() -> String {
    format!(
        "Settings: defaults < --config FILE (TOML) < RINGLOG_* environment < flags.\n\
         Environment: RINGLOG_<KEY> (RINGLOG_LISTEN), RINGLOG_<SECTION>_<KEY> (RINGLOG_STORAGE_FSYNC=never).\n\
         Reference: docs/CONFIG.md. Every setting and its default:\n\n{}",
        crate::config::NodeConfig::default().to_toml()
    )
}

/// Print the one-line error and pick the exit code.
pub fn fail(message: impl std::fmt::Display, code: u8) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

/// Run the parsed command.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Topic { action, server } => topic::run(action, server),
        Command::Produce(args) => produce::run(args),
        Command::Consume(args) => consume::run(args),
        Command::Nodes { json, admin } => nodes::run_nodes(&admin, json),
        Command::ForgetNode { id, admin } => nodes::run_forget(&admin, id),
        Command::User { action, admin } => user::run(action, admin),
        Command::Acl { action, admin } => acl::run(action, admin),
        Command::Bench(args) => bench::run(args),
        Command::Check { dir, repair, json } => check::run(&dir, repair, json),
        Command::StorageDemo { data_dir, records, batch, fsync } => demo::run(&data_dir, records, batch, &fsync),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "ringlog", &mut std::io::stdout());
            ExitCode::from(EXIT_OK)
        }
        Command::AppendWorker { dir, appenders, fsync, segment_bytes } => {
            worker::run(&dir, appenders, &fsync, segment_bytes)
        }
    }
}
