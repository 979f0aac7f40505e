//! OTLP push: a snapshot becomes one `ExportMetricsServiceRequest` (the
//! official OpenTelemetry proto types), cumulative temporality with the
//! agent's start time, explicit-bucket histograms, gzip-compressed, POSTed
//! to the collector's `/v1/metrics` (here) or sent with the gRPC
//! `MetricsService/Export` call (`grpc.rs`).

use opentelemetry_proto::tonic::{
    collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse},
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    metrics::v1::{
        AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
        ScopeMetrics, Sum, metric::Data, number_data_point,
    },
    resource::v1::Resource,
};
use prost::Message;

mod backend;
pub mod config;
pub mod grpc;
mod start;
#[cfg(test)]
mod test_certificates;
#[cfg(test)]
mod test_collectors;
pub mod traces;

pub use self::backend::Otlp;
use self::config::{Compression, OtlpSettings};
use super::{
    ExportError, Exporter,
    model::{Desc, Kind, Label, Snapshot, Value},
};

pub const NAME: &str = "otlp";

pub fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_string())) }),
        ..Default::default()
    }
}

fn attributes(labels: &[Label]) -> Vec<KeyValue> {
    labels.iter().map(|(k, v)| kv(k, v)).collect()
}

/// The OTLP resource of everything the agent sends: `attributes` from
/// `resource_attributes`.
pub fn agent_resource(attributes: &[(String, String)]) -> Resource {
    Resource { attributes: attributes.iter().map(|(k, v)| kv(k, v)).collect(), ..Default::default() }
}

/// The instrumentation scope of everything the agent sends: its name and version.
pub fn agent_scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "metrics-agent".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

/// Resource attributes: service name and version, host name, and
/// `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` when set.
pub fn resource_attributes(env: impl Fn(&str) -> Option<String>) -> Vec<(String, String)> {
    let mut attrs = vec![
        ("service.name".to_string(), "metrics-agent".to_string()),
        ("service.version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
    ];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        attrs.push(("host.name".into(), host.trim().to_string()));
    }
    if let Some(extra) = env("OTEL_RESOURCE_ATTRIBUTES")
        && let Ok(pairs) = super::common_settings::parse_headers("OTEL_RESOURCE_ATTRIBUTES", &extra)
    {
        for (k, v) in pairs {
            attrs.retain(|(ek, _)| *ek != k);
            attrs.push((k, v));
        }
    }
    if let Some(name) = env("OTEL_SERVICE_NAME").filter(|n| !n.is_empty()) {
        attrs.retain(|(k, _)| k != "service.name");
        attrs.push(("service.name".into(), name));
    }
    attrs
}

fn metric(desc: &Desc) -> Metric {
    Metric {
        name: desc.otel.to_string(),
        description: desc.help.to_string(),
        unit: desc.unit.to_string(),
        ..Default::default()
    }
}

/// The request for one snapshot: one `Metric` per metric name, in order of
/// first appearance, with one data point per series.
pub fn encode(snapshot: &Snapshot, resource: &[(String, String)]) -> ExportMetricsServiceRequest {
    let mut metrics: Vec<Metric> = Vec::new();
    let mut index: std::collections::HashMap<&'static str, usize> = std::collections::HashMap::new();
    let (start, time) = (snapshot.start_unix_nanos, snapshot.time_unix_nanos);
    for s in &snapshot.series {
        let i = *index.entry(s.desc.otel).or_insert_with(|| {
            let mut m = metric(s.desc);
            m.data = Some(match s.desc.kind {
                Kind::Counter => Data::Sum(Sum {
                    data_points: vec![],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                }),
                Kind::Gauge => Data::Gauge(Gauge { data_points: vec![] }),
                Kind::Histogram => Data::Histogram(Histogram {
                    data_points: vec![],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                }),
            });
            metrics.push(m);
            metrics.len() - 1
        });
        let number = |v: &Value| NumberDataPoint {
            attributes: attributes(&s.labels),
            start_time_unix_nano: start,
            time_unix_nano: time,
            value: Some(match v {
                Value::Int(i) => number_data_point::Value::AsInt(*i as i64),
                other => number_data_point::Value::AsDouble(other.as_f64()),
            }),
            ..Default::default()
        };
        match (&mut metrics[i].data, &s.value) {
            (Some(Data::Sum(sum)), v @ (Value::Int(_) | Value::Float(_))) => sum.data_points.push(number(v)),
            (Some(Data::Gauge(g)), v @ (Value::Int(_) | Value::Float(_))) => {
                let mut p = number(v);
                p.start_time_unix_nano = 0;
                g.data_points.push(p);
            }
            (Some(Data::Histogram(h)), Value::Histogram(v)) => h.data_points.push(HistogramDataPoint {
                attributes: attributes(&s.labels),
                start_time_unix_nano: start,
                time_unix_nano: time,
                count: v.count,
                sum: Some(v.sum),
                bucket_counts: v.counts.clone(),
                explicit_bounds: v.bounds.to_vec(),
                ..Default::default()
            }),
            _ => log::debug!("otlp: {} has a value of another kind", s.desc.otel),
        }
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(agent_resource(resource)),
            scope_metrics: vec![ScopeMetrics { scope: Some(agent_scope()), metrics, schema_url: String::new() }],
            schema_url: String::new(),
        }],
    }
}

pub fn gzip(body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = e.write_all(body);
    e.finish().unwrap_or_default()
}

/// Classifies an HTTP answer: 2xx delivered; 429, 502, 503, 504 (retryable
/// per the OTLP specification) and 408, 500 worth retrying; anything else
/// (400, 401, 403, 404, 413...) permanent.
pub fn classify(what: &str, status: reqwest::StatusCode) -> Result<(), ExportError> {
    match status.as_u16() {
        200..=299 => Ok(()),
        408 | 429 | 500 | 502 | 503 | 504 => Err(ExportError::Retryable(format!("{what} answered {status}"))),
        _ => Err(ExportError::Permanent(format!("{what} answered {status}: check the endpoint and credentials"))),
    }
}

/// Describes a transport error without the URL's query or any header.
pub fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut root = String::new();
    while let Some(s) = source {
        root = s.to_string();
        source = s.source();
    }
    if root.is_empty() { kind.to_string() } else { format!("{kind}: {root}") }
}

pub struct OtlpExporter {
    client: reqwest::Client,
    settings: OtlpSettings,
    resource: Vec<(String, String)>,
    headers: reqwest::header::HeaderMap,
}

/// The HTTP client for an OTLP endpoint (timeouts, the extra certificate
/// authority, redirects only to the same host) and its headers, marked
/// sensitive. Shared by metrics and traces (`traces`).
pub fn http_client(settings: &OtlpSettings) -> Result<(reqwest::Client, reqwest::header::HeaderMap), ExportError> {
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in &settings.headers {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| ExportError::Permanent(format!("otlp header name {k:?} is not valid")))?;
        let mut value = reqwest::header::HeaderValue::from_str(&v.0)
            .map_err(|_| ExportError::Permanent(format!("otlp header {k:?} has a value that is not valid")))?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    let mut client = reqwest::Client::builder();
    if let Some(pem) = &settings.ca_pem {
        let ca = reqwest::Certificate::from_pem(pem).map_err(|_| {
            ExportError::Permanent("otlp: the certificate authority file is not a PEM certificate".into())
        })?;
        client = client.add_root_certificate(ca);
    }
    let client = client
        .timeout(settings.delivery.timeout)
        .connect_timeout(settings.delivery.timeout)
        // Credentials go to the configured host only.
        .redirect(super::redirects::same_host_redirects())
        .build()
        .map_err(|e| ExportError::Permanent(format!("otlp client: {}", describe(&e))))?;
    Ok((client, headers))
}

/// POSTs one protobuf body to the configured endpoint, gzip-compressed when
/// configured; returns the answer's body when the collector accepted it.
pub async fn post(
    client: &reqwest::Client,
    settings: &OtlpSettings,
    headers: &reqwest::header::HeaderMap,
    body: Vec<u8>,
) -> Result<Vec<u8>, ExportError> {
    let mut req = client
        .post(&settings.endpoint)
        .headers(headers.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf");
    req = match settings.compression {
        Compression::Gzip => req.header(reqwest::header::CONTENT_ENCODING, "gzip").body(gzip(&body)),
        Compression::None => req.body(body),
    };
    let resp = req.send().await.map_err(|e| ExportError::Retryable(format!("otlp: {}", describe(&e))))?;
    classify("the OTLP endpoint", resp.status())?;
    Ok(resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default())
}

impl OtlpExporter {
    pub fn new(settings: OtlpSettings) -> Result<Self, ExportError> {
        let (client, headers) = http_client(&settings)?;
        Ok(Self { client, resource: resource_attributes(|k| std::env::var(k).ok()), settings, headers })
    }
}

impl Exporter for OtlpExporter {
    async fn export(&mut self, snapshot: &Snapshot) -> Result<(), ExportError> {
        let body = encode(snapshot, &self.resource).encode_to_vec();
        let bytes = post(&self.client, &self.settings, &self.headers, body).await?;
        if let Ok(answer) = ExportMetricsServiceResponse::decode(bytes.as_slice())
            && let Some(p) = answer.partial_success
            && p.rejected_data_points > 0
        {
            log::debug!("otlp: the collector rejected {} data points: {}", p.rejected_data_points, p.error_message);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::export::{
        catalog as m,
        model::{HistogramValue, Series},
    };

    #[test]
    fn snapshot_to_request_and_back() {
        let mut h = HistogramValue::empty(&[1.0, 10.0]);
        h.observe(0.5);
        h.observe(5.0);
        let snapshot = Snapshot {
            start_unix_nanos: 100,
            time_unix_nanos: 200,
            series: vec![
                Series {
                    desc: &m::TOKENS,
                    labels: vec![("gen_ai.token.type", Cow::Borrowed("input"))],
                    value: Value::Int(12),
                },
                Series {
                    desc: &m::TOKENS,
                    labels: vec![("gen_ai.token.type", Cow::Borrowed("output"))],
                    value: Value::Int(34),
                },
                Series { desc: &m::DURATION, labels: vec![], value: Value::Histogram(h) },
                Series { desc: &m::SYS_MEMORY_LIMIT, labels: vec![], value: Value::Int(1 << 30) },
            ],
            samples: vec![],
        };
        let bytes = encode(&snapshot, &[("service.name".into(), "x".into())]).encode_to_vec();
        let back = ExportMetricsServiceRequest::decode(bytes.as_slice()).unwrap();
        let metrics = &back.resource_metrics[0].scope_metrics[0].metrics;
        assert_eq!(metrics.len(), 3, "one metric per name");
        assert_eq!(metrics[0].name, "llm.tokens");
        assert_eq!(metrics[0].unit, "{token}");
        let Some(Data::Sum(sum)) = &metrics[0].data else { panic!() };
        assert!(sum.is_monotonic);
        assert_eq!(sum.aggregation_temporality, AggregationTemporality::Cumulative as i32);
        assert_eq!(sum.data_points[1].value, Some(number_data_point::Value::AsInt(34)));
        assert_eq!(sum.data_points[1].attributes[0].key, "gen_ai.token.type");
        assert_eq!((sum.data_points[0].start_time_unix_nano, sum.data_points[0].time_unix_nano), (100, 200));
        let Some(Data::Histogram(hist)) = &metrics[1].data else { panic!() };
        assert_eq!(metrics[1].name, "gen_ai.client.operation.duration");
        assert_eq!(hist.data_points[0].bucket_counts, vec![1, 1, 0]);
        assert_eq!(hist.data_points[0].explicit_bounds, vec![1.0, 10.0]);
        assert_eq!((hist.data_points[0].count, hist.data_points[0].sum), (2, Some(5.5)));
        assert!(matches!(metrics[2].data, Some(Data::Gauge(_))));
        let gz = gzip(&bytes);
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz.as_slice()), &mut plain).unwrap();
        assert_eq!(plain, bytes);
    }

    #[test]
    fn resource_attributes_from_the_environment() {
        let attrs = resource_attributes(|k| match k {
            "OTEL_SERVICE_NAME" => Some("gateway-agent".into()),
            "OTEL_RESOURCE_ATTRIBUTES" => Some("deployment.environment=prod,team=ml".into()),
            _ => None,
        });
        assert!(attrs.contains(&("service.name".into(), "gateway-agent".into())));
        assert!(attrs.contains(&("deployment.environment".into(), "prod".into())));
        assert!(attrs.contains(&("team".into(), "ml".into())));
    }
}
