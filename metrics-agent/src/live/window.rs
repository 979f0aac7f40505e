//! Per-second sliding aggregation of request records for the live stream.
//!
//! Records are kept as per-second slots per key — application, then
//! (provider, model) — holding counts, log-bucket histograms of latency and
//! TTFB, tokens, cost and error types. A view merges the slots of the last
//! `window_seconds` and adds totals since the agent started. Client-side
//! records (what the proxy served) feed the application's metrics; upstream
//! records (what the proxy asked of providers) feed a separate per-provider
//! breakdown, so a proxied request is never counted twice.
//!
//! Memory is bounded: at most `MAX_APPS` applications and `MAX_CELLS`
//! (provider, model) keys (more fold into `(other)`), slots older than the
//! window are freed, and at most `MAX_SESSIONS` session ids are tracked.

use std::{
    collections::{BTreeMap, HashMap},
    hash::{BuildHasher, RandomState},
};

use rust_decimal::Decimal;

use super::histogram::LogHistogram;
use crate::records::RequestRecord;

/// Applications tracked at most; later ones are counted as `(other)`.
pub const MAX_APPS: usize = 32;
/// (provider, model) keys tracked at most over all applications.
pub const MAX_CELLS: usize = 256;
/// Distinct error types kept per key and second; more count as `(other)`.
const MAX_ERROR_TYPES: usize = 16;
/// Session ids tracked at most (all applications).
pub const MAX_SESSIONS: usize = 200_000;
/// Name used for everything beyond a bound.
pub const OTHER: &str = "(other)";
/// Model name when neither the request nor the response named one.
pub const UNKNOWN_MODEL: &str = "unknown";

#[derive(Debug, Clone, Copy)]
pub struct WindowSettings {
    /// Seconds the rates and percentiles are computed over.
    pub window_seconds: u64,
    /// A session is active when one of its requests finished this recently.
    pub session_window_seconds: u64,
}

/// Token sums; unknown counts add nothing.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_creation: u64,
    pub reasoning: u64,
}

impl Tokens {
    fn add(&mut self, other: &Tokens) {
        self.input = self.input.saturating_add(other.input);
        self.output = self.output.saturating_add(other.output);
        self.cache_read = self.cache_read.saturating_add(other.cache_read);
        self.cache_creation = self.cache_creation.saturating_add(other.cache_creation);
        self.reasoning = self.reasoning.saturating_add(other.reasoning);
    }

    fn of(r: &RequestRecord) -> Self {
        let t = &r.tokens;
        Self {
            input: t.input.unwrap_or(0),
            output: t.output.unwrap_or(0),
            cache_read: t.cache_read.unwrap_or(0),
            cache_creation: t.cache_creation.unwrap_or(0),
            reasoning: t.reasoning.unwrap_or(0),
        }
    }
}

/// Counts that are exact since the agent started.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Totals {
    pub requests: u64,
    pub errors: u64,
    pub tokens: Tokens,
    pub cost_usd: Decimal,
    /// Successful requests with no cost (model not in the price table or usage unknown).
    pub unpriced: u64,
}

impl Totals {
    /// One record's contribution.
    fn of(r: &RequestRecord) -> Self {
        let error = is_error(r);
        Self {
            requests: 1,
            errors: u64::from(error),
            tokens: Tokens::of(r),
            cost_usd: r.cost_usd.unwrap_or_default(),
            unpriced: u64::from(r.cost_usd.is_none() && !error),
        }
    }

    fn add(&mut self, other: &Totals) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.tokens.add(&other.tokens);
        self.cost_usd = self.cost_usd.saturating_add(other.cost_usd);
        self.unpriced += other.unpriced;
    }
}

/// What one key saw in one second, or merged over a window.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub counts: Totals,
    pub latency: LogHistogram,
    pub ttfb: LogHistogram,
    /// Streamed responses: time to first token, time per output token.
    pub ttft: LogHistogram,
    pub tpot: LogHistogram,
    pub error_types: BTreeMap<String, u64>,
}

/// A failure: an error status, no response at all, or a provider error body.
pub fn is_error(r: &RequestRecord) -> bool {
    r.status >= 400 || r.status == 0 || r.error_type.is_some()
}

/// The name an error is counted under: the provider's error type, else the status.
fn error_name(r: &RequestRecord) -> String {
    match (&r.error_type, r.status) {
        (Some(t), _) => t.clone(),
        (None, 0) => "no_response".to_string(),
        (None, s) => format!("http_{s}"),
    }
}

impl Stats {
    fn add(&mut self, r: &RequestRecord, counts: &Totals) {
        self.counts.add(counts);
        self.latency.record(r.duration_ms);
        self.ttfb.record(r.ttfb_ms);
        if let Some(t) = r.stream_timing.time_to_first_token_ms {
            self.ttft.record(t);
        }
        if let Some(t) = r.stream_timing.time_per_output_token_ms {
            self.tpot.record(t);
        }
        if counts.errors > 0 {
            let name = error_name(r);
            let known = self.error_types.len() < MAX_ERROR_TYPES || self.error_types.contains_key(&name);
            *self.error_types.entry(if known { name } else { OTHER.to_string() }).or_default() += 1;
        }
    }

    fn merge(&mut self, other: &Stats) {
        self.counts.add(&other.counts);
        self.latency.merge(&other.latency);
        self.ttfb.merge(&other.ttfb);
        self.ttft.merge(&other.ttft);
        self.tpot.merge(&other.tpot);
        for (name, n) in &other.error_types {
            *self.error_types.entry(name.clone()).or_default() += n;
        }
    }
}

/// One key's per-second slots (a ring indexed by second) and totals.
#[derive(Debug)]
struct Series {
    slots: Vec<Option<(u64, Box<Stats>)>>,
    totals: Totals,
}

impl Series {
    fn new(window_seconds: u64) -> Self {
        Self { slots: (0..window_seconds).map(|_| None).collect(), totals: Totals::default() }
    }

    fn add(&mut self, second: u64, r: &RequestRecord) {
        let i = (second % self.slots.len() as u64) as usize;
        let slot = &mut self.slots[i];
        if slot.as_ref().is_none_or(|(s, _)| *s != second) {
            *slot = Some((second, Box::default()));
        }
        let counts = Totals::of(r);
        slot.as_mut().expect("just set").1.add(r, &counts);
        self.totals.add(&counts);
    }

    /// Merges the slots within the window ending at `now_second` into `into`
    /// and frees the ones that fell out of it.
    fn collect(&mut self, now_second: u64, into: &mut Stats) {
        let oldest = (now_second + 1).saturating_sub(self.slots.len() as u64);
        for slot in &mut self.slots {
            match slot {
                Some((s, stats)) if *s >= oldest && *s <= now_second => into.merge(stats),
                Some(_) => *slot = None,
                None => {}
            }
        }
    }
}

/// Session ids (hashed) with the second each was last seen.
type SessionSet = HashMap<u64, u64>;

#[derive(Debug, Default)]
struct App {
    /// provider -> model -> series.
    cells: HashMap<&'static str, HashMap<String, Series>>,
    /// Upstream records by configured provider name.
    upstream: HashMap<String, Series>,
    sessions: SessionSet,
    provider_sessions: HashMap<&'static str, SessionSet>,
}

/// A merged window plus totals for one key.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub window: Stats,
    pub totals: Totals,
    /// Seconds the window really covers (shorter right after start).
    pub window_seconds: f64,
    pub active_sessions: u64,
}

impl Summary {
    pub fn per_second(&self, n: u64) -> f64 {
        n as f64 / self.window_seconds
    }

    pub fn error_rate(&self) -> f64 {
        let c = &self.window.counts;
        if c.requests == 0 { 0.0 } else { c.errors as f64 / c.requests as f64 }
    }
}

/// One (provider, model) row of an application.
#[derive(Debug, Clone)]
pub struct CellView {
    pub provider: &'static str,
    pub model: String,
    pub summary: Summary,
}

/// One upstream provider row of an application.
#[derive(Debug, Clone)]
pub struct UpstreamView {
    pub provider: String,
    pub summary: Summary,
}

/// Everything the stream says about one application at one tick.
#[derive(Debug, Clone)]
pub struct AppView {
    pub application_id: Option<String>,
    pub all: Summary,
    /// The same, restricted to one provider (for subscriptions by provider).
    pub by_provider: Vec<(&'static str, Summary)>,
    pub cells: Vec<CellView>,
    pub upstream: Vec<UpstreamView>,
}

/// The live aggregation. Time is passed in as seconds since start (`now_s`,
/// fractional), so tests control it.
#[derive(Debug)]
pub struct Window {
    settings: WindowSettings,
    apps: HashMap<Option<String>, App>,
    cells: usize,
    sessions: usize,
    hasher: RandomState,
    /// Session ids not tracked because `MAX_SESSIONS` were active.
    pub sessions_untracked: u64,
}

fn touch(set: &mut SessionSet, count: &mut usize, id: u64, second: u64, untracked: &mut u64) {
    if let Some(last) = set.get_mut(&id) {
        *last = second;
    } else if *count < MAX_SESSIONS {
        set.insert(id, second);
        *count += 1;
    } else {
        *untracked += 1;
    }
}

impl Window {
    pub fn new(settings: WindowSettings) -> Self {
        let settings = WindowSettings {
            window_seconds: settings.window_seconds.max(1),
            session_window_seconds: settings.session_window_seconds.max(1),
        };
        Self {
            settings,
            apps: HashMap::new(),
            cells: 0,
            sessions: 0,
            hasher: RandomState::new(),
            sessions_untracked: 0,
        }
    }

    pub fn add(&mut self, r: &RequestRecord, now_s: f64) {
        let second = now_s.max(0.0) as u64;
        let window = self.settings.window_seconds;
        let key = if self.apps.contains_key(&r.application_id) || self.apps.len() < MAX_APPS {
            r.application_id.clone()
        } else {
            Some(OTHER.to_string())
        };
        let app = self.apps.entry(key).or_default();
        if r.side != "client" {
            let name = r.upstream_provider.as_deref().unwrap_or(r.provider);
            let name = if app.upstream.contains_key(name) || app.upstream.len() < MAX_APPS { name } else { OTHER };
            app.upstream.entry(name.to_string()).or_insert_with(|| Series::new(window)).add(second, r);
            return;
        }
        let model = r.model_returned.as_deref().or(r.model_requested.as_deref()).unwrap_or(UNKNOWN_MODEL);
        let models = app.cells.entry(r.provider).or_default();
        let model = if models.contains_key(model) || self.cells < MAX_CELLS { model } else { OTHER };
        let series = match models.get_mut(model) {
            Some(s) => s,
            None => {
                self.cells += 1;
                models.entry(model.to_string()).or_insert_with(|| Series::new(window))
            }
        };
        series.add(second, r);
        if let Some(session) = &r.session_id {
            let id = self.hasher.hash_one(session.as_str());
            touch(&mut app.sessions, &mut self.sessions, id, second, &mut self.sessions_untracked);
            let set = app.provider_sessions.entry(r.provider).or_default();
            touch(set, &mut self.sessions, id, second, &mut self.sessions_untracked);
        }
    }

    /// Views of every application at `now_s`, sorted by application id;
    /// frees expired slots and sessions.
    pub fn views(&mut self, now_s: f64) -> Vec<AppView> {
        let now_s = now_s.max(0.0);
        let now_second = now_s as u64;
        let w = self.settings.window_seconds;
        // The window is the last w-1 whole seconds plus the current partial one.
        let covered = (w as f64 - 1.0 + now_s.fract()).min(now_s).max(0.001);
        let session_oldest = (now_second + 1).saturating_sub(self.settings.session_window_seconds);
        let mut out = Vec::with_capacity(self.apps.len());
        for (id, app) in &mut self.apps {
            let before = app.sessions.len() + app.provider_sessions.values().map(HashMap::len).sum::<usize>();
            app.sessions.retain(|_, last| *last >= session_oldest);
            for set in app.provider_sessions.values_mut() {
                set.retain(|_, last| *last >= session_oldest);
            }
            let after = app.sessions.len() + app.provider_sessions.values().map(HashMap::len).sum::<usize>();
            self.sessions -= before - after;

            let blank = || Summary { window_seconds: covered, ..Summary::default() };
            let mut all = blank();
            all.active_sessions = app.sessions.len() as u64;
            let mut by_provider = Vec::new();
            let mut cells = Vec::new();
            for (provider, models) in &mut app.cells {
                let mut p = blank();
                p.active_sessions = app.provider_sessions.get(provider).map_or(0, |s| s.len() as u64);
                for (model, series) in models.iter_mut() {
                    let mut c = blank();
                    series.collect(now_second, &mut c.window);
                    c.totals = series.totals.clone();
                    p.window.merge(&c.window);
                    p.totals.add(&c.totals);
                    cells.push(CellView { provider, model: model.clone(), summary: c });
                }
                all.window.merge(&p.window);
                all.totals.add(&p.totals);
                by_provider.push((*provider, p));
            }
            let mut upstream = Vec::new();
            for (provider, series) in &mut app.upstream {
                let mut u = blank();
                series.collect(now_second, &mut u.window);
                u.totals = series.totals.clone();
                upstream.push(UpstreamView { provider: provider.clone(), summary: u });
            }
            by_provider.sort_by_key(|(p, _)| *p);
            cells.sort_by(|a, b| (a.provider, &a.model).cmp(&(b.provider, &b.model)));
            upstream.sort_by(|a, b| a.provider.cmp(&b.provider));
            out.push(AppView { application_id: id.clone(), all, by_provider, cells, upstream });
        }
        out.sort_by(|a, b| a.application_id.cmp(&b.application_id));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::RecordBuilder;

    pub fn record(app: &str, provider: &'static str, model: &str, status: u16, duration_ms: f64) -> RequestRecord {
        RecordBuilder::new()
            .provider(provider)
            .model(model)
            .status(status)
            .error_type((status == 429).then(|| "rate_limit_exceeded".to_string()))
            .tokens(12, 34)
            .ttfb_ms(duration_ms / 2.0)
            .duration_ms(duration_ms)
            .cost_usd((status == 200).then(|| Decimal::new(222, 7)))
            .application_id(Some(app.into()))
            .build()
    }

    fn settings() -> WindowSettings {
        WindowSettings { window_seconds: 10, session_window_seconds: 60 }
    }

    #[test]
    fn counts_tokens_cost_and_errors_are_exact() {
        let mut w = Window::new(settings());
        for i in 0..70 {
            w.add(&record("a", "openai", "gpt-4o-mini", if i % 7 == 0 { 429 } else { 200 }, 10.0), 20.5);
        }
        for _ in 0..5 {
            w.add(&record("a", "anthropic", "claude-sonnet-4", 529, 100.0), 21.0);
        }
        w.add(&record("b", "openai", "gpt-4o-mini", 200, 10.0), 21.0);
        let views = w.views(21.5);
        assert_eq!(views.len(), 2);
        let a = &views[0];
        assert_eq!(a.application_id.as_deref(), Some("a"));
        assert_eq!(a.all.window.counts.requests, 75);
        assert_eq!(a.all.window.counts.errors, 15);
        assert_eq!(a.all.totals.requests, 75);
        assert_eq!(a.all.window.counts.tokens.input, 75 * 12);
        assert_eq!(a.all.window.counts.cost_usd, Decimal::new(222, 7) * Decimal::from(60));
        assert_eq!(a.all.window.error_types["rate_limit_exceeded"], 10);
        assert_eq!(a.all.window.error_types["http_529"], 5);
        assert_eq!(a.cells.len(), 2);
        let (provider, openai) = &a.by_provider[1];
        assert_eq!((*provider, openai.window.counts.requests, openai.window.counts.errors), ("openai", 70, 10));
        // The window covers 9.5 s so far: 9 whole seconds and half of the current one.
        assert!((a.all.window_seconds - 9.5).abs() < 1e-9);
        assert!((a.all.per_second(75) - 75.0 / 9.5).abs() < 1e-9);
        assert!((a.all.error_rate() - 0.2).abs() < 1e-12);
    }

    #[test]
    fn the_window_slides_but_totals_stay() {
        let mut w = Window::new(settings());
        for s in 0..30 {
            for _ in 0..=s {
                w.add(&record("a", "openai", "m", 200, 5.0), s as f64 + 0.25);
            }
        }
        let v = &w.views(29.5)[0];
        // Seconds 20..=29 are inside: 21 + 22 + ... + 30 requests.
        assert_eq!(v.all.window.counts.requests, (21..=30).sum::<u64>());
        assert_eq!(v.all.totals.requests, (1..=30).sum::<u64>());
        let later = &w.views(100.0)[0];
        assert_eq!(later.all.window.counts.requests, 0, "an idle application decays to zero");
        assert_eq!(later.all.totals.requests, (1..=30).sum::<u64>());
        assert_eq!(later.all.window.latency.quantile(0.99), None);
    }

    #[test]
    fn percentiles_come_from_the_histogram_within_its_error() {
        let mut w = Window::new(settings());
        for i in 1..=1000 {
            w.add(&record("a", "openai", "m", 200, f64::from(i)), 5.0);
        }
        let v = &w.views(5.0)[0];
        let p99 = v.all.window.latency.quantile(0.99).unwrap();
        let p50 = v.all.window.ttfb.quantile(0.5).unwrap();
        let err = super::super::histogram::RELATIVE_ERROR;
        assert!((p99 / 990.0 - 1.0).abs() <= err, "{p99}");
        assert!((p50 / 250.0 - 1.0).abs() <= err, "{p50}");
    }

    #[test]
    fn sessions_are_distinct_recent_and_bounded_per_provider() {
        let mut w = Window::new(settings());
        for i in 0..10 {
            let mut r = record("a", if i < 6 { "openai" } else { "anthropic" }, "m", 200, 1.0);
            r.session_id = Some(format!("s{}", i % 4));
            w.add(&r, 1.0);
        }
        let v = &w.views(2.0)[0];
        assert_eq!(v.all.active_sessions, 4);
        let sessions: BTreeMap<_, _> = v.by_provider.iter().map(|(p, s)| (*p, s.active_sessions)).collect();
        assert_eq!(sessions["openai"], 4);
        assert_eq!(sessions["anthropic"], 4, "s2, s3, s0 and s1 (i = 6..9)");
        assert_eq!(w.views(61.5)[0].all.active_sessions, 0, "older than the session window");
        assert_eq!(w.sessions, 0);
    }

    #[test]
    fn upstream_records_are_kept_apart() {
        let mut w = Window::new(settings());
        let mut up = record("a", "openai", "m", 200, 3.0);
        up.side = "upstream";
        up.upstream_provider = Some("openai-eu".into());
        w.add(&up, 1.0);
        w.add(&record("a", "openai", "m", 200, 4.0), 1.0);
        let v = &w.views(1.5)[0];
        assert_eq!(v.all.totals.requests, 1, "a proxied request counts once");
        assert_eq!(v.upstream.len(), 1);
        assert_eq!(v.upstream[0].provider, "openai-eu");
        assert_eq!(v.upstream[0].summary.totals.requests, 1);
    }

    #[test]
    fn keys_are_bounded() {
        let mut w = Window::new(settings());
        for i in 0..MAX_APPS + 5 {
            w.add(&record(&format!("app{i}"), "openai", "m", 200, 1.0), 1.0);
        }
        for i in 0..MAX_CELLS + 10 {
            w.add(&record("app0", "openai", &format!("model{i}"), 200, 1.0), 1.0);
        }
        let views = w.views(1.5);
        assert_eq!(views.len(), MAX_APPS + 1);
        let other = views.iter().find(|v| v.application_id.as_deref() == Some(OTHER)).unwrap();
        assert_eq!(other.all.totals.requests, 5);
        assert!(w.cells <= MAX_CELLS + 1, "{}", w.cells);
        let total: u64 = views.iter().map(|v| v.all.totals.requests).sum();
        assert_eq!(total, (MAX_APPS + 5 + MAX_CELLS + 10) as u64, "nothing is lost by folding");
    }
}
