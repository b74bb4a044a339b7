//! A lock-free latency histogram for per-stage metrics, shared by every
//! layer (the dataplane, the control thread, storage, the API).
//!
//! Buckets are powers of two of microseconds (1 µs .. 2^25 µs ≈ 33 s, then
//! +Inf); `observe` is two relaxed atomic adds and no allocation, so it can
//! sit on the message path. Exported in the Prometheus histogram format by
//! the binary's metrics module (bucket bounds in seconds).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Number of finite buckets: upper bounds 2^0 .. 2^(BUCKETS-1) µs.
pub const BUCKETS: usize = 26;

/// Latency histogram with fixed power-of-two microsecond buckets.
#[derive(Debug)]
pub struct LatencyHistogram {
    /// `counts[i]`: observations in (2^(i-1), 2^i] µs; the last slot is +Inf.
    counts: [AtomicU64; BUCKETS + 1],
    sum_us: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl LatencyHistogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let i = if us <= 1 {
            0
        } else {
            (64 - (us - 1).leading_zeros()) as usize
        }
        .min(BUCKETS);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Total observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Sum of observations, seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// `(upper bound in seconds, observations in that bucket)` for every
    /// finite bucket, then `(f64::INFINITY, overflow)`; not cumulative.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        (0..=BUCKETS)
            .map(|i| {
                let bound = if i == BUCKETS {
                    f64::INFINITY
                } else {
                    (1u64 << i) as f64 / 1e6
                };
                (bound, self.counts[i].load(Ordering::Relaxed))
            })
            .collect()
    }

    /// The smallest bucket bound below which at least `q` (0..=1) of the
    /// observations fall, seconds (an upper estimate of the quantile).
    pub fn quantile_upper(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let want = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        self.buckets().into_iter().find_map(|(b, c)| {
            seen += c;
            (seen >= want).then_some(b)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_power_of_two_buckets() {
        let h = LatencyHistogram::default();
        for us in [1, 2, 3, 4, 5, 1000, 1024, 1025] {
            h.observe(Duration::from_micros(us));
        }
        h.observe(Duration::from_secs(3600));
        let b = h.buckets();
        assert_eq!(b[0], (1e-6, 1)); // 1
        assert_eq!(b[1].1, 1); // 2
        assert_eq!(b[2].1, 2); // 3, 4
        assert_eq!(b[3].1, 1); // 5
        assert_eq!(b[10].1, 2); // 1000, 1024
        assert_eq!(b[11].1, 1); // 1025
        assert_eq!(b[BUCKETS], (f64::INFINITY, 1));
        assert_eq!(h.count(), 9);
        assert_eq!(h.quantile_upper(0.5), Some(8e-6)); // the 5th of 9 is 5 us
        assert!((h.sum_seconds() - (3064.0 + 3600e6) / 1e6).abs() < 1e-9);
    }
}
