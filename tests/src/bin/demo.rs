//! The demo: mock providers, nginx as the proxy (the send/recv test proxy
//! when nginx is not installed), the agent attached to it, steady traffic,
//! and a live summary of what the agent measures. Run as root:
//! `demo [--seconds N]` (default 30; 0 runs until Ctrl-C).

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use llm_proxy_e2e::{
    client::Client,
    harness::{self, Agent, Nginx},
    metrics::Scrape,
    mock::MockProvider,
};

fn main() {
    let mut seconds = 30u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--seconds" {
            seconds = args.next().and_then(|s| s.parse().ok()).expect("--seconds N");
        }
    }
    let openai = MockProvider::start(0).expect("mock provider");
    let anthropic = MockProvider::start(0).expect("mock provider");
    let routes = [("openai", openai.port), ("anthropic", anthropic.port)];
    let providers = [
        "--provider".to_string(),
        format!("openai=127.0.0.1:{}", openai.port),
        "--provider".to_string(),
        format!("anthropic=127.0.0.1:{}", anthropic.port),
    ];
    let (_proxy_guard, proxy_port, target): (Box<dyn std::any::Any>, u16, Vec<String>) =
        if Path::new(harness::NGINX).exists() {
            let nginx = Nginx::start(&routes);
            let port = nginx.port;
            (Box::new(nginx), port, vec!["--exe".into(), harness::NGINX.into()])
        } else {
            let (guard, port) = harness::start_send_recv_proxy(&routes);
            let pid = guard.pid();
            (Box::new(guard), port, vec!["--pid".into(), pid.to_string()])
        };
    let mut agent_args: Vec<&str> = target.iter().map(String::as_str).collect();
    agent_args.extend(providers.iter().map(String::as_str));
    println!("starting: mock providers on :{} and :{}, proxy on :{proxy_port}", openai.port, anthropic.port);
    println!("$ metrics-agent run {}", agent_args.join(" "));
    let agent = Agent::start(&agent_args);
    println!("agent metrics: http://127.0.0.1:{}/metrics (curl it while the demo runs)\n", agent.port);

    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..3 {
        let stop = stop.clone();
        workers.push(thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut c) = Client::connect(proxy_port) else { break };
                for _ in 0..5 {
                    i += 1;
                    let path = match (w + i) % 10 {
                        0 => "/openai/v1/chat/completions?status=429",
                        1 => "/anthropic/v1/messages?status=529",
                        2 => "/anthropic/v1/messages?events=8&interval_ms=150",
                        3 | 4 => "/anthropic/v1/messages?delay_ms=40&bytes=3000",
                        _ => "/openai/v1/chat/completions?delay_ms=25&bytes=1500",
                    };
                    if c.request(path, 400, false).is_err() {
                        break;
                    }
                }
            }
        }));
    }
    let start = Instant::now();
    println!(
        "{:>6} {:>9} {:>7} {:>9} {:>9} {:>10} {:>10} {:>10}",
        "time", "requests", "failed", "openai", "anthropic", "p50 ms", "p99 ms", "ttfb p50"
    );
    while seconds == 0 || start.elapsed() < Duration::from_secs(seconds) {
        thread::sleep(Duration::from_secs(2));
        let s = agent.scrape();
        println!(
            "{:>5}s {:>9} {:>7} {:>9} {:>9} {:>10.1} {:>10.1} {:>10.1}",
            start.elapsed().as_secs(),
            s.get("llm_proxy_requests_total"),
            s.get("llm_proxy_requests_failed_total"),
            s.get("llm_proxy_provider_requests_total{provider=\"openai\"}"),
            s.get("llm_proxy_provider_requests_total{provider=\"anthropic\"}"),
            quantile_ms(&s, "llm_proxy_request_duration_seconds", 0.5),
            quantile_ms(&s, "llm_proxy_request_duration_seconds", 0.99),
            quantile_ms(&s, "llm_proxy_time_to_first_byte_seconds", 0.5),
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let s = agent.scrape();
    println!("\nfinal hot-path counters:");
    for line in s.text.lines().filter(|l| !l.starts_with('#') && !l.contains("_bucket") && !l.ends_with(" 0")) {
        println!("  {line}");
    }
}

/// The upper bound of the histogram bucket holding quantile `q` (ms).
fn quantile_ms(s: &Scrape, name: &str, q: f64) -> f64 {
    let count = s.get(&format!("{name}_count")) as f64;
    if count == 0.0 {
        return 0.0;
    }
    let mut buckets: Vec<(f64, f64)> = s
        .series
        .iter()
        .filter_map(|(k, v)| {
            let le = k.strip_prefix(&format!("{name}_bucket{{le=\""))?.split('"').next()?;
            Some((le.parse().unwrap_or(f64::INFINITY), *v))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets.iter().find(|(_, c)| *c >= q * count).map(|(le, _)| le * 1000.0).unwrap_or(f64::INFINITY)
}
