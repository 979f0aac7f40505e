//! The flags of `run` and `config` (clap derive; the doc comments are the
//! help text), the top layer of the configuration: file < environment <
//! these flags (`config`).

use std::{net::SocketAddr, path::PathBuf};

use clap::Args;

/// Settings of `run`; each may also come from the `--config` file.
#[derive(Debug, Args, Clone, Default)]
pub struct RunArgs {
    /// Trace every process running this executable, including ones started later.
    #[arg(long, env = "METRICS_AGENT_EXE", conflicts_with = "pid")]
    pub exe: Option<PathBuf>,
    /// Trace this process and the processes it forks.
    #[arg(long, env = "METRICS_AGENT_PID")]
    pub pid: Option<u32>,
    /// An upstream provider as NAME=HOST:PORT (repeatable). Hostnames are
    /// resolved at start and re-resolved periodically.
    #[arg(long = "provider", value_name = "NAME=HOST:PORT")]
    pub providers: Vec<String>,
    /// TOML configuration file with the same settings.
    #[arg(long, env = "METRICS_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address of the metrics endpoint [default: 127.0.0.1:9464].
    #[arg(long, env = "METRICS_AGENT_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// How the data path is attached: `sockets` (socket tracepoints: the
    /// cheapest, every runtime), `uprobes` (libc uprobes scoped to the
    /// targets), `syscalls` (syscall tracepoints), or `auto` (default:
    /// `sockets` where the kernel has them, else `uprobes`).
    #[arg(long, value_enum, env = "METRICS_AGENT_ATTACH")]
    pub attach: Option<crate::attach_mode::AttachMode>,
    /// Capture request and response payloads (audit path) and print one JSON
    /// record per LLM exchange on standard output. Headers (API keys) and
    /// prompt text are never printed.
    #[arg(long, env = "METRICS_AGENT_PRINT_REQUESTS")]
    pub print_requests: bool,
    /// Turn the audit path off: no payload capture, no per-request records
    /// (tokens, cost, models); only the exact hot-path counters remain.
    #[arg(long, env = "METRICS_AGENT_NO_AUDIT", conflicts_with = "print_requests")]
    pub no_audit: bool,
    /// Capture one exchange in N at least, 1 to 65535 [default: 1]; raised under load up to `max_sample_every`.
    #[arg(long, value_name = "N", env = "METRICS_AGENT_SAMPLE_EVERY")]
    pub sample_every: Option<u32>,
    /// Bytes captured per request or response at most, in KiB, 1 to 65536 [default: 256].
    #[arg(long, value_name = "KIB", env = "METRICS_AGENT_MESSAGE_CAP_KIB")]
    pub message_cap_kib: Option<u32>,
    /// Application id put on every record of this agent's target.
    #[arg(long, env = "METRICS_AGENT_APPLICATION_ID")]
    pub application_id: Option<String>,
    /// Model price table layered over the built-in one: this project's TOML
    /// (USD per million tokens) or a LiteLLM price-map JSON file.
    #[arg(long, value_name = "FILE", env = "METRICS_AGENT_PRICES")]
    pub prices: Option<PathBuf>,
    /// Where records are stored: sqlite:///PATH or postgres://USER@HOST/DB
    /// [default: sqlite:///var/lib/metrics-agent/metrics.db].
    #[arg(long, env = "METRICS_AGENT_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Store nothing (no database is opened; wins over --database-url).
    #[arg(long, env = "METRICS_AGENT_NO_STORAGE")]
    pub no_storage: bool,
    /// Agent id written on every stored row, after the hostname (HOST/ID).
    #[arg(long, env = "METRICS_AGENT_AGENT_ID")]
    pub agent_id: Option<String>,
    /// Size of the payload ring buffer in KiB, a power of two >= 4 [default: 16384].
    #[arg(long, value_name = "KIB", env = "METRICS_AGENT_CAPTURE_RING_KIB")]
    pub capture_ring_kib: Option<u32>,
}
