//! TLS plaintext from OpenSSL, in every attach mode: uprobes on
//! `SSL_read`/`SSL_write` (and the `_ex` forms) in the libssl the target
//! loads or in its executable. The plaintext goes through the same HTTP/1.1
//! state machine as clear-text sockets and is counted as the connection's
//! HTTP bytes; the ciphertext on the socket is counted as TLS bytes and
//! never parsed. Which socket an `SSL*` belongs to is learnt in
//! `ssl_sockets`.
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
use metrics_common::counters as c;

use crate::{
    ctx::{CallArgs, CallReturn},
    data::{plaintext_peer_closed, process_plaintext},
    maps::{CALL_READ_BUF, CALL_WRITE_BUF, COUNTERS, add, is_target},
    ssl_sockets::{
        PRINTED_LEN, RECORDS_WRITTEN, SSL_CALLS, SSL_FDS, SSL_HANDSHAKES, SslCall, record_print, ssl_in_progress,
        ssl_key,
    },
};

/// An `SSL_read_ex` that failed on a tied socket, by pid_tgid: its fd, until
/// the `SSL_get_error` the caller makes next says whether the peer closed
/// the TLS session (`_ex` returns 0 for every failure, "want read" included).
#[map]
pub static SSL_EX_READ_FAILED: LruHashMap<u64, u32> = LruHashMap::with_max_entries(16_384, 0);

/// `SSL_get_error`'s answer when the peer sent close_notify.
const SSL_ERROR_ZERO_RETURN: i32 = 6;

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
    if n == 0 {
        return 0;
    }
    if call.fd == u32::MAX {
        // No socket is known for this `SSL*`: the bytes are lost, and counted.
        add(&COUNTERS, c::TLS_UNTIED_BYTES, n);
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
