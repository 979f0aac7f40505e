//! The `metrics-agent` library: attaches to an unmodified LLM API proxy with
//! eBPF and serves exact per-provider request, failure, byte and latency
//! counters. The binary (`main.rs`) parses the command line and calls the
//! subcommand's entry (`run`, `config`, `store_cli`); the benchmarks (`benches/`) and the fuzz targets
//! (`fuzz/`) use the modules made public here. docs/architecture.md shows
//! the module layers and which may import which.

pub mod agent_stats;
mod attach_mode;
pub mod audit;
pub mod cli;
mod collector;
pub mod config;
mod cpu_time;
pub mod export;
pub mod gotls;
pub mod heap;
pub mod http;
mod kernel;
mod libc_symbols;
pub mod live;
mod preflight;
mod privilege;
mod proc_events;
pub mod records;
pub mod run;
pub mod run_args;
mod sockets;
pub mod stat_cells;
pub mod store;
pub mod store_cli;
mod target;
mod upstream_addresses;
pub mod zeroing;

// Moved into the audit core with the parsers that use it; `crate::secrets`
// paths stay as they were.
pub use metrics_audit_core::secrets;
