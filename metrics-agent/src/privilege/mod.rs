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
//! Capabilities are per thread: `capabilities` drops them in every thread
//! of the process; `seccomp` builds and installs the filter.

mod capabilities;
mod seccomp;

use anyhow::{Context, Result, bail};

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
    capabilities::drop_in_every_thread(KEPT_CAPABILITIES).context("dropping capabilities")?;
    let mismatch = match std::env::var(SECCOMP_ENV).as_deref() {
        Err(_) | Ok("enforce") => seccompiler::SeccompAction::Errno(libc::EPERM as u32),
        // Diagnosis: calls outside the allowlist are allowed and logged by the kernel (dmesg, audit).
        Ok("log") => seccompiler::SeccompAction::Log,
        Ok(other) => bail!("{SECCOMP_ENV}={other}: use enforce (the default) or log"),
    };
    seccomp::install(mismatch).context("installing the seccomp filter")?;
    log::info!(
        "privileges reduced: capabilities {KEPT_CAPABILITIES:#018x} (bpf, perfmon, sys_admin, sys_ptrace, dac_read_search), \
         no_new_privs, not dumpable, seccomp filter"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_set_is_the_five_documented_capabilities() {
        assert_eq!(KEPT_CAPABILITIES, 0x0000_00c0_0028_0004);
    }
}
