//! `--attach sockets` (the default where the kernel has them): BTF-enabled
//! tracepoints on `sock:sock_send_length` and `sock:sock_recv_length`, which
//! fire once per send or receive on any socket, after the protocol handler,
//! with `(struct sock *sk, int ret, int flags)`. One hit per call (no entry
//! and return pair), ~0.15 µs, and only socket calls pay: `write`, `send*`,
//! `writev`, `read`, `recv*`, `readv` from any runtime, Go and static
//! binaries included.
//!
//! The tracepoint has no file descriptor and no user buffer, but it runs
//! inside the syscall: the task's saved user registers (`bpf_task_pt_regs`)
//! give the syscall number and its arguments, so the call is followed with
//! the same `(tgid, fd)` connection state, framing and capture as the other
//! modes. A socket call with no user buffer behind it (splice, sendfile,
//! io_uring, sendmmsg) is counted and skipped as body; when its fd is not in
//! the registers, the connection is found through `SOCK_CONNS`.
//!
//! Register layout and syscall numbers are x86-64's; the agent chooses this
//! mode only there.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
    },
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use metrics_common::{
    conn::{CONN_SOCK_MAPPED, ConnState},
    maps::{SLOT_CAPTURE, SLOT_PARSE},
    probes::{HIT_SOCKET_RECV, HIT_SOCKET_SEND},
};

use crate::{
    ctx::CallReturn,
    data::{MSG_PEEK, MSGHDR, data_done, data_done_on, traced_call_conn},
    framing::continue_parsing,
    maps::{
        CALL_READ_BUF, CALL_READ_IOV, CALL_READ_NOBUF, CALL_SENDFILE, CALL_WRITE_BUF, CALL_WRITE_IOV, CONNS,
        CONTINUE_SOCKET, Call, PROBE_HITS, SOCK_CONNS, SockConn, add, target_flags,
    },
};

impl CallReturn for BtfTracePointContext {
    /// `int ret`: bytes moved, 0 at the end of the stream, or -errno.
    fn return_value(&self) -> i64 {
        self.arg::<u64>(1) as i32 as i64
    }

    fn continue_parsing(&self) {
        // SAFETY: a tail call does not return on success.
        unsafe { CONTINUE_SOCKET.tail_call(self, SLOT_PARSE) };
    }

    fn capture(&self) {
        // SAFETY: as above.
        unsafe { CONTINUE_SOCKET.tail_call(self, SLOT_CAPTURE) };
    }
}

/// sock:sock_send_length
#[btf_tracepoint(function = "sock_send_length")]
pub fn sock_send(ctx: BtfTracePointContext) -> u32 {
    socket_call(&ctx, false)
}

/// sock:sock_recv_length
#[btf_tracepoint(function = "sock_recv_length")]
pub fn sock_recv(ctx: BtfTracePointContext) -> u32 {
    socket_call(&ctx, true)
}

/// The parsing continuation (slot `SLOT_PARSE` of `CONTINUE_SOCKET`). Loaded
/// for `sock_send_length`, whose prototype is the same as
/// `sock_recv_length`'s, so both may tail-call it.
#[btf_tracepoint(function = "sock_send_length")]
pub fn sock_continue_response(ctx: BtfTracePointContext) -> u32 {
    continue_parsing(&ctx)
}

/// Payload capture (slot `SLOT_CAPTURE` of `CONTINUE_SOCKET`).
#[btf_tracepoint(function = "sock_send_length")]
pub fn sock_capture_payload(ctx: BtfTracePointContext) -> u32 {
    crate::capture::capture_payload_body(&ctx)
}

/// x86-64 syscall numbers of the socket calls followed.
mod nr {
    pub const READ: u64 = 0;
    pub const WRITE: u64 = 1;
    pub const READV: u64 = 19;
    pub const WRITEV: u64 = 20;
    pub const SENDFILE: u64 = 40;
    pub const SENDTO: u64 = 44;
    pub const RECVFROM: u64 = 45;
    pub const SENDMSG: u64 = 46;
    pub const RECVMSG: u64 = 47;
    pub const SPLICE: u64 = 275;
    pub const PREADV2: u64 = 327;
    pub const PWRITEV2: u64 = 328;
}

/// The saved user registers of the current syscall that matter here, in
/// `struct pt_regs` order from `r10` (offset 56) to `orig_ax` (offset 120).
#[repr(C)]
#[derive(Clone, Copy)]
struct SyscallRegs {
    _r10: u64,
    _r9: u64,
    _r8: u64,
    _ax: u64,
    _cx: u64,
    dx: u64,
    si: u64,
    di: u64,
    orig_ax: u64,
}
const PT_REGS_R10: u64 = 56;

#[inline(always)]
fn syscall_regs() -> Option<SyscallRegs> {
    // SAFETY: the helpers return the current task and its saved user
    // registers; the bytes are copied with the kernel read helper.
    unsafe {
        let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as u64;
        if regs == 0 {
            return None;
        }
        bpf_probe_read_kernel((regs + PT_REGS_R10) as *const SyscallRegs).ok()
    }
}

#[inline(always)]
fn socket_call(ctx: &BtfTracePointContext, is_recv: bool) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    let Some(target) = target_flags(tgid) else { return 0 };
    add(&PROBE_HITS, if is_recv { HIT_SOCKET_RECV } else { HIT_SOCKET_SEND }, 1);
    if is_recv && ctx.arg::<u64>(2) & MSG_PEEK != 0 {
        return 0; // the bytes stay queued: the real read is counted
    }
    let sk = ctx.arg::<u64>(0);
    let ret = ctx.return_value();
    let Some(regs) = syscall_regs() else { return 0 };
    let (kind, fd, ptr, count) = match (regs.orig_ax, is_recv) {
        (nr::READ | nr::RECVFROM, true) => (CALL_READ_BUF, regs.di, regs.si, 0),
        (nr::WRITE | nr::SENDTO, false) => (CALL_WRITE_BUF, regs.di, regs.si, 0),
        (nr::READV | nr::PREADV2, true) => (CALL_READ_IOV, regs.di, regs.si, regs.dx),
        (nr::WRITEV | nr::PWRITEV2, false) => (CALL_WRITE_IOV, regs.di, regs.si, regs.dx),
        (nr::RECVMSG, true) => (CALL_READ_IOV + MSGHDR, regs.di, regs.si, 0),
        (nr::SENDMSG, false) => (CALL_WRITE_IOV + MSGHDR, regs.di, regs.si, 0),
        (nr::SENDFILE, false) => (CALL_SENDFILE, regs.di, 0, 0),
        // splice(fd_in, off_in, fd_out, off_out, len, flags)
        (nr::SPLICE, true) => (CALL_READ_NOBUF, regs.di, 0, 0),
        (nr::SPLICE, false) => (CALL_SENDFILE, regs.dx, 0, 0),
        _ => return unseen_fd_call(ctx, id, sk, is_recv, ret),
    };
    if fd > i32::MAX as u64 {
        return 0;
    }
    let Some((call, conn)) = traced_call_conn(id, tgid, target, fd as u32, kind, ptr, count) else { return 0 };
    if !conn.is_null() {
        // SAFETY: a valid map value pointer for the duration of the program.
        remember_socket(unsafe { &mut *conn }, tgid, call.fd, sk);
    }
    data_done_on(ctx, id, call, ret, conn)
}

/// Maps the kernel socket to its connection, once per connection, for the
/// calls whose fd the registers do not show.
#[inline(always)]
fn remember_socket(conn: &mut ConnState, tgid: u32, fd: u32, sk: u64) {
    let key = metrics_common::maps::conn_key(tgid, fd);
    if conn.flags & CONN_SOCK_MAPPED == 0 {
        conn.flags |= CONN_SOCK_MAPPED;
        let _ = SOCK_CONNS.insert(&sk, &SockConn { key, conn_id: conn.conn_id }, 0);
    }
}

/// A socket call with no fd in the registers (io_uring, sendmmsg/recvmmsg,
/// a kernel worker): counted on the socket's known connection and skipped
/// as body.
#[inline(always)]
fn unseen_fd_call(ctx: &BtfTracePointContext, id: u64, sk: u64, is_recv: bool, ret: i64) -> u32 {
    // SAFETY: the value is copied.
    let Some(sock) = (unsafe { SOCK_CONNS.get(&sk) }).copied() else { return 0 };
    // SAFETY: the value is copied.
    let Some(conn) = (unsafe { CONNS.get(&sock.key) }) else { return 0 };
    if conn.conn_id != sock.conn_id || (sock.key >> 32) as u32 != (id >> 32) as u32 {
        return 0; // the socket address was reused
    }
    let kind = if is_recv { CALL_READ_NOBUF } else { CALL_SENDFILE };
    data_done(ctx, id, Call { fd: sock.key as u32, kind, ptr: 0, count: 0 }, ret)
}
