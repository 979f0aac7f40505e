//! Loading the embedded eBPF object, attaching the process tracepoints and
//! attaching/detaching the libc uprobes of each target process.

use std::{
    collections::{HashMap, HashSet},
    num::NonZeroU32,
    path::PathBuf,
};

use anyhow::{Context, Result, anyhow};
use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, MapData, ProgramArray},
    programs::{TracePoint, UProbe, uprobe::UProbeLinkId, uprobe::UProbeScope},
};
use metrics_common::maps as names;

use crate::libc_symbols;

/// One hooked libc function: its entry program and, if any, its return program.
struct Hook {
    symbol: &'static str,
    entry: &'static str,
    ret: Option<&'static str>,
}

const fn hook(symbol: &'static str, entry: &'static str, ret: Option<&'static str>) -> Hook {
    Hook { symbol, entry, ret }
}

const DATA: Option<&str> = Some("return_data");

/// Every hooked function (see `metrics-ebpf/src/*.rs` for the prototypes).
const HOOKS: &[Hook] = &[
    hook("read", "enter_read", DATA),
    hook("recv", "enter_recv", DATA),
    hook("recvfrom", "enter_recv", DATA),
    hook("write", "enter_write", DATA),
    hook("send", "enter_write", DATA),
    hook("sendto", "enter_write", DATA),
    hook("readv", "enter_readv", DATA),
    hook("writev", "enter_writev", DATA),
    hook("recvmsg", "enter_recvmsg", DATA),
    hook("sendmsg", "enter_sendmsg", DATA),
    hook("sendfile", "enter_sendfile", DATA),
    hook("sendfile64", "enter_sendfile", DATA),
    hook("accept", "enter_accept", Some("return_accept")),
    hook("accept4", "enter_accept", Some("return_accept")),
    hook("connect", "enter_connect", None),
    hook("close", "enter_close", None),
];

/// Syscall tracepoints (category `syscalls`) and their programs, for
/// `--attach syscalls`.
const SYSCALL_HOOKS: &[(&str, &str)] = &[
    ("sys_enter_read", "sys_enter_read"),
    ("sys_enter_recvfrom", "sys_enter_recv"),
    ("sys_enter_write", "sys_enter_write"),
    ("sys_enter_sendto", "sys_enter_write"),
    ("sys_enter_readv", "sys_enter_readv"),
    ("sys_enter_writev", "sys_enter_writev"),
    ("sys_enter_recvmsg", "sys_enter_recvmsg"),
    ("sys_enter_sendmsg", "sys_enter_sendmsg"),
    ("sys_enter_sendfile64", "sys_enter_sendfile"),
    ("sys_exit_read", "sys_exit_data"),
    ("sys_exit_recvfrom", "sys_exit_data"),
    ("sys_exit_write", "sys_exit_data"),
    ("sys_exit_sendto", "sys_exit_data"),
    ("sys_exit_readv", "sys_exit_data"),
    ("sys_exit_writev", "sys_exit_data"),
    ("sys_exit_recvmsg", "sys_exit_data"),
    ("sys_exit_sendmsg", "sys_exit_data"),
    ("sys_exit_sendfile64", "sys_exit_data"),
    ("sys_enter_accept", "sys_enter_accept"),
    ("sys_enter_accept4", "sys_enter_accept"),
    ("sys_exit_accept", "sys_exit_accept"),
    ("sys_exit_accept4", "sys_exit_accept"),
    ("sys_enter_connect", "sys_enter_connect"),
    ("sys_enter_close", "sys_enter_close"),
];

/// How the data path is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Uprobes on the target's libc, scoped to each target process: other
    /// processes pay nothing; each call in the target costs a trap.
    #[default]
    Uprobes,
    /// Syscall tracepoints: each call costs far less, but every process on
    /// the host pays a small filter cost per syscall; sees static and Go binaries.
    Syscalls,
}

/// OpenSSL functions hooked in the libssl a target maps.
const SSL_HOOKS: &[Hook] = &[
    hook("SSL_read", "enter_ssl_read", Some("return_ssl")),
    hook("SSL_write", "enter_ssl_write", Some("return_ssl")),
    hook("SSL_read_ex", "enter_ssl_read_ex", Some("return_ssl")),
    hook("SSL_write_ex", "enter_ssl_write_ex", Some("return_ssl")),
    hook("SSL_do_handshake", "enter_ssl_handshake", Some("return_ssl_handshake")),
];

/// Functions a libc must have for the agent to work.
const REQUIRED: &[&str] = &["read", "write", "close", "connect", "accept4"];

/// One uprobe to attach: file, offset, program, symbol (for messages).
type PlannedProbe = (PathBuf, u64, &'static str, &'static str);

/// Adds the entry and return programs of every hook found in `offsets`.
fn plan_hooks(plan: &mut Vec<PlannedProbe>, file: &std::path::Path, offsets: &HashMap<String, u64>, hooks: &[Hook]) {
    for hook in hooks {
        if let Some(&offset) = offsets.get(hook.symbol) {
            plan.extend(
                [Some(hook.entry), hook.ret]
                    .into_iter()
                    .flatten()
                    .map(|p| (file.to_path_buf(), offset, p, hook.symbol)),
            );
        }
    }
}

/// The loaded programs and the links of every traced process.
pub struct Kernel {
    ebpf: Ebpf,
    mode: AttachMode,
    links: HashMap<u32, Vec<(&'static str, UProbeLinkId)>>,
    /// Symbol offsets per libc path, computed once.
    offsets: HashMap<PathBuf, HashMap<String, u64>>,
    targets: BpfHashMap<MapData, u32, u32>,
    /// Traced processes whose libssl is hooked.
    libssl_hooked: HashSet<u32>,
}

static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/metrics-ebpf"));

impl Kernel {
    /// Loads every program into the kernel (verifying them) without attaching.
    /// `payload_ring_bytes`: size of the payload ring buffer (a power of two
    /// multiple of the page size).
    pub fn load(mode: AttachMode, payload_ring_bytes: u32) -> Result<Self> {
        let mut ebpf = aya::EbpfLoader::new()
            .map_max_entries(names::PAYLOADS, payload_ring_bytes)
            .load(EBPF_OBJECT)
            .context("loading the eBPF object failed")?;
        // Start-up is mostly the verifier: only this mode's programs are
        // loaded (the syscall tracepoints are `sys_*`), on every core at once.
        let skip_syscalls = mode != AttachMode::Syscalls;
        let queue: std::sync::Mutex<Vec<(&str, &mut aya::programs::Program)>> = std::sync::Mutex::new(
            ebpf.programs_mut().filter(|(name, _)| !(skip_syscalls && name.starts_with("sys_"))).collect(),
        );
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
        std::thread::scope(|scope| -> Result<()> {
            let load = || -> Result<()> {
                while let Some((name, program)) = queue.lock().expect("lock").pop() {
                    let loaded = match program {
                        aya::programs::Program::UProbe(p) => p.load(),
                        aya::programs::Program::TracePoint(p) => p.load(),
                        _ => continue,
                    };
                    loaded.with_context(|| format!("the kernel rejected program {name}"))?;
                }
                Ok(())
            };
            let threads: Vec<_> = (0..workers).map(|_| scope.spawn(load)).collect();
            threads.into_iter().try_for_each(|t| t.join().expect("program loader thread"))
        })?;
        let mut jumps = vec![
            (names::CONTINUE, names::SLOT_PARSE, names::CONTINUE_PROGRAM),
            (names::CONTINUE, names::SLOT_CAPTURE, names::CAPTURE_PROGRAM),
        ];
        if !skip_syscalls {
            jumps.push((names::CONTINUE_SYSCALL, names::SLOT_PARSE, names::CONTINUE_SYSCALL_PROGRAM));
            jumps.push((names::CONTINUE_SYSCALL, names::SLOT_CAPTURE, names::CAPTURE_SYSCALL_PROGRAM));
        }
        for (map, slot, program) in jumps {
            let target = ebpf.program(program).ok_or_else(|| anyhow!("no program {program}"))?;
            let fd = target.fd()?.try_clone()?;
            let mut jump = ProgramArray::try_from(ebpf.map_mut(map).ok_or_else(|| anyhow!("no map {map}"))?)?;
            jump.set(slot, &fd, 0).with_context(|| format!("installing {program} in {map}"))?;
        }
        let targets = BpfHashMap::try_from(ebpf.take_map(names::TARGETS).ok_or_else(|| anyhow!("no TARGETS map"))?)?;
        Ok(Self { ebpf, mode, links: HashMap::new(), offsets: HashMap::new(), targets, libssl_hooked: HashSet::new() })
    }

    pub fn take_map(&mut self, name: &str) -> Result<aya::maps::Map> {
        self.ebpf.take_map(name).ok_or_else(|| anyhow!("the eBPF object has no map {name}"))
    }

    /// Writes a slot of the `CONFIG` array.
    pub fn set_config(&mut self, slot: u32, value: u32) -> Result<()> {
        let mut config: Array<&mut MapData, u32> =
            Array::try_from(self.ebpf.map_mut(names::CONFIG).ok_or_else(|| anyhow!("no CONFIG map"))?)?;
        config.set(slot, value, 0)?;
        Ok(())
    }

    /// Reports new processes whose comm is one of `comms` (for `--exe` targets).
    pub fn watch_comms(&mut self, comms: &[[u8; 16]]) -> Result<()> {
        let mut watch: Array<&mut MapData, [u8; 16]> =
            Array::try_from(self.ebpf.map_mut(names::WATCH_COMM).ok_or_else(|| anyhow!("no WATCH_COMM map"))?)?;
        for (slot, comm) in comms.iter().take(names::WATCH_COMM_ENTRIES as usize).enumerate() {
            watch.set(slot as u32, *comm, 0)?;
        }
        self.set_config(names::config::WATCH_EXEC, 1)
    }

    /// Attaches the fork, exec and exit tracepoints, and in syscall mode the
    /// data-path syscall tracepoints.
    pub fn attach_tracepoints(&mut self) -> Result<()> {
        let mut points: Vec<(&str, &str, &str)> = vec![
            ("on_fork", "task", "task_newtask"),
            ("on_exec", "sched", "sched_process_exec"),
            ("on_exit", "sched", "sched_process_exit"),
        ];
        if self.mode == AttachMode::Syscalls {
            points.extend(SYSCALL_HOOKS.iter().map(|(event, program)| (*program, "syscalls", *event)));
        }
        for (program, category, event) in points {
            let tp: &mut TracePoint =
                self.ebpf.program_mut(program).ok_or_else(|| anyhow!("no program {program}"))?.try_into()?;
            tp.attach(category, event).with_context(|| format!("attaching tracepoint {category}/{event}"))?;
        }
        Ok(())
    }

    pub fn is_traced(&self, pid: u32) -> bool {
        self.links.contains_key(&pid)
    }

    pub fn traced(&self) -> impl Iterator<Item = u32> + '_ {
        self.links.keys().copied()
    }

    /// Marks `pid` as a target and attaches every hook to its libc, scoped to it.
    pub fn attach_process(&mut self, pid: u32) -> Result<usize> {
        if self.is_traced(pid) {
            return Ok(0);
        }
        let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).ok_or_else(|| anyhow!("pid 0"))?);
        let mut plan: Vec<PlannedProbe> = Vec::new();
        if self.mode == AttachMode::Uprobes {
            // libc socket calls (syscall mode sees them through tracepoints).
            let libc = libc_symbols::libc_of(pid)?;
            let offsets = self.offsets_in(&libc, HOOKS.iter().map(|h| h.symbol))?;
            if let Some(missing) = REQUIRED.iter().find(|s| !offsets.contains_key(**s)) {
                anyhow::bail!("{} has no symbol {missing}: unsupported C library", libc.display());
            }
            plan_hooks(&mut plan, &libc, &offsets, HOOKS);
        }
        // OpenSSL, in both modes: the plaintext of TLS connections.
        let libssl = libc_symbols::library_of(pid, "libssl.so");
        if let Some(libssl) = &libssl {
            let offsets = self.offsets_in(libssl, SSL_HOOKS.iter().map(|h| h.symbol))?;
            plan_hooks(&mut plan, libssl, &offsets, SSL_HOOKS);
        }
        // OpenSSL linked into the executable itself (Node.js, static builds):
        // the kernel follows the /proc link to the file, in any namespace.
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        if let Ok(offsets) = self.offsets_in(&exe, SSL_HOOKS.iter().map(|h| h.symbol)) {
            plan_hooks(&mut plan, &exe, &offsets, SSL_HOOKS);
        }
        self.targets.insert(pid, 0, 0).context("adding to the TARGETS map")?;
        let mut links = Vec::new();
        let mut done: HashSet<(PathBuf, u64, &str)> = HashSet::new();
        let mut result = Ok(());
        for (file, offset, program, symbol) in plan {
            if !done.insert((file.clone(), offset, program)) {
                continue; // an alias of a function already hooked
            }
            let probe: &mut UProbe = self.ebpf.program_mut(program).expect("program exists").try_into()?;
            match probe.attach(offset, &file, scope) {
                Ok(link) => links.push((program, link)),
                Err(e) => {
                    result = Err(anyhow!(e).context(format!("attaching {program} to {symbol} in process {pid}")));
                    break;
                }
            }
        }
        let attached = links.len();
        self.links.insert(pid, links);
        if let Err(e) = result {
            self.detach_process(pid);
            return Err(e);
        }
        if libssl.is_some() {
            self.libssl_hooked.insert(pid);
        }
        Ok(attached)
    }

    /// A traced process that loaded libssl after it was attached (Python
    /// imports `ssl` lazily, programs dlopen it): hooks that libssl now.
    /// Returns the number of probes added.
    pub fn attach_late_libssl(&mut self, pid: u32) -> Result<usize> {
        if !self.is_traced(pid) || self.libssl_hooked.contains(&pid) {
            return Ok(0);
        }
        let Some(libssl) = libc_symbols::library_of(pid, "libssl.so") else { return Ok(0) };
        self.libssl_hooked.insert(pid);
        let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).ok_or_else(|| anyhow!("pid 0"))?);
        let offsets = self.offsets_in(&libssl, SSL_HOOKS.iter().map(|h| h.symbol))?;
        let mut plan = Vec::new();
        plan_hooks(&mut plan, &libssl, &offsets, SSL_HOOKS);
        let mut added = 0;
        for (file, offset, program, symbol) in plan {
            let probe: &mut UProbe = self.ebpf.program_mut(program).expect("program exists").try_into()?;
            let link = probe
                .attach(offset, &file, scope)
                .with_context(|| format!("attaching {program} to {symbol} in process {pid}"))?;
            self.links.entry(pid).or_default().push((program, link));
            added += 1;
        }
        Ok(added)
    }

    /// Symbol offsets in a library or executable, computed once per file
    /// (device and inode: the same file under any path or namespace).
    fn offsets_in<'a>(
        &mut self,
        file: &PathBuf,
        symbols: impl Iterator<Item = &'a str>,
    ) -> Result<HashMap<String, u64>> {
        use std::os::unix::fs::MetadataExt;
        let key = match std::fs::metadata(file) {
            Ok(m) => PathBuf::from(format!("{}:{}", m.dev(), m.ino())),
            Err(_) => file.clone(),
        };
        if !self.offsets.contains_key(&key) {
            let wanted: Vec<&str> = symbols.collect();
            let found = libc_symbols::symbol_offsets(file, &wanted)?;
            self.offsets.insert(key.clone(), found);
        }
        Ok(self.offsets[&key].clone())
    }

    /// Detaches the hooks of `pid` (it exited or stopped being a target).
    pub fn detach_process(&mut self, pid: u32) {
        let _ = self.targets.remove(&pid);
        self.libssl_hooked.remove(&pid);
        for (program, link) in self.links.remove(&pid).unwrap_or_default() {
            if let Some(Ok(probe)) = self.ebpf.program_mut(program).map(<&mut UProbe>::try_from) {
                let _ = probe.detach(link);
            }
        }
    }

    /// Detaches everything (also done by dropping).
    pub fn detach_all(&mut self) {
        let pids: Vec<u32> = self.links.keys().copied().collect();
        for pid in pids {
            self.detach_process(pid);
        }
    }
}
