//! The audit benchmark (`cargo bench -p metrics-agent --bench audit`): how many captured events and bytes one core
//! turns into records, on a synthetic mix of JSON and SSE exchanges cut into
//! ring-buffer-sized chunks (used by `cargo xtask bench`).

use std::time::Instant;

use metrics_common::{
    capture::{CHUNK_BYTES, ChunkHeader, DIR_READ, DIR_WRITE, KIND_DATA},
    conn::SIDE_CLIENT,
};

use metrics_agent::audit::pipeline::Pipeline;

/// The agent binary's allocator, so that the numbers are the agent's.
#[global_allocator]
static ALLOCATOR: metrics_agent::zeroing::ZeroOnFree = metrics_agent::zeroing::ZeroOnFree;

/// The events of `exchanges` exchanges on one keep-alive connection.
fn workload(exchanges: usize) -> Vec<(ChunkHeader, Vec<u8>)> {
    let body = format!(r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{}"}}]}}"#, "q".repeat(400));
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.openai.com\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let json = format!(
        r#"{{"id":"x","model":"gpt-4o-mini","choices":[{{"message":{{"content":"{}"}}}}],"usage":{{"prompt_tokens":12,"completion_tokens":34}}}}"#,
        "a".repeat(900)
    );
    let plain =
        format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}", json.len());
    let mut sse =
        String::from("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n");
    for i in 0..20 {
        let e = format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"token {i}\"}}}}]}}\n\n");
        sse.push_str(&format!("{:x}\r\n{e}\r\n", e.len()));
    }
    sse.push_str("0\r\n\r\n");
    let mut events = Vec::new();
    let mut offsets = [0u64; 2];
    for i in 0..exchanges {
        let response = if i % 2 == 0 { &plain } else { &sse };
        for (direction, bytes) in [(DIR_READ, request.as_bytes()), (DIR_WRITE, response.as_bytes())] {
            for chunk in bytes.chunks(CHUNK_BYTES) {
                let slot = direction as usize;
                let header = ChunkHeader {
                    conn_id: 1,
                    offset: offsets[slot],
                    ts_ns: i as u64 * 1_000_000,
                    direction,
                    side: SIDE_CLIENT,
                    kind: KIND_DATA,
                    len: chunk.len() as u32,
                    ..ChunkHeader::default()
                };
                offsets[slot] += chunk.len() as u64;
                events.push((header, chunk.to_vec()));
            }
        }
    }
    events
}

fn run(exchanges: usize) -> anyhow::Result<()> {
    let events = workload(exchanges);
    let bytes: usize = events.iter().map(|(_, b)| b.len()).sum();
    let mut pipeline = Pipeline::new(256 * 1024);
    let start = Instant::now();
    let cpu_start = thread_cpu_seconds();
    let mut records = 0usize;
    for (header, data) in &events {
        records += pipeline.on_event(header, data).len();
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu_secs = thread_cpu_seconds() - cpu_start;
    anyhow::ensure!(records == exchanges, "expected {exchanges} records, got {records}");
    println!(
        "{{\"events\":{},\"bytes\":{bytes},\"records\":{records},\"seconds\":{secs:.3},\"events_per_second\":{:.0},\"megabytes_per_second\":{:.1},\"records_per_second\":{:.0},\"cpu_seconds\":{cpu_secs:.3},\"cpu_us_per_record\":{:.2}}}",
        events.len(),
        events.len() as f64 / secs,
        bytes as f64 / secs / 1e6,
        records as f64 / secs,
        cpu_secs * 1e6 / records as f64
    );
    Ok(())
}

/// CPU time of this thread: on a shared machine, less disturbed by other
/// processes than wall time (comparisons still alternate runs).
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Audit path parsing throughput on synthetic events.
#[derive(clap::Parser)]
struct Args {
    /// Keep-alive exchanges in the workload (half JSON, half SSE).
    #[arg(long, default_value_t = 20_000)]
    exchanges: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    run(args.exchanges)
}
