//! ringlog integration tests: one binary, one module per area. Everything
//! runs against real files (and, for crash tests, real processes).

mod admin;
mod alloc;
mod auth;
mod certs;
mod cli;
mod cluster;
mod commit_failover;
mod common;
mod console;
mod crash;
mod crash_simulation;
mod enospc;
mod etcd;
mod faults;
mod fetch_cadence;
mod fixtures;
mod fuzz_corpus;
mod kafka;
mod kafka_auth;
mod kafka_cluster;
mod kafka_groups;
mod kafka_idempotence;
mod node;
mod ops;
mod recycling;
mod replication;
mod safety;
mod storage_log;
mod storage_recovery;
mod tls;

#[global_allocator]
static ALLOCATOR: alloc::CountingAllocator = alloc::CountingAllocator;
