//! Metrics about storage itself. The writer and the maintenance task update
//! them; `export::storage` turns them into series of the metric catalogue
//! (`metrics_agent_storage_*`, docs/metrics.md) for every backend.

use crate::stat_cells::{Counter, CounterByLabel, FloatGauge, Gauge};

#[derive(Debug, Default)]
pub struct StorageStats {
    /// Records aggregated into buffered rows.
    pub records: Counter,
    /// Records not stored, by reason (`lagged`: the record bus overflowed;
    /// `buffer_full`: the series limit was reached while the database was slow or down;
    /// `rejected`: the database refused the flush's rows as data `REJECTED_ATTEMPTS` times).
    pub records_dropped: CounterByLabel,
    /// Sampled detail rows not stored, by reason (`minute_cap`: beyond
    /// `max_detail_rows_per_minute`; `buffer_full`; `rejected`: their flush was).
    pub details_dropped: CounterByLabel,
    /// Records whose model or application was stored as `other`, by `kind`.
    pub names_collapsed: CounterByLabel,
    /// Rows deleted to keep the database within `max_size_mib`, by table.
    pub budget_rows_dropped: CounterByLabel,
    /// Size of the database as the budget measures it (see docs/storage.md).
    pub database_size_bytes: Gauge,
    /// `max_size_mib` in bytes (0: no budget).
    pub size_budget_bytes: Gauge,
    /// Rows written, by table.
    pub rows_written: CounterByLabel,
    /// Flushes by result: `ok`, `error` (retried), `duplicate` (already committed),
    /// `rejected` (refused as data too often: dropped).
    pub flushes: CounterByLabel,
    pub buffered_series: Gauge,
    pub buffered_bytes: Gauge,
    pub buffered_details: Gauge,
    pub last_flush_duration_seconds: FloatGauge,
    pub last_flush_timestamp_seconds: Gauge,
    /// 1 when the last database operation succeeded.
    pub database_up: Gauge,
    /// Retention and partition maintenance runs, by result.
    pub maintenance_runs: CounterByLabel,
}
