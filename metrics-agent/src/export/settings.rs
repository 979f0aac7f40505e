//! Exporter configuration shared by every exporter: the `[exporters]` limits,
//! `[metrics.system]`, delivery settings, secrets and the environment helpers.
//! Each exporter's own section, environment overrides and resolution live
//! next to it (`backends.rs` lists them). Secrets (API keys, OTLP headers)
//! are wrapped so that they never reach a log line or the printed
//! effective configuration.

use std::{sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};

pub use super::backends::ExportersFile;
use super::{
    audit_metrics::Limits,
    backends::{self, Resolved},
    system::SystemConfig,
};

pub use crate::secrets::{REDACTED, Secret};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("{what}: {problem}")]
    Invalid { what: String, problem: String },
}

pub fn invalid(what: impl Into<String>, problem: impl Into<String>) -> SettingsError {
    SettingsError::Invalid { what: what.into(), problem: problem.into() }
}

/// `[metrics]`.
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricsFile {
    pub system: Option<SystemConfig>,
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

/// Everything the export router needs.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    pub limits: Limits,
    /// Every exporter turned on, Prometheus included.
    pub exporters: Vec<Arc<dyn Resolved>>,
    pub system: SystemConfig,
}

fn seconds(what: &str, v: Option<f64>, default: f64) -> Result<Duration, SettingsError> {
    let v = v.unwrap_or(default);
    if !(0.05..=86_400.0).contains(&v) {
        return Err(invalid(what, format!("{v} s is out of range: use 0.05 to 86400")));
    }
    Ok(Duration::from_secs_f64(v))
}

pub fn millis_env(env: backends::Env, names: &[&str]) -> Result<Option<f64>, SettingsError> {
    for name in names {
        if let Some(v) = env(name) {
            let ms: f64 = v.trim().parse().map_err(|_| invalid(*name, "expected milliseconds"))?;
            return Ok(Some(ms / 1000.0));
        }
    }
    Ok(None)
}

pub fn first_env(env: backends::Env, names: &[&str]) -> Option<(String, String)> {
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

/// Resolves the sections against the environment (`env` is `std::env::var`
/// in the agent, a map in tests).
pub fn resolve(
    exporters: Option<&ExportersFile>,
    metrics: Option<&MetricsFile>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<ExportSettings, SettingsError> {
    let mut system = SystemConfig::default();
    if let Some(s) = metrics.and_then(|m| m.system.clone()) {
        if !(1..=3600).contains(&s.interval_seconds) {
            return Err(invalid("[metrics.system] interval_seconds", "use 1 to 3600"));
        }
        system = s;
    }
    let f = exporters.cloned().unwrap_or_default();
    let d = Limits::default();
    let at_least_one = |name: &str, v: Option<usize>, default: usize| match v {
        Some(0) => Err(invalid(format!("[exporters] {name}"), "0 is out of range: use 1 or more")),
        v => Ok(v.unwrap_or(default)),
    };
    let limits = Limits {
        max_models: at_least_one("max_models", f.max_models, d.max_models)?,
        max_error_types: at_least_one("max_error_types", f.max_error_types, d.max_error_types)?,
        max_series: at_least_one("max_series", f.max_series, d.max_series)?,
        max_samples: 0,
    };
    Ok(ExportSettings { limits, exporters: backends::resolve_all(&f, &env)?, system })
}

/// The file sections as `metrics-agent config` prints them: secrets redacted.
pub fn redacted(file: &ExportersFile) -> ExportersFile {
    let mut f = file.clone();
    backends::redact_all(&mut f);
    f
}

#[cfg(test)]
pub(crate) mod tests {
    use serde::Deserialize;

    use super::*;

    pub fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    pub fn parse(toml_text: &str) -> ExportersFile {
        #[derive(Deserialize)]
        struct F {
            exporters: ExportersFile,
        }
        toml::from_str::<F>(toml_text).unwrap().exporters
    }

    fn names(s: &ExportSettings) -> Vec<&'static str> {
        s.exporters.iter().map(|e| e.name()).collect()
    }

    #[test]
    fn each_section_turns_its_exporters_on() {
        assert_eq!(names(&resolve(None, None, env(&[])).unwrap()), vec!["prometheus"], "Prometheus by default");
        let f = parse(
            "[exporters.otlp]\n[exporters.datadog]\nstatsd_address = \"udp://127.0.0.1:8125\"\napi = true\napi_key = \"k\"\n",
        );
        assert_eq!(
            names(&resolve(Some(&f), None, env(&[])).unwrap()),
            vec!["prometheus", "otlp", "datadog_statsd", "datadog_api"]
        );
        let f = parse("[exporters.otlp]\nenabled = false\n[exporters.datadog]\nenabled = false\n");
        assert_eq!(names(&resolve(Some(&f), None, env(&[])).unwrap()), vec!["prometheus"]);
    }

    #[test]
    fn out_of_range_limits_are_errors_not_silently_clamped() {
        for (toml_text, expected) in [
            ("[exporters]\nmax_models = 0\n", "[exporters] max_models: 0 is out of range: use 1 or more"),
            ("[exporters]\nmax_series = 0\n", "[exporters] max_series: 0 is out of range: use 1 or more"),
            ("[exporters]\nmax_error_types = 0\n", "[exporters] max_error_types: 0 is out of range: use 1 or more"),
        ] {
            assert_eq!(resolve(Some(&parse(toml_text)), None, env(&[])).unwrap_err().to_string(), expected);
        }
    }

    #[test]
    fn urls_are_shown_without_credentials() {
        for (url, shown) in [
            ("ftp://alice:s3cret@collector:4318/v1", "ftp://<redacted>@collector:4318/v1"),
            ("alice:s3cret@collector:4318", "<redacted>@collector:4318"),
            ("htp://a:b@c@host/x?u=1@2", "htp://<redacted>@host/x?u=1@2"),
        ] {
            assert_eq!(redact_userinfo(url), shown);
        }
        assert_eq!(redact_userinfo("https://collector:4318/v1/metrics"), "https://collector:4318/v1/metrics");
        assert_eq!(
            redact_userinfo("https://dd.example/api?dd-api-key=k1&x=1"),
            "https://dd.example/api?dd-api-key=<redacted>&x=1"
        );
    }

    #[test]
    fn redacted_hides_keys_and_headers() {
        let f = parse(
            "[exporters.otlp]\nheaders = { authorization = \"Bearer x\" }\n[exporters.datadog]\napi_key = \"abc\"\n",
        );
        let text = toml::to_string(&redacted(&f)).unwrap();
        assert!(!text.contains("Bearer x") && !text.contains("abc"), "{text}");
        assert!(text.contains(REDACTED));
    }
}
