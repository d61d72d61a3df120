//! The node's two clocks: [`monotonic_ms`] for deadlines, lags and leases
//! (fits an atomic, never goes back), [`wall_ms`] for timestamps that leave
//! the process (record and commit timestamps). Standard library only, so
//! every floor may read the time (docs/ARCHITECTURE.md).

use std::sync::OnceLock;
use std::time::Instant;

/// Milliseconds since the first call in this process (a monotonic clock
/// that fits an atomic).
pub fn monotonic_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Milliseconds on [`monotonic_ms`] corresponding to `instant`.
pub fn monotonic_ms_at(instant: Instant) -> u64 {
    let now = Instant::now();
    let current = monotonic_ms();
    match now.checked_duration_since(instant) {
        Some(ago) => current.saturating_sub(ago.as_millis() as u64),
        None => current + instant.duration_since(now).as_millis() as u64,
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as i64)
}
