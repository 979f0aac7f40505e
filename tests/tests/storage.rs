//! End-to-end storage tests (root), each on SQLite and on a private
//! PostgreSQL server: the agent attached to nginx with a mock provider
//! stores what it sees; `metrics-agent query` and the HTTP API must show
//! exactly the mock's ground truth, and a kill -9 followed by a restart loses
//! at most one flush interval and double-counts nothing.

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::Command,
    thread::sleep,
    time::Duration,
};

use llm_proxy_e2e::{
    client::Client,
    harness::{Agent, Nginx, TempDir, agent_binary, http_get, serial},
    metrics::Scrape,
    mock::MockProvider,
    postgres::PgCluster,
};

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
    setup_with(database, "")
}

/// `setup` with more `[storage]` settings.
fn setup_with(database: Database, storage_toml: &str) -> Setup {
    setup_configured(database, "", storage_toml)
}

/// `setup` with top-level settings and more `[storage]` settings.
fn setup_configured(database: Database, top_toml: &str, storage_toml: &str) -> Setup {
    let openai = MockProvider::start(0).unwrap();
    let nginx = Nginx::start_private(&[("openai", openai.port)]);
    let dir = TempDir::new("storage");
    let (url, postgres) = match database {
        Database::Sqlite => (format!("sqlite://{}/db/metrics.db", dir.0.display()), None),
        Database::Postgres => {
            let cluster = PgCluster::start();
            (cluster.url(), Some(cluster))
        }
    };
    let config = dir.0.join("agent.toml").display().to_string();
    std::fs::write(&config, format!("{top_toml}[storage]\nflush_interval_ms = {FLUSH_MS}\n{storage_toml}")).unwrap();
    Setup { openai, nginx, _dir: dir, _postgres: postgres, url, config }
}

impl Setup {
    fn agent(&self) -> Agent {
        self.agent_with_env(&[])
    }

    fn agent_with_env(&self, env: &[(&str, &str)]) -> Agent {
        let provider = format!("openai=127.0.0.1:{}", self.openai.port);
        let exe = self.nginx.exe.display().to_string();
        let agent = Agent::start_with_env(
            &[
                "--exe",
                &exe,
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
        agent.wait_for_nginx();
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
    let page: serde_json::Value =
        serde_json::from_str(&http_get(agent.port, "/api/v1/fscores?from=-1h&beta=2", "application/json").unwrap())
            .unwrap();
    let scores = &page["rows"];
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

#[test]
fn invented_application_names_collapse_to_other_in_storage_sqlite() {
    invented_application_names_collapse_to_other_in_storage(Database::Sqlite);
}

#[test]
fn invented_application_names_collapse_to_other_in_storage_postgres() {
    invented_application_names_collapse_to_other_in_storage(Database::Postgres);
}

/// 500 requests through nginx, each naming an application of its own in
/// `x-application-id` (a client controls it): storage keeps 20 names, stores
/// the rest as `other` and counts every collapse; no request is lost.
fn invented_application_names_collapse_to_other_in_storage(database: Database) {
    let _serial = serial();
    let s = setup_with(database, "max_applications = 20\nmax_applications_per_minute = 20\n");
    let agent = s.agent();
    let mut c = Client::connect(s.nginx.port).unwrap();
    for i in 0..500 {
        c.extra_headers = format!("x-application-id: invented-{i}\r\n");
        assert_eq!(c.request("/openai/v1/chat/completions", 200, false).unwrap(), 200);
    }
    assert_eq!(s.openai.stats.requests.load(std::sync::atomic::Ordering::Relaxed), 500);
    let m = agent.wait_until(Duration::from_secs(30), "records reach storage", |m| buffered_at_least(m, 1_000));
    let collapsed = m.get("metrics_agent_storage_names_collapsed_total{kind=\"application\"}");
    let query = || {
        let out = Command::new(agent_binary())
            .args(["query", "--database-url", &s.url, "--from", "-2h", "--step", "1d"])
            .args(["--group-by", "application", "--side", "all", "--format", "json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "query failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let count = |r: &serde_json::Value| r["request_count"].as_u64().unwrap();
    let stored = |result: &serde_json::Value| result["rows"].as_array().unwrap().iter().map(count).sum::<u64>();
    // Flushed within a few intervals (no shutdown needed).
    let mut result = query();
    for _ in 0..40 {
        if stored(&result) >= 1_000 {
            break;
        }
        sleep(Duration::from_millis(FLUSH_MS / 2));
        result = query();
    }
    assert_eq!(stored(&result), 1_000, "both sides of every request: {result}");
    let rows = result["rows"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().filter_map(|r| r["application"].as_str()).filter(|a| *a != "other").collect();
    assert_eq!(names.len(), 20, "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("invented-")), "{names:?}");
    let other = rows.iter().find(|r| r["application"] == "other").map(count).unwrap_or(0);
    assert!(other >= 2 * 470, "{result}");
    assert_eq!(collapsed, other, "every collapse is counted");
}

#[test]
fn an_oversized_fscore_query_is_capped_and_paged_sqlite() {
    an_oversized_fscore_query_is_capped_and_paged(Database::Sqlite);
}

#[test]
fn an_oversized_fscore_query_is_capped_and_paged_postgres() {
    an_oversized_fscore_query_is_capped_and_paged(Database::Postgres);
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// 30,000 F-score results, one group each at a 1 s step: an answer holds
/// 10,000 rows at most plus a `next` token (the API and the CLI), the pages
/// hold every group exactly once, and the agent's memory does not grow with
/// the answer.
fn an_oversized_fscore_query_is_capped_and_paged(database: Database) {
    const RESULTS: usize = 30_000;
    const PAGE: usize = 10_000;
    let _serial = serial();
    let s = setup(database);
    let agent = s.agent();
    let start = 1_767_225_600u64; // 2026-01-01T00:00:00Z
    let file = s._dir.0.join("results.jsonl");
    let lines: String = (0..RESULTS)
        .map(|i| {
            format!(
                "{{\"application\":\"a\",\"suite\":\"s{}\",\"model\":\"m\",\"test_case\":\"c{i}\",\"expected\":{},\"actual\":{},\"timestamp\":{}}}\n",
                i % 3,
                i % 2 == 0,
                i % 5 == 0,
                start + i as u64
            )
        })
        .collect();
    std::fs::write(&file, lines).unwrap();
    let tp_truth = (0..RESULTS).filter(|i| i % 2 == 0 && i % 5 == 0).count() as u64;
    let ingest = Command::new(agent_binary())
        .args(["fscore", "ingest"])
        .arg(&file)
        .args(["--database-url", &s.url])
        .output()
        .unwrap();
    assert!(ingest.status.success(), "{}", String::from_utf8_lossy(&ingest.stderr));

    let rss_before = rss_kib(agent.guard.pid());
    let window = format!("from={start}&to={}&step=1s", start + 86_400);
    let (mut rows, mut tp, mut pages, mut largest) = (std::collections::HashSet::new(), 0, 0, 0);
    let mut path = format!("/api/v1/fscores?{window}&limit=1000000");
    loop {
        let body = http_get(agent.port, &path, "application/json").unwrap_or_else(|| panic!("GET {path}"));
        largest = largest.max(body.len());
        let page: serde_json::Value = serde_json::from_str(&body).unwrap();
        let page_rows = page["rows"].as_array().unwrap();
        assert!(page_rows.len() <= PAGE, "{} rows in one answer", page_rows.len());
        pages += 1;
        for r in page_rows {
            assert!(rows.insert((r["start_unix"].as_u64().unwrap(), r["suite"].to_string())), "{r} twice");
            tp += r["tp"].as_u64().unwrap();
        }
        match page["next"].as_str() {
            Some(token) => path = format!("/api/v1/fscores?{window}&limit=1000000&cursor={token}"),
            None => break,
        }
    }
    assert_eq!((rows.len(), pages), (RESULTS, 3), "every group once, 10,000 per page");
    assert_eq!(tp, tp_truth);
    assert!(largest < 4 << 20, "an answer of {largest} bytes");
    let rss_after = rss_kib(agent.guard.pid());
    assert!(rss_after < rss_before + 64 * 1024, "RSS {rss_before} KiB -> {rss_after} KiB");

    // The CLI: the same cap, the token on standard error.
    let out = Command::new(agent_binary())
        .args(["fscore", "query", "--database-url", &s.url, "--from", &start.to_string(), "--step", "1s"])
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let page: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["rows"].as_array().unwrap().len(), PAGE);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cursor"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_size_budget_drops_the_oldest_detail_rows_and_counts_them_sqlite() {
    the_size_budget_drops_the_oldest_detail_rows_and_counts_them(Database::Sqlite);
}

#[test]
fn the_size_budget_drops_the_oldest_detail_rows_and_counts_them_postgres() {
    the_size_budget_drops_the_oldest_detail_rows_and_counts_them(Database::Postgres);
}

/// The smallest budget the agent takes (`max_size_mib = 1`), in bytes.
const BUDGET_BYTES: u64 = 1 << 20;

/// Exchanges the budget test sends: two detail rows each (client and
/// upstream side), about twice the budget (SQLite ≈ 2.1 MiB at ≈ 180 bytes
/// per detail row, PostgreSQL ≈ 3 MiB at 260).
const BUDGET_EXCHANGES: usize = 6_000;

/// What the test reads from the database itself, not through the agent.
#[derive(Debug)]
struct DatabaseState {
    /// The size as the budget defines it (docs/storage.md, "Size budget").
    budget_size: u64,
    /// Bytes on disk (SQLite: the file and its WAL; PostgreSQL: the tables with their partitions and indexes).
    disk: u64,
    /// `(session id, side)` of every detail row.
    details: Vec<(Option<String>, String)>,
    /// Rows of the metric tiers.
    metric_rows: u64,
}

fn read_database(url: &str) -> DatabaseState {
    use sqlx::Connection;
    const DETAILS: &str = "SELECT session_id, side FROM request_details";
    const METRIC_ROWS: &str = "SELECT (SELECT COUNT(*) FROM metrics_1m) + (SELECT COUNT(*) FROM metrics_1h) + (SELECT COUNT(*) FROM metrics_1d)";
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        if let Some(path) = url.strip_prefix("sqlite://") {
            let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(url).unwrap().read_only(true);
            let mut conn = sqlx::SqliteConnection::connect_with(&options).await.unwrap();
            let mut pragma = async |name: &str| -> u64 {
                sqlx::query_scalar::<_, i64>(&format!("PRAGMA {name}")).fetch_one(&mut conn).await.unwrap() as u64
            };
            let in_use = pragma("page_count").await - pragma("freelist_count").await;
            let budget_size = in_use * pragma("page_size").await;
            let details = sqlx::query_as(DETAILS).fetch_all(&mut conn).await.unwrap();
            let metric_rows = sqlx::query_scalar::<_, i64>(METRIC_ROWS).fetch_one(&mut conn).await.unwrap() as u64;
            let wal = std::fs::metadata(format!("{path}-wal")).map_or(0, |m| m.len());
            let disk = std::fs::metadata(path).unwrap().len() + wal;
            DatabaseState { budget_size, disk, details, metric_rows }
        } else {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            let (mut budget_size, mut disk) = (0, 0);
            for table in ["request_details", "metrics_1m", "metrics_1h", "metrics_1d", "fscore_results"] {
                let rows: i64 =
                    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}")).fetch_one(&mut conn).await.unwrap();
                budget_size += rows as u64 * metrics_agent::store::budget::postgres_row_bytes(table);
                let bytes: i64 = sqlx::query_scalar(
                    "SELECT (pg_total_relation_size(to_regclass($1)) + COALESCE((SELECT SUM(pg_total_relation_size(inhrelid)) \
                     FROM pg_inherits WHERE inhparent = to_regclass($1)), 0))::BIGINT",
                )
                .bind(table)
                .fetch_one(&mut conn)
                .await
                .unwrap();
                disk += bytes as u64;
            }
            let details = sqlx::query_as(DETAILS).fetch_all(&mut conn).await.unwrap();
            let metric_rows = sqlx::query_scalar::<_, i64>(METRIC_ROWS).fetch_one(&mut conn).await.unwrap() as u64;
            DatabaseState { budget_size, disk, details, metric_rows }
        }
    })
}

/// `max_size_mib = 1`, checked every second, on a database the test's
/// sequential client fills with twice that in detail rows through nginx:
/// the database ends within the budget; the detail rows left are exactly the
/// newest (every exchange after the oldest one kept has both its rows, none
/// before it has any); the drop counter on /metrics equals the rows the
/// client's requests produced minus the rows left; no minute row is dropped
/// and the aggregates and hot-path counters still count every request.
fn the_size_budget_drops_the_oldest_detail_rows_and_counts_them(database: Database) {
    let _serial = serial();
    // Every exchange is captured (no adaptive sampling) and has its detail row (no per-minute cap).
    let s = setup_configured(
        database,
        "max_sample_every = 1\n",
        "max_size_mib = 1\nbudget_check_seconds = 1\nmax_detail_rows_per_minute = 0\n",
    );
    let agent = s.agent();
    let started = std::time::Instant::now();
    let mut truth = llm_proxy_e2e::client::Truth::default();
    // A new connection every 500 requests: nginx closes one after 1,000 (`keepalive_requests`).
    for first in (0..BUDGET_EXCHANGES).step_by(500) {
        let mut client = Client::connect(s.nginx.port).unwrap();
        for i in first..(first + 500).min(BUDGET_EXCHANGES) {
            client.extra_headers = format!("x-session-id: budget-{i:05}\r\n");
            assert_eq!(client.request("/openai/v1/chat/completions", 200, false).unwrap(), 200);
        }
        truth.add(&client.truth);
    }
    let sent = truth.requests;
    eprintln!("{sent} exchanges in {:?}", started.elapsed());
    assert_eq!(s.openai.stats.requests.load(std::sync::atomic::Ordering::Relaxed), sent, "the mock's own count");
    let rows_made = 2 * sent;
    let written = "metrics_agent_storage_rows_written_total{table=\"request_details\"}";
    agent.wait_until(Duration::from_secs(30), "every detail row written", |m| m.get(written) >= rows_made);
    // Two checks after the last flush, the budget has been enforced on every
    // row; then the database is read until no check deletes rows between
    // the reads around the scrape (the counter is that of the rows read).
    sleep(Duration::from_millis(2_500));
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let (db, m) = loop {
        let before = read_database(&s.url);
        let m = agent.scrape();
        let after = read_database(&s.url);
        let settled = before.details.len() == after.details.len() && after.budget_size <= BUDGET_BYTES;
        if settled || std::time::Instant::now() > deadline {
            break (after, m);
        }
        sleep(Duration::from_millis(500));
    };
    eprintln!(
        "budget {BUDGET_BYTES}: measured {} bytes, {} on disk, {} detail rows, {} metric rows; \
         scrape: size {} dropped {} written {}",
        db.budget_size,
        db.disk,
        db.details.len(),
        db.metric_rows,
        m.get("metrics_agent_storage_database_size_bytes"),
        m.get("metrics_agent_storage_budget_rows_dropped_total{table=\"request_details\"}"),
        m.get(written)
    );

    // Hot path and aggregates: exact, whatever the budget deleted.
    assert_eq!(m.get("llm_proxy_requests_total"), sent, "client requests nginx served");
    assert_eq!(m.get("llm_proxy_provider_requests_total{provider=\"openai\"}"), sent, "upstream requests");
    assert_eq!(m.get(written), rows_made, "one detail row per record, both sides");

    // Within the budget, as the agent defines size, and the gauge says so.
    assert!(db.budget_size <= BUDGET_BYTES, "{} bytes over a {BUDGET_BYTES}-byte budget", db.budget_size);
    assert!(m.get("metrics_agent_storage_database_size_bytes") <= BUDGET_BYTES);
    assert_eq!(m.get("metrics_agent_storage_size_budget_bytes"), BUDGET_BYTES);

    // The rows left are the newest: a suffix of the client's sequence.
    let mut sides = vec![0u8; BUDGET_EXCHANGES];
    for (session, side) in &db.details {
        let seq: usize = session
            .as_deref()
            .and_then(|s| s.strip_prefix("budget-"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a detail row of session {session:?} ({side})"));
        sides[seq] += 1;
    }
    let oldest_kept = sides.iter().position(|n| *n > 0).expect("some detail rows are kept");
    assert!(sides.iter().all(|n| *n <= 2), "no exchange has more than its two rows");
    let missing_after: Vec<usize> = (oldest_kept + 1..BUDGET_EXCHANGES).filter(|i| sides[*i] != 2).collect();
    assert!(
        missing_after.is_empty(),
        "rows of {} exchanges newer than #{oldest_kept} are missing, the first #{:?}",
        missing_after.len(),
        &missing_after[..missing_after.len().min(10)]
    );
    let missing = rows_made - db.details.len() as u64;
    assert!(missing > 0, "the budget dropped detail rows");
    assert_eq!(missing, 2 * oldest_kept as u64 + 2 - u64::from(sides[oldest_kept]), "only the oldest rows are gone");

    // Every missing row is counted, and nothing else was dropped.
    assert_eq!(m.get("metrics_agent_storage_budget_rows_dropped_total{table=\"request_details\"}"), missing);
    assert_eq!(m.sum("metrics_agent_storage_budget_rows_dropped_total"), missing, "no metric row dropped");
    assert_eq!(m.sum("metrics_agent_storage_detail_rows_dropped_total"), 0, "no detail row dropped before storage");
    assert!(db.metric_rows > 0);
    assert_eq!(s.stored_requests(), sent, "the minute rows count every request");
}
