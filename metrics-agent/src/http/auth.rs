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

use crate::secrets::Secret;

/// `[api]` in the configuration file.
#[derive(Debug, Default, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Bearer token required by every HTTP route (overridden by `METRICS_AGENT_API_TOKEN`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Host names (`name` for any port, or `name:port`) the endpoint answers
    /// to besides its listen address, `localhost`, `127.0.0.1` and `[::1]`.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Concurrent HTTP connections at most [default: 1024].
    pub max_connections: Option<u64>,
    /// Seconds a client has to send a request head [default: 10].
    pub header_timeout_seconds: Option<u64>,
    /// Seconds a connection may move no byte between requests [default: 60].
    pub idle_timeout_seconds: Option<u64>,
}

impl ApiConfig {
    /// The server limits, checked; the error says which setting to change.
    pub fn limits(&self) -> anyhow::Result<super::server::ServerLimits> {
        let check = |name: &str, v: Option<u64>, default: u64, lo: u64, hi: u64| match v.unwrap_or(default) {
            v if (lo..=hi).contains(&v) => Ok(v),
            v => Err(anyhow::anyhow!("[api] {name} = {v}: use a value between {lo} and {hi}")),
        };
        Ok(super::server::ServerLimits {
            max_connections: check("max_connections", self.max_connections, 1024, 16, 100_000)? as usize,
            header_timeout: std::time::Duration::from_secs(check(
                "header_timeout_seconds",
                self.header_timeout_seconds,
                10,
                1,
                300,
            )?),
            idle_timeout: std::time::Duration::from_secs(check(
                "idle_timeout_seconds",
                self.idle_timeout_seconds,
                60,
                1,
                3600,
            )?),
        })
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
    request
        .uri()
        .query()?
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .map(super::query_string::percent_decode)
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

/// Shortest token accepted when listening beyond loopback.
pub const MIN_REMOTE_TOKEN_CHARS: usize = 16;

/// Refuses to serve beyond loopback without a token of at least
/// `MIN_REMOTE_TOKEN_CHARS` characters; rejects an empty token.
pub fn check(listen: SocketAddr, token: Option<&str>) -> anyhow::Result<()> {
    match token {
        Some(t) if t.trim().is_empty() => {
            anyhow::bail!("the API token is empty: set [api] token or {TOKEN_ENV} to a secret, or unset it")
        }
        Some(t) if !listen.ip().is_loopback() && t.trim().chars().count() < MIN_REMOTE_TOKEN_CHARS => anyhow::bail!(
            "--listen {listen} is reachable beyond this host and the API token is shorter than {MIN_REMOTE_TOKEN_CHARS} characters: use a long random one (e.g. `openssl rand -hex 24`)"
        ),
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
        assert!(check(any, Some("t0k3n-long-enough-1")).is_ok());
        let short = check(any, Some("x")).unwrap_err().to_string();
        assert!(short.contains("shorter than 16") && !short.contains('\n'), "{short}");
        assert!(check(local, Some("x")).is_ok(), "loopback may use a short token (none is allowed there)");
        assert!(check(local, Some("  ")).is_err());
    }
}
