//! Dropping capabilities in every thread of the process: capabilities are
//! per thread, so each thread drops its own in a signal handler (as libpsx
//! does), and `/proc/self/task/*/status` is checked afterwards; threads
//! started meanwhile by a thread that still had them are signalled too.

use std::{
    collections::HashSet,
    sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

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

/// Reduces every thread to `keep` (effective, permitted, bounding; inheritable and ambient emptied).
pub fn drop_in_every_thread(keep: u64) -> Result<()> {
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
