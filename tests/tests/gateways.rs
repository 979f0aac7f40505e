//! End-to-end tests (root) of the audit path on real gateways and under
//! concurrency: which upstream exchange the agent pairs with each client
//! exchange, cache hits, long streams. Ground truth comes from the test's
//! clients (the request ids they sent) and the mock provider (the requests
//! it answered, the usage it reported).

use std::{
    collections::HashMap,
    process::{Command, Stdio},
    time::Duration,
};

use llm_proxy_e2e::{
    client::Client,
    harness::{self, Agent, Guard, Nginx, TempDir, serial},
    metrics::Scrape,
    mock::MockProvider,
    modes::{self, AttachMode, for_each_mode},
};
use serde_json::Value;

/// The agent tracing one nginx (its master and workers, by pid, so other
/// nginx processes on the host stay out of the numbers), printing records.
fn agent_on(nginx_pid: u32, mock: &MockProvider, extra: &[&str]) -> Agent {
    let (pid, provider) = (nginx_pid.to_string(), format!("openai=127.0.0.1:{}", mock.port));
    let mut args = vec!["--pid", &pid, "--provider", &provider, "--print-requests"];
    args.extend_from_slice(extra);
    let agent = Agent::start(&args);
    agent.wait_for_nginx();
    agent
}

/// The sum of every series of `name` (any labels).
fn sum_of(scrape: &Scrape, name: &str) -> f64 {
    scrape.series.iter().filter(|(k, _)| *k == name || k.starts_with(&format!("{name}{{"))).map(|(_, v)| v).sum()
}

#[test]
fn concurrent_exchanges_pair_with_their_own_upstream_exchange_and_no_cache_hit_is_invented() {
    let _serial = serial();
    let mock = MockProvider::start(0).unwrap();
    let nginx = Nginx::start(&[("openai", mock.port)]);
    let agent = agent_on(nginx.guard.pid(), &mock, &[]);
    const CLIENTS: usize = 16;
    const PER_CLIENT: usize = 12;
    // 16 keep-alive clients at once; latencies vary per request so that
    // exchanges overlap in every order; JSON and streams, keep-alive and
    // HTTP/1.0 upstreams.
    let sent: Vec<String> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..CLIENTS)
            .map(|t| {
                let port = nginx.port;
                scope.spawn(move || {
                    let mut c = Client::connect(port).unwrap();
                    let mut ids = Vec::new();
                    for i in 0..PER_CLIENT {
                        let id = format!("t{t}-r{i}");
                        let delay = (t * 7 + i * 13) % 60;
                        let path = match i % 3 {
                            0 => format!("/openai-ka/v1/chat/completions?delay_ms={delay}"),
                            1 => format!("/openai/v1/chat/completions?delay_ms={delay}&bytes=2000"),
                            _ => format!("/openai-ka/v1/chat/completions?events=3&interval_ms={}&usage=1", delay / 3),
                        };
                        c.extra_headers = format!("x-request-id: {id}\r\n");
                        assert_eq!(c.request(&path, 300, false).unwrap(), 200, "{path}");
                        ids.push(id);
                    }
                    ids
                })
            })
            .collect();
        threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
    });
    let total = CLIENTS * PER_CLIENT;
    assert_eq!(mock.snapshot().0, total as u64, "every request went upstream");
    agent.wait_for_printed_records(total, total, Duration::from_secs(60));
    let clients = agent.printed_records("client");
    let upstreams = agent.printed_records("upstream");
    let ids = |r: &[Value]| {
        let mut ids: Vec<String> =
            r.iter().map(|x| x["pairing"]["request_id"].as_str().unwrap_or("").to_string()).collect();
        ids.sort();
        ids
    };
    let mut sent = sent;
    sent.sort();
    assert_eq!(ids(&clients), sent, "one client record per request, each with the id the provider echoed");
    assert_eq!(ids(&upstreams), sent, "one upstream record per request");
    assert_eq!((clients.len(), upstreams.len()), (total, total));
    for r in &clients {
        assert_eq!(
            r["pairing"]["upstream_request_id"], r["pairing"]["request_id"],
            "paired with another exchange: {r}"
        );
        assert_eq!(r["pairing"]["confidence"], "certain", "{r}");
        assert_eq!(r["cache_hit"], false, "{r}");
        assert_eq!(r["upstream_provider"], "openai", "{r}");
    }
    let s = agent.scrape();
    assert_eq!(sum_of(&s, "llm_cache_hits_total"), 0.0, "{}", s.text);
}

/// nginx with a response cache in front of the mock: POSTs to the same
/// URI are answered from the cache after the first.
fn start_caching_nginx(upstream: u16) -> (Guard, u16, TempDir) {
    let dir = TempDir::new("nginx-cache");
    let port = harness::free_port();
    let d = dir.0.display();
    let conf = format!(
        "worker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 256; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  proxy_cache_path {d}/cache keys_zone=llm:1m;\n  server {{\n    listen 127.0.0.1:{port};\n    location /openai/ {{\n      proxy_pass http://127.0.0.1:{upstream}/;\n      proxy_cache llm;\n      proxy_cache_methods POST;\n      proxy_cache_key $request_uri;\n      proxy_cache_valid 200 10m;\n    }}\n  }}\n}}\n"
    );
    let path = dir.0.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    let guard = Guard::spawn(
        "nginx",
        Command::new(harness::NGINX).arg("-c").arg(&path).args(["-g", "daemon off;"]).stdout(Stdio::null()),
    );
    harness::wait_for_port(port, Duration::from_secs(10));
    (guard, port, dir)
}

#[test]
fn every_response_cache_hit_is_counted() {
    let _serial = serial();
    let mock = MockProvider::start(0).unwrap();
    let (nginx, port, _dir) = start_caching_nginx(mock.port);
    let agent = agent_on(nginx.pid(), &mock, &[]);
    const URIS: usize = 5;
    const REPEATS: usize = 4;
    let mut c = Client::connect(port).unwrap();
    for round in 0..REPEATS {
        for u in 0..URIS {
            let path = format!("/openai/v1/chat/completions?bytes={}", 400 + u * 100);
            assert_eq!(c.request(&path, 300, false).unwrap(), 200, "round {round}: {path}");
        }
    }
    drop(c);
    let upstream_calls = mock.snapshot().0 as usize;
    let hits = URIS * REPEATS - upstream_calls;
    assert_eq!(upstream_calls, URIS, "nginx answered the repeats from its cache");
    agent.wait_for_printed_records(URIS * REPEATS, upstream_calls, Duration::from_secs(60));
    let clients = agent.printed_records("client");
    assert_eq!(clients.len(), URIS * REPEATS);
    let by_hit = clients.iter().fold(HashMap::<String, usize>::new(), |mut m, r| {
        *m.entry(r["cache_hit"].to_string()).or_default() += 1;
        m
    });
    assert_eq!(by_hit.get("true").copied().unwrap_or(0), hits, "{by_hit:?}");
    assert_eq!(by_hit.get("false").copied().unwrap_or(0), upstream_calls, "{by_hit:?}");
    let s = agent.wait_until(Duration::from_secs(10), "cache hits exported", |s| {
        sum_of(s, "llm_cache_hits_total") >= hits as f64
    });
    assert_eq!(sum_of(&s, "llm_cache_hits_total"), hits as f64, "{}", s.text);
}

#[test]
fn audit_state_is_released_when_connections_close_while_capture_is_off_or_events_drop() {
    let _serial = serial();
    let mock = MockProvider::start(0).unwrap();
    let nginx = Nginx::start(&[("openai", mock.port)]);
    // An 8 KiB ring overflows on every large body: events (close events
    // among them) drop, and the circuit breaker switches capture off and on.
    let agent = agent_on(nginx.guard.pid(), &mock, &["--capture-ring-kib", "8"]);
    let until = std::time::Instant::now() + Duration::from_secs(12);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while std::time::Instant::now() < until {
                    let mut c = Client::connect(nginx.port).unwrap();
                    assert_eq!(c.request("/openai/v1/chat/completions?bytes=100000", 300, true).unwrap(), 200);
                }
            });
        }
    });
    let s = agent.scrape();
    assert!(s.get("metrics_agent_capture_breaker_trips_total") >= 1, "capture went off at least once:\n{}", s.text);
    // Every client and (HTTP/1.0) upstream connection is closed now.
    agent.wait_until(Duration::from_secs(30), "the audit path to hold no connection and no memory", |s| {
        s.get("metrics_agent_audit_connections") == 0 && s.get("metrics_agent_audit_memory_bytes") == 0
    });
}

#[test]
fn a_20_mib_stream_ends_with_its_usage_within_bounded_audit_memory() {
    let _serial = serial();
    let mock = MockProvider::start(0).unwrap();
    let nginx = Nginx::start(&[("openai", mock.port)]);
    // No CPU limit on capture: this test is about the parser's memory and
    // exactness over a long stream (the debug build parses it slowly).
    let dir = TempDir::new("long-stream");
    let config = dir.0.join("agent.toml");
    std::fs::write(&config, "capture_cpu_budget_percent = 0\n").unwrap();
    let agent = agent_on(nginx.guard.pid(), &mock, &["--config", config.to_str().unwrap()]);
    // 100,000 events of about 220 bytes, 20 per write, then the usage chunk.
    let path = "/openai-ka/v1/chat/completions?events=100000&batch=20&interval_ms=1&pad=160&usage=1";
    let done = std::sync::atomic::AtomicBool::new(false);
    let (status, received, peak) = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let t = std::time::Instant::now();
                match harness::http_get(agent.port, "/metrics", "text/plain") {
                    Some(text) => peak = peak.max(Scrape::parse(&text).get("metrics_agent_audit_memory_bytes")),
                    None => eprintln!("scrape failed after {:?}", t.elapsed()),
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        });
        let mut c = Client::connect(nginx.port).unwrap();
        let status = c.request(path, 300, false).unwrap();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        (status, c.truth.bytes_received, watcher.join().unwrap())
    });
    assert_eq!(status, 200);
    assert!(received > 20 << 20, "the stream is over 20 MiB: {received}");
    let sent = mock.usage_sent();
    assert_eq!((sent.input, sent.output, sent.responses), (21, 55, 1));
    agent.wait_for_printed_records(1, 1, Duration::from_secs(60));
    let s = agent.scrape();
    let capture: Vec<_> = s.series.iter().filter(|(k, _)| k.starts_with("metrics_agent_capture")).collect();
    assert_eq!(s.get("metrics_agent_capture_dropped_events_total"), 0, "no event dropped: {capture:?}");
    for side in ["client", "upstream"] {
        let r = &agent.printed_records(side)[0];
        assert_eq!((r["tokens"]["input"].as_u64(), r["tokens"]["output"].as_u64()), (Some(21), Some(55)), "{r}");
        assert_eq!(r["cost_usd"], "0.00003615", "21 x 0.15e-6 + 55 x 0.60e-6: {r}");
        assert_eq!((r["streaming"].clone(), r["truncated"].clone()), (true.into(), false.into()), "{r}");
    }
    // Bound: the parsers keep one event and one captured chunk per side,
    // far below the 256 KiB message cap a buffered body would fill.
    assert!(peak < 128 * 1024, "audit memory peaked at {peak} bytes");
}

/// The exchanges each gateway test client makes: streams of the three
/// streaming APIs, JSON, embeddings and provider errors.
const GATEWAY_MIX: [(&str, u16); 7] = [
    ("/v1/chat/completions?events=6&interval_ms=10&usage=1", 200),
    ("/v1/responses?events=4&interval_ms=10", 200),
    ("/v1/messages?events=5&interval_ms=10", 200),
    ("/v1/chat/completions?bytes=3000", 200),
    ("/v1/embeddings", 200),
    ("/v1/chat/completions?status=429", 429),
    ("/v1/messages?status=500", 500),
];

/// What the gateway clients sent: (request id, status) pairs, and the
/// bytes they sent and received.
struct Sent {
    exchanges: Vec<(String, u16)>,
    bytes_sent: u64,
    bytes_received: u64,
}

/// `clients` concurrent keep-alive clients, each sending `rounds` times
/// `mix` with a unique `x-request-id` and `body_len`-byte request bodies.
fn gateway_traffic(port: u16, clients: usize, rounds: usize, body_len: usize, mix: &[(&str, u16)]) -> Sent {
    let per_client: Vec<Sent> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..clients)
            .map(|t| {
                scope.spawn(move || {
                    let mut c = Client::connect(port).unwrap();
                    let mut sent = Vec::new();
                    for r in 0..rounds {
                        for (i, (path, expected)) in mix.iter().enumerate() {
                            let id = format!("g{t}-{r}-{i}");
                            c.extra_headers = format!("x-request-id: {id}\r\n");
                            assert_eq!(c.request(path, body_len, false).unwrap(), *expected, "{path}");
                            sent.push((id, *expected));
                        }
                    }
                    Sent { exchanges: sent, bytes_sent: c.truth.bytes_sent, bytes_received: c.truth.bytes_received }
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    Sent {
        exchanges: per_client.iter().flat_map(|c| c.exchanges.clone()).collect(),
        bytes_sent: per_client.iter().map(|c| c.bytes_sent).sum(),
        bytes_received: per_client.iter().map(|c| c.bytes_received).sum(),
    }
}

/// Every exchange has one record on each of `sides` with the status the
/// client saw, their tokens sum to what the provider sent, and (both sides
/// checked) no framing was lost.
fn assert_gateway_records(agent: &Agent, mock: &MockProvider, sent: &[(String, u16)], sides: &[&str]) {
    let wanted = |side| if sides.contains(&side) { sent.len() } else { 0 };
    agent.wait_for_printed_records(wanted("client"), wanted("upstream"), Duration::from_secs(60));
    let expected: HashMap<&str, u16> = sent.iter().map(|(id, s)| (id.as_str(), *s)).collect();
    for &side in sides {
        let records = agent.printed_records(side);
        let mut seen = HashMap::new();
        for r in &records {
            let id = r["pairing"]["request_id"].as_str().unwrap_or_default().to_string();
            assert_eq!(expected.get(id.as_str()).map(|s| u64::from(*s)), r["status"].as_u64(), "{side}: {r}");
            *seen.entry(id).or_insert(0) += 1;
        }
        assert!(
            seen.values().all(|n| *n == 1) && seen.len() == sent.len(),
            "{side}: one record per exchange: {seen:?}\nscrape:\n{}",
            agent.scrape().text
        );
        let sum = |k: &str| records.iter().filter_map(|r| r["tokens"][k].as_u64()).sum::<u64>();
        let truth = mock.usage_sent();
        assert_eq!((sum("input"), sum("output")), (truth.input, truth.output), "{side} tokens");
    }
    // The counter has no side: it is judged only when both sides are.
    if sides.contains(&"upstream") {
        let s = agent.scrape();
        assert_eq!(s.get("metrics_agent_framing_lost_total"), 0, "{}", s.text);
    }
}

// The client side alone is not a test of its own: each gateway's
// both-sides test checks every client-side record and byte too, in every
// mode (the default `--attach auto` is sockets here, which the other suites
// start with); a separate run cost an agent start and the traffic again.

#[test]
fn a_node_js_gateway_streaming_with_res_write_to_https_upstreams_is_exact_on_both_sides() {
    for_each_mode(modes::ALL, |mode| node_gateway_is_exact("https", &["client", "upstream"], &mode.args()));
}

#[test]
fn a_node_js_gateway_calling_its_provider_with_fetch_is_exact_on_its_https_upstream_side() {
    for_each_mode(modes::ALL, |mode| node_gateway_is_exact("fetch", &["client", "upstream"], &mode.args()));
}

/// The Node.js gateway (`client`: Node's `https` or `fetch` to the provider)
/// under the agent, driven by 4 clients with the gateway mix; checks the
/// records of `sides`, client bytes and (with the upstream side) provider
/// requests. `attach`: extra agent arguments (`--attach MODE`).
fn node_gateway_is_exact(client: &str, sides: &[&str], attach: &[&str]) {
    let _serial = serial();
    let node = std::path::Path::new("/usr/bin/node");
    assert!(node.exists(), "Node.js (/usr/bin/node) is needed: `cargo xtask setup` installs it");
    let mock = MockProvider::start(0).unwrap();
    let tls = harness::TlsProvider::start(mock.port);
    let port = harness::free_port();
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js/gateway.js");
    let gateway = Guard::spawn(
        "node gateway",
        Command::new(node)
            .arg(&script)
            .args([port.to_string(), "127.0.0.1".into(), tls.port.to_string(), client.into()])
            .env("NODE_TLS_REJECT_UNAUTHORIZED", "0")
            .stderr(Stdio::null()),
    );
    harness::wait_for_port(port, Duration::from_secs(10));
    let (pid, provider) = (gateway.pid().to_string(), format!("openai=127.0.0.1:{}", tls.port));
    let mut args = vec!["--pid", &pid, "--provider", &provider, "--print-requests"];
    args.extend_from_slice(attach);
    let agent = Agent::start(&args);
    let sent = gateway_traffic(port, 4, 2, 300, &GATEWAY_MIX);
    assert_eq!(mock.snapshot().0, sent.exchanges.len() as u64);
    assert_gateway_records(&agent, &mock, &sent.exchanges, sides);
    let s =
        agent.wait_until(Duration::from_secs(10), "client bytes equal to what the clients sent and received", |s| {
            s.get("llm_proxy_bytes_received_total{side=\"client\"}") == sent.bytes_sent
                && s.get("llm_proxy_bytes_sent_total{side=\"client\"}") == sent.bytes_received
        });
    if sides.contains(&"upstream") {
        let n = sent.exchanges.len() as u64;
        assert_eq!(s.get("llm_proxy_provider_requests_total{provider=\"openai\"}"), n, "{}", s.text);
        assert_eq!(s.get("metrics_agent_tls_untied_bytes_total"), 0, "{}", s.text);
    }
}

/// The Python gateway under the agent, driven by 4 clients: request bodies
/// over 100 KiB, gzip answers, streams, errors; checks the `sides` records.
/// `attach`: extra agent arguments (`--attach MODE`).
fn python_gateway_is_exact(sides: &[&str], attach: &[&str]) {
    let _serial = serial();
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let python = std::path::PathBuf::from(home).join(".cache/metrics-agent/gateway-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: `cargo xtask setup` installs uvicorn, uvloop and httpx there",
        python.display()
    );
    let mock = MockProvider::start(0).unwrap();
    let tls = harness::TlsProvider::start(mock.port);
    let port = harness::free_port();
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("py/gateway.py");
    let gateway = Guard::spawn(
        "python gateway",
        Command::new(&python).arg(&script).args([port.to_string(), "127.0.0.1".into(), tls.port.to_string()]),
    );
    harness::wait_for_port(port, Duration::from_secs(20));
    let (pid, provider) = (gateway.pid().to_string(), format!("openai=127.0.0.1:{}", tls.port));
    let mut args = vec!["--pid", &pid, "--provider", &provider, "--print-requests"];
    args.extend_from_slice(attach);
    let agent = Agent::start(&args);
    // Request bodies over 100 KiB, gzip answers, streams, errors.
    let mut mix = GATEWAY_MIX.to_vec();
    mix.push(("/v1/chat/completions?encoding=1&bytes=5000", 200));
    let sent = gateway_traffic(port, 4, 2, 110 * 1024, &mix);
    assert_eq!(mock.snapshot().0, sent.exchanges.len() as u64);
    // Client bytes exact (a write's return probe may run just after the
    // client read the bytes: wait for it, never for more).
    agent.wait_until(Duration::from_secs(10), "client bytes equal to what the clients sent and received", |s| {
        s.get("llm_proxy_bytes_received_total{side=\"client\"}") == sent.bytes_sent
            && s.get("llm_proxy_bytes_sent_total{side=\"client\"}") == sent.bytes_received
    });
    assert_gateway_records(&agent, &mock, &sent.exchanges, sides);
}

#[test]
fn a_python_gateway_on_uvicorn_and_uvloop_is_exact_on_its_https_upstream_side() {
    for_each_mode(modes::ALL, |mode| python_gateway_is_exact(&["client", "upstream"], &mode.args()));
}

/// One thread drives several TLS connections through memory BIOs, reading
/// every readable socket before decrypting anything, decrypting in the
/// reverse order, and starting a new handshake between a socket's read and
/// its decryption (`py/interleaved_memory_bio_client.py`): every exchange
/// still has its upstream record, with its own request id.
#[test]
fn tls_connections_decrypted_out_of_order_through_memory_bios_are_each_tied_to_their_own_socket() {
    let _serial = serial();
    const CONNECTIONS: usize = 3;
    const ROUNDS: usize = 3;
    let mock = MockProvider::start(0).unwrap();
    let tls = harness::TlsProvider::start(mock.port);
    for_each_mode(modes::ALL, |mode: AttachMode| {
        let run = MemoryBioRun::start(tls.port, mode, CONNECTIONS, ROUNDS, false);
        let total = CONNECTIONS * ROUNDS;
        assert_eq!(run.answered, total);
        let agent = &run.agent;
        agent.wait_for_printed_records(0, total, Duration::from_secs(60));
        let mut ids: Vec<String> = agent
            .printed_records("upstream")
            .iter()
            .map(|r| {
                assert_eq!(r["status"], 200, "{r}");
                r["pairing"]["request_id"].as_str().unwrap_or_default().to_string()
            })
            .collect();
        ids.sort();
        let mut sent: Vec<String> =
            (0..CONNECTIONS).flat_map(|c| (0..ROUNDS).map(move |r| format!("m{c}-{r}"))).collect();
        sent.sort();
        assert_eq!(ids, sent, "one upstream record per exchange, each with its own request id");
        let s = agent.scrape();
        assert_eq!(s.get("llm_proxy_provider_requests_total{provider=\"openai\"}"), total as u64, "{}", s.text);
        assert_eq!(s.get("metrics_agent_tls_untied_bytes_total"), 0, "{}", s.text);
    });
}

/// The same client sending every ciphertext flight in two socket writes,
/// its first byte alone (`split`): no socket write begins with a TLS record,
/// so no `SSL*` is tied to its socket and its plaintext reaches no
/// connection. That loss is not silent: `metrics_agent_tls_untied_bytes_total`
/// equals the plaintext bytes the client's SSL objects wrote and read.
#[test]
fn tls_plaintext_tied_to_no_socket_is_counted_as_untied_bytes() {
    let _serial = serial();
    let mock = MockProvider::start(0).unwrap();
    let tls = harness::TlsProvider::start(mock.port);
    for_each_mode(modes::ALL, |mode: AttachMode| {
        let run = MemoryBioRun::start(tls.port, mode, 2, 2, true);
        assert_eq!(run.answered, 4);
        assert!(run.plaintext_bytes > 0);
        let s = run.agent.wait_until(Duration::from_secs(10), "untied bytes equal to the plaintext", |s| {
            s.get("metrics_agent_tls_untied_bytes_total") >= run.plaintext_bytes
        });
        assert_eq!(s.get("metrics_agent_tls_untied_bytes_total"), run.plaintext_bytes, "{}", s.text);
        assert_eq!(s.get("llm_proxy_provider_requests_total{provider=\"openai\"}"), 0, "{}", s.text);
    });
}

/// One run of `py/interleaved_memory_bio_client.py` under its own agent.
struct MemoryBioRun {
    agent: Agent,
    /// Exchanges answered 200.
    answered: usize,
    /// Plaintext bytes the client's SSL objects wrote and read.
    plaintext_bytes: u64,
    _client: Guard,
}

impl MemoryBioRun {
    /// Starts the client (`split`: each flight's first byte sent alone),
    /// an agent tracing it in `mode`, then lets the client run to its end.
    fn start(tls_port: u16, mode: AttachMode, connections: usize, rounds: usize, split: bool) -> Self {
        use std::io::{BufRead, Write};
        let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("py/interleaved_memory_bio_client.py");
        let mut args = vec!["127.0.0.1".to_string(), tls_port.to_string(), connections.to_string(), rounds.to_string()];
        if split {
            args.push("split".into());
        }
        let mut client = Guard::spawn(
            "interleaved TLS client",
            Command::new("python3").arg(&script).args(&args).stdin(Stdio::piped()).stdout(Stdio::piped()),
        );
        let (pid, provider) = (client.pid().to_string(), format!("openai=127.0.0.1:{tls_port}"));
        let [attach, name] = mode.args();
        let agent = Agent::start(&["--pid", &pid, attach, name, "--provider", &provider, "--print-requests"]);
        agent
            .wait_until(Duration::from_secs(10), "the client traced", |s| s.get("metrics_agent_traced_processes") >= 1);
        let mut stdin = client.child.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(client.child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [done, answered, plaintext_bytes] = fields[..] else { panic!("client printed {line:?}") };
        assert_eq!(done, "done", "{line}");
        Self {
            agent,
            answered: answered.parse().unwrap(),
            plaintext_bytes: plaintext_bytes.parse().unwrap(),
            _client: client,
        }
    }
}
