//! Who may do what: a principal is a user's name, role and topic pattern,
//! and [`Principal::may`] decides one operation. Protocol-neutral, so the
//! native listener and the Kafka listener ask the same question.

use serde::{Deserialize, Serialize};

/// A user's role (SPEC §11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Topics, groups and nodes: everything.
    Admin,
    /// Writes to the topics of its pattern.
    Producer,
    /// Reads the topics of its pattern and commits offsets on them.
    Consumer,
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Role, String> {
        match text {
            "admin" => Ok(Role::Admin),
            "producer" => Ok(Role::Producer),
            "consumer" => Ok(Role::Consumer),
            other => Err(format!("unknown role `{other}` (admin, producer or consumer)")),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            Role::Admin => "admin",
            Role::Producer => "producer",
            Role::Consumer => "consumer",
        })
    }
}

/// The topics a principal's role applies to: `*`, an exact name, or `prefix*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum TopicPattern {
    Any,
    Exact(String),
    Prefix(String),
}

impl TopicPattern {
    /// Whether `topic` is one of the pattern's topics.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            TopicPattern::Any => true,
            TopicPattern::Exact(name) => name == topic,
            TopicPattern::Prefix(prefix) => topic.starts_with(prefix.as_str()),
        }
    }
}

impl TryFrom<String> for TopicPattern {
    type Error = String;

    fn try_from(text: String) -> Result<TopicPattern, String> {
        text.parse()
    }
}

impl std::str::FromStr for TopicPattern {
    type Err = String;

    fn from_str(text: &str) -> Result<TopicPattern, String> {
        let body = text.strip_suffix('*').unwrap_or(text);
        if body.contains('*') || text.is_empty() || text.len() > 255 {
            return Err(format!("bad topic pattern `{text}` (`*`, a topic name, or `prefix*`)"));
        }
        Ok(match (body.is_empty(), text.ends_with('*')) {
            (true, _) => TopicPattern::Any,
            (false, true) => TopicPattern::Prefix(body.to_string()),
            (false, false) => TopicPattern::Exact(body.to_string()),
        })
    }
}

impl From<TopicPattern> for String {
    fn from(pattern: TopicPattern) -> String {
        pattern.to_string()
    }
}

impl std::fmt::Display for TopicPattern {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TopicPattern::Any => formatter.write_str("*"),
            TopicPattern::Exact(name) => formatter.write_str(name),
            TopicPattern::Prefix(prefix) => write!(formatter, "{prefix}*"),
        }
    }
}

/// One thing a client asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation<'a> {
    /// Append records to a topic.
    Produce { topic: &'a str },
    /// Read records from a topic.
    Fetch { topic: &'a str },
    /// Ask a topic's offsets (earliest, latest, by time).
    ListOffsets { topic: &'a str },
    /// Commit a group's offsets on a topic.
    CommitGroupOffsets { topic: &'a str },
    /// Read a group's committed offsets on a topic.
    FetchGroupOffsets { topic: &'a str },
    /// Join, sync, heartbeat or leave a consumer group.
    GroupMembership,
    /// List or describe topics and nodes (metadata).
    Describe,
    /// Create a topic.
    CreateTopic,
    /// Delete a topic.
    DeleteTopic,
    /// Delete or reset groups.
    GroupAdmin,
    /// Forget nodes, manage users.
    NodeAdmin,
    /// Get a producer id for idempotent produce.
    InitProducerId,
}

impl Principal {
    /// What this principal may do, by operation name, as `Principal::may`
    /// decides it for a topic of its pattern (`ringlog acl list`).
    pub fn permissions(&self) -> Vec<&'static str> {
        let topic = match &self.topics {
            TopicPattern::Any => "any-topic".to_string(),
            TopicPattern::Exact(name) => name.clone(),
            TopicPattern::Prefix(prefix) => format!("{prefix}x"),
        };
        let topic = topic.as_str();
        let operations = [
            ("describe", Operation::Describe),
            ("produce", Operation::Produce { topic }),
            ("fetch", Operation::Fetch { topic }),
            ("list_offsets", Operation::ListOffsets { topic }),
            ("commit_group_offsets", Operation::CommitGroupOffsets { topic }),
            ("fetch_group_offsets", Operation::FetchGroupOffsets { topic }),
            ("group_membership", Operation::GroupMembership),
            ("init_producer_id", Operation::InitProducerId),
            ("create_topic", Operation::CreateTopic),
            ("delete_topic", Operation::DeleteTopic),
            ("group_admin", Operation::GroupAdmin),
            ("node_admin", Operation::NodeAdmin),
        ];
        operations.into_iter().filter(|(_, operation)| self.may(operation)).map(|(name, _)| name).collect()
    }
}

/// An authenticated user as the authorizer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub topics: TopicPattern,
}

impl Principal {
    /// Whether this principal may perform `operation`.
    pub fn may(&self, operation: &Operation<'_>) -> bool {
        use Operation::*;
        let on_topics = |topic: &str| self.topics.matches(topic);
        match (self.role, *operation) {
            (Role::Admin, _) => true,
            // Metadata is needed by every client to find leaders.
            (_, Describe) => true,
            (Role::Producer, Produce { topic } | ListOffsets { topic }) => on_topics(topic),
            (Role::Producer, InitProducerId) => true,
            (
                Role::Consumer,
                Fetch { topic } | ListOffsets { topic } | CommitGroupOffsets { topic } | FetchGroupOffsets { topic },
            ) => on_topics(topic),
            (Role::Consumer, GroupMembership) => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role, pattern: &str) -> Principal {
        Principal { name: "someone".into(), role, topics: pattern.parse().unwrap() }
    }

    const EVERY_TOPIC_OPERATION: [fn(&str) -> Operation<'_>; 5] = [
        |topic| Operation::Produce { topic },
        |topic| Operation::Fetch { topic },
        |topic| Operation::ListOffsets { topic },
        |topic| Operation::CommitGroupOffsets { topic },
        |topic| Operation::FetchGroupOffsets { topic },
    ];
    const ADMIN_ONLY: [Operation<'static>; 4] =
        [Operation::CreateTopic, Operation::DeleteTopic, Operation::GroupAdmin, Operation::NodeAdmin];

    #[test]
    fn an_admin_may_do_everything_on_every_topic() {
        let admin = principal(Role::Admin, "orders");
        for operation in EVERY_TOPIC_OPERATION {
            assert!(admin.may(&operation("anything")));
        }
        for operation in ADMIN_ONLY {
            assert!(admin.may(&operation));
        }
    }

    #[test]
    fn a_producer_writes_and_reads_offsets_of_its_topics_only() {
        let producer = principal(Role::Producer, "orders-*");
        assert!(producer.may(&Operation::Produce { topic: "orders-eu" }));
        assert!(producer.may(&Operation::ListOffsets { topic: "orders-eu" }));
        assert!(producer.may(&Operation::InitProducerId));
        assert!(producer.may(&Operation::Describe));
        assert!(!producer.may(&Operation::Produce { topic: "payments" }));
        assert!(!producer.may(&Operation::Fetch { topic: "orders-eu" }));
        assert!(!producer.may(&Operation::CommitGroupOffsets { topic: "orders-eu" }));
        for operation in ADMIN_ONLY {
            assert!(!producer.may(&operation), "{operation:?}");
        }
    }

    #[test]
    fn a_consumer_reads_and_commits_on_its_topics_only() {
        let consumer = principal(Role::Consumer, "orders");
        assert!(consumer.may(&Operation::Fetch { topic: "orders" }));
        assert!(consumer.may(&Operation::ListOffsets { topic: "orders" }));
        assert!(consumer.may(&Operation::CommitGroupOffsets { topic: "orders" }));
        assert!(consumer.may(&Operation::FetchGroupOffsets { topic: "orders" }));
        assert!(consumer.may(&Operation::GroupMembership));
        assert!(consumer.may(&Operation::Describe));
        assert!(!consumer.may(&Operation::Fetch { topic: "orders-eu" }), "an exact pattern is not a prefix");
        assert!(!consumer.may(&Operation::Produce { topic: "orders" }));
        assert!(!consumer.may(&Operation::InitProducerId));
        for operation in ADMIN_ONLY {
            assert!(!consumer.may(&operation), "{operation:?}");
        }
    }

    #[test]
    fn topic_patterns_parse_match_and_print_back() {
        for (text, topic, matches) in
            [("*", "x", true), ("ab*", "abc", true), ("ab*", "a", false), ("ab", "abc", false)]
        {
            let pattern: TopicPattern = text.parse().unwrap();
            assert_eq!(pattern.matches(topic), matches, "{text} {topic}");
            assert_eq!(pattern.to_string(), text);
        }
        assert!("a*b".parse::<TopicPattern>().is_err());
        assert!("".parse::<TopicPattern>().is_err());
        assert!("**".parse::<TopicPattern>().is_err());
        assert_eq!(serde_json::to_string(&Role::Producer).unwrap(), "\"producer\"");
        assert!("root".parse::<Role>().is_err());
    }
}
