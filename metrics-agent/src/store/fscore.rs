//! F-scores of test executions: results (expected vs actual per test case,
//! tagged with application, suite, model and time) are stored as they are,
//! and precision, recall, F1 and F-beta are computed from the tp/fp/fn/tn
//! counts of any window and grouping — counts add exactly, ratios do not.
//! Edge cases follow the ADR: a ratio with a zero denominator is 0, not NaN.

use serde::{Deserialize, Serialize};
use sqlx::{QueryBuilder, Row};

use super::{
    db::{Store, StoreError},
    times::{parse_time, rfc3339},
};

/// One test case's result as ingested (JSON lines or a JSON array).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TestResult {
    #[serde(alias = "application_id")]
    pub application: String,
    pub suite: String,
    pub model: String,
    #[serde(alias = "test_case_id", alias = "case")]
    pub test_case: String,
    pub expected: bool,
    pub actual: bool,
    /// When the test ran: RFC 3339, `YYYY-MM-DD` or Unix seconds. Required,
    /// unless the whole input is given one (`--timestamp`, `?timestamp=`):
    /// it is part of what identifies a result, so re-ingesting stores nothing new.
    #[serde(default)]
    pub timestamp: Option<serde_json::Value>,
}

/// Counts of one group and the scores computed from them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Scores {
    pub tp: i64,
    pub fp: i64,
    #[serde(rename = "fn")]
    pub fn_: i64,
    pub tn: i64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub beta: f64,
    pub f_beta: f64,
}

fn ratio(num: i64, den: i64) -> f64 {
    if den == 0 { 0.0 } else { num as f64 / den as f64 }
}

impl Scores {
    pub fn from_counts(tp: i64, fp: i64, fn_: i64, tn: i64, beta: f64) -> Self {
        let precision = ratio(tp, tp + fp);
        let recall = ratio(tp, tp + fn_);
        let f = |b2: f64| {
            let den = b2 * precision + recall;
            if den == 0.0 { 0.0 } else { (1.0 + b2) * precision * recall / den }
        };
        Self { tp, fp, fn_, tn, precision, recall, f1: f(1.0), beta, f_beta: f(beta * beta) }
    }
}

/// A result made ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResult {
    pub ts_ms: i64,
    pub result: TestResult,
}

/// Parses JSON lines (blank lines skipped) or one JSON array; errors name the
/// line. Results without a timestamp take `default_ms`, else are an error.
pub fn parse_results(text: &str, default_ms: Option<i64>, now_ms: i64) -> Result<Vec<StoredResult>, String> {
    let trimmed = text.trim_start();
    let items: Vec<(usize, TestResult)> = if trimmed.starts_with('[') {
        let list: Vec<TestResult> = serde_json::from_str(trimmed).map_err(|e| format!("JSON array: {e}"))?;
        list.into_iter().enumerate().map(|(i, r)| (i + 1, r)).collect()
    } else {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let r: TestResult = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
            out.push((i + 1, r));
        }
        out
    };
    items
        .into_iter()
        .map(|(n, mut r)| {
            // Stored text has no control characters (terminal escapes would
            // reach whoever prints the table).
            for field in [&mut r.application, &mut r.suite, &mut r.model, &mut r.test_case] {
                *field = super::rollup::text(std::mem::take(field));
            }
            let ts_ms = match &r.timestamp {
                None | Some(serde_json::Value::Null) => default_ms.ok_or_else(|| {
                    format!(
                        "item {n} has no timestamp: add \"timestamp\" (when the test ran) to each result, or give \
                         the whole input one with --timestamp / ?timestamp= (re-ingesting then stores nothing twice)"
                    )
                })?,
                Some(serde_json::Value::Number(x)) => x
                    .as_f64()
                    .filter(|s| (0.0..=super::times::MAX_UNIX as f64).contains(s))
                    .map(|s| (s * 1000.0) as i64)
                    .ok_or_else(|| format!("item {n}: timestamp {x} is not Unix seconds between 1970 and 9999"))?,
                Some(serde_json::Value::String(s)) => {
                    parse_time(s, now_ms / 1000).map(|s| s * 1000).map_err(|e| format!("item {n}: {e}"))?
                }
                Some(other) => return Err(format!("item {n}: timestamp {other} is neither a string nor a number")),
            };
            for (what, v) in [("application", &r.application), ("suite", &r.suite), ("model", &r.model)] {
                if v.len() > 256 {
                    return Err(format!("item {n}: {what} is longer than 256 bytes"));
                }
            }
            Ok(StoredResult { ts_ms, result: r })
        })
        .collect()
}

/// Stores results; ones already stored (same application, suite, model,
/// test case and time) are ignored, so ingesting a file twice counts once.
/// Returns how many were new.
pub async fn insert(store: &Store, agent: &str, results: &[StoredResult]) -> Result<u64, StoreError> {
    let mut new = 0;
    for chunk in results.chunks(500) {
        macro_rules! insert_chunk {
            ($pool:expr) => {{
                let mut q = QueryBuilder::new(
                    "INSERT INTO fscore_results (ts_ms, application_id, suite, model, test_case, expected, actual, agent_id) ",
                );
                q.push_values(chunk, |mut b, s| {
                    b.push_bind(s.ts_ms)
                        .push_bind(s.result.application.clone())
                        .push_bind(s.result.suite.clone())
                        .push_bind(s.result.model.clone())
                        .push_bind(s.result.test_case.clone())
                        .push_bind(s.result.expected)
                        .push_bind(s.result.actual)
                        .push_bind(agent.to_string());
                });
                q.push(" ON CONFLICT DO NOTHING");
                q.build().persistent(false).execute($pool).await?.rows_affected()
            }};
        }
        new += match store {
            Store::Sqlite(pool) => insert_chunk!(pool),
            Store::Postgres(pool) => insert_chunk!(pool),
        };
    }
    Ok(new)
}

/// What F-scores to compute.
#[derive(Debug, Clone)]
pub struct FScoreQuery {
    pub from: i64,
    pub to: i64,
    /// Window per output row in seconds; `None`: one window for the whole range.
    pub step_seconds: Option<i64>,
    pub application: Option<String>,
    pub suite: Option<String>,
    pub model: Option<String>,
    pub beta: f64,
    /// Rows per page.
    pub limit: usize,
    /// Continue after this row (the previous page's `next`).
    pub after: Option<FScorePosition>,
}

/// A row's place in the order of the answer: (window start in ms, application, suite, model).
pub type FScorePosition = (i64, String, String, String);

/// One page of F-score rows and the token of the next one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FScorePage {
    pub rows: Vec<FScoreRow>,
    /// Pass as `cursor` (`--cursor`) for the rows that follow; null on the last page.
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FScoreRow {
    pub time: String,
    pub start_unix: i64,
    pub application: String,
    pub suite: String,
    pub model: String,
    pub results: i64,
    #[serde(flatten)]
    pub scores: Scores,
}

pub async fn query(store: &Store, q: &FScoreQuery) -> Result<FScorePage, StoreError> {
    let step_ms = q.step_seconds.unwrap_or(0).saturating_mul(1000);
    let mut from_ms = q.from.saturating_mul(1000);
    if let Some((w, ..)) = &q.after
        && step_ms > 0
    {
        // Rows of windows before the cursor's are not needed.
        from_ms = from_ms.max(*w);
    }
    let window = if step_ms > 0 { "(ts_ms / $1) * $1".to_string() } else { "$1 * 0".to_string() };
    let count = |cond: &str| format!("CAST(SUM(CASE WHEN {cond} THEN 1 ELSE 0 END) AS BIGINT)");
    let mut sql = format!(
        "SELECT * FROM (SELECT {window} AS w, application_id, suite, model, {} AS tp, {} AS fp, {} AS fn_, {} AS tn \
         FROM fscore_results WHERE ts_ms >= $2 AND ts_ms < $3",
        count("expected AND actual"),
        count("NOT expected AND actual"),
        count("expected AND NOT actual"),
        count("NOT expected AND NOT actual"),
    );
    let mut params = Vec::new();
    for (column, value) in [("application_id", &q.application), ("suite", &q.suite), ("model", &q.model)] {
        if let Some(v) = value {
            params.push(v.clone());
            sql += &format!(" AND {column} = ${}", 3 + params.len());
        }
    }
    sql += " GROUP BY w, application_id, suite, model) AS g";
    let mut next_param = 4 + params.len();
    if q.after.is_some() {
        let n = next_param;
        sql += &format!(" WHERE (w, application_id, suite, model) > (${n}, ${}, ${}, ${})", n + 1, n + 2, n + 3);
        next_param += 4;
    }
    sql += &format!(" ORDER BY w, application_id, suite, model LIMIT ${next_param}");
    macro_rules! fetch {
        ($pool:expr) => {{
            let mut query = sqlx::query(&sql).bind(step_ms.max(1)).bind(from_ms).bind(q.to.saturating_mul(1000));
            for p in &params {
                query = query.bind(p.clone());
            }
            if let Some((w, application, suite, model)) = &q.after {
                query = query.bind(*w).bind(application.clone()).bind(suite.clone()).bind(model.clone());
            }
            let rows = query.bind(q.limit as i64 + 1).fetch_all($pool).await?;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let (tp, fp, fn_, tn): (i64, i64, i64, i64) =
                    (row.try_get("tp")?, row.try_get("fp")?, row.try_get("fn_")?, row.try_get("tn")?);
                let w: i64 = row.try_get("w")?;
                let start_unix = if step_ms > 0 { w / 1000 } else { q.from };
                out.push((
                    w,
                    FScoreRow {
                        time: rfc3339(start_unix),
                        start_unix,
                        application: row.try_get("application_id")?,
                        suite: row.try_get("suite")?,
                        model: row.try_get("model")?,
                        results: tp + fp + fn_ + tn,
                        scores: Scores::from_counts(tp, fp, fn_, tn, q.beta),
                    },
                ));
            }
            out
        }};
    }
    let mut rows = match store {
        Store::Sqlite(pool) => fetch!(pool),
        Store::Postgres(pool) => fetch!(pool),
    };
    let next = if rows.len() > q.limit {
        rows.truncate(q.limit);
        rows.last().map(|(w, r)| super::page::encode(&(*w, r.application.clone(), r.suite.clone(), r.model.clone())))
    } else {
        None
    };
    Ok(FScorePage { rows: rows.into_iter().map(|(_, r)| r).collect(), next })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_adr_edge_cases_give_zero_not_nan() {
        let none = Scores::from_counts(0, 0, 0, 10, 1.0);
        assert_eq!((none.precision, none.recall, none.f1, none.f_beta), (0.0, 0.0, 0.0, 0.0));
        let no_predicted = Scores::from_counts(0, 0, 5, 5, 2.0);
        assert_eq!((no_predicted.precision, no_predicted.recall, no_predicted.f1), (0.0, 0.0, 0.0));
        let all_wrong = Scores::from_counts(0, 3, 4, 0, 0.5);
        assert_eq!((all_wrong.precision, all_wrong.recall, all_wrong.f1, all_wrong.f_beta), (0.0, 0.0, 0.0, 0.0));
    }

    #[test]
    fn a_known_table() {
        // (tp, fp, fn, tn, beta) -> (precision, recall, f1, f_beta), worked out by hand.
        let table = [
            ((8, 2, 2, 88, 1.0), (0.8, 0.8, 0.8, 0.8)),
            ((6, 2, 4, 0, 1.0), (0.75, 0.6, 2.0 * 0.45 / 1.35, 2.0 * 0.45 / 1.35)),
            ((1, 0, 3, 0, 2.0), (1.0, 0.25, 0.4, 5.0 * 0.25 / 4.25)),
            ((1, 0, 3, 0, 0.5), (1.0, 0.25, 0.4, 1.25 * 0.25 / 0.5)),
            ((5, 0, 0, 0, 1.0), (1.0, 1.0, 1.0, 1.0)),
        ];
        for ((tp, fp, fn_, tn, beta), (p, r, f1, fb)) in table {
            let s = Scores::from_counts(tp, fp, fn_, tn, beta);
            let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
            assert!(close(s.precision, p) && close(s.recall, r), "{s:?}");
            assert!(close(s.f1, f1) && close(s.f_beta, fb), "{s:?}");
        }
    }

    #[test]
    fn parsing_names_the_bad_line() {
        let ok = "{\"application\":\"a\",\"suite\":\"s\",\"model\":\"m\",\"test_case\":\"t\",\"expected\":true,\"actual\":false,\"timestamp\":\"2026-01-01T00:00:00Z\"}\n\n";
        let parsed = parse_results(ok, None, 5).unwrap();
        assert_eq!(parsed[0].ts_ms, 1_767_225_600_000);
        assert_eq!(parse_results(ok, Some(7_000), 5).unwrap()[0].ts_ms, 1_767_225_600_000, "its own time wins");
        let bad = format!("{ok}{{\"application\":\"a\"}}\n");
        assert!(parse_results(&bad, None, 5).unwrap_err().starts_with("line 3:"));
        let no_ts = "[{\"application\":\"a\",\"suite\":\"s\",\"model\":\"m\",\"test_case\":\"t\",\"expected\":true,\"actual\":true}]";
        assert_eq!(parse_results(no_ts, Some(7_000), 9_000).unwrap()[0].ts_ms, 7_000);
        let e = parse_results(no_ts, None, 9_000).unwrap_err();
        assert!(e.starts_with("item 1 has no timestamp") && !e.contains('\n'), "{e}");
        let escaped = ok.replace("\"s\"", "\"s\\u001b[2J\\u009b31m\\u0000x\"");
        assert_eq!(parse_results(&escaped, None, 5).unwrap()[0].result.suite, "s[2J31mx", "control characters removed");
        let far = ok.replace("\"2026-01-01T00:00:00Z\"", "1e300");
        assert!(parse_results(&far, None, 5).unwrap_err().contains("between 1970 and 9999"));
    }
}
