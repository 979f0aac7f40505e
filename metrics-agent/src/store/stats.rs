//! Metrics about storage itself, served on `/metrics` with the others.

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

type Labels = Vec<(&'static str, &'static str)>;

#[derive(Debug, Clone, Default)]
pub struct StorageStats {
    /// Records aggregated into buffered rows.
    pub records: Counter,
    /// Records not stored, by reason (`lagged`: the record bus overflowed;
    /// `buffer_full`: the series limit was reached while the database was slow or down;
    /// `rejected`: the database refused the flush's rows as data `REJECTED_ATTEMPTS` times).
    pub records_dropped: Family<Labels, Counter>,
    /// Sampled detail rows not stored, by reason (`minute_cap`: beyond
    /// `max_detail_rows_per_minute`; `buffer_full`; `rejected`: their flush was).
    pub details_dropped: Family<Labels, Counter>,
    /// Records whose model or application was stored as `other`, by `kind`.
    pub names_collapsed: Family<Labels, Counter>,
    /// Rows deleted to keep the database within `max_size_mib`, by table.
    pub budget_rows_dropped: Family<Labels, Counter>,
    /// Size of the database as the budget measures it (see docs/storage.md).
    pub database_size_bytes: Gauge,
    /// `max_size_mib` in bytes (0: no budget).
    pub size_budget_bytes: Gauge,
    /// Rows written, by table.
    pub rows_written: Family<Labels, Counter>,
    /// Flushes by result: `ok`, `error` (retried), `duplicate` (already committed),
    /// `rejected` (refused as data too often: dropped).
    pub flushes: Family<Labels, Counter>,
    pub buffered_series: Gauge,
    pub buffered_bytes: Gauge,
    pub buffered_details: Gauge,
    pub last_flush_duration_seconds: Gauge<f64, AtomicU64>,
    pub last_flush_timestamp_seconds: Gauge,
    /// 1 when the last database operation succeeded.
    pub database_up: Gauge,
    /// Retention and partition maintenance runs, by result.
    pub maintenance_runs: Family<Labels, Counter>,
}

impl StorageStats {
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("metrics_agent_storage");
        r.register("records", "Records aggregated into buffered rows", self.records.clone());
        r.register("records_dropped", "Records not stored, by reason", self.records_dropped.clone());
        r.register(
            "detail_rows_dropped",
            "Sampled detail rows not stored, by reason (minute_cap, buffer_full, rejected)",
            self.details_dropped.clone(),
        );
        r.register(
            "names_collapsed",
            "Records whose model or application name was stored as `other` (bounded names), by kind",
            self.names_collapsed.clone(),
        );
        r.register(
            "budget_rows_dropped",
            "Rows deleted to keep the database within max_size_mib, by table",
            self.budget_rows_dropped.clone(),
        );
        r.register(
            "database_size_bytes",
            "Size of the database as the size budget measures it",
            self.database_size_bytes.clone(),
        );
        r.register(
            "size_budget_bytes",
            "The size budget (max_size_mib) in bytes; 0: none",
            self.size_budget_bytes.clone(),
        );
        r.register("rows_written", "Rows written to the database, by table", self.rows_written.clone());
        r.register("flushes", "Flushes by result (ok, error, duplicate, rejected)", self.flushes.clone());
        r.register("buffered_series", "Minute rows waiting to be written", self.buffered_series.clone());
        r.register(
            "buffered_bytes",
            "Upper bound of the heap the buffered minute rows take",
            self.buffered_bytes.clone(),
        );
        r.register("buffered_detail_rows", "Detail rows waiting to be written", self.buffered_details.clone());
        r.register(
            "last_flush_duration_seconds",
            "Duration of the last successful flush",
            self.last_flush_duration_seconds.clone(),
        );
        r.register(
            "last_flush_timestamp_seconds",
            "Unix time of the last successful flush",
            self.last_flush_timestamp_seconds.clone(),
        );
        r.register("database_up", "1 when the last database operation succeeded", self.database_up.clone());
        r.register("maintenance_runs", "Retention and partition runs, by result", self.maintenance_runs.clone());
    }
}
