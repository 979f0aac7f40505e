//! A minimal W3C WebDriver client for Debian's headless Chromium through
//! `chromedriver` (package chromium-driver): open a page, run a script,
//! take a screenshot. Plain HTTP/1.1 on loopback, JSON bodies.

use std::{
    io::Write,
    net::TcpStream,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::harness::{Guard, TempDir, free_port, wait_for_port};

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The browser itself (`/usr/bin/chromium` is a shell wrapper around it).
pub const CHROMIUM: &str = "/usr/lib/chromium/chromium";

/// A chromedriver process with one headless Chromium session.
pub struct Browser {
    session: String,
    port: u16,
    _driver: Guard,
    _profile: TempDir,
}

fn request(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("chromedriver: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    // chromedriver keeps the connection open: read the head, then the body it announces.
    let mut reader = crate::http1::Reader::new(s);
    let head = reader.read_head().map_err(|e| format!("chromedriver {method} {path}: {e}"))?;
    let head = head.ok_or("chromedriver: no response")?;
    let mut raw = Vec::new();
    reader
        .relay_body(&head, false, |b| {
            raw.extend_from_slice(b);
            Ok(())
        })
        .map_err(|e| format!("chromedriver {method} {path}: {e}"))?;
    let raw = String::from_utf8_lossy(&raw);
    let body = if head.is_chunked() { dechunk(&raw) } else { raw.into_owned() };
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("chromedriver: {e}: {body}"))?;
    if v["value"]["error"].is_string() {
        return Err(format!("{method} {path}: {}", v["value"]));
    }
    Ok(v["value"].clone())
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile and
    /// no background network traffic (the machine has no outside network).
    pub fn start() -> Self {
        assert!(
            Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
            "{CHROMEDRIVER} and {CHROMIUM} are missing: apt-get install chromium chromium-driver"
        );
        let port = free_port();
        let driver = Guard::spawn(
            "chromedriver",
            Command::new(CHROMEDRIVER).arg(format!("--port={port}")).stdout(Stdio::null()).stderr(Stdio::null()),
        );
        wait_for_port(port, Duration::from_secs(20));
        let profile = TempDir::new("chromium");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1400,1900",
                    format!("--user-data-dir={}", profile.0.display()),
                ]
            }
        }}});
        let session = request(port, "POST", "/session", Some(&caps)).unwrap_or_else(|e| panic!("new session: {e}"));
        let session = session["sessionId"].as_str().expect("session id").to_string();
        Self { session, port, _driver: driver, _profile: profile }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        request(self.port, method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(&json!({ "url": url }))).unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Runs `script` (a function body) in the page and returns its value.
    pub fn eval(&self, script: &str) -> Value {
        self.call("POST", "/execute/sync", Some(&json!({ "script": script, "args": [] })))
            .unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    /// Polls `script` until it returns something other than null/false.
    pub fn wait_for(&self, timeout: Duration, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(script);
            if !(v.is_null() || v == false) {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what} in the page");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let b64 = self.call("GET", "/screenshot", None).unwrap_or_else(|e| panic!("screenshot: {e}"));
        base64::engine::general_purpose::STANDARD.decode(b64.as_str().expect("base64 string")).expect("base64 PNG")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.call("DELETE", "", None);
    }
}
