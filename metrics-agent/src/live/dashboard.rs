//! `GET /`: the live dashboard, one HTML page with its script and hand-drawn
//! canvas plots embedded in the binary (no network access at run time). It
//! reads the WebSocket stream of the same agent. The page is sent with a
//! Content-Security-Policy that allows only its own script (a per-response
//! nonce) and connections back to this agent.

use std::hash::{BuildHasher, RandomState};

use axum::{
    Router,
    http::header,
    response::{IntoResponse, Response},
    routing::get,
};

/// The page as embedded (its script nonce still a placeholder).
pub(super) const PAGE: &str = include_str!("dashboard/index.html");

pub fn routes() -> Router {
    Router::new().route("/", get(page))
}

async fn page() -> Response {
    // RandomState is seeded randomly per instance: an unguessable nonce.
    let nonce = format!("{:016x}{:016x}", RandomState::new().hash_one(1u8), RandomState::new().hash_one(2u8));
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'; base-uri 'none'; frame-ancestors 'none'"
    );
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8".to_string()),
            (header::CACHE_CONTROL, "no-store".to_string()),
            (header::CONTENT_SECURITY_POLICY, csp),
            (header::REFERRER_POLICY, "no-referrer".to_string()),
        ],
        PAGE.replace("__NONCE__", &nonce),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_needs_nothing_from_elsewhere() {
        let page = super::PAGE;
        assert!(page.contains("nonce=\"__NONCE__\""));
        for external in ["http://", "https://", "//cdn", "src=\"http"] {
            assert!(!page.contains(external), "the dashboard must not load {external}");
        }
        assert!(!page.contains("innerHTML"), "stream data (model names, error types) is shown as text only");
    }
}
