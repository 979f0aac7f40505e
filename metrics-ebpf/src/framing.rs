//! The HTTP/1.x framing engine shared by every hook family: request starts
//! on the request direction, and on the response direction the status, the
//! first byte (TTFB) and the end of each response, found by the table-driven
//! DFA of `metrics_common::conn` over the call's bytes (plain buffers and
//! iovecs). Parsing runs in bounded steps; a call with more work than one
//! program run takes continues in a tail call of the same program type
//! (`continue_parsing`). Capture is prepared here and runs in its own
//! tail-called program (`capture`).

use aya_ebpf::helpers::{
    bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user,
    generated::{bpf_loop, bpf_probe_read_user as read_user_raw},
};
use metrics_common::{
    conn::{
        CONN_IN_FLIGHT, CONN_PREEXISTING, CONN_RESPONSE_STARTED, ConnState, EV_MALFORMED, EV_NONE, METHOD_HEAD,
        METHOD_NONE, METHOD_PENDING, PHASE_BODY_LENGTH, PHASE_CHUNK_DATA, PHASE_LOST, PHASE_UNTIL_CLOSE, PROTO_HTTP1,
        PROTO_UNCLASSIFIED, PROTO_UNDETERMINED, ResponseParser, SIDE_CLIENT, SIDE_UNKNOWN, SIDE_UPSTREAM,
        head::{HEAD_BYTES, WORD_END, WORD_NEXT, finish_head, head_start, head_words, scan_word, wants_head},
        is_status_line_start, method_at_start,
    },
    counters as c,
    maps::conn_key,
};

use crate::{
    capture::prepare,
    ctx::CallReturn,
    maps::{CALL_READ_IOV, CALL_READ_NOBUF, CALL_SENDFILE, CALL_WRITE_IOV, CONNS, COUNTERS, Call, SCRATCH, add},
    record::{EV_BUDGET, framing_outcome, request_finished, request_started, response_started},
    scratch::{Cursor, Scratch, WINDOW},
};

/// The response framing DFA, in read-only data.
static FRAMING_DFA_TABLE: [u8; metrics_common::conn::DFA_SIZE] = metrics_common::conn::FRAMING_DFA;

/// Parse steps per program run: each step scans one window of header bytes
/// or skips one run of body bytes. Kept small so the verifier accepts the
/// program; `continue_parsing` extends the budget by tail calls.
const MAX_STEPS: u32 = 4;
/// Tail calls per intercepted call (the kernel allows 33).
const MAX_CONTINUATIONS: u32 = 31;

/// Calls whose bytes are not in a user buffer (sendfile, splice, io_uring).
#[inline(always)]
pub fn no_buffer(kind: u32) -> bool {
    kind == CALL_SENDFILE || kind == CALL_READ_NOBUF
}

/// The HTTP/1.1 logic for a call's bytes, then capture and parsing by tail calls.
#[inline(always)]
pub fn http_and_capture<C: CallReturn>(
    ctx: &C,
    conn: &mut ConnState,
    call: &Call,
    tgid: u32,
    n: u64,
    is_read: bool,
) -> u32 {
    let call = *call;
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return 0 };
    // The start of a request line held from earlier calls (if this call
    // completes it, capture sends it again: see `capture::prepare`).
    // SAFETY: this CPU's scratch.
    unsafe {
        (*scratch).parse_pending = 0;
        ((*scratch).held, (*scratch).held_len) = (u64::from_le_bytes(conn.pending), (conn.pending_len & 7) as u64);
    }
    let now = unsafe { bpf_ktime_get_ns() };
    if no_buffer(call.kind) {
        // Bytes that never were in the proxy's memory: file contents sent
        // with sendfile (nginx buffers large bodies in temp files), splice,
        // io_uring. Counted and skipped as body; not captured.
        if is_read {
            conn.read_offset += n;
        } else {
            conn.write_offset += n;
        }
        let response_direction = (conn.side == SIDE_CLIENT) != is_read;
        if response_direction && conn.side != SIDE_UNKNOWN {
            response_bytes(scratch, conn, &call, n, now);
        }
    } else {
        // What capture decides from the response's framing is taken from
        // before this call's bytes were parsed.
        let response_flags = conn.response.flags;
        http_bytes(scratch, conn, &call, n, is_read, now);
        let iov = call.kind == CALL_READ_IOV || call.kind == CALL_WRITE_IOV;
        let request_direction = (conn.side == SIDE_CLIENT) == is_read;
        let capture = prepare(
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
            response_flags,
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
        // A response head whole in the call's first segment is framed here,
        // without the tail call (when no capture ran first: its program
        // tail-calls the parse continuation, which then does the same).
        if !fast_head_here(scratch, conn, now) {
            return 0;
        }
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
    if crate::framing_h2::claims(scratch, conn, call, n, is_read, &first, first_len) {
        return; // HTTP/2 frames
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

/// The first (up to) 8 bytes the call transferred.
#[inline(always)]
pub fn peek(call: &Call, n: u64) -> ([u8; 8], u64) {
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
/// request. Body bytes of known framing are skipped here (`parse_call`);
/// the rest is set up for the continuation program.
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
    if no_buffer(call.kind) {
        let ev = skip_only(conn, n);
        framing_outcome(conn, ev, now);
        return;
    }
    parse_call(scratch, conn, call, n, now);
}

/// Parses what it can of a call's response bytes in the calling program:
/// body bytes of a known length or up to the close are skipped without
/// reading them (and without a tail call). Anything else (a response head,
/// chunk-size lines) is set up for the continuation program
/// (`continue_parsing`), which scans it byte by byte.
#[inline(always)]
fn parse_call(scratch: *mut Scratch, conn: &mut ConnState, call: &Call, n: u64, now: u64) {
    let p = &mut conn.response;
    if p.phase == PHASE_BODY_LENGTH || p.phase == PHASE_UNTIL_CLOSE {
        // Only the count matters, not where the iovecs split the bytes.
        let (used, ev) = p.skip(n);
        if ev != EV_NONE || used == n {
            framing_outcome(conn, ev, now);
            return;
        }
    }
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
        (*scratch).head_tried = 0;
        (*scratch).parse_pending = 1;
    }
}

/// Runs `fast_head` for the pending parse of `conn`'s response bytes in
/// the data program itself. False when it framed everything (nothing is
/// left for the continuation).
#[inline(always)]
fn fast_head_here(scratch: *mut Scratch, conn: &mut ConnState, now: u64) -> bool {
    if conn.proto == metrics_common::conn::PROTO_HTTP2 || !wants_head(&conn.response) {
        return true;
    }
    let r = fast_head(scratch, &mut conn.response);
    if r == STEP_MORE {
        return true;
    }
    framing_outcome(conn, r, now);
    // SAFETY: this CPU's scratch.
    unsafe { (*scratch).parse_pending = 0 };
    false
}

/// The peer closed its end (a read returned 0): a body framed by the
/// connection's close is complete; anything else in flight was cut short.
#[inline(always)]
pub fn peer_closed(conn: &mut ConnState) {
    if conn.flags & CONN_IN_FLIGHT == 0 || conn.side != SIDE_UPSTREAM {
        return;
    }
    let started = conn.flags & CONN_RESPONSE_STARTED != 0;
    let complete = started && conn.response.phase == PHASE_UNTIL_CLOSE;
    let end = if started { conn.last_response_ns } else { unsafe { bpf_ktime_get_ns() } };
    request_finished(conn, end, complete);
}

/// Body bytes whose content the probe cannot see (sendfile, splice, io_uring).
#[inline(always)]
fn skip_only(conn: &mut ConnState, n: u64) -> u32 {
    let p = &mut conn.response;
    if !p.wants_skip() {
        return if p.phase == PHASE_LOST { EV_NONE } else { EV_MALFORMED };
    }
    let (used, ev) = p.skip(n);
    if ev == EV_NONE && used < n { EV_MALFORMED } else { ev }
}

/// `step` result: keep going.
const STEP_MORE: u32 = 200;

/// A whole response head at the cursor, in the current segment: scanned
/// word at a time (`metrics_common::conn::head`, exact as the DFA),
/// `WORDS_PER_CALLBACK` words per `bpf_loop` callback (the verifier checks
/// the callback once instead of every word position), then a body of known length (or up to
/// the close) skipped. Returns the framing event, or `STEP_MORE` when the
/// byte-level steps go on (also when the head is not whole in the segment:
/// the DFA then takes it from the same position, nothing consumed).
#[inline(always)]
fn fast_head(scratch: *mut Scratch, parser: *mut ResponseParser) -> u32 {
    // SAFETY: both point into map values valid for the whole program.
    unsafe { (*scratch).head_tried = 1 };
    let mut p = unsafe { core::ptr::read_volatile(parser) };
    let mut cur = unsafe { core::ptr::read_volatile(&(*scratch).cursor) };
    if cur.seg_off >= cur.seg_len && !cur.next_segment() {
        return STEP_MORE;
    }
    // The segment found is kept: the byte-level steps start from it too.
    unsafe { core::ptr::write_volatile(&mut (*scratch).cursor, cur) };
    let avail = cur.seg_len - cur.seg_off;
    let len = if avail < HEAD_BYTES as u64 { avail } else { HEAD_BYTES as u64 };
    if len < 16 || len > HEAD_BYTES as u64 {
        return STEP_MORE;
    }
    let head = unsafe { core::ptr::addr_of_mut!((*scratch).head) };
    // SAFETY: `head` holds HEAD_BYTES bytes and len <= HEAD_BYTES.
    if unsafe { read_user_raw(head as *mut _, len as u32, (cur.seg_ptr + cur.seg_off) as *const _) } != 0 {
        return STEP_MORE;
    }
    let lines = unsafe { core::ptr::addr_of_mut!((*scratch).lines) };
    // SAFETY: the bytes were just read into `head`.
    if !head_start(unsafe { &*head }, len, &p, unsafe { &mut *lines }) {
        return STEP_MORE;
    }
    unsafe { core::ptr::write_volatile(&mut (*scratch).head_outcome, WORD_NEXT) };
    let words = head_words(len) as u32;
    // Words 1..words, WORDS_PER_CALLBACK per callback.
    let callbacks = (words - 1).div_ceil(WORDS_PER_CALLBACK);
    // SAFETY: `scan_head_words` has the callback signature bpf_loop expects.
    unsafe { bpf_loop(callbacks, scan_head_words as *mut _, core::ptr::null_mut(), 0) };
    if unsafe { core::ptr::read_volatile(&(*scratch).head_outcome) } != WORD_END {
        return STEP_MORE;
    }
    let found = unsafe { core::ptr::read_volatile(lines) };
    let Some((used, mut ev)) = finish_head(unsafe { &*head }, len, found, &mut p) else {
        return STEP_MORE;
    };
    cur.consume(used);
    if ev == EV_NONE && cur.left > 0 && (p.phase == PHASE_BODY_LENGTH || p.phase == PHASE_UNTIL_CLOSE) {
        // Only the count matters, not where the iovecs split the bytes.
        let (skipped, e) = p.skip(cur.left);
        cur.left -= skipped;
        ev = e;
    }
    unsafe {
        core::ptr::write_volatile(parser, p);
        core::ptr::write_volatile(&mut (*scratch).cursor, cur);
    }
    if ev != EV_NONE || cur.left == 0 { ev } else { STEP_MORE }
}

/// Head words scanned per `bpf_loop` callback: a callback costs more than a
/// word's scan, and the verifier checks the callback once, whatever it holds.
const WORDS_PER_CALLBACK: u32 = 4;

/// `bpf_loop` callback of `fast_head`: scans words `index *
/// WORDS_PER_CALLBACK + 1` on (those within the head buffer's data) of this
/// CPU's head buffer; returns 1 (stop) when the head ended or the scan gave up.
#[inline(never)]
extern "C" fn scan_head_words(index: u32, _ctx: *mut core::ffi::c_void) -> i64 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return 1 };
    let first = index as u64 * WORDS_PER_CALLBACK as u64 + 1;
    // SAFETY: this CPU's scratch, filled by `fast_head`.
    let len = unsafe { core::ptr::read_volatile(&(*scratch).lines.len) };
    for k in 0..WORDS_PER_CALLBACK as u64 {
        let w = first + k;
        if k > 0 && w * 8 >= len {
            return 0; // the last word was scanned: `fast_head` sees WORD_NEXT
        }
        // SAFETY: as above.
        let r = unsafe { scan_word(&(*scratch).head, w, &mut (*scratch).lines) };
        if r != WORD_NEXT {
            unsafe { core::ptr::write_volatile(&mut (*scratch).head_outcome, r) };
            return 1;
        }
    }
    0
}

/// The body of every continuation program (one per program type).
#[inline(always)]
pub fn continue_parsing<C: CallReturn>(ctx: &C) -> u32 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return 0 };
    // SAFETY: this CPU's scratch, filled by the program that tail-called us.
    let (key, now, depth) = unsafe { ((*scratch).conn_key, (*scratch).now, (*scratch).continuations + 1) };
    unsafe { (*scratch).continuations = depth };
    let Some(conn) = CONNS.get_ptr_mut(&key) else { return 0 };
    // SAFETY: a valid map value pointer for the duration of the program.
    let conn = unsafe { &mut *conn };
    if conn.proto == metrics_common::conn::PROTO_HTTP2 {
        return crate::framing_h2::continue_walk(ctx, key, conn, depth);
    }
    if depth == 1 && wants_head(&conn.response) && unsafe { (*scratch).head_tried } == 0 {
        let r = fast_head(scratch, &mut conn.response);
        if r != STEP_MORE {
            framing_outcome(conn, r, now);
            return 0;
        }
    }
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
