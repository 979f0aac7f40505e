//! Command-line interface (clap derive); the doc comments are the help text.

use clap::{Parser, Subcommand};

/// eBPF observability agent for LLM API proxies.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "info", env = "METRICS_AGENT_LOG")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach to a proxy and serve its metrics until SIGINT or SIGTERM.
    Run(crate::run_args::RunArgs),
    /// Print the effective configuration (file < environment < flags) as TOML.
    Config(crate::run_args::RunArgs),
    /// Read stored metrics (1m/1h/1d rollups) from the database.
    Query(crate::store_cli::QueryArgs),
    /// Create or upgrade the database schema (also done by `run` at start).
    Migrate(crate::store_cli::DbArgs),
    /// Store test results and read precision, recall and F-scores.
    #[command(subcommand)]
    Fscore(crate::store_cli::FscoreCommand),
}
