//! Authentication and authorization, protocol-neutral (docs/SECURITY.md):
//! SCRAM-SHA-256 state machines, roles and topic patterns, the users file
//! and the per-source failure limiter. Floor 1: pure code over bytes, the
//! listeners above drive it.

pub mod acl;
pub mod limiter;
pub mod scram;
pub mod users;

pub use acl::{Operation, Principal, Role, TopicPattern};
pub use limiter::FailureLimiter;
pub use scram::{ScramClient, ScramError, ScramServer, StoredCredential};
pub use users::{User, Users, UsersError};
