//! Authorization of Kafka requests (SPEC §11): the connection's principal
//! asked [`Principal::may`] for each operation a request names, as the
//! native listener does; a refusal is an error code in the answer (per
//! topic, per group, or for the request), counted in `/metrics`
//! (`auth.not_authorized`), and the connection stays open.

use std::sync::atomic::Ordering;

use crate::security::{Operation, Principal};
use crate::shard::context::ShardContext;

/// Who sends a request: `None` when `[auth]` is off (everything is allowed).
#[derive(Debug, Clone, Copy)]
pub struct Access<'a>(pub Option<&'a Principal>);

impl Access<'_> {
    /// Everything allowed: `[auth]` is off.
    pub const EVERYONE: Access<'static> = Access(None);

    /// Whether `operation` is allowed, neither counted nor logged (to
    /// leave out of an answer what the user may not see).
    pub fn permits(&self, operation: Operation<'_>) -> bool {
        self.0.is_none_or(|principal| principal.may(&operation))
    }

    /// Whether `operation` is allowed; a refusal is counted and logged.
    pub fn allows(&self, context: &ShardContext, operation: Operation<'_>) -> bool {
        let Some(principal) = self.0 else {
            return true;
        };
        if principal.may(&operation) {
            return true;
        }
        context.metrics.auth.not_authorized.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(target: "ringlog::auth", user = %principal.name, role = %principal.role, ?operation,
            "kafka request not authorized");
        false
    }
}
