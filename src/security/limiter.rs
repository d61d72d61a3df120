//! Failed-authentication rate limiting per source address: after
//! `max_failures_per_minute` failures from one address within a minute, its
//! new attempts are refused at once until that minute is over. One limiter
//! per shard (single-threaded, no locks); the map is bounded and evicts the
//! source whose window started first, so a flood of addresses cannot grow it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long failures count against a source.
pub const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// The bucket a source counts in: an IPv4 address (also when written as
/// an IPv4-mapped IPv6 one), or an IPv6 address's /64, which one host
/// usually holds whole: counting each of its 2^64 addresses apart would
/// give it 2^64 budgets.
fn bucket(source: IpAddr) -> IpAddr {
    match source {
        IpAddr::V4(_) => source,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let segments = v6.segments();
                IpAddr::from([segments[0], segments[1], segments[2], segments[3], 0, 0, 0, 0])
            }
        },
    }
}

/// Counts authentication failures per source address. The clock is passed
/// in (`now`), so tests drive it.
#[derive(Debug)]
pub struct FailureLimiter {
    max_failures_per_minute: u32,
    max_tracked_sources: usize,
    sources: HashMap<IpAddr, Window>,
}

impl FailureLimiter {
    pub fn new(max_failures_per_minute: u32, max_tracked_sources: usize) -> FailureLimiter {
        FailureLimiter {
            max_failures_per_minute,
            max_tracked_sources: max_tracked_sources.max(1),
            sources: HashMap::new(),
        }
    }

    /// Whether `source` may try to authenticate now.
    pub fn admits(&self, source: IpAddr, now: Instant) -> bool {
        match self.sources.get(&bucket(source)) {
            Some(window) if now.saturating_duration_since(window.started) < WINDOW => {
                window.failures < self.max_failures_per_minute
            }
            _ => true,
        }
    }

    /// Count one failure from `source`.
    pub fn record_failure(&mut self, source: IpAddr, now: Instant) {
        let source = bucket(source);
        if !self.sources.contains_key(&source) && self.sources.len() >= self.max_tracked_sources {
            self.make_room(now);
        }
        let window = self.sources.entry(source).or_insert(Window { started: now, failures: 0 });
        if now.saturating_duration_since(window.started) >= WINDOW {
            *window = Window { started: now, failures: 0 };
        }
        window.failures = window.failures.saturating_add(1);
    }

    /// How many sources are tracked.
    pub fn tracked_sources(&self) -> usize {
        self.sources.len()
    }

    /// Drop expired windows; if none expired, the oldest one. Linear, but
    /// only when the map is full.
    fn make_room(&mut self, now: Instant) {
        self.sources.retain(|_, window| now.saturating_duration_since(window.started) < WINDOW);
        if self.sources.len() < self.max_tracked_sources {
            return;
        }
        let oldest = self.sources.iter().min_by_key(|(_, window)| window.started).map(|(source, _)| *source);
        if let Some(oldest) = oldest {
            self.sources.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_ipv6_slash_64_and_an_ipv4_mapped_address_count_as_one_source() {
        let mut limiter = FailureLimiter::new(2, 100);
        let now = Instant::now();
        limiter.record_failure("2001:db8:1:2::1".parse().unwrap(), now);
        limiter.record_failure("2001:db8:1:2:ffff::9".parse().unwrap(), now);
        assert!(!limiter.admits("2001:db8:1:2::77".parse().unwrap(), now), "the same /64");
        assert!(limiter.admits("2001:db8:1:3::1".parse().unwrap(), now), "another /64");
        limiter.record_failure("::ffff:192.0.2.7".parse().unwrap(), now);
        limiter.record_failure("192.0.2.7".parse().unwrap(), now);
        assert!(!limiter.admits("192.0.2.7".parse().unwrap(), now));
    }

    fn address(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_source_is_refused_after_its_failures_until_the_minute_passes() {
        let start = Instant::now();
        let mut limiter = FailureLimiter::new(3, 100);
        for _ in 0..3 {
            assert!(limiter.admits(address(1), start));
            limiter.record_failure(address(1), start);
        }
        assert!(!limiter.admits(address(1), start + Duration::from_secs(59)));
        assert!(limiter.admits(address(2), start), "other sources are not affected");
        assert!(limiter.admits(address(1), start + WINDOW));
        limiter.record_failure(address(1), start + WINDOW);
        assert!(limiter.admits(address(1), start + WINDOW), "a new window starts with one failure");
    }

    #[test]
    fn the_map_is_bounded_and_evicts_the_oldest_source() {
        let start = Instant::now();
        let mut limiter = FailureLimiter::new(1, 2);
        limiter.record_failure(address(1), start);
        limiter.record_failure(address(2), start + Duration::from_secs(1));
        limiter.record_failure(address(3), start + Duration::from_secs(2));
        assert_eq!(limiter.tracked_sources(), 2);
        assert!(limiter.admits(address(1), start + Duration::from_secs(2)), "evicted");
        assert!(!limiter.admits(address(2), start + Duration::from_secs(2)));
        assert!(!limiter.admits(address(3), start + Duration::from_secs(2)));
    }

    #[test]
    fn expired_windows_are_dropped_before_a_live_one_is_evicted() {
        let start = Instant::now();
        let mut limiter = FailureLimiter::new(1, 2);
        limiter.record_failure(address(1), start);
        limiter.record_failure(address(2), start + Duration::from_secs(30));
        limiter.record_failure(address(3), start + Duration::from_secs(61));
        assert!(!limiter.admits(address(2), start + Duration::from_secs(61)), "still in its window, kept");
        assert_eq!(limiter.tracked_sources(), 2);
    }
}
