//! The exporters benchmark (`cargo bench -p metrics-agent --bench exporters`): records per second through the record bus
//! into the export aggregator (baseline: a consumer that only counts), and
//! the cost of encoding one snapshot for each exporter (used by
//! `cargo xtask bench exporters`).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use prost::Message;
use rust_decimal::Decimal;

use metrics_agent::{
    export::{
        Source,
        audit_metrics::{AuditMetrics, Limits},
        datadog::{api as datadog_api, dogstatsd},
        delta::DeltaTracker,
        otlp, prometheus,
    },
    records::{self, RecordBuilder, RequestRecord},
};

/// The agent binary's allocator, so that the numbers are the agent's.
#[global_allocator]
static ALLOCATOR: metrics_agent::zeroing::ZeroOnFree = metrics_agent::zeroing::ZeroOnFree;

fn workload(n: usize) -> Vec<Arc<RequestRecord>> {
    const PROVIDERS: [&str; 3] = ["openai", "anthropic", "gcp.gemini"];
    (0..n)
        .map(|i| {
            let status = [200, 200, 200, 200, 200, 200, 200, 429, 500, 529][i % 10];
            Arc::new(
                RecordBuilder::new()
                    .side(if i % 2 == 0 { "client" } else { "upstream" })
                    .cache_hit(Some(i % 7 == 0))
                    .provider(PROVIDERS[i % 3])
                    .model(&format!("model-{}", i % 20))
                    .status(status)
                    .error_type((status >= 400).then(|| format!("error_{}", status)))
                    .streaming(i % 2 == 1)
                    .tokens(100 + i as u64 % 900, 50 + i as u64 % 400)
                    .ttfb_ms((i % 1000) as f64)
                    .duration_ms((i % 30_000) as f64)
                    .cost_usd(Some(Decimal::new(i as i64 % 1000, 6)))
                    .build(),
            )
        })
        .collect()
}

/// Sends every record through a bus; returns records per second once the
/// consumer has counted them all (the sender waits instead of overrunning).
async fn through_bus(records: &[Arc<RequestRecord>], consume: Arc<dyn Fn(&RequestRecord) + Send + Sync>) -> f64 {
    let bus = records::bus();
    let mut rx = bus.subscribe();
    let done = Arc::new(AtomicU64::new(0));
    let d = done.clone();
    let consumer = tokio::spawn(async move {
        while let Ok(r) = rx.recv().await {
            consume(&r);
            d.fetch_add(1, Ordering::Relaxed);
        }
    });
    let start = Instant::now();
    for r in records {
        while bus.len() >= records::CAPACITY / 2 {
            tokio::task::yield_now().await;
        }
        let _ = bus.send(r.clone());
    }
    while done.load(Ordering::Relaxed) < records.len() as u64 {
        tokio::task::yield_now().await;
    }
    let rate = records.len() as f64 / start.elapsed().as_secs_f64();
    drop(bus);
    let _ = consumer.await;
    rate
}

fn time<T>(rounds: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut last = f();
    let start = Instant::now();
    for _ in 0..rounds {
        last = f();
    }
    (start.elapsed().as_secs_f64() * 1e6 / rounds as f64, last)
}

fn run(n: usize) -> anyhow::Result<()> {
    let records = workload(n);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let audit = Arc::new(AuditMetrics::new(Limits { max_samples: 100_000, ..Limits::default() }));
    let (baseline, aggregated) = runtime.block_on(async {
        let baseline = through_bus(
            &records,
            Arc::new(|r: &RequestRecord| {
                std::hint::black_box(r.status);
            }),
        )
        .await;
        let a = audit.clone();
        let aggregated = through_bus(&records, Arc::new(move |r: &RequestRecord| a.observe(r))).await;
        (baseline, aggregated)
    });
    let source = Arc::new(Source::of_audit(audit, vec![]));
    let snapshot = source.snapshot(false);
    let series = snapshot.series.len();
    let rounds = 50;
    let resource = otlp::resource_attributes(|_| None);
    let base = DeltaTracker::default();
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(prometheus::ExportCollector { source, all: true }));
    let (prom_us, prom) = time(rounds, || {
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text.len()
    });
    let (otlp_us, otlp_bytes) = time(rounds, || {
        let body = otlp::encode(&snapshot, &resource).encode_to_vec();
        (body.len(), otlp::gzip(&body).len())
    });
    let (statsd_us, statsd_bytes) = time(rounds, || {
        let d = dogstatsd::pack(&dogstatsd::groups(&snapshot, &base, &[]), 8192);
        d.iter().map(|x| x.bytes.len()).sum::<usize>()
    });
    let (api_us, api_bytes) = time(rounds, || {
        let s = datadog_api::series(&snapshot, &base, &[], "host");
        let body = serde_json::to_vec(&datadog_api::Payload { series: &s }).unwrap_or_default();
        (body.len(), otlp::gzip(&body).len())
    });
    println!("records: {n} (20 models, 3 providers, 4 statuses, both sides)\n");
    println!("| path | records/s | ratio to baseline |\n|---|---|---|");
    println!("| record bus, consumer only counts (baseline) | {baseline:.0} | 1.000 |");
    println!("| record bus into the export aggregator | {aggregated:.0} | {:.3} |", aggregated / baseline);
    println!("\nOne snapshot: {series} series (audit aggregates of the records above)\n");
    println!("| encoder | µs per snapshot | bytes | bytes gzip |\n|---|---|---|---|");
    println!("| Prometheus text (scrape) | {prom_us:.0} | {prom} | - |");
    println!("| OTLP protobuf + gzip | {otlp_us:.0} | {} | {} |", otlp_bytes.0, otlp_bytes.1);
    println!("| DogStatsD lines, 8 KiB datagrams | {statsd_us:.0} | {statsd_bytes} | - |");
    println!("| Datadog series JSON + gzip | {api_us:.0} | {} | {} |", api_bytes.0, api_bytes.1);
    Ok(())
}

/// Export aggregation and encoding throughput.
#[derive(clap::Parser)]
struct Args {
    /// Synthetic records sent through the record bus.
    #[arg(long, default_value_t = 200_000)]
    records: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    run(args.records)
}
