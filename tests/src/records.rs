//! The JSON records an agent started with `--print-requests` printed.

use std::time::{Duration, Instant};

use crate::harness::Agent;

/// The records of `side` (`client` or `upstream`) printed so far.
pub fn records(agent: &Agent, side: &str) -> Vec<serde_json::Value> {
    agent
        .log_text()
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["side"] == side)
        .collect()
}

/// Waits (20 s at most) until the agent printed at least this many records
/// of each side; panics with the agent's log otherwise.
pub fn wait_for_records(agent: &Agent, client: usize, upstream: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while records(agent, "client").len() < client || records(agent, "upstream").len() < upstream {
        assert!(Instant::now() < deadline, "records missing:\n{}", agent.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
}
