//! The trace exporter's settings: `[exporters.otlp] traces = true` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` turns it on (`traces = false` or
//! `enabled = false` keeps it off); the transport is the metrics one's
//! (`protocol`, `headers`, `compression`, `certificate`) with the
//! `OTEL_EXPORTER_OTLP_TRACES_*` variables first; the batch span processor's
//! `OTEL_BSP_*` variables bound the queue and the batches.

use crate::export::{
    backends::Env,
    common_settings::{SettingsError, check_url, delivery, first_env, invalid, millis_env},
    otlp::config::{OtlpFile, OtlpSettings, Protocol, Transport, has_path, transport, with_default_path},
};

/// The trace exporter, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// Endpoint, transport and delivery (`delivery.interval` is the longest
    /// wait before queued spans are sent; `queue_batches` is unused).
    pub otlp: OtlpSettings,
    /// Spans queued at most.
    pub queue_spans: usize,
    /// Spans per export request at most.
    pub batch_spans: usize,
    /// Follow the caller's `traceparent` sampled flag (`parentbased_always_on`,
    /// the default) or record every exchange (`always_on`).
    pub parent_based: bool,
}

const S: &str = "[exporters.otlp]";

fn count(
    env: Env,
    var: &str,
    key: &str,
    file: Option<usize>,
    default: usize,
    max: usize,
) -> Result<usize, SettingsError> {
    let (what, v) = match env(var).filter(|v| !v.trim().is_empty()) {
        Some(v) => (var.to_string(), v.trim().parse().map_err(|_| invalid(var, "expected a whole number"))?),
        None => (format!("{S} {key}"), file.unwrap_or(default)),
    };
    if !(1..=max).contains(&v) {
        return Err(invalid(what, format!("{v} is out of range: use 1 to {max}")));
    }
    Ok(v)
}

/// The trace exporter's settings, `None` when traces are off.
pub fn settings(file: Option<&OtlpFile>, env: Env) -> Result<Option<TraceSettings>, SettingsError> {
    let env_endpoint = first_env(env, &["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]);
    let off = file.is_some_and(|f| f.enabled == Some(false) || f.traces == Some(false));
    let on = file.is_some_and(|f| f.traces == Some(true)) || env_endpoint.is_some();
    if off || !on {
        return Ok(None);
    }
    let f = file.cloned().unwrap_or_default();
    let Transport { protocol, headers, compression, ca_pem } = transport(&f, env, "TRACES")?;
    let http = protocol == Protocol::HttpProtobuf;
    let endpoint = if let Some((name, v)) = env_endpoint {
        check_url(&name, v.trim())?;
        v.trim().to_string()
    } else if let Some(v) = &f.traces_endpoint {
        check_url(&format!("{S} traces_endpoint"), v)?;
        if http { with_default_path(v, "/v1/traces") } else { v.clone() }
    } else if let Some((name, v)) = first_env(env, &["OTEL_EXPORTER_OTLP_ENDPOINT"]) {
        check_url(&name, v.trim())?;
        if http { format!("{}/v1/traces", v.trim().trim_end_matches('/')) } else { v.trim().to_string() }
    } else if let Some(v) = &f.endpoint {
        check_url(&format!("{S} endpoint"), v)?;
        match v.strip_suffix("/v1/metrics") {
            _ if !http => v.clone(),
            Some(base) => format!("{base}/v1/traces"),
            None if !has_path(v) => with_default_path(v, "/v1/traces"),
            None => {
                return Err(invalid(
                    format!("{S} endpoint"),
                    "has a path of its own: set traces_endpoint for the spans",
                ));
            }
        }
    } else if http {
        "http://localhost:4318/v1/traces".to_string()
    } else {
        "http://localhost:4317".to_string()
    };
    let timeout = millis_env(env, &["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"])?
        .or(millis_env(env, &["OTEL_BSP_EXPORT_TIMEOUT"])?)
        .or(f.timeout_seconds);
    let interval = millis_env(env, &["OTEL_BSP_SCHEDULE_DELAY"])?.or(f.traces_interval_seconds).or(Some(5.0));
    let queue_spans =
        count(env, "OTEL_BSP_MAX_QUEUE_SIZE", "traces_queue_spans", f.traces_queue_spans, 2048, 1_000_000)?;
    let batch_spans =
        count(env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "traces_batch_spans", f.traces_batch_spans, 512, queue_spans)?;
    let parent_based = match env("OTEL_TRACES_SAMPLER").as_deref().map(str::trim) {
        None | Some("") | Some("parentbased_always_on") => true,
        Some("always_on") => false,
        Some(other) => {
            return Err(invalid(
                "OTEL_TRACES_SAMPLER",
                format!("{other:?} is not supported: use parentbased_always_on or always_on"),
            ));
        }
    };
    let otlp = OtlpSettings {
        protocol,
        endpoint,
        ca_pem,
        headers,
        compression,
        delivery: delivery(S, interval, timeout, None, f.max_retries)?,
    };
    Ok(Some(TraceSettings { otlp, queue_spans, batch_spans, parent_based }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::export::settings::tests::{env, parse};

    fn traces(toml_text: &str, vars: &[(&str, &str)]) -> Result<Option<TraceSettings>, SettingsError> {
        let file = (!toml_text.is_empty()).then(|| parse(toml_text)).and_then(|f| f.otlp);
        settings(file.as_ref(), &env(vars))
    }

    #[test]
    fn off_unless_asked_for() {
        assert_eq!(traces("", &[]), Ok(None));
        assert_eq!(traces("[exporters.otlp]\n", &[]), Ok(None), "metrics alone by default");
        assert_eq!(
            traces("[exporters.otlp]\ntraces = false\n", &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:1")]),
            Ok(None)
        );
        assert_eq!(traces("[exporters.otlp]\nenabled = false\ntraces = true\n", &[]), Ok(None));
        let t = traces("", &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/v1/traces")]).unwrap().unwrap();
        assert_eq!(t.otlp.endpoint, "http://c:4318/v1/traces", "the variable alone turns traces on");
        assert_eq!((t.queue_spans, t.batch_spans, t.parent_based), (2048, 512, true));
        assert_eq!(t.otlp.delivery.interval, Duration::from_secs(5));
    }

    #[test]
    fn endpoints_follow_the_metrics_one_and_the_environment() {
        let t = |toml: &str, vars: &[(&str, &str)]| traces(toml, vars).unwrap().unwrap().otlp.endpoint;
        assert_eq!(t("[exporters.otlp]\ntraces = true\n", &[]), "http://localhost:4318/v1/traces");
        assert_eq!(
            t("[exporters.otlp]\ntraces = true\nendpoint = \"http://c:4318/v1/metrics\"\n", &[]),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            t("[exporters.otlp]\ntraces = true\nendpoint = \"http://c:4318\"\n", &[]),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            t("[exporters.otlp]\ntraces = true\ntraces_endpoint = \"http://t:9\"\n", &[]),
            "http://t:9/v1/traces"
        );
        assert_eq!(
            t("[exporters.otlp]\ntraces = true\n", &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://e:4318/")]),
            "http://e:4318/v1/traces"
        );
        let grpc = [("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")];
        assert_eq!(t("[exporters.otlp]\ntraces = true\n", &grpc), "http://localhost:4317");
        let e = traces("[exporters.otlp]\ntraces = true\nendpoint = \"http://c:4318/custom\"\n", &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "[exporters.otlp] endpoint: has a path of its own: set traces_endpoint for the spans"
        );
    }

    #[test]
    fn transport_batches_and_sampler() {
        let t = traces(
            "[exporters.otlp]\ntraces = true\nheaders = { authorization = \"Bearer file\" }\ntraces_queue_spans = 100\n",
            &[
                ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-tenant=a"),
                ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "none"),
                ("OTEL_BSP_SCHEDULE_DELAY", "200"),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10"),
                ("OTEL_TRACES_SAMPLER", "always_on"),
            ],
        )
        .unwrap()
        .unwrap();
        let names: Vec<&str> = t.otlp.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["authorization", "x-tenant"]);
        assert_eq!(t.otlp.compression, crate::export::otlp::config::Compression::None);
        assert_eq!(t.otlp.delivery.interval, Duration::from_millis(200));
        assert_eq!((t.queue_spans, t.batch_spans, t.parent_based), (100, 10, false));
        let on = "[exporters.otlp]\ntraces = true\n";
        for (vars, message) in [
            (&[("OTEL_BSP_MAX_QUEUE_SIZE", "0")][..], "OTEL_BSP_MAX_QUEUE_SIZE: 0 is out of range: use 1 to 1000000"),
            (
                &[("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4096")][..],
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE: 4096 is out of range: use 1 to 2048",
            ),
            (
                &[("OTEL_TRACES_SAMPLER", "traceidratio")][..],
                "OTEL_TRACES_SAMPLER: \"traceidratio\" is not supported: use parentbased_always_on or always_on",
            ),
        ] {
            assert_eq!(traces(on, vars).unwrap_err().to_string(), message);
        }
    }
}
