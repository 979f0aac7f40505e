//! TLS plaintext from OpenSSL, in every attach mode: uprobes on
//! `SSL_read`/`SSL_write` (and the `_ex` forms) in the libssl the target
//! loads or in its executable. The plaintext goes through the same HTTP/1.1
//! state machine as clear-text sockets and is counted as the connection's
//! HTTP bytes; the ciphertext on the socket is counted as TLS bytes and
//! never parsed.
//!
//! Tying an `SSL*` to its socket:
//! - socket BIOs (nginx, most C programs): while a thread is inside an SSL
//!   call (or `SSL_do_handshake`), the socket calls OpenSSL makes are nested
//!   in it; such a nested call records `SSL* -> fd` and marks the connection
//!   TLS.
//! - memory BIOs (Node.js, Python's `ssl` under asyncio/uvloop): OpenSSL
//!   writes its records into a memory BIO, and the runtime sends them on the
//!   socket itself, after the SSL call, possibly after other connections'
//!   calls. A `BIO_write` inside an SSL call or handshake keeps a print of the
//!   record it writes (the 16 bytes after the record header) with the `SSL*`;
//!   the socket write outside any SSL call that begins with that record ties
//!   the `SSL*` to its socket. A connection's first bytes are such a write
//!   (the ClientHello, or a server's first flight), so it is tied before any
//!   plaintext, whatever order the runtime reads, decrypts and sends in.
//!   (Reads cannot tie: an event loop reads several sockets before it
//!   decrypts any, so "the next SSL call after a read" is not that read's.)
//!
//! Hooked: `int SSL_read(SSL *s, void *buf, int num)`, `int SSL_write(SSL *s,
//! const void *buf, int num)`, `int SSL_read_ex(SSL *s, void *buf, size_t num,
//! size_t *readbytes)`, `int SSL_write_ex(..., size_t *written)`,
//! `int SSL_do_handshake(SSL *s)`, `int SSL_get_error(const SSL *s, int ret)`
//! (return only), and libcrypto's `int BIO_write(BIO *b, const void *data,
//! int dlen)` (entry only).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{map, uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};
use metrics_common::conn::{CONN_TLS, ConnState};

use crate::{
    ctx::{CallArgs, CallReturn},
    data::{plaintext_peer_closed, process_plaintext},
    maps::{CALL_READ_BUF, CALL_WRITE_BUF, CALL_WRITE_IOV, CONNS, Call, is_target},
};

/// An SSL call in progress on a thread.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SslCall {
    pub ssl: u64,
    pub buf: u64,
    /// `_ex` forms: where the byte count is written; 0 otherwise.
    pub count_ptr: u64,
    /// `CALL_READ_BUF` or `CALL_WRITE_BUF`.
    pub kind: u32,
    /// The socket seen in a nested call, or u32::MAX.
    pub fd: u32,
}

/// SSL calls in progress, by pid_tgid.
#[map]
pub static SSL_CALLS: LruHashMap<u64, SslCall> = LruHashMap::with_max_entries(16_384, 0);
/// Handshakes in progress, by pid_tgid: the `SSL*`.
#[map]
pub static SSL_HANDSHAKES: LruHashMap<u64, u64> = LruHashMap::with_max_entries(16_384, 0);
/// An `SSL*` of one process (addresses repeat across processes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SslKey {
    pub tgid: u32,
    pub _pad: u32,
    pub ssl: u64,
}

/// `SSL*` -> socket fd.
#[map]
pub static SSL_FDS: LruHashMap<SslKey, u32> = LruHashMap::with_max_entries(65_536, 0);

/// An `SSL_read_ex` that failed on a tied socket, by pid_tgid: its fd, until
/// the `SSL_get_error` the caller makes next says whether the peer closed
/// the TLS session (`_ex` returns 0 for every failure, "want read" included).
#[map]
pub static SSL_EX_READ_FAILED: LruHashMap<u64, u32> = LruHashMap::with_max_entries(16_384, 0);

/// `SSL_get_error`'s answer when the peer sent close_notify.
const SSL_ERROR_ZERO_RETURN: i32 = 6;

/// 16 bytes of a TLS record, after its 5-byte header, in one process: the
/// start of a record's ciphertext (or of a ClientHello's random), unique to
/// one record of one connection.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RecordPrint {
    pub tgid: u32,
    pub _pad: u32,
    pub bytes: [u8; 16],
}

/// TLS record header: type, version, length.
const RECORD_HEADER_LEN: u64 = 5;
/// Record content types: change_cipher_spec, alert, handshake,
/// application_data, heartbeat.
const TLS_CONTENT_TYPES: core::ops::RangeInclusive<u8> = 20..=24;
const TLS_MAJOR_VERSION: u8 = 3;
/// A write shorter than this holds no full `RecordPrint`.
const PRINTED_LEN: u64 = RECORD_HEADER_LEN + 16;

/// Records an SSL call wrote into its BIO (memory BIOs: still to be sent by
/// the runtime), by `RecordPrint`: the `SSL*` that wrote them.
#[map]
pub static RECORDS_WRITTEN: LruHashMap<RecordPrint, u64> = LruHashMap::with_max_entries(16_384, 0);

fn ssl_key(tgid: u32, ssl: u64) -> SslKey {
    SslKey { tgid, _pad: 0, ssl }
}

#[inline(always)]
fn ssl_entered<A: CallArgs>(ctx: &A, kind: u32, ex: bool) {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if !is_target(tgid) {
        return;
    }
    let ssl = ctx.arg_u64(0);
    // A failed `_ex` read not followed by `SSL_get_error`: forgotten.
    let _ = SSL_EX_READ_FAILED.remove(&id);
    // SAFETY: the value is copied.
    let fd = unsafe { SSL_FDS.get(&ssl_key(tgid, ssl)) }.copied().unwrap_or(u32::MAX);
    let call = SslCall { ssl, buf: ctx.arg_u64(1), count_ptr: if ex { ctx.arg_u64(3) } else { 0 }, kind, fd };
    let _ = SSL_CALLS.insert(&id, &call, 0);
}

#[uprobe]
pub fn enter_ssl_read(ctx: ProbeContext) -> u32 {
    ssl_entered(&ctx, CALL_READ_BUF, false);
    0
}

#[uprobe]
pub fn enter_ssl_write(ctx: ProbeContext) -> u32 {
    ssl_entered(&ctx, CALL_WRITE_BUF, false);
    0
}

#[uprobe]
pub fn enter_ssl_read_ex(ctx: ProbeContext) -> u32 {
    ssl_entered(&ctx, CALL_READ_BUF, true);
    0
}

#[uprobe]
pub fn enter_ssl_write_ex(ctx: ProbeContext) -> u32 {
    ssl_entered(&ctx, CALL_WRITE_BUF, true);
    0
}

/// Return of the four SSL data calls.
#[uretprobe]
pub fn return_ssl(ctx: RetProbeContext) -> u32 {
    ssl_returned(&ctx)
}

#[inline(always)]
fn ssl_returned<C: CallReturn>(ctx: &C) -> u32 {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(call) = (unsafe { SSL_CALLS.get(&id) }).copied() else { return 0 };
    let _ = SSL_CALLS.remove(&id);
    // All four return an `int`: only the low 32 bits of the register count.
    let ret = ctx.return_value() as i32 as i64;
    let n = if call.count_ptr != 0 {
        if ret != 1 {
            if call.kind == CALL_READ_BUF && call.fd != u32::MAX {
                // Failed: a close or "want read"; `SSL_get_error` tells.
                let _ = SSL_EX_READ_FAILED.insert(&id, &call.fd, 0);
            }
            return 0;
        }
        // SAFETY: reading user memory through the helper.
        unsafe { bpf_probe_read_user(call.count_ptr as *const u64) }.unwrap_or(0)
    } else if ret > 0 {
        ret as u64
    } else {
        if ret == 0 && call.kind == CALL_READ_BUF && call.fd != u32::MAX {
            // SSL_read returned 0: the peer closed the TLS session (a body
            // framed by the connection's close ends here).
            plaintext_peer_closed((id >> 32) as u32, call.fd);
        }
        return 0;
    };
    if call.fd == u32::MAX || n == 0 {
        return 0;
    }
    process_plaintext(ctx, (id >> 32) as u32, call.fd, call.kind, call.buf, n)
}

/// Return of `int SSL_get_error(const SSL *s, int ret)`: after a failed
/// `SSL_read_ex` on this thread, `SSL_ERROR_ZERO_RETURN` means the peer
/// closed the TLS session (a body framed by the connection's close ends
/// here), as `SSL_read` returning 0 does.
#[uretprobe]
pub fn return_ssl_get_error(ctx: RetProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(fd) = (unsafe { SSL_EX_READ_FAILED.get(&id) }).copied() else { return 0 };
    let _ = SSL_EX_READ_FAILED.remove(&id);
    if ctx.return_value() as i32 == SSL_ERROR_ZERO_RETURN {
        plaintext_peer_closed((id >> 32) as u32, fd);
    }
    0
}

/// int SSL_do_handshake(SSL *s): socket calls inside it belong to `s`.
#[uprobe]
pub fn enter_ssl_handshake(ctx: ProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    if is_target((id >> 32) as u32) {
        let _ = SSL_HANDSHAKES.insert(&id, &ctx.arg_u64(0), 0);
    }
    0
}

#[uretprobe]
pub fn return_ssl_handshake(_ctx: RetProbeContext) -> u32 {
    let _ = SSL_HANDSHAKES.remove(&bpf_get_current_pid_tgid());
    0
}

/// The `SSL*` of the SSL call or handshake thread `id` is inside, if any.
#[inline(always)]
fn ssl_in_progress(id: u64) -> Option<u64> {
    // SAFETY: the values are copied.
    if let Some(call) = unsafe { SSL_CALLS.get(&id) } {
        return Some(call.ssl);
    }
    unsafe { SSL_HANDSHAKES.get(&id) }.copied()
}

/// The `RecordPrint` of the bytes at `ptr`, when they begin with a TLS
/// record header (content type 20..=24, protocol major 3). OpenSSL also
/// writes bare handshake messages into a memory BIO of its own (the
/// transcript kept until the hash is chosen): those are not records.
#[inline(always)]
fn record_print(tgid: u32, ptr: u64) -> Option<RecordPrint> {
    // SAFETY: reading user memory through the helper.
    let head = unsafe { bpf_probe_read_user(ptr as *const [u8; PRINTED_LEN as usize]) }.ok()?;
    if !(TLS_CONTENT_TYPES.contains(&head[0]) && head[1] == TLS_MAJOR_VERSION) {
        return None;
    }
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&head[RECORD_HEADER_LEN as usize..]);
    Some(RecordPrint { tgid, _pad: 0, bytes })
}

/// int BIO_write(BIO *b, const void *data, int dlen): inside an SSL call or
/// handshake, OpenSSL writing the records it made (one or more whole
/// records per call) into the `SSL*`'s write BIO. Their print is kept, so
/// that the socket write that sends them ties that `SSL*` to its socket.
#[uprobe]
pub fn enter_bio_write(ctx: ProbeContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if !is_target(tgid) || (ctx.arg_u64(2) as i32 as i64) < PRINTED_LEN as i64 {
        return 0;
    }
    let Some(ssl) = ssl_in_progress(id) else { return 0 };
    if let Some(print) = record_print(tgid, ctx.arg_u64(1)) {
        let _ = RECORDS_WRITTEN.insert(&print, &ssl, 0);
    }
    0
}

/// A socket write of `n` bytes of TLS ciphertext (`call`) returned on thread
/// `id`. Outside any SSL call it is a runtime sending what a memory BIO
/// holds: when it begins with a record an SSL call wrote (`RECORDS_WRITTEN`),
/// that `SSL*` is tied to this socket. The match is by content, so it holds
/// whatever the runtime did between the SSL call and the send (other
/// connections' calls, queued writes), and it happens at the connection's
/// first bytes (the ClientHello, or a server's first flight), before any
/// plaintext. An `SSL*` address reused by a new connection is re-tied by
/// that connection's first write.
#[inline(always)]
pub fn note_ciphertext_write(id: u64, call: &Call, n: u64, conn: &mut ConnState) {
    if n < PRINTED_LEN || ssl_in_progress(id).is_some() {
        return; // too short, or nested in an SSL call: tied by `note_nested_socket_call`
    }
    let start = if call.kind == CALL_WRITE_IOV {
        // The first iovec: { base, len }.
        // SAFETY: reading user memory through the helper.
        match unsafe { bpf_probe_read_user(call.ptr as *const [u64; 2]) } {
            Ok([base, len]) if len >= PRINTED_LEN => base,
            _ => return,
        }
    } else if call.kind == CALL_WRITE_BUF {
        call.ptr
    } else {
        return;
    };
    let tgid = (id >> 32) as u32;
    let Some(print) = record_print(tgid, start) else { return };
    // SAFETY: the value is copied.
    let Some(ssl) = unsafe { RECORDS_WRITTEN.get(&print) }.copied() else { return };
    let _ = RECORDS_WRITTEN.remove(&print);
    let _ = SSL_FDS.insert(&ssl_key(tgid, ssl), &call.fd, 0);
    conn.flags |= CONN_TLS;
}

/// Called at the entry of every socket call of a target: inside an SSL call
/// or handshake, ties the `SSL*` to `fd` and marks the connection TLS.
#[inline(always)]
pub fn note_nested_socket_call(id: u64, tgid: u32, fd: u32) {
    let ssl = if let Some(call) = SSL_CALLS.get_ptr_mut(&id) {
        // SAFETY: a valid map value pointer.
        let call = unsafe { &mut *call };
        call.fd = fd;
        call.ssl
    } else if let Some(ssl) = unsafe { SSL_HANDSHAKES.get(&id) }.copied() {
        ssl
    } else {
        return;
    };
    let _ = SSL_FDS.insert(&ssl_key(tgid, ssl), &fd, 0);
    if let Some(conn) = CONNS.get_ptr_mut(&metrics_common::maps::conn_key(tgid, fd)) {
        // SAFETY: a valid map value pointer.
        unsafe { (*conn).flags |= CONN_TLS };
    }
}
