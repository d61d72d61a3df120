//! `acks=all`: a produce is acknowledged once every in-sync replica has it
//! durable, and refused up front when the in-sync set is below
//! `cluster.min_insync_replicas`. A leader's consumer-group commit waits the
//! same way, for every in-sync follower to have stored it.

use std::time::{Duration, Instant};

use crate::config::NodeConfig;
use crate::protocol::{ErrorCode, ErrorResponse};
use crate::shard::context::{write_epoch_of, ShardContext};
use crate::shard::partitions::OwnedPartition;
use crate::shard::wire_error::refusal;
use crate::state::cluster::ClusterState;

/// The precondition: enough in-sync replicas to accept a write.
pub fn check_min_in_sync(cluster: &ClusterState, config: &NodeConfig) -> Result<(), ErrorResponse> {
    if !cluster.is_clustered() {
        return Ok(());
    }
    let in_sync = 1 + cluster.view().in_sync_followers.len();
    let needed = config.cluster.min_insync_replicas;
    if in_sync < needed {
        return Err(refusal(
            ErrorCode::NotEnoughReplicas,
            format!("{in_sync} in-sync replicas, min_insync_replicas is {needed}"),
        ));
    }
    Ok(())
}

/// Wait until every in-sync replica has `next_offset` durable (the high
/// watermark passes it), under the rules of [`wait_in_sync`].
pub async fn wait_for_replicas(
    context: &ShardContext,
    owned: &OwnedPartition,
    next_offset: u64,
) -> Result<(), ErrorResponse> {
    wait_in_sync(&context.cluster, &context.config, owned, "in-sync replicas did not acknowledge in time", |_| {
        super::high_watermark::advance(owned, &context.cluster) >= next_offset
    })
    .await
}

/// Wait until every in-sync follower has stored consumer-group commit
/// version `commit_version` (or a later one) durably, under the rules of
/// [`wait_in_sync`]: the same in-sync set, bound and errors as `acks=all`.
pub async fn wait_for_commit(
    context: &ShardContext,
    owned: &OwnedPartition,
    commit_version: u64,
) -> Result<(), ErrorResponse> {
    wait_for_commit_in(&context.cluster, &context.config, owned, commit_version).await
}

/// [`wait_for_commit`] on the cluster state and settings alone.
async fn wait_for_commit_in(
    cluster: &ClusterState,
    config: &NodeConfig,
    owned: &OwnedPartition,
    commit_version: u64,
) -> Result<(), ErrorResponse> {
    wait_in_sync(cluster, config, owned, "in-sync replicas did not store the commit in time", |in_sync| {
        // Begins the term on the first look in a new epoch, which forgets
        // what followers stored in an earlier one.
        super::high_watermark::advance(owned, cluster);
        owned.replication.commits.stored_by_all(commit_version, in_sync)
    })
    .await
}

/// Wait until `reached` holds for the current in-sync followers. Fails with
/// `not_enough_replicas` when the set shrinks below the minimum,
/// `not_leader` when leadership is lost, and `timeout` after twice
/// `replica_lag_max_ms` (by then a stuck follower has been dropped from the
/// set, so this only fires if etcd is stuck). Standalone: at once.
async fn wait_in_sync(
    cluster: &ClusterState,
    config: &NodeConfig,
    owned: &OwnedPartition,
    timed_out: &str,
    reached: impl Fn(&[u64]) -> bool,
) -> Result<(), ErrorResponse> {
    if !cluster.is_clustered() {
        return Ok(());
    }
    let limit = Duration::from_millis(config.cluster.replica_lag_max_ms * 2);
    let started = Instant::now();
    loop {
        let changed = owned.replication.changed.notified();
        write_epoch_of(cluster)?;
        check_min_in_sync(cluster, config)?;
        if reached(&cluster.view().in_sync_followers) {
            return Ok(());
        }
        let remaining = limit.saturating_sub(started.elapsed());
        if remaining.is_zero() {
            tracing::warn!(target: "ringlog::replication", dir = %owned.log.dir().display(), waited_ms = limit.as_millis() as u64,
                "{timed_out}");
            return Err(refusal(ErrorCode::Timeout, timed_out));
        }
        // Changes of the in-sync set come from another thread: re-check at
        // least every 20 ms as well as on every follower acknowledgement.
        futures_lite::future::or(changed, crate::runtime::sleep(remaining.min(Duration::from_millis(20)))).await;
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;
    use std::sync::Arc;

    use super::*;
    use crate::shard::topics::TopicMeta;
    use crate::state::cluster::Role;
    use crate::storage::PartitionLog;

    /// A leader of epoch 3 with followers 2 and 3 in sync, followers
    /// dropped after `lag_max_ms` (a commit waits twice that).
    fn leader(lag_max_ms: u64) -> (Arc<ClusterState>, NodeConfig) {
        let cluster = ClusterState::clustered();
        cluster.update(|view| {
            view.role = Role::Leader;
            view.leader_epoch = 3;
            view.in_sync_followers = vec![2, 3];
        });
        cluster.extend_write_deadline(Instant::now() + Duration::from_secs(60));
        let mut config = NodeConfig::default();
        config.cluster.replica_lag_max_ms = lag_max_ms;
        (cluster, config)
    }

    /// Run `test` with one open partition on a fresh executor.
    fn with_partition<T, Fut>(test: impl FnOnce(Rc<OwnedPartition>) -> Fut + Send + 'static) -> T
    where
        Fut: std::future::Future<Output = T> + 'static,
        T: Send + 'static,
    {
        crate::runtime::block_on_executor("commit-wait-test", || async move {
            let dir = tempfile::tempdir().unwrap();
            let log = PartitionLog::open(dir.path(), Default::default(), None).await.unwrap();
            let meta = TopicMeta::for_tests("t", 1);
            let owned = Rc::new(OwnedPartition {
                partition: 0,
                log,
                meta: Arc::new(meta),
                replication: Default::default(),
                fetched_bytes: Default::default(),
                opened_at_topic_removals: 0,
            });
            let outcome = test(Rc::clone(&owned)).await;
            drop(dir);
            outcome
        })
        .unwrap()
    }

    /// Start waiting for `version` on a task; the caller drives the rest.
    fn spawn_wait(
        cluster: &Arc<ClusterState>,
        config: &NodeConfig,
        owned: &Rc<OwnedPartition>,
        version: u64,
    ) -> crate::runtime::Task<Result<(), ErrorResponse>> {
        let (cluster, config, owned) = (Arc::clone(cluster), config.clone(), Rc::clone(owned));
        crate::runtime::spawn_local(async move { wait_for_commit_in(&cluster, &config, &owned, version).await })
    }

    #[test]
    fn a_commit_waits_until_every_in_sync_follower_stored_it() {
        let outcome = with_partition(|owned| async move {
            let (cluster, config) = leader(10_000);
            super::super::high_watermark::advance(&owned, &cluster);
            let version = owned.replication.note_commit();
            let done = Rc::new(std::cell::Cell::new(false));
            let (flag, waiting) = (Rc::clone(&done), spawn_wait(&cluster, &config, &owned, version));
            let wait = crate::runtime::spawn_local(async move {
                let outcome = waiting.await;
                flag.set(true);
                outcome
            });
            owned.replication.record_commits_stored(2, version);
            crate::runtime::sleep(Duration::from_millis(60)).await;
            let pending_after_one = !done.get();
            owned.replication.record_commits_stored(3, version);
            (pending_after_one, wait.await)
        });
        assert_eq!(outcome, (true, Ok(())), "pending until follower 3 stored it too, then acknowledged");
    }

    #[test]
    fn a_commit_no_follower_stores_times_out_with_the_acks_all_error() {
        let outcome = with_partition(|owned| async move {
            let (cluster, config) = leader(50);
            // The term begins before followers acknowledge (as when they ask).
            super::super::high_watermark::advance(&owned, &cluster);
            let version = owned.replication.note_commit();
            owned.replication.record_commits_stored(2, version);
            wait_for_commit_in(&cluster, &config, &owned, version).await
        });
        assert_eq!(outcome.map_err(|error| error.code), Err(ErrorCode::Timeout));
    }

    #[test]
    fn a_leader_that_steps_down_while_a_commit_waits_answers_not_leader() {
        let outcome = with_partition(|owned| async move {
            let (cluster, config) = leader(10_000);
            super::super::high_watermark::advance(&owned, &cluster);
            let version = owned.replication.note_commit();
            let wait = spawn_wait(&cluster, &config, &owned, version);
            crate::runtime::sleep(Duration::from_millis(30)).await;
            cluster.update(|view| view.role = Role::Follower);
            // Even a follower storing it afterwards does not turn it into a success.
            owned.replication.record_commits_stored(2, version);
            owned.replication.record_commits_stored(3, version);
            wait.await
        });
        assert_eq!(outcome.map_err(|error| error.code), Err(ErrorCode::NotLeader));
    }

    #[test]
    fn a_follower_dropped_from_the_in_sync_set_no_longer_holds_commits() {
        let outcome = with_partition(|owned| async move {
            let (cluster, config) = leader(10_000);
            super::super::high_watermark::advance(&owned, &cluster);
            let version = owned.replication.note_commit();
            let wait = spawn_wait(&cluster, &config, &owned, version);
            owned.replication.record_commits_stored(2, version);
            crate::runtime::sleep(Duration::from_millis(30)).await;
            cluster.update(|view| view.in_sync_followers = vec![2]);
            wait.await
        });
        assert_eq!(outcome, Ok(()));
    }

    #[test]
    fn acknowledgements_from_an_earlier_term_do_not_release_a_commit() {
        let outcome = with_partition(|owned| async move {
            let (cluster, config) = leader(50);
            // The term begins before followers acknowledge (as when they ask).
            super::super::high_watermark::advance(&owned, &cluster);
            let version = owned.replication.note_commit();
            owned.replication.record_commits_stored(2, version);
            owned.replication.record_commits_stored(3, version);
            assert_eq!(wait_for_commit_in(&cluster, &config, &owned, version).await, Ok(()));
            // Re-elected under a new epoch: the same acknowledgements are forgotten.
            cluster.update(|view| view.leader_epoch = 4);
            wait_for_commit_in(&cluster, &config, &owned, version).await
        });
        assert_eq!(outcome.map_err(|error| error.code), Err(ErrorCode::Timeout));
    }

    #[test]
    fn too_few_in_sync_replicas_refuse_and_a_standalone_node_never_waits() {
        let outcome = with_partition(|owned| async move {
            let (cluster, mut config) = leader(10_000);
            config.cluster.min_insync_replicas = 3;
            cluster.update(|view| view.in_sync_followers = vec![2]);
            let version = owned.replication.note_commit();
            let refused = wait_for_commit_in(&cluster, &config, &owned, version).await.map_err(|error| error.code);
            let standalone = wait_for_commit_in(&ClusterState::standalone(), &config, &owned, version).await;
            (refused, standalone)
        });
        assert_eq!(outcome, (Err(ErrorCode::NotEnoughReplicas), Ok(())));
    }
}
