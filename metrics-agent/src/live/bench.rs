//! `metrics-agent bench-stream` (run by `cargo xtask bench stream`): the
//! live path in-process — aggregation fed with synthetic records at a fixed
//! rate, the real WebSocket endpoint on loopback — with 1 client and then N
//! clients in the same run. Clients run on their own runtime; the agent
//! side's CPU is read per thread from /proc. Prints a Markdown table.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use futures_util::StreamExt;
use tokio::sync::watch;

use super::{HealthSources, Live, StreamConfig};
use crate::{audit::llm::Usage, records::RequestRecord};

const AGENT_THREAD: &str = "live-agent";
const INTERVAL_MS: u64 = 250;
const RECORDS_PER_SECOND: u64 = 2000;

fn record(i: u64) -> RequestRecord {
    const PROVIDERS: [&str; 3] = ["openai", "anthropic", "gcp.gemini"];
    RequestRecord {
        timestamp_unix_ms: 0,
        start_ns: 0,
        pid: 1,
        side: "client",
        provider_slot: None,
        upstream_provider: None,
        proxy_overhead_ms: None,
        cache_hit: Some(false),
        provider: PROVIDERS[(i % 3) as usize],
        operation: "chat",
        endpoint: "/v1/chat/completions".into(),
        deployment: None,
        stream_timing: Default::default(),
        model_requested: Some(format!("model-{}", i % 4)),
        model_returned: None,
        status: if i.is_multiple_of(50) { 429 } else { 200 },
        error_type: i.is_multiple_of(50).then(|| "rate_limit_exceeded".into()),
        streaming: false,
        tokens: Usage { input: Some(100), output: Some(40), ..Usage::default() },
        ttfb_ms: (i % 97) as f64,
        duration_ms: (i % 997) as f64,
        session_id: Some(format!("s{}", i % 500)),
        user_id: None,
        api_key_hash: None,
        truncated: false,
        cost_usd: Some(rust_decimal::Decimal::new(123, 6)),
        application_id: Some(format!("app-{}", i % 4)),
        rate_limits: BTreeMap::new(),
        pairing: Default::default(),
        sample_every: 1,
    }
}

/// CPU seconds (user + system) of this process's threads named `prefix*`.
fn thread_cpu_seconds(prefix: &str) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the ")" of comm: state is field 3; utime 14, stime 15.
        let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
        total += fields.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        total += fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    total as f64 / ticks
}

struct PhaseResult {
    clients: usize,
    ticks: u64,
    delivered: u64,
    expected: u64,
    latency_ms: Vec<f64>,
    cpu_percent: f64,
    records: u64,
    records_dropped: u64,
    skipped: u64,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn phase(clients: usize, seconds: u64) -> Result<PhaseResult> {
    let agent =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name(AGENT_THREAD).enable_all().build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-client")
        .enable_all()
        .build()?;
    let config = StreamConfig { interval_ms: INTERVAL_MS, max_clients: 100_000, ..StreamConfig::default() };
    let (stop_tx, stop_rx) = watch::channel(false);
    let live = Live::new(config);
    let counters = live.counters.clone();
    let mut published = live.updates.clone();
    let bus = crate::records::bus();
    let records = bus.subscribe();
    let router = live.routes(stop_rx.clone());
    let listener = agent.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let port = listener.local_addr()?.port();
    agent.spawn(async move { axum::serve(listener, router).await });
    agent.spawn(live.run(records, HealthSources { audit: true, sample_every: 1, ..HealthSources::default() }, stop_rx));
    // Synthetic records at a fixed rate.
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let producer_sent = sent.clone();
    agent.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut i = 0u64;
        loop {
            tick.tick().await;
            for _ in 0..RECORDS_PER_SECOND / 100 {
                let _ = bus.send(Arc::new(record(i)));
                i += 1;
            }
            producer_sent.store(i, std::sync::atomic::Ordering::Relaxed);
        }
    });
    // When each snapshot was published.
    let publish_times: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let times = publish_times.clone();
    agent.spawn(async move {
        while published.changed().await.is_ok() {
            let s = published.borrow_and_update().clone();
            times.lock().unwrap().insert(s.seq, s.published);
        }
    });
    // Clients: each remembers when it had all of a tick's updates.
    let receipts: Arc<Mutex<Vec<HashMap<u64, Instant>>>> = Arc::default();
    let url = format!("ws://127.0.0.1:{port}{}", super::stream::PATH);
    client_rt.block_on(async {
        for _ in 0..clients {
            let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.context("bench client")?;
            let receipts = receipts.clone();
            tokio::spawn(async move {
                let mut mine: HashMap<u64, Instant> = HashMap::new();
                while let Some(Ok(m)) = ws.next().await {
                    if let tokio_tungstenite::tungstenite::Message::Text(t) = m
                        && t.starts_with("{\"type\":\"metrics.update\"")
                    {
                        let seq = t.as_str().find("\"seq\":").map_or(0, |i| {
                            t.as_str()[i + 6..]
                                .chars()
                                .take_while(char::is_ascii_digit)
                                .collect::<String>()
                                .parse()
                                .unwrap_or(0)
                        });
                        mine.insert(seq, Instant::now());
                    }
                }
                receipts.lock().unwrap().push(mine);
            });
        }
        anyhow::Ok(())
    })?;
    // Measure: skip the first two ticks after the last client connected.
    std::thread::sleep(Duration::from_millis(2 * INTERVAL_MS));
    let first_seq = live_seq(&publish_times) + 1;
    let cpu_before = thread_cpu_seconds(AGENT_THREAD);
    let dropped_before = counters.records_dropped.load(std::sync::atomic::Ordering::Relaxed);
    let sent_before = sent.load(std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let cpu = thread_cpu_seconds(AGENT_THREAD) - cpu_before;
    let elapsed = started.elapsed().as_secs_f64();
    let last_seq = live_seq(&publish_times);
    let records = sent.load(std::sync::atomic::Ordering::Relaxed) - sent_before;
    let records_dropped = counters.records_dropped.load(std::sync::atomic::Ordering::Relaxed) - dropped_before;
    let skipped = counters.updates_skipped.load(std::sync::atomic::Ordering::Relaxed);
    let _ = stop_tx.send(true);
    std::thread::sleep(Duration::from_millis(300));
    agent.shutdown_timeout(Duration::from_secs(2));
    client_rt.shutdown_timeout(Duration::from_secs(2));
    let receipts = receipts.lock().unwrap();
    let publish_times = publish_times.lock().unwrap();
    let mut latency_ms = Vec::new();
    let mut delivered = 0;
    for client in receipts.iter() {
        for seq in first_seq..last_seq {
            if let (Some(got), Some(sent)) = (client.get(&seq), publish_times.get(&seq)) {
                delivered += 1;
                latency_ms.push(got.duration_since(*sent).as_secs_f64() * 1000.0);
            }
        }
    }
    latency_ms.sort_by(f64::total_cmp);
    let ticks = last_seq.saturating_sub(first_seq);
    Ok(PhaseResult {
        clients,
        ticks,
        delivered,
        expected: ticks * clients as u64,
        latency_ms,
        cpu_percent: cpu / elapsed * 100.0,
        records,
        records_dropped,
        skipped,
    })
}

fn live_seq(times: &Mutex<HashMap<u64, Instant>>) -> u64 {
    times.lock().unwrap().keys().copied().max().unwrap_or(0)
}

pub fn run(clients: usize, seconds: u64) -> Result<()> {
    crate::live::raise_open_files_limit(clients as u64 * 2 + crate::live::BASE_OPEN_FILES);
    let mut rows = Vec::new();
    for n in [1, clients] {
        rows.push(phase(n, seconds)?);
    }
    println!(
        "Stream fan-out: {RECORDS_PER_SECOND} records/s into 4 applications x 12 (provider, model) keys, one update every {INTERVAL_MS} ms, {seconds} s per run.\n"
    );
    println!(
        "| clients | ticks | updates delivered / expected | fan-out latency p50 ms | p99 ms | max ms | agent CPU % of one core | records in | records dropped | updates skipped |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} / {} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {} | {} |",
            r.clients,
            r.ticks,
            r.delivered,
            r.expected,
            percentile(&r.latency_ms, 0.5),
            percentile(&r.latency_ms, 0.99),
            r.latency_ms.last().copied().unwrap_or(f64::NAN),
            r.cpu_percent,
            r.records,
            r.records_dropped,
            r.skipped
        );
    }
    if let [one, many] = &rows[..] {
        println!(
            "\nRatio {} clients / 1 client: CPU {:.1}x, p99 fan-out latency {:.1}x.",
            many.clients,
            many.cpu_percent / one.cpu_percent.max(0.01),
            percentile(&many.latency_ms, 0.99) / percentile(&one.latency_ms, 0.99).max(0.001)
        );
    }
    Ok(())
}
