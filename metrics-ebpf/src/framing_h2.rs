//! HTTP/2 on the hot path. A new connection whose first request bytes are
//! the client preface (`PRI * HTTP/2.0...`), or whose first response bytes
//! are a server SETTINGS frame, is marked `PROTO_HTTP2`; from then on each
//! call's bytes are walked frame by frame — 9-byte frame headers read,
//! payloads skipped — in a bounded number of steps per call. No HPACK: a
//! stream is a request when the client opens it (HEADERS on a new odd
//! stream id), and a response's status is read when the encoder sent
//! `:status` from the static table or as a literal (what nginx, Go and
//! hyper do); otherwise it is counted as undecoded. Per-stream latency needs
//! per-stream state: it is left to the audit path.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated::bpf_probe_read_user as read_user_raw},
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use metrics_common::{
    conn::{
        CONN_PREEXISTING, ConnState, PROTO_HTTP2, PROTO_UNCLASSIFIED, PROTO_UNDETERMINED, SIDE_CLIENT, SIDE_UPSTREAM,
    },
    counters as c,
    maps::conn_key,
};

use crate::{
    ctx::CallReturn,
    maps::{CALL_READ_IOV, CALL_WRITE_IOV, COUNTERS, Call, PROVIDER_FAILED, PROVIDER_REQUESTS, add},
    record::{provider_slot, status_class},
    sampling::sample_request,
    scratch::Scratch,
};

/// The client preface's first 8 bytes.
const PREFACE_START: [u8; 8] = *b"PRI * HT";
const PREFACE_LEN: u32 = 24;
const FRAME_HEADER_LEN: u64 = 9;
/// Steps per program run: each reads one frame header (or its part in one
/// iovec), skips one run of payload, or moves to the next iovec.
const WALK_STEPS: u32 = 8;
/// Runs of the continuation per call (the kernel allows 33 tail calls).
const MAX_CONTINUATIONS: u32 = 31;
/// iovecs looked at per call.
const MAX_IOV: u64 = 64;

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// Walk state of one HTTP/2 connection, per direction (0: requests, the
/// client's frames; 1: responses).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct H2Walk {
    /// Payload bytes of the current frame (or of the preface) still to pass.
    left: [u32; 2],
    /// Bytes of the current frame header read so far.
    have: [u32; 2],
    /// Highest stream id the client opened.
    max_stream: u32,
    /// Non-zero when a direction lost its frame boundaries.
    lost: [u32; 2],
    /// A response HEADERS frame whose payload starts in the next iovec or
    /// call: its flags | `STATUS_PENDING`, for reading `:status` there.
    status_pending: u32,
    /// Frame header bytes (the first 9) of each direction; room for a
    /// masked read at any `have`.
    header: [[u8; 32]; 2],
}

#[map]
static H2_WALKS: LruHashMap<u64, H2Walk> = LruHashMap::with_max_entries(16_384, 0);

/// Where the walk is in the bytes of one call.
#[repr(C)]
#[derive(Clone, Copy)]
struct Cursor {
    iov: u64,
    iov_count: u64,
    iov_next: u64,
    seg_ptr: u64,
    seg_len: u64,
    seg_off: u64,
    /// Bytes of the call not yet walked.
    left: u64,
    dir: u64,
}

#[map]
static H2_TEMPLATE: PerCpuArray<H2Walk> = PerCpuArray::with_max_entries(1, 0);

#[map]
static H2_CURSOR: PerCpuArray<Cursor> = PerCpuArray::with_max_entries(1, 0);

/// Reads a field of map memory (volatile: the verifier then sees an
/// unknown value at each step and prunes, and nothing is copied to the stack).
macro_rules! get {
    ($place:expr) => {{
        #[allow(unused_unsafe, reason = "used inside and outside unsafe blocks")]
        // SAFETY: the place is inside a map value valid for the whole program.
        let value = unsafe { core::ptr::read_volatile(core::ptr::addr_of!($place)) };
        value
    }};
}
macro_rules! set {
    ($place:expr, $value:expr) => {{
        let value = $value;
        // SAFETY: as for `get`.
        unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!($place), value) }
    }};
}

/// Moves the cursor to the call's next iovec; false when there is none.
#[inline(always)]
fn next_segment(cur: *mut Cursor) -> bool {
    let (iov, next) = (get!((*cur).iov), get!((*cur).iov_next));
    if iov == 0 || next >= get!((*cur).iov_count) || next >= MAX_IOV {
        return false;
    }
    set!((*cur).iov_next, next + 1);
    // SAFETY: reading user memory through the helper.
    let Ok([base, len]) = (unsafe { bpf_probe_read_user((iov + next * 16) as *const [u64; 2]) }) else {
        return false;
    };
    let left = get!((*cur).left);
    set!((*cur).seg_ptr, base);
    set!((*cur).seg_len, if len < left { len } else { left });
    set!((*cur).seg_off, 0);
    true
}

/// `n` bytes of the current iovec were walked.
#[inline(always)]
fn consume(cur: *mut Cursor, n: u64) {
    let left = get!((*cur).left);
    set!((*cur).seg_off, get!((*cur).seg_off) + n);
    set!((*cur).left, left - if n < left { n } else { left });
}

/// The call's bytes belong to HTTP/2 (a connection already marked, or one
/// that starts here): they are walked and true is returned. False leaves
/// them to the HTTP/1.x engine.
#[inline(always)]
pub fn claims(
    scratch: *mut Scratch,
    conn: &mut ConnState,
    call: &Call,
    n: u64,
    is_read: bool,
    first: &[u8; 8],
    first_len: u64,
) -> bool {
    let request_direction = (conn.side == SIDE_CLIENT) == is_read;
    if conn.proto != PROTO_HTTP2 {
        if conn.proto != PROTO_UNDETERMINED || conn.flags & CONN_PREEXISTING != 0 || first_len < 8 {
            return false;
        }
        let preface = request_direction && *first == PREFACE_START;
        // length < 64 KiB, type SETTINGS, no flags, stream 0.
        let settings = !request_direction && first[0] == 0 && first[3] == 4 && first[4] == 0 && first[5] == 0;
        let settings = settings && first[6] == 0 && first[7] == 0;
        if !(preface || settings) || !starts(conn, call.fd) {
            return false;
        }
    }
    prepare_walk(scratch, call, n, if request_direction { 0 } else { 1 });
    true
}

/// Marks a new connection HTTP/2: its walk expects the client preface, and
/// its capture is decided once, for the whole connection (HPACK needs every
/// header block, so an HTTP/2 connection is captured whole or not at all).
#[inline(always)]
fn starts(conn: &mut ConnState, fd: u32) -> bool {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // Built in per-CPU memory: the callers' stacks have no room for it.
    let Some(walk) = H2_TEMPLATE.get_ptr_mut(0) else { return false };
    set!((*walk).left, [PREFACE_LEN, 0]);
    set!((*walk).have, [0, 0]);
    set!((*walk).max_stream, 0);
    set!((*walk).lost, [0, 0]);
    set!((*walk).status_pending, 0);
    // SAFETY: a map value pointer.
    if H2_WALKS.insert(&conn_key(tgid, fd), unsafe { &*walk }, 0).is_err() {
        return false;
    }
    conn.proto = PROTO_HTTP2;
    add(&COUNTERS, c::H2_CONNECTIONS, 1);
    sample_request(conn);
    true
}

/// Sets up the walk of one call's `n` bytes in direction `dir`; it runs in
/// the parse continuation program (`continue_walk`), which has its own
/// verifier budget and can chain itself for calls with many frames.
#[inline(always)]
fn prepare_walk(scratch: *mut Scratch, call: &Call, n: u64, dir: u64) {
    let Some(cur) = H2_CURSOR.get_ptr_mut(0) else { return };
    let iov = call.kind == CALL_READ_IOV || call.kind == CALL_WRITE_IOV;
    set!((*cur).iov, if iov { call.ptr } else { 0 });
    set!((*cur).iov_count, if iov { call.count } else { 0 });
    set!((*cur).iov_next, 0);
    set!((*cur).seg_ptr, call.ptr);
    set!((*cur).seg_len, if iov { 0 } else { n });
    set!((*cur).seg_off, 0);
    set!((*cur).left, n);
    set!((*cur).dir, dir);
    let key = conn_key((bpf_get_current_pid_tgid() >> 32) as u32, call.fd);
    set!((*scratch).conn_key, key);
    set!((*scratch).continuations, 0);
    set!((*scratch).parse_pending, 1);
}

/// The parse continuation for an HTTP/2 connection: `WALK_STEPS` steps of
/// the walk, then itself again while bytes remain (up to
/// `MAX_CONTINUATIONS` runs); beyond, the direction's frame boundaries are
/// lost and counted.
#[inline(always)]
pub fn continue_walk<C: CallReturn>(ctx: &C, key: u64, conn: &mut ConnState, depth: u32) -> u32 {
    let Some(w) = H2_WALKS.get_ptr_mut(&key) else {
        // Its walk state was evicted (more than 16,384 HTTP/2 connections):
        // frame boundaries are gone; counted once, then left unclassified.
        conn.proto = PROTO_UNCLASSIFIED;
        add(&COUNTERS, c::H2_FRAMING_LOST, 1);
        return 0;
    };
    let Some(cur) = H2_CURSOR.get_ptr_mut(0) else { return 0 };
    let dir = (get!((*cur).dir) & 1) as usize;
    if get!((*w).lost[dir]) != 0 {
        return 0;
    }
    let mut r = STEP_MORE;
    for _ in 0..WALK_STEPS {
        r = step(cur, w, conn);
        if r != STEP_MORE {
            break;
        }
    }
    if r == STEP_MORE && get!((*cur).left) != 0 && depth < MAX_CONTINUATIONS {
        ctx.continue_parsing();
    }
    if r == STEP_LOST || get!((*cur).left) != 0 {
        set!((*w).lost[dir], 1);
        add(&COUNTERS, c::H2_FRAMING_LOST, 1);
    }
    0
}

const STEP_DONE: u32 = 0;
const STEP_MORE: u32 = 1;
const STEP_LOST: u32 = 2;

/// One step: skip payload within one iovec, read (part of) a frame header,
/// or move to the next iovec.
#[inline(always)]
fn step(cur: *mut Cursor, w: *mut H2Walk, conn: &mut ConnState) -> u32 {
    let (left_in_call, seg_off, seg_len) = (get!((*cur).left), get!((*cur).seg_off), get!((*cur).seg_len));
    if left_in_call == 0 {
        return STEP_DONE;
    }
    if seg_off >= seg_len {
        return if next_segment(cur) { STEP_MORE } else { STEP_LOST };
    }
    let avail = seg_len - seg_off;
    let dir = (get!((*cur).dir) & 1) as usize;
    let left = get!((*w).left[dir]) as u64;
    if left > 0 {
        let pending = get!((*w).status_pending);
        if dir == 1 && pending != 0 {
            // The payload of a response HEADERS frame starts here.
            set!((*w).status_pending, 0);
            let f = Frame { len: left as u32, kind: HEADERS, flags: pending as u8, stream: 0 };
            headers_status(conn, f, get!((*cur).seg_ptr) + seg_off, avail);
        }
        let take = if left < avail { left } else { avail };
        consume(cur, take);
        set!((*w).left[dir], (left - take) as u32);
        return STEP_MORE;
    }
    let have = get!((*w).have[dir]) as u64;
    let have = if have < FRAME_HEADER_LEN { have } else { 0 };
    let need = FRAME_HEADER_LEN - have;
    let take = (if need < avail { need } else { avail }) & 15;
    let src = get!((*cur).seg_ptr) + seg_off;
    // SAFETY: a map value pointer; have <= 8 and take <= 15 stay inside
    // the 32-byte header buffer.
    let header = unsafe { core::ptr::addr_of_mut!((*w).header[dir]) } as *mut u8;
    let failed = unsafe { read_user_raw(header.add((have & 15) as usize) as *mut _, take as u32, src as *const _) };
    if failed != 0 {
        return STEP_LOST;
    }
    consume(cur, take);
    let have = have + take;
    if have < FRAME_HEADER_LEN {
        set!((*w).have[dir], have as u32);
        return STEP_MORE;
    }
    set!((*w).have[dir], 0);
    // SAFETY: as above.
    let h = |i: usize| unsafe { core::ptr::read_volatile(header.add(i)) };
    let frame = Frame {
        len: (h(0) as u32) << 16 | (h(1) as u32) << 8 | h(2) as u32,
        kind: h(3),
        flags: h(4),
        stream: u32::from_be_bytes([h(5) & 0x7f, h(6), h(7), h(8)]),
    };
    set!((*w).left[dir], frame.len);
    if dir == 0 {
        client_frame(conn, w, frame);
    } else {
        // The payload's first bytes, for `:status`, when this iovec holds them.
        server_frame(conn, w, frame, src + take, avail - take);
    }
    STEP_MORE
}

#[derive(Clone, Copy)]
struct Frame {
    len: u32,
    kind: u8,
    flags: u8,
    stream: u32,
}

/// A frame the client side sent (the proxy read it on a client connection,
/// wrote it on an upstream one).
#[inline(always)]
fn client_frame(conn: &ConnState, w: *mut H2Walk, f: Frame) {
    if f.kind == HEADERS && f.stream & 1 == 1 && f.stream > unsafe { (*w).max_stream } {
        unsafe { (*w).max_stream = f.stream };
        add(&COUNTERS, c::H2_STREAMS_OPENED, 1);
        if conn.side == SIDE_CLIENT {
            add(&COUNTERS, c::REQUESTS_TOTAL, 1);
        } else if conn.side == SIDE_UPSTREAM {
            add(&PROVIDER_REQUESTS, provider_slot(conn), 1);
        }
    } else {
        common(conn, f, true);
    }
}

/// A frame the server side sent.
#[inline(always)]
fn server_frame(conn: &ConnState, w: *mut H2Walk, f: Frame, payload: u64, avail: u64) {
    if f.kind == HEADERS && f.len > 0 {
        if avail == 0 {
            // nginx writes the frame header and the block as two iovecs.
            set!((*w).status_pending, f.flags as u32 | STATUS_PENDING);
        } else {
            headers_status(conn, f, payload, avail);
        }
    }
    if (f.kind == HEADERS || f.kind == DATA) && f.flags & FLAG_END_STREAM != 0 {
        add(&COUNTERS, c::H2_STREAMS_ENDED, 1);
    }
    common(conn, f, false);
}

/// Marks `H2Walk::status_pending`.
const STATUS_PENDING: u32 = 0x100;

/// Counts the status of a response HEADERS frame whose payload starts at
/// `payload` (`avail` bytes readable there).
#[inline(always)]
fn headers_status(conn: &ConnState, f: Frame, payload: u64, avail: u64) {
    let status = status_of(f, payload, avail);
    if status >= 200 {
        response_status(conn, status);
    } else if status == 0 && f.flags & FLAG_END_STREAM == 0 {
        // Not trailers (those end the stream) and not readable.
        add(&COUNTERS, c::H2_STATUS_UNDECODED, 1);
    }
}

/// DATA bytes and RST_STREAM, either direction.
#[inline(always)]
fn common(conn: &ConnState, f: Frame, from_client: bool) {
    if f.kind == DATA {
        // The proxy reads the client side's frames on a client connection.
        let read = from_client == (conn.side == SIDE_CLIENT);
        add(&COUNTERS, if read { c::H2_DATA_BYTES_RECEIVED } else { c::H2_DATA_BYTES_SENT }, f.len as u64);
    } else if f.kind == RST_STREAM {
        add(&COUNTERS, c::H2_RST_STREAMS, 1);
    }
}

/// The `:status` of a response HEADERS frame whose payload starts at
/// `payload` (`avail` bytes readable there), when it is the block's first
/// field as a static-table index (200, 204, 206, 304, 400, 404, 500) or a
/// literal whose name is a static `:status` entry (indexes 8 to 14: Go's
/// encoder names the last one) and a 3-digit raw value, after an optional
/// dynamic table size update (`size_update_len`); 1 for an interim (1xx)
/// status, 0 when unreadable.
#[inline(always)]
fn status_of(f: Frame, payload: u64, avail: u64) -> u32 {
    let skip = if f.flags & FLAG_PADDED != 0 { 1 } else { 0 } + if f.flags & FLAG_PRIORITY != 0 { 5 } else { 0 };
    if avail < skip + 1 || (f.len as u64) < skip + 1 {
        return 0;
    }
    let at = (payload + skip) as *const u8;
    // SAFETY: reading user memory through the helper. A block shorter than
    // 9 bytes at the end of a mapping is read again with 5 bytes.
    let b = match unsafe { bpf_probe_read_user(at as *const [u8; 9]) } {
        Ok(b) => b,
        Err(_) => match unsafe { bpf_probe_read_user(at as *const [u8; 5]) } {
            Ok(b) => [b[0], b[1], b[2], b[3], b[4], 0, 0, 0, 0],
            Err(_) => return 0,
        },
    };
    let b = match size_update_len(b[0], b[1], b[2], b[3]) {
        0 => [b[0], b[1], b[2], b[3], b[4]],
        1 => [b[1], b[2], b[3], b[4], b[5]],
        2 => [b[2], b[3], b[4], b[5], b[6]],
        3 => [b[3], b[4], b[5], b[6], b[7]],
        4 => [b[4], b[5], b[6], b[7], b[8]],
        _ => return 0,
    };
    let status = match b[0] {
        0x88 => 200,
        0x89 => 204,
        0x8a => 206,
        0x8b => 304,
        0x8c => 400,
        0x8d => 404,
        0x8e => 500,
        // Literal with incremental indexing / without / never indexed, the
        // name one of the static `:status` entries (8..=14).
        0x48..=0x4e | 0x08..=0x0e | 0x18..=0x1e if b[1] == 3 => {
            let digit = |d: u8| if d.is_ascii_digit() { Some((d - b'0') as u32) } else { None };
            match (digit(b[2]), digit(b[3]), digit(b[4])) {
                (Some(x), Some(y), Some(z)) => x * 100 + y * 10 + z,
                _ => 0,
            }
        }
        _ => 0,
    };
    if (100..200).contains(&status) { 1 } else { status }
}

/// The length of a dynamic table size update starting a header block
/// (`001xxxxx`, a 5-bit prefix integer: nginx sends one byte to size 0, Go
/// three bytes to size 4096 on a connection's first block); 0 when the
/// block starts with something else, 5 when longer than 4 bytes.
#[inline(always)]
fn size_update_len(b0: u8, b1: u8, b2: u8, b3: u8) -> usize {
    if b0 & 0xe0 != 0x20 {
        0
    } else if b0 != 0x3f {
        1
    } else if b1 & 0x80 == 0 {
        2
    } else if b2 & 0x80 == 0 {
        3
    } else if b3 & 0x80 == 0 {
        4
    } else {
        5
    }
}

/// A final response status: the status class (client side) and failures.
#[inline(always)]
fn response_status(conn: &ConnState, status: u32) {
    let failed = status >= 400;
    if conn.side == SIDE_CLIENT {
        let class = status_class(status);
        add(&COUNTERS, class, 1);
        if failed {
            add(&COUNTERS, c::REQUESTS_FAILED, 1);
        }
    } else if conn.side == SIDE_UPSTREAM && failed {
        add(&PROVIDER_FAILED, provider_slot(conn), 1);
    }
}
