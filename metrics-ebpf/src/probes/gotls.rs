//! TLS plaintext from Go's crypto/tls, in every attach mode: uprobes on
//! `crypto/tls.(*Conn).Read` and `crypto/tls.(*Conn).Write` in a Go
//! executable (the agent finds them through Go's function table, and their
//! `RET` instructions by decoding their bodies: `metrics-agent/src/gotls`).
//! The plaintext goes through the same HTTP/1.1 logic as OpenSSL's
//! (`data::process_plaintext`).
//!
//! Both are `func (c *Conn) M(b []byte) (int, error)`. Go's register ABI
//! (ABIInternal, Go 1.17 and later, x86-64): at entry the receiver is in
//! RAX, the slice's pointer in RBX and its length in RCX; at a `RET` the
//! `int` is in RAX and the error's type word in RBX; R14 always holds the
//! running goroutine (`g`).
//!
//! No uretprobes: they rewrite the return address on the goroutine's stack,
//! which Go moves when it grows. Uprobes sit on every `RET` instead, and the
//! entry state is keyed by goroutine, not thread: a `Read` that blocks parks
//! its goroutine, which may resume on another thread, while that thread
//! runs other goroutines.
//!
//! Tying `*tls.Conn` to its socket: through the struct, at entry. The
//! layout has been the same since Go 1.9 and still is in 1.25:
//! `tls.Conn.conn` (a `net.Conn` interface: type word, data word) is its
//! first field; for a TCP connection the data word points to a
//! `net.TCPConn`, whose first word is its `*net.netFD`; a `netFD` starts
//! with a `poll.FD`, whose `Sysfd` follows the 16-byte `fdMutex`. The fd
//! read that way is used only when it is a connection the socket hooks
//! already saw carrying TLS records (or tied before), so a `net.Conn` of
//! another type (a wrapper) reads as no socket, never as a wrong one.
//! Register and offset layouts are x86-64's; the agent attaches these
//! probes only to x86-64 executables.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{map, uprobe},
    maps::LruHashMap,
    programs::ProbeContext,
};
use metrics_common::{
    conn::{CONN_TLS, PROTO_TLS},
    maps::{SLOT_CAPTURE, SLOT_PARSE, conn_key},
};

use crate::{
    ctx::CallReturn,
    data::{plaintext_peer_closed, process_plaintext},
    maps::{CALL_READ_BUF, CALL_WRITE_BUF, CONNS, CONTINUE, is_target},
};

/// A `Read` or `Write` in progress on a goroutine.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GoTlsCall {
    pub buf: u64,
    /// `CALL_READ_BUF` or `CALL_WRITE_BUF`.
    pub kind: u32,
    /// The connection's socket.
    pub fd: u32,
}

/// A goroutine of one process (`g` addresses repeat across processes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GoroutineKey {
    pub tgid: u32,
    pub _pad: u32,
    pub g: u64,
}

/// Calls in progress, by goroutine. An entry whose goroutine never returns
/// (it panicked) is overwritten by the next call of a goroutine reusing
/// that `g`, or evicted.
#[map]
pub static GO_TLS_CALLS: LruHashMap<GoroutineKey, GoTlsCall> = LruHashMap::with_max_entries(16_384, 0);

/// Byte offsets in x86-64 `struct pt_regs`.
mod reg {
    pub const R14: usize = 8;
    pub const RBX: usize = 40;
    pub const RAX: usize = 80;
}

/// Layout of the structs followed from `*tls.Conn` to the fd (see the module doc).
const TLS_CONN_NET_CONN_DATA: u64 = 8;
const POLL_FD_SYSFD: u64 = 16;

#[inline(always)]
fn register(ctx: &ProbeContext, offset: usize) -> u64 {
    // SAFETY: a kprobe-type program may load its `pt_regs` context at any
    // aligned offset inside it; `offset` is one of `reg`'s.
    unsafe { *((ctx.regs as *const u8).add(offset) as *const u64) }
}

/// At a `RET` of `Read`/`Write`: the `int` result, and the parsing and capture
/// continuations of the uprobe programs (`CONTINUE`, as OpenSSL's returns).
impl CallReturn for ProbeContext {
    fn return_value(&self) -> i64 {
        register(self, reg::RAX) as i64
    }

    fn continue_parsing(&self) {
        // SAFETY: a tail call does not return on success.
        unsafe { CONTINUE.tail_call(self, SLOT_PARSE) };
    }

    fn capture(&self) {
        // SAFETY: as above.
        unsafe { CONTINUE.tail_call(self, SLOT_CAPTURE) };
    }
}

#[uprobe]
pub fn enter_go_tls_read(ctx: ProbeContext) -> u32 {
    go_tls_entered(&ctx, CALL_READ_BUF);
    0
}

#[uprobe]
pub fn enter_go_tls_write(ctx: ProbeContext) -> u32 {
    go_tls_entered(&ctx, CALL_WRITE_BUF);
    0
}

#[inline(always)]
fn go_tls_entered(ctx: &ProbeContext, kind: u32) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_target(tgid) {
        return;
    }
    let key = GoroutineKey { tgid, _pad: 0, g: register(ctx, reg::R14) };
    let Some(fd) = socket_of(tgid, register(ctx, reg::RAX)) else {
        // Not a TLS socket we follow: a re-entry (after the stack grew) of
        // a call already stashed keeps its entry, any other is forgotten.
        return;
    };
    let call = GoTlsCall { buf: register(ctx, reg::RBX), kind, fd };
    let _ = GO_TLS_CALLS.insert(&key, &call, 0);
}

/// The socket of `*tls.Conn` `conn`, when it is a connection of `tgid`
/// that carries TLS.
#[inline(always)]
fn socket_of(tgid: u32, conn: u64) -> Option<u32> {
    // SAFETY (all three): reading user memory through the helper.
    let data: u64 = unsafe { bpf_probe_read_user((conn + TLS_CONN_NET_CONN_DATA) as *const u64) }.ok()?;
    let netfd: u64 = unsafe { bpf_probe_read_user(data as *const u64) }.ok()?;
    let sysfd: i64 = unsafe { bpf_probe_read_user((netfd + POLL_FD_SYSFD) as *const i64) }.ok()?;
    if !(0..=i32::MAX as i64).contains(&sysfd) {
        return None;
    }
    let fd = sysfd as u32;
    // SAFETY: the value is copied.
    let state = unsafe { CONNS.get(&conn_key(tgid, fd)) }?;
    (state.proto == PROTO_TLS || state.flags & CONN_TLS != 0).then_some(fd)
}

/// Every `RET` of `Read` and `Write`.
#[uprobe]
pub fn return_go_tls(ctx: ProbeContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let key = GoroutineKey { tgid, _pad: 0, g: register(&ctx, reg::R14) };
    // SAFETY: the value is copied out before the entry is removed.
    let Some(call) = (unsafe { GO_TLS_CALLS.get(&key) }).copied() else { return 0 };
    let _ = GO_TLS_CALLS.remove(&key);
    let n = ctx.return_value();
    if n > 0 {
        return process_plaintext(&ctx, tgid, call.fd, call.kind, call.buf, n as u64);
    }
    // Read returned no bytes and an error (io.EOF after the peer's
    // close_notify, or the connection failed): a body framed by the
    // connection's close ends here, as when `SSL_read` returns 0.
    if call.kind == CALL_READ_BUF && register(&ctx, reg::RBX) != 0 {
        plaintext_peer_closed(tgid, call.fd);
    }
    0
}
