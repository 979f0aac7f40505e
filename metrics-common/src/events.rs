//! Events sent from the kernel to the agent (`PROC_EVENTS`): process
//! lifecycle and adopted connections.

pub const PROC_FORK: u32 = 1;
pub const PROC_EXEC: u32 = 2;
pub const PROC_EXIT: u32 = 3;
/// An untracked fd that carried a request line was adopted as a client
/// connection: `pid` is the process, `parent` the fd. The agent verifies it
/// is a TCP socket and drops it otherwise.
pub const CONN_ADOPTED: u32 = 4;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcEvent {
    /// `PROC_FORK`, `PROC_EXEC` or `PROC_EXIT`.
    pub kind: u32,
    /// The process concerned: the new child for a fork, the process itself otherwise.
    pub pid: u32,
    /// The process that forked (fork), or the fd (`CONN_ADOPTED`).
    pub parent: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<ProcEvent>() == 16);

#[cfg(feature = "user")]
unsafe impl aya::Pod for ProcEvent {}
