//! `cargo xtask`: the project's set-up, build, test, demo and benchmark
//! commands, so a fresh machine needs nothing but this repository.

mod bench;
mod bench_audit;
mod bench_exporters;
mod bench_rig;
mod bench_soak;
mod bench_storage;
mod bench_stream;
mod fuzz;
mod lanes;
mod setup;

use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (idempotent, quick when done).
    Setup,
    /// Set up and build the agent and the test programs.
    Build,
    /// Set up, build and run the whole test suite (root: loads eBPF programs),
    /// then fuzz the parsers for a bounded time.
    Test {
        /// Seconds each fuzz target runs after the tests (0: no fuzzing).
        #[arg(long, default_value_t = 20)]
        fuzz_seconds: u64,
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Fuzz the audit path's parsers (cargo fuzz, libFuzzer).
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Set up, build and run the demo: mock providers, nginx, the agent, traffic.
    Demo {
        /// How long the traffic runs (0: until Ctrl-C).
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// Benchmarks: nginx with and without the agent, and a non-target's cost.
    Bench(bench::BenchArgs),
    /// The traced target of `bench audit` (a minimal keep-alive proxy).
    #[command(hide = true)]
    LoopbackProxy {
        #[arg(long)]
        listen: u16,
        #[arg(long)]
        upstream: u16,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::run(),
        Task::Build => setup::run().and_then(|()| build()),
        Task::Test { fuzz_seconds, args } => setup::run()
            .and_then(|()| build())
            .and_then(|()| if args.is_empty() { lint() } else { Ok(()) })
            .and_then(|()| test(&args))
            .and_then(|()| if fuzz_seconds > 0 && args.is_empty() { fuzz::run(fuzz_seconds) } else { Ok(()) }),
        Task::Fuzz { seconds } => setup::run().and_then(|()| fuzz::run(seconds)),
        Task::Demo { seconds } => setup::run().and_then(|()| build()).and_then(|()| demo(seconds)),
        Task::Bench(args) => setup::run().and_then(|()| build_release()).and_then(|()| bench::run(&args)),
        Task::LoopbackProxy { listen, upstream } => bench_audit::loopback_proxy(listen, upstream),
    };
    if let Err(e) = result {
        let chain: Vec<String> = e.chain().map(ToString::to_string).collect();
        eprintln!("xtask: {}", chain.join(": "));
        std::process::exit(1);
    }
}

pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

pub(crate) fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn build() -> Result<()> {
    run_cmd(cargo().args(["build", "--workspace", "--bins", "--tests"]))
}

/// The lints CI enforces: formatting (the workspace and the fuzz crate, which
/// is a workspace of its own), then clippy with every warning an error. Clippy
/// covers the host crates; the kernel programs (`metrics-ebpf`, compiled only
/// for the BPF target) and the fuzz targets (nightly, libFuzzer) are not linted
/// by it (docs/architecture.md, *Lints*).
fn lint() -> Result<()> {
    run_cmd(cargo().args(["fmt", "--all", "--check"])).context("run `cargo fmt --all` to format the tree")?;
    run_cmd(cargo().args(["fmt", "--all", "--check", "--manifest-path", "metrics-agent/fuzz/Cargo.toml"]))
        .context("run `cargo fmt --all --manifest-path metrics-agent/fuzz/Cargo.toml` to format the fuzz targets")?;
    run_cmd(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))
        .context("fix the clippy findings above")
}

/// Runs one of the agent's benchmark programs (`metrics-agent/benches/NAME.rs`,
/// optimised; cargo's and the program's messages go to standard error) and
/// returns what it printed on standard output.
pub(crate) fn agent_bench(name: &str, args: &[&str]) -> Result<String> {
    let out = cargo()
        .args(["bench", "-p", "metrics-agent", "--bench", name, "--"])
        .args(args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run cargo bench")?;
    if !out.status.success() {
        bail!("the {name} benchmark failed ({}): see its messages above", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn build_release() -> Result<()> {
    run_cmd(cargo().args(["build", "--release", "-p", "metrics-agent"]))
}

fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{what} loads eBPF programs and must run as root (e.g. sudo env PATH=\"$PATH\" cargo xtask ...)");
    }
    Ok(())
}

/// Runs the tests: every test binary, two at a time (`lanes`), or, with
/// `args` (e.g. a test name filter), `cargo test --workspace ARGS`. Either
/// ends with one summary line over all test binaries.
fn test(args: &[String]) -> Result<()> {
    require_root("the test suite")?;
    let mut warm = warm_go_cache();
    let result = if args.is_empty() { lanes::run() } else { cargo_test(args) };
    if let Some(warm) = warm.as_mut() {
        let _ = warm.wait();
    }
    result
}

/// `cargo test --workspace ARGS`, echoing its output.
fn cargo_test(args: &[String]) -> Result<()> {
    use std::io::{BufRead, BufReader};
    let mut child = cargo()
        .args(["test", "--workspace"])
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot run cargo test")?;
    let mut counts = lanes::Counts::default();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        counts.add_line(&line);
    }
    let status = child.wait()?;
    // A crash with no failed test reported still counts one failure.
    let mut total = lanes::Counts::default();
    total.add_binary(counts, status.success());
    println!("{}", total.summary(&[]));
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    Ok(())
}

/// Starts `go-warm-cache` (tests/src/bin/go-warm-cache.rs) at the lowest
/// CPU priority: it compiles the suites' Go programs with each Go toolchain
/// into their build cache while the first suites run (mostly waiting on
/// agents, streams and polls), so the Go builds of the tests only link. On a
/// fresh clone that compiling (the standard library, once per toolchain)
/// otherwise happens inside the tests, in series with them. Nothing waits
/// for it but the end of the run; its failure is only reported.
fn warm_go_cache() -> Option<std::process::Child> {
    let binary = target_dir().join("debug/go-warm-cache");
    Command::new("nice")
        .args(["-n", "19"])
        .arg(&binary)
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| eprintln!("xtask: cannot start {} ({e}): the Go builds start cold", binary.display()))
        .ok()
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The cargo target directory.
pub fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(Into::into).unwrap_or_else(|| workspace_root().join("target"))
}

fn demo(seconds: u64) -> Result<()> {
    require_root("the demo")?;
    run_cmd(Command::new(target_dir().join("debug/demo")).args(["--seconds", &seconds.to_string()]))
}
