//! `cargo xtask`: the project's set-up, build, test, demo and benchmark
//! commands, so a fresh machine needs nothing but this repository.

mod bench;
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
    /// Set up, build and run the whole test suite (root: loads eBPF programs).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Set up, build and run the demo: mock providers, nginx, the agent, traffic.
    Demo {
        /// How long the traffic runs (0: until Ctrl-C).
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// Benchmarks: nginx with and without the agent, and a non-target's cost.
    Bench(bench::BenchArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::run(),
        Task::Build => setup::run().and_then(|()| build()),
        Task::Test { args } => setup::run().and_then(|()| build()).and_then(|()| test(&args)),
        Task::Demo { seconds } => setup::run().and_then(|()| build()).and_then(|()| demo(seconds)),
        Task::Bench(args) => setup::run().and_then(|()| build_release()).and_then(|()| bench::run(&args)),
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

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn build() -> Result<()> {
    run_cmd(cargo().args(["build", "--workspace", "--bins", "--tests"]))
}

fn build_release() -> Result<()> {
    run_cmd(cargo().args(["build", "--release", "-p", "metrics-agent"]))
}

fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{what} loads eBPF programs and must run as root (sudo -E cargo xtask ...)");
    }
    Ok(())
}

fn test(args: &[String]) -> Result<()> {
    require_root("the test suite")?;
    run_cmd(cargo().args(["test", "--workspace"]).args(args))
}

fn demo(seconds: u64) -> Result<()> {
    require_root("the demo")?;
    run_cmd(Command::new("target/debug/demo").args(["--seconds", &seconds.to_string()]))
}
