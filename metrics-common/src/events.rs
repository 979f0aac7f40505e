//! Process lifecycle events sent from the kernel to the agent (`PROC_EVENTS`).

pub const PROC_FORK: u32 = 1;
pub const PROC_EXEC: u32 = 2;
pub const PROC_EXIT: u32 = 3;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcEvent {
    /// `PROC_FORK`, `PROC_EXEC` or `PROC_EXIT`.
    pub kind: u32,
    /// The process concerned: the new child for a fork, the process itself otherwise.
    pub pid: u32,
    /// The process that forked (fork only).
    pub parent: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<ProcEvent>() == 16);

#[cfg(feature = "user")]
unsafe impl aya::Pod for ProcEvent {}
