//! The hook families. Each file attaches the shared logic (`data`,
//! `connections`, `framing`, `capture`) to one kind of kernel hook and
//! implements `ctx::CallArgs`/`CallReturn` for its context type; a new
//! attach method is one new file here.

pub mod libc;
pub mod process;
pub mod sockets;
pub mod ssl;
pub mod syscalls;
