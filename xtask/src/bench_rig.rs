//! What the benchmarks that run the agent share: the processes (copies of
//! nginx as upstream and proxy, the release agent), loopback ports, the
//! agent's `/metrics` and `/readyz`, and readings of `/proc` and of the
//! machine. `bench` (proxy overhead), `bench_soak` and `bench_audit` use it.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// A child process, stopped with SIGTERM and waited for when dropped.
pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// Fails with a one-line reason unless this process runs as root.
pub(crate) fn require_root(benchmark: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the {benchmark} benchmark attaches eBPF programs and must run as root");
    }
    Ok(())
}

/// A loopback port free a moment ago (fixed ports collide with other runs
/// on a shared host).
pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits up to 30 s for something to listen on `port`.
pub(crate) fn wait_port(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on port {port}")
}

/// How long a benchmark waits for an answer of the agent (Prometheus'
/// default `scrape_timeout`).
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The response to `GET path` on the agent at `port` when it answers 200
/// in full within `ANSWER_TIMEOUT`, else why not, in a few words.
fn answer(port: u16, path: &str) -> Result<String, String> {
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), ANSWER_TIMEOUT)
        .map_err(|e| format!("no connection ({e})"))?;
    write!(s, "GET {path} HTTP/1.0\r\nhost: 127.0.0.1:{port}\r\n\r\n").map_err(|e| format!("send failed ({e})"))?;
    let mut out = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
            return Err("no answer in time".into());
        };
        s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err("no answer in time".into());
            }
            Err(e) => return Err(format!("read failed after {} bytes ({e})", out.len())),
        }
    }
    if out.is_empty() {
        return Err("connection closed without an answer".into());
    }
    let out = String::from_utf8(out).map_err(|_| "an answer that is not UTF-8".to_string())?;
    if out.starts_with("HTTP/1.1 200") || out.starts_with("HTTP/1.0 200") {
        Ok(out)
    } else {
        Err(format!("answered `{}`", out.lines().next().unwrap_or_default()))
    }
}

/// The body of `GET path` on the agent at `port` when it answers 200, else empty.
fn get(port: u16, path: &str) -> String {
    answer(port, path).unwrap_or_default()
}

/// The agent's `/metrics` (empty when it does not answer).
pub(crate) fn scrape(port: u16) -> String {
    get(port, "/metrics")
}

/// The agent's `/metrics` (`Err` says why when it did not answer 200
/// within `ANSWER_TIMEOUT`) and how long the scrape took.
pub(crate) fn timed_scrape(port: u16) -> (Result<String, String>, Duration) {
    let started = Instant::now();
    let text = answer(port, "/metrics");
    (text, started.elapsed())
}

/// Waits up to 60 s for the agent's `/readyz` (its programs attached).
pub(crate) fn wait_ready(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if !get(port, "/readyz").is_empty() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the agent was not ready within 60 s")
}

/// The value of the sample line starting with `series` (name, labels and a space).
pub(crate) fn metric(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|r| r.trim().parse().ok())).unwrap_or(0.0)
}

/// The sum of every series of `name`, whatever its labels.
pub(crate) fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with('{') || r.starts_with(' ')))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Starts nginx `binary` with a configuration of its own under `dir/name`
/// whose `http` block holds `server`.
pub(crate) fn nginx(binary: &Path, dir: &Path, name: &str, server: &str) -> Result<Killed> {
    let d = dir.join(name);
    std::fs::create_dir_all(&d)?;
    let ds = d.display();
    let conf = format!(
        "worker_processes 1;\npid {ds}/nginx.pid;\nerror_log {ds}/error.log;\nevents {{ worker_connections 1024; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {ds}/b;\n  proxy_temp_path {ds}/p;\n  fastcgi_temp_path {ds}/f;\n  uwsgi_temp_path {ds}/u;\n  scgi_temp_path {ds}/s;\n{server}\n}}\n"
    );
    std::fs::write(d.join("nginx.conf"), conf)?;
    let child = Command::new(binary)
        .arg("-c")
        .arg(d.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    Ok(Killed(child))
}

/// nginx as an upstream answering every request with a JSON body, and
/// nginx as a keep-alive reverse proxy to it, both listening.
pub(crate) struct ProxiedUpstream {
    /// Runs until this is dropped.
    _upstream: Killed,
    pub proxy: Killed,
    /// The proxy's executable, the agent's `--exe`.
    pub proxy_bin: PathBuf,
    pub up_port: u16,
    pub proxy_port: u16,
}

/// Starts a `ProxiedUpstream` under `dir`. Both are copies of Debian's nginx
/// (each its own inode): an agent's `--exe` then traces this proxy alone,
/// and neither the upstream nor any other nginx the host runs (agents of
/// other runs trace `/usr/sbin/nginx`).
pub(crate) fn proxied_upstream(dir: &Path, body: &str) -> Result<ProxiedUpstream> {
    let copy = |name: &str| -> Result<PathBuf> {
        let bin = dir.join(name);
        std::fs::copy("/usr/sbin/nginx", &bin)
            .with_context(|| format!("copying /usr/sbin/nginx to {}", bin.display()))?;
        Ok(bin)
    };
    let (upstream_bin, proxy_bin) = (copy("nginx-upstream")?, copy("nginx-proxy")?);
    let (up_port, proxy_port) = (free_port()?, free_port()?);
    let upstream = nginx(
        &upstream_bin,
        dir,
        "upstream",
        &format!(
            "  server {{ listen 127.0.0.1:{up_port}; location / {{ default_type application/json; return 200 '{body}'; }} }}"
        ),
    )?;
    let proxy = nginx(
        &proxy_bin,
        dir,
        "proxy",
        &format!(
            "  upstream up {{ server 127.0.0.1:{up_port}; keepalive 32; }}\n  server {{ listen 127.0.0.1:{proxy_port}; location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}"
        ),
    )?;
    wait_port(up_port)?;
    wait_port(proxy_port)?;
    Ok(ProxiedUpstream { _upstream: upstream, proxy, proxy_bin, up_port, proxy_port })
}

/// The release agent (`cargo xtask build` first).
pub(crate) fn agent_bin() -> PathBuf {
    crate::target_dir().join("release/metrics-agent")
}

/// How a benchmark runs the agent.
pub(crate) struct AgentRun<'a> {
    /// `--exe PATH` or `--pid PID`.
    pub target: [&'a str; 2],
    /// `--provider NAME=HOST:PORT`.
    pub provider: &'a str,
    pub port: u16,
    /// Its SQLite database (storage stays on, as by default).
    pub database: &'a Path,
    /// Its stderr.
    pub log: &'a Path,
    /// More flags (`--attach ...`).
    pub extra: &'a [&'a str],
}

/// Starts the release agent as `run` says.
pub(crate) fn spawn_agent(run: &AgentRun) -> Result<Killed> {
    let bin = agent_bin();
    let child = Command::new(&bin)
        .arg("run")
        .args(run.target)
        .args(["--provider", run.provider, "--listen", &format!("127.0.0.1:{}", run.port)])
        .args(run.extra)
        .env("METRICS_AGENT_DATABASE_URL", format!("sqlite://{}", run.database.display()))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(run.log).with_context(|| run.log.display().to_string())?)
        .spawn()
        .with_context(|| format!("starting {} (build it with `cargo xtask build`)", bin.display()))?;
    Ok(Killed(child))
}

/// The agent in its default mode on process `pid` (and the children it
/// forks) with `openai=127.0.0.1:UP_PORT` as provider, its database
/// (`metrics.db`) and log (`agent.log`) in `dir`. `--pid`, not `--exe`:
/// other processes of the same executable are neither traced nor slowed down.
pub(crate) fn spawn_agent_on_pid(dir: &Path, pid: u32, up_port: u16, port: u16) -> Result<Killed> {
    spawn_agent(&AgentRun {
        target: ["--pid", &pid.to_string()],
        provider: &format!("openai=127.0.0.1:{up_port}"),
        port,
        database: &dir.join("metrics.db"),
        log: &dir.join("agent.log"),
        extra: &[],
    })
}

/// Fields of /proc/PID/stat after the command name (field 3, the state, first).
pub(crate) fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat.rsplit_once(')')?.1.split_whitespace().map(String::from).collect())
}

/// Clock ticks per second of the CPU times in /proc.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// CPU time a process used so far (utime + stime), in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> Result<f64> {
    let fields = stat_fields(pid).with_context(|| format!("/proc/{pid}/stat"))?;
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / ticks_per_second())
}

/// CPU seconds (user + system) of each of a process's threads, summed by
/// thread name (the agent's: `audit`, the capture path; `tokio-runtime-w`:
/// the HTTP API, storage, exporters, live stream; `metrics-agent`: the main
/// thread, tracing new processes).
pub(crate) fn thread_cpu(pid: u32) -> BTreeMap<String, f64> {
    let ticks = ticks_per_second();
    let mut out = BTreeMap::new();
    for (comm, dir) in threads(pid) {
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else { continue };
        // `pid (comm) state ...`: comm may hold spaces, fields follow the last ')'.
        let Some(close) = stat.rfind(')') else { continue };
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let (Some(utime), Some(stime)) = (fields.get(11), fields.get(12)) else { continue };
        let seconds = (utime.parse::<f64>().unwrap_or(0.0) + stime.parse::<f64>().unwrap_or(0.0)) / ticks;
        *out.entry(comm).or_insert(0.0) += seconds;
    }
    out
}

/// Seconds the threads of `pid` named `name` have waited on a run queue,
/// runnable but not running (`/proc/PID/task/TID/schedstat`, 2nd field, ns).
pub(crate) fn thread_run_queue_wait(pid: u32, name: &str) -> f64 {
    threads(pid)
        .filter(|(comm, _)| comm == name)
        .map(|(_, dir)| {
            let stat = std::fs::read_to_string(dir.join("schedstat")).unwrap_or_default();
            stat.split_whitespace().nth(1).and_then(|ns| ns.parse::<f64>().ok()).unwrap_or(0.0) / 1e9
        })
        .sum()
}

/// The threads of `pid`: each one's name (`comm`) and its `/proc/PID/task/TID` directory.
fn threads(pid: u32) -> impl Iterator<Item = (String, std::path::PathBuf)> {
    std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten().filter_map(|task| {
        let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
        Some((comm.trim_end().to_string(), task.path()))
    })
}

/// The processes whose parent is `pid` (nginx's workers under its master).
pub(crate) fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| stat_fields(*child).is_some_and(|f| f.get(1).is_some_and(|ppid| *ppid == pid.to_string())))
        .collect()
}

/// Resident memory of a process, in MiB (VmRSS).
pub(crate) fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok()))
        .map_or(f64::NAN, |kib: f64| kib / 1024.0)
}

/// The CPU's model name from /proc/cpuinfo.
pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_string()))
        })
        .unwrap_or_default()
}

/// Logical cores available to this process.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
}

/// The machine and its load average now, one line.
pub(crate) fn machine_line() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "Machine: {} cores, {}; load average at the end: {}",
        cores(),
        cpu_model(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    )
}
