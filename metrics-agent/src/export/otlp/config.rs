//! `[exporters.otlp]`: the section, its `OTEL_EXPORTER_OTLP_*` and
//! `OTEL_METRIC_EXPORT_*` environment overrides (the environment wins, as the
//! OpenTelemetry specification says), and their resolution: the metrics
//! exporter here, the trace exporter in `traces/config.rs` (both share the
//! transport settings, `transport`); `backend.rs` resolves both.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::export::{
    backends::Env,
    common_settings::{
        Delivery, Secret, SettingsError, check_url, delivery, first_env, invalid, millis_env, parse_headers,
    },
};

/// `[exporters.otlp]`: OTLP push, HTTP/protobuf or gRPC.
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OtlpFile {
    /// [true when the section is present]
    pub enabled: Option<bool>,
    /// `http/protobuf` [default] or `grpc`.
    pub protocol: Option<String>,
    /// HTTP: URL to POST to; a URL without a path gets `/v1/metrics`
    /// [http://localhost:4318/v1/metrics]. gRPC: the collector's URL
    /// [http://localhost:4317]; `https://` is TLS.
    pub endpoint: Option<String>,
    /// PEM file of the certificate authority that signed the collector's TLS
    /// certificate [the public web roots].
    pub certificate: Option<std::path::PathBuf>,
    /// Extra request headers (authentication).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// `gzip` [default] or `none`.
    pub compression: Option<String>,
    pub interval_seconds: Option<f64>,
    pub timeout_seconds: Option<f64>,
    pub queue_batches: Option<usize>,
    pub max_retries: Option<u32>,
    /// GenAI spans, one per LLM exchange and side [false; true when
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set].
    pub traces: Option<bool>,
    /// HTTP: URL to POST spans to; a URL without a path gets `/v1/traces`
    /// [`endpoint` with `/v1/traces` for `/v1/metrics`]. gRPC: [`endpoint`].
    pub traces_endpoint: Option<String>,
    /// Longest wait before queued spans are sent [5] (`OTEL_BSP_SCHEDULE_DELAY`, ms).
    pub traces_interval_seconds: Option<f64>,
    /// Spans queued at most; more are dropped and counted [2048] (`OTEL_BSP_MAX_QUEUE_SIZE`).
    pub traces_queue_spans: Option<usize>,
    /// Spans per export request at most [512] (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
    pub traces_batch_spans: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Protobuf over HTTP POST (`/v1/metrics`).
    HttpProtobuf,
    /// The `MetricsService/Export` gRPC call.
    Grpc,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OtlpSettings {
    pub protocol: Protocol,
    pub endpoint: String,
    /// Extra trusted certificate authority (PEM), for TLS endpoints.
    pub ca_pem: Option<Vec<u8>>,
    pub headers: Vec<(String, Secret)>,
    pub compression: Compression,
    pub delivery: Delivery,
}

/// What metrics and traces resolve alike, each with its own
/// `OTEL_EXPORTER_OTLP_{METRICS,TRACES}_*` variables first.
pub struct Transport {
    pub protocol: Protocol,
    pub headers: Vec<(String, Secret)>,
    pub compression: Compression,
    pub ca_pem: Option<Vec<u8>>,
}

/// The transport settings of one signal (`METRICS` or `TRACES`).
pub fn transport(file: &OtlpFile, env: Env, signal: &str) -> Result<Transport, SettingsError> {
    const S: &str = "[exporters.otlp]";
    let specific = |what: &str| format!("OTEL_EXPORTER_OTLP_{signal}_{what}");
    let protocol = match first_env(env, &[&specific("PROTOCOL"), "OTEL_EXPORTER_OTLP_PROTOCOL"])
        .or_else(|| file.protocol.clone().map(|p| (format!("{S} protocol"), p)))
    {
        None => Protocol::HttpProtobuf,
        Some((_, p)) if p.trim() == "http/protobuf" => Protocol::HttpProtobuf,
        Some((_, p)) if p.trim() == "grpc" => Protocol::Grpc,
        Some((name, p)) => return Err(invalid(name, format!("{p:?} is not supported: use http/protobuf or grpc"))),
    };
    let mut headers: BTreeMap<String, String> =
        file.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect();
    for name in ["OTEL_EXPORTER_OTLP_HEADERS".to_string(), specific("HEADERS")] {
        if let Some(text) = env(&name) {
            headers.extend(parse_headers(&name, &text)?.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)));
        }
    }
    let compression = match first_env(env, &[&specific("COMPRESSION"), "OTEL_EXPORTER_OTLP_COMPRESSION"])
        .or_else(|| file.compression.clone().map(|v| (format!("{S} compression"), v)))
    {
        None => Compression::Gzip,
        Some((_, v)) if v == "gzip" => Compression::Gzip,
        Some((_, v)) if v == "none" => Compression::None,
        Some((n, v)) => return Err(invalid(n, format!("{v:?}: use gzip or none"))),
    };
    let certificate = first_env(env, &[&specific("CERTIFICATE"), "OTEL_EXPORTER_OTLP_CERTIFICATE"])
        .or_else(|| file.certificate.as_ref().map(|p| (format!("{S} certificate"), p.display().to_string())));
    let ca_pem = match certificate {
        Some((name, path)) => Some(std::fs::read(path.trim()).map_err(|e| {
            invalid(name, format!("cannot read the certificate authority file {path:?}: {e} (a PEM file)"))
        })?),
        None => None,
    };
    Ok(Transport { protocol, headers: headers.into_iter().map(|(k, v)| (k, Secret(v))).collect(), compression, ca_pem })
}

/// True when the URL has a path beyond `/`.
pub fn has_path(url: &str) -> bool {
    let path_start = url.find("://").map(|i| i + 3).and_then(|i| url[i..].find('/').map(|j| i + j));
    path_start.is_some_and(|p| url[p..] != *"/")
}

/// An HTTP endpoint URL with `path` (`/v1/metrics`) appended when it has none.
pub fn with_default_path(url: &str, path: &str) -> String {
    if has_path(url) { url.to_string() } else { format!("{}{path}", url.trim_end_matches('/')) }
}

/// Resolves the section against the environment.
pub fn settings(file: &OtlpFile, env: Env) -> Result<OtlpSettings, SettingsError> {
    const S: &str = "[exporters.otlp]";
    let Transport { protocol, headers, compression, ca_pem } = transport(file, env, "METRICS")?;
    let endpoint = if let Some((_, v)) = first_env(env, &["OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"]) {
        check_url("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", v.trim())?;
        v.trim().to_string()
    } else if let Some((_, v)) = first_env(env, &["OTEL_EXPORTER_OTLP_ENDPOINT"]) {
        check_url("OTEL_EXPORTER_OTLP_ENDPOINT", v.trim())?;
        match protocol {
            Protocol::HttpProtobuf => format!("{}/v1/metrics", v.trim().trim_end_matches('/')),
            Protocol::Grpc => v.trim().to_string(),
        }
    } else if protocol == Protocol::Grpc {
        let v = file.endpoint.clone().unwrap_or_else(|| "http://localhost:4317".into());
        check_url(&format!("{S} endpoint"), &v)?;
        v
    } else {
        let v = file.endpoint.clone().unwrap_or_else(|| "http://localhost:4318/v1/metrics".into());
        check_url(&format!("{S} endpoint"), &v)?;
        with_default_path(&v, "/v1/metrics")
    };
    let timeout = millis_env(env, &["OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"])?
        .or(millis_env(env, &["OTEL_METRIC_EXPORT_TIMEOUT"])?)
        .or(file.timeout_seconds);
    let interval = millis_env(env, &["OTEL_METRIC_EXPORT_INTERVAL"])?.or(file.interval_seconds);
    Ok(OtlpSettings {
        protocol,
        endpoint,
        ca_pem,
        headers,
        compression,
        delivery: delivery(S, interval, timeout, file.queue_batches, file.max_retries)?,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::export::settings::tests::{env, parse};

    fn otlp(toml_text: &str, vars: &[(&str, &str)]) -> Result<OtlpSettings, SettingsError> {
        settings(parse(toml_text).otlp.as_ref().expect("an [exporters.otlp] section"), &env(vars))
    }

    #[test]
    fn otlp_endpoint_and_headers_follow_the_environment() {
        let f =
            "[exporters.otlp]\nendpoint = \"http://collector:4318\"\nheaders = { Authorization = \"Bearer file\" }\n";
        let o = otlp(f, &[]).unwrap();
        assert_eq!(o.endpoint, "http://collector:4318/v1/metrics");
        assert_eq!(o.headers, vec![("authorization".to_string(), Secret("Bearer file".into()))]);
        assert_eq!(o.compression, Compression::Gzip);
        let o = otlp(
            f,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otel.example:4318/"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer%20env,x-tenant=a"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
                ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
            ],
        )
        .unwrap();
        assert_eq!(o.endpoint, "https://otel.example:4318/v1/metrics");
        assert_eq!(o.headers[0], ("authorization".to_string(), Secret("Bearer env".into())));
        assert_eq!(o.delivery.timeout, Duration::from_millis(2500));
        assert_eq!(o.delivery.interval, Duration::from_secs(1));
        let o = otlp(f, &[("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:1/custom")]).unwrap();
        assert_eq!(o.endpoint, "http://m:1/custom", "the signal-specific variable is used as is");
    }

    #[test]
    fn bad_values_are_one_line_errors_without_secrets() {
        let f = "[exporters.otlp]\n";
        let e = otlp(f, &[("OTEL_EXPORTER_OTLP_HEADERS", "secret-token-without-equals")]).unwrap_err().to_string();
        assert!(e.starts_with("OTEL_EXPORTER_OTLP_HEADERS: expected key=value"), "{e}");
        assert!(!e.contains("secret-token"), "{e}");
        let e = otlp(f, &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).unwrap_err().to_string();
        assert_eq!(e, "OTEL_EXPORTER_OTLP_PROTOCOL: \"http/json\" is not supported: use http/protobuf or grpc");
        let e = otlp("[exporters.otlp]\ncertificate = \"/nonexistent/ca.pem\"\n", &[]).unwrap_err().to_string();
        assert!(e.starts_with("[exporters.otlp] certificate: cannot read the certificate authority file"), "{e}");
        for e in [
            otlp("[exporters.otlp]\nendpoint = \"ftp://x\"\n", &[]),
            otlp("[exporters.otlp]\ninterval_seconds = 0\n", &[]),
            otlp("[exporters.otlp]\nmax_retries = 50\n", &[]),
        ] {
            assert!(!e.unwrap_err().to_string().contains('\n'));
        }
        assert_eq!(
            otlp("[exporters.otlp]\nmax_retries = 50\n", &[]).unwrap_err().to_string(),
            "[exporters.otlp] max_retries: 50 is out of range: use 0 to 20"
        );
    }

    #[test]
    fn grpc_endpoints_have_no_path_appended() {
        let o = otlp("[exporters.otlp]\nprotocol = \"grpc\"\n", &[]).unwrap();
        assert_eq!((o.protocol, o.endpoint.as_str()), (Protocol::Grpc, "http://localhost:4317"));
        let o = otlp(
            "[exporters.otlp]\n",
            &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"), ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otel.example:4317")],
        )
        .unwrap();
        assert_eq!((o.protocol, o.endpoint.as_str()), (Protocol::Grpc, "https://otel.example:4317"));
        let o = otlp(
            "[exporters.otlp]\nprotocol = \"grpc\"\n",
            &[("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf")],
        )
        .unwrap();
        assert_eq!(o.protocol, Protocol::HttpProtobuf, "the environment overrides the file");
    }

    #[test]
    fn url_errors_never_repeat_credentials() {
        for url in ["ftp://alice:s3cret@collector:4318/v1", "alice:s3cret@collector:4318", "htp://a:b@c@host/x?u=1@2"] {
            let e = otlp(&format!("[exporters.otlp]\nendpoint = \"{url}\"\n"), &[]).unwrap_err().to_string();
            assert!(!e.contains("s3cret") && !e.contains("alice") && e.contains("is not an http"), "{e}");
            let e = otlp("[exporters.otlp]\n", &[("OTEL_EXPORTER_OTLP_ENDPOINT", url)]).unwrap_err().to_string();
            assert!(!e.contains("s3cret") && !e.contains("alice"), "{e}");
        }
    }
}
