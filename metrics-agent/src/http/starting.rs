//! The endpoint from the moment its address is bound. Loading and verifying
//! the eBPF programs takes seconds (7 s at load average 8 on two cores), and
//! until `run` has built the full router a connection would wait unanswered
//! in the listen queue: a Prometheus scrape or a readiness probe then hangs
//! until its own timeout. Served at once instead, every request gets a quick
//! `503 starting` until the full router is set, then goes to it.

use std::sync::{Arc, OnceLock};

use axum::{
    Router,
    extract::Request,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use tower::ServiceExt;

/// The router served while starting, and where `run` sets the full one.
pub fn router() -> (Router, Arc<OnceLock<Router>>) {
    let full: Arc<OnceLock<Router>> = Arc::default();
    let set = full.clone();
    let router = Router::new().fallback(move |request: Request| {
        let full = full.get().cloned();
        async move { answer(full, request).await }
    });
    (router, set)
}

async fn answer(full: Option<Router>, request: Request) -> Response {
    match full {
        Some(router) => router.oneshot(request).await.unwrap_or_else(|never| match never {}),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1"), (header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "starting: the agent is loading its eBPF programs\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Request, routing::get};

    use super::*;

    async fn status(app: &Router, path: &str) -> StatusCode {
        app.clone().oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap().status()
    }

    #[tokio::test]
    async fn answers_503_until_the_full_router_is_set_then_delegates_to_it() {
        let (app, full) = router();
        assert_eq!(status(&app, "/metrics").await, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status(&app, "/readyz").await, StatusCode::SERVICE_UNAVAILABLE);
        full.set(Router::new().route("/metrics", get(|| async { "m\n" }))).unwrap();
        assert_eq!(status(&app, "/metrics").await, StatusCode::OK);
        assert_eq!(status(&app, "/nowhere").await, StatusCode::NOT_FOUND);
    }
}
