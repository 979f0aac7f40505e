//! Data probes on the target's socket I/O: the entry probes stash the
//! arguments of `read`/`write`-like calls on traced connections, and one
//! return probe counts the bytes actually transferred and advances the
//! connection's HTTP/1.1 state (request starts, response status, TTFB and
//! response end).
//!
//! Hooked (libc prototypes):
//! - `ssize_t read(int fd, void *buf, size_t n)`, `recv(fd, buf, n, flags)`,
//!   `recvfrom(fd, buf, n, flags, addr, addrlen)`
//! - `ssize_t write(int fd, const void *buf, size_t n)`, `send`, `sendto`
//! - `ssize_t readv(int fd, const struct iovec *iov, int iovcnt)`, `writev`
//! - `ssize_t recvmsg(int fd, struct msghdr *msg, int flags)`, `sendmsg`
//! - `ssize_t sendfile(int out_fd, int in_fd, off_t *offset, size_t count)`

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user,
        generated::bpf_probe_read_user as read_user_raw,
    },
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use metrics_common::{
    conn::{
        CONN_ADOPTED, CONN_IN_FLIGHT, CONN_PLAINTEXT, CONN_PREEXISTING, CONN_RESPONSE_STARTED, CONN_TLS, ConnState,
        EV_END, EV_MALFORMED, EV_NONE, METHOD_HEAD, METHOD_NONE, METHOD_PENDING, PHASE_CHUNK_DATA, PHASE_LOST,
        PHASE_UNTIL_CLOSE, PROTO_HTTP1, PROTO_TLS, PROTO_UNCLASSIFIED, PROTO_UNDETERMINED, ResponseParser, SIDE_CLIENT,
        SIDE_UNKNOWN, SIDE_UPSTREAM, is_status_line_start, method_at_start, request_method,
    },
    counters as c,
    events::CONN_ADOPTED as CONN_ADOPTED_EVENT,
    maps::conn_key,
    probes,
};

use crate::{
    ctx::{CallArgs, CallReturn},
    maps::{
        CALL_READ_BUF, CALL_READ_IOV, CALL_READ_UNKNOWN, CALL_SENDFILE, CALL_WRITE_BUF, CALL_WRITE_IOV, CALLS, CONNS,
        COUNTERS, Call, PROBE_HITS, SCRATCH, WINDOW, add, is_target,
    },
    record::{request_finished, request_started, response_started},
};

/// The response framing DFA, in read-only data.
static FRAMING_DFA_TABLE: [u8; metrics_common::conn::DFA_SIZE] = metrics_common::conn::FRAMING_DFA;

/// recv(2) flag: look at queued bytes without consuming them.
const MSG_PEEK: u64 = 2;

/// Connection flags cleared when a new request starts.
pub const CONN_RESPONSE_FLAGS: u32 = CONN_RESPONSE_STARTED;

/// Parse steps per program run: each step scans one window of header bytes
/// or skips one run of body bytes. Kept small so the verifier accepts the
/// program; `continue_response` extends the budget by tail calls.
const MAX_STEPS: u32 = 4;
/// Tail calls per intercepted call (the kernel allows 33).
const MAX_CONTINUATIONS: u32 = 31;
/// iovecs looked at per call.
const MAX_IOV: u64 = 64;
/// Framing outcome when the step budget ran out with bytes left.
pub const EV_BUDGET: u32 = 100;
/// First bytes of a TLS connection: a handshake record, protocol major 3.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
const TLS_MAJOR_VERSION: u8 = 0x03;

/// Entry of a data call: stashes its arguments when the fd is traced.
#[inline(always)]
pub fn stash<A: CallArgs>(ctx: &A, kind: u32, hit: u32) {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if !is_target(tgid) {
        return;
    }
    add(&PROBE_HITS, hit, 1);
    let fd = ctx.arg_int(0);
    if fd < 0 {
        return;
    }
    crate::tls::note_nested_socket_call(id, tgid, fd as u32);
    // Only traced connections: files, pipes and eventfds are skipped here,
    // except plain reads, which may be the first request on a connection
    // accepted by an accept() that was already blocking when we attached.
    // SAFETY: only tested for presence.
    let mut kind = kind;
    if unsafe { CONNS.get(&conn_key(tgid, fd as u32)) }.is_none() {
        if kind != CALL_READ_BUF {
            return;
        }
        kind = CALL_READ_UNKNOWN;
    }
    let mut ptr = ctx.arg_u64(1);
    let mut count = ctx.arg_u64(2);
    if kind == CALL_READ_IOV + 100 || kind == CALL_WRITE_IOV + 100 {
        // recvmsg/sendmsg: struct msghdr { name; namelen; iov @16; iovlen @24; ... }
        // SAFETY: reading user memory through the helper.
        let iov: u64 = unsafe { bpf_probe_read_user((ptr + 16) as *const u64) }.unwrap_or(0);
        count = unsafe { bpf_probe_read_user((ptr + 24) as *const u64) }.unwrap_or(0);
        ptr = iov;
        kind -= 100;
    }
    let call = Call { fd: fd as u32, kind, ptr, count };
    let _ = CALLS.insert(&id, &call, 0);
}

#[uprobe]
pub fn enter_read(ctx: ProbeContext) -> u32 {
    stash(&ctx, CALL_READ_BUF, probes::HIT_READ_ENTRY);
    0
}

/// recv/recvfrom: a `MSG_PEEK` read leaves the bytes queued, so it is not
/// counted (the real read that follows is).
#[inline(always)]
pub fn stash_recv<A: CallArgs>(ctx: &A) {
    if ctx.arg_u64(3) & MSG_PEEK == 0 {
        stash(ctx, CALL_READ_BUF, probes::HIT_READ_ENTRY);
    } else if is_target((bpf_get_current_pid_tgid() >> 32) as u32) {
        add(&PROBE_HITS, probes::HIT_READ_ENTRY, 1);
    }
}

#[uprobe]
pub fn enter_recv(ctx: ProbeContext) -> u32 {
    stash_recv(&ctx);
    0
}

#[uprobe]
pub fn enter_write(ctx: ProbeContext) -> u32 {
    stash(&ctx, CALL_WRITE_BUF, probes::HIT_WRITE_ENTRY);
    0
}

#[uprobe]
pub fn enter_readv(ctx: ProbeContext) -> u32 {
    stash(&ctx, CALL_READ_IOV, probes::HIT_READ_ENTRY);
    0
}

#[uprobe]
pub fn enter_writev(ctx: ProbeContext) -> u32 {
    stash(&ctx, CALL_WRITE_IOV, probes::HIT_WRITE_ENTRY);
    0
}

#[uprobe]
pub fn enter_recvmsg(ctx: ProbeContext) -> u32 {
    stash_recvmsg(&ctx);
    0
}

/// recvmsg: like recv, a `MSG_PEEK` read is not counted.
#[inline(always)]
pub fn stash_recvmsg<A: CallArgs>(ctx: &A) {
    if ctx.arg_u64(2) & MSG_PEEK == 0 {
        stash(ctx, CALL_READ_IOV + 100, probes::HIT_READ_ENTRY);
    } else if is_target((bpf_get_current_pid_tgid() >> 32) as u32) {
        add(&PROBE_HITS, probes::HIT_READ_ENTRY, 1);
    }
}

#[uprobe]
pub fn enter_sendmsg(ctx: ProbeContext) -> u32 {
    stash(&ctx, CALL_WRITE_IOV + 100, probes::HIT_WRITE_ENTRY);
    0
}

#[uprobe]
pub fn enter_sendfile(ctx: ProbeContext) -> u32 {
    stash(&ctx, CALL_SENDFILE, probes::HIT_WRITE_ENTRY);
    0
}

/// Return of every data call above.
#[uretprobe]
pub fn return_data(ctx: RetProbeContext) -> u32 {
    data_returned(&ctx)
}

/// Plaintext an SSL call moved on `fd`: the HTTP/1.1 logic, capture and
/// parsing as for a clear-text socket; the bytes are not counted again (the
/// socket calls counted the ciphertext).
#[inline(always)]
pub fn process_plaintext<C: CallReturn>(ctx: &C, tgid: u32, fd: u32, kind: u32, buf: u64, n: u64) -> u32 {
    let Some(conn) = CONNS.get_ptr_mut(&conn_key(tgid, fd)) else { return 0 };
    // SAFETY: a valid map value pointer for the duration of the program.
    let conn = unsafe { &mut *conn };
    conn.flags |= CONN_TLS;
    if conn.flags & CONN_PLAINTEXT == 0 {
        conn.flags |= CONN_PLAINTEXT;
        add(&COUNTERS, c::TLS_PLAINTEXT_CONNECTIONS, 1);
        if conn.proto == PROTO_TLS {
            // The plaintext is classified afresh, like a new connection's bytes.
            conn.proto = PROTO_UNDETERMINED;
        }
    }
    let call = Call { fd, kind, ptr: buf, count: 0 };
    http_and_capture(ctx, conn, &call, tgid, n, kind == CALL_READ_BUF)
}

/// The peer of a TLS connection closed its session.
#[inline(always)]
pub fn plaintext_peer_closed(tgid: u32, fd: u32) {
    if let Some(conn) = CONNS.get_ptr_mut(&conn_key(tgid, fd)) {
        // SAFETY: a valid map value pointer.
        peer_closed(unsafe { &mut *conn });
    }
}

/// Return of a data call: count the bytes, advance the connection's state,
/// then tail-call payload capture (when this exchange is sampled) and
/// response parsing (when this call carried response bytes).
#[inline(always)]
pub fn data_returned<C: CallReturn>(ctx: &C) -> u32 {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(call) = (unsafe { CALLS.get(&id) }).copied() else { return 0 };
    let _ = CALLS.remove(&id);
    add(&PROBE_HITS, probes::HIT_DATA_RETURN, 1);
    let ret = ctx.return_value();
    let tgid = (id >> 32) as u32;
    let mut call = call;
    if call.kind == CALL_READ_UNKNOWN {
        call.kind = CALL_READ_BUF;
        if ret <= 0 || !adopt_client_connection(tgid, &call, ret as u64) {
            return 0;
        }
    }
    let Some(conn) = CONNS.get_ptr_mut(&conn_key(tgid, call.fd)) else { return 0 };
    // SAFETY: a valid map value pointer for the duration of the program.
    let conn = unsafe { &mut *conn };
    let is_read = call.kind == CALL_READ_BUF || call.kind == CALL_READ_IOV;
    if ret == 0 && is_read {
        peer_closed(conn);
        return 0;
    }
    if ret <= 0 {
        return 0;
    }
    let n = ret as u64;
    count_bytes(conn, is_read, n);
    if conn.proto == PROTO_UNDETERMINED && conn.flags & (CONN_PREEXISTING | CONN_PLAINTEXT) == 0 {
        let (first, len) = peek(&call, n);
        if len >= 2 && first[0] == TLS_HANDSHAKE_RECORD && first[1] == TLS_MAJOR_VERSION {
            conn.proto = PROTO_TLS;
            add(&COUNTERS, c::TLS_CONNECTIONS, 1);
        }
    }
    if conn.proto == PROTO_TLS && is_read {
        crate::tls::note_ciphertext_read(id, call.fd);
    }
    if conn.flags & CONN_TLS != 0 {
        return 0; // ciphertext: the SSL probes see the plaintext
    }
    if conn.proto == PROTO_UNCLASSIFIED {
        add(&COUNTERS, c::UNCLASSIFIED_BYTES, n);
        return 0;
    }
    if conn.proto == PROTO_TLS {
        add(&COUNTERS, c::TLS_OPAQUE_BYTES, n);
        return 0;
    }
    http_and_capture(ctx, conn, &call, tgid, n, is_read)
}

/// The HTTP/1.1 logic for a call's bytes, then capture and parsing by tail calls.
#[inline(always)]
fn http_and_capture<C: CallReturn>(
    ctx: &C,
    conn: &mut ConnState,
    call: &Call,
    tgid: u32,
    n: u64,
    is_read: bool,
) -> u32 {
    let call = *call;
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return 0 };
    // SAFETY: this CPU's scratch.
    unsafe { (*scratch).parse_pending = 0 };
    let now = unsafe { bpf_ktime_get_ns() };
    if call.kind == CALL_SENDFILE {
        // File contents: a request body going upstream, or a response body
        // going to a client (nginx buffers large bodies in temp files). Not
        // captured: the bytes are not in the proxy's memory.
        conn.write_offset += n;
        if conn.side == SIDE_CLIENT {
            response_bytes(scratch, conn, &call, n, now);
        }
    } else {
        http_bytes(scratch, conn, &call, n, is_read, now);
        let iov = call.kind == CALL_READ_IOV || call.kind == CALL_WRITE_IOV;
        let request_direction = (conn.side == SIDE_CLIENT) == is_read;
        let capture = crate::capture::prepare(
            scratch,
            conn,
            tgid,
            call.fd,
            iov,
            call.ptr,
            call.count,
            n,
            is_read,
            request_direction,
            now,
        );
        if capture {
            // SAFETY: this CPU's scratch.
            unsafe { (*scratch).conn_key = conn_key(tgid, call.fd) };
            ctx.capture();
            add(&COUNTERS, c::CAPTURE_DROPS, 1); // the tail call failed
        }
    }
    // SAFETY: as above.
    if unsafe { (*scratch).parse_pending } != 0 {
        ctx.continue_parsing();
        framing_outcome(conn, EV_BUDGET, now);
    }
    0
}

/// The HTTP/1.x state of a call's bytes: request starts, and the response
/// of the in-flight request (parsing is prepared, and run by the caller).
#[inline(always)]
fn http_bytes(scratch: *mut Scratch, conn: &mut ConnState, call: &Call, n: u64, is_read: bool, now: u64) {
    let (first, first_len) = peek(call, n);
    if conn.side == SIDE_UNKNOWN {
        return;
    }
    let fresh = conn.proto == PROTO_UNDETERMINED && conn.flags & CONN_PREEXISTING == 0;
    let request_direction = (conn.side == SIDE_CLIENT) == is_read;
    if request_direction {
        let expecting_request = conn.flags & CONN_IN_FLIGHT == 0 || conn.response.phase == PHASE_LOST;
        if !expecting_request {
            return; // the in-flight request's body
        }
        let method = method_at_start(conn, &first, first_len);
        if method == METHOD_PENDING {
            return;
        }
        if method == METHOD_NONE {
            if fresh {
                unclassified(conn, n);
            }
            return;
        }
        request_begins(conn, method, now);
        return;
    }
    if fresh {
        if !is_status_line_start(&first, first_len) {
            unclassified(conn, n);
            return;
        }
        conn.proto = PROTO_HTTP1;
    }
    response_bytes(scratch, conn, call, n, now);
}

/// The first bytes of a new connection are not HTTP/1.x.
#[inline(always)]
fn unclassified(conn: &mut ConnState, n: u64) {
    conn.proto = PROTO_UNCLASSIFIED;
    add(&COUNTERS, c::UNCLASSIFIED_CONNECTIONS, 1);
    add(&COUNTERS, c::UNCLASSIFIED_BYTES, n);
}

/// An untracked fd whose read returned a request line: a client connection
/// accepted before the agent attached (by a call already in progress). It is
/// tracked from here on; the agent checks it really is a TCP socket.
#[inline(always)]
fn adopt_client_connection(tgid: u32, call: &Call, n: u64) -> bool {
    let (first, len) = peek(call, n);
    if request_method(&first, len) == METHOD_NONE {
        return false;
    }
    let key = conn_key(tgid, call.fd);
    let conn = ConnState {
        side: SIDE_CLIENT,
        proto: PROTO_HTTP1,
        flags: CONN_ADOPTED,
        conn_id: crate::capture::new_conn_id(key),
        ..ConnState::default()
    };
    if CONNS.insert(&key, &conn, 0).is_err() {
        return false;
    }
    crate::process::emit(CONN_ADOPTED_EVENT, tgid, call.fd);
    true
}

#[inline(always)]
fn count_bytes(conn: &ConnState, is_read: bool, n: u64) {
    let slot = match (conn.side, is_read) {
        (SIDE_CLIENT, true) => c::BYTES_RECEIVED_CLIENT,
        (SIDE_CLIENT, false) => c::BYTES_SENT_CLIENT,
        (SIDE_UPSTREAM, true) => c::BYTES_RECEIVED_UPSTREAM,
        (SIDE_UPSTREAM, false) => c::BYTES_SENT_UPSTREAM,
        (_, true) => c::BYTES_RECEIVED_UNKNOWN,
        (_, false) => c::BYTES_SENT_UNKNOWN,
    };
    add(&COUNTERS, slot, n);
}

/// The first (up to) 8 bytes the call transferred.
#[inline(always)]
fn peek(call: &Call, n: u64) -> ([u8; 8], u64) {
    let mut out = [0u8; 8];
    let (ptr, len) = if call.kind == CALL_READ_IOV || call.kind == CALL_WRITE_IOV {
        // SAFETY: reading user memory through the helper.
        match unsafe { bpf_probe_read_user(call.ptr as *const [u64; 2]) } {
            Ok([base, len]) => (base, len),
            Err(_) => return (out, 0),
        }
    } else {
        (call.ptr, n)
    };
    let len = if len < n { len } else { n };
    if len >= 8 {
        // SAFETY: as above.
        if let Ok(b) = unsafe { bpf_probe_read_user(ptr as *const [u8; 8]) } {
            return (b, 8);
        }
        return (out, 0);
    }
    let mut i = 0;
    while i < 8 {
        if i as u64 >= len {
            break;
        }
        // SAFETY: as above.
        out[i] = unsafe { bpf_probe_read_user((ptr + i as u64) as *const u8) }.unwrap_or(0);
        i += 1;
    }
    (out, len)
}

/// A request line started: when framing of the previous response was lost,
/// that response is finished first, as complete at its last byte seen.
#[inline(always)]
fn request_begins(conn: &mut ConnState, method: u32, now: u64) {
    if conn.flags & CONN_IN_FLIGHT != 0 {
        let end = conn.last_response_ns;
        request_finished(conn, end, true);
    }
    conn.proto = PROTO_HTTP1;
    request_started(conn, now, method == METHOD_HEAD);
}

/// Bytes travelling toward the client side: the response of the in-flight
/// request. Parsing is set up here and run by the continuation program.
#[inline(always)]
fn response_bytes(scratch: *mut Scratch, conn: &mut ConnState, call: &Call, n: u64, now: u64) {
    if conn.flags & CONN_IN_FLIGHT == 0 {
        return;
    }
    if conn.flags & CONN_RESPONSE_STARTED == 0 {
        conn.flags |= CONN_RESPONSE_STARTED;
        response_started(conn, now);
    }
    conn.last_response_ns = now;
    if call.kind == CALL_SENDFILE {
        let ev = skip_only(conn, n);
        framing_outcome(conn, ev, now);
        return;
    }
    prepare_parse(scratch, call, n, now);
}

/// Acts on what parsing a call's bytes found.
#[inline(always)]
pub fn framing_outcome(conn: &mut ConnState, ev: u32, now: u64) {
    if ev == EV_END {
        request_finished(conn, now, true);
    } else if ev == EV_MALFORMED || ev == EV_BUDGET {
        conn.response.phase = PHASE_LOST;
        add(&COUNTERS, c::FRAMING_LOST, 1);
    }
}

/// The peer closed its end (a read returned 0): a body framed by the
/// connection's close is complete; anything else in flight was cut short.
#[inline(always)]
fn peer_closed(conn: &mut ConnState) {
    if conn.flags & CONN_IN_FLIGHT == 0 || conn.side != SIDE_UPSTREAM {
        return;
    }
    let started = conn.flags & CONN_RESPONSE_STARTED != 0;
    let complete = started && conn.response.phase == PHASE_UNTIL_CLOSE;
    let end = if started { conn.last_response_ns } else { unsafe { bpf_ktime_get_ns() } };
    request_finished(conn, end, complete);
}

/// Body bytes whose content the probe cannot see (sendfile).
#[inline(always)]
fn skip_only(conn: &mut ConnState, n: u64) -> u32 {
    let p = &mut conn.response;
    if !p.wants_skip() {
        return if p.phase == PHASE_LOST { EV_NONE } else { EV_MALFORMED };
    }
    let (used, ev) = p.skip(n);
    if ev == EV_NONE && used < n { EV_MALFORMED } else { ev }
}

/// Where the parser is in the bytes of one call. Kept in per-CPU map memory
/// between steps (volatile accesses) so the verifier sees unknown values at
/// each step and prunes, instead of tracking every possible offset.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Cursor {
    iov: u64,
    iov_count: u64,
    iov_next: u64,
    seg_ptr: u64,
    seg_len: u64,
    seg_off: u64,
    /// Bytes of the call not yet consumed.
    left: u64,
}

/// Per-CPU scratch: a window of user bytes, the cursor, and what a
/// continuation needs to carry on.
#[repr(C)]
pub struct Scratch {
    pub window: [u8; WINDOW],
    pub cursor: Cursor,
    pub conn_key: u64,
    pub now: u64,
    pub continuations: u32,
    /// Non-zero when the call's response bytes still need parsing.
    pub parse_pending: u32,
    pub capture: crate::capture::CaptureJob,
}

impl Cursor {
    #[inline(always)]
    fn next_segment(&mut self) -> bool {
        if self.iov == 0 || self.iov_next >= self.iov_count || self.iov_next >= MAX_IOV {
            return false;
        }
        let at = self.iov + self.iov_next * 16;
        self.iov_next += 1;
        // SAFETY: reading user memory through the helper.
        let Ok([base, len]) = (unsafe { bpf_probe_read_user(at as *const [u64; 2]) }) else {
            return false;
        };
        self.seg_ptr = base;
        self.seg_len = if len < self.left { len } else { self.left };
        self.seg_off = 0;
        true
    }

    #[inline(always)]
    fn consume(&mut self, n: u64) {
        self.seg_off += n;
        self.left -= if n < self.left { n } else { self.left };
    }
}

/// `step` result: keep going.
const STEP_MORE: u32 = 200;

/// Sets up parsing of the `n` bytes of one call by `continue_response`,
/// which takes `MAX_STEPS` steps per run and calls itself while bytes
/// remain, up to `MAX_CONTINUATIONS` runs, then records the outcome.
#[inline(always)]
fn prepare_parse(scratch: *mut Scratch, call: &Call, n: u64, now: u64) {
    let iov_call = call.kind == CALL_READ_IOV || call.kind == CALL_WRITE_IOV;
    let cursor = Cursor {
        iov: if iov_call { call.ptr } else { 0 },
        iov_count: if iov_call { call.count } else { 0 },
        iov_next: 0,
        seg_ptr: call.ptr,
        seg_len: if iov_call { 0 } else { n },
        seg_off: 0,
        left: n,
    };
    // SAFETY: `scratch` is this CPU's map value.
    unsafe {
        core::ptr::write_volatile(&mut (*scratch).cursor, cursor);
        (*scratch).conn_key = conn_key((bpf_get_current_pid_tgid() >> 32) as u32, call.fd);
        (*scratch).now = now;
        (*scratch).continuations = 0;
        (*scratch).parse_pending = 1;
    }
}

/// The continuation of `return_data` for calls with more framing work than
/// one program run takes (many small chunks in one read or write).
#[uretprobe]
pub fn continue_response(ctx: RetProbeContext) -> u32 {
    continue_parsing(&ctx)
}

/// The body of both continuation programs (uprobe and syscall modes).
#[inline(always)]
pub fn continue_parsing<C: CallReturn>(ctx: &C) -> u32 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return 0 };
    // SAFETY: this CPU's scratch, filled by the program that tail-called us.
    let (key, now, depth) = unsafe { ((*scratch).conn_key, (*scratch).now, (*scratch).continuations + 1) };
    unsafe { (*scratch).continuations = depth };
    let Some(conn) = CONNS.get_ptr_mut(&key) else { return 0 };
    // SAFETY: a valid map value pointer for the duration of the program.
    let conn = unsafe { &mut *conn };
    let mut r = run_steps(scratch, &mut conn.response);
    if r == STEP_MORE {
        if depth < MAX_CONTINUATIONS {
            ctx.continue_parsing();
        }
        r = EV_BUDGET;
    }
    framing_outcome(conn, r, now);
    0
}

/// Takes up to `MAX_STEPS` steps; `STEP_MORE` when work remains.
#[inline(always)]
fn run_steps(scratch: *mut Scratch, parser: *mut ResponseParser) -> u32 {
    for _ in 0..MAX_STEPS {
        let r = step(scratch, parser);
        if r != STEP_MORE {
            return r;
        }
    }
    // SAFETY: as above.
    let cur = unsafe { core::ptr::read_volatile(&(*scratch).cursor) };
    let p = unsafe { core::ptr::read_volatile(parser) };
    if cur.left == 0 || !(p.wants_bytes() || p.wants_skip()) || p.phase == PHASE_UNTIL_CLOSE {
        return EV_NONE;
    }
    STEP_MORE
}

/// One parse step: skip one run of body bytes, or scan one window of
/// header/chunk-size/trailer bytes.
#[inline(always)]
fn step(scratch: *mut Scratch, parser: *mut ResponseParser) -> u32 {
    // SAFETY: both point into map values valid for the whole program.
    let mut cur = unsafe { core::ptr::read_volatile(&(*scratch).cursor) };
    if cur.left == 0 {
        return EV_NONE;
    }
    // Move to the next non-empty iovec within this step.
    for _ in 0..4 {
        if cur.seg_off < cur.seg_len {
            break;
        }
        if !cur.next_segment() {
            // Bytes remain but their iovec cannot be read (or is past
            // MAX_IOV): the framing position is lost.
            return EV_MALFORMED;
        }
    }
    if cur.seg_off >= cur.seg_len {
        unsafe { core::ptr::write_volatile(&mut (*scratch).cursor, cur) };
        return STEP_MORE;
    }
    let avail = cur.seg_len - cur.seg_off;
    let mut p = unsafe { core::ptr::read_volatile(parser) };
    if p.wants_skip() {
        let (used, ev) = p.skip(avail);
        cur.consume(used);
        unsafe {
            core::ptr::write_volatile(parser, p);
            core::ptr::write_volatile(&mut (*scratch).cursor, cur);
        }
        return if ev != EV_NONE { ev } else { STEP_MORE };
    }
    if !p.wants_bytes() {
        return EV_NONE;
    }
    let len = if avail < WINDOW as u64 { avail } else { WINDOW as u64 };
    if len == 0 || len > WINDOW as u64 {
        return EV_NONE;
    }
    let window = unsafe { core::ptr::addr_of_mut!((*scratch).window) };
    // SAFETY: `window` holds WINDOW bytes and len <= WINDOW.
    let copied = unsafe { read_user_raw(window as *mut _, len as u32, (cur.seg_ptr + cur.seg_off) as *const _) };
    if copied != 0 {
        return EV_MALFORMED;
    }
    let mut used = len;
    let mut ev = EV_NONE;
    for i in 0..WINDOW {
        if i as u64 >= len {
            break;
        }
        // SAFETY: i < WINDOW.
        let byte = unsafe { (*window)[i] };
        // The parser goes through memory every byte, for the same reason
        // as the cursor.
        let mut p = unsafe { core::ptr::read_volatile(parser) };
        if p.phase == PHASE_CHUNK_DATA {
            // Short chunks are consumed inside the window, so a burst of
            // small SSE chunks costs one step per window, not two per chunk.
            let (_, e) = p.skip(1);
            ev = e;
        } else {
            ev = p.step_byte(&FRAMING_DFA_TABLE, byte);
        }
        let more = p.wants_bytes() || p.phase == PHASE_CHUNK_DATA;
        unsafe { core::ptr::write_volatile(parser, p) };
        if ev != EV_NONE || !more {
            used = i as u64 + 1;
            break;
        }
    }
    cur.consume(used);
    unsafe { core::ptr::write_volatile(&mut (*scratch).cursor, cur) };
    if ev != EV_NONE { ev } else { STEP_MORE }
}
