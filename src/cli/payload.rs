//! Record values `ringlog bench` produces. How compressible they are
//! decides what lz4 does to the replication stream (and nothing else), so
//! it is a flag: figures name the payload they were taken with.

/// What the generated record values look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Payload {
    /// Random bytes: lz4 finds nothing to compress (as Kafka's and the
    /// OpenMessaging benchmarks' random payloads).
    Random,
    /// JSON-like log lines: lz4 compresses them about 2 to 3 times.
    Text,
    /// One byte repeated: lz4 compresses it about 250 times.
    Repeated,
}

/// Bytes a pool holds beyond one record: records are slices of it.
const POOL_BYTES: usize = 1 << 20;
/// Distance between the starts of consecutive records (a prime larger than
/// lz4's 64 KiB window divided by the records in it, so random records
/// never repeat each other inside the window).
const STRIDE_BYTES: usize = 4099;

/// A pool of value bytes; each record is a slice starting elsewhere.
pub struct ValuePool {
    bytes: Vec<u8>,
    record_bytes: usize,
    next: usize,
}

impl ValuePool {
    /// A pool for `record_bytes` values of `payload`, seeded by `seed`.
    pub fn new(payload: Payload, record_bytes: usize, seed: u64) -> ValuePool {
        let length = POOL_BYTES + record_bytes;
        let mut random = XorShift(seed | 1);
        let bytes = match payload {
            Payload::Random => (0..length).map(|_| random.next() as u8).collect(),
            Payload::Text => text(length, &mut random),
            Payload::Repeated => vec![b'r'; length],
        };
        ValuePool { bytes, record_bytes, next: 0 }
    }

    /// The next record's value.
    pub fn next_value(&mut self) -> &[u8] {
        let start = self.next;
        self.next = (self.next + STRIDE_BYTES) % (self.bytes.len() - self.record_bytes + 1);
        &self.bytes[start..start + self.record_bytes]
    }
}

/// Log lines such as services write: fixed field names, varying values.
fn text(length: usize, random: &mut XorShift) -> Vec<u8> {
    const LEVELS: [&str; 4] = ["info", "info", "warn", "debug"];
    const PATHS: [&str; 6] = ["/api/orders", "/api/users", "/api/cart", "/health", "/api/search", "/login"];
    const METHODS: [&str; 3] = ["GET", "POST", "PUT"];
    let mut bytes = Vec::with_capacity(length + 256);
    while bytes.len() < length {
        let line = format!(
            "{{\"ts\":{},\"level\":\"{}\",\"method\":\"{}\",\"path\":\"{}/{}\",\"user\":\"u{:06}\",\"status\":{},\"ms\":{}}}\n",
            1_700_000_000_000u64 + random.next() % 1_000_000_000,
            LEVELS[(random.next() % 4) as usize],
            METHODS[(random.next() % 3) as usize],
            PATHS[(random.next() % 6) as usize],
            random.next() % 100_000,
            random.next() % 1_000_000,
            [200, 200, 200, 201, 404, 500][(random.next() % 6) as usize],
            random.next() % 2000,
        );
        bytes.extend_from_slice(line.as_bytes());
    }
    bytes.truncate(length);
    bytes
}

/// xorshift64: fast, seedable, and no cryptographic claims needed here.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lz4_ratio(payload: Payload) -> f64 {
        let mut pool = ValuePool::new(payload, 1024, 7);
        let batch: Vec<u8> = (0..1000).flat_map(|_| pool.next_value().to_vec()).collect();
        batch.len() as f64 / lz4_flex::block::compress(&batch).len() as f64
    }

    #[test]
    fn payloads_compress_as_documented() {
        assert!(lz4_ratio(Payload::Random) < 1.01, "random: {}", lz4_ratio(Payload::Random));
        let text = lz4_ratio(Payload::Text);
        assert!((1.5..5.0).contains(&text), "text: {text}");
        assert!(lz4_ratio(Payload::Repeated) > 100.0);
    }

    #[test]
    fn consecutive_values_differ_and_have_the_record_size() {
        let mut pool = ValuePool::new(Payload::Random, 1024, 3);
        let first = pool.next_value().to_vec();
        let second = pool.next_value().to_vec();
        assert_eq!((first.len(), second.len()), (1024, 1024));
        assert_ne!(first, second);
    }
}
