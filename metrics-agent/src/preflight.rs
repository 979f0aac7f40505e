//! Checks run before loading anything, each failing with a one-line error
//! that says what to do: privileges, BTF, uprobe support, tracefs.

use std::path::Path;

use anyhow::{Result, bail};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capability bits of this process.
fn effective_caps() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

pub fn check() -> Result<()> {
    let caps = effective_caps();
    let has = |bit: u32| caps & (1u64 << bit) != 0;
    if !(has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))) {
        bail!(
            "missing privileges: loading eBPF programs needs root or CAP_BPF and CAP_PERFMON \
             (run with sudo)"
        );
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        bail!(
            "this kernel has no BTF (/sys/kernel/btf/vmlinux is missing): use a kernel built \
             with CONFIG_DEBUG_INFO_BTF=y"
        );
    }
    if !Path::new("/sys/bus/event_source/devices/uprobe/type").exists() {
        bail!(
            "this kernel has no uprobe support (no uprobe event source): use a kernel built \
             with CONFIG_UPROBE_EVENTS=y"
        );
    }
    mount_tracefs()
}

/// Tracepoints are attached through tracefs; mount it when nothing has.
fn mount_tracefs() -> Result<()> {
    for dir in ["/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"] {
        if Path::new(dir).exists() {
            return Ok(());
        }
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: plain mount(2) with static NUL-terminated strings.
    let rc = unsafe { libc::mount(c"tracefs".as_ptr(), target.as_ptr(), c"tracefs".as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        bail!(
            "tracefs is not mounted and mounting it failed ({}): run `mount -t tracefs tracefs \
             /sys/kernel/tracing`",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Offsets of `pid` and `clone_flags` in the `task_newtask` record, from its
/// format file.
pub fn newtask_offsets() -> Result<(u32, u32)> {
    for base in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        let path = format!("{base}/events/task/task_newtask/format");
        if let Ok(text) = std::fs::read_to_string(&path) {
            if let (Some(pid), Some(flags)) =
                (parse_field_offset(&text, "pid"), parse_field_offset(&text, "clone_flags"))
            {
                return Ok((pid, flags));
            }
            bail!("{path} lacks pid or clone_flags: this kernel's task_newtask tracepoint is not supported");
        }
    }
    bail!("cannot read the task_newtask tracepoint format: is tracefs mounted?")
}

fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?;
        let (decl, rest) = decl.split_once(';')?;
        let name = decl.split_whitespace().last()?.trim_start_matches('*');
        if name != field {
            return None;
        }
        rest.trim().strip_prefix("offset:")?.split(';').next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_field_offsets_in_old_and_new_formats() {
        let new = "\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;\n\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;\n";
        let old = "\tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:0;\n\tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;\n";
        let newtask = "\tfield:pid_t pid;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:u64 clone_flags;\toffset:32;\tsize:8;\tsigned:0;\n";
        assert_eq!(super::parse_field_offset(newtask, "pid"), Some(8));
        assert_eq!(super::parse_field_offset(newtask, "clone_flags"), Some(32));
        assert_eq!(super::parse_field_offset(new, "child_pid"), Some(20));
        assert_eq!(super::parse_field_offset(old, "child_pid"), Some(44));
        assert_eq!(super::parse_field_offset(old, "parent_pid"), None);
    }
}
