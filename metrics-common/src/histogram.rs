//! Log2 histogram layout over microseconds, shared by every kernel histogram.
//!
//! Bucket `0` holds 0 µs; bucket `k` (1..=30) holds `[2^(k-1), 2^k)` µs, so its
//! inclusive upper bound is below `2^k` µs; bucket 31 holds everything from
//! `2^30` µs (~17.9 minutes) up. The ADR's 16 buckets stopped at ~16 ms.

pub const HIST_BUCKETS: u32 = 32;

/// The bucket a duration in microseconds falls into.
#[inline(always)]
pub const fn bucket_of(micros: u64) -> u32 {
    let b = 64 - micros.leading_zeros();
    if b >= HIST_BUCKETS { HIST_BUCKETS - 1 } else { b }
}

/// Upper bound (exclusive) of a bucket in microseconds, `None` for the last.
pub const fn bucket_upper_micros(bucket: u32) -> Option<u64> {
    if bucket + 1 >= HIST_BUCKETS { None } else { Some(1u64 << bucket) }
}
