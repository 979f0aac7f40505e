//! Reads the kernel's per-CPU counter maps and sums them over CPUs. The
//! metric source `export::hot_path` turns a `HotPathSnapshot` into series
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
    pub fn snapshot(&self) -> HotPathSnapshot {
        HotPathSnapshot {
            counters: sums(&self.counters),
            provider_requests: sums(&self.provider_requests),
            provider_failed: sums(&self.provider_failed),
            provider_latency_sum_us: sums(&self.provider_latency_sum),
            provider_histogram: sums(&self.provider_histogram),
            request_histogram: sums(&self.request_histogram),
            ttfb_histogram: sums(&self.ttfb_histogram),
            probe_hits: sums(&self.probe_hits),
        }
    }
}

/// Every slot of a per-CPU array, summed over CPUs.
fn sums(map: &PerCpuArray<MapData, u64>) -> Vec<u64> {
    map.iter().map(|v| v.map(|per_cpu| per_cpu.iter().copied().sum()).unwrap_or(0)).collect()
}
