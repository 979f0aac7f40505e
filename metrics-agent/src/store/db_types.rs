//! The types the database layer and the PostgreSQL partition upkeep
//! (`partitions.rs`) share: the database error, one flush's batch and the
//! retention cutoffs. A leaf, so that `db` may use `partitions` and both
//! use these without importing each other.

use std::collections::HashMap;

use super::{
    detail::DetailRow,
    rollup::{Aggregate, SeriesKey},
};

/// What went wrong with the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database url `{0}` is not understood: use sqlite:///PATH (or a file path) or postgres://USER@HOST/DB")]
    BadUrl(String),
    #[error("cannot create {path} for the SQLite database ({source}): choose another path with --database-url")]
    CreateDir { path: String, source: std::io::Error },
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("applying migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored row is unreadable: {0}")]
    Corrupt(String),
    #[error("one step bucket would have more than {0} groups: use a finer step, filters or fewer group-by columns")]
    TooManyRows(usize),
}

impl StoreError {
    /// The database refused the data itself, so the same rows will be refused
    /// again: PostgreSQL SQLSTATE class 22 (data exception, e.g. NUL in text)
    /// or 23 (integrity constraint, e.g. no partition for a row); SQLite
    /// SQLITE_TOOBIG, SQLITE_CONSTRAINT (any extended code) or SQLITE_MISMATCH.
    pub fn is_rejected_data(&self) -> bool {
        let StoreError::Sql(sqlx::Error::Database(e)) = self else { return false };
        let Some(code) = e.code() else { return false };
        if e.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
            code.parse::<i64>().is_ok_and(|c| matches!(c & 0xff, 18..=20))
        } else {
            code.starts_with("22") || code.starts_with("23")
        }
    }
}

/// One flush: the minute rows and detail rows gathered since the last one.
#[derive(Debug, Default)]
pub struct Batch {
    /// Sequence number, assigned on the first attempt (the agent's last
    /// committed one plus one) and kept across retries.
    pub seq: Option<i64>,
    pub minutes: HashMap<SeriesKey, Aggregate>,
    /// Heap bound of `minutes` (`MinuteAggregator::bytes`).
    pub bytes: usize,
    pub details: Vec<DetailRow>,
    /// Records aggregated into `minutes`.
    pub records: u64,
}

/// Oldest timestamps each table keeps.
#[derive(Debug, Clone, Copy)]
pub struct Cutoffs {
    /// Unix seconds per tier.
    pub minute: i64,
    pub hour: i64,
    pub day: i64,
    /// Unix milliseconds.
    pub detail_ms: i64,
    pub fscore_ms: i64,
}

impl Cutoffs {
    /// (table, time column, cutoff in that column's unit).
    pub fn columns(&self) -> [(&'static str, &'static str, i64); 5] {
        [
            ("metrics_1m", "bucket_start", self.minute),
            ("metrics_1h", "bucket_start", self.hour),
            ("metrics_1d", "bucket_start", self.day),
            ("request_details", "ts_ms", self.detail_ms),
            ("fscore_results", "ts_ms", self.fscore_ms),
        ]
    }
}
