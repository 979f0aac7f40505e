//! Process lifecycle tracepoints: a target's new processes (forks), new processes running
//! the target executable (by comm, confirmed by the agent), and exits.
//! They fire for every process on the host, so each does one map lookup
//! and returns.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid},
    macros::tracepoint,
    programs::TracePointContext,
};
use metrics_common::{
    events::{PROC_EXEC, PROC_EXIT, PROC_FORK},
    maps::{WATCH_COMM_ENTRIES, config},
};

use crate::{
    events::emit,
    maps::{TARGETS, WATCH_COMM, config, is_target},
};

/// task:task_newtask, in the context of the parent. New threads
/// (`CLONE_THREAD`) are skipped here, so a thread-per-connection proxy does
/// not flood the event ring.
#[tracepoint]
pub fn on_fork(ctx: TracePointContext) -> u32 {
    const CLONE_THREAD: u64 = 0x0001_0000;
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_target(tgid) {
        return 0;
    }
    let pid_at = config(config::NEWTASK_PID_OFFSET) as usize;
    let flags_at = config(config::NEWTASK_FLAGS_OFFSET) as usize;
    if pid_at == 0 || flags_at == 0 {
        return 0;
    }
    // SAFETY: the offsets come from the tracepoint's format file.
    let flags: u64 = unsafe { ctx.read_at(flags_at) }.unwrap_or(CLONE_THREAD);
    if flags & CLONE_THREAD != 0 {
        return 0;
    }
    let child: i32 = unsafe { ctx.read_at(pid_at) }.unwrap_or(0);
    if child > 0 {
        emit(PROC_FORK, child as u32, tgid);
    }
    0
}

/// sched:sched_process_exec, in the context of the new program.
#[tracepoint]
pub fn on_exec(_ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if is_target(tgid) {
        // A target replaced its program: the agent decides whether it still is one.
        emit(PROC_EXEC, tgid, 0);
        return 0;
    }
    if config(config::WATCH_EXEC) == 0 {
        return 0;
    }
    let Ok(comm) = bpf_get_current_comm() else { return 0 };
    for slot in 0..WATCH_COMM_ENTRIES {
        if WATCH_COMM.get(slot).is_some_and(|watched| comm == *watched) {
            emit(PROC_EXEC, tgid, 0);
            break;
        }
    }
    0
}

/// sched:sched_process_exit, for every exiting thread.
#[tracepoint]
pub fn on_exit(_ctx: TracePointContext) -> u32 {
    let id = bpf_get_current_pid_tgid();
    let tgid = (id >> 32) as u32;
    if id as u32 != tgid || !is_target(tgid) {
        return 0;
    }
    let _ = TARGETS.remove(&tgid);
    emit(PROC_EXIT, tgid, 0);
    0
}
