//! Storage as a metric source: records stored and dropped, flushes, buffers,
//! the size budget and maintenance (`store::stats::StorageStats`).

use super::{
    catalog as m,
    model::{Desc, Series, Value, series_by_label},
};
use crate::{
    stat_cells::{CounterByLabel, Gauge},
    store::stats::StorageStats,
};

/// Appends the series of `stats`.
pub fn append(s: &StorageStats, out: &mut Vec<Series>) {
    out.push(Series::unlabelled(&m::STORAGE_RECORDS, Value::Int(s.records.get())));
    let by_label: &[(&'static Desc, &CounterByLabel)] = &[
        (&m::STORAGE_RECORDS_DROPPED, &s.records_dropped),
        (&m::STORAGE_DETAILS_DROPPED, &s.details_dropped),
        (&m::STORAGE_NAMES_COLLAPSED, &s.names_collapsed),
        (&m::STORAGE_BUDGET_ROWS_DROPPED, &s.budget_rows_dropped),
        (&m::STORAGE_ROWS_WRITTEN, &s.rows_written),
        (&m::STORAGE_FLUSHES, &s.flushes),
        (&m::STORAGE_MAINTENANCE_RUNS, &s.maintenance_runs),
    ];
    for (desc, c) in by_label {
        out.extend(series_by_label(desc, &c.counts()));
    }
    let gauges: &[(&'static Desc, &Gauge)] = &[
        (&m::STORAGE_DATABASE_SIZE, &s.database_size_bytes),
        (&m::STORAGE_SIZE_BUDGET, &s.size_budget_bytes),
        (&m::STORAGE_BUFFERED_SERIES, &s.buffered_series),
        (&m::STORAGE_BUFFERED_MEMORY, &s.buffered_bytes),
        (&m::STORAGE_BUFFERED_DETAILS, &s.buffered_details),
        (&m::STORAGE_LAST_FLUSH_TIME, &s.last_flush_timestamp_seconds),
        (&m::STORAGE_DATABASE_UP, &s.database_up),
    ];
    for (desc, g) in gauges {
        out.push(Series::unlabelled(desc, Value::Int(g.get())));
    }
    let duration = s.last_flush_duration_seconds.get();
    out.push(Series::unlabelled(&m::STORAGE_LAST_FLUSH_DURATION, Value::Float(duration)));
}
