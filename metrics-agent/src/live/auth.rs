//! Bearer-token authentication of everything the agent serves over HTTP
//! (metrics, API, stream, dashboard) when a token is configured
//! (`[api] token` or `METRICS_AGENT_API_TOKEN`). Accepted as
//! `Authorization: Bearer TOKEN`, or — for browsers, which cannot set headers
//! on a WebSocket or a page load — a `token=TOKEN` query parameter. Tokens
//! are compared in constant time.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Router,
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};

/// `[api]` in the configuration file.
#[derive(Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Bearer token required by every HTTP route (overridden by `METRICS_AGENT_API_TOKEN`).
    pub token: Option<String>,
}

/// A token that never shows in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The environment variable holding the token.
pub const TOKEN_ENV: &str = "METRICS_AGENT_API_TOKEN";

/// Wraps `router` so every request must carry `token` (no-op when `None`).
pub fn protect(router: Router, token: Option<&Secret>) -> Router {
    match token {
        None => router,
        Some(token) => router.layer(middleware::from_fn_with_state(Arc::<str>::from(token.0.as_str()), require_token)),
    }
}

/// Equal contents, in time that depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The token a request presents, if any.
fn presented(request: &Request) -> Option<String> {
    if let Some(value) = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
        && let Some((scheme, token)) = value.split_once(' ')
        && scheme.eq_ignore_ascii_case("bearer")
    {
        return Some(token.trim().to_string());
    }
    request.uri().query()?.split('&').find_map(|pair| pair.strip_prefix("token=")).map(super::stream::percent_decode)
}

/// `query` without its `token=` pairs (`None` when nothing is left).
fn without_token(query: &str) -> Option<String> {
    let kept: Vec<&str> = query.split('&').filter(|pair| !pair.starts_with("token=") && *pair != "token").collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// Removes the token from the request's URL once it is checked: handlers
/// never see it (so strict parameter parsing does not refuse it, and it is
/// never echoed or logged by them).
fn strip_token(mut request: Request) -> Request {
    let uri = request.uri();
    let Some(query) = uri.query() else { return request };
    if !query.split('&').any(|pair| pair.starts_with("token=") || pair == "token") {
        return request;
    }
    let path_and_query = match without_token(query) {
        Some(rest) => format!("{}?{rest}", uri.path()),
        None => uri.path().to_string(),
    };
    let mut parts = uri.clone().into_parts();
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(stripped) = axum::http::Uri::from_parts(parts) {
            *request.uri_mut() = stripped;
        }
    }
    request
}

async fn require_token(State(token): State<Arc<str>>, request: Request, next: Next) -> Response {
    match presented(&request) {
        Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => next.run(strip_token(request)).await,
        given => {
            let why = if given.is_some() { "wrong token" } else { "missing token" };
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"metrics-agent\"")],
                format!("{why}: send `Authorization: Bearer TOKEN` or add `?token=TOKEN` to the URL\n"),
            )
                .into_response()
        }
    }
}

/// Refuses to serve beyond loopback without a token; rejects an empty token.
pub fn check(listen: SocketAddr, token: Option<&str>) -> anyhow::Result<()> {
    match token {
        Some(t) if t.trim().is_empty() => {
            anyhow::bail!("the API token is empty: set [api] token or {TOKEN_ENV} to a secret, or unset it")
        }
        None if !listen.ip().is_loopback() => anyhow::bail!(
            "--listen {listen} is reachable beyond this host: set an API token ([api] token or {TOKEN_ENV}) or listen on 127.0.0.1"
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison() {
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!constant_time_eq(b"secret-token", b"secret-tokeN"));
        assert!(!constant_time_eq(b"secret", b"secret-token"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn the_token_is_taken_out_of_the_query() {
        let strip = |uri: &str| {
            let request = Request::builder().uri(uri).body(axum::body::Body::empty()).unwrap();
            strip_token(request).uri().to_string()
        };
        assert_eq!(strip("/api/v1/metrics?from=-1h&token=t0k&step=1m"), "/api/v1/metrics?from=-1h&step=1m");
        assert_eq!(strip("/api/v1/metrics?token=t0k"), "/api/v1/metrics");
        assert_eq!(strip("/?token=a&token=b&x=1"), "/?x=1");
        assert_eq!(strip("/stream?tokens=1"), "/stream?tokens=1");
        assert_eq!(strip("/metrics"), "/metrics");
    }

    #[test]
    fn non_loopback_needs_a_token() {
        let any: SocketAddr = "0.0.0.0:9464".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:9464".parse().unwrap();
        let v6: SocketAddr = "[::1]:9464".parse().unwrap();
        assert!(check(local, None).is_ok());
        assert!(check(v6, None).is_ok());
        let err = check(any, None).unwrap_err().to_string();
        assert!(err.contains("set an API token") && !err.contains('\n'), "{err}");
        assert!(check(any, Some("t0k3n")).is_ok());
        assert!(check(local, Some("  ")).is_err());
    }
}
