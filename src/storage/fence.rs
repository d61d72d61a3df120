//! Fences: corruption a partition will not repair on its own. A fence is
//! stored durably in the partition directory (`fenced`) the moment it is
//! found, so a restart cannot un-fence a partition whose corruption a clean
//! restart would not look at again (SPEC §3: "a fence survives a restart
//! until repaired"). Only `ringlog check --repair` removes it.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::StorageError;
use super::io::{read_optional, write_file_atomically};

/// Fence file name inside a partition directory.
pub const FENCE_FILE: &str = "fenced";

/// Where and why a partition was fenced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceReport {
    /// File with the corruption.
    pub path: PathBuf,
    /// Byte position of the bad batch or entry.
    pub position: u64,
    /// Offset expected there.
    pub offset: u64,
    /// What was wrong.
    pub reason: String,
}

impl FenceReport {
    /// The error appends get while fenced.
    pub fn to_error(&self) -> StorageError {
        StorageError::Fenced {
            path: self.path.clone(),
            position: self.position,
            offset: self.offset,
            reason: self.reason.clone(),
        }
    }
}

/// Durably record a fence (atomic write, directory fsync).
pub fn store_fence(partition_dir: &Path, report: &FenceReport) -> io::Result<()> {
    let bytes = serde_json::to_vec(report).map_err(io::Error::other)?;
    write_file_atomically(&partition_dir.join(FENCE_FILE), &bytes)
}

/// The stored fence, if any. A fence file that cannot be parsed still
/// fences: damage to the fence must never lift it.
pub fn load_fence(partition_dir: &Path) -> io::Result<Option<FenceReport>> {
    let path = partition_dir.join(FENCE_FILE);
    let Some(bytes) = read_optional(&path)? else {
        return Ok(None);
    };
    Ok(Some(serde_json::from_slice(&bytes).unwrap_or_else(|error| FenceReport {
        path: path.clone(),
        position: 0,
        offset: 0,
        reason: format!("fence file unreadable ({error}); run ringlog check"),
    })))
}

/// Remove the fence durably (`check --repair` after fixing the cause).
pub fn remove_fence(partition_dir: &Path) -> io::Result<bool> {
    match std::fs::remove_file(partition_dir.join(FENCE_FILE)) {
        Ok(()) => super::io::sync_directory(partition_dir).map(|()| true),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fence_round_trips_and_damage_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_fence(dir.path()).unwrap(), None);
        let report = FenceReport { path: "/x/0.log".into(), position: 7, offset: 3, reason: "bad".into() };
        store_fence(dir.path(), &report).unwrap();
        assert_eq!(load_fence(dir.path()).unwrap(), Some(report));
        std::fs::write(dir.path().join(FENCE_FILE), b"{garbage").unwrap();
        assert!(load_fence(dir.path()).unwrap().unwrap().reason.contains("unreadable"));
        assert!(remove_fence(dir.path()).unwrap());
        assert_eq!(load_fence(dir.path()).unwrap(), None);
    }
}
