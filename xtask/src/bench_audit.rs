//! `cargo xtask bench audit [--rate R] [--seconds N]`: does the audit path
//! keep up with R exchanges/s (default 20,000, i.e. 2R records/s) through the
//! real kernel path and ring buffer? nginx and wrk cannot produce that rate
//! on a 2-core machine with the agent attached, so the traced target is a
//! minimal proxy (`xtask loopback-proxy`: one thread per client connection,
//! one keep-alive upstream connection each, one read and one write per
//! message) and the load generator and upstream run in this process,
//! untraced, paced at R. The agent runs in its default mode (sockets,
//! capture with adaptive sampling, SQLite storage) attached by `--pid`.
//! Reports the achieved rate, records/s, the sampling interval N, the
//! agent's CPU by thread, per exchange, and how long the audit thread waited
//! on the run queue; writes target/bench/audit.md.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::bench_rig::{
    Killed, free_port, machine_line, metric, require_root, scrape, spawn_agent_on_pid, thread_cpu,
    thread_run_queue_wait, wait_port, wait_ready,
};

const REQUEST_BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say something short about audit paths."}],"user":"bench"}"#;
const ANSWER: &str = r#"{"id":"chatcmpl-audit","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"The audit benchmark answers every request with this short completion."},"finish_reason":"stop"}],"usage":{"prompt_tokens":42,"completion_tokens":17,"total_tokens":59}}"#;

/// One look at the agent and the traffic.
struct Look {
    at: Instant,
    exchanges: u64,
    text: String,
    cpu: std::collections::BTreeMap<String, f64>,
    /// Seconds the audit thread has waited on the run queue so far.
    audit_waited: f64,
}

pub fn run(seconds: u64, rate: u64, connections: u32) -> Result<()> {
    require_root("audit")?;
    let dir = crate::target_dir().join("bench").join("audit");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let stop = Arc::new(AtomicBool::new(false));
    let upstream = TcpListener::bind("127.0.0.1:0")?;
    let up_port = upstream.local_addr()?.port();
    std::thread::spawn(move || serve_upstream(upstream));
    let proxy_port = free_port()?;
    let proxy = Killed(
        Command::new(std::env::current_exe()?)
            .args(["loopback-proxy", "--listen", &proxy_port.to_string(), "--upstream", &up_port.to_string()])
            .spawn()
            .context("starting the loopback proxy")?,
    );
    wait_port(proxy_port)?;
    let agent_port = free_port()?;
    let agent = spawn_agent_on_pid(&dir, proxy.0.id(), up_port, agent_port)?;
    let agent_pid = agent.0.id();
    wait_ready(agent_port)?;
    let done = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..connections {
        let (stop, done) = (stop.clone(), done.clone());
        let per_connection = rate as f64 / f64::from(connections);
        clients.push(std::thread::spawn(move || drive(proxy_port, per_connection, &stop, &done)));
    }
    // Warm-up (connections, the sampler settling), then the measured window.
    std::thread::sleep(Duration::from_secs(5));
    let look = || Look {
        at: Instant::now(),
        exchanges: done.load(Ordering::Relaxed),
        text: scrape(agent_port),
        cpu: thread_cpu(agent_pid),
        audit_waited: thread_run_queue_wait(agent_pid, "audit"),
    };
    let first = look();
    let mut max_n = metric(&first.text, "metrics_agent_capture_sample_every ");
    let end = first.at + Duration::from_secs(seconds);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_secs(1));
        max_n = max_n.max(metric(&scrape(agent_port), "metrics_agent_capture_sample_every "));
    }
    let last = look();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    if !std::path::Path::new(&format!("/proc/{agent_pid}")).exists() {
        let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
        bail!("the agent stopped during the benchmark; its log:\n{log}");
    }
    drop(agent);
    drop(proxy);
    let report = report(&first, &last, max_n, rate, connections)?;
    println!("{report}");
    std::fs::write(crate::target_dir().join("bench").join("audit.md"), &report)?;
    Ok(())
}

/// One client connection sending chat requests at `rate` per second.
fn drive(port: u16, rate: f64, stop: &AtomicBool, done: &AtomicU64) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return };
    let _ = s.set_nodelay(true);
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nAuthorization: Bearer sk-bench-not-a-key\r\nContent-Length: {}\r\n\r\n{REQUEST_BODY}",
        REQUEST_BODY.len()
    );
    let mut buf = Vec::with_capacity(4096);
    let start = Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // Paced: the n-th request leaves at n / rate; behind schedule, at once.
        let due = start + Duration::from_secs_f64(sent as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if s.write_all(request.as_bytes()).is_err() {
            return;
        }
        let Some(n) = read_message(&mut s, &mut buf) else { return };
        buf.drain(..n);
        sent += 1;
        done.fetch_add(1, Ordering::Relaxed);
    }
}

/// The upstream: answers every request with the same completion.
fn serve_upstream(listener: TcpListener) {
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{ANSWER}",
        ANSWER.len()
    );
    for conn in listener.incoming().flatten() {
        let response = response.clone();
        std::thread::spawn(move || {
            let mut conn = conn;
            let _ = conn.set_nodelay(true);
            let mut buf = Vec::with_capacity(4096);
            while let Some(n) = read_message(&mut conn, &mut buf) {
                buf.drain(..n);
                if conn.write_all(response.as_bytes()).is_err() {
                    return;
                }
            }
        });
    }
}

/// `xtask loopback-proxy`: the benchmark's traced target. Each client
/// connection gets a thread and a keep-alive connection to the upstream;
/// each message is read whole and forwarded with one write.
pub fn loopback_proxy(listen: u16, upstream: u16) -> Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", listen))?;
    for client in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let (mut client, Ok(mut up)) = (client, TcpStream::connect(("127.0.0.1", upstream))) else { return };
            let _ = (client.set_nodelay(true), up.set_nodelay(true));
            let (mut request, mut response) = (Vec::with_capacity(4096), Vec::with_capacity(4096));
            while let Some(n) = read_message(&mut client, &mut request) {
                if up.write_all(&request[..n]).is_err() {
                    return;
                }
                request.drain(..n);
                let Some(m) = read_message(&mut up, &mut response) else { return };
                if client.write_all(&response[..m]).is_err() {
                    return;
                }
                response.drain(..m);
            }
        });
    }
    Ok(())
}

/// Reads until `buf` starts with one whole HTTP/1.1 message (head and a
/// Content-Length body); returns its length (the caller drains it; bytes
/// after it stay). `None` at end of stream or on an error.
fn read_message(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) {
            let head = std::str::from_utf8(&buf[..head_end]).ok()?;
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= head_end + length {
                return Some(head_end + length);
            }
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn report(first: &Look, last: &Look, max_n: f64, rate: u64, connections: u32) -> Result<String> {
    use std::fmt::Write as _;
    let secs = last.at.duration_since(first.at).as_secs_f64();
    let delta = |name: &str| metric(&last.text, name) - metric(&first.text, name);
    let exchanges = (last.exchanges - first.exchanges) as f64;
    let counted = delta("llm_proxy_requests_total ");
    let records = delta("metrics_agent_audit_records_total ");
    let dropped = delta("metrics_agent_capture_dropped_events_total ");
    let n_end = metric(&last.text, "metrics_agent_capture_sample_every ");
    let mut r = String::new();
    writeln!(r, "{}", machine_line())?;
    writeln!(
        r,
        "Audit path at {rate} exchanges/s asked ({connections} client connections, paced) through `xtask loopback-proxy` to an upstream answering OpenAI chat JSON with usage; agent defaults (sockets, capture with adaptive sampling, SQLite storage), {secs:.0} s measured after 5 s of warm-up.\n"
    )?;
    writeln!(
        r,
        "| exchanges/s done | counted by the hot path /s | records/s | records per exchange | sampling N (end / max) | ring drops |"
    )?;
    writeln!(r, "|---|---|---|---|---|---|")?;
    writeln!(
        r,
        "| {:.0} | {:.0} | {:.0} | {:.2} | {n_end:.0} / {max_n:.0} | {dropped:.0} |\n",
        exchanges / secs,
        counted / secs,
        records / secs,
        records / exchanges.max(1.0)
    )?;
    writeln!(r, "| agent thread | % of one core | µs per exchange | µs per record |")?;
    writeln!(r, "|---|---|---|---|")?;
    for (thread, cpu) in &last.cpu {
        let used = cpu - first.cpu.get(thread).copied().unwrap_or(0.0);
        writeln!(
            r,
            "| {thread} | {:.1} | {:.2} | {:.2} |",
            100.0 * used / secs,
            1e6 * used / exchanges.max(1.0),
            1e6 * used / records.max(1.0)
        )?;
    }
    let audit = last.cpu.get("audit").copied().unwrap_or(0.0) - first.cpu.get("audit").copied().unwrap_or(0.0);
    if records > 0.0 {
        let per_record = audit / records;
        writeln!(
            r,
            "\nAudit thread: {:.1}% of one core for {:.0} records/s ({:.2} µs per record, {:.2} µs per captured exchange of two records): half a core parses about {:.0} captured exchanges/s (target: 20,000).",
            100.0 * audit / secs,
            records / secs,
            1e6 * per_record,
            2e6 * per_record,
            0.5 / (2.0 * per_record)
        )?;
    }
    writeln!(
        r,
        "\nAudit thread run-queue wait (runnable, not running): {:.0} ms per second.",
        1e3 * (last.audit_waited - first.audit_waited) / secs
    )?;
    Ok(r)
}
