//! Conformance of the sources and backends to the catalogue: every source
//! (kernel counters, agent statistics, audit aggregates, HTTP server,
//! storage, system metrics, exporter health) emits only catalogued metrics
//! with their listed labels and together they cover the catalogue, and Prometheus, OTLP, DogStatsD and the Datadog
//! series API each carry every catalogued metric, named by their own rules.

use std::{
    borrow::Cow,
    collections::BTreeSet,
    sync::{Arc, atomic::Ordering},
};

use metrics_common::{counters as c, histogram::HIST_BUCKETS};
use prometheus_client::{collector::Collector, encoding::DescriptorEncoder, registry::Registry};
use rust_decimal::Decimal;

use super::{
    Health, Source,
    audit_metrics::{AuditMetrics, Limits, is_sampled},
    catalog::{self as m, ALL},
    datadog::{api, dogstatsd},
    delta::DeltaTracker,
    hot_path,
    model::{DURATION_BUCKETS, Desc, HistogramValue, Kind, Samples, Series, Snapshot, Value},
    otlp, prometheus,
    system::{Sources, SystemConfig, SystemMetrics, Table},
};
use crate::{
    agent_stats::AgentStats, audit::llm::Usage, collector::HotPathSnapshot, http::server::ServerStats,
    store::stats::StorageStats,
};

fn is(desc: &Desc, other: &Desc) -> bool {
    std::ptr::eq(desc, other)
}

/// One series of every catalogued metric, each label set, non-zero; and one
/// raw sample of each sampled metric.
fn every_metric_once() -> Snapshot {
    let series = ALL
        .iter()
        .map(|d| Series {
            desc: d,
            labels: d.labels.iter().map(|k| (*k, Cow::Borrowed("v"))).collect(),
            value: match d.kind {
                Kind::Counter => Value::Int(3),
                Kind::Gauge => Value::Int(2),
                Kind::Histogram => {
                    let mut h = HistogramValue::empty(DURATION_BUCKETS);
                    h.observe(0.5);
                    Value::Histogram(h)
                }
            },
        })
        .collect();
    let samples = ALL
        .iter()
        .filter(|d| is_sampled(d))
        .map(|d| Samples { desc: d, labels: Vec::new(), values: vec![0.5] })
        .collect();
    Snapshot { start_unix_nanos: 1, time_unix_nanos: 2_000_000_000, series, samples }
}

/// Encodes fixed series the way `/metrics` does.
#[derive(Debug)]
struct Fixed(Vec<Series>);

impl Collector for Fixed {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        prometheus::encode(&self.0, &mut e)
    }
}

fn prometheus_text(series: Vec<Series>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Fixed(series)));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    crate::http::openmetrics_to_prometheus(&text)
}

/// Prometheus's rule: the base name, the unit suffix, `_total` on counters.
fn prometheus_family(d: &Desc) -> String {
    match d.kind {
        Kind::Counter => format!("{}_total", d.prometheus_name()),
        _ => d.prometheus_name(),
    }
}

/// DogStatsD's rule: the OpenTelemetry name; histograms as distributions of
/// their raw samples when sampled, else as `.count` and `.sum` counts.
fn statsd_names(d: &Desc) -> Vec<String> {
    match d.kind {
        Kind::Histogram if !is_sampled(d) => {
            vec![format!("{}.count", d.otel), format!("{}.sum", d.otel)]
        }
        _ => vec![d.otel.to_string()],
    }
}

/// The Datadog series API's rule: the OpenTelemetry name; histograms as
/// `.count`, `.sum` and `.bucket` counts.
fn datadog_api_names(d: &Desc) -> Vec<String> {
    match d.kind {
        Kind::Histogram => ["count", "sum", "bucket"].iter().map(|s| format!("{}.{s}", d.otel)).collect(),
        _ => vec![d.otel.to_string()],
    }
}

#[test]
fn every_backend_carries_every_catalogued_metric() {
    let snapshot = every_metric_once();

    let text = prometheus_text(snapshot.series.clone());
    let families: BTreeSet<String> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).map(|l| l.split(' ').next().unwrap().into()).collect();
    let expected: BTreeSet<String> = ALL.iter().map(|d| prometheus_family(d)).collect();
    assert_eq!(families, expected, "Prometheus families");
    for d in ALL {
        let name = match d.kind {
            Kind::Histogram => format!("{}_count", d.prometheus_name()),
            _ => prometheus_family(d),
        };
        let sample = if d.labels.is_empty() { format!("{name} ") } else { format!("{name}{{") };
        let line = text.lines().find(|l| l.starts_with(&sample)).unwrap_or_else(|| panic!("{sample} in\n{text}"));
        for label in d.labels {
            assert!(line.contains(&format!("{}=\"v\"", label.replace('.', "_"))), "{label} on {line}");
        }
    }

    let request = otlp::encode(&snapshot, &[]);
    let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
    let names: BTreeSet<&str> = metrics.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(names, ALL.iter().map(|d| d.otel).collect(), "OTLP metric names");
    for (x, d) in metrics.iter().zip(ALL) {
        assert_eq!((x.name.as_str(), x.unit.as_str(), x.description.as_str()), (d.otel, d.unit, d.help));
    }

    let lines: Vec<String> =
        dogstatsd::groups(&snapshot, &DeltaTracker::default(), &[]).into_iter().flat_map(|g| g.lines).collect();
    let names: BTreeSet<String> = lines.iter().map(|l| l.split(':').next().unwrap().to_string()).collect();
    assert_eq!(names, ALL.iter().flat_map(|d| statsd_names(d)).collect(), "DogStatsD metric names");

    let series = api::series(&snapshot, &DeltaTracker::default(), &[], "");
    let names: BTreeSet<String> = series.iter().map(|s| s.metric.clone()).collect();
    assert_eq!(names, ALL.iter().flat_map(|d| datadog_api_names(d)).collect(), "Datadog series API names");
}

/// Every source with inputs that make each of its metrics non-zero.
fn every_source() -> Vec<Series> {
    let mut out = Vec::new();
    let mut k = HotPathSnapshot {
        counters: vec![1; c::COUNT as usize],
        provider_requests: vec![1; 16],
        provider_failed: vec![1; 16],
        provider_latency_sum_us: vec![1; 16],
        provider_histogram: vec![1; 16 * HIST_BUCKETS as usize],
        request_histogram: vec![1; HIST_BUCKETS as usize],
        ttfb_histogram: vec![1; HIST_BUCKETS as usize],
        probe_hits: vec![1; metrics_common::probes::HIT_NAMES.len()],
    };
    k.counters[c::REQUESTS_TOTAL as usize] = 5;
    hot_path::append(&k, 4, &[(0, "openai".into()), (15, "other".into())], &mut out);

    let stats = Arc::new(AgentStats::default());
    stats.audit_cpu_ns.store(1, Ordering::Relaxed);
    *stats.traced_pids.lock().unwrap() = vec![std::process::id()];
    super::agent::append(&stats, 0.5, &mut out);

    let audit = Arc::new(AuditMetrics::new(Limits { max_samples: 10, ..Limits::default() }));
    let r = super::audit_metrics::tests::builder("client", "gpt-4o", 429, 5, 7)
        .cache_hit(Some(true))
        .cost_usd(Some(Decimal::new(1, 3)))
        .usage(Usage {
            input: Some(5),
            output: Some(7),
            cache_read: Some(1),
            cache_creation: Some(1),
            reasoning: Some(1),
        })
        // Streamed, so the streaming-time histograms are observed too.
        .streaming(true)
        .stream_timing(crate::audit::pipeline::StreamTiming {
            time_to_first_token_ms: Some(150.0),
            time_per_output_token_ms: Some(10.0),
            time_per_output_chunk_ms: Some(40.0),
            stream_events: Some(4),
            content_events: Some(3),
        })
        .build();
    audit.observe(&r);
    let sources = Sources {
        stats: Some(stats),
        tables: vec![Table { name: "t", capacity: Some(10), entries: Box::new(|| 3) }],
        ..Sources::default()
    };
    let system = Arc::new(SystemMetrics::new(SystemConfig::default(), sources));
    let http = ServerStats::default();
    http.open.inc();
    http.closed.inc("idle_timeout");
    let storage = StorageStats::default();
    storage.records.inc();
    for by_label in [
        &storage.records_dropped,
        &storage.details_dropped,
        &storage.names_collapsed,
        &storage.budget_rows_dropped,
        &storage.rows_written,
        &storage.flushes,
        &storage.maintenance_runs,
    ] {
        by_label.inc("v");
    }
    storage.last_flush_duration_seconds.set(0.25);
    let source = Source {
        http: Some(Arc::new(http)),
        storage: Some(Arc::new(storage)),
        ..Source::of_audit(audit, vec![Health { name: "statsd", stats: Arc::default(), takes_samples: true }])
    };
    out.extend(source.series(true));
    out.extend(system.collect());
    out
}

#[test]
fn the_sources_emit_the_catalogue() {
    let series = every_source();
    for s in &series {
        assert!(ALL.iter().any(|d| is(d, s.desc)), "{} is not in catalog::ALL", s.desc.otel);
        for (k, _) in &s.labels {
            assert!(s.desc.labels.contains(k), "{} has the unlisted label {k}", s.desc.otel);
        }
    }
    // Read from kernel maps or block devices a unit test has not got; the
    // end-to-end exporter tests see them.
    let needs_the_kernel = [&m::RING_USAGE, &m::RING_SIZE, &m::OPEN_CONNECTIONS, &m::SYS_DISK_IO];
    let missing: Vec<&str> = ALL
        .iter()
        .filter(|d| !needs_the_kernel.iter().any(|k| is(k, d)))
        .filter(|d| !series.iter().any(|s| is(s.desc, d)))
        .map(|d| d.otel)
        .collect();
    assert!(missing.is_empty(), "no source emits {missing:?}");
}
