//! `cargo xtask fuzz`: builds the coverage-guided fuzz targets of the audit
//! path's parsers (`metrics-agent/fuzz`, cargo fuzz + libFuzzer, nightly)
//! and runs each for a bounded time. A crash fails the task and leaves its
//! input under `metrics-agent/fuzz/artifacts/TARGET/`.

use std::process::Command;

use anyhow::Result;

use crate::{run_cmd, workspace_root};

/// Every target in `metrics-agent/fuzz/fuzz_targets`.
pub const TARGETS: &[&str] = &[
    "http_message",
    "sse",
    "llm_body",
    "decode",
    "pipeline",
    "eventstream",
    "ndjson",
    "h2_frames",
    "hpack",
    "traceparent",
];

pub fn run(seconds_per_target: u64) -> Result<()> {
    let crate_dir = workspace_root().join("metrics-agent");
    run_cmd(Command::new("cargo").current_dir(&crate_dir).args(["+nightly", "fuzz", "build"]))?;
    let logs = crate::target_dir().join("fuzz-logs");
    std::fs::create_dir_all(&logs)?;
    for target in TARGETS {
        // libFuzzer reports every new input: its output goes to a log file,
        // of which the last lines are shown (all of it on a failure).
        let log = logs.join(format!("{target}.log"));
        eprintln!("xtask: fuzzing {target} for {seconds_per_target} s (log: {})", log.display());
        let out = std::fs::File::create(&log)?;
        let result = run_cmd(
            Command::new("cargo")
                .current_dir(&crate_dir)
                .args(["+nightly", "fuzz", "run", target, "--"])
                .args([
                    format!("-max_total_time={seconds_per_target}"),
                    // Enough for any single input; a slower one is a hang worth a report.
                    "-timeout=10".to_string(),
                    "-rss_limit_mb=2048".to_string(),
                ])
                .stdout(out.try_clone()?)
                .stderr(out),
        );
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let shown = if result.is_err() { &lines[..] } else { &lines[lines.len().saturating_sub(2)..] };
        for line in shown {
            eprintln!("  {line}");
        }
        result?;
    }
    eprintln!("xtask: fuzzing found nothing in {} targets x {seconds_per_target} s", TARGETS.len());
    Ok(())
}
