//! What the shared logic needs from a hook: the arguments of a call at its
//! entry (`CallArgs`) and, at its return, the result and the tail calls that
//! continue parsing and capture in a program of the same type (`CallReturn`).
//! Each hook family (`probes/*`) implements them for its context type, so
//! the connection, framing and capture logic is written once.

use aya_ebpf::EbpfContext;

/// Arguments of an intercepted call at its entry.
pub trait CallArgs {
    /// Argument `n` as a raw 64-bit value.
    fn arg_u64(&self, n: usize) -> u64;

    /// Argument `n` as a C `int` (an fd), sign-extended.
    fn arg_int(&self, n: usize) -> i64 {
        self.arg_u64(n) as i32 as i64
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
