//! The live path: request records from the record bus are aggregated per
//! second (`window`), and every tick the latest snapshot — messages already
//! serialised (`message`) — is published on a `watch` channel that the
//! WebSocket clients (`stream`) read. A client only ever holds the newest
//! snapshot, so a slow one skips updates instead of growing memory, and the
//! aggregation never waits for a client. Also the dashboard page
//! (`dashboard`). The HTTP server, its authentication and guards are in
//! `crate::http`.

pub mod dashboard;
pub mod histogram;
pub mod message;
pub mod stream;
pub mod window;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use crate::{agent_stats::AgentStats, records::RequestRecord};
use message::{Health, Stamp};
use window::{Window, WindowSettings};

/// `[stream]` in the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Time between two updates, in milliseconds (100..=60000).
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Seconds the rates and percentiles cover (1..=3600).
    #[serde(default = "default_window_seconds")]
    pub window_seconds: u64,
    /// A session counts as active when a request of it finished this recently.
    #[serde(default = "default_session_window_seconds")]
    pub session_window_seconds: u64,
    /// Concurrent stream clients at most; more are refused with 503.
    #[serde(default = "default_max_clients")]
    pub max_clients: u64,
    /// A client that cannot take one message for this long is disconnected.
    #[serde(default = "default_slow_client_timeout_ms")]
    pub slow_client_timeout_ms: u64,
    /// Concurrent stream clients from one IP address at most [default:
    /// three quarters of `max_clients`], so one client cannot take them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_clients_per_address: Option<u64>,
}

pub fn default_interval_ms() -> u64 {
    1000
}
pub fn default_window_seconds() -> u64 {
    10
}
pub fn default_session_window_seconds() -> u64 {
    300
}
pub fn default_max_clients() -> u64 {
    1000
}
pub fn default_slow_client_timeout_ms() -> u64 {
    10_000
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            interval_ms: default_interval_ms(),
            window_seconds: default_window_seconds(),
            session_window_seconds: default_session_window_seconds(),
            max_clients: default_max_clients(),
            slow_client_timeout_ms: default_slow_client_timeout_ms(),
            max_clients_per_address: None,
        }
    }
}

impl StreamConfig {
    /// Checks the ranges; the error says which setting to change.
    pub fn validate(self) -> anyhow::Result<Self> {
        let check = |name: &str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(anyhow::anyhow!("[stream] {name} = {v}: use a value between {lo} and {hi}"))
            }
        };
        check("interval_ms", self.interval_ms, 100, 60_000)?;
        check("window_seconds", self.window_seconds, 1, 3600)?;
        check("session_window_seconds", self.session_window_seconds, 1, 86_400)?;
        check("max_clients", self.max_clients, 1, 100_000)?;
        check("slow_client_timeout_ms", self.slow_client_timeout_ms, 100, 600_000)?;
        if let Some(per) = self.max_clients_per_address {
            check("max_clients_per_address", per, 1, self.max_clients)?;
        }
        Ok(self)
    }

    /// Stream clients one IP address may hold.
    pub fn clients_per_address(&self) -> u64 {
        self.max_clients_per_address.unwrap_or((self.max_clients * 3 / 4).max(1))
    }
}

/// One tick's messages, shared by every client.
#[derive(Debug)]
pub struct Snapshot {
    pub seq: u64,
    /// When the aggregator published it (for the fan-out benchmark).
    pub published: Instant,
    pub health: Utf8Bytes,
    pub apps: Vec<AppMessages>,
}

/// An application's `metrics.update`, whole and per provider.
#[derive(Debug)]
pub struct AppMessages {
    pub application_id: Option<String>,
    pub all: Utf8Bytes,
    pub by_provider: Vec<(&'static str, Utf8Bytes)>,
}

impl Snapshot {
    fn empty() -> Self {
        Self { seq: 0, published: Instant::now(), health: Utf8Bytes::from_static("{}"), apps: Vec::new() }
    }
}

/// Counters of the stream itself, reported in `agent.health`.
#[derive(Debug, Default)]
pub struct StreamCounters {
    pub clients: AtomicU64,
    pub dropped_slow: AtomicU64,
    pub rejected: AtomicU64,
    pub updates_skipped: AtomicU64,
    pub records_dropped: AtomicU64,
}

/// Host/process metrics for `agent.health`'s `system` object (a hook for the
/// system metrics collector).
pub type SystemSource = Box<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Where the agent's own health comes from.
#[derive(Default)]
pub struct HealthSources {
    pub stats: Option<Arc<AgentStats>>,
    /// Kernel capture drops (`CounterMaps::capture_drops`).
    pub capture_drops: Option<Box<dyn Fn() -> u64 + Send + Sync>>,
    pub audit: bool,
    pub sample_every: u32,
    pub system: Option<SystemSource>,
}

/// The aggregation task's inputs and its published output.
pub struct Live {
    pub config: StreamConfig,
    pub counters: Arc<StreamCounters>,
    pub updates: watch::Receiver<Arc<Snapshot>>,
    publisher: watch::Sender<Arc<Snapshot>>,
}

impl Live {
    pub fn new(config: StreamConfig) -> Self {
        let (publisher, updates) = watch::channel(Arc::new(Snapshot::empty()));
        Self { config, counters: Arc::default(), updates, publisher }
    }

    /// The stream's routes (`/api/v1/metrics/stream`) and the dashboard (`/`).
    pub fn routes(&self, stop: watch::Receiver<bool>) -> axum::Router {
        stream::routes(stream::StreamState {
            updates: self.updates.clone(),
            counters: self.counters.clone(),
            max_clients: self.config.max_clients,
            max_clients_per_address: self.config.clients_per_address(),
            per_address: Arc::default(),
            slow_client_timeout: Duration::from_millis(self.config.slow_client_timeout_ms),
            stop,
        })
        .merge(dashboard::routes())
    }

    /// Aggregates records and publishes a snapshot every interval until `stop`.
    pub async fn run(
        self,
        mut records: broadcast::Receiver<Arc<RequestRecord>>,
        health: HealthSources,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut window = Window::new(WindowSettings {
            window_seconds: self.config.window_seconds,
            session_window_seconds: self.config.session_window_seconds,
        });
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(self.config.interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut seq = 0u64;
        let mut bus_open = true;
        loop {
            tokio::select! {
                record = records.recv(), if bus_open => match record {
                    Ok(r) => window.add(&r, start.elapsed().as_secs_f64()),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        self.counters.records_dropped.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(broadcast::error::RecvError::Closed) => bus_open = false,
                },
                _ = tick.tick() => {
                    seq += 1;
                    let snapshot = build_snapshot(&mut window, start, seq, &health, &self.counters);
                    self.publisher.send_replace(Arc::new(snapshot));
                }
                _ = stop.changed() => break,
            }
        }
    }
}

fn build_snapshot(
    window: &mut Window,
    start: Instant,
    seq: u64,
    sources: &HealthSources,
    counters: &StreamCounters,
) -> Snapshot {
    let now = start.elapsed().as_secs_f64();
    let unix_ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let timestamp = message::rfc3339_millis(unix_ms);
    let stamp = Stamp { timestamp: &timestamp, seq };
    let apps = window
        .views(now)
        .iter()
        .map(|view| AppMessages {
            application_id: view.application_id.clone(),
            all: message::update(&stamp, view, None).into(),
            by_provider: view
                .by_provider
                .iter()
                .map(|(p, _)| (*p, message::update(&stamp, view, Some(p)).into()))
                .collect(),
        })
        .collect();
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let stats = sources.stats.as_deref();
    let health = Health {
        uptime_seconds: (now * 1000.0).round() / 1000.0,
        audit: sources.audit,
        capture_enabled: stats.is_some_and(|s| load(&s.capture_enabled) != 0),
        capture_breaker_trips: stats.map_or(0, |s| load(&s.capture_breaker_trips)),
        capture_dropped_events: sources.capture_drops.as_ref().map_or(0, |f| f()),
        // The adaptive interval in force (the configured floor before the audit task starts).
        sample_every: stats
            .map(|s| load(&s.capture_sample_every) as u32)
            .filter(|n| *n > 0)
            .unwrap_or(sources.sample_every),
        audit_records: stats.map_or(0, |s| load(&s.audit_records)),
        records_dropped: load(&counters.records_dropped),
        stream_clients: load(&counters.clients),
        stream_clients_dropped_slow: load(&counters.dropped_slow),
        stream_clients_rejected: load(&counters.rejected),
        stream_updates_skipped: load(&counters.updates_skipped),
        sessions_untracked: window.sessions_untracked,
    };
    let system = sources.system.as_ref().map(|f| f());
    Snapshot { seq, published: Instant::now(), health: message::health(&stamp, &health, system.as_ref()).into(), apps }
}
