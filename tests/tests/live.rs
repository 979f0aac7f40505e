//! End-to-end tests of the live path: the agent on nginx with mock providers
//! and known traffic; real WebSocket clients (tokio-tungstenite) read
//! `/api/v1/metrics/stream` and a real headless Chromium loads the
//! dashboard. Counts are compared with what the client sent and the mock
//! providers answered (requests, errors and the usage tokens they put in
//! their responses); costs are computed from those tokens with the price
//! table. No message and no page may carry the client's API key.
//! Run as root, serialised with the other e2e tests.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpStream,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use llm_proxy_e2e::{
    client::{Client, Truth},
    harness::{self, Agent, Nginx, TempDir, serial},
    mock::MockProvider,
    paced,
    webdriver::Browser,
};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, client_async, connect_async,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

const STREAM: &str = "/api/v1/metrics/stream";
/// The API key the test clients send: it must never reach a message or a page.
const CANARY: &str = "sk-test-canary";
type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

/// The mocks, nginx in front of them and the agent tracing nginx with a
/// config file (`[stream]`, `[api]` sections) and extra environment.
struct Setup {
    openai: MockProvider,
    anthropic: MockProvider,
    nginx: Nginx,
    agent: Agent,
    _dir: TempDir,
}

impl Setup {
    fn start(config: &str, env: &[(&str, &str)]) -> Self {
        let openai = MockProvider::start(0).unwrap();
        let anthropic = MockProvider::start(0).unwrap();
        let nginx = Nginx::start_private(&[("openai", openai.port), ("anthropic", anthropic.port)]);
        let dir = TempDir::new("live-config");
        let path = dir.0.join("agent.toml");
        std::fs::write(&path, config).unwrap();
        let args = [
            "--exe".to_string(),
            nginx.exe.display().to_string(),
            "--print-requests".to_string(),
            "--application-id".to_string(),
            "chat-app".to_string(),
            "--config".to_string(),
            path.display().to_string(),
            "--provider".to_string(),
            format!("openai=127.0.0.1:{}", openai.port),
            "--provider".to_string(),
            format!("anthropic=127.0.0.1:{}", anthropic.port),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let agent = Agent::start_with_env(&args, env);
        agent.wait_for_nginx();
        Self { openai, anthropic, nginx, agent, _dir: dir }
    }

    fn url(&self, query: &str) -> String {
        format!("ws://127.0.0.1:{}{STREAM}{query}", self.agent.port)
    }

    /// The client-side records the agent printed.
    fn client_records(&self) -> Vec<Value> {
        self.agent
            .log_text()
            .lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|r| r["side"] == "client")
            .collect()
    }
}

/// One POST with an `x-session-id` header on a fresh connection; the status.
fn request_in_session(port: u16, path: &str, session: &str) -> u16 {
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nhost: proxy.test\r\ncontent-type: application/json\r\nx-session-id: {session}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// What the known traffic below must add up to: what the client saw, and
/// what the mock providers counted.
struct Expected {
    truth: Truth,
    requests: u64,
    errors: u64,
    openai: u64,
    openai_errors: u64,
    anthropic: u64,
    anthropic_errors: u64,
    sessions: u64,
    input_tokens: u64,
    output_tokens: u64,
    /// Cost of the OpenAI answers (all gpt-4o-mini) from the price table.
    openai_cost: Decimal,
}

/// The price table's (input, output) USD per million tokens of `model`.
fn price(model: &str) -> (Decimal, Decimal) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../metrics-agent/prices/prices.toml");
    let table: toml::Table = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let p = &table["models"][model];
    let d = |k: &str| p[k].as_str().unwrap().parse::<Decimal>().unwrap();
    (d("input"), d("output"))
}

/// 20 OpenAI chats (every 4th answered 429), 6 Anthropic messages (two 529),
/// then 6 OpenAI chats in 3 sessions. Returns what the client saw and the
/// distinct sessions it used.
fn known_traffic(port: u16) -> (Truth, u64) {
    let mut c = Client::connect(port).unwrap();
    for i in 0..20 {
        let (path, status) = if i % 4 == 0 {
            ("/openai/v1/chat/completions?status=429", 429)
        } else {
            ("/openai/v1/chat/completions?delay_ms=20", 200)
        };
        assert_eq!(c.request(path, 200, false).unwrap(), status);
    }
    for i in 0..6 {
        let (path, status) =
            if i < 2 { ("/anthropic/v1/messages?status=529", 529) } else { ("/anthropic/v1/messages", 200) };
        assert_eq!(c.request(path, 200, false).unwrap(), status);
    }
    let mut truth = c.truth.clone();
    let sessions = ["s1", "s2", "s3", "s1", "s2", "s1"];
    for session in sessions {
        assert_eq!(request_in_session(port, "/openai/v1/chat/completions", session), 200);
        truth.requests += 1;
        *truth.by_status.entry(200).or_default() += 1;
    }
    (truth, sessions.iter().collect::<std::collections::BTreeSet<_>>().len() as u64)
}

impl Expected {
    /// Reads the mock providers' counters once they are idle.
    fn count(setup: &Setup, truth: Truth, sessions: u64) -> Self {
        let (openai, anthropic) = (&setup.openai, &setup.anthropic);
        openai.wait_idle(Duration::from_secs(5));
        anthropic.wait_idle(Duration::from_secs(5));
        let (o, a) = (openai.usage_sent(), anthropic.usage_sent());
        let (input_price, output_price) = price("gpt-4o-mini");
        let million = Decimal::from(1_000_000);
        Expected {
            requests: truth.requests,
            errors: truth.failed(),
            truth,
            openai: openai.snapshot().0,
            openai_errors: openai.errors(),
            anthropic: anthropic.snapshot().0,
            anthropic_errors: anthropic.errors(),
            sessions,
            input_tokens: o.input + a.input,
            output_tokens: o.output + a.output,
            // Chat answers have no cached tokens: input and output prices only.
            openai_cost: (Decimal::from(o.input) * input_price + Decimal::from(o.output) * output_price) / million,
        }
    }
}

/// A decimal string from a message, as a number (scale ignored).
fn decimal(v: &Value) -> Decimal {
    v.as_str().unwrap_or_else(|| panic!("a decimal string: {v}")).parse().unwrap()
}

async fn next_json(ws: &mut Ws, timeout: Duration) -> Option<Value> {
    loop {
        match tokio::time::timeout(timeout, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                assert!(!t.contains(CANARY), "the client's API key in a stream message: {t}");
                return Some(serde_json::from_str(t.as_str()).expect("JSON message"));
            }
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

/// Reads messages until one satisfies `want`; panics after `timeout`.
async fn wait_message(ws: &mut Ws, timeout: Duration, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    let mut last = Value::Null;
    while Instant::now() < deadline {
        match next_json(ws, Duration::from_secs(5)).await {
            Some(m) if want(&m) => return m,
            Some(m) => last = m,
            None => break,
        }
    }
    panic!("no stream message with {what} within {timeout:?}; last: {last}");
}

/// The reply to a `subscribe` message: the next message that is neither
/// health nor an update (a tick may push those before the agent reads the
/// request).
async fn next_reply(ws: &mut Ws, timeout: Duration) -> Option<Value> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let m = next_json(ws, Duration::from_secs(5)).await?;
        if m["type"] != "agent.health" && !updates(&m) {
            return Some(m);
        }
    }
    None
}

fn updates(m: &Value) -> bool {
    m["type"] == "metrics.update"
}

#[test]
fn stream_counts_match_ground_truth_and_subscriptions_filter() {
    let _serial = serial();
    let setup =
        Setup::start("[stream]\ninterval_ms = 200\nwindow_seconds = 60\n[metrics.system]\ninterval_seconds = 1\n", &[]);
    let rt = runtime();
    rt.block_on(async {
        let mut all = connect_async(setup.url("")).await.expect("connect").0;
        let mut by_message = connect_async(setup.url("")).await.expect("connect").0;
        by_message.send(Message::text(r#"{"subscribe":{"provider":"anthropic"}}"#)).await.unwrap();
        let ack = next_reply(&mut by_message, Duration::from_secs(5)).await.expect("ack");
        assert_eq!(ack, json!({"type": "subscribed", "filter": {"application": null, "provider": "anthropic"}}));
        let mut by_query = connect_async(setup.url("?provider=openai&application=chat-app")).await.expect("connect").0;
        let mut other_app = connect_async(setup.url("?application=another-app")).await.expect("connect").0;
        let mut bad = connect_async(setup.url("")).await.expect("connect").0;
        bad.send(Message::text(r#"{"subscribe":{"app":"x"}}"#)).await.unwrap();
        let err = next_reply(&mut bad, Duration::from_secs(5)).await.expect("error reply");
        assert_eq!(err["type"], "error", "{err}");

        let port = setup.nginx.port;
        let (truth, sessions) = tokio::task::spawn_blocking(move || known_traffic(port)).await.unwrap();
        let expected = Expected::count(&setup, truth, sessions);
        assert_eq!(expected.openai + expected.anthropic, expected.requests, "every request reached a provider");

        let m = wait_message(&mut all, Duration::from_secs(30), "every request", |m| {
            updates(m) && m["totals"]["requests"] == expected.requests
        })
        .await;
        assert_eq!(m["application_id"], "chat-app");
        assert!(m["provider"].is_null());
        assert_eq!(m["totals"]["errors"], expected.errors, "{m}");
        assert_eq!(m["totals"]["errors"], expected.truth.status_class(4) + expected.truth.status_class(5));
        assert_eq!(m["totals"]["tokens"]["input"], expected.input_tokens, "{m}");
        assert_eq!(m["totals"]["tokens"]["output"], expected.output_tokens, "{m}");
        // The traffic took well under the 60 s window: the window holds all of it.
        let metrics = &m["metrics"];
        assert_eq!(metrics["requests"], expected.requests, "{m}");
        assert_eq!(metrics["errors"], expected.errors);
        let rate = metrics["error_rate"].as_f64().unwrap();
        assert!((rate - expected.errors as f64 / expected.requests as f64).abs() < 1e-6, "{m}");
        assert_eq!(metrics["active_sessions"], expected.sessions, "{m}");
        let rps = metrics["requests_per_second"].as_f64().unwrap();
        let window = m["window_seconds"].as_f64().unwrap();
        assert!((rps * window - expected.requests as f64).abs() < 0.05 * expected.requests as f64, "{m}");
        // 15 of 32 answers waited 20 ms at the mock, the rest none: the median
        // is a fast one, p99 a slow one (within the histogram's 4.5%).
        let slow = 20.0 * 0.955;
        let p50 = metrics["p50_latency_ms"].as_f64().unwrap();
        let p99 = metrics["p99_latency_ms"].as_f64().unwrap();
        assert!(p50 < slow && p99 >= slow && p99 < 5000.0, "{m}");
        assert!(metrics["p99_ttfb_ms"].as_f64().unwrap() <= p99 * 1.05, "{m}");
        // Nothing was streamed yet: no streaming times.
        for k in STREAM_TIMES {
            assert!(metrics[k].is_null(), "{k} without streams: {m}");
        }

        // Per provider and model.
        let rows: BTreeMap<(String, String), &Value> = m["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| ((r["provider"].as_str().unwrap().into(), r["model"].as_str().unwrap().into()), r))
            .collect();
        let gpt = rows[&("openai".to_string(), "gpt-4o-mini".to_string())];
        assert_eq!(
            (gpt["totals"]["requests"].clone(), gpt["totals"]["errors"].clone()),
            (expected.openai.into(), expected.openai_errors.into())
        );
        assert_eq!(decimal(&gpt["totals"]["cost_usd"]), expected.openai_cost, "{gpt}");
        // Of its 26 requests, 15 were slow: its median is slow.
        assert!(gpt["p50_latency_ms"].as_f64().unwrap() >= slow, "{gpt}");
        let claude = rows[&("anthropic".to_string(), "claude-sonnet-4".to_string())];
        assert_eq!(claude["totals"]["requests"], expected.anthropic - expected.anthropic_errors, "{m}");
        let anthropic_rows: u64 = rows
            .iter()
            .filter(|((p, _), _)| p == "anthropic")
            .map(|(_, r)| r["totals"]["requests"].as_u64().unwrap())
            .sum();
        assert_eq!(anthropic_rows, expected.anthropic);
        // The cost equals the sum of the agent's own per-request records.
        let records = setup.client_records();
        assert_eq!(records.len() as u64, expected.requests);
        let record_cost: f64 =
            records.iter().filter_map(|r| r["cost_usd"].as_str()).map(|c| c.parse::<f64>().unwrap()).sum();
        let stream_cost: f64 = m["totals"]["cost_usd"].as_str().unwrap().parse().unwrap();
        assert!((record_cost - stream_cost).abs() < 1e-12, "{record_cost} vs {stream_cost}");
        // Upstream calls, apart from what clients were served.
        let upstream: BTreeMap<&str, &Value> =
            m["upstream"].as_array().unwrap().iter().map(|u| (u["provider"].as_str().unwrap(), u)).collect();
        assert_eq!(upstream["openai"]["totals"]["requests"], expected.openai, "{m}");
        assert_eq!(upstream["openai"]["totals"]["errors"], expected.openai_errors);
        assert_eq!(upstream["anthropic"]["totals"]["requests"], expected.anthropic);
        assert_eq!(upstream["anthropic"]["totals"]["errors"], expected.anthropic_errors);
        let errors: BTreeMap<&str, u64> = m["top_errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["type"].as_str().unwrap(), e["count"].as_u64().unwrap()))
            .collect();
        assert_eq!(
            errors,
            BTreeMap::from([
                ("rate_limit_exceeded", expected.openai_errors),
                ("overloaded_error", expected.anthropic_errors)
            ])
        );

        // Subscriptions.
        let a = wait_message(&mut by_message, Duration::from_secs(10), "the anthropic total", |m| {
            updates(m) && m["totals"]["requests"] == expected.anthropic
        })
        .await;
        assert_eq!(a["provider"], "anthropic");
        assert_eq!(a["totals"]["errors"], expected.anthropic_errors);
        assert!(a["models"].as_array().unwrap().iter().all(|r| r["provider"] == "anthropic"), "{a}");
        let o = wait_message(&mut by_query, Duration::from_secs(10), "the openai total", |m| {
            updates(m) && m["totals"]["requests"] == expected.openai
        })
        .await;
        assert_eq!(o["provider"], "openai");
        assert_eq!(o["metrics"]["active_sessions"], expected.sessions);
        // A subscription to another application gets health only, never this one's updates.
        for _ in 0..5 {
            let m = next_json(&mut other_app, Duration::from_secs(5)).await.expect("health keeps coming");
            assert_eq!(m["type"], "agent.health", "{m}");
        }

        let health = wait_message(&mut all, Duration::from_secs(5), "health", |m| m["type"] == "agent.health").await;
        let h = &health["agent"];
        assert_eq!(h["audit"], true);
        assert_eq!(h["capture_enabled"], true);
        assert_eq!(h["sample_every"], 1);
        assert_eq!(h["records_dropped"], 0);
        assert_eq!(h["capture_dropped_events"], 0);
        assert_eq!(h["stream_clients"], 5, "{health}");
        assert!(h["audit_records"].as_u64().unwrap() >= 2 * expected.requests, "{health}");

        // System metrics ride along: an array of {name, labels, value}, with the
        // host's memory and the traced proxy's processes (collected every second).
        let series = |m: &Value, name: &str, labels: &[(&str, &str)]| -> Option<f64> {
            let found = m["system"]
                .as_array()?
                .iter()
                .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))?;
            found["value"].as_f64()
        };
        let proxy_memory = |m: &Value| series(m, "process.memory.usage", &[("process", "proxy")]);
        let health = wait_message(&mut all, Duration::from_secs(15), "system metrics of the proxy", |m| {
            m["type"] == "agent.health" && proxy_memory(m).is_some_and(|v| v > 1e5)
        })
        .await;
        let system = health["system"].as_array().unwrap();
        for s in system {
            assert!(s["name"].is_string() && s["labels"].is_object() && s["value"].is_number(), "{s}");
        }
        let total = series(&health, "system.memory.limit", &[]).unwrap();
        let used = series(&health, "system.memory.usage", &[("system.memory.state", "used")]).unwrap();
        assert!(used > 0.0 && used < total, "{health}");
        // CPU time has 10 ms ticks: the little traffic above may not show, the series must.
        for mode in ["user", "system"] {
            let cpu = series(&health, "process.cpu.time", &[("process", "proxy"), ("cpu.mode", mode)]);
            assert!(cpu.is_some_and(|v| v >= 0.0), "{health}");
        }

        // One stream on a known schedule: the window's streaming times are
        // its own, for what clients were served and what the provider sent.
        let paced_path = format!("/openai/v1/chat/completions?{}", paced::QUERY);
        let status =
            tokio::task::spawn_blocking(move || Client::connect(port).unwrap().request(&paced_path, 200, false))
                .await
                .unwrap();
        assert_eq!(status.unwrap(), 200);
        let upstream_openai =
            |m: &Value| m["upstream"].as_array().and_then(|u| u.iter().find(|u| u["provider"] == "openai")).cloned();
        let m = wait_message(&mut all, Duration::from_secs(20), "the paced stream on both sides", |m| {
            updates(m)
                && m["totals"]["requests"] == expected.requests + 1
                && STREAM_TIMES.iter().all(|k| !m["metrics"][k].is_null())
                && upstream_openai(m).is_some_and(|u| STREAM_TIMES.iter().all(|k| !u[k].is_null()))
        })
        .await;
        for (side, metrics) in [("client", m["metrics"].clone()), ("upstream", upstream_openai(&m).unwrap())] {
            let ms = |k: &str| metrics[k].as_f64().unwrap_or_else(|| panic!("{side} {k}: {m}"));
            // One stream in the window: p50 and p99 are its time, reported
            // as the middle of its log bucket.
            assert_eq!(ms("p50_ttft_ms"), ms("p99_ttft_ms"), "{m}");
            paced::check_times(
                &format!("live stream, {side}"),
                ms("p50_ttft_ms"),
                None,
                Some(ms("p50_tpot_ms")),
                LIVE_HISTOGRAM_RESOLUTION,
            );
        }
    });
}

/// The streaming times of an update's window metrics.
const STREAM_TIMES: [&str; 3] = ["p50_ttft_ms", "p99_ttft_ms", "p50_tpot_ms"];
/// The live window's percentiles are known within a factor of 2^(1/16)
/// (the middle of a log bucket, 8 buckets per doubling).
const LIVE_HISTOGRAM_RESOLUTION: f64 = 1.044_273_782_427_413_8;

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A WebSocket client that completes the handshake and then never reads,
/// with a 4 KiB receive buffer so the agent's writes soon block.
async fn stalled_client(port: u16, query: &str) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
    let url = format!("ws://127.0.0.1:{port}{STREAM}{query}");
    client_async(url, MaybeTlsStream::Plain(stream)).await.expect("handshake").0
}

#[derive(Default)]
struct ReaderStats {
    updates: u64,
    last_seq: u64,
}

/// The `seq` of a message without parsing all of it (500 readers share two test threads).
fn seq_of(text: &str) -> u64 {
    let rest = &text[text.find("\"seq\":").map_or(text.len(), |i| i + 6)..];
    rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap_or(0)
}

#[test]
fn five_hundred_clients_get_updates_and_stalled_clients_skip_instead_of_queueing() {
    const READERS: usize = 500;
    const STALLED: usize = 50;
    const INTERVAL_MS: u64 = 200;
    const STALL: Duration = Duration::from_secs(12);
    let _serial = serial();
    let setup = Setup::start(&format!("[stream]\ninterval_ms = {INTERVAL_MS}\nslow_client_timeout_ms = 600000\n"), &[]);
    let mut c = Client::connect(setup.nginx.port).unwrap();
    for _ in 0..5 {
        assert_eq!(c.request("/openai/v1/chat/completions", 200, false).unwrap(), 200);
    }
    let pid = setup.agent.guard.pid();
    let rt = runtime();
    rt.block_on(async {
        // One monitor parses health; the readers only count updates.
        let mut monitor = connect_async(setup.url("?application=none")).await.expect("monitor").0;
        let stats: Arc<Vec<Mutex<ReaderStats>>> = Arc::new((0..READERS).map(|_| Mutex::default()).collect());
        for i in 0..READERS {
            let mut ws = connect_async(setup.url("")).await.expect("reader connects").0;
            let stats = stats.clone();
            tokio::spawn(async move {
                while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
                    if let Message::Text(t) = m
                        && t.starts_with("{\"type\":\"metrics.update\"")
                    {
                        let mut s = stats[i].lock().unwrap();
                        s.updates += 1;
                        s.last_seq = seq_of(t.as_str());
                    }
                }
            });
        }
        let health = async |ws: &mut Ws| wait_message(ws, Duration::from_secs(10), "health", |m| m["type"] == "agent.health").await;
        let all_updated = |min: u64| stats.iter().all(|s| s.lock().unwrap().updates >= min);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !all_updated(3) {
            assert!(Instant::now() < deadline, "not every reader got updates");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Skip what the monitor buffered meanwhile.
        while next_json(&mut monitor, Duration::from_millis(50)).await.is_some() {}
        let before: Vec<u64> = stats.iter().map(|s| s.lock().unwrap().updates).collect();
        let seq_before = health(&mut monitor).await["seq"].as_u64().unwrap();
        let rss_before = rss_kib(pid);

        let mut stalled = Vec::new();
        for _ in 0..STALLED {
            stalled.push(stalled_client(setup.agent.port, "").await);
        }
        // What a connection costs, measured once they are all stuck.
        let settle = Instant::now();
        while settle.elapsed() < Duration::from_secs(5) {
            next_json(&mut monitor, Duration::from_secs(5)).await.expect("health");
        }
        let rss_stuck = rss_kib(pid);
        let started = Instant::now();
        while started.elapsed() < STALL {
            next_json(&mut monitor, Duration::from_secs(5)).await.expect("the monitor keeps getting health");
        }
        let rss_after = rss_kib(pid);
        let h = health(&mut monitor).await;
        let seq_after = h["seq"].as_u64().unwrap();
        let ticks = seq_after - seq_before;
        let expected_ticks = STALL.as_millis() as u64 / INTERVAL_MS;
        assert!(ticks >= expected_ticks * 8 / 10, "the agent kept ticking: {ticks} of {expected_ticks}");
        for (i, s) in stats.iter().enumerate() {
            let got = s.lock().unwrap().updates - before[i];
            assert!(got >= ticks * 7 / 10, "reader {i} got {got} of {ticks} updates while others stalled");
        }
        assert_eq!(h["agent"]["stream_clients"], (READERS + STALLED + 1) as u64, "{h}");
        assert_eq!(h["agent"]["records_dropped"], 0);
        // Queued updates would grow by STALLED x ticks x ~3 KiB (> 8 MiB) while
        // they stay stuck; skipped ones cost nothing more.
        let grown = rss_after.saturating_sub(rss_stuck);
        assert!(grown < 2 * 1024, "agent RSS grew by {grown} KiB while {STALLED} clients stayed stalled");
        let per_client = rss_stuck.saturating_sub(rss_before) / STALLED as u64;
        assert!(per_client < 128, "a stalled client costs {per_client} KiB");

        // The stalled clients now read: they get what the sockets held and
        // then the newest update, not every update they missed.
        let mut received = Vec::new();
        for ws in &mut stalled {
            let mut n = 0u64;
            let mut last = 0u64;
            while let Some(m) = next_json(ws, Duration::from_millis(500)).await {
                if updates(&m) {
                    n += 1;
                    last = m["seq"].as_u64().unwrap();
                }
                if last >= seq_after + 2 {
                    break;
                }
            }
            assert!(last >= seq_after, "a stalled client resumes with current updates (last seq {last})");
            received.push(n);
        }
        let most = *received.iter().max().unwrap();
        assert!(most < ticks / 2, "stalled clients got {received:?} of {ticks} updates: queued, not skipped");
        tokio::time::sleep(Duration::from_millis(2 * INTERVAL_MS)).await;
        while next_json(&mut monitor, Duration::from_millis(50)).await.is_some() {}
        let skipped = health(&mut monitor).await["agent"]["stream_updates_skipped"].as_u64().unwrap();
        assert!(skipped >= STALLED as u64 * ticks / 4, "skipped updates are counted: {skipped}");
        eprintln!(
            "RSS {rss_before} -> {rss_stuck} -> {rss_after} KiB; {ticks} ticks; stalled clients received {received:?}; {skipped} skipped"
        );
    });
}

/// The status line of a raw request with optional extra headers.
fn status_of(port: u16, path: &str, headers: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nhost: 127.0.0.1:{port}\r\n{headers}\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[test]
fn a_token_guards_every_route_and_slow_clients_are_dropped() {
    const TOKEN: &str = "live-test-token-4f1e";
    let _serial = serial();
    let setup = Setup::start(
        "[stream]\ninterval_ms = 100\nslow_client_timeout_ms = 1000\n",
        &[("METRICS_AGENT_API_TOKEN", TOKEN)],
    );
    let mut c = Client::connect(setup.nginx.port).unwrap();
    for _ in 0..5 {
        assert_eq!(c.request("/openai/v1/chat/completions", 200, false).unwrap(), 200);
    }
    let port = setup.agent.port;
    let bearer = format!("authorization: Bearer {TOKEN}\r\n");
    assert_eq!(status_of(port, "/metrics", ""), 401);
    assert_eq!(status_of(port, "/metrics", "authorization: Bearer wrong-token\r\n"), 401);
    assert_eq!(status_of(port, "/metrics", &bearer), 200);
    assert_eq!(status_of(port, "/", ""), 401);
    assert_eq!(status_of(port, &format!("/?token={TOKEN}"), ""), 200);
    assert_eq!(status_of(port, STREAM, ""), 401);
    let rt = runtime();
    rt.block_on(async {
        let refused = connect_async(setup.url("")).await.expect_err("no token, no stream");
        assert!(refused.to_string().contains("401"), "{refused}");
        let mut ws = connect_async(setup.url(&format!("?token={TOKEN}"))).await.expect("token in the query").0;
        let m = next_json(&mut ws, Duration::from_secs(5)).await.expect("a message");
        assert_eq!(m["type"], "agent.health");
        let mut request = setup.url("").into_client_request().unwrap();
        request.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {TOKEN}")).unwrap());
        let mut ws2 = connect_async(request).await.expect("token in the header").0;
        assert!(next_json(&mut ws2, Duration::from_secs(5)).await.is_some());
        let mut foreign = setup.url(&format!("?token={TOKEN}")).into_client_request().unwrap();
        foreign.headers_mut().insert("origin", HeaderValue::from_static("http://evil.example"));
        let refused = connect_async(foreign).await.expect_err("another origin");
        assert!(refused.to_string().contains("403"), "{refused}");

        // A client that stops reading is disconnected after the timeout.
        let _stalled = stalled_client(port, &format!("?token={TOKEN}")).await;
        wait_message(&mut ws, Duration::from_secs(30), "a dropped slow client", |m| {
            m["type"] == "agent.health" && m["agent"]["stream_clients_dropped_slow"] == 1
        })
        .await;
        let m = wait_message(&mut ws, Duration::from_secs(5), "health", |m| m["type"] == "agent.health").await;
        assert_eq!(m["agent"]["stream_clients"], 2, "the slow client's slot is free again: {m}");
    });

    // Beyond loopback without a token the agent refuses to start, in one line.
    let out = std::process::Command::new(harness::agent_binary())
        .args(["run", "--exe", harness::NGINX, "--listen", "0.0.0.0:9"])
        .env_remove("METRICS_AGENT_API_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("set an API token"), "{stderr}");
}

/// A script expression: the pixels of the `chart-ttft` plot area (below
/// the legend, right of the y labels) in the colours of its lines (TTFT
/// p50, p99, per token p50: `COLORS[2..=4]` of the dashboard), antialiased
/// edges included.
const TTFT_LINE_PIXELS: &str = "(() => { const c = document.getElementById('chart-ttft'); \
    const dpr = window.devicePixelRatio || 1; const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; \
    const colors = [[0x3d, 0xdc, 0x97], [0xb1, 0x8c, 0xff], [0xff, 0xd1, 0x66]]; let n = 0; \
    for (let y = Math.ceil(18 * dpr); y < c.height - Math.ceil(20 * dpr); y++) \
      for (let x = Math.ceil(52 * dpr); x < c.width; x++) { const i = (y * c.width + x) * 4; \
        if (d[i + 3] > 64 && colors.some(([r, g, b]) => Math.abs(d[i] - r) + Math.abs(d[i + 1] - g) + Math.abs(d[i + 2] - b) < 60)) n++; } \
    return n; })()";

#[test]
fn the_dashboard_shows_what_the_stream_says_in_headless_chromium() {
    const TOKEN: &str = "dashboard-token-9c2a";
    let _serial = serial();
    let setup =
        Setup::start("[stream]\ninterval_ms = 250\nwindow_seconds = 60\n", &[("METRICS_AGENT_API_TOKEN", TOKEN)]);
    let browser = Browser::start();
    browser.goto(&format!("http://127.0.0.1:{}/?token={TOKEN}", setup.agent.port));
    browser.wait_for(
        Duration::from_secs(20),
        "a connected stream",
        "return document.getElementById('status').dataset.state === 'connected' && document.body.dataset.updates;",
    );
    assert_eq!(browser.eval("return location.search;"), "", "the token is taken out of the address bar");

    let (truth, sessions) = known_traffic(setup.nginx.port);
    let expected = Expected::count(&setup, truth, sessions);
    let shown = browser.wait_for(
        Duration::from_secs(30),
        "every request on the page",
        &format!(
            "const t = document.getElementById('total-requests').dataset.value; return t === '{}' ? t : null;",
            expected.requests
        ),
    );
    assert_eq!(shown, expected.requests.to_string());
    let page = browser.eval(
        "const d = (id) => document.getElementById(id).dataset; \
         return { errors: d('total-errors').value, input: d('total-tokens').input, output: d('total-tokens').output, \
                  cost: d('total-cost').value, sessions: d('active-sessions').value, app: document.getElementById('app').value, \
                  capture: d('capture').enabled, sampling: d('sampling').sampleEvery, \
                  models: [...document.querySelectorAll('#model-data span')].map((s) => ({...s.dataset})) };",
    );
    assert_eq!(page["errors"], expected.errors.to_string(), "{page}");
    assert_eq!(page["input"], expected.input_tokens.to_string(), "{page}");
    assert_eq!(page["output"], expected.output_tokens.to_string(), "{page}");
    assert_eq!(page["sessions"], expected.sessions.to_string(), "{page}");
    assert_eq!(page["app"], "chat-app");
    assert_eq!(page["capture"], "true");
    assert_eq!(page["sampling"], "1");
    let gpt =
        page["models"].as_array().unwrap().iter().find(|m| m["model"] == "gpt-4o-mini" && m["provider"] == "openai");
    assert_eq!(gpt.expect("openai row")["requests"], expected.openai.to_string(), "{page}");
    assert_eq!(decimal(&gpt.unwrap()["cost"]), expected.openai_cost, "{page}");

    // The page's totals are the API's: read the stream directly.
    let rt = runtime();
    let api = rt.block_on(async {
        let mut ws = connect_async(setup.url(&format!("?token={TOKEN}"))).await.expect("connect").0;
        wait_message(&mut ws, Duration::from_secs(10), "an update", updates).await
    });
    assert_eq!(api["totals"]["requests"].to_string(), shown.as_str().unwrap());
    assert_eq!(api["totals"]["cost_usd"], page["cost"], "{api}");

    // Plots were drawn: the latency chart has painted pixels.
    let painted = browser.eval(
        "const c = document.getElementById('chart-latency'); const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; \
         let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n;",
    );
    assert!(painted.as_u64().unwrap() > 1000, "{painted}");
    // The time-to-first-token chart draws no line before a streamed
    // exchange (its axes, grid and legend are drawn regardless), then its
    // lines once streams were timed.
    assert_eq!(browser.eval(&format!("return {TTFT_LINE_PIXELS};")), 0, "no stream yet, no TTFT line");
    let mut c = Client::connect(setup.nginx.port).unwrap();
    for _ in 0..3 {
        // message_start, then content deltas at 30 ms steps, then the usage.
        assert_eq!(c.request("/anthropic/v1/messages?events=4&interval_ms=30", 200, false).unwrap(), 200);
    }
    drop(c);
    let line = browser.wait_for(
        Duration::from_secs(30),
        "the time-to-first-token lines",
        &format!("const n = {TTFT_LINE_PIXELS}; return n > 100 ? n : null;"),
    );
    let api = rt.block_on(async {
        let mut ws = connect_async(setup.url(&format!("?token={TOKEN}"))).await.expect("connect").0;
        wait_message(&mut ws, Duration::from_secs(10), "an update with streaming time", |m| {
            updates(m) && m["metrics"]["p50_ttft_ms"].as_f64().is_some()
        })
        .await
    });
    let ttft = api["metrics"]["p50_ttft_ms"].as_f64().unwrap();
    // The window's quantiles are within 4.5% (`live::histogram`).
    assert!(ttft >= 30.0 * 0.955, "the first content delta is sent 30 ms after message_start: {api} ({line} pixels)");
    // Neither the page as served nor as rendered holds the client's API key.
    let served = harness::http_get_with(setup.agent.port, "/", "text/html", Some(TOKEN)).expect("the dashboard");
    assert!(served.contains("<html") || served.contains("<!doctype"), "{served}");
    assert!(!served.contains(CANARY));
    let rendered = browser.eval("return document.documentElement.outerHTML;");
    assert!(rendered.as_str().unwrap().len() > 1000 && !rendered.as_str().unwrap().contains(CANARY));
    std::thread::sleep(Duration::from_millis(1200));
    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let dir = harness::bin_dir().parent().expect("target dir").join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("dashboard.png"), png).unwrap();
}
