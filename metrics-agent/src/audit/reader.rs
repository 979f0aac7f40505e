//! The audit task: reads the `PAYLOADS` ring buffer, runs the pipeline,
//! prints records as JSON lines when asked, hands them to the record bus,
//! and adapts the capture sampling interval (`breaker`) once a second.
//!
//! It runs on its own thread (`audit`) with a single-threaded runtime, so
//! the CPU it measures for the budget is the capture path's own. The kernel
//! submits payload events without waking the reader (`BPF_RB_NO_WAKEUP`)
//! unless the ring is a quarter full: the reader drains it every
//! `DRAIN_EVERY` and on those wake-ups, not once per event.

use std::{
    io::Write,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use aya::maps::{Array, MapData, RingBuf};
use metrics_common::capture::{ChunkHeader, MAX_SAMPLE_EVERY, control};
use tokio::{io::unix::AsyncFd, sync::watch};

use super::{
    breaker::{Action, Pressure, Sampler, thread_cpu_time},
    correlate::Correlator,
    pipeline::{Pipeline, RequestRecord},
};
use crate::collector::{AgentStats, CounterMaps};

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
    pub records_out: crate::records::RecordBus,
    /// The connection ids the kernel tracks now (None when unreadable).
    pub open_connections: Box<dyn Fn() -> Option<std::collections::HashSet<u64>> + Send>,
}

impl AuditTask {
    /// Runs the task on its own thread until `stop`; the receiver resolves
    /// when it has finished (its last records emitted).
    pub fn spawn(self, stop: watch::Receiver<bool>) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
        let (done, finished) = tokio::sync::oneshot::channel();
        std::thread::Builder::new().name("audit".into()).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => return log::error!("audit path not started: its runtime: {e}"),
            };
            if let Err(e) = runtime.block_on(self.run(stop)) {
                log::error!("audit path stopped: {e:#}");
            }
            let _ = done.send(());
        })?;
        Ok(finished)
    }

    async fn run(self, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
        let Self {
            ring,
            mut control,
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
        } = self;
        let mut correlator = Correlator::new(Duration::from_millis(500), true);
        let name_of = |slot: u8| provider_names.iter().find(|(s, _)| *s == slot as u32).map(|(_, n)| n.clone());
        let emit = |records: Vec<RequestRecord>| {
            if records.is_empty() {
                return;
            }
            let mut out = print_requests.then(|| std::io::stdout().lock());
            for mut record in records {
                if record.application_id.is_none() {
                    record.application_id.clone_from(&application_id);
                }
                let model = record.model_returned.as_deref().or(record.model_requested.as_deref());
                record.cost_usd = model.and_then(|m| prices.cost(m, &record.tokens)).map(|c| c.normalize());
                if record.cost_usd.is_none() && (record.tokens.input.is_some() || record.tokens.output.is_some()) {
                    stats.audit_unpriced_records.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(out) = out.as_mut()
                    && let Ok(line) = serde_json::to_string(&record)
                {
                    let _ = writeln!(out, "{line}");
                }
                // No receiver is not an error: nothing consumes records yet.
                let _ = records_out.send(Arc::new(record));
            }
            if let Some(mut out) = out {
                let _ = out.flush();
            }
        };
        // SAFETY: the AsyncFd owns the ring buffer, so its fd outlives the registration.
        let mut ring =
            unsafe { AsyncFd::register(ring) }.map_err(|e| anyhow::anyhow!("watching the payload ring buffer: {e}"))?;
        let new_pipeline = || {
            Pipeline::new(message_cap_bytes)
                .with_identity(identity.clone())
                .with_configured_providers(&provider_names)
                .with_memory_budget(memory_budget_bytes)
        };
        let mut pipeline = new_pipeline();
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + TICK, TICK);
        let mut drain_timer = tokio::time::interval(DRAIN_EVERY);
        drain_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drops_seen = counters.capture_drops();
        let mut sampler = Sampler::new(sample_every, max_sample_every.min(MAX_SAMPLE_EVERY), cpu_budget_percent);
        let mut sweeps = 0u64;
        let (mut last_tick, mut last_cpu) = (tokio::time::Instant::now(), thread_cpu_time());
        stats.capture_enabled.store(1, Ordering::Relaxed);
        stats.capture_sample_every.store(sampler.every().into(), Ordering::Relaxed);
        let mut ready = Vec::new();
        // Drains up to DRAIN_BATCH events into the pipeline; true when the
        // batch was full (more may be waiting).
        let mut drain = |ring: &mut RingBuf<MapData>, pipeline: &mut Pipeline, correlator: &mut Correlator| {
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
                let records =
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pipeline.on_event(&header, data))) {
                        Ok(records) => records,
                        Err(_) => {
                            stats.audit_parser_panics.fetch_add(1, Ordering::Relaxed);
                            log::error!("the audit parser failed on an event: its connections start afresh");
                            *pipeline = new_pipeline();
                            Vec::new()
                        }
                    };
                for mut record in records {
                    record.upstream_provider = record.provider_slot.and_then(name_of);
                    ready.extend(correlator.push(record, now));
                }
            }
            emit(std::mem::take(&mut ready));
            stats.audit_records.store(pipeline.stats.records, Ordering::Relaxed);
            stats.audit_resyncs.store(pipeline.stats.resyncs, Ordering::Relaxed);
            stats.audit_connections.store(pipeline.tracked_connections() as u64, Ordering::Relaxed);
            stats.audit_memory_bytes.store(pipeline.memory() as u64, Ordering::Relaxed);
            stats.audit_evicted_connections.store(pipeline.stats.evicted_connections, Ordering::Relaxed);
            stats.audit_evicted_for_memory.store(pipeline.stats.evicted_for_memory, Ordering::Relaxed);
            handled == DRAIN_BATCH
        };
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                _ = drain_timer.tick() => {
                    if drain(ring.get_mut(), &mut pipeline, &mut correlator) {
                        drain_timer.reset_immediately();
                        // A ring that refills as fast as it is read keeps a
                        // branch ready: without yielding, this single-task
                        // runtime never runs its timers, so the once-a-second
                        // tick (sampling under pressure) would never come.
                        tokio::task::yield_now().await;
                    }
                }
                _ = tick.tick() => {
                    emit(correlator.tick(std::time::Instant::now()));
                    sweeps += 1;
                    if sweeps.is_multiple_of(SWEEP_TICKS)
                        && let Some(open) = open_connections()
                    {
                        pipeline.release_closed(&open);
                        stats.audit_connections.store(pipeline.tracked_connections() as u64, Ordering::Relaxed);
                        stats.audit_memory_bytes.store(pipeline.memory() as u64, Ordering::Relaxed);
                    }
                    let drops = counters.capture_drops();
                    if drops > drops_seen {
                        correlator.capture_incomplete();
                    }
                    let (now, cpu) = (tokio::time::Instant::now(), thread_cpu_time());
                    stats.audit_cpu_ns.store(cpu.as_nanos() as u64, Ordering::Relaxed);
                    let used = cpu.saturating_sub(last_cpu);
                    let window = now - last_tick;
                    let every = match sampler.tick(window, drops - drops_seen, used) {
                        Action::Raise { to, why } => {
                            let (counter, cause) = match why {
                                Pressure::Drops => (&stats.capture_breaker_trips, format!("the kernel dropped {} events", drops - drops_seen)),
                                Pressure::Cpu => (
                                    &stats.capture_breaker_cpu_trips,
                                    format!("the audit thread used {} ms of CPU in {} ms, over its {cpu_budget_percent}% budget", used.as_millis(), window.as_millis()),
                                ),
                            };
                            counter.fetch_add(1, Ordering::Relaxed);
                            log::info!("payload capture now samples 1 exchange in {to}: {cause}");
                            Some(to)
                        }
                        Action::Lower { to } => {
                            log::info!("payload capture now samples 1 exchange in {to}: there is room again");
                            Some(to)
                        }
                        Action::Nothing => None,
                    };
                    if let Some(every) = every {
                        let _ = control.set(control::SAMPLE_EVERY, every, 0);
                        stats.capture_sample_every.store(every.into(), Ordering::Relaxed);
                    }
                    (last_tick, last_cpu, drops_seen) = (now, cpu, drops);
                }
                guard = ring.readable_mut() => {
                    // The kernel woke the reader: the ring is filling up.
                    let mut guard = guard?;
                    if drain(guard.get_inner_mut(), &mut pipeline, &mut correlator) {
                        tokio::task::yield_now().await; // as above: let the tick run
                    } else {
                        guard.clear_ready();
                    }
                }
            }
        }
        let _ = control.set(control::ENABLED, 0, 0);
        emit(correlator.drain());
        Ok(())
    }
}
