//! PostgreSQL monthly range partitions of the time-series tables: created
//! ahead of time (this month and the next ones) and on demand for any month
//! a flush writes to (late records), and dropped whole by retention.
//! Partitions are named `<table>_pYYYYMM`; creation is serialized between
//! agents by an advisory lock.

use std::collections::BTreeSet;

use sqlx::PgPool;
use time::{Date, Month, OffsetDateTime};

use super::db_types::{Batch, Cutoffs, StoreError};

/// Partitioned tables: (name, unit of the partition key in seconds per unit).
/// `metrics_*` are keyed in seconds, `request_details` in milliseconds.
pub const PARTITIONED: [(&str, Unit); 4] = [
    ("metrics_1m", Unit::Seconds),
    ("metrics_1h", Unit::Seconds),
    ("metrics_1d", Unit::Seconds),
    ("request_details", Unit::Millis),
];

/// Months ahead of the current one that are created in advance.
pub const MONTHS_AHEAD: i32 = 2;

/// Key of the advisory lock that serializes partition DDL between agents.
const DDL_LOCK: i64 = 0x006d_615f_7061_7274; // "ma_part"

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Millis,
}

/// A calendar month (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct YearMonth {
    pub year: i32,
    pub month: u8,
}

impl YearMonth {
    pub fn of_unix(seconds: i64) -> Self {
        let t = OffsetDateTime::from_unix_timestamp(seconds.clamp(0, 253_402_300_799))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        Self { year: t.year(), month: t.month() as u8 }
    }

    pub fn next(self) -> Self {
        if self.month == 12 { Self { year: self.year + 1, month: 1 } } else { Self { month: self.month + 1, ..self } }
    }

    /// First second of the month (Unix); the month after December 9999 (the
    /// last month `of_unix` gives) starts at 10000-01-01.
    pub fn start_unix(self) -> i64 {
        const YEAR_10000: i64 = 253_402_300_800;
        let month = Month::try_from(self.month).unwrap_or(Month::January);
        Date::from_calendar_date(self.year, month, 1)
            .map(|d| d.midnight().assume_utc().unix_timestamp())
            .unwrap_or(if self.year > 9999 { YEAR_10000 } else { 0 })
    }

    pub fn end_unix(self) -> i64 {
        self.next().start_unix()
    }

    pub fn suffix(self) -> String {
        format!("p{:04}{:02}", self.year, self.month)
    }

    fn parse_suffix(name: &str, table: &str) -> Option<Self> {
        let digits = name.strip_prefix(table)?.strip_prefix("_p")?;
        if digits.len() != 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let year = digits[..4].parse().ok()?;
        let month: u8 = digits[4..].parse().ok()?;
        (1..=12).contains(&month).then_some(Self { year, month })
    }
}

/// Creates the partition of `table` for `month` unless it exists.
pub async fn ensure(pool: &PgPool, table: &str, unit: Unit, month: YearMonth) -> Result<(), StoreError> {
    let scale = if unit == Unit::Millis { 1000 } else { 1 };
    let name = format!("{table}_{}", month.suffix());
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(DDL_LOCK).execute(&mut *tx).await?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_class WHERE oid = to_regclass($1)")
        .bind(&name)
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_none() {
        let sql = format!(
            "CREATE TABLE {name} PARTITION OF {table} FOR VALUES FROM ({}) TO ({})",
            month.start_unix() * scale,
            month.end_unix() * scale
        );
        sqlx::query(&sql).execute(&mut *tx).await?;
        log::info!("created partition {name}");
    }
    tx.commit().await?;
    Ok(())
}

/// Partitions for the current month and `MONTHS_AHEAD` more, on every table.
pub async fn ensure_ahead(pool: &PgPool, now_unix: i64) -> Result<(), StoreError> {
    let mut month = YearMonth::of_unix(now_unix);
    for _ in 0..=MONTHS_AHEAD {
        for (table, unit) in PARTITIONED {
            ensure(pool, table, unit, month).await?;
        }
        month = month.next();
    }
    Ok(())
}

/// Partitions every row of `batch` needs (late records may be months old).
pub async fn ensure_for_batch(pool: &PgPool, batch: &Batch) -> Result<(), StoreError> {
    let mut months = BTreeSet::new();
    for key in batch.minutes.keys() {
        months.insert(YearMonth::of_unix(key.bucket_start));
        // The day bucket of a minute is in the same month (months start at midnight UTC).
    }
    let detail_months: BTreeSet<YearMonth> =
        batch.details.iter().map(|d| YearMonth::of_unix(d.ts_ms.div_euclid(1000))).collect();
    for (table, unit) in PARTITIONED {
        let wanted = if unit == Unit::Millis { &detail_months } else { &months };
        for &m in wanted {
            if !exists(pool, &format!("{table}_{}", m.suffix())).await? {
                ensure(pool, table, unit, m).await?;
            }
        }
    }
    Ok(())
}

async fn exists(pool: &PgPool, name: &str) -> Result<bool, StoreError> {
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_class WHERE oid = to_regclass($1)")
        .bind(name)
        .fetch_optional(pool)
        .await?;
    Ok(found.is_some())
}

/// Names of `table`'s partitions with their months.
pub async fn list(pool: &PgPool, table: &str) -> Result<Vec<(String, YearMonth)>, StoreError> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = to_regclass($1) ORDER BY 1",
    )
    .bind(table)
    .fetch_all(pool)
    .await?;
    Ok(names.into_iter().filter_map(|n| YearMonth::parse_suffix(&n, table).map(|m| (n, m))).collect())
}

/// Drops partitions whose whole month lies before the table's cutoff.
pub async fn drop_expired(pool: &PgPool, cutoffs: &Cutoffs) -> Result<u64, StoreError> {
    let mut dropped = 0;
    for (table, _, cutoff) in cutoffs.columns() {
        let Some((_, unit)) = PARTITIONED.iter().find(|(t, _)| *t == table) else { continue };
        let cutoff_unix = if *unit == Unit::Millis { cutoff.div_euclid(1000) } else { cutoff };
        for (name, month) in list(pool, table).await? {
            if month.end_unix() <= cutoff_unix {
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(DDL_LOCK).execute(&mut *tx).await?;
                sqlx::query(&format!("DROP TABLE IF EXISTS {name}")).execute(&mut *tx).await?;
                tx.commit().await?;
                log::info!("retention dropped partition {name}");
                dropped += 1;
            }
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months() {
        let m = YearMonth::of_unix(1_767_225_599); // 2025-12-31T23:59:59Z
        assert_eq!(m, YearMonth { year: 2025, month: 12 });
        assert_eq!(m.next(), YearMonth { year: 2026, month: 1 });
        assert_eq!(m.end_unix(), 1_767_225_600);
        assert_eq!(YearMonth::of_unix(1_767_225_600), m.next());
        assert_eq!(m.suffix(), "p202512");
        assert_eq!(YearMonth::parse_suffix("metrics_1m_p202512", "metrics_1m"), Some(m));
        assert_eq!(YearMonth::parse_suffix("metrics_1m_p202513", "metrics_1m"), None);
        assert_eq!(YearMonth::parse_suffix("metrics_1h_p202512", "metrics_1m"), None);
        let last = YearMonth::of_unix(i64::MAX);
        assert_eq!(last, YearMonth { year: 9999, month: 12 });
        assert_eq!((last.start_unix(), last.end_unix()), (253_399_622_400, 253_402_300_800));
    }
}
