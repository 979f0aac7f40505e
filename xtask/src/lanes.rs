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
//! one block when it ends. A binary runs in its own process group: past its
//! deadline (`deadline`) the whole group (the binary and the agents, nginx
//! and mocks it started) is killed and the binary counts as failed. A
//! failing binary (or one that cannot be started) fails the run but stops
//! neither lane, and the run ends with one summary line over all binaries.

use std::{
    collections::HashMap,
    io::Write,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicI32, Ordering},
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

/// How many of the log's last lines each "still running" line shows.
const PROGRESS_TAIL: usize = 20;

/// No binary is killed sooner than this, however short it is expected to be.
const MIN_DEADLINE: Duration = Duration::from_secs(600);

/// How long a binary may run before its process group is killed: three
/// times its expected time, at least `MIN_DEADLINE`. A hung test then ends
/// the run with its log printed, well before CI's own 90-minute limit.
fn deadline(expected_seconds: u64) -> Duration {
    Duration::from_secs(expected_seconds.saturating_mul(3)).max(MIN_DEADLINE)
}

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

    /// Adds the counts of one binary (or one `cargo test`) that succeeded
    /// or not (`ok`). One that failed without reporting a failed test (killed
    /// by a signal or its deadline, a crash outside a test, no `test result:`
    /// line) counts as one failure, so the summary never says 0 failed then.
    pub fn add_binary(&mut self, binary: Counts, ok: bool) {
        self.passed += binary.passed;
        self.failed += binary.failed;
        self.ignored += binary.ignored;
        if !ok && binary.failed == 0 {
            self.failed += 1;
        }
    }

    /// The run's last line, naming the binaries that failed.
    pub fn summary(&self, failed_binaries: &[&str]) -> String {
        let mut line = format!("summary: {} passed, {} failed, {} skipped", self.passed, self.failed, self.ignored);
        if !failed_binaries.is_empty() {
            line.push_str(&format!(" (failed binaries: {})", failed_binaries.join(", ")));
        }
        line
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
    kill_groups_on_signal();
    let results: Vec<Vec<(Outcome, Counts)>> = std::thread::scope(|scope| {
        let handles: Vec<_> =
            lanes.into_iter().enumerate().map(|(i, lane)| scope.spawn(move || run_lane(i + 1, lane, true))).collect();
        handles.into_iter().map(|h| h.join().expect("a lane panicked")).collect()
    });
    let mut counts = Counts::default();
    let mut outcomes = Vec::new();
    for (outcome, c) in results.into_iter().flatten() {
        counts.add_binary(c, outcome.ok);
        outcomes.push(outcome);
    }
    for lane in 1..=LANES {
        let times: Vec<String> =
            outcomes.iter().filter(|o| o.lane == lane).map(|o| format!("{} {} s", o.name, o.seconds)).collect();
        eprintln!("xtask: lane {lane}: {}", times.join(", "));
    }
    eprintln!("xtask: the test phase took {} s", started.elapsed().as_secs());
    let failed: Vec<&str> = outcomes.iter().filter(|o| !o.ok).map(|o| o.name.as_str()).collect();
    println!("{}", counts.summary(&failed));
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

/// Runs a lane's jobs one after another; with `echo`, a job's output is
/// printed in one block when it ends (not in unit tests: their jobs' result
/// lines would count in the test binary's own). A job that cannot be
/// started or watched counts as failed and the lane carries on.
fn run_lane(lane: usize, jobs: Vec<Job>, echo: bool) -> Vec<(Outcome, Counts)> {
    let mut done = Vec::new();
    for mut job in jobs {
        eprintln!("xtask: lane {lane} runs {} (log: {})", job.name, job.log.display());
        let started = Instant::now();
        let limit = deadline(job.expected);
        let (ok, verdict) = match run_job(lane, &mut job, limit, PROGRESS_EVERY) {
            Ok(Ended::Exited(status)) => (status.success(), status.to_string()),
            Ok(Ended::TimedOut) => (false, format!("killed at its deadline of {} s", limit.as_secs())),
            Err(e) => (false, format!("{e:#}")),
        };
        let seconds = started.elapsed().as_secs();
        let text = std::fs::read_to_string(&job.log).unwrap_or_default();
        let mut counts = Counts::default();
        text.lines().for_each(|line| counts.add_line(line));
        let verdict = if ok { "ok".to_string() } else { format!("FAILED ({verdict})") };
        if echo {
            let mut out = std::io::stdout().lock();
            // Nothing to do if stdout is gone; the summary still counts the job.
            let _ = writeln!(out, "\n==== {} (lane {lane}, {seconds} s): {verdict}", job.name)
                .and_then(|()| write!(out, "{text}"))
                .and_then(|()| writeln!(out, "==== end of {}", job.name));
        }
        done.push((Outcome { name: job.name, lane, seconds, ok }, counts));
    }
    done
}

/// How a started job ended.
enum Ended {
    Exited(ExitStatus),
    /// Its process group was killed at `deadline`.
    TimedOut,
}

/// The process group of the job each lane is running (0: none), for
/// `kill_groups_on_signal`.
static RUNNING_GROUPS: [AtomicI32; LANES] = [const { AtomicI32::new(0) }; LANES];

/// A running job's process group: killed when dropped before the job was
/// reaped (xtask panics or gives up on it), so no test's agents outlive it.
struct Group<'a> {
    child: &'a mut Child,
    lane: usize,
    reaped: bool,
}

impl<'a> Group<'a> {
    fn new(child: &'a mut Child, lane: usize) -> Self {
        RUNNING_GROUPS[lane - 1].store(child.id() as i32, Ordering::SeqCst);
        Group { child, lane, reaped: false }
    }

    /// SIGKILL to every process of the group, then reaps the binary.
    fn kill(&mut self) {
        // The binary is not reaped yet, so its pid still names its group.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
        self.reaped = true;
    }
}

impl Drop for Group<'_> {
    fn drop(&mut self) {
        RUNNING_GROUPS[self.lane - 1].store(0, Ordering::SeqCst);
        if !self.reaped {
            self.kill();
        }
    }
}

/// Starts a job in its own process group with its output in its log, and
/// waits for it, at most `limit`; says every `progress_every` that it still
/// runs, with the end of its log.
fn run_job(lane: usize, job: &mut Job, limit: Duration, progress_every: Duration) -> Result<Ended> {
    let log = std::fs::File::create(&job.log).with_context(|| format!("cannot create {}", job.log.display()))?;
    let mut child = job
        .cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot run {}", job.name))?;
    let mut group = Group::new(&mut child, lane);
    let started = Instant::now();
    let mut said = started;
    loop {
        if let Some(status) = group.child.try_wait()? {
            group.reaped = true;
            return Ok(Ended::Exited(status));
        }
        if started.elapsed() >= limit {
            eprintln!("xtask: lane {lane}: {} passed its deadline of {} s: killing it", job.name, limit.as_secs());
            group.kill();
            return Ok(Ended::TimedOut);
        }
        if said.elapsed() >= progress_every {
            said = Instant::now();
            let tail = log_tail(&job.log, PROGRESS_TAIL);
            eprintln!(
                "xtask: lane {lane}: {} still running after {} s; its log ends:",
                job.name,
                started.elapsed().as_secs()
            );
            tail.lines().for_each(|line| eprintln!("    {line}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The last `lines` lines of a log.
fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// On SIGINT, SIGTERM or SIGHUP (Ctrl-C, a cancelled CI job), kills the
/// running jobs' process groups before xtask dies: they are in groups of
/// their own, so the signal to xtask's group no longer reaches them.
fn kill_groups_on_signal() {
    extern "C" fn on_signal(signal: libc::c_int) {
        for group in &RUNNING_GROUPS {
            let pgid = group.load(Ordering::SeqCst);
            if pgid > 0 {
                // kill, signal and raise are async-signal-safe.
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
        }
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        unsafe { libc::signal(signal, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t) };
    }
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
        assert_eq!(c.summary(&[]), "summary: 15 passed, 2 failed, 1 skipped");
    }

    #[test]
    fn a_binary_that_failed_without_a_failed_test_counts_one_failure() {
        let mut total = Counts::default();
        total.add_binary(Counts { passed: 4, failed: 0, ignored: 1 }, true);
        // Killed by a signal after 3 passed tests: no `test result:` line.
        total.add_binary(Counts { passed: 3, failed: 0, ignored: 0 }, false);
        // Two failed tests are two failures, not three.
        total.add_binary(Counts { passed: 1, failed: 2, ignored: 0 }, false);
        // Could not be started at all.
        total.add_binary(Counts::default(), false);
        assert_eq!(total, Counts { passed: 8, failed: 4, ignored: 1 });
        assert_eq!(
            total.summary(&["tests/tests/e2e.rs", "doc tests"]),
            "summary: 8 passed, 4 failed, 1 skipped (failed binaries: tests/tests/e2e.rs, doc tests)"
        );
    }

    #[test]
    fn the_deadline_is_three_times_the_expected_time_and_at_least_ten_minutes() {
        assert_eq!(deadline(756), Duration::from_secs(2268));
        assert_eq!(deadline(201), Duration::from_secs(603));
        assert_eq!(deadline(200), Duration::from_secs(600));
        assert_eq!(deadline(DEFAULT_SECONDS), Duration::from_secs(600));
        assert_eq!(deadline(u64::MAX), Duration::from_secs(u64::MAX));
        // The longest suite still ends well before CI's 90-minute limit.
        let longest = EXPECTED_SECONDS.iter().map(|(_, s)| *s).max().unwrap();
        assert!(deadline(longest) < Duration::from_secs(60 * 60));
    }

    /// A job with `script` as its shell command, expected to take `expected` s.
    fn shell_job(name: &str, script: &str, expected: u64) -> Job {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        let log = std::env::temp_dir().join(format!("xtask-lanes-{}-{name}.log", std::process::id()));
        Job { name: name.into(), log, cmd, expected }
    }

    #[test]
    fn a_job_that_cannot_start_is_failed_and_the_lane_carries_on() {
        let mut missing = shell_job("missing", "", 1);
        missing.cmd = Command::new("/nonexistent/test-binary");
        let ok = shell_job("ok", "echo 'test result: ok. 2 passed; 0 failed; 0 ignored'", 1);
        let crash = shell_job("crash", "kill -9 $$", 1);
        let done = run_lane(1, vec![missing, ok, crash], false);
        let seen: Vec<(&str, bool, Counts)> = done.iter().map(|(o, c)| (o.name.as_str(), o.ok, *c)).collect();
        assert_eq!(
            seen,
            [
                ("missing", false, Counts::default()),
                ("ok", true, Counts { passed: 2, failed: 0, ignored: 0 }),
                ("crash", false, Counts::default()),
            ]
        );
        for (o, _) in &done {
            let _ = std::fs::remove_file(std::env::temp_dir().join(format!(
                "xtask-lanes-{}-{}.log",
                std::process::id(),
                o.name
            )));
        }
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

    #[test]
    fn a_job_past_its_deadline_is_killed_with_the_processes_it_started() {
        // The job starts a child that would outlive it, then hangs.
        let dir = std::env::temp_dir().join(format!("xtask-lanes-deadline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pid_file = dir.join("child.pid");
        let script = format!("sleep 1000 & echo $! > {}; echo started; sleep 1000", pid_file.display());
        let mut job = shell_job("hang", &script, 1);
        let started = Instant::now();
        let ended = run_job(2, &mut job, Duration::from_secs(2), Duration::from_millis(500)).unwrap();
        assert!(matches!(ended, Ended::TimedOut));
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
        let child: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        // The orphaned sleep was killed too (and reaped by init, or a zombie at most).
        let gone = (0..50).any(|_| {
            let state = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let dead = state.is_empty() || state.split(' ').nth(2) == Some("Z");
            if !dead {
                std::thread::sleep(Duration::from_millis(100));
            }
            dead
        });
        assert!(gone, "the job's child {child} still runs");
        assert_eq!(log_tail(&job.log, 20), "started");
        assert_eq!(RUNNING_GROUPS[1].load(Ordering::SeqCst), 0);
        let _ = std::fs::remove_file(&job.log);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_log_tail_is_the_last_lines() {
        let log = std::env::temp_dir().join(format!("xtask-lanes-tail-{}.log", std::process::id()));
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, text).unwrap();
        assert_eq!(log_tail(&log, 3), "line 28\nline 29\nline 30");
        assert_eq!(log_tail(&log, 100).lines().count(), 30);
        assert_eq!(log_tail(Path::new("/nonexistent/log"), 3), "");
        let _ = std::fs::remove_file(&log);
    }
}
