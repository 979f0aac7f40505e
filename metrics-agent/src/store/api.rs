//! HTTP API over storage, merged into the agent's endpoint:
//! `GET /api/v1/metrics`, `GET /api/v1/requests`, `GET` and `POST /api/v1/fscores`.
//! Answers are JSON; bad parameters get 400 with a one-line `error`, database
//! failures 503. The parameters are parsed by `query::params`.

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
    db::{Store, StoreError},
    fscore, page,
    query::{
        self,
        params::{DetailsQuery, FScoreParams, MetricsParams, RequestsParams},
    },
    times::parse_time,
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

async fn requests(
    State(state): State<Arc<ApiState>>,
    params: Result<Query<RequestsParams>, QueryRejection>,
) -> Response {
    let p = match params {
        Ok(Query(p)) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let DetailsQuery { from, to, limit, after } = match p.to_query(now_ms() / 1000) {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match state.store.read_details(from.saturating_mul(1000), to.saturating_mul(1000), after, limit).await {
        Ok((rows, next)) => {
            Json(serde_json::json!({ "rows": rows, "next": next.map(|n| page::encode(&n)) })).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
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
