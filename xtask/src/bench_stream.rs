//! `cargo xtask bench stream`: the live stream's fan-out, 1 client and then
//! 500 WebSocket clients in one run (the agent's `stream` benchmark program,
//! optimised, in-process: no root needed). Prints a Markdown report and writes
//! target/bench/stream.md.

use anyhow::Result;

pub const CLIENTS: usize = 500;

pub fn run(seconds: u64) -> Result<()> {
    let report = crate::agent_bench("stream", &["--clients", &CLIENTS.to_string(), "--seconds", &seconds.to_string()])?;
    print!("{report}");
    let dir = crate::target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("stream.md"), report.as_bytes())?;
    Ok(())
}
