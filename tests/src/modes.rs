//! The agent's data paths (`--attach`) and running one test body once per
//! data path, so every end-to-end check holds in every mode without copies.

use std::panic::{AssertUnwindSafe, catch_unwind};

/// One data path of the agent: the value of `--attach`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// libc uprobes scoped to the targets.
    Uprobes,
    /// Syscall tracepoints, filtered by target in the kernel.
    Syscalls,
    /// `tp_btf` programs on `sock:sock_send_length` / `sock_recv_length`.
    Sockets,
}

/// The modes a test of the libc and socket data paths runs in.
pub const UPROBES_AND_SOCKETS: &[AttachMode] = &[AttachMode::Uprobes, AttachMode::Sockets];
/// Every data path.
pub const ALL: &[AttachMode] = &[AttachMode::Uprobes, AttachMode::Syscalls, AttachMode::Sockets];
/// The data paths that see a process without libc (Go, static binaries).
pub const WITHOUT_LIBC: &[AttachMode] = &[AttachMode::Syscalls, AttachMode::Sockets];

/// Restricts the modes the tests run in, for development only:
/// `E2E_ATTACH_MODES=uprobes,syscalls`. Unset, every test runs in all of
/// its modes.
pub const SELECT_ENV: &str = "E2E_ATTACH_MODES";

impl AttachMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Uprobes => "uprobes",
            Self::Syscalls => "syscalls",
            Self::Sockets => "sockets",
        }
    }

    /// `["--attach", NAME]`, for the agent's command line.
    pub fn args(self) -> [&'static str; 2] {
        ["--attach", self.name()]
    }

    fn parse(name: &str) -> Self {
        match name.trim() {
            "uprobes" => Self::Uprobes,
            "syscalls" => Self::Syscalls,
            "sockets" => Self::Sockets,
            other => panic!("{SELECT_ENV}: unknown mode {other:?}; use uprobes, syscalls and/or sockets"),
        }
    }
}

/// `modes`, less those `E2E_ATTACH_MODES` leaves out.
pub fn selected(modes: &[AttachMode]) -> Vec<AttachMode> {
    match std::env::var(SELECT_ENV) {
        Ok(list) if !list.trim().is_empty() => {
            let wanted: Vec<AttachMode> = list.split(',').map(AttachMode::parse).collect();
            modes.iter().copied().filter(|m| wanted.contains(m)).collect()
        }
        _ => modes.to_vec(),
    }
}

/// Runs `body` once per selected mode, every mode even when one fails, and
/// then fails naming each mode that failed (the panic messages themselves
/// are printed as they happen, after a `=== mode` line).
pub fn for_each_mode(modes: &[AttachMode], mut body: impl FnMut(AttachMode)) {
    let modes = selected(modes);
    assert!(!modes.is_empty(), "{SELECT_ENV} leaves none of this test's modes");
    let mut failed = Vec::new();
    for mode in modes {
        eprintln!("=== mode {}", mode.name());
        if catch_unwind(AssertUnwindSafe(|| body(mode))).is_err() {
            failed.push(mode.name());
        }
    }
    assert!(failed.is_empty(), "failed with --attach {}", failed.join(", --attach "));
}
