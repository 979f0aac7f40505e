//! End-to-end tests (root): the real agent attached to real proxies (nginx
//! from Debian's packages and the send/recv test proxy), with a mock
//! provider and a client that count ground truth independently. Every count
//! and byte total must match exactly, in every data path (`--attach`) the
//! test names: each test runs its body once per mode, sharing its proxies
//! and mock providers between the modes.

use std::{process::Command, time::Duration};

use llm_proxy_e2e::{
    client::{Client, Truth},
    go,
    harness::{self, Agent, Nginx, serial},
    metrics::Scrape,
    mock::MockProvider,
    modes::{self, AttachMode, for_each_mode},
    records::{check_mix_of_four, token_total},
};

/// Requests whose duration is >= 1 s (the streams below take 1.2 s).
const LONG_STREAMS: u64 = 2;

/// The traffic mix: keep-alive and fresh connections, two providers,
/// statuses 200/429/500, a request body over 64 KiB, large responses,
/// streams over 1 s and a client that resets mid-stream.
fn traffic(proxy_port: u16, streams_via_keepalive_upstream: bool) -> Truth {
    let mut truth = Truth::default();
    // Keep-alive client connection with several requests.
    let mut c = Client::connect(proxy_port).unwrap();
    for (path, status) in [
        ("/openai/v1/chat/completions?delay_ms=5", 200),
        ("/openai/v1/chat/completions?status=429", 429),
        ("/anthropic/v1/messages?status=500", 500),
        ("/anthropic/v1/messages?bytes=200000", 200),
        ("/openai/v1/chat/completions?bytes=5000&delay_ms=20", 200),
    ] {
        assert_eq!(c.request(path, 300, false).unwrap(), status, "{path}");
    }
    // A request body over 64 KiB on the same connection.
    assert_eq!(c.request("/openai/v1/embeddings", 70 * 1024, false).unwrap(), 200);
    truth.add(&c.truth);
    // Fresh connections, closed by the client after one request.
    for i in 0..6 {
        let mut c = Client::connect(proxy_port).unwrap();
        let path =
            if i % 2 == 0 { "/openai/v1/chat/completions?bytes=1200" } else { "/anthropic/v1/messages?status=429" };
        c.request(path, 500, true).unwrap();
        truth.add(&c.truth);
    }
    // Request lines cut inside the method token, on a new connection (its
    // first bytes decide its protocol) and on a reused one.
    let mut c = Client::connect(proxy_port).unwrap();
    assert_eq!(c.request_split("/openai/v1/chat/completions", 2).unwrap(), 200);
    assert_eq!(c.request_split("/anthropic/v1/messages", 4).unwrap(), 200);
    truth.add(&c.truth);
    // Streams of 1.2 s (12 events, 100 ms apart).
    let stream_prefix = if streams_via_keepalive_upstream { "openai-ka" } else { "openai" };
    for _ in 0..LONG_STREAMS {
        let mut c = Client::connect(proxy_port).unwrap();
        let path = format!("/{stream_prefix}/v1/chat/completions?events=12&interval_ms=100");
        assert_eq!(c.request(&path, 200, false).unwrap(), 200);
        truth.add(&c.truth);
    }
    // A burst of 100 small chunks (~6 KB) written at once: many chunks per
    // read, parsed through the kernel's tail-call continuation.
    let mut c = Client::connect(proxy_port).unwrap();
    assert_eq!(
        c.request(&format!("/{stream_prefix}/v1/chat/completions?events=100&burst=1"), 200, false).unwrap(),
        200
    );
    truth.add(&c.truth);
    // A client that gives up after the first event of a slow stream.
    let c = Client::connect(proxy_port).unwrap();
    let t = c.request_and_abort("/anthropic/v1/messages?events=20&interval_ms=200").unwrap();
    truth.add(&t);
    truth
}

/// Waits until the agent has seen every request finish, then checks every
/// hot-path counter against the client's and the providers' ground truth.
fn assert_matches(
    agent: &Agent,
    truth: &Truth,
    openai: &MockProvider,
    anthropic: &MockProvider,
    long_streams: u64,
) -> Scrape {
    openai.wait_idle(Duration::from_secs(20));
    anthropic.wait_idle(Duration::from_secs(20));
    let (oa_req, oa_in, oa_out) = openai.snapshot();
    let (an_req, an_in, an_out) = anthropic.snapshot();
    let s = agent.wait_until(Duration::from_secs(30), "all requests to finish", |s| {
        s.get("llm_proxy_request_duration_seconds_count") == truth.requests
            && s.get("llm_proxy_bytes_sent_total{side=\"client\"}") == truth.bytes_received
            && s.get("llm_proxy_provider_request_duration_seconds_count{provider=\"openai\"}") == oa_req
            && s.get("llm_proxy_provider_request_duration_seconds_count{provider=\"anthropic\"}") == an_req
    });
    let m = |k: &str| s.get(k);
    assert_eq!(m("llm_proxy_requests_total"), truth.requests, "requests");
    assert_eq!(m("llm_proxy_requests_failed_total"), truth.failed(), "failed: {truth:?}");
    assert_eq!(m("llm_proxy_responses_total{class=\"2xx\"}"), truth.status_class(2), "2xx");
    assert_eq!(m("llm_proxy_responses_total{class=\"4xx\"}"), truth.status_class(4), "4xx");
    assert_eq!(m("llm_proxy_responses_total{class=\"5xx\"}"), truth.status_class(5), "5xx");
    assert_eq!(m("llm_proxy_responses_total{class=\"none\"}"), 0, "none");
    assert_eq!(m("llm_proxy_bytes_received_total{side=\"client\"}"), truth.bytes_sent, "bytes from clients");
    assert_eq!(m("llm_proxy_bytes_sent_total{side=\"client\"}"), truth.bytes_received, "bytes to clients");
    assert_eq!(m("llm_proxy_bytes_sent_total{side=\"upstream\"}"), oa_in + an_in, "bytes to providers");
    assert_eq!(m("llm_proxy_bytes_received_total{side=\"upstream\"}"), oa_out + an_out, "bytes from providers");
    assert_eq!(m("llm_proxy_provider_requests_total{provider=\"openai\"}"), oa_req, "openai requests");
    assert_eq!(m("llm_proxy_provider_requests_total{provider=\"anthropic\"}"), an_req, "anthropic requests");
    assert_eq!(m("llm_proxy_provider_requests_total{provider=\"other\"}"), 0, "other");
    // Provider failures: the mocks' error answers, plus the stream the proxy
    // cut short when its client went away.
    let errors = openai.stats.errors.load(std::sync::atomic::Ordering::SeqCst)
        + anthropic.stats.errors.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        m("llm_proxy_provider_requests_failed_total{provider=\"openai\"}")
            + m("llm_proxy_provider_requests_failed_total{provider=\"anthropic\"}"),
        errors + truth.aborted,
        "provider failures"
    );
    // Histograms: one observation per request; streams of >= 1 s land at or
    // above the 1.048576 s bucket in duration, but their TTFB is fast.
    assert_eq!(m("llm_proxy_request_duration_seconds_count"), truth.requests);
    assert_eq!(m("llm_proxy_time_to_first_byte_seconds_count"), truth.requests);
    let bucket = |le: &str| s.bucket("llm_proxy_request_duration_seconds", "", le);
    assert_eq!(bucket("0.524288"), truth.requests - long_streams, "all but the streams take < 0.5 s");
    assert_eq!(bucket("1.048576"), truth.requests - long_streams, "the 1.2 s streams are not below 1.05 s");
    assert_eq!(bucket("2.097152"), truth.requests, "the 1.2 s streams are below 2.1 s");
    assert_eq!(
        s.bucket("llm_proxy_time_to_first_byte_seconds", "", "0.524288"),
        truth.requests,
        "TTFB of every request < 0.5 s"
    );
    assert_eq!(m("metrics_agent_framing_lost_total"), 0, "framing lost");
    assert_eq!(m("metrics_agent_unclassified_connections_total"), 0, "unclassified");
    llm_proxy_e2e::metrics::promtool_check(&s.text, "prometheus text");
    // promtool 2.42 parses only the Prometheus text format; the OpenMetrics
    // rendering is checked for its terminator and the same samples.
    let om = agent.scrape_openmetrics();
    assert!(om.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    assert!(om.contains("# TYPE llm_proxy_requests counter\nllm_proxy_requests_total "), "OpenMetrics counter naming");
    s
}

fn providers_args(openai: &MockProvider, anthropic: &MockProvider) -> Vec<String> {
    vec![
        "--provider".into(),
        format!("openai=127.0.0.1:{}", openai.port),
        "--provider".into(),
        format!("anthropic=127.0.0.1:{}", anthropic.port),
    ]
}

/// Two mock providers behind nginx, shared by a test's runs in each mode.
struct NginxWithProviders {
    openai: MockProvider,
    anthropic: MockProvider,
    nginx: Nginx,
}

impl NginxWithProviders {
    fn start() -> Self {
        let openai = MockProvider::start(0).unwrap();
        let anthropic = MockProvider::start(0).unwrap();
        let nginx = Nginx::start_private(&[("openai", openai.port), ("anthropic", anthropic.port)]);
        Self { openai, anthropic, nginx }
    }

    /// The providers' counts back to zero, then the agent tracing nginx
    /// with `--exe` in `mode`, the providers named, and `extra` arguments;
    /// returned once the master and both workers are traced.
    fn agent(&self, mode: AttachMode, extra: &[&str]) -> Agent {
        self.agent_with_env(mode, extra, &[])
    }

    /// `agent`, with extra environment variables.
    fn agent_with_env(&self, mode: AttachMode, extra: &[&str], env: &[(&str, &str)]) -> Agent {
        self.openai.reset();
        self.anthropic.reset();
        let mut args: Vec<String> = vec!["--exe".into(), self.nginx.exe.display().to_string()];
        args.extend(mode.args().map(String::from));
        args.extend(extra.iter().map(|a| a.to_string()));
        args.extend(providers_args(&self.openai, &self.anthropic));
        let agent = Agent::start_with_env(&as_strs(&args), env);
        agent.wait_for_nginx();
        agent
    }
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn nginx_counts_match_ground_truth_exactly() {
    let _serial = serial();
    let setup = NginxWithProviders::start();
    for_each_mode(modes::ALL, |mode| {
        let agent = setup.agent(mode, &[]);
        let truth = traffic(setup.nginx.port, true);
        let s = assert_matches(&agent, &truth, &setup.openai, &setup.anthropic, LONG_STREAMS);
        assert!(s.sum("metrics_agent_probe_hits_total") > 0, "probes fired");
    });
}

#[test]
fn send_recv_proxy_counts_match_and_other_processes_are_not_counted() {
    let _serial = serial();
    let openai = MockProvider::start(0).unwrap();
    let anthropic = MockProvider::start(0).unwrap();
    let routes = [("openai", openai.port), ("anthropic", anthropic.port), ("openai-ka", openai.port)];
    let (proxy, port) = harness::start_send_recv_proxy(&routes);
    // A second instance of the same binary: same code, same libc, not a target.
    let other_openai = MockProvider::start(0).unwrap();
    let (_other, other_port) = harness::start_send_recv_proxy(&[
        ("openai", other_openai.port),
        ("anthropic", other_openai.port),
        ("openai-ka", other_openai.port),
    ]);
    for_each_mode(modes::UPROBES_AND_SOCKETS, |mode| {
        openai.reset();
        anthropic.reset();
        let agent = agent_on_pid(proxy.pid(), mode, &[], &openai, &anthropic);
        // Same traffic through the non-target proxy at the same time.
        let other = std::thread::spawn(move || traffic(other_port, true));
        let truth = traffic(port, true);
        other.join().unwrap();
        assert_matches(&agent, &truth, &openai, &anthropic, LONG_STREAMS);
        let s = agent.scrape();
        assert_eq!(s.get("metrics_agent_traced_processes"), 1);
    });
}

/// The agent tracing process `pid` in `mode` with `extra` arguments and
/// both providers named.
fn agent_on_pid(pid: u32, mode: AttachMode, extra: &[&str], openai: &MockProvider, anthropic: &MockProvider) -> Agent {
    let mut args = vec!["--pid".to_string(), pid.to_string()];
    args.extend(mode.args().map(String::from));
    args.extend(extra.iter().map(|a| a.to_string()));
    args.extend(providers_args(openai, anthropic));
    Agent::start(&as_strs(&args))
}

#[test]
fn go_reverse_proxy_without_libc_is_counted_exactly() {
    let _serial = serial();
    let dir = harness::TempDir::new("go");
    let binary = go::build_reverse_proxy(&dir);
    let openai = MockProvider::start(0).unwrap();
    let anthropic = MockProvider::start(0).unwrap();
    let routes = [("openai", openai.port), ("anthropic", anthropic.port), ("openai-ka", openai.port)];
    let (proxy, port) = go::start_reverse_proxy(&binary, &routes);
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", proxy.pid())).unwrap();
    assert!(!maps.contains("libc"), "the Go proxy must not load libc:\n{maps}");
    for_each_mode(modes::WITHOUT_LIBC, |mode| {
        openai.reset();
        anthropic.reset();
        let agent = agent_on_pid(proxy.pid(), mode, &["--print-requests"], &openai, &anthropic);
        agent.wait_until(Duration::from_secs(10), "the Go proxy traced", |s| {
            s.get("metrics_agent_traced_processes") == 1
        });
        // Exchanges with known usage on one keep-alive connection: plain and
        // streamed, both providers, an error.
        let mut c = Client::connect(port).unwrap();
        for (path, status) in [
            ("/openai/v1/chat/completions", 200),
            ("/openai-ka/v1/chat/completions?events=6&interval_ms=20&usage=1", 200),
            ("/anthropic/v1/messages?events=4&interval_ms=20", 200),
            ("/openai/v1/chat/completions?status=429", 429),
        ] {
            let answered = c.request(path, 300, false).unwrap_or_else(|e| panic!("{path} through the Go proxy: {e}"));
            assert_eq!(answered, status, "{path}");
        }
        let mut truth = c.truth.clone();
        drop(c);
        agent.wait_for_printed_records(4, 4, Duration::from_secs(20));
        let (oa, an) = (openai.usage_sent(), anthropic.usage_sent());
        for side in ["client", "upstream"] {
            let r = agent.printed_records(side);
            check_mix_of_four(&r, side);
            assert_eq!(
                (token_total(&r, "input"), token_total(&r, "output")),
                (oa.input + an.input, oa.output + an.output),
                "{side}: the tokens the providers sent: {r:?}"
            );
        }
        // Then the whole traffic mix: every hot-path counter exact.
        truth.add(&traffic(port, true));
        assert_matches(&agent, &truth, &openai, &anthropic, LONG_STREAMS);
    });
}

#[test]
fn a_target_started_after_the_agent_is_counted() {
    let _serial = serial();
    let openai = MockProvider::start(0).unwrap();
    let anthropic = MockProvider::start(0).unwrap();
    let dir = harness::TempDir::new("late-target");
    let exe = harness::private_send_recv_proxy(&dir);
    for_each_mode(modes::UPROBES_AND_SOCKETS, |mode| {
        openai.reset();
        anthropic.reset();
        let mut args = vec!["--exe".to_string(), exe.display().to_string()];
        args.extend(mode.args().map(String::from));
        args.extend(providers_args(&openai, &anthropic));
        let agent = Agent::start(&as_strs(&args));
        assert_eq!(agent.scrape().get("metrics_agent_traced_processes"), 0);
        let (_proxy, port) = harness::start_send_recv_proxy_exe(
            &exe,
            &[("openai", openai.port), ("anthropic", anthropic.port), ("openai-ka", openai.port)],
        );
        agent.wait_until(Duration::from_secs(10), "the new proxy to be traced", |s| {
            s.get("metrics_agent_traced_processes") == 1
        });
        let truth = traffic(port, false);
        assert_matches(&agent, &truth, &openai, &anthropic, LONG_STREAMS);
    });
}

#[test]
fn framing_beyond_the_kernel_budget_is_counted_and_counts_stay_exact() {
    let _serial = serial();
    let openai = MockProvider::start(0).unwrap();
    let (proxy, port) = harness::start_send_recv_proxy(&[("openai", openai.port)]);
    let provider = format!("openai=127.0.0.1:{}", openai.port);
    for_each_mode(modes::UPROBES_AND_SOCKETS, |mode| {
        openai.reset();
        let [attach, name] = mode.args();
        let agent = Agent::start(&["--pid", &proxy.pid().to_string(), attach, name, "--provider", &provider]);
        // 1500 tiny chunks (~90 KB) in one write: the proxy reads 16 KiB at a
        // time, more chunk framing per call than the kernel parses.
        let mut c = Client::connect(port).unwrap();
        assert_eq!(c.request("/openai/v1/chat/completions?events=1500&burst=1", 100, false).unwrap(), 200);
        // The same client connection carries on.
        for _ in 0..3 {
            assert_eq!(c.request("/openai/v1/chat/completions", 100, false).unwrap(), 200);
        }
        let truth = c.truth.clone();
        drop(c);
        openai.wait_idle(Duration::from_secs(10));
        let (up_requests, up_in, up_out) = openai.snapshot();
        let s = agent.wait_until(Duration::from_secs(20), "the connection to close", |s| {
            s.get("llm_proxy_request_duration_seconds_count") == truth.requests
        });
        assert!(s.get("metrics_agent_framing_lost_total") >= 1, "the loss is visible");
        assert_eq!(s.get("llm_proxy_requests_total"), truth.requests);
        assert_eq!(s.get("llm_proxy_bytes_received_total{side=\"client\"}"), truth.bytes_sent);
        assert_eq!(s.get("llm_proxy_bytes_sent_total{side=\"client\"}"), truth.bytes_received);
        assert_eq!(s.get("llm_proxy_bytes_sent_total{side=\"upstream\"}"), up_in);
        assert_eq!(s.get("llm_proxy_bytes_received_total{side=\"upstream\"}"), up_out);
        assert_eq!(s.get("llm_proxy_provider_requests_total{provider=\"openai\"}"), up_requests);
        assert_eq!(s.get("llm_proxy_responses_total{class=\"2xx\"}"), truth.requests, "every response is a 200");
    });
}

#[test]
fn connections_open_before_the_agent_and_reloaded_workers_are_counted() {
    let _serial = serial();
    let openai = MockProvider::start(0).unwrap();
    let anthropic = MockProvider::start(0).unwrap();
    let nginx = Nginx::start_private(&[("openai", openai.port), ("anthropic", anthropic.port)]);
    for_each_mode(modes::UPROBES_AND_SOCKETS, |mode| {
        // A keep-alive client connection and pooled upstream connections that
        // exist before the agent starts.
        let mut early = Client::connect(nginx.port).unwrap();
        for _ in 0..2 {
            assert_eq!(early.request("/openai-ka/v1/chat/completions", 100, false).unwrap(), 200);
        }
        let before = early.truth.clone();
        // The mock counts a response after writing it: wait until it has.
        openai.wait_idle(Duration::from_secs(10));
        let (oa_req0, oa_in0, oa_out0) = openai.snapshot();
        let mut args = vec!["--exe".to_string(), nginx.exe.display().to_string()];
        args.extend(mode.args().map(String::from));
        args.extend(providers_args(&openai, &anthropic));
        let agent = Agent::start(&as_strs(&args));
        agent.wait_for_nginx();
        let s = agent.scrape();
        assert!(
            s.get("metrics_agent_preexisting_connections_total") >= 2,
            "the open client and upstream connections are found"
        );
        for _ in 0..3 {
            assert_eq!(early.request("/openai-ka/v1/chat/completions", 100, false).unwrap(), 200);
        }
        let mut after = early.truth.clone();
        after.requests -= before.requests;
        after.bytes_sent -= before.bytes_sent;
        after.bytes_received -= before.bytes_received;
        openai.wait_idle(Duration::from_secs(10));
        let (oa_req, oa_in, oa_out) = openai.snapshot();
        let s = agent.wait_until(Duration::from_secs(10), "3 requests", |s| {
            s.get("llm_proxy_request_duration_seconds_count") == 3
        });
        assert_eq!(s.get("llm_proxy_requests_total"), 3, "requests on the pre-existing connection");
        assert_eq!(s.get("llm_proxy_bytes_received_total{side=\"client\"}"), after.bytes_sent);
        assert_eq!(s.get("llm_proxy_bytes_sent_total{side=\"client\"}"), after.bytes_received);
        assert_eq!(
            s.get("llm_proxy_provider_requests_total{provider=\"openai\"}"),
            oa_req - oa_req0,
            "pooled upstream connections"
        );
        assert_eq!(
            s.get("llm_proxy_bytes_sent_total{side=\"upstream\"}"),
            oa_in - oa_in0,
            "upstream bytes; mock requests {oa_req0} -> {oa_req}; agent log:\n{}\nscrape:\n{}",
            agent.log_text(),
            s.text
        );
        assert_eq!(s.get("llm_proxy_bytes_received_total{side=\"upstream\"}"), oa_out - oa_out0);
        drop(early);

        // Reload: nginx forks new workers, which the agent follows.
        // SAFETY: kill(2) on our child.
        unsafe { libc::kill(nginx.guard.pid() as i32, libc::SIGHUP) };
        std::thread::sleep(Duration::from_secs(2));
        // Our master's workers now (other nginx instances on the host are
        // traced too, so the gauge alone does not say which).
        let workers = harness::children_of(nginx.guard.pid());
        assert_eq!(workers.len(), 2, "nginx's new workers");
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while !workers.iter().all(|w| agent.log_text().contains(&format!("tracing process {w} "))) {
            assert!(std::time::Instant::now() < deadline, "new workers {workers:?} not traced:\n{}", agent.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
        let base = agent.scrape().get("llm_proxy_requests_total");
        let mut c = Client::connect(nginx.port).unwrap();
        for _ in 0..4 {
            assert_eq!(c.request("/anthropic/v1/messages", 100, false).unwrap(), 200);
        }
        agent.wait_until(Duration::from_secs(10), "requests through the new workers", |s| {
            s.get("llm_proxy_requests_total") == base + 4
        });
    });
}

/// `x-request-id` header lines of one width for client `client`'s request
/// `n`: the mock echoes the id in its header and body, so every answer to
/// the same request has the same size.
fn fixed_width_request_id(client: usize, n: u64) -> String {
    format!("x-request-id: race-{client:02}-{n:010}\r\n")
}

/// Every scrape taken while responses finish counts the bytes of each
/// response it counts as finished. All responses here have one size (the
/// client's and the mock's ground truth), so in every scrape the bytes sent
/// to clients are at least finished requests × that size, and the bytes read
/// from the provider at least its finished requests × its answer's size.
/// The agent used to read the byte counters before the duration histograms,
/// so a scrape during traffic could show a response finished without its
/// last bytes (a CI flake, one response short, of
/// `connections_open_before_the_agent_and_reloaded_workers_are_counted`).
#[test]
fn scrapes_taken_during_traffic_never_count_a_response_finished_before_its_bytes() {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };
    const CLIENTS: usize = 3;
    const TRAFFIC: Duration = Duration::from_secs(1);
    const PATH: &str = "/openai-ka/v1/chat/completions";
    let _serial = serial();
    let setup = NginxWithProviders::start();
    let NginxWithProviders { openai, nginx, .. } = &setup;
    for_each_mode(modes::UPROBES_AND_SOCKETS, |mode| {
        let agent = setup.agent(mode, &["--no-audit"]);
        // One exchange first: the sizes of a response to the client and of
        // the provider's answer.
        let mut first = Client::connect(nginx.port).unwrap();
        first.extra_headers = fixed_width_request_id(0, 0);
        assert_eq!(first.request(PATH, 100, false).unwrap(), 200);
        let response = first.truth.bytes_received;
        openai.wait_idle(Duration::from_secs(10));
        let answer = openai.snapshot().2;

        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (1..=CLIENTS)
            .map(|i| {
                let (stop, port) = (stop.clone(), nginx.port);
                std::thread::spawn(move || {
                    let mut truth = Truth::default();
                    let mut c = Client::connect(port).unwrap();
                    for n in 1.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        // A new connection before nginx's 1000th request on
                        // one, which it answers with `Connection: close`.
                        if n % 500 == 0 {
                            truth.add(&c.truth);
                            c = Client::connect(port).unwrap();
                        }
                        c.extra_headers = fixed_width_request_id(i, n);
                        let before = c.truth.bytes_received;
                        assert_eq!(c.request(PATH, 100, false).unwrap(), 200);
                        assert_eq!(c.truth.bytes_received - before, response, "every response has one size");
                    }
                    truth.add(&c.truth);
                    truth
                })
            })
            .collect();
        // Scrape in a tight loop while the clients run; stop at the first
        // scrape that breaks the invariant.
        let (mut scrapes, mut moved, mut last) = (0u64, 0u64, 0u64);
        let mut short = None;
        let deadline = std::time::Instant::now() + TRAFFIC;
        while short.is_none() && std::time::Instant::now() < deadline {
            let s = agent.scrape();
            let finished = s.get("llm_proxy_request_duration_seconds_count");
            let to_clients = s.get("llm_proxy_bytes_sent_total{side=\"client\"}");
            let answered = s.get("llm_proxy_provider_request_duration_seconds_count{provider=\"openai\"}");
            let from_provider = s.get("llm_proxy_bytes_received_total{side=\"upstream\"}");
            if to_clients < finished * response || from_provider < answered * answer {
                short = Some(format!(
                    "scrape {scrapes}: {to_clients} B sent to clients for {finished} finished responses of \
                     {response} B; {from_provider} B from the provider for {answered} finished answers of {answer} B"
                ));
            }
            moved += u64::from(finished != last);
            last = finished;
            scrapes += 1;
        }
        stop.store(true, Ordering::Relaxed);
        let mut truth = first.truth.clone();
        for c in clients {
            truth.add(&c.join().unwrap());
        }
        assert_eq!(short, None, "a scrape counted a response finished before its bytes");
        assert!(moved >= 5, "only {moved} of {scrapes} scrapes saw responses finish: no race was tried");
        // Once traffic stops the counts are exact.
        openai.wait_idle(Duration::from_secs(10));
        let (answers, _, answered_bytes) = openai.snapshot();
        assert_eq!(answered_bytes, answers * answer, "every answer has one size");
        agent.wait_until(Duration::from_secs(10), "every exchange counted", |s| {
            s.get("llm_proxy_request_duration_seconds_count") == truth.requests
                && s.get("llm_proxy_bytes_sent_total{side=\"client\"}") == truth.bytes_received
                && s.get("llm_proxy_bytes_received_total{side=\"upstream\"}") == answered_bytes
        });
        eprintln!("{scrapes} scrapes, {moved} during traffic, {} requests", truth.requests);
    });
}

#[test]
fn bytes_that_are_not_http1_are_counted_as_unclassified() {
    use std::io::{Read, Write};
    let _serial = serial();
    let openai = MockProvider::start(0).unwrap();
    let nginx = Nginx::start_private(&[("openai", openai.port)]);
    for_each_mode(modes::UPROBES_AND_SOCKETS, |mode| {
        let [attach, name] = mode.args();
        let provider = format!("openai=127.0.0.1:{}", openai.port);
        let exe = nginx.exe.display().to_string();
        let agent = Agent::start(&["--exe", &exe, attach, name, "--provider", &provider]);
        agent.wait_for_nginx();
        let mut sent = 0u64;
        let mut received = 0u64;
        let (mut tls_sent, mut tls_received) = (0u64, 0u64);
        // A TLS ClientHello-like record and an SSH banner sent to a plain
        // HTTP/1.1 listener: nginx answers 400 and closes. (An HTTP/2
        // preface is HTTP/2 now: tests/tests/http2.rs.)
        for hello in [
            [&[0x16u8, 0x03, 0x01, 0x00, 0x40, 0x01][..], &[0u8; 64][..]].concat(),
            b"SSH-2.0-OpenSSH_9.2p1\r\n".to_vec(),
        ] {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", nginx.port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(&hello).unwrap();
            sent += hello.len() as u64;
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            received += buf.len() as u64;
            if hello[0] == 0x16 {
                (tls_sent, tls_received) = (hello.len() as u64, buf.len() as u64);
            }
        }
        let s = agent.wait_until(Duration::from_secs(10), "both connections closed", |s| {
            s.get("llm_proxy_connections_closed_total") >= 2
        });
        // The TLS hello is TLS no probe decrypts (opaque); the SSH banner is unclassified.
        assert_eq!(s.get("metrics_agent_unclassified_connections_total"), 1);
        assert_eq!(s.get("metrics_agent_tls_connections_total"), 1);
        assert_eq!(s.get("metrics_agent_tls_plaintext_connections_total"), 0);
        assert_eq!(
            s.get("metrics_agent_unclassified_bytes_total") + s.get("metrics_agent_tls_opaque_bytes_total"),
            sent + received,
            "every byte both ways"
        );
        assert_eq!(s.get("metrics_agent_tls_opaque_bytes_total"), tls_sent + tls_received);
        // TLS wire bytes are counted apart from HTTP bytes.
        assert_eq!(s.get("llm_proxy_tls_bytes_received_total{side=\"client\"}"), tls_sent);
        assert_eq!(s.get("llm_proxy_tls_bytes_sent_total{side=\"client\"}"), tls_received);
        assert_eq!(s.get("llm_proxy_bytes_received_total{side=\"client\"}"), sent - tls_sent);
        assert_eq!(s.get("llm_proxy_bytes_sent_total{side=\"client\"}"), received - tls_received);
        assert_eq!(s.get("llm_proxy_requests_total"), 0, "no HTTP/1 request was seen");
    });
}

#[test]
fn audit_records_match_what_the_mock_provider_sent() {
    let _serial = serial();
    // Ids from a configured header; per-key attribution by salted hash.
    let dir = harness::TempDir::new("identity");
    let config = dir.0.join("agent.toml");
    let salt = "e2e-salt-0123456789";
    std::fs::write(&config, format!("[identity]\napplication_headers = [\"x-app\"]\napi_key_salt = \"{salt}\"\n"))
        .unwrap();
    let config = config.display().to_string();
    let setup = NginxWithProviders::start();
    let NginxWithProviders { openai: _openai, anthropic: _anthropic, nginx } = &setup;
    for_each_mode(modes::UPROBES_AND_SOCKETS, |mode| {
        let agent = setup.agent(mode, &["--print-requests", "--application-id", "chat-app", "--config", &config]);
        let mut c = Client::connect(nginx.port).unwrap();
        assert_eq!(c.request("/openai/v1/chat/completions?delay_ms=5", 300, false).unwrap(), 200);
        assert_eq!(c.request("/openai/v1/chat/completions?status=429", 300, false).unwrap(), 429);
        assert_eq!(
            c.request("/openai-ka/v1/chat/completions?events=8&interval_ms=50&usage=1", 300, false).unwrap(),
            200
        );
        assert_eq!(c.request("/anthropic/v1/messages?status=529", 300, false).unwrap(), 529);
        // Compressed bodies: gzip, deflate, br, zstd.
        for encoding in 1..=4 {
            assert_eq!(
                c.request(&format!("/openai/v1/chat/completions?encoding={encoding}"), 300, false).unwrap(),
                200
            );
        }
        // Answered by nginx itself, without an upstream call: a cache hit.
        assert_eq!(c.request("/cached/v1/chat/completions", 300, false).unwrap(), 200);
        drop(c);
        agent.wait_for_printed_records(9, 8, Duration::from_secs(20));
        for side in ["client", "upstream"] {
            let mut r = agent.printed_records(side);
            if side == "client" {
                let hit =
                    r.iter().position(|x| x["endpoint"] == "/cached/v1/chat/completions").expect("the cached exchange");
                let hit = r.remove(hit);
                assert_eq!(hit["cache_hit"], true, "{hit}");
                assert_eq!((hit["tokens"]["input"].clone(), hit["tokens"]["output"].clone()), (12.into(), 34.into()));
                for x in &r {
                    assert_eq!(x["cache_hit"], false, "{x}");
                    assert!(
                        x["proxy_overhead_ms"]
                            .as_f64()
                            .is_some_and(|o| o >= 0.0 && o < x["duration_ms"].as_f64().unwrap()),
                        "{x}"
                    );
                    assert!(x["upstream_provider"] == "openai" || x["upstream_provider"] == "anthropic", "{x}");
                }
            }
            assert_eq!(r.len(), 8, "{side}: {r:?}");
            let by_status = |status: u64| r.iter().filter(|x| x["status"] == status).cloned().collect::<Vec<_>>();
            let ok = by_status(200);
            assert_eq!(ok.len(), 6);
            for compressed in ok.iter().filter(|x| x["streaming"] == false) {
                assert_eq!(
                    (compressed["tokens"]["input"].clone(), compressed["tokens"]["output"].clone()),
                    (12.into(), 34.into()),
                    "{side}: {compressed}"
                );
            }
            let plain = ok.iter().find(|x| x["streaming"] == false).expect("non-streamed 200");
            assert_eq!(plain["tokens"]["input"], 12, "{side}: {plain}");
            assert_eq!(plain["tokens"]["output"], 34);
            assert_eq!(plain["model_requested"], "gpt-4o-mini");
            assert_eq!(plain["model_returned"], "gpt-4o-mini");
            // Built-in price of gpt-4o-mini: 0.15 / 0.60 USD per million tokens.
            assert_eq!(plain["cost_usd"], "0.0000222", "12 x 0.15e-6 + 34 x 0.60e-6");
            assert_eq!(plain["provider"], "openai");
            assert_eq!(plain["operation"], "chat");
            let stream = ok.iter().find(|x| x["streaming"] == true).expect("streamed 200");
            assert_eq!(stream["tokens"]["input"], 21, "{side}: {stream}");
            assert_eq!(stream["tokens"]["output"], 55);
            assert!(
                stream["ttfb_ms"].as_f64().unwrap() < stream["duration_ms"].as_f64().unwrap(),
                "TTFB < total for a stream"
            );
            assert!(stream["duration_ms"].as_f64().unwrap() >= 350.0, "8 events 50 ms apart");
            assert_eq!(stream["cost_usd"], "0.00003615", "21 x 0.15e-6 + 55 x 0.60e-6");
            assert_eq!(by_status(429)[0]["error_type"], "rate_limit_exceeded");
            assert_eq!(by_status(429)[0]["rate_limits"]["x-ratelimit-remaining-requests"], "0");
            assert_eq!(by_status(429)[0]["rate_limits"]["retry-after"], "1");
            assert_eq!(by_status(429)[0]["application_id"], "chat-app");
            assert!(by_status(429)[0]["tokens"]["input"].is_null(), "absent usage is unknown, not 0");
            assert!(by_status(429)[0]["cost_usd"].is_null(), "no usage, no cost");
            assert_eq!(by_status(529)[0]["error_type"], "overloaded_error");
            assert_eq!(by_status(529)[0]["provider"], "anthropic");
        }
        // The other APIs' shapes, plain and streamed.
        let mut c = Client::connect(nginx.port).unwrap();
        c.extra_headers = "x-session-id: sess-42\r\nx-user-id: user-7\r\nx-app: billing\r\n".into();
        for path in [
            "/anthropic/v1/messages",
            "/anthropic-ka/v1/messages?events=5&interval_ms=20",
            "/openai/v1/responses",
            "/openai-ka/v1/responses?events=5&interval_ms=20",
            "/openai/v1beta/models/gemini-2.0-flash:generateContent",
            "/openai-ka/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse&events=5&interval_ms=20",
            "/openai-ka/v1beta/models/gemini-2.0-flash:streamGenerateContent?events=4&interval_ms=20",
            "/openai/v1/embeddings",
        ] {
            assert_eq!(c.request(path, 300, false).unwrap(), 200, "{path}");
        }
        drop(c);
        agent.wait_for_printed_records(17, 0, Duration::from_secs(20));
        let client = agent.printed_records("client");
        let find = |endpoint: &str, streaming: bool| {
            client
                .iter()
                .find(|r| {
                    r["endpoint"].as_str().is_some_and(|e| e.ends_with(endpoint))
                        && r["streaming"] == streaming
                        && r["status"] == 200
                })
                .unwrap_or_else(|| panic!("no record for {endpoint} streaming={streaming}"))
                .clone()
        };
        let tokens = |r: &serde_json::Value| {
            ["input", "output", "cache_read", "cache_creation", "reasoning"].map(|k| r["tokens"][k].as_u64())
        };
        for streaming in [false, true] {
            let a = find("/v1/messages", streaming);
            let output = if streaming { 40 } else { 7 };
            assert_eq!(tokens(&a), [Some(115), Some(output), Some(100), Some(5), None], "anthropic {a}");
            assert_eq!(
                (a["provider"].clone(), a["model_returned"].clone()),
                ("anthropic".into(), "claude-sonnet-4".into())
            );
            let r = find("/v1/responses", streaming);
            assert_eq!(tokens(&r), [Some(30), Some(8), Some(10), None, Some(2)], "responses {r}");
            assert_eq!(r["operation"], "responses");
            let g = find(if streaming { ":streamGenerateContent" } else { ":generateContent" }, streaming);
            assert_eq!(tokens(&g), [Some(9), Some(4), Some(2), None, None], "gemini {g}");
            if streaming {
                let both =
                    client.iter().filter(|r| r["endpoint"].as_str().unwrap().ends_with(":streamGenerateContent"));
                for r in both {
                    assert_eq!(
                        (tokens(r), r["streaming"].clone()),
                        (tokens(&g), true.into()),
                        "SSE and JSON array: {r}"
                    );
                }
            }
            assert_eq!(
                (g["provider"].clone(), g["model_returned"].clone()),
                ("gcp.gemini".into(), "gemini-2.0-flash".into())
            );
        }
        use sha2::Digest;
        let key_hash = sha2::Sha256::digest(format!("{salt}sk-test-canary"));
        let key_hash: String = key_hash[..8].iter().map(|b| format!("{b:02x}")).collect();
        for r in client.iter().filter(|r| r["application_id"] == "billing") {
            assert_eq!((r["session_id"].as_str(), r["user_id"].as_str()), (Some("sess-42"), Some("user-7")), "{r}");
            assert_eq!(r["api_key_hash"].as_str(), Some(key_hash.as_str()), "{r}");
        }
        assert_eq!(
            client.iter().filter(|r| r["application_id"] == "billing").count(),
            8,
            "every request of that client"
        );
        let e = find("/v1/embeddings", false);
        assert_eq!(tokens(&e)[0], Some(8));
        assert_eq!((e["operation"].clone(), e["cost_usd"].clone()), ("embeddings".into(), "0.00000016".into()));
        // The API key the client sent appears nowhere the agent writes: its
        // output, its files (the SQLite database included, once flushed), its
        // endpoints.
        std::thread::sleep(Duration::from_secs(3));
        let api = |path: &str| harness::http_get(agent.port, path, "application/json").unwrap_or_default();
        let stored = api("/api/v1/requests?from=-1h");
        assert!(stored.contains("gpt-4o-mini"), "detail rows were stored: {stored}");
        let everything = format!(
            "{}{}{}{}{}",
            agent.log_text(),
            agent.files_text(),
            agent.scrape().text,
            api("/api/v1/metrics?from=-1h&step=1m&group_by=model"),
            stored
        );
        assert!(agent.files_text().contains("gpt-4o-mini"), "the database holds the records");
        assert!(!everything.contains("sk-test-canary"), "the API key leaked");
        let s = agent.scrape();
        assert_eq!(s.get("metrics_agent_capture_dropped_events_total"), 0);
        assert_eq!(s.get("metrics_agent_audit_records_total"), 17 + 16);
        let all: Vec<_> =
            agent.printed_records("client").into_iter().chain(agent.printed_records("upstream")).collect();
        let unpriced = all.iter().filter(|r| r["cost_usd"].is_null() && !r["tokens"]["input"].is_null()).count();
        assert_eq!(s.get("metrics_agent_audit_unpriced_records_total"), unpriced as u64);
    });
}

/// Bodies past the capture cap on connections that stay open (the client's
/// and nginx's kept-alive upstream): a request body past the cap, then a
/// response body past it, the last exchange on both connections. Each
/// record comes when its exchange ends (not when the next one begins or the
/// connection closes), keeps the model named before the cut and says it was
/// cut; the exchange whose response was whole has the usage the mock sent.
#[test]
fn bodies_past_the_capture_cap_give_their_records_while_the_connections_stay_open() {
    let _serial = serial();
    let setup = NginxWithProviders::start();
    let NginxWithProviders { openai, anthropic: _anthropic, nginx } = &setup;
    for_each_mode(modes::ALL, |mode| {
        // nginx keeps a request body under 8 KiB in memory (a longer one
        // goes to a temporary file and upstream with `sendfile`: not captured).
        let agent = setup.agent(mode, &["--print-requests", "--message-cap-kib", "4"]);
        let mut c = Client::connect(nginx.port).unwrap();
        // A 7 KB request body (past the 4 KiB cap), a small answer.
        assert_eq!(c.request("/openai-ka/v1/chat/completions", 7_000, false).unwrap(), 200);
        // A small request, a 100 KB answer (past the cap), the last exchange.
        assert_eq!(c.request("/openai-ka/v1/chat/completions?bytes=100000", 100, false).unwrap(), 200);
        // The connections stay open while the records are awaited.
        agent.wait_for_printed_records(2, 2, Duration::from_secs(10));
        let answers = openai.answers();
        assert_eq!(answers.len(), 2, "{answers:?}");
        for side in ["client", "upstream"] {
            let r = agent.printed_records(side);
            assert_eq!(r.len(), 2, "{side}: {r:?}");
            for x in &r {
                assert_eq!(
                    (x["status"].clone(), x["model_requested"].clone()),
                    (200.into(), "gpt-4o-mini".into()),
                    "{side}: {x}"
                );
                assert_eq!(x["truncated"], true, "{side}: a body was cut: {x}");
            }
            let whole = r.iter().find(|x| x["tokens"]["output"].is_u64()).unwrap_or_else(|| panic!("{side}: {r:?}"));
            let (input, output) = answers[0].usage.expect("the first answer's usage");
            assert_eq!(
                (whole["tokens"]["input"].as_u64(), whole["tokens"]["output"].as_u64()),
                (Some(input), Some(output)),
                "{side}: {whole}"
            );
        }
        drop(c);
    });
}

/// Clients that give up mid-stream (a reset after the first event), through
/// nginx's kept-alive (chunked) and HTTP/1.0 (close-delimited) upstreams:
/// nginx closes both connections. Each side gives one record per exchange
/// the mock answered, cut (output null; `truncated` where the framing says
/// the body was not whole), and every client
/// record is paired with its upstream record: none is a cache hit.
#[test]
fn streams_a_client_gave_up_on_are_cut_records_and_not_cache_hits() {
    let _serial = serial();
    let setup = NginxWithProviders::start();
    let NginxWithProviders { openai, anthropic, nginx } = &setup;
    for_each_mode(modes::UPROBES_AND_SOCKETS, |mode| {
        let agent = setup.agent(mode, &["--print-requests"]);
        for path in [
            "/openai-ka/v1/chat/completions?events=20&interval_ms=200",
            "/anthropic/v1/messages?events=20&interval_ms=200",
        ] {
            let t = Client::connect(nginx.port).unwrap().request_and_abort(path).unwrap();
            assert_eq!(t.aborted, 1);
        }
        openai.wait_idle(Duration::from_secs(20));
        anthropic.wait_idle(Duration::from_secs(20));
        let answered = openai.answers().len() + anthropic.answers().len();
        assert_eq!(answered, 2);
        agent.wait_for_printed_records(answered, answered, Duration::from_secs(20));
        std::thread::sleep(Duration::from_secs(1));
        for side in ["client", "upstream"] {
            let r = agent.printed_records(side);
            assert_eq!(r.len(), answered, "{side}: {r:?}");
            for x in &r {
                // (A close-delimited body, the HTTP/1.0 upstream's, ends at
                // the close: nothing in HTTP says it was cut.)
                let close_delimited = side == "upstream" && x["provider"] == "anthropic";
                assert_eq!(x["status"], 200, "{side}: {x}");
                assert_eq!(x["truncated"], !close_delimited, "{side}: {x}");
                assert!(x["tokens"]["output"].is_null(), "{side}: a cut stream's output is unknown: {x}");
                if side == "client" {
                    assert_eq!(x["cache_hit"], false, "the exchange went upstream: {x}");
                }
            }
        }
        let s = agent.scrape();
        let hits: f64 = s.series.iter().filter(|(k, _)| k.starts_with("llm_cache_hits_total")).map(|(_, v)| v).sum();
        assert_eq!(hits, 0.0, "{}", s.text);
    });
}

#[test]
fn audit_records_through_the_send_recv_proxy() {
    let _serial = serial();
    let openai = MockProvider::start(0).unwrap();
    let anthropic = MockProvider::start(0).unwrap();
    let (proxy, port) = harness::start_send_recv_proxy(&[("openai", openai.port), ("anthropic", anthropic.port)]);
    for_each_mode(modes::UPROBES_AND_SOCKETS, |mode| {
        let agent = agent_on_pid(proxy.pid(), mode, &["--print-requests"], &openai, &anthropic);
        let mut c = Client::connect(port).unwrap();
        assert_eq!(c.request("/openai/v1/chat/completions?encoding=1", 300, false).unwrap(), 200);
        assert_eq!(c.request("/anthropic/v1/messages?events=4&interval_ms=20", 300, false).unwrap(), 200);
        assert_eq!(c.request("/openai/v1/chat/completions?status=429", 300, false).unwrap(), 429);
        drop(c);
        agent.wait_for_printed_records(3, 3, Duration::from_secs(20));
        for side in ["client", "upstream"] {
            let r = agent.printed_records(side);
            let chat = r.iter().find(|x| x["status"] == 200 && x["provider"] == "openai").expect("chat");
            assert_eq!(
                (chat["tokens"]["input"].clone(), chat["tokens"]["output"].clone()),
                (12.into(), 34.into()),
                "{side}: {chat}"
            );
            let msg = r.iter().find(|x| x["provider"] == "anthropic").expect("messages");
            assert_eq!(
                (msg["tokens"]["input"].clone(), msg["tokens"]["output"].clone()),
                (115.into(), 40.into()),
                "{side}: {msg}"
            );
            assert_eq!(r.iter().find(|x| x["status"] == 429).expect("429")["error_type"], "rate_limit_exceeded");
        }
        for x in agent.printed_records("client") {
            assert_eq!(x["cache_hit"], false, "every request went upstream: {x}");
        }
    });
}

/// A server that reads the first byte of each next request on its own, as
/// Go's net/http does (its background read of one byte while a handler
/// runs; Caddy, Go's reverse proxy), after request bodies longer than the
/// capture cap. The kernel holds that byte until the method is whole, and
/// the capture of the new request starts after it: the bytes between the
/// capped body and the request line did not match the body's rest, so the
/// agent restarted the connection's parser and lost the exchange whose
/// answer waited for the capped body (1-2 of 146 client records behind
/// Caddy). One record per exchange, with its tokens, and no resync.
#[test]
fn a_request_line_whose_first_byte_is_read_alone_after_a_capped_body_keeps_every_record() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::Stdio;

    const SERVER: &str = r#"
import socket, sys
ls = socket.socket(); ls.bind(("127.0.0.1", 0)); ls.listen(1)
print(ls.getsockname()[1], flush=True)
c, _ = ls.accept()
body = b'{"id":"chatcmpl-1","model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":34}}'
answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
first = b""
while True:
    buf = first
    while b"\r\n\r\n" not in buf:
        more = c.recv(4096)
        if not more:
            sys.exit(0)
        buf += more
    head, rest = buf.split(b"\r\n\r\n", 1)
    n = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0])
    while len(rest) < n:
        rest += c.recv(min(65536, n - len(rest)))
    c.sendall(answer)
    # The next request's first byte, alone (Go's background read).
    first = c.recv(1)
    if not first:
        sys.exit(0)
"#;
    const REQUESTS: usize = 4;
    let _serial = serial();
    let mut server =
        harness::Guard::spawn("one-byte-server", Command::new("python3").args(["-c", SERVER]).stdout(Stdio::piped()));
    let mut line = String::new();
    BufReader::new(server.child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port: u16 = line.trim().parse().expect("the server's port");
    let pid = server.pid().to_string();
    let agent = Agent::start(&["--pid", &pid, "--print-requests", "--attach", "sockets"]);
    agent.wait_until(Duration::from_secs(10), "the server traced", |s| s.get("metrics_agent_traced_processes") == 1);
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    for i in 0..REQUESTS {
        // Bodies past the 256 KiB capture cap, and one under it.
        let pad = if i == 2 { 1000 } else { 300_000 + 1000 * i };
        let body =
            format!(r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{}"}}]}}"#, "x".repeat(pad));
        let request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        c.write_all(request.as_bytes()).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(b"}}") {
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0, "the server closed");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200 OK"), "{}", String::from_utf8_lossy(&got));
    }
    drop(c);
    agent.wait_for_printed_records(REQUESTS, 0, Duration::from_secs(20));
    let records = agent.printed_records("client");
    assert_eq!(records.len(), REQUESTS, "{records:?}");
    assert_eq!(
        (token_total(&records, "input"), token_total(&records, "output")),
        (12 * REQUESTS as u64, 34 * REQUESTS as u64),
        "{records:?}"
    );
    // A body cut by the cap still names the model it began with, and says it was cut.
    assert!(records.iter().all(|r| r["model_requested"] == "gpt-4o-mini"), "{records:?}");
    assert_eq!(records.iter().filter(|r| r["truncated"] == true).count(), REQUESTS - 1, "{records:?}");
    let s = agent.scrape();
    assert_eq!(s.get("metrics_agent_audit_resyncs_total"), 0, "no parser restart");
    assert_eq!(s.get("llm_proxy_requests_total"), REQUESTS as u64, "the hot path");
}

#[test]
fn a_saturated_payload_ring_drops_and_counts_while_hot_path_counts_stay_exact() {
    let _serial = serial();
    // An 8 KiB ring holds at most two 4 KiB chunks: large bodies overflow it.
    let setup = NginxWithProviders::start();
    let NginxWithProviders { openai, anthropic, nginx } = &setup;
    for_each_mode(modes::UPROBES_AND_SOCKETS, |mode| {
        let agent = setup.agent(mode, &["--print-requests", "--capture-ring-kib", "8"]);
        let mut truth = Truth::default();
        for _ in 0..6 {
            let mut c = Client::connect(nginx.port).unwrap();
            assert_eq!(c.request("/openai/v1/chat/completions?bytes=200000", 70 * 1024, true).unwrap(), 200);
            truth.add(&c.truth);
        }
        let s = assert_matches(&agent, &truth, openai, anthropic, 0);
        assert!(s.get("metrics_agent_capture_dropped_events_total") > 0, "drops are counted");
        let s = agent.wait_until(Duration::from_secs(5), "drops to raise the sampling interval", |s| {
            s.get("metrics_agent_capture_breaker_trips_total") >= 1
        });
        assert!(s.get("metrics_agent_capture_sample_every") >= 2, "sampled under ring pressure, not switched off");
        assert_eq!(s.get("metrics_agent_capture_enabled"), 1);
    });
}

#[test]
fn openssl_linked_into_the_executable_is_hooked_there() {
    let dir = harness::TempDir::new("static-tls");
    let binary = harness::build_static_tls_client(&dir);
    tls_client_against_an_https_mock(std::process::Command::new(&binary));
}

#[test]
fn node_js_with_its_own_openssl_and_memory_bios_is_measured() {
    let node = std::path::Path::new("/usr/bin/node");
    assert!(node.exists(), "Node.js (/usr/bin/node) is needed for this test: `cargo xtask setup` installs it");
    let mut cmd = std::process::Command::new(node);
    cmd.arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("js/https_client.js"));
    tls_client_against_an_https_mock(cmd);
}

#[test]
fn python_asyncio_tls_through_memory_bios_is_measured() {
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("py/asyncio_https_client.py"));
    tls_client_against_an_https_mock(cmd);
}

/// Runs a TLS client (OpenSSL in its executable, or driven through memory
/// BIOs) against an HTTPS mock and checks the agent's records of its 4
/// requests.
fn tls_client_against_an_https_mock(mut client: std::process::Command) {
    use std::io::{BufRead, Write};
    let _serial = serial();
    let openai = MockProvider::start(0).unwrap();
    let tls = harness::TlsProvider::start(openai.port);
    client
        .args(["127.0.0.1", &tls.port.to_string(), "4", "/v1/chat/completions"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let program = client.get_program().to_string_lossy().to_string();
    for_each_mode(modes::UPROBES_AND_SOCKETS, |mode| {
        let mut child = harness::Guard::spawn("TLS client", &mut client);
        let pid = child.pid();
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        // Not yet: the C client has OpenSSL inside, the Python client imports
        // `ssl` only after "go" (the agent hooks it then). Node.js builds from
        // nodejs.org have it inside, Debian's link libssl: both must work.
        if !program.contains("node") {
            assert!(!maps.contains("libssl"), "the client must not have loaded libssl.so yet");
        }
        let [attach, name] = mode.args();
        let provider = format!("openai=127.0.0.1:{}", tls.port);
        let agent =
            Agent::start(&["--pid", &pid.to_string(), attach, name, "--print-requests", "--provider", &provider]);
        agent
            .wait_until(Duration::from_secs(10), "the client traced", |s| s.get("metrics_agent_traced_processes") >= 1);
        let mut stdin = child.child.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
        let mut stdout = std::io::BufReader::new(child.child.stdout.take().unwrap());
        let mut line = String::new();
        if program.contains("python") {
            stdout.read_line(&mut line).unwrap();
            assert_eq!(line.trim(), "ready");
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !agent.log_text().contains("loaded libssl") {
                assert!(
                    std::time::Instant::now() < deadline,
                    "libssl loaded late was not hooked:\n{}",
                    agent.log_text()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            stdin.write_all(b"go\n").unwrap();
            stdin.flush().unwrap();
            line.clear();
        }
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "done 4");
        assert!(child.child.wait().unwrap().success());
        agent.wait_for_printed_records(0, 4, Duration::from_secs(20));
        let up = agent.printed_records("upstream");
        assert_eq!(up.len(), 4, "{up:?}");
        for r in &up {
            assert_eq!((r["status"].clone(), r["upstream_provider"].clone()), (200.into(), "openai".into()), "{r}");
            assert_eq!((r["tokens"]["input"].clone(), r["tokens"]["output"].clone()), (12.into(), 34.into()), "{r}");
        }
        let s = agent.scrape();
        assert_eq!(
            s.get("llm_proxy_provider_requests_total{provider=\"openai\"}"),
            4,
            "plaintext requests counted once"
        );
        assert_eq!(s.get("metrics_agent_unclassified_connections_total"), 0, "the ciphertext is not parsed as HTTP");
        assert_eq!(
            (s.get("metrics_agent_tls_connections_total"), s.get("metrics_agent_tls_plaintext_connections_total")),
            (1, 1),
            "one TLS connection, its plaintext tied"
        );
        assert!(!agent.log_text().contains("sk-test-canary"));
    });
}

#[test]
fn sampling_captures_one_exchange_in_n_as_pairs_and_hot_path_counts_stay_exact() {
    let _serial = serial();
    let setup = NginxWithProviders::start();
    let NginxWithProviders { openai, anthropic, nginx } = &setup;
    for_each_mode(modes::UPROBES_AND_SOCKETS, |mode| {
        let agent = setup.agent(mode, &["--print-requests", "--sample-every", "4"]);
        let mut truth = Truth::default();
        for _ in 0..40 {
            let mut c = Client::connect(nginx.port).unwrap();
            assert_eq!(c.request("/openai/v1/chat/completions", 300, true).unwrap(), 200);
            truth.add(&c.truth);
        }
        let s = assert_matches(&agent, &truth, openai, anthropic, 0);
        assert_eq!(s.get("metrics_agent_capture_sample_every"), 4);
        // 40 client request starts, sampled per CPU: between 40/4 and 40/4 + one
        // per CPU are captured, each with the upstream exchange it caused.
        let cpus = std::thread::available_parallelism().unwrap().get();
        std::thread::sleep(Duration::from_secs(2));
        let (client, upstream) = (agent.printed_records("client"), agent.printed_records("upstream"));
        assert!((10..=10 + cpus).contains(&client.len()), "{} client records sampled", client.len());
        assert_eq!(client.len(), upstream.len(), "a sampled client exchange keeps its upstream exchange");
        for r in client.iter().chain(&upstream) {
            assert_eq!((r["tokens"]["input"].clone(), r["tokens"]["output"].clone()), (12.into(), 34.into()), "{r}");
            assert_eq!(r["sample_every"], 4, "{r}");
        }
        for r in &client {
            assert_eq!(r["upstream_provider"], "openai", "paired with its upstream exchange: {r}");
        }
    });
}

/// An agent config file in `dir` with these lines.
fn config_file(dir: &harness::TempDir, lines: &str) -> String {
    let config = dir.0.join("agent.toml");
    std::fs::write(&config, lines).unwrap();
    config.display().to_string()
}

#[test]
fn under_a_forced_cpu_budget_sampling_rises_and_records_keep_flowing_with_their_interval() {
    let _serial = serial();
    // A budget no audit thread can hold (10 µs of CPU per second): the
    // interval doubles every second up to its ceiling of 4, and stays there.
    let dir = harness::TempDir::new("cpu-budget");
    let config = config_file(&dir, "capture_cpu_budget_percent = 0.001\nmax_sample_every = 4\n");
    let setup = NginxWithProviders::start();
    let NginxWithProviders { openai, anthropic, nginx } = &setup;
    for_each_mode(modes::UPROBES_AND_SOCKETS, |mode| {
        let agent = setup.agent(mode, &["--print-requests", "--config", &config]);
        let mut truth = Truth::default();
        let exchange = |truth: &mut Truth| {
            let mut c = Client::connect(nginx.port).unwrap();
            assert_eq!(c.request("/openai/v1/chat/completions?bytes=2000", 2000, true).unwrap(), 200);
            truth.add(&c.truth);
        };
        for _ in 0..10 {
            exchange(&mut truth);
        }
        let s = agent.wait_until(Duration::from_secs(10), "the interval to reach its ceiling", |s| {
            s.get("metrics_agent_capture_sample_every") == 4
        });
        assert!(s.get("metrics_agent_capture_breaker_cpu_trips_total") >= 2, "1 -> 2 -> 4");
        assert_eq!(s.get("metrics_agent_capture_breaker_trips_total"), 0, "no drops were involved");
        assert_eq!(s.get("metrics_agent_capture_enabled"), 1, "never switched off");
        assert!(agent.log_text().contains("samples 1 exchange in 4"), "{}", agent.log_text());
        let before = agent.printed_records("client").len();
        for _ in 0..40 {
            exchange(&mut truth);
        }
        // The hot path counted every exchange, before and after the change.
        assert_matches(&agent, &truth, openai, anthropic, 0);
        std::thread::sleep(Duration::from_secs(2));
        let client = agent.printed_records("client");
        let upstream = agent.printed_records("upstream");
        let cpus = std::thread::available_parallelism().unwrap().get();
        let late = &client[before..];
        // Each CPU's sampling sequence is mid-way when the interval settles at
        // 4: between 40/4 - 1 and 40/4 + 1 per CPU are captured.
        assert!((10 - cpus..=10 + cpus).contains(&late.len()), "records keep flowing, 1 in 4: {} of 40", late.len());
        for r in late {
            assert_eq!(r["sample_every"], 4, "each record carries its interval: {r}");
            assert_eq!(r["tokens"]["output"], 34, "{r}");
        }
        assert_eq!(client.len(), upstream.len(), "sampled pairs stay pairs");
        // Exported counts are estimates scaled by N, labelled as such.
        let s = agent.scrape();
        let estimated: f64 = s
            .text
            .lines()
            .filter(|l| {
                l.starts_with("llm_requests_total{") && l.contains("side=\"client\"") && l.contains("estimate=\"true\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        let expected: u64 = client.iter().filter_map(|r| r["sample_every"].as_u64()).filter(|n| *n > 1).sum();
        assert_eq!(estimated, expected as f64, "each sampled record counts as N: {}", s.text);
    });
}

#[test]
fn repeated_capture_off_on_cycles_with_keep_alive_connections_leave_no_stranded_state() {
    let _serial = serial();
    // Keep-alive client connections stay open across capture cycles; in each
    // half-cycle every one sends a request and two of them are replaced. A
    // connection that closes while capture is off sends no close event: its
    // state must still go (the sweep of connections the kernel no longer
    // tracks). Upstream connections (HTTP/1.0) open and close per request.
    const CONNECTIONS: usize = 8;
    const CYCLES: usize = 5;
    const PERIOD_MS: &str = "800";
    let setup = NginxWithProviders::start();
    let NginxWithProviders { openai, anthropic, nginx } = &setup;
    let agent = setup.agent_with_env(AttachMode::Sockets, &[], &[("METRICS_AGENT_TEST_CAPTURE_CYCLE_MS", PERIOD_MS)]);
    assert!(agent.log_text().contains("test hook"), "the hook is announced:\n{}", agent.log_text());
    let mut truth = Truth::default();
    let connect = || Client::connect(nginx.port).unwrap();
    let mut clients: Vec<Client> = (0..CONNECTIONS).map(|_| connect()).collect();
    let mut replaced = 0;
    for cycle in 0..CYCLES {
        for on in [0, 1] {
            let what = if on == 1 { "capture switched on" } else { "capture switched off" };
            agent.wait_until(Duration::from_secs(5), what, |s| s.get("metrics_agent_capture_enabled") == on);
            for (i, c) in clients.iter_mut().enumerate() {
                let path = if i % 2 == 0 { "/openai/v1/chat/completions" } else { "/anthropic/v1/messages" };
                assert_eq!(c.request(path, 300, false).unwrap(), 200, "cycle {cycle}, {what}");
            }
            for _ in 0..2 {
                let gone = std::mem::replace(&mut clients[replaced % CONNECTIONS], connect());
                truth.add(&gone.truth);
                replaced += 1;
            }
        }
    }
    for c in clients {
        truth.add(&c.truth);
    }
    assert_eq!(truth.requests, (CYCLES * 2 * CONNECTIONS) as u64);
    // The hot path counted every request, whether capture was on or off.
    let s = assert_matches(&agent, &truth, openai, anthropic, 0);
    assert!(s.get("metrics_agent_audit_records_total") > 0, "records came while capture was on:\n{}", s.text);
    // Every client and upstream connection is closed: nothing may remain.
    let s = agent.wait_until(Duration::from_secs(30), "the audit path to hold no connection and no memory", |s| {
        s.get("metrics_agent_audit_connections") == 0 && s.get("metrics_agent_audit_memory_bytes") == 0
    });
    assert!(
        s.get("metrics_agent_audit_released_connections_total") >= 1,
        "connections closed while capture was off were released without their close event:\n{}",
        s.text
    );
}

#[test]
fn api_load_on_other_threads_does_not_lower_capture() {
    let _serial = serial();
    // 5% of one core for the audit thread: a few exchanges use far less,
    // while the API load below costs the agent's process far more.
    let dir = harness::TempDir::new("api-load");
    let config = config_file(&dir, "capture_cpu_budget_percent = 5\n");
    let setup = NginxWithProviders::start();
    let NginxWithProviders { openai, anthropic, nginx } = &setup;
    let agent = setup.agent(AttachMode::Sockets, &["--print-requests", "--config", &config]);
    let cpu_before = agent.scrape().get_f64("metrics_agent_cpu_seconds_total");
    let started = std::time::Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|i| {
            let (stop, port) = (stop.clone(), agent.port);
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let path = if i % 2 == 0 { "/metrics" } else { "/api/v1/metrics" };
                    n += u64::from(harness::http_get(port, path, "text/plain").is_some());
                }
                n
            })
        })
        .collect();
    let mut truth = Truth::default();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(400));
        let mut c = Client::connect(nginx.port).unwrap();
        assert_eq!(c.request("/openai/v1/chat/completions", 300, true).unwrap(), 200);
        truth.add(&c.truth);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let served: u64 = load.into_iter().map(|t| t.join().unwrap()).sum();
    let s = assert_matches(&agent, &truth, openai, anthropic, 0);
    let process_share =
        (s.get_f64("metrics_agent_cpu_seconds_total") - cpu_before) / started.elapsed().as_secs_f64() * 100.0;
    assert!(
        process_share > 10.0,
        "the API load must cost the process over twice the budget: {process_share:.1}% ({served} answers)"
    );
    assert_eq!(s.get("metrics_agent_capture_breaker_cpu_trips_total"), 0, "{}", agent.log_text());
    assert_eq!(s.get("metrics_agent_capture_sample_every"), 1);
    agent.wait_for_printed_records(10, 10, Duration::from_secs(20));
    for r in agent.printed_records("client") {
        assert_eq!(r["sample_every"], 1, "{r}");
    }
}

#[test]
fn tls_upstreams_are_measured_from_the_plaintext() {
    let _serial = serial();
    let openai = MockProvider::start(0).unwrap();
    let tls = harness::TlsProvider::start(openai.port);
    let nginx = Nginx::start_private(&[("openai-tls", tls.port)]);
    for_each_mode(modes::UPROBES_AND_SOCKETS, |mode| {
        openai.reset();
        let [attach, name] = mode.args();
        let provider = format!("openai=127.0.0.1:{}", tls.port);
        let exe = nginx.exe.display().to_string();
        let agent = Agent::start(&["--exe", &exe, attach, name, "--print-requests", "--provider", &provider]);
        agent.wait_for_nginx();
        let mut truth = Truth::default();
        for path in [
            "/openai-tls/v1/chat/completions",
            "/openai-tls/v1/chat/completions?status=429",
            "/openai-tls/v1/chat/completions?events=6&interval_ms=50&usage=1",
        ] {
            let mut c = Client::connect(nginx.port).unwrap();
            c.request(path, 300, true).unwrap();
            truth.add(&c.truth);
        }
        openai.wait_idle(Duration::from_secs(10));
        let (requests, ..) = openai.snapshot();
        let s = agent.wait_until(Duration::from_secs(15), "all requests", |s| {
            s.get("llm_proxy_provider_request_duration_seconds_count{provider=\"openai\"}") == requests
                && s.get("llm_proxy_request_duration_seconds_count") == truth.requests
        });
        assert_eq!(s.get("llm_proxy_provider_requests_total{provider=\"openai\"}"), requests, "requests over TLS");
        assert_eq!(s.get("llm_proxy_provider_requests_failed_total{provider=\"openai\"}"), 1, "the 429");
        assert_eq!(s.get("metrics_agent_unclassified_connections_total"), 0, "TLS connections are not unclassified");
        assert_eq!(
            s.get("metrics_agent_tls_connections_total"),
            s.get("metrics_agent_tls_plaintext_connections_total")
        );
        assert!(s.get("metrics_agent_tls_plaintext_connections_total") >= 1);
        assert_eq!(s.get("llm_proxy_bytes_received_total{side=\"client\"}"), truth.bytes_sent);
        assert_eq!(s.get("llm_proxy_bytes_sent_total{side=\"client\"}"), truth.bytes_received);
        agent.wait_for_printed_records(0, 3, Duration::from_secs(20));
        let up = agent.printed_records("upstream");
        let plain = up.iter().find(|r| r["status"] == 200 && r["streaming"] == false).expect("plain 200");
        assert_eq!(
            (plain["tokens"]["input"].clone(), plain["tokens"]["output"].clone()),
            (12.into(), 34.into()),
            "{plain}"
        );
        let stream = up.iter().find(|r| r["streaming"] == true).expect("stream");
        assert_eq!(
            (stream["tokens"]["input"].clone(), stream["tokens"]["output"].clone()),
            (21.into(), 55.into()),
            "{stream}"
        );
        assert_eq!(up.iter().find(|r| r["status"] == 429).expect("429")["error_type"], "rate_limit_exceeded");
    });
}

/// On TLS connections `llm_proxy_bytes_*` count the plaintext HTTP bytes and
/// `llm_proxy_tls_bytes_*` the wire bytes, both exactly as the HTTPS provider
/// itself counted them.
#[test]
fn tls_bytes_are_counted_apart_from_http_bytes() {
    let _serial = serial();
    for_each_mode(modes::UPROBES_AND_SOCKETS, |mode| {
        // The provider counts from its start: one provider (and nginx in
        // front of it) per mode.
        let provider = harness::CountingTlsProvider::start();
        let nginx = Nginx::start_private(&[("openai-tls", provider.port)]);
        let [attach, name] = mode.args();
        let (exe, upstream) = (nginx.exe.display().to_string(), format!("openai=127.0.0.1:{}", provider.port));
        let agent = Agent::start(&["--exe", &exe, attach, name, "--no-audit", "--provider", &upstream]);
        agent.wait_for_nginx();
        let mut truth = Truth::default();
        const REQUESTS: u64 = 5;
        for _ in 0..REQUESTS {
            let mut c = Client::connect(nginx.port).unwrap();
            assert_eq!(c.request("/openai-tls/v1/chat/completions", 300, true).unwrap(), 200);
            truth.add(&c.truth);
        }
        // nginx opens one upstream TLS connection per request (no keep-alive).
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let counts = loop {
            let counts = provider.counts();
            if counts["connections"] == REQUESTS || std::time::Instant::now() > deadline {
                break counts;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(counts["requests"], REQUESTS, "{counts}");
        let n = |key: &str| counts[key].as_u64().unwrap_or(0);
        let s = agent.wait_until(Duration::from_secs(15), "all requests", |s| {
            s.get("llm_proxy_request_duration_seconds_count") == REQUESTS
                && s.get("llm_proxy_tls_bytes_sent_total{side=\"upstream\"}") == n("wire_in")
        });
        assert_eq!(s.get("llm_proxy_provider_requests_total{provider=\"openai\"}"), REQUESTS);
        assert_eq!(s.get("llm_proxy_bytes_sent_total{side=\"upstream\"}"), n("plain_in"), "plaintext to the provider");
        assert_eq!(s.get("llm_proxy_bytes_received_total{side=\"upstream\"}"), n("plain_out"), "plaintext from it");
        assert_eq!(s.get("llm_proxy_tls_bytes_sent_total{side=\"upstream\"}"), n("wire_in"), "TLS bytes to it");
        assert_eq!(s.get("llm_proxy_tls_bytes_received_total{side=\"upstream\"}"), n("wire_out"), "TLS bytes from it");
        assert!(n("wire_in") > n("plain_in") && n("wire_out") > n("plain_out"), "TLS adds bytes: {counts}");
        // The client side is clear text: HTTP bytes only.
        assert_eq!(s.get("llm_proxy_bytes_received_total{side=\"client\"}"), truth.bytes_sent);
        assert_eq!(s.get("llm_proxy_bytes_sent_total{side=\"client\"}"), truth.bytes_received);
        assert_eq!(s.get("llm_proxy_tls_bytes_received_total{side=\"client\"}"), 0);
        assert_eq!(s.get("llm_proxy_tls_bytes_sent_total{side=\"client\"}"), 0);
    });
}

/// The ids of the BPF programs loaded on the host (`bpftool -j prog show`).
fn loaded_program_ids() -> Vec<u64> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .expect("bpftool (Debian package bpftool) must be installed");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool's JSON");
    list.as_array().into_iter().flatten().filter_map(|p| p["id"].as_u64()).collect()
}

/// The ids of the BPF programs process `pid` holds open (its file
/// descriptors' `prog_id` in /proc/PID/fdinfo).
fn programs_held_by(pid: u32) -> Vec<u64> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("the agent's fds");
    fds.flatten()
        .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy() == "anon_inode:bpf-prog"))
        .filter_map(|fd| {
            std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.file_name().to_string_lossy())).ok()
        })
        .filter_map(|info| info.lines().find_map(|l| l.strip_prefix("prog_id:").and_then(|v| v.trim().parse().ok())))
        .collect()
}

/// Where each thread of a process waits in the kernel (/proc/PID/task/*/stack).
fn kernel_stacks(pid: u32) -> String {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten();
    tasks
        .map(|t| {
            let read = |f: &str| std::fs::read_to_string(t.path().join(f)).unwrap_or_default();
            format!("{} {}{}", t.file_name().to_string_lossy(), read("comm"), read("stack"))
        })
        .collect()
}

#[test]
fn sigterm_detaches_everything_and_the_proxy_keeps_serving() {
    let _serial = serial();
    let openai = MockProvider::start(0).unwrap();
    let nginx = Nginx::start_private(&[("openai", openai.port), ("anthropic", openai.port)]);
    for_each_mode(modes::UPROBES_AND_SOCKETS, |mode| {
        let [attach, name] = mode.args();
        let provider = format!("openai=127.0.0.1:{}", openai.port);
        let exe = nginx.exe.display().to_string();
        let mut agent = Agent::start(&["--exe", &exe, attach, name, "--provider", &provider]);
        agent.wait_for_nginx();
        // This agent's programs, by id: others' agents may run on the host.
        let agent_pid = agent.guard.pid();
        let ours = programs_held_by(agent_pid);
        assert!(ours.len() >= 3, "programs are loaded while running: {ours:?}");
        // A stream in flight while the agent stops.
        let port = nginx.port;
        let stream = std::thread::spawn(move || {
            let mut c = Client::connect(port).unwrap();
            c.request("/openai/v1/chat/completions?events=10&interval_ms=100", 100, false).unwrap()
        });
        std::thread::sleep(Duration::from_millis(300));
        // Releasing a uprobe waits for two RCU-tasks-trace grace periods
        // under the kernel's event mutex, one uprobe after another: about 0.13 s
        // each measured on these VMs (200 uprobes, 26 s, load 8), so this
        // test's 120 uprobes may take 20 s on a busy machine (docs/architecture.md).
        let status = agent.guard.signal_and_wait(libc::SIGTERM, Duration::from_secs(60)).unwrap_or_else(|| {
            panic!(
                "the agent did not exit within 60 s of SIGTERM; its threads in the kernel:\n{}\nlog:\n{}",
                kernel_stacks(agent_pid),
                agent.log_text()
            )
        });
        assert!(status.success(), "clean exit: {status}\n{}", agent.log_text());
        assert_eq!(stream.join().unwrap(), 200, "the in-flight stream completes");
        // The kernel frees a program once its last reference is dropped, some
        // of them (prog-array entries, perf links) from a deferred work item:
        // allow it a few seconds after the agent's exit.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let left = loop {
            let left: Vec<u64> = loaded_program_ids().into_iter().filter(|id| ours.contains(id)).collect();
            if left.is_empty() || std::time::Instant::now() > deadline {
                break left;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(left.is_empty(), "programs {left:?} of the agent remain loaded 10 s after it exited");
        let mut c = Client::connect(nginx.port).unwrap();
        for _ in 0..5 {
            assert_eq!(c.request("/openai/v1/chat/completions", 100, false).unwrap(), 200);
        }
    });
}

/// Runs the agent and returns (exit code, stderr).
fn agent_error(args: &[&str]) -> (i32, String) {
    let out = Command::new(harness::agent_binary()).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).to_string())
}

fn assert_one_line_error(args: &[&str], needle: &str) {
    let (code, err) = agent_error(args);
    assert_ne!(code, 0, "{args:?} must fail");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line for {args:?}: {err}");
    assert!(lines[0].contains(needle), "{args:?}: expected {needle:?} in {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_input_gets_one_line_errors() {
    let _serial = serial();
    assert_one_line_error(&["run", "--exe", "/nonexistent/proxy"], "no such file");
    assert_one_line_error(&["run", "--exe", "/etc/hostname"], "not an ELF");
    assert_one_line_error(&["run", "--pid", "999999999"], "no such process");
    assert_one_line_error(&["run", "--exe", harness::NGINX, "--provider", "openai"], "NAME=HOST:PORT");
    assert_one_line_error(&["run"], "--exe PATH or --pid PID");
    // Listen address taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    assert_one_line_error(&["run", "--exe", harness::NGINX, "--listen", &addr], "already in use");
    // Malformed config.
    let dir = harness::TempDir::new("cfg");
    let cfg = dir.0.join("agent.toml");
    std::fs::write(&cfg, "exe = 3\n").unwrap();
    assert_one_line_error(&["run", "--config", cfg.to_str().unwrap()], "config file");
    // No privileges: the same command as an unprivileged user, from a copy
    // of the binary that user can execute (the clone may be under /root).
    let public = harness::TempDir::new("public");
    std::fs::set_permissions(&public.0, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let copy = public.0.join("metrics-agent");
    std::fs::copy(harness::agent_binary(), &copy).unwrap();
    std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
        .arg(&copy)
        .args(["run", "--exe", harness::NGINX, "--listen", "127.0.0.1:0"])
        .output()
        .expect("setpriv (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("missing privileges") && err.lines().count() == 1, "{err}");
    // A process without libc (statically linked).
    let src = dir.0.join("static.c");
    std::fs::write(&src, "#include <unistd.h>\nint main(void){ for(;;) pause(); }\n").unwrap();
    let bin = dir.0.join("static-proc");
    let built = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if built {
        let guard = harness::Guard::spawn("static", &mut Command::new(&bin));
        // Only the libc data path needs libc: the socket and syscall paths trace such a process.
        assert_one_line_error(
            &["run", "--pid", &guard.pid().to_string(), "--attach", "uprobes", "--listen", "127.0.0.1:0"],
            "libc not found",
        );
    } else {
        panic!("cc -static failed: install libc6-dev");
    }
}
