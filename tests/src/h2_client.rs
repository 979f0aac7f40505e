//! The HTTP/2 client of the tests (`tests/py/h2_client.py`: Python's httpx
//! with h2, from the gateway venv of `cargo xtask setup`): h2c with prior
//! knowledge for `http://` bases, ALPN h2 over TLS for `https://`. Its
//! answers are the client's ground truth.

use std::process::Command;

/// What the client saw of one request: its status and time to first byte.
#[derive(Debug, Clone)]
pub struct Answer {
    pub path: String,
    pub status: u64,
    pub ttfb_ms: f64,
}

/// One client process (`tests/py/h2_client.py`: Python's httpx with h2),
/// so one HTTP/2 connection: POSTs `body` to every path in turn, or all at
/// once multiplexed (`parallel`). Panics unless it spoke HTTP/2 for each.
pub fn h2_client(base: &str, parallel: bool, body: &str, paths: &[&str]) -> Vec<Answer> {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let python = std::path::PathBuf::from(home).join(".cache/metrics-agent/gateway-venv/bin/python");
    assert!(python.exists(), "{} is missing: run `cargo xtask setup`", python.display());
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("py/h2_client.py");
    let mut cmd = Command::new(&python);
    cmd.arg(script).arg(base).arg(body);
    if parallel {
        cmd.arg("--parallel");
    }
    let out = cmd.args(paths).output().expect("run the HTTP/2 client");
    assert!(out.status.success(), "h2_client.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let answers: Vec<Answer> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["http_version"], "HTTP/2", "{line}");
            Answer {
                path: v["path"].as_str().unwrap().to_string(),
                status: v["status"].as_u64().unwrap(),
                ttfb_ms: v["ttfb_ms"].as_f64().unwrap(),
            }
        })
        .collect();
    assert_eq!(answers.len(), paths.len());
    answers
}
