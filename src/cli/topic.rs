//! `ringlog topic create|list|delete`.

use std::process::ExitCode;

use super::client::{run_async, ServerArgs};
use super::{fail, EXIT_FAILURE, EXIT_OK};
use crate::net::client::unexpected;
use crate::protocol::{Request, Response, TopicSettings};

/// Topic subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum TopicAction {
    /// Create a topic.
    Create {
        /// Topic name ([A-Za-z0-9._-]{1,200}).
        name: String,
        /// Number of partitions.
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Retention by size per partition (0 = unlimited).
        #[arg(long, default_value_t = 0)]
        retention_bytes: u64,
        /// Retention by age (0 = unlimited).
        #[arg(long, default_value_t = 0)]
        retention_ms: u64,
        /// Segment size (0 = node default).
        #[arg(long, default_value_t = 0)]
        segment_bytes: u64,
    },
    /// List topics.
    List {
        /// One JSON array instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Delete a topic and its data.
    Delete {
        /// Topic name.
        name: String,
    },
}

/// Run a topic subcommand.
pub fn run(action: TopicAction, server: ServerArgs) -> ExitCode {
    let outcome = run_async(async move {
        let mut client = server.client(5_000)?;
        match action {
            TopicAction::Create { name, partitions, retention_bytes, retention_ms, segment_bytes } => {
                let settings = TopicSettings { partitions, retention_bytes, retention_ms, segment_bytes };
                client.call(&Request::CreateTopic { name: name.clone(), settings }).await?;
                let noun = if partitions == 1 { "partition" } else { "partitions" };
                println!("created topic {name} with {partitions} {noun}");
            }
            TopicAction::List { json } => match client.call(&Request::ListTopics).await? {
                Response::ListTopics(topics) => print_topics(&topics, json),
                other => return Err(unexpected(other)),
            },
            TopicAction::Delete { name } => {
                client.call(&Request::DeleteTopic { name: name.clone() }).await?;
                println!("deleted topic {name}");
            }
        }
        Ok(())
    });
    match outcome {
        Ok(Ok(())) => ExitCode::from(EXIT_OK),
        Ok(Err(error)) => fail(error, EXIT_FAILURE),
        Err(error) => fail(error, EXIT_FAILURE),
    }
}

fn print_topics(topics: &[(String, u32)], json: bool) {
    if json {
        let array: Vec<serde_json::Value> = topics
            .iter()
            .map(|(name, partitions)| serde_json::json!({"name": name, "partitions": partitions}))
            .collect();
        println!("{}", serde_json::Value::Array(array));
        return;
    }
    for (name, partitions) in topics {
        println!("{name}\t{partitions}");
    }
}
