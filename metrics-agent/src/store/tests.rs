//! The storage suite, run against a real SQLite file and a real PostgreSQL
//! server (each test once per database): rollup and percentile accuracy
//! against values computed directly from the raw records, exactly-once
//! flushes, late records, month-boundary partitions and retention, F-scores,
//! and the writer riding out a database outage with bounded memory.

use std::{
    collections::HashMap,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use rust_decimal::Decimal;

use super::{
    config::{Retention, StorageConfig},
    db::{Batch, RowFilter, Store},
    detail::DetailRow,
    fscore,
    query::{self, Dimension, MetricsQuery},
    rollup::{
        Aggregate, MinuteAggregator, ROW_HEAP_BYTES, Room, SeriesKey, Tier,
        tests::{builder, record},
    },
    sketch::{MAX_BUCKETS, RELATIVE_ACCURACY, Sketch},
    stats::StorageStats,
    testing::TestDb,
    writer::Writer,
};
use crate::records::RequestRecord;

/// Each named test, once with SQLite and once with PostgreSQL.
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::TestDb::sqlite().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::TestDb::postgres().await).await
            }
        }
    )*};
}

on_both_databases!(
    rollups_and_percentiles_match_direct_computation,
    a_flush_is_applied_once,
    months_partitions_and_retention,
    fscores_from_a_known_table,
    a_nul_in_a_model_name_does_not_stop_storage,
    a_batch_the_database_refuses_is_dropped_and_storage_goes_on,
    the_api_refuses_bad_parameters_with_400,
    invented_model_and_application_names_collapse_to_other,
    an_oversized_fscore_query_is_paged,
    metric_and_detail_pages_cover_every_row_once,
    the_size_budget_drops_the_oldest_details_then_the_oldest_minutes,
    a_fresh_database_gets_no_retention_warning,
    sampled_records_are_stored_as_scaled_estimates,
);

/// Schema-migration tests: the database starts at an older schema, holds rows
/// of it, then the agent's migrations bring it to the newest.
mod rows_of_schema_1_are_exact_after_migration_2 {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::rows_of_schema_1_are_exact_after_migration_2(super::TestDb::sqlite_at(Some(1)).await).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::rows_of_schema_1_are_exact_after_migration_2(super::TestDb::postgres_at(Some(1)).await).await
    }
}

/// Tests that stop the database need a server of their own.
mod the_writer_rides_out_an_outage {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::the_writer_rides_out_an_outage(super::TestDb::sqlite().await).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::the_writer_rides_out_an_outage(super::TestDb::private_postgres().await).await
    }
}

const AGENT: &str = "host/test";
/// 2026-03-10T10:00:00Z.
const T0_MS: u64 = 1_773_136_800_000;

/// Deterministic pseudo-random numbers.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Writes `records` in `batches` flushes the way the writer does.
async fn ingest(store: &Store, records: &[RequestRecord], batches: usize) {
    for chunk in records.chunks(records.len().div_ceil(batches).max(1)) {
        let mut agg = MinuteAggregator::default();
        for r in chunk {
            assert!(agg.add(r, Room::UNBOUNDED));
        }
        let mut batch = Batch {
            seq: None,
            bytes: agg.bytes,
            minutes: agg.rows,
            details: chunk.iter().map(DetailRow::of).collect(),
            records: agg.records,
        };
        store.write_batch(AGENT, &mut batch, 0).await.unwrap();
    }
}

fn traffic(n: usize, span_ms: u64, seed: u64) -> Vec<RequestRecord> {
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    for i in 0..n {
        let ts = T0_MS + rng.next() % span_ms;
        let u = (rng.next() % 1_000_000) as f64 / 1e6;
        let duration_ms = (u * 10.0).exp(); // 1 ms .. 22 s, long tail
        let model = ["gpt-4o", "gpt-4o-mini"][i % 2];
        let mut r = record(ts, model, duration_ms, rng.next() % 5_000, rng.next() % 900, "0.000123457");
        r.application_id = Some(["checkout", "search"][(i / 2) % 2].into());
        r.ttfb_ms = duration_ms / 3.0;
        if i % 10 == 0 {
            r.status = 429;
            r.error_type = Some("rate_limit_exceeded".into());
        }
        if i % 7 == 0 {
            r.side = "upstream";
        }
        if i % 3 == 0 {
            r.streaming = true;
            r.stream_timing.time_to_first_token_ms = Some(duration_ms / 4.0);
            r.stream_timing.time_per_output_token_ms = Some(duration_ms / 100.0);
            r.stream_timing.stream_events = Some(12);
        }
        out.push(r);
    }
    out
}

fn exact(mut values: Vec<u64>, q: f64) -> u64 {
    values.sort_unstable();
    values[(q * (values.len() - 1) as f64).floor() as usize]
}

fn assert_within_bound(got: u64, exact: u64, what: &str) {
    let err = (got as f64 - exact as f64).abs();
    assert!(err <= RELATIVE_ACCURACY * exact as f64 + 0.5, "{what}: {got} vs exact {exact}");
}

fn params(from_ms: u64, to_ms: u64, step: i64, group_by: &str, side: Option<&str>) -> MetricsQuery {
    MetricsQuery {
        from: (from_ms / 1000) as i64,
        to: (to_ms / 1000) as i64,
        step_seconds: step,
        filter: RowFilter { side: side.map(String::from), ..Default::default() },
        group_by: Dimension::parse_list(group_by).unwrap(),
        limit: super::page::MAX_PAGE_ROWS,
        after: None,
    }
}

async fn rollups_and_percentiles_match_direct_computation(db: TestDb) {
    let records = traffic(6_000, 3 * 3_600_000, 7);
    // Out of order across flushes: every flush holds records of every minute.
    ingest(&db.store, &records, 7).await;
    let client: Vec<&RequestRecord> = records.iter().filter(|r| r.side == "client").collect();

    // Per hour, application and model, from the stored 1-hour tier.
    let hourly =
        query::run(&db.store, &params(T0_MS, T0_MS + 4 * 3_600_000, 3_600, "application,model", Some("client")))
            .await
            .unwrap();
    assert_eq!(hourly.tier, Tier::Hour);
    assert_eq!(hourly.rows.len(), 3 * 4);
    for row in &hourly.rows {
        let group: Vec<&&RequestRecord> = client
            .iter()
            .filter(|r| {
                ((r.timestamp_unix_ms / 1000) as i64).div_euclid(3_600) * 3_600 == row.start_unix
                    && r.application_id.as_deref() == row.application.as_deref()
                    && r.model_returned.as_deref() == row.model.as_deref()
            })
            .collect();
        assert_eq!(row.request_count, group.len() as i64);
        assert_eq!(row.error_count, group.iter().filter(|r| r.status >= 400).count() as i64);
        assert_eq!(row.tokens_input_sum, group.iter().map(|r| r.tokens.input.unwrap() as i64).sum::<i64>());
        assert_eq!(row.tokens_output_sum, group.iter().map(|r| r.tokens.output.unwrap() as i64).sum::<i64>());
        assert_eq!(row.cost_usd_sum, group.iter().map(|r| r.cost_usd.unwrap()).sum::<Decimal>());
        let latencies: Vec<u64> = group.iter().map(|r| (r.duration_ms * 1000.0).round() as u64).collect();
        for (q, got) in [(0.5, row.latency_p50_us), (0.9, row.latency_p90_us), (0.99, row.latency_p99_us)] {
            assert_within_bound(got, exact(latencies.clone(), q), &format!("latency p{q} of {row:?}"));
        }
        assert_eq!(row.latency_max_us, *latencies.iter().max().unwrap());
        let ttfbs: Vec<u64> = group.iter().map(|r| (r.ttfb_ms * 1000.0).round() as u64).collect();
        assert_within_bound(row.ttfb_p99_us, exact(ttfbs, 0.99), "ttfb p99");
        let micros = |t: f64| (t * 1000.0).round() as u64;
        let ttfts: Vec<u64> = group.iter().filter_map(|r| r.stream_timing.time_to_first_token_ms).map(micros).collect();
        let tpots: Vec<u64> =
            group.iter().filter_map(|r| r.stream_timing.time_per_output_token_ms).map(micros).collect();
        assert!(!ttfts.is_empty(), "every group has streams");
        assert_within_bound(row.ttft_p90_us.unwrap(), exact(ttfts.clone(), 0.9), "ttft p90");
        assert_within_bound(row.ttft_p99_us.unwrap(), exact(ttfts, 0.99), "ttft p99");
        assert_within_bound(row.tpot_p50_us.unwrap(), exact(tpots, 0.5), "tpot p50");
    }

    // The whole day from the 1-day tier, both sides.
    let daily = query::run(&db.store, &params(T0_MS, T0_MS + 86_400_000, 86_400, "", None)).await.unwrap();
    assert_eq!(daily.tier, Tier::Day);
    assert_eq!(daily.rows.len(), 1);
    let all: Vec<u64> = records.iter().map(|r| (r.duration_ms * 1000.0).round() as u64).collect();
    assert_eq!(daily.rows[0].request_count, records.len() as i64);
    assert_within_bound(daily.rows[0].latency_p99_us, exact(all, 0.99), "daily p99");

    // Minute rows: the 1-minute tier, every record in its own minute.
    let minutes = query::run(&db.store, &params(T0_MS, T0_MS + 4 * 3_600_000, 60, "", Some("client"))).await.unwrap();
    assert_eq!(minutes.tier, Tier::Minute);
    let mut per_minute: HashMap<i64, i64> = HashMap::new();
    for r in &client {
        *per_minute.entry(((r.timestamp_unix_ms / 1000) as i64).div_euclid(60) * 60).or_default() += 1;
    }
    assert_eq!(minutes.rows.len(), per_minute.len());
    for row in &minutes.rows {
        assert_eq!(row.request_count, per_minute[&row.start_unix], "minute {}", row.time);
    }

    // Stored hour rows are exactly the merge of stored minute rows (sketches included).
    let filter = RowFilter::default();
    let to = (T0_MS / 1000) as i64 + 4 * 3_600;
    let mut merged: HashMap<SeriesKey, Aggregate> = HashMap::new();
    for (key, _, agg) in db.store.read_rows(Tier::Minute, 0, to, &filter).await.unwrap() {
        merged.entry(key.in_tier(Tier::Hour)).or_default().merge(&agg);
    }
    let hours = db.store.read_rows(Tier::Hour, 0, to, &filter).await.unwrap();
    assert_eq!(hours.len(), merged.len());
    for (key, agent, agg) in hours {
        assert_eq!(agent, AGENT);
        assert_eq!(merged[&key], agg, "{key:?}");
    }

    // Detail rows: one per record, no more.
    let details = db.store.read_details(0, i64::MAX, None, 100_000).await.unwrap().0;
    assert_eq!(details.len(), records.len());
    let streamed = records.iter().filter(|r| r.streaming).count();
    assert_eq!(details.iter().filter(|d| d.ttft_us.is_some() && d.stream_events == Some(12)).count(), streamed);
}

/// (request_count, captured_count, estimate, tokens_input_sum, cost) of each row.
type Scaled = (i64, i64, bool, i64, String);

fn scaled(rows: &[query::MetricsRow]) -> Vec<Scaled> {
    rows.iter()
        .map(|r| (r.request_count, r.captured_count, r.estimate, r.tokens_input_sum, r.cost_usd_sum.to_string()))
        .collect()
}

/// A record captured at sampling interval N counts N times (requests, errors,
/// tokens, cost) and makes its row an estimate, in the minute row and in the
/// hour and day rows merged from it, across flushes; rows of records captured
/// at N = 1 stay exact. The API shows both columns.
async fn sampled_records_are_stored_as_scaled_estimates(db: TestDb) {
    let minute = 60_000;
    let at = |ts: u64, every: u32| builder(ts, "m", 5.0, 100, 7, "0.001").sample_every(every);
    let records = [
        at(T0_MS, 1).build(),
        at(T0_MS + 1, 1).build(),
        at(T0_MS + 2, 1).build(),
        at(T0_MS + minute, 8).build(),
        at(T0_MS + minute + 1, 8).build(),
        at(T0_MS + minute + 2, 4).status(500).error_type(Some("server_error".into())).build(),
    ];
    // Two records per flush: both minute rows are merged with stored rows.
    ingest(&db.store, &records, 3).await;
    let minutes = query::run(&db.store, &params(T0_MS, T0_MS + 2 * minute, 60, "", None)).await.unwrap();
    assert_eq!(
        scaled(&minutes.rows),
        [(3, 3, false, 300, "0.003".into()), (20, 3, true, 2_000, "0.020".into())],
        "exact minute, then a minute of records captured 1 in 8, 1 in 8 and 1 in 4"
    );
    assert_eq!(minutes.rows[1].error_count, 4);
    assert_eq!(minutes.rows[0].latency_max_us, 5_000, "sketches are not scaled");
    for step in [3_600, 86_400] {
        let coarse = query::run(&db.store, &params(T0_MS, T0_MS + 2 * minute, step, "", None)).await.unwrap();
        assert_eq!(scaled(&coarse.rows), [(23, 6, true, 2_300, "0.023".into())], "step {step}");
    }
    let (status, body) =
        api_get(&db, &format!("/api/v1/metrics?from={}&to={}&side=all", T0_MS / 1000, T0_MS / 1000 + 120)).await;
    assert_eq!(status, 200, "{body}");
    let api: Vec<_> = body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["request_count"].clone(), r["captured_count"].clone(), r["estimate"].clone()))
        .collect();
    assert_eq!(api, [(3.into(), 3.into(), false.into()), (20.into(), 3.into(), true.into())], "{body}");
}

/// Rows written under schema 1 (before rows said whether they are estimates)
/// read back after migration 2 as exact, their records counted once each.
async fn rows_of_schema_1_are_exact_after_migration_2(db: TestDb) {
    let bucket = T0_MS / 1000;
    let hex: String = Sketch::default().to_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let sketch =
        if matches!(db.store, Store::Postgres(_)) { format!("'\\x{hex}'::bytea") } else { format!("X'{hex}'") };
    for table in ["metrics_1m", "metrics_1h", "metrics_1d"] {
        if matches!(db.store, Store::Postgres(_)) {
            let partition =
                format!("CREATE TABLE {table}_all PARTITION OF {table} FOR VALUES FROM (0) TO ({})", i64::MAX);
            db.store.execute(&partition).await.unwrap();
        }
        db.store
            .execute(&format!(
                "INSERT INTO {table} VALUES ({bucket}, '{AGENT}', 'app', 'client', 'openai', 'm', 9, 1, 0, 0, 0, \
                 90, 9, 0, 0, 0, 0.5, 1, 2, 3, 4, 1, 2, 3, 4, {sketch}, {sketch})"
            ))
            .await
            .unwrap();
    }
    db.store.migrate().await.unwrap();
    for tier in Tier::ALL {
        let rows = db.store.read_rows(tier, 0, i64::MAX, &RowFilter::default()).await.unwrap();
        let got: Vec<_> = rows.iter().map(|(_, _, a)| (a.request_count, a.captured_count, a.estimate)).collect();
        assert_eq!(got, [(9, 9, false)], "{tier:?}");
    }
}

async fn a_flush_is_applied_once(db: TestDb) {
    let mut agg = MinuteAggregator::default();
    for i in 0..10 {
        agg.add(&record(T0_MS + i * 1_000, "m", 5.0, 10, 1, "0.5"), Room::UNBOUNDED);
    }
    let mut batch = Batch { seq: None, bytes: 0, minutes: agg.rows, details: Vec::new(), records: 10 };
    let first = db.store.write_batch(AGENT, &mut batch, 0).await.unwrap();
    assert!(!first.already_applied);
    assert_eq!(batch.seq, Some(1));
    // A retry after an answer that got lost: recognised, not added again.
    let again = db.store.write_batch(AGENT, &mut batch, 0).await.unwrap();
    assert!(again.already_applied);
    // A late record for the same minute in a later flush is merged into it.
    let mut late = MinuteAggregator::default();
    late.add(&record(T0_MS + 59_000, "m", 5.0, 10, 1, "0.25"), Room::UNBOUNDED);
    let mut batch2 = Batch { seq: None, bytes: 0, minutes: late.rows, details: Vec::new(), records: 1 };
    db.store.write_batch(AGENT, &mut batch2, 0).await.unwrap();
    assert_eq!(batch2.seq, Some(2));
    assert_eq!(db.store.last_flush_seq(AGENT).await.unwrap(), 2);
    let rows = query::run(&db.store, &params(T0_MS, T0_MS + 60_000, 60, "", None)).await.unwrap().rows;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].request_count, 11);
    assert_eq!(rows[0].tokens_input_sum, 110);
    assert_eq!(rows[0].cost_usd_sum, "5.25".parse::<Decimal>().unwrap());

    // Another process with the same agent id (a mistake) also at its first
    // flush: both land, neither is taken for the other's retry.
    let mut other = MinuteAggregator::default();
    other.add(&record(T0_MS + 30_000, "m", 5.0, 10, 1, "0.25"), Room::UNBOUNDED);
    let mut batch3 = Batch { seq: None, bytes: 0, minutes: other.rows, details: Vec::new(), records: 1 };
    let written = db.store.write_batch_as(AGENT, "host/test#other-process", &mut batch3, 0).await.unwrap();
    assert!(!written.already_applied);
    assert_eq!(batch3.seq, Some(1));
    let rows = query::run(&db.store, &params(T0_MS, T0_MS + 60_000, 60, "", None)).await.unwrap().rows;
    assert_eq!(rows[0].request_count, 12);
}

async fn months_partitions_and_retention(db: TestDb) {
    let dec31 = 1_767_225_570_000; // 2025-12-31T23:59:30Z
    let jan1 = 1_767_225_630_000; // 2026-01-01T00:00:30Z
    let january = 1_767_225_600; // 2026-01-01T00:00:00Z
    ingest(&db.store, &[record(dec31, "m", 1.0, 1, 1, "1"), record(jan1, "m", 1.0, 1, 1, "1")], 1).await;
    if let Store::Postgres(pool) = &db.store {
        for table in ["metrics_1m", "metrics_1h", "metrics_1d", "request_details"] {
            let names: Vec<String> =
                super::partitions::list(pool, table).await.unwrap().into_iter().map(|(n, _)| n).collect();
            assert_eq!(names, [format!("{table}_p202512"), format!("{table}_p202601")]);
        }
    }
    let window = params(dec31 - 60_000, jan1 + 60_000, 60, "", None);
    assert_eq!(query::run(&db.store, &window).await.unwrap().rows.len(), 2);
    let by_day = query::run(&db.store, &MetricsQuery { step_seconds: 86_400, ..window.clone() }).await.unwrap();
    assert_eq!(by_day.rows.iter().map(|r| r.start_unix).collect::<Vec<_>>(), [january - 86_400, january]);

    // Minutes and details expire at 2026-01-01; hours and days are kept.
    let retention = Retention { minute_days: 1, hour_days: 1_000, day_days: 1_000, detail_days: 1, fscore_days: 1_000 };
    let removed = db.store.apply_retention(&retention.cutoffs(january + 86_400)).await.unwrap();
    assert!(removed >= 2, "removed {removed}");
    let minutes = query::run(&db.store, &window).await.unwrap();
    assert_eq!(minutes.rows.iter().map(|r| r.start_unix).collect::<Vec<_>>(), [january]);
    // The window reaches back before the minute tier's oldest row while the
    // hour tier still has it: the answer says so.
    assert_eq!(minutes.warnings.len(), 1, "{:?}", minutes.warnings);
    assert!(minutes.warnings[0].contains("the 1m tier holds rows from 2026-01-01T00:00:00Z"), "{:?}", minutes.warnings);
    let hours = query::run(&db.store, &MetricsQuery { step_seconds: 3_600, ..window.clone() }).await.unwrap();
    assert_eq!(hours.rows.len(), 2, "the hour tier keeps December");
    assert!(hours.warnings.is_empty(), "{:?}", hours.warnings);
    let details = db.store.read_details(0, i64::MAX, None, 10).await.unwrap().0;
    assert_eq!(details.iter().map(|d| d.ts_ms).collect::<Vec<_>>(), [jan1 as i64]);
    if let Store::Postgres(pool) = &db.store {
        let minute_parts = super::partitions::list(pool, "metrics_1m").await.unwrap();
        assert_eq!(minute_parts.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["metrics_1m_p202601"]);
        assert_eq!(super::partitions::list(pool, "metrics_1h").await.unwrap().len(), 2);
        // Partitions ahead of time: this month and the next two.
        super::partitions::ensure_ahead(pool, january + 40 * 86_400).await.unwrap();
        let months: Vec<String> =
            super::partitions::list(pool, "metrics_1d").await.unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            months,
            [
                "metrics_1d_p202512",
                "metrics_1d_p202601",
                "metrics_1d_p202602",
                "metrics_1d_p202603",
                "metrics_1d_p202604"
            ]
        );
    }
}

async fn fscores_from_a_known_table(db: TestDb) {
    // classifier-a on day 1: tp 3, fp 1, fn 2, tn 4; on day 2: tp 1, fn 1.
    // classifier-b: only negatives, predicted negative (no positives at all).
    let mut lines = Vec::new();
    let mut add = |model: &str, day: u32, n: usize, expected: bool, actual: bool| {
        for i in 0..n {
            lines.push(format!(
                "{{\"application\":\"app\",\"suite\":\"toxicity\",\"model\":\"{model}\",\"test_case\":\"{expected}{actual}{i}\",\"expected\":{expected},\"actual\":{actual},\"timestamp\":\"2026-02-0{day}T12:00:00Z\"}}"
            ));
        }
    };
    add("classifier-a", 1, 3, true, true);
    add("classifier-a", 1, 1, false, true);
    add("classifier-a", 1, 2, true, false);
    add("classifier-a", 1, 4, false, false);
    add("classifier-a", 2, 1, true, true);
    add("classifier-a", 2, 1, true, false);
    add("classifier-b", 1, 5, false, false);
    let text = lines.join("\n");
    let results = fscore::parse_results(&text, None, 0).unwrap();
    assert_eq!(fscore::insert(&db.store, AGENT, &results).await.unwrap(), 17);
    assert_eq!(fscore::insert(&db.store, AGENT, &results).await.unwrap(), 0, "ingesting twice counts once");

    // A file without timestamps: refused (its ingestion time would make every
    // re-ingestion new), or given one time for all, and then stored once.
    let untimed = "{\"application\":\"app\",\"suite\":\"other\",\"model\":\"m\",\"test_case\":\"c\",\"expected\":true,\"actual\":true}\n";
    assert!(fscore::parse_results(untimed, None, 1_000).unwrap_err().contains("no timestamp"));
    let march_ms = 1_772_323_200_000; // 2026-03-01T00:00:00Z, outside the windows below
    let first = fscore::parse_results(untimed, Some(march_ms), 1_000).unwrap();
    let again = fscore::parse_results(untimed, Some(march_ms), 99_000).unwrap();
    assert_eq!(fscore::insert(&db.store, AGENT, &first).await.unwrap(), 1);
    assert_eq!(fscore::insert(&db.store, AGENT, &again).await.unwrap(), 0, "re-ingesting later counts once");

    let feb1 = 1_769_904_000; // 2026-02-01T00:00:00Z
    let q = fscore::FScoreQuery {
        from: feb1,
        to: feb1 + 2 * 86_400,
        step_seconds: None,
        application: None,
        suite: None,
        model: None,
        beta: 2.0,
        limit: 100,
        after: None,
    };
    let rows = fscore::query(&db.store, &q).await.unwrap().rows;
    assert_eq!(rows.len(), 2);
    let a = &rows[0].scores;
    assert_eq!((rows[0].model.as_str(), a.tp, a.fp, a.fn_, a.tn), ("classifier-a", 4, 1, 3, 4));
    let close = |x: f64, y: f64| (x - y).abs() < 1e-12;
    assert!(close(a.precision, 0.8) && close(a.recall, 4.0 / 7.0), "{a:?}");
    assert!(close(a.f1, 2.0 / 3.0), "{a:?}"); // 2*0.8*(4/7) / (0.8+4/7)
    assert!(close(a.f_beta, 5.0 * 0.8 * (4.0 / 7.0) / (4.0 * 0.8 + 4.0 / 7.0)), "{a:?}");
    let b = &rows[1].scores;
    assert_eq!((rows[1].model.as_str(), b.tn, b.precision, b.recall, b.f1), ("classifier-b", 5, 0.0, 0.0, 0.0));

    let daily = fscore::query(
        &db.store,
        &fscore::FScoreQuery { step_seconds: Some(86_400), model: Some("classifier-a".into()), ..q },
    )
    .await
    .unwrap()
    .rows;
    assert_eq!(
        daily.iter().map(|r| (r.start_unix, r.scores.tp, r.scores.fn_)).collect::<Vec<_>>(),
        [(feb1, 3, 2), (feb1 + 86_400, 1, 1)]
    );
    assert!(close(daily[1].scores.f1, 2.0 / 3.0));
}

/// Stops the database (PostgreSQL) or locks it (SQLite) until `end` is called.
struct Outage {
    sqlite_lock: Option<sqlx::pool::PoolConnection<sqlx::Sqlite>>,
}

impl Outage {
    async fn begin(db: &TestDb) -> Self {
        match (&db.store, &db.cluster) {
            (_, Some(cluster)) => {
                cluster.stop();
                Self { sqlite_lock: None }
            }
            (Store::Sqlite(_), None) => {
                // Another process holding the write lock: writes wait, then fail.
                let other = Store::open(&db.url).await.unwrap();
                let Store::Sqlite(pool) = other else { unreachable!() };
                let mut conn = pool.acquire().await.unwrap();
                sqlx::query("BEGIN EXCLUSIVE").execute(&mut *conn).await.unwrap();
                Self { sqlite_lock: Some(conn) }
            }
            _ => panic!("an outage needs a private PostgreSQL cluster"),
        }
    }

    async fn end(mut self, db: &TestDb) {
        if let Some(mut conn) = self.sqlite_lock.take() {
            sqlx::query("COMMIT").execute(&mut *conn).await.unwrap();
        } else if let Some(cluster) = &db.cluster {
            cluster.resume();
        }
    }
}

fn writer_config(db: &TestDb, max_series: usize) -> StorageConfig {
    let mut c = super::config::StorageFile {
        database_url: Some(db.url.clone()),
        flush_interval_ms: Some(100),
        max_buffered_series: Some(max_series),
        ..Default::default()
    }
    .resolve(None, Some("outage"), false)
    .unwrap()
    .unwrap();
    c.agent_id = AGENT.into();
    c
}

async fn stored_requests(store: &Store) -> i64 {
    let q = params(0, T0_MS + 86_400_000, 86_400, "", None);
    query::run(store, &q).await.map(|r| r.rows.iter().map(|r| r.request_count).sum()).unwrap_or(-1)
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..300 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn the_writer_rides_out_an_outage(db: TestDb) {
    let stats = Arc::new(StorageStats::default());
    // 40 series at most in memory: the outage below sees 60 distinct models.
    let writer = Writer {
        store: db.store.clone(),
        config: writer_config(&db, 40),
        stats: stats.clone(),
        migrated: Arc::new(AtomicBool::new(true)),
    };
    let (tx, rx) = tokio::sync::broadcast::channel(100_000);
    let task = tokio::spawn(writer.run(rx));
    let send = |from: u64, n: u64, models: u64| {
        for i in from..from + n {
            tx.send(Arc::new(record(T0_MS + i, &format!("m{}", i % models), 1.0, 1, 1, "0.001"))).unwrap();
        }
    };
    send(0, 500, 1);
    wait_for("the first records to be stored", async || stored_requests(&db.store).await == 500).await;

    let outage = Outage::begin(&db).await;
    send(500, 600, 60);
    let error = || stats.flushes.get("error");
    wait_for("a failed flush", async || error() > 0).await;
    assert_eq!(stats.database_up.get(), 0);
    let dropped = stats.records_dropped.get("buffer_full");
    assert!(dropped > 0, "60 series do not fit in 40");
    assert!(stats.buffered_series.get() <= 40, "buffered {}", stats.buffered_series.get());
    outage.end(&db).await;

    send(1_100, 100, 1);
    drop(tx);
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the writer finishes after the bus closes")
        .unwrap();
    let stored = stored_requests(&db.store).await;
    let dropped = stats.records_dropped.get("buffer_full");
    assert_eq!(stored as u64 + dropped, 1_200, "every record is stored or counted as dropped");
    assert_eq!(stats.records.get(), stored as u64);
    assert_eq!(stats.database_up.get(), 1);
    assert_eq!(stats.flushes.get("duplicate"), 0);
}

#[test]
fn sketch_merge_of_stored_bytes_is_exact() {
    let mut a = Sketch::new();
    let mut b = Sketch::new();
    (1..1000).for_each(|v| a.insert(v * 37));
    (1..500).for_each(|v| b.insert(v * 1_001));
    let mut merged = Sketch::from_bytes(&a.to_bytes()).unwrap();
    merged.merge(&Sketch::from_bytes(&b.to_bytes()).unwrap());
    let mut direct = a.clone();
    direct.merge(&b);
    assert_eq!(merged, direct);
}

/// PostgreSQL down when the agent starts: the writer buffers, then migrates
/// and writes everything once the server is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_at_start_is_migrated_and_written_when_it_comes_up() {
    let cluster = super::testing::PgCluster::start();
    cluster.stop();
    let store = Store::open(&cluster.url()).await.unwrap();
    assert!(store.migrate().await.is_err(), "the server is down");
    let mut config = super::config::StorageFile { flush_interval_ms: Some(100), ..Default::default() }
        .resolve(Some(&cluster.url()), None, false)
        .unwrap()
        .unwrap();
    config.agent_id = AGENT.into();
    let stats = Arc::new(StorageStats::default());
    let writer =
        Writer { store: store.clone(), config, stats: stats.clone(), migrated: Arc::new(AtomicBool::new(false)) };
    let (tx, rx) = tokio::sync::broadcast::channel(1_000);
    let task = tokio::spawn(writer.run(rx));
    for i in 0..50 {
        tx.send(Arc::new(record(T0_MS + i, "m", 1.0, 1, 1, "0.001"))).unwrap();
    }
    let error = || stats.flushes.get("error");
    wait_for("a failed flush", async || error() > 0).await;
    cluster.resume();
    wait_for("the buffered records", async || stored_requests(&store).await == 50).await;
    drop(tx);
    tokio::time::timeout(Duration::from_secs(30), task).await.unwrap().unwrap();
    assert_eq!(stored_requests(&store).await, 50);
}

/// A writer on `db` with a 100 ms flush interval, its stats and its bus.
fn spawn_writer(
    db: &TestDb,
) -> (Arc<StorageStats>, tokio::sync::broadcast::Sender<Arc<RequestRecord>>, tokio::task::JoinHandle<()>) {
    let stats = Arc::new(StorageStats::default());
    let writer = Writer {
        store: db.store.clone(),
        config: writer_config(db, 1_000),
        stats: stats.clone(),
        migrated: Arc::new(AtomicBool::new(true)),
    };
    let (tx, rx) = tokio::sync::broadcast::channel(10_000);
    let task = tokio::spawn(writer.run(rx));
    (stats, tx, task)
}

async fn a_nul_in_a_model_name_does_not_stop_storage(db: TestDb) {
    let (stats, tx, task) = spawn_writer(&db);
    let mut bad = record(T0_MS, "x\u{0}", 1.0, 1, 1, "0.001");
    bad.model_returned = Some("x\u{0}".into());
    bad.session_id = Some("s\u{0}1".into());
    bad.application_id = Some("app\u{0}".into());
    tx.send(Arc::new(bad)).unwrap();
    for i in 1..10 {
        tx.send(Arc::new(record(T0_MS + i, "good", 1.0, 1, 1, "0.001"))).unwrap();
    }
    wait_for("every record stored", async || stored_requests(&db.store).await == 10).await;
    drop(tx);
    task.await.unwrap();
    let rows = db.store.read_rows(Tier::Minute, 0, i64::MAX, &RowFilter::default()).await.unwrap();
    let mut models: Vec<(String, String)> = rows.into_iter().map(|(k, _, _)| (k.application_id, k.model)).collect();
    models.sort();
    assert_eq!(models, [("app".to_string(), "good".to_string()), ("app".into(), "x".into())]);
    let details = db.store.read_details(0, i64::MAX, None, 100).await.unwrap().0;
    assert_eq!(details[0].session_id.as_deref(), Some("s1"));
    assert_eq!(stats.flushes.get("error"), 0);
    assert_eq!(stats.database_up.get(), 1);
}

async fn a_batch_the_database_refuses_is_dropped_and_storage_goes_on(db: TestDb) {
    // A rule of the database's own that refuses one model: the same rows are refused on every retry.
    let rule = match &db.store {
        Store::Sqlite(_) => vec![
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON metrics_1m WHEN NEW.model = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'poison refused'); END"
                .to_string(),
        ],
        Store::Postgres(_) => vec![
            "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.model = 'poison' THEN RAISE EXCEPTION 'poison refused' USING ERRCODE = 'check_violation'; \
             END IF; RETURN NEW; END $$"
                .to_string(),
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON metrics_1m FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
                .to_string(),
        ],
    };
    for sql in rule {
        match &db.store {
            Store::Sqlite(pool) => sqlx::query(&sql).execute(pool).await.map(|_| ()),
            Store::Postgres(pool) => sqlx::query(&sql).execute(pool).await.map(|_| ()),
        }
        .unwrap();
    }
    let (stats, tx, task) = spawn_writer(&db);
    let rejected = || stats.records_dropped.get("rejected");
    tx.send(Arc::new(record(T0_MS, "poison", 1.0, 1, 1, "0.001"))).unwrap();
    if matches!(db.store, Store::Postgres(_)) {
        // Also refused by PostgreSQL itself: a time after year 9999 has no partition.
        tx.send(Arc::new(record(300_000_000_000_000, "late", 1.0, 1, 1, "0.001"))).unwrap();
    }
    let poisoned = if matches!(db.store, Store::Postgres(_)) { 2 } else { 1 };
    wait_for("the refused batch to be dropped", async || rejected() == poisoned).await;
    assert_eq!(stats.flushes.get("rejected"), 1);
    assert_eq!(stats.flushes.get("error"), u64::from(super::writer::REJECTED_ATTEMPTS - 1));
    for i in 0..20 {
        tx.send(Arc::new(record(T0_MS + i, "good", 1.0, 1, 1, "0.001"))).unwrap();
    }
    wait_for("newer records stored", async || stored_requests(&db.store).await == 20).await;
    assert_eq!(stats.database_up.get(), 1);
    drop(tx);
    task.await.unwrap();
    assert_eq!(rejected(), poisoned);
    assert_eq!(stats.records_dropped.get("buffer_full"), 0);
}

/// GET `path` from the storage API served on a local port: status and JSON body.
async fn api_get(db: &TestDb, path: &str) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let state = super::api::ApiState { store: db.store.clone(), config: writer_config(db, 100) };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move { axum::serve(listener, super::api::routes(Arc::new(state))).await });
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.0\r\nhost: localhost\r\n\r\n").as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    server.abort();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")))
}

async fn the_api_refuses_bad_parameters_with_400(db: TestDb) {
    for path in [
        "/api/v1/requests?from=-9223372036854775807s",
        "/api/v1/requests?to=99999999999999",
        "/api/v1/metrics?from=-9223372036854775807s",
        "/api/v1/metrics?step=9223372036854775807s",
        "/api/v1/fscores?from=-9223372036854775807s",
        "/api/v1/fscores?step=9223372036854775807s",
        "/api/v1/fscores?beta=1e200",
        "/api/v1/fscores?beta=0",
    ] {
        let (status, body) = api_get(&db, path).await;
        let error = body["error"].as_str().unwrap_or_else(|| panic!("{path}: {body}"));
        assert_eq!(status, 400, "{path}: {body}");
        assert!(!error.contains('\n'), "{path}: {error}");
    }
    let (status, body) = api_get(&db, "/api/v1/fscores?beta=1000").await;
    assert_eq!(status, 200, "{body}");

    // `to=now` (the default) includes the current second, on /requests as on /metrics.
    let now_ms = super::writer::now_ms() as u64;
    ingest(&db.store, &[record(now_ms, "m", 1.0, 1, 1, "0.1")], 1).await;
    for path in ["/api/v1/requests?from=-1m", "/api/v1/requests?from=-1m&to=now"] {
        let (status, body) = api_get(&db, path).await;
        assert_eq!((status, body["rows"].as_array().map(Vec::len)), (200, Some(1)), "{path}: {body}");
        assert!(body["next"].is_null(), "{body}");
    }
    let (_, metrics) = api_get(&db, "/api/v1/metrics?from=-1m&side=all").await;
    assert_eq!(metrics["rows"][0]["request_count"], 1, "{metrics}");
}

/// The byte bound the writer enforces is an upper bound of the real heap
/// (measured with a counting allocator), for adversarial latencies that give
/// every record new sketch buckets over the whole u64 range.
#[test]
fn buffered_rows_take_no_more_heap_than_their_byte_bound() {
    let records: Vec<RequestRecord> = (0..40_000u64)
        .map(|i| {
            let mut r = record(T0_MS + i % 180_000, &format!("model-{}", i % 13), 0.0, 1, 1, "0.1");
            let v = 1.0202f64.powi(((i * 7) % 2_300) as i32) / 1000.0;
            (r.duration_ms, r.ttfb_ms) = (v, v * 0.7);
            r
        })
        .collect();
    let budget = Room { series: 20_000, bytes: 4 << 20 };
    let (agg, heap) = super::testing::heap_kept_by(|| {
        let mut agg = MinuteAggregator::default();
        let taken = records.iter().filter(|r| agg.add(r, budget)).count();
        assert!(taken > 5_000, "taken {taken}");
        agg
    });
    assert!(agg.bytes <= budget.bytes);
    assert!(heap > 0 && heap as usize <= agg.bytes, "heap {heap} > bound {}", agg.bytes);
    let per_row = agg.bytes / agg.rows.len();
    let (_, row_heap) = super::testing::heap_kept_by(|| {
        let mut a = Aggregate::default();
        records.iter().take(2_300).for_each(|r| a.add(r));
        a
    });
    // One row with full sketches, the worst case: 2 x 512 buckets.
    let worst = ROW_HEAP_BYTES + 2 * MAX_BUCKETS * super::sketch::HEAP_BYTES_PER_BUCKET;
    assert!(row_heap as usize <= worst, "one row: {row_heap} > {worst} (average bound {per_row})");
    eprintln!("worst-case row: measured {row_heap} bytes, bound {worst}");
}

/// The SQLite database, its directory and its write-ahead files are private.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_database_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let db = TestDb::sqlite().await;
    ingest(&db.store, &[record(T0_MS, "m", 1.0, 1, 1, "0.1")], 1).await;
    let file = std::path::PathBuf::from(db.url.strip_prefix("sqlite://").unwrap());
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(file.parent().unwrap()), 0o700, "directory");
    for suffix in ["", "-wal", "-shm"] {
        let path = std::path::PathBuf::from(format!("{}{suffix}", file.display()));
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    // One line naming the path and the cause once, pointing at the flag that fixes it.
    let e = Store::open("sqlite:///proc/forbidden/metrics.db").await.unwrap_err().to_string();
    assert!(e.starts_with("cannot create /proc/forbidden for the SQLite database (") && !e.contains('\n'), "{e}");
    assert!(e.ends_with("choose another path with --database-url") && !e.contains("--no-storage"), "{e}");
}

#[tokio::test]
async fn an_unreachable_postgres_is_one_line_naming_the_server_and_the_cause() {
    let err = Store::probe("postgres://someone@127.0.0.1:1/db").await.unwrap_err();
    assert!(err.starts_with("cannot connect to PostgreSQL at 127.0.0.1:1: "), "{err}");
    assert!(err.to_lowercase().contains("refused") && err.contains("is it running"), "{err}");
    assert!(!err.contains('\n'), "{err}");
    assert_eq!(Store::probe("sqlite:///tmp/x.db").await, Ok(()));
}

/// A writer with name bounds of 20 distinct models / applications overall and
/// 8 per minute, and at most 50 detail rows per minute.
fn bounded_writer(
    db: &TestDb,
) -> (Arc<StorageStats>, tokio::sync::broadcast::Sender<Arc<RequestRecord>>, tokio::task::JoinHandle<()>) {
    let mut config = super::config::StorageFile {
        database_url: Some(db.url.clone()),
        flush_interval_ms: Some(100),
        max_models: Some(20),
        max_models_per_minute: Some(8),
        max_applications: Some(20),
        max_applications_per_minute: Some(8),
        max_detail_rows_per_minute: Some(50),
        ..Default::default()
    }
    .resolve(None, None, false)
    .unwrap()
    .unwrap();
    config.agent_id = AGENT.into();
    let stats = Arc::new(StorageStats::default());
    let writer =
        Writer { store: db.store.clone(), config, stats: stats.clone(), migrated: Arc::new(AtomicBool::new(true)) };
    let (tx, rx) = tokio::sync::broadcast::channel(10_000);
    let task = tokio::spawn(writer.run(rx));
    (stats, tx, task)
}

/// 500 records, each with a model and an application id of its own (as a
/// hostile client can send), 100 per minute over 5 minutes: storage keeps 8
/// new names per minute until 20 are known, stores every other one as
/// `other`, counts each collapse, and loses no record.
async fn invented_model_and_application_names_collapse_to_other(db: TestDb) {
    let (stats, tx, task) = bounded_writer(&db);
    for i in 0..500u64 {
        let mut r = record(T0_MS + (i / 100) * 60_000 + i % 100, &format!("invented-{i}"), 1.0, 1, 1, "0.001");
        r.application_id = Some(format!("app-{i}"));
        tx.send(Arc::new(r)).unwrap();
    }
    drop(tx);
    tokio::time::timeout(Duration::from_secs(60), task).await.unwrap().unwrap();
    assert_eq!(stored_requests(&db.store).await, 500, "no record is lost");
    // Minute 0 admits 8 names, minute 1 8 more, minute 2 the last 4 of 20.
    for kind in ["model", "application"] {
        assert_eq!(stats.names_collapsed.get(kind), 480, "{kind}");
    }
    let rows = db.store.read_rows(Tier::Minute, 0, i64::MAX, &RowFilter::default()).await.unwrap();
    let mut models = std::collections::BTreeSet::new();
    let mut per_minute: HashMap<i64, std::collections::BTreeSet<String>> = HashMap::new();
    for (key, _, _) in &rows {
        models.insert(key.model.clone());
        per_minute.entry(key.bucket_start).or_default().insert(key.model.clone());
        assert_eq!(key.model == "other", key.application_id == "other", "{key:?}");
    }
    assert_eq!(models.len(), 21, "20 names and `other`: {models:?}");
    assert!(per_minute.values().all(|m| m.len() <= 9), "{per_minute:?}");
    let (_, by_model) = api_get(&db, &format!("/api/v1/metrics?from={}&step=1d&group_by=model", T0_MS / 1000)).await;
    let by_model = by_model["rows"].as_array().unwrap().clone();
    assert_eq!(by_model.len(), 21);
    let other = by_model.iter().find(|r| r["model"] == "other").unwrap();
    assert_eq!(other["request_count"], 480);
    // Detail rows: 50 per minute at most, with the same bounded names.
    let (details, _) = db.store.read_details(0, i64::MAX, None, 10_000).await.unwrap();
    assert_eq!(details.len(), 250);
    assert_eq!(stats.details_dropped.get("minute_cap"), 250);
    for d in &details {
        let model = d.model_returned.clone().unwrap();
        assert!(models.contains(&model) && d.model_requested.as_deref() == Some(model.as_str()), "{d:?}");
        assert!(d.application_id == "other" || d.application_id.starts_with("app-"), "{d:?}");
    }
    assert_eq!(details.iter().filter(|d| d.application_id != "other").count(), 20);
}

/// 25,000 F-score groups: an answer holds 10,000 rows at most plus a `next`
/// token, and following the tokens yields every group exactly once.
async fn an_oversized_fscore_query_is_paged(db: TestDb) {
    let feb1_ms = 1_769_904_000_000i64;
    let results: Vec<fscore::StoredResult> = (0..25_000)
        .map(|i| fscore::StoredResult {
            ts_ms: feb1_ms + i * 1_000,
            result: fscore::TestResult {
                application: format!("app-{}", i % 3),
                suite: format!("suite-{}", i % 7),
                model: "m".into(),
                test_case: format!("case-{i}"),
                expected: i % 2 == 0,
                actual: i % 3 == 0,
                timestamp: None,
            },
        })
        .collect();
    assert_eq!(fscore::insert(&db.store, AGENT, &results).await.unwrap(), 25_000);
    let from = feb1_ms / 1000;
    let (status, first) =
        api_get(&db, &format!("/api/v1/fscores?from={from}&to={}&step=1s&limit=1000000", from + 86_400)).await;
    assert_eq!(status, 200);
    assert_eq!(first["rows"].as_array().unwrap().len(), super::page::MAX_PAGE_ROWS, "capped");
    let body_bytes = first.to_string().len();
    assert!(body_bytes < 4 << 20, "one page is {body_bytes} bytes");
    let mut q = fscore::FScoreQuery {
        from,
        to: from + 86_400,
        step_seconds: Some(1),
        application: None,
        suite: None,
        model: None,
        beta: 1.0,
        limit: super::page::MAX_PAGE_ROWS,
        after: None,
    };
    let mut seen = std::collections::HashSet::new();
    let (mut tp, mut pages) = (0, 0);
    loop {
        let page = fscore::query(&db.store, &q).await.unwrap();
        pages += 1;
        assert!(page.rows.len() <= super::page::MAX_PAGE_ROWS);
        for r in &page.rows {
            assert!(seen.insert((r.start_unix, r.application.clone(), r.suite.clone())), "{r:?} twice");
            tp += r.scores.tp;
        }
        if pages == 1 {
            assert_eq!(serde_json::to_value(&page.rows).unwrap(), first["rows"], "the API's first page");
            assert_eq!(page.next.as_deref(), first["next"].as_str());
        }
        match page.next {
            Some(token) => q.after = Some(super::page::decode(&token).unwrap()),
            None => break,
        }
    }
    assert_eq!((seen.len(), pages), (25_000, 3));
    assert_eq!(tp, (0..25_000).filter(|i| i % 2 == 0 && i % 3 == 0).count() as i64);
    // A bad cursor is a one-line 400.
    let (status, body) = api_get(&db, "/api/v1/fscores?cursor=zz").await;
    assert_eq!(status, 400, "{body}");
}

/// Pages of /api/v1/metrics and /api/v1/requests, small on purpose, put
/// together equal the whole answer: no row twice, none missing, also when
/// many detail rows share one millisecond.
async fn metric_and_detail_pages_cover_every_row_once(db: TestDb) {
    let mut records = traffic(3_000, 3 * 3_600_000, 11);
    for r in records.iter_mut().take(40) {
        r.timestamp_unix_ms = T0_MS + 5_000; // 40 rows of one millisecond
    }
    ingest(&db.store, &records, 3).await;
    let whole =
        query::run(&db.store, &params(T0_MS, T0_MS + 4 * 3_600_000, 60, "model,application,side", None)).await.unwrap();
    assert!(whole.rows.len() > 500 && whole.next.is_none(), "{}", whole.rows.len());
    let mut paged = Vec::new();
    let mut q = params(T0_MS, T0_MS + 4 * 3_600_000, 60, "model,application,side", None);
    q.limit = 37;
    loop {
        let page = query::run(&db.store, &q).await.unwrap();
        assert!(page.rows.len() <= 37);
        paged.extend(page.rows);
        match page.next {
            Some(token) => q.after = Some(super::page::decode(&token).unwrap()),
            None => break,
        }
    }
    assert_eq!(paged, whole.rows);

    let (all, next) = db.store.read_details(0, i64::MAX, None, 10_000).await.unwrap();
    assert_eq!((all.len(), next), (records.len(), None));
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let (rows, next) = db.store.read_details(0, i64::MAX, after, 7).await.unwrap();
        assert!(rows.len() <= 7);
        paged.extend(rows);
        match next {
            Some(position) => after = Some(position),
            None => break,
        }
    }
    let key = |d: &DetailRow| serde_json::to_string(d).unwrap();
    let mut expected: Vec<String> = all.iter().map(key).collect();
    let mut got: Vec<String> = paged.iter().map(key).collect();
    assert_eq!(got.len(), expected.len());
    expected.sort();
    got.sort();
    assert_eq!(got, expected);
    // The API: a page, its token, the next page.
    let (_, first) = api_get(&db, &format!("/api/v1/requests?from={}&to=now&limit=25", T0_MS / 1000 - 60)).await;
    assert_eq!(first["rows"].as_array().unwrap().len(), 25);
    let token = first["next"].as_str().unwrap().to_string();
    let (_, second) =
        api_get(&db, &format!("/api/v1/requests?from={}&limit=25&cursor={token}", T0_MS / 1000 - 60)).await;
    assert_eq!(second["rows"][0], serde_json::to_value(&paged[25]).unwrap());
}

/// Many flushes of detail rows over a small budget: after each check the
/// database is within it, the oldest detail rows went first (then the oldest
/// minute rows), the newest are kept, and every deleted row is counted.
async fn the_size_budget_drops_the_oldest_details_then_the_oldest_minutes(db: TestDb) {
    const BUDGET: u64 = 1 << 20;
    let stats = Arc::new(StorageStats::default());
    let mut written_details = 0u64;
    for round in 0..40u64 {
        let start = T0_MS + round * 600_000; // 10 minutes per round
        let records: Vec<RequestRecord> = (0..1_000u64)
            .map(|i| {
                let mut r = record(start + i * 600, "m", 1.0 + i as f64, i, i, "0.001");
                r.session_id = Some(format!("session-{round}-{i}"));
                r
            })
            .collect();
        ingest(&db.store, &records, 1).await;
        written_details += records.len() as u64;
        super::writer::keep_within_budget(&db.store, BUDGET, &stats).await;
        let size = super::budget::size(&db.store).await.unwrap();
        assert!(size <= BUDGET, "round {round}: {size} bytes");
        assert_eq!(stats.database_size_bytes.get(), size);
    }
    let dropped = |table: &'static str| stats.budget_rows_dropped.get(table);
    let (kept, _) = db.store.read_details(0, i64::MAX, None, 10_000).await.unwrap();
    assert!(!kept.is_empty() && dropped("request_details") > 0);
    assert_eq!(kept.len() as u64 + dropped("request_details"), written_details, "every deleted row is counted");
    // The newest are kept: the last round's rows are all there.
    let last_round =
        kept.iter().filter(|d| d.session_id.as_deref().is_some_and(|s| s.starts_with("session-39-"))).count();
    assert_eq!(last_round, 1_000);
    let oldest_kept = kept.iter().map(|d| d.ts_ms).min().unwrap();
    assert!(oldest_kept > T0_MS as i64, "the oldest went first");
    assert_eq!(dropped("metrics_1m"), 0, "minute rows go only once the detail rows are gone");
    if let Store::Postgres(pool) = &db.store {
        // The space of deleted rows is reused: the table's disk use stays near the budget
        // (the rows written take about 12 MiB).
        let disk: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(pg_total_relation_size(inhrelid)), 0)::BIGINT FROM pg_inherits \
             WHERE inhparent = 'request_details'::regclass",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        assert!((disk as u64) < 3 * BUDGET, "request_details takes {disk} bytes on disk");
    }

    // A budget below what the minute rows take: the remaining detail rows
    // go, then the oldest minutes; hours and days stay.
    let minutes_before = db.store.read_rows(Tier::Minute, 0, i64::MAX, &RowFilter::default()).await.unwrap();
    let hours_before = db.store.read_rows(Tier::Hour, 0, i64::MAX, &RowFilter::default()).await.unwrap().len();
    let full = super::budget::size(&db.store).await.unwrap();
    eprintln!("phase 2 from {full} bytes, {} minute rows, {hours_before} hour rows", minutes_before.len());
    let mut budget = full;
    while dropped("metrics_1m") == 0 && budget > 16 * 1024 {
        budget /= 2;
        super::writer::keep_within_budget(&db.store, budget, &stats).await;
    }
    eprintln!("minute rows dropped at a budget of {budget} bytes: {:?}", stats.budget_rows_dropped);
    let (details, _) = db.store.read_details(0, i64::MAX, None, 10).await.unwrap();
    assert!(details.is_empty());
    let minutes = db.store.read_rows(Tier::Minute, 0, i64::MAX, &RowFilter::default()).await.unwrap();
    assert!(!minutes.is_empty() && minutes.len() < minutes_before.len(), "{}", minutes.len());
    assert_eq!(minutes.len() as u64 + dropped("metrics_1m"), minutes_before.len() as u64);
    let newest = minutes_before.iter().map(|(k, _, _)| k.bucket_start).max().unwrap();
    assert!(minutes.iter().any(|(k, _, _)| k.bucket_start == newest), "the newest minute is kept");
    let first_kept = minutes.iter().map(|(k, _, _)| k.bucket_start).min().unwrap();
    assert!(minutes_before.iter().filter(|(k, _, _)| k.bucket_start < first_kept).count() > 0);
    assert_eq!(db.store.read_rows(Tier::Hour, 0, i64::MAX, &RowFilter::default()).await.unwrap().len(), hours_before);
    assert!(super::budget::size(&db.store).await.unwrap() <= budget);
}

/// On a fresh database the hour and day rows start before the first minute
/// row (their buckets are rounded down): that is no expired data.
async fn a_fresh_database_gets_no_retention_warning(db: TestDb) {
    let at = T0_MS + 17 * 60_000 + 5_000;
    ingest(&db.store, &[record(at, "m", 1.0, 1, 1, "0.1")], 1).await;
    let result = query::run(&db.store, &params(T0_MS - 3_600_000, at + 60_000, 60, "", None)).await.unwrap();
    assert_eq!(result.rows.len(), 1);
    assert!(result.warnings.is_empty(), "{:?}", result.warnings);
    let (_, body) = api_get(&db, &format!("/api/v1/metrics?from={}&step=1m", T0_MS / 1000 - 3_600)).await;
    assert!(body.get("warnings").is_none(), "{body}");
}
