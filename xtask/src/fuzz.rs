//! `cargo xtask fuzz`: builds the coverage-guided fuzz targets of the audit
//! path's parsers (`metrics-agent/fuzz`, cargo fuzz + libFuzzer, nightly)
//! and runs each for a bounded time, two targets at once on two cores or
//! more. A crash fails the task and leaves its input under
//! `metrics-agent/fuzz/artifacts/TARGET/`.

use std::{
    io::Write,
    path::Path,
    process::Command,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
};

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

/// How many targets fuzz at once: libFuzzer uses one core per target.
fn parallel_targets() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(2)
}

pub fn run(seconds_per_target: u64) -> Result<()> {
    let crate_dir = workspace_root().join("metrics-agent");
    run_cmd(Command::new("cargo").current_dir(&crate_dir).args(["+nightly", "fuzz", "build"]))?;
    let logs = crate::target_dir().join("fuzz-logs");
    std::fs::create_dir_all(&logs)?;
    // Workers take the next target until none is left or one has failed;
    // each target has its own corpus, artifacts and log.
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let workers = parallel_targets();
    eprintln!("xtask: fuzzing {} targets, {workers} at a time", TARGETS.len());
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    while !failed.load(Ordering::SeqCst) {
                        let Some(target) = TARGETS.get(next.fetch_add(1, Ordering::SeqCst)) else { break };
                        let result = fuzz_one(&crate_dir, &logs, target, seconds_per_target);
                        if result.is_err() {
                            failed.store(true, Ordering::SeqCst);
                        }
                        result?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a fuzz worker panicked")).collect()
    });
    results.into_iter().collect::<Result<Vec<()>>>()?;
    eprintln!("xtask: fuzzing found nothing in {} targets x {seconds_per_target} s", TARGETS.len());
    Ok(())
}

/// Fuzzes one target for `seconds` s. libFuzzer reports every new input:
/// its output goes to a log file, of which the last lines are shown (all of
/// it on a failure).
fn fuzz_one(crate_dir: &Path, logs: &Path, target: &str, seconds: u64) -> Result<()> {
    let log = logs.join(format!("{target}.log"));
    eprintln!("xtask: fuzzing {target} for {seconds} s (log: {})", log.display());
    let out = std::fs::File::create(&log)?;
    let result = run_cmd(
        Command::new("cargo")
            .current_dir(crate_dir)
            .args(["+nightly", "fuzz", "run", target, "--"])
            .args([
                format!("-max_total_time={seconds}"),
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
    let mut err = std::io::stderr().lock();
    writeln!(err, "xtask: {target}:")?;
    for line in shown {
        writeln!(err, "  {line}")?;
    }
    result
}
