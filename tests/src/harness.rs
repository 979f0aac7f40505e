//! Running real processes for the tests and the demo: the agent, nginx, the
//! send/recv test proxy; free ports; kill-on-drop guards; scraping.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use crate::metrics::Scrape;

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct Guard {
    pub child: Child,
    pub name: String,
}

impl Guard {
    pub fn spawn(name: &str, cmd: &mut Command) -> Self {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self { child, name: name.to_string() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal and waits up to `timeout` for the exit.
    pub fn signal_and_wait(&mut self, signal: i32, timeout: Duration) -> Option<ExitStatus> {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Guard {
    /// SIGTERM first (nginx's master then stops its workers), SIGKILL after 5 s.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait()
            && self.signal_and_wait(libc::SIGTERM, Duration::from_secs(5)).is_none()
        {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The processes whose parent is `pid` (e.g. nginx's workers).
pub fn children_of(pid: u32) -> Vec<u32> {
    let parent_of = |child: u32| {
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
        stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse::<u32>().ok()
    };
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| parent_of(*child) == Some(pid))
        .collect()
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

pub fn wait_for_port(port: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on port {port} after {timeout:?}");
}

/// The directory holding the workspace's built binaries (target/debug).
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("METRICS_AGENT_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("exe dir");
    if dir.ends_with("deps") { dir.parent().expect("target dir").to_path_buf() } else { dir.to_path_buf() }
}

pub fn agent_binary() -> PathBuf {
    let path = bin_dir().join("metrics-agent");
    assert!(path.exists(), "{} is missing: build it first (`cargo xtask test` does)", path.display());
    path
}

/// A scratch directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("llm-e2e-{tag}-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// nginx from Debian's package, as a reverse proxy with one location per
/// route (`/openai/` -> 127.0.0.1:port/). `/NAME-ka/` locations use
/// HTTP/1.1 and keep-alive upstream connections; the others nginx's default
/// HTTP/1.0 (close-delimited) upstream. `/cached/` answers from nginx itself,
/// like a response cache (usage: prompt 12, completion 34). Upstream
/// requests carry nginx's default `Host` (`127.0.0.1:PORT`, `NAME_ka`)
/// unless the route is given one (`start_private_with_hosts`).
pub struct Nginx {
    pub guard: Guard,
    pub port: u16,
    /// The executable it runs (for the agent's `--exe`).
    pub exe: PathBuf,
    _dir: TempDir,
}

pub const NGINX: &str = "/usr/sbin/nginx";
/// The body nginx answers `/cached/` with.
pub const CACHED_BODY: &str =
    r#"{"id":"cached-1","model":"gpt-4o-mini","usage":{"prompt_tokens":12,"completion_tokens":34}}"#;

impl Nginx {
    /// Runs Debian's `/usr/sbin/nginx`. An agent given `--exe /usr/sbin/nginx`
    /// traces every nginx of the host, those of suites running at the same
    /// time (`cargo xtask test` runs two at once) among them: tests that trace
    /// by executable use `start_private`.
    pub fn start(routes: &[(&str, u16)]) -> Self {
        assert!(Path::new(NGINX).exists(), "{NGINX} is missing: apt-get install nginx-light");
        Self::start_exe(TempDir::new("nginx"), PathBuf::from(NGINX), routes, &[])
    }

    /// Runs a private copy of Debian's nginx binary (same bytes, its own
    /// inode): an agent given `--exe` of the copy traces this nginx alone,
    /// not the other nginx instances a shared host may run.
    pub fn start_private(routes: &[(&str, u16)]) -> Self {
        Self::start_private_with_hosts(routes, &[])
    }

    /// `start_private`, with the upstream `Host` header of some routes set
    /// (`(route, host)`: `proxy_set_header Host host` on `/route/` and
    /// `/route-ka/`), as when nginx proxies to a provider's API by its name
    /// (`api.groq.com`) while the test's mock answers on 127.0.0.1.
    pub fn start_private_with_hosts(routes: &[(&str, u16)], hosts: &[(&str, &str)]) -> Self {
        assert!(Path::new(NGINX).exists(), "{NGINX} is missing: apt-get install nginx-light");
        let dir = TempDir::new("nginx");
        let exe = dir.0.join("nginx");
        std::fs::copy(NGINX, &exe).expect("copy nginx");
        Self::start_exe(dir, exe, routes, hosts)
    }

    fn start_exe(dir: TempDir, exe: PathBuf, routes: &[(&str, u16)], hosts: &[(&str, &str)]) -> Self {
        let port = free_port();
        let mut locations = String::new();
        let mut upstreams = String::new();
        for (name, up) in routes.iter().filter(|(name, _)| !name.ends_with("-tls")) {
            let host = hosts
                .iter()
                .find(|(route, _)| route == name)
                .map(|(_, host)| format!(" proxy_set_header Host {host};"))
                .unwrap_or_default();
            upstreams.push_str(&format!("  upstream {name}_ka {{ server 127.0.0.1:{up}; keepalive 4; }}\n"));
            locations.push_str(&format!(
                "    location /{name}/ {{ proxy_pass http://127.0.0.1:{up}/;{host} }}\n    location /{name}-ka/ {{ proxy_pass http://{name}_ka/; proxy_http_version 1.1; proxy_set_header Connection \"\";{host} }}\n"
            ));
        }
        assert!(
            hosts.iter().all(|(route, _)| routes.iter().any(|(name, _)| name == route)),
            "a host for a route that is not there: {hosts:?}"
        );
        for (name, up) in routes.iter().filter(|(name, _)| name.ends_with("-tls")) {
            locations.push_str(&format!("    location /{name}/ {{ proxy_pass https://127.0.0.1:{up}/; }}\n"));
        }
        locations.push_str(&format!(
            "    location /cached/ {{ default_type application/json; return 200 '{}'; }}\n",
            CACHED_BODY
        ));
        let d = dir.0.display();
        let conf = format!(
            "worker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 512; }}\nhttp {{\n  access_log off;\n  sendfile on;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  client_max_body_size 10m;\n{upstreams}  server {{\n    listen 127.0.0.1:{port};\n{locations}  }}\n}}\n"
        );
        let path = dir.0.join("nginx.conf");
        std::fs::write(&path, conf).expect("write nginx.conf");
        let guard = Guard::spawn(
            "nginx",
            Command::new(&exe)
                .arg("-c")
                .arg(&path)
                .args(["-g", "daemon off;"])
                .stdout(Stdio::null())
                .stderr(Stdio::inherit()),
        );
        wait_for_port(port, Duration::from_secs(10));
        Self { guard, port, exe, _dir: dir }
    }
}

/// A private copy of Debian's nginx speaking HTTP/2 to its clients: h2c
/// with prior knowledge on `h2c_port`, h2 over TLS (ALPN, self-signed
/// certificate) on `tls_port`; `/NAME/` locations proxy to the routes'
/// ports over HTTP/1.1 keep-alive connections, unbuffered (streams flow).
pub struct NginxH2 {
    pub guard: Guard,
    pub h2c_port: u16,
    pub tls_port: u16,
    pub exe: PathBuf,
    _dir: TempDir,
}

impl NginxH2 {
    pub fn start(routes: &[(&str, u16)]) -> Self {
        assert!(Path::new(NGINX).exists(), "{NGINX} is missing: apt-get install nginx-light");
        let dir = TempDir::new("nginx-h2");
        self_signed_certificate(&dir.0);
        let exe = dir.0.join("nginx");
        std::fs::copy(NGINX, &exe).expect("copy nginx");
        let (h2c_port, tls_port) = (free_port(), free_port());
        let d = dir.0.display();
        let mut http = format!(
            "  access_log off;\n  client_body_temp_path {d}/b;\n  proxy_temp_path {d}/p;\n  fastcgi_temp_path {d}/f;\n  uwsgi_temp_path {d}/u;\n  scgi_temp_path {d}/s;\n"
        );
        let mut locations = String::new();
        for (name, up) in routes {
            http.push_str(&format!("  upstream {name} {{ server 127.0.0.1:{up}; keepalive 4; }}\n"));
            locations.push_str(&format!(
                "    location /{name}/ {{ proxy_pass http://{name}/; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_buffering off; }}\n"
            ));
        }
        let conf = format!(
            "worker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 512; }}\nhttp {{\n{http}  server {{\n    listen 127.0.0.1:{h2c_port} http2;\n    listen 127.0.0.1:{tls_port} ssl http2;\n    ssl_certificate {d}/cert.pem;\n    ssl_certificate_key {d}/key.pem;\n{locations}  }}\n}}\n"
        );
        let path = dir.0.join("nginx.conf");
        std::fs::write(&path, conf).expect("write nginx.conf");
        let guard = Guard::spawn(
            "nginx-h2",
            Command::new(&exe).arg("-c").arg(&path).args(["-g", "daemon off;"]).stdout(Stdio::null()),
        );
        wait_for_port(h2c_port, Duration::from_secs(10));
        wait_for_port(tls_port, Duration::from_secs(10));
        Self { guard, h2c_port, tls_port, exe, _dir: dir }
    }
}

/// An HTTPS front for a mock provider: a *copy* of the nginx binary (another
/// inode, so `--exe /usr/sbin/nginx` does not trace it) terminating TLS with
/// a self-signed certificate made here by `openssl`.
pub struct TlsProvider {
    pub guard: Guard,
    pub port: u16,
    _dir: TempDir,
}

/// Writes a self-signed certificate and its key as `cert.pem` and `key.pem`
/// into `dir`, with `openssl`.
fn self_signed_certificate(dir: &Path) {
    let d = dir.display().to_string();
    let ok = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "2"])
        .args(["-keyout", &format!("{d}/key.pem"), "-out", &format!("{d}/cert.pem")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "openssl (Debian package openssl) must be installed");
}

impl TlsProvider {
    pub fn start(upstream_port: u16) -> Self {
        let dir = TempDir::new("tls");
        let d = dir.0.display().to_string();
        self_signed_certificate(&dir.0);
        let binary = dir.0.join("nginx-tls");
        std::fs::copy(NGINX, &binary).expect("copy nginx");
        let port = free_port();
        let conf = format!(
            "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 128; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/b;\n  proxy_temp_path {d}/p;\n  fastcgi_temp_path {d}/f;\n  uwsgi_temp_path {d}/u;\n  scgi_temp_path {d}/s;\n  server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {d}/cert.pem;\n    ssl_certificate_key {d}/key.pem;\n    location / {{ proxy_pass http://127.0.0.1:{upstream_port}; proxy_buffering off; }}\n  }}\n}}\n"
        );
        std::fs::write(dir.0.join("nginx.conf"), conf).expect("write conf");
        let guard = Guard::spawn(
            "nginx-tls",
            Command::new(&binary)
                .arg("-c")
                .arg(dir.0.join("nginx.conf"))
                .args(["-g", "daemon off;"])
                .stdout(Stdio::null()),
        );
        wait_for_port(port, Duration::from_secs(10));
        Self { guard, port, _dir: dir }
    }
}

/// An HTTPS provider that counts TLS wire bytes and plaintext HTTP bytes
/// itself (`tests/py/tls_counting_provider.py`, Python's ssl over memory
/// BIOs): the ground truth for the agent's two kinds of byte counters.
pub struct CountingTlsProvider {
    pub guard: Guard,
    pub port: u16,
    counts: PathBuf,
    _dir: TempDir,
}

impl CountingTlsProvider {
    pub fn start() -> Self {
        use std::io::BufRead;
        let dir = TempDir::new("tls-count");
        self_signed_certificate(&dir.0);
        let counts = dir.0.join("counts.json");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("py/tls_counting_provider.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg(dir.0.join("cert.pem")).arg(dir.0.join("key.pem")).arg(&counts);
        let mut guard = Guard::spawn("tls-counting-provider", cmd.stdout(Stdio::piped()));
        let stdout = guard.child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line).expect("the provider prints its port");
        let port = line.trim().strip_prefix("port ").and_then(|p| p.parse().ok()).expect("port N");
        Self { guard, port, counts, _dir: dir }
    }

    /// What it counted so far (updated when a connection ends):
    /// `connections`, `requests`, `wire_in`, `wire_out`, `plain_in`, `plain_out`.
    pub fn counts(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(&self.counts).unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }
}

/// Builds `tests/c/static_tls_client.c` with OpenSSL linked statically
/// (Debian's libssl.a and libcrypto.a) into `dir`; returns the binary.
pub fn build_static_tls_client(dir: &TempDir) -> PathBuf {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("c/static_tls_client.c");
    let binary = dir.0.join("static-tls-client");
    let libs = ["libssl.a", "libcrypto.a"].map(|l| {
        let path = PathBuf::from("/usr/lib/x86_64-linux-gnu").join(l);
        assert!(path.exists(), "{} is missing: install Debian's libssl-dev", path.display());
        path
    });
    let out = Command::new("gcc")
        .args(["-O1", "-o"])
        .arg(&binary)
        .arg(&source)
        .args(&libs)
        .args(["-lpthread", "-ldl"])
        .output()
        .expect("gcc must be installed");
    assert!(out.status.success(), "building the static TLS client: {}", String::from_utf8_lossy(&out.stderr));
    binary
}

/// The send/recv test proxy built from this crate.
pub fn start_send_recv_proxy(routes: &[(&str, u16)]) -> (Guard, u16) {
    start_send_recv_proxy_exe(&bin_dir().join("send-recv-proxy"), routes)
}

/// A copy of the send/recv test proxy in `dir`, for an agent's `--exe`: an
/// agent that traces the shared `target/debug/send-recv-proxy` would also
/// trace the proxies of a suite running at the same time in the other lane
/// (the copy has its own inode, as `Nginx::start_private`'s nginx).
pub fn private_send_recv_proxy(dir: &TempDir) -> PathBuf {
    let exe = dir.0.join("send-recv-proxy");
    std::fs::copy(bin_dir().join("send-recv-proxy"), &exe).expect("copy send-recv-proxy");
    exe
}

/// `start_send_recv_proxy`, running `exe` (a `private_send_recv_proxy`).
pub fn start_send_recv_proxy_exe(exe: &Path, routes: &[(&str, u16)]) -> (Guard, u16) {
    let port = free_port();
    let mut cmd = Command::new(exe);
    cmd.arg("--listen").arg(format!("127.0.0.1:{port}"));
    for (name, up) in routes {
        cmd.arg("--route").arg(format!("/{name}/=127.0.0.1:{up}"));
    }
    let guard = Guard::spawn("send-recv-proxy", cmd.stdout(Stdio::null()));
    wait_for_port(port, Duration::from_secs(10));
    (guard, port)
}

/// The agent under test.
pub struct Agent {
    pub guard: Guard,
    pub port: u16,
    pub log: PathBuf,
    /// The API token the agent was started with (sent on scrapes).
    pub token: Option<String>,
    _dir: TempDir,
}

impl Agent {
    /// Starts `metrics-agent run ARGS --listen 127.0.0.1:PORT` and waits
    /// until `/readyz` says its targets are attached.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// Like `start`, with extra environment variables; a
    /// `METRICS_AGENT_API_TOKEN` among them is sent on every scrape.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let token = env.iter().find(|(k, _)| *k == "METRICS_AGENT_API_TOKEN").map(|(_, v)| v.to_string());
        let dir = TempDir::new("agent");
        let port = free_port();
        let log = dir.0.join("agent.log");
        let out = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(agent_binary());
        if !args.iter().any(|a| *a == "--database-url" || *a == "--no-storage") {
            // Stored records go to this agent's own temporary database.
            cmd.env("METRICS_AGENT_DATABASE_URL", format!("sqlite://{}/metrics.db", dir.0.display()));
        }
        let guard = Guard::spawn(
            "metrics-agent",
            cmd.arg("run")
                .args(args)
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .envs(env.iter().copied())
                .stdout(out.try_clone().expect("log"))
                .stderr(out),
        );
        let mut agent = Self { guard, port, log, token, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = agent.guard.child.try_wait() {
                panic!("the agent exited ({status}) at start:\n{}", agent.log_text());
            }
            if http_get(agent.port, "/readyz", "text/plain").is_some() {
                return agent;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        agent.guard.signal_and_wait(libc::SIGKILL, Duration::from_secs(1));
        panic!("the agent was not ready within 60 s:\n{}", agent.log_text());
    }

    /// Every byte the agent wrote to its own directory (log, database,
    /// write-ahead log), as lossy text: for checks that a secret is absent.
    pub fn files_text(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(&self._dir.0).into_iter().flatten().flatten() {
            if let Ok(bytes) = std::fs::read(entry.path()) {
                out.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
        out
    }

    /// The agent's own counters and the hot path's (`metrics_agent_*`,
    /// `llm_proxy_*` samples of a scrape), for failure messages.
    pub fn counters_text(&self) -> String {
        let text = self.try_scrape(false).unwrap_or_else(|| "(scrape failed)".into());
        let wanted = |l: &&str| !l.starts_with('#') && (l.starts_with("metrics_agent_") || l.starts_with("llm_proxy_"));
        text.lines().filter(wanted).collect::<Vec<_>>().join("\n")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn try_scrape(&self, openmetrics: bool) -> Option<String> {
        let accept = if openmetrics { "application/openmetrics-text" } else { "text/plain" };
        http_get_with(self.port, "/metrics", accept, self.token.as_deref())
    }

    pub fn scrape(&self) -> Scrape {
        Scrape::parse(&self.try_scrape(false).unwrap_or_else(|| panic!("scrape failed:\n{}", self.log_text())))
    }

    pub fn scrape_openmetrics(&self) -> String {
        self.try_scrape(true).expect("scrape")
    }

    /// Polls until `done(scrape)` holds; panics with the last scrape after `timeout`.
    pub fn wait_until(&self, timeout: Duration, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.scrape();
            if done(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; last scrape:\n{}\nagent log:\n{}", s.text, self.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (10 s at most) until nginx's master and its two workers are traced.
    pub fn wait_for_nginx(&self) {
        self.wait_until(Duration::from_secs(10), "nginx's master and its two workers traced", |s| {
            s.get("metrics_agent_traced_processes") >= 3
        });
    }

    /// The JSON records the agent printed (`--print-requests`) of one side
    /// (`client` or `upstream`).
    pub fn printed_records(&self, side: &str) -> Vec<serde_json::Value> {
        self.log_text()
            .lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|r| r["side"] == side)
            .collect()
    }

    /// Waits until the agent printed at least `client` client and `upstream`
    /// upstream records; panics with its log after `timeout`.
    pub fn wait_for_printed_records(&self, client: usize, upstream: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let (c, u) = (self.printed_records("client").len(), self.printed_records("upstream").len());
            if c >= client && u >= upstream {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{c} of {client} client and {u} of {upstream} upstream records after {timeout:?}:\n{}\nthe agent's counters:\n{}",
                self.log_text(),
                self.counters_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Serialises the tests of one test binary (they attach to processes and
/// read host-wide counters): hold the guard for the whole test.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A plain HTTP/1.0 GET returning the body (None on any failure).
pub fn http_get(port: u16, path: &str, accept: &str) -> Option<String> {
    http_get_with(port, path, accept, None)
}

/// `http_get` with an optional bearer token.
pub fn http_get_with(port: u16, path: &str, accept: &str, token: Option<&str>) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let auth = token.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nhost: localhost\r\naccept: {accept}\r\n{auth}\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let (head, body) = resp.split_once("\r\n\r\n")?;
    head.lines().next().is_some_and(|l| l.contains(" 200 ")).then(|| body.to_string())
}
