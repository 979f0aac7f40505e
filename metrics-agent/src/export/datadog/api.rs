//! Datadog's HTTP series API (`POST /api/v2/series`, `DD-API-KEY`), for
//! agentless setups. Counters are `count` points (type 1) holding the
//! increment since the last delivered snapshot, with its interval; gauges are
//! type 3; histograms become `.count` and `.sum` counts and per-bucket
//! `.bucket` counts tagged `upper_bound` (as Datadog's OpenMetrics check
//! names them). Bodies are gzip-compressed JSON, at most `MAX_SERIES` series
//! per request.

use serde::Serialize;

use super::{DatadogApiSettings, dogstatsd::tag_value};
use crate::export::{
    ExportError, Exporter,
    delta::{Delta, DeltaTracker},
    model::{Kind, Label, Snapshot},
    otlp::{classify, describe, gzip},
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
    grouped(snapshot, base, global, host).into_iter().flat_map(|(_, s)| s).collect()
}

/// Like `series`, grouped by the index of the snapshot series they come from.
pub fn grouped(
    snapshot: &Snapshot,
    base: &DeltaTracker,
    global: &[String],
    host: &str,
) -> Vec<(usize, Vec<ApiSeries>)> {
    let ts = (snapshot.time_unix_nanos / 1_000_000_000) as i64;
    let interval = base.interval_seconds(snapshot).round() as i64;
    let resources = || if host.is_empty() { vec![] } else { vec![Resource { name: host.to_string(), kind: "host" }] };
    let mut groups = Vec::new();
    for (i, s) in snapshot.series.iter().enumerate() {
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
        if !out.is_empty() {
            groups.push((i, out));
        }
    }
    groups
}

/// One request's series and the snapshot series whose points it completes.
#[derive(Debug, Default)]
pub struct Chunk {
    pub series: Vec<ApiSeries>,
    pub completes: Vec<usize>,
}

/// Splits groups into requests of at most `max` series without splitting a
/// group (one longer than `max` is split and counts with its last request).
pub fn chunks(groups: Vec<(usize, Vec<ApiSeries>)>, max: usize) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut cur = Chunk::default();
    for (index, group) in groups {
        if !cur.series.is_empty() && cur.series.len() + group.len() > max {
            out.push(std::mem::take(&mut cur));
        }
        for s in group {
            if cur.series.len() >= max {
                out.push(std::mem::take(&mut cur));
            }
            cur.series.push(s);
        }
        cur.completes.push(index);
    }
    if !cur.series.is_empty() {
        out.push(cur);
    }
    out
}

/// Requests of a snapshot, kept across retries so that a retry sends only
/// the parts not accepted yet.
struct InFlight {
    time: u64,
    /// Gzip bodies, each with the snapshot series it completes.
    bodies: Vec<(Vec<u8>, Vec<usize>)>,
    next: usize,
}

pub struct SeriesApi {
    client: reqwest::Client,
    settings: DatadogApiSettings,
    host: String,
    base: DeltaTracker,
    in_flight: Option<InFlight>,
    /// Series per request (`MAX_SERIES`; smaller in tests).
    max_series: usize,
}

impl SeriesApi {
    pub fn new(settings: DatadogApiSettings) -> Result<Self, ExportError> {
        let client = reqwest::Client::builder()
            .timeout(settings.delivery.timeout)
            .connect_timeout(settings.delivery.timeout)
            // Credentials go to the configured host only.
            .redirect(crate::export::redirects::same_host_redirects())
            .build()
            .map_err(|e| ExportError::Permanent(format!("datadog client: {}", describe(&e))))?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
        Ok(Self { client, settings, host, base: DeltaTracker::default(), in_flight: None, max_series: MAX_SERIES })
    }
}

impl Exporter for SeriesApi {
    async fn export(&mut self, snapshot: &Snapshot) -> Result<(), ExportError> {
        if self.in_flight.as_ref().is_none_or(|f| f.time != snapshot.time_unix_nanos) {
            let groups = grouped(snapshot, &self.base, &self.settings.tags, &self.host);
            let bodies = chunks(groups, self.max_series)
                .into_iter()
                .map(|c| (gzip(&serde_json::to_vec(&Payload { series: &c.series }).unwrap_or_default()), c.completes))
                .collect();
            self.in_flight = Some(InFlight { time: snapshot.time_unix_nanos, bodies, next: 0 });
        }
        let Some(flight) = &mut self.in_flight else { return Ok(()) };
        while let Some((body, completes)) = flight.bodies.get(flight.next) {
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
            // Should a later request fail for good, these are not sent again.
            self.base.delivered_part(snapshot, completes);
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

    /// A Datadog API stand-in: accepts the first request, refuses (400) the
    /// second, accepts again after; returns the `llm.requests` points of
    /// every request it accepted.
    async fn api_accepting_all_but_the_second() -> (String, std::sync::Arc<std::sync::Mutex<Vec<f64>>>) {
        use std::{
            io::Read,
            sync::{
                Arc, Mutex,
                atomic::{AtomicU64, Ordering},
            },
        };
        let points: Arc<Mutex<Vec<f64>>> = Arc::default();
        let (p, n) = (points.clone(), Arc::new(AtomicU64::new(0)));
        let app = axum::Router::new().route(
            "/api/v2/series",
            axum::routing::post(move |body: axum::body::Bytes| async move {
                if n.fetch_add(1, Ordering::SeqCst) == 1 {
                    return axum::http::StatusCode::BAD_REQUEST;
                }
                let mut json = Vec::new();
                flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut json).unwrap();
                let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
                for s in v["series"].as_array().unwrap() {
                    if s["metric"] == "llm.requests" {
                        p.lock().unwrap().push(s["points"][0]["value"].as_f64().unwrap());
                    }
                }
                axum::http::StatusCode::ACCEPTED
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, points)
    }

    /// Request 1 of 2 accepted, request 2 refused for good: the series of
    /// request 1 are not sent again with the next snapshot.
    #[tokio::test]
    async fn a_partly_accepted_snapshot_is_not_sent_again() {
        let (url, points) = api_accepting_all_but_the_second().await;
        let settings = DatadogApiSettings {
            series_url: format!("{url}/api/v2/series"),
            api_key: crate::export::common_settings::Secret("k".into()),
            tags: vec![],
            delivery: crate::export::common_settings::Delivery {
                interval: std::time::Duration::from_secs(1),
                timeout: std::time::Duration::from_secs(5),
                queue_batches: 1,
                max_retries: 0,
            },
        };
        let mut api = SeriesApi::new(settings).unwrap();
        api.max_series = 2;
        let snapshot = |t: u64, requests: u64, tokens: u64| Snapshot {
            start_unix_nanos: 0,
            time_unix_nanos: t,
            series: vec![
                Series { desc: &m::REQUESTS, labels: vec![], value: Value::Int(requests) },
                Series { desc: &m::OPEN_CONNECTIONS, labels: vec![], value: Value::Int(1) },
                Series { desc: &m::TOKENS, labels: vec![], value: Value::Int(tokens) },
            ],
            samples: vec![],
        };
        let e = api.export(&snapshot(1_000_000_000, 3, 10)).await.unwrap_err();
        assert!(matches!(e, ExportError::Permanent(_)), "{e}");
        assert_eq!(*points.lock().unwrap(), vec![3.0]);
        api.export(&snapshot(2_000_000_000, 5, 20)).await.unwrap();
        assert_eq!(*points.lock().unwrap(), vec![3.0, 2.0], "the increment since the accepted part, not 5");
    }

    #[test]
    fn a_series_points_share_a_request() {
        let one = |metric: &str| ApiSeries {
            metric: metric.into(),
            kind: 1,
            interval: None,
            points: vec![],
            tags: vec![],
            resources: vec![],
        };
        let groups = vec![(0, vec![one("a")]), (1, vec![one("b.count"), one("b.sum")]), (2, vec![one("c")])];
        let c = chunks(groups, 2);
        let names: Vec<Vec<&str>> = c.iter().map(|c| c.series.iter().map(|s| s.metric.as_str()).collect()).collect();
        assert_eq!(names, vec![vec!["a"], vec!["b.count", "b.sum"], vec!["c"]]);
        assert_eq!(c.iter().map(|c| c.completes.clone()).collect::<Vec<_>>(), vec![vec![0], vec![1], vec![2]]);
    }
}
