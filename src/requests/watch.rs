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

use crate::replication::high_watermark;
use crate::shard::context::ShardContext;
use crate::shard::mesh::ReadableWatch;
use crate::shard::partitions::OwnedPartition;
use crate::shard::ShardId;

/// How often a watch looks again at what another thread may change (the
/// in-sync set, and with it the high watermark; this node's leadership),
/// as the native long poll does.
const RECHECK_INTERVAL: Duration = Duration::from_millis(100);

/// A partition to watch: (topic, partition, offset the reader asks for).
pub type Watched = (String, u32, u64);

/// Wait until one of `partitions` has records a read would return or an
/// error to report, or until `deadline`: one watch per owning shard, all
/// stopped when this returns. A partition whose owner is unknown (its
/// topic deleted meanwhile) is news: a read reports it.
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
    let (news_sender, news) = async_channel::bounded(1);
    // Dropped when this returns: every watch still waiting ends then.
    let (_stop, stopped) = async_channel::bounded::<()>(1);
    for (shard, partitions) in by_owner {
        let watch = ReadableWatch { partitions, max_wait_ms, news: news_sender.clone(), stopped: stopped.clone() };
        if shard == context.shard {
            let context = Rc::clone(context);
            crate::runtime::spawn_local(async move { watch_readable(&context, watch).await }).detach();
        } else if context.mesh.post_watch(shard, watch).await.is_err() {
            // Shutting down: the read that follows answers.
            return;
        }
    }
    drop(news_sender);
    // Ends at the first news, or once every watch ended without any.
    let any_news = async {
        let _ = news.recv().await;
    };
    futures_lite::future::or(any_news, crate::runtime::sleep(remaining)).await;
}

/// Watch partitions this shard owns until one has news (then say so on
/// `watch.news`), the watch's time is up, or its watcher stops waiting.
/// This node no longer leading is news too: Kafka reads are the leader's.
pub async fn watch_readable(context: &ShardContext, watch: ReadableWatch) {
    let _counted = CountedWatch::start(context);
    let max_wait = Duration::from_millis(u64::from(watch.max_wait_ms).min(context.config.limits.max_fetch_wait_ms));
    let deadline = Instant::now() + max_wait;
    let watched: Vec<(Option<Rc<OwnedPartition>>, u64)> = watch
        .partitions
        .iter()
        .map(|(topic, partition, offset)| (context.partitions.get(topic, *partition), *offset))
        .collect();
    loop {
        // Registered before looking: news between the look and the wait
        // still wakes it.
        let wakes = wakes(&watched);
        let has_news =
            |(owned, offset): &(Option<Rc<OwnedPartition>>, u64)| has_news(context, owned.as_deref(), *offset);
        if context.write_epoch().is_err() || watched.iter().any(has_news) {
            let _ = watch.news.try_send(());
            return;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return;
        }
        let woken = async {
            futures_lite::future::or(
                crate::runtime::first_of(wakes),
                crate::runtime::sleep(remaining.min(RECHECK_INTERVAL)),
            )
            .await;
            false
        };
        let stopped = async {
            let _ = watch.stopped.recv().await;
            true
        };
        if futures_lite::future::or(woken, stopped).await {
            return;
        }
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
/// (the high watermark may move) and, while the log is not durable past
/// the offset, its durable end passing it. A log durable past it already
/// waits on the high watermark alone: waiting for durability too would be
/// ready at once and spin the shard.
fn wakes(watched: &[(Option<Rc<OwnedPartition>>, u64)]) -> Vec<crate::runtime::Wake<'_>> {
    let mut wakes: Vec<crate::runtime::Wake<'_>> = Vec::with_capacity(watched.len() * 2);
    for (owned, offset) in watched {
        let Some(owned) = owned else { continue };
        wakes.push(Box::pin(owned.replication.changed.notified()));
        if owned.log.snapshot().durable_end_offset <= *offset {
            wakes.push(Box::pin(owned.log.wait_durable_past(*offset)));
        }
    }
    wakes
}

/// Whether a read of `owned` at `offset` would return records or an error:
/// the high watermark consumers may see is past it, the offset is outside
/// the log, or the log fail-stopped or fenced; a partition gone from this
/// shard (its topic deleted) is news too.
fn has_news(context: &ShardContext, owned: Option<&OwnedPartition>, offset: u64) -> bool {
    let Some(owned) = owned else { return true };
    let snapshot = owned.log.snapshot();
    if snapshot.failure.is_some() || snapshot.fence.is_some() {
        return true;
    }
    if offset < snapshot.log_start_offset || offset > snapshot.log_end_offset {
        return true;
    }
    high_watermark::visible(owned, &context.cluster).is_some_and(|high_watermark| high_watermark > offset)
}
