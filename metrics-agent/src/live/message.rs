//! The stream's JSON messages (schema in docs/metrics.md): one
//! `metrics.update` per application per tick — also one per (application,
//! provider) for clients that subscribe to a provider — and one
//! `agent.health`. Each is serialised once per tick and shared by every client.

use serde::Serialize;
use serde_json::Value;

use super::window::{AppView, CellView, Stats, Summary, Tokens, Totals, UpstreamView};

/// Errors listed per update at most.
const TOP_ERRORS: usize = 5;

#[derive(Serialize)]
struct TokensOut {
    input: u64,
    output: u64,
    cache_read: u64,
    cache_creation: u64,
    reasoning: u64,
}

impl From<&Tokens> for TokensOut {
    fn from(t: &Tokens) -> Self {
        Self {
            input: t.input,
            output: t.output,
            cache_read: t.cache_read,
            cache_creation: t.cache_creation,
            reasoning: t.reasoning,
        }
    }
}

/// Rates and percentiles over the window.
#[derive(Serialize)]
struct WindowMetrics {
    requests_per_second: f64,
    error_rate: f64,
    p50_latency_ms: Option<f64>,
    p99_latency_ms: Option<f64>,
    p50_ttfb_ms: Option<f64>,
    p99_ttfb_ms: Option<f64>,
    /// Streamed responses only: time to first token, time per output token.
    p50_ttft_ms: Option<f64>,
    p99_ttft_ms: Option<f64>,
    p50_tpot_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    active_sessions: Option<u64>,
    requests: u64,
    errors: u64,
    tokens_per_second: f64,
    tokens: TokensOut,
    /// Exact decimal string.
    cost_usd: String,
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

impl WindowMetrics {
    fn of(s: &Summary, sessions: bool) -> Self {
        let w: &Stats = &s.window;
        let c = &w.counts;
        let q = |h: &super::histogram::LogHistogram, q: f64| h.quantile(q).map(round3);
        Self {
            requests_per_second: round3(s.per_second(c.requests)),
            error_rate: (s.error_rate() * 1e6).round() / 1e6,
            p50_latency_ms: q(&w.latency, 0.5),
            p99_latency_ms: q(&w.latency, 0.99),
            p50_ttfb_ms: q(&w.ttfb, 0.5),
            p99_ttfb_ms: q(&w.ttfb, 0.99),
            p50_ttft_ms: q(&w.ttft, 0.5),
            p99_ttft_ms: q(&w.ttft, 0.99),
            p50_tpot_ms: q(&w.tpot, 0.5),
            active_sessions: sessions.then_some(s.active_sessions),
            requests: c.requests,
            errors: c.errors,
            tokens_per_second: round3(s.per_second(c.tokens.input + c.tokens.output)),
            tokens: (&c.tokens).into(),
            cost_usd: c.cost_usd.normalize().to_string(),
        }
    }
}

/// Exact counts since the agent started.
#[derive(Serialize)]
struct TotalsOut {
    requests: u64,
    errors: u64,
    tokens: TokensOut,
    cost_usd: String,
    unpriced_requests: u64,
}

impl From<&Totals> for TotalsOut {
    fn from(t: &Totals) -> Self {
        Self {
            requests: t.requests,
            errors: t.errors,
            tokens: (&t.tokens).into(),
            cost_usd: t.cost_usd.normalize().to_string(),
            unpriced_requests: t.unpriced,
        }
    }
}

#[derive(Serialize)]
struct ModelRow {
    provider: &'static str,
    model: String,
    #[serde(flatten)]
    metrics: WindowMetrics,
    totals: TotalsOut,
}

#[derive(Serialize)]
struct UpstreamRow {
    provider: String,
    #[serde(flatten)]
    metrics: WindowMetrics,
    totals: TotalsOut,
}

#[derive(Serialize)]
struct ErrorRow {
    #[serde(rename = "type")]
    kind: String,
    count: u64,
}

#[derive(Serialize)]
struct Update<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: &'a str,
    seq: u64,
    application_id: Option<&'a str>,
    /// The provider this update is restricted to (a subscription), or null.
    provider: Option<&'a str>,
    window_seconds: f64,
    metrics: WindowMetrics,
    totals: TotalsOut,
    models: Vec<ModelRow>,
    upstream: Vec<UpstreamRow>,
    top_errors: Vec<ErrorRow>,
}

fn top_errors(s: &Stats) -> Vec<ErrorRow> {
    let mut rows: Vec<ErrorRow> =
        s.error_types.iter().map(|(kind, count)| ErrorRow { kind: kind.clone(), count: *count }).collect();
    rows.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.kind.cmp(&b.kind)));
    rows.truncate(TOP_ERRORS);
    rows
}

/// Tick-wide fields of every message.
pub struct Stamp<'a> {
    pub timestamp: &'a str,
    pub seq: u64,
}

/// The `metrics.update` of an application, restricted to `provider` when given.
pub fn update(stamp: &Stamp, app: &AppView, provider: Option<&'static str>) -> String {
    let summary = match provider {
        None => &app.all,
        Some(p) => app.by_provider.iter().find(|(q, _)| *q == p).map(|(_, s)| s).unwrap_or(&app.all),
    };
    let models = app
        .cells
        .iter()
        .filter(|c: &&CellView| provider.is_none_or(|p| c.provider == p))
        .map(|c| ModelRow {
            provider: c.provider,
            model: c.model.clone(),
            metrics: WindowMetrics::of(&c.summary, false),
            totals: (&c.summary.totals).into(),
        })
        .collect();
    let upstream = app
        .upstream
        .iter()
        .filter(|u: &&UpstreamView| provider.is_none_or(|p| u.provider == p))
        .map(|u| UpstreamRow {
            provider: u.provider.clone(),
            metrics: WindowMetrics::of(&u.summary, false),
            totals: (&u.summary.totals).into(),
        })
        .collect();
    let message = Update {
        kind: "metrics.update",
        timestamp: stamp.timestamp,
        seq: stamp.seq,
        application_id: app.application_id.as_deref(),
        provider,
        window_seconds: round3(summary.window_seconds),
        metrics: WindowMetrics::of(summary, true),
        totals: (&summary.totals).into(),
        models,
        upstream,
        top_errors: top_errors(&summary.window),
    };
    serde_json::to_string(&message).unwrap_or_default()
}

/// The agent's own health, sent once per tick.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Health {
    pub uptime_seconds: f64,
    pub audit: bool,
    /// Payload capture is on (off: `--no-audit`; load raises `sample_every` instead).
    pub capture_enabled: bool,
    pub capture_breaker_trips: u64,
    /// Payload chunks the kernel dropped because the ring buffer was full.
    pub capture_dropped_events: u64,
    /// Capture one exchange in N now (adaptive under load).
    pub sample_every: u32,
    pub audit_records: u64,
    /// Records the stream missed because it fell behind the record bus.
    pub records_dropped: u64,
    pub stream_clients: u64,
    pub stream_clients_dropped_slow: u64,
    pub stream_clients_rejected: u64,
    pub stream_updates_skipped: u64,
    pub sessions_untracked: u64,
}

#[derive(Serialize)]
struct HealthMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    timestamp: &'a str,
    seq: u64,
    agent: &'a Health,
    /// Host and process metrics, when a source is configured (hook).
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<&'a Value>,
}

pub fn health(stamp: &Stamp, agent: &Health, system: Option<&Value>) -> String {
    let m = HealthMessage { kind: "agent.health", timestamp: stamp.timestamp, seq: stamp.seq, agent, system };
    serde_json::to_string(&m).unwrap_or_default()
}

/// RFC 3339 UTC time with milliseconds, e.g. `2026-01-15T10:30:00.123Z`.
pub fn rfc3339_millis(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(1_705_314_600_123), "2024-01-15T10:30:00.123Z");
        assert_eq!(rfc3339_millis(951_825_600_000), "2000-02-29T12:00:00.000Z");
        assert_eq!(rfc3339_millis(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    /// The dashboard plots every streaming time (time to first token, per
    /// output token) of an update, under the name the update gives it.
    #[test]
    fn the_dashboard_reads_every_streaming_time_an_update_sends() {
        let mut s = Summary { window_seconds: 1.0, ..Summary::default() };
        s.window.ttft.record(200.0);
        s.window.tpot.record(15.0);
        let sent = serde_json::to_value(WindowMetrics::of(&s, false)).unwrap();
        let streaming: Vec<&String> = sent
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.contains("ttft") || k.contains("tpot"))
            .map(|(k, v)| {
                assert!(v.as_f64().is_some_and(|v| v > 0.0), "{k}: {v}");
                k
            })
            .collect();
        assert_eq!(streaming, ["p50_ttft_ms", "p99_ttft_ms", "p50_tpot_ms"], "{sent}");
        for k in streaming {
            assert!(super::super::dashboard::PAGE.contains(&format!("m.metrics.{k}")), "the dashboard plots {k}");
        }
    }
}
