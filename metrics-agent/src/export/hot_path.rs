//! The kernel's exact hot-path counters as exporter series (OTLP, Datadog).
//! Prometheus reads the same maps itself at scrape time (`collector`).

use std::{
    borrow::Cow,
    sync::{Arc, LazyLock, atomic::Ordering},
};

use metrics_common::{
    counters as c,
    histogram::{HIST_BUCKETS, bucket_upper_micros},
};

use super::{
    catalog as m,
    model::{Desc, HistogramValue, Series, Value},
};
use crate::collector::{AgentStats, CounterMaps, HotPathSnapshot};

/// Upper bounds (seconds) of the kernel's log2 microsecond buckets, the last
/// (unbounded) one left out.
static LOG2_BOUNDS: LazyLock<Vec<f64>> =
    LazyLock::new(|| (0..HIST_BUCKETS).filter_map(|b| bucket_upper_micros(b).map(|us| us as f64 / 1e6)).collect());

/// Reads the kernel maps and the agent's counters.
#[derive(Debug, Clone)]
pub struct HotPathSource {
    pub maps: Arc<CounterMaps>,
    pub stats: Arc<AgentStats>,
    /// (slot, configured name) of every provider, `other` last.
    pub providers: Vec<(u32, String)>,
}

impl HotPathSource {
    pub fn series(&self, out: &mut Vec<Series>) {
        append(&self.maps.snapshot(), &self.stats, &self.providers, out);
    }
}

fn histogram(slots: &[u64], sum_us: u64) -> Value {
    let bounds: &'static [f64] = LOG2_BOUNDS.as_slice();
    let mut counts: Vec<u64> = slots.to_vec();
    counts.resize(bounds.len() + 1, 0);
    Value::Histogram(HistogramValue { bounds, count: counts.iter().sum(), counts, sum: sum_us as f64 / 1e6 })
}

/// The series of one snapshot of the kernel counters.
pub fn append(k: &HotPathSnapshot, stats: &AgentStats, providers: &[(u32, String)], out: &mut Vec<Series>) {
    let mut push = |desc: &'static Desc, labels: &[(&'static str, &str)], value: Value| {
        let labels = labels.iter().map(|(key, v)| (*key, Cow::Owned(v.to_string()))).collect();
        out.push(Series { desc, labels, value });
    };
    push(&m::HP_REQUESTS, &[], Value::Int(k.counter(c::REQUESTS_TOTAL)));
    push(&m::HP_REQUESTS_FAILED, &[], Value::Int(k.counter(c::REQUESTS_FAILED)));
    for (class, slot) in [
        ("2xx", c::RESPONSES_2XX),
        ("3xx", c::RESPONSES_3XX),
        ("4xx", c::RESPONSES_4XX),
        ("5xx", c::RESPONSES_5XX),
        ("none", c::RESPONSES_NONE),
    ] {
        push(&m::HP_RESPONSES, &[("class", class)], Value::Int(k.counter(slot)));
    }
    for (side, received, sent) in [
        ("client", c::BYTES_RECEIVED_CLIENT, c::BYTES_SENT_CLIENT),
        ("upstream", c::BYTES_RECEIVED_UPSTREAM, c::BYTES_SENT_UPSTREAM),
        ("unknown", c::BYTES_RECEIVED_UNKNOWN, c::BYTES_SENT_UNKNOWN),
    ] {
        push(&m::HP_BYTES_RECEIVED, &[("side", side)], Value::Int(k.counter(received)));
        push(&m::HP_BYTES_SENT, &[("side", side)], Value::Int(k.counter(sent)));
    }
    for (side, received, sent) in [
        ("client", c::TLS_BYTES_RECEIVED_CLIENT, c::TLS_BYTES_SENT_CLIENT),
        ("upstream", c::TLS_BYTES_RECEIVED_UPSTREAM, c::TLS_BYTES_SENT_UPSTREAM),
        ("unknown", c::TLS_BYTES_RECEIVED_UNKNOWN, c::TLS_BYTES_SENT_UNKNOWN),
    ] {
        push(&m::HP_TLS_BYTES_RECEIVED, &[("side", side)], Value::Int(k.counter(received)));
        push(&m::HP_TLS_BYTES_SENT, &[("side", side)], Value::Int(k.counter(sent)));
    }
    push(&m::HP_CONNECTIONS_OPENED, &[("side", "client")], Value::Int(k.counter(c::CONNECTIONS_ACCEPTED)));
    push(&m::HP_CONNECTIONS_OPENED, &[("side", "upstream")], Value::Int(k.counter(c::CONNECTIONS_CONNECTED)));
    push(&m::HP_CONNECTIONS_CLOSED, &[], Value::Int(k.counter(c::CONNECTIONS_CLOSED)));
    let at = |v: &[u64], slot: u32| v.get(slot as usize).copied().unwrap_or(0);
    for (slot, name) in providers {
        let labels = [("provider", name.as_str())];
        push(&m::HP_PROVIDER_REQUESTS, &labels, Value::Int(at(&k.provider_requests, *slot)));
        push(&m::HP_PROVIDER_FAILED, &labels, Value::Int(at(&k.provider_failed, *slot)));
        let start = (*slot * HIST_BUCKETS) as usize;
        let slots = k.provider_histogram.get(start..start + HIST_BUCKETS as usize).unwrap_or(&[]);
        push(&m::HP_PROVIDER_DURATION, &labels, histogram(slots, at(&k.provider_latency_sum_us, *slot)));
    }
    push(&m::HP_REQUEST_DURATION, &[], histogram(&k.request_histogram, k.counter(c::REQUEST_DURATION_SUM_US)));
    push(&m::HP_TTFB, &[], histogram(&k.ttfb_histogram, k.counter(c::TTFB_SUM_US)));
    push(&m::HP_CAPTURE_DROPS, &[], Value::Int(k.counter(c::CAPTURE_DROPS)));
    push(&m::HP_PROC_EVENTS_DROPPED, &[], Value::Int(k.counter(c::PROC_EVENTS_DROPPED)));
    push(&m::HP_AUDIT_RECORDS, &[], Value::Int(stats.audit_records.load(Ordering::Relaxed)));
    push(&m::HP_TRACED_PROCESSES, &[], Value::Int(stats.traced_processes.load(Ordering::Relaxed)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_histograms_keep_every_slot() {
        let mut k = HotPathSnapshot { counters: vec![0; c::COUNT as usize], ..Default::default() };
        k.counters[c::REQUESTS_TOTAL as usize] = 7;
        k.counters[c::REQUEST_DURATION_SUM_US as usize] = 3_000_000;
        k.request_histogram = vec![0; HIST_BUCKETS as usize];
        k.request_histogram[HIST_BUCKETS as usize - 1] = 1;
        k.request_histogram[20] = 6;
        let mut out = Vec::new();
        append(&k, &AgentStats::default(), &[(0, "openai".into()), (15, "other".into())], &mut out);
        let req = out.iter().find(|s| std::ptr::eq(s.desc, &m::HP_REQUESTS)).unwrap();
        assert_eq!(req.value, Value::Int(7));
        let h = out.iter().find(|s| std::ptr::eq(s.desc, &m::HP_REQUEST_DURATION)).unwrap();
        let Value::Histogram(h) = &h.value else { panic!() };
        assert_eq!(h.bounds.len(), HIST_BUCKETS as usize - 1);
        assert_eq!((h.count, h.sum, h.counts[20], h.counts[31]), (7, 3.0, 6, 1));
        assert_eq!(out.iter().filter(|s| std::ptr::eq(s.desc, &m::HP_PROVIDER_REQUESTS)).count(), 2);
    }
}
