//! End-to-end tests (root) of HTTP/2: nginx from Debian's package with
//! `http2` on its client-side listeners (h2c with prior knowledge, and h2
//! over TLS by ALPN), driven by a real HTTP/2 client (Python's httpx with
//! h2; curl 7.88's h2 uploads on a reused connection fail), proxying to
//! mock providers over HTTP/1.1. The hot-path counters and the audit
//! records must match the client's and the providers' ground truth exactly.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    time::Duration,
};

use llm_proxy_e2e::{
    h2_client::{Answer, h2_client},
    harness::{Agent, Guard, NginxH2, serial},
    mock::MockProvider,
    modes::{self, for_each_mode},
};

const OPENAI_BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
const OPENAI_STREAM_BODY: &str = r#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#;
const ANTHROPIC_BODY: &str = r#"{"model":"claude-sonnet-4","max_tokens":10,"messages":[]}"#;
const ANTHROPIC_STREAM_BODY: &str = r#"{"model":"claude-sonnet-4","max_tokens":10,"stream":true,"messages":[]}"#;
/// The mock's wait before the first answer byte of the delayed request.
const DELAY_MS: f64 = 300.0;
/// A plain answer past the agent's default 256 KiB capture cap (as the
/// live run's 320 KiB ones), the last exchange of its connections.
const PAST_THE_CAP: &str = "/openai/v1/chat/completions?bytes=327680";

/// Plain and streamed OpenAI and Anthropic exchanges on four connections
/// to `base`: two in sequence per connection, two multiplexed; then a
/// fifth connection with one answer past the capture cap.
fn traffic(base: &str) -> Vec<Answer> {
    let mut answers = Vec::new();
    let openai = ["/openai/v1/chat/completions?delay_ms=300", "/openai/v1/chat/completions?status=429"];
    answers.extend(h2_client(base, false, OPENAI_BODY, &openai));
    let anthropic = ["/anthropic/v1/messages", "/anthropic/v1/messages?status=500"];
    answers.extend(h2_client(base, false, ANTHROPIC_BODY, &anthropic));
    let openai_stream = "/openai/v1/chat/completions?events=6&interval_ms=30&usage=1";
    answers.extend(h2_client(base, true, OPENAI_STREAM_BODY, &[openai_stream, openai_stream]));
    let anthropic_stream = "/anthropic/v1/messages?events=6&interval_ms=30";
    answers.extend(h2_client(base, true, ANTHROPIC_STREAM_BODY, &[anthropic_stream, anthropic_stream]));
    answers.extend(h2_client(base, false, OPENAI_BODY, &[PAST_THE_CAP]));
    answers
}

#[test]
fn nginx_http2_clients_are_counted_and_audited_exactly() {
    let _serial = serial();
    let openai = MockProvider::start(0).unwrap();
    let anthropic = MockProvider::start(0).unwrap();
    let nginx = NginxH2::start(&[("openai", openai.port), ("anthropic", anthropic.port)]);
    for_each_mode(modes::ALL, |mode| {
        openai.reset();
        anthropic.reset();
        let [attach, name] = mode.args();
        let exe = nginx.exe.display().to_string();
        let (oa, an) = (format!("openai=127.0.0.1:{}", openai.port), format!("anthropic=127.0.0.1:{}", anthropic.port));
        let agent =
            Agent::start(&["--exe", &exe, attach, name, "--provider", &oa, "--provider", &an, "--print-requests"]);
        agent.wait_for_nginx();
        let mut answers = traffic(&format!("http://127.0.0.1:{}", nginx.h2c_port));
        answers.extend(traffic(&format!("https://127.0.0.1:{}", nginx.tls_port)));
        let requests = answers.len() as u64;
        let class = |c: u64| answers.iter().filter(|a| a.status / 100 == c).count() as u64;
        let failed = answers.iter().filter(|a| a.status >= 400).count() as u64;
        openai.wait_idle(Duration::from_secs(20));
        anthropic.wait_idle(Duration::from_secs(20));
        let (oa_requests, an_requests) = (openai.snapshot().0, anthropic.snapshot().0);
        assert_eq!(oa_requests + an_requests, requests, "every request reached a provider");

        // Hot path: every HTTP/2 stream is a request, with its status class.
        let s = agent.wait_until(Duration::from_secs(30), "every stream counted", |s| {
            s.get("llm_proxy_h2_streams_ended_total") >= requests
                && s.get("llm_proxy_provider_requests_total{provider=\"anthropic\"}") == an_requests
        });
        let hot: Vec<&str> =
            s.text.lines().filter(|l| l.contains("h2") || l.contains("responses") || l.contains("requests")).collect();
        let hot = hot.join("\n");
        assert_eq!(s.get("llm_proxy_requests_total"), requests, "requests\n{hot}");
        assert_eq!(s.get("llm_proxy_requests_failed_total"), failed, "failed\n{hot}");
        for (label, c) in [("2xx", 2), ("3xx", 3), ("4xx", 4), ("5xx", 5)] {
            assert_eq!(s.get(&format!("llm_proxy_responses_total{{class=\"{label}\"}}")), class(c), "{label}");
        }
        assert_eq!(s.get("llm_proxy_h2_connections_total"), 10, "one connection per client run");
        assert_eq!(s.get("llm_proxy_h2_streams_opened_total"), requests);
        assert_eq!(s.get("llm_proxy_h2_streams_ended_total"), requests);
        assert_eq!(s.get("llm_proxy_h2_rst_streams_total"), 0);
        assert_eq!(s.get("llm_proxy_provider_requests_total{provider=\"openai\"}"), oa_requests);
        assert_eq!(s.get("metrics_agent_h2_framing_lost_total"), 0, "frame boundaries kept");
        assert_eq!(s.get("metrics_agent_h2_status_undecoded_total"), 0, "nginx's :status encodings are read");
        assert_eq!(s.get("metrics_agent_unclassified_connections_total"), 0, "HTTP/2 is not unclassified");
        assert!(s.get("llm_proxy_h2_data_bytes_sent_total") > 0 && s.get("llm_proxy_h2_data_bytes_received_total") > 0);
        llm_proxy_e2e::metrics::promtool_check(&s.text, "prometheus text");

        // Audit path: one record per stream, as the providers answered it.
        agent.wait_for_printed_records(answers.len(), answers.len(), Duration::from_secs(20));
        let client = agent.printed_records("client");
        assert_eq!(client.len(), answers.len(), "{client:?}");
        let mut got: Vec<u64> = client.iter().map(|r| r["status"].as_u64().unwrap()).collect();
        let mut want: Vec<u64> = answers.iter().map(|a| a.status).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "statuses");
        // The answers past the cap: cut in the record (their usage came
        // after the cut), with the model and id their body began with, and
        // paired with their upstream exchange by that id.
        let capped: Vec<&serde_json::Value> = client.iter().filter(|r| r["truncated"] == true).collect();
        assert_eq!(capped.len(), 2, "one per transport: {client:?}");
        let mock_answers = openai.answers();
        for r in &capped {
            let id = r["pairing"]["request_id"].as_str().unwrap_or_else(|| panic!("the body's id: {r}"));
            let answer = mock_answers.iter().find(|a| a.id == id).unwrap_or_else(|| panic!("the mock sent {id}: {r}"));
            assert_eq!((answer.status, answer.usage), (200, Some((12, 34))), "{r}");
            assert_eq!((r["model_returned"].as_str(), r["status"].as_u64()), (Some("gpt-4o-mini"), Some(200)), "{r}");
            assert_eq!(
                (r["pairing"]["upstream_request_id"].as_str(), r["pairing"]["confidence"].as_str()),
                (Some(id), Some("certain")),
                "{r}"
            );
            assert!(r["tokens"]["input"].is_null() && r["tokens"]["output"].is_null(), "usage after the cut: {r}");
        }
        // Every other record has the usage the providers sent.
        let sum = |field: &str| client.iter().map(|r| r["tokens"][field].as_u64().unwrap_or(0)).sum::<u64>();
        let sent = [openai.usage_sent(), anthropic.usage_sent()];
        let cut = capped.len() as u64;
        assert_eq!(sum("input"), sent[0].input + sent[1].input - 12 * cut, "input tokens");
        assert_eq!(sum("output"), sent[0].output + sent[1].output - 34 * cut, "output tokens");
        for (provider, plain) in [("openai", 4), ("anthropic", 2)] {
            let of = |streaming: bool| {
                client
                    .iter()
                    .filter(|r| r["provider"] == provider && r["streaming"] == streaming && r["status"] == 200)
                    .count()
            };
            assert_eq!((of(false), of(true)), (plain, 4), "{provider}: plain 200s and two streams per transport");
        }
        let stream = client.iter().find(|r| r["provider"] == "openai" && r["streaming"] == true).unwrap();
        assert_eq!((stream["tokens"]["input"].as_u64(), stream["tokens"]["output"].as_u64()), (Some(21), Some(55)));
        assert_eq!(stream["model_requested"], "gpt-4o-mini", "{stream}");
        // TTFB: the delayed request's first byte came after the mock's wait
        // and before the client saw it.
        let delayed: Vec<&Answer> = answers.iter().filter(|a| a.path.contains("delay_ms")).collect();
        let slowest_client = delayed.iter().map(|a| a.ttfb_ms).fold(0.0, f64::max);
        let delayed_records: Vec<&serde_json::Value> =
            client.iter().filter(|r| r["ttfb_ms"].as_f64().unwrap() >= DELAY_MS).collect();
        assert_eq!(delayed_records.len(), delayed.len(), "only the delayed requests wait {DELAY_MS} ms: {client:?}");
        for r in &delayed_records {
            assert!(r["ttfb_ms"].as_f64().unwrap() <= slowest_client, "agent {r} vs client {delayed:?}");
        }
        for r in &client {
            assert!(r["ttfb_ms"].as_f64().unwrap() <= r["duration_ms"].as_f64().unwrap(), "{r}");
            assert!(r["upstream_provider"] == r["provider"], "paired with its upstream exchange: {r}");
        }
        assert_eq!(agent.scrape().get("metrics_agent_audit_h2_broken_connections_total"), 0);
    });
}

/// The upstream side: a Python process (httpx with h2) that calls its
/// providers over HTTP/2 — h2c with prior knowledge and h2 over TLS, both
/// served by nginx's HTTP/2 listeners in front of the mock — traced as the
/// proxy. Its streams are provider requests, its records upstream records.
#[test]
fn http2_upstream_calls_are_provider_requests_with_exact_records() {
    let _serial = serial();
    let mock = MockProvider::start(0).unwrap();
    let nginx = NginxH2::start(&[("openai", mock.port)]);
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let python = std::path::PathBuf::from(home).join(".cache/metrics-agent/gateway-venv/bin/python");
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("py/h2_client.py");
    let bases = format!("http://127.0.0.1:{},https://127.0.0.1:{}", nginx.h2c_port, nginx.tls_port);
    let paths = [
        "/openai/v1/chat/completions",
        "/openai/v1/chat/completions?status=429",
        "/openai/v1/chat/completions?events=5&interval_ms=20&usage=1",
    ];
    for_each_mode(modes::UPROBES_AND_SOCKETS, |mode| {
        mock.reset();
        let mut client = Guard::spawn(
            "h2-client",
            Command::new(&python)
                .arg(&script)
                .arg("--wait-stdin")
                .arg(&bases)
                .arg(OPENAI_BODY)
                .args(paths)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
        );
        let mut stdout = BufReader::new(client.child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        let [attach, name] = mode.args();
        let (h2c, tls) = (format!("h2c=127.0.0.1:{}", nginx.h2c_port), format!("tls=127.0.0.1:{}", nginx.tls_port));
        let pid = client.pid().to_string();
        let agent =
            Agent::start(&["--pid", &pid, attach, name, "--provider", &h2c, "--provider", &tls, "--print-requests"]);
        agent
            .wait_until(Duration::from_secs(10), "the client traced", |s| s.get("metrics_agent_traced_processes") >= 1);
        client.child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let answers: Vec<serde_json::Value> =
            stdout.lines().map(|l| serde_json::from_str(&l.unwrap()).unwrap()).collect();
        assert_eq!(answers.len(), 2 * paths.len(), "{answers:?}");
        // The same calls went to both providers.
        let failed_each = answers.iter().filter(|a| a["status"].as_u64().unwrap() >= 400).count() as u64 / 2;
        mock.wait_idle(Duration::from_secs(20));
        assert_eq!(mock.snapshot().0, answers.len() as u64, "every call reached the provider");
        let s = agent.wait_until(Duration::from_secs(20), "every stream counted", |s| {
            s.get("llm_proxy_h2_streams_ended_total") >= answers.len() as u64
        });
        for provider in ["h2c", "tls"] {
            let series = |m: &str| format!("{m}{{provider=\"{provider}\"}}");
            assert_eq!(
                s.get(&series("llm_proxy_provider_requests_total")),
                paths.len() as u64,
                "{provider}\n{}",
                s.text
            );
            assert_eq!(s.get(&series("llm_proxy_provider_requests_failed_total")), failed_each, "{provider}");
        }
        assert_eq!(s.get("llm_proxy_h2_connections_total"), 2);
        assert_eq!(s.get("llm_proxy_h2_streams_opened_total"), answers.len() as u64);
        assert_eq!(s.get("llm_proxy_requests_total"), 0, "no client side here");
        assert_eq!(s.get("metrics_agent_h2_framing_lost_total"), 0);
        llm_proxy_e2e::metrics::promtool_check(&s.text, "prometheus text");
        agent.wait_for_printed_records(0, answers.len(), Duration::from_secs(20));
        let upstream = agent.printed_records("upstream");
        assert_eq!(upstream.len(), answers.len());
        let sent = mock.usage_sent();
        let sum = |field: &str| upstream.iter().map(|r| r["tokens"][field].as_u64().unwrap_or(0)).sum::<u64>();
        assert_eq!((sum("input"), sum("output")), (sent.input, sent.output), "tokens");
        for provider in ["h2c", "tls"] {
            let mut statuses: Vec<u64> = upstream
                .iter()
                .filter(|r| r["upstream_provider"] == provider)
                .map(|r| r["status"].as_u64().unwrap())
                .collect();
            statuses.sort();
            assert_eq!(statuses, [200, 200, 429], "{provider}: {upstream:?}");
        }
    });
}
