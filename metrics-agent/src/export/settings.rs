//! Exporter configuration: the `[exporters.*]` and `[metrics.system]` TOML
//! sections, resolved against the standard environment variables
//! (`OTEL_EXPORTER_OTLP_*`, `OTEL_METRIC_EXPORT_*`, `DD_API_KEY`, `DD_SITE`,
//! `DD_DOGSTATSD_URL`; the environment overrides the file). Secrets (API
//! keys, OTLP headers) are wrapped so that they never reach a log line or
//! the printed effective configuration.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::{audit_metrics::Limits, system::SystemConfig};

pub use crate::secrets::{REDACTED, Secret};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("{what}: {problem}")]
    Invalid { what: String, problem: String },
}

fn invalid(what: impl Into<String>, problem: impl Into<String>) -> SettingsError {
    SettingsError::Invalid { what: what.into(), problem: problem.into() }
}

/// `[exporters]`.
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExportersFile {
    /// Distinct models kept as label values; more collapse to `other` [100].
    pub max_models: Option<usize>,
    /// Distinct error types kept as label values [20].
    pub max_error_types: Option<usize>,
    /// Audit label sets kept at most [5000].
    pub max_series: Option<usize>,
    pub prometheus: Option<PrometheusFile>,
    pub otlp: Option<OtlpFile>,
    pub datadog: Option<DatadogFile>,
}

/// `[exporters.prometheus]`: the audit and system metrics on `/metrics`.
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PrometheusFile {
    /// [true]
    pub enabled: Option<bool>,
}

/// `[exporters.otlp]`: OTLP/HTTP protobuf push.
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OtlpFile {
    /// [true when the section is present]
    pub enabled: Option<bool>,
    /// URL to POST to; a URL without a path gets `/v1/metrics`
    /// [http://localhost:4318/v1/metrics].
    pub endpoint: Option<String>,
    /// Extra request headers (authentication).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// `gzip` [default] or `none`.
    pub compression: Option<String>,
    pub interval_seconds: Option<f64>,
    pub timeout_seconds: Option<f64>,
    pub queue_batches: Option<usize>,
    pub max_retries: Option<u32>,
}

/// `[exporters.datadog]`: DogStatsD and/or the HTTP series API.
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatadogFile {
    /// [true when the section is present]
    pub enabled: Option<bool>,
    /// `udp://HOST:PORT` or `unix:///PATH` [udp://127.0.0.1:8125 unless only `api` is on].
    pub statsd_address: Option<String>,
    /// Largest datagram sent [1432 over UDP, 8192 over a Unix socket].
    pub max_datagram_bytes: Option<usize>,
    /// Also (or only, without `statsd_address`) send to the HTTP series API.
    pub api: Option<bool>,
    /// Base URL of the API [https://api.$DD_SITE].
    pub api_url: Option<String>,
    /// API key [$DD_API_KEY].
    pub api_key: Option<String>,
    /// Datadog site [$DD_SITE or datadoghq.com].
    pub site: Option<String>,
    /// Tags added to every metric (`env:prod`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    pub interval_seconds: Option<f64>,
    pub timeout_seconds: Option<f64>,
    pub queue_batches: Option<usize>,
    pub max_retries: Option<u32>,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OtlpSettings {
    pub endpoint: String,
    pub headers: Vec<(String, Secret)>,
    pub compression: Compression,
    pub delivery: Delivery,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatsdAddress {
    Udp(String),
    Unix(PathBuf),
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatsdSettings {
    pub address: StatsdAddress,
    pub max_datagram_bytes: usize,
    pub tags: Vec<String>,
    pub delivery: Delivery,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DatadogApiSettings {
    /// Full URL of `/api/v2/series`.
    pub series_url: String,
    pub api_key: Secret,
    pub tags: Vec<String>,
    pub delivery: Delivery,
}

/// Everything the export router needs.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSettings {
    pub limits: Limits,
    pub prometheus: bool,
    pub otlp: Option<OtlpSettings>,
    pub statsd: Option<StatsdSettings>,
    pub datadog_api: Option<DatadogApiSettings>,
    pub system: SystemConfig,
}

impl Default for ExportSettings {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            prometheus: true,
            otlp: None,
            statsd: None,
            datadog_api: None,
            system: SystemConfig::default(),
        }
    }
}

fn seconds(what: &str, v: Option<f64>, default: f64) -> Result<Duration, SettingsError> {
    let v = v.unwrap_or(default);
    if !(0.05..=86_400.0).contains(&v) {
        return Err(invalid(what, format!("{v} s is out of range: use 0.05 to 86400")));
    }
    Ok(Duration::from_secs_f64(v))
}

fn millis_env(env: &impl Fn(&str) -> Option<String>, names: &[&str]) -> Result<Option<f64>, SettingsError> {
    for name in names {
        if let Some(v) = env(name) {
            let ms: f64 = v.trim().parse().map_err(|_| invalid(*name, "expected milliseconds"))?;
            return Ok(Some(ms / 1000.0));
        }
    }
    Ok(None)
}

fn first_env(env: &impl Fn(&str) -> Option<String>, names: &[&str]) -> Option<(String, String)> {
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

fn check_url(what: &str, url: &str) -> Result<(), SettingsError> {
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
/// Datagram sizes accepted: DogStatsD's smallest useful size to what UDP carries.
const DATAGRAM_BYTES: std::ops::RangeInclusive<usize> = 512..=65_000;

fn delivery(
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

fn otlp(file: &OtlpFile, env: &impl Fn(&str) -> Option<String>) -> Result<OtlpSettings, SettingsError> {
    const S: &str = "[exporters.otlp]";
    if let Some((name, p)) = first_env(env, &["OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"])
        && p.trim() != "http/protobuf"
    {
        return Err(invalid(name, format!("{p:?} is not supported: unset it or use http/protobuf")));
    }
    let endpoint = if let Some((_, v)) = first_env(env, &["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"]) {
        check_url("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", v.trim())?;
        v.trim().to_string()
    } else if let Some((_, v)) = first_env(env, &["OTEL_EXPORTER_OTLP_ENDPOINT"]) {
        check_url("OTEL_EXPORTER_OTLP_ENDPOINT", v.trim())?;
        format!("{}/v1/metrics", v.trim().trim_end_matches('/'))
    } else {
        let v = file.endpoint.clone().unwrap_or_else(|| "http://localhost:4318/v1/metrics".into());
        check_url(&format!("{S} endpoint"), &v)?;
        let path_start = v.find("://").map(|i| i + 3).and_then(|i| v[i..].find('/').map(|j| i + j));
        match path_start {
            Some(p) if v[p..] != *"/" => v,
            _ => format!("{}/v1/metrics", v.trim_end_matches('/')),
        }
    };
    let mut headers: BTreeMap<String, String> =
        file.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect();
    for name in ["OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_METRICS_HEADERS"] {
        if let Some(text) = env(name) {
            headers.extend(parse_headers(name, &text)?.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)));
        }
    }
    let compression =
        match first_env(env, &["OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION"])
            .or_else(|| file.compression.clone().map(|v| (format!("{S} compression"), v)))
        {
            None => Compression::Gzip,
            Some((_, v)) if v == "gzip" => Compression::Gzip,
            Some((_, v)) if v == "none" => Compression::None,
            Some((n, v)) => return Err(invalid(n, format!("{v:?}: use gzip or none"))),
        };
    let timeout = millis_env(env, &["OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"])?
        .or(millis_env(env, &["OTEL_METRIC_EXPORT_TIMEOUT"])?)
        .or(file.timeout_seconds);
    let interval = millis_env(env, &["OTEL_METRIC_EXPORT_INTERVAL"])?.or(file.interval_seconds);
    Ok(OtlpSettings {
        endpoint,
        headers: headers.into_iter().map(|(k, v)| (k, Secret(v))).collect(),
        compression,
        delivery: delivery(S, interval, timeout, file.queue_batches, file.max_retries)?,
    })
}

type Datadog = (Option<StatsdSettings>, Option<DatadogApiSettings>);

fn datadog(file: &DatadogFile, env: &impl Fn(&str) -> Option<String>) -> Result<Datadog, SettingsError> {
    const S: &str = "[exporters.datadog]";
    let d = delivery(S, file.interval_seconds, file.timeout_seconds, file.queue_batches, file.max_retries)?;
    for tag in &file.tags {
        if tag.is_empty() || tag.contains([',', '|', '#', '\n', '\r', ' ']) {
            return Err(invalid(format!("{S} tags"), format!("{tag:?}: a tag has no spaces, commas, | or #")));
        }
    }
    let api = file.api.unwrap_or(false);
    let address = first_env(env, &["DD_DOGSTATSD_URL"]).map(|(_, v)| v).or(file.statsd_address.clone());
    let address = match address {
        None if api => None,
        None => Some(StatsdAddress::Udp("127.0.0.1:8125".into())),
        Some(a) => Some(if let Some(hp) = a.strip_prefix("udp://") {
            if !hp.contains(':') {
                return Err(invalid(format!("{S} statsd_address"), format!("{a:?}: use udp://HOST:PORT")));
            }
            StatsdAddress::Udp(hp.to_string())
        } else if let Some(path) = a.strip_prefix("unix://") {
            StatsdAddress::Unix(PathBuf::from(path))
        } else {
            return Err(invalid(format!("{S} statsd_address"), format!("{a:?}: use udp://HOST:PORT or unix:///PATH")));
        }),
    };
    if let Some(n) = file.max_datagram_bytes
        && !DATAGRAM_BYTES.contains(&n)
    {
        return Err(invalid(
            format!("{S} max_datagram_bytes"),
            format!("{n} is out of range: use {} to {}", DATAGRAM_BYTES.start(), DATAGRAM_BYTES.end()),
        ));
    }
    let statsd = address.map(|address| StatsdSettings {
        max_datagram_bytes: file.max_datagram_bytes.unwrap_or(if matches!(address, StatsdAddress::Unix(_)) {
            8192
        } else {
            1432
        }),
        address,
        tags: file.tags.clone(),
        delivery: d,
    });
    let api = if api {
        let key = env("DD_API_KEY")
            .or(file.api_key.clone())
            .filter(|k| !k.trim().is_empty())
            .ok_or_else(|| invalid(format!("{S} api = true"), "needs an API key: set api_key or DD_API_KEY"))?;
        let site = env("DD_SITE").or(file.site.clone()).unwrap_or_else(|| "datadoghq.com".into());
        let base = file.api_url.clone().unwrap_or_else(|| format!("https://api.{site}"));
        check_url(&format!("{S} api_url"), &base)?;
        Some(DatadogApiSettings {
            series_url: format!("{}/api/v2/series", base.trim_end_matches('/')),
            api_key: Secret(key.trim().to_string()),
            tags: file.tags.clone(),
            delivery: d,
        })
    } else {
        None
    };
    Ok((statsd, api))
}

/// Resolves the sections against the environment (`env` is `std::env::var`
/// in the agent, a map in tests).
pub fn resolve(
    exporters: Option<&ExportersFile>,
    metrics: Option<&MetricsFile>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<ExportSettings, SettingsError> {
    let mut out = ExportSettings::default();
    if let Some(system) = metrics.and_then(|m| m.system.clone()) {
        if !(1..=3600).contains(&system.interval_seconds) {
            return Err(invalid("[metrics.system] interval_seconds", "use 1 to 3600"));
        }
        out.system = system;
    }
    let Some(f) = exporters else { return Ok(out) };
    let d = Limits::default();
    let at_least_one = |name: &str, v: Option<usize>, default: usize| match v {
        Some(0) => Err(invalid(format!("[exporters] {name}"), "0 is out of range: use 1 or more")),
        v => Ok(v.unwrap_or(default)),
    };
    out.limits = Limits {
        max_models: at_least_one("max_models", f.max_models, d.max_models)?,
        max_error_types: at_least_one("max_error_types", f.max_error_types, d.max_error_types)?,
        max_series: at_least_one("max_series", f.max_series, d.max_series)?,
        max_samples: 0,
    };
    out.prometheus = f.prometheus.as_ref().and_then(|p| p.enabled).unwrap_or(true);
    if let Some(o) = f.otlp.as_ref().filter(|o| o.enabled != Some(false)) {
        out.otlp = Some(otlp(o, &env)?);
    }
    if let Some(dd) = f.datadog.as_ref().filter(|d| d.enabled != Some(false)) {
        (out.statsd, out.datadog_api) = datadog(dd, &env)?;
        if out.statsd.is_some() {
            out.limits.max_samples = 100_000;
        }
    }
    Ok(out)
}

/// The file sections as `metrics-agent config` prints them: secrets redacted.
pub fn redacted(file: &ExportersFile) -> ExportersFile {
    let mut f = file.clone();
    if let Some(o) = &mut f.otlp {
        for v in o.headers.values_mut() {
            *v = REDACTED.into();
        }
        o.endpoint = o.endpoint.as_deref().map(redact_userinfo);
    }
    if let Some(d) = &mut f.datadog {
        if d.api_key.is_some() {
            d.api_key = Some(REDACTED.into());
        }
        d.api_url = d.api_url.as_deref().map(redact_userinfo);
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    fn parse(toml_text: &str) -> ExportersFile {
        #[derive(Deserialize)]
        struct F {
            exporters: ExportersFile,
        }
        toml::from_str::<F>(toml_text).unwrap().exporters
    }

    #[test]
    fn otlp_endpoint_and_headers_follow_the_environment() {
        let f = parse(
            "[exporters.otlp]\nendpoint = \"http://collector:4318\"\nheaders = { Authorization = \"Bearer file\" }\n",
        );
        let o = resolve(Some(&f), None, env(&[])).unwrap().otlp.unwrap();
        assert_eq!(o.endpoint, "http://collector:4318/v1/metrics");
        assert_eq!(o.headers, vec![("authorization".to_string(), Secret("Bearer file".into()))]);
        assert_eq!(o.compression, Compression::Gzip);
        let o = resolve(
            Some(&f),
            None,
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otel.example:4318/"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer%20env,x-tenant=a"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
                ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
            ]),
        )
        .unwrap()
        .otlp
        .unwrap();
        assert_eq!(o.endpoint, "https://otel.example:4318/v1/metrics");
        assert_eq!(o.headers[0], ("authorization".to_string(), Secret("Bearer env".into())));
        assert_eq!(o.delivery.timeout, Duration::from_millis(2500));
        assert_eq!(o.delivery.interval, Duration::from_secs(1));
        let o = resolve(Some(&f), None, env(&[("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:1/custom")]))
            .unwrap()
            .otlp
            .unwrap();
        assert_eq!(o.endpoint, "http://m:1/custom", "the signal-specific variable is used as is");
    }

    #[test]
    fn bad_values_are_one_line_errors_without_secrets() {
        let f = parse("[exporters.otlp]\n");
        let e = resolve(Some(&f), None, env(&[("OTEL_EXPORTER_OTLP_HEADERS", "secret-token-without-equals")]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("OTEL_EXPORTER_OTLP_HEADERS: expected key=value"), "{e}");
        assert!(!e.contains("secret-token"), "{e}");
        let e = resolve(Some(&f), None, env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])).unwrap_err().to_string();
        assert!(e.contains("use http/protobuf"), "{e}");
        let f = parse("[exporters.datadog]\napi = true\n");
        let e = resolve(Some(&f), None, env(&[])).unwrap_err().to_string();
        assert_eq!(e, "[exporters.datadog] api = true: needs an API key: set api_key or DD_API_KEY");
        let f = parse("[exporters.datadog]\nstatsd_address = \"localhost:8125\"\n");
        assert!(resolve(Some(&f), None, env(&[])).unwrap_err().to_string().contains("udp://HOST:PORT"));
        for e in [
            resolve(Some(&parse("[exporters.otlp]\nendpoint = \"ftp://x\"\n")), None, env(&[])),
            resolve(Some(&parse("[exporters.otlp]\ninterval_seconds = 0\n")), None, env(&[])),
        ] {
            assert!(!e.unwrap_err().to_string().contains('\n'));
        }
    }

    #[test]
    fn out_of_range_numbers_are_errors_not_silently_clamped() {
        for (toml_text, expected) in [
            ("[exporters.otlp]\nmax_retries = 50\n", "[exporters.otlp] max_retries: 50 is out of range: use 0 to 20"),
            (
                "[exporters.datadog]\nmax_retries = 21\n",
                "[exporters.datadog] max_retries: 21 is out of range: use 0 to 20",
            ),
            (
                "[exporters.datadog]\nmax_datagram_bytes = 100\n",
                "[exporters.datadog] max_datagram_bytes: 100 is out of range: use 512 to 65000",
            ),
            (
                "[exporters.datadog]\nmax_datagram_bytes = 70000\n",
                "[exporters.datadog] max_datagram_bytes: 70000 is out of range: use 512 to 65000",
            ),
            ("[exporters]\nmax_models = 0\n", "[exporters] max_models: 0 is out of range: use 1 or more"),
            ("[exporters]\nmax_series = 0\n", "[exporters] max_series: 0 is out of range: use 1 or more"),
            ("[exporters]\nmax_error_types = 0\n", "[exporters] max_error_types: 0 is out of range: use 1 or more"),
        ] {
            assert_eq!(resolve(Some(&parse(toml_text)), None, env(&[])).unwrap_err().to_string(), expected);
        }
        let edge = "[exporters.datadog]\nmax_retries = 20\nmax_datagram_bytes = 65000\n";
        let s = resolve(Some(&parse(edge)), None, env(&[])).unwrap().statsd.unwrap();
        assert_eq!((s.delivery.max_retries, s.max_datagram_bytes), (20, 65_000));
    }

    #[test]
    fn datadog_key_and_site_come_from_the_environment() {
        let f = parse(
            "[exporters.datadog]\napi = true\nstatsd_address = \"unix:///run/dsd.socket\"\ntags = [\"env:test\"]\n",
        );
        let s = resolve(Some(&f), None, env(&[("DD_API_KEY", "k123"), ("DD_SITE", "datadoghq.eu")])).unwrap();
        let api = s.datadog_api.unwrap();
        assert_eq!(api.series_url, "https://api.datadoghq.eu/api/v2/series");
        assert_eq!(api.api_key, Secret("k123".into()));
        assert!(!format!("{api:?}").contains("k123"), "Debug never shows the key");
        let statsd = s.statsd.unwrap();
        assert_eq!(statsd.address, StatsdAddress::Unix("/run/dsd.socket".into()));
        assert_eq!(statsd.max_datagram_bytes, 8192);
        assert!(s.limits.max_samples > 0, "DogStatsD distributions need raw samples");
        let only_statsd = resolve(Some(&parse("[exporters.datadog]\n")), None, env(&[("DD_API_KEY", "k")])).unwrap();
        assert!(only_statsd.datadog_api.is_none(), "the API is opt-in even when DD_API_KEY is set");
        assert_eq!(only_statsd.statsd.unwrap().address, StatsdAddress::Udp("127.0.0.1:8125".into()));
    }

    #[test]
    fn url_errors_never_repeat_credentials() {
        for (url, shown) in [
            ("ftp://alice:s3cret@collector:4318/v1", "ftp://<redacted>@collector:4318/v1"),
            ("alice:s3cret@collector:4318", "<redacted>@collector:4318"),
            ("htp://a:b@c@host/x?u=1@2", "htp://<redacted>@host/x?u=1@2"),
        ] {
            assert_eq!(redact_userinfo(url), shown);
            let f = parse(&format!("[exporters.otlp]\nendpoint = \"{url}\"\n"));
            let e = resolve(Some(&f), None, env(&[])).unwrap_err().to_string();
            assert!(!e.contains("s3cret") && !e.contains("alice") && e.contains("is not an http"), "{e}");
            let e = resolve(Some(&parse("[exporters.otlp]\n")), None, env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", url)]))
                .unwrap_err()
                .to_string();
            assert!(!e.contains("s3cret") && !e.contains("alice"), "{e}");
        }
        assert_eq!(redact_userinfo("https://collector:4318/v1/metrics"), "https://collector:4318/v1/metrics");
        assert_eq!(
            redact_userinfo("https://dd.example/api?dd-api-key=k1&x=1"),
            "https://dd.example/api?dd-api-key=<redacted>&x=1"
        );
        let f = parse("[exporters.datadog]\napi_url = \"https://u:p4ss@dd.example\"\n");
        let text = toml::to_string(&redacted(&f)).unwrap();
        assert!(!text.contains("p4ss") && text.contains("https://<redacted>@dd.example"), "{text}");
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
