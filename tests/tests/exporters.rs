//! End-to-end tests of the exporters (root): the agent traces nginx proxying
//! to a mock provider, and its metrics are received by a real Prometheus
//! server (and linted by promtool), by an OTLP/HTTP receiver that decodes the
//! official OpenTelemetry protobuf types, and by DogStatsD (UDP and Unix
//! datagram) and Datadog series API receivers that parse the exact wire
//! format. Totals must equal the usage the mock provider counted in the
//! responses it sent. A request with a model name crafted to inject series
//! must not break the exposition, and no exporter may carry a client's API
//! key (the client's canary) or the exporters' own credentials in a body.
//! GenAI spans (OTLP/HTTP and gRPC collectors) match the mock providers'
//! exchanges and carry no prompt, completion, API key or header value.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    net::{TcpListener, UdpSocket},
    os::unix::net::UnixDatagram,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use llm_proxy_e2e::{
    certificates,
    client::Client,
    harness::{self, Agent, Guard, Nginx, TempDir, serial},
    http1::Reader,
    mock,
    mock::MockProvider,
    paced,
};
use opentelemetry_proto::tonic::{
    collector::{metrics::v1::ExportMetricsServiceRequest, trace::v1::ExportTraceServiceRequest},
    common::v1::{KeyValue, any_value},
    metrics::v1::{Gauge, Metric, Sum, metric::Data, number_data_point},
    trace::v1::{Span, span::SpanKind},
};
use prost::Message;

/// Plain 200 answers in `traffic`.
const PLAIN_OK: u64 = 3;
/// The API key every test client sends: it must never reach an exporter.
const CANARY: &str = "sk-test-canary";
/// A model name that closes its label value and adds a series and a comment
/// if written into the exposition unescaped (JSON text: `\"` and `\n` are escapes).
const HOSTILE_MODEL_JSON: &str = r#"evil\"} 1\nllm_cost_usd_total{fake=\"x\"} 1e9\n# x"#;
/// The same as the Prometheus exposition must show it: the audit path drops
/// control characters (the newlines) from network text, and the exposition
/// escapes the quotes.
const HOSTILE_MODEL_ESCAPED: &str = r#"gen_ai_request_model="evil\"} 1llm_cost_usd_total{fake=\"x\"} 1e9# x""#;
/// The model of the stream paced by `paced::QUERY`: its streaming times are
/// told apart from the other stream's by this model label.
const PACED_MODEL: &str = "paced-model";
/// The streaming-time histograms: time to first token, time per output
/// chunk (observed once per gap between content events), time per output token.
const STREAM_TIMES: [&str; 3] = [
    "gen_ai.client.inference.time_to_first_chunk",
    "gen_ai.client.inference.time_per_output_chunk",
    "llm.time_per_output_token",
];

/// Sends the traffic through nginx (the client checks each status); returns
/// the requests sent.
fn traffic(nginx: &Nginx) -> u64 {
    let mut c = Client::connect(nginx.port).unwrap();
    for _ in 0..PLAIN_OK {
        assert_eq!(c.request("/openai/v1/chat/completions", 200, false).unwrap(), 200);
    }
    assert_eq!(c.request("/openai/v1/chat/completions?events=4&interval_ms=20&usage=1", 200, false).unwrap(), 200);
    assert_eq!(c.request("/openai/v1/chat/completions?status=429", 200, false).unwrap(), 429);
    c.truth.requests
}

/// One chat request with `HOSTILE_MODEL_JSON` as its model; the status.
fn hostile_request(port: u16) -> u16 {
    chat_request(port, "/openai/v1/chat/completions", HOSTILE_MODEL_JSON)
}

/// One chat request for `model` (JSON string content) on a connection of
/// its own, read to the end; the status.
fn chat_request(port: u16, path: &str, model: &str) -> u16 {
    let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nhost: proxy.test\r\ncontent-type: application/json\r\nauthorization: Bearer {CANARY}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// True when `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// One HTTP request a receiver got.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body, gunzipped when it says it is gzip.
    fn plain_body(&self) -> Vec<u8> {
        if self.header("content-encoding") == Some("gzip") {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(self.body.as_slice()).read_to_end(&mut out).expect("valid gzip");
            out
        } else {
            self.body.clone()
        }
    }
}

/// An HTTP/1.1 server that records every request and answers 200 with an
/// empty body (an empty protobuf message is zero bytes).
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let g = got.clone();
        thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let g = g.clone();
                thread::spawn(move || {
                    let mut w = conn.try_clone().unwrap();
                    let mut r = Reader::new(conn);
                    while let Ok(Some(head)) = r.read_head() {
                        let len = head.content_length().unwrap_or(0) as usize;
                        let Ok(body) = r.read_exact_vec(len) else { return };
                        let path = head.first_line.split_whitespace().nth(1).unwrap_or("").to_string();
                        g.lock().unwrap().push(Received { path, headers: head.headers.clone(), body });
                        let answer =
                            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                        if w.write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { port, got }
    }

    fn all(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

/// Datagrams received on a UDP or Unix socket, split into lines.
fn collect_datagrams(recv: impl Fn(&mut [u8]) -> std::io::Result<usize> + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let l = lines.clone();
    thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while let Ok(n) = recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            l.lock().unwrap().extend(text.lines().map(String::from));
        }
    });
    lines
}

/// A DogStatsD line: name, value, type, tags.
fn parse_line(line: &str) -> (String, f64, String, Vec<String>) {
    let (name, rest) = line.split_once(':').unwrap_or_else(|| panic!("no ':' in {line:?}"));
    let mut parts = rest.split('|');
    let value: f64 = parts.next().unwrap().parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
    let kind = parts.next().unwrap_or_else(|| panic!("no type in {line:?}")).to_string();
    assert!(["c", "g", "d"].contains(&kind.as_str()), "{line:?}");
    let tags = match parts.next() {
        Some(t) => t
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("tags start with # in {line:?}"))
            .split(',')
            .map(String::from)
            .collect(),
        None => Vec::new(),
    };
    assert!(parts.next().is_none(), "{line:?}");
    (name.to_string(), value, kind, tags)
}

/// Sum of the points of every `metric` series, carrying every tag in `tags`,
/// that a Datadog series API receiver got.
fn dd_api_total(rx: &Receiver, metric: &str, tags: &[&str]) -> f64 {
    let mut total = 0.0;
    for r in rx.all() {
        let v: serde_json::Value = serde_json::from_slice(&r.plain_body()).unwrap();
        for s in v["series"].as_array().unwrap() {
            let got: Vec<&str> = s["tags"].as_array().unwrap().iter().filter_map(|t| t.as_str()).collect();
            if s["metric"] == metric && tags.iter().all(|t| got.contains(t)) {
                total += s["points"].as_array().unwrap().iter().filter_map(|p| p["value"].as_f64()).sum::<f64>();
            }
        }
    }
    total
}

/// Sum of the values of `name` lines of `kind` carrying every tag in `tags`.
fn statsd_sum(lines: &[String], name: &str, kind: &str, tags: &[&str]) -> (f64, usize) {
    let mut sum = 0.0;
    let mut n = 0;
    for l in lines {
        let (metric, value, k, t) = parse_line(l);
        if metric == name && k == kind && tags.iter().all(|x| t.iter().any(|y| y == x)) {
            sum += value;
            n += 1;
        }
    }
    (sum, n)
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs.iter().find(|a| a.key == key).and_then(|a| match a.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.as_str()),
        _ => None,
    })
}

fn has(attrs: &[KeyValue], want: &[(&str, &str)]) -> bool {
    want.iter().all(|(k, v)| attr(attrs, k) == Some(v))
}

/// Sum over a metric's points matching `want`: counters' values, or
/// histograms' `sum` (and the total count).
fn otlp_sum(metrics: &[Metric], name: &str, want: &[(&str, &str)]) -> (f64, u64) {
    let mut total = (0.0, 0);
    for m in metrics.iter().filter(|m| m.name == name) {
        match &m.data {
            Some(Data::Sum(Sum { data_points, .. }) | Data::Gauge(Gauge { data_points, .. })) => {
                for p in data_points.iter().filter(|p| has(&p.attributes, want)) {
                    total.0 += match p.value {
                        Some(number_data_point::Value::AsInt(v)) => v as f64,
                        Some(number_data_point::Value::AsDouble(v)) => v,
                        None => 0.0,
                    };
                    total.1 += 1;
                }
            }
            Some(Data::Histogram(h)) => {
                for p in h.data_points.iter().filter(|p| has(&p.attributes, want)) {
                    total.0 += p.sum.unwrap_or(0.0);
                    total.1 += p.count;
                    assert_eq!(p.bucket_counts.iter().sum::<u64>(), p.count, "{name}: buckets add up to count");
                    assert_eq!(p.bucket_counts.len(), p.explicit_bounds.len() + 1);
                }
            }
            _ => {}
        }
    }
    total
}

/// The unit of an OTLP metric.
fn otlp_metric_unit<'a>(metrics: &'a [Metric], name: &str) -> Option<&'a str> {
    metrics.iter().find(|m| m.name == name).map(|m| m.unit.as_str())
}

/// The metrics of the most recent OTLP request.
fn latest_otlp(rx: &Receiver) -> Vec<Metric> {
    let Some(last) = rx.all().into_iter().rev().find(|r| r.path == "/v1/metrics") else { return Vec::new() };
    let req = ExportMetricsServiceRequest::decode(last.plain_body().as_slice()).expect("a valid OTLP protobuf");
    req.resource_metrics.into_iter().flat_map(|r| r.scope_metrics).flat_map(|s| s.metrics).collect()
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool, log: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}\nagent log:\n{}", log());
        thread::sleep(Duration::from_millis(200));
    }
}

/// Sum of `name{...}` samples of a Prometheus exposition having every label.
fn prom_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// `# HELP` text -> (family, type) of a Prometheus exposition.
fn prom_families(text: &str) -> BTreeMap<String, (String, String)> {
    let mut types = BTreeMap::new();
    for l in text.lines() {
        if let Some((name, kind)) = l.strip_prefix("# TYPE ").and_then(|l| l.split_once(' ')) {
            types.insert(name.to_string(), kind.to_string());
        }
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("# HELP ")?.split_once(' '))
        .map(|(name, help)| (help.to_string(), (name.to_string(), types.get(name).cloned().unwrap_or_default())))
        .collect()
}

/// Description -> (name, type) of the metrics of an OTLP request, with the
/// names whose points are not all zero.
fn otlp_families(metrics: &[Metric]) -> (BTreeMap<String, (String, String)>, BTreeSet<String>) {
    let mut nonzero = BTreeSet::new();
    let families = metrics
        .iter()
        .map(|m| {
            let number = |v: &Option<number_data_point::Value>| match v {
                Some(number_data_point::Value::AsInt(v)) => *v != 0,
                Some(number_data_point::Value::AsDouble(v)) => *v != 0.0,
                None => false,
            };
            let (kind, live) = match &m.data {
                Some(Data::Sum(s)) => ("counter", s.data_points.iter().any(|p| number(&p.value))),
                Some(Data::Gauge(_)) => ("gauge", true),
                Some(Data::Histogram(h)) => ("histogram", h.data_points.iter().any(|p| p.count > 0)),
                other => panic!("{}: unexpected data {other:?}", m.name),
            };
            if live {
                nonzero.insert(m.name.clone());
            }
            (m.description.clone(), (m.name.clone(), kind.to_string()))
        })
        .collect();
    (families, nonzero)
}

/// The OTLP names DogStatsD lines stand for: histograms' `.count` and
/// `.sum` lines are their histogram.
fn statsd_metric_names(lines: &[String], histograms: &BTreeSet<String>) -> BTreeSet<String> {
    lines
        .iter()
        .map(|l| {
            let name = parse_line(l).0;
            match name.strip_suffix(".count").or_else(|| name.strip_suffix(".sum")) {
                Some(h) if histograms.contains(h) => h.to_string(),
                _ => name,
            }
        })
        .collect()
}

/// Debian's Prometheus server scraping the agent every second.
struct PrometheusServer {
    port: u16,
    _guard: Guard,
    _dir: TempDir,
}

impl PrometheusServer {
    fn start(agent_port: u16) -> Self {
        let dir = TempDir::new("prometheus");
        let port = harness::free_port();
        let config = dir.0.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: agent\n    static_configs:\n      - targets: ['127.0.0.1:{agent_port}']\n"
            ),
        )
        .unwrap();
        let guard = Guard::spawn(
            "prometheus",
            Command::new("/usr/bin/prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", dir.0.join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        harness::wait_for_port(port, Duration::from_secs(30));
        Self { port, _guard: guard, _dir: dir }
    }

    /// The value of an instant query returning one sample (None when empty).
    fn query(&self, promql: &str) -> Option<f64> {
        let encoded: String = promql
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"_.-".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let body = harness::http_get(self.port, &format!("/api/v1/query?query={encoded}"), "application/json")?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        assert_eq!(v["status"], "success", "{body}");
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

#[test]
fn every_exporter_reports_what_the_mock_provider_sent() {
    let _serial = serial();
    let openai = MockProvider::start(0).unwrap();
    let nginx = Nginx::start_private(&[("openai", openai.port)]);
    let exe = nginx.exe.display().to_string();
    let otlp = Receiver::start();
    let dd_api = Receiver::start();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    let statsd = collect_datagrams(move |buf| udp.recv(buf));
    let dir = TempDir::new("exporters");
    let config = dir.0.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            r#"[exporters.otlp]
endpoint = "http://127.0.0.1:1"
interval_seconds = 1
[exporters.datadog]
statsd_address = "udp://127.0.0.1:{udp_port}"
api = true
api_url = "http://127.0.0.1:{}"
tags = ["env:e2e"]
interval_seconds = 1
[metrics.system]
interval_seconds = 1
"#,
            dd_api.port
        ),
    )
    .unwrap();
    let provider = format!("openai=127.0.0.1:{}", openai.port);
    let otlp_endpoint = format!("http://127.0.0.1:{}", otlp.port);
    let agent = Agent::start_with_env(
        &["--exe", &exe, "--provider", &provider, "--config", config.to_str().unwrap()],
        &[
            // The environment overrides the file's endpoint, as the OpenTelemetry specification says.
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp_endpoint),
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20e2e-token"),
            ("DD_API_KEY", "e2e-dd-key"),
        ],
    );
    agent.wait_for_nginx();
    let prometheus = PrometheusServer::start(agent.port);
    let sent = traffic(&nginx);
    assert_eq!(hostile_request(nginx.port), 200);
    // A stream on a known schedule, for the streaming times every exporter reports.
    let paced_path = format!("/openai/v1/chat/completions?{}", paced::QUERY);
    assert_eq!(chat_request(nginx.port, &paced_path, PACED_MODEL), 200);
    openai.wait_idle(Duration::from_secs(5));
    let (mock_requests, _, _) = openai.snapshot();
    assert_eq!(mock_requests, sent + 2, "the mock counted every upstream request");
    let truth = mock_requests as f64;
    // The usage the mock put in its answers: plain ones, both streams' usage chunks and the hostile request's.
    let usage = openai.usage_sent();
    assert_eq!(usage.responses, PLAIN_OK + 3, "every 200 reported usage");
    let (input_tokens, output_tokens) = (usage.input as f64, usage.output as f64);
    let upstream_input = ["side=\"upstream\"", "gen_ai_token_type=\"input\""];

    // Pull: the agent's own endpoint, linted by promtool.
    wait_for(
        "the audit records on /metrics",
        Duration::from_secs(20),
        || {
            let text = agent.scrape().text;
            ["side=\"upstream\"", "side=\"client\""]
                .iter()
                .all(|side| prom_sum(&text, "llm_requests_total", &[side]) == truth)
        },
        || agent.log_text(),
    );
    let text = agent.scrape().text;
    llm_proxy_e2e::metrics::promtool_check(&text, "agent's /metrics");
    assert_eq!(prom_sum(&text, "llm_tokens_total", &upstream_input), input_tokens);
    assert_eq!(
        prom_sum(&text, "llm_tokens_total", &["side=\"upstream\"", "gen_ai_token_type=\"output\""]),
        output_tokens
    );
    // The hostile model is one escaped label value, not a series of its own.
    assert_eq!(prom_sum(&text, "llm_requests_total", &["side=\"upstream\"", HOSTILE_MODEL_ESCAPED]), 1.0, "{text}");
    assert!(!text.lines().any(|l| l.starts_with("llm_cost_usd_total{fake") || l.starts_with("# x")), "{text}");
    assert_eq!(
        prom_sum(
            &text,
            "llm_requests_total",
            &["side=\"upstream\"", "status_class=\"4xx\"", "error_type=\"rate_limit_exceeded\""]
        ),
        1.0
    );
    assert_eq!(prom_sum(&text, "gen_ai_client_operation_duration_seconds_count", &["side=\"upstream\""]), truth);
    assert_eq!(
        prom_sum(&text, "gen_ai_client_operation_duration_seconds_bucket", &["side=\"upstream\"", "le=\"+Inf\""]),
        truth
    );
    for side in ["client", "upstream"] {
        let paced = [format!("side=\"{side}\""), format!("gen_ai_request_model=\"{PACED_MODEL}\"")];
        let paced: Vec<&str> = paced.iter().map(String::as_str).collect();
        let family = |name: &str, n: u64| {
            let prom = format!("{}_seconds", name.replace('.', "_"));
            assert_eq!(prom_sum(&text, &format!("{prom}_count"), &paced), n as f64, "{prom} of the paced stream");
            prom_sum(&text, &format!("{prom}_sum"), &paced) * 1e3
        };
        let gaps = paced::CONTENT_EVENTS - 1;
        paced::check_times(
            &format!("/metrics, {side}"),
            family(STREAM_TIMES[0], 1),
            Some(family(STREAM_TIMES[1], gaps) / gaps as f64),
            Some(family(STREAM_TIMES[2], 1)),
            1.0,
        );
    }
    assert!(prom_sum(&text, "system_cpu_time_seconds_total", &["cpu_mode=\"user\""]) > 0.0, "{text}");
    assert!(prom_sum(&text, "process_memory_usage_bytes", &["process=\"proxy\""]) > 1e5, "nginx's resident memory");
    assert_eq!(prom_sum(&text, "metrics_agent_ring_buffer_size_bytes", &["ring=\"payloads\""]), 16.0 * 1024.0 * 1024.0);
    assert_eq!(prom_sum(&text, "metrics_agent_cache_capacity", &["table=\"record_bus\""]), 65536.0);

    // A real Prometheus server scrapes the same numbers.
    wait_for(
        "Prometheus to scrape the agent",
        Duration::from_secs(30),
        || {
            prometheus.query(r#"sum(llm_tokens_total{side="upstream",gen_ai_token_type="input"})"#)
                == Some(input_tokens)
        },
        || agent.log_text(),
    );
    assert_eq!(prometheus.query(r#"sum(llm_requests_total{side="upstream"})"#), Some(truth));
    assert_eq!(prometheus.query(r#"sum(llm_requests_total{side="client"})"#), Some(truth));
    assert_eq!(
        prometheus.query(r#"sum(gen_ai_client_operation_duration_seconds_count{side="upstream"})"#),
        Some(truth)
    );
    assert_eq!(prometheus.query(r#"sum(llm_proxy_provider_requests_total{provider="openai"})"#), Some(truth));
    assert_eq!(prometheus.query(r#"up{job="agent"}"#), Some(1.0), "Prometheus accepts every scrape");
    let hostile = format!("sum(llm_requests_total{{side=\"upstream\",{HOSTILE_MODEL_ESCAPED}}})");
    assert_eq!(prometheus.query(&hostile), Some(1.0), "the model name arrives intact as a label value");
    assert_eq!(prometheus.query(r#"count(llm_cost_usd_total{fake="x"})"#), None, "no injected series");

    // OTLP: decoded with the official proto definitions.
    wait_for(
        "OTLP metrics with every record",
        Duration::from_secs(20),
        || {
            let m = latest_otlp(&otlp);
            ["upstream", "client"].iter().all(|side| otlp_sum(&m, "llm.requests", &[("side", side)]).0 == truth)
        },
        || agent.log_text(),
    );
    let last = otlp.all().into_iter().rev().find(|r| r.path == "/v1/metrics").unwrap();
    assert_eq!(last.header("content-type"), Some("application/x-protobuf"));
    assert_eq!(last.header("content-encoding"), Some("gzip"));
    assert_eq!(last.header("authorization"), Some("Bearer e2e-token"), "OTEL_EXPORTER_OTLP_HEADERS");
    let m = latest_otlp(&otlp);
    let openai_upstream = [("side", "upstream"), ("gen_ai.provider.name", "openai")];
    let tokens = |t: &str| {
        let mut want = openai_upstream.to_vec();
        want.push(("gen_ai.token.type", t));
        otlp_sum(&m, "gen_ai.client.token.usage", &want)
    };
    assert_eq!(tokens("input"), (input_tokens, usage.responses), "token usage histogram: sum and count");
    assert_eq!(tokens("output"), (output_tokens, usage.responses));
    let duration = otlp_sum(&m, "gen_ai.client.operation.duration", &openai_upstream);
    assert_eq!(duration.1, mock_requests);
    assert!(duration.0 > 0.08, "the stream alone lasts 4 x 20 ms: {}", duration.0);
    let duration_metric = m.iter().find(|x| x.name == "gen_ai.client.operation.duration").unwrap();
    assert_eq!(duration_metric.unit, "s");
    for side in ["client", "upstream"] {
        let paced = [("side", side), ("gen_ai.request.model", PACED_MODEL)];
        let histogram = |name: &str, n: u64| {
            let (sum, count) = otlp_sum(&m, name, &paced);
            assert_eq!(count, n, "{name} of the paced stream, {side}");
            assert_eq!(otlp_metric_unit(&m, name), Some("s"));
            sum * 1e3
        };
        let gaps = paced::CONTENT_EVENTS - 1;
        paced::check_times(
            &format!("OTLP, {side}"),
            histogram(STREAM_TIMES[0], 1),
            Some(histogram(STREAM_TIMES[1], gaps) / gaps as f64),
            Some(histogram(STREAM_TIMES[2], 1)),
            1.0,
        );
    }
    assert_eq!(otlp_sum(&m, "llm_proxy.provider.requests", &[("provider", "openai")]).0, truth, "hot-path counter");
    assert_eq!(otlp_sum(&m, "llm_proxy.requests", &[]).0, truth, "every client request passed the proxy");
    assert!(otlp_sum(&m, "system.memory.usage", &[("system.memory.state", "used")]).0 > 0.0);
    assert!(otlp_sum(&m, "process.cpu.time", &[("process", "agent")]).1 == 2, "user and system");
    assert_eq!(otlp_sum(&m, "llm_proxy.connections.open", &[]).1, 3, "client, upstream, unknown");

    // One catalogue: /metrics and OTLP carry the same metrics (paired by
    // their help text), Prometheus naming its counters `_total` and its
    // seconds `_seconds`; the agent's own statistics, HTTP server and
    // storage included.
    let mut families = (BTreeMap::new(), BTreeMap::new(), BTreeSet::new());
    wait_for(
        "the same metrics on /metrics and over OTLP",
        Duration::from_secs(20),
        || {
            let (otlp_families, nonzero) = otlp_families(&latest_otlp(&otlp));
            families = (prom_families(&agent.scrape().text), otlp_families, nonzero);
            families.0.keys().eq(families.1.keys())
        },
        || format!("{:#?}\n{:#?}", prom_families(&agent.scrape().text), otlp_families(&latest_otlp(&otlp)).0),
    );
    let (prom, by_help, nonzero) = families;
    assert!(by_help.len() >= 60, "{by_help:#?}");
    for (help, (name, kind)) in &by_help {
        let (family, prom_kind) = &prom[help];
        assert_eq!(kind, prom_kind, "{name} and {family}");
        assert_eq!(kind == "counter", family.ends_with("_total"), "{family}");
        if otlp_metric_unit(&m, name) == Some("s") {
            assert!(family.contains("_seconds"), "{family}");
        }
    }
    // The agent's HTTP server and storage metrics too (storage is on by default).
    for name in [
        "metrics_agent.probe.hits",
        "metrics_agent.capture.sample_every",
        "metrics_agent.tracked_connections",
        "metrics_agent.http.connections",
        "metrics_agent.storage.records",
        "metrics_agent.storage.database_up",
    ] {
        assert!(by_help.values().any(|(n, _)| n == name), "{name} over OTLP");
    }
    // DogStatsD sends the same names, leaving out counters that never moved.
    let histograms: BTreeSet<String> =
        by_help.values().filter(|(_, k)| k == "histogram").map(|(n, _)| n.clone()).collect();
    let otlp_names: BTreeSet<String> = by_help.values().map(|(n, _)| n.clone()).collect();
    let mut statsd_names = BTreeSet::new();
    wait_for(
        "DogStatsD to send every metric that moved",
        Duration::from_secs(20),
        || {
            statsd_names = statsd_metric_names(&statsd.lock().unwrap(), &histograms);
            nonzero.is_subset(&statsd_names)
        },
        || {
            let sent = statsd_metric_names(&statsd.lock().unwrap(), &histograms);
            format!("missing {:?}", nonzero.difference(&sent).collect::<Vec<_>>())
        },
    );
    assert!(statsd_names.is_subset(&otlp_names), "{:?}", statsd_names.difference(&otlp_names).collect::<Vec<_>>());

    // DogStatsD over UDP: increments add up to the totals.
    let dd_input = ["env:e2e", "side:upstream", "gen_ai.provider.name:openai", "gen_ai.token.type:input"];
    wait_for(
        "DogStatsD increments",
        Duration::from_secs(20),
        || statsd_sum(&statsd.lock().unwrap(), "llm.tokens", "c", &dd_input).0 == input_tokens,
        || agent.log_text(),
    );
    let lines = statsd.lock().unwrap().clone();
    let exact = "llm.requests:1|c|#env:e2e,side:upstream,gen_ai.provider.name:openai,gen_ai.request.model:gpt-4o-mini,gen_ai.operation.name:chat,status_class:4xx,estimate:false,error.type:rate_limit_exceeded";
    assert!(lines.iter().any(|l| l == exact), "exact line {exact:?} in {lines:#?}");
    let (_, durations) = statsd_sum(&lines, "gen_ai.client.operation.duration", "d", &["env:e2e", "side:upstream"]);
    assert_eq!(durations as u64, mock_requests, "one distribution sample per request");
    assert_eq!(
        statsd_sum(&lines, "gen_ai.client.token.usage", "d", &["side:upstream", "gen_ai.token.type:output"]).0,
        output_tokens
    );
    // Streaming time: one raw sample of each per record (the mean gap for
    // time per output chunk), in seconds, for the paced stream on each side.
    let model_tag = format!("gen_ai.request.model:{PACED_MODEL}");
    let paced_tags = |side: &str| [format!("side:{side}"), model_tag.clone()];
    let samples = |lines: &[String], name: &str, side: &str| {
        let tags = paced_tags(side);
        statsd_sum(lines, name, "d", &[tags[0].as_str(), tags[1].as_str()])
    };
    wait_for(
        "DogStatsD distributions of the paced stream's times",
        Duration::from_secs(20),
        || {
            let lines = statsd.lock().unwrap();
            ["client", "upstream"].iter().all(|side| STREAM_TIMES.iter().all(|n| samples(&lines, n, side).1 > 0))
        },
        || agent.log_text(),
    );
    let lines = statsd.lock().unwrap().clone();
    for side in ["client", "upstream"] {
        let sample = |name: &str| {
            let (value, n) = samples(&lines, name, side);
            assert_eq!(n, 1, "one {name} sample of the paced stream, {side}: {lines:#?}");
            value * 1e3
        };
        paced::check_times(
            &format!("DogStatsD, {side}"),
            sample(STREAM_TIMES[0]),
            Some(sample(STREAM_TIMES[1])),
            Some(sample(STREAM_TIMES[2])),
            1.0,
        );
    }
    // Every line parsed above (name:value|type|#tags); the hostile model is one tag.
    let hostile_tag = r#"gen_ai.request.model:evil"} 1llm_cost_usd_total{fake="x"} 1e9_ x"#;
    assert_eq!(statsd_sum(&lines, "llm.requests", "c", &["side:upstream", hostile_tag]).0, 1.0, "{lines:#?}");
    assert!(statsd_sum(&lines, "system.cpu.time", "c", &["env:e2e", "cpu.mode:user"]).1 > 0);
    assert!(statsd_sum(&lines, "metrics_agent.ring_buffer.usage", "g", &["ring:payloads"]).1 > 0);

    // Datadog series API: key header, gzip JSON, count points that add up.
    wait_for(
        "Datadog series",
        Duration::from_secs(20),
        || {
            let mut total = 0.0;
            for r in dd_api.all() {
                let v: serde_json::Value = serde_json::from_slice(&r.plain_body()).unwrap();
                for s in v["series"].as_array().unwrap() {
                    let tags: Vec<&str> = s["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
                    if s["metric"] == "llm.tokens" && dd_input.iter().all(|t| tags.contains(t)) {
                        assert_eq!(s["type"], 1, "a count");
                        assert!(s["interval"].as_i64().unwrap() >= 1);
                        total += s["points"][0]["value"].as_f64().unwrap();
                    }
                }
            }
            total == input_tokens
        },
        || agent.log_text(),
    );
    // Its histograms are `.count` and `.sum` counts: the paced stream's times, each side.
    let api_total = |metric: &str, side: &str| {
        let tags = paced_tags(side);
        dd_api_total(&dd_api, metric, &[tags[0].as_str(), tags[1].as_str()])
    };
    let gaps = paced::CONTENT_EVENTS - 1;
    wait_for(
        "Datadog series of the paced stream's times",
        Duration::from_secs(20),
        || {
            ["client", "upstream"].iter().all(|side| {
                STREAM_TIMES
                    .iter()
                    .zip([1, gaps, 1])
                    .all(|(n, count)| api_total(&format!("{n}.count"), side) == count as f64)
            })
        },
        || agent.log_text(),
    );
    for side in ["client", "upstream"] {
        let sum = |name: &str| api_total(&format!("{name}.sum"), side) * 1e3;
        paced::check_times(
            &format!("Datadog series API, {side}"),
            sum(STREAM_TIMES[0]),
            Some(sum(STREAM_TIMES[1]) / gaps as f64),
            Some(sum(STREAM_TIMES[2])),
            1.0,
        );
    }
    for r in dd_api.all() {
        assert_eq!(r.path, "/api/v2/series");
        assert_eq!(r.header("dd-api-key"), Some("e2e-dd-key"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("content-encoding"), Some("gzip"));
    }
    let log = agent.log_text();
    assert!(!log.contains("e2e-dd-key") && !log.contains("e2e-token"), "secrets never logged:\n{log}");

    // No secret travels anywhere but in its own header: the client's API key
    // nowhere, the Datadog key only in DD-API-KEY, the OTLP token only in
    // the OTLP authorization header.
    let secrets = [CANARY, "e2e-dd-key", "e2e-token"];
    for (what, requests, allowed) in [
        ("OTLP", otlp.all(), ("authorization", "e2e-token")),
        ("Datadog API", dd_api.all(), ("dd-api-key", "e2e-dd-key")),
    ] {
        assert!(!requests.is_empty());
        for r in requests {
            let body = r.plain_body();
            for secret in secrets {
                assert!(!contains(&body, secret) && !contains(&r.body, secret), "{secret} in a {what} body");
                for (k, v) in &r.headers {
                    let expected = (k.to_ascii_lowercase().as_str(), secret) == allowed;
                    assert!(expected || !v.contains(secret), "{secret} in the {what} header {k}");
                }
            }
            assert_eq!(r.header(allowed.0), Some(if what == "OTLP" { "Bearer e2e-token" } else { "e2e-dd-key" }));
        }
    }
    let datagrams = statsd.lock().unwrap().clone();
    let exposition = agent.scrape().text;
    for secret in secrets {
        assert!(!datagrams.iter().any(|l| l.contains(secret)), "{secret} in a DogStatsD datagram");
        assert!(!exposition.contains(secret), "{secret} on /metrics");
        assert!(!log.contains(secret), "{secret} in the agent's log");
    }
}

#[test]
fn a_stuck_exporter_neither_delays_the_others_nor_grows() {
    let _serial = serial();
    let openai = MockProvider::start(0).unwrap();
    let nginx = Nginx::start_private(&[("openai", openai.port)]);
    let exe = nginx.exe.display().to_string();
    // Accepts connections and never answers.
    let blackhole = TcpListener::bind("127.0.0.1:0").unwrap();
    let blackhole_port = blackhole.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    thread::spawn(move || {
        for c in blackhole.incoming().flatten() {
            h.lock().unwrap().push(c);
        }
    });
    let dir = TempDir::new("stuck");
    let socket = dir.0.join("dsd.socket");
    let unix = UnixDatagram::bind(&socket).unwrap();
    let statsd = collect_datagrams(move |buf| unix.recv(buf));
    let config = dir.0.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[exporters.otlp]\nendpoint = \"http://127.0.0.1:{blackhole_port}\"\ninterval_seconds = 1\ntimeout_seconds = 0.5\nmax_retries = 1\nqueue_batches = 2\n[exporters.datadog]\nstatsd_address = \"unix://{}\"\ninterval_seconds = 1\n",
            socket.display()
        ),
    )
    .unwrap();
    let provider = format!("openai=127.0.0.1:{}", openai.port);
    let mut agent = Agent::start(&["--exe", &exe, "--provider", &provider, "--config", config.to_str().unwrap()]);
    agent.wait_for_nginx();
    let snapshots = |lines: &[String]| statsd_sum(lines, "metrics_agent.traced_processes", "g", &[]).1;
    let start_count = snapshots(&statsd.lock().unwrap());
    let started = Instant::now();
    traffic(&nginx);
    openai.wait_idle(Duration::from_secs(5));
    let (upstream_requests, _, _) = openai.snapshot();
    thread::sleep(Duration::from_secs(6));
    let lines = statsd.lock().unwrap().clone();
    let per_second = (snapshots(&lines) - start_count) as f64 / started.elapsed().as_secs_f64();
    assert!(per_second >= 0.75, "DogStatsD kept its 1 s pace while OTLP hung: {per_second:.2}/s");
    assert_eq!(
        statsd_sum(&lines, "llm.requests", "c", &["side:upstream"]).0,
        upstream_requests as f64,
        "records flow to the healthy exporter"
    );
    let text = agent.scrape().text;
    let dropped = prom_sum(&text, "metrics_agent_exporter_dropped_total", &["exporter=\"otlp\""]);
    assert!(dropped >= 2.0, "the stuck exporter's drops are counted:\n{text}");
    assert!(prom_sum(&text, "metrics_agent_exporter_failures_total", &["exporter=\"otlp\""]) >= 2.0);
    assert!(prom_sum(&text, "metrics_agent_exporter_queue_length", &["exporter=\"otlp\""]) <= 2.0, "bounded queue");
    assert_eq!(prom_sum(&text, "metrics_agent_exporter_dropped_total", &["exporter=\"datadog_statsd\""]), 0.0);
    assert!(
        statsd_sum(&lines, "metrics_agent.exporter.failures", "c", &["exporter:otlp"]).0 >= 1.0,
        "the drops are visible through the other exporters too"
    );
    // Stopping does not wait for the stuck exporter for long (detaching the
    // probes takes most of the time, so the log says whether we were slow).
    let status = agent.guard.signal_and_wait(libc::SIGTERM, Duration::from_secs(60));
    let log = agent.log_text();
    assert!(status.is_some_and(|s| s.success()), "the agent stopped cleanly:\n{log}");
    assert!(!log.contains("did not finish its last batch"), "{log}");
    drop(held);
}

/// A gRPC OTLP collector serving the official `MetricsService`: records each
/// request's metrics with its `authorization` and `grpc-encoding` metadata.
#[derive(Clone, Default)]
struct GrpcCollector {
    got: Arc<Mutex<Vec<GrpcReceived>>>,
}

/// A request's metrics with its `authorization` and `grpc-encoding` metadata.
type GrpcReceived = (Vec<Metric>, Option<String>, Option<String>);

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::MetricsService for GrpcCollector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<
        tonic::Response<opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse>,
        tonic::Status,
    > {
        let header = |k: &str| request.metadata().get(k).and_then(|v| v.to_str().ok()).map(String::from);
        let (auth, encoding) = (header("authorization"), header("grpc-encoding"));
        let metrics = request.into_inner().resource_metrics.into_iter().flat_map(|r| r.scope_metrics);
        let metrics = metrics.flat_map(|s| s.metrics).collect();
        self.got.lock().unwrap().push((metrics, auth, encoding));
        Ok(tonic::Response::new(Default::default()))
    }
}

impl GrpcCollector {
    /// Serves on a loopback port from a runtime of its own; returns the port.
    fn start(&self) -> u16 {
        let service =
            opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::MetricsServiceServer::new(
                self.clone(),
            )
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        serve_grpc(tonic::transport::Server::builder().add_service(service))
    }
}

/// Serves `router` (a gRPC server with its service) on a loopback port from
/// a runtime of its own; returns the port.
fn serve_grpc(router: tonic::transport::server::Router) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let incoming =
                futures_util::stream::unfold(listener, |l| async move { Some((l.accept().await.map(|(s, _)| s), l)) });
            router.serve_with_incoming(incoming).await
        })
    });
    port
}

#[test]
fn otlp_over_grpc_reaches_a_grpc_collector() {
    let _serial = serial();
    let openai = MockProvider::start(0).unwrap();
    let nginx = Nginx::start_private(&[("openai", openai.port)]);
    let exe = nginx.exe.display().to_string();
    let collector = GrpcCollector::default();
    let port = collector.start();
    let dir = TempDir::new("grpc");
    let config = dir.0.join("agent.toml");
    std::fs::write(&config, "[exporters.otlp]\ninterval_seconds = 1\n").unwrap();
    let provider = format!("openai=127.0.0.1:{}", openai.port);
    let endpoint = format!("http://127.0.0.1:{port}");
    let agent = Agent::start_with_env(
        &["--exe", &exe, "--provider", &provider, "--config", config.to_str().unwrap()],
        &[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20grpc-token"),
        ],
    );
    agent.wait_for_nginx();
    traffic(&nginx);
    openai.wait_idle(Duration::from_secs(5));
    let (upstream, _, _) = openai.snapshot();
    let usage = openai.usage_sent();
    let latest = || collector.got.lock().unwrap().last().cloned();
    wait_for(
        "the gRPC collector to receive every record",
        Duration::from_secs(20),
        || latest().is_some_and(|(m, _, _)| otlp_sum(&m, "llm.requests", &[("side", "upstream")]).0 == upstream as f64),
        || agent.log_text(),
    );
    let (metrics, auth, encoding) = latest().unwrap();
    assert_eq!(auth.as_deref(), Some("Bearer grpc-token"), "OTEL_EXPORTER_OTLP_HEADERS as gRPC metadata");
    assert_eq!(encoding.as_deref(), Some("gzip"));
    let input = [("side", "upstream"), ("gen_ai.token.type", "input")];
    assert_eq!(otlp_sum(&metrics, "llm.tokens", &input).0, usage.input as f64);
    assert_eq!(otlp_sum(&metrics, "llm_proxy.provider.requests", &[("provider", "openai")]).0, upstream as f64);
    assert!(otlp_sum(&metrics, "metrics_agent.probe.hits", &[]).0 > 0.0, "the agent's own statistics too");
    let text = agent.scrape().text;
    assert_eq!(prom_sum(&text, "metrics_agent_exporter_dropped_total", &["exporter=\"otlp\""]), 0.0, "{text}");
}

/// `https://` OTLP over gRPC: a collector serving metrics and traces with a
/// certificate from a private authority is refused (failures counted,
/// nothing sent) until `OTEL_EXPORTER_OTLP_CERTIFICATE` names the
/// authority; then metrics and GenAI spans arrive over TLS.
#[test]
fn otlp_over_grpc_with_tls_trusts_only_the_configured_authority() {
    let _serial = serial();
    let openai = MockProvider::start(0).unwrap();
    let nginx = Nginx::start_private(&[("openai", openai.port)]);
    let exe = nginx.exe.display().to_string();
    let dir = TempDir::new("grpc-tls");
    let certificates::Certificates { ca_file: ca, cert_pem: cert, key_pem: key, .. } =
        certificates::private_authority_and_localhost_certificate(&dir.0);
    let metrics = GrpcCollector::default();
    let traces = GrpcTraceCollector::default();
    use opentelemetry_proto::tonic::collector::{
        metrics::v1::metrics_service_server::MetricsServiceServer, trace::v1::trace_service_server::TraceServiceServer,
    };
    let gzip = tonic::codec::CompressionEncoding::Gzip;
    let tls = tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(cert, key));
    let port = serve_grpc(
        tonic::transport::Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(MetricsServiceServer::new(metrics.clone()).accept_compressed(gzip))
            .add_service(TraceServiceServer::new(traces.clone()).accept_compressed(gzip)),
    );
    let config = dir.0.join("agent.toml");
    std::fs::write(&config, "[exporters.otlp]\ninterval_seconds = 1\ntimeout_seconds = 10\ntraces = true\n").unwrap();
    let provider = format!("openai=127.0.0.1:{}", openai.port);
    let args = ["--exe", &exe, "--provider", &provider, "--config", config.to_str().unwrap()];
    let endpoint = format!("https://localhost:{port}");
    let env = [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ];

    // The public roots alone do not trust the private authority.
    let untrusted = Agent::start_with_env(&args, &env);
    untrusted.wait_for_nginx();
    traffic(&nginx);
    untrusted.wait_until(Duration::from_secs(20), "failed OTLP exports", |s| {
        prom_sum(&s.text, "metrics_agent_exporter_failures_total", &["exporter=\"otlp\""]) >= 2.0
    });
    assert!(metrics.got.lock().unwrap().is_empty(), "no metrics to an unverified collector");
    assert!(traces.got.lock().unwrap().is_empty(), "no spans to an unverified collector");
    let log = untrusted.log_text();
    let said = log.lines().filter(|l| l.contains("certificate") && l.contains("OTEL_EXPORTER_OTLP_CERTIFICATE"));
    assert!(said.count() >= 1, "the log says how to trust the collector:\n{log}");
    drop(untrusted);

    // Trusted through the standard variable: metrics and spans arrive.
    let ca = ca.display().to_string();
    let agent = Agent::start_with_env(&args, &[&env[..], &[("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.as_str())]].concat());
    agent.wait_for_nginx();
    openai.wait_idle(Duration::from_secs(5));
    openai.reset();
    traffic(&nginx);
    openai.wait_idle(Duration::from_secs(5));
    let (upstream, _, _) = openai.snapshot();
    let usage = openai.usage_sent();
    let latest = || metrics.got.lock().unwrap().last().cloned();
    wait_for(
        "the TLS collector to receive every record",
        Duration::from_secs(20),
        || latest().is_some_and(|(m, _, _)| otlp_sum(&m, "llm.requests", &[("side", "upstream")]).0 == upstream as f64),
        || agent.log_text(),
    );
    let (received, _, encoding) = latest().unwrap();
    assert_eq!(encoding.as_deref(), Some("gzip"));
    let input = [("side", "upstream"), ("gen_ai.token.type", "input")];
    assert_eq!(otlp_sum(&received, "llm.tokens", &input).0, usage.input as f64);
    let spans = || spans_of(traces.got.lock().unwrap().iter().map(|(r, ..)| r.clone()));
    wait_for(
        "a span per exchange and side over TLS",
        Duration::from_secs(20),
        || spans().len() as u64 >= 2 * upstream,
        || agent.log_text(),
    );
    assert_eq!(spans().len() as u64, 2 * upstream, "one client and one upstream span per exchange");
    let text = agent.scrape().text;
    assert_eq!(prom_sum(&text, "metrics_agent_exporter_failures_total", &["exporter=\"otlp\""]), 0.0, "{text}");
}

// GenAI spans (OTLP traces).

/// A request of `TRACED_TRAFFIC`.
struct Traced {
    path: &'static str,
    /// The status the mock answers.
    status: u16,
    /// Sent with a W3C `traceparent`.
    traced: bool,
    /// The model the mock's answer names (`gen_ai.response.model`): OpenAI
    /// chat's dated snapshot (`dated_model=1`), Anthropic's and Gemini's
    /// own (`mock::Api`); none in an error answer.
    response_model: Option<&'static str>,
}

const fn traced(path: &'static str, status: u16, traced: bool, response_model: Option<&'static str>) -> Traced {
    Traced { path, status, traced, response_model }
}

/// Requests through the proxy, each with its id.
const TRACED_TRAFFIC: [Traced; 10] = [
    traced("/openai/v1/chat/completions?dated_model=1", 200, true, Some(mock::DATED_MODEL)),
    traced("/openai/v1/chat/completions?dated_model=1", 200, false, Some(mock::DATED_MODEL)),
    traced(
        "/openai/v1/chat/completions?events=4&interval_ms=20&usage=1&dated_model=1",
        200,
        true,
        Some(mock::DATED_MODEL),
    ),
    traced(
        "/openai/v1/chat/completions?events=4&interval_ms=20&usage=1&dated_model=1",
        200,
        false,
        Some(mock::DATED_MODEL),
    ),
    traced("/openai/v1/chat/completions?status=429", 429, true, None),
    traced("/openai/v1/chat/completions?status=429", 429, false, None),
    traced("/anthropic/v1/messages?events=4&interval_ms=20", 200, true, Some("claude-sonnet-4")),
    traced("/anthropic/v1/messages", 200, false, Some("claude-sonnet-4")),
    traced(
        "/gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse&events=3&interval_ms=20",
        200,
        false,
        Some("gemini-2.0-flash"),
    ),
    traced("/gemini/v1beta/models/gemini-2.0-flash:generateContent", 200, true, Some("gemini-2.0-flash")),
];

/// What was sent with one request of `TRACED_TRAFFIC`: its `traceparent`
/// as (trace id, parent span id) in hex, and the model its answer names.
struct Sent {
    traceparent: Option<(String, String)>,
    response_model: Option<&'static str>,
}

/// What every span of one mock provider's exchanges says: provider, span
/// name and requested model.
#[derive(Debug, Clone, Copy)]
struct SpanExpectation {
    provider: &'static str,
    name: &'static str,
    model: &'static str,
}

/// The mock providers behind `TRACED_TRAFFIC`'s routes, and nginx.
struct TracedProviders {
    mocks: [(MockProvider, SpanExpectation); 3],
    nginx: Nginx,
}

impl TracedProviders {
    fn start() -> Self {
        let chat = |provider| SpanExpectation { provider, name: "chat gpt-4o-mini", model: "gpt-4o-mini" };
        let gemini = SpanExpectation {
            provider: "gcp.gemini",
            name: "generate_content gemini-2.0-flash",
            model: "gemini-2.0-flash",
        };
        let mocks = [
            (MockProvider::start(0).unwrap(), chat("openai")),
            (MockProvider::start(0).unwrap(), chat("anthropic")),
            (MockProvider::start(0).unwrap(), gemini),
        ];
        let routes = [("openai", mocks[0].0.port), ("anthropic", mocks[1].0.port), ("gemini", mocks[2].0.port)];
        Self { nginx: Nginx::start_private(&routes), mocks }
    }

    /// `--provider` values naming each mock.
    fn provider_args(&self) -> Vec<String> {
        ["openai", "anthropic", "gemini"]
            .iter()
            .zip(&self.mocks)
            .flat_map(|(name, (m, _))| ["--provider".to_string(), format!("{name}=127.0.0.1:{}", m.port)])
            .collect()
    }

    /// Every mock's answers, with what their spans must say.
    fn answers(&self) -> Vec<(SpanExpectation, llm_proxy_e2e::mock::Answer)> {
        self.mocks.iter().flat_map(|(m, e)| m.answers().into_iter().map(|a| (*e, a))).collect()
    }

    fn wait_idle(&self) {
        self.mocks.iter().for_each(|(m, _)| m.wait_idle(Duration::from_secs(5)));
    }

    /// (input, output) usage the mocks sent, summed.
    fn usage_sent(&self) -> (u64, u64) {
        self.mocks.iter().map(|(m, _)| m.usage_sent()).fold((0, 0), |(i, o), u| (i + u.input, o + u.output))
    }

    /// Forgets every mock's answers: the next agent's exchanges start afresh.
    fn reset(&self) {
        self.mocks.iter().for_each(|(m, _)| m.reset());
    }
}

/// Sends `TRACED_TRAFFIC` with ids `{prefix}-{i}`; returns what was sent, by id.
fn traced_traffic(port: u16, prefix: &str) -> BTreeMap<String, Sent> {
    let mut c = Client::connect(port).unwrap();
    let mut sent = BTreeMap::new();
    for (i, t) in TRACED_TRAFFIC.iter().enumerate() {
        let id = format!("{prefix}-{i}");
        c.extra_headers = format!("x-request-id: {id}\r\n");
        let traceparent = t
            .traced
            .then(|| (format!("{:032x}", 0x7ace_0000_u64 + i as u64), format!("{:016x}", 0x9a7e_0000_u64 + i as u64)));
        if let Some((trace, parent)) = &traceparent {
            c.extra_headers.push_str(&format!("traceparent: 00-{trace}-{parent}-01\r\n"));
        }
        assert_eq!(c.request(t.path, 200, false).unwrap(), t.status);
        sent.insert(id, Sent { traceparent, response_model: t.response_model });
    }
    sent
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn span_attr<'a>(s: &'a Span, key: &str) -> Option<&'a any_value::Value> {
    s.attributes.iter().find(|a| a.key == key).and_then(|a| a.value.as_ref()?.value.as_ref())
}

fn span_text(s: &Span, key: &str) -> Option<String> {
    match span_attr(s, key) {
        Some(any_value::Value::StringValue(v)) => Some(v.clone()),
        _ => None,
    }
}

/// A string-array attribute's values; empty when the attribute is absent.
fn span_texts(s: &Span, key: &str) -> Vec<String> {
    match span_attr(s, key) {
        Some(any_value::Value::ArrayValue(a)) => a
            .values
            .iter()
            .map(|v| match &v.value {
                Some(any_value::Value::StringValue(t)) => t.clone(),
                other => panic!("{key}: a string array, not {other:?}"),
            })
            .collect(),
        None => Vec::new(),
        Some(other) => panic!("{key}: an array, not {other:?}"),
    }
}

fn span_int(s: &Span, key: &str) -> Option<u64> {
    match span_attr(s, key) {
        Some(any_value::Value::IntValue(v)) => Some(*v as u64),
        _ => None,
    }
}

fn spans_of(requests: impl IntoIterator<Item = ExportTraceServiceRequest>) -> Vec<Span> {
    requests.into_iter().flat_map(|r| r.resource_spans).flat_map(|r| r.scope_spans).flat_map(|s| s.spans).collect()
}

/// The spans an OTLP/HTTP receiver got on `/v1/traces`.
fn http_spans(rx: &Receiver) -> Vec<Span> {
    spans_of(
        rx.all()
            .into_iter()
            .filter(|r| r.path == "/v1/traces")
            .map(|r| ExportTraceServiceRequest::decode(r.plain_body().as_slice()).expect("a valid OTLP protobuf")),
    )
}

/// The spans against the mock provider's answers, exactly: one client
/// (`SERVER`) and one upstream (`CLIENT`) span per answer, found by the
/// answer's id; the upstream span a child of the client span; the client
/// span in the caller's trace when it sent a `traceparent`, in a fresh one
/// otherwise; status, error type, provider, model, and the usage and finish
/// reasons the mock sent, and the model its answer named.
fn check_spans(
    spans: &[Span],
    answers: &[(SpanExpectation, llm_proxy_e2e::mock::Answer)],
    sent: &BTreeMap<String, Sent>,
) {
    assert_eq!(spans.len(), 2 * answers.len(), "one span per exchange and side: {spans:#?}");
    let mut fresh_traces = BTreeSet::new();
    for (expect, a) in answers {
        let of = |kind: SpanKind| {
            let found: Vec<&Span> = spans
                .iter()
                .filter(|s| s.kind == kind as i32 && span_text(s, "gen_ai.response.id").as_deref() == Some(&a.id))
                .collect();
            assert_eq!(found.len(), 1, "one {kind:?} span for {}", a.id);
            found[0]
        };
        let (client, upstream) = (of(SpanKind::Server), of(SpanKind::Client));
        assert_eq!(upstream.trace_id, client.trace_id, "{}: one trace", a.id);
        assert_eq!(upstream.parent_span_id, client.span_id, "{}: the upstream span under the client span", a.id);
        let sent = sent.get(&a.id).unwrap_or_else(|| panic!("{}: an answer to a request sent", a.id));
        match &sent.traceparent {
            Some((trace, parent)) => {
                assert_eq!(hex(&client.trace_id), *trace, "{}: the caller's trace continues", a.id);
                assert_eq!(hex(&client.parent_span_id), *parent, "{}: under the caller's span", a.id);
            }
            None => {
                assert!(client.parent_span_id.is_empty(), "{}: a root span", a.id);
                assert!(fresh_traces.insert(client.trace_id.clone()), "{}: a trace of its own", a.id);
            }
        }
        for s in [client, upstream] {
            assert_eq!(s.name, expect.name, "{}", a.id);
            let operation = expect.name.split(' ').next();
            assert_eq!(span_text(s, "gen_ai.operation.name").as_deref(), operation, "{}", a.id);
            assert_eq!(span_text(s, "gen_ai.provider.name").as_deref(), Some(expect.provider), "{}", a.id);
            assert_eq!(span_text(s, "gen_ai.request.model").as_deref(), Some(expect.model), "{}", a.id);
            assert_eq!(
                span_text(s, "gen_ai.response.model").as_deref(),
                sent.response_model,
                "{}: the model the mock's answer named",
                a.id
            );
            assert_eq!(
                span_texts(s, "gen_ai.response.finish_reasons"),
                a.finish_reasons,
                "{}: the finish reasons the mock sent",
                a.id
            );
            assert_eq!(span_int(s, "http.response.status_code"), Some(u64::from(a.status)));
            let usage = span_int(s, "gen_ai.usage.input_tokens").zip(span_int(s, "gen_ai.usage.output_tokens"));
            assert_eq!(usage, a.usage, "{}: the usage the mock sent", a.id);
            let error = (a.status == 429).then(|| "rate_limit_exceeded".to_string());
            assert_eq!(span_text(s, "error.type"), error, "{}", a.id);
            assert!(s.end_time_unix_nano > s.start_time_unix_nano);
        }
        assert!(upstream.start_time_unix_nano >= client.start_time_unix_nano, "{}: inside its client span", a.id);
        assert!(span_text(upstream, "server.address").is_some());
    }
}

#[test]
fn genai_spans_over_otlp_http_match_the_mock_providers_exchanges() {
    let _serial = serial();
    let providers = TracedProviders::start();
    let otlp = Receiver::start();
    let dir = TempDir::new("spans-http");
    let config = dir.0.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[exporters.otlp]\nendpoint = \"http://127.0.0.1:{}\"\ninterval_seconds = 1\ntraces = true\ntraces_interval_seconds = 0.2\nheaders = {{ authorization = \"Bearer span-token\" }}\n",
            otlp.port
        ),
    )
    .unwrap();
    let mut args = vec![
        "--exe".to_string(),
        providers.nginx.exe.display().to_string(),
        "--config".into(),
        config.display().to_string(),
    ];
    args.extend(providers.provider_args());
    let agent = Agent::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    agent.wait_until(Duration::from_secs(10), "nginx traced", |s| s.get("metrics_agent_traced_processes") >= 3);
    let sent = traced_traffic(providers.nginx.port, "http");
    providers.wait_idle();
    let answers = providers.answers();
    assert_eq!(answers.len(), TRACED_TRAFFIC.len(), "the mocks answered every request");
    wait_for(
        "a span per exchange and side",
        Duration::from_secs(20),
        || http_spans(&otlp).len() >= 2 * answers.len(),
        || agent.log_text(),
    );
    thread::sleep(Duration::from_millis(500)); // nothing more may come
    check_spans(&http_spans(&otlp), &answers, &sent);
    let upstream: Vec<Span> = http_spans(&otlp).into_iter().filter(|s| s.kind == SpanKind::Client as i32).collect();
    let total = |key: &str| upstream.iter().filter_map(|s| span_int(s, key)).sum::<u64>();
    let usage = (total("gen_ai.usage.input_tokens"), total("gen_ai.usage.output_tokens"));
    assert_eq!(usage, providers.usage_sent());
    for r in otlp.all().into_iter().filter(|r| r.path == "/v1/traces") {
        assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
        assert_eq!(r.header("content-encoding"), Some("gzip"));
        assert_eq!(r.header("authorization"), Some("Bearer span-token"));
        for body in [r.plain_body(), r.body.clone()] {
            assert!(!contains(&body, CANARY) && !contains(&body, "sk-test"), "no API key in a span");
            assert!(!contains(&body, "authorization") && !contains(&body, "span-token"), "no header value in a span");
        }
    }
    let text = agent.scrape().text;
    assert_eq!(prom_sum(&text, "metrics_agent_spans_exported_total", &[]), 2.0 * answers.len() as f64, "{text}");
    assert_eq!(prom_sum(&text, "metrics_agent_spans_dropped_total", &[]), 0.0, "{text}");
}

/// A gRPC collector serving the official `TraceService` (gzip accepted),
/// recording each request with its `authorization` and `grpc-encoding`
/// metadata.
#[derive(Clone, Default)]
struct GrpcTraceCollector {
    got: Arc<Mutex<Vec<TraceReceived>>>,
}

/// A trace request with its `authorization` and `grpc-encoding` metadata.
type TraceReceived = (ExportTraceServiceRequest, Option<String>, Option<String>);

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService for GrpcTraceCollector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<
        tonic::Response<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse>,
        tonic::Status,
    > {
        let header = |k: &str| request.metadata().get(k).and_then(|v| v.to_str().ok()).map(String::from);
        let (auth, encoding) = (header("authorization"), header("grpc-encoding"));
        self.got.lock().unwrap().push((request.into_inner(), auth, encoding));
        Ok(tonic::Response::new(Default::default()))
    }
}

impl GrpcTraceCollector {
    /// Serves on a loopback port from a runtime of its own; returns the port.
    fn start(&self) -> u16 {
        let service = opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer::new(
            self.clone(),
        )
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        serve_grpc(tonic::transport::Server::builder().add_service(service))
    }
}

#[test]
fn genai_spans_over_otlp_grpc_from_the_environment_alone() {
    let _serial = serial();
    let providers = TracedProviders::start();
    let collector = GrpcTraceCollector::default();
    let port = collector.start();
    let mut args = vec!["--exe".to_string(), providers.nginx.exe.display().to_string()];
    args.extend(providers.provider_args());
    let endpoint = format!("http://127.0.0.1:{port}");
    // No [exporters.otlp] section: the traces endpoint variable turns spans on.
    let agent = Agent::start_with_env(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20grpc-span-token"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    );
    agent.wait_until(Duration::from_secs(10), "nginx traced", |s| s.get("metrics_agent_traced_processes") >= 3);
    let sent = traced_traffic(providers.nginx.port, "grpc");
    providers.wait_idle();
    let answers = providers.answers();
    let spans = || spans_of(collector.got.lock().unwrap().iter().map(|(r, ..)| r.clone()));
    wait_for(
        "a span per exchange and side",
        Duration::from_secs(20),
        || spans().len() >= 2 * answers.len(),
        || agent.log_text(),
    );
    thread::sleep(Duration::from_millis(500));
    check_spans(&spans(), &answers, &sent);
    for (_, auth, encoding) in collector.got.lock().unwrap().iter() {
        assert_eq!(auth.as_deref(), Some("Bearer grpc-span-token"), "OTEL_EXPORTER_OTLP_HEADERS as gRPC metadata");
        assert_eq!(encoding.as_deref(), Some("gzip"), "gRPC traces gzip-compressed by default");
    }
    let text = agent.scrape().text;
    assert_eq!(prom_sum(&text, "metrics_agent_spans_exported_total", &[]), 2.0 * answers.len() as f64, "{text}");
}

// Privacy of the spans.

/// The prompt every private exchange sends.
const PRIVATE_PROMPT: &str = "prompt-canary-9c4f2a";
/// The API key of the private exchanges (`authorization: Bearer ...`).
const PRIVATE_KEY: &str = "sk-proj-canary-3f8e1d";
/// Gemini's API key in the URL (`?key=`), as its clients may send it.
const PRIVATE_QUERY_KEY: &str = "AIza-query-canary-0b9e";
/// The other headers of the private exchanges: each provider's own key
/// header, and values an application sends that are nobody else's business.
const PRIVATE_HEADERS: [(&str, &str); 7] = [
    ("x-api-key", "sk-ant-canary-b27c90"),
    ("x-goog-api-key", "AIza-header-canary-61d0e4"),
    ("api-key", "azure-key-canary-a5c3"),
    ("openai-organization", "org-canary-7d21f0"),
    ("cookie", "cookie-canary-e90b3c"),
    ("user-agent", "agent-canary-4c2a/1.0"),
    ("x-tenant-secret", "tenant-canary-48aa5d"),
];

/// Every string no span may carry: the prompt, the completion the mock
/// answered, the keys and the other header values.
fn private_strings() -> Vec<&'static str> {
    let mut all = vec![PRIVATE_PROMPT, mock::PRIVATE_COMPLETION, PRIVATE_KEY, PRIVATE_QUERY_KEY];
    all.extend(PRIVATE_HEADERS.iter().map(|(_, v)| *v));
    all
}

/// (path, body) of the private exchanges, in each provider's own request
/// shape, the prompt in the user's message and `private=1` asking the mock
/// for `PRIVATE_COMPLETION` (streamed by the second).
fn private_exchanges() -> [(String, String); 4] {
    let chat = |extra: &str| {
        format!(r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{PRIVATE_PROMPT}"}}]{extra}}}"#)
    };
    [
        ("/openai/v1/chat/completions?private=1".into(), chat("")),
        (
            "/openai/v1/chat/completions?private=1&events=3&interval_ms=10&usage=1".into(),
            chat(r#","stream":true,"stream_options":{"include_usage":true}"#),
        ),
        (
            "/anthropic/v1/messages?private=1".into(),
            format!(
                r#"{{"model":"claude-sonnet-4","max_tokens":64,"messages":[{{"role":"user","content":"{PRIVATE_PROMPT}"}}]}}"#
            ),
        ),
        (
            format!("/gemini/v1beta/models/gemini-2.0-flash:generateContent?private=1&key={PRIVATE_QUERY_KEY}"),
            format!(r#"{{"contents":[{{"role":"user","parts":[{{"text":"{PRIVATE_PROMPT}"}}]}}]}}"#),
        ),
    ]
}

/// Sends the private exchanges through the proxy with ids `{prefix}-{i}`,
/// each on a connection of its own with every private header; checks each
/// answer is a 200 carrying `PRIVATE_COMPLETION` (so the proxy, and the
/// agent, saw it); returns the ids.
fn private_traffic(port: u16, prefix: &str) -> Vec<String> {
    let headers: String = PRIVATE_HEADERS.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let mut ids = Vec::new();
    for (i, (path, body)) in private_exchanges().iter().enumerate() {
        let id = format!("{prefix}-{i}");
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.1\r\nhost: proxy.test\r\ncontent-type: application/json\r\nauthorization: Bearer {PRIVATE_KEY}\r\n{headers}x-request-id: {id}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        assert!(answer.contains(mock::PRIVATE_COMPLETION), "{path}: the completion came back: {answer}");
        ids.push(id);
    }
    ids
}

/// The private exchanges' spans, decoded: one client and one upstream span
/// per exchange, found by the answer's id, with the usage the agent read
/// from the bodies (it had the text in hand).
fn check_private_spans(spans: &[Span], ids: &[String]) {
    assert_eq!(spans.len(), 2 * ids.len(), "one span per exchange and side: {spans:#?}");
    for id in ids {
        for kind in [SpanKind::Server, SpanKind::Client] {
            let found: Vec<&Span> = spans
                .iter()
                .filter(|s| s.kind == kind as i32 && span_text(s, "gen_ai.response.id").as_deref() == Some(id))
                .collect();
            assert_eq!(found.len(), 1, "one {kind:?} span for {id}: {spans:#?}");
            assert!(span_int(found[0], "gen_ai.usage.input_tokens").is_some(), "{id}: usage read from the body");
        }
    }
}

/// None of the private strings in `bytes` (an export request's protobuf
/// bytes, a log) nor in `decoded` (the request's decoded `Debug` text:
/// every string of every attribute, name, status and resource).
fn assert_private(what: &str, bytes: &[u8], decoded: &str) {
    for secret in private_strings() {
        assert!(!contains(bytes, secret), "{what}: {secret:?} in its bytes");
        assert!(!decoded.contains(secret), "{what}: {secret:?} in a decoded field: {decoded}");
    }
}

/// A span export's protobuf bytes name some exchange's id (its
/// `gen_ai.response.id`): the search would find a string that is there.
fn assert_names_an_id(what: &str, protobuf: &[u8], ids: &[String]) {
    assert!(ids.iter().any(|id| contains(protobuf, id)), "{what}: names an exchange's id");
}

/// The spans of exchanges carrying a prompt, an API key (in the
/// `authorization` header, each provider's own key header and Gemini's
/// `?key=`), other header values and a completion carry none of them,
/// whether sent over OTLP/HTTP (uncompressed, so the bytes on the wire are
/// the protobuf) or over gRPC (gzip, checked as the `grpc-encoding` the
/// collector saw): nothing is stored unless asked for, and header values
/// never. The agent's log does not name them either.
#[test]
fn genai_spans_carry_no_prompt_completion_key_or_header_value() {
    let _serial = serial();
    let providers = TracedProviders::start();
    let mut args = vec!["--exe".to_string(), providers.nginx.exe.display().to_string()];
    args.extend(providers.provider_args());

    // OTLP/HTTP, uncompressed, metrics and traces to one receiver.
    let otlp = Receiver::start();
    let dir = TempDir::new("spans-private");
    let config = dir.0.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[exporters.otlp]\nendpoint = \"http://127.0.0.1:{}\"\ninterval_seconds = 1\ncompression = \"none\"\ntraces = true\ntraces_interval_seconds = 0.2\n",
            otlp.port
        ),
    )
    .unwrap();
    let http_args: Vec<&str> = args.iter().map(String::as_str).chain(["--config", config.to_str().unwrap()]).collect();
    let agent = Agent::start(&http_args);
    agent.wait_until(Duration::from_secs(10), "nginx traced", |s| s.get("metrics_agent_traced_processes") >= 3);
    let ids = private_traffic(providers.nginx.port, "private-http");
    providers.wait_idle();
    wait_for(
        "a span per private exchange and side over HTTP",
        Duration::from_secs(20),
        || http_spans(&otlp).len() >= 2 * ids.len(),
        || agent.log_text(),
    );
    // The metrics checked too: an export made after every exchange's spans
    // came, so it holds these exchanges (one every `interval_seconds`).
    let metrics_exports = || otlp.all().iter().filter(|r| r.path == "/v1/metrics").count();
    let before = metrics_exports();
    wait_for(
        "a metrics export after the private exchanges",
        Duration::from_secs(10),
        || metrics_exports() > before,
        || agent.log_text(),
    );
    thread::sleep(Duration::from_millis(500)); // nothing more may come
    check_private_spans(&http_spans(&otlp), &ids);
    let received = otlp.all();
    for r in &received {
        assert_eq!(r.header("content-encoding"), None, "compression = none: the body is the protobuf");
        let what = format!("OTLP/HTTP {}", r.path);
        let decoded = if r.path == "/v1/traces" {
            assert_names_an_id(&what, &r.body, &ids);
            format!("{:?}", ExportTraceServiceRequest::decode(r.body.as_slice()).unwrap())
        } else {
            format!("{:?}", ExportMetricsServiceRequest::decode(r.body.as_slice()).unwrap())
        };
        assert_private(&what, &r.body, &decoded);
    }
    assert_private("the agent's log", agent.log_text().as_bytes(), "");
    drop(agent);
    providers.reset();

    // gRPC, gzip asked for by the standard variable.
    let collector = GrpcTraceCollector::default();
    let endpoint = format!("http://127.0.0.1:{}", collector.start());
    let agent = Agent::start_with_env(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    );
    agent.wait_until(Duration::from_secs(10), "nginx traced", |s| s.get("metrics_agent_traced_processes") >= 3);
    let ids = private_traffic(providers.nginx.port, "private-grpc");
    providers.wait_idle();
    let spans = || spans_of(collector.got.lock().unwrap().iter().map(|(r, ..)| r.clone()));
    wait_for(
        "a span per private exchange and side over gRPC",
        Duration::from_secs(20),
        || spans().len() >= 2 * ids.len(),
        || agent.log_text(),
    );
    thread::sleep(Duration::from_millis(500));
    check_private_spans(&spans(), &ids);
    for (request, _, encoding) in collector.got.lock().unwrap().iter() {
        assert_eq!(encoding.as_deref(), Some("gzip"), "OTEL_EXPORTER_OTLP_COMPRESSION=gzip on gRPC traces");
        // The message as the collector decoded it, in protobuf bytes again.
        let protobuf = request.encode_to_vec();
        assert_names_an_id("gRPC traces", &protobuf, &ids);
        assert_private("gRPC traces", &protobuf, &format!("{request:?}"));
    }
    assert_private("the agent's log", agent.log_text().as_bytes(), "");
}

#[test]
fn a_stuck_traces_endpoint_stalls_nothing_and_its_drops_are_counted() {
    let _serial = serial();
    let openai = MockProvider::start(0).unwrap();
    let nginx = Nginx::start_private(&[("openai", openai.port)]);
    let exe = nginx.exe.display().to_string();
    let otlp = Receiver::start();
    // Accepts connections and never answers.
    let blackhole = TcpListener::bind("127.0.0.1:0").unwrap();
    let blackhole_port = blackhole.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    thread::spawn(move || {
        for c in blackhole.incoming().flatten() {
            h.lock().unwrap().push(c);
        }
    });
    let dir = TempDir::new("spans-stuck");
    let config = dir.0.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[exporters.otlp]\nendpoint = \"http://127.0.0.1:{}\"\ninterval_seconds = 1\ntimeout_seconds = 0.5\nmax_retries = 0\ntraces = true\ntraces_endpoint = \"http://127.0.0.1:{blackhole_port}\"\ntraces_interval_seconds = 0.2\ntraces_queue_spans = 4\ntraces_batch_spans = 2\n",
            otlp.port
        ),
    )
    .unwrap();
    let provider = format!("openai=127.0.0.1:{}", openai.port);
    let mut agent = Agent::start(&["--exe", &exe, "--provider", &provider, "--config", config.to_str().unwrap()]);
    agent.wait_until(Duration::from_secs(10), "nginx traced", |s| s.get("metrics_agent_traced_processes") >= 3);
    // The proxy keeps serving: every request answers with its status (checked by `traffic`).
    let mut sent = 0;
    for _ in 0..4 {
        sent += traffic(&nginx);
    }
    openai.wait_idle(Duration::from_secs(5));
    let (upstream, _, _) = openai.snapshot();
    assert_eq!(upstream, sent);
    let spans = 2.0 * upstream as f64;
    wait_for(
        "every span dropped and counted",
        Duration::from_secs(30),
        || {
            let text = agent.scrape().text;
            prom_sum(&text, "metrics_agent_spans_dropped_total", &["reason=\"queue_full\""])
                + prom_sum(&text, "metrics_agent_spans_dropped_total", &["reason=\"send_failed\""])
                == spans
        },
        || agent.scrape().text,
    );
    let text = agent.scrape().text;
    assert_eq!(prom_sum(&text, "metrics_agent_spans_exported_total", &[]), 0.0);
    assert!(prom_sum(&text, "metrics_agent_spans_export_failures_total", &[]) >= 1.0, "{text}");
    assert!(prom_sum(&text, "metrics_agent_spans_queue_length", &[]) <= 4.0, "bounded queue");
    assert!(prom_sum(&text, "metrics_agent_spans_dropped_total", &["reason=\"queue_full\""]) > 0.0, "{text}");
    // The metrics exporter is not held up by the stuck traces endpoint.
    wait_for(
        "OTLP metrics with every record",
        Duration::from_secs(20),
        || otlp_sum(&latest_otlp(&otlp), "llm.requests", &[("side", "upstream")]).0 == upstream as f64,
        || agent.log_text(),
    );
    let status = agent.guard.signal_and_wait(libc::SIGTERM, Duration::from_secs(60));
    assert!(status.is_some_and(|s| s.success()), "the agent stopped cleanly:\n{}", agent.log_text());
    drop(held);
}
