//! `cargo xtask fuzz`: builds the coverage-guided fuzz targets of the audit
//! path's parsers (`metrics-agent/fuzz`, cargo fuzz + libFuzzer, nightly)
//! and runs each for a bounded time. A crash fails the task and leaves its
//! input under `metrics-agent/fuzz/artifacts/TARGET/`.

use std::process::Command;

use anyhow::Result;

use crate::{run_cmd, workspace_root};

/// Every target in `metrics-agent/fuzz/fuzz_targets`.
pub const TARGETS: &[&str] = &["http_message", "sse", "llm_body", "decode", "pipeline"];

pub fn run(seconds_per_target: u64) -> Result<()> {
    let crate_dir = workspace_root().join("metrics-agent");
    run_cmd(Command::new("cargo").current_dir(&crate_dir).args(["+nightly", "fuzz", "build"]))?;
    for target in TARGETS {
        eprintln!("xtask: fuzzing {target} for {seconds_per_target} s");
        run_cmd(Command::new("cargo").current_dir(&crate_dir).args(["+nightly", "fuzz", "run", target, "--"]).args([
            format!("-max_total_time={seconds_per_target}"),
            // Enough for any single input; a slower one is a hang worth a report.
            "-timeout=10".to_string(),
            "-rss_limit_mb=2048".to_string(),
        ]))?;
    }
    eprintln!("xtask: fuzzing found nothing in {} targets x {seconds_per_target} s", TARGETS.len());
    Ok(())
}
