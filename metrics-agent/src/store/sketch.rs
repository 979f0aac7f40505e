//! A mergeable quantile sketch over non-negative integers (microseconds):
//! logarithmic buckets in the style of DDSketch with a relative accuracy of
//! 1 %. Any quantile it returns is within 1 % of the exact value of the same
//! rank, unless the values span more than `MAX_BUCKETS` buckets: then the
//! lowest are folded together and only quantiles at or above the folded
//! range keep the bound (the upper ones, which matter); two sketches merge exactly (bucket counts add), so minute sketches
//! merge into hours, days and any query window with no further error. Count,
//! minimum and maximum are exact. Serialized compactly (varints, delta-coded
//! bucket indexes) for a BLOB/BYTEA column.

use std::collections::BTreeMap;

/// Guaranteed relative accuracy of every quantile.
pub const RELATIVE_ACCURACY: f64 = 0.01;
/// Most buckets a sketch keeps: beyond, the lowest buckets are folded into
/// the lowest kept one (DDSketch's "collapsing lowest" store). 512 buckets
/// span a factor `gamma^511` ≈ 26,000 (e.g. 4 ms … 100 s) at full accuracy.
pub const MAX_BUCKETS: usize = 512;
/// Upper bound of the heap one bucket takes in the `BTreeMap` (an entry is
/// 12 bytes; nodes are at least half full and carry parent/child pointers),
/// checked against a counting allocator in the tests.
pub const HEAP_BYTES_PER_BUCKET: usize = 40;
/// Format version written as the first byte.
const FORMAT_VERSION: u8 = 1;

/// `gamma = (1 + a) / (1 - a)`: bucket `i` holds values in `(gamma^(i-1), gamma^i]`.
fn gamma() -> f64 {
    (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY)
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sketch {
    /// Values equal to 0 (they have no logarithm).
    zeros: u64,
    /// Bucket index -> number of values in it; at most `MAX_BUCKETS`, so
    /// memory is bounded whatever the input.
    buckets: BTreeMap<i32, u64>,
    count: u64,
    min: u64,
    max: u64,
}

/// Why bytes could not be read back as a sketch.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("sketch bytes end early")]
    Truncated,
    #[error("sketch format version {0} is not known to this agent")]
    Version(u8),
    #[error("sketch bytes are inconsistent: {0}")]
    Inconsistent(&'static str),
}

impl Sketch {
    #[cfg(test)]
    pub fn new() -> Self {
        Self::default()
    }

    fn index(value: u64) -> i32 {
        // ceil(log_gamma(value)); values >= 1 give indexes >= 0.
        ((value as f64).ln() / gamma().ln()).ceil() as i32
    }

    /// The value reported for a bucket: the point whose relative distance to
    /// both bucket bounds is the same (at most RELATIVE_ACCURACY).
    fn representative(index: i32) -> f64 {
        let g = gamma();
        2.0 * g.powi(index) / (g + 1.0)
    }

    pub fn insert(&mut self, value: u64) {
        if value == 0 {
            self.zeros += 1;
        } else {
            *self.buckets.entry(Self::index(value)).or_insert(0) += 1;
            self.collapse();
        }
        if self.count == 0 || value < self.min {
            self.min = value;
        }
        self.max = self.max.max(value);
        self.count += 1;
    }

    pub fn merge(&mut self, other: &Sketch) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 || other.min < self.min {
            self.min = other.min;
        }
        self.max = self.max.max(other.max);
        self.count += other.count;
        self.zeros += other.zeros;
        for (&i, &n) in &other.buckets {
            *self.buckets.entry(i).or_insert(0) += n;
        }
        self.collapse();
    }

    /// Folds the lowest buckets into the next one up until at most
    /// `MAX_BUCKETS` remain. The result depends only on the values inserted
    /// (the `MAX_BUCKETS` highest indexes are kept, every lower count lands
    /// in the lowest of them), so merging stays exactly equal to inserting.
    fn collapse(&mut self) {
        while self.buckets.len() > MAX_BUCKETS {
            if let Some((_, n)) = self.buckets.pop_first()
                && let Some(mut lowest) = self.buckets.first_entry()
            {
                *lowest.get_mut() += n;
            }
        }
    }

    /// Buckets in use (at most `MAX_BUCKETS`).
    #[cfg(test)]
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }

    /// An upper bound of the heap this sketch holds.
    pub fn heap_bytes(&self) -> usize {
        self.buckets.len() * HEAP_BYTES_PER_BUCKET
    }

    /// Exact maximum (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Exact minimum (0 when empty).
    #[cfg(test)]
    pub fn min(&self) -> u64 {
        self.min
    }

    /// The `q`-quantile (0 <= q <= 1): an estimate of the value at 0-based
    /// rank `floor(q * (count - 1))` of the sorted values, within
    /// RELATIVE_ACCURACY of it, clamped to the exact [min, max]. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let q = if q.is_nan() { 0.5 } else { q.clamp(0.0, 1.0) };
        let rank = (q * (self.count - 1) as f64).floor() as u64;
        if rank == 0 {
            return Some(self.min);
        }
        if rank == self.count - 1 {
            return Some(self.max);
        }
        if rank < self.zeros {
            return Some(0);
        }
        let mut seen = self.zeros;
        for (&i, &n) in &self.buckets {
            seen += n;
            if seen > rank {
                let v = Self::representative(i).round() as u64;
                return Some(v.clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }

    /// Compact bytes: version, zeros, count, min, max, bucket count, then per
    /// bucket the index delta (zigzag) and the count, all LEB128 varints.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.buckets.len() * 3);
        out.push(FORMAT_VERSION);
        for v in [self.zeros, self.count, self.min, self.max, self.buckets.len() as u64] {
            put_varint(&mut out, v);
        }
        let mut previous = 0i64;
        for (&i, &n) in &self.buckets {
            let delta = i as i64 - previous;
            put_varint(&mut out, ((delta << 1) ^ (delta >> 63)) as u64);
            put_varint(&mut out, n);
            previous = i as i64;
        }
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (&version, mut rest) = bytes.split_first().ok_or(DecodeError::Truncated)?;
        if version != FORMAT_VERSION {
            return Err(DecodeError::Version(version));
        }
        let mut next = || take_varint(&mut rest);
        let zeros = next()?;
        let count = next()?;
        let min = next()?;
        let max = next()?;
        let len = next()?;
        if len > 4096 {
            return Err(DecodeError::Inconsistent("too many buckets"));
        }
        let mut buckets = BTreeMap::new();
        let mut index = 0i64;
        let mut total = zeros;
        for _ in 0..len {
            let zigzag = next()?;
            let delta = ((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64);
            index = index.checked_add(delta).ok_or(DecodeError::Inconsistent("bucket index"))?;
            let i = i32::try_from(index).map_err(|_| DecodeError::Inconsistent("bucket index"))?;
            let n = next()?;
            total = total.checked_add(n).ok_or(DecodeError::Inconsistent("count overflow"))?;
            buckets.insert(i, n);
        }
        if total != count || min > max {
            return Err(DecodeError::Inconsistent("counts do not add up"));
        }
        let mut sketch = Self { zeros, buckets, count, min, max };
        sketch.collapse();
        Ok(sketch)
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn take_varint(bytes: &mut &[u8]) -> Result<u64, DecodeError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first().ok_or(DecodeError::Truncated)?;
        *bytes = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(DecodeError::Inconsistent("varint longer than 64 bits"))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn exact(sorted: &[u64], q: f64) -> u64 {
        sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
    }

    fn within_bound(estimate: u64, exact: u64) -> bool {
        // The bound is relative; rounding to an integer adds at most 0.5.
        (estimate as f64 - exact as f64).abs() <= RELATIVE_ACCURACY * exact as f64 + 0.5
    }

    proptest! {
        #[test]
        fn quantiles_are_within_the_relative_bound(
            values in prop::collection::vec(prop_oneof![0u64..2_000, 0u64..100_000_000, 0u64..u64::MAX / 2], 1..3_000),
            q in 0.0f64..=1.0,
        ) {
            let mut s = Sketch::new();
            for &v in &values { s.insert(v); }
            let mut sorted = values.clone();
            sorted.sort_unstable();
            prop_assert!(s.buckets() <= MAX_BUCKETS);
            // Values below the lowest kept bucket are folded into it.
            let mut indexes: Vec<i32> = values.iter().filter(|&&v| v > 0).map(|&v| Sketch::index(v)).collect();
            indexes.sort_unstable();
            indexes.dedup();
            let folded_below = (indexes.len() > MAX_BUCKETS).then(|| indexes[indexes.len() - MAX_BUCKETS]);
            for q in [q, 0.5, 0.9, 0.99, 0.0, 1.0] {
                let e = exact(&sorted, q);
                let got = s.quantile(q).unwrap();
                // Rank 0 is answered with the exact minimum, so it keeps the
                // bound even when the minimum's bucket was folded; a later rank
                // holding the same (duplicated) minimum value does not.
                let rank = (q * (sorted.len() - 1) as f64).floor() as usize;
                match folded_below {
                    Some(lowest) if e > 0 && Sketch::index(e) < lowest && rank > 0 => {
                        prop_assert!(got >= e && Sketch::index(got) <= lowest, "q={q} got={got} exact={e}")
                    }
                    _ => prop_assert!(within_bound(got, e), "q={q} got={got} exact={e}"),
                }
            }
            prop_assert_eq!(s.max(), *sorted.last().unwrap());
            prop_assert_eq!(s.min(), sorted[0]);
        }

        #[test]
        fn merging_equals_inserting_everything_in_one(
            parts in prop::collection::vec(prop::collection::vec(0u64..10_000_000, 0..200), 1..20),
        ) {
            let mut merged = Sketch::new();
            let mut direct = Sketch::new();
            for part in &parts {
                let mut s = Sketch::new();
                for &v in part { s.insert(v); direct.insert(v); }
                merged.merge(&s);
            }
            prop_assert_eq!(&merged, &direct);
        }

        #[test]
        fn bytes_round_trip(values in prop::collection::vec(0u64..u64::MAX, 0..500)) {
            let mut s = Sketch::new();
            for &v in &values { s.insert(v); }
            prop_assert_eq!(Sketch::from_bytes(&s.to_bytes()).unwrap(), s);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = Sketch::from_bytes(&bytes);
        }
    }

    #[test]
    fn p99_of_a_long_tailed_latency_sample_is_within_one_percent() {
        // Deterministic pseudo-random log-normal-ish latencies, 1 ms .. 60 s.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut values = Vec::new();
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x % 1_000_000) as f64 / 1_000_000.0;
            values.push((1_000.0 * (u * 11.0).exp()) as u64);
        }
        let mut s = Sketch::new();
        values.iter().for_each(|&v| s.insert(v));
        values.sort_unstable();
        for q in [0.5, 0.9, 0.99, 0.999] {
            let e = exact(&values, q) as f64;
            let got = s.quantile(q).unwrap() as f64;
            assert!((got - e).abs() / e <= RELATIVE_ACCURACY, "q={q}: {got} vs exact {e}");
        }
        assert!(s.to_bytes().len() < 2_500, "{} bytes", s.to_bytes().len());
    }

    #[test]
    fn adversarial_values_keep_the_bucket_count_bounded_and_the_upper_quantiles_exact_to_the_bound() {
        // One value in every bucket of the whole u64 range (about 2,200), then the tail again.
        let g = gamma();
        let mut values: Vec<u64> = (0..2_300).map(|i| g.powi(i).min(u64::MAX as f64) as u64).collect();
        values.extend(values.clone().iter().rev().take(100));
        let mut s = Sketch::new();
        values.iter().for_each(|&v| s.insert(v));
        assert_eq!(s.buckets(), MAX_BUCKETS);
        values.sort_unstable();
        for q in [0.9, 0.99, 0.999] {
            let (got, e) = (s.quantile(q).unwrap(), exact(&values, q));
            assert!(within_bound(got, e), "q={q}: {got} vs exact {e}");
        }
        assert_eq!((s.min(), s.max()), (values[0], values[values.len() - 1]));
        let decoded = Sketch::from_bytes(&s.to_bytes()).unwrap();
        assert_eq!(decoded, s);
    }

    #[test]
    fn empty_and_bad_input() {
        assert_eq!(Sketch::new().quantile(0.5), None);
        assert_eq!(Sketch::from_bytes(&[]), Err(DecodeError::Truncated));
        assert_eq!(Sketch::from_bytes(&[9]), Err(DecodeError::Version(9)));
        let mut bytes = Sketch::new().to_bytes();
        bytes[2] = 5; // count 5 with no values
        assert!(matches!(Sketch::from_bytes(&bytes), Err(DecodeError::Inconsistent(_))));
    }
}
