//! Why a control-plane step failed: etcd unreachable or refusing, a key
//! holding what ringlog did not write, this node's registration refused,
//! or its node-id file unusable. Each variant names the key, id, lease or
//! file involved; the membership loop logs them and retries.

use thiserror::Error;

use super::node_id::NodeIdError;

/// Control-plane failures.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// etcd answered with an error, or the connection failed.
    #[error("etcd ({endpoints}) {operation}: {source}")]
    Etcd {
        /// The configured endpoints.
        endpoints: String,
        /// What was being done.
        operation: &'static str,
        /// The client's error.
        #[source]
        source: etcd_client::Error,
    },
    /// etcd did not answer in time (unreachable, or quorum lost).
    #[error("etcd ({endpoints}) {operation}: no answer within {timeout_ms} ms (unreachable or without quorum)")]
    Timeout {
        /// The configured endpoints.
        endpoints: String,
        /// What was being done.
        operation: &'static str,
        /// The bound.
        timeout_ms: u64,
    },
    /// The files for TLS to etcd cannot be used.
    #[error("TLS to etcd: {0}")]
    Tls(String),
    /// A request needs etcd before the membership loop has connected.
    #[error("etcd not connected")]
    NotConnected,
    /// `DATA/node_id` cannot give this node its id.
    #[error(transparent)]
    NodeId(#[from] NodeIdError),
    /// A local read failed (the random source of the cluster secret).
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// What was read.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A key holds a value ringlog did not write.
    #[error("{key} holds {value:?}, not {expected}")]
    MalformedKey {
        /// The key.
        key: String,
        /// Its value.
        value: String,
        /// What it should hold ("an epoch", "a node id").
        expected: &'static str,
    },
    /// Every leader epoch a u32 can hold has been used.
    #[error("every leader epoch up to 2^32 - 1 has been used")]
    EpochsExhausted,
    /// Contention (or hand-made keys) kept every node-id claim from succeeding.
    #[error("could not claim a node id after {attempts} attempts")]
    NodeIdsExhausted {
        /// Claims tried.
        attempts: usize,
    },
    /// An etcd transaction answer carried no header (so no revision).
    #[error("etcd transaction answer without a header")]
    MissingHeader,
    /// The lease was not renewed in time: etcd dropped our keys.
    #[error("lease {lease} lost (not renewed within {lease_ttl_s} s)")]
    LeaseLost {
        /// The lease id.
        lease: i64,
        /// The configured TTL.
        lease_ttl_s: u64,
    },
    /// This node's registration could not be encoded.
    #[error("cannot encode the registration of node {id}: {source}")]
    Encode {
        /// The node id.
        id: u64,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
    /// `forget-node` removed this node's id while it registered.
    #[error("node id {id} was forgotten while this node registered; it takes a new id")]
    ForgottenWhileRegistering {
        /// The forgotten id.
        id: u64,
    },
    /// A live process already holds this node's registration key.
    #[error(
        "node id {id} is already registered at {key} by a live process: another node runs with a copy of this \
         data directory, or this node's previous run has not expired yet (up to {lease_ttl_s} s)"
    )]
    AlreadyRegistered {
        /// The node id.
        id: u64,
        /// `PREFIX/nodes/<id>`.
        key: String,
        /// The configured lease TTL (how long a dead holder keeps it).
        lease_ttl_s: u64,
    },
    /// Something else in etcd is not what ringlog wrote.
    #[error("{0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_key_names_the_key_and_what_it_holds() {
        let error = super::super::election::next_epoch(Some("x"), 0).unwrap_err();
        assert!(matches!(&error, ClusterError::MalformedKey { value, expected: "an epoch", .. } if value == "x"));
        assert_eq!(error.to_string(), "the leader epoch key holds \"x\", not an epoch");
        let error = ClusterError::AlreadyRegistered { id: 2, key: "ringlog/nodes/2".into(), lease_ttl_s: 5 };
        assert!(error.to_string().starts_with("node id 2 is already registered at ringlog/nodes/2"), "{error}");
    }
}
