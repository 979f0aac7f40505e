//! The database behind storage: SQLite (embedded default) or PostgreSQL
//! (fleets), through sqlx with runtime-checked queries. One flush is one
//! transaction that merges the batch's minute rows, and the hour and day
//! rows they roll up to, into what is stored (read, merge sketches and sums,
//! write), adds the sampled detail rows and records the flush's sequence
//! number — so a flush is applied entirely or not at all, and never twice.

use std::{collections::HashMap, ops::ControlFlow, str::FromStr, time::Duration};

use futures_util::TryStreamExt;
use rust_decimal::Decimal;
use sqlx::{
    ConnectOptions, PgPool, QueryBuilder, Row, SqlitePool,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

pub use super::db_types::{Batch, Cutoffs, StoreError};
use super::{
    detail::DetailRow,
    rollup::{Aggregate, SeriesKey, Tier, roll_up},
    sketch::Sketch,
};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

/// Rows per multi-row INSERT (28 parameters each stays far below both
/// databases' parameter limits).
const ROWS_PER_STATEMENT: usize = 200;

/// Statements slower than this are logged at debug level (large queries are
/// expected to take a while; the flush duration is exported as a metric).
const SLOW_STATEMENT: Duration = Duration::from_secs(1);

// The flush's multi-row statements (`INSERT ... VALUES (..), (..)` and
// `IN (..)` lists) differ with every row count, so they are built with
// `persistent(false)`: sqlx would otherwise keep up to 100 prepared
// statements per pooled connection, each a compiled program for up to 200
// rows of 30 columns, and the agent's memory would grow with every new row
// count until the caches were full (docs/benchmarks.md, soak).

/// Columns of a metrics row, in the order they are bound.
const METRIC_COLUMNS: &str = "bucket_start, agent_id, application_id, side, provider, model, request_count, \
    error_count, cache_hits, usage_unknown_count, unpriced_count, tokens_input_sum, tokens_output_sum, \
    tokens_cached_sum, tokens_cache_creation_sum, tokens_reasoning_sum, cost_usd_sum, latency_p50_us, \
    latency_p90_us, latency_p99_us, latency_max_us, ttfb_p50_us, ttfb_p90_us, ttfb_p99_us, ttfb_max_us, \
    latency_sketch, ttfb_sketch, ttft_sketch, tpot_sketch, estimate, captured_count";
/// Columns read back to merge or query (cost as text: exact in both databases).
/// Flush sequences of processes that stopped flushing long ago (one row per
/// process start accumulates otherwise): older than the minute tier's cutoff.
const FORGET_OLD_FLUSHES: &str = "DELETE FROM agent_flushes WHERE last_flush_unix_ms < $1";

const METRIC_READ_COLUMNS: &str = "bucket_start, agent_id, application_id, side, provider, model, request_count, \
    error_count, cache_hits, usage_unknown_count, unpriced_count, tokens_input_sum, tokens_output_sum, \
    tokens_cached_sum, tokens_cache_creation_sum, tokens_reasoning_sum, CAST(cost_usd_sum AS TEXT) AS cost, \
    latency_sketch, ttfb_sketch, ttft_sketch, tpot_sketch, estimate, captured_count";
const DETAIL_COLUMNS: &str = "ts_ms, agent_id, flush_seq, application_id, side, provider, upstream_provider, \
    operation, endpoint, model_requested, model_returned, status, error_type, streaming, cache_hit, ttfb_us, \
    duration_us, tokens_input, tokens_output, tokens_cached, tokens_cache_creation, tokens_reasoning, cost_usd, \
    session_id, user_id, truncated, deployment, ttft_us, tpot_us, stream_events";

/// A connection pool to one of the two databases.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the concrete pool and `$pg` telling
/// whether it is PostgreSQL; the body is type-checked once per database.
macro_rules! on_pool {
    ($store:expr, |$pool:ident, $pg:ident| $body:expr) => {
        match $store {
            Store::Sqlite($pool) => {
                #[allow(unused_variables, reason = "not every body needs the dialect")]
                let $pg = false;
                $body
            }
            Store::Postgres($pool) => {
                #[allow(unused_variables, reason = "not every body needs the dialect")]
                let $pg = true;
                $body
            }
        }
    };
}

/// Reads the aggregate columns of `METRIC_READ_COLUMNS` from a row.
macro_rules! read_aggregate {
    ($row:expr) => {{
        let row = $row;
        let sketch = |name: &str| -> Result<Sketch, StoreError> {
            let bytes: Vec<u8> = row.try_get(name)?;
            Sketch::from_bytes(&bytes).map_err(|e| StoreError::Corrupt(format!("{name}: {e}")))
        };
        let optional_sketch = |name: &str| {
            let bytes: Option<Vec<u8>> = row.try_get(name)?;
            match bytes {
                Some(bytes) => Sketch::from_bytes(&bytes).map_err(|e| StoreError::Corrupt(format!("{name}: {e}"))),
                None => Ok(Sketch::default()),
            }
        };
        let cost: String = row.try_get("cost")?;
        Ok::<_, StoreError>(Aggregate {
            request_count: row.try_get("request_count")?,
            error_count: row.try_get("error_count")?,
            cache_hits: row.try_get("cache_hits")?,
            usage_unknown_count: row.try_get("usage_unknown_count")?,
            unpriced_count: row.try_get("unpriced_count")?,
            tokens_input: row.try_get("tokens_input_sum")?,
            tokens_output: row.try_get("tokens_output_sum")?,
            tokens_cached: row.try_get("tokens_cached_sum")?,
            tokens_cache_creation: row.try_get("tokens_cache_creation_sum")?,
            tokens_reasoning: row.try_get("tokens_reasoning_sum")?,
            cost_usd: parse_decimal(&cost)?,
            latency: sketch("latency_sketch")?,
            ttfb: sketch("ttfb_sketch")?,
            // Rows written before migration 0003 have none.
            ttft: optional_sketch("ttft_sketch")?,
            tpot: optional_sketch("tpot_sketch")?,
            estimate: row.try_get("estimate")?,
            captured_count: row.try_get("captured_count")?,
        })
    }};
}

/// Reads the key columns of a metrics row.
macro_rules! read_key {
    ($row:expr) => {{
        let row = $row;
        Ok::<_, StoreError>((
            SeriesKey {
                bucket_start: row.try_get("bucket_start")?,
                application_id: row.try_get("application_id")?,
                side: row.try_get("side")?,
                provider: row.try_get("provider")?,
                model: row.try_get("model")?,
            },
            row.try_get::<String, _>("agent_id")?,
        ))
    }};
}

fn parse_decimal(text: &str) -> Result<Decimal, StoreError> {
    Decimal::from_str(text)
        .or_else(|_| Decimal::from_scientific(text))
        .map_err(|e| StoreError::Corrupt(format!("cost `{text}`: {e}")))
}

/// Rows a committed flush wrote, per table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub minute_rows: u64,
    pub hour_rows: u64,
    pub day_rows: u64,
    pub detail_rows: u64,
    /// The flush had already been committed (a retry after a lost answer).
    pub already_applied: bool,
}

/// Filters of a metrics read.
#[derive(Debug, Clone, Default)]
pub struct RowFilter {
    pub application: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub side: Option<String>,
}

impl Store {
    /// Opens (SQLite: creates the file and its directory) without requiring
    /// PostgreSQL to be up: its pool connects lazily and the writer retries.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)
                .map_err(|_| StoreError::BadUrl(redact(url)))?
                .log_slow_statements(log::LevelFilter::Debug, SLOW_STATEMENT);
            let pool = PgPoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(5))
                .connect_lazy_with(options);
            return Ok(Store::Postgres(pool));
        }
        let path = sqlite_path(url).ok_or_else(|| StoreError::BadUrl(redact(url)))?;
        create_private(std::path::Path::new(&path))?;
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL: a committed flush survives the agent being killed
            // (kill -9); a power loss may lose the last commits.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .log_slow_statements(log::LevelFilter::Debug, SLOW_STATEMENT);
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        Ok(Store::Sqlite(pool))
    }

    /// One direct connection attempt to a PostgreSQL URL (the pool hides
    /// why it cannot connect behind a timeout): `Err` is one line naming the
    /// server, the root cause and what to check. SQLite URLs always pass.
    pub async fn probe(url: &str) -> Result<(), String> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Ok(());
        }
        let options = PgConnectOptions::from_str(url).map_err(|_| StoreError::BadUrl(redact(url)).to_string())?;
        let server = format!("{}:{}", options.get_host(), options.get_port());
        let attempt = tokio::time::timeout(
            Duration::from_secs(5),
            <sqlx::PgConnection as sqlx::Connection>::connect_with(&options),
        )
        .await;
        let cause = match attempt {
            Ok(Ok(conn)) => {
                let _ = sqlx::Connection::close(conn).await;
                return Ok(());
            }
            Ok(Err(sqlx::Error::Io(e))) => e.to_string(),
            Ok(Err(sqlx::Error::Database(e))) => e.message().to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer within 5 s".to_string(),
        };
        Err(format!(
            "cannot connect to PostgreSQL at {server}: {cause} (is it running there, and does the URL's user, password and database exist?)"
        ))
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Applies pending migrations (PostgreSQL: under sqlx's advisory lock,
    /// so agents starting together do not race).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await?,
            Store::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
        }
        Ok(())
    }

    /// Applies the migrations up to `version` only (tests of a migration on
    /// a database that holds rows of the schema before it).
    #[cfg(test)]
    pub async fn migrate_to(&self, version: i64) -> Result<(), StoreError> {
        let upto = |m: &Migrator| Migrator {
            migrations: m.migrations.iter().filter(|x| x.version <= version).cloned().collect::<Vec<_>>().into(),
            ignore_missing: m.ignore_missing,
            locking: m.locking,
            no_tx: m.no_tx,
        };
        match self {
            Store::Sqlite(pool) => upto(&SQLITE_MIGRATIONS).run(pool).await?,
            Store::Postgres(pool) => upto(&POSTGRES_MIGRATIONS).run(pool).await?,
        }
        Ok(())
    }

    /// Runs one statement (tests: rows of an older schema).
    #[cfg(test)]
    pub async fn execute(&self, sql: &str) -> Result<(), StoreError> {
        on_pool!(self, |pool, pg| {
            sqlx::raw_sql(sql).execute(pool).await?;
        });
        Ok(())
    }

    /// The last committed flush of `agent` (0 when none).
    #[cfg(test)]
    pub async fn last_flush_seq(&self, agent: &str) -> Result<i64, StoreError> {
        let sql = "SELECT last_flush_seq FROM agent_flushes WHERE agent_id = $1";
        let seq: Option<i64> =
            on_pool!(self, |pool, pg| sqlx::query_scalar(sql).bind(agent).fetch_optional(pool).await?);
        Ok(seq.unwrap_or(0))
    }

    /// Writes one flush in one transaction, its sequence kept under the
    /// agent id itself (one process per agent id: tests and benchmarks).
    pub async fn write_batch(&self, agent: &str, batch: &mut Batch, now_ms: i64) -> Result<Written, StoreError> {
        self.write_batch_as(agent, agent, batch, now_ms).await
    }

    /// Writes one flush in one transaction (see the module comment). Rows
    /// carry `agent`; the flush sequence that makes retries exactly-once is
    /// kept under `flush_key`, unique per process: two processes sharing an
    /// agent id by mistake both land their flushes (their rows merge)
    /// instead of one discarding the other's as a duplicate.
    pub async fn write_batch_as(
        &self,
        agent: &str,
        flush_key: &str,
        batch: &mut Batch,
        now_ms: i64,
    ) -> Result<Written, StoreError> {
        if let Store::Postgres(pool) = self {
            super::partitions::ensure_for_batch(pool, batch).await?;
        }
        let tiers: Vec<(Tier, HashMap<SeriesKey, Aggregate>)> = Tier::ALL
            .iter()
            .map(|&t| (t, if t == Tier::Minute { batch.minutes.clone() } else { roll_up(&batch.minutes, t) }))
            .collect();
        on_pool!(self, |pool, pg| {
            let mut tx = pool.begin().await?;
            // PostgreSQL: lock the agent's row, so two processes that share an
            // agent id by mistake take turns instead of losing updates.
            let select_last = if pg {
                "SELECT last_flush_seq FROM agent_flushes WHERE agent_id = $1 FOR UPDATE"
            } else {
                "SELECT last_flush_seq FROM agent_flushes WHERE agent_id = $1"
            };
            let last: Option<i64> = sqlx::query_scalar(select_last).bind(flush_key).fetch_optional(&mut *tx).await?;
            let seq = *batch.seq.get_or_insert(last.unwrap_or(0) + 1);
            if last.is_some_and(|last| last >= seq) {
                tx.rollback().await?;
                return Ok(Written { already_applied: true, ..Written::default() });
            }
            let mut written = Written::default();
            for (tier, mut rows) in tiers {
                // Merge what is stored for these buckets into the new values.
                let mut buckets: Vec<i64> = rows.keys().map(|k| k.bucket_start).collect();
                buckets.sort_unstable();
                buckets.dedup();
                for chunk in buckets.chunks(100) {
                    let mut q = QueryBuilder::new(format!(
                        "SELECT {METRIC_READ_COLUMNS} FROM {} WHERE agent_id = ",
                        tier.table()
                    ));
                    q.push_bind(agent).push(" AND bucket_start IN (");
                    let mut list = q.separated(", ");
                    for b in chunk {
                        list.push_bind(*b);
                    }
                    q.push(")");
                    for row in q.build().persistent(false).fetch_all(&mut *tx).await? {
                        let (key, _) = read_key!(&row)?;
                        if let Some(new) = rows.get_mut(&key) {
                            new.merge(&read_aggregate!(&row)?);
                        }
                    }
                }
                let rows: Vec<(SeriesKey, Aggregate)> = rows.into_iter().collect();
                for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                    let mut q = QueryBuilder::new(format!("INSERT INTO {} ({METRIC_COLUMNS}) ", tier.table()));
                    q.push_values(chunk, |mut b, (k, a)| {
                        let quantiles = |s: &Sketch| [0.5, 0.9, 0.99].map(|q| s.quantile(q).unwrap_or(0) as i64);
                        let [l50, l90, l99] = quantiles(&a.latency);
                        let [t50, t90, t99] = quantiles(&a.ttfb);
                        b.push_bind(k.bucket_start)
                            .push_bind(agent.to_string())
                            .push_bind(k.application_id.clone())
                            .push_bind(k.side.clone())
                            .push_bind(k.provider.clone())
                            .push_bind(k.model.clone())
                            .push_bind(a.request_count)
                            .push_bind(a.error_count)
                            .push_bind(a.cache_hits)
                            .push_bind(a.usage_unknown_count)
                            .push_bind(a.unpriced_count)
                            .push_bind(a.tokens_input)
                            .push_bind(a.tokens_output)
                            .push_bind(a.tokens_cached)
                            .push_bind(a.tokens_cache_creation)
                            .push_bind(a.tokens_reasoning);
                        if pg {
                            b.push("CAST(")
                                .push_bind_unseparated(a.cost_usd.to_string())
                                .push_unseparated(" AS NUMERIC)");
                        } else {
                            b.push_bind(a.cost_usd.to_string());
                        }
                        b.push_bind(l50)
                            .push_bind(l90)
                            .push_bind(l99)
                            .push_bind(a.latency.max() as i64)
                            .push_bind(t50)
                            .push_bind(t90)
                            .push_bind(t99)
                            .push_bind(a.ttfb.max() as i64)
                            .push_bind(a.latency.to_bytes())
                            .push_bind(a.ttfb.to_bytes())
                            .push_bind(a.ttft.to_bytes())
                            .push_bind(a.tpot.to_bytes())
                            .push_bind(a.estimate)
                            .push_bind(a.captured_count);
                    });
                    q.push(
                        " ON CONFLICT (bucket_start, agent_id, application_id, side, provider, model) DO UPDATE SET ",
                    );
                    let updates: Vec<String> =
                        METRIC_COLUMNS.split(", ").skip(6).map(|c| format!("{c} = excluded.{c}")).collect();
                    q.push(updates.join(", "));
                    q.build().persistent(false).execute(&mut *tx).await?;
                }
                let n = rows.len() as u64;
                match tier {
                    Tier::Minute => written.minute_rows = n,
                    Tier::Hour => written.hour_rows = n,
                    Tier::Day => written.day_rows = n,
                }
            }
            for chunk in batch.details.chunks(ROWS_PER_STATEMENT) {
                let mut q = QueryBuilder::new(format!("INSERT INTO request_details ({DETAIL_COLUMNS}) "));
                q.push_values(chunk, |mut b, d| {
                    b.push_bind(d.ts_ms)
                        .push_bind(agent.to_string())
                        .push_bind(seq)
                        .push_bind(d.application_id.clone())
                        .push_bind(d.side.clone())
                        .push_bind(d.provider.clone())
                        .push_bind(d.upstream_provider.clone())
                        .push_bind(d.operation.clone())
                        .push_bind(d.endpoint.clone())
                        .push_bind(d.model_requested.clone())
                        .push_bind(d.model_returned.clone())
                        .push_bind(i32::from(d.status))
                        .push_bind(d.error_type.clone())
                        .push_bind(d.streaming)
                        .push_bind(d.cache_hit)
                        .push_bind(d.ttfb_us)
                        .push_bind(d.duration_us)
                        .push_bind(d.tokens_input)
                        .push_bind(d.tokens_output)
                        .push_bind(d.tokens_cached)
                        .push_bind(d.tokens_cache_creation)
                        .push_bind(d.tokens_reasoning);
                    let cost = d.cost_usd.map(|c| c.to_string());
                    if pg {
                        b.push("CAST(").push_bind_unseparated(cost).push_unseparated(" AS NUMERIC)");
                    } else {
                        b.push_bind(cost);
                    }
                    b.push_bind(d.session_id.clone())
                        .push_bind(d.user_id.clone())
                        .push_bind(d.truncated)
                        .push_bind(d.deployment.clone())
                        .push_bind(d.ttft_us)
                        .push_bind(d.tpot_us)
                        .push_bind(d.stream_events);
                });
                q.build().persistent(false).execute(&mut *tx).await?;
            }
            written.detail_rows = batch.details.len() as u64;
            sqlx::query(
                "INSERT INTO agent_flushes (agent_id, last_flush_seq, last_flush_unix_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (agent_id) DO UPDATE SET last_flush_seq = excluded.last_flush_seq, \
                 last_flush_unix_ms = excluded.last_flush_unix_ms",
            )
            .bind(flush_key)
            .bind(seq)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(written)
        })
    }

    /// The start of the oldest row of `tier`, if it has any.
    pub async fn oldest_bucket(&self, tier: Tier) -> Result<Option<i64>, StoreError> {
        let sql = format!("SELECT MIN(bucket_start) FROM {}", tier.table());
        Ok(on_pool!(self, |pool, pg| sqlx::query_scalar::<_, Option<i64>>(&sql).fetch_one(pool).await?))
    }

    /// Visits the metric rows of `tier` with `from <= bucket_start < to`,
    /// every agent, in time order as they stream in (memory does not grow
    /// with the rows read), until `visit` says to stop.
    pub async fn for_each_row(
        &self,
        tier: Tier,
        from: i64,
        to: i64,
        filter: &RowFilter,
        mut visit: impl FnMut(SeriesKey, String, Aggregate) -> Result<ControlFlow<()>, StoreError>,
    ) -> Result<(), StoreError> {
        on_pool!(self, |pool, pg| {
            let mut q =
                QueryBuilder::new(format!("SELECT {METRIC_READ_COLUMNS} FROM {} WHERE bucket_start >= ", tier.table()));
            q.push_bind(from).push(" AND bucket_start < ").push_bind(to);
            for (column, value) in [
                ("application_id", &filter.application),
                ("provider", &filter.provider),
                ("model", &filter.model),
                ("side", &filter.side),
            ] {
                if let Some(v) = value {
                    q.push(format!(" AND {column} = ")).push_bind(v.clone());
                }
            }
            q.push(" ORDER BY bucket_start");
            let query = q.build();
            let mut rows = query.fetch(pool);
            while let Some(row) = rows.try_next().await? {
                let (key, agent) = read_key!(&row)?;
                if visit(key, agent, read_aggregate!(&row)?)?.is_break() {
                    break;
                }
            }
            Ok(())
        })
    }

    /// The rows `for_each_row` visits, collected.
    #[cfg(test)]
    pub async fn read_rows(
        &self,
        tier: Tier,
        from: i64,
        to: i64,
        filter: &RowFilter,
    ) -> Result<Vec<(SeriesKey, String, Aggregate)>, StoreError> {
        let mut out = Vec::new();
        self.for_each_row(tier, from, to, filter, |k, a, v| {
            out.push((k, a, v));
            Ok(ControlFlow::Continue(()))
        })
        .await?;
        Ok(out)
    }

    /// Sampled detail rows with `from_ms <= ts_ms < to_ms`, oldest first, at
    /// most `limit`, continuing after `after`; with the position after the
    /// last row returned when more rows follow.
    pub async fn read_details(
        &self,
        from_ms: i64,
        to_ms: i64,
        after: Option<DetailPosition>,
        limit: usize,
    ) -> Result<(Vec<DetailRow>, Option<DetailPosition>), StoreError> {
        // Rows of one millisecond are told apart by the rest of the order; a
        // position is (the last millisecond returned, rows of it already returned).
        let sql = "SELECT ts_ms, application_id, side, provider, upstream_provider, operation, endpoint, \
            model_requested, model_returned, status, error_type, streaming, cache_hit, ttfb_us, duration_us, \
            tokens_input, tokens_output, tokens_cached, tokens_cache_creation, tokens_reasoning, \
            CAST(cost_usd AS TEXT) AS cost, session_id, user_id, truncated, deployment, ttft_us, tpot_us, \
            stream_events FROM request_details \
            WHERE ts_ms >= $1 AND ts_ms < $2 \
            ORDER BY ts_ms, agent_id, flush_seq, side, provider, endpoint, status, duration_us, ttfb_us \
            LIMIT $3 OFFSET $4";
        let (start_ms, offset) = match after {
            Some(p) if p.ts_ms >= from_ms => (p.ts_ms, p.rows_at_ts.max(0)),
            _ => (from_ms, 0),
        };
        let mut out = self.detail_rows(sql, start_ms, to_ms, limit as i64 + 1, offset).await?;
        if out.len() <= limit {
            return Ok((out, None));
        }
        out.truncate(limit);
        let last = out[limit - 1].ts_ms;
        let at_last = out.iter().filter(|r| r.ts_ms == last).count() as i64;
        let next = DetailPosition { ts_ms: last, rows_at_ts: at_last + if last == start_ms { offset } else { 0 } };
        Ok((out, Some(next)))
    }

    async fn detail_rows(
        &self,
        sql: &str,
        from_ms: i64,
        to_ms: i64,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<DetailRow>, StoreError> {
        on_pool!(self, |pool, pg| {
            let rows = sqlx::query(sql).bind(from_ms).bind(to_ms).bind(limit).bind(offset).fetch_all(pool).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let cost: Option<String> = row.try_get("cost")?;
                out.push(DetailRow {
                    ts_ms: row.try_get("ts_ms")?,
                    application_id: row.try_get("application_id")?,
                    side: row.try_get("side")?,
                    provider: row.try_get("provider")?,
                    upstream_provider: row.try_get("upstream_provider")?,
                    operation: row.try_get("operation")?,
                    endpoint: row.try_get("endpoint")?,
                    model_requested: row.try_get("model_requested")?,
                    model_returned: row.try_get("model_returned")?,
                    status: u16::try_from(row.try_get::<i32, _>("status")?).unwrap_or(0),
                    error_type: row.try_get("error_type")?,
                    streaming: row.try_get("streaming")?,
                    cache_hit: row.try_get("cache_hit")?,
                    ttfb_us: row.try_get("ttfb_us")?,
                    duration_us: row.try_get("duration_us")?,
                    tokens_input: row.try_get("tokens_input")?,
                    tokens_output: row.try_get("tokens_output")?,
                    tokens_cached: row.try_get("tokens_cached")?,
                    tokens_cache_creation: row.try_get("tokens_cache_creation")?,
                    tokens_reasoning: row.try_get("tokens_reasoning")?,
                    cost_usd: cost.as_deref().map(parse_decimal).transpose()?,
                    session_id: row.try_get("session_id")?,
                    user_id: row.try_get("user_id")?,
                    truncated: row.try_get("truncated")?,
                    deployment: row.try_get("deployment")?,
                    ttft_us: row.try_get("ttft_us")?,
                    tpot_us: row.try_get("tpot_us")?,
                    stream_events: row.try_get("stream_events")?,
                });
            }
            Ok(out)
        })
    }

    /// Deletes rows older than each cutoff: SQLite deletes rows, PostgreSQL
    /// drops whole monthly partitions that end at or before the cutoff
    /// (rows are kept until their whole month has expired). Returns rows
    /// deleted (SQLite) or partitions dropped (PostgreSQL).
    pub async fn apply_retention(&self, cutoffs: &Cutoffs) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(pool) => {
                let mut n = 0;
                for (table, column, cutoff) in cutoffs.columns() {
                    let sql = format!("DELETE FROM {table} WHERE {column} < $1");
                    n += sqlx::query(&sql).bind(cutoff).execute(pool).await?.rows_affected();
                }
                n += sqlx::query(FORGET_OLD_FLUSHES)
                    .bind(cutoffs.minute.saturating_mul(1000))
                    .execute(pool)
                    .await?
                    .rows_affected();
                Ok(n)
            }
            Store::Postgres(pool) => {
                let mut n = super::partitions::drop_expired(pool, cutoffs).await?;
                // F-score results are few: plain rows, deleted by time.
                n += sqlx::query("DELETE FROM fscore_results WHERE ts_ms < $1")
                    .bind(cutoffs.fscore_ms)
                    .execute(pool)
                    .await?
                    .rows_affected();
                n += sqlx::query(FORGET_OLD_FLUSHES)
                    .bind(cutoffs.minute.saturating_mul(1000))
                    .execute(pool)
                    .await?
                    .rows_affected();
                Ok(n)
            }
        }
    }

    /// Closes the pool (waits for connections to be returned).
    pub async fn close(&self) {
        on_pool!(self, |pool, pg| pool.close().await)
    }
}

/// Where a page of detail rows ended: its last millisecond and how many
/// rows of that millisecond were returned so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DetailPosition {
    pub ts_ms: i64,
    pub rows_at_ts: i64,
}

/// Creates the database file's missing directories (mode 0700) and the
/// file itself (0600) unless they exist: stored data (models, costs, user
/// ids) is for the agent's user only. SQLite gives its -wal and -shm files
/// the database file's mode.
fn create_private(path: &std::path::Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StoreError::CreateDir { path: dir.display().to_string(), source })?;
    }
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::CreateDir { path: path.display().to_string(), source }),
    }
}

/// The file path of a SQLite URL (`sqlite:///abs`, `sqlite://rel`, `sqlite:rel`) or of a plain path.
fn sqlite_path(url: &str) -> Option<String> {
    let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path.contains("://") { None } else { Some(path.to_string()) }
}

/// The URL with any password replaced, for messages and logs.
pub fn redact(url: &str) -> String {
    crate::secrets::redact_url(url)
}

/// Sends all queries through the macro so it stays in use in both arms.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(sqlite_path("sqlite:///var/lib/x.db").as_deref(), Some("/var/lib/x.db"));
        assert_eq!(sqlite_path("sqlite:x.db?mode=rwc").as_deref(), Some("x.db"));
        assert_eq!(sqlite_path("/tmp/a.db").as_deref(), Some("/tmp/a.db"));
        assert_eq!(sqlite_path("mysql://h/db"), None);
        assert_eq!(redact("postgres://u:secret@h:5432/db"), "postgres://u:<redacted>@h:5432/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
