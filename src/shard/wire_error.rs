//! Storage failures in wire terms: the one mapping from [`StorageError`] to
//! the protocol's error codes, used by every request and by replication.

use crate::protocol::{ErrorCode, ErrorResponse};
use crate::storage::StorageError;

/// A refusal with `code` and a message for the client (no leader hint).
pub fn refusal(code: ErrorCode, message: impl Into<String>) -> ErrorResponse {
    ErrorResponse { code, message: message.into(), leader: None }
}

/// The wire code of a storage failure.
pub fn storage_error_code(failure: &StorageError) -> ErrorCode {
    match failure {
        StorageError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        StorageError::DiskFull { .. } => ErrorCode::DiskFull,
        StorageError::InvalidBatch(_) => ErrorCode::InvalidRequest,
        StorageError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequence,
        StorageError::ProducerFenced { .. } => ErrorCode::ProducerFenced,
        StorageError::Config(_) | StorageError::InvalidGroup(_) => ErrorCode::InvalidRequest,
        StorageError::Closed(_) => ErrorCode::ShuttingDown,
        StorageError::Io { .. }
        | StorageError::StorageFailed { .. }
        | StorageError::Fenced { .. }
        | StorageError::Locked { .. } => ErrorCode::StorageFailed,
    }
}

/// A storage failure as the refusal a client sees (its message kept whole:
/// it names the path, position and offset).
pub fn storage_error(failure: StorageError) -> ErrorResponse {
    refusal(storage_error_code(&failure), failure.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_storage_failure_maps_to_the_code_clients_retry_or_stop_on() {
        let out_of_range = StorageError::OffsetOutOfRange { offset: 9, log_start_offset: 0, log_end_offset: 5 };
        assert_eq!(storage_error_code(&out_of_range), ErrorCode::OffsetOutOfRange);
        let closed = StorageError::Closed("/data/t/0".into());
        assert_eq!(storage_error(closed).code, ErrorCode::ShuttingDown);
        let io = StorageError::io("write", "/data/t/0/0.log", std::io::Error::other("boom"));
        let refused = storage_error(io);
        assert_eq!(refused.code, ErrorCode::StorageFailed);
        assert!(refused.message.contains("/data/t/0/0.log"), "{}", refused.message);
    }
}
