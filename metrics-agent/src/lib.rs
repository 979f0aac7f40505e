//! The `metrics-agent` library: attaches to an unmodified LLM API proxy with
//! eBPF and serves exact per-provider request, failure, byte and latency
//! counters. The binary (`main.rs`) only parses the command line and calls
//! [`cli::Command::run`]; the benchmarks (`benches/`) and the fuzz targets
//! (`fuzz/`) use the modules made public here. docs/architecture.md shows
//! the module layers and which may import which.

mod attach_mode;
pub mod audit;
pub mod cli;
mod collector;
mod config;
pub mod export;
pub mod http;
mod kernel;
mod libc_symbols;
pub mod live;
mod preflight;
mod privilege;
mod proc_events;
mod providers;
pub mod records;
mod run;
pub mod secrets;
mod sockets;
pub mod store;
mod target;
pub mod zeroing;
