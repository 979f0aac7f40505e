//! `metrics-agent bench-storage` (hidden; run by `cargo xtask bench storage`):
//! ingest throughput through the real aggregation and flush path, with an
//! aggregation-only baseline measured in the same run, a 30-day backfill of
//! 1-minute rows, and query times over it. Prints one JSON object.

use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use super::{
    db::{Batch, RowFilter, Store},
    query::{self, Dimension, MetricsQuery},
    rollup::{MinuteAggregator, Room, Tier},
};
use crate::{audit::llm::Usage, records::RequestRecord};

const AGENT: &str = "bench/agent";

fn record(ts_ms: u64, series: usize, i: u64) -> RequestRecord {
    let models = ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "claude-sonnet-4", "gemini-2.0-flash"];
    let providers = ["openai", "openai", "openai", "anthropic", "gcp.gemini"];
    let m = series % models.len();
    RequestRecord {
        timestamp_unix_ms: ts_ms,
        start_ns: 0,
        pid: 1,
        side: "client",
        provider_slot: None,
        upstream_provider: Some(providers[m].into()),
        proxy_overhead_ms: Some(0.2),
        cache_hit: Some(i.is_multiple_of(17)),
        provider: providers[m],
        operation: "chat",
        endpoint: "/v1/chat/completions".into(),
        deployment: None,
        stream_timing: Default::default(),
        model_requested: Some(models[m].into()),
        model_returned: Some(models[m].into()),
        status: if i.is_multiple_of(50) { 429 } else { 200 },
        error_type: None,
        streaming: i.is_multiple_of(3),
        tokens: Usage { input: Some(100 + i % 900), output: Some(20 + i % 300), ..Default::default() },
        ttfb_ms: 50.0 + (i % 997) as f64,
        duration_ms: 200.0 + ((i * 7_919) % 20_000) as f64,
        session_id: None,
        user_id: None,
        api_key_hash: None,
        truncated: false,
        cost_usd: Some(rust_decimal::Decimal::new((i % 1000) as i64 + 1, 7)),
        application_id: Some(format!("app-{}", series / models.len())),
        rate_limits: Default::default(),
        pairing: Default::default(),
        sample_every: 1,
    }
}

/// Records per second through aggregation alone, and through aggregation
/// plus flushes (one per `per_flush` records, as the writer does).
async fn ingest(store: &Store, series: usize, total: u64, per_flush: u64, start_ms: u64) -> Result<(f64, f64)> {
    let t = Instant::now();
    let mut agg = MinuteAggregator::default();
    for i in 0..total {
        agg.add(&record(start_ms + i * 10, (i as usize) % series, i), Room::UNBOUNDED);
    }
    std::hint::black_box(&agg);
    let aggregate_only = total as f64 / t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut i = 0;
    while i < total {
        let mut agg = MinuteAggregator::default();
        let end = (i + per_flush).min(total);
        for j in i..end {
            agg.add(&record(start_ms + j * 10, (j as usize) % series, j), Room::UNBOUNDED);
        }
        let mut batch = Batch { seq: None, bytes: 0, minutes: agg.rows, details: Vec::new(), records: end - i };
        store.write_batch(AGENT, &mut batch, 0).await?;
        i = end;
    }
    Ok((aggregate_only, total as f64 / t.elapsed().as_secs_f64()))
}

/// Records per minute row in the size measurement (a busy series: its
/// sketches hold a few dozen buckets).
const RECORDS_PER_MEASURED_ROW: u64 = 20;

/// Bytes one detail row and one minute row take in the database, measured
/// by writing them into the (fresh) database: SQLite by the pages in use,
/// PostgreSQL by the disk size of the table (heap, indexes, TOAST). The
/// SQLite minute row includes its share of the hour and day rows (1/60 and
/// 1/1440 of a row each), which the same flush writes.
async fn row_bytes(store: &Store, start_ms: u64) -> Result<(f64, f64)> {
    const DETAILS: u64 = 20_000;
    const MINUTES: u64 = 1_440;
    const SERIES: usize = 5;
    let before = measured(store, "request_details").await?;
    for chunk in 0..DETAILS / 2_000 {
        let details = (0..2_000)
            .map(|i| {
                let n = chunk * 2_000 + i;
                let mut r = record(start_ms + n * 50, (n as usize) % SERIES, n);
                r.session_id = Some(format!("session-{}", n % 300));
                r.user_id = Some(format!("user-{}@example.com", n % 1_000));
                super::detail::DetailRow::of(&r)
            })
            .collect();
        let mut batch = Batch { seq: None, bytes: 0, minutes: Default::default(), details, records: 0 };
        store.write_batch(AGENT, &mut batch, 0).await?;
    }
    let detail = (measured(store, "request_details").await? - before) as f64 / DETAILS as f64;
    let before = measured(store, "metrics_1m").await?;
    let mut agg = MinuteAggregator::default();
    for minute in 0..MINUTES {
        for s in 0..SERIES {
            for k in 0..RECORDS_PER_MEASURED_ROW {
                let ts = start_ms + minute * 60_000 + k * 2_000;
                agg.add(&record(ts, s, minute * 97 + k * 13 + s as u64), Room::UNBOUNDED);
            }
        }
    }
    let rows = agg.rows.len() as f64;
    let mut batch = Batch { seq: None, bytes: 0, minutes: agg.rows, details: Vec::new(), records: agg.records };
    store.write_batch(AGENT, &mut batch, 0).await?;
    let minute = (measured(store, "metrics_1m").await? - before) as f64 / rows;
    Ok((detail, minute))
}

/// SQLite: the pages in use (the whole database); PostgreSQL: `table` on disk.
async fn measured(store: &Store, table: &str) -> Result<i64> {
    Ok(match store {
        Store::Sqlite(_) => super::budget::size(store).await? as i64,
        Store::Postgres(pool) => super::budget::postgres_table_bytes(pool, table).await? as i64,
    })
}

/// Writes `days` of 1-minute rows for `series` series (two records per row),
/// one day per flush; returns (minute rows, seconds).
async fn backfill(store: &Store, series: usize, days: u64, start_ms: u64) -> Result<(u64, f64)> {
    let t = Instant::now();
    let mut rows = 0;
    for day in 0..days {
        let mut agg = MinuteAggregator::default();
        for minute in 0..1_440u64 {
            let ts = start_ms + (day * 1_440 + minute) * 60_000;
            for s in 0..series {
                for k in 0..2 {
                    agg.add(&record(ts + k * 20_000, s, minute * 31 + s as u64 + k), Room::UNBOUNDED);
                }
            }
        }
        rows += agg.rows.len() as u64;
        let records = agg.records;
        let mut batch = Batch { seq: None, bytes: 0, minutes: agg.rows, details: Vec::new(), records };
        store.write_batch(AGENT, &mut batch, 0).await?;
    }
    Ok((rows, t.elapsed().as_secs_f64()))
}

async fn time_query(store: &Store, q: &MetricsQuery) -> Result<(f64, usize)> {
    let mut times = Vec::new();
    let mut rows = 0;
    for _ in 0..3 {
        let t = Instant::now();
        rows = query::run(store, q).await?.rows.len();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[1], rows))
}

pub fn run(database_url: &str, days: u64, series: usize, records: u64) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let store = Store::open(database_url).await.context("opening the benchmark database")?;
        store.migrate().await?;
        // 2026-01-01T00:00:00Z: the backfill covers `days` from there; the
        // row sizes are measured first, in December 2025.
        let start_ms = 1_767_225_600_000u64;
        let (detail_row_bytes, minute_row_bytes) = row_bytes(&store, start_ms - 20 * 86_400_000).await?;
        let (rows, backfill_s) = backfill(&store, series, days, start_ms).await?;
        // Live ingest lands after the backfill, one flush per 2 s of traffic at this rate.
        let live_ms = start_ms + days * 86_400_000;
        let (aggregate_only, with_flushes) = ingest(&store, series, records, 20_000, live_ms).await?;
        let from = (start_ms / 1000) as i64;
        let to = from + days as i64 * 86_400;
        let grouped = Dimension::parse_list("provider,model,application").unwrap_or_default();
        let mut queries = Vec::new();
        for (name, step, window_days, group_by) in [
            ("30 d, step 1d, by provider,model,application", 86_400, days, grouped.clone()),
            ("30 d, step 1h, by provider,model,application", 3_600, days, grouped.clone()),
            ("30 d, step 1h, total", 3_600, days, Vec::new()),
            ("1 d, step 1m, by provider,model,application", 60, 1, grouped.clone()),
            ("30 d, step 1m, total (1-minute tier, every row)", 60, days, Vec::new()),
        ] {
            let q = MetricsQuery {
                from: to - window_days as i64 * 86_400,
                to,
                step_seconds: step,
                filter: RowFilter::default(),
                group_by,
                // The whole answer: the benchmark times the query, not a page.
                limit: usize::MAX / 2,
                after: None,
            };
            let (ms, out) = time_query(&store, &q).await?;
            let tier = query::tier_for_step(step).unwrap_or(Tier::Minute);
            queries.push(json!({ "query": name, "tier": tier.name(), "median_ms": ms, "rows_out": out }));
        }
        println!(
            "{}",
            json!({
                "database": store.kind(),
                "series": series,
                "days": days,
                "backfill_minute_rows": rows,
                "backfill_seconds": backfill_s,
                "backfill_minute_rows_per_second": rows as f64 / backfill_s,
                "ingest_records": records,
                "aggregate_only_records_per_second": aggregate_only,
                "ingest_records_per_second": with_flushes,
                "queries": queries,
                "detail_row_bytes": detail_row_bytes,
                "minute_row_bytes": minute_row_bytes,
                "records_per_measured_minute_row": RECORDS_PER_MEASURED_ROW,
            })
        );
        store.close().await;
        Ok(())
    })
}
