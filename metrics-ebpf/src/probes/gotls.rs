//! TLS plaintext from Go's crypto/tls, in every attach mode: uprobes on
//! `crypto/tls.(*Conn).Read` and `crypto/tls.(*Conn).Write` in a Go
//! executable (the agent finds them through Go's function table, and the
//! probe sites by decoding their bodies: `metrics-agent/src/gotls`). The
//! plaintext goes through the same HTTP/1.1 logic as OpenSSL's
//! (`data::process_plaintext`).
//!
//! Both are `func (c *Conn) M(b []byte) (int, error)`. Go's register ABI
//! (ABIInternal, Go 1.17 and later, x86-64): at entry the receiver is in
//! RAX, the slice's pointer in RBX and its length in RCX; at a `RET` the
//! `int` is in RAX and the error's type word in RBX; R14 always holds the
//! running goroutine (`g`).
//!
//! `Read`: its bytes exist only when it returns. No uretprobes: they
//! rewrite the return address on the goroutine's stack, which Go moves
//! when it grows. Uprobes sit on every `RET` instead, and the entry state is
//! keyed by goroutine, not thread: a `Read` that blocks parks its
//! goroutine, which may resume on another thread, while that thread runs
//! other goroutines.
//!
//! `Write`: its plaintext is taken when it is called, before any of it
//! reaches the socket, so a request written in one `Write` is seen before
//! its answer even when the writing goroutine returns late (blocked on a
//! full socket while the peer already answered, or descheduled): at its
//! `RET` the answer, read by another goroutine, could come first. Go's
//! `Write` sends all of `b` or fails for good: it returns early (0 bytes)
//! only on a closed connection, a failed handshake, an earlier write error
//! or after `CloseWrite`, and an error of `writeRecordLocked` is stored by
//! `halfConn.setErrorLocked` and returned by every later `Write` (Go 1.19
//! to 1.23 alike). So the bytes taken at the call are the bytes the peer
//! gets, except on a connection that can carry nothing more. The probe sits
//! on the instruction after the function's stack check, not on its entry:
//! when the goroutine's stack must grow, the check calls `morestack`, which
//! jumps back to the entry, so an entry probe would see such a call twice;
//! the check changes only R12 and the flags, so the arguments are still in
//! their registers there. `Write` has no `RET` probes.
//!
//! Tying `*tls.Conn` to its socket: through the struct, at entry. The
//! layout has been the same since Go 1.9 and still is in 1.25:
//! `tls.Conn.conn` (a `net.Conn` interface: type word, data word) is its
//! first field; for a TCP connection the data word points to a
//! `net.TCPConn`, whose first word is its `*net.netFD`; a `netFD` starts
//! with a `poll.FD`, whose `Sysfd` follows the 16-byte `fdMutex`. The fd
//! read that way is used when it is a connection the socket hooks already
//! saw carrying TLS records (or tied before), so a `net.Conn` of another
//! type (a wrapper) reads as no socket, or as another TLS connection only
//! if garbage happens to hold that connection's fd number.
//!
//! A connection that has carried no byte yet: `tls.Client`/`tls.Server`
//! handshake lazily, inside the first `Write` or `Read`, so at that call's
//! entry the socket hooks have seen nothing. Such a connection of the
//! process (made by a `connect`/`accept` the hooks saw, no byte, no state)
//! is accepted too, and checked once its bytes pass:
//! - `Read`: its entry is kept as unconfirmed, and at its `RET` the bytes
//!   are used only if the connection has carried TLS records by then (the
//!   handshake ran inside the call): the same guard, applied later.
//! - `Write`: its plaintext must be taken at the call (see above), before
//!   the handshake. The connection is marked TLS there (`CONN_GO_UNSEEN`)
//!   and its first socket bytes must be a TLS handshake record (the
//!   ClientHello, or a server reading one); if they are not, the tie was
//!   wrong and `data::untie_go` tracks the connection afresh from
//!   those bytes. A wrong tie needs a wrapper whose memory yields, at these
//!   offsets, the fd of a connection in the window between its
//!   `connect`/`accept` and its first byte; it costs at most that one
//!   `Write`'s plaintext counted on that connection.
//! Register and offset layouts are x86-64's; the agent attaches these
//! probes only to x86-64 executables.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::{map, uprobe},
    maps::LruHashMap,
    programs::ProbeContext,
};
use metrics_common::{
    conn::{
        CONN_ADOPTED, CONN_GO_UNSEEN, CONN_IN_FLIGHT, CONN_PLAINTEXT, CONN_PREEXISTING, CONN_TLS, ConnState, PROTO_TLS,
        PROTO_UNDETERMINED, SIDE_UNKNOWN,
    },
    maps::{SLOT_CAPTURE, SLOT_PARSE, conn_key},
};

use crate::{
    ctx::CallReturn,
    data::{plaintext_peer_closed, process_plaintext},
    maps::{CALL_READ_BUF, CALL_WRITE_BUF, CONNS, CONTINUE, is_target},
};

/// A `Read` in progress on a goroutine.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GoTlsCall {
    pub buf: u64,
    /// The connection's socket.
    pub fd: u32,
    /// 1 when the socket had carried no byte at the entry (`Tie::Unseen`):
    /// the bytes count only if it carries TLS at the `RET`.
    pub unseen: u32,
}

/// A goroutine of one process (`g` addresses repeat across processes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GoroutineKey {
    pub tgid: u32,
    pub _pad: u32,
    pub g: u64,
}

/// `Read`s in progress, by goroutine. An entry whose goroutine never returns
/// (it panicked) is overwritten by the next call of a goroutine reusing
/// that `g`, or evicted.
#[map]
pub static GO_TLS_CALLS: LruHashMap<GoroutineKey, GoTlsCall> = LruHashMap::with_max_entries(16_384, 0);

/// Byte offsets in x86-64 `struct pt_regs`.
mod reg {
    pub const R14: usize = 8;
    pub const RBX: usize = 40;
    pub const RAX: usize = 80;
    pub const RCX: usize = 88;
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

/// The parsing and capture continuations of the uprobe programs
/// (`CONTINUE`, as OpenSSL's returns) and, at a `RET` of `Read`, its `int`
/// result. In `Write`'s probe RAX is the receiver, not a count: nothing on
/// the path of `process_plaintext` reads `return_value` (its continuations
/// take their state from the scratch map), and `return_go_tls`, the one
/// caller here, runs only at `Read`'s `RET`s.
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
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_target(tgid) {
        return 0;
    }
    let key = GoroutineKey { tgid, _pad: 0, g: register(&ctx, reg::R14) };
    let Some((fd, tie)) = socket_of(tgid, register(&ctx, reg::RAX)) else {
        // Not a TLS socket we follow: a re-entry (after the stack grew) of
        // a call already stashed keeps its entry, any other is forgotten.
        return 0;
    };
    let unseen = matches!(tie, Tie::Unseen) as u32;
    let call = GoTlsCall { buf: register(&ctx, reg::RBX), fd, unseen };
    let _ = GO_TLS_CALLS.insert(&key, &call, 0);
    0
}

/// `Write`, after its stack check (once per call): its whole buffer. It is
/// taken before `Write` holds the connection's output lock, so two
/// goroutines writing one `tls.Conn` at the same instant could be seen in
/// the other order than their bytes go out; Go's HTTP/1 and HTTP/2
/// transports write a connection from one goroutine at a time.
#[uprobe]
pub fn enter_go_tls_write(ctx: ProbeContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_target(tgid) {
        return 0;
    }
    let Some((fd, tie)) = socket_of(tgid, register(&ctx, reg::RAX)) else { return 0 };
    let len = register(&ctx, reg::RCX);
    if len == 0 || len > i64::MAX as u64 {
        return 0;
    }
    if let Tie::Unseen = tie {
        // The handshake runs inside this call, after its plaintext is taken.
        let Some(conn) = CONNS.get_ptr_mut(&conn_key(tgid, fd)) else { return 0 };
        // SAFETY: a valid map value pointer for the duration of the program.
        let conn = unsafe { &mut *conn };
        // A TLS connection from here (`process_plaintext` classifies its
        // plaintext afresh); counted in `TLS_CONNECTIONS` when its first
        // bytes confirm it (`data::data_done_on`).
        conn.proto = PROTO_TLS;
        conn.flags |= CONN_GO_UNSEEN;
    }
    process_plaintext(&ctx, tgid, fd, CALL_WRITE_BUF, register(&ctx, reg::RBX), len)
}

/// How `socket_of` found the socket.
enum Tie {
    /// A connection that carried TLS records, or was tied before.
    Tls,
    /// A connection of the process that has carried no byte yet (see the
    /// module doc): its first bytes confirm it.
    Unseen,
}

/// The socket of `*tls.Conn` `conn`, when it is a connection of `tgid`
/// that carries TLS or has carried nothing yet.
#[inline(always)]
fn socket_of(tgid: u32, conn: u64) -> Option<(u32, Tie)> {
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
    if carries_tls(state) {
        Some((fd, Tie::Tls))
    } else if unseen(state) {
        Some((fd, Tie::Unseen))
    } else {
        None
    }
}

#[inline(always)]
fn carries_tls(state: &ConnState) -> bool {
    state.proto == PROTO_TLS || state.flags & CONN_TLS != 0
}

/// A connection whose `connect`/`accept` the hooks saw and that has carried
/// no byte: nothing classified, nothing pending, no exchange.
#[inline(always)]
fn unseen(state: &ConnState) -> bool {
    const SEEN: u32 = CONN_PREEXISTING | CONN_ADOPTED | CONN_TLS | CONN_PLAINTEXT | CONN_IN_FLIGHT | CONN_GO_UNSEEN;
    state.proto == PROTO_UNDETERMINED
        && state.side != SIDE_UNKNOWN
        && state.flags & SEEN == 0
        && state.pending_len == 0
        && state.read_offset == 0
        && state.write_offset == 0
}

/// Every `RET` of `Read`.
#[uprobe]
pub fn return_go_tls(ctx: ProbeContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let key = GoroutineKey { tgid, _pad: 0, g: register(&ctx, reg::R14) };
    // SAFETY: the value is copied out before the entry is removed.
    let Some(call) = (unsafe { GO_TLS_CALLS.get(&key) }).copied() else { return 0 };
    let _ = GO_TLS_CALLS.remove(&key);
    if call.unseen != 0 {
        // The socket had carried nothing at the entry: the handshake in
        // this call must have passed through it as TLS records.
        // SAFETY: the value is copied.
        let Some(state) = (unsafe { CONNS.get(&conn_key(tgid, call.fd)) }) else { return 0 };
        if !carries_tls(state) {
            return 0;
        }
    }
    let n = ctx.return_value();
    if n > 0 {
        return process_plaintext(&ctx, tgid, call.fd, CALL_READ_BUF, call.buf, n as u64);
    }
    // Read returned no bytes and an error (io.EOF after the peer's
    // close_notify, or the connection failed): a body framed by the
    // connection's close ends here, as when `SSL_read` returns 0.
    if register(&ctx, reg::RBX) != 0 {
        plaintext_peer_closed(tgid, call.fd);
    }
    0
}
