//! Prometheus: `[exporters.prometheus]` and a prometheus-client collector
//! that encodes a fresh snapshot of the catalogue at each scrape of
//! `/metrics`. Names follow the catalogue's `prom` names: the unit suffix
//! and, on counters, `_total` are added by the encoder; attribute keys
//! become label names with `.` replaced by `_`. prometheus-client writes
//! label values verbatim, so values (models and error types come from
//! request and response bodies) are escaped here as the exposition format
//! requires.

use std::sync::Arc;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Unit,
};

use serde::{Deserialize, Serialize};

use super::{
    ExportError, Source,
    backends::{Backend, Env, Resolved, Start},
    common_settings::SettingsError,
    model::{Desc, Kind, Series, Value},
};

pub const NAME: &str = "prometheus";

/// `[exporters.prometheus]`.
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PrometheusFile {
    /// Every metric on `/metrics` [true]; false keeps only the kernel
    /// counters and the agent's own statistics (HTTP server and storage
    /// included) there.
    pub enabled: Option<bool>,
}

/// Prometheus's place in the exporter list (`settings.rs`).
pub struct Prometheus;

impl Backend for Prometheus {
    type File = PrometheusFile;

    fn resolve(file: Option<&PrometheusFile>, _env: Env) -> Result<Vec<Arc<dyn Resolved>>, SettingsError> {
        Ok(vec![Arc::new(PrometheusSettings { all: file.and_then(|f| f.enabled).unwrap_or(true) })])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrometheusSettings {
    /// Every source, or only the kernel counters and agent statistics.
    pub all: bool,
}

impl Resolved for PrometheusSettings {
    fn name(&self) -> &'static str {
        NAME
    }

    fn start(&self) -> Result<Start, ExportError> {
        let all = self.all;
        Ok(Start::Pull(Box::new(move |source, registry| {
            registry.register_collector(Box::new(ExportCollector { source, all }))
        })))
    }
}

#[derive(Debug)]
pub struct ExportCollector {
    pub source: Arc<Source>,
    /// See `PrometheusSettings::all`.
    pub all: bool,
}

fn unit(desc: &Desc) -> Option<Unit> {
    desc.prom_unit.map(|u| match u {
        "seconds" => Unit::Seconds,
        "bytes" => Unit::Bytes,
        other => Unit::Other(other.to_string()),
    })
}

fn metric_type(kind: Kind) -> MetricType {
    match kind {
        Kind::Counter => MetricType::Counter,
        Kind::Gauge => MetricType::Gauge,
        Kind::Histogram => MetricType::Histogram,
    }
}

/// A label value as the Prometheus and OpenMetrics text formats need it
/// between double quotes: backslash, double quote and line feed escaped
/// (the formats define no other escapes).
pub fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn labels(s: &Series) -> Vec<(String, String)> {
    s.labels.iter().map(|(k, v)| (k.replace('.', "_"), escape_label_value(v))).collect()
}

/// Encodes series grouped by metric, in order of first appearance.
pub fn encode(series: &[Series], e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let mut order: Vec<&'static Desc> = Vec::new();
    for s in series {
        if !order.iter().any(|d| std::ptr::eq(*d, s.desc)) {
            order.push(s.desc);
        }
    }
    for desc in order {
        let u = unit(desc);
        let mut family = e.encode_descriptor(desc.prom, desc.help, u.as_ref(), metric_type(desc.kind))?;
        let members: Vec<&Series> = series.iter().filter(|s| std::ptr::eq(s.desc, desc)).collect();
        match members.as_slice() {
            // A metric without labels is written `name value`, not `name{} value`.
            [only] if only.labels.is_empty() => value(only, family)?,
            _ => {
                for s in members {
                    value(s, family.encode_family(&labels(s))?)?;
                }
            }
        }
    }
    Ok(())
}

fn value(s: &Series, mut m: MetricEncoder) -> Result<(), std::fmt::Error> {
    match (&s.value, s.desc.kind) {
        (Value::Int(v), Kind::Counter) => ConstCounter::new(*v).encode(m),
        (Value::Float(v), Kind::Counter) => ConstCounter::new(*v).encode(m),
        (Value::Int(v), Kind::Gauge) => ConstGauge::new(i64::try_from(*v).unwrap_or(i64::MAX)).encode(m),
        (Value::Float(v), Kind::Gauge) => ConstGauge::new(*v).encode(m),
        (Value::Histogram(h), Kind::Histogram) => {
            let buckets: Vec<(f64, u64)> =
                h.counts.iter().enumerate().map(|(i, c)| (h.bounds.get(i).copied().unwrap_or(f64::MAX), *c)).collect();
            m.encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)
        }
        _ => Ok(()),
    }
}

impl Collector for ExportCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode(&self.source.series(self.all), &mut e)
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;
    use crate::export::audit_metrics::AuditMetrics;

    #[test]
    fn exposition_names_and_labels() {
        let audit = Arc::new(AuditMetrics::default());
        audit.observe(&crate::export::audit_metrics::tests::record("upstream", "gpt-4o-mini", 200, 12, 34));
        let otlp = crate::export::Health { name: "otlp", stats: Arc::default(), takes_samples: false };
        let source = Arc::new(Source::of_audit(audit, vec![otlp]));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ExportCollector { source, all: true }));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let text = crate::http::openmetrics_to_prometheus(&text);
        for expected in [
            "# TYPE llm_requests_total counter",
            r#"llm_requests_total{side="upstream",gen_ai_provider_name="openai",gen_ai_request_model="gpt-4o-mini",gen_ai_operation_name="chat",status_class="2xx",estimate="false"} 1"#,
            r#"llm_tokens_total{side="upstream",gen_ai_provider_name="openai",gen_ai_request_model="gpt-4o-mini",gen_ai_operation_name="chat",status_class="2xx",estimate="false",gen_ai_token_type="output"} 34"#,
            "# TYPE llm_cost_usd_total counter",
            "# TYPE gen_ai_client_operation_duration_seconds histogram",
            r#"gen_ai_client_operation_duration_seconds_bucket{le="2.56",side="upstream",gen_ai_provider_name="openai",gen_ai_request_model="gpt-4o-mini",gen_ai_operation_name="chat",status_class="2xx",estimate="false"} 1"#,
            r#"metrics_agent_exporter_dropped_total{exporter="otlp",reason="queue_full"} 0"#,
        ] {
            assert!(text.contains(expected), "missing {expected} in:\n{text}");
        }
    }

    /// A model name and an error type crafted to close the label set and add
    /// a series of their own stay inside their label values.
    #[test]
    fn hostile_label_values_cannot_inject_series() {
        let audit = Arc::new(AuditMetrics::default());
        let model = "evil\"} 1\nllm_cost_usd_total{fake=\"x\"} 1e9\n# x";
        let r = crate::export::audit_metrics::tests::builder("client", model, 429, 1, 1)
            .error_type(Some("back\\slash\"\n# TYPE x counter".into()))
            .build();
        audit.observe(&r);
        let source = Arc::new(Source::of_audit(audit, Vec::new()));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ExportCollector { source, all: true }));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for text in [text.clone(), crate::http::openmetrics_to_prometheus(&text)] {
            assert!(!text.lines().any(|l| l.starts_with("llm_cost_usd_total{fake")), "no injected series:\n{text}");
            assert!(!text.lines().any(|l| l == "# TYPE x counter" || l.starts_with("# x")), "{text}");
            let requests: Vec<&str> = text.lines().filter(|l| l.starts_with("llm_requests_total{")).collect();
            assert_eq!(
                requests,
                vec![concat!(
                    r#"llm_requests_total{side="client",gen_ai_provider_name="openai","#,
                    r#"gen_ai_request_model="evil\"} 1\nllm_cost_usd_total{fake=\"x\"} 1e9\n# x","#,
                    r#"gen_ai_operation_name="chat",status_class="4xx",estimate="false","#,
                    r#"error_type="back\\slash\"\n# TYPE x counter"} 1"#
                )]
            );
        }
    }

    #[test]
    fn escaping_follows_the_exposition_format() {
        assert_eq!(escape_label_value("plain-model_1.0"), "plain-model_1.0");
        assert_eq!(escape_label_value("a\\b\"c\nd"), r#"a\\b\"c\nd"#);
    }
}
