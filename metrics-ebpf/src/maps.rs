//! Every map of the kernel side. The statics carry the names defined in
//! `metrics_common::maps`; `same_name` checks that at compile time.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use metrics_common::{
    conn::ConnState,
    counters,
    histogram::HIST_BUCKETS,
    maps as names,
    probes::HIT_KINDS,
    providers::{MAX_PROVIDERS, ProviderAddr},
};

use crate::scratch::{ChunkEvent, Scratch};

/// Arguments of an intercepted call, stashed at entry and read at return.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Call {
    pub fd: u32,
    pub kind: u32,
    /// Buffer, iovec array, or sockaddr pointer.
    pub ptr: u64,
    /// Number of iovecs (iovec calls).
    pub count: u64,
}

pub const CALL_READ_BUF: u32 = 1;
pub const CALL_WRITE_BUF: u32 = 2;
pub const CALL_READ_IOV: u32 = 3;
pub const CALL_WRITE_IOV: u32 = 4;
/// sendfile: bytes written from a file, only counted and skipped as body.
pub const CALL_SENDFILE: u32 = 5;
pub const CALL_ACCEPT: u32 = 6;
/// A plain read on an fd that is not (yet) a traced connection.
pub const CALL_READ_UNKNOWN: u32 = 7;
/// A receive whose bytes went elsewhere than a user buffer (splice,
/// io_uring): only counted, and skipped as body.
pub const CALL_READ_NOBUF: u32 = 8;

/// The connection a kernel socket carries, for socket calls whose fd the
/// socket tracepoints cannot see (io_uring, sendmmsg): its `CONNS` key and
/// `conn_id` (checked, since socket addresses are reused).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SockConn {
    pub key: u64,
    pub conn_id: u64,
}

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counters::COUNT, 0);
#[map]
pub static PROVIDER_REQUESTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_PROVIDERS, 0);
#[map]
pub static PROVIDER_FAILED: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_PROVIDERS, 0);
#[map]
pub static PROVIDER_LATENCY_SUM_US: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_PROVIDERS, 0);
#[map]
pub static PROVIDER_HISTOGRAM: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAX_PROVIDERS * HIST_BUCKETS, 0);
#[map]
pub static REQUEST_HISTOGRAM: PerCpuArray<u64> = PerCpuArray::with_max_entries(HIST_BUCKETS, 0);
#[map]
pub static TTFB_HISTOGRAM: PerCpuArray<u64> = PerCpuArray::with_max_entries(HIST_BUCKETS, 0);
#[map]
pub static PROBE_HITS: PerCpuArray<u64> = PerCpuArray::with_max_entries(HIT_KINDS, 0);
#[map]
pub static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(names::TARGETS_MAX_ENTRIES, 0);
#[map]
pub static CONFIG: Array<u32> = Array::with_max_entries(names::config::SLOTS, 0);
#[map]
pub static WATCH_COMM: Array<[u8; 16]> = Array::with_max_entries(names::WATCH_COMM_ENTRIES, 0);
#[map]
pub static PROVIDER_ADDRS: HashMap<ProviderAddr, u32> = HashMap::with_max_entries(names::PROVIDER_ADDRS_MAX_ENTRIES, 0);
#[map]
pub static CONNS: LruHashMap<u64, ConnState> = LruHashMap::with_max_entries(names::CONNS_MAX_ENTRIES, 0);
#[map]
pub static CALLS: LruHashMap<u64, Call> = LruHashMap::with_max_entries(names::CALLS_MAX_ENTRIES, 0);
#[map]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);
/// Tail-call targets of the uprobe programs (a program array holds programs
/// of one type): slot 0 `continue_response` (parsing), slot 1
/// `capture_payload`.
#[map]
pub static CONTINUE: ProgramArray = ProgramArray::with_max_entries(2, 0);
/// The same for syscall-tracepoint mode.
#[map]
pub static CONTINUE_SYSCALL: ProgramArray = ProgramArray::with_max_entries(2, 0);
/// The same for socket-tracepoint mode.
#[map]
pub static CONTINUE_SOCKET: ProgramArray = ProgramArray::with_max_entries(2, 0);
#[map]
pub static SOCK_CONNS: LruHashMap<u64, SockConn> = LruHashMap::with_max_entries(names::CONNS_MAX_ENTRIES, 0);
#[map]
pub static PAYLOADS: RingBuf = RingBuf::with_byte_size(metrics_common::capture::PAYLOADS_BYTES, 0);
#[map]
pub static CAPTURE: Array<u32> = Array::with_max_entries(metrics_common::capture::control::SLOTS, 0);
#[map]
pub static CHUNK_BUFFER: PerCpuArray<ChunkEvent> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub static PROC_EVENTS: RingBuf = RingBuf::with_byte_size(names::PROC_EVENTS_BYTES, 0);

pub const fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

macro_rules! check_names {
    ($($static:ident),*) => { $(const _: () = assert!(same_name(stringify!($static), names::$static));)* };
}
check_names!(
    COUNTERS,
    PROVIDER_REQUESTS,
    PROVIDER_FAILED,
    PROVIDER_LATENCY_SUM_US,
    PROVIDER_HISTOGRAM,
    REQUEST_HISTOGRAM,
    TTFB_HISTOGRAM,
    PROBE_HITS,
    TARGETS,
    CONFIG,
    WATCH_COMM,
    PROVIDER_ADDRS,
    CONNS,
    CALLS,
    SCRATCH,
    PROC_EVENTS,
    CONTINUE,
    CONTINUE_SYSCALL,
    CONTINUE_SOCKET,
    SOCK_CONNS,
    PAYLOADS,
    CAPTURE,
    CHUNK_BUFFER
);

/// Adds `value` to slot `index` of a per-CPU counter array. Not atomic (the
/// BPF target has no 64-bit atomics in Rust's core): exact as long as two
/// programs do not interleave on one CPU, which uprobe programs (migration
/// disabled, no preemption outside the kernel's full-preemption mode) do not.
#[inline(always)]
pub fn add(map: &PerCpuArray<u64>, index: u32, value: u64) {
    if let Some(slot) = map.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot, valid for the program's run.
        unsafe { *slot += value };
    }
}

/// True when the current process is a traced target.
#[inline(always)]
pub fn is_target(tgid: u32) -> bool {
    // SAFETY: the value is only tested for presence.
    unsafe { TARGETS.get(&tgid).is_some() }
}

/// `TARGETS` value bit: an OpenSSL uprobe (an SSL call, a handshake, a
/// `BIO_write`) has run in this process, so its threads may be inside SSL
/// calls. Until then `SSL_CALLS`, `SSL_HANDSHAKES` and `RECORDS_WRITTEN`
/// hold nothing of it and its socket calls skip the SSL bookkeeping (a
/// clear-text proxy linked with libssl never pays it). Set only by the
/// kernel side (the agent inserts targets with 0), never cleared while the
/// process is a target.
pub const TARGET_SSL_SEEN: u32 = 1;

/// The `TARGETS` value of a traced process (its `TARGET_*` bits), `None`
/// when it is not a target: presence and flags in one lookup.
#[inline(always)]
pub fn target_flags(tgid: u32) -> Option<u32> {
    // SAFETY: the value is copied.
    unsafe { TARGETS.get(&tgid) }.copied()
}

/// Marks target `tgid` as one whose SSL calls are seen (`TARGET_SSL_SEEN`);
/// false when it is not a target. The bit is only ever set, so concurrent
/// writers on other CPUs agree.
#[inline(always)]
pub fn note_ssl_target(tgid: u32) -> bool {
    let Some(flags) = TARGETS.get_ptr_mut(&tgid) else { return false };
    // SAFETY: a valid map value pointer for the duration of the program.
    unsafe {
        if *flags & TARGET_SSL_SEEN == 0 {
            *flags |= TARGET_SSL_SEEN;
        }
    }
    true
}

#[inline(always)]
pub fn config(slot: u32) -> u32 {
    CONFIG.get(slot).copied().unwrap_or(0)
}

/// A slot of the agent's capture switches (`CAPTURE`, slots in
/// `metrics_common::capture::control`).
pub fn capture_control(slot: u32) -> u32 {
    CAPTURE.get(slot).copied().unwrap_or(0)
}
