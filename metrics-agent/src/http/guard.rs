//! Route guards in front of everything the agent serves over HTTP, against
//! browsers being used as a weapon:
//! - DNS rebinding: every request must name an allowlisted `Host` (the
//!   listen address, `localhost`, `127.0.0.1`, `[::1]`, `[api] allowed_hosts`)
//!   and an `Origin`, when present, must name one too;
//! - cross-site writes: a state-changing request (any method but GET, HEAD
//!   and OPTIONS) must be `Content-Type: application/json` (a cross-site form
//!   cannot send that without a CORS preflight, which the agent never grants)
//!   and must not come from another site (`Sec-Fetch-Site`);
//! - ingest flooding: a write carries at most `MAX_INGEST_ITEMS` items in at
//!   most `MAX_INGEST_BYTES`, and all writes together at most
//!   `MAX_INGEST_ITEMS_PER_MINUTE` items a minute;
//! - terminal escapes: control characters are stripped from every string
//!   of a written JSON body before the route sees it.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use serde_json::Value;

/// Bytes of one write's body at most.
pub const MAX_INGEST_BYTES: usize = 2 * 1024 * 1024;
/// How long a request body may take to arrive.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Items (JSON lines, or elements of a JSON array) of one write at most.
pub const MAX_INGEST_ITEMS: usize = 10_000;
/// Items all writes together may carry per minute.
pub const MAX_INGEST_ITEMS_PER_MINUTE: usize = 60_000;

/// Which `Host` and `Origin` authorities are served.
#[derive(Debug, Clone)]
pub struct HostAllowlist {
    port: u16,
    /// Lower-case host names (IPv6 in brackets) served on the listen port.
    local_names: Vec<String>,
    /// `[api] allowed_hosts`: a bare name matches any port, `name:port` only that port.
    configured: Vec<String>,
    /// Listening on every address (`0.0.0.0`, `[::]`): any IP literal is
    /// this host (a rebinding attack needs a DNS name).
    any_ip: bool,
}

impl HostAllowlist {
    pub fn new(listen: SocketAddr, allowed_hosts: &[String]) -> Self {
        let mut local_names: Vec<String> = ["localhost", "127.0.0.1", "[::1]"].map(String::from).into();
        local_names.push(match listen.ip() {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        });
        Self {
            port: listen.port(),
            local_names,
            configured: allowed_hosts.iter().map(|h| h.trim().to_ascii_lowercase()).collect(),
            any_ip: listen.ip().is_unspecified(),
        }
    }

    /// Whether `authority` (`host` or `host:port`, as in `Host` or an `Origin`) is served here.
    pub fn allows(&self, authority: &str) -> bool {
        let authority = authority.trim().to_ascii_lowercase();
        let authority = authority.strip_suffix('.').unwrap_or(&authority);
        if self.configured.iter().any(|c| c == authority) {
            return true;
        }
        let Some((host, port)) = split_authority(authority) else { return false };
        if self.configured.iter().any(|c| c == host) {
            return true;
        }
        let port_ok = port.is_none_or(|p| p == self.port);
        let is_ip = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok();
        port_ok && (self.local_names.iter().any(|n| n == host) || (self.any_ip && is_ip))
    }
}

/// `host` and the port of `host[:port]` (`[v6]:port` too); `None` when malformed.
fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let rest = &authority[end + 1..];
        (&authority[..=end], if rest.is_empty() { None } else { Some(rest.strip_prefix(':')?) })
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return None;
    }
    match port {
        None => Some((host, None)),
        Some(p) => Some((host, Some(p.parse().ok()?))),
    }
}

/// Items accepted from writes in the current minute.
#[derive(Debug)]
struct IngestBudget {
    minute_started: Instant,
    items: usize,
}

#[derive(Clone)]
struct GuardState {
    hosts: Arc<HostAllowlist>,
    budget: Arc<Mutex<IngestBudget>>,
}

/// Wraps `router` in the guards.
pub fn protect(router: Router, hosts: HostAllowlist) -> Router {
    let state = GuardState {
        hosts: Arc::new(hosts),
        budget: Arc::new(Mutex::new(IngestBudget { minute_started: Instant::now(), items: 0 })),
    };
    router.layer(middleware::from_fn_with_state(state, guard))
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message + "\n").into_response()
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"))
}

/// The host checks shared by every route; `Err` is the refusal.
fn check_host_and_origin(request: &Request, hosts: &HostAllowlist) -> Result<(), Box<Response>> {
    let host = header_str(request.headers(), header::HOST).or_else(|| request.uri().authority().map(|a| a.as_str()));
    let Some(host) = host else {
        return Err(Box::new(refuse(StatusCode::BAD_REQUEST, "the request has no Host header: send one".into())));
    };
    if !hosts.allows(host) {
        return Err(Box::new(refuse(
            StatusCode::MISDIRECTED_REQUEST,
            format!("Host {host:?} is not served here: use the listen address or add the name to [api] allowed_hosts"),
        )));
    }
    if let Some(origin) = header_str(request.headers(), header::ORIGIN) {
        let authority = origin.split_once("://").map(|(_, a)| a);
        if !authority.is_some_and(|a| hosts.allows(a)) {
            return Err(Box::new(refuse(
                StatusCode::FORBIDDEN,
                format!(
                    "Origin {origin:?} may not use this agent: open the agent's own pages, or add the name to [api] allowed_hosts"
                ),
            )));
        }
    }
    Ok(())
}

fn is_state_changing(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Content types a write may have (none of them can be sent by a cross-site form).
fn is_json(content_type: Option<&str>) -> bool {
    let essence = content_type.unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    matches!(essence.as_str(), "application/json" | "application/x-ndjson" | "application/jsonl")
}

async fn guard(State(state): State<GuardState>, request: Request, next: Next) -> Response {
    if let Err(refusal) = check_host_and_origin(&request, &state.hosts) {
        return *refusal;
    }
    if !is_state_changing(request.method()) {
        return next.run(request).await;
    }
    let headers = request.headers();
    if let Some(site) = header_str(headers, header::HeaderName::from_static("sec-fetch-site"))
        && !matches!(site, "same-origin" | "none")
    {
        return refuse(StatusCode::FORBIDDEN, format!("cross-site writes are refused (Sec-Fetch-Site: {site})"));
    }
    if !is_json(header_str(headers, header::CONTENT_TYPE)) {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "writes must be sent with Content-Type: application/json (a JSON array or JSON lines)".into(),
        );
    }
    let (parts, body) = request.into_parts();
    // A body that trickles in must not hold a connection (and a slot under
    // the connection cap) for longer than a head may take.
    let read = tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_INGEST_BYTES)).await;
    let bytes = match read {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {MAX_INGEST_BYTES} bytes: send it in smaller parts"),
            );
        }
        Err(_) => {
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                format!("the body did not arrive within {} s", BODY_TIMEOUT.as_secs()),
            );
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    let (cleaned, items) = strip_control_characters(&text);
    if items > MAX_INGEST_ITEMS {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{items} items in one request: send at most {MAX_INGEST_ITEMS} per request"),
        );
    }
    if let Err(wait) = take_budget(&state.budget, items) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, wait.as_secs().max(1).to_string())],
            format!("more than {MAX_INGEST_ITEMS_PER_MINUTE} items a minute: retry in {} s\n", wait.as_secs().max(1)),
        )
            .into_response();
    }
    next.run(Request::from_parts(parts, Body::from(cleaned))).await
}

/// Counts `items` against the minute's budget; `Err` holds the wait until the next minute.
fn take_budget(budget: &Mutex<IngestBudget>, items: usize) -> Result<(), Duration> {
    let mut b = budget.lock().unwrap_or_else(|e| e.into_inner());
    let minute = Duration::from_secs(60);
    if b.minute_started.elapsed() >= minute {
        *b = IngestBudget { minute_started: Instant::now(), items: 0 };
    }
    if b.items + items > MAX_INGEST_ITEMS_PER_MINUTE {
        return Err(minute.saturating_sub(b.minute_started.elapsed()));
    }
    b.items += items;
    Ok(())
}

/// The body with control characters removed from its JSON strings, and
/// the number of items it holds (array elements, or non-blank lines). A
/// body that is not JSON is passed on as it is, for the route to explain.
fn strip_control_characters(text: &str) -> (String, usize) {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        return match serde_json::from_str::<Value>(trimmed) {
            Ok(mut value) => {
                let items = value.as_array().map_or(1, Vec::len);
                clean(&mut value);
                (value.to_string(), items)
            }
            Err(_) => (text.to_string(), 1),
        };
    }
    let mut items = 0;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            if line.trim().is_empty() {
                return String::new();
            }
            items += 1;
            match serde_json::from_str::<Value>(line) {
                Ok(mut value) => {
                    clean(&mut value);
                    value.to_string()
                }
                Err(_) => line.to_string(),
            }
        })
        .collect();
    (lines.join("\n"), items)
}

fn clean(value: &mut Value) {
    match value {
        Value::String(s) if s.chars().any(char::is_control) => s.retain(|c| !c.is_control()),
        Value::Array(items) => items.iter_mut().for_each(clean),
        Value::Object(map) => {
            let dirty: Vec<String> = map.keys().filter(|k| k.chars().any(char::is_control)).cloned().collect();
            for key in dirty {
                if let Some(v) = map.remove(&key) {
                    map.insert(key.chars().filter(|c| !c.is_control()).collect(), v);
                }
            }
            map.values_mut().for_each(clean);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_this_agent_are_allowed_and_others_not() {
        let hosts = HostAllowlist::new("127.0.0.1:9464".parse().unwrap(), &["metrics.internal".into()]);
        for ok in ["127.0.0.1:9464", "localhost:9464", "LOCALHOST", "[::1]:9464", "localhost.", "metrics.internal:80"] {
            assert!(hosts.allows(ok), "{ok}");
        }
        for bad in ["evil.example:9464", "evil.example", "127.0.0.1:9465", "10.0.0.1:9464", "localhost:x", "", "[::1"] {
            assert!(!hosts.allows(bad), "{bad}");
        }
        let any = HostAllowlist::new("0.0.0.0:9464".parse().unwrap(), &[]);
        assert!(any.allows("10.1.2.3:9464") && any.allows("[fe80::1]:9464"));
        assert!(!any.allows("evil.example:9464"));
        let pinned = HostAllowlist::new("127.0.0.1:9464".parse().unwrap(), &["proxy.example:8443".into()]);
        assert!(pinned.allows("proxy.example:8443") && !pinned.allows("proxy.example:8444"));
    }

    #[test]
    fn control_characters_are_stripped_and_items_counted() {
        let (lines, n) = strip_control_characters("{\"suite\":\"a\\u001b[31mb\"}\n\n{\"suite\":\"c\\u0007\"}\n");
        assert_eq!(n, 2);
        assert_eq!(lines, "{\"suite\":\"a[31mb\"}\n\n{\"suite\":\"c\"}");
        let (array, n) = strip_control_characters("[{\"m\":\"x\\u009b\"},{\"m\":\"y\"}]");
        assert_eq!((array.as_str(), n), ("[{\"m\":\"x\"},{\"m\":\"y\"}]", 2));
        let (broken, n) = strip_control_characters("[not json");
        assert_eq!((broken.as_str(), n), ("[not json", 1));
    }

    #[test]
    fn only_json_content_types_may_write() {
        assert!(is_json(Some("application/json")) && is_json(Some("Application/JSON; charset=utf-8")));
        for simple in [None, Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("multipart/form-data")]
        {
            assert!(!is_json(simple), "{simple:?}");
        }
    }

    fn has_control(value: &Value) -> bool {
        match value {
            Value::String(s) => s.chars().any(char::is_control),
            Value::Array(items) => items.iter().any(has_control),
            Value::Object(map) => map.iter().any(|(k, v)| k.chars().any(char::is_control) || has_control(v)),
            _ => false,
        }
    }

    proptest::proptest! {
        /// Header values and bodies are network bytes: any of them is
        /// answered, never a panic, and no control character survives.
        #[test]
        fn any_host_or_body_is_handled(authority in "\\PC{0,40}", name in "(?s).{0,40}", raw in "(?s).{0,120}") {
            let hosts = HostAllowlist::new("127.0.0.1:9464".parse().unwrap(), &["a.example".into()]);
            let _ = hosts.allows(&authority);
            let _ = strip_control_characters(&raw);
            let array = serde_json::json!([{ "suite": name, name.clone(): [name.clone()] }]).to_string();
            let lines = format!("{}\n\n{}", serde_json::json!({ "model": name }), serde_json::json!({ "m": name }));
            for body in [array, lines] {
                let (cleaned, _) = strip_control_characters(&body);
                for line in cleaned.lines().filter(|l| !l.trim().is_empty()) {
                    let value: Value = serde_json::from_str(line).unwrap();
                    proptest::prop_assert!(!has_control(&value), "{line}");
                }
            }
        }
    }

    #[test]
    fn the_minute_budget_is_shared() {
        let budget = Mutex::new(IngestBudget { minute_started: Instant::now(), items: 0 });
        assert!(take_budget(&budget, MAX_INGEST_ITEMS_PER_MINUTE - 1).is_ok());
        assert!(take_budget(&budget, 2).is_err());
        assert!(take_budget(&budget, 1).is_ok());
    }
}
