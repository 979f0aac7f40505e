//! Security end-to-end tests (root), each written as the attack it stops:
//! DNS rebinding, a cross-site form post, slow-header connections, a
//! compromised agent's privileges, a database password in the URL, and an
//! API key used as an identity source. Each drives the real agent binary.

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use llm_proxy_e2e::{
    client::Client,
    harness::{self, Agent, TempDir, agent_binary, serial},
    mock::MockProvider,
    postgres::PgCluster,
};

/// An agent waiting for a proxy that is not running yet (the send/recv test
/// proxy), with `config` as its configuration file.
fn idle_agent(config: &str, dir: &TempDir) -> Agent {
    let path = dir.0.join("agent.toml");
    std::fs::write(&path, config).unwrap();
    let exe = harness::private_send_recv_proxy(dir);
    Agent::start(&["--exe", &exe.display().to_string(), "--config", &path.display().to_string()])
}

/// Sends `request` as it is; returns the status code and the body.
fn exchange(port: u16, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let _ = s.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, body.to_string())
}

fn get(port: u16, path: &str, host: &str, extra: &str) -> (u16, String) {
    exchange(port, &format!("GET {path} HTTP/1.0\r\nhost: {host}\r\n{extra}\r\n"))
}

fn post(port: u16, path: &str, content_type: &str, extra: &str, body: &str) -> (u16, String) {
    exchange(
        port,
        &format!(
            "POST {path} HTTP/1.0\r\nhost: 127.0.0.1:{port}\r\ncontent-type: {content_type}\r\n{extra}content-length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

#[test]
fn a_dns_rebinding_request_is_refused_on_every_route() {
    let _serial = serial();
    let dir = TempDir::new("sec-rebind");
    let agent = idle_agent("", &dir);
    let port = agent.port;
    let routes = ["/", "/metrics", "/api/v1/metrics", "/api/v1/requests", "/api/v1/fscores"];
    for path in routes {
        let (status, _) = get(port, path, &format!("127.0.0.1:{port}"), "");
        assert_eq!(status, 200, "{path} answers its own host name");
        // A page on evil.example whose name now resolves to 127.0.0.1.
        let rebound = format!("evil.example:{port}");
        let (status, body) = get(port, path, &rebound, &format!("origin: http://{rebound}\r\n"));
        assert!(status == 421 || status == 403, "{path} answered a rebound name with {status}: {body}");
        assert!(!body.contains('{') && !body.contains("# TYPE"), "{path} leaked data: {body}");
        let (status, _) = get(port, path, &rebound, "");
        assert_eq!(status, 421, "{path}: the Host alone is refused");
    }
    // The WebSocket stream, with the rebound name in Host and Origin.
    let upgrade = "connection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let rebound = format!("evil.example:{port}");
    let (status, _) = get(port, "/api/v1/metrics/stream", &rebound, &format!("{upgrade}origin: http://{rebound}\r\n"));
    assert_eq!(status, 421, "the stream refuses the rebound name");
    // A foreign Origin on the agent's own name (a cross-origin page) is refused too.
    let (status, _) = get(port, "/metrics", &format!("localhost:{port}"), "origin: http://evil.example\r\n");
    assert_eq!(status, 403);
    let (status, _) =
        get(port, "/metrics", &format!("localhost:{port}"), &format!("origin: http://localhost:{port}\r\n"));
    assert_eq!(status, 200, "the dashboard's own origin is served");
}

#[test]
fn a_cross_site_form_post_is_refused_and_nothing_is_stored() {
    let _serial = serial();
    let dir = TempDir::new("sec-csrf");
    let agent = idle_agent("", &dir);
    let port = agent.port;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let path = format!("/api/v1/fscores?timestamp={now}");
    let result = |suite: &str| {
        format!(
            "{{\"application\":\"app\",\"suite\":\"{suite}\",\"model\":\"m\",\"test_case\":\"c1\",\"expected\":true,\"actual\":true}}\n"
        )
    };
    // What a hostile page's <form enctype="text/plain"> or urlencoded form sends.
    let cross_site = "origin: http://evil.example\r\nsec-fetch-site: cross-site\r\n";
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
        let (status, body) = post(port, &path, content_type, cross_site, &result("forged"));
        assert_eq!(status, 403, "{content_type}: {body}");
        // The same body without the browser's headers, still not JSON.
        let (status, body) = post(port, &path, content_type, "", &result("forged"));
        assert_eq!(status, 415, "{content_type}: {body}");
    }
    // A same-site browser fetch from another site's frame says so.
    let (status, _) = post(port, &path, "application/json", "sec-fetch-site: same-site\r\n", &result("forged"));
    assert_eq!(status, 403);
    let (_, stored) = get(port, "/api/v1/fscores?from=-1h", &format!("127.0.0.1:{port}"), "");
    let stored: serde_json::Value = serde_json::from_str(stored.trim()).expect("a JSON page of F-scores");
    assert_eq!(stored["rows"], serde_json::json!([]), "nothing forged was stored: {stored}");

    // A genuine client: JSON, and the terminal escape in its name stripped.
    let (status, body) = post(port, &path, "application/json", "", &result("night\\u001b[2Jly"));
    assert_eq!((status, body.as_str()), (200, r#"{"received":1,"stored":1}"#));
    let (_, stored) = get(port, "/api/v1/fscores?from=-1h", &format!("127.0.0.1:{port}"), "");
    let page: serde_json::Value = serde_json::from_str(&stored).unwrap();
    let rows = &page["rows"];
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(rows[0]["suite"], "night[2Jly", "the ESC character is gone: {page}");

    // One request may carry 10,000 results at most.
    let flood: String = (0..10_001)
        .map(|i| {
            format!(
                "{{\"application\":\"app\",\"suite\":\"flood\",\"model\":\"m\",\"test_case\":\"c{i}\",\"expected\":true,\"actual\":false}}\n"
            )
        })
        .collect();
    let (status, body) = post(port, &path, "application/json", "", &flood);
    assert_eq!(status, 413, "{body}");
}

/// Raises this test's own open-files limit for the attacking sockets.
fn raise_open_files(needed: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = needed.min(limit.rlim_max).max(limit.rlim_cur);
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

#[test]
fn slow_header_connections_are_closed_by_the_timeout_while_metrics_keeps_answering() {
    const SLOW: usize = 2_000;
    // The default `[api] header_timeout_seconds`.
    const HEADER_TIMEOUT_S: u64 = 10;
    let _serial = serial();
    raise_open_files(SLOW as u64 + 1024);
    let dir = TempDir::new("sec-slowloris");
    let agent = idle_agent("", &dir);
    let port = agent.port;
    let opened = Instant::now();
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|i| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connection {i}: {e}"));
            // A request head that never ends.
            s.write_all(b"GET /metrics HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ").unwrap();
            s
        })
        .collect();
    // Prometheus keeps being answered meanwhile.
    for _ in 0..5 {
        let started = Instant::now();
        let (status, body) = get(port, "/metrics", &format!("127.0.0.1:{port}"), "");
        assert_eq!(status, 200, "/metrics did not answer with {SLOW} slow connections open");
        assert!(body.contains("llm_proxy_requests_total"));
        assert!(started.elapsed() < Duration::from_secs(5), "/metrics took {:?}", started.elapsed());
    }
    // Every slow connection is closed by the agent: reading gives EOF or a reset.
    for (i, s) in slow.iter_mut().enumerate() {
        let left = Duration::from_secs(HEADER_TIMEOUT_S + 20).saturating_sub(opened.elapsed());
        s.set_read_timeout(Some(left.max(Duration::from_millis(10)))).unwrap();
        let mut buf = [0u8; 512];
        match s.read(&mut buf) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("slow connection {i} still open after {:?}: {e}", opened.elapsed()),
        }
    }
    let scrape = agent.scrape();
    let closed = scrape.get("metrics_agent_http_connections_closed_total{reason=\"header_timeout\"}")
        + scrape.get("metrics_agent_http_connections_closed_total{reason=\"evicted\"}");
    assert_eq!(closed, SLOW as u64, "each slow connection closed once, by the timeout or for a newer one");
    assert!(scrape.get("metrics_agent_http_connections_closed_total{reason=\"header_timeout\"}") > 0);
}

/// The `Name:` lines of a task's status file.
fn status_field(status: &str, name: &str) -> String {
    status.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string()).unwrap_or_default()
}

#[test]
fn the_agent_runs_with_reduced_privileges_and_still_attaches_a_proxy_started_after_it() {
    // CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF.
    const KEPT: &str = "000000c000280004";
    let _serial = serial();
    let openai = MockProvider::start(0).unwrap();
    let dir = TempDir::new("sec-late-proxy");
    let exe = harness::private_send_recv_proxy(&dir);
    let agent = Agent::start(&[
        "--exe",
        &exe.display().to_string(),
        "--provider",
        &format!("openai=127.0.0.1:{}", openai.port),
        "--no-storage",
    ]);
    let pid = agent.guard.pid();
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten().collect();
    assert!(tasks.len() > 1, "the agent has threads");
    for task in tasks {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap();
        let thread = format!("{} ({})", task.path().display(), status_field(&status, "Name:"));
        for (field, want) in [
            ("CapEff:", KEPT),
            ("CapPrm:", KEPT),
            ("CapBnd:", KEPT),
            ("CapInh:", "0000000000000000"),
            ("CapAmb:", "0000000000000000"),
            ("NoNewPrivs:", "1"),
            ("Seccomp:", "2"),
        ] {
            assert_eq!(status_field(&status, field), want, "{field} of {thread}");
        }
    }
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits.lines().find(|l| l.starts_with("Max core file size")).unwrap();
    assert_eq!(core.split_whitespace().nth(4), Some("0"), "no core dumps: {core}");

    // A proxy started now is attached and counted exactly.
    assert_eq!(agent.scrape().get("metrics_agent_traced_processes"), 0);
    let (_proxy, port) = harness::start_send_recv_proxy_exe(&exe, &[("openai", openai.port)]);
    agent.wait_until(Duration::from_secs(10), "the new proxy to be traced", |s| {
        s.get("metrics_agent_traced_processes") == 1
    });
    let mut client = Client::connect(port).unwrap();
    for _ in 0..5 {
        assert_eq!(client.request("/openai/v1/chat/completions", 100, false).unwrap(), 200);
    }
    let truth = client.truth.clone();
    drop(client);
    let s = agent.wait_until(Duration::from_secs(20), "the proxy's requests", |s| {
        s.get("llm_proxy_request_duration_seconds_count") == truth.requests
    });
    assert_eq!(s.get("llm_proxy_requests_total"), truth.requests);
    assert_eq!(s.get("llm_proxy_bytes_received_total{side=\"client\"}"), truth.bytes_sent);
    assert!(!agent.log_text().contains("Operation not permitted"), "{}", agent.log_text());
}

#[test]
fn a_postgres_password_in_the_url_is_redacted_in_config_and_in_the_log() {
    const CANARY: &str = "pg-canary-7e21";
    let _serial = serial();
    let cluster = PgCluster::start();
    let url = format!("{}?password={CANARY}&sslmode=disable", cluster.url());
    let out = Command::new(agent_binary())
        .args(["config", "--exe", "/bin/true", "--database-url", &url])
        .output()
        .expect("metrics-agent config");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!printed.contains(CANARY), "config printed the password:\n{printed}");
    assert!(printed.contains("password=<redacted>"), "{printed}");

    let dir = TempDir::new("sec-pg-redact");
    let exe = harness::private_send_recv_proxy(&dir);
    let agent = Agent::start(&["--exe", &exe.display().to_string(), "--database-url", &url]);
    agent.wait_until(Duration::from_secs(20), "the database to be used", |_| {
        agent.log_text().contains("storing records")
    });
    let log = agent.log_text();
    assert!(!log.contains(CANARY), "the log holds the password:\n{log}");
    assert!(log.contains("password=<redacted>"), "{log}");
}

#[test]
fn an_api_key_header_as_identity_source_is_a_one_line_start_up_error() {
    let _serial = serial();
    let dir = TempDir::new("sec-identity");
    let config = dir.0.join("agent.toml");
    std::fs::write(&config, "[identity]\nsession_headers = [\"authorization\"]\n").unwrap();
    let mut child = Command::new(agent_binary())
        .args(["run", "--exe", "/bin/true", "--no-storage", "--listen"])
        .arg(format!("127.0.0.1:{}", harness::free_port()))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the agent");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the agent started with the API key as a session id");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("session_headers") && stderr.contains("authorization"), "{stderr}");
}
