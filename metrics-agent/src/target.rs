//! Which processes are targets: every process running an executable
//! (matched by device and inode, so symlinks and relative paths agree), or
//! one process and its descendants.

use std::{
    collections::{HashMap, HashSet},
    fs,
    io::Read,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

/// What to trace: every process running an executable, or one process
/// and the processes it forks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    Exe(PathBuf),
    Pid(u32),
}

/// A resolved target specification.
#[derive(Debug, Clone)]
pub enum Target {
    /// `comms`: the kernel's command names for the basename given and for
    /// the resolved file (exec sets comm from the name it was given).
    Exe {
        path: PathBuf,
        dev: u64,
        ino: u64,
        comms: [[u8; 16]; 2],
    },
    Pid(u32),
}

impl Target {
    pub fn resolve(spec: &TargetSpec) -> Result<Self> {
        match spec {
            TargetSpec::Exe(path) => {
                let meta = fs::metadata(path).with_context(|| format!("--exe {}: no such file", path.display()))?;
                if !meta.is_file() {
                    bail!("--exe {}: not a regular file", path.display());
                }
                let mut magic = Vec::with_capacity(4);
                fs::File::open(path)
                    .and_then(|f| f.take(4).read_to_end(&mut magic))
                    .with_context(|| format!("--exe {}: cannot read it", path.display()))?;
                if magic != b"\x7fELF" {
                    bail!(
                        "--exe {}: not an ELF executable (scripts: pass the interpreter's binary or use --pid)",
                        path.display()
                    );
                }
                let canonical = fs::canonicalize(path)?;
                let comms = [comm_of(path), comm_of(&canonical)];
                Ok(Self::Exe { path: canonical, dev: meta.dev(), ino: meta.ino(), comms })
            }
            TargetSpec::Pid(pid) => {
                if *pid == 0 || !Path::new(&format!("/proc/{pid}")).exists() {
                    bail!("--pid {pid}: no such process");
                }
                // A kernel thread (or a process that already exited) has no
                // executable: nothing of a proxy to trace, and its children
                // (kworkers) would be followed instead.
                if fs::read_link(format!("/proc/{pid}/exe")).is_err() {
                    bail!(
                        "--pid {pid}: not a user-space process (a kernel thread, or it has exited): pass the proxy's pid"
                    );
                }
                Ok(Self::Pid(*pid))
            }
        }
    }

    /// The processes that are targets right now.
    pub fn current_processes(&self) -> Vec<u32> {
        match self {
            Self::Exe { .. } => all_pids().into_iter().filter(|&p| self.runs_exe(p)).collect(),
            Self::Pid(root) => descendants(*root),
        }
    }

    /// True when `pid` runs the target executable (always false for `Pid`).
    pub fn runs_exe(&self, pid: u32) -> bool {
        match self {
            Self::Exe { dev, ino, .. } => {
                fs::metadata(format!("/proc/{pid}/exe")).map(|m| m.dev() == *dev && m.ino() == *ino).unwrap_or(false)
            }
            Self::Pid(_) => false,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Exe { path, .. } => format!("processes running {}", path.display()),
            Self::Pid(pid) => format!("process {pid} and its children"),
        }
    }
}

/// The kernel's comm for a program started as `path`: its file name cut to 15 bytes.
fn comm_of(path: &Path) -> [u8; 16] {
    let name = path.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default();
    let mut comm = [0u8; 16];
    let n = name.len().min(15);
    comm[..n].copy_from_slice(&name[..n]);
    comm
}

fn all_pids() -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
}

/// Parent pid from /proc/PID/stat (the field after the parenthesised comm).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// `root` and every live process descending from it.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for pid in all_pids() {
        if let Some(ppid) = parent_of(pid) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        if !seen.insert(p) || !Path::new(&format!("/proc/{p}")).exists() {
            continue;
        }
        out.push(p);
        stack.extend(children.get(&p).into_iter().flatten().copied());
    }
    out
}

/// True when `pid` is a process (thread-group leader), not a thread.
pub fn is_process(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Tgid:").map(|v| v.trim().parse::<u32>().ok())))
        .flatten()
        == Some(pid)
}

/// The short command name of a process, for messages.
pub fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm")).map(|s| s.trim().to_string()).unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_found_by_exe_and_pid() {
        let me = std::process::id();
        let exe = fs::read_link("/proc/self/exe").unwrap();
        let t = Target::resolve(&TargetSpec::Exe(exe)).unwrap();
        assert!(t.current_processes().contains(&me));
        let t = Target::resolve(&TargetSpec::Pid(me)).unwrap();
        assert_eq!(t.current_processes()[0], me);
        assert!(is_process(me));
    }

    #[test]
    fn bad_targets_get_clear_errors() {
        let e = Target::resolve(&TargetSpec::Exe("/nonexistent/proxy".into())).unwrap_err();
        assert!(e.to_string().contains("no such file"));
        let e = Target::resolve(&TargetSpec::Exe("/etc/hostname".into())).unwrap_err();
        assert!(e.to_string().contains("not an ELF"), "{e}");
        let e = Target::resolve(&TargetSpec::Pid(u32::MAX - 1)).unwrap_err();
        assert!(e.to_string().contains("no such process"));
        // kthreadd, the parent of every kernel thread.
        let e = Target::resolve(&TargetSpec::Pid(2)).unwrap_err();
        assert!(e.to_string().contains("not a user-space process"), "{e}");
    }
}
