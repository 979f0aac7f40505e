//! The two ways the kernel programs see a call: a uprobe/uretprobe on the
//! libc function (pt_regs) or a syscall tracepoint (`syscalls/sys_enter_*`,
//! `sys_exit_*` records). The probe logic is written once over these traits.

use aya_ebpf::{
    EbpfContext,
    programs::{ProbeContext, RetProbeContext, TracePointContext},
};

use metrics_common::maps::{SLOT_CAPTURE, SLOT_PARSE};

use crate::maps::{CONTINUE, CONTINUE_SYSCALL};

/// Arguments of an intercepted call at its entry.
pub trait CallArgs {
    /// Argument `n` as a raw 64-bit value.
    fn arg_u64(&self, n: usize) -> u64;

    /// Argument `n` as a C `int` (an fd), sign-extended.
    fn arg_int(&self, n: usize) -> i64 {
        self.arg_u64(n) as i32 as i64
    }
}

impl CallArgs for ProbeContext {
    fn arg_u64(&self, n: usize) -> u64 {
        self.arg::<u64>(n).unwrap_or(0)
    }
}

/// `sys_enter_*` records: the syscall number at 8, then one 8-byte slot per
/// argument from offset 16.
impl CallArgs for TracePointContext {
    fn arg_u64(&self, n: usize) -> u64 {
        // SAFETY: reading the tracepoint record through the helper.
        unsafe { self.read_at::<u64>(16 + 8 * n) }.unwrap_or(0)
    }
}

/// A call's return, and how parsing continues in a tail call of the same
/// program type.
pub trait CallReturn: EbpfContext {
    fn return_value(&self) -> i64;
    /// Tail-calls the continuation program; returns only on failure.
    fn continue_parsing(&self);
    /// Tail-calls the payload capture program; returns only on failure.
    fn capture(&self);
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

/// `sys_exit_*` records: `long ret` at offset 16.
impl CallReturn for TracePointContext {
    fn return_value(&self) -> i64 {
        // SAFETY: reading the tracepoint record through the helper.
        unsafe { self.read_at::<i64>(16) }.unwrap_or(-1)
    }

    fn continue_parsing(&self) {
        // SAFETY: as above.
        unsafe { CONTINUE_SYSCALL.tail_call(self, SLOT_PARSE) };
    }

    fn capture(&self) {
        // SAFETY: as above.
        unsafe { CONTINUE_SYSCALL.tail_call(self, SLOT_CAPTURE) };
    }
}
