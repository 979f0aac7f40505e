//! In-memory aggregation of per-request records into buckets keyed by
//! (bucket start, application, side, provider, model): counts, token sums,
//! an exact decimal cost sum and mergeable latency/TTFB sketches. The same
//! `Aggregate` is a 1-minute, 1-hour or 1-day row; coarser rows are merges
//! of finer ones, so every tier is exact up to the sketch's bound.

use std::collections::HashMap;

use rust_decimal::Decimal;

use super::sketch::Sketch;
use crate::records::RequestRecord;

/// A storage tier: the bucket width and the table that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Tier {
    #[serde(rename = "1m")]
    Minute,
    #[serde(rename = "1h")]
    Hour,
    #[serde(rename = "1d")]
    Day,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Minute, Tier::Hour, Tier::Day];

    pub fn seconds(self) -> i64 {
        match self {
            Tier::Minute => 60,
            Tier::Hour => 3_600,
            Tier::Day => 86_400,
        }
    }

    pub fn table(self) -> &'static str {
        match self {
            Tier::Minute => "metrics_1m",
            Tier::Hour => "metrics_1h",
            Tier::Day => "metrics_1d",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Tier::Minute => "1m",
            Tier::Hour => "1h",
            Tier::Day => "1d",
        }
    }

    /// Start of the bucket holding `unix_seconds` (UTC).
    pub fn bucket(self, unix_seconds: i64) -> i64 {
        unix_seconds.div_euclid(self.seconds()) * self.seconds()
    }
}

/// What a row is keyed by (besides the agent, which every row also carries).
/// Missing strings are stored as "" (no application id, unknown model).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub bucket_start: i64,
    pub application_id: String,
    /// `client` (what the proxy served) or `upstream` (what it sent).
    pub side: String,
    pub provider: String,
    pub model: String,
}

/// Text as stored: no control characters (PostgreSQL refuses NUL in text;
/// the audit path strips them already, this keeps storage safe on its own).
pub fn text(s: String) -> String {
    crate::audit::pipeline::without_control_chars(s)
}

impl SeriesKey {
    pub fn of(record: &RequestRecord) -> Self {
        let model = record.model_returned.as_ref().or(record.model_requested.as_ref());
        Self {
            bucket_start: Tier::Minute.bucket((record.timestamp_unix_ms / 1000) as i64),
            application_id: text(record.application_id.clone().unwrap_or_default()),
            side: record.side.to_string(),
            provider: record.provider.to_string(),
            model: text(model.cloned().unwrap_or_default()),
        }
    }

    /// The same series in the bucket of a coarser tier.
    pub fn in_tier(&self, tier: Tier) -> Self {
        Self { bucket_start: tier.bucket(self.bucket_start), ..self.clone() }
    }
}

/// The values of one row.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Aggregate {
    pub request_count: i64,
    /// Status >= 400, no status at all, or a provider error type.
    pub error_count: i64,
    pub cache_hits: i64,
    /// Requests whose response carried no usage (tokens unknown).
    pub usage_unknown_count: i64,
    /// Requests with no cost (model not in the price table, or usage unknown).
    pub unpriced_count: i64,
    pub tokens_input: i64,
    pub tokens_output: i64,
    pub tokens_cached: i64,
    pub tokens_cache_creation: i64,
    pub tokens_reasoning: i64,
    pub cost_usd: Decimal,
    /// Request duration (first request byte to last response byte), µs.
    pub latency: Sketch,
    /// Time to first response byte, µs.
    pub ttfb: Sketch,
    /// Streamed responses: time to the first content event, µs (empty
    /// when no stream of the row had one).
    pub ttft: Sketch,
    /// Streamed responses with known usage: time per output token, µs.
    pub tpot: Sketch,
    /// True when a record in the row was captured at sampling interval N > 1:
    /// the counts, token sums and cost above are then estimates (each such
    /// record counted N times); false when they are exact.
    pub estimate: bool,
    /// Records behind the row (without the scaling by N): equals
    /// `request_count` on an exact row, the sample size of an estimate.
    pub captured_count: i64,
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn micros(ms: f64) -> u64 {
    if ms.is_finite() && ms > 0.0 { (ms * 1000.0).round() as u64 } else { 0 }
}

impl Aggregate {
    /// Adds a record; one captured at sampling interval N > 1 stands for N
    /// exchanges, so its counts, tokens and cost are added N times and the
    /// row becomes an estimate. The sketches hold captured exchanges only
    /// (a sample of the distribution, unscaled).
    pub fn add(&mut self, r: &RequestRecord) {
        let n = i64::from(r.sample_every.max(1));
        let scaled = |v: Option<u64>| clamp_i64(v.unwrap_or(0)).saturating_mul(n);
        self.estimate |= n > 1;
        self.captured_count += 1;
        self.request_count += n;
        if r.status == 0 || r.status >= 400 || r.error_type.is_some() {
            self.error_count += n;
        }
        if r.cache_hit == Some(true) {
            self.cache_hits += n;
        }
        let t = &r.tokens;
        if t.input.is_none() && t.output.is_none() {
            self.usage_unknown_count += n;
        }
        self.tokens_input = self.tokens_input.saturating_add(scaled(t.input));
        self.tokens_output = self.tokens_output.saturating_add(scaled(t.output));
        self.tokens_cached = self.tokens_cached.saturating_add(scaled(t.cache_read));
        self.tokens_cache_creation = self.tokens_cache_creation.saturating_add(scaled(t.cache_creation));
        self.tokens_reasoning = self.tokens_reasoning.saturating_add(scaled(t.reasoning));
        match r.cost_usd {
            Some(c) => self.cost_usd = self.cost_usd.saturating_add(c.saturating_mul(Decimal::from(n))),
            None => self.unpriced_count += n,
        }
        self.latency.insert(micros(r.duration_ms));
        self.ttfb.insert(micros(r.ttfb_ms));
        if let Some(t) = r.stream_timing.time_to_first_token_ms {
            self.ttft.insert(micros(t));
        }
        if let Some(t) = r.stream_timing.time_per_output_token_ms {
            self.tpot.insert(micros(t));
        }
    }

    pub fn merge(&mut self, o: &Aggregate) {
        self.request_count += o.request_count;
        self.error_count += o.error_count;
        self.cache_hits += o.cache_hits;
        self.usage_unknown_count += o.usage_unknown_count;
        self.unpriced_count += o.unpriced_count;
        self.tokens_input = self.tokens_input.saturating_add(o.tokens_input);
        self.tokens_output = self.tokens_output.saturating_add(o.tokens_output);
        self.tokens_cached = self.tokens_cached.saturating_add(o.tokens_cached);
        self.tokens_cache_creation = self.tokens_cache_creation.saturating_add(o.tokens_cache_creation);
        self.tokens_reasoning = self.tokens_reasoning.saturating_add(o.tokens_reasoning);
        self.cost_usd = self.cost_usd.saturating_add(o.cost_usd);
        self.latency.merge(&o.latency);
        self.ttfb.merge(&o.ttfb);
        self.ttft.merge(&o.ttft);
        self.tpot.merge(&o.tpot);
        self.estimate |= o.estimate;
        self.captured_count += o.captured_count;
    }
}

/// Heap of one row besides its sketches' buckets and key text: the hash
/// table slot of `(SeriesKey, Aggregate)` with the table's growth slack.
pub const ROW_HEAP_BYTES: usize = 2 * (size_of::<SeriesKey>() + size_of::<Aggregate>() + 8);

impl Aggregate {
    /// An upper bound of the memory a row with this key takes.
    pub fn heap_bytes(&self, key: &SeriesKey) -> usize {
        let text = key.application_id.len() + key.side.len() + key.provider.len() + key.model.len();
        ROW_HEAP_BYTES
            + text
            + self.latency.heap_bytes()
            + self.ttfb.heap_bytes()
            + self.ttft.heap_bytes()
            + self.tpot.heap_bytes()
    }
}

/// Minute rows not yet written, bounded by a row count and a byte budget.
#[derive(Debug, Default)]
pub struct MinuteAggregator {
    pub rows: HashMap<SeriesKey, Aggregate>,
    pub records: u64,
    /// Sum of the rows' `heap_bytes`.
    pub bytes: usize,
}

/// Room left for buffered rows.
#[derive(Debug, Clone, Copy)]
pub struct Room {
    pub series: usize,
    pub bytes: usize,
}

impl Room {
    pub const UNBOUNDED: Room = Room { series: usize::MAX, bytes: usize::MAX };
}

impl MinuteAggregator {
    /// Adds a record unless that could take the rows beyond `room` (a new
    /// row, or two more sketch buckets); false when the record was refused
    /// (the caller counts it as dropped).
    pub fn add(&mut self, record: &RequestRecord, room: Room) -> bool {
        self.add_as(SeriesKey::of(record), record, room)
    }

    /// `add` under a key the caller chose (names already bounded).
    pub fn add_as(&mut self, key: SeriesKey, record: &RequestRecord, room: Room) -> bool {
        let growth = 2 * super::sketch::HEAP_BYTES_PER_BUCKET;
        if let Some(row) = self.rows.get_mut(&key) {
            if self.bytes + growth > room.bytes {
                return false;
            }
            let before = row.heap_bytes(&key);
            row.add(record);
            self.bytes = self.bytes + row.heap_bytes(&key) - before;
        } else {
            let mut row = Aggregate::default();
            row.add(record);
            let bytes = row.heap_bytes(&key);
            if self.rows.len() >= room.series || self.bytes + bytes > room.bytes {
                return false;
            }
            self.bytes += bytes;
            self.rows.insert(key, row);
        }
        self.records += 1;
        true
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// The rows of every tier that a set of minute rows changes.
pub fn roll_up(minutes: &HashMap<SeriesKey, Aggregate>, tier: Tier) -> HashMap<SeriesKey, Aggregate> {
    let mut out: HashMap<SeriesKey, Aggregate> = HashMap::new();
    for (key, row) in minutes {
        out.entry(key.in_tier(tier)).or_default().merge(row);
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::records::RecordBuilder;

    /// A client record with the given fields; everything else plain.
    pub fn record(ts_ms: u64, model: &str, duration_ms: f64, input: u64, output: u64, cost: &str) -> RequestRecord {
        builder(ts_ms, model, duration_ms, input, output, cost).build()
    }

    /// `record`'s fields, as a builder to set more.
    pub fn builder(ts_ms: u64, model: &str, duration_ms: f64, input: u64, output: u64, cost: &str) -> RecordBuilder {
        RecordBuilder::new()
            .timestamp_unix_ms(ts_ms)
            .upstream_provider(Some("openai"))
            .cache_hit(Some(false))
            .model(model)
            .model_returned(model)
            .tokens(input, output)
            .ttfb_ms(duration_ms / 2.0)
            .duration_ms(duration_ms)
            .cost_usd(Some(cost.parse().unwrap()))
            .application_id(Some("app".into()))
    }

    #[test]
    fn records_land_in_their_minute_whatever_the_order() {
        let mut agg = MinuteAggregator::default();
        let base = 1_700_000_040_000u64; // a minute boundary
        for ts in [base + 61_000, base + 1, base + 59_999, base - 1, base + 120_000] {
            assert!(agg.add(&record(ts, "m", 10.0, 1, 1, "0.1"), room(100)));
        }
        let mut minutes: Vec<(i64, i64)> = agg.rows.iter().map(|(k, v)| (k.bucket_start, v.request_count)).collect();
        minutes.sort();
        let b = (base / 1000) as i64;
        assert_eq!(minutes, vec![(b - 60, 1), (b, 2), (b + 60, 1), (b + 120, 1)]);
    }

    #[test]
    fn two_models_of_one_application_are_two_rows() {
        let mut agg = MinuteAggregator::default();
        agg.add(&record(1_700_000_040_000, "a", 1.0, 1, 1, "0.1"), room(100));
        agg.add(&record(1_700_000_040_000, "b", 1.0, 1, 1, "0.1"), room(100));
        assert_eq!(agg.rows.len(), 2);
    }

    #[test]
    fn cost_sums_are_exact_and_rollups_equal_direct_aggregation() {
        let mut agg = MinuteAggregator::default();
        let mut direct = Aggregate::default();
        for i in 0..500u64 {
            let r = record(1_700_000_000_000 + i * 7_919, "m", (i % 97) as f64 * 3.3, i, 2 * i, "0.000000123");
            agg.add(&r, room(10_000));
            direct.add(&r);
        }
        assert_eq!(direct.cost_usd, "0.0000615".parse::<Decimal>().unwrap());
        let day = roll_up(&agg.rows, Tier::Day);
        let hours = roll_up(&agg.rows, Tier::Hour);
        let mut from_hours = Aggregate::default();
        hours.values().for_each(|h| from_hours.merge(h));
        let mut from_day = Aggregate::default();
        day.values().for_each(|d| from_day.merge(d));
        assert_eq!(from_hours, direct);
        assert_eq!(from_day, direct);
    }

    #[test]
    fn the_series_limit_refuses_new_rows_only() {
        let mut agg = MinuteAggregator::default();
        assert!(agg.add(&record(0, "a", 1.0, 1, 1, "0"), room(1)));
        assert!(agg.add(&record(1, "a", 1.0, 1, 1, "0"), room(1)), "an existing row still takes records");
        assert!(!agg.add(&record(2, "b", 1.0, 1, 1, "0"), room(1)));
        assert_eq!(agg.records, 2);
    }

    /// Room for `series` rows and unbounded bytes.
    pub fn room(series: usize) -> Room {
        Room { series, bytes: usize::MAX }
    }

    #[test]
    fn adversarial_latencies_cannot_take_the_rows_beyond_their_byte_budget() {
        // Every record a new latency bucket, over the whole u64 range, in few rows.
        let budget = Room { series: 1_000, bytes: 256 * 1024 };
        let mut agg = MinuteAggregator::default();
        let (mut taken, mut refused) = (0, 0);
        for i in 0..20_000u64 {
            let mut r = record(1_700_000_040_000 + i % 120_000, &format!("m{}", i % 7), 0.0, 1, 1, "0");
            let v = 1.0202f64.powi((i % 2_300) as i32) / 1000.0;
            (r.duration_ms, r.ttfb_ms) = (v, v / 2.0);
            if agg.add(&r, budget) { taken += 1 } else { refused += 1 }
        }
        assert!(taken > 1_000 && refused > 0, "taken {taken}, refused {refused}");
        assert!(agg.bytes <= budget.bytes, "{}", agg.bytes);
        let recount: usize = agg.rows.iter().map(|(k, a)| a.heap_bytes(k)).sum();
        assert_eq!(agg.bytes, recount);
        for row in agg.rows.values() {
            assert!(row.latency.buckets() <= super::super::sketch::MAX_BUCKETS);
        }
    }
}
