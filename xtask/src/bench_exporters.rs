//! `cargo xtask bench exporters`: the export path's throughput, measured by
//! the release agent's hidden `bench-export` command (records per second into
//! the aggregator against a bus consumer that only counts, and the cost of
//! encoding one snapshot per exporter). Prints a Markdown report and writes
//! target/bench/exporters.md.

use std::{fmt::Write as _, process::Command};

use anyhow::{Context, Result, bail};

pub fn run() -> Result<()> {
    let agent_bin = crate::target_dir().join("release/metrics-agent");
    let out = Command::new(&agent_bin)
        .args(["bench-export", "--records", "500000"])
        .output()
        .with_context(|| format!("running {} bench-export", agent_bin.display()))?;
    if !out.status.success() {
        bail!("bench-export failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mut r = String::new();
    writeln!(r, "## Exporters\n\nMachine: {cores} cores ({cpu}). `metrics-agent bench-export --records 500000`:\n")?;
    writeln!(r, "{}", String::from_utf8_lossy(&out.stdout))?;
    println!("{r}");
    let dir = crate::target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("exporters.md"), &r)?;
    Ok(())
}
