//! `cargo xtask bench storage`: the agent's storage benchmark
//! (`cargo bench -p metrics-agent --bench storage`) against a SQLite file and a private
//! PostgreSQL cluster started for the run, printed as Markdown (and written
//! to target/bench/storage.md).

use std::{fmt::Write as _, path::Path, process::Command};

use anyhow::{Context, Result, bail};

#[derive(clap::Args, Debug, Clone)]
pub struct StorageBenchArgs {
    /// Days of 1-minute rows written before the queries.
    #[arg(long, default_value_t = 30)]
    days: u64,
    /// (provider, model, application) series.
    #[arg(long, default_value_t = 50)]
    series: usize,
    /// Records pushed through aggregation and flushes for the ingest rate.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
}

/// Runs a PostgreSQL program as the `postgres` user.
fn as_postgres(program: &Path, args: &[&str]) -> Result<()> {
    let status = Command::new("runuser").args(["-u", "postgres", "--"]).arg(program).args(args).status()?;
    if !status.success() {
        bail!("{} {} failed", program.display(), args.join(" "));
    }
    Ok(())
}

struct Cluster {
    bin: std::path::PathBuf,
    data: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"), &["-D", &self.data, "-m", "fast", "-w", "stop"]);
    }
}

fn postgres_bin() -> Result<std::path::PathBuf> {
    let mut versions: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL is not installed: run `cargo xtask setup`")?
        .filter_map(|e| {
            let e = e.ok()?;
            Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin")))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b).context("no PostgreSQL server in /usr/lib/postgresql")
}

fn run_one(url: &str, args: &StorageBenchArgs) -> Result<serde_json::Value> {
    let (days, series, records) = (args.days.to_string(), args.series.to_string(), args.records.to_string());
    let out = crate::agent_bench(
        "storage",
        &["--database-url", url, "--days", &days, "--series", &series, "--records", &records],
    )
    .with_context(|| format!("the storage benchmark on {url}"))?;
    Ok(serde_json::from_str(&out)?)
}

pub fn run(args: &StorageBenchArgs) -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("the storage benchmark starts PostgreSQL as the postgres user: run as root");
    }
    let dir = crate::target_dir().join("bench/storage");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let sqlite = run_one(&format!("sqlite://{}/bench.db", dir.display()), args)?;

    let bin = postgres_bin()?;
    let pg_dir = dir.join("pg");
    std::fs::create_dir_all(&pg_dir)?;
    crate::run_cmd(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&pg_dir))?;
    let data = pg_dir.join("data").display().to_string();
    as_postgres(&bin.join("initdb"), &["-D", &data, "-A", "trust", "-U", "postgres", "-E", "UTF8"])?;
    let options = format!("-p 18950 -k {} -c listen_addresses=127.0.0.1", pg_dir.display());
    let log = pg_dir.join("server.log").display().to_string();
    as_postgres(&bin.join("pg_ctl"), &["-D", &data, "-o", &options, "-l", &log, "-w", "start"])?;
    let cluster = Cluster { bin, data };
    let postgres = run_one("postgres://postgres@127.0.0.1:18950/postgres", args)?;
    drop(cluster);

    let machine = format!(
        "{} CPUs, {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                .split(':')
                .nth(1)
                .unwrap_or("")
                .trim()
                .to_string()))
            .unwrap_or_default()
    );
    let mut md = String::new();
    writeln!(md, "Machine: {machine}. {} series, {} days of 1-minute rows.\n", args.series, args.days)?;
    writeln!(md, "| | SQLite | PostgreSQL |\n|---|---|---|")?;
    let num = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    for (label, key) in [
        ("aggregation only (baseline), records/s", "aggregate_only_records_per_second"),
        ("ingest: aggregation + flushes, records/s", "ingest_records_per_second"),
        ("backfill, 1-minute rows/s (with their 1h/1d rollups)", "backfill_minute_rows_per_second"),
        ("backfill, 1-minute rows", "backfill_minute_rows"),
        ("backfill, seconds", "backfill_seconds"),
    ] {
        writeln!(md, "| {label} | {:.0} | {:.0} |", num(&sqlite, key), num(&postgres, key))?;
    }
    for (label, key) in [
        ("bytes per detail row (20,000 rows)", "detail_row_bytes"),
        ("bytes per minute row (7,200 rows, 20 records each)", "minute_row_bytes"),
    ] {
        writeln!(md, "| {label} | {:.0} | {:.0} |", num(&sqlite, key), num(&postgres, key))?;
    }
    let ratio =
        |v: &serde_json::Value| num(v, "ingest_records_per_second") / num(v, "aggregate_only_records_per_second");
    writeln!(md, "| ingest / baseline | {:.3} | {:.3} |", ratio(&sqlite), ratio(&postgres))?;
    writeln!(md, "\n| query | tier | rows out | SQLite ms | PostgreSQL ms |\n|---|---|---|---|---|")?;
    let empty = Vec::new();
    let pg_queries = postgres["queries"].as_array().unwrap_or(&empty);
    for (i, q) in sqlite["queries"].as_array().unwrap_or(&empty).iter().enumerate() {
        writeln!(
            md,
            "| {} | {} | {} | {:.1} | {:.1} |",
            q["query"].as_str().unwrap_or(""),
            q["tier"].as_str().unwrap_or(""),
            q["rows_out"],
            q["median_ms"].as_f64().unwrap_or(f64::NAN),
            pg_queries.get(i).and_then(|p| p["median_ms"].as_f64()).unwrap_or(f64::NAN)
        )?;
    }
    print!("{md}");
    std::fs::write(crate::target_dir().join("bench/storage.md"), &md)?;
    Ok(())
}
