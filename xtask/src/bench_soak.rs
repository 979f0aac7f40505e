//! `cargo xtask bench soak [--seconds N]`: the agent in its default mode
//! (uprobes, audit path on, SQLite storage on) attached by `--pid` to a copy
//! of nginx (so no other agent on the machine traces it) proxying to
//! a fast upstream that answers OpenAI-style chat completions, driven by wrk
//! at full rate. Every interval it reports the agent's RSS, audit
//! connections and memory against the proxy's real connections, the
//! sampling interval, records/s, the breaker counters and the database
//! size; at the end, where the agent's CPU went per exchange, by thread,
//! and how fast `/metrics` answered. A scrape without an answer within
//! 10 s is reported as missing (and counted), never as zeros.
//! Prints Markdown (and writes target/bench/soak.md).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::bench_rig::{
    ANSWER_TIMEOUT, Killed, free_port, machine_line, metric, proxied_upstream, require_root, spawn_agent_on_pid,
    thread_cpu, timed_scrape, wait_ready,
};

/// Samples taken over the run (at least one every 10 s).
const SAMPLES: u64 = 30;

/// One look at the agent.
struct Sample {
    at: Duration,
    rss_mib: f64,
    /// Heap and other private memory (`RssAnon`); the rest of RSS is file
    /// pages (the binary, SQLite's shared-memory index) and shared memory.
    anon_mib: f64,
    proxy_connections: usize,
    database_mib: f64,
    /// CPU seconds per thread name.
    cpu: BTreeMap<String, f64>,
    /// How long the scrape of `/metrics` took (`ANSWER_TIMEOUT` or more when missing).
    scrape_time: Duration,
    /// What `/metrics` said; None when it did not answer in time.
    scraped: Option<Scraped>,
}

/// The agent's own figures, from one scrape of `/metrics`.
struct Scraped {
    exchanges: f64,
    records: f64,
    audit_connections: f64,
    audit_memory_kib: f64,
    sample_every: f64,
    drop_raises: f64,
    cpu_raises: f64,
}

pub fn run(seconds: u64, connections: u32) -> Result<()> {
    require_root("soak")?;
    let dir = crate::target_dir().join("bench").join("soak");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let answer = r#"{"id":"chatcmpl-soak","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"The soak benchmark answers every request with this short completion."},"finish_reason":"stop"}],"usage":{"prompt_tokens":42,"completion_tokens":17,"total_tokens":59}}"#;
    let rig = proxied_upstream(&dir, answer)?;
    let (up_port, proxy_port, agent_port) = (rig.up_port, rig.proxy_port, free_port()?);
    let database = dir.join("metrics.db");
    let mut agent = spawn_agent_on_pid(&dir, rig.proxy.0.id(), up_port, agent_port)?;
    let agent_pid = agent.0.id();
    // Traffic starts once the agent is attached (`/readyz`): exchanges
    // before that are not seen, and the hot path is compared with wrk's count.
    wait_ready(agent_port)?;
    let script = dir.join("chat.lua");
    std::fs::write(
        &script,
        "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Authorization\"] = \"Bearer sk-soak-not-a-key\"\nwrk.body = '{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"Say something short about soak tests.\"}],\"user\":\"soak\"}'\n",
    )?;
    let mut wrk = Killed(
        Command::new("wrk")
            .args(["-t2", &format!("-c{connections}"), &format!("-d{seconds}s"), "-s"])
            .arg(&script)
            .arg(format!("http://127.0.0.1:{proxy_port}/v1/chat/completions"))
            .stdout(std::fs::File::create(dir.join("wrk.txt"))?)
            .spawn()
            .context("wrk (Debian package wrk)")?,
    );
    let start = Instant::now();
    let every = Duration::from_secs((seconds / SAMPLES).clamp(1, 10));
    let mut samples = vec![sample(agent_pid, agent_port, proxy_port, up_port, &database, Duration::ZERO)];
    while start.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(every);
        if let Ok(Some(status)) = agent.0.try_wait() {
            let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
            bail!("the agent stopped ({status}) during the soak; its log:\n{log}");
        }
        samples.push(sample(agent_pid, agent_port, proxy_port, up_port, &database, start.elapsed()));
    }
    let _ = wrk.0.wait();
    let traffic_end = samples.len() - 1;
    // After the traffic: the audit state must fall back to the real connections.
    std::thread::sleep(Duration::from_secs(15));
    samples.push(sample(agent_pid, agent_port, proxy_port, up_port, &database, start.elapsed()));
    drop(agent);
    let wrk_text = std::fs::read_to_string(dir.join("wrk.txt")).unwrap_or_default();
    let report = report(&samples, traffic_end, seconds, connections, &wrk_text)?;
    println!("{report}");
    std::fs::write(crate::target_dir().join("bench").join("soak.md"), &report)?;
    Ok(())
}

fn sample(pid: u32, agent_port: u16, proxy_port: u16, up_port: u16, database: &Path, at: Duration) -> Sample {
    let (text, scrape_time) = timed_scrape(agent_port);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |field: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0)
    };
    let rss_kib = kib("VmRSS:");
    let database_bytes: u64 = ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| std::fs::metadata(format!("{}{suffix}", database.display())).ok())
        .map(|m| m.len())
        .sum();
    Sample {
        at,
        rss_mib: rss_kib / 1024.0,
        anon_mib: kib("RssAnon:") / 1024.0,
        proxy_connections: proxy_connections(proxy_port, up_port),
        database_mib: database_bytes as f64 / (1024.0 * 1024.0),
        cpu: thread_cpu(pid),
        scrape_time,
        scraped: text.map(|text| Scraped {
            exchanges: metric(&text, "llm_proxy_requests_total "),
            records: metric(&text, "metrics_agent_audit_records_total "),
            audit_connections: metric(&text, "metrics_agent_audit_connections "),
            audit_memory_kib: metric(&text, "metrics_agent_audit_memory_bytes ") / 1024.0,
            sample_every: metric(&text, "metrics_agent_capture_sample_every "),
            drop_raises: metric(&text, "metrics_agent_capture_breaker_trips_total "),
            cpu_raises: metric(&text, "metrics_agent_capture_breaker_cpu_trips_total "),
        }),
    }
}

/// Established TCP connections of the proxy: accepted on its port, and
/// opened to the upstream's.
fn proxy_connections(proxy_port: u16, up_port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port = |addr: &str| addr.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // State 01: ESTABLISHED.
            f.len() > 3
                && f[3] == "01"
                && (port(f[1]) == Some(proxy_port) || port(f[2]) == Some(up_port))
                && port(f[1]) != Some(up_port)
        })
        .count()
}

fn report(samples: &[Sample], traffic_end: usize, seconds: u64, connections: u32, wrk: &str) -> Result<String> {
    let mut r = String::new();
    writeln!(r, "{}", machine_line())?;
    writeln!(
        r,
        "Soak: wrk -t2 -c{connections} -d{seconds}s POSTing chat completions through nginx (1 worker, keep-alive upstream) to a local upstream answering OpenAI JSON with usage; agent defaults (sockets, audit on, adaptive sampling, SQLite storage).\n"
    )?;
    writeln!(
        r,
        "| t (s) | RSS MiB (anon) | exchanges/s | records/s | sampling N | raises (drops/CPU) | audit conns / proxy conns | audit memory KiB | database MiB |"
    )?;
    writeln!(r, "|---|---|---|---|---|---|---|---|---|")?;
    // Rates run from the previous sample that has figures: a missing
    // scrape is a gap in the table, not a drop to zero.
    let mut prev: Option<(Duration, &Scraped)> = None;
    for (i, s) in samples.iter().enumerate() {
        let idle = if i > traffic_end { " (idle)" } else { "" };
        let Some(m) = &s.scraped else {
            writeln!(
                r,
                "| {:.0}{idle} | {:.1} ({:.1}) | missing | missing | missing | missing | missing / {} | missing | {:.1} |",
                s.at.as_secs_f64(),
                s.rss_mib,
                s.anon_mib,
                s.proxy_connections,
                s.database_mib,
            )?;
            continue;
        };
        let rate = |now: f64, before: fn(&Scraped) -> f64| match prev {
            Some((at, p)) => (now - before(p)) / (s.at.as_secs_f64() - at.as_secs_f64()).max(1e-9),
            None => 0.0,
        };
        writeln!(
            r,
            "| {:.0}{idle} | {:.1} ({:.1}) | {:.0} | {:.0} | {:.0} | {:.0}/{:.0} | {:.0} / {} | {:.0} | {:.1} |",
            s.at.as_secs_f64(),
            s.rss_mib,
            s.anon_mib,
            rate(m.exchanges, |p| p.exchanges),
            rate(m.records, |p| p.records),
            m.sample_every,
            m.drop_raises,
            m.cpu_raises,
            m.audit_connections,
            s.proxy_connections,
            m.audit_memory_kib,
            s.database_mib,
        )?;
        prev = Some((s.at, m));
    }
    scrape_summary(&mut r, samples)?;
    // The CPU table spans the first and the last traffic sample that have figures.
    let answered = |s: &&Sample| s.scraped.is_some();
    let (Some(first), Some(last)) =
        (samples[..=traffic_end].iter().find(answered), samples[..=traffic_end].iter().rfind(answered))
    else {
        bail!("no scrape of /metrics was answered during the traffic:\n{r}");
    };
    let (Some(first_m), Some(last_m)) = (&first.scraped, &last.scraped) else { unreachable!("filtered above") };
    let exchanges = last_m.exchanges - first_m.exchanges;
    let records = last_m.records - first_m.records;
    let elapsed = last.at.as_secs_f64() - first.at.as_secs_f64();
    writeln!(
        r,
        "\nAgent CPU over the traffic (t = {:.0} to {:.0} s: {exchanges:.0} exchanges, {records:.0} records in {elapsed:.0} s):\n",
        first.at.as_secs_f64(),
        last.at.as_secs_f64()
    )?;
    writeln!(r, "| thread | CPU s | % of one core | µs per exchange | µs per record |")?;
    writeln!(r, "|---|---|---|---|---|")?;
    let mut total = 0.0;
    for (group, cpu) in &last.cpu {
        let used = cpu - first.cpu.get(group).copied().unwrap_or(0.0);
        total += used;
        writeln!(
            r,
            "| {group} | {used:.1} | {:.1} | {:.1} | {:.1} |",
            100.0 * used / elapsed,
            1e6 * used / exchanges.max(1.0),
            1e6 * used / records.max(1.0)
        )?;
    }
    writeln!(
        r,
        "| all | {total:.1} | {:.1} | {:.1} | {:.1} |",
        100.0 * total / elapsed,
        1e6 * total / exchanges.max(1.0),
        1e6 * total / records.max(1.0)
    )?;
    let audit = last.cpu.get("audit").copied().unwrap_or(0.0) - first.cpu.get("audit").copied().unwrap_or(0.0);
    if audit > 0.0 && records > 0.0 {
        // A captured exchange is two records (client and upstream side).
        let per_exchange = 2.0 * audit / records;
        writeln!(
            r,
            "\nAudit thread: {:.1} µs per captured exchange, so half a core keeps up with about {:.0} captured exchanges/s.",
            1e6 * per_exchange,
            0.5 / per_exchange
        )?;
    }
    let warm = samples.iter().position(|s| s.at >= Duration::from_secs(120)).unwrap_or(traffic_end.min(1));
    if warm < traffic_end {
        let growth = 100.0 * (samples[traffic_end].rss_mib / samples[warm].rss_mib - 1.0);
        writeln!(
            r,
            "RSS from t = {:.0} s to the end of the traffic: {:.1} → {:.1} MiB ({growth:+.1}%).",
            samples[warm].at.as_secs_f64(),
            samples[warm].rss_mib,
            samples[traffic_end].rss_mib
        )?;
    }
    // The agent started before wrk and nothing else reaches this proxy: its
    // counter since start is comparable with what wrk completed.
    let completed =
        wrk.lines().find(|l| l.contains("requests in")).and_then(|l| l.split_whitespace().next()).unwrap_or("?");
    match samples.last().and_then(|s| s.scraped.as_ref()) {
        Some(m) => writeln!(
            r,
            "Hot path: {:.0} requests counted by the agent since its start, {completed} completed by wrk (plus those in flight when it stopped).",
            m.exchanges
        )?,
        None => writeln!(
            r,
            "Hot path: the last scrape (idle) was missing, so the agent's count is unknown; {completed} completed by wrk."
        )?,
    }
    writeln!(r, "\nwrk:\n```\n{}```", wrk.trim_end().to_string() + "\n")?;
    Ok(r)
}

/// One line on the scrapes of `/metrics`: how many were missing (no answer
/// within `ANSWER_TIMEOUT`), when, and the latency of the answered ones.
fn scrape_summary(r: &mut String, samples: &[Sample]) -> Result<()> {
    let missing: Vec<String> =
        samples.iter().filter(|s| s.scraped.is_none()).map(|s| format!("{:.0}", s.at.as_secs_f64())).collect();
    let mut answered: Vec<Duration> = samples.iter().filter(|s| s.scraped.is_some()).map(|s| s.scrape_time).collect();
    answered.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    write!(
        r,
        "\nScrapes of `/metrics`: {} of {} answered within {} s",
        answered.len(),
        samples.len(),
        ANSWER_TIMEOUT.as_secs()
    )?;
    if !missing.is_empty() {
        write!(r, ", **{} missing** (t = {} s)", missing.len(), missing.join(", "))?;
    }
    if let (Some(p50), Some(max)) = (answered.get(answered.len() / 2), answered.last()) {
        write!(r, "; latency of the answered: p50 {:.1} ms, max {:.1} ms", ms(*p50), ms(*max))?;
    }
    writeln!(r, ".")?;
    Ok(())
}
