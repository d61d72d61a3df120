//! Kafka protocol counters (docs/KAFKA.md): requests per API key and the
//! error codes answered per API key, written by `requests::kafka` with
//! relaxed atomics (no lock on the request path) and rendered by `admin`.

use std::sync::atomic::{AtomicU64, Ordering};

/// API keys counted: 0..40 covers every API the listener serves (the
/// largest is SaslAuthenticate, 36); other keys are never decoded.
pub const KAFKA_API_KEYS: usize = 40;
/// Error codes counted: -1 (UNKNOWN_SERVER_ERROR) to 126, at `code + 1`.
pub const KAFKA_ERROR_CODES: usize = 128;

/// Kafka requests and error codes.
#[derive(Debug)]
pub struct KafkaCounters {
    requests: Vec<AtomicU64>,
    /// `api_key * KAFKA_ERROR_CODES + code + 1`.
    errors: Vec<AtomicU64>,
}

impl Default for KafkaCounters {
    fn default() -> Self {
        KafkaCounters {
            requests: (0..KAFKA_API_KEYS).map(|_| AtomicU64::new(0)).collect(),
            errors: (0..KAFKA_API_KEYS * KAFKA_ERROR_CODES).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl KafkaCounters {
    /// A request of `api_key` arrived (keys outside the table are not counted).
    pub fn count_request(&self, api_key: i16) {
        if let Some(counter) = usize::try_from(api_key).ok().and_then(|key| self.requests.get(key)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An answer to `api_key` carried the non-zero `code` (once per topic or
    /// partition that carried it).
    pub fn count_error(&self, api_key: i16, code: i16) {
        let slot = usize::try_from(api_key).ok().filter(|key| *key < KAFKA_API_KEYS).and_then(|key| {
            let code = usize::try_from(i32::from(code) + 1).ok().filter(|code| *code < KAFKA_ERROR_CODES)?;
            Some(key * KAFKA_ERROR_CODES + code)
        });
        if let Some(counter) = slot.and_then(|slot| self.errors.get(slot)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (api key, requests) for every key with at least one request.
    pub fn requests(&self) -> Vec<(i16, u64)> {
        let counts = self.requests.iter().map(|counter| counter.load(Ordering::Relaxed));
        counts.enumerate().filter(|(_, count)| *count > 0).map(|(key, count)| (key as i16, count)).collect()
    }

    /// (api key, error code, answers) for every pair seen at least once.
    pub fn errors(&self) -> Vec<(i16, i16, u64)> {
        let counts = self.errors.iter().map(|counter| counter.load(Ordering::Relaxed)).enumerate();
        counts
            .filter(|(_, count)| *count > 0)
            .map(|(slot, count)| ((slot / KAFKA_ERROR_CODES) as i16, (slot % KAFKA_ERROR_CODES) as i16 - 1, count))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_in_their_api_and_code_and_out_of_table_keys_are_ignored() {
        let counters = KafkaCounters::default();
        counters.count_request(0);
        counters.count_request(0);
        counters.count_request(99);
        counters.count_error(0, 3);
        counters.count_error(1, -1);
        counters.count_error(1, 500);
        assert_eq!(counters.requests(), [(0, 2)]);
        assert_eq!(counters.errors(), [(0, 3, 1), (1, -1, 1)]);
    }
}
