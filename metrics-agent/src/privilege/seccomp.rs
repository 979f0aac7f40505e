//! The seccomp filters installed once the agent has started: an allowlist
//! of the system calls it makes (with argument checks for `clone`, `tgkill`,
//! `prlimit64`, `prctl` and `bpf`), and a second filter making `clone3` fail
//! with `ENOSYS` so that threads are created with the checkable `clone`.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

/// System calls the agent makes after start-up (tokio, sqlx with SQLite and
/// PostgreSQL, rustls, the resolver, `/proc` reads, BPF maps and links,
/// uprobes for new processes). Those needing argument checks are added in
/// `filters`.
const ALLOWED: &[libc::c_long] = &[
    // Memory.
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_mincore,
    libc::SYS_membarrier,
    // Files and /proc.
    libc::SYS_openat,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_pread64,
    libc::SYS_preadv,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_pwrite64,
    libc::SYS_pwritev,
    libc::SYS_lseek,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_statfs,
    libc::SYS_fstatfs,
    libc::SYS_getdents64,
    libc::SYS_readlinkat,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_fcntl,
    libc::SYS_flock,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    libc::SYS_unlinkat,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_mkdirat,
    libc::SYS_fchmod,
    libc::SYS_fchown,
    libc::SYS_getcwd,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_pipe2,
    libc::SYS_ioctl,
    // Waiting and time.
    libc::SYS_futex,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_ppoll,
    libc::SYS_pselect6,
    libc::SYS_eventfd2,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_gettimeofday,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_restart_syscall,
    // Network (the endpoint, PostgreSQL, exporters, the resolver).
    libc::SYS_socket,
    libc::SYS_socketpair,
    libc::SYS_connect,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept4,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendmmsg,
    libc::SYS_recvmmsg,
    libc::SYS_shutdown,
    // Threads, signals, identity.
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_sigaltstack,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_getppid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getrandom,
    libc::SYS_getrusage,
    libc::SYS_sysinfo,
    libc::SYS_uname,
    libc::SYS_times,
    libc::SYS_capget,
    // Installing the second filter (a filter can only restrict further).
    libc::SYS_seccomp,
    // Tracing: uprobes and links for processes started later.
    libc::SYS_perf_event_open,
];

/// Legacy calls x86-64's C library still makes.
#[cfg(target_arch = "x86_64")]
const ALLOWED_X86_64: &[libc::c_long] = &[
    libc::SYS_open,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_access,
    libc::SYS_readlink,
    libc::SYS_unlink,
    libc::SYS_rename,
    libc::SYS_mkdir,
    libc::SYS_pipe,
    libc::SYS_dup2,
    libc::SYS_poll,
    libc::SYS_select,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_create,
    libc::SYS_getdents,
    libc::SYS_getrlimit,
    libc::SYS_time,
];
#[cfg(not(target_arch = "x86_64"))]
const ALLOWED_X86_64: &[libc::c_long] = &[];

/// `bpf(2)` commands that create kernel objects: refused after start.
const BPF_MAP_CREATE: u64 = 0;
const BPF_PROG_LOAD: u64 = 5;
const BPF_BTF_LOAD: u64 = 18;

fn target_arch() -> Result<TargetArch> {
    Ok(match std::env::consts::ARCH {
        "x86_64" => TargetArch::x86_64,
        "aarch64" => TargetArch::aarch64,
        "riscv64" => TargetArch::riscv64,
        other => bail!("no seccomp filter for the {other} architecture"),
    })
}

fn arg(index: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition> {
    Ok(SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value)?)
}

/// The allowlist (`EPERM` for anything else), and a second filter making
/// `clone3` fail with `ENOSYS` so that the C library creates threads with
/// `clone`, whose flags the allowlist can check.
fn filters(mismatch: SeccompAction) -> Result<[BpfProgram; 2]> {
    let arch = target_arch()?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().chain(ALLOWED_X86_64).map(|&nr| (nr, Vec::new())).collect();
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u64;
    let conditional = [
        // Threads only, never a new process.
        (libc::SYS_clone, vec![arg(0, SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64), libc::CLONE_THREAD as u64)?]),
        // Signals to this process's own threads only (abort, the capability drop).
        (libc::SYS_tgkill, vec![arg(0, SeccompCmpOp::Eq, pid)?]),
        // Reading limits; setting them (core dumps back on) is refused.
        (libc::SYS_prlimit64, vec![arg(2, SeccompCmpOp::Eq, 0)?]),
    ];
    for (nr, conditions) in conditional {
        rules.insert(nr, vec![SeccompRule::new(conditions)?]);
    }
    // Thread names, and no_new_privs for the second filter's installation
    // (PR_SET_DUMPABLE and the like are refused).
    rules.insert(
        libc::SYS_prctl,
        [libc::PR_SET_NAME, libc::PR_GET_NAME, libc::PR_GET_DUMPABLE, libc::PR_CAPBSET_READ, libc::PR_SET_NO_NEW_PRIVS]
            .iter()
            .map(|&op| Ok(SeccompRule::new(vec![arg(0, SeccompCmpOp::Eq, op as u64)?])?))
            .collect::<Result<_>>()?,
    );
    // bpf(2) on existing maps, programs and links; no new ones.
    rules.insert(
        libc::SYS_bpf,
        vec![SeccompRule::new(vec![
            arg(0, SeccompCmpOp::Ne, BPF_MAP_CREATE)?,
            arg(0, SeccompCmpOp::Ne, BPF_PROG_LOAD)?,
            arg(0, SeccompCmpOp::Ne, BPF_BTF_LOAD)?,
        ])?],
    );
    let allowlist = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, arch)?.try_into()?;
    let no_clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )?
    .try_into()?;
    Ok([allowlist, no_clone3])
}

/// Sets `no_new_privs` and installs the filters in every thread (TSYNC).
pub fn install(mismatch: SeccompAction) -> Result<()> {
    for filter in filters(mismatch)? {
        seccompiler::apply_filter_all_threads(&filter)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_compile_for_this_machine() {
        let [allowlist, no_clone3] = filters(SeccompAction::Errno(libc::EPERM as u32)).unwrap();
        assert!(allowlist.len() > ALLOWED.len(), "one check per allowed call at least");
        assert!(!no_clone3.is_empty());
    }
}
