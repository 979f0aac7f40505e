//! The audit task: reads the `PAYLOADS` ring buffer, runs the pipeline and
//! the correlator, enriches the finished records and hands them on
//! (`enrich`), and lets the capture controller (`capture`) adapt the
//! sampling interval once a second.
//!
//! It runs on its own thread (`audit`) with a single-threaded runtime, so
//! the CPU it measures for the budget is the capture path's own; the
//! operator may give that thread a higher scheduling weight (`priority`,
//! `audit_thread_nice_boost`), so a busy proxy does not keep it waiting while
//! the ring fills. The kernel submits payload events without waking the
//! reader (`BPF_RB_NO_WAKEUP`), except those that fill the ring past a
//! quarter, a half or three quarters: the reader drains it every
//! `DRAIN_EVERY` and on those wake-ups, not once per event.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use aya::maps::{Array, MapData, RingBuf};
use metrics_common::capture::ChunkHeader;
use tokio::{io::unix::AsyncFd, sync::watch};

use super::{capture::CaptureController, correlate::Correlator, enrich::Enrichment, pipeline::Pipeline};
use crate::{agent_stats::AgentStats, collector::CounterMaps};

/// How often the sampler and the correlator run.
const TICK: Duration = Duration::from_secs(1);
/// Ticks between sweeps for connections closed without a close event.
const SWEEP_TICKS: u64 = 5;
/// How often the ring buffer is drained without a wake-up.
const DRAIN_EVERY: Duration = Duration::from_millis(50);
/// Events handled per drain at most: a ring that refills as fast as it is
/// read must not starve the once-a-second sampling decision.
const DRAIN_BATCH: usize = 4096;
/// Default ceiling of the adaptive sampling interval.
pub const DEFAULT_MAX_SAMPLE_EVERY: u32 = 1024;

pub struct AuditTask {
    pub ring: RingBuf<MapData>,
    pub control: Array<MapData, u32>,
    pub counters: Arc<CounterMaps>,
    pub stats: Arc<AgentStats>,
    pub print_requests: bool,
    pub message_cap_bytes: usize,
    /// Label of each provider slot.
    pub provider_names: Vec<(u32, String)>,
    /// 1 in N exchanges captured at least (the adaptive interval's floor).
    pub sample_every: u32,
    /// The adaptive interval's ceiling.
    pub max_sample_every: u32,
    pub prices: super::cost::PriceTable,
    pub application_id: Option<String>,
    pub identity: super::identity::IdentityConfig,
    /// Audit-thread CPU (percent of one core) above which sampling is raised; 0: no limit.
    pub cpu_budget_percent: f64,
    /// Heap the parsers may hold together.
    pub memory_budget_bytes: usize,
    /// Where finished records go (storage, exporters, the live stream).
    pub records_out: tokio::sync::broadcast::Sender<Arc<super::pipeline::RequestRecord>>,
    /// The connection ids the kernel tracks now (None when unreadable).
    pub open_connections: OpenConnections,
    /// Test hook (`capture::TEST_CYCLE_ENV`): capture switched off and on every period.
    pub capture_cycle: Option<Duration>,
    /// Steps of nice below the agent's own for the `audit` thread (0: none).
    pub nice_boost: u8,
}

impl AuditTask {
    /// Runs the task on its own thread until `stop`; the receiver resolves
    /// when it has finished (its last records emitted).
    pub fn spawn(self, stop: watch::Receiver<bool>) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
        let (done, finished) = tokio::sync::oneshot::channel();
        let nice_boost = self.nice_boost;
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new().name("audit".into()).spawn(move || {
            if nice_boost > 0 {
                // SAFETY: gettid has no preconditions.
                let _ = tid_tx.send(unsafe { libc::gettid() });
            }
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => return log::error!("audit path not started: its runtime: {e}"),
            };
            if let Err(e) = runtime.block_on(self.run(stop)) {
                log::error!("audit path stopped: {e:#}");
            }
            let _ = done.send(());
        })?;
        // Weighted here, by the spawning thread: it still holds CAP_SYS_NICE.
        if nice_boost > 0 {
            match tid_rx.recv().map(|tid| super::priority::raise(tid, nice_boost.into())) {
                Ok(Ok(nice)) => log::info!("audit thread at nice {nice} (audit_thread_nice_boost = {nice_boost})"),
                Ok(Err(e)) => log::warn!(
                    "audit_thread_nice_boost = {nice_boost} not applied, the audit thread keeps the agent's weight: setpriority: {e}"
                ),
                Err(_) => {}
            }
        }
        Ok(finished)
    }

    /// The reading loop: drains the ring into the pipeline and the
    /// correlator, emits finished records (`Enrichment`), and once a tick
    /// lets the correlator time out, sweeps closed connections and lets the
    /// capture controller adapt the sampling.
    async fn run(self, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
        let capture_cycle = self.capture_cycle;
        let (mut reader, ring, mut capture, open_connections) = self.into_parts();
        // SAFETY: the AsyncFd owns the ring buffer, so its fd outlives the registration.
        let mut ring =
            unsafe { AsyncFd::register(ring) }.map_err(|e| anyhow::anyhow!("watching the payload ring buffer: {e}"))?;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + TICK, TICK);
        let mut drain_timer = tokio::time::interval(DRAIN_EVERY);
        drain_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u64;
        let mut cycle = capture_cycle.map(|period| {
            log::warn!(
                "test hook {}: payload capture switches off and on every {} ms",
                super::capture::TEST_CYCLE_ENV,
                period.as_millis()
            );
            tokio::time::interval_at(tokio::time::Instant::now() + period, period)
        });
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = drain_timer.tick() => {
                    if reader.drain(ring.get_mut()) {
                        drain_timer.reset_immediately();
                        // A ring that refills as fast as it is read keeps a
                        // branch ready: without yielding, this single-task
                        // runtime never runs its timers, so the once-a-second
                        // tick (sampling under pressure) would never come.
                        tokio::task::yield_now().await;
                    }
                }
                _ = tick.tick() => {
                    ticks += 1;
                    let open = if ticks.is_multiple_of(SWEEP_TICKS) { open_connections() } else { None };
                    reader.tick(open.as_ref());
                    if capture.tick() {
                        reader.correlator.capture_incomplete();
                    }
                }
                () = next_cycle(&mut cycle) => {
                    let on = capture.toggle();
                    log::debug!("test hook: payload capture {}", if on { "on" } else { "off" });
                }
                guard = ring.readable_mut() => {
                    // The kernel woke the reader: the ring is filling up.
                    let mut guard = guard?;
                    if reader.drain(guard.get_inner_mut()) {
                        tokio::task::yield_now().await; // as above: let the tick run
                    } else {
                        guard.clear_ready();
                    }
                }
            }
        }
        capture.stop();
        reader.enrichment.emit(reader.correlator.drain());
        Ok(())
    }

    /// The task's parts: the parsing side (`Reader`, with the enrichment of
    /// its records), the ring, the capture controller and the source of the
    /// connections the kernel tracks.
    fn into_parts(self) -> (Reader, RingBuf<MapData>, CaptureController, OpenConnections) {
        let Self {
            ring,
            control,
            counters,
            stats,
            print_requests,
            message_cap_bytes,
            provider_names,
            sample_every,
            max_sample_every,
            prices,
            application_id,
            identity,
            cpu_budget_percent,
            memory_budget_bytes,
            records_out,
            open_connections,
            capture_cycle: _,
            nice_boost: _,
        } = self;
        let names = provider_names.clone();
        let new_pipeline = Box::new(move || {
            Pipeline::new(message_cap_bytes)
                .with_identity(identity.clone())
                .with_configured_providers(&names)
                .with_memory_budget(memory_budget_bytes)
        });
        let reader = Reader {
            pipeline: new_pipeline(),
            new_pipeline,
            correlator: Correlator::new(Duration::from_millis(500), true),
            enrichment: Enrichment {
                provider_names,
                application_id,
                prices,
                print_requests,
                records_out,
                stats: stats.clone(),
                last_price: None,
            },
            stats: stats.clone(),
        };
        let capture =
            CaptureController::start(control, counters, stats, sample_every, max_sample_every, cpu_budget_percent);
        (reader, ring, capture, open_connections)
    }
}

/// The next capture cycle of the test hook; never, without it.
async fn next_cycle(cycle: &mut Option<tokio::time::Interval>) {
    match cycle {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The connection ids the kernel tracks now (None when unreadable).
type OpenConnections = Box<dyn Fn() -> Option<std::collections::HashSet<u64>> + Send>;

/// The parsing side of the task: pipeline, correlator and enrichment.
struct Reader {
    pipeline: Pipeline,
    /// A fresh pipeline, after a parser failure.
    new_pipeline: Box<dyn Fn() -> Pipeline>,
    correlator: Correlator,
    enrichment: Enrichment,
    stats: Arc<AgentStats>,
}

impl Reader {
    /// Drains up to DRAIN_BATCH events into the pipeline and emits the
    /// records they finish; true when the batch was full (more may be waiting).
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> bool {
        let now = std::time::Instant::now();
        let mut handled = 0;
        while handled < DRAIN_BATCH
            && let Some(item) = ring.next()
        {
            handled += 1;
            if item.len() < size_of::<ChunkHeader>() {
                continue;
            }
            // SAFETY: the kernel wrote a ChunkHeader first; read it unaligned.
            let header = unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<ChunkHeader>()) };
            // A bug in the parsers must not end the audit path: the
            // event is lost, the parser state starts afresh, and it is counted.
            let data = &item[size_of::<ChunkHeader>()..];
            let pipeline = &mut self.pipeline;
            let records =
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pipeline.on_event(&header, data))) {
                    Ok(records) => records,
                    Err(_) => {
                        self.stats.audit_parser_panics.fetch_add(1, Ordering::Relaxed);
                        log::error!("the audit parser failed on an event: its connections start afresh");
                        self.pipeline = (self.new_pipeline)();
                        Vec::new()
                    }
                };
            // Each record leaves as soon as it is correlated: collecting a
            // batch's records first grew a buffer of up to a megabyte per
            // drain, fresh pages each time (measured: 3% of the thread).
            for mut record in records {
                record.upstream_provider = record.provider_slot.and_then(|slot| self.enrichment.provider_name(slot));
                self.enrichment.emit(self.correlator.push(record, now));
            }
        }
        self.publish_stats();
        handled == DRAIN_BATCH
    }

    /// Once a tick: emits the records the correlator stopped waiting for,
    /// and, given the connections the kernel tracks now, forgets the others
    /// (closed without a close event).
    fn tick(&mut self, open: Option<&std::collections::HashSet<u64>>) {
        self.enrichment.emit(self.correlator.tick(std::time::Instant::now()));
        if let Some(open) = open {
            self.pipeline.release_closed(open);
            self.stats.audit_released_connections.store(self.pipeline.stats.released_closed, Ordering::Relaxed);
            self.publish_memory();
        }
    }

    /// The pipeline's counters, into the agent statistics.
    fn publish_stats(&self) {
        let (stats, pipeline) = (&self.stats, &self.pipeline);
        stats.audit_records.store(pipeline.stats.records, Ordering::Relaxed);
        stats.audit_resyncs.store(pipeline.stats.resyncs, Ordering::Relaxed);
        stats.audit_early_responses.store(pipeline.stats.early_responses, Ordering::Relaxed);
        stats.audit_orphan_responses.store(pipeline.stats.orphan_responses, Ordering::Relaxed);
        stats.audit_stream_framing_errors.store(pipeline.stats.stream_framing_errors, Ordering::Relaxed);
        stats.audit_oversized_stream_events.store(pipeline.stats.oversized_stream_events, Ordering::Relaxed);
        stats.audit_h2_streams.store(pipeline.stats.h2.streams, Ordering::Relaxed);
        stats.audit_h2_evicted_streams.store(pipeline.stats.h2.evicted_streams, Ordering::Relaxed);
        stats.audit_h2_broken_connections.store(pipeline.stats.h2.broken_connections, Ordering::Relaxed);
        stats.audit_evicted_connections.store(pipeline.stats.evicted_connections, Ordering::Relaxed);
        stats.audit_evicted_for_memory.store(pipeline.stats.evicted_for_memory, Ordering::Relaxed);
        self.publish_memory();
    }

    fn publish_memory(&self) {
        self.stats.audit_connections.store(self.pipeline.tracked_connections() as u64, Ordering::Relaxed);
        self.stats.audit_memory_bytes.store(self.pipeline.memory() as u64, Ordering::Relaxed);
    }
}
