//! glibc heap settings that keep the agent's memory flat under sustained
//! load. Measured in the soak benchmark (docs/benchmarks.md): glibc kept
//! about 21 MiB of freed heap for 4 MiB in use, spread over one arena per
//! thread that ever allocated, and large buffers freed once raised its mmap
//! threshold so that later large buffers came from those arenas too. Here:
//! two arenas at most, large blocks always mapped (and unmapped when freed),
//! and the free pages of every arena given back now and then.

use std::time::Duration;

/// How often freed heap pages are returned to the system.
pub const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Sets the allocator's parameters; call first thing in `main`, before any
/// thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune() {
    // SAFETY: mallopt only changes the allocator's parameters; no thread runs yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        // A fixed threshold also turns off glibc's raising it after a free.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1024 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune() {}

/// Returns the free pages of every arena to the system (a few milliseconds
/// for the agent's heap).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim() {
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() {}

/// Trims every `TRIM_EVERY` until the task is dropped.
pub async fn keep_trimming() {
    let mut every = tokio::time::interval(TRIM_EVERY);
    every.tick().await;
    loop {
        every.tick().await;
        trim();
    }
}
