//! Payload capture for the audit path: the bytes of sampled requests and
//! their responses go to the agent through the `PAYLOADS` ring buffer, in
//! events of a `ChunkHeader` and at most `CHUNK_BYTES` bytes. The proxy is
//! never blocked: when the ring is full the event is dropped and counted.
//! Runs in its own program (tail-called after a data call), so the hot
//! path's counters never depend on it.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE},
    helpers::{bpf_probe_read_user, generated::bpf_probe_read_user as read_user_raw, generated::bpf_ringbuf_output},
};
use metrics_common::{
    capture::{CHUNK_BYTES, CHUNKS_PER_CALL, ChunkHeader, DIR_READ, DIR_WRITE, KIND_CLOSE, KIND_DATA, control},
    conn::{CONN_CAPTURE, CONN_SAMPLE_PENDING, CONN_SAMPLE_SHIFT, ConnState, PROTO_HTTP2, RESP_HAS_LENGTH},
    counters as c,
};

use crate::{
    ctx::CallReturn,
    maps::{CHUNK_BUFFER, CONNS, COUNTERS, PAYLOADS, SCRATCH, add, capture_control},
    record::{EV_BUDGET, framing_outcome},
    sampling::decide,
    scratch::{CaptureJob, ChunkEvent, Scratch},
};

/// Prepares the capture of a call's `n` bytes when the connection's current
/// exchange is sampled; returns true when `capture_payload` should run.
#[inline(always)]
pub fn prepare(
    scratch: *mut Scratch,
    conn: &mut ConnState,
    tgid: u32,
    fd: u32,
    iov: bool,
    ptr: u64,
    count: u64,
    n: u64,
    is_read: bool,
    request_direction: bool,
    response_flags: u32,
    now: u64,
) -> bool {
    let offset = if is_read { conn.read_offset } else { conn.write_offset };
    if is_read {
        conn.read_offset += n;
    } else {
        conn.write_offset += n;
    }
    let decide = conn.flags & CONN_SAMPLE_PENDING != 0;
    if (!decide && conn.flags & CONN_CAPTURE == 0) || capture_control(control::ENABLED) == 0 {
        return false;
    }
    let cap = (capture_control(control::MESSAGE_CAP_KIB) as u64) << 10;
    let done = if request_direction { conn.captured_request } else { conn.captured_response } as u64;
    // A response without Content-Length (chunked or close-delimited: how
    // streams are sent) is captured whole; the agent parses it as it comes.
    // An HTTP/2 connection is captured whole (HPACK needs every header block).
    let streamed = conn.proto == PROTO_HTTP2 || (!request_direction && response_flags & RESP_HAS_LENGTH == 0);
    let room = if streamed { n } else { cap.saturating_sub(done) };
    let take = if n < room { n } else { room };
    let total = done + take;
    let total = if total > u32::MAX as u64 { u32::MAX } else { total as u32 };
    if request_direction {
        conn.captured_request = total;
    } else {
        conn.captured_response = total;
    }
    if n == 0 {
        return false;
    }
    // A request that started in this call (its sampling decision is due)
    // whose request line began in earlier calls (held in `ConnState::pending`
    // until the method was whole, e.g. by Go's one-byte background read):
    // those bytes were captured, if at all, as the previous exchange's (not
    // past its cap, or not sampled), so they are sent again ahead of this
    // call's and the request is whole. The agent skips bytes it has seen.
    // A call wholly past the cap (`take` 0) copies nothing: capture sends
    // only the event where its bytes end (`capture_payload_body`).
    // The job is written field by field into the scratch, not built on the
    // stack first: the data programs' frames are near the verifier's limit.
    // SAFETY: this CPU's scratch.
    unsafe {
        let held = (*scratch).held_len;
        let starts = request_direction && decide && conn.pending_len == 0 && held <= offset;
        (*scratch).held_len = if starts { held & 7 } else { 0 };
        let job = core::ptr::addr_of_mut!((*scratch).capture);
        let h = core::ptr::addr_of_mut!((*job).header);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*h).conn_id), conn.conn_id);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*h).offset), offset);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*h).ts_ns), now);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*h).tgid), tgid);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*h).fd), fd);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*h).len), 0);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*h).direction), if is_read { DIR_READ } else { DIR_WRITE });
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*h).side), conn.side);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*h).kind), KIND_DATA);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*h).provider), conn.provider);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*h).sample_every), conn.flags >> CONN_SAMPLE_SHIFT);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*h).reserved), 0);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*job).capped), n - take);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*job).decide), decide as u64);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*job).ptr), ptr);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*job).iov_count), if iov { count } else { 0 });
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*job).left), take);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*job).iov_next), 0);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*job).seg_ptr), ptr);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*job).seg_left), if iov { 0 } else { take });
    }
    true
}

/// Events are submitted without waking the agent, which drains the ring on
/// a short timer (and, once woken, until it is empty). Only an event that
/// fills the ring past a quarter, a half or three quarters wakes it: once a
/// lagging agent leaves that much waiting, waking it again on every event (an
/// `irq_work` and a wake-up in the proxy's context, each costing more than
/// the copy) brings nothing, since it is already draining or due on its
/// timer. An event takes its size plus the ring's 8-byte record header,
/// rounded up to 8 bytes. Two CPUs crossing the same mark together may both
/// skip the wake-up; the next mark, or the timer, still wakes the agent.
#[inline(always)]
fn wakeup_flags(event_size: u64) -> u64 {
    let waiting = PAYLOADS.query(BPF_RB_AVAIL_DATA as u64);
    let quarter = PAYLOADS.query(BPF_RB_RING_SIZE as u64) / 4;
    let after = waiting + ((event_size + 8 + 7) & !7);
    let crosses = |mark: u64| waiting < mark && after >= mark;
    if crosses(quarter) || crosses(2 * quarter) || crosses(3 * quarter) {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// A close of a captured connection, so the agent can drop its state.
#[inline(always)]
pub fn closed(conn: &ConnState, tgid: u32, fd: u32, now: u64) {
    if capture_control(control::ENABLED) == 0 || conn.conn_id == 0 {
        return;
    }
    let header = ChunkHeader {
        conn_id: conn.conn_id,
        ts_ns: now,
        tgid,
        fd,
        side: conn.side,
        kind: KIND_CLOSE,
        ..ChunkHeader::default()
    };
    if PAYLOADS.output::<ChunkHeader>(&header, wakeup_flags(core::mem::size_of::<ChunkHeader>() as u64)).is_err() {
        add(&COUNTERS, c::CAPTURE_DROPS, 1);
    }
}

/// A connection identity: the creation time mixed with its key.
#[inline(always)]
pub fn new_conn_id(key: u64) -> u64 {
    // SAFETY: no preconditions.
    let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    (now ^ key.rotate_left(29)) | 1
}

/// Body of the capture programs: copies the job's bytes into chunk events,
/// then continues with response parsing when the call needs it.
#[inline(always)]
pub fn capture_payload_body<C: CallReturn>(ctx: &C) -> u32 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return 0 };
    let Some(event) = CHUNK_BUFFER.get_ptr_mut(0) else { return 0 };
    decide_pending(scratch);
    // SAFETY: this CPU's scratch.
    let capped = unsafe { core::ptr::read_volatile(&(*scratch).capture) }.capped;
    if capped > 0 {
        add(&COUNTERS, c::CAPTURE_CAPPED_BYTES, capped);
    }
    emit_prefix(scratch, event);
    for _ in 0..CHUNKS_PER_CALL {
        if !emit_chunk(scratch, event) {
            break;
        }
    }
    // Bytes the per-call limit (or an unreadable buffer) left out.
    // SAFETY: this CPU's scratch.
    let job = unsafe { core::ptr::read_volatile(&(*scratch).capture) };
    if job.left > 0 {
        add(&COUNTERS, c::CAPTURE_CAPPED_BYTES, job.left);
    }
    if job.capped > 0 {
        emit_passed(event, &job);
    }
    // SAFETY: this CPU's scratch.
    let (parse, key, now) = unsafe { ((*scratch).parse_pending, (*scratch).conn_key, (*scratch).now) };
    if parse != 0 {
        ctx.continue_parsing();
        if let Some(conn) = CONNS.get_ptr_mut(&key) {
            // SAFETY: a valid map value pointer.
            framing_outcome(unsafe { &mut *conn }, EV_BUDGET, now);
        }
    }
    0
}

/// Takes the pending sampling decision of the job's connection: an exchange
/// not sampled copies nothing (and nothing of it counts as capped).
#[inline(always)]
fn decide_pending(scratch: *mut Scratch) {
    // SAFETY: this CPU's scratch.
    let (mut job, key) = unsafe { (core::ptr::read_volatile(&(*scratch).capture), (*scratch).conn_key) };
    if job.decide == 0 {
        return;
    }
    job.decide = 0;
    let mut captured = false;
    if let Some(conn) = CONNS.get_ptr_mut(&key) {
        // SAFETY: a valid map value pointer.
        let conn = unsafe { &mut *conn };
        if conn.flags & CONN_SAMPLE_PENDING != 0 {
            decide(conn);
        }
        captured = conn.flags & CONN_CAPTURE != 0;
        job.header.sample_every = conn.flags >> CONN_SAMPLE_SHIFT;
    }
    if !captured {
        job.left = 0;
        job.capped = 0;
        // SAFETY: as above.
        unsafe { (*scratch).held_len = 0 };
    }
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(&mut (*scratch).capture, job) };
}

/// Emits the held start of the request line (`Scratch::held`) as its own
/// chunk, ending where the call's bytes begin. The agent skips bytes at
/// offsets it has already seen (captured with the previous exchange).
#[inline(always)]
fn emit_prefix(scratch: *mut Scratch, event: *mut ChunkEvent) {
    // SAFETY: per-CPU map values, valid for the program's run.
    let (job, held, len) =
        unsafe { (core::ptr::read_volatile(&(*scratch).capture), (*scratch).held, (*scratch).held_len & 7) };
    if len == 0 || job.left == 0 || job.header.offset < len {
        return;
    }
    let mut header = job.header;
    header.offset -= len;
    header.len = len as u32;
    // SAFETY: `event` holds a header and CHUNK_BYTES (>= 8) bytes.
    unsafe {
        (*event).header = header;
        core::ptr::write_unaligned((*event).data.as_mut_ptr().cast::<[u8; 8]>(), held.to_le_bytes());
    }
    output(event, len);
}

/// The message cap cut this call: an event without payload where its bytes
/// end tells the agent that they passed, so a body whose end was not copied
/// completes with its last byte, not when the next message begins or the
/// connection closes. Built in the per-CPU chunk buffer, not on the stack.
#[inline(always)]
fn emit_passed(event: *mut ChunkEvent, job: &CaptureJob) {
    // SAFETY: `event` holds a header.
    unsafe {
        (*event).header = job.header;
        (*event).header.offset += job.left + job.capped;
        (*event).header.len = 0;
    }
    output(event, 0);
}

/// Sends `event`'s header and its first `len` data bytes to the ring,
/// counted as an event and its bytes, or as a drop.
#[inline(always)]
fn output(event: *mut ChunkEvent, len: u64) {
    let size = core::mem::size_of::<ChunkHeader>() as u64 + len;
    // SAFETY: `event` holds a header and CHUNK_BYTES bytes; callers keep
    // `len` within CHUNK_BYTES.
    let rc = unsafe {
        bpf_ringbuf_output(core::ptr::addr_of!(PAYLOADS).cast_mut().cast(), event.cast(), size, wakeup_flags(size))
    };
    if rc == 0 {
        add(&COUNTERS, c::CAPTURE_EVENTS, 1);
        if len > 0 {
            add(&COUNTERS, c::CAPTURE_BYTES, len);
        }
    } else {
        add(&COUNTERS, c::CAPTURE_DROPS, 1);
    }
}

/// Emits one chunk; false when nothing is left.
#[inline(always)]
fn emit_chunk(scratch: *mut Scratch, event: *mut ChunkEvent) -> bool {
    // SAFETY: per-CPU map values, valid for the program's run.
    let mut job = unsafe { core::ptr::read_volatile(&(*scratch).capture) };
    if job.left == 0 {
        return false;
    }
    if job.seg_left == 0 {
        // Next iovec.
        if job.iov_count == 0 || job.iov_next >= job.iov_count || job.iov_next >= 64 {
            return false;
        }
        let at = job.ptr + job.iov_next * 16;
        job.iov_next += 1;
        let Ok([base, len]) = (unsafe { bpf_probe_read_user(at as *const [u64; 2]) }) else { return false };
        job.seg_ptr = base;
        job.seg_left = if len < job.left { len } else { job.left };
        unsafe { core::ptr::write_volatile(&mut (*scratch).capture, job) };
        return true;
    }
    let len = if job.seg_left < CHUNK_BYTES as u64 { job.seg_left } else { CHUNK_BYTES as u64 };
    if len == 0 || len > CHUNK_BYTES as u64 {
        return false;
    }
    let copied = unsafe { read_user_raw((*event).data.as_mut_ptr().cast(), len as u32, job.seg_ptr as *const _) };
    if copied != 0 {
        return false;
    }
    let mut header = job.header;
    header.len = len as u32;
    unsafe { (*event).header = header };
    output(event, len);
    job.header.offset += len;
    job.seg_ptr += len;
    job.seg_left -= len;
    job.left -= if len < job.left { len } else { job.left };
    unsafe { core::ptr::write_volatile(&mut (*scratch).capture, job) };
    true
}
