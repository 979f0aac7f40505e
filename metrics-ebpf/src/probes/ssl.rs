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
//! - memory BIOs (Node.js): the runtime reads ciphertext from the socket
//!   itself, then feeds it to OpenSSL and calls `SSL_read` on the same
//!   thread. A read of TLS ciphertext outside any SSL call is remembered per
//!   thread, and the next `SSL_read`/`SSL_do_handshake` on that thread claims
//!   it: that `SSL*` is tied to that socket. A write cannot tie (its
//!   ciphertext leaves after the SSL call), but the handshake's reads always
//!   come first, so a connection is tied before its first request.
//!
//! Hooked: `int SSL_read(SSL *s, void *buf, int num)`, `int SSL_write(SSL *s,
//! const void *buf, int num)`, `int SSL_read_ex(SSL *s, void *buf, size_t num,
//! size_t *readbytes)`, `int SSL_write_ex(..., size_t *written)`,
//! `int SSL_do_handshake(SSL *s)`, `int SSL_get_error(const SSL *s, int ret)`
//! (return only).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{map, uprobe, uretprobe},
    maps::LruHashMap,
    programs::{ProbeContext, RetProbeContext},
};
use metrics_common::conn::CONN_TLS;

use crate::{
    ctx::{CallArgs, CallReturn},
    data::{plaintext_peer_closed, process_plaintext},
    maps::{CALL_READ_BUF, CALL_WRITE_BUF, CONNS, is_target},
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

/// A read of TLS ciphertext outside any SSL call, by pid_tgid: the socket
/// the thread's next SSL read or handshake belongs to (memory BIOs).
#[map]
pub static CIPHERTEXT_READS: LruHashMap<u64, u32> = LruHashMap::with_max_entries(16_384, 0);

/// The `SSL*` a memory-BIO connection was tied to, by `CONNS` key, with the
/// connection's id (an entry of a closed connection whose fd was reused does
/// not match the new connection's id).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SslOwner {
    pub ssl: u64,
    pub conn_id: u64,
}

#[map]
pub static SSL_OF_CONN: LruHashMap<u64, SslOwner> = LruHashMap::with_max_entries(65_536, 0);

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
    let mut call = call;
    if call.kind == CALL_READ_BUF
        && let Some(fd) = claim_ciphertext_read(id, call.ssl)
    {
        call.fd = fd;
    }
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
    let id = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied.
    if let Some(ssl) = unsafe { SSL_HANDSHAKES.get(&id) }.copied() {
        let _ = SSL_HANDSHAKES.remove(&id);
        let _ = claim_ciphertext_read(id, ssl);
    }
    0
}

/// A socket read of TLS ciphertext returned on thread `id`: outside any SSL
/// call it was made by the runtime for a memory BIO; remember its socket.
#[inline(always)]
pub fn note_ciphertext_read(id: u64, fd: u32) {
    // SAFETY: only tested for presence.
    if unsafe { SSL_CALLS.get(&id).is_some() || SSL_HANDSHAKES.get(&id).is_some() } {
        return; // nested in an SSL call: tied by `note_nested_socket_call`
    }
    let _ = CIPHERTEXT_READS.insert(&id, &fd, 0);
}

/// Ties `ssl` to the socket of the ciphertext this thread read last, if any
/// (and forgets that read: it was consumed). The newest read wins over an
/// older tie, so an `SSL*` address reused for a new connection is re-tied,
/// except that a connection already tied to another live `SSL*` is never
/// taken from it: a read the runtime left unclaimed (its SSL call came
/// later, or never) must not tie the next `SSL*` the thread uses — a new
/// connection's first `SSL_read` runs before any of its own bytes arrive.
#[inline(always)]
fn claim_ciphertext_read(id: u64, ssl: u64) -> Option<u32> {
    // SAFETY: the value is copied.
    let fd = unsafe { CIPHERTEXT_READS.get(&id) }.copied()?;
    let _ = CIPHERTEXT_READS.remove(&id);
    let tgid = (id >> 32) as u32;
    let key = metrics_common::maps::conn_key(tgid, fd);
    if let Some(conn) = CONNS.get_ptr_mut(&key) {
        // SAFETY: a valid map value pointer.
        let conn = unsafe { &mut *conn };
        // SAFETY: the value is copied.
        if let Some(owner) = unsafe { SSL_OF_CONN.get(&key) }.copied()
            && owner.conn_id == conn.conn_id
            && owner.ssl != ssl
        {
            return None; // that socket belongs to another SSL*
        }
        let _ = SSL_OF_CONN.insert(&key, &SslOwner { ssl, conn_id: conn.conn_id }, 0);
        conn.flags |= CONN_TLS;
    }
    let _ = SSL_FDS.insert(&ssl_key(tgid, ssl), &fd, 0);
    Some(fd)
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
