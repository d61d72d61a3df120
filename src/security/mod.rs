//! Security below the network: TLS configurations and streams, and
//! authentication and authorization, protocol-neutral (docs/SECURITY.md):
//! SCRAM-SHA-256 state machines, roles and topic patterns, the users file
//! and the per-source failure limiter. The listeners and clients that use
//! it live in `net`, `admin` and `replication`.

pub mod acl;
pub mod limiter;
pub mod listeners;
pub mod record;
pub mod scram;
pub mod session;
pub mod settings;
pub mod stream;
pub mod tls;
pub mod tokio_session;
pub mod users;

pub use acl::{Operation, Principal, Role, TopicPattern};
pub use limiter::FailureLimiter;
pub use scram::{ScramClient, ScramError, ScramServer, StoredCredential};
pub use users::{User, Users, UsersError};
