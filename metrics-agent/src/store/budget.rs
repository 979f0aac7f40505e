//! The size budget (`[storage] max_size_mib`), beside age-based retention:
//! when the database is larger than the budget, the oldest detail rows are
//! deleted, then the oldest minute rows (then hour and day rows, only if a
//! budget is too small for them), down to 90 % of the budget, and the
//! deleted rows are counted.
//!
//! What is measured:
//! - **SQLite**: the pages in use, `(page_count − freelist_count) × page_size`
//!   (exact; freed pages are reused by later writes, so the file stays at
//!   about the budget).
//! - **PostgreSQL**: rows × the bytes a row takes on disk (heap and
//!   indexes, measured by `cargo xtask bench storage`, see docs/storage.md).
//!   Disk space of deleted rows is only reusable after a VACUUM, so the
//!   relation sizes would not shrink and cannot steer deletion; the tables
//!   deleted from are vacuumed at once so that new rows reuse the space.

use sqlx::Row;

use super::db::{Store, StoreError};

/// Tables the budget deletes from, in order, with their time column.
pub const DROP_ORDER: [(&str, &str); 4] = [
    ("request_details", "ts_ms"),
    ("metrics_1m", "bucket_start"),
    ("metrics_1h", "bucket_start"),
    ("metrics_1d", "bucket_start"),
];

/// Bytes a row takes on disk in PostgreSQL (heap tuple, line pointer,
/// primary key / time index entries, page fill), measured by `cargo xtask
/// bench storage` (docs/storage.md, "Bytes per row"); metric rows with
/// typical sketches.
pub fn postgres_row_bytes(table: &str) -> u64 {
    match table {
        "request_details" => 260,
        "metrics_1m" | "metrics_1h" | "metrics_1d" => 460,
        _ => 150, // fscore_results: five short texts, two booleans, two numbers
    }
}

/// Bytes a row takes in SQLite (the same measurement): only used to size
/// each deletion step, the size itself is measured exactly.
fn sqlite_row_bytes(table: &str) -> u64 {
    match table {
        "request_details" => 195,
        _ => 280,
    }
}

/// Deletion aims at this fraction of the budget, so that it does not run again at the next check.
const TARGET_PERCENT: u64 = 90;

/// Deletion steps per check at most (each re-measures).
const MAX_STEPS: usize = 64;

/// What one check did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Enforced {
    pub size_before: u64,
    pub size_after: u64,
    /// Rows deleted per table (only tables with deletions).
    pub dropped: Vec<(&'static str, u64)>,
    /// Every droppable table is empty and the budget is still exceeded.
    pub exhausted: bool,
}

/// The size of the database as the budget counts it (see the module comment).
pub async fn size(store: &Store) -> Result<u64, StoreError> {
    match store {
        Store::Sqlite(pool) => {
            let mut conn = pool.acquire().await?;
            let mut pragma = async |name: &str| -> Result<i64, StoreError> {
                Ok(sqlx::query_scalar::<_, i64>(&format!("PRAGMA {name}")).fetch_one(&mut *conn).await?)
            };
            let pages = pragma("page_count").await? - pragma("freelist_count").await?;
            Ok((pages.max(0) * pragma("page_size").await?) as u64)
        }
        Store::Postgres(pool) => {
            let mut total = 0;
            for table in DROP_ORDER.iter().map(|(t, _)| *t).chain(["fscore_results"]) {
                let rows: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(pool).await?;
                total += rows as u64 * postgres_row_bytes(table);
            }
            Ok(total)
        }
    }
}

/// Disk bytes of a PostgreSQL table: all its partitions, with indexes and TOAST.
pub async fn postgres_table_bytes(pool: &sqlx::PgPool, table: &str) -> Result<u64, StoreError> {
    let bytes: i64 = sqlx::query_scalar(
        "SELECT (pg_total_relation_size(to_regclass($1)) + COALESCE((SELECT SUM(pg_total_relation_size(inhrelid)) \
         FROM pg_inherits WHERE inhparent = to_regclass($1)), 0))::BIGINT",
    )
    .bind(table)
    .fetch_one(pool)
    .await?;
    Ok(bytes.max(0) as u64)
}

/// Keeps the database within `budget` bytes (0: no budget).
pub async fn enforce(store: &Store, budget: u64) -> Result<Enforced, StoreError> {
    let before = size(store).await?;
    let mut done = Enforced { size_before: before, size_after: before, ..Enforced::default() };
    if budget == 0 || before <= budget {
        return Ok(done);
    }
    let target = budget / 100 * TARGET_PERCENT;
    let mut vacuum: Vec<&'static str> = Vec::new();
    for _ in 0..MAX_STEPS {
        let now = size(store).await?;
        done.size_after = now;
        if now <= target {
            break;
        }
        let Some((table, column)) = first_with_rows(store).await? else {
            done.exhausted = true;
            break;
        };
        let per_row = match store {
            Store::Sqlite(_) => sqlite_row_bytes(table),
            Store::Postgres(_) => postgres_row_bytes(table),
        };
        let rows = (now - target).div_ceil(per_row).max(100);
        let deleted = drop_oldest(store, table, column, rows as i64).await?;
        match done.dropped.iter_mut().find(|(t, _)| *t == table) {
            Some((_, n)) => *n += deleted,
            None => done.dropped.push((table, deleted)),
        }
        if !vacuum.contains(&table) {
            vacuum.push(table);
        }
    }
    if let Store::Postgres(pool) = store {
        for table in vacuum {
            // Outside a transaction; makes the deleted rows' space reusable now.
            sqlx::raw_sql(&format!("VACUUM {table}")).execute(pool).await?;
        }
    }
    done.size_after = size(store).await?;
    Ok(done)
}

async fn first_with_rows(store: &Store) -> Result<Option<(&'static str, &'static str)>, StoreError> {
    for (table, column) in DROP_ORDER {
        let sql = format!("SELECT 1 FROM {table} LIMIT 1");
        let any = match store {
            Store::Sqlite(pool) => sqlx::query(&sql).fetch_optional(pool).await?.is_some(),
            Store::Postgres(pool) => sqlx::query(&sql).fetch_optional(pool).await?.is_some(),
        };
        if any {
            return Ok(Some((table, column)));
        }
    }
    Ok(None)
}

/// Deletes the oldest `rows` rows of `table` (rows sharing the last time
/// deleted are included: a minute's rows go together). Returns rows deleted.
async fn drop_oldest(store: &Store, table: &str, column: &str, rows: i64) -> Result<u64, StoreError> {
    let cutoff_sql = format!(
        "SELECT COALESCE((SELECT {column} FROM {table} ORDER BY {column} LIMIT 1 OFFSET $1), \
         (SELECT MAX({column}) FROM {table}))"
    );
    let delete_sql = format!("DELETE FROM {table} WHERE {column} <= $1");
    macro_rules! on {
        ($pool:expr) => {{
            let row = sqlx::query(&cutoff_sql).bind(rows.saturating_sub(1).max(0)).fetch_one($pool).await?;
            let cutoff: Option<i64> = row.try_get(0)?;
            match cutoff {
                Some(cutoff) => sqlx::query(&delete_sql).bind(cutoff).execute($pool).await?.rows_affected(),
                None => 0,
            }
        }};
    }
    Ok(match store {
        Store::Sqlite(pool) => on!(pool),
        Store::Postgres(pool) => on!(pool),
    })
}
