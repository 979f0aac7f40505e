//! `--attach uprobes`: uprobes and uretprobes on the target's libc socket
//! calls, scoped to each target process (other processes take no trap). The
//! entry probes stash the call's arguments; `return_data` finishes the call.
//!
//! Hooked (libc prototypes):
//! - `ssize_t read(int fd, void *buf, size_t n)`, `recv(fd, buf, n, flags)`,
//!   `recvfrom(fd, buf, n, flags, addr, addrlen)`
//! - `ssize_t write(int fd, const void *buf, size_t n)`, `send`, `sendto`
//! - `ssize_t readv(int fd, const struct iovec *iov, int iovcnt)`, `writev`
//! - `ssize_t recvmsg(int fd, struct msghdr *msg, int flags)`, `sendmsg`
//! - `ssize_t sendfile(int out_fd, int in_fd, off_t *offset, size_t count)`
//! - `int accept(int fd, struct sockaddr *addr, socklen_t *addrlen)`, `accept4`
//! - `int connect(int fd, const struct sockaddr *addr, socklen_t addrlen)`
//! - `int close(int fd)`

use aya_ebpf::{
    macros::{uprobe, uretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use metrics_common::{
    maps::{SLOT_CAPTURE, SLOT_PARSE},
    probes::{HIT_DATA_RETURN, HIT_READ_ENTRY, HIT_WRITE_ENTRY},
};

use crate::{
    connections::{accept_entered, accept_returned, close_entered, connect_entered},
    ctx::{CallArgs, CallReturn},
    data::{MSGHDR, data_returned, stash, stash_recv, stash_recvmsg},
    framing::continue_parsing,
    maps::{CALL_READ_BUF, CALL_READ_IOV, CALL_SENDFILE, CALL_WRITE_BUF, CALL_WRITE_IOV, CONTINUE},
};

impl CallArgs for ProbeContext {
    fn arg_u64(&self, n: usize) -> u64 {
        self.arg::<u64>(n).unwrap_or(0)
    }
}

impl CallReturn for RetProbeContext {
    fn return_value(&self) -> i64 {
        self.ret::<i64>()
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
pub fn enter_read(ctx: ProbeContext) -> u32 {
    stash(&ctx, CALL_READ_BUF, HIT_READ_ENTRY);
    0
}

#[uprobe]
pub fn enter_recv(ctx: ProbeContext) -> u32 {
    stash_recv(&ctx, HIT_READ_ENTRY);
    0
}

#[uprobe]
pub fn enter_write(ctx: ProbeContext) -> u32 {
    stash(&ctx, CALL_WRITE_BUF, HIT_WRITE_ENTRY);
    0
}

#[uprobe]
pub fn enter_readv(ctx: ProbeContext) -> u32 {
    stash(&ctx, CALL_READ_IOV, HIT_READ_ENTRY);
    0
}

#[uprobe]
pub fn enter_writev(ctx: ProbeContext) -> u32 {
    stash(&ctx, CALL_WRITE_IOV, HIT_WRITE_ENTRY);
    0
}

#[uprobe]
pub fn enter_recvmsg(ctx: ProbeContext) -> u32 {
    stash_recvmsg(&ctx, HIT_READ_ENTRY);
    0
}

#[uprobe]
pub fn enter_sendmsg(ctx: ProbeContext) -> u32 {
    stash(&ctx, CALL_WRITE_IOV + MSGHDR, HIT_WRITE_ENTRY);
    0
}

#[uprobe]
pub fn enter_sendfile(ctx: ProbeContext) -> u32 {
    stash(&ctx, CALL_SENDFILE, HIT_WRITE_ENTRY);
    0
}

/// Return of every data call above.
#[uretprobe]
pub fn return_data(ctx: RetProbeContext) -> u32 {
    data_returned(&ctx, HIT_DATA_RETURN)
}

/// The parsing continuation (slot `SLOT_PARSE` of `CONTINUE`).
#[uretprobe]
pub fn continue_response(ctx: RetProbeContext) -> u32 {
    continue_parsing(&ctx)
}

/// Payload capture (slot `SLOT_CAPTURE` of `CONTINUE`).
#[uretprobe]
pub fn capture_payload(ctx: RetProbeContext) -> u32 {
    crate::capture::capture_payload_body(&ctx)
}

#[uprobe]
pub fn enter_accept(ctx: ProbeContext) -> u32 {
    accept_entered(&ctx)
}

#[uretprobe]
pub fn return_accept(ctx: RetProbeContext) -> u32 {
    accept_returned(&ctx)
}

#[uprobe]
pub fn enter_connect(ctx: ProbeContext) -> u32 {
    connect_entered(&ctx)
}

#[uprobe]
pub fn enter_close(ctx: ProbeContext) -> u32 {
    close_entered(&ctx)
}
