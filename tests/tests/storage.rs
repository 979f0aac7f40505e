//! End-to-end storage tests (root), each on SQLite and on a private
//! PostgreSQL server: the agent attached to nginx with a mock provider
//! stores what it sees; `metrics-agent query` and the HTTP API must show
//! exactly the mock's ground truth, and a kill -9 followed by a restart loses
//! at most one flush interval and double-counts nothing.

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::Command,
    sync::{Mutex, MutexGuard},
    thread::sleep,
    time::Duration,
};

use llm_proxy_e2e::{
    client::Client,
    harness::{self, Agent, Nginx, TempDir, agent_binary, http_get},
    metrics::Scrape,
    mock::MockProvider,
    postgres::PgCluster,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Flush interval the tests configure.
const FLUSH_MS: u64 = 1_000;

#[derive(Clone, Copy)]
enum Database {
    Sqlite,
    Postgres,
}

struct Setup {
    openai: MockProvider,
    nginx: Nginx,
    _dir: TempDir,
    _postgres: Option<PgCluster>,
    url: String,
    config: String,
}

fn setup(database: Database) -> Setup {
    let openai = MockProvider::start(0).unwrap();
    let nginx = Nginx::start(&[("openai", openai.port)]);
    let dir = TempDir::new("storage");
    let (url, postgres) = match database {
        Database::Sqlite => (format!("sqlite://{}/db/metrics.db", dir.0.display()), None),
        Database::Postgres => {
            let cluster = PgCluster::start();
            (cluster.url(), Some(cluster))
        }
    };
    let config = dir.0.join("agent.toml").display().to_string();
    std::fs::write(&config, format!("[storage]\nflush_interval_ms = {FLUSH_MS}\n")).unwrap();
    Setup { openai, nginx, _dir: dir, _postgres: postgres, url, config }
}

impl Setup {
    fn agent(&self) -> Agent {
        self.agent_with_env(&[])
    }

    fn agent_with_env(&self, env: &[(&str, &str)]) -> Agent {
        let provider = format!("openai=127.0.0.1:{}", self.openai.port);
        let agent = Agent::start_with_env(
            &[
                "--exe",
                harness::NGINX,
                "--provider",
                &provider,
                "--application-id",
                "e2e-app",
                "--database-url",
                &self.url,
                "--config",
                &self.config,
            ],
            env,
        );
        agent.wait_until(Duration::from_secs(10), "nginx traced", |s| s.get("metrics_agent_traced_processes") >= 3);
        agent
    }

    /// `n` chat completions (usage 12 in, 34 out) and `errors` 429s (no usage).
    fn traffic(&self, n: usize, errors: usize) {
        let mut c = Client::connect(self.nginx.port).unwrap();
        for _ in 0..n {
            assert_eq!(c.request("/openai/v1/chat/completions", 200, false).unwrap(), 200);
        }
        for _ in 0..errors {
            assert_eq!(c.request("/openai/v1/chat/completions?status=429", 200, false).unwrap(), 429);
        }
    }

    /// `metrics-agent query --format json` over the last hour, all in one bucket per model.
    fn query(&self) -> serde_json::Value {
        let out = Command::new(agent_binary())
            .args(["query", "--database-url", &self.url, "--from", "-2h"])
            .args(["--step", "1d", "--group-by", "provider,model", "--format", "json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "query failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn stored_requests(&self) -> u64 {
        self.query()["rows"].as_array().unwrap().iter().map(|r| r["request_count"].as_u64().unwrap()).sum()
    }
}

/// Records the agent's storage has taken (both sides: two per exchange).
fn buffered_at_least(m: &Scrape, n: u64) -> bool {
    m.get("metrics_agent_storage_records_total") >= n
}

#[test]
fn stored_rollups_match_the_mock_providers_ground_truth_sqlite() {
    stored_rollups_match_the_mock_providers_ground_truth(Database::Sqlite);
}

#[test]
fn stored_rollups_match_the_mock_providers_ground_truth_postgres() {
    stored_rollups_match_the_mock_providers_ground_truth(Database::Postgres);
}

#[test]
fn kill_9_loses_at_most_one_flush_interval_and_double_counts_nothing_sqlite() {
    kill_9_loses_at_most_one_flush_interval_and_double_counts_nothing(Database::Sqlite);
}

#[test]
fn kill_9_loses_at_most_one_flush_interval_and_double_counts_nothing_postgres() {
    kill_9_loses_at_most_one_flush_interval_and_double_counts_nothing(Database::Postgres);
}

/// Browsers send the API token as `?token=`: the storage routes, whose
/// parameters are strict, must not see it as an unknown parameter.
#[test]
fn the_storage_api_accepts_the_token_in_the_query() {
    const TOKEN: &str = "storage-token-7d3b";
    let _serial = serial();
    let s = setup(Database::Sqlite);
    let agent = s.agent_with_env(&[("METRICS_AGENT_API_TOKEN", TOKEN)]);
    for path in
        ["/api/v1/metrics?from=-1h&step=1m&group_by=model", "/api/v1/requests?from=-1h", "/api/v1/fscores?from=-1h"]
    {
        assert!(http_get(agent.port, path, "application/json").is_none(), "{path} without the token is refused");
        let body = http_get(agent.port, &format!("{path}&token={TOKEN}"), "application/json")
            .unwrap_or_else(|| panic!("{path}&token=... is not answered with 200"));
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(json.is_object() || json.is_array(), "{json}");
    }
    let body = http_get(agent.port, &format!("/api/v1/metrics?token={TOKEN}"), "application/json").unwrap();
    assert!(body.contains("\"rows\""), "{body}");
}

/// A plain HTTP/1.0 POST; returns the status code and the body.
fn http_post(port: u16, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST {path} HTTP/1.0\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}",
        body.len()
    );
    write!(s, "{head}\r\n\r\n{body}").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, body.to_string())
}

fn stored_rollups_match_the_mock_providers_ground_truth(database: Database) {
    let _serial = serial();
    let s = setup(database);
    let mut agent = s.agent();
    s.traffic(25, 5);
    let sent = s.openai.stats.requests.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(sent, 30, "the mock provider's own count");
    agent.wait_until(Duration::from_secs(20), "records reach storage", |m| buffered_at_least(m, 2 * sent));
    // A clean shutdown flushes everything.
    assert!(agent.guard.signal_and_wait(libc::SIGTERM, Duration::from_secs(30)).is_some_and(|s| s.success()));
    let result = s.query();
    assert_eq!(result["tier"], "1d", "{result}");
    let rows = result["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "one provider and model: {result}");
    let row = &rows[0];
    assert_eq!((row["provider"].as_str(), row["model"].as_str()), (Some("openai"), Some("gpt-4o-mini")), "{row}");
    assert_eq!(row["request_count"], sent, "client side: what nginx served");
    assert_eq!(row["error_count"], 5);
    assert_eq!(row["tokens_input_sum"], 25 * 12);
    assert_eq!(row["tokens_output_sum"], 25 * 34);
    assert_eq!(row["usage_unknown_count"], 5);
    // Built-in price of gpt-4o-mini: 12 x 0.15e-6 + 34 x 0.60e-6 = 0.0000222 per request.
    assert_eq!(row["cost_usd_sum"], "0.0005550");
    assert!(row["latency_p99_us"].as_u64().unwrap() >= row["latency_p50_us"].as_u64().unwrap());

    // The same through the HTTP API of a new agent on the same database.
    let agent = s.agent();
    let body =
        http_get(agent.port, "/api/v1/metrics?from=-2h&step=1h&group_by=model&side=upstream", "application/json")
            .expect("GET /api/v1/metrics");
    let api: serde_json::Value = serde_json::from_str(&body).unwrap();
    let upstream: u64 = api["rows"].as_array().unwrap().iter().map(|r| r["request_count"].as_u64().unwrap()).sum();
    assert_eq!(upstream, sent, "upstream side: what the mock received: {api}");
    assert_eq!(api["tier"], "1h");
    let bad = http_get(agent.port, "/api/v1/metrics?step=7s", "application/json");
    assert!(bad.is_none(), "a bad step is a 400");

    // F-scores through the API: 2 tp, 1 fp, 1 fn, 1 tn.
    let results: String = [(true, true), (true, true), (false, true), (true, false), (false, false)]
        .iter()
        .enumerate()
        .map(|(i, (e, a))| {
            format!("{{\"application\":\"e2e-app\",\"suite\":\"s\",\"model\":\"gpt-4o-mini\",\"test_case\":\"c{i}\",\"expected\":{e},\"actual\":{a}}}\n")
        })
        .collect();
    let (status, answer) = http_post(agent.port, "/api/v1/fscores", &results);
    assert_eq!(status, 400, "results without a time are refused: {answer}");
    assert!(answer.contains("no timestamp"), "{answer}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let ingest = format!("/api/v1/fscores?timestamp={now}");
    let (status, answer) = http_post(agent.port, &ingest, &results);
    assert_eq!((status, answer.as_str()), (200, r#"{"received":5,"stored":5}"#));
    let (status, answer) = http_post(agent.port, &ingest, &results);
    assert_eq!((status, answer.as_str()), (200, r#"{"received":5,"stored":0}"#), "re-ingesting counts once");
    let (status, answer) = http_post(agent.port, "/api/v1/fscores", "{\"application\":1}\n");
    assert_eq!(status, 400, "{answer}");
    let scores: serde_json::Value =
        serde_json::from_str(&http_get(agent.port, "/api/v1/fscores?from=-1h&beta=2", "application/json").unwrap())
            .unwrap();
    let row = &scores[0];
    assert_eq!(scores.as_array().map(Vec::len), Some(1), "{scores}");
    assert_eq!(
        (row["tp"].as_u64(), row["fp"].as_u64(), row["fn"].as_u64(), row["tn"].as_u64()),
        (Some(2), Some(1), Some(1), Some(1))
    );
    assert!((row["f1"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-12, "{row}");
}

fn kill_9_loses_at_most_one_flush_interval_and_double_counts_nothing(database: Database) {
    let _serial = serial();
    let s = setup(database);
    let mut agent = s.agent();
    // Phase 1: stored long before the crash.
    s.traffic(20, 0);
    agent.wait_until(Duration::from_secs(20), "phase 1 buffered", |m| buffered_at_least(m, 40));
    sleep(Duration::from_millis(3 * FLUSH_MS));
    assert_eq!(s.stored_requests(), 20, "flushed within the interval");
    // Phase 2: buffered more than one interval before the kill, then a burst right before it.
    s.traffic(10, 0);
    agent.wait_until(Duration::from_secs(20), "phase 2 buffered", |m| buffered_at_least(m, 60));
    sleep(Duration::from_millis(2 * FLUSH_MS + 500));
    s.traffic(10, 0);
    agent.wait_until(Duration::from_secs(20), "burst buffered", |m| buffered_at_least(m, 80));
    let killed = std::time::Instant::now();
    assert!(agent.guard.signal_and_wait(libc::SIGKILL, Duration::from_secs(60)).is_some(), "kill -9");
    eprintln!("the agent exited {:?} after SIGKILL", killed.elapsed());
    let after_crash = s.stored_requests();
    assert!((30..=40).contains(&after_crash), "kept {after_crash}: at most the last interval (10) may be lost");

    // Restart on the same database: new records add up, nothing is counted twice.
    let mut agent = s.agent();
    s.traffic(15, 0);
    agent.wait_until(Duration::from_secs(20), "phase 3 buffered", |m| buffered_at_least(m, 30));
    assert!(agent.guard.signal_and_wait(libc::SIGTERM, Duration::from_secs(30)).is_some_and(|s| s.success()));
    assert_eq!(s.stored_requests(), after_crash + 15);
}
