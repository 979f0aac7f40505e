//! `--attach syscalls`: the same logic as the libc uprobes, fed by
//! `syscalls/sys_enter_*` and `sys_exit_*`. A tracepoint costs every process
//! on the host a little (~0.17 µs per syscall on these machines) instead of
//! costing the target a trap (~10 µs) per call, and it also sees statically
//! linked and Go programs. Programs return at once for processes that are
//! not targets. Socket mode uses the lifecycle programs here too
//! (`accept`, `connect`, `close`).

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use metrics_common::{
    maps::{SLOT_CAPTURE, SLOT_PARSE},
    probes::{HIT_DATA_RETURN, HIT_READ_ENTRY, HIT_WRITE_ENTRY},
};

use crate::{
    connections::{accept_entered, accept_returned, close_entered, connect_entered},
    ctx::{CallArgs, CallReturn},
    data::{MSGHDR, data_returned, stash, stash_recv, stash_recvmsg},
    framing::continue_parsing,
    maps::{CALL_READ_BUF, CALL_READ_IOV, CALL_SENDFILE, CALL_WRITE_BUF, CALL_WRITE_IOV, CONTINUE_SYSCALL},
};

/// `sys_enter_*` records: the syscall number at 8, then one 8-byte slot per
/// argument from offset 16.
impl CallArgs for TracePointContext {
    fn arg_u64(&self, n: usize) -> u64 {
        // SAFETY: reading the tracepoint record through the helper.
        unsafe { self.read_at::<u64>(16 + 8 * n) }.unwrap_or(0)
    }
}

/// `sys_exit_*` records: `long ret` at offset 16.
impl CallReturn for TracePointContext {
    fn return_value(&self) -> i64 {
        // SAFETY: reading the tracepoint record through the helper.
        unsafe { self.read_at::<i64>(16) }.unwrap_or(-1)
    }

    fn continue_parsing(&self) {
        // SAFETY: a tail call does not return on success.
        unsafe { CONTINUE_SYSCALL.tail_call(self, SLOT_PARSE) };
    }

    fn capture(&self) {
        // SAFETY: as above.
        unsafe { CONTINUE_SYSCALL.tail_call(self, SLOT_CAPTURE) };
    }
}

/// read(2)
#[tracepoint]
pub fn sys_enter_read(ctx: TracePointContext) -> u32 {
    stash(&ctx, CALL_READ_BUF, HIT_READ_ENTRY);
    0
}

/// recvfrom(2) (libc `recv` is recvfrom)
#[tracepoint]
pub fn sys_enter_recv(ctx: TracePointContext) -> u32 {
    stash_recv(&ctx, HIT_READ_ENTRY);
    0
}

/// write(2), sendto(2) (libc `send` is sendto)
#[tracepoint]
pub fn sys_enter_write(ctx: TracePointContext) -> u32 {
    stash(&ctx, CALL_WRITE_BUF, HIT_WRITE_ENTRY);
    0
}

/// readv(2)
#[tracepoint]
pub fn sys_enter_readv(ctx: TracePointContext) -> u32 {
    stash(&ctx, CALL_READ_IOV, HIT_READ_ENTRY);
    0
}

/// writev(2)
#[tracepoint]
pub fn sys_enter_writev(ctx: TracePointContext) -> u32 {
    stash(&ctx, CALL_WRITE_IOV, HIT_WRITE_ENTRY);
    0
}

/// recvmsg(2)
#[tracepoint]
pub fn sys_enter_recvmsg(ctx: TracePointContext) -> u32 {
    stash_recvmsg(&ctx, HIT_READ_ENTRY);
    0
}

/// sendmsg(2)
#[tracepoint]
pub fn sys_enter_sendmsg(ctx: TracePointContext) -> u32 {
    stash(&ctx, CALL_WRITE_IOV + MSGHDR, HIT_WRITE_ENTRY);
    0
}

/// sendfile64(2)
#[tracepoint]
pub fn sys_enter_sendfile(ctx: TracePointContext) -> u32 {
    stash(&ctx, CALL_SENDFILE, HIT_WRITE_ENTRY);
    0
}

/// sys_exit of every data syscall above.
#[tracepoint]
pub fn sys_exit_data(ctx: TracePointContext) -> u32 {
    data_returned(&ctx, HIT_DATA_RETURN)
}

/// Tail-called continuation of `sys_exit_data` (slot `SLOT_PARSE`).
#[tracepoint]
pub fn sys_continue_response(ctx: TracePointContext) -> u32 {
    continue_parsing(&ctx)
}

/// Tail-called payload capture (slot `SLOT_CAPTURE`).
#[tracepoint]
pub fn sys_capture_payload(ctx: TracePointContext) -> u32 {
    crate::capture::capture_payload_body(&ctx)
}

/// accept(2), accept4(2)
#[tracepoint]
pub fn sys_enter_accept(ctx: TracePointContext) -> u32 {
    accept_entered(&ctx)
}

#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    accept_returned(&ctx)
}

/// connect(2)
#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    connect_entered(&ctx)
}

/// close(2)
#[tracepoint]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    close_entered(&ctx)
}
