//! Aggregates audit records into series with bounded label cardinality:
//! per side, provider, model, operation, status class and error type.
//! Models and error types beyond a configured number of distinct values, and
//! any label set beyond the series limit, collapse to `other` (counted).
//! Optionally keeps raw duration/TTFB/token samples for DogStatsD
//! distributions in a bounded buffer that each snapshot drains.
//!
//! Sampling: a record captured as 1 in N stands for N exchanges. Request,
//! token, cost, unpriced and cache-hit counts add N per record, and the
//! series carries `estimate="true"`; records captured at N = 1 go to
//! `estimate="false"` series, which are exact. Histograms (duration, TTFB,
//! token usage) are distributions over the captured exchanges, unscaled.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashSet},
    sync::Mutex,
};

use rust_decimal::{Decimal, prelude::ToPrimitive};
use tokio::sync::{broadcast, watch};

use super::{
    catalog::{self as m},
    model::{DURATION_BUCKETS, Desc, HistogramValue, Label, Samples, Series, TOKEN_BUCKETS, Value},
};
use crate::records::RequestRecord;

/// The value every label collapses to beyond its limit.
pub const OTHER: &str = "other";
/// A histogram of one value per record (a distribution over exchanges).
pub struct RecordHistogram {
    pub desc: &'static Desc,
    pub bounds: &'static [f64],
    /// The record's value in the metric's unit; `None`: not observed.
    pub value: fn(&RequestRecord) -> Option<f64>,
    /// How many observations of that value the record makes (1 for most;
    /// one per gap between content chunks for the time per output chunk).
    pub observations: fn(&RequestRecord) -> u64,
}

fn once(_: &RequestRecord) -> u64 {
    1
}

/// Every per-exchange histogram of the audit path: adding one (time to first
/// token, for instance) is one entry here plus its catalogue entry. Their raw
/// samples are buffered for DogStatsD distributions.
pub static RECORD_HISTOGRAMS: &[RecordHistogram] = &[
    RecordHistogram {
        desc: &m::DURATION,
        bounds: DURATION_BUCKETS,
        value: |r| Some(r.duration_ms / 1e3),
        observations: once,
    },
    RecordHistogram { desc: &m::TTFB, bounds: DURATION_BUCKETS, value: |r| Some(r.ttfb_ms / 1e3), observations: once },
    RecordHistogram {
        desc: &m::TIME_TO_FIRST_CHUNK,
        bounds: DURATION_BUCKETS,
        value: |r| r.stream_timing.time_to_first_token_ms.map(|t| t / 1e3),
        observations: once,
    },
    RecordHistogram {
        desc: &m::TIME_PER_OUTPUT_CHUNK,
        bounds: DURATION_BUCKETS,
        value: |r| r.stream_timing.time_per_output_chunk_ms.map(|t| t / 1e3),
        // Each request's mean gap, observed once per gap: count and sum exact.
        observations: |r| u64::from(r.stream_timing.content_events.unwrap_or(0).saturating_sub(1)),
    },
    RecordHistogram {
        desc: &m::TIME_PER_OUTPUT_TOKEN,
        bounds: DURATION_BUCKETS,
        value: |r| r.stream_timing.time_per_output_token_ms.map(|t| t / 1e3),
        observations: once,
    },
];

/// True for metrics whose raw samples are buffered (sent as distributions by DogStatsD).
pub fn is_sampled(desc: &Desc) -> bool {
    std::ptr::eq(desc, &m::TOKEN_USAGE) || RECORD_HISTOGRAMS.iter().any(|h| std::ptr::eq(desc, h.desc))
}
/// Longest model or error type kept, in bytes.
const MAX_VALUE_BYTES: usize = 96;

/// Cardinality limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_models: usize,
    pub max_error_types: usize,
    pub max_series: usize,
    /// Raw samples kept between two snapshots (0: none are kept).
    pub max_samples: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_models: 100, max_error_types: 20, max_series: 5_000, max_samples: 0 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Key {
    side: &'static str,
    provider: &'static str,
    model: String,
    operation: &'static str,
    status_class: &'static str,
    error_type: Option<String>,
    /// Counts scaled by a sampling interval N > 1.
    estimate: bool,
}

impl Key {
    fn labels(&self) -> Vec<Label> {
        let mut l: Vec<Label> = vec![
            ("side", Cow::Borrowed(self.side)),
            ("gen_ai.provider.name", Cow::Borrowed(self.provider)),
            ("gen_ai.request.model", Cow::Owned(self.model.clone())),
            ("gen_ai.operation.name", Cow::Borrowed(self.operation)),
            ("status_class", Cow::Borrowed(self.status_class)),
            ("estimate", Cow::Borrowed(if self.estimate { "true" } else { "false" })),
        ];
        if let Some(e) = &self.error_type {
            l.push(("error.type", Cow::Owned(e.clone())));
        }
        l
    }
}

/// Token types, in the order of `Aggregate::tokens`.
const TOKEN_TYPES: [&str; 5] = ["input", "output", "cache_read", "cache_creation", "reasoning"];

#[derive(Debug, Clone)]
struct Aggregate {
    requests: u64,
    /// `None` until some record reported that token type.
    tokens: [Option<u64>; 5],
    token_usage: [HistogramValue; 2],
    cost: Decimal,
    unpriced: u64,
    cache_hits: Option<u64>,
    /// One per `RECORD_HISTOGRAMS` entry.
    histograms: Vec<HistogramValue>,
}

impl Aggregate {
    fn new() -> Self {
        Self {
            requests: 0,
            tokens: [None; 5],
            token_usage: [HistogramValue::empty(TOKEN_BUCKETS), HistogramValue::empty(TOKEN_BUCKETS)],
            cost: Decimal::ZERO,
            unpriced: 0,
            cache_hits: None,
            histograms: RECORD_HISTOGRAMS.iter().map(|h| HistogramValue::empty(h.bounds)).collect(),
        }
    }
}

/// Which label overflowed, in the order of `State::overflow`.
const OVERFLOW_LABELS: [&str; 3] = ["model", "error_type", "series"];

#[derive(Debug, Default)]
struct State {
    series: BTreeMap<Key, Aggregate>,
    models: HashSet<String>,
    error_types: HashSet<String>,
    overflow: [u64; 3],
    lagged: u64,
    samples: Vec<(&'static Desc, Key, Option<&'static str>, f64)>,
    samples_dropped: u64,
}

/// Shared aggregate of every record seen; cheap to snapshot.
#[derive(Debug, Default)]
pub struct AuditMetrics {
    limits: Limits,
    state: Mutex<State>,
}

fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "none",
    }
}

fn bounded(value: &str) -> String {
    let mut end = value.len().min(MAX_VALUE_BYTES);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_string()
}

/// `value` if it is known or there is room for it, else `other` (counted).
fn admit(seen: &mut HashSet<String>, limit: usize, value: String, overflow: &mut u64) -> String {
    if seen.contains(&value) {
        return value;
    }
    if seen.len() < limit {
        seen.insert(value.clone());
        return value;
    }
    *overflow += 1;
    OTHER.to_string()
}

impl AuditMetrics {
    pub fn new(limits: Limits) -> Self {
        Self { limits, state: Mutex::default() }
    }

    /// Counts records until the bus closes or `stop` turns true; records the
    /// bus dropped because this consumer lagged are counted.
    pub async fn run(
        &self,
        mut records: broadcast::Receiver<std::sync::Arc<RequestRecord>>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                r = records.recv() => match r {
                    Ok(record) => self.observe(&record),
                    Err(broadcast::error::RecvError::Lagged(n)) => self.lock().lagged += n,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the counters inconsistent
        // in a harmful way: keep counting.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn observe(&self, r: &RequestRecord) {
        let mut guard = self.lock();
        let s = &mut *guard;
        let model = r.model_requested.as_deref().or(r.model_returned.as_deref()).unwrap_or("unknown");
        let model = admit(&mut s.models, self.limits.max_models, bounded(model), &mut s.overflow[0]);
        let error_type = r
            .error_type
            .as_deref()
            .map(|e| admit(&mut s.error_types, self.limits.max_error_types, bounded(e), &mut s.overflow[1]));
        let mut key = Key {
            side: r.side,
            provider: r.provider,
            model,
            operation: r.operation,
            status_class: status_class(r.status),
            error_type,
            estimate: r.sample_every > 1,
        };
        if !s.series.contains_key(&key) && s.series.len() >= self.limits.max_series {
            s.overflow[2] += 1;
            key.model = OTHER.to_string();
            key.error_type = key.error_type.map(|_| OTHER.to_string());
        }
        let a = s.series.entry(key.clone()).or_insert_with(Aggregate::new);
        let weight = u64::from(r.sample_every.max(1));
        a.requests += weight;
        let t = &r.tokens;
        for (slot, v) in [t.input, t.output, t.cache_read, t.cache_creation, t.reasoning].into_iter().enumerate() {
            if let Some(v) = v {
                let sum = a.tokens[slot].get_or_insert(0);
                *sum = sum.saturating_add(v.saturating_mul(weight));
            }
        }
        for (i, v) in [t.input, t.output].into_iter().enumerate() {
            if let Some(v) = v {
                a.token_usage[i].observe(v as f64);
            }
        }
        match r.cost_usd {
            Some(c) => a.cost = a.cost.saturating_add(c.saturating_mul(Decimal::from(weight))),
            None => a.unpriced += weight,
        }
        if let Some(hit) = r.cache_hit {
            *a.cache_hits.get_or_insert(0) += u64::from(hit) * weight;
        }
        let mut new: Vec<(&'static Desc, Option<&'static str>, f64)> = Vec::new();
        for (h, histogram) in RECORD_HISTOGRAMS.iter().zip(&mut a.histograms) {
            let n = (h.observations)(r);
            if let Some(v) = (h.value)(r).filter(|_| n > 0) {
                histogram.observe_n(v, n);
                if self.limits.max_samples > 0 {
                    new.push((h.desc, None, v));
                }
            }
        }
        if self.limits.max_samples > 0 {
            if let Some(v) = t.input {
                new.push((&m::TOKEN_USAGE, Some("input"), v as f64));
            }
            if let Some(v) = t.output {
                new.push((&m::TOKEN_USAGE, Some("output"), v as f64));
            }
            for (desc, token_type, v) in new {
                if s.samples.len() < self.limits.max_samples {
                    s.samples.push((desc, key.clone(), token_type, v));
                } else {
                    s.samples_dropped += 1;
                }
            }
        }
    }

    /// Appends every series (cumulative) to `out`.
    pub fn series(&self, out: &mut Vec<Series>) {
        let s = self.lock();
        for (key, a) in &s.series {
            let labels = key.labels();
            let with = |extra: Label| {
                let mut l = labels.clone();
                l.push(extra);
                l
            };
            out.push(Series { desc: &m::REQUESTS, labels: labels.clone(), value: Value::Int(a.requests) });
            for (slot, v) in a.tokens.iter().enumerate() {
                if let Some(v) = v {
                    out.push(Series {
                        desc: &m::TOKENS,
                        labels: with(("gen_ai.token.type", Cow::Borrowed(TOKEN_TYPES[slot]))),
                        value: Value::Int(*v),
                    });
                }
            }
            for (i, h) in a.token_usage.iter().enumerate() {
                if h.count > 0 {
                    out.push(Series {
                        desc: &m::TOKEN_USAGE,
                        labels: with(("gen_ai.token.type", Cow::Borrowed(TOKEN_TYPES[i]))),
                        value: Value::Histogram(h.clone()),
                    });
                }
            }
            out.push(Series {
                desc: &m::COST,
                labels: labels.clone(),
                value: Value::Float(a.cost.to_f64().unwrap_or(f64::NAN)),
            });
            out.push(Series { desc: &m::UNPRICED, labels: labels.clone(), value: Value::Int(a.unpriced) });
            if let Some(hits) = a.cache_hits {
                out.push(Series { desc: &m::CACHE_HITS, labels: labels.clone(), value: Value::Int(hits) });
            }
            for (h, histogram) in RECORD_HISTOGRAMS.iter().zip(&a.histograms) {
                if histogram.count > 0 {
                    out.push(Series {
                        desc: h.desc,
                        labels: labels.clone(),
                        value: Value::Histogram(histogram.clone()),
                    });
                }
            }
        }
        out.push(Series { desc: &m::RECORDS_LAGGED, labels: vec![], value: Value::Int(s.lagged) });
        for (i, label) in OVERFLOW_LABELS.iter().enumerate() {
            out.push(Series {
                desc: &m::LABEL_OVERFLOW,
                labels: vec![("label", Cow::Borrowed(*label))],
                value: Value::Int(s.overflow[i]),
            });
        }
    }

    /// Label sets held now.
    pub fn series_count(&self) -> usize {
        self.lock().series.len()
    }

    /// Distribution samples dropped because the buffer was full.
    pub fn samples_dropped(&self) -> u64 {
        self.lock().samples_dropped
    }

    /// Takes the raw samples buffered since the last call, grouped by series.
    pub fn take_samples(&self) -> Vec<Samples> {
        let taken = std::mem::take(&mut self.lock().samples);
        type Group = (&'static str, Key, Option<&'static str>);
        let mut grouped: BTreeMap<Group, (&'static Desc, Vec<f64>)> = BTreeMap::new();
        for (desc, key, token_type, v) in taken {
            grouped.entry((desc.otel, key, token_type)).or_insert_with(|| (desc, Vec::new())).1.push(v);
        }
        grouped
            .into_iter()
            .map(|((_, key, token_type), (desc, values))| {
                let mut labels = key.labels();
                if let Some(t) = token_type {
                    labels.push(("gen_ai.token.type", Cow::Borrowed(t)));
                }
                Samples { desc, labels, values }
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::records::RecordBuilder;

    pub fn record(side: &'static str, model: &str, status: u16, input: u64, output: u64) -> RequestRecord {
        builder(side, model, status, input, output).build()
    }

    /// `record`'s fields, as a builder to set more.
    pub fn builder(side: &'static str, model: &str, status: u16, input: u64, output: u64) -> RecordBuilder {
        RecordBuilder::new()
            .side(side)
            .model(model)
            .status(status)
            .error_type((status >= 400).then(|| "rate_limit_exceeded".into()))
            .tokens(input, output)
            .ttfb_ms(100.0)
            .duration_ms(1500.0)
            .session_id(Some("session-not-a-label".into()))
            .user_id(Some("user-not-a-label".into()))
            .api_key_hash("0123456789abcdef")
            .cost_usd(Some(Decimal::new(25, 6)))
    }

    fn value(series: &[Series], desc: &'static Desc, has: &[(&str, &str)]) -> f64 {
        series
            .iter()
            .filter(|s| std::ptr::eq(s.desc, desc))
            .filter(|s| has.iter().all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v)))
            .map(|s| s.value.as_f64())
            .sum()
    }

    #[test]
    fn records_are_counted_per_label_set() {
        let a = AuditMetrics::new(Limits::default());
        a.observe(&record("upstream", "gpt-4o", 200, 10, 20));
        a.observe(&record("upstream", "gpt-4o", 200, 1, 2));
        a.observe(&record("upstream", "gpt-4o", 429, 0, 0));
        let mut s = Vec::new();
        a.series(&mut s);
        assert_eq!(value(&s, &m::REQUESTS, &[("status_class", "2xx")]), 2.0);
        assert_eq!(value(&s, &m::REQUESTS, &[("error.type", "rate_limit_exceeded")]), 1.0);
        assert_eq!(value(&s, &m::TOKENS, &[("gen_ai.token.type", "input")]), 11.0);
        assert_eq!(value(&s, &m::TOKENS, &[("gen_ai.token.type", "output")]), 22.0);
        assert!((value(&s, &m::COST, &[]) - 0.000075).abs() < 1e-12);
        let d = s.iter().find(|x| std::ptr::eq(x.desc, &m::DURATION)).unwrap();
        let Value::Histogram(h) = &d.value else { panic!() };
        assert_eq!(h.counts[DURATION_BUCKETS.iter().position(|b| *b == 2.56).unwrap()], 2, "1.5 s <= 2.56");
        for x in &s {
            for (_, v) in &x.labels {
                assert!(!v.contains("session") && !v.contains("user"), "ids are never labels");
            }
        }
    }

    #[test]
    fn streaming_time_is_observed_for_streams_only_with_exact_chunk_counts() {
        use crate::audit::pipeline::StreamTiming;
        let a = AuditMetrics::new(Limits::default());
        a.observe(&record("client", "gpt-4o", 200, 10, 20));
        let timing = StreamTiming {
            time_to_first_token_ms: Some(150.0),
            time_per_output_token_ms: Some(10.0),
            time_per_output_chunk_ms: Some(40.0),
            stream_events: Some(7),
            content_events: Some(5),
        };
        a.observe(&builder("client", "gpt-4o", 200, 10, 20).streaming(true).stream_timing(timing).build());
        let mut s = Vec::new();
        a.series(&mut s);
        let histogram = |desc: &'static Desc| {
            let found: Vec<_> = s.iter().filter(|x| std::ptr::eq(x.desc, desc)).collect();
            assert_eq!(found.len(), 1, "{}", desc.otel);
            let Value::Histogram(h) = &found[0].value else { panic!() };
            (h.count, h.sum)
        };
        assert_eq!(histogram(&m::TIME_TO_FIRST_CHUNK), (1, 0.15), "the plain record is not observed");
        let (count, sum) = histogram(&m::TIME_PER_OUTPUT_CHUNK);
        assert_eq!(count, 4, "5 content chunks: 4 gaps");
        assert!((sum - 0.16).abs() < 1e-12, "{sum}: the span between first and last chunk");
        assert_eq!(histogram(&m::TIME_PER_OUTPUT_TOKEN), (1, 0.01));
    }

    #[test]
    fn sampled_records_are_scaled_estimates_in_their_own_series() {
        let a = AuditMetrics::new(Limits::default());
        a.observe(&record("client", "gpt-4o", 200, 10, 20));
        a.observe(&builder("client", "gpt-4o", 200, 1, 2).sample_every(4).build());
        let mut s = Vec::new();
        a.series(&mut s);
        let exact = [("estimate", "false")];
        let estimate = [("estimate", "true")];
        assert_eq!(value(&s, &m::REQUESTS, &exact), 1.0);
        assert_eq!(value(&s, &m::REQUESTS, &estimate), 4.0, "1 record captured as 1 in 4");
        assert_eq!(value(&s, &m::TOKENS, &[("estimate", "true"), ("gen_ai.token.type", "input")]), 4.0);
        assert_eq!(value(&s, &m::TOKENS, &[("estimate", "false"), ("gen_ai.token.type", "output")]), 20.0);
        assert!((value(&s, &m::COST, &estimate) - 0.0001).abs() < 1e-12);
        let d = s
            .iter()
            .find(|x| {
                std::ptr::eq(x.desc, &m::DURATION) && x.labels.iter().any(|(k, v)| *k == "estimate" && v == "true")
            })
            .unwrap();
        let Value::Histogram(h) = &d.value else { panic!() };
        assert_eq!(h.counts.iter().sum::<u64>(), 1, "distributions are over captured exchanges, unscaled");
    }

    #[test]
    fn models_beyond_the_limit_collapse_to_other() {
        let a = AuditMetrics::new(Limits { max_models: 2, ..Limits::default() });
        for i in 0..10 {
            a.observe(&record("client", &format!("model-{i}"), 200, 1, 1));
        }
        let mut s = Vec::new();
        a.series(&mut s);
        let models: HashSet<String> = s
            .iter()
            .filter(|x| std::ptr::eq(x.desc, &m::REQUESTS))
            .flat_map(|x| x.labels.iter().filter(|(k, _)| *k == "gen_ai.request.model").map(|(_, v)| v.to_string()))
            .collect();
        assert_eq!(models, HashSet::from(["model-0".into(), "model-1".into(), "other".to_string()]));
        assert_eq!(value(&s, &m::REQUESTS, &[("gen_ai.request.model", "other")]), 8.0);
        assert_eq!(value(&s, &m::LABEL_OVERFLOW, &[("label", "model")]), 8.0);
        assert_eq!(value(&s, &m::REQUESTS, &[]), 10.0, "nothing is lost");
    }

    #[test]
    fn the_series_limit_bounds_memory() {
        let a = AuditMetrics::new(Limits { max_series: 3, max_models: 1000, ..Limits::default() });
        for i in 0..100 {
            a.observe(&record("client", &format!("m{i}"), 200, 1, 1));
        }
        let mut s = Vec::new();
        a.series(&mut s);
        assert_eq!(s.iter().filter(|x| std::ptr::eq(x.desc, &m::REQUESTS)).count(), 4, "3 + other");
        assert_eq!(value(&s, &m::REQUESTS, &[]), 100.0);
    }

    #[test]
    fn samples_are_bounded_and_drained() {
        let a = AuditMetrics::new(Limits { max_samples: 8, ..Limits::default() });
        for _ in 0..3 {
            a.observe(&record("client", "gpt-4o", 200, 5, 7));
        }
        // 4 samples per record: 2 records fit, the third's 4 are dropped.
        assert_eq!(a.samples_dropped(), 4);
        let taken = a.take_samples();
        let total: usize = taken.iter().map(|s| s.values.len()).sum();
        assert_eq!(total, 8);
        let input =
            taken.iter().find(|s| s.labels.iter().any(|(k, v)| *k == "gen_ai.token.type" && v == "input")).unwrap();
        assert_eq!(input.values, vec![5.0, 5.0]);
        assert!(a.take_samples().is_empty());
    }
}
