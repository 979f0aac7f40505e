//! `cargo xtask bench stream`: the live stream's fan-out, 1 client and then
//! 500 WebSocket clients in one run (`metrics-agent bench-stream`, release
//! build, in-process: no root needed). Prints a Markdown report and writes
//! target/bench/stream.md.

use std::process::Command;

use anyhow::{Context, Result, bail};

pub const CLIENTS: usize = 500;

pub fn run(seconds: u64) -> Result<()> {
    let agent = crate::target_dir().join("release/metrics-agent");
    let out = Command::new(&agent)
        .args(["bench-stream", "--clients", &CLIENTS.to_string(), "--seconds", &seconds.to_string()])
        .output()
        .with_context(|| format!("cannot run {}", agent.display()))?;
    if !out.status.success() {
        bail!("bench-stream failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let report = String::from_utf8_lossy(&out.stdout);
    print!("{report}");
    let dir = crate::target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("stream.md"), report.as_bytes())?;
    Ok(())
}
