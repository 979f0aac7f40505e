//! `metrics-agent`: attaches to an unmodified LLM API proxy with eBPF and
//! serves exact per-provider request, failure, byte and latency counters.

mod attach_mode;
mod audit;
mod cli;
mod collector;
mod config;
mod export;
mod heap;
mod http;
mod kernel;
mod libc_symbols;
mod live;
mod preflight;
mod privilege;
mod proc_events;
mod providers;
mod records;
mod run;
mod secrets;
mod sockets;
mod store;
mod target;
mod zeroing;

/// Freed heap blocks are zeroed: payloads and API keys do not linger (zeroing.rs).
/// Unit tests use store::testing's counting allocator instead.
#[cfg(not(test))]
#[global_allocator]
static ALLOCATOR: zeroing::ZeroOnFree = zeroing::ZeroOnFree;

use clap::Parser;

fn main() {
    heap::tune();
    let cli = cli::Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(cli.log_level.as_str()))
        .format_timestamp_millis()
        .init();
    let result = match cli.command {
        cli::Command::Run(args) => run::run(args),
        cli::Command::Config(args) => config::print_effective(args),
        cli::Command::Query(args) => store::cli::query(args),
        cli::Command::Migrate(args) => store::cli::migrate(args),
        cli::Command::Fscore(command) => store::cli::fscore(command),
        cli::Command::BenchStorage { database_url, days, series, records } => {
            store::bench::run(&database_url, days, series, records)
        }
        cli::Command::BenchAudit { exchanges } => audit::bench::run(exchanges),
        cli::Command::BenchStream { clients, seconds } => live::bench::run(clients, seconds),
        cli::Command::BenchExport { records } => export::bench::run(records),
    };
    if let Err(err) = result {
        // One line: the context chain, outermost first.
        let chain: Vec<String> = err.chain().map(ToString::to_string).collect();
        eprintln!("error: {}", chain.join(": "));
        std::process::exit(1);
    }
}
