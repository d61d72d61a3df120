//! Waiting for news on several partitions at once without reading them: a
//! Kafka Fetch of several partitions that found nothing waits here, woken
//! on the shards that own them by what wakes the native long poll (the
//! partition's durable end and its replication state), then reads once
//! more. It used to read every partition again every 50 ms: answers up to
//! 50 ms late, and a read of each partition twenty times a second for
//! every idle consumer.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::fetch::{waits_for_durability, RECHECK_INTERVAL};
use crate::replication::high_watermark;
use crate::runtime::Wake;
use crate::shard::context::ShardContext;
use crate::shard::mesh::ReadableWatch;
pub use crate::shard::mesh::Watched;
use crate::shard::partitions::OwnedPartition;
use crate::shard::ShardId;

/// Wait until one of `partitions` has news for a reader (see
/// [`partition_has_news`]), until `deadline`, or until the node stops:
/// one watch per owning shard, all stopped when this returns. A partition
/// whose owner is unknown (its topic deleted meanwhile) is news: a read
/// reports it.
pub async fn wait_for_news(context: &Rc<ShardContext>, partitions: Vec<Watched>, deadline: Instant) {
    let remaining = deadline.saturating_duration_since(Instant::now());
    let mut by_owner: BTreeMap<ShardId, Vec<Watched>> = BTreeMap::new();
    for (topic, partition, offset) in partitions {
        match super::owner(context, &topic, partition) {
            Ok(shard) => by_owner.entry(shard).or_default().push((topic, partition, offset)),
            Err(_) => return,
        }
    }
    // Rounded up, so a watch never ends before the deadline it serves.
    let max_wait_ms = u32::try_from(remaining.as_micros().div_ceil(1000)).unwrap_or(u32::MAX);
    // Dropped when this returns: every watch still waiting ends then.
    let (_stop, stopped) = async_channel::bounded::<()>(1);
    let (news_sender, news) = async_channel::bounded(1);
    let posting = async move {
        for (shard, partitions) in by_owner {
            let watch = ReadableWatch { partitions, max_wait_ms, news: news_sender.clone(), stopped: stopped.clone() };
            if shard == context.shard {
                spawn_watch(context, watch);
            } else if context.mesh.post_watch(shard, watch).await.is_err() {
                // Shutting down: the read that follows answers.
                return;
            }
        }
        // Every watch holds a sender now: the news channel closes when all
        // of them ended without news.
        drop(news_sender);
        std::future::pending::<()>().await
    };
    let any_news = async {
        let _ = news.recv().await;
    };
    // News from a watch already running ends the wait while a full mesh
    // channel holds up a post; one timer bounds the posts and the wait,
    // and a node that stops ends it (shutdown waits for requests in flight).
    let watched = futures_lite::future::or(any_news, posting);
    let ended = futures_lite::future::or(crate::runtime::sleep(remaining), context.stopping.wait());
    futures_lite::future::or(watched, ended).await;
}

/// Run `watch` of partitions this shard owns in a task of its own.
pub fn spawn_watch(context: &Rc<ShardContext>, watch: ReadableWatch) {
    let context = Rc::clone(context);
    crate::runtime::spawn_local(async move { watch_readable(&context, watch).await }).detach();
}

/// One watched partition as this shard holds it when the watch begins.
struct WatchedPartition {
    topic: String,
    partition: u32,
    offset: u64,
    owned: Option<Rc<OwnedPartition>>,
}

/// Watch partitions this shard owns until one has news (then say so on
/// `watch.news`), the watch's time is up, or its watcher stops waiting.
/// This node no longer leading is news too: Kafka reads are the leader's.
async fn watch_readable(context: &ShardContext, watch: ReadableWatch) {
    let _counted = CountedWatch::start(context);
    let max_wait = Duration::from_millis(u64::from(watch.max_wait_ms).min(context.config.limits.max_fetch_wait_ms));
    let deadline = Instant::now() + max_wait;
    let watched: Vec<WatchedPartition> = watch
        .partitions
        .into_iter()
        .map(|(topic, partition, offset)| {
            let owned = context.partitions.get(&topic, partition);
            WatchedPartition { topic, partition, offset, owned }
        })
        .collect();
    loop {
        context.shard_metrics().fetch_watch_rounds.fetch_add(1, Ordering::Relaxed);
        // Built before looking: a change between the look and the wait
        // still wakes it (the replication notice counts from here; the
        // durable wait looks at the log when first polled).
        let wakes = wakes(&watched);
        let has_news = |watched: &WatchedPartition| partition_has_news(context, watched);
        if context.write_epoch().is_err() || watched.iter().any(has_news) {
            let _ = watch.news.try_send(());
            return;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return;
        }
        let woken = async {
            let recheck = crate::runtime::sleep(remaining.min(RECHECK_INTERVAL));
            futures_lite::future::or(crate::runtime::first_of(wakes), recheck).await;
            false
        };
        let stopped = async {
            let _ = watch.stopped.recv().await;
            true
        };
        if futures_lite::future::or(stopped, woken).await {
            return;
        }
        // A backstop, should a wake ever be ready at once every round (none
        // is: see `wakes`): glommio yields here once the task used its time
        // slice, so the shard still serves everyone else, at a core's cost.
        crate::runtime::yield_now().await;
    }
}

/// A watch counted in `ringlog_fetch_watches` while it runs (dropped with
/// its task at shutdown, too).
struct CountedWatch<'a>(&'a ShardContext);

impl<'a> CountedWatch<'a> {
    fn start(context: &'a ShardContext) -> CountedWatch<'a> {
        context.shard_metrics().fetch_watches.fetch_add(1, Ordering::Relaxed);
        CountedWatch(context)
    }
}

impl Drop for CountedWatch<'_> {
    fn drop(&mut self) {
        self.0.shard_metrics().fetch_watches.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What wakes a wait for each partition: its replication state changing
/// (the high watermark may move) and, when a consumer would wait for it,
/// its durable end passing the offset (`fetch::waits_for_durability`). A
/// closed log wakes nothing: it is news.
fn wakes(watched: &[WatchedPartition]) -> Vec<Wake<'_>> {
    let mut wakes: Vec<Wake<'_>> = Vec::with_capacity(watched.len() * 2);
    for watched in watched {
        let Some(owned) = &watched.owned else { continue };
        if owned.log.is_closed() {
            continue;
        }
        wakes.push(Box::pin(owned.replication.changed.notified()));
        if waits_for_durability(&owned.log.snapshot(), watched.offset) {
            wakes.push(Box::pin(owned.log.wait_durable_past(watched.offset)));
        }
    }
    wakes
}

/// Whether a read of the partition would answer records or an error: the
/// high watermark consumers may see is past the offset (or not
/// established: the read answers the retriable `not_ready`), the offset
/// is outside the log, or the partition is no longer the one the watch
/// began with (its topic deleted, perhaps created again) or its log
/// closed. A log that fail-stopped or is fenced has news only as any other
/// does: a read at its end answers nothing, so counting its state as news
/// answered its readers at once, and they asked again at once.
fn partition_has_news(context: &ShardContext, watched: &WatchedPartition) -> bool {
    let Some(owned) = &watched.owned else { return true };
    let current = context.partitions.get(&watched.topic, watched.partition);
    if !current.is_some_and(|current| Rc::ptr_eq(&current, owned)) || owned.log.is_closed() {
        return true;
    }
    let snapshot = owned.log.snapshot();
    if watched.offset < snapshot.log_start_offset || watched.offset > snapshot.log_end_offset {
        return true;
    }
    high_watermark::visible(owned, &context.cluster).is_none_or(|high_watermark| high_watermark > watched.offset)
}
