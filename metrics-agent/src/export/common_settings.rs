//! What every exporter's settings use: the settings error, delivery
//! (interval, timeout, queue, retries), URL checks and redaction, the
//! OpenTelemetry headers format, environment lookups and secrets. A leaf of
//! `export`: the exporters and `settings` (which lists them) both use it.

use std::time::Duration;

pub use crate::secrets::{REDACTED, Secret};

/// Reads one environment variable (`std::env::var` in the agent, a map in tests).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("{what}: {problem}")]
    Invalid { what: String, problem: String },
}

pub fn invalid(what: impl Into<String>, problem: impl Into<String>) -> SettingsError {
    SettingsError::Invalid { what: what.into(), problem: problem.into() }
}

/// How a push exporter delivers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delivery {
    pub interval: Duration,
    pub timeout: Duration,
    /// Batches queued at most; a new batch is dropped (counted) beyond.
    pub queue_batches: usize,
    /// Retries of a failed batch (with exponential backoff) before it is dropped.
    pub max_retries: u32,
}

fn seconds(what: &str, v: Option<f64>, default: f64) -> Result<Duration, SettingsError> {
    let v = v.unwrap_or(default);
    if !(0.05..=86_400.0).contains(&v) {
        return Err(invalid(what, format!("{v} s is out of range: use 0.05 to 86400")));
    }
    Ok(Duration::from_secs_f64(v))
}

pub fn millis_env(env: Env, names: &[&str]) -> Result<Option<f64>, SettingsError> {
    for name in names {
        if let Some(v) = env(name) {
            let ms: f64 = v.trim().parse().map_err(|_| invalid(*name, "expected milliseconds"))?;
            return Ok(Some(ms / 1000.0));
        }
    }
    Ok(None)
}

pub fn first_env(env: Env, names: &[&str]) -> Option<(String, String)> {
    names.iter().find_map(|n| env(n).filter(|v| !v.trim().is_empty()).map(|v| (n.to_string(), v)))
}

/// `url` with any `user:password@` replaced by `<redacted>@` and secret
/// query parameters (`?api_key=`, `?dd-api-key=`) redacted, for messages.
pub fn redact_userinfo(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..].find(['/', '?', '#']).map_or(url.len(), |i| start + i);
    let shown = match url[start..end].rfind('@') {
        Some(at) => format!("{}{REDACTED}{}", &url[..start], &url[start + at..]),
        None => url.to_string(),
    };
    crate::secrets::redact_query(&shown)
}

pub fn check_url(what: &str, url: &str) -> Result<(), SettingsError> {
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
        let shown = redact_userinfo(url);
        return Err(invalid(what, format!("{shown:?} is not an http:// or https:// URL")));
    }
    Ok(())
}

/// Decodes `%XX` escapes (the OTLP headers variable's values are URL-encoded).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parses `key1=value1,key2=value2` (the `OTEL_EXPORTER_OTLP_HEADERS` and
/// `OTEL_RESOURCE_ATTRIBUTES` format, values URL-encoded).
/// The error never repeats the text: it may hold a credential.
pub fn parse_headers(name: &str, text: &str) -> Result<Vec<(String, String)>, SettingsError> {
    let mut out = Vec::new();
    for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| invalid(name, "expected key=value pairs separated by commas (values URL-encoded)"))?;
        let key = k.trim();
        if key.is_empty() || !key.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c)) {
            return Err(invalid(name, "a key is empty or has characters other than letters, digits, '-', '_' and '.'"));
        }
        let value = percent_decode(v.trim()).ok_or_else(|| invalid(name, "a value has a malformed %-escape"))?;
        out.push((key.to_string(), value));
    }
    Ok(out)
}

/// Most retries of one batch (with the backoff capped at 30 s, about ten
/// minutes of trying).
const MAX_RETRIES: u32 = 20;

pub fn delivery(
    section: &str,
    interval: Option<f64>,
    timeout: Option<f64>,
    queue: Option<usize>,
    retries: Option<u32>,
) -> Result<Delivery, SettingsError> {
    let queue_batches = queue.unwrap_or(8);
    if !(1..=1024).contains(&queue_batches) {
        return Err(invalid(
            format!("{section} queue_batches"),
            format!("{queue_batches} is out of range: use 1 to 1024"),
        ));
    }
    let max_retries = retries.unwrap_or(3);
    if max_retries > MAX_RETRIES {
        return Err(invalid(
            format!("{section} max_retries"),
            format!("{max_retries} is out of range: use 0 to {MAX_RETRIES}"),
        ));
    }
    Ok(Delivery {
        interval: seconds(&format!("{section} interval_seconds"), interval, 10.0)?,
        timeout: seconds(&format!("{section} timeout_seconds"), timeout, 10.0)?,
        queue_batches,
        max_retries,
    })
}
