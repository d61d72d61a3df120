//! Real ENOSPC on a small loop-mounted ext4 filesystem (needs root, as in
//! CI). Skips with a printed reason when the mount is not possible.

use std::path::{Path, PathBuf};
use std::process::Command;

use ringlog::storage::retention::RetentionPolicy;
use ringlog::storage::{AppendMode, PartitionLog, StorageConfig, StorageError};

use crate::common::{batch_of, on_executor, read_all, recycled_files, values};

struct LoopMount {
    mount_point: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount_point).status();
    }
}

fn mount_small_filesystem() -> Result<LoopMount, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not running as root".into());
    }
    let dir = tempfile::tempdir().map_err(|error| error.to_string())?;
    let image = dir.path().join("fs.img");
    let mount_point = dir.path().join("mnt");
    std::fs::create_dir(&mount_point).map_err(|error| error.to_string())?;
    let run = |program: &str, args: &[&str]| -> Result<(), String> {
        let output = Command::new(program).args(args).output().map_err(|error| format!("{program}: {error}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!("{program} failed: {}", String::from_utf8_lossy(&output.stderr).trim()))
        }
    };
    run("truncate", &["-s", "24M", image.to_str().unwrap()])?;
    run("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()])?;
    run("mount", &["-o", "loop", image.to_str().unwrap(), mount_point.to_str().unwrap()])?;
    Ok(LoopMount { mount_point, _dir: dir })
}

fn fill_disk(mount_point: &Path) -> PathBuf {
    let filler = mount_point.join("filler");
    let _ =
        Command::new("dd").args(["if=/dev/zero", &format!("of={}", filler.display()), "bs=1M", "count=64"]).output();
    filler
}

/// Segments, buffers and batches sized for a 24 MiB file system.
fn small_disk_config() -> StorageConfig {
    StorageConfig {
        segment_bytes: 1 << 20,
        write_buffer_bytes: 64 * 1024,
        preallocate_bytes: 256 * 1024,
        max_batch_bytes: 256 * 1024,
        ..StorageConfig::default()
    }
}

#[test]
#[ignore = "needs root to mount a loop filesystem; .ci/run runs it as root with --ignored"]
fn real_disk_full_is_reported_and_appends_resume_after_space_is_freed() {
    let mount = mount_small_filesystem().expect("a loop-mounted ext4 of 24 MiB (run as root)");
    let path = mount.mount_point.join("partition");
    let mount_point = mount.mount_point.clone();
    on_executor(move || async move {
        let config = small_disk_config();
        let log = PartitionLog::open(&path, config.clone(), None).await.unwrap();
        let mut acked = 0u64;
        for i in 0..20 {
            let mut batch = batch_of(&values(&format!("before{i}"), 50), 0);
            let _ = log.append(&mut batch, AppendMode::Leader { leader_epoch: 1 }).await.unwrap();
            acked += 50;
        }
        let filler = fill_disk(&mount_point);
        let mut disk_full = None;
        for i in 0..10_000 {
            let mut batch = batch_of(&values(&format!("fill{i}"), 50), 0);
            match log.append(&mut batch, AppendMode::Leader { leader_epoch: 1 }).await {
                Ok(_) => acked += 50,
                Err(error) => {
                    disk_full = Some(error);
                    break;
                }
            }
        }
        let error = disk_full.expect("the disk filled up");
        assert!(matches!(error, StorageError::DiskFull { .. }), "expected disk_full, got {error}");
        assert_eq!(log.snapshot().log_end_offset, acked);
        assert_eq!(read_all(&log, 0).await.len() as u64, acked, "nothing acknowledged was damaged");
        std::fs::remove_file(&filler).unwrap();
        let mut batch = batch_of(&values("after", 5), 0);
        let info = log.append(&mut batch, AppendMode::Leader { leader_epoch: 1 }).await.expect("appends work again");
        assert_eq!(info.base_offset, acked);
        log.close().await.unwrap();
        let log = PartitionLog::open(&path, config, None).await.unwrap();
        assert_eq!(read_all(&log, 0).await.len() as u64, acked + 5);
        log.close().await.unwrap();
    });
}

#[test]
#[ignore = "needs root to mount a loop filesystem; .ci/run runs it as root with --ignored"]
fn on_a_nearly_full_disk_retention_frees_every_file_and_gives_back_those_it_kept() {
    let mount = mount_small_filesystem().expect("a loop-mounted ext4 of 24 MiB (run as root)");
    let path = mount.mount_point.join("partition");
    let mount_point = mount.mount_point.clone();
    on_executor(move || async move {
        // The default free-space floor: below 5 % nothing is kept.
        let config = StorageConfig { max_recycled_segments: 2, ..small_disk_config() };
        let log = PartitionLog::open(&path, config, None).await.unwrap();
        let append_and_roll = |round: usize| {
            let log = &log;
            async move {
                let mut batch = batch_of(&values(&format!("r{round}"), 50), 0);
                let _durable = log.append(&mut batch, AppendMode::Leader { leader_epoch: 1 }).await.unwrap();
                log.roll().await.unwrap();
            }
        };
        for round in 0..4 {
            append_and_roll(round).await;
        }
        let policy = RetentionPolicy { retention_bytes: 1, retention_ms: 0 };
        // With room to spare the two newest expired files are kept...
        assert_eq!(log.apply_retention(policy, 0).await.unwrap(), vec![0, 50, 100]);
        assert_eq!(recycled_files(&path).len(), 2);
        append_and_roll(4).await;
        assert_eq!(recycled_files(&path).len(), 1, "a roll took one");
        // ...and with the disk full, nothing is kept and the kept one goes.
        let filler = fill_disk(&mount_point);
        assert_eq!(log.apply_retention(policy, 0).await.unwrap(), vec![150]);
        assert!(recycled_files(&path).is_empty(), "retention gave every file back");
        std::fs::remove_file(&filler).unwrap();
        append_and_roll(5).await;
        log.close().await.unwrap();
    });
}
