//! Names and sizes of every BPF map. The kernel side declares its statics with
//! these exact identifiers (checked at compile time in `metrics-ebpf`).

/// Scalar hot-path counters, per CPU (`counters::*` are the slots).
pub const COUNTERS: &str = "COUNTERS";
/// Requests sent upstream, per provider slot, per CPU.
pub const PROVIDER_REQUESTS: &str = "PROVIDER_REQUESTS";
/// Upstream requests answered with status >= 400 or cut short, per provider slot.
pub const PROVIDER_FAILED: &str = "PROVIDER_FAILED";
/// Sum of upstream request durations in microseconds, per provider slot.
pub const PROVIDER_LATENCY_SUM_US: &str = "PROVIDER_LATENCY_SUM_US";
/// Upstream duration histogram: `provider * HIST_BUCKETS + bucket`.
pub const PROVIDER_HISTOGRAM: &str = "PROVIDER_HISTOGRAM";
/// Client-side request duration histogram (log2 microsecond buckets).
pub const REQUEST_HISTOGRAM: &str = "REQUEST_HISTOGRAM";
/// Client-side time-to-first-byte histogram (log2 microsecond buckets).
pub const TTFB_HISTOGRAM: &str = "TTFB_HISTOGRAM";
/// Uprobe hits per probe kind (`probes::HIT_*`), per CPU.
pub const PROBE_HITS: &str = "PROBE_HITS";
/// Traced processes: key tgid, value flags (`TARGET_SSL_SEEN`, set by the
/// kernel side once an SSL uprobe ran in the process; the agent inserts 0).
pub const TARGETS: &str = "TARGETS";
/// Configuration written by the agent before attaching (`config::*` slots).
pub const CONFIG: &str = "CONFIG";
/// Command names (`comm`) of `--exe` targets, to notice new processes at exec:
/// the basename given and the basename of the resolved file (they differ for
/// symlinks such as python3 -> python3.11).
pub const WATCH_COMM: &str = "WATCH_COMM";
pub const WATCH_COMM_ENTRIES: u32 = 2;
/// Resolved provider addresses: `ProviderAddr` -> provider slot.
pub const PROVIDER_ADDRS: &str = "PROVIDER_ADDRS";
/// Per (tgid, fd) connection state.
pub const CONNS: &str = "CONNS";
/// Arguments stashed at function entry, keyed by pid_tgid, read at return.
pub const CALLS: &str = "CALLS";
/// Per-CPU scratch space for copying user bytes.
pub const SCRATCH: &str = "SCRATCH";
/// Program array holding the parser's tail-call continuation.
pub const CONTINUE: &str = "CONTINUE";
/// The same for syscall-tracepoint mode (program arrays hold one program type).
pub const CONTINUE_SYSCALL: &str = "CONTINUE_SYSCALL";
/// The same for socket-tracepoint mode.
pub const CONTINUE_SOCKET: &str = "CONTINUE_SOCKET";
/// Kernel socket address -> the connection it carries (socket mode).
pub const SOCK_CONNS: &str = "SOCK_CONNS";
/// Captured payload chunks (`capture::ChunkHeader` + bytes).
pub const PAYLOADS: &str = "PAYLOADS";
/// Capture control (`capture::control` slots).
pub const CAPTURE: &str = "CAPTURE";
/// Per-CPU buffer in which a chunk event is assembled.
pub const CHUNK_BUFFER: &str = "CHUNK_BUFFER";
/// Slots of the `CONTINUE`/`CONTINUE_SYSCALL` program arrays.
pub const SLOT_PARSE: u32 = 0;
pub const SLOT_CAPTURE: u32 = 1;
/// Process lifecycle events (fork, exec, exit) for the agent.
pub const PROC_EVENTS: &str = "PROC_EVENTS";

pub const CONNS_MAX_ENTRIES: u32 = 65_536;
pub const CALLS_MAX_ENTRIES: u32 = 16_384;
pub const TARGETS_MAX_ENTRIES: u32 = 4_096;
pub const PROVIDER_ADDRS_MAX_ENTRIES: u32 = 1_024;
pub const PROC_EVENTS_BYTES: u32 = 64 * 1024;

/// Slots of the `CONFIG` array.
pub mod config {
    /// Byte offsets of `pid` and `clone_flags` in the `task_newtask`
    /// tracepoint record (read from tracefs: layouts differ between kernels).
    pub const NEWTASK_PID_OFFSET: u32 = 0;
    pub const NEWTASK_FLAGS_OFFSET: u32 = 2;
    /// Non-zero when new processes whose comm equals `WATCH_COMM` are reported.
    pub const WATCH_EXEC: u32 = 1;
    pub const SLOTS: u32 = 4;
}

/// Builds a `CONNS` key from a process id and a file descriptor.
#[inline(always)]
pub const fn conn_key(tgid: u32, fd: u32) -> u64 {
    ((tgid as u64) << 32) | fd as u64
}
