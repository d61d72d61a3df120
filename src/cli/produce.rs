//! `ringlog produce TOPIC`: one record per stdin line, batched, idempotent,
//! retried across the bootstrap list; `--json` prints each ack as it arrives.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use super::client::{finish, parse_acks, ServerArgs};
use super::{fail, EXIT_USAGE};
use crate::net::client::{unexpected, Client, ClientError};
use crate::protocol::{Acks, Request, Response};
use crate::runtime::clock::wall_ms;
use crate::storage::batch::BatchBuilder;

/// Flags of `ringlog produce`.
#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    /// Topic.
    topic: String,
    /// Partition (default: by key hash, else round robin per batch).
    #[arg(long)]
    partition: Option<u32>,
    /// none, leader or all.
    #[arg(long, default_value = "all")]
    acks: String,
    /// Key for every record.
    #[arg(long)]
    key: Option<String>,
    /// Records per batch.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Keep retrying a failed batch for this long.
    #[arg(long, default_value_t = 30_000)]
    retry_ms: u64,
    /// Print one JSON line per acknowledged batch.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// Lines are read on a plain thread; a batch is sent when full, or when no
/// line has arrived for this long (interactive use).
const LINGER: Duration = Duration::from_millis(50);

/// Run `produce`.
pub fn run(args: ProduceArgs) -> ExitCode {
    let acks = match parse_acks(&args.acks) {
        Ok(acks) => acks,
        Err(message) => return fail(message, EXIT_USAGE),
    };
    if args.batch == 0 {
        return fail("--batch must be at least 1", EXIT_USAGE);
    }
    let (sender, receiver) = tokio::sync::mpsc::channel::<String>(args.batch * 4);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if sender.blocking_send(line).is_err() {
                break;
            }
        }
    });
    finish(produce(args, acks, receiver))
}

struct Producer {
    client: Client,
    topic: String,
    partitions: u32,
    producer_id: u64,
    sequences: HashMap<u32, u32>,
    next_partition: u32,
}

async fn produce(
    args: ProduceArgs,
    acks: Acks,
    mut lines: tokio::sync::mpsc::Receiver<String>,
) -> Result<(), ClientError> {
    let mut client = args.server.client(args.retry_ms)?;
    let partitions = client.topic_partitions(&args.topic).await?;
    let producer_id = match client.call(&Request::InitProducer).await? {
        Response::InitProducer { producer_id } => producer_id,
        other => return Err(unexpected(other)),
    };
    let mut producer = Producer {
        client,
        topic: args.topic.clone(),
        partitions,
        producer_id,
        sequences: HashMap::new(),
        next_partition: 0,
    };
    let mut pending: Vec<String> = Vec::with_capacity(args.batch);
    loop {
        let line = if pending.is_empty() {
            lines.recv().await
        } else {
            match tokio::time::timeout(LINGER, lines.recv()).await {
                Ok(line) => line,
                Err(_) => {
                    producer.send(&args, acks, &mut pending).await?;
                    continue;
                }
            }
        };
        match line {
            Some(line) => {
                pending.push(line);
                if pending.len() >= args.batch {
                    producer.send(&args, acks, &mut pending).await?;
                }
            }
            None => {
                if !pending.is_empty() {
                    producer.send(&args, acks, &mut pending).await?;
                }
                return Ok(());
            }
        }
    }
}

impl Producer {
    fn choose_partition(&mut self, args: &ProduceArgs) -> u32 {
        if let Some(partition) = args.partition {
            return partition;
        }
        if let Some(key) = &args.key {
            return crc32fast::hash(key.as_bytes()) % self.partitions;
        }
        let partition = self.next_partition % self.partitions;
        self.next_partition = self.next_partition.wrapping_add(1);
        partition
    }

    /// Send one batch; retries reuse the same sequence, so a batch whose ack
    /// was lost is recognised by the node instead of being written twice.
    async fn send(&mut self, args: &ProduceArgs, acks: Acks, lines: &mut Vec<String>) -> Result<(), ClientError> {
        let partition = self.choose_partition(args);
        let sequence = *self.sequences.get(&partition).unwrap_or(&0);
        let mut builder = BatchBuilder::new();
        builder.set_producer(self.producer_id, sequence);
        let timestamp = wall_ms();
        for line in lines.iter() {
            builder.push(timestamp, args.key.as_deref().map(str::as_bytes), line.as_bytes(), &[]);
        }
        let count = lines.len();
        let request = Request::Produce { topic: self.topic.clone(), partition, acks, batch: builder.finish().to_vec() };
        let base_offset = match self.client.call(&request).await? {
            Response::Produce { base_offset, .. } => base_offset,
            other => return Err(unexpected(other)),
        };
        self.sequences.insert(partition, sequence.wrapping_add(count as u32));
        lines.clear();
        if args.json {
            let line = serde_json::json!({"topic": self.topic, "partition": partition, "base_offset": base_offset, "count": count});
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{line}");
            let _ = stdout.flush();
        }
        Ok(())
    }
}
