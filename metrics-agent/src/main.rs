//! `metrics-agent`: attaches to an unmodified LLM API proxy with eBPF and
//! serves exact per-provider request, failure, byte and latency counters.
//! The work is done by the library (`lib.rs`); this parses the command line.

use clap::Parser;
use metrics_agent::{
    cli::{Cli, Command},
    config, run, store_cli,
    zeroing::ZeroOnFree,
};

/// Freed heap blocks are zeroed: payloads and API keys do not linger (zeroing.rs).
#[global_allocator]
static ALLOCATOR: ZeroOnFree = ZeroOnFree;

fn main() {
    metrics_agent::heap::tune();
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(cli.log_level.as_str()))
        .format_timestamp_millis()
        .init();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Config(args) => config::print_effective(args),
        Command::Query(args) => store_cli::query(args),
        Command::Migrate(args) => store_cli::migrate(args),
        Command::Fscore(command) => store_cli::fscore(command),
    };
    if let Err(err) = result {
        // One line: the context chain, outermost first.
        let chain: Vec<String> = err.chain().map(ToString::to_string).collect();
        eprintln!("error: {}", chain.join(": "));
        std::process::exit(1);
    }
}
