//! `cargo xtask bench`: nginx proxying to a fast local upstream, measured
//! with wrk in one run: without the agent, with it in each data path, and
//! without it again. Per mode: throughput and latency ratios, probe hits
//! per request, the proxy worker's CPU time added per request, the agent's
//! CPU, memory and start-up time, and what a process that is not a target
//! pays per socket send and per other syscall. Prints a Markdown report
//! (also written to target/bench/report.md; `--json PATH` writes the same
//! results as JSON).

use std::{
    fmt::Write as _,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::bench_rig::{
    AgentRun, children_of, cores, cpu_model, cpu_seconds, free_port, metric, metric_sum, proxied_upstream,
    require_root, rss_mib, scrape, spawn_agent,
};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Seconds per wrk run [default: 10; soak: 600].
    #[arg(long)]
    seconds: Option<u64>,
    /// wrk connections.
    #[arg(long, default_value_t = 16)]
    connections: u32,
    /// Agent modes to measure (comma-separated): uprobes, syscalls,
    /// sockets (each the hot path only, `--no-audit`) and sockets+capture.
    #[arg(long, value_delimiter = ',', default_value = "uprobes,syscalls,sockets,sockets+capture")]
    modes: Vec<String>,
    /// Also write the results as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// What to measure: `proxy` (nginx with and without the agent),
    /// `stream` (live stream fan-out to many WebSocket clients),
    /// `exporters` (the export path's throughput; no root, no nginx),
    /// `storage` (ingest rate and query time on SQLite and PostgreSQL) or
    /// `soak` (the default agent under sustained full-rate load, over time)
    /// or `audit` (the audit path at `--rate` exchanges/s through the real ring buffer).
    #[arg(default_value = "proxy", value_parser = ["proxy", "stream", "exporters", "storage", "soak", "audit"])]
    pub what: String,
    /// `audit`: exchanges per second asked of the traced loopback proxy.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    #[command(flatten)]
    pub storage: crate::bench_storage::StorageBenchArgs,
}

/// One agent configuration measured: its key (report and JSON), what it
/// is, and its flags.
struct Mode {
    key: &'static str,
    label: &'static str,
    args: &'static [&'static str],
}

const MODES: &[Mode] = &[
    Mode { key: "uprobes", label: "`--attach uprobes --no-audit`", args: &["--attach", "uprobes", "--no-audit"] },
    Mode { key: "syscalls", label: "`--attach syscalls --no-audit`", args: &["--attach", "syscalls", "--no-audit"] },
    Mode { key: "sockets", label: "`--attach sockets --no-audit`", args: &["--attach", "sockets", "--no-audit"] },
    Mode {
        key: "sockets+capture",
        label: "`--attach sockets`, every exchange captured (the default)",
        args: &["--attach", "sockets"],
    },
];

/// Calls per non-target measurement.
const WRITE_CALLS: u32 = 2_000_000;
const SEND_CALLS: u32 = 500_000;
/// The AF_UNIX sender is drained after this many 1-byte sends.
const SENDS_PER_DRAIN: u32 = 64;

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

fn wrk(port: u16, seconds: u64, connections: u32) -> Result<WrkResult> {
    let out = Command::new("wrk")
        .args(["-t2", &format!("-c{connections}"), &format!("-d{seconds}s"), "--latency"])
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
    // SAFETY: open(2) with a valid C string.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY) };
    let byte = [0u8; 1];
    let start = Instant::now();
    for _ in 0..calls {
        // SAFETY: writing one byte from a valid buffer.
        unsafe { libc::write(fd, byte.as_ptr().cast(), 1) };
    }
    let ns = start.elapsed().as_nanos() as f64 / calls as f64;
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    ns
}

/// Nanoseconds per 1-byte `send(2)` on an AF_UNIX stream socketpair; the
/// peer is drained with one `recv` every `SENDS_PER_DRAIN` sends, so each
/// send carries 1/64 of a receive.
fn socket_send_cost_ns(calls: u32) -> Result<f64> {
    let mut fds = [0i32; 2];
    // SAFETY: socketpair(2) writes two descriptors into the array.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) } != 0 {
        bail!("socketpair: {}", std::io::Error::last_os_error());
    }
    let byte = [0u8; 1];
    let mut drain = [0u8; SENDS_PER_DRAIN as usize];
    let start = Instant::now();
    for i in 1..=calls {
        // SAFETY: sending one byte from a valid buffer on our socket.
        unsafe { libc::send(fds[0], byte.as_ptr().cast(), 1, 0) };
        if i % SENDS_PER_DRAIN == 0 {
            let mut got = 0;
            while got < drain.len() {
                // SAFETY: receiving into the rest of a valid buffer.
                let n = unsafe { libc::recv(fds[1], drain[got..].as_mut_ptr().cast(), drain.len() - got, 0) };
                if n <= 0 {
                    bail!("recv on the socketpair: {}", std::io::Error::last_os_error());
                }
                got += n as usize;
            }
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / calls as f64;
    // SAFETY: closing the descriptors made above.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    Ok(ns)
}

/// What this process (not a target) pays per call.
#[derive(Clone, Copy)]
struct NonTarget {
    write_ns: f64,
    send_ns: f64,
}

fn non_target_costs() -> Result<NonTarget> {
    Ok(NonTarget { write_ns: write_cost_ns(WRITE_CALLS), send_ns: socket_send_cost_ns(SEND_CALLS)? })
}

/// One wrk run and the CPU time the proxy's workers (and the agent) used
/// during it.
struct Run {
    wrk: WrkResult,
    wall_s: f64,
    proxy_cpu_s: f64,
    agent_cpu_s: f64,
}

impl Run {
    fn proxy_us_per_request(&self) -> f64 {
        self.proxy_cpu_s / self.wrk.requests.max(1) as f64 * 1e6
    }
}

fn measured_run(port: u16, workers: &[u32], agent: Option<u32>, args: &BenchArgs) -> Result<Run> {
    let proxy_cpu = || workers.iter().map(|w| cpu_seconds(*w)).sum::<Result<f64>>();
    let agent_cpu = || agent.map_or(Ok(0.0), cpu_seconds);
    let (proxy0, agent0, start) = (proxy_cpu()?, agent_cpu()?, Instant::now());
    let wrk = wrk(port, args.seconds(), args.connections)?;
    let wall_s = start.elapsed().as_secs_f64();
    Ok(Run { wrk, wall_s, proxy_cpu_s: proxy_cpu()? - proxy0, agent_cpu_s: agent_cpu()? - agent0 })
}

/// One mode's measurements.
struct ModeResult {
    mode: &'static Mode,
    run: Run,
    startup_s: f64,
    counted: f64,
    hits: f64,
    rss_mib: f64,
    non_target: NonTarget,
}

/// Starts the agent in `mode`, measures its start-up (spawn until
/// /metrics answers), a wrk run with it attached, and a non-target's costs
/// while it stays attached.
fn measure_mode(mode: &'static Mode, setup: &Setup, args: &BenchArgs) -> Result<ModeResult> {
    if std::net::TcpListener::bind(("127.0.0.1", setup.agent_port)).is_err() {
        bail!("port {} for the agent is taken (an agent of an earlier run still stopping?)", setup.agent_port);
    }
    let log_path = setup.dir.join(format!("agent-{}.log", mode.key.replace('+', "-")));
    // Storage stays on, as by default, in a database of this run's own.
    let database = setup.dir.join(format!("agent-{}.db", mode.key.replace('+', "-")));
    for stale in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{stale}", database.display()));
    }
    let started = Instant::now();
    let proxy_bin = setup.proxy_bin.display().to_string();
    let mut agent = spawn_agent(&AgentRun {
        target: ["--exe", &proxy_bin],
        provider: &setup.provider,
        port: setup.agent_port,
        database: &database,
        log: &log_path,
        extra: mode.args,
    })?;
    let failed = |what: &str| {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        anyhow::anyhow!("the agent in mode {} {what}; its log ({}):\n{log}", mode.key, log_path.display())
    };
    let mut startup_s = None;
    while started.elapsed() < Duration::from_secs(60) {
        if let Ok(Some(status)) = agent.0.try_wait() {
            return Err(failed(&format!("exited at start ({status})")));
        }
        let text = scrape(setup.agent_port);
        if startup_s.is_none() && !text.is_empty() {
            startup_s = Some(started.elapsed().as_secs_f64());
        }
        // nginx's master and its worker.
        if metric(&text, "metrics_agent_traced_processes ") >= 2.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let startup_s = startup_s.ok_or_else(|| failed("did not serve /metrics within 60 s"))?;
    let before = scrape(setup.agent_port);
    let run = measured_run(setup.proxy_port, &setup.workers, Some(agent.0.id()), args)?;
    let after = scrape(setup.agent_port);
    if let Ok(Some(status)) = agent.0.try_wait() {
        return Err(failed(&format!("exited during the run ({status})")));
    }
    let rss_mib = rss_mib(agent.0.id());
    let non_target = non_target_costs()?;
    drop(agent);
    let delta = |f: &dyn Fn(&str) -> f64| f(&after) - f(&before);
    Ok(ModeResult {
        mode,
        run,
        startup_s,
        counted: delta(&|t| metric(t, "llm_proxy_requests_total ")),
        hits: delta(&|t| metric_sum(t, "metrics_agent_probe_hits_total")),
        rss_mib,
        non_target,
    })
}

/// The proxy under test and where the agent runs from.
struct Setup {
    dir: PathBuf,
    /// The proxy's executable (a copy of Debian's nginx), the agent's `--exe`.
    proxy_bin: PathBuf,
    provider: String,
    proxy_port: u16,
    agent_port: u16,
    /// nginx's worker processes (their CPU time is the proxy's cost).
    workers: Vec<u32>,
}

/// Without the agent: the wrk runs before and after, and the non-target's
/// costs before and after; their means are the baseline.
struct Baseline {
    before: Run,
    after: Run,
    non_target: [NonTarget; 2],
}

impl Baseline {
    fn rps(&self) -> f64 {
        (self.before.wrk.rps + self.after.wrk.rps) / 2.0
    }
    fn p50_ms(&self) -> f64 {
        (self.before.wrk.p50_ms + self.after.wrk.p50_ms) / 2.0
    }
    fn p99_ms(&self) -> f64 {
        (self.before.wrk.p99_ms + self.after.wrk.p99_ms) / 2.0
    }
    fn proxy_us_per_request(&self) -> f64 {
        (self.before.proxy_us_per_request() + self.after.proxy_us_per_request()) / 2.0
    }
    fn write_ns(&self) -> f64 {
        (self.non_target[0].write_ns + self.non_target[1].write_ns) / 2.0
    }
    fn send_ns(&self) -> f64 {
        (self.non_target[0].send_ns + self.non_target[1].send_ns) / 2.0
    }
}

/// Derived figures of one mode, relative to the baseline.
struct Relative {
    throughput_ratio: f64,
    p50_ratio: f64,
    p99_ratio: f64,
    added_us_per_request: f64,
    hits_per_request: f64,
    agent_cpu_percent: f64,
    socket_send_added_ns: f64,
    other_syscall_ratio: f64,
}

impl Relative {
    fn of(m: &ModeResult, base: &Baseline) -> Self {
        let w = &m.run.wrk;
        Self {
            throughput_ratio: w.rps / base.rps(),
            p50_ratio: w.p50_ms / base.p50_ms(),
            p99_ratio: w.p99_ms / base.p99_ms(),
            added_us_per_request: m.run.proxy_us_per_request() - base.proxy_us_per_request(),
            hits_per_request: if m.counted > 0.0 { m.hits / m.counted } else { 0.0 },
            agent_cpu_percent: m.run.agent_cpu_s / m.run.wall_s * 100.0,
            socket_send_added_ns: m.non_target.send_ns - base.send_ns(),
            other_syscall_ratio: m.non_target.write_ns / base.write_ns(),
        }
    }
}

pub fn run(args: &BenchArgs) -> Result<()> {
    match args.what.as_str() {
        "proxy" => {}
        "stream" => return crate::bench_stream::run(args.seconds()),
        "exporters" => return crate::bench_exporters::run(),
        "storage" => return crate::bench_storage::run(&args.storage),
        "soak" => return crate::bench_soak::run(args.seconds.unwrap_or(600), args.connections),
        "audit" => return crate::bench_audit::run(args.seconds.unwrap_or(30), args.rate, args.connections),
        other => bail!("unknown benchmark `{other}`: use `proxy`, `stream`, `exporters`, `storage`, `soak` or `audit`"),
    }
    let modes = args
        .modes
        .iter()
        .map(|key| {
            MODES.iter().find(|m| m.key == key.trim()).with_context(|| {
                let known: Vec<&str> = MODES.iter().map(|m| m.key).collect();
                format!("unknown mode `{key}` in --modes: use {}", known.join(", "))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    require_root("proxy")?;
    let dir = crate::target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    let rig = proxied_upstream(&dir, &"x".repeat(300))?;
    let (proxy, proxy_port, agent_port) = (&rig.proxy, rig.proxy_port, free_port()?);
    wrk(proxy_port, 2, args.connections)?; // warm-up; nginx has forked its worker by now
    let workers = children_of(proxy.0.id());
    if workers.is_empty() {
        bail!("nginx (pid {}) has no worker process", proxy.0.id());
    }
    let setup = Setup {
        proxy_bin: rig.proxy_bin.clone(),
        dir,
        provider: format!("local=127.0.0.1:{}", rig.up_port),
        proxy_port,
        agent_port,
        workers,
    };

    let before = measured_run(proxy_port, &setup.workers, None, args)?;
    let non_target_before = non_target_costs()?;
    let results = modes.into_iter().map(|mode| measure_mode(mode, &setup, args)).collect::<Result<Vec<_>>>()?;
    let after = measured_run(proxy_port, &setup.workers, None, args)?;
    let non_target_after = non_target_costs()?;
    let base = Baseline { before, after, non_target: [non_target_before, non_target_after] };

    let audit = crate::agent_bench("audit", &["--exchanges", "20000"])?;
    let report = markdown(args, &base, &results, &audit)?;
    println!("{report}");
    std::fs::write(setup.dir.join("report.md"), &report)?;
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&json(args, &base, &results))?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// "N cores, CPU model, kernel K".
fn machine() -> String {
    let kernel = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("{} cores, {}, kernel {kernel}", cores(), cpu_model())
}

fn markdown(args: &BenchArgs, base: &Baseline, results: &[ModeResult], audit: &str) -> Result<String> {
    let mut r = String::new();
    writeln!(r, "Machine: {}", machine())?;
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
            w.rps / base.rps(),
            w.p50_ms / base.p50_ms(),
            w.p99_ms / base.p99_ms()
        )
    };
    row("baseline (before)", &base.before.wrk)?;
    for m in results {
        row(&format!("agent, {}", m.mode.label), &m.run.wrk)?;
    }
    row("baseline (after)", &base.after.wrk)?;
    writeln!(
        r,
        "\nProxy CPU: the nginx worker's utime + stime over the run per completed request; baseline {:.1} µs (before {:.1}, after {:.1}).\n",
        base.proxy_us_per_request(),
        base.before.proxy_us_per_request(),
        base.after.proxy_us_per_request()
    )?;
    writeln!(
        r,
        "| mode | requests counted / completed | hits per request | proxy CPU added per request | agent CPU | agent RSS | agent start-up |"
    )?;
    writeln!(r, "|---|---|---|---|---|---|---|")?;
    for m in results {
        let rel = Relative::of(m, base);
        writeln!(
            r,
            "| {} | {:.0} / {} | {:.2} | {:.1} µs | {:.1} % | {:.1} MiB | {:.2} s |",
            m.mode.key,
            m.counted,
            m.run.wrk.requests,
            rel.hits_per_request,
            rel.added_us_per_request,
            rel.agent_cpu_percent,
            m.rss_mib,
            m.startup_s
        )?;
    }
    writeln!(
        r,
        "\nA process that is not a target (this one), while the agent is attached to nginx: 1-byte `send(2)` on an AF_UNIX stream socketpair (drained every {SENDS_PER_DRAIN} sends) and 1-byte `write(2)` to /dev/null.\n"
    )?;
    writeln!(r, "| agent | ns per send | added ns per send | ns per write | write ratio |")?;
    writeln!(r, "|---|---|---|---|---|")?;
    writeln!(r, "| not running | {:.1} | 0 | {:.1} | 1.000 |", base.send_ns(), base.write_ns())?;
    for m in results {
        let rel = Relative::of(m, base);
        writeln!(
            r,
            "| {} | {:.1} | {:.1} | {:.1} | {:.3} |",
            m.mode.key, m.non_target.send_ns, rel.socket_send_added_ns, m.non_target.write_ns, rel.other_syscall_ratio
        )?;
    }
    writeln!(
        r,
        "\nAudit path parsing on one core (`cargo bench -p metrics-agent --bench audit`: 20,000 keep-alive exchanges, half JSON, half SSE, in 4 KiB chunk events):\n"
    )?;
    writeln!(r, "```\n{audit}```")?;
    Ok(r)
}

fn json(args: &BenchArgs, base: &Baseline, results: &[ModeResult]) -> serde_json::Value {
    use serde_json::{Map, Value, json};
    let mut modes = Map::new();
    let mut non_target = Map::new();
    for m in results {
        let rel = Relative::of(m, base);
        modes.insert(
            m.mode.key.to_string(),
            json!({
                "throughput_ratio": rel.throughput_ratio,
                "p50_ratio": rel.p50_ratio,
                "p99_ratio": rel.p99_ratio,
                "added_us_per_request": rel.added_us_per_request,
                "hits_per_request": rel.hits_per_request,
                "agent_cpu_percent": rel.agent_cpu_percent,
                "agent_rss_mib": m.rss_mib,
                "startup_seconds": m.startup_s,
                "requests_per_second": m.run.wrk.rps,
                "requests_completed": m.run.wrk.requests,
                "requests_counted": m.counted,
            }),
        );
        non_target.insert(
            m.mode.key.to_string(),
            json!({
                "socket_send_ns": rel.socket_send_added_ns,
                "other_syscall_ratio": rel.other_syscall_ratio,
            }),
        );
    }
    json!({
        "machine": machine(),
        "seconds": args.seconds(),
        "connections": args.connections,
        "baseline": {
            "requests_per_second": base.rps(),
            "p50_ms": base.p50_ms(),
            "p99_ms": base.p99_ms(),
            "proxy_us_per_request": base.proxy_us_per_request(),
            "socket_send_ns": base.send_ns(),
            "write_ns": base.write_ns(),
        },
        "modes": Value::Object(modes),
        "non_target": Value::Object(non_target),
    })
}
