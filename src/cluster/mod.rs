//! The cluster control plane (SPEC §5): membership, node ids, leader
//! election and in-sync replica keys on etcd. It runs only on the control
//! thread (tokio, where `etcd-client` lives) and talks to the data shards
//! solely through the atomically published [`crate::state::cluster::ClusterState`].

pub mod election;
pub mod error;
pub mod etcd;
pub mod isr;
pub mod keys;
pub mod lease;
pub mod membership;
pub mod node_id;
pub mod nodes;
pub mod users;
