//! `cargo xtask bench`: nginx proxying to a fast local upstream, measured
//! with wrk in one run without the agent, with it, and without it again;
//! plus what a non-target process pays per libc call while the agent runs.
//! Prints a Markdown report (and writes target/bench/report.md).

use std::{
    fmt::Write as _,
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Seconds per wrk run [default: 10; soak: 600].
    #[arg(long)]
    seconds: Option<u64>,
    /// wrk connections.
    #[arg(long, default_value_t = 16)]
    connections: u32,
    /// What to measure: `proxy` (nginx with and without the agent),
    /// `stream` (live stream fan-out to many WebSocket clients),
    /// `exporters` (the export path's throughput; no root, no nginx),
    /// `storage` (ingest rate and query time on SQLite and PostgreSQL) or
    /// `soak` (the default agent under sustained full-rate load, over time).
    #[arg(default_value = "proxy", value_parser = ["proxy", "stream", "exporters", "storage", "soak"])]
    pub what: String,
    #[command(flatten)]
    pub storage: crate::bench_storage::StorageBenchArgs,
}

pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

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

impl BenchArgs {
    fn seconds(&self) -> u64 {
        self.seconds.unwrap_or(10)
    }
}

struct WrkResult {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
}

fn parse_latency(v: &str) -> f64 {
    let v = v.trim();
    let (num, unit) = v.split_at(v.find(|c: char| c.is_alphabetic()).unwrap_or(v.len()));
    let n: f64 = num.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => f64::NAN,
    }
}

fn wrk(port: u16, args: &BenchArgs) -> Result<WrkResult> {
    let out = Command::new("wrk")
        .args(["-t2", &format!("-c{}", args.connections), &format!("-d{}s", args.seconds()), "--latency"])
        .arg(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .output()
        .context("wrk (Debian package wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |prefix: &str| {
        text.lines().find_map(|l| l.trim().strip_prefix(prefix).map(|r| r.trim().to_string())).unwrap_or_default()
    };
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let rps: f64 = field("Requests/sec:").parse().unwrap_or(0.0);
    if rps == 0.0 {
        bail!("wrk produced no result:\n{text}");
    }
    Ok(WrkResult { rps, p50_ms: parse_latency(&field("50%")), p99_ms: parse_latency(&field("99%")), requests })
}

/// Nanoseconds per `write(2)` of 1 byte to /dev/null through libc.
fn write_cost_ns(calls: u32) -> f64 {
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY) };
    let byte = [0u8; 1];
    let start = Instant::now();
    for _ in 0..calls {
        // SAFETY: writing one byte from a valid buffer.
        unsafe { libc::write(fd, byte.as_ptr().cast(), 1) };
    }
    let ns = start.elapsed().as_nanos() as f64 / calls as f64;
    unsafe { libc::close(fd) };
    ns
}

pub(crate) fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return String::new() };
    let _ = write!(s, "GET /metrics HTTP/1.0\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

pub(crate) fn metric(text: &str, series: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|r| r.trim().parse().ok())).unwrap_or(0.0)
}

pub fn run(args: &BenchArgs) -> Result<()> {
    match args.what.as_str() {
        "proxy" => {}
        "stream" => return crate::bench_stream::run(args.seconds()),
        "exporters" => return crate::bench_exporters::run(),
        "storage" => return crate::bench_storage::run(&args.storage),
        "soak" => return crate::bench_soak::run(args.seconds.unwrap_or(600), args.connections),
        other => bail!("unknown benchmark `{other}`: use `proxy`, `stream`, `exporters`, `storage` or `soak`"),
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark attaches eBPF programs and must run as root");
    }
    let dir = crate::target_dir().join("bench");
    let agent_bin = crate::target_dir().join("release/metrics-agent");
    std::fs::create_dir_all(&dir)?;
    // The upstream is a copy of nginx: another inode, so `--exe` does not trace it.
    let upstream_bin = dir.join("nginx-upstream");
    std::fs::copy("/usr/sbin/nginx", &upstream_bin)?;
    let (up_port, proxy_port, agent_port) = (18901u16, 18902u16, 18903u16);
    let body = "x".repeat(300);
    let _upstream = nginx(
        &upstream_bin,
        &dir,
        "upstream",
        &format!(
            "  server {{ listen 127.0.0.1:{up_port}; location / {{ default_type application/json; return 200 '{body}'; }} }}"
        ),
    )?;
    let _proxy = nginx(
        Path::new("/usr/sbin/nginx"),
        &dir,
        "proxy",
        &format!(
            "  upstream up {{ server 127.0.0.1:{up_port}; keepalive 32; }}\n  server {{ listen 127.0.0.1:{proxy_port}; location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}"
        ),
    )?;
    wait_port(up_port)?;
    wait_port(proxy_port)?;
    wrk(
        proxy_port,
        &BenchArgs {
            seconds: Some(2),
            connections: args.connections,
            what: String::new(),
            storage: args.storage.clone(),
        },
    )?; // warm-up

    let calls = 2_000_000;
    let base1 = wrk(proxy_port, args)?;
    let write_base = write_cost_ns(calls);
    let mut modes = Vec::new();
    let modes_to_run: [(&str, &[&str]); 3] =
        [("uprobes", &["--no-audit"]), ("syscalls", &["--no-audit"]), ("uprobes + audit capture", &[])];
    for (mode, extra) in modes_to_run {
        let attach = mode.split(' ').next().unwrap_or(mode);
        let provider = format!("local=127.0.0.1:{up_port}");
        let listen = format!("127.0.0.1:{agent_port}");
        let agent = Killed(
            Command::new(&agent_bin)
                .args(["run", "--exe", "/usr/sbin/nginx", "--attach", attach, "--provider", &provider])
                .args(["--listen", &listen])
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("target/release/metrics-agent")?,
        );
        wait_port(agent_port)?;
        let before = scrape(agent_port);
        let traced = wrk(proxy_port, args)?;
        let write_traced = write_cost_ns(calls);
        let after = scrape(agent_port);
        drop(agent);
        let requests = metric(&after, "llm_proxy_requests_total ") - metric(&before, "llm_proxy_requests_total ");
        let hits: f64 = [
            "read_entry",
            "write_entry",
            "data_return",
            "accept_entry",
            "accept_return",
            "connect_entry",
            "close_entry",
        ]
        .iter()
        .map(|p| {
            let s = format!("metrics_agent_probe_hits_total{{probe=\"{p}\"}} ");
            metric(&after, &s) - metric(&before, &s)
        })
        .sum();
        modes.push((mode, traced, write_traced, requests, hits));
    }
    let base2 = wrk(proxy_port, args)?;

    let base_rps = (base1.rps + base2.rps) / 2.0;
    let base_p50 = (base1.p50_ms + base2.p50_ms) / 2.0;
    let base_p99 = (base1.p99_ms + base2.p99_ms) / 2.0;
    let mut r = String::new();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_string()))
        })
        .unwrap_or_default();
    let kernel = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    writeln!(
        r,
        "Machine: {} cores, {cpu}, kernel {kernel}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    )?;
    writeln!(
        r,
        "wrk -t2 -c{} -d{}s through nginx (1 worker, keep-alive upstream) to a local nginx upstream returning 300 B\n",
        args.connections,
        args.seconds()
    )?;
    writeln!(r, "| run | requests/s | p50 ms | p99 ms | throughput ratio | p50 ratio | p99 ratio |")?;
    writeln!(r, "|---|---|---|---|---|---|---|")?;
    let mut row = |name: &str, w: &WrkResult| {
        writeln!(
            r,
            "| {name} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            w.rps,
            w.p50_ms,
            w.p99_ms,
            w.rps / base_rps,
            w.p50_ms / base_p50,
            w.p99_ms / base_p99
        )
    };
    row("baseline (before)", &base1)?;
    for (mode, w, ..) in &modes {
        row(&format!("agent, --attach {mode}"), w)?;
    }
    row("baseline (after)", &base2)?;
    writeln!(
        r,
        "\n| mode | requests counted by the agent / completed by wrk | hits per request | added worker time per request |"
    )?;
    writeln!(r, "|---|---|---|---|")?;
    for (mode, w, _, requests, hits) in &modes {
        let per = if *requests > 0.0 { hits / requests } else { 0.0 };
        let added_us = (1.0 / w.rps - 1.0 / base_rps) * 1e6;
        writeln!(r, "| {mode} | {requests:.0} / {} | {per:.2} | {added_us:.1} µs |", w.requests)?;
    }
    writeln!(r, "\n| non-target process, libc write(2) to /dev/null | ns per call | ratio |")?;
    writeln!(r, "|---|---|---|")?;
    writeln!(r, "| agent not running | {write_base:.1} | 1.000 |")?;
    for (mode, _, write_traced, ..) in &modes {
        writeln!(
            r,
            "| agent attached to nginx, --attach {mode} | {write_traced:.1} | {:.3} |",
            write_traced / write_base
        )?;
    }
    let audit =
        Command::new(&agent_bin).args(["bench-audit", "--exchanges", "20000"]).output().context("bench-audit")?;
    writeln!(
        r,
        "\nAudit path parsing on one core (`metrics-agent bench-audit`: 20,000 keep-alive exchanges, half JSON, half SSE, in 4 KiB chunk events):\n"
    )?;
    writeln!(r, "```\n{}```", String::from_utf8_lossy(&audit.stdout))?;
    println!("{r}");
    std::fs::write(dir.join("report.md"), &r)?;
    Ok(())
}
