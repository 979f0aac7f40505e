//! HTTP API over storage, merged into the agent's endpoint:
//! `GET /api/v1/metrics`, `GET /api/v1/requests`, `GET` and `POST /api/v1/fscores`.
//! Answers are JSON; bad parameters get 400 with a one-line `error`, database
//! failures 503.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Query, State, rejection::QueryRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;

use super::{
    config::StorageConfig,
    db::{DetailPosition, RowFilter, Store, StoreError},
    fscore::{self, FScoreQuery},
    page,
    query::{self, Dimension, MetricsQuery, parse_duration, parse_step, parse_time},
    writer::now_ms,
};

pub struct ApiState {
    pub store: Store,
    pub config: StorageConfig,
}

pub fn routes(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/api/v1/metrics", get(metrics))
        .route("/api/v1/requests", get(requests))
        .route("/api/v1/fscores", get(fscores).post(ingest_fscores))
        .with_state(state)
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(serde_json::json!({ "error": message.to_string() }))).into_response()
}

/// The exclusive end of a window; `now` (the default) includes the current second.
fn parse_end(to: Option<&str>, now_unix: i64) -> Result<i64, String> {
    match to.unwrap_or("now") {
        "now" => Ok(now_unix + 1),
        other => parse_time(other, now_unix),
    }
}

/// Parameters shared by the CLI and the API.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsParams {
    pub from: Option<String>,
    pub to: Option<String>,
    pub application: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    /// `client` (default), `upstream` or `all`.
    pub side: Option<String>,
    pub group_by: Option<String>,
    pub step: Option<String>,
    /// Rows per page (default and at most `page::MAX_PAGE_ROWS`).
    pub limit: Option<i64>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
}

impl MetricsParams {
    pub fn to_query(&self, now_unix: i64) -> Result<MetricsQuery, String> {
        let from = parse_time(self.from.as_deref().unwrap_or("-1h"), now_unix)?;
        let to = parse_end(self.to.as_deref(), now_unix)?;
        if to <= from {
            return Err(format!("the window is empty: `to` ({to}) must be after `from` ({from})"));
        }
        let side = match self.side.as_deref().unwrap_or("client") {
            "all" => None,
            s @ ("client" | "upstream") => Some(s.to_string()),
            other => return Err(format!("side `{other}`: use client, upstream or all")),
        };
        Ok(MetricsQuery {
            from,
            to,
            step_seconds: parse_step(self.step.as_deref().unwrap_or("1m"))?,
            filter: RowFilter {
                application: self.application.clone(),
                provider: self.provider.clone(),
                model: self.model.clone(),
                side,
            },
            group_by: Dimension::parse_list(self.group_by.as_deref().unwrap_or(""))?,
            limit: page::limit(self.limit, page::MAX_PAGE_ROWS)?,
            after: self.cursor.as_deref().map(page::decode).transpose()?,
        })
    }
}

async fn metrics(State(state): State<Arc<ApiState>>, params: Result<Query<MetricsParams>, QueryRejection>) -> Response {
    let params = match params {
        Ok(Query(p)) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let q = match params.to_query(now_ms() / 1000) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match query::run(&state.store, &q).await {
        Ok(result) => Json(result).into_response(),
        Err(e @ StoreError::TooManyRows(_)) => error(StatusCode::BAD_REQUEST, e),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestsParams {
    pub from: Option<String>,
    pub to: Option<String>,
    /// Rows per page (default 1000, at most `page::MAX_PAGE_ROWS`).
    pub limit: Option<i64>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
}

/// Detail rows per page unless `limit` says otherwise.
pub const DEFAULT_REQUESTS_LIMIT: usize = 1_000;

async fn requests(
    State(state): State<Arc<ApiState>>,
    params: Result<Query<RequestsParams>, QueryRejection>,
) -> Response {
    let p = match params {
        Ok(Query(p)) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let now = now_ms() / 1000;
    let parsed = parse_time(p.from.as_deref().unwrap_or("-15m"), now).and_then(|from| {
        let to = parse_end(p.to.as_deref(), now)?;
        let limit = page::limit(p.limit, DEFAULT_REQUESTS_LIMIT)?;
        let after = p.cursor.as_deref().map(page::decode::<DetailPosition>).transpose()?;
        Ok((from, to, limit, after))
    });
    let (from, to, limit, after) = match parsed {
        Ok(w) => w,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match state.store.read_details(from.saturating_mul(1000), to.saturating_mul(1000), after, limit).await {
        Ok((rows, next)) => {
            Json(serde_json::json!({ "rows": rows, "next": next.map(|n| page::encode(&n)) })).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// Betas F-beta is computed for: beyond them `beta²` makes the score
/// numerically meaningless (recall or precision alone, or NaN).
pub const BETA_RANGE: (f64, f64) = (1e-3, 1e3);

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FScoreParams {
    pub from: Option<String>,
    pub to: Option<String>,
    pub application: Option<String>,
    pub suite: Option<String>,
    pub model: Option<String>,
    /// A window per row (`1h`, `1d`); default: the whole range in one.
    pub step: Option<String>,
    pub beta: Option<f64>,
    /// Rows per page (default and at most `page::MAX_PAGE_ROWS`).
    pub limit: Option<i64>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
}

impl FScoreParams {
    pub fn to_query(&self, now_unix: i64, default_beta: f64) -> Result<FScoreQuery, String> {
        let from = parse_time(self.from.as_deref().unwrap_or("-30d"), now_unix)?;
        let to = parse_end(self.to.as_deref(), now_unix)?;
        if to <= from {
            return Err(format!("the window is empty: `to` ({to}) must be after `from` ({from})"));
        }
        let step_seconds = match self.step.as_deref() {
            None => None,
            Some(s) => {
                Some(parse_duration(s).filter(|&d| d > 0).ok_or_else(|| format!("step `{s}`: use e.g. 1h or 1d"))?)
            }
        };
        let beta = self.beta.unwrap_or(default_beta);
        if !(BETA_RANGE.0..=BETA_RANGE.1).contains(&beta) {
            return Err(format!("beta {beta}: use a number from {} to {}", BETA_RANGE.0, BETA_RANGE.1));
        }
        Ok(FScoreQuery {
            from,
            to,
            step_seconds,
            application: self.application.clone(),
            suite: self.suite.clone(),
            model: self.model.clone(),
            beta,
            limit: page::limit(self.limit, page::MAX_PAGE_ROWS)?,
            after: self.cursor.as_deref().map(page::decode).transpose()?,
        })
    }
}

async fn fscores(State(state): State<Arc<ApiState>>, params: Result<Query<FScoreParams>, QueryRejection>) -> Response {
    let p = match params {
        Ok(Query(p)) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let q = match p.to_query(now_ms() / 1000, state.config.fscore_beta) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match fscore::query(&state.store, &q).await {
        Ok(page) => Json(page).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestParams {
    /// Time of every result that has none of its own.
    pub timestamp: Option<String>,
}

async fn ingest_fscores(
    State(state): State<Arc<ApiState>>,
    params: Result<Query<IngestParams>, QueryRejection>,
    body: String,
) -> Response {
    let now = now_ms();
    let default_ms = match params.map(|Query(p)| p.timestamp) {
        Ok(None) => None,
        Ok(Some(t)) => match parse_time(&t, now / 1000) {
            Ok(t) => Some(t * 1000),
            Err(e) => return error(StatusCode::BAD_REQUEST, e),
        },
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let results = match fscore::parse_results(&body, default_ms, now) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match fscore::insert(&state.store, &state.config.agent_id, &results).await {
        Ok(new) => Json(serde_json::json!({ "received": results.len(), "stored": new })).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}
