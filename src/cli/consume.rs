//! `ringlog consume TOPIC`: read from an offset, a timestamp, the start, the
//! end or a consumer group's committed offset; stop at the high watermark
//! seen at start unless `--follow`.

use std::io::Write;
use std::process::ExitCode;

use base64::Engine;

use super::client::{run_async, ServerArgs};
use super::{fail, EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
use crate::net::client::{unexpected, Client, ClientError};
use crate::protocol::{CommittedState, ErrorCode, ErrorResponse, Request, Response};
use crate::storage::batch::{BatchIter, RecordIter, RecordView, BATCH_HEADER_BYTES};

/// Flags of `ringlog consume`.
#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    /// Topic.
    topic: String,
    /// Partition (default: every partition).
    #[arg(long)]
    partition: Option<u32>,
    /// earliest, latest, an offset, or @TIMESTAMP_MS.
    #[arg(long)]
    from: Option<String>,
    /// Stop after this many records.
    #[arg(long)]
    count: Option<u64>,
    /// Keep waiting for new records (long poll).
    #[arg(long)]
    follow: bool,
    /// Consumer group: resume from and commit to it.
    #[arg(long)]
    group: Option<String>,
    /// With --group: where to restart when the committed offset is out of range (earliest|latest).
    #[arg(long)]
    reset: Option<String>,
    /// value (one value per line) or json.
    #[arg(long, default_value = "value")]
    format: String,
    #[command(flatten)]
    server: ServerArgs,
}

/// Run `consume`.
pub fn run(args: ConsumeArgs) -> ExitCode {
    if !["value", "json"].contains(&args.format.as_str()) {
        return fail("--format must be value or json", EXIT_USAGE);
    }
    if args.reset.as_deref().is_some_and(|reset| reset != "earliest" && reset != "latest") {
        return fail("--reset must be earliest or latest", EXIT_USAGE);
    }
    let outcome = run_async(async {
        tokio::select! {
            outcome = consume(args) => outcome,
            () = reader_gone() => Err(Stop::ReaderGone),
        }
    });
    match outcome {
        Ok(Ok(()) | Err(Stop::ReaderGone)) => ExitCode::from(EXIT_OK),
        Ok(Err(Stop::Client(error))) => fail(error, EXIT_FAILURE),
        Ok(Err(Stop::Output(error))) => fail(format!("cannot write to stdout: {error}"), EXIT_FAILURE),
        Err(error) => fail(error, EXIT_FAILURE),
    }
}

/// Why consuming ended before its natural end.
enum Stop {
    /// The server or the connection failed.
    Client(ClientError),
    /// Whoever read our stdout has gone (`| head`): a normal end, exit 0
    /// quietly as `cat` does.
    ReaderGone,
    /// Any other failure to write stdout (a full disk…): records would be
    /// lost silently, so it is an error.
    Output(std::io::Error),
}

impl From<ClientError> for Stop {
    fn from(error: ClientError) -> Stop {
        Stop::Client(error)
    }
}

impl From<std::io::Error> for Stop {
    fn from(error: std::io::Error) -> Stop {
        match error.kind() {
            std::io::ErrorKind::BrokenPipe => Stop::ReaderGone,
            _ => Stop::Output(error),
        }
    }
}

/// Resolves once stdout is a pipe or socket nobody reads any more. A
/// `--follow` with no new records never writes, so it would never see
/// EPIPE: `consume --follow | head -1` would outlive `head` forever.
async fn reader_gone() {
    loop {
        let mut stdout = libc::pollfd { fd: libc::STDOUT_FILENO, events: 0, revents: 0 };
        // SAFETY: one valid pollfd and a zero timeout; poll only writes revents.
        let ready = unsafe { libc::poll(&mut stdout, 1, 0) };
        // POLLERR is what a pipe's write end reports once its reader closed.
        if ready > 0 && stdout.revents & (libc::POLLERR | libc::POLLHUP) != 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

struct Cursor {
    partition: u32,
    offset: u64,
    stop_at: u64,
}

async fn consume(args: ConsumeArgs) -> Result<(), Stop> {
    let mut client = args.server.client(30_000)?;
    let partitions = match args.partition {
        Some(partition) => vec![partition],
        None => (0..topic_partitions(&mut client, &args.topic).await?).collect(),
    };
    let mut cursors = Vec::new();
    for partition in partitions {
        let (log_start, log_end) = offsets(&mut client, &args.topic, partition).await?;
        let offset = start_offset(&mut client, &args, partition, log_start, log_end).await?;
        cursors.push(Cursor { partition, offset, stop_at: log_end });
    }
    let mut printed = 0u64;
    let limit = args.count.unwrap_or(u64::MAX);
    loop {
        let mut progressed = false;
        for cursor in cursors.iter_mut() {
            if printed >= limit || (!args.follow && cursor.offset >= cursor.stop_at) {
                continue;
            }
            let wait_ms = if args.follow && cursors_len_one(args.partition) { 1_000 } else { 0 };
            let fetched = client.fetch(&args.topic, cursor.partition, cursor.offset, 1 << 20, wait_ms).await?;
            let before = cursor.offset;
            printed += print_batches(&args, cursor, &fetched.batches, limit - printed)?;
            if cursor.offset > before {
                progressed = true;
                if let Some(group) = &args.group {
                    let request = Request::CommitOffset {
                        group: group.clone(),
                        topic: args.topic.clone(),
                        partition: cursor.partition,
                        offset: cursor.offset,
                    };
                    client.call(&request).await?;
                }
            }
        }
        let done = cursors.iter().all(|cursor| cursor.offset >= cursor.stop_at);
        if printed >= limit || (!args.follow && done) {
            return Ok(());
        }
        if args.follow && !progressed && !cursors_len_one(args.partition) {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

fn cursors_len_one(partition: Option<u32>) -> bool {
    partition.is_some()
}

async fn topic_partitions(client: &mut Client, topic: &str) -> Result<u32, ClientError> {
    client.topic_partitions(topic).await
}

async fn offsets(client: &mut Client, topic: &str, partition: u32) -> Result<(u64, u64), ClientError> {
    match client.call(&Request::ListOffsets { topic: topic.into(), partition }).await? {
        Response::ListOffsets { log_start_offset, high_watermark, .. } => Ok((log_start_offset, high_watermark)),
        other => Err(unexpected(other)),
    }
}

async fn start_offset(
    client: &mut Client,
    args: &ConsumeArgs,
    partition: u32,
    log_start: u64,
    log_end: u64,
) -> Result<u64, ClientError> {
    if let (Some(group), None) = (&args.group, &args.from) {
        let request = Request::FetchOffset { group: group.clone(), topic: args.topic.clone(), partition };
        match client.call(&request).await? {
            Response::FetchOffset(CommittedState::Valid(offset)) => return Ok(offset),
            Response::FetchOffset(CommittedState::None) => return Ok(log_start),
            Response::FetchOffset(CommittedState::OutOfRange { committed, log_start_offset, log_end_offset }) => {
                return match args.reset.as_deref() {
                    Some("earliest") => Ok(log_start_offset),
                    Some("latest") => Ok(log_end_offset),
                    _ => Err(ClientError::Server(ErrorResponse {
                        code: ErrorCode::OffsetOutOfRange,
                        message: format!(
                            "group {group} committed offset {committed} on partition {partition}, outside the log \
                             [{log_start_offset}, {log_end_offset}]; rerun with --reset earliest|latest"
                        ),
                        leader: None,
                    })),
                };
            }
            other => return Err(unexpected(other)),
        }
    }
    match args.from.as_deref().unwrap_or("earliest") {
        "earliest" => Ok(log_start),
        "latest" => Ok(log_end),
        text if text.starts_with('@') => {
            let timestamp_ms: i64 = text[1..].parse().map_err(|_| invalid(format!("bad timestamp {text:?}")))?;
            let request = Request::FindOffset { topic: args.topic.clone(), partition, timestamp_ms };
            match client.call(&request).await? {
                Response::FindOffset { offset } => Ok(offset.unwrap_or(log_end)),
                other => Err(unexpected(other)),
            }
        }
        text => text
            .parse()
            .map_err(|_| invalid(format!("--from must be earliest, latest, OFFSET or @TS_MS, not {text:?}"))),
    }
}

fn invalid(message: String) -> ClientError {
    ClientError::Server(ErrorResponse { code: ErrorCode::InvalidRequest, message, leader: None })
}

/// Print records at or after the cursor; returns how many were printed.
fn print_batches(args: &ConsumeArgs, cursor: &mut Cursor, batches: &[u8], limit: u64) -> std::io::Result<u64> {
    let mut printed = 0;
    let mut stdout = std::io::stdout().lock();
    for (header, batch) in BatchIter::new(batches, usize::MAX).flatten() {
        for (index, record) in RecordIter::new(&batch[BATCH_HEADER_BYTES..]).flatten().enumerate() {
            let offset = header.base_offset + index as u64;
            if offset < cursor.offset || printed >= limit || (!args.follow && offset >= cursor.stop_at) {
                continue;
            }
            writeln!(stdout, "{}", render(args, cursor.partition, offset, &record))?;
            printed += 1;
            cursor.offset = offset + 1;
        }
    }
    stdout.flush()?;
    Ok(printed)
}

/// One output line. JSON lines end with `"partition"`: the spec's shape
/// comes first, unchanged, and offsets of different partitions overlap.
fn render(args: &ConsumeArgs, partition: u32, offset: u64, record: &RecordView<'_>) -> String {
    if args.format == "value" {
        return String::from_utf8_lossy(record.value).into_owned();
    }
    let mut object = serde_json::Map::new();
    object.insert("offset".into(), offset.into());
    object.insert("timestamp_ms".into(), record.timestamp_ms.into());
    match record.key {
        None => {
            object.insert("key".into(), serde_json::Value::Null);
        }
        Some(key) => match std::str::from_utf8(key) {
            Ok(text) => {
                object.insert("key".into(), text.into());
            }
            Err(_) => {
                object.insert("key_b64".into(), base64::engine::general_purpose::STANDARD.encode(key).into());
            }
        },
    }
    match std::str::from_utf8(record.value) {
        Ok(text) => object.insert("value".into(), text.into()),
        Err(_) => {
            object.insert("value_b64".into(), base64::engine::general_purpose::STANDARD.encode(record.value).into())
        }
    };
    object.insert("partition".into(), partition.into());
    serde_json::Value::Object(object).to_string()
}
