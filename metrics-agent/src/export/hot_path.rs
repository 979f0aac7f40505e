//! The kernel counters as a metric source: the per-CPU maps `collector`
//! reads (summed over CPUs) and the size of the kernel's connection table,
//! as series of the catalogue, for every backend.

use std::{
    borrow::Cow,
    sync::{Arc, LazyLock, Mutex},
};

use aya::maps::{HashMap as BpfHashMap, MapData};
use metrics_common::{
    conn::ConnState,
    counters as c,
    histogram::{HIST_BUCKETS, bucket_upper_micros},
    probes::HIT_NAMES,
};

use super::{
    catalog as m,
    model::{Desc, HistogramValue, Series, Value},
};
use crate::collector::{CounterMaps, HotPathSnapshot};

/// Upper bounds (seconds) of the kernel's log2 microsecond buckets, the last
/// (unbounded) one left out.
static LOG2_BOUNDS: LazyLock<Vec<f64>> =
    LazyLock::new(|| (0..HIST_BUCKETS).filter_map(|b| bucket_upper_micros(b).map(|us| us as f64 / 1e6)).collect());

/// Reads the kernel maps.
#[derive(Debug, Clone)]
pub struct HotPathSource {
    pub maps: Arc<CounterMaps>,
    /// The kernel's connection table (its size is `metrics_agent_tracked_connections`).
    pub conns: Arc<Mutex<BpfHashMap<MapData, u64, ConnState>>>,
    /// (slot, configured name) of every provider, `other` last.
    pub providers: Vec<(u32, String)>,
}

impl HotPathSource {
    pub fn series(&self, out: &mut Vec<Series>) {
        let tracked = self.conns.lock().map(|m| m.keys().count()).unwrap_or(0) as u64;
        append(&self.maps.snapshot(), tracked, &self.providers, out);
    }
}

fn histogram(slots: &[u64], sum_us: u64) -> Value {
    let bounds: &'static [f64] = LOG2_BOUNDS.as_slice();
    let mut counts: Vec<u64> = slots.to_vec();
    counts.resize(bounds.len() + 1, 0);
    Value::Histogram(HistogramValue { bounds, count: counts.iter().sum(), counts, sum: sum_us as f64 / 1e6 })
}

/// The series of one snapshot of the kernel counters; `tracked` is the
/// number of entries in the connection table.
pub fn append(k: &HotPathSnapshot, tracked: u64, providers: &[(u32, String)], out: &mut Vec<Series>) {
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
    push(&m::TRACKED_CONNECTIONS, &[], Value::Int(tracked));
    for (desc, slot) in [
        (&m::UNCLASSIFIED_BYTES, c::UNCLASSIFIED_BYTES),
        (&m::UNCLASSIFIED_CONNECTIONS, c::UNCLASSIFIED_CONNECTIONS),
        (&m::TLS_CONNECTIONS, c::TLS_CONNECTIONS),
        (&m::TLS_PLAINTEXT_CONNECTIONS, c::TLS_PLAINTEXT_CONNECTIONS),
        (&m::TLS_OPAQUE_BYTES, c::TLS_OPAQUE_BYTES),
        (&m::TLS_UNTIED_BYTES, c::TLS_UNTIED_BYTES),
        (&m::FRAMING_LOST, c::FRAMING_LOST),
        (&m::H2_CONNECTIONS, c::H2_CONNECTIONS),
        (&m::H2_STREAMS_OPENED, c::H2_STREAMS_OPENED),
        (&m::H2_STREAMS_ENDED, c::H2_STREAMS_ENDED),
        (&m::H2_RST_STREAMS, c::H2_RST_STREAMS),
        (&m::H2_DATA_BYTES_RECEIVED, c::H2_DATA_BYTES_RECEIVED),
        (&m::H2_DATA_BYTES_SENT, c::H2_DATA_BYTES_SENT),
        (&m::H2_STATUS_UNDECODED, c::H2_STATUS_UNDECODED),
        (&m::H2_FRAMING_LOST, c::H2_FRAMING_LOST),
        (&m::PROC_EVENTS_DROPPED, c::PROC_EVENTS_DROPPED),
        (&m::CAPTURE_EVENTS, c::CAPTURE_EVENTS),
        (&m::CAPTURE_BYTES, c::CAPTURE_BYTES),
        (&m::CAPTURE_DROPS, c::CAPTURE_DROPS),
        (&m::CAPTURE_CAPPED_BYTES, c::CAPTURE_CAPPED_BYTES),
    ] {
        push(desc, &[], Value::Int(k.counter(slot)));
    }
    for (i, probe) in HIT_NAMES.iter().enumerate() {
        push(&m::PROBE_HITS, &[("probe", probe)], Value::Int(k.probe_hits.get(i).copied().unwrap_or(0)));
    }
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
        append(&k, 0, &[(0, "openai".into()), (15, "other".into())], &mut out);
        let req = out.iter().find(|s| std::ptr::eq(s.desc, &m::HP_REQUESTS)).unwrap();
        assert_eq!(req.value, Value::Int(7));
        let h = out.iter().find(|s| std::ptr::eq(s.desc, &m::HP_REQUEST_DURATION)).unwrap();
        let Value::Histogram(h) = &h.value else { panic!() };
        assert_eq!(h.bounds.len(), HIST_BUCKETS as usize - 1);
        assert_eq!((h.count, h.sum, h.counts[20], h.counts[31]), (7, 3.0, 6, 1));
        assert_eq!(out.iter().filter(|s| std::ptr::eq(s.desc, &m::HP_PROVIDER_REQUESTS)).count(), 2);
    }

    #[test]
    fn untied_tls_plaintext_bytes_are_exported_from_their_kernel_slot() {
        let mut k = HotPathSnapshot { counters: vec![0; c::COUNT as usize], ..Default::default() };
        k.counters[c::TLS_UNTIED_BYTES as usize] = 1234;
        let mut out = Vec::new();
        append(&k, 0, &[], &mut out);
        let untied = out.iter().find(|s| std::ptr::eq(s.desc, &m::TLS_UNTIED_BYTES)).unwrap();
        assert_eq!(untied.value, Value::Int(1234));
    }
}
