//! CPU time used so far, by the process and by the calling thread
//! (`clock_gettime`): the audit path's CPU budget and the agent's own
//! `process_cpu_time` metric.

use std::time::Duration;

/// CPU time this process has used so far (all threads).
pub fn process_cpu_time() -> Duration {
    clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// CPU time the calling thread has used so far.
pub fn thread_cpu_time() -> Duration {
    clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec.
    unsafe { libc::clock_gettime(id, &mut ts) };
    Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_cpu_time_counts_this_thread_only() {
        let busy = || {
            let mut x = 0u64;
            for i in 0..20_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
        };
        let before = thread_cpu_time();
        // Another thread burns CPU: this thread's clock does not move for it.
        std::thread::spawn(busy).join().unwrap();
        let idle = thread_cpu_time() - before;
        busy();
        let worked = thread_cpu_time() - before;
        assert!(worked > idle * 4, "own work {worked:?} vs another thread's {idle:?}");
    }
}
