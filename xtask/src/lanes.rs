//! The test phase of `cargo xtask test`: every test binary that `cargo test
//! --workspace` runs, and the doc tests, in two lanes at once.
//!
//! The end-to-end suites spend most of their time waiting (agents starting,
//! streams, polls), so two of them at a time share CI's two cores well. Each
//! binary still runs exactly once, as cargo runs it: in its package's
//! directory, with `CARGO_MANIFEST_DIR`, `CARGO_MANIFEST_PATH` and the
//! package's `CARGO_BIN_EXE_*` set; the tests inside a binary keep their own
//! order (`serial()`). The binaries are dealt out longest first
//! (`EXPECTED_SECONDS`), each to the lane that is free sooner. No two suites
//! may share host-wide state: each starts its own nginx copies, databases and
//! ports (docs/architecture.md, *Test run*).
//!
//! A binary's output goes to `target/test-logs/NAME.log` and is printed in
//! one block when it ends. A failing binary fails the run but stops neither
//! lane, and the run ends with one summary line over all binaries.

use std::{
    collections::HashMap,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{cargo, target_dir, workspace_root};

/// How many binaries run at once.
const LANES: usize = 2;

/// Seconds each binary took on the 2-core CI machine, by source file (the
/// rest take a few seconds): only the split between the lanes uses them.
const EXPECTED_SECONDS: &[(&str, u64)] = &[
    ("tests/tests/e2e.rs", 756),
    ("tests/tests/go_tls.rs", 360),
    ("tests/tests/gateways.rs", 271),
    ("tests/tests/storage.rs", 271),
    ("tests/tests/exporters.rs", 173),
    ("tests/tests/http2.rs", 95),
    ("tests/tests/live.rs", 75),
    ("tests/tests/providers.rs", 72),
    ("tests/tests/security.rs", 72),
    ("metrics-agent/src/lib.rs", 60),
];

/// What a binary whose source is not in `EXPECTED_SECONDS` is taken to need.
const DEFAULT_SECONDS: u64 = 5;

/// How often a lane says which binary it is still waiting for.
const PROGRESS_EVERY: Duration = Duration::from_secs(300);

/// Passed, failed and ignored tests, summed over libtest's `test result:` lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl Counts {
    /// Adds the counts of `line` when it is a `test result:` line.
    pub fn add_line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else { return };
        let count = |word: &str| -> u64 {
            rest.split(';')
                .find_map(|part| {
                    part.trim()
                        .trim_start_matches("ok. ")
                        .trim_start_matches("FAILED. ")
                        .strip_suffix(word)
                        .and_then(|n| n.trim().parse().ok())
                })
                .unwrap_or(0)
        };
        self.passed += count(" passed");
        self.failed += count(" failed");
        self.ignored += count(" ignored");
    }

    fn add(&mut self, other: Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }

    /// The run's last line.
    pub fn summary(&self) -> String {
        format!("summary: {} passed, {} failed, {} skipped", self.passed, self.failed, self.ignored)
    }
}

/// One command of the test phase: a test binary, or cargo's doc tests.
struct Job {
    /// The source file (`tests/tests/e2e.rs`), as cargo's `Running` line names it.
    name: String,
    log: PathBuf,
    cmd: Command,
    expected: u64,
}

/// How a job went.
struct Outcome {
    name: String,
    lane: usize,
    seconds: u64,
    ok: bool,
}

/// Builds the test binaries, runs them in `LANES` lanes, prints the summary
/// line and fails when any binary failed.
pub fn run() -> Result<()> {
    let logs = target_dir().join("test-logs");
    std::fs::create_dir_all(&logs)?;
    let mut jobs = test_binaries(&logs)?;
    let mut doc = cargo();
    doc.current_dir(workspace_root()).args(["test", "--workspace", "--doc"]);
    jobs.push(Job { name: "doc tests".into(), log: logs.join("doc-tests.log"), cmd: doc, expected: 20 });
    let lanes = split(jobs);
    for (i, lane) in lanes.iter().enumerate() {
        let names: Vec<&str> = lane.iter().map(|j| j.name.as_str()).collect();
        let total: u64 = lane.iter().map(|j| j.expected).sum();
        eprintln!("xtask: lane {}: ~{total} s: {}", i + 1, names.join(", "));
    }
    let started = Instant::now();
    let results: Vec<Result<Vec<(Outcome, Counts)>>> = std::thread::scope(|scope| {
        let handles: Vec<_> =
            lanes.into_iter().enumerate().map(|(i, lane)| scope.spawn(move || run_lane(i + 1, lane))).collect();
        handles.into_iter().map(|h| h.join().expect("a lane panicked")).collect()
    });
    let mut counts = Counts::default();
    let mut outcomes = Vec::new();
    for lane in results {
        for (outcome, c) in lane? {
            counts.add(c);
            outcomes.push(outcome);
        }
    }
    for lane in 1..=LANES {
        let times: Vec<String> =
            outcomes.iter().filter(|o| o.lane == lane).map(|o| format!("{} {} s", o.name, o.seconds)).collect();
        eprintln!("xtask: lane {lane}: {}", times.join(", "));
    }
    eprintln!("xtask: the test phase took {} s", started.elapsed().as_secs());
    println!("{}", counts.summary());
    let failed: Vec<&str> = outcomes.iter().filter(|o| !o.ok).map(|o| o.name.as_str()).collect();
    if !failed.is_empty() {
        bail!("tests failed in {} (their output is above)", failed.join(", "));
    }
    Ok(())
}

/// The test executables `cargo test --workspace` would run (built now if
/// needed), each set up to run as cargo runs it.
fn test_binaries(logs: &Path) -> Result<Vec<Job>> {
    let out = cargo()
        .args(["test", "--workspace", "--no-run", "--message-format=json"])
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the tests failed ({})", out.status);
    }
    let artifacts: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["executable"].is_string())
        .collect();
    // `CARGO_BIN_EXE_NAME` of each package's binaries, by manifest.
    let mut bins: HashMap<&str, Vec<(&str, &str)>> = HashMap::new();
    for a in artifacts.iter().filter(|a| a["profile"]["test"] == false && a["target"]["kind"][0] == "bin") {
        let (Some(manifest), Some(name), Some(exe)) =
            (a["manifest_path"].as_str(), a["target"]["name"].as_str(), a["executable"].as_str())
        else {
            continue;
        };
        bins.entry(manifest).or_default().push((name, exe));
    }
    let root = workspace_root().canonicalize()?;
    let mut jobs = Vec::new();
    for a in artifacts.iter().filter(|a| a["profile"]["test"] == true) {
        let (Some(manifest), Some(exe), Some(src), Some(target)) = (
            a["manifest_path"].as_str(),
            a["executable"].as_str(),
            a["target"]["src_path"].as_str(),
            a["target"]["name"].as_str(),
        ) else {
            bail!("cargo described a test artifact without its paths: {a}");
        };
        let name = Path::new(src).strip_prefix(&root).unwrap_or(Path::new(src)).display().to_string();
        let kind = a["target"]["kind"][0].as_str().unwrap_or("test");
        let package_dir = Path::new(manifest).parent().context("a manifest path without a directory")?;
        let mut cmd = Command::new(exe);
        cmd.current_dir(package_dir).env("CARGO_MANIFEST_DIR", package_dir).env("CARGO_MANIFEST_PATH", manifest);
        for (bin, path) in bins.get(manifest).into_iter().flatten() {
            cmd.env(format!("CARGO_BIN_EXE_{bin}"), path);
        }
        let expected =
            EXPECTED_SECONDS.iter().find(|(src, _)| *src == name).map_or(DEFAULT_SECONDS, |(_, seconds)| *seconds);
        let log = logs.join(format!("{}-{target}-{kind}.log", package_dir.file_name().unwrap_or_default().display()));
        let name = if kind == "test" { name } else { format!("{name} (unit tests)") };
        jobs.push(Job { name, log, cmd, expected });
    }
    if jobs.is_empty() {
        bail!("cargo test --no-run listed no test binaries");
    }
    Ok(jobs)
}

/// Deals the jobs out longest first, each to the lane with the least
/// expected time so far; a lane runs its longest job first.
fn split(mut jobs: Vec<Job>) -> Vec<Vec<Job>> {
    jobs.sort_by(|a, b| b.expected.cmp(&a.expected).then_with(|| a.name.cmp(&b.name)));
    let mut lanes: Vec<Vec<Job>> = (0..LANES).map(|_| Vec::new()).collect();
    for job in jobs {
        let total = |lane: &Vec<Job>| lane.iter().map(|j| j.expected).sum::<u64>();
        let shortest = lanes.iter_mut().min_by_key(|lane| total(lane)).expect("LANES > 0");
        shortest.push(job);
    }
    lanes
}

/// Runs a lane's jobs one after another; a job's output is printed in one
/// block when it ends.
fn run_lane(lane: usize, jobs: Vec<Job>) -> Result<Vec<(Outcome, Counts)>> {
    let mut done = Vec::new();
    for mut job in jobs {
        eprintln!("xtask: lane {lane} runs {} (log: {})", job.name, job.log.display());
        let log = std::fs::File::create(&job.log)?;
        let started = Instant::now();
        let mut child = job
            .cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot run {}", job.name))?;
        let mut said = started;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if said.elapsed() >= PROGRESS_EVERY {
                said = Instant::now();
                eprintln!("xtask: lane {lane}: {} still running after {} s", job.name, started.elapsed().as_secs());
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let seconds = started.elapsed().as_secs();
        let text = std::fs::read_to_string(&job.log).unwrap_or_default();
        let mut counts = Counts::default();
        text.lines().for_each(|line| counts.add_line(line));
        let ok = status.success();
        let verdict = if ok { "ok".to_string() } else { format!("FAILED ({status})") };
        let mut out = std::io::stdout().lock();
        writeln!(out, "\n==== {} (lane {lane}, {seconds} s): {verdict}", job.name)?;
        write!(out, "{text}")?;
        writeln!(out, "==== end of {}", job.name)?;
        drop(out);
        done.push((Outcome { name: job.name, lane, seconds, ok }, counts));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_are_summed_and_other_lines_ignored() {
        let mut c = Counts::default();
        c.add_line("test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.1s");
        c.add_line("test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 9s");
        c.add_line("test a_test_named_test_result ... ok");
        assert_eq!(c, Counts { passed: 15, failed: 2, ignored: 1 });
        assert_eq!(c.summary(), "summary: 15 passed, 2 failed, 1 skipped");
    }

    #[test]
    fn the_longest_jobs_go_to_different_lanes() {
        let job =
            |name: &str, expected| Job { name: name.into(), log: PathBuf::new(), cmd: Command::new("true"), expected };
        let lanes = split(vec![job("c", 250), job("a", 700), job("d", 100), job("b", 400), job("e", 5)]);
        let names = |lane: &Vec<Job>| lane.iter().map(|j| j.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&lanes[0]), ["a", "e"]);
        assert_eq!(names(&lanes[1]), ["b", "c", "d"]);
    }
}
