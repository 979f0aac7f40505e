//! The storage task: takes records from the record bus, aggregates them into
//! minute rows and sampled detail rows, and every flush interval writes them
//! in one transaction on a separate task, so a slow database never stalls
//! the bus. A failed flush is kept and retried (with its sequence number,
//! so it is never applied twice) while new records keep aggregating; memory
//! is bounded by `max_buffered_series`, `max_buffered_mib` and
//! `max_buffered_details`, and what
//! does not fit is counted as dropped. When the bus closes (shutdown) the
//! task flushes everything before it returns.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tokio::{
    sync::broadcast::{Receiver, error::RecvError},
    task::JoinHandle,
};

use super::{
    config::StorageConfig,
    db::{Batch, Store, StoreError, Written},
    detail::{DetailRow, MinuteCap, Sampler},
    names::NameBounds,
    rollup::{MinuteAggregator, Room, SeriesKey},
    stats::StorageStats,
};
use crate::records::RequestRecord;

/// Attempts after which a batch the database refuses as data (not an
/// outage) is dropped, so that one bad row cannot stop storage for good.
pub const REJECTED_ATTEMPTS: u32 = 3;

/// How long a shutdown waits for the last flushes.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(20);

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub struct Writer {
    pub store: Store,
    pub config: StorageConfig,
    pub stats: Arc<StorageStats>,
    /// Set once migrations are known to be applied (PostgreSQL may be down at start).
    pub migrated: Arc<AtomicBool>,
}

/// The bounded names of one record's detail row.
struct DetailNames {
    minute: i64,
    application: String,
    model_returned: String,
    model_requested: Option<String>,
}

type FlushResult = (Batch, Result<Written, StoreError>, Duration);

struct State {
    live: MinuteAggregator,
    details: Vec<DetailRow>,
    sampler: Sampler,
    detail_cap: MinuteCap,
    names: NameBounds,
    /// A batch whose flush failed, retried before any newer one.
    failed: Option<Batch>,
    in_flight: Option<JoinHandle<FlushResult>>,
    /// Rows in `failed` and in flight (they count against the memory bound).
    held_series: usize,
    held_bytes: usize,
    held_details: usize,
    database_down: bool,
    /// Consecutive attempts of `failed` that the database refused as data.
    rejected_attempts: u32,
}

impl Writer {
    pub async fn run(self, mut records: Receiver<Arc<RequestRecord>>) {
        let mut state = State {
            live: MinuteAggregator::default(),
            details: Vec::new(),
            sampler: Sampler::new(self.config.detail_sample_every),
            detail_cap: MinuteCap::new(self.config.max_detail_rows_per_minute),
            names: NameBounds::new(self.config.names),
            failed: None,
            in_flight: None,
            held_series: 0,
            held_bytes: 0,
            held_details: 0,
            database_down: false,
            rejected_attempts: 0,
        };
        let mut tick = tokio::time::interval(self.config.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                received = records.recv() => match received {
                    Ok(record) => self.accept(&mut state, &record),
                    Err(RecvError::Lagged(n)) => {
                        self.stats.records_dropped.inc_by("lagged", n);
                    }
                    Err(RecvError::Closed) => break,
                },
                _ = tick.tick() => self.start_flush(&mut state),
                done = async { state.in_flight.as_mut().expect("guarded").await }, if state.in_flight.is_some() => {
                    state.in_flight = None;
                    match done {
                        Ok(result) => self.finish_flush(&mut state, result),
                        Err(e) => log::error!("storage flush task failed: {e}"),
                    }
                }
            }
        }
        self.shutdown(state).await;
    }

    fn accept(&self, state: &mut State, record: &RequestRecord) {
        let room = Room {
            series: self.config.max_buffered_series.saturating_sub(state.held_series),
            bytes: self.config.max_buffered_bytes.saturating_sub(state.held_bytes),
        };
        let (key, names) = self.bounded_key(state, record);
        if state.live.add_as(key, record, room) {
            self.stats.records.inc();
        } else {
            self.stats.records_dropped.inc("buffer_full");
            return;
        }
        if state.sampler.keep() {
            let dropped = if !state.detail_cap.take(names.minute) {
                Some("minute_cap")
            } else if state.details.len() + state.held_details >= self.config.max_buffered_details {
                Some("buffer_full")
            } else {
                None
            };
            match dropped {
                Some(reason) => {
                    self.stats.details_dropped.inc(reason);
                }
                None => {
                    let mut row = DetailRow::of(record);
                    row.application_id = names.application;
                    row.model_returned = record.model_returned.as_ref().map(|_| names.model_returned.clone());
                    row.model_requested = names.model_requested;
                    state.details.push(row);
                }
            }
        }
        self.update_gauges(state);
    }

    /// The record's series key with its model and application bounded
    /// (`other` beyond the limits, counted), and the names its detail row takes.
    fn bounded_key(&self, state: &mut State, record: &RequestRecord) -> (SeriesKey, DetailNames) {
        let mut key = SeriesKey::of(record);
        let minute = key.bucket_start;
        let model = state.names.model(minute, std::mem::take(&mut key.model));
        let application = state.names.application(minute, std::mem::take(&mut key.application_id));
        for (kind, admitted) in [("model", &model), ("application", &application)] {
            if admitted.collapsed {
                self.stats.names_collapsed.inc(kind);
            }
        }
        // The key's model is the returned one, else the requested one.
        let model_requested = match (&record.model_returned, &record.model_requested) {
            (Some(returned), Some(requested)) if returned != requested => {
                Some(state.names.model(minute, super::rollup::text(requested.clone())).name)
            }
            (_, requested) => requested.as_ref().map(|_| model.name.clone()),
        };
        key.model = model.name.clone();
        key.application_id = application.name.clone();
        (key, DetailNames { minute, application: application.name, model_returned: model.name, model_requested })
    }

    fn update_gauges(&self, state: &State) {
        self.stats.buffered_series.set((state.live.rows.len() + state.held_series) as u64);
        self.stats.buffered_bytes.set((state.live.bytes + state.held_bytes) as u64);
        self.stats.buffered_details.set((state.details.len() + state.held_details) as u64);
    }

    /// Starts writing the failed batch, else what was gathered, unless a flush is running.
    fn start_flush(&self, state: &mut State) {
        if state.in_flight.is_some() {
            return;
        }
        let batch = match state.failed.take() {
            Some(batch) => batch,
            None if state.live.is_empty() && state.details.is_empty() => return,
            None => {
                let live = std::mem::take(&mut state.live);
                Batch {
                    seq: None,
                    bytes: live.bytes,
                    minutes: live.rows,
                    details: std::mem::take(&mut state.details),
                    records: live.records,
                }
            }
        };
        state.held_series = batch.minutes.len();
        state.held_bytes = batch.bytes;
        state.held_details = batch.details.len();
        let store = self.store.clone();
        let agent = self.config.agent_id.clone();
        let migrated = self.migrated.clone();
        state.in_flight = Some(tokio::spawn(async move {
            let mut batch = batch;
            let started = Instant::now();
            let result = async {
                if !migrated.load(Ordering::Acquire) {
                    store.migrate().await?;
                    migrated.store(true, Ordering::Release);
                    log::info!("storage: database schema is up to date");
                }
                store.write_batch_as(&agent, &flush_key(&agent), &mut batch, now_ms()).await
            }
            .await;
            (batch, result, started.elapsed())
        }));
    }

    fn finish_flush(&self, state: &mut State, (batch, result, took): FlushResult) {
        match result {
            Ok(written) => {
                state.rejected_attempts = 0;
                state.held_series = 0;
                state.held_bytes = 0;
                state.held_details = 0;
                if state.database_down {
                    log::info!("storage: database reachable again; buffered rows written");
                    state.database_down = false;
                }
                self.stats.database_up.set(1);
                if written.already_applied {
                    self.stats.flushes.inc("duplicate");
                } else {
                    self.stats.flushes.inc("ok");
                }
                for (table, n) in [
                    ("metrics_1m", written.minute_rows),
                    ("metrics_1h", written.hour_rows),
                    ("metrics_1d", written.day_rows),
                    ("request_details", written.detail_rows),
                ] {
                    self.stats.rows_written.inc_by(table, n);
                }
                self.stats.last_flush_duration_seconds.set(took.as_secs_f64());
                self.stats.last_flush_timestamp_seconds.set(u64::try_from(now_ms() / 1000).unwrap_or(0));
                log::debug!("storage: flushed {} records in {took:?}", batch.records);
            }
            Err(e) if e.is_rejected_data() && state.rejected_attempts + 1 >= REJECTED_ATTEMPTS => {
                // The database is up but refuses these rows: drop them, count them, go on.
                log::error!(
                    "storage: the database refused a flush {REJECTED_ATTEMPTS} times; dropping its {} records: {e}",
                    batch.records
                );
                self.stats.flushes.inc("rejected");
                self.stats.records_dropped.inc_by("rejected", batch.records);
                self.stats.details_dropped.inc_by("rejected", batch.details.len() as u64);
                self.stats.database_up.set(1);
                state.rejected_attempts = 0;
                state.held_series = 0;
                state.held_bytes = 0;
                state.held_details = 0;
                state.database_down = false;
            }
            Err(e) => {
                state.rejected_attempts = if e.is_rejected_data() { state.rejected_attempts + 1 } else { 0 };
                self.stats.flushes.inc("error");
                self.stats.database_up.set(0);
                if !state.database_down {
                    log::warn!(
                        "storage: flush failed, keeping {} rows and retrying every {:?}: {e}",
                        batch.minutes.len(),
                        self.config.flush_interval
                    );
                    state.database_down = true;
                }
                state.failed = Some(batch);
            }
        }
        self.update_gauges(state);
    }

    async fn shutdown(self, mut state: State) {
        let deadline = Instant::now() + SHUTDOWN_DEADLINE;
        // Said only when there was something to flush: a run that failed at
        // start-up prints its one-line error and nothing else.
        let mut flushed_at_shutdown = false;
        loop {
            if let Some(handle) = state.in_flight.take() {
                flushed_at_shutdown = true;
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, handle).await {
                    Ok(Ok(result)) => self.finish_flush(&mut state, result),
                    Ok(Err(e)) => log::error!("storage flush task failed: {e}"),
                    Err(_) => break,
                }
            }
            if state.failed.is_none() && state.live.is_empty() && state.details.is_empty() {
                if flushed_at_shutdown {
                    log::info!("storage: everything flushed");
                }
                return;
            }
            if Instant::now() >= deadline {
                break;
            }
            if state.failed.is_some() {
                // Do not spin against a database that is down.
                tokio::time::sleep(Duration::from_millis(200).min(self.config.flush_interval)).await;
            }
            self.start_flush(&mut state);
            flushed_at_shutdown = true;
        }
        let lost = state.live.records + state.failed.as_ref().map_or(0, |b| b.records);
        log::warn!(
            "storage: the database did not take the last rows within {SHUTDOWN_DEADLINE:?}: {lost} records lost"
        );
    }
}

/// How soon upkeep is tried again after it failed (database down).
const MAINTENANCE_RETRY: Duration = Duration::from_secs(60);

/// How often upkeep runs.
#[derive(Debug, Clone, Copy)]
pub struct Upkeep {
    /// Retention and partitions ahead.
    pub retention_every: Duration,
    /// The size budget (`max_size_mib`), every `budget_check_seconds`.
    pub budget_every: Duration,
}

/// Retention and partition upkeep (at start, then every `retention_every`,
/// a minute after a failure) and the size budget (every `budget_every`).
pub async fn maintain(
    store: Store,
    config: StorageConfig,
    stats: Arc<StorageStats>,
    every: Upkeep,
    migrated: Arc<AtomicBool>,
) {
    stats.size_budget_bytes.set(config.max_size_bytes);
    let mut next_retention = Instant::now();
    loop {
        if Instant::now() >= next_retention {
            next_retention = Instant::now()
                + match retention(&store, &config, &migrated).await {
                    Ok(n) => {
                        stats.maintenance_runs.inc("ok");
                        if n > 0 {
                            log::info!(
                                "storage retention removed {n} {}",
                                if store.kind() == "postgres" { "partitions" } else { "rows" }
                            );
                        }
                        every.retention_every
                    }
                    Err(e) => {
                        stats.maintenance_runs.inc("error");
                        log::warn!("storage retention/partition upkeep failed (retried in {MAINTENANCE_RETRY:?}): {e}");
                        MAINTENANCE_RETRY
                    }
                };
        }
        if migrated.load(Ordering::Acquire) {
            keep_within_budget(&store, config.max_size_bytes, &stats).await;
        }
        let wake = next_retention.min(Instant::now() + every.budget_every);
        tokio::time::sleep_until(wake.into()).await;
    }
}

async fn retention(store: &Store, config: &StorageConfig, migrated: &AtomicBool) -> Result<u64, StoreError> {
    let now = now_ms() / 1000;
    if !migrated.load(Ordering::Acquire) {
        store.migrate().await?;
        migrated.store(true, Ordering::Release);
    }
    if let Store::Postgres(pool) = store {
        super::partitions::ensure_ahead(pool, now).await?;
    }
    store.apply_retention(&config.retention.cutoffs(now)).await
}

/// One size-budget check: deletions counted per table and logged.
pub async fn keep_within_budget(store: &Store, budget: u64, stats: &StorageStats) {
    match super::budget::enforce(store, budget).await {
        Ok(done) => {
            stats.database_size_bytes.set(done.size_after);
            for (table, n) in &done.dropped {
                stats.budget_rows_dropped.inc_by(table, *n);
            }
            if !done.dropped.is_empty() {
                log::info!(
                    "storage: the database ({} bytes) exceeded max_size_mib; deleted the oldest rows {:?}, now {} bytes",
                    done.size_before,
                    done.dropped,
                    done.size_after
                );
            }
            if done.exhausted {
                log::warn!(
                    "storage: the database ({} bytes) exceeds max_size_mib with no metric or detail rows left to \
                     drop: raise max_size_mib",
                    done.size_after
                );
            }
        }
        Err(e) => log::warn!("storage: checking the size budget failed (retried at the next check): {e}"),
    }
}

/// This process's key for flush sequences: the agent id, the pid and the
/// start time, so that two processes sharing an agent id never mistake each
/// other's flushes for their own retries.
fn flush_key(agent: &str) -> String {
    static INSTANCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let instance = INSTANCE.get_or_init(|| format!("{}-{}", std::process::id(), now_ms()));
    format!("{agent}#{instance}")
}
