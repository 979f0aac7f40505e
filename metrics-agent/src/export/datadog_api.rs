//! Datadog's HTTP series API (`POST /api/v2/series`, `DD-API-KEY`), for
//! agentless setups. Counters are `count` points (type 1) holding the
//! increment since the last delivered snapshot, with its interval; gauges are
//! type 3; histograms become `.count` and `.sum` counts and per-bucket
//! `.bucket` counts tagged `upper_bound` (as Datadog's OpenMetrics check
//! names them). Bodies are gzip-compressed JSON, at most `MAX_SERIES` series
//! per request.

use serde::Serialize;

use super::{
    ExportError, Exporter,
    delta::{Delta, DeltaTracker},
    dogstatsd::tag_value,
    model::{Kind, Label, Snapshot},
    otlp::{classify, describe, gzip},
    settings::DatadogApiSettings,
};

pub const NAME: &str = "datadog_api";
/// Series per request (the API takes up to 5 MB uncompressed).
pub const MAX_SERIES: usize = 2_000;

#[derive(Debug, Serialize, PartialEq)]
pub struct Point {
    pub timestamp: i64,
    pub value: f64,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Resource {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct ApiSeries {
    pub metric: String,
    /// 1 count, 2 rate, 3 gauge.
    #[serde(rename = "type")]
    pub kind: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    pub points: Vec<Point>,
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<Resource>,
}

#[derive(Debug, Serialize)]
pub struct Payload<'a> {
    pub series: &'a [ApiSeries],
}

fn tag_list(global: &[String], labels: &[Label], extra: Option<String>) -> Vec<String> {
    let mut t: Vec<String> = global.to_vec();
    t.extend(labels.iter().map(|(k, v)| format!("{k}:{}", tag_value(v))));
    t.extend(extra);
    t
}

/// The series of one snapshot (increments relative to `base`); zero
/// increments are left out.
pub fn series(snapshot: &Snapshot, base: &DeltaTracker, global: &[String], host: &str) -> Vec<ApiSeries> {
    let ts = (snapshot.time_unix_nanos / 1_000_000_000) as i64;
    let interval = base.interval_seconds(snapshot).round() as i64;
    let resources = || if host.is_empty() { vec![] } else { vec![Resource { name: host.to_string(), kind: "host" }] };
    let mut out = Vec::new();
    let mut push = |metric: String, kind: u8, value: f64, tags: Vec<String>| {
        out.push(ApiSeries {
            metric,
            kind,
            interval: (kind == 1).then_some(interval),
            points: vec![Point { timestamp: ts, value }],
            tags,
            resources: resources(),
        });
    };
    for s in &snapshot.series {
        match (s.desc.kind, base.delta(s)) {
            (Kind::Gauge, _) => push(s.desc.otel.into(), 3, s.value.as_f64(), tag_list(global, &s.labels, None)),
            (Kind::Counter, Delta::Number(d)) if d > 0.0 => {
                push(s.desc.otel.into(), 1, d, tag_list(global, &s.labels, None))
            }
            (Kind::Histogram, Delta::Histogram(h)) if h.count > 0 => {
                let name = s.desc.otel;
                push(format!("{name}.count"), 1, h.count as f64, tag_list(global, &s.labels, None));
                push(format!("{name}.sum"), 1, h.sum, tag_list(global, &s.labels, None));
                for (i, c) in h.counts.iter().enumerate().filter(|(_, c)| **c > 0) {
                    let upper = h.bounds.get(i).map(|b| b.to_string()).unwrap_or_else(|| "inf".into());
                    let tags = tag_list(global, &s.labels, Some(format!("upper_bound:{upper}")));
                    push(format!("{name}.bucket"), 1, *c as f64, tags);
                }
            }
            _ => {}
        }
    }
    out
}

/// Requests of a snapshot, kept across retries so that a retry sends only
/// the parts not accepted yet.
struct InFlight {
    time: u64,
    bodies: Vec<Vec<u8>>,
    next: usize,
}

pub struct SeriesApi {
    client: reqwest::Client,
    settings: DatadogApiSettings,
    host: String,
    base: DeltaTracker,
    in_flight: Option<InFlight>,
}

impl SeriesApi {
    pub fn new(settings: DatadogApiSettings) -> Result<Self, ExportError> {
        let client = reqwest::Client::builder()
            .timeout(settings.delivery.timeout)
            .connect_timeout(settings.delivery.timeout)
            .build()
            .map_err(|e| ExportError::Permanent(format!("datadog client: {}", describe(&e))))?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
        Ok(Self { client, settings, host, base: DeltaTracker::default(), in_flight: None })
    }
}

impl Exporter for SeriesApi {
    async fn export(&mut self, snapshot: &Snapshot) -> Result<(), ExportError> {
        if self.in_flight.as_ref().is_none_or(|f| f.time != snapshot.time_unix_nanos) {
            let all = series(snapshot, &self.base, &self.settings.tags, &self.host);
            let bodies = all
                .chunks(MAX_SERIES)
                .map(|chunk| gzip(&serde_json::to_vec(&Payload { series: chunk }).unwrap_or_default()))
                .collect();
            self.in_flight = Some(InFlight { time: snapshot.time_unix_nanos, bodies, next: 0 });
        }
        let Some(flight) = &mut self.in_flight else { return Ok(()) };
        while let Some(body) = flight.bodies.get(flight.next) {
            let mut key = reqwest::header::HeaderValue::from_str(&self.settings.api_key.0).map_err(|_| {
                ExportError::Permanent("the Datadog API key has characters not allowed in a header".into())
            })?;
            key.set_sensitive(true);
            let resp = self
                .client
                .post(&self.settings.series_url)
                .header("DD-API-KEY", key)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(reqwest::header::CONTENT_ENCODING, "gzip")
                .body(body.clone())
                .send()
                .await
                .map_err(|e| ExportError::Retryable(format!("datadog api: {}", describe(&e))))?;
            classify("the Datadog API", resp.status())?;
            flight.next += 1;
        }
        self.in_flight = None;
        self.base.delivered(snapshot);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::export::{
        catalog as m,
        model::{HistogramValue, Series, Value},
    };

    #[test]
    fn exact_json() {
        let mut h = HistogramValue::empty(&[1.0, 10.0]);
        h.observe(2.0);
        let snapshot = Snapshot {
            start_unix_nanos: 1_700_000_000_000_000_000,
            time_unix_nanos: 1_700_000_010_000_000_000,
            series: vec![
                Series {
                    desc: &m::TOKENS,
                    labels: vec![("gen_ai.token.type", Cow::Borrowed("input"))],
                    value: Value::Int(12),
                },
                Series { desc: &m::OPEN_CONNECTIONS, labels: vec![("side", "client".into())], value: Value::Int(3) },
                Series { desc: &m::DURATION, labels: vec![], value: Value::Histogram(h) },
            ],
            samples: vec![],
        };
        let s = series(&snapshot, &DeltaTracker::default(), &["env:test".into()], "");
        let json = serde_json::to_string(&Payload { series: &s }).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"series":["#,
                r#"{"metric":"llm.tokens","type":1,"interval":10,"points":[{"timestamp":1700000010,"value":12.0}],"tags":["env:test","gen_ai.token.type:input"]},"#,
                r#"{"metric":"llm_proxy.connections.open","type":3,"points":[{"timestamp":1700000010,"value":3.0}],"tags":["env:test","side:client"]},"#,
                r#"{"metric":"gen_ai.client.operation.duration.count","type":1,"interval":10,"points":[{"timestamp":1700000010,"value":1.0}],"tags":["env:test"]},"#,
                r#"{"metric":"gen_ai.client.operation.duration.sum","type":1,"interval":10,"points":[{"timestamp":1700000010,"value":2.0}],"tags":["env:test"]},"#,
                r#"{"metric":"gen_ai.client.operation.duration.bucket","type":1,"interval":10,"points":[{"timestamp":1700000010,"value":1.0}],"tags":["env:test","upper_bound:10"]}"#,
                r#"]}"#
            )
        );
    }
}
