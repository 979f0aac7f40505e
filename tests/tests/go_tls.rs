//! End-to-end tests (root) of Go's crypto/tls: the Go reverse proxy of the
//! tests (standard library only), built with each Go toolchain
//! (`go::toolchains`: bookworm's 1.19, backports' 1.22 and 1.23, upstream
//! 1.24, 1.26 and 1.27),
//! stripped and not stripped, forwards to mock providers over TLS done by
//! Go. The upstream records and counters come from the plaintext the
//! crypto/tls uprobes see, and must match what the mock providers sent,
//! exactly: over HTTP/1.1, and over HTTP/2 (Go's `http.Transport` with
//! `ForceAttemptHTTP2`) to nginx's h2 TLS listener. A mixed gateway (h2c to
//! its clients, TLS to its providers) is measured on both sides.
//!
//! Every toolchain runs end to end in the HTTP/1.1 test (stripped; the
//! oldest and newest unstripped too) and in one of the two HTTP/2 tests
//! (`go::toolchains_part`), not in all of them: each build is an agent
//! start (~12 s of verifier CPU) in CI's 45 minutes, and `gotls`'s unit
//! tests check every toolchain's probes, stripped and unstripped.

use std::{
    sync::{Mutex, MutexGuard},
    time::Duration,
};

use llm_proxy_e2e::{
    client::Client,
    go::{self, TlsUpstreams},
    h2_client::{Answer, h2_client},
    harness::{Agent, NginxH2, TempDir},
    mock::MockProvider,
    modes::{AttachMode, for_each_mode},
    records::{check_mix_of_four, token_total},
};

/// One test at a time: each starts its own agent and proxies.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The exchanges sent through the proxy: plain and streamed, both
/// providers, an error; with their statuses.
const EXCHANGES: [(&str, u16); 4] = [
    ("/openai/v1/chat/completions", 200),
    ("/openai-ka/v1/chat/completions?events=6&interval_ms=20&usage=1", 200),
    ("/anthropic/v1/messages?events=4&interval_ms=20", 200),
    ("/openai/v1/chat/completions?status=429", 429),
];

#[test]
fn go_reverse_proxy_tls_upstreams_are_measured_from_crypto_tls_plaintext() {
    let _serial = serial();
    let upstreams = TlsUpstreams::start();
    let dir = TempDir::new("go-tls");
    // Stripped with every toolchain (the harder case: no symbol table);
    // unstripped with the oldest and the newest only (`gotls`'s unit tests
    // plan the probes of every toolchain's unstripped build too).
    let toolchains = go::toolchains();
    let newest = toolchains.len() - 1;
    let builds = toolchains.iter().enumerate().flat_map(|(i, t)| {
        let unstripped = (i == 0 || i == newest).then_some((t, ("unstripped", "")));
        unstripped.into_iter().chain([(t, ("stripped", "-s -w"))])
    });
    for (toolchain, (strip, ldflags)) in builds {
        let build = format!("{} {strip}", toolchain.version);
        let binary = toolchain.build(ldflags, false).build(&dir, &format!("go-proxy-{}-{strip}", toolchain.version));
        let (proxy, port) = go::start_reverse_proxy_to(&binary, &upstreams.routes());
        for_each_mode(&[AttachMode::Sockets], |mode| {
            upstreams.reset();
            let mut args = vec!["--pid".to_string(), proxy.pid().to_string(), "--print-requests".into()];
            args.extend(mode.args().map(String::from));
            args.extend(upstreams.provider_args());
            let agent = Agent::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
            agent.wait_until(Duration::from_secs(10), "the Go proxy traced", |s| {
                s.get("metrics_agent_traced_processes") == 1
            });
            assert!(
                agent.log_text().contains("crypto/tls plaintext followed"),
                "{build}: the Go probes were not planned:\n{}",
                agent.log_text()
            );
            let mut c = Client::connect(port).unwrap();
            for (path, status) in EXCHANGES {
                let answered = c.request(path, 300, false).unwrap_or_else(|e| panic!("{build}: {path}: {e}"));
                assert_eq!(answered, status, "{build}: {path}");
            }
            drop(c);
            agent.wait_for_printed_records(4, 4, Duration::from_secs(20));
            let (oa, an) = (upstreams.openai.usage_sent(), upstreams.anthropic.usage_sent());
            let up = agent.printed_records("upstream");
            check_mix_of_four(&up, &build);
            let of = |provider: &str, kind: &str| {
                up.iter().filter(|x| x["provider"] == provider).filter_map(|x| x["tokens"][kind].as_u64()).sum::<u64>()
            };
            assert_eq!(
                (of("openai", "input"), of("openai", "output"), of("anthropic", "input"), of("anthropic", "output")),
                (oa.input, oa.output, an.input, an.output),
                "{build}: the tokens each provider sent: {up:?}"
            );
            assert_eq!(up.iter().find(|r| r["status"] == 429).expect("429")["error_type"], "rate_limit_exceeded");
            // The hot path counted the upstream exchanges from the same plaintext.
            let s = agent.wait_until(Duration::from_secs(10), "the upstream requests", |s| {
                s.get("llm_proxy_provider_requests_total{provider=\"openai\"}") == 3
                    && s.get("llm_proxy_provider_requests_total{provider=\"anthropic\"}") == 1
            });
            assert_eq!(s.get("llm_proxy_provider_requests_failed_total{provider=\"openai\"}"), 1, "{build}: the 429");
            assert!(s.get("metrics_agent_tls_plaintext_connections_total") >= 2, "{build}: both upstreams");
            assert_eq!(
                s.get("metrics_agent_tls_connections_total"),
                s.get("metrics_agent_tls_plaintext_connections_total"),
                "{build}: every TLS connection's plaintext was seen"
            );
        });
    }
}

const OPENAI_BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
const OPENAI_STREAM_BODY: &str = r#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#;
const ANTHROPIC_BODY: &str = r#"{"model":"claude-sonnet-4","max_tokens":10,"messages":[]}"#;
const ANTHROPIC_STREAM_BODY: &str = r#"{"model":"claude-sonnet-4","max_tokens":10,"stream":true,"messages":[]}"#;

/// The mixed gateway's clients: four h2c connections (prior knowledge),
/// plain exchanges in sequence and streams multiplexed, both providers, a
/// 429 and a 500.
fn h2c_traffic(base: &str) -> Vec<Answer> {
    let mut answers =
        h2_client(base, false, OPENAI_BODY, &["/openai/v1/chat/completions", "/openai/v1/chat/completions?status=429"]);
    answers.extend(h2_client(
        base,
        false,
        ANTHROPIC_BODY,
        &["/anthropic/v1/messages", "/anthropic/v1/messages?status=500"],
    ));
    let openai_stream = "/openai/v1/chat/completions?events=6&interval_ms=20&usage=1";
    answers.extend(h2_client(base, true, OPENAI_STREAM_BODY, &[openai_stream, openai_stream]));
    let anthropic_stream = "/anthropic/v1/messages?events=4&interval_ms=20";
    answers.extend(h2_client(base, true, ANTHROPIC_STREAM_BODY, &[anthropic_stream, anthropic_stream]));
    answers
}

/// A mixed `--exe`: the Go proxy with `h2c.go` (golang.org/x/net's h2c)
/// serves its clients HTTP/2 over cleartext and calls the providers over
/// TLS (Go's crypto/tls, HTTP/1.1). In `sockets` mode, the client side's h2
/// streams come from the socket bytes and the upstream side from the
/// crypto/tls plaintext: requests, statuses and tokens exact on both sides,
/// with every other Go toolchain (`go::toolchains_part(0, 2)`; the other
/// half runs `go_http2_upstream_client_over_crypto_tls_is_measured`, and
/// the HTTP/1.1 test above runs all of them: an agent start per toolchain
/// is CI's time).
#[test]
fn go_h2c_gateway_with_tls_upstreams_is_measured_exactly_on_both_sides() {
    let _serial = serial();
    let upstreams = TlsUpstreams::start();
    let dir = TempDir::new("go-h2c");
    for toolchain in go::toolchains_part(0, 2) {
        let go = &toolchain.version;
        let binary = toolchain.build("-s -w", true).build(&dir, &format!("go-h2c-{go}"));
        let (_proxy, port) = go::start_reverse_proxy_with(&binary, &upstreams.routes(), &["-h2c"]);
        for_each_mode(&[AttachMode::Sockets], |mode| {
            upstreams.reset();
            let mut args = vec!["--exe".to_string(), binary.display().to_string(), "--print-requests".into()];
            args.extend(mode.args().map(String::from));
            args.extend(upstreams.provider_args());
            let agent = Agent::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
            agent.wait_until(Duration::from_secs(10), "the Go gateway traced", |s| {
                s.get("metrics_agent_traced_processes") == 1
            });
            let answers = h2c_traffic(&format!("http://127.0.0.1:{port}"));
            let requests = answers.len() as u64;
            let failed = answers.iter().filter(|a| a.status >= 400).count() as u64;
            let class = |c: u64| answers.iter().filter(|a| a.status / 100 == c).count() as u64;
            upstreams.openai.wait_idle(Duration::from_secs(20));
            upstreams.anthropic.wait_idle(Duration::from_secs(20));
            let (oa_requests, an_requests) = (upstreams.openai.snapshot().0, upstreams.anthropic.snapshot().0);
            assert_eq!(oa_requests + an_requests, requests, "{go}: every request reached a provider");

            // Hot path: the client side's streams from the socket bytes, the
            // provider requests from the TLS plaintext.
            let s = agent.wait_until(Duration::from_secs(20), "every stream and provider request counted", |s| {
                s.get("llm_proxy_h2_streams_ended_total") >= requests
                    && s.get("llm_proxy_provider_requests_total{provider=\"openai\"}") >= oa_requests
                    && s.get("llm_proxy_provider_requests_total{provider=\"anthropic\"}") >= an_requests
            });
            let hot: Vec<&str> = s
                .text
                .lines()
                .filter(|l| {
                    !l.starts_with('#') && (l.contains("h2") || l.contains("requests") || l.contains("responses"))
                })
                .collect();
            let hot = hot.join("\n");
            assert_eq!(s.get("llm_proxy_requests_total"), requests, "{go}: requests\n{hot}");
            assert_eq!(s.get("llm_proxy_requests_failed_total"), failed, "{go}: failed\n{hot}");
            for (label, c) in [("2xx", 2), ("4xx", 4), ("5xx", 5)] {
                assert_eq!(
                    s.get(&format!("llm_proxy_responses_total{{class=\"{label}\"}}")),
                    class(c),
                    "{go}: {label}"
                );
            }
            assert_eq!(s.get("llm_proxy_h2_connections_total"), 4, "{go}: one h2c connection per client run");
            assert_eq!(s.get("llm_proxy_h2_streams_opened_total"), requests, "{go}");
            assert_eq!(s.get("llm_proxy_h2_streams_ended_total"), requests, "{go}");
            assert_eq!(s.get("llm_proxy_h2_rst_streams_total"), 0, "{go}");
            assert_eq!(s.get("metrics_agent_h2_framing_lost_total"), 0, "{go}: frame boundaries kept");
            assert_eq!(s.get("llm_proxy_provider_requests_total{provider=\"openai\"}"), oa_requests, "{go}");
            assert_eq!(s.get("llm_proxy_provider_requests_total{provider=\"anthropic\"}"), an_requests, "{go}");
            let upstream_failed = s.get("llm_proxy_provider_requests_failed_total{provider=\"openai\"}")
                + s.get("llm_proxy_provider_requests_failed_total{provider=\"anthropic\"}");
            assert_eq!(upstream_failed, failed, "{go}: the 429 and the 500 upstream");
            assert_eq!(
                s.get("metrics_agent_tls_connections_total"),
                s.get("metrics_agent_tls_plaintext_connections_total"),
                "{go}: every TLS connection's plaintext was seen"
            );
            llm_proxy_e2e::metrics::promtool_check(&s.text, "prometheus text");

            // Audit path: one client record per h2 stream, one upstream
            // record per TLS exchange, with the tokens the providers sent.
            agent.wait_for_printed_records(answers.len(), answers.len(), Duration::from_secs(20));
            let (oa, an) = (upstreams.openai.usage_sent(), upstreams.anthropic.usage_sent());
            for side in ["client", "upstream"] {
                let got = agent.printed_records(side);
                assert_eq!(got.len(), answers.len(), "{go}: {side}: {got:?}");
                let mut statuses: Vec<u64> = got.iter().filter_map(|r| r["status"].as_u64()).collect();
                let mut want: Vec<u64> = answers.iter().map(|a| a.status).collect();
                statuses.sort();
                want.sort();
                assert_eq!(statuses, want, "{go}: {side}: {got:?}");
                assert_eq!(got.iter().filter(|r| r["streaming"] == true).count(), 4, "{go}: {side}: {got:?}");
                let of = |provider: &str, kind: &str| {
                    got.iter()
                        .filter(|r| r["provider"] == provider)
                        .filter_map(|r| r["tokens"][kind].as_u64())
                        .sum::<u64>()
                };
                assert_eq!(
                    (
                        of("openai", "input"),
                        of("openai", "output"),
                        of("anthropic", "input"),
                        of("anthropic", "output")
                    ),
                    (oa.input, oa.output, an.input, an.output),
                    "{go}: {side}: the tokens each provider sent: {got:?}"
                );
            }
        });
    }
}

/// A Go HTTP/2 upstream client (`ForceAttemptHTTP2`, h2 over Go's
/// crypto/tls to nginx), built with every other Go toolchain (the half
/// the h2c gateway test leaves, `go::toolchains_part(1, 2)`: between them
/// the two HTTP/2 tests run each toolchain once): the hot path's provider
/// requests and failures, and the upstream records, exact.
///
/// The last exchange is a 429 whose body is whole by its length, and the
/// client closes its connection right after it. nginx sends END_STREAM in
/// an empty DATA frame of its own; when that comes after the client's
/// close, Go's transport resets the stream first (RST_STREAM `CANCEL`;
/// `llm_proxy_h2_rst_streams_total` 1). The audit path used to drop a
/// stream reset before its response's END_STREAM, and the 429's upstream
/// record with it (this test was ignored for that); a reset stream whose
/// response head came now gives its record (`audit::h2`'s unit tests
/// cover the frame orders).
#[test]
fn go_http2_upstream_client_over_crypto_tls_is_measured() {
    let _serial = serial();
    let openai = MockProvider::start(0).unwrap();
    let anthropic = MockProvider::start(0).unwrap();
    // nginx speaks h2 over TLS to the Go proxy and HTTP/1.1 to the mocks.
    let nginx = NginxH2::start(&[("openai", openai.port), ("anthropic", anthropic.port)]);
    let h2 = |name: &str| format!("h2://127.0.0.1:{}/{name}", nginx.tls_port);
    let routes = [("openai", h2("openai")), ("anthropic", h2("anthropic")), ("openai-ka", h2("openai"))];
    let dir = TempDir::new("go-h2");
    for toolchain in go::toolchains_part(1, 2) {
        let go = &toolchain.version;
        let binary = toolchain.build("-s -w", false).build(&dir, &format!("go-proxy-h2-{go}"));
        let (proxy, port) = go::start_reverse_proxy_to(&binary, &routes);
        for_each_mode(&[AttachMode::Sockets], |mode| {
            openai.reset();
            anthropic.reset();
            let mut args = vec!["--pid".to_string(), proxy.pid().to_string(), "--print-requests".into()];
            args.extend(mode.args().map(String::from));
            // One upstream address for both providers: the hot path names it openai.
            args.extend(["--provider".to_string(), format!("openai=127.0.0.1:{}", nginx.tls_port)]);
            let agent = Agent::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
            agent.wait_until(Duration::from_secs(10), "the Go proxy traced", |s| {
                s.get("metrics_agent_traced_processes") == 1
            });
            let mut c = Client::connect(port).unwrap();
            for (path, status) in EXCHANGES {
                let answered = c.request(path, 300, false).unwrap_or_else(|e| panic!("{go}: {path}: {e}"));
                assert_eq!(answered, status, "{go}: {path}");
            }
            drop(c);
            let s = agent.wait_until(Duration::from_secs(10), "the upstream h2 requests (hot path)", |s| {
                s.get("llm_proxy_provider_requests_total{provider=\"openai\"}") == 4
            });
            assert_eq!(s.get("llm_proxy_provider_requests_failed_total{provider=\"openai\"}"), 1, "{go}: the 429");
            assert!(s.get("metrics_agent_tls_plaintext_connections_total") >= 1, "{go}: the h2 connection's plaintext");
            agent.wait_for_printed_records(4, 4, Duration::from_secs(20));
            let (oa, an) = (openai.usage_sent(), anthropic.usage_sent());
            let up = agent.printed_records("upstream");
            check_mix_of_four(&up, &format!("{go}: upstream"));
            assert_eq!(
                (token_total(&up, "input"), token_total(&up, "output")),
                (oa.input + an.input, oa.output + an.output),
                "{go}: the tokens the providers sent: {up:?}"
            );
        });
    }
}

/// Each request in ONE crypto/tls `Write` of 8 MiB (head and body), to a
/// mock (`tests/go/one_write.go -serve`) that answers after the head and
/// reads the body 300 ms later: the client's reading goroutine has the whole
/// answer (200 with usage, then 413) while the `Write` is still blocked on
/// the full socket (the client reports it: `early true`). The request must
/// still be reported before its answer: hot-path requests and failures,
/// one upstream record per exchange with its status and tokens, and no
/// orphan response. It failed while a `Write` was reported at its `RET`
/// (the answer came first: an orphan, no records).
#[test]
fn go_request_in_one_blocked_write_is_reported_before_its_early_answer() {
    use std::process::{Command, Stdio};

    use llm_proxy_e2e::harness::Guard;

    const REQUESTS: usize = 4;
    let _serial = serial();
    let dir = TempDir::new("go-one-write");
    for toolchain in go::toolchains() {
        let go = &toolchain.version;
        let binary = toolchain.build("-s -w", false).build_program("one_write.go", &dir, &format!("one-write-{go}"));
        let (server, port) = one_write_server(&binary, "one-write-server");
        let mut client = Guard::spawn(
            "one-write-client",
            Command::new(&binary)
                .args(["-connect", &format!("127.0.0.1:{port}"), "-requests", &REQUESTS.to_string()])
                .args(["-body", &(8 << 20).to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
        );
        let provider = format!("openai=127.0.0.1:{port}");
        let pid = client.pid().to_string();
        let agent = Agent::start(&["--pid", &pid, "--print-requests", "--attach", "sockets", "--provider", &provider]);
        agent.wait_until(Duration::from_secs(10), "the Go client traced", |s| {
            s.get("metrics_agent_traced_processes") == 1
        });
        let answers = one_write_answers(&mut client, REQUESTS, go);
        let fields: Vec<Vec<&str>> = answers.iter().map(|a| a.split_whitespace().collect()).collect();
        assert!(
            fields.iter().all(|f| f[6] == "true"),
            "{go}: every answer came before its Write returned: {answers:?}"
        );
        let mut want: Vec<u64> = fields.iter().map(|f| f[1].parse().unwrap()).collect();
        let tokens = |i: usize| fields.iter().map(|f| f[i].parse::<u64>().unwrap()).sum::<u64>();
        let (input, output) = (tokens(3), tokens(4));
        let failed = want.iter().filter(|s| **s >= 400).count() as u64;
        assert_eq!(failed, (REQUESTS / 2) as u64, "{go}: {answers:?}");

        let s = agent.wait_until(Duration::from_secs(10), "the provider requests (hot path)", |s| {
            s.get("llm_proxy_provider_requests_total{provider=\"openai\"}") >= REQUESTS as u64
        });
        assert_eq!(s.get("llm_proxy_provider_requests_total{provider=\"openai\"}"), REQUESTS as u64, "{go}");
        assert_eq!(s.get("llm_proxy_provider_requests_failed_total{provider=\"openai\"}"), failed, "{go}: the 413s");
        agent.wait_for_printed_records(0, REQUESTS, Duration::from_secs(20));
        let up = agent.printed_records("upstream");
        let mut statuses: Vec<u64> = up.iter().filter_map(|r| r["status"].as_u64()).collect();
        statuses.sort();
        want.sort();
        assert_eq!(statuses, want, "{go}: the upstream records: {up:?}");
        assert_eq!((token_total(&up, "input"), token_total(&up, "output")), (input, output), "{go}: {up:?}");
        let s = agent.scrape();
        assert_eq!(s.get("metrics_agent_audit_orphan_responses_total"), 0, "{go}: an answer before its request");
        assert_eq!(
            s.get("metrics_agent_tls_connections_total"),
            s.get("metrics_agent_tls_plaintext_connections_total"),
            "{go}: the TLS connection's plaintext was seen"
        );
        drop(server);
    }
}

/// Go's `tls.Client` and `tls.Server` handshake lazily, inside the first
/// `Write` or `Read` when the program does not call `Handshake` (raw
/// crypto/tls users do not; Go's HTTP client does): at that call's entry the
/// socket has carried no byte yet. Both ends are traced here (`--exe` of
/// `tests/go/one_write.go`): the client with `-lazy-handshake` (its first
/// `Write` handshakes) and its server (built on `tls.Server`: its first
/// `Read` handshakes). Every request must be counted and recorded on both
/// sides, statuses and tokens exact against the client's answers. It failed
/// while a socket that had carried no TLS record was refused at that entry
/// (issue 12: each side lost its first request).
#[test]
fn go_tls_lazy_handshake_in_first_write_and_read_is_followed() {
    use std::process::{Command, Stdio};

    use llm_proxy_e2e::harness::Guard;

    const REQUESTS: usize = 4;
    let _serial = serial();
    let dir = TempDir::new("go-lazy-handshake");
    for toolchain in go::toolchains() {
        let go = &toolchain.version;
        let binary = toolchain.build("-s -w", false).build_program("one_write.go", &dir, &format!("lazy-{go}"));
        let exe = binary.to_str().unwrap();
        // The agent first: both processes are traced from their start, so
        // their connections from their connect and accept.
        let agent = Agent::start(&["--exe", exe, "--print-requests", "--attach", "sockets"]);
        let (server, port) = one_write_server(&binary, "lazy-server");
        let mut client = Guard::spawn(
            "lazy-client",
            Command::new(&binary)
                .args(["-connect", &format!("127.0.0.1:{port}"), "-requests", &REQUESTS.to_string()])
                .args(["-body", "2000", "-lazy-handshake"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
        );
        agent.wait_until(Duration::from_secs(10), "the Go client and server traced", |s| {
            s.get("metrics_agent_traced_processes") == 2
        });
        let answers = one_write_answers(&mut client, REQUESTS, go);
        let fields: Vec<Vec<&str>> = answers.iter().map(|a| a.split_whitespace().collect()).collect();
        let mut want: Vec<u64> = fields.iter().map(|f| f[1].parse().unwrap()).collect();
        want.sort();
        let tokens = |i: usize| fields.iter().map(|f| f[i].parse::<u64>().unwrap()).sum::<u64>();
        let (input, output) = (tokens(3), tokens(4));
        let failed = want.iter().filter(|s| **s >= 400).count() as u64;
        assert_eq!(failed, (REQUESTS / 2) as u64, "{go}: {answers:?}");

        // Hot path: the server's side counts every request it read, and
        // (the mock's address is not a configured provider) the client's
        // upstream side counts them as requests of provider `other`.
        let s = agent.wait_until(Duration::from_secs(10), "the requests (hot path)", |s| {
            s.get("llm_proxy_requests_total") >= REQUESTS as u64
        });
        assert_eq!(s.get("llm_proxy_requests_total"), REQUESTS as u64, "{go}: the server's requests");
        agent.wait_for_printed_records(REQUESTS, REQUESTS, Duration::from_secs(20));
        let s = agent.scrape();
        assert_eq!(s.get("llm_proxy_requests_total"), REQUESTS as u64, "{go}: the server's requests");
        assert_eq!(s.get("llm_proxy_requests_failed_total"), failed, "{go}: the server's 413s");
        let other = "{provider=\"other\"}";
        assert_eq!(s.get(&format!("llm_proxy_provider_requests_total{other}")), REQUESTS as u64, "{go}: the client's");
        assert_eq!(
            s.get(&format!("llm_proxy_provider_requests_failed_total{other}")),
            failed,
            "{go}: the client's 413s"
        );
        for side in ["client", "upstream"] {
            let records = agent.printed_records(side);
            let mut statuses: Vec<u64> = records.iter().filter_map(|r| r["status"].as_u64()).collect();
            statuses.sort();
            assert_eq!(statuses, want, "{go}: the {side} records: {records:?}");
            assert_eq!(
                (token_total(&records, "input"), token_total(&records, "output")),
                (input, output),
                "{go}: {side}: {records:?}"
            );
        }
        assert_eq!(s.get("metrics_agent_audit_orphan_responses_total"), 0, "{go}: an answer before its request");
        assert_eq!(s.get("metrics_agent_tls_connections_total"), 2, "{go}: one connection, seen from both ends");
        assert_eq!(s.get("metrics_agent_tls_plaintext_connections_total"), 2, "{go}: its plaintext on both ends");
        drop(client);
        drop(server);
        drop(agent);
    }
}

/// `tests/go/one_write.go -serve` started from `binary`, and its port.
fn one_write_server(binary: &std::path::Path, name: &str) -> (llm_proxy_e2e::harness::Guard, u16) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let mut server =
        llm_proxy_e2e::harness::Guard::spawn(name, Command::new(binary).arg("-serve").stdout(Stdio::piped()));
    let mut line = String::new();
    BufReader::new(server.child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port: u16 = line.trim().strip_prefix("port ").and_then(|p| p.parse().ok()).expect("port N");
    (server, port)
}

/// Starts a waiting one_write client (a line on its stdin) and returns its
/// ground truth: "status S tokens IN OUT early E" per request.
fn one_write_answers(client: &mut llm_proxy_e2e::harness::Guard, requests: usize, go: &str) -> Vec<String> {
    use std::io::{BufRead, BufReader, Write};

    client.child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let answers: Vec<String> =
        BufReader::new(client.child.stdout.take().unwrap()).lines().map(Result::unwrap).collect();
    assert!(client.child.wait().unwrap().success(), "{go}: the client failed: {answers:?}");
    assert_eq!(answers.len(), requests, "{go}: {answers:?}");
    answers
}
