//! Consumer-group offsets of the partition: commit, latch stale commits,
//! look up.

use super::*;

impl PartitionLog {
    /// Durably commit `offset` for consumer `group` (clears a latched
    /// out-of-range state: committing is the explicit reset).
    pub async fn commit_offset(&self, group: &str, offset: u64) -> StorageResult<()> {
        let _permit = self.inner.offsets_gate.acquire().await;
        let (log_start_offset, log_end_offset) = {
            let state = self.inner.state.borrow();
            (state.log_start_offset(), state.log_end_offset)
        };
        if offset > log_end_offset {
            // Checked under the offsets gate: a truncation that latched
            // stale commits cannot be followed by a commit beyond its end.
            return Err(StorageError::OffsetOutOfRange { offset, log_start_offset, log_end_offset });
        }
        self.store_commit(group, CommittedOffset::new(offset, crate::runtime::clock::wall_ms())).await
    }

    /// Callers hold the offsets gate: `abandon` waits for them, and a
    /// closed log's directory may already belong to a new topic.
    pub(super) async fn store_commit(&self, group: &str, committed: CommittedOffset) -> StorageResult<()> {
        if self.inner.state.borrow().health.closed {
            return Err(StorageError::Closed(self.inner.dir.clone()));
        }
        crate::storage::offsets::validate_group(group).map_err(StorageError::InvalidGroup)?;
        let job = self
            .inner
            .state
            .borrow_mut()
            .offsets
            .begin_commit(group, committed)
            .map_err(|cause| StorageError::StorageFailed { partition: self.inner.dir.clone(), cause })?;
        let outcome = run_blocking(move || job.run()).await;
        let path = self.inner.state.borrow().offsets.path().to_path_buf();
        match self.inner.state.borrow_mut().offsets.finish_commit(group, committed, outcome) {
            Ok(()) => Ok(()),
            Err(CommitError::WriteDiskFull(_)) => Err(StorageError::DiskFull { path }),
            Err(CommitError::Write(error) | CommitError::Sync(error)) => {
                Err(StorageError::io("commit consumer offset", &path, error))
            }
        }
    }

    /// Latch, durably, every group whose committed offset now lies beyond
    /// the log end: the records it had consumed up to were lost (a crash's
    /// torn tail, a divergent suffix truncated, a disk-full rollback). The
    /// latch outlives later appends that move the log end past it.
    pub(super) async fn latch_stale_commits(&self) -> StorageResult<()> {
        let _permit = self.inner.offsets_gate.acquire().await;
        let log_end_offset = self.inner.state.borrow().log_end_offset;
        let stale = self.inner.state.borrow().offsets.stale_beyond(log_end_offset);
        for (group, committed) in stale {
            tracing::warn!(target: "ringlog::storage", dir = %self.inner.dir.display(), %group,
                committed = committed.offset, log_end_offset, "committed offset beyond the log end: latched out of range");
            let latched = CommittedOffset { out_of_range: true, ..committed };
            // In memory first: consumers see the latch even if storing it fails.
            self.inner.state.borrow_mut().offsets.latch_in_memory(&group, latched);
            self.store_commit(&group, latched).await?;
        }
        Ok(())
    }

    /// Every group's committed offset (followers mirror them from the leader).
    pub fn committed_offsets(&self) -> Vec<(String, u64)> {
        let state = self.inner.state.borrow();
        let mut groups: Vec<(String, u64)> =
            state.offsets.groups().map(|(group, committed)| (group.to_string(), committed.offset)).collect();
        groups.sort();
        groups
    }

    /// Where consumer `group` resumes, checked against the current log bounds.
    pub fn committed_offset(&self, group: &str) -> OffsetLookup {
        let state = self.inner.state.borrow();
        state.offsets.lookup(group, state.log_start_offset(), state.log_end_offset)
    }
}
