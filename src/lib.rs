//! ringlog: a thread-per-core, io_uring segment storage engine: a
//! replicated, partitioned append-only log node.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod admin;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod net;
pub mod node;
pub mod protocol;
pub mod replication;
pub mod requests;
pub mod runtime;
pub mod security;
pub mod shard;
pub mod state;
pub mod storage;
pub mod systemd;
