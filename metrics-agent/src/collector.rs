//! The Prometheus collector: reads the kernel's per-CPU counter maps at
//! scrape time, sums them over CPUs and encodes them (prometheus-client).
//! Metric meanings are documented in docs/metrics.md.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering},
};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray};
use metrics_common::{
    conn::ConnState,
    counters as c,
    histogram::{HIST_BUCKETS, bucket_upper_micros},
    maps as names,
    probes::HIT_NAMES,
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
    registry::Unit,
};

use crate::kernel::Kernel;

/// The kernel's counter maps, owned by the collector.
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

/// The kernel's counters summed over CPUs, read once (for the scrape and the
/// push exporters).
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

/// Agent-side gauges and counters shared with the tracer task.
#[derive(Debug, Default)]
pub struct AgentStats {
    pub traced_processes: AtomicU64,
    pub attach_failures: AtomicU64,
    pub preexisting_connections: AtomicU64,
    pub capture_enabled: AtomicU64,
    /// 1 in N requests' payloads captured (0: audit path off).
    pub capture_sample_every: AtomicU64,
    pub capture_breaker_trips: AtomicU64,
    pub capture_breaker_cpu_trips: AtomicU64,
    /// CPU time the audit thread used (the capture path's own), nanoseconds.
    pub audit_cpu_ns: AtomicU64,
    pub audit_records: AtomicU64,
    /// Records with token usage whose model is not in the price table.
    pub audit_unpriced_records: AtomicU64,
    /// Events on which the audit parsers panicked (a bug; the state was reset).
    pub audit_parser_panics: AtomicU64,
    pub audit_resyncs: AtomicU64,
    pub audit_h2_streams: AtomicU64,
    pub audit_h2_evicted_streams: AtomicU64,
    pub audit_h2_broken_connections: AtomicU64,
    pub audit_connections: AtomicU64,
    pub audit_memory_bytes: AtomicU64,
    pub audit_evicted_connections: AtomicU64,
    pub audit_evicted_for_memory: AtomicU64,
    pub adopted_connections: AtomicU64,
    pub adopted_rejected: AtomicU64,
    /// Pids of the traced processes (for the system metrics).
    pub traced_pids: Mutex<Vec<u32>>,
}

#[derive(Debug)]
pub struct HotPathCollector {
    pub maps: Arc<CounterMaps>,
    pub conns: Arc<Mutex<BpfHashMap<MapData, u64, ConnState>>>,
    /// (slot, label) of every provider, `other` last.
    pub providers: Vec<(u32, String)>,
    pub stats: Arc<AgentStats>,
}

type R = Result<(), std::fmt::Error>;

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, unit: Option<&Unit>, v: u64) -> R {
    ConstCounter::new(v).encode(e.encode_descriptor(name, help, unit, ConstCounter::new(0u64).metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> R {
    ConstGauge::new(v).encode(e.encode_descriptor(name, help, None, ConstGauge::new(0i64).metric_type())?)
}

/// A counter family with one label.
fn labelled_counters(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    label: &str,
    values: &[(&str, u64)],
) -> R {
    let mut m = e.encode_descriptor(name, help, unit, ConstCounter::new(0u64).metric_type())?;
    for (value, v) in values {
        ConstCounter::new(*v).encode(m.encode_family(&[(label, *value)])?)?;
    }
    Ok(())
}

/// Histogram buckets from log2 microsecond slots: (upper bound in seconds, count).
pub fn seconds_buckets(slots: &[u64]) -> Vec<(f64, u64)> {
    (0..HIST_BUCKETS)
        .map(|b| {
            let upper = bucket_upper_micros(b).map(|us| us as f64 / 1e6).unwrap_or(f64::MAX);
            (upper, slots.get(b as usize).copied().unwrap_or(0))
        })
        .collect()
}

fn histogram_type() -> prometheus_client::metrics::MetricType {
    prometheus_client::metrics::MetricType::Histogram
}

impl Collector for HotPathCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> R {
        let snap = self.maps.snapshot();
        let at = |slot: u32| snap.counter(slot);
        counter(
            &mut e,
            "llm_proxy_requests",
            "HTTP requests the proxy received from clients.",
            None,
            at(c::REQUESTS_TOTAL),
        )?;
        counter(
            &mut e,
            "llm_proxy_requests_failed",
            "Client requests answered with status >= 400 or whose connection closed before a complete response.",
            None,
            at(c::REQUESTS_FAILED),
        )?;
        labelled_counters(
            &mut e,
            "llm_proxy_responses",
            "Finished client requests by response status class (none: closed before a status line).",
            None,
            "class",
            &[
                ("2xx", at(c::RESPONSES_2XX)),
                ("3xx", at(c::RESPONSES_3XX)),
                ("4xx", at(c::RESPONSES_4XX)),
                ("5xx", at(c::RESPONSES_5XX)),
                ("none", at(c::RESPONSES_NONE)),
            ],
        )?;
        labelled_counters(
            &mut e,
            "llm_proxy_bytes_received",
            "HTTP bytes the proxy read from traced TCP connections (the plaintext on TLS connections), by side.",
            None,
            "side",
            &[
                ("client", at(c::BYTES_RECEIVED_CLIENT)),
                ("upstream", at(c::BYTES_RECEIVED_UPSTREAM)),
                ("unknown", at(c::BYTES_RECEIVED_UNKNOWN)),
            ],
        )?;
        labelled_counters(
            &mut e,
            "llm_proxy_bytes_sent",
            "HTTP bytes the proxy wrote to traced TCP connections (the plaintext on TLS connections), by side.",
            None,
            "side",
            &[
                ("client", at(c::BYTES_SENT_CLIENT)),
                ("upstream", at(c::BYTES_SENT_UPSTREAM)),
                ("unknown", at(c::BYTES_SENT_UNKNOWN)),
            ],
        )?;
        labelled_counters(
            &mut e,
            "llm_proxy_tls_bytes_received",
            "TLS wire bytes (records and handshakes) the proxy read from traced TCP connections, by side.",
            None,
            "side",
            &[
                ("client", at(c::TLS_BYTES_RECEIVED_CLIENT)),
                ("upstream", at(c::TLS_BYTES_RECEIVED_UPSTREAM)),
                ("unknown", at(c::TLS_BYTES_RECEIVED_UNKNOWN)),
            ],
        )?;
        labelled_counters(
            &mut e,
            "llm_proxy_tls_bytes_sent",
            "TLS wire bytes (records and handshakes) the proxy wrote to traced TCP connections, by side.",
            None,
            "side",
            &[
                ("client", at(c::TLS_BYTES_SENT_CLIENT)),
                ("upstream", at(c::TLS_BYTES_SENT_UPSTREAM)),
                ("unknown", at(c::TLS_BYTES_SENT_UNKNOWN)),
            ],
        )?;
        for (name, help, slot) in [
            (
                "llm_proxy_h2_connections",
                "HTTP/2 connections (h2c, or TLS plaintext after ALPN h2).",
                c::H2_CONNECTIONS,
            ),
            (
                "llm_proxy_h2_streams_opened",
                "HTTP/2 streams the client side opened (HEADERS on a new odd stream id), both sides of the proxy.",
                c::H2_STREAMS_OPENED,
            ),
            (
                "llm_proxy_h2_streams_ended",
                "HTTP/2 streams the server side ended (END_STREAM), both sides of the proxy.",
                c::H2_STREAMS_ENDED,
            ),
            ("llm_proxy_h2_rst_streams", "HTTP/2 RST_STREAM frames, either direction.", c::H2_RST_STREAMS),
            (
                "llm_proxy_h2_data_bytes_received",
                "HTTP/2 DATA frame payload bytes the proxy read.",
                c::H2_DATA_BYTES_RECEIVED,
            ),
            ("llm_proxy_h2_data_bytes_sent", "HTTP/2 DATA frame payload bytes the proxy wrote.", c::H2_DATA_BYTES_SENT),
            (
                "metrics_agent_h2_status_undecoded",
                "HTTP/2 response heads whose :status needs the HPACK dynamic table (in no status class on the hot path).",
                c::H2_STATUS_UNDECODED,
            ),
            (
                "metrics_agent_h2_framing_lost",
                "HTTP/2 connection directions whose frame boundaries the kernel lost (not counted further).",
                c::H2_FRAMING_LOST,
            ),
        ] {
            counter(&mut e, name, help, None, at(slot))?;
        }
        labelled_counters(
            &mut e,
            "llm_proxy_connections_opened",
            "TCP connections the proxy accepted (client) or opened (upstream) while traced.",
            None,
            "side",
            &[("client", at(c::CONNECTIONS_ACCEPTED)), ("upstream", at(c::CONNECTIONS_CONNECTED))],
        )?;
        counter(
            &mut e,
            "llm_proxy_connections_closed",
            "Traced connections the proxy closed.",
            None,
            at(c::CONNECTIONS_CLOSED),
        )?;

        let (req, failed) = (&snap.provider_requests, &snap.provider_failed);
        let (lat, hist) = (&snap.provider_latency_sum_us, &snap.provider_histogram);
        let per_provider = |v: &[u64]| -> Vec<(&str, u64)> {
            self.providers
                .iter()
                .map(|(slot, name)| (name.as_str(), v.get(*slot as usize).copied().unwrap_or(0)))
                .collect()
        };
        labelled_counters(
            &mut e,
            "llm_proxy_provider_requests",
            "Requests the proxy sent upstream, by provider.",
            None,
            "provider",
            &per_provider(req),
        )?;
        labelled_counters(
            &mut e,
            "llm_proxy_provider_requests_failed",
            "Upstream requests answered with status >= 400 or cut short, by provider.",
            None,
            "provider",
            &per_provider(failed),
        )?;
        {
            let mut m = e.encode_descriptor(
                "llm_proxy_provider_request_duration",
                "Upstream request duration, first request byte written to last response byte read, by provider.",
                Some(&Unit::Seconds),
                histogram_type(),
            )?;
            for (slot, name) in &self.providers {
                let start = (*slot * HIST_BUCKETS) as usize;
                let slots = hist.get(start..start + HIST_BUCKETS as usize).unwrap_or(&[]);
                let count = slots.iter().sum();
                let sum = lat.get(*slot as usize).copied().unwrap_or(0) as f64 / 1e6;
                m.encode_family(&[("provider", name.as_str())])?.encode_histogram::<NoLabelSet>(
                    sum,
                    count,
                    &seconds_buckets(slots),
                    None,
                )?;
            }
        }
        for (name, help, map, sum_slot) in [
            (
                "llm_proxy_request_duration",
                "Client request duration, first request byte received to last response byte sent.",
                &snap.request_histogram,
                c::REQUEST_DURATION_SUM_US,
            ),
            (
                "llm_proxy_time_to_first_byte",
                "Client request time to first byte, first request byte received to first response byte sent.",
                &snap.ttfb_histogram,
                c::TTFB_SUM_US,
            ),
        ] {
            let slots = map;
            let count = slots.iter().sum();
            let m = e.encode_descriptor(name, help, Some(&Unit::Seconds), histogram_type())?;
            let mut m = m;
            m.encode_histogram::<NoLabelSet>(at(sum_slot) as f64 / 1e6, count, &seconds_buckets(slots), None)?;
        }

        gauge(
            &mut e,
            "metrics_agent_traced_processes",
            "Processes the agent's uprobes are attached to.",
            self.stats.traced_processes.load(Ordering::Relaxed) as i64,
        )?;
        let tracked = self.conns.lock().map(|m| m.keys().count()).unwrap_or(0);
        gauge(
            &mut e,
            "metrics_agent_tracked_connections",
            "Connections in the kernel's connection table.",
            tracked as i64,
        )?;
        counter(
            &mut e,
            "metrics_agent_unclassified_bytes",
            "Bytes on traced connections that are neither HTTP/1.x nor TLS (HTTP/2, other).",
            None,
            at(c::UNCLASSIFIED_BYTES),
        )?;
        counter(
            &mut e,
            "metrics_agent_unclassified_connections",
            "Traced connections whose first bytes were neither HTTP/1.x nor a TLS handshake.",
            None,
            at(c::UNCLASSIFIED_CONNECTIONS),
        )?;
        counter(
            &mut e,
            "metrics_agent_tls_connections",
            "Traced connections that began with a TLS handshake record.",
            None,
            at(c::TLS_CONNECTIONS),
        )?;
        counter(
            &mut e,
            "metrics_agent_tls_plaintext_connections",
            "TLS connections whose plaintext the OpenSSL probes delivered (parsed like clear text).",
            None,
            at(c::TLS_PLAINTEXT_CONNECTIONS),
        )?;
        counter(
            &mut e,
            "metrics_agent_tls_opaque_bytes",
            "Ciphertext bytes on TLS connections no plaintext was tied to (yet): another TLS library, or a handshake before the tie.",
            None,
            at(c::TLS_OPAQUE_BYTES),
        )?;
        counter(
            &mut e,
            "metrics_agent_preexisting_connections",
            "Connections found open when the agent attached to a process.",
            None,
            self.stats.preexisting_connections.load(Ordering::Relaxed),
        )?;
        counter(
            &mut e,
            "metrics_agent_adopted_connections",
            "Untracked fds adopted as client connections because they carried a request line (accepted before the agent attached).",
            None,
            self.stats.adopted_connections.load(Ordering::Relaxed),
        )?;
        counter(
            &mut e,
            "metrics_agent_adopted_rejected",
            "Adopted fds dropped because they were not TCP sockets.",
            None,
            self.stats.adopted_rejected.load(Ordering::Relaxed),
        )?;
        counter(
            &mut e,
            "metrics_agent_framing_lost",
            "Responses whose end the kernel could not find (parse budget exhausted or malformed framing).",
            None,
            at(c::FRAMING_LOST),
        )?;
        counter(
            &mut e,
            "metrics_agent_process_events_dropped",
            "Process fork/exec/exit events lost because their ring buffer was full.",
            None,
            at(c::PROC_EVENTS_DROPPED),
        )?;
        counter(
            &mut e,
            "metrics_agent_attach_failures",
            "Target processes the agent failed to attach to.",
            None,
            self.stats.attach_failures.load(Ordering::Relaxed),
        )?;
        counter(
            &mut e,
            "metrics_agent_capture_events",
            "Payload chunks the kernel sent to the audit path.",
            None,
            at(c::CAPTURE_EVENTS),
        )?;
        counter(
            &mut e,
            "metrics_agent_capture_bytes",
            "Payload bytes the kernel sent to the audit path.",
            None,
            at(c::CAPTURE_BYTES),
        )?;
        counter(
            &mut e,
            "metrics_agent_capture_dropped_events",
            "Payload chunks dropped because the ring buffer was full (the proxy is never blocked).",
            None,
            at(c::CAPTURE_DROPS),
        )?;
        counter(
            &mut e,
            "metrics_agent_capture_capped_bytes",
            "Payload bytes left out by the per-message capture cap or the per-call limit (64 chunks).",
            None,
            at(c::CAPTURE_CAPPED_BYTES),
        )?;
        gauge(
            &mut e,
            "metrics_agent_capture_enabled",
            "1 while payload capture is on (0: off). Under pressure capture is sampled (metrics_agent_capture_sample_every), not switched off.",
            self.stats.capture_enabled.load(Ordering::Relaxed) as i64,
        )?;
        gauge(
            &mut e,
            "metrics_agent_capture_sample_every",
            "Payload capture samples 1 exchange in N now (0: the audit path is off); adaptive: raised under CPU or ring pressure, lowered when there is room.",
            self.stats.capture_sample_every.load(Ordering::Relaxed) as i64,
        )?;
        counter(
            &mut e,
            "metrics_agent_capture_breaker_trips",
            "Times the capture sampling interval N was doubled because the kernel dropped payload events.",
            None,
            self.stats.capture_breaker_trips.load(Ordering::Relaxed),
        )?;
        counter(
            &mut e,
            "metrics_agent_capture_breaker_cpu_trips",
            "Times the capture sampling interval N was doubled because the audit thread used more CPU than its budget.",
            None,
            self.stats.capture_breaker_cpu_trips.load(Ordering::Relaxed),
        )?;
        ConstCounter::new(self.stats.audit_cpu_ns.load(Ordering::Relaxed) as f64 / 1e9).encode(e.encode_descriptor(
            "metrics_agent_audit_cpu",
            "CPU time the audit thread used (payload reading, parsing, correlation): what the capture CPU budget limits.",
            Some(&Unit::Seconds),
            ConstCounter::new(0f64).metric_type(),
        )?)?;
        ConstCounter::new(crate::audit::breaker::process_cpu_time().as_secs_f64()).encode(e.encode_descriptor(
            "metrics_agent_cpu",
            "CPU time the agent itself used (user and system, all threads).",
            Some(&Unit::Seconds),
            ConstCounter::new(0f64).metric_type(),
        )?)?;
        counter(
            &mut e,
            "metrics_agent_audit_records",
            "LLM exchanges the audit path reconstructed.",
            None,
            self.stats.audit_records.load(Ordering::Relaxed),
        )?;
        counter(
            &mut e,
            "metrics_agent_audit_parser_panics",
            "Capture events on which the audit parsers failed (a bug): the parser state was reset, the audit path went on.",
            None,
            self.stats.audit_parser_panics.load(Ordering::Relaxed),
        )?;
        counter(
            &mut e,
            "metrics_agent_audit_unpriced_records",
            "Records with token usage whose model is not in the price table (cost unknown, not zero).",
            None,
            self.stats.audit_unpriced_records.load(Ordering::Relaxed),
        )?;
        for (name, help, value) in [
            (
                "metrics_agent_audit_h2_streams",
                "HTTP/2 streams the audit path parsed into exchanges.",
                &self.stats.audit_h2_streams,
            ),
            (
                "metrics_agent_audit_h2_evicted_streams",
                "HTTP/2 streams dropped in flight because a connection had 128 open.",
                &self.stats.audit_h2_evicted_streams,
            ),
            (
                "metrics_agent_audit_h2_broken_connections",
                "HTTP/2 connections whose parse stopped (malformed frames, HPACK error, oversized header block, missing bytes).",
                &self.stats.audit_h2_broken_connections,
            ),
        ] {
            counter(&mut e, name, help, None, value.load(Ordering::Relaxed))?;
        }
        counter(
            &mut e,
            "metrics_agent_audit_resyncs",
            "Captured streams that did not continue the previous chunk (drops or unsampled exchanges).",
            None,
            self.stats.audit_resyncs.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut e,
            "metrics_agent_audit_connections",
            "Connections the audit path holds state for.",
            self.stats.audit_connections.load(Ordering::Relaxed) as i64,
        )?;
        gauge(
            &mut e,
            "metrics_agent_audit_memory_bytes",
            "Heap the audit path's parsers hold, bounded by audit_memory_mib.",
            self.stats.audit_memory_bytes.load(Ordering::Relaxed) as i64,
        )?;
        counter(
            &mut e,
            "metrics_agent_audit_evicted_connections",
            "Connections the audit path stopped following (too many connections, or over the memory budget).",
            None,
            self.stats.audit_evicted_connections.load(Ordering::Relaxed),
        )?;
        counter(
            &mut e,
            "metrics_agent_audit_evicted_for_memory",
            "Of those, connections dropped because the parsers together exceeded the memory budget.",
            None,
            self.stats.audit_evicted_for_memory.load(Ordering::Relaxed),
        )?;
        let hits = &snap.probe_hits;
        let hit_values: Vec<(&str, u64)> =
            HIT_NAMES.iter().enumerate().map(|(i, n)| (*n, hits.get(i).copied().unwrap_or(0))).collect();
        labelled_counters(
            &mut e,
            "metrics_agent_probe_hits",
            "Uprobe hits in traced processes, by probe; each costs the proxy one trap.",
            None,
            "probe",
            &hit_values,
        )?;
        Ok(())
    }
}
