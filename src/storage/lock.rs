//! `DATA/.lock`: an exclusive `flock` held for the life of the process, so
//! two processes never open the same data directory.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::error::{StorageError, StorageResult};

/// Name of the lock file inside the data directory.
pub const LOCK_FILE: &str = ".lock";

/// Holds the data directory lock until dropped.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Create the data directory if needed and take its lock without waiting.
    pub fn acquire(data_dir: &Path) -> StorageResult<DataDirLock> {
        std::fs::create_dir_all(data_dir).map_err(|error| StorageError::io("create data dir", data_dir, error))?;
        let path = data_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|error| StorageError::io("open lock file", &path, error))?;
        // SAFETY: flock on a valid, owned file descriptor.
        let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if result != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(StorageError::Locked { path });
            }
            return Err(StorageError::io("flock", &path, error));
        }
        // The pid is informational only; the flock is what excludes.
        file.set_len(0).map_err(|error| StorageError::io("truncate lock file", &path, error))?;
        writeln!(file, "{}", std::process::id()).map_err(|error| StorageError::io("write lock file", &path, error))?;
        Ok(DataDirLock { _file: file, path })
    }

    /// Path of the lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_same_dir_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let second = DataDirLock::acquire(dir.path());
        assert!(matches!(second, Err(StorageError::Locked { .. })));
        drop(first);
        DataDirLock::acquire(dir.path()).expect("lock is free again after drop");
    }
}
