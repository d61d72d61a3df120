//! Replication between nodes (SPEC §5). Followers pull: each follower data
//! shard reads its partitions from the leader over one authenticated,
//! pipelined connection to the leader's replication listener, appends the
//! batches with their original offsets and epochs, makes them durable, and
//! its next read from its new log end is the acknowledgement. The leader's
//! shards track every follower's position per partition, compute the high
//! watermark over the in-sync set, and release `acks=all` producers; the
//! control thread turns the positions into ISR decisions in etcd.
//! `docs/REPLICATION.md` explains why pull rather than push.

pub mod acks;
pub mod answer_body;
pub mod auth;
pub mod connection;
pub mod divergence;
pub mod fetch_many;
pub mod follower;
pub mod handshake;
pub mod high_watermark;
pub mod leader;
