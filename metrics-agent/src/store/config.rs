//! `[storage]` settings: where the database is, how often to flush, how
//! long each tier is kept, detail sampling and the memory bounds.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default SQLite database (the agent runs as root).
pub const DEFAULT_DATABASE_URL: &str = "sqlite:///var/lib/metrics-agent/metrics.db";

/// The `[storage]` section of the configuration file.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageFile {
    /// `sqlite:///PATH` (default /var/lib/metrics-agent/metrics.db) or `postgres://...`.
    pub database_url: Option<String>,
    /// Written on every row with the hostname (`HOST/ID`); one per agent process.
    pub agent_id: Option<String>,
    /// Turn storage off.
    pub enabled: Option<bool>,
    /// Time between flushes; a crash loses at most this much (default 2000).
    pub flush_interval_ms: Option<u64>,
    pub retention_1m_days: Option<u32>,
    pub retention_1h_days: Option<u32>,
    pub retention_1d_days: Option<u32>,
    pub retention_detail_days: Option<u32>,
    pub retention_fscore_days: Option<u32>,
    /// Store one per-request detail row in N records (0: none; default 1).
    pub detail_sample_every: Option<u32>,
    /// Minute rows held in memory at most while the database is slow or down.
    pub max_buffered_series: Option<usize>,
    /// Memory the minute rows held may take at most, in MiB (default 64).
    pub max_buffered_mib: Option<usize>,
    /// Detail rows held in memory at most.
    pub max_buffered_details: Option<usize>,
    /// F-beta's beta served next to F1 (default 1).
    pub fscore_beta: Option<f64>,
    /// Detail rows kept per minute at most (default 600; 0: no cap); beyond, counted as dropped.
    pub max_detail_rows_per_minute: Option<u32>,
    /// Size budget of the database in MiB (default 1024; 0: none): beyond it the
    /// oldest detail rows, then the oldest minute rows are dropped (counted).
    pub max_size_mib: Option<u64>,
    /// Seconds between two checks of the size budget (default 60; 1 to 3600):
    /// between checks the database may exceed the budget by that much writing.
    pub budget_check_seconds: Option<u64>,
    /// Distinct model names stored since the agent started (default 200); beyond: `other`.
    pub max_models: Option<usize>,
    /// Distinct model names stored per minute (default 50); beyond: `other`.
    pub max_models_per_minute: Option<usize>,
    /// Distinct application ids stored since the agent started (default 100); beyond: `other`.
    pub max_applications: Option<usize>,
    /// Distinct application ids stored per minute (default 50); beyond: `other`.
    pub max_applications_per_minute: Option<usize>,
}

/// Default of `max_detail_rows_per_minute`: every request has its detail row up to 10 requests/s.
pub fn default_max_detail_rows_per_minute() -> u32 {
    600
}

/// Default of `max_size_mib`.
pub fn default_max_size_mib() -> u64 {
    1024
}

/// Default of `budget_check_seconds`.
pub fn default_budget_check_seconds() -> u64 {
    60
}

/// Default of `max_models`.
pub fn default_max_models() -> usize {
    200
}

/// Default of `max_models_per_minute`.
pub fn default_max_models_per_minute() -> usize {
    50
}

/// Default of `max_applications`.
pub fn default_max_applications() -> usize {
    100
}

/// Default of `max_applications_per_minute`.
pub fn default_max_applications_per_minute() -> usize {
    50
}

/// Validated storage settings.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageConfig {
    pub database_url: String,
    /// `HOST` or `HOST/ID`.
    pub agent_id: String,
    /// The configured `ID` part.
    pub agent_id_suffix: Option<String>,
    pub flush_interval: Duration,
    pub retention: Retention,
    pub detail_sample_every: u32,
    pub max_buffered_series: usize,
    /// `max_buffered_mib` in bytes.
    pub max_buffered_bytes: usize,
    pub max_buffered_details: usize,
    pub fscore_beta: f64,
    /// 0: no cap.
    pub max_detail_rows_per_minute: u32,
    /// `max_size_mib` in bytes; 0: no budget.
    pub max_size_bytes: u64,
    /// Time between two size-budget checks (`budget_check_seconds`).
    pub budget_check_every: Duration,
    pub names: super::names::NameLimits,
}

/// Days kept per table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Retention {
    pub minute_days: u32,
    pub hour_days: u32,
    pub day_days: u32,
    pub detail_days: u32,
    pub fscore_days: u32,
}

impl Retention {
    /// Oldest timestamps kept at `now_unix`.
    pub fn cutoffs(&self, now_unix: i64) -> super::db::Cutoffs {
        let ago = |days: u32| now_unix - i64::from(days) * 86_400;
        super::db::Cutoffs {
            minute: ago(self.minute_days),
            hour: ago(self.hour_days),
            day: ago(self.day_days),
            detail_ms: ago(self.detail_days) * 1000,
            fscore_ms: ago(self.fscore_days) * 1000,
        }
    }
}

/// This host's name (for agent ids).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A name bound of at least 1 (0 would store every name as `other`), at most 100,000.
fn at_least_one(n: usize, what: &str) -> anyhow::Result<usize> {
    anyhow::ensure!((1..=100_000).contains(&n), "[storage] {what} = {n}: use 1 to 100000");
    Ok(n)
}

impl StorageFile {
    /// Settings with `flag_url` (flag or environment) over the file; `None` when storage is off.
    pub fn resolve(
        &self,
        flag_url: Option<&str>,
        flag_agent_id: Option<&str>,
        off: bool,
    ) -> anyhow::Result<Option<StorageConfig>> {
        if off || self.enabled == Some(false) {
            return Ok(None);
        }
        let days = |v: Option<u32>, default: u32, what: &str| -> anyhow::Result<u32> {
            let d = v.unwrap_or(default);
            anyhow::ensure!(d >= 1, "[storage] {what} is 0: keep data at least 1 day");
            Ok(d)
        };
        let flush_ms = self.flush_interval_ms.unwrap_or(2_000);
        anyhow::ensure!(
            (50..=600_000).contains(&flush_ms),
            "[storage] flush_interval_ms = {flush_ms}: use 50 to 600000"
        );
        let beta = self.fscore_beta.unwrap_or(1.0);
        let (low, high) = super::query::params::BETA_RANGE;
        anyhow::ensure!(
            (low..=high).contains(&beta),
            "[storage] fscore_beta = {beta}: use a number from {low} to {high}"
        );
        let budget_check = self.budget_check_seconds.unwrap_or_else(default_budget_check_seconds);
        anyhow::ensure!(
            (1..=3_600).contains(&budget_check),
            "[storage] budget_check_seconds = {budget_check}: use 1 to 3600"
        );
        let host = hostname();
        let suffix = flag_agent_id.or(self.agent_id.as_deref()).filter(|id| !id.is_empty());
        let agent_id = match suffix {
            Some(id) => format!("{host}/{id}"),
            None => host,
        };
        Ok(Some(StorageConfig {
            database_url: flag_url.or(self.database_url.as_deref()).unwrap_or(DEFAULT_DATABASE_URL).to_string(),
            agent_id,
            agent_id_suffix: suffix.map(String::from),
            flush_interval: Duration::from_millis(flush_ms),
            retention: Retention {
                minute_days: days(self.retention_1m_days, 7, "retention_1m_days")?,
                hour_days: days(self.retention_1h_days, 90, "retention_1h_days")?,
                day_days: days(self.retention_1d_days, 730, "retention_1d_days")?,
                detail_days: days(self.retention_detail_days, 3, "retention_detail_days")?,
                fscore_days: days(self.retention_fscore_days, 730, "retention_fscore_days")?,
            },
            detail_sample_every: self.detail_sample_every.unwrap_or(1),
            max_buffered_series: self.max_buffered_series.unwrap_or(20_000).max(1),
            max_buffered_bytes: self.max_buffered_mib.unwrap_or(64).clamp(1, 1 << 20) << 20,
            max_buffered_details: self.max_buffered_details.unwrap_or(20_000),
            fscore_beta: beta,
            max_detail_rows_per_minute: self
                .max_detail_rows_per_minute
                .unwrap_or_else(default_max_detail_rows_per_minute),
            max_size_bytes: self.max_size_mib.unwrap_or_else(default_max_size_mib).min(1 << 40) << 20,
            budget_check_every: Duration::from_secs(budget_check),
            names: super::names::NameLimits {
                max_models: at_least_one(self.max_models.unwrap_or_else(default_max_models), "max_models")?,
                max_models_per_minute: at_least_one(
                    self.max_models_per_minute.unwrap_or_else(default_max_models_per_minute),
                    "max_models_per_minute",
                )?,
                max_applications: at_least_one(
                    self.max_applications.unwrap_or_else(default_max_applications),
                    "max_applications",
                )?,
                max_applications_per_minute: at_least_one(
                    self.max_applications_per_minute.unwrap_or_else(default_max_applications_per_minute),
                    "max_applications_per_minute",
                )?,
            },
        }))
    }
}

impl StorageConfig {
    /// Back to the file form (for `metrics-agent config`).
    pub fn to_file(&self) -> StorageFile {
        StorageFile {
            database_url: Some(super::db::redact(&self.database_url)),
            agent_id: self.agent_id_suffix.clone(),
            enabled: Some(true),
            flush_interval_ms: Some(self.flush_interval.as_millis() as u64),
            retention_1m_days: Some(self.retention.minute_days),
            retention_1h_days: Some(self.retention.hour_days),
            retention_1d_days: Some(self.retention.day_days),
            retention_detail_days: Some(self.retention.detail_days),
            retention_fscore_days: Some(self.retention.fscore_days),
            detail_sample_every: Some(self.detail_sample_every),
            max_buffered_series: Some(self.max_buffered_series),
            max_buffered_mib: Some(self.max_buffered_bytes >> 20),
            max_buffered_details: Some(self.max_buffered_details),
            fscore_beta: Some(self.fscore_beta),
            max_detail_rows_per_minute: Some(self.max_detail_rows_per_minute),
            max_size_mib: Some(self.max_size_bytes >> 20),
            budget_check_seconds: Some(self.budget_check_every.as_secs()),
            max_models: Some(self.names.max_models),
            max_models_per_minute: Some(self.names.max_models_per_minute),
            max_applications: Some(self.names.max_applications),
            max_applications_per_minute: Some(self.names.max_applications_per_minute),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = StorageFile::default().resolve(None, None, false).unwrap().unwrap();
        assert_eq!(c.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(c.retention.minute_days, 7);
        assert_eq!(c.retention.day_days, 730);
        let file = StorageFile { database_url: Some("sqlite:///tmp/x.db".into()), ..Default::default() };
        let c = file.resolve(Some("postgres://h/db"), Some("a"), false).unwrap().unwrap();
        assert_eq!(c.database_url, "postgres://h/db");
        assert!(c.agent_id.ends_with("/a"));
        assert!(file.resolve(None, None, true).unwrap().is_none());
        let defaults = StorageFile::default().resolve(None, None, false).unwrap().unwrap();
        assert_eq!((defaults.max_size_bytes, defaults.max_detail_rows_per_minute), (1024 << 20, 600));
        assert_eq!((defaults.names.max_models, defaults.names.max_applications_per_minute), (200, 50));
        let shown = defaults.to_file();
        assert_eq!((shown.max_size_mib, shown.max_models_per_minute), (Some(1024), Some(50)), "shown by `config`");
        let none = StorageFile { max_models: Some(0), ..Default::default() };
        let e = none.resolve(None, None, false).unwrap_err().to_string();
        assert_eq!(e, "[storage] max_models = 0: use 1 to 100000");
        assert_eq!((defaults.budget_check_every, shown.budget_check_seconds), (Duration::from_secs(60), Some(60)));
        let quick = StorageFile { budget_check_seconds: Some(1), ..Default::default() };
        assert_eq!(quick.resolve(None, None, false).unwrap().unwrap().budget_check_every, Duration::from_secs(1));
        for n in [0, 3_601] {
            let bad = StorageFile { budget_check_seconds: Some(n), ..Default::default() };
            let e = bad.resolve(None, None, false).unwrap_err().to_string();
            assert_eq!(e, format!("[storage] budget_check_seconds = {n}: use 1 to 3600"));
        }
        let bad = StorageFile { retention_1h_days: Some(0), ..Default::default() };
        assert!(bad.resolve(None, None, false).unwrap_err().to_string().contains("retention_1h_days"));
    }
}
