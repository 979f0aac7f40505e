//! Reading metrics back: a time window, filters, a step and the dimensions
//! to group by. The coarsest tier whose bucket width divides the step is
//! read; its rows are merged (sums added, sketches merged — never averaged
//! percentiles) into one output row per step bucket and group, across all
//! agents. Output as JSON, CSV or an aligned table.
//!
//! The parameters of every read (metrics, request details, F-scores) are
//! parsed and checked here (`params`, with the times and durations of
//! `store::times`); the CLI (`crate::store_cli`) and the HTTP API (`store::api`) only
//! carry them in and the answer out.

pub mod params;

use std::{collections::BTreeMap, ops::ControlFlow};

use rust_decimal::Decimal;
use serde::Serialize;

use super::{
    db::{RowFilter, Store, StoreError},
    rollup::{Aggregate, Tier},
    times::rfc3339,
};

/// A dimension output rows can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dimension {
    Application,
    Side,
    Provider,
    Model,
    Agent,
}

impl Dimension {
    pub fn parse_list(text: &str) -> Result<Vec<Dimension>, String> {
        let mut dims = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let d = match part {
                "application" | "application_id" | "app" => Dimension::Application,
                "side" => Dimension::Side,
                "provider" => Dimension::Provider,
                "model" => Dimension::Model,
                "agent" | "agent_id" => Dimension::Agent,
                other => {
                    return Err(format!("cannot group by `{other}`: use application, provider, model, side or agent"));
                }
            };
            if !dims.contains(&d) {
                dims.push(d);
            }
        }
        Ok(dims)
    }
}

/// What to read.
#[derive(Debug, Clone)]
pub struct MetricsQuery {
    /// Unix seconds, inclusive; rounded down to the step.
    pub from: i64,
    /// Unix seconds, exclusive.
    pub to: i64,
    pub step_seconds: i64,
    pub filter: RowFilter,
    pub group_by: Vec<Dimension>,
    /// Rows per page.
    pub limit: usize,
    /// Continue after this row (the previous page's `next`).
    pub after: Option<MetricsPosition>,
}

/// A row's place in the order of the answer: its bucket start and group
/// (application, side, provider, model, agent; `None` where not grouped).
pub type MetricsPosition = (i64, [Option<String>; 5]);

/// One output row (all durations in microseconds; cost an exact decimal string).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricsRow {
    pub time: String,
    pub start_unix: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub side: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    pub request_count: i64,
    pub error_count: i64,
    pub cache_hits: i64,
    pub usage_unknown_count: i64,
    pub unpriced_count: i64,
    pub tokens_input_sum: i64,
    pub tokens_output_sum: i64,
    pub tokens_cached_sum: i64,
    pub tokens_cache_creation_sum: i64,
    pub tokens_reasoning_sum: i64,
    #[serde(with = "rust_decimal::serde::str")]
    pub cost_usd_sum: Decimal,
    pub latency_p50_us: u64,
    pub latency_p90_us: u64,
    pub latency_p99_us: u64,
    pub latency_max_us: u64,
    pub ttfb_p50_us: u64,
    pub ttfb_p90_us: u64,
    pub ttfb_p99_us: u64,
    pub ttfb_max_us: u64,
    /// Streamed requests only (null when the group had none): time to the
    /// first content event and per output token.
    pub ttft_p50_us: Option<u64>,
    pub ttft_p90_us: Option<u64>,
    pub ttft_p99_us: Option<u64>,
    pub tpot_p50_us: Option<u64>,
    pub tpot_p99_us: Option<u64>,
    /// False: the counts, token sums and cost are exact. True: some records
    /// were captured at sampling interval N > 1 and count N times each, so
    /// those values are estimates (percentiles are over captured exchanges).
    pub estimate: bool,
    /// Records captured behind the row (equals `request_count` when exact).
    pub captured_count: i64,
}

#[derive(Debug, Serialize)]
pub struct MetricsResult {
    pub tier: Tier,
    pub step_seconds: i64,
    pub from_unix: i64,
    pub to_unix: i64,
    /// What the answer lacks, in words (e.g. the tier expired before `from`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    pub rows: Vec<MetricsRow>,
    /// Pass as `cursor` (`--cursor`) for the rows that follow; null on the last page.
    pub next: Option<String>,
}

/// The coarsest tier whose bucket divides `step_seconds`.
pub fn tier_for_step(step_seconds: i64) -> Option<Tier> {
    Tier::ALL.iter().rev().copied().find(|t| step_seconds > 0 && step_seconds % t.seconds() == 0)
}

/// The groups of one step bucket: (application, side, provider, model, agent) -> merged row.
type Groups = BTreeMap<[Option<String>; 5], Aggregate>;

/// Groups of one step bucket held at once at most: bounds the memory a
/// query (CLI or API) can take whatever the page size.
pub const MAX_GROUPS_PER_BUCKET: usize = 20_000;

pub async fn run(store: &Store, q: &MetricsQuery) -> Result<MetricsResult, StoreError> {
    let tier = tier_for_step(q.step_seconds).unwrap_or(Tier::Minute);
    let step = q.step_seconds;
    let from = q.from.div_euclid(step) * step;
    // Rows arrive in time order, so step buckets arrive one after the other:
    // only the current bucket's groups are held, and reading stops once the
    // page is full and one more row is known to follow.
    let start = q.after.as_ref().map_or(from, |(bucket, _)| from.max(*bucket));
    let wants = |d: Dimension| q.group_by.contains(&d);
    let mut current: Option<(i64, Groups)> = None;
    let mut out: Vec<MetricsRow> = Vec::new();
    let emit = |bucket: i64, groups: Groups, out: &mut Vec<_>| {
        for (dims, agg) in groups {
            let position = (bucket, dims);
            if q.after.as_ref().is_none_or(|after| &position > after) && out.len() <= q.limit {
                out.push(output_row(position, &agg));
            }
        }
    };
    store
        .for_each_row(tier, start, q.to, &q.filter, |key, agent, agg| {
            let bucket = key.bucket_start.div_euclid(step) * step;
            if current.as_ref().is_some_and(|(b, _)| *b != bucket) {
                let (b, groups) = current.take().expect("checked");
                emit(b, groups, &mut out);
                if out.len() > q.limit {
                    return Ok(ControlFlow::Break(()));
                }
            }
            let (_, groups) = current.get_or_insert_with(|| (bucket, BTreeMap::new()));
            let dims = [
                wants(Dimension::Application).then(|| key.application_id.clone()),
                wants(Dimension::Side).then(|| key.side.clone()),
                wants(Dimension::Provider).then(|| key.provider.clone()),
                wants(Dimension::Model).then(|| key.model.clone()),
                wants(Dimension::Agent).then_some(agent),
            ];
            if let Some(row) = groups.get_mut(&dims) {
                row.merge(&agg);
            } else if groups.len() >= MAX_GROUPS_PER_BUCKET {
                return Err(StoreError::TooManyRows(MAX_GROUPS_PER_BUCKET));
            } else {
                groups.insert(dims, agg);
            }
            Ok(ControlFlow::Continue(()))
        })
        .await?;
    if let Some((b, groups)) = current.take() {
        emit(b, groups, &mut out);
    }
    let next = if out.len() > q.limit {
        out.truncate(q.limit);
        out.last().map(|r| {
            let dims = [r.application.clone(), r.side.clone(), r.provider.clone(), r.model.clone(), r.agent.clone()];
            super::page::encode(&(r.start_unix, dims))
        })
    } else {
        None
    };
    let rows = out;
    let warnings = coverage_warnings(store, tier, from, q.step_seconds).await?;
    Ok(MetricsResult { tier, step_seconds: q.step_seconds, from_unix: from, to_unix: q.to, warnings, rows, next })
}

/// The output row of one group: sums as they are, percentiles from the merged sketches.
fn output_row((start, [application, side, provider, model, agent]): MetricsPosition, a: &Aggregate) -> MetricsRow {
    let q = |s: &super::sketch::Sketch, p: f64| s.quantile(p).unwrap_or(0);
    MetricsRow {
        time: rfc3339(start),
        start_unix: start,
        application,
        side,
        provider,
        model,
        agent,
        request_count: a.request_count,
        error_count: a.error_count,
        cache_hits: a.cache_hits,
        usage_unknown_count: a.usage_unknown_count,
        unpriced_count: a.unpriced_count,
        tokens_input_sum: a.tokens_input,
        tokens_output_sum: a.tokens_output,
        tokens_cached_sum: a.tokens_cached,
        tokens_cache_creation_sum: a.tokens_cache_creation,
        tokens_reasoning_sum: a.tokens_reasoning,
        cost_usd_sum: a.cost_usd,
        latency_p50_us: q(&a.latency, 0.5),
        latency_p90_us: q(&a.latency, 0.9),
        latency_p99_us: q(&a.latency, 0.99),
        latency_max_us: a.latency.max(),
        ttfb_p50_us: q(&a.ttfb, 0.5),
        ttfb_p90_us: q(&a.ttfb, 0.9),
        ttfb_p99_us: q(&a.ttfb, 0.99),
        ttfb_max_us: a.ttfb.max(),
        ttft_p50_us: a.ttft.quantile(0.5),
        ttft_p90_us: a.ttft.quantile(0.9),
        ttft_p99_us: a.ttft.quantile(0.99),
        tpot_p50_us: a.tpot.quantile(0.5),
        tpot_p99_us: a.tpot.quantile(0.99),
        estimate: a.estimate,
        captured_count: a.captured_count,
    }
}

/// A window that starts before the chosen tier's oldest row, while a coarser
/// tier goes back further: retention expired the finer rows, so the answer
/// misses data the database still holds at a coarser step. Said, not hidden.
async fn coverage_warnings(store: &Store, tier: Tier, from: i64, step: i64) -> Result<Vec<String>, StoreError> {
    let Some(oldest) = store.oldest_bucket(tier).await? else { return Ok(Vec::new()) };
    if oldest <= from {
        return Ok(Vec::new());
    }
    let mut warnings = Vec::new();
    for coarser in Tier::ALL.iter().copied().filter(|t| t.seconds() > tier.seconds()) {
        // A coarser bucket that starts before the one holding the finer
        // tier's oldest row: on a fresh database the hour and day rows start
        // before the first minute row too (rounded down), which is no gap.
        if store.oldest_bucket(coarser).await?.is_some_and(|o| o < coarser.bucket(oldest)) {
            warnings.push(format!(
                "the {} tier holds rows from {} only (older ones expired by retention or the size budget): buckets before that are \
                 missing at step {}s; the {} tier goes back further (use a step that is a multiple of {}s)",
                tier.name(),
                rfc3339(oldest),
                step,
                coarser.name(),
                coarser.seconds()
            ));
            break;
        }
    }
    Ok(warnings)
}

/// Output format of the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// Renders serializable rows: JSON (the whole value), CSV or a table (the
/// rows' fields as columns).
pub fn render<T: Serialize>(whole: &T, rows: &[impl Serialize], format: Format) -> String {
    if format == Format::Json {
        return serde_json::to_string_pretty(whole).unwrap_or_default() + "\n";
    }
    let objects: Vec<serde_json::Map<String, serde_json::Value>> = rows
        .iter()
        .filter_map(|r| match serde_json::to_value(r) {
            Ok(serde_json::Value::Object(m)) => Some(m),
            _ => None,
        })
        .collect();
    let Some(first) = objects.first() else {
        return String::from(if format == Format::Csv { "" } else { "(no rows)\n" });
    };
    let columns: Vec<String> = first.keys().cloned().collect();
    let cell = |v: Option<&serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let table: Vec<Vec<String>> = objects.iter().map(|o| columns.iter().map(|c| cell(o.get(c))).collect()).collect();
    let mut out = String::new();
    if format == Format::Csv {
        let escape = |s: &str| {
            if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
        };
        out += &columns.iter().map(|c| escape(c)).collect::<Vec<_>>().join(",");
        out.push('\n');
        for row in &table {
            out += &row.iter().map(|c| escape(c)).collect::<Vec<_>>().join(",");
            out.push('\n');
        }
        return out;
    }
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| table.iter().map(|r| r[i].len()).max().unwrap_or(0).max(c.len()))
        .collect();
    let line = |cells: &[String]| {
        cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_string()
    };
    out += &line(&columns);
    out.push('\n');
    for row in &table {
        out += &line(row);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::times::parse_step;

    #[test]
    fn steps_pick_the_coarsest_tier_that_divides_them() {
        assert_eq!(tier_for_step(60), Some(Tier::Minute));
        assert_eq!(tier_for_step(300), Some(Tier::Minute));
        assert_eq!(tier_for_step(3_600), Some(Tier::Hour));
        assert_eq!(tier_for_step(7_200), Some(Tier::Hour));
        assert_eq!(tier_for_step(86_400), Some(Tier::Day));
        assert_eq!(tier_for_step(90), None);
        assert_eq!(parse_step("1h"), Ok(3_600));
        assert!(parse_step("30s").is_err());
        assert!(parse_step("1x").is_err());
    }

    #[test]
    fn group_by_lists() {
        assert_eq!(Dimension::parse_list("provider,model"), Ok(vec![Dimension::Provider, Dimension::Model]));
        assert!(Dimension::parse_list("user").unwrap_err().contains("cannot group by `user`"));
    }

    #[test]
    fn csv_and_table() {
        #[derive(Serialize)]
        struct R {
            a: &'static str,
            b: i64,
        }
        let rows = [R { a: "x,y", b: 1 }, R { a: "z", b: 22 }];
        assert_eq!(render(&rows, &rows, Format::Csv), "a,b\n\"x,y\",1\nz,22\n");
        assert_eq!(render(&rows, &rows, Format::Table), "a    b\nx,y  1\nz    22\n");
    }
}
