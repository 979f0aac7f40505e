//! `cargo xtask bench exporters`: the export path's throughput, measured by
//! the agent's `exporters` benchmark program (records per second into
//! the aggregator against a bus consumer that only counts, and the cost of
//! encoding one snapshot per exporter). Prints a Markdown report and writes
//! target/bench/exporters.md.

use std::fmt::Write as _;

use anyhow::Result;

pub fn run() -> Result<()> {
    let out = crate::agent_bench("exporters", &["--records", "500000"])?;
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
    writeln!(
        r,
        "## Exporters\n\nMachine: {cores} cores ({cpu}). `cargo bench -p metrics-agent --bench exporters -- --records 500000`:\n"
    )?;
    writeln!(r, "{out}")?;
    println!("{r}");
    let dir = crate::target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("exporters.md"), &r)?;
    Ok(())
}
