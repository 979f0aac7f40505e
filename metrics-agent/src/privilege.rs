//! Least privilege once the agent has loaded its programs and attached: the
//! agent keeps only the capabilities that later work needs, in every
//! thread, cannot regain any (`no_new_privs`, emptied bounding set), cannot
//! be dumped or traced by others (`PR_SET_DUMPABLE` 0, `RLIMIT_CORE` 0), and
//! runs under a seccomp filter that allows only the system calls it makes.
//!
//! Capabilities kept (`KEPT_CAPABILITIES`), and why:
//! - `CAP_BPF`: every `bpf(2)` call (map reads and updates, links for new
//!   processes) needs it while unprivileged BPF is disabled;
//! - `CAP_SYS_ADMIN` and `CAP_PERFMON`: `perf_event_open(2)` of a uprobe for
//!   a process started after the agent (and for a libssl loaded late). The
//!   kernel documents `CAP_PERFMON` as enough, but measured on Linux 6.18 the
//!   call fails with `EACCES` without `CAP_SYS_ADMIN`; the seccomp filter
//!   takes away what else `CAP_SYS_ADMIN` allows (mount, namespaces, swap,
//!   quotas, loading BPF programs, ...);
//! - `CAP_SYS_PTRACE`: `/proc/PID/{maps,exe,fd,root}` of processes of other
//!   users (nginx workers run as `www-data`): the kernel checks ptrace access;
//! - `CAP_DAC_READ_SEARCH`: reading a target's executable and libraries
//!   through `/proc/PID/root` when they are not world-readable.
//!
//! The seccomp filter denies everything else with `EPERM` — among others
//! `ptrace`, `process_vm_readv`, `execve`, `fork` (only threads may be
//! created), `mount`, `setns`, module loading — and, in `bpf(2)`, loading
//! new programs, maps or BTF (only the programs loaded at start are attached
//! later): a compromised parser cannot read other processes' memory with it.
//!
//! Capabilities are per thread: they are dropped in every thread of the
//! process by a signal each thread handles itself (as libpsx does), and
//! checked in `/proc/self/task/*/status` afterwards.

use std::{
    collections::{BTreeMap, HashSet},
    sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The capabilities the agent keeps after attaching (see the module doc).
pub const KEPT_CAPABILITIES: u64 =
    1 << CAP_DAC_READ_SEARCH | 1 << CAP_SYS_PTRACE | 1 << CAP_SYS_ADMIN | 1 << CAP_PERFMON | 1 << CAP_BPF;

/// `enforce` (default): calls outside the allowlist fail with `EPERM`;
/// `log`: they are allowed and the kernel logs them (to find a missing one).
pub const SECCOMP_ENV: &str = "METRICS_AGENT_SECCOMP";

/// Drops what the agent no longer needs; call once everything is loaded,
/// attached and opened, before serving. An error names what failed.
pub fn restrict() -> Result<()> {
    let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: setrlimit and prctl with plain values.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_CORE, &no_core) != 0 {
            bail!("cannot disable core dumps: {}", std::io::Error::last_os_error());
        }
        if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 {
            bail!("cannot make the agent non-dumpable: {}", std::io::Error::last_os_error());
        }
    }
    drop_capabilities_in_every_thread(KEPT_CAPABILITIES).context("dropping capabilities")?;
    let mismatch = match std::env::var(SECCOMP_ENV).as_deref() {
        Err(_) | Ok("enforce") => SeccompAction::Errno(libc::EPERM as u32),
        // Diagnosis: calls outside the allowlist are allowed and logged by the kernel (dmesg, audit).
        Ok("log") => SeccompAction::Log,
        Ok(other) => bail!("{SECCOMP_ENV}={other}: use enforce (the default) or log"),
    };
    install_seccomp_filter(mismatch).context("installing the seccomp filter")?;
    log::info!(
        "privileges reduced: capabilities {KEPT_CAPABILITIES:#018x} (bpf, perfmon, sys_admin, sys_ptrace, dac_read_search), \
         no_new_privs, not dumpable, seccomp filter"
    );
    Ok(())
}

/// `struct __user_cap_header_struct` of `capset(2)`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct` of `capset(2)` (two of them in version 3).
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// What the signal handler applies: the capabilities kept, the highest capability number.
static KEEP: AtomicU64 = AtomicU64::new(0);
static LAST_CAP: AtomicU32 = AtomicU32::new(40);
static DROPPED: AtomicUsize = AtomicUsize::new(0);
static FAILED: AtomicUsize = AtomicUsize::new(0);

/// Reduces the calling thread's capabilities to `KEEP`: bounding set first
/// (that needs `CAP_SETPCAP`), ambient cleared, then effective, permitted
/// and inheritable. Only raw system calls: it runs in a signal handler.
fn drop_in_this_thread() -> bool {
    let keep = KEEP.load(Ordering::SeqCst);
    // SAFETY: prctl and capset with valid arguments; async-signal-safe.
    unsafe {
        for cap in 0..=LAST_CAP.load(Ordering::SeqCst) {
            // A thread started by one that already dropped has nothing to drop (nor CAP_SETPCAP).
            let bounded = libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) == 1;
            if keep & (1 << cap) == 0
                && bounded
                && libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) != 0
            {
                return false;
            }
        }
        let header = CapHeader { version: LINUX_CAPABILITY_VERSION_3, pid: 0 };
        // Nothing left to drop (a thread started by one that already dropped,
        // its signal handled late — maybe after the seccomp filter, which
        // refuses capset): done without a further call.
        let mut current = [CapData { effective: 0, permitted: 0, inheritable: 0 }; 2];
        if libc::syscall(libc::SYS_capget, &header as *const CapHeader, current.as_mut_ptr()) == 0 {
            let wide = |f: fn(&CapData) -> u32| u64::from(f(&current[0])) | u64::from(f(&current[1])) << 32;
            if wide(|d| d.permitted) & !keep == 0 && wide(|d| d.inheritable) == 0 {
                return true;
            }
        }
        if libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0) != 0 {
            return false;
        }
        let data =
            [keep as u32, (keep >> 32) as u32].map(|bits| CapData { effective: bits, permitted: bits, inheritable: 0 });
        libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) == 0
    }
}

extern "C" fn on_drop_signal(_: libc::c_int) {
    // SAFETY: errno is thread-local; saved and restored around the handler.
    let errno = unsafe { *libc::__errno_location() };
    let counter = if drop_in_this_thread() { &DROPPED } else { &FAILED };
    counter.fetch_add(1, Ordering::SeqCst);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Thread ids of this process.
fn threads() -> Result<Vec<libc::pid_t>> {
    let mut tids = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").context("listing /proc/self/task")? {
        if let Some(tid) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) {
            tids.push(tid);
        }
    }
    Ok(tids)
}

/// A thread's effective capabilities (`None` when it has exited).
fn effective_capabilities(tid: libc::pid_t) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

fn drop_capabilities_in_every_thread(keep: u64) -> Result<()> {
    let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40u32)
        .min(63);
    KEEP.store(keep, Ordering::SeqCst);
    LAST_CAP.store(last_cap, Ordering::SeqCst);
    // SIGRTMIN+6: glibc reserves the first realtime signals, tokio uses none.
    let signal = libc::SIGRTMIN() + 6;
    // SAFETY: installing a handler that only makes async-signal-safe calls.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_drop_signal as *const () as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
            bail!("sigaction: {}", std::io::Error::last_os_error());
        }
    }
    if !drop_in_this_thread() {
        bail!("capset in the main thread: {}", std::io::Error::last_os_error());
    }
    // SAFETY: getpid/gettid have no preconditions.
    let (pid, me) = unsafe { (libc::getpid(), libc::gettid()) };
    let mut signalled = HashSet::from([me]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Threads started meanwhile by a thread that still had its capabilities show up here.
        let fresh: Vec<_> = threads()?.into_iter().filter(|t| !signalled.contains(t)).collect();
        for &tid in &fresh {
            // SAFETY: tgkill to a thread of this process; ESRCH (it exited) is fine.
            unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, signal) };
            signalled.insert(tid);
        }
        if FAILED.load(Ordering::SeqCst) > 0 {
            bail!("a thread could not drop its capabilities");
        }
        let lagging: Vec<_> = threads()?
            .into_iter()
            .filter(|&t| effective_capabilities(t).is_some_and(|caps| caps & !keep != 0))
            .collect();
        if lagging.is_empty() && fresh.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("threads {lagging:?} still hold capabilities after 5 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// System calls the agent makes after start-up (tokio, sqlx with SQLite and
/// PostgreSQL, rustls, the resolver, `/proc` reads, BPF maps and links,
/// uprobes for new processes). Those needing argument checks are added in
/// `install_seccomp_filter`.
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
fn install_seccomp_filter(mismatch: SeccompAction) -> Result<()> {
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

    #[test]
    fn the_kept_set_is_the_five_documented_capabilities() {
        assert_eq!(KEPT_CAPABILITIES, 0x0000_00c0_0028_0004);
    }
}
