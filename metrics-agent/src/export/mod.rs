//! The export router: every interval it takes one `Snapshot` of every
//! metric of the catalogue (`catalog.rs`) from its sources — the audit
//! aggregates, the kernel counters, the agent's statistics, the system
//! metrics and the exporters' own health — and offers it to every push
//! exporter (OTLP, DogStatsD, Datadog series API). Each exporter has its own bounded queue
//! and task: a slow, failing or unreachable exporter fills only its own queue,
//! and the snapshots it cannot take are dropped and counted
//! (`metrics_agent_exporter_dropped_total{exporter,reason}`); failed batches
//! are retried with exponential backoff. Prometheus pulls the same series at
//! scrape time (`prometheus`). Snapshots are cumulative, so a dropped batch
//! loses resolution, never counts: delta protocols (Datadog) compute deltas
//! against the last batch they delivered.

pub mod agent;
pub mod audit_metrics;
pub mod backends;
pub mod catalog;
pub mod common_settings;
#[cfg(test)]
mod conformance;
pub mod datadog;
pub mod delta;
pub mod hot_path;
pub mod http_server;
pub mod model;
pub mod otlp;
pub mod prometheus;
mod redirects;
pub mod retry;
pub mod settings;
pub mod storage;
pub mod system;

use std::{
    borrow::Cow,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
    time::Instant,
};

use self::{
    audit_metrics::AuditMetrics,
    backends::Start,
    hot_path::HotPathSource,
    model::{Series, Snapshot, Value},
    retry::{HealthLog, Retries},
    settings::{Delivery, ExportSettings},
    system::SystemMetrics,
};
use crate::{agent_stats::AgentStats, http::server::ServerStats, store::stats::StorageStats};

/// Why an export attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Worth retrying: timeout, connection refused, 429, 5xx.
    #[error("{0}")]
    Retryable(String),
    /// Retrying cannot help (400, 401, 403, 413...): the batch is dropped.
    #[error("{0}")]
    Permanent(String),
}

/// One push exporter. `export` sends one snapshot; it is called again with
/// the same snapshot after a retryable failure.
pub trait Exporter: Send + 'static {
    fn export(&mut self, snapshot: &Snapshot) -> impl Future<Output = Result<(), ExportError>> + Send;

    /// Called when delivery of `snapshot` is given up; returns how many of
    /// its raw samples were not delivered (all of them unless the exporter
    /// sent part of the batch).
    fn abandon(&mut self, snapshot: &Snapshot) -> u64 {
        snapshot.sample_count()
    }

    /// True when it needs the raw distribution samples (DogStatsD `d`
    /// lines): the router then buffers them and hands them to it.
    fn takes_samples(&self) -> bool {
        false
    }
}

/// An exporter's delivery counters, exported as metrics.
#[derive(Debug, Default)]
pub struct ExporterStats {
    pub batches: AtomicU64,
    pub failures: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_send_failed: AtomicU64,
    pub queued: AtomicU64,
    /// Raw samples lost with the snapshots dropped for each reason.
    pub samples_dropped_queue_full: AtomicU64,
    pub samples_dropped_send_failed: AtomicU64,
}

/// A push exporter's health, reported as `metrics_agent_exporter_*{exporter}`.
#[derive(Debug, Clone)]
pub struct Health {
    pub name: &'static str,
    pub stats: Arc<ExporterStats>,
    /// It takes raw samples: their drops are reported too.
    pub takes_samples: bool,
}

/// The metric sources a snapshot is made of; shared by the router and the
/// Prometheus collector (and usable by the live stream).
#[derive(Debug)]
pub struct Source {
    pub start_unix_nanos: u64,
    pub audit: Arc<AuditMetrics>,
    pub hot_path: Option<HotPathSource>,
    pub agent: Option<Arc<AgentStats>>,
    /// The agent's HTTP server.
    pub http: Option<Arc<ServerStats>>,
    /// Storage, when it is on.
    pub storage: Option<Arc<StorageStats>>,
    pub system: Option<Arc<SystemMetrics>>,
    pub exporters: Vec<Health>,
}

impl Source {
    /// A source of the audit aggregates and the given exporters' health
    /// only (tests and benchmarks).
    pub fn of_audit(audit: Arc<AuditMetrics>, exporters: Vec<Health>) -> Self {
        Self {
            start_unix_nanos: 1,
            audit,
            hot_path: None,
            agent: None,
            http: None,
            storage: None,
            system: None,
            exporters,
        }
    }

    /// Every series now; `samples` takes the buffered raw samples.
    pub fn snapshot(&self, samples: bool) -> Snapshot {
        Snapshot {
            start_unix_nanos: self.start_unix_nanos,
            time_unix_nanos: model::now_unix_nanos(),
            series: self.series(true),
            samples: if samples { self.audit.take_samples() } else { Vec::new() },
        }
    }

    /// The series of every source; with `all` false only the kernel counters
    /// and the agent's own statistics, HTTP server and storage (`/metrics`
    /// with Prometheus export off).
    pub fn series(&self, all: bool) -> Vec<Series> {
        let mut series = Vec::with_capacity(256);
        if let Some(h) = &self.hot_path {
            h.series(&mut series);
        }
        if let Some(stats) = &self.agent {
            agent::append(stats, agent::agent_cpu_seconds(), &mut series);
        }
        if let Some(stats) = &self.http {
            http_server::append(stats, &mut series);
        }
        if let Some(stats) = &self.storage {
            storage::append(stats, &mut series);
        }
        if !all {
            return series;
        }
        self.audit.series(&mut series);
        if let Some(system) = &self.system {
            series.extend(system.latest());
        }
        self.exporter_series(&mut series);
        debug_assert!(
            series.iter().all(|s| s.labels.iter().all(|(k, _)| s.desc.labels.contains(k))),
            "a series carries a label its catalogue entry does not list"
        );
        series
    }

    fn exporter_series(&self, out: &mut Vec<Series>) {
        use catalog as m;
        for h in &self.exporters {
            let (name, s) = (h.name, &h.stats);
            let l = |extra: Option<&'static str>| {
                let mut v = vec![("exporter", Cow::Borrowed(name))];
                if let Some(reason) = extra {
                    v.push(("reason", Cow::Borrowed(reason)));
                }
                v
            };
            let int = |a: &AtomicU64| Value::Int(a.load(Ordering::Relaxed));
            out.push(Series { desc: &m::EXPORTER_BATCHES, labels: l(None), value: int(&s.batches) });
            out.push(Series { desc: &m::EXPORTER_FAILURES, labels: l(None), value: int(&s.failures) });
            out.push(Series {
                desc: &m::EXPORTER_DROPPED,
                labels: l(Some("queue_full")),
                value: int(&s.dropped_queue_full),
            });
            out.push(Series {
                desc: &m::EXPORTER_DROPPED,
                labels: l(Some("send_failed")),
                value: int(&s.dropped_send_failed),
            });
            out.push(Series { desc: &m::EXPORTER_QUEUE, labels: l(None), value: int(&s.queued) });
            if h.takes_samples {
                for (reason, n) in [
                    ("buffer_full", self.audit.samples_dropped()),
                    ("queue_full", s.samples_dropped_queue_full.load(Ordering::Relaxed)),
                    ("send_failed", s.samples_dropped_send_failed.load(Ordering::Relaxed)),
                ] {
                    out.push(Series {
                        desc: &m::EXPORTER_SAMPLES_DROPPED,
                        labels: l(Some(reason)),
                        value: Value::Int(n),
                    });
                }
            }
        }
    }
}

/// What the agent hands to the exporters (built in `run`).
pub struct Inputs {
    pub settings: ExportSettings,
    pub hot_path: HotPathSource,
    pub stats: Arc<AgentStats>,
    pub conns: Arc<std::sync::Mutex<aya::maps::HashMap<aya::maps::MapData, u64, metrics_common::conn::ConnState>>>,
    pub rings: Vec<system::RingFill>,
    pub provider_addresses: crate::upstream_addresses::AddressTable,
    /// The agent's HTTP server's statistics.
    pub http: Arc<ServerStats>,
    /// Storage's statistics, when storage is on.
    pub storage: Option<Arc<StorageStats>>,
}

/// The running export side: the shared source (for the live stream) and
/// the tasks to wait for at shutdown.
pub struct Started {
    pub source: Arc<Source>,
    /// One line per push exporter, for the start-up log (said once the agent
    /// is ready, so a start-up error stays the only line).
    pub summary: Vec<String>,
    tasks: Vec<JoinHandle<()>>,
}

impl Started {
    /// Waits for the aggregator, the system collector and the router (which
    /// flushes the exporters) after `stop`.
    pub async fn finish(self) {
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(8), task).await;
        }
    }
}

/// Subscribes to the record bus (call before the audit task starts), starts
/// the aggregator, the system collector and the exporters: the push
/// exporters get a route, the pull ones (Prometheus) register on `registry`.
pub fn start(
    inputs: Inputs,
    records: &crate::records::RecordBus,
    registry: &mut prometheus_client::registry::Registry,
    stop: watch::Receiver<bool>,
) -> Result<Started, ExportError> {
    let Inputs { settings, hot_path, stats, conns, rings, provider_addresses, http, storage } = inputs;
    let mut planned = Vec::new();
    let mut pulls = Vec::new();
    let mut consumers = Vec::new();
    for exporter in &settings.exporters {
        log::debug!("starting exporter {}", exporter.name());
        match exporter.start()? {
            Start::Push(p) => planned.push(p),
            Start::Pull(register) => pulls.push(register),
            Start::Records(consume) => consumers.push((exporter.name(), consume)),
        }
    }
    let mut limits = settings.limits;
    if planned.iter().any(|p| p.takes_samples) {
        limits.max_samples = RAW_SAMPLES;
    }
    let audit = Arc::new(AuditMetrics::new(limits));
    let mut tasks = Vec::new();
    {
        let (audit, rx, stop) = (audit.clone(), records.subscribe(), stop.clone());
        tasks.push(tokio::spawn(async move { audit.run(rx, stop).await }));
    }
    let audit_stats = stats.clone();
    let bus = records.downgrade();
    let a = audit.clone();
    let tables = vec![
        system::Table {
            name: "audit_connections",
            capacity: Some(crate::audit::pipeline::MAX_CONNECTIONS as u64),
            entries: Box::new(move || audit_stats.audit_connections.load(Ordering::Relaxed)),
        },
        system::Table {
            name: "record_bus",
            capacity: Some(crate::records::CAPACITY as u64),
            entries: Box::new(move || bus.upgrade().map(|b| b.len() as u64).unwrap_or(0)),
        },
        system::Table {
            name: "export_series",
            capacity: Some(settings.limits.max_series as u64),
            entries: Box::new(move || a.series_count() as u64),
        },
        system::Table {
            name: "provider_addresses",
            capacity: None,
            entries: Box::new(move || provider_addresses.read().map(|t| t.len() as u64).unwrap_or(0)),
        },
    ];
    let sources = system::Sources { stats: Some(stats.clone()), rings, conns: Some(conns), tables };
    let system = Arc::new(SystemMetrics::new(settings.system.clone(), sources));
    tasks.push(tokio::spawn(system.clone().run(stop.clone())));
    let source = Arc::new(Source {
        start_unix_nanos: model::now_unix_nanos(),
        audit,
        hot_path: Some(hot_path),
        agent: Some(stats.clone()),
        http: Some(http),
        storage,
        system: Some(system),
        exporters: planned.iter().map(Planned::health).collect(),
    });
    for register in pulls {
        register(source.clone(), registry);
    }
    let mut summary: Vec<String> =
        planned.iter().map(|p| format!("exporting to {} every {:?}", p.name, p.delivery.interval)).collect();
    for (name, consume) in consumers {
        let feed = backends::RecordFeed { records: records.subscribe(), stats: stats.clone(), stop: stop.clone() };
        tasks.push(consume(feed));
        summary.push(format!("exporting {name}"));
    }
    tasks.push(tokio::spawn(run(source.clone(), planned, stop)));
    Ok(Started { source, summary, tasks })
}

/// A push exporter's end of the router.
struct Route {
    name: &'static str,
    interval: Duration,
    next_due: Instant,
    queue: mpsc::Sender<Arc<Snapshot>>,
    stats: Arc<ExporterStats>,
    /// Takes the raw distribution samples (DogStatsD).
    samples: bool,
}

/// Raw samples buffered between two snapshots when an exporter takes them.
const RAW_SAMPLES: usize = 100_000;

/// Spawns an exporter's task on its queue.
type StartTask = Box<dyn FnOnce(mpsc::Receiver<Arc<Snapshot>>, watch::Receiver<bool>) -> JoinHandle<()> + Send>;

/// Push exporters to start, with their names and delivery settings.
pub struct Planned {
    pub name: &'static str,
    pub delivery: Delivery,
    pub stats: Arc<ExporterStats>,
    /// The exporter takes raw samples (`Exporter::takes_samples`).
    pub takes_samples: bool,
    start: StartTask,
}

impl Planned {
    pub fn new<E: Exporter>(name: &'static str, delivery: Delivery, exporter: E) -> Self {
        let stats = Arc::new(ExporterStats::default());
        let s = stats.clone();
        Self {
            name,
            delivery,
            stats,
            takes_samples: exporter.takes_samples(),
            start: Box::new(move |queue, stop| tokio::spawn(deliver(name, exporter, queue, s, delivery, stop))),
        }
    }

    pub fn health(&self) -> Health {
        Health { name: self.name, stats: self.stats.clone(), takes_samples: self.takes_samples }
    }
}

/// Starts the exporters' tasks and the router; returns when `stop` turns
/// true and the exporters have flushed (within a few seconds).
pub async fn run(source: Arc<Source>, planned: Vec<Planned>, stop: watch::Receiver<bool>) {
    let mut routes = Vec::new();
    let mut tasks = Vec::new();
    let now = Instant::now();
    for p in planned {
        let (tx, rx) = mpsc::channel(p.delivery.queue_batches);
        tasks.push((p.name, (p.start)(rx, stop.clone())));
        routes.push(Route {
            name: p.name,
            interval: p.delivery.interval,
            next_due: now + p.delivery.interval,
            queue: tx,
            stats: p.stats,
            samples: p.takes_samples,
        });
    }
    route(&source, &mut routes, stop).await;
    // A final snapshot for each exporter, then wait for them to finish.
    offer(&source, &mut routes.iter_mut().collect::<Vec<_>>());
    drop(routes);
    for (name, task) in tasks {
        if tokio::time::timeout(Duration::from_secs(5), task).await.is_err() {
            log::warn!("exporter {name} did not finish its last batch within 5 s");
        }
    }
}

async fn route(source: &Source, routes: &mut [Route], mut stop: watch::Receiver<bool>) {
    if routes.is_empty() {
        let _ = stop.changed().await;
        return;
    }
    loop {
        let due = routes.iter().map(|r| r.next_due).min().expect("at least one route");
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep_until(due) => {}
        }
        let now = Instant::now();
        let mut ready: Vec<&mut Route> = routes.iter_mut().filter(|r| r.next_due <= now).collect();
        for r in ready.iter_mut() {
            r.next_due += r.interval;
            if r.next_due <= now {
                r.next_due = now + r.interval;
            }
        }
        offer(source, &mut ready);
    }
}

/// Builds the snapshot once and offers it to each route without waiting.
fn offer(source: &Source, routes: &mut [&mut Route]) {
    if routes.is_empty() {
        return;
    }
    let base = Arc::new(source.snapshot(false));
    for r in routes.iter_mut() {
        let snapshot = if r.samples {
            let mut s = (*base).clone();
            s.samples = source.audit.take_samples();
            Arc::new(s)
        } else {
            base.clone()
        };
        match r.queue.try_send(snapshot) {
            Ok(()) => {
                r.stats.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                r.stats.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
                let samples = e.into_inner().sample_count();
                r.stats.samples_dropped_queue_full.fetch_add(samples, Ordering::Relaxed);
                log::debug!("exporter {}: queue full, snapshot dropped", r.name);
            }
        }
    }
}

/// One exporter's task: sends each queued snapshot, retrying with backoff.
async fn deliver<E: Exporter>(
    name: &'static str,
    mut exporter: E,
    mut queue: mpsc::Receiver<Arc<Snapshot>>,
    stats: Arc<ExporterStats>,
    delivery: Delivery,
    mut stop: watch::Receiver<bool>,
) {
    let mut health = HealthLog::new(name);
    // The queue closes after the router's final snapshot: then the task ends.
    while let Some(snapshot) = queue.recv().await {
        stats.queued.fetch_sub(1, Ordering::Relaxed);
        let mut retries = Retries::new(delivery.max_retries);
        loop {
            match retry::attempt(delivery.timeout, exporter.export(&snapshot)).await {
                Ok(()) => {
                    stats.batches.fetch_add(1, Ordering::Relaxed);
                    health.delivered();
                    break;
                }
                Err(e) => {
                    stats.failures.fetch_add(1, Ordering::Relaxed);
                    health.failed(&e);
                    let stopping = *stop.borrow();
                    if !retries.again(&e, stopping, &mut stop).await {
                        stats.dropped_send_failed.fetch_add(1, Ordering::Relaxed);
                        let lost = exporter.abandon(&snapshot);
                        stats.samples_dropped_send_failed.fetch_add(lost, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records what it was asked to send; fails or hangs on request.
    #[derive(Clone, Default)]
    struct Probe {
        sent: Arc<Mutex<Vec<u64>>>,
        fail: Arc<std::sync::atomic::AtomicBool>,
        hang: bool,
        /// Takes raw samples, as DogStatsD does.
        samples: bool,
    }

    impl Exporter for Probe {
        async fn export(&mut self, s: &Snapshot) -> Result<(), ExportError> {
            if self.hang {
                std::future::pending::<()>().await;
            }
            if self.fail.load(Ordering::Relaxed) {
                return Err(ExportError::Retryable("refused".into()));
            }
            self.sent.lock().unwrap().push(s.time_unix_nanos);
            Ok(())
        }

        fn takes_samples(&self) -> bool {
            self.samples
        }
    }

    fn source() -> Arc<Source> {
        Arc::new(Source::of_audit(Arc::new(AuditMetrics::default()), Vec::new()))
    }

    fn delivery(ms: u64) -> Delivery {
        Delivery {
            interval: Duration::from_millis(ms),
            timeout: Duration::from_millis(100),
            queue_batches: 2,
            max_retries: 1,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_exporter_does_not_delay_another() {
        let good = Probe::default();
        let bad = Probe { hang: true, ..Probe::default() };
        let planned =
            vec![Planned::new("good", delivery(1000), good.clone()), Planned::new("bad", delivery(1000), bad)];
        let bad_stats = planned[1].stats.clone();
        let good_stats = planned[0].stats.clone();
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(source(), planned, stop_rx));
        tokio::time::sleep(Duration::from_millis(20_500)).await;
        assert_eq!(good.sent.lock().unwrap().len(), 20, "one batch per second for the healthy exporter");
        assert_eq!(good_stats.dropped_queue_full.load(Ordering::Relaxed), 0);
        let dropped = bad_stats.dropped_queue_full.load(Ordering::Relaxed)
            + bad_stats.dropped_send_failed.load(Ordering::Relaxed);
        assert!(dropped >= 10, "the hanging exporter's batches are dropped and counted: {dropped}");
        assert!(bad_stats.queued.load(Ordering::Relaxed) <= 2, "its queue stays bounded");
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_retried_with_backoff_then_recover() {
        let p = Probe::default();
        p.fail.store(true, Ordering::Relaxed);
        let planned = vec![Planned::new("p", delivery(10_000), p.clone())];
        let stats = planned[0].stats.clone();
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(source(), planned, stop_rx));
        tokio::time::sleep(Duration::from_millis(10_200)).await;
        // First attempt at 10 s failed; retry after 0.5 s.
        assert_eq!(stats.failures.load(Ordering::Relaxed), 1);
        p.fail.store(false, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(p.sent.lock().unwrap().len(), 1, "the retry delivered the batch");
        assert_eq!(stats.batches.load(Ordering::Relaxed), 1);
        assert_eq!(stats.dropped_send_failed.load(Ordering::Relaxed), 0);
        stop_tx.send(true).unwrap();
        task.await.unwrap();
        assert_eq!(p.sent.lock().unwrap().len(), 2, "a final snapshot is flushed at stop");
    }

    /// A source whose audit metrics keep raw samples (as with DogStatsD on).
    fn sampling_source(exporters: Vec<Health>) -> Arc<Source> {
        let limits = audit_metrics::Limits { max_samples: 1000, ..audit_metrics::Limits::default() };
        Arc::new(Source::of_audit(Arc::new(AuditMetrics::new(limits)), exporters))
    }

    fn samples_dropped(source: &Source, reason: &str) -> f64 {
        source
            .snapshot(false)
            .series
            .iter()
            .filter(|s| std::ptr::eq(s.desc, &catalog::EXPORTER_SAMPLES_DROPPED))
            .filter(|s| s.labels.iter().any(|(k, v)| *k == "reason" && v == reason))
            .map(|s| s.value.as_f64())
            .sum()
    }

    #[tokio::test(start_paused = true)]
    async fn samples_of_a_batch_that_failed_are_counted() {
        let p = Probe { samples: true, ..Probe::default() };
        p.fail.store(true, Ordering::Relaxed);
        let planned = vec![Planned::new("statsd", Delivery { max_retries: 0, ..delivery(1000) }, p.clone())];
        let source = sampling_source(vec![planned[0].health()]);
        // Duration, TTFB, input and output tokens: 4 samples.
        source.audit.observe(&audit_metrics::tests::record("client", "gpt-4o", 200, 5, 7));
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(source.clone(), planned, stop_rx));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(samples_dropped(&source, "send_failed"), 4.0);
        assert_eq!(samples_dropped(&source, "queue_full"), 0.0);
        assert_eq!(samples_dropped(&source, "buffer_full"), 0.0);
        stop_tx.send(true).unwrap();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn samples_of_a_batch_the_queue_refused_are_counted() {
        let p = Probe { hang: true, samples: true, ..Probe::default() };
        let slow = Delivery { timeout: Duration::from_secs(3600), ..delivery(1000) };
        let planned = vec![Planned::new("statsd", slow, p)];
        let stats = planned[0].stats.clone();
        let source = sampling_source(vec![planned[0].health()]);
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(source.clone(), planned, stop_rx));
        // 1 s: taken by the hanging task; 2 s and 3 s: queued (2 slots).
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert_eq!(stats.queued.load(Ordering::Relaxed), 2);
        source.audit.observe(&audit_metrics::tests::record("client", "gpt-4o", 200, 5, 7));
        // 4 s: the queue is full; the snapshot and its 4 samples are dropped.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(stats.dropped_queue_full.load(Ordering::Relaxed), 1);
        assert_eq!(samples_dropped(&source, "queue_full"), 4.0);
        stop_tx.send(true).unwrap();
        drop(task);
    }
}
