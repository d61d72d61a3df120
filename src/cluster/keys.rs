//! The etcd key layout under the cluster prefix (SPEC §5). Every key the
//! node reads or writes is spelled here and nowhere else.

use serde::{Deserialize, Serialize};

/// Key names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (trailing slashes ignored).
    pub fn new(prefix: &str) -> Keys {
        Keys { prefix: prefix.trim_end_matches('/').to_string() }
    }

    /// `PREFIX/replica/<id>/insync`: `"1"` or `"0"`, one per known replica.
    pub fn insync(&self, id: u64) -> String {
        format!("{}/replica/{id}/insync", self.prefix)
    }

    /// Prefix of every insync key.
    pub fn replicas(&self) -> String {
        format!("{}/replica/", self.prefix)
    }

    /// `PREFIX/nodes/<id>`: the registration, bound to the node's lease.
    pub fn node(&self, id: u64) -> String {
        format!("{}/nodes/{id}", self.prefix)
    }

    /// Prefix of every registration.
    pub fn nodes(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }

    /// `PREFIX/leader`: the election key, bound to the leader's lease.
    pub fn leader(&self) -> String {
        format!("{}/leader", self.prefix)
    }

    /// `PREFIX/leader_epoch`: the epoch of the latest election, written by
    /// the winner in its campaign transaction.
    pub fn leader_epoch(&self) -> String {
        format!("{}/leader_epoch", self.prefix)
    }

    /// `PREFIX/last_node_id`: the highest id ever handed out, so that the
    /// id of a forgotten node is never given to anyone again.
    pub fn last_node_id(&self) -> String {
        format!("{}/last_node_id", self.prefix)
    }

    /// `PREFIX/initialized`: written by the first leader; its absence is
    /// what makes a cluster brand-new (any node may lead it).
    pub fn initialized(&self) -> String {
        format!("{}/initialized", self.prefix)
    }

    /// `PREFIX/secret`: the cluster secret replication handshakes use.
    pub fn secret(&self) -> String {
        format!("{}/secret", self.prefix)
    }

    /// `PREFIX/users/<name>`: a user's users-file entry (JSON; SCRAM
    /// credential, role, topics; never a password).
    pub fn user(&self, name: &str) -> String {
        format!("{}/users/{name}", self.prefix)
    }

    /// Prefix of every user key.
    pub fn users(&self) -> String {
        format!("{}/users/", self.prefix)
    }

    /// The id in an insync key (`PREFIX/replica/<id>/insync`).
    pub fn parse_insync(&self, key: &[u8]) -> Option<u64> {
        let key = std::str::from_utf8(key).ok()?;
        key.strip_prefix(&self.replicas())?.strip_suffix("/insync")?.parse().ok()
    }

    /// The id in a registration key (`PREFIX/nodes/<id>`).
    pub fn parse_node(&self, key: &[u8]) -> Option<u64> {
        let key = std::str::from_utf8(key).ok()?;
        key.strip_prefix(&self.nodes())?.parse().ok()
    }
}

/// The value of `PREFIX/nodes/<id>`: how to reach a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Node id.
    pub id: u64,
    /// Client protocol address.
    pub client: String,
    /// Replication address.
    pub replication: String,
    /// Admin HTTP address.
    pub admin: String,
    /// Kafka listener address; `None` when its `kafka_listen` is empty.
    /// Registrations written before this field read as `None`.
    #[serde(default)]
    pub kafka: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_their_ids() {
        let keys = Keys::new("ringlog/");
        assert_eq!(keys.insync(3), "ringlog/replica/3/insync");
        assert_eq!(keys.parse_insync(keys.insync(42).as_bytes()), Some(42));
        assert_eq!(keys.parse_insync(b"ringlog/replica/x/insync"), None);
        assert_eq!(keys.parse_insync(b"other/replica/1/insync"), None);
        assert_eq!(keys.node(9), "ringlog/nodes/9");
        assert_eq!(keys.parse_node(keys.node(9).as_bytes()), Some(9));
        assert_eq!(keys.leader(), "ringlog/leader");
    }

    #[test]
    fn registrations_carry_the_kafka_address_and_older_ones_read_without_it() {
        let older: Registration =
            serde_json::from_str(r#"{"id":1,"client":"h:1","replication":"h:2","admin":"h:3"}"#).unwrap();
        assert_eq!(older.kafka, None);
        let current = Registration { kafka: Some("h:4".into()), ..older };
        let json = serde_json::to_string(&current).unwrap();
        assert!(json.contains(r#""kafka":"h:4""#), "{json}");
        assert_eq!(serde_json::from_str::<Registration>(&json).unwrap(), current);
    }
}
