//! Datadog: DogStatsD (`dogstatsd.rs`) and the HTTP series API (`api.rs`),
//! configured by `[exporters.datadog]` with the `DD_API_KEY`, `DD_SITE` and
//! `DD_DOGSTATSD_URL` environment overrides (the environment wins).

pub mod api;
pub mod dogstatsd;

use std::{path::PathBuf, sync::Arc};

use serde::{Deserialize, Serialize};

use crate::export::{
    ExportError, Planned,
    backends::{Backend, Env, Resolved, Start},
    common_settings::{
        Delivery, REDACTED, Secret, SettingsError, check_url, delivery, first_env, invalid, redact_userinfo,
    },
};

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

/// Datagram sizes accepted: DogStatsD's smallest useful size to what UDP carries.
const DATAGRAM_BYTES: std::ops::RangeInclusive<usize> = 512..=65_000;

/// The Datadog exporters' place in the exporter list (`settings.rs`).
pub struct Datadog;

impl Backend for Datadog {
    type File = DatadogFile;

    fn resolve(file: Option<&DatadogFile>, env: Env) -> Result<Vec<Arc<dyn Resolved>>, SettingsError> {
        let Some(file) = file.filter(|f| f.enabled != Some(false)) else { return Ok(Vec::new()) };
        let (statsd, api) = settings(file, env)?;
        let mut out: Vec<Arc<dyn Resolved>> = Vec::new();
        if let Some(s) = statsd {
            out.push(Arc::new(s));
        }
        if let Some(a) = api {
            out.push(Arc::new(a));
        }
        Ok(out)
    }

    fn redact(file: &mut DatadogFile) {
        if file.api_key.is_some() {
            file.api_key = Some(REDACTED.into());
        }
        file.api_url = file.api_url.as_deref().map(redact_userinfo);
    }
}

impl Resolved for StatsdSettings {
    fn name(&self) -> &'static str {
        dogstatsd::NAME
    }

    fn start(&self) -> Result<Start, ExportError> {
        Ok(Start::Push(Planned::new(dogstatsd::NAME, self.delivery, dogstatsd::DogStatsd::new(self.clone()))))
    }
}

impl Resolved for DatadogApiSettings {
    fn name(&self) -> &'static str {
        api::NAME
    }

    fn start(&self) -> Result<Start, ExportError> {
        Ok(Start::Push(Planned::new(api::NAME, self.delivery, api::SeriesApi::new(self.clone())?)))
    }
}

/// DogStatsD's and the series API's settings (either may be off).
pub fn settings(
    file: &DatadogFile,
    env: Env,
) -> Result<(Option<StatsdSettings>, Option<DatadogApiSettings>), SettingsError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::settings::tests::{env, parse};

    fn datadog(
        toml_text: &str,
        vars: &[(&str, &str)],
    ) -> Result<(Option<StatsdSettings>, Option<DatadogApiSettings>), SettingsError> {
        settings(parse(toml_text).datadog.as_ref().expect("an [exporters.datadog] section"), &env(vars))
    }

    #[test]
    fn bad_values_are_one_line_errors() {
        let e = datadog("[exporters.datadog]\napi = true\n", &[]).unwrap_err().to_string();
        assert_eq!(e, "[exporters.datadog] api = true: needs an API key: set api_key or DD_API_KEY");
        let e = datadog("[exporters.datadog]\nstatsd_address = \"localhost:8125\"\n", &[]).unwrap_err();
        assert!(e.to_string().contains("udp://HOST:PORT"));
        for (toml_text, expected) in [
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
        ] {
            assert_eq!(datadog(toml_text, &[]).unwrap_err().to_string(), expected);
        }
        let edge = "[exporters.datadog]\nmax_retries = 20\nmax_datagram_bytes = 65000\n";
        let s = datadog(edge, &[]).unwrap().0.unwrap();
        assert_eq!((s.delivery.max_retries, s.max_datagram_bytes), (20, 65_000));
    }

    #[test]
    fn datadog_key_and_site_come_from_the_environment() {
        let f = "[exporters.datadog]\napi = true\nstatsd_address = \"unix:///run/dsd.socket\"\ntags = [\"env:test\"]\n";
        let (statsd, api) = datadog(f, &[("DD_API_KEY", "k123"), ("DD_SITE", "datadoghq.eu")]).unwrap();
        let api = api.unwrap();
        assert_eq!(api.series_url, "https://api.datadoghq.eu/api/v2/series");
        assert_eq!(api.api_key, Secret("k123".into()));
        assert!(!format!("{api:?}").contains("k123"), "Debug never shows the key");
        let statsd = statsd.unwrap();
        assert_eq!(statsd.address, StatsdAddress::Unix("/run/dsd.socket".into()));
        assert_eq!(statsd.max_datagram_bytes, 8192);
        let (statsd, api) = datadog("[exporters.datadog]\n", &[("DD_API_KEY", "k")]).unwrap();
        assert!(api.is_none(), "the API is opt-in even when DD_API_KEY is set");
        assert_eq!(statsd.unwrap().address, StatsdAddress::Udp("127.0.0.1:8125".into()));
    }

    #[test]
    fn redaction_hides_the_key_and_userinfo() {
        let mut f =
            parse("[exporters.datadog]\napi_key = \"abc\"\napi_url = \"https://u:p4ss@dd.example\"\n").datadog.unwrap();
        Datadog::redact(&mut f);
        let text = toml::to_string(&f).unwrap();
        assert!(!text.contains("p4ss") && !text.contains("abc") && text.contains("https://<redacted>@dd.example"));
    }
}
