//! The HTTP endpoint: `GET /metrics` in OpenMetrics or Prometheus text format,
//! chosen by the `Accept` header, and `GET /readyz`.

use std::sync::Arc;

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use prometheus_client::registry::Registry;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `/metrics` plus the routes other parts of the agent serve (query API,
/// stream, dashboard), merged in by `run`.
pub fn router(registry: Arc<Registry>, routes: Router) -> Router {
    let base = Router::new().route("/metrics", get(metrics)).with_state(registry);
    let base = if routes.has_routes() {
        base
    } else {
        base.route("/", get(|| async { "metrics-agent: Prometheus metrics at /metrics\n" }))
    };
    base.merge(routes)
}

/// `GET /readyz`: 200 once the targets are attached, 503 before (for
/// orchestrators and tests: exchanges before that are not seen).
pub fn readiness(ready: Arc<std::sync::atomic::AtomicBool>) -> Router {
    Router::new().route(
        "/readyz",
        get(|State(ready): State<Arc<std::sync::atomic::AtomicBool>>| async move {
            if ready.load(std::sync::atomic::Ordering::Acquire) {
                (StatusCode::OK, "ready\n")
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, "attaching\n")
            }
        })
        .with_state(ready),
    )
}

async fn metrics(State(registry): State<Arc<Registry>>, headers: HeaderMap) -> impl IntoResponse {
    let mut body = String::new();
    if prometheus_client::encoding::text::encode(&mut body, &registry).is_err() {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
            String::from("encoding failed\n"),
        );
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.contains("application/openmetrics-text") {
        (StatusCode::OK, [(header::CONTENT_TYPE, OPENMETRICS)], body)
    } else {
        (StatusCode::OK, [(header::CONTENT_TYPE, PROMETHEUS_TEXT)], openmetrics_to_prometheus(&body))
    }
}

/// Rewrites OpenMetrics text as Prometheus text 0.0.4: counter families are
/// named with their `_total` suffix, `# UNIT` and `# EOF` lines are dropped.
pub fn openmetrics_to_prometheus(text: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            counters.insert(name.to_string());
        }
    }
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(rewritten.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_get_total_suffix_in_prometheus_text() {
        let om = "# HELP x_bytes Bytes.\n# TYPE x_bytes counter\n# UNIT x_bytes bytes\nx_bytes_total 3\n# TYPE g gauge\ng 1\n# EOF\n";
        let p = super::openmetrics_to_prometheus(om);
        assert_eq!(
            p,
            "# HELP x_bytes_total Bytes.\n# TYPE x_bytes_total counter\nx_bytes_total 3\n# TYPE g gauge\ng 1\n"
        );
    }
}
