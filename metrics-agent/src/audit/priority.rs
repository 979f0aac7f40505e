//! The audit thread's scheduling weight. The reader only drains the ring
//! buffer when the scheduler runs it; among the proxy's many threads it gets
//! a small fair share (measured: runnable but waiting 0.9 s of every second,
//! while the ring overflowed). The operator may give it a higher weight:
//! `audit_thread_nice_boost` steps of nice below the agent's own, plain
//! `SCHED_OTHER` (never real-time). Off by default: on a machine whose cores
//! the proxy saturates, the boosted reader captures about five times more
//! exchanges but takes that CPU from the proxy (measured in
//! docs/benchmarks.md), and the agent must not slow the proxy unless asked.
//! Its CPU stays capped by the adaptive sampler's budget
//! (`capture_cpu_budget_percent`, judged each second: over it, fewer
//! exchanges are captured), so it cannot take more than that budget.

/// Lowers thread `tid`'s nice value by `steps` (not below -20); needs
/// `CAP_SYS_NICE`, so it is called before the agent drops its capabilities.
/// Returns the nice value now in force.
pub fn raise(tid: libc::pid_t, steps: i32) -> std::io::Result<i32> {
    let who = tid as libc::id_t;
    // getpriority may return -1 as a value: errno tells an error apart.
    // SAFETY: errno is thread-local; getpriority has no memory preconditions.
    let current = unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, who)
    };
    if current == -1 && std::io::Error::last_os_error().raw_os_error() != Some(0) {
        return Err(std::io::Error::last_os_error());
    }
    let nice = (current - steps).max(-20);
    // SAFETY: no memory preconditions; PRIO_PROCESS with a thread id sets that thread's nice.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, who, nice) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(nice)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_gets_ten_steps_more_weight_than_its_spawner() {
        // SAFETY: getpriority/gettid have no preconditions.
        let before = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let (tx, rx) = std::sync::mpsc::channel();
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            tx.send(unsafe { libc::gettid() }).unwrap();
            wait.recv().unwrap();
            unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
        });
        let tid = rx.recv().unwrap();
        match raise(tid, 10) {
            Ok(nice) => {
                go.send(()).unwrap();
                assert_eq!(nice, (before - 10).max(-20));
                assert_eq!(thread.join().unwrap(), nice, "the thread itself sees its new nice value");
            }
            // Without CAP_SYS_NICE (not root): refused, and said so.
            Err(e) => {
                go.send(()).unwrap();
                thread.join().unwrap();
                assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{e}");
            }
        }
        assert_eq!(unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }, before, "the caller's own nice is unchanged");
    }
}
