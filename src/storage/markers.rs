//! Small checksummed per-partition files: the recovery point (offset below
//! which every segment is sealed and durable) and the clean-shutdown marker
//! (written last on a clean close; lets the next open skip the scan).

use std::io;
use std::path::{Path, PathBuf};

use super::batch::{read_u32, read_u64};
use super::io::{commit_prepared, prepare_file, read_optional, write_file_atomically};

/// Recovery point file name.
pub const RECOVERY_POINT_FILE: &str = "recovery-point";
/// Clean-shutdown marker file name.
pub const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";

fn with_crc(mut bytes: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

fn check_crc<'a>(bytes: &'a [u8], magic: &[u8; 4], body_bytes: usize) -> Option<&'a [u8]> {
    if bytes.len() != body_bytes + 4 || &bytes[..4] != magic {
        return None;
    }
    let body = &bytes[..body_bytes];
    (crc32fast::hash(body) == read_u32(bytes, body_bytes)).then_some(body)
}

/// Load the recovery point; 0 when absent or damaged (scan everything).
pub fn load_recovery_point(partition_dir: &Path) -> io::Result<u64> {
    let Some(bytes) = read_optional(&partition_dir.join(RECOVERY_POINT_FILE))? else {
        return Ok(0);
    };
    Ok(check_crc(&bytes, b"RLRP", 12).map_or(0, |body| read_u64(body, 4)))
}

/// Durably store the recovery point.
pub fn store_recovery_point(partition_dir: &Path, offset: u64) -> io::Result<()> {
    let prepared = prepare_recovery_point(partition_dir, offset)?;
    commit_recovery_point(partition_dir, &prepared)
}

/// The half of [`store_recovery_point`] that can fail for space: the new
/// point written and synced beside the file (`.tmp`, which recovery
/// deletes); nothing has changed until [`commit_recovery_point`].
pub fn prepare_recovery_point(partition_dir: &Path, offset: u64) -> io::Result<PathBuf> {
    let mut bytes = b"RLRP".to_vec();
    bytes.extend_from_slice(&offset.to_le_bytes());
    prepare_file(&partition_dir.join(RECOVERY_POINT_FILE), &with_crc(bytes))
}

/// The rename that makes a prepared recovery point the recovery point
/// (and the directory sync after it).
pub fn commit_recovery_point(partition_dir: &Path, prepared: &Path) -> io::Result<()> {
    commit_prepared(prepared, &partition_dir.join(RECOVERY_POINT_FILE))
}

/// What a clean shutdown recorded about the active segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanShutdown {
    /// Base offset of the active segment.
    pub active_base_offset: u64,
    /// Valid bytes in the active segment.
    pub active_size_bytes: u64,
    /// Position of its last batch (u64::MAX when empty).
    pub last_batch_position: u64,
}

/// Encode the marker.
pub fn encode_clean_shutdown(marker: &CleanShutdown) -> Vec<u8> {
    let mut bytes = b"RLCS".to_vec();
    bytes.extend_from_slice(&marker.active_base_offset.to_le_bytes());
    bytes.extend_from_slice(&marker.active_size_bytes.to_le_bytes());
    bytes.extend_from_slice(&marker.last_batch_position.to_le_bytes());
    with_crc(bytes)
}

/// Load the marker; None when absent or damaged.
pub fn load_clean_shutdown(partition_dir: &Path) -> io::Result<Option<CleanShutdown>> {
    let Some(bytes) = read_optional(&partition_dir.join(CLEAN_SHUTDOWN_FILE))? else {
        return Ok(None);
    };
    Ok(check_crc(&bytes, b"RLCS", 28).map(|body| CleanShutdown {
        active_base_offset: read_u64(body, 4),
        active_size_bytes: read_u64(body, 12),
        last_batch_position: read_u64(body, 20),
    }))
}

/// Durably write the marker (the last step of a clean close).
pub fn store_clean_shutdown(partition_dir: &Path, marker: &CleanShutdown) -> io::Result<()> {
    write_file_atomically(&partition_dir.join(CLEAN_SHUTDOWN_FILE), &encode_clean_shutdown(marker))
}

/// Durably remove the marker (before the first write after opening).
pub fn remove_clean_shutdown(partition_dir: &Path) -> io::Result<()> {
    match std::fs::remove_file(partition_dir.join(CLEAN_SHUTDOWN_FILE)) {
        Ok(()) => super::io::sync_directory(partition_dir),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_reject_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_recovery_point(dir.path()).unwrap(), 0);
        store_recovery_point(dir.path(), 1234).unwrap();
        assert_eq!(load_recovery_point(dir.path()).unwrap(), 1234);
        let marker = CleanShutdown { active_base_offset: 10, active_size_bytes: 999, last_batch_position: 900 };
        store_clean_shutdown(dir.path(), &marker).unwrap();
        assert_eq!(load_clean_shutdown(dir.path()).unwrap(), Some(marker));
        let path = dir.path().join(CLEAN_SHUTDOWN_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[10] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(load_clean_shutdown(dir.path()).unwrap(), None);
        remove_clean_shutdown(dir.path()).unwrap();
        assert!(!path.exists());
    }
}
