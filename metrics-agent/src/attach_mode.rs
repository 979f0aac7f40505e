//! How the data path is attached (`--attach`), and the choice the agent
//! makes when it is not given: socket tracepoints where the kernel has them
//! (cheapest, see docs/benchmarks.md), libc uprobes otherwise.

use anyhow::{Result, bail};
use aya::{Btf, BtfError};
use aya_obj::btf::BtfKind;

/// The two socket tracepoints socket mode needs.
pub const SOCKET_TRACEPOINTS: [&str; 2] = ["sock_send_length", "sock_recv_length"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// `sockets` where the kernel has BTF and both socket tracepoints (on
    /// x86-64), `uprobes` otherwise.
    #[default]
    Auto,
    /// Socket tracepoints (`sock:sock_send_length`, `sock:sock_recv_length`,
    /// tp_btf): one cheap hit per send or receive, paid only by socket calls;
    /// sees every runtime, Go and static binaries included.
    Sockets,
    /// Uprobes on the target's libc, scoped to each target process: other
    /// processes pay nothing; each call in the target costs a trap.
    Uprobes,
    /// Syscall tracepoints: each call costs far less than a uprobe, but every
    /// process on the host pays a small filter cost per syscall.
    Syscalls,
}

impl AttachMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Sockets => "sockets",
            Self::Uprobes => "uprobes",
            Self::Syscalls => "syscalls",
        }
    }

    /// The mode to attach in, and why (for the start-up line). An explicit
    /// `sockets` on a kernel without it is a one-line error.
    pub fn resolve(self) -> Result<(Self, String)> {
        match self {
            Self::Auto => Ok(match sockets_unavailable() {
                None => (Self::Sockets, "the kernel has BTF and the socket tracepoints".to_string()),
                Some(why) => (Self::Uprobes, format!("socket mode is unavailable: {why}")),
            }),
            Self::Sockets => match sockets_unavailable() {
                None => Ok((Self::Sockets, "asked for".to_string())),
                Some(why) => bail!("--attach sockets is unavailable: {why}; use --attach uprobes or syscalls"),
            },
            mode => Ok((mode, "asked for".to_string())),
        }
    }
}

/// Why socket mode cannot run here, or `None` when it can.
fn sockets_unavailable() -> Option<String> {
    if !cfg!(target_arch = "x86_64") {
        return Some("it reads x86-64 syscall registers and this is another architecture".to_string());
    }
    let btf = match Btf::from_sys_fs() {
        Ok(btf) => btf,
        Err(BtfError::FileError { .. }) => {
            return Some("the kernel has no BTF (/sys/kernel/btf/vmlinux)".to_string());
        }
        Err(e) => return Some(format!("the kernel's BTF cannot be read ({e})")),
    };
    SOCKET_TRACEPOINTS.iter().find_map(|tp| {
        btf.id_by_type_name_kind(&format!("btf_trace_{tp}"), BtfKind::Typedef)
            .err()
            .map(|_| format!("the kernel has no sock:{tp} tracepoint"))
    })
}
