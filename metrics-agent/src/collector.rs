//! Reads the kernel's per-CPU counter maps and sums them over CPUs, in an
//! order that never shows a request finished without its bytes (`snapshot`).
//! The metric source `export::hot_path` turns a `HotPathSnapshot` into series
//! of the catalogue (docs/metrics.md).

use aya::maps::{MapData, PerCpuArray};
use metrics_common::{counters as c, maps as names};

use crate::kernel::Kernel;

/// The kernel's counter maps.
pub struct CounterMaps {
    counters: PerCpuArray<MapData, u64>,
    provider_requests: PerCpuArray<MapData, u64>,
    provider_failed: PerCpuArray<MapData, u64>,
    provider_latency_sum: PerCpuArray<MapData, u64>,
    provider_histogram: PerCpuArray<MapData, u64>,
    request_histogram: PerCpuArray<MapData, u64>,
    ttfb_histogram: PerCpuArray<MapData, u64>,
    probe_hits: PerCpuArray<MapData, u64>,
}

impl CounterMaps {
    pub fn take(kernel: &mut Kernel) -> anyhow::Result<Self> {
        let mut take = |name: &str| -> anyhow::Result<PerCpuArray<MapData, u64>> {
            Ok(PerCpuArray::try_from(kernel.take_map(name)?)?)
        };
        Ok(Self {
            counters: take(names::COUNTERS)?,
            provider_requests: take(names::PROVIDER_REQUESTS)?,
            provider_failed: take(names::PROVIDER_FAILED)?,
            provider_latency_sum: take(names::PROVIDER_LATENCY_SUM_US)?,
            provider_histogram: take(names::PROVIDER_HISTOGRAM)?,
            request_histogram: take(names::REQUEST_HISTOGRAM)?,
            ttfb_histogram: take(names::TTFB_HISTOGRAM)?,
            probe_hits: take(names::PROBE_HITS)?,
        })
    }
}

impl std::fmt::Debug for CounterMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CounterMaps")
    }
}

impl CounterMaps {
    /// Capture events the kernel dropped (ring buffer full), summed over CPUs.
    pub fn capture_drops(&self) -> u64 {
        self.counters.get(&c::CAPTURE_DROPS, 0).map(|v| v.iter().sum()).unwrap_or(0)
    }
}

/// The kernel's counters summed over CPUs, read once per snapshot.
#[derive(Debug, Clone, Default)]
pub struct HotPathSnapshot {
    pub counters: Vec<u64>,
    pub provider_requests: Vec<u64>,
    pub provider_failed: Vec<u64>,
    pub provider_latency_sum_us: Vec<u64>,
    /// `HIST_BUCKETS` slots per provider slot.
    pub provider_histogram: Vec<u64>,
    pub request_histogram: Vec<u64>,
    pub ttfb_histogram: Vec<u64>,
    pub probe_hits: Vec<u64>,
}

impl HotPathSnapshot {
    /// A `metrics_common::counters` slot.
    pub fn counter(&self, slot: u32) -> u64 {
        self.counters.get(slot as usize).copied().unwrap_or(0)
    }
}

impl CounterMaps {
    /// The counters, read so that a request counted as finished always has
    /// its bytes and its start counted too.
    ///
    /// The maps are read one key at a time while the kernel keeps adding to
    /// them, and the kernel records a request in a fixed order: its start
    /// (`REQUESTS_TOTAL`, `PROVIDER_REQUESTS`) once its first bytes are
    /// counted, its first response byte (`TTFB_HISTOGRAM`), then, in the
    /// call that carries the response's last bytes and after counting them,
    /// its end (`PROVIDER_FAILED`, `PROVIDER_HISTOGRAM`, `REQUEST_HISTOGRAM`:
    /// the `_count` of the duration histograms). The maps are read in the
    /// reverse order, ends first: whatever end the read sees happened before
    /// the byte and start counters were read, so they include that request.
    /// Read the other way round, a scrape during traffic could count a
    /// response as finished whose last bytes came after the byte counters
    /// were read (a CI flake: bytes to clients one response short).
    ///
    /// The duration sums do not fit that order (`COUNTERS` holds the
    /// response classes, bumped before the request histogram, and the
    /// duration and TTFB sums, bumped after their histograms), so during
    /// traffic a histogram's `_sum` can miss or include a few requests its
    /// `_count` does not (those that finish while the maps are read); both
    /// are exact once traffic pauses. The maps are read once: a read during
    /// which the kernel added nothing is already the maps at one instant,
    /// and under steady traffic reading again until two reads agree ends on
    /// a read no more consistent than the first, at up to three times the
    /// cost.
    pub fn snapshot(&self) -> HotPathSnapshot {
        let provider_failed = sums(&self.provider_failed);
        let provider_histogram = sums(&self.provider_histogram);
        let provider_latency_sum_us = sums(&self.provider_latency_sum);
        let request_histogram = sums(&self.request_histogram);
        let ttfb_histogram = sums(&self.ttfb_histogram);
        let counters = sums(&self.counters);
        let provider_requests = sums(&self.provider_requests);
        HotPathSnapshot {
            counters,
            provider_requests,
            provider_failed,
            provider_latency_sum_us,
            provider_histogram,
            request_histogram,
            ttfb_histogram,
            probe_hits: sums(&self.probe_hits),
        }
    }
}

/// Every slot of a per-CPU array, summed over CPUs.
fn sums(map: &PerCpuArray<MapData, u64>) -> Vec<u64> {
    map.iter().map(|v| v.map(|per_cpu| per_cpu.iter().copied().sum()).unwrap_or(0)).collect()
}
