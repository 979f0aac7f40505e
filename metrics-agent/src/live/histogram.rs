//! A small log-bucket latency histogram for the live window: 8 buckets per
//! power of two from 1 µs to about 2.3 hours, so a quantile is known to
//! within ±4.5% (the bucket's geometric middle is reported), whatever the
//! traffic. Histograms of different seconds or keys merge by adding buckets.

/// Buckets per doubling.
const PER_OCTAVE: u32 = 8;
/// Doublings covered above the smallest value (1 µs · 2^33 ≈ 2.4 h).
const OCTAVES: u32 = 33;
/// Number of buckets; bucket 0 holds everything up to 1 µs.
pub const BUCKETS: usize = (PER_OCTAVE * OCTAVES) as usize + 1;
/// Smallest resolved value, in milliseconds.
const MIN_MS: f64 = 0.001;
/// A quantile's largest relative error: half a bucket's width on a log scale.
#[cfg(test)]
pub const RELATIVE_ERROR: f64 = 0.044_274; // 2^(1/16) - 1

/// Counts of values (milliseconds) by log bucket.
#[derive(Clone, PartialEq, Eq)]
pub struct LogHistogram {
    counts: Box<[u32; BUCKETS]>,
    total: u64,
}

impl Default for LogHistogram {
    fn default() -> Self {
        Self { counts: Box::new([0; BUCKETS]), total: 0 }
    }
}

impl std::fmt::Debug for LogHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogHistogram({} values)", self.total)
    }
}

fn bucket_of(ms: f64) -> usize {
    if ms.is_nan() || ms <= MIN_MS {
        return 0;
    }
    let index = ((ms / MIN_MS).log2() * f64::from(PER_OCTAVE)).ceil();
    (index as usize).min(BUCKETS - 1)
}

/// The value reported for a bucket: the geometric middle of its bounds.
fn representative_ms(bucket: usize) -> f64 {
    if bucket == 0 {
        return MIN_MS;
    }
    MIN_MS * ((bucket as f64 - 0.5) / f64::from(PER_OCTAVE)).exp2()
}

impl LogHistogram {
    pub fn record(&mut self, ms: f64) {
        let b = bucket_of(ms);
        self.counts[b] = self.counts[b].saturating_add(1);
        self.total += 1;
    }

    pub fn merge(&mut self, other: &Self) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine = mine.saturating_add(*theirs);
        }
        self.total += other.total;
    }

    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `q` quantile (0..=1) in ms, `None` when empty: the value of rank
    /// ceil(q·n) in sorted order, within `RELATIVE_ERROR`.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (bucket, n) in self.counts.iter().enumerate() {
            seen += u64::from(*n);
            if seen >= rank {
                return Some(representative_ms(bucket));
            }
        }
        Some(representative_ms(BUCKETS - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
        sorted[rank - 1]
    }

    #[test]
    fn quantiles_are_within_the_stated_error() {
        // Latencies spread over six orders of magnitude, deterministic.
        let mut values: Vec<f64> = (0..10_000u64).map(|i| 0.01 * 1.0013f64.powi((i * 7919 % 10_000) as i32)).collect();
        let mut h = LogHistogram::default();
        for v in &values {
            h.record(*v);
        }
        values.sort_by(f64::total_cmp);
        for q in [0.0, 0.01, 0.5, 0.9, 0.99, 0.999, 1.0] {
            let exact = exact_quantile(&values, q);
            let got = h.quantile(q).unwrap();
            assert!((got / exact - 1.0).abs() <= RELATIVE_ERROR + 1e-9, "q={q}: {got} vs exact {exact}");
        }
        assert_eq!(h.count(), 10_000);
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let (mut a, mut b, mut all) = (LogHistogram::default(), LogHistogram::default(), LogHistogram::default());
        for i in 1..=500 {
            let v = f64::from(i) * 0.37;
            if i % 3 == 0 {
                a.record(v)
            } else {
                b.record(v)
            }
            all.record(v);
        }
        a.merge(&b);
        assert_eq!(a, all);
    }

    #[test]
    fn extremes_and_garbage_stay_in_range() {
        let mut h = LogHistogram::default();
        for v in [0.0, -5.0, f64::NAN, f64::INFINITY, 1e12] {
            h.record(v);
        }
        assert_eq!(h.count(), 5);
        assert_eq!(h.quantile(0.0), Some(MIN_MS));
        assert!(h.quantile(1.0).unwrap() > 3.6e6, "the last bucket holds the huge values");
        assert_eq!(LogHistogram::default().quantile(0.5), None);
    }
}
