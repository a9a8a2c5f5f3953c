//! A log-linear latency histogram in microseconds.
//!
//! Values below 32 µs get a bucket each; above that every power of two is
//! split into 32 equal buckets, so a bucket is at most ~3 % wide. Values are
//! capped at 2^40 µs (about 12.7 days). The whole thing is ~10 KiB and
//! recording a value is a few integer operations.

use std::time::Duration;

const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS; // 32
const MAX_MSB: u32 = 40;
const BUCKETS: usize = (SUB + (MAX_MSB - SUB_BITS + 1) as u64 * SUB) as usize;

/// Latency histogram; see the module docs.
#[derive(Clone)]
pub(crate) struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
    max_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: Box::new([0; BUCKETS]),
            total: 0,
            max_us: 0,
        }
    }
}

fn index(v: u64) -> usize {
    let v = v.min((1 << (MAX_MSB + 1)) - 1);
    if v < SUB {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    let top = v >> shift; // in [SUB, 2 * SUB)
    (SUB + u64::from(shift) * SUB + (top - SUB)) as usize
}

/// The largest value that falls into bucket `i`.
fn upper(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let shift = (i - SUB) / SUB;
    let top = SUB + (i - SUB) % SUB;
    ((top + 1) << shift) - 1
}

impl Histogram {
    /// Records one latency.
    pub(crate) fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.counts[index(us)] += 1;
        self.total += 1;
        self.max_us = self.max_us.max(us);
    }

    /// Adds another histogram's counts to this one.
    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// The value at quantile `q` (0..=1), as the upper edge of its bucket
    /// (never above the largest value seen). Zero when empty.
    pub(crate) fn quantile(&self, q: f64) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Duration::from_micros(upper(i).min(self.max_us));
            }
        }
        Duration::from_micros(self.max_us)
    }

    /// How many values were recorded.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// The largest value recorded.
    pub(crate) fn max(&self) -> Duration {
        Duration::from_micros(self.max_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in (0..100_000u64).chain([1 << 30, (1 << 40) + 12345]) {
            let i = index(v);
            assert!(i >= last, "index not monotonic at {v}");
            last = i;
            let up = upper(i);
            assert!(up >= v.min((1 << 41) - 1), "upper({i}) = {up} < {v}");
            // At most ~3 % (1/32) above the value.
            assert!(up - v <= v / 32 + 1, "bucket too wide at {v}: {up}");
        }
        assert!(index(u64::MAX) < BUCKETS);
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), Duration::ZERO);
        for us in 1..=1000 {
            h.record(Duration::from_micros(us));
        }
        let mut other = Histogram::default();
        other.record(Duration::from_millis(50));
        h.merge(&other);
        let p50 = h.quantile(0.5).as_micros() as i64;
        assert!((p50 - 501).abs() <= 16, "p50 {p50}");
        let p99 = h.quantile(0.99).as_micros() as i64;
        assert!((p99 - 991).abs() <= 32, "p99 {p99}");
        assert_eq!(h.quantile(1.0), Duration::from_millis(50));
        assert_eq!(h.max(), Duration::from_millis(50));
    }
}
