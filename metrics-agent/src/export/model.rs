//! The exporters' common data model: a `Snapshot` is every exported series at
//! one instant (cumulative since the agent started), plus raw latency and
//! token samples for protocols with client-side distributions (DogStatsD).
//! Each series points at a static `Desc` of the catalogue (`catalog.rs`).

use std::borrow::Cow;

/// What kind of instrument a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic, cumulative since `Snapshot::start_unix_nanos`.
    Counter,
    Gauge,
    /// Explicit-bucket histogram, cumulative.
    Histogram,
}

/// A metric's names and meaning. `otel` is the OpenTelemetry name (also used
/// for Datadog); `prom` is the Prometheus base name, without the unit suffix
/// (`prom_unit`) and without `_total` (both added by the encoder).
#[derive(Debug)]
pub struct Desc {
    pub otel: &'static str,
    pub prom: &'static str,
    /// UCUM unit for OpenTelemetry (`s`, `By`, `{token}`, `{request}`, `USD`).
    pub unit: &'static str,
    /// Prometheus unit suffix (`seconds`, `bytes`), if any.
    pub prom_unit: Option<&'static str>,
    pub kind: Kind,
    /// Label (attribute) keys its series may carry, in OpenTelemetry form.
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

impl Desc {
    /// The Prometheus family name: the base name and its unit suffix
    /// (counters' samples add `_total`).
    #[allow(dead_code, reason = "read by the conformance tests (and the library API once there is one)")]
    pub fn prometheus_name(&self) -> String {
        match self.prom_unit {
            Some(unit) => format!("{}_{unit}", self.prom),
            None => self.prom.to_string(),
        }
    }
}

impl PartialEq for Desc {
    fn eq(&self, other: &Self) -> bool {
        self.otel == other.otel
    }
}

/// A label: OpenTelemetry attribute key (Prometheus replaces `.` by `_`) and value.
pub type Label = (&'static str, Cow<'static, str>);

/// The value of one series.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An exact integer (counts, bytes, tokens).
    Int(u64),
    Float(f64),
    Histogram(HistogramValue),
}

impl Value {
    pub fn as_f64(&self) -> f64 {
        match self {
            Value::Int(v) => *v as f64,
            Value::Float(v) => *v,
            Value::Histogram(h) => h.sum,
        }
    }
}

/// Cumulative explicit-bucket histogram: `counts` has one more entry than
/// `bounds` (the last is the overflow bucket); counts are per bucket, not cumulative.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramValue {
    pub bounds: &'static [f64],
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl HistogramValue {
    pub fn empty(bounds: &'static [f64]) -> Self {
        Self { bounds, counts: vec![0; bounds.len() + 1], sum: 0.0, count: 0 }
    }

    pub fn observe(&mut self, value: f64) {
        let i = self.bounds.iter().position(|b| value <= *b).unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += value;
        self.count += 1;
    }

    /// `n` observations of the same value.
    pub fn observe_n(&mut self, value: f64, n: u64) {
        if n == 0 {
            return;
        }
        let i = self.bounds.iter().position(|b| value <= *b).unwrap_or(self.bounds.len());
        self.counts[i] += n;
        self.sum += value * n as f64;
        self.count += n;
    }
}

/// One labelled time series.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub desc: &'static Desc,
    pub labels: Vec<Label>,
    pub value: Value,
}

impl Series {
    /// A series of a metric without labels.
    pub fn unlabelled(desc: &'static Desc, value: Value) -> Self {
        Self { desc, labels: Vec::new(), value }
    }
}

/// One counter series per label value of `counts`, labelled with `desc`'s
/// one label (its first, should it list more).
pub fn series_by_label(desc: &'static Desc, counts: &[(&'static str, u64)]) -> Vec<Series> {
    debug_assert_eq!(desc.labels.len(), 1, "{} has one label", desc.otel);
    let Some(key) = desc.labels.first() else { return Vec::new() };
    counts
        .iter()
        .map(|(value, n)| Series { desc, labels: vec![(*key, Cow::Borrowed(*value))], value: Value::Int(*n) })
        .collect()
}

/// Raw observations of one latency or token metric since the previous
/// snapshot, for DogStatsD distributions (`|d`).
#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    pub desc: &'static Desc,
    pub labels: Vec<Label>,
    pub values: Vec<f64>,
}

/// Every exported series at one instant.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// When the agent started counting (OTLP start time of cumulative points).
    pub start_unix_nanos: u64,
    pub time_unix_nanos: u64,
    pub series: Vec<Series>,
    /// Raw samples taken out of the sample buffer for this snapshot.
    pub samples: Vec<Samples>,
}

impl Snapshot {
    /// Raw sample values this snapshot carries.
    pub fn sample_count(&self) -> u64 {
        self.samples.iter().map(|s| s.values.len() as u64).sum()
    }
}

/// The OpenTelemetry GenAI duration buckets (seconds), extended to 327.68 s
/// so that long streamed completions do not all land in the overflow bucket.
pub const DURATION_BUCKETS: &[f64] =
    &[0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92, 163.84, 327.68];

/// The OpenTelemetry GenAI token usage buckets.
pub const TOKEN_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
    67108864.0,
];

pub fn now_unix_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_bounds_are_inclusive_upper_bounds() {
        let mut h = HistogramValue::empty(&[1.0, 2.0]);
        for v in [0.5, 1.0, 1.5, 2.0, 9.0] {
            h.observe(v);
        }
        assert_eq!(h.counts, vec![2, 2, 1]);
        assert_eq!(h.count, 5);
        assert_eq!(h.sum, 14.0);
    }
}
