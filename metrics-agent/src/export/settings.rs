//! The export configuration as a whole: the `[exporters]` table with one
//! section per exporter (the `exporters!` list below: a new exporter is one
//! line there), its limits, `[metrics.system]`, and their resolution into
//! `ExportSettings`. Each exporter's own section, environment overrides and
//! resolution live next to it; what they share is `common_settings`.
//! Secrets (API keys, OTLP headers) are wrapped so that they never reach a
//! log line or the printed effective configuration.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use super::common_settings::*;
use super::{
    audit_metrics::Limits,
    backends::{Backend, Resolved},
    system::SystemConfig,
};

/// `[metrics]`.
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricsFile {
    pub system: Option<SystemConfig>,
}

/// Everything the export router needs.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    pub limits: Limits,
    /// Every exporter turned on, Prometheus included.
    pub exporters: Vec<Arc<dyn Resolved>>,
    pub system: SystemConfig,
}

/// Defines `ExportersFile` (the `[exporters]` table) with one field per
/// listed exporter, and the loops over them.
macro_rules! exporters {
    ($($(#[$doc:meta])* $section:ident: $backend:ty,)*) => {
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
            $($(#[$doc])* pub $section: Option<<$backend as Backend>::File>,)*
        }

        /// Every exporter the sections and the environment turn on.
        pub fn resolve_all(file: &ExportersFile, env: Env) -> Result<Vec<Arc<dyn Resolved>>, SettingsError> {
            let mut out = Vec::new();
            $(out.extend(<$backend as Backend>::resolve(file.$section.as_ref(), env)?);)*
            Ok(out)
        }

        /// The sections with their secrets hidden.
        pub fn redact_all(file: &mut ExportersFile) {
            $(if let Some(section) = &mut file.$section {
                <$backend as Backend>::redact(section);
            })*
        }
    };
}

exporters! {
    /// `[exporters.prometheus]`: the metrics on `/metrics`.
    prometheus: super::prometheus::Prometheus,
    /// `[exporters.otlp]`: OTLP push.
    otlp: super::otlp::Otlp,
    /// `[exporters.datadog]`: DogStatsD and the Datadog series API.
    datadog: super::datadog::Datadog,
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
    Ok(ExportSettings { limits, exporters: resolve_all(&f, &env)?, system })
}

/// The file sections as `metrics-agent config` prints them: secrets redacted.
pub fn redacted(file: &ExportersFile) -> ExportersFile {
    let mut f = file.clone();
    redact_all(&mut f);
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
