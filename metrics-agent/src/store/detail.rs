//! Sampled per-request detail rows: what a record says about one request,
//! without prompt or completion text (records carry none) and without
//! headers; kept for a shorter time than the aggregates.

use rust_decimal::Decimal;
use serde::Serialize;

use super::rollup::text;
use crate::records::RequestRecord;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetailRow {
    pub ts_ms: i64,
    pub application_id: String,
    pub side: String,
    pub provider: String,
    pub upstream_provider: Option<String>,
    pub operation: String,
    pub endpoint: String,
    pub model_requested: Option<String>,
    pub model_returned: Option<String>,
    pub status: u16,
    pub error_type: Option<String>,
    pub streaming: bool,
    pub cache_hit: Option<bool>,
    pub ttfb_us: i64,
    pub duration_us: i64,
    pub tokens_input: Option<i64>,
    pub tokens_output: Option<i64>,
    pub tokens_cached: Option<i64>,
    pub tokens_cache_creation: Option<i64>,
    pub tokens_reasoning: Option<i64>,
    pub cost_usd: Option<Decimal>,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    pub truncated: bool,
    /// Azure OpenAI deployment.
    pub deployment: Option<String>,
    /// Streamed responses: time to first token and per output token, µs;
    /// number of stream events.
    pub ttft_us: Option<i64>,
    pub tpot_us: Option<i64>,
    pub stream_events: Option<i64>,
}

fn micros(ms: f64) -> i64 {
    if ms.is_finite() && ms > 0.0 { (ms * 1000.0).round().min(i64::MAX as f64) as i64 } else { 0 }
}

fn tokens(v: Option<u64>) -> Option<i64> {
    v.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// Longest stored endpoint; query strings are cut off (they may hold keys).
const MAX_ENDPOINT: usize = 512;

impl DetailRow {
    pub fn of(r: &RequestRecord) -> Self {
        let mut endpoint = text(r.endpoint.split('?').next().unwrap_or("").to_string());
        if endpoint.len() > MAX_ENDPOINT {
            let mut cut = MAX_ENDPOINT;
            while !endpoint.is_char_boundary(cut) {
                cut -= 1;
            }
            endpoint.truncate(cut);
        }
        Self {
            ts_ms: i64::try_from(r.timestamp_unix_ms).unwrap_or(i64::MAX),
            application_id: text(r.application_id.clone().unwrap_or_default()),
            side: r.side.to_string(),
            provider: r.provider.to_string(),
            upstream_provider: r.upstream_provider.clone().map(text),
            operation: r.operation.to_string(),
            endpoint,
            model_requested: r.model_requested.clone().map(text),
            model_returned: r.model_returned.clone().map(text),
            status: r.status,
            error_type: r.error_type.clone().map(text),
            streaming: r.streaming,
            cache_hit: r.cache_hit,
            ttfb_us: micros(r.ttfb_ms),
            duration_us: micros(r.duration_ms),
            tokens_input: tokens(r.tokens.input),
            tokens_output: tokens(r.tokens.output),
            tokens_cached: tokens(r.tokens.cache_read),
            tokens_cache_creation: tokens(r.tokens.cache_creation),
            tokens_reasoning: tokens(r.tokens.reasoning),
            cost_usd: r.cost_usd,
            session_id: r.session_id.clone().map(text),
            user_id: r.user_id.clone().map(text),
            truncated: r.truncated,
            deployment: r.deployment.clone().map(text),
            ttft_us: r.stream_timing.time_to_first_token_ms.map(micros),
            tpot_us: r.stream_timing.time_per_output_token_ms.map(micros),
            stream_events: r.stream_timing.stream_events.map(i64::from),
        }
    }
}

/// Keeps one record in `every` (0 keeps none), deterministically.
#[derive(Debug)]
pub struct Sampler {
    every: u32,
    seen: u64,
}

impl Sampler {
    pub fn new(every: u32) -> Self {
        Self { every, seen: 0 }
    }

    pub fn keep(&mut self) -> bool {
        if self.every == 0 {
            return false;
        }
        self.seen += 1;
        self.seen % u64::from(self.every) == 1 % u64::from(self.every)
    }
}

/// At most `per_minute` detail rows per minute of record time (0: no cap),
/// counted over the last `names::MINUTES_TRACKED` minutes; a record of an
/// older, forgotten minute gets no detail row.
#[derive(Debug)]
pub struct MinuteCap {
    per_minute: u32,
    kept: super::names::MinuteWindow<u32>,
}

impl MinuteCap {
    pub fn new(per_minute: u32) -> Self {
        Self { per_minute, kept: Default::default() }
    }

    /// Takes one row of `minute` if there is room.
    pub fn take(&mut self, minute: i64) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        match self.kept.entry(minute) {
            Some(n) if *n < self.per_minute => {
                *n += 1;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_keeps_one_in_n() {
        let mut s = Sampler::new(10);
        assert_eq!((0..1000).filter(|_| s.keep()).count(), 100);
        let mut all = Sampler::new(1);
        assert!((0..10).all(|_| all.keep()));
        let mut none = Sampler::new(0);
        assert!(!(0..10).any(|_| none.keep()));
    }

    #[test]
    fn the_minute_cap_keeps_the_first_rows_of_each_minute() {
        let mut cap = MinuteCap::new(3);
        assert_eq!((0..10).filter(|_| cap.take(60)).count(), 3);
        assert_eq!((0..10).filter(|_| cap.take(120)).count(), 3);
        assert!(!cap.take(60), "the minute stays full");
        let mut none = MinuteCap::new(0);
        assert!((0..10_000).all(|_| none.take(60)), "0: no cap");
    }

    #[test]
    fn query_strings_are_not_stored() {
        let r = crate::store::rollup::tests::builder(0, "m", 1.0, 1, 1, "0")
            .endpoint("/v1/chat/completions?key=secret")
            .build();
        assert_eq!(DetailRow::of(&r).endpoint, "/v1/chat/completions");
    }
}
