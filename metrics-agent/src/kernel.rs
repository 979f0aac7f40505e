//! Loading the embedded eBPF object, attaching the process tracepoints and
//! the data path of the chosen mode (socket tracepoints, syscall
//! tracepoints, or libc uprobes per target process), and the OpenSSL uprobes
//! of each target process.

use std::{
    collections::{HashMap, HashSet},
    num::NonZeroU32,
    path::PathBuf,
};

use anyhow::{Context, Result, anyhow};
use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap, MapData, ProgramArray},
    programs::{BtfTracePoint, TracePoint, UProbe, uprobe::UProbeLinkId, uprobe::UProbeScope},
};
use metrics_common::{
    maps as names,
    programs::{gotls, libc, process, sockets, ssl, syscalls},
};

use crate::attach_mode::AttachMode;
use crate::gotls::{self as go, GoTlsProbes};
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

const DATA: Option<&str> = Some(libc::RETURN_DATA);

/// Every hooked libc function (see `metrics-ebpf/src/probes/libc.rs` for the prototypes).
const HOOKS: &[Hook] = &[
    hook("read", libc::ENTER_READ, DATA),
    hook("recv", libc::ENTER_RECV, DATA),
    hook("recvfrom", libc::ENTER_RECV, DATA),
    hook("write", libc::ENTER_WRITE, DATA),
    hook("send", libc::ENTER_WRITE, DATA),
    hook("sendto", libc::ENTER_WRITE, DATA),
    hook("readv", libc::ENTER_READV, DATA),
    hook("writev", libc::ENTER_WRITEV, DATA),
    hook("recvmsg", libc::ENTER_RECVMSG, DATA),
    hook("sendmsg", libc::ENTER_SENDMSG, DATA),
    hook("sendfile", libc::ENTER_SENDFILE, DATA),
    hook("sendfile64", libc::ENTER_SENDFILE, DATA),
    hook("accept", libc::ENTER_ACCEPT, Some(libc::RETURN_ACCEPT)),
    hook("accept4", libc::ENTER_ACCEPT, Some(libc::RETURN_ACCEPT)),
    hook("connect", libc::ENTER_CONNECT, None),
    hook("close", libc::ENTER_CLOSE, None),
];

/// Data syscall tracepoints (category `syscalls`) and their programs, for
/// `--attach syscalls` (with `LIFECYCLE_SYSCALL_HOOKS`).
const SYSCALL_HOOKS: &[(&str, &str)] = &[
    ("sys_enter_read", syscalls::SYS_ENTER_READ),
    ("sys_enter_recvfrom", syscalls::SYS_ENTER_RECV),
    ("sys_enter_write", syscalls::SYS_ENTER_WRITE),
    ("sys_enter_sendto", syscalls::SYS_ENTER_WRITE),
    ("sys_enter_readv", syscalls::SYS_ENTER_READV),
    ("sys_enter_writev", syscalls::SYS_ENTER_WRITEV),
    ("sys_enter_recvmsg", syscalls::SYS_ENTER_RECVMSG),
    ("sys_enter_sendmsg", syscalls::SYS_ENTER_SENDMSG),
    ("sys_enter_sendfile64", syscalls::SYS_ENTER_SENDFILE),
    ("sys_exit_read", syscalls::SYS_EXIT_DATA),
    ("sys_exit_recvfrom", syscalls::SYS_EXIT_DATA),
    ("sys_exit_write", syscalls::SYS_EXIT_DATA),
    ("sys_exit_sendto", syscalls::SYS_EXIT_DATA),
    ("sys_exit_readv", syscalls::SYS_EXIT_DATA),
    ("sys_exit_writev", syscalls::SYS_EXIT_DATA),
    ("sys_exit_recvmsg", syscalls::SYS_EXIT_DATA),
    ("sys_exit_sendmsg", syscalls::SYS_EXIT_DATA),
    ("sys_exit_sendfile64", syscalls::SYS_EXIT_DATA),
];

/// Connection lifecycle syscall tracepoints, which socket mode uses too:
/// they fire only for these syscalls.
const LIFECYCLE_SYSCALL_HOOKS: &[(&str, &str)] = &[
    ("sys_enter_accept", syscalls::SYS_ENTER_ACCEPT),
    ("sys_enter_accept4", syscalls::SYS_ENTER_ACCEPT),
    ("sys_exit_accept", syscalls::SYS_EXIT_ACCEPT),
    ("sys_exit_accept4", syscalls::SYS_EXIT_ACCEPT),
    ("sys_enter_connect", syscalls::SYS_ENTER_CONNECT),
    ("sys_enter_close", syscalls::SYS_ENTER_CLOSE),
];

/// Socket mode's tp_btf programs: (program, tracepoint it is loaded for,
/// attached). The continuations are only tail-called; they are loaded for a
/// tracepoint of the same prototype, which tail calls between tracing
/// programs require.
const SOCKET_PROGRAMS: &[(&str, &str, bool)] = &[
    (sockets::SOCK_SEND, "sock_send_length", true),
    (sockets::SOCK_RECV, "sock_recv_length", true),
    (sockets::SOCK_CONTINUE_RESPONSE, "sock_send_length", false),
    (sockets::SOCK_CAPTURE_PAYLOAD, "sock_send_length", false),
];

/// OpenSSL functions hooked in the libssl a target maps.
const SSL_HOOKS: &[Hook] = &[
    hook("SSL_read", ssl::ENTER_SSL_READ, Some(ssl::RETURN_SSL)),
    hook("SSL_write", ssl::ENTER_SSL_WRITE, Some(ssl::RETURN_SSL)),
    hook("SSL_read_ex", ssl::ENTER_SSL_READ_EX, Some(ssl::RETURN_SSL)),
    hook("SSL_write_ex", ssl::ENTER_SSL_WRITE_EX, Some(ssl::RETURN_SSL)),
    hook("SSL_do_handshake", ssl::ENTER_SSL_HANDSHAKE, Some(ssl::RETURN_SSL_HANDSHAKE)),
    // Return only: whether a failed `SSL_read_ex` was the peer's close.
    hook("SSL_get_error", ssl::RETURN_SSL_GET_ERROR, None),
];

/// OpenSSL's libcrypto functions hooked (in the libcrypto a target maps,
/// or in its executable): the records an SSL call writes into a memory BIO,
/// which tie that `SSL*` to the socket that sends them.
const CRYPTO_HOOKS: &[Hook] = &[hook("BIO_write", ssl::ENTER_BIO_WRITE, None)];

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

/// The Go crypto/tls probes of an executable (`go::plan`).
fn plan_go_tls(plan: &mut Vec<PlannedProbe>, exe: &std::path::Path, go: &GoTlsProbes) {
    plan.push((exe.to_path_buf(), go.read_entry, gotls::ENTER_GO_TLS_READ, go::READ));
    plan.push((exe.to_path_buf(), go.write_checked, gotls::ENTER_GO_TLS_WRITE, go::WRITE));
    plan.extend(
        go.returns.iter().map(|&at| (exe.to_path_buf(), at, gotls::RETURN_GO_TLS, "RET of crypto/tls.(*Conn).Read")),
    );
}

/// Whether program `name` is used in `mode` (others are not loaded: the
/// verifier is most of the start-up time).
fn needed_in(mode: AttachMode, name: &str) -> bool {
    let libc_data_path = HOOKS.iter().any(|h| h.entry == name || h.ret == Some(name));
    if libc_data_path {
        return mode == AttachMode::Uprobes;
    }
    if name.starts_with("sys_") {
        return match mode {
            AttachMode::Syscalls => true,
            AttachMode::Sockets => LIFECYCLE_SYSCALL_HOOKS.iter().any(|(_, program)| *program == name),
            _ => false,
        };
    }
    if socket_tracepoint_of(name).is_some() {
        return mode == AttachMode::Sockets;
    }
    true
}

/// The tracepoint a socket-mode program is loaded for.
fn socket_tracepoint_of(program: &str) -> Option<&'static str> {
    SOCKET_PROGRAMS.iter().find(|(name, _, _)| *name == program).map(|(_, tracepoint, _)| *tracepoint)
}

/// A file's identity: device and inode (the same file under any path or
/// namespace), or its path when it cannot be read.
fn file_key(file: &PathBuf) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(file) {
        Ok(m) => PathBuf::from(format!("{}:{}", m.dev(), m.ino())),
        Err(_) => file.clone(),
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
    /// Go crypto/tls probes per executable (device and inode), computed once.
    go_tls: HashMap<PathBuf, Option<GoTlsProbes>>,
}

static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/metrics-ebpf"));

impl Kernel {
    /// Loads the programs `mode` uses into the kernel (verifying them) without attaching.
    /// `payload_ring_bytes`: size of the payload ring buffer (a power of two
    /// multiple of the page size).
    /// `mode` is a resolved mode (not `Auto`).
    pub fn load(mode: AttachMode, payload_ring_bytes: u32) -> Result<Self> {
        let mut ebpf = aya::EbpfLoader::new()
            .map_max_entries(names::PAYLOADS, payload_ring_bytes)
            .load(EBPF_OBJECT)
            .context("loading the eBPF object failed")?;
        // Start-up is mostly the verifier: only this mode's programs are
        // loaded (`needed_in`), on every core at once.
        let btf = match mode {
            AttachMode::Sockets => Some(aya::Btf::from_sys_fs().context("reading the kernel's BTF")?),
            _ => None,
        };
        let queue: std::sync::Mutex<Vec<(&str, &mut aya::programs::Program)>> =
            std::sync::Mutex::new(ebpf.programs_mut().filter(|(name, _)| needed_in(mode, name)).collect());
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
        std::thread::scope(|scope| -> Result<()> {
            let load = || -> Result<()> {
                while let Some((name, program)) = queue.lock().expect("lock").pop() {
                    let started = std::time::Instant::now();
                    let loaded = match program {
                        aya::programs::Program::UProbe(p) => p.load(),
                        aya::programs::Program::TracePoint(p) => p.load(),
                        // tp_btf programs load against the kernel's BTF: only in socket mode.
                        aya::programs::Program::BtfTracePoint(p) => match (&btf, socket_tracepoint_of(name)) {
                            (Some(btf), Some(tracepoint)) => p.load(tracepoint, btf),
                            _ => continue,
                        },
                        _ => continue,
                    };
                    loaded.map_err(|e| rejected(name, e))?;
                    log::debug!("program {name} loaded (verified) in {} ms", started.elapsed().as_millis());
                }
                Ok(())
            };
            let threads: Vec<_> = (0..workers).map(|_| scope.spawn(load)).collect();
            threads.into_iter().try_for_each(|t| t.join().expect("program loader thread"))
        })?;
        // The uprobe continuations serve the OpenSSL probes in every mode.
        let mut jumps = vec![
            (names::CONTINUE, names::SLOT_PARSE, libc::CONTINUE_RESPONSE),
            (names::CONTINUE, names::SLOT_CAPTURE, libc::CAPTURE_PAYLOAD),
        ];
        if mode == AttachMode::Syscalls {
            jumps.push((names::CONTINUE_SYSCALL, names::SLOT_PARSE, syscalls::SYS_CONTINUE_RESPONSE));
            jumps.push((names::CONTINUE_SYSCALL, names::SLOT_CAPTURE, syscalls::SYS_CAPTURE_PAYLOAD));
        }
        if mode == AttachMode::Sockets {
            jumps.push((names::CONTINUE_SOCKET, names::SLOT_PARSE, sockets::SOCK_CONTINUE_RESPONSE));
            jumps.push((names::CONTINUE_SOCKET, names::SLOT_CAPTURE, sockets::SOCK_CAPTURE_PAYLOAD));
        }
        for (map, slot, program) in jumps {
            let target = ebpf.program(program).ok_or_else(|| anyhow!("no program {program}"))?;
            let fd = target.fd()?.try_clone()?;
            let mut jump = ProgramArray::try_from(ebpf.map_mut(map).ok_or_else(|| anyhow!("no map {map}"))?)?;
            jump.set(slot, &fd, 0).with_context(|| format!("installing {program} in {map}"))?;
        }
        let targets = BpfHashMap::try_from(ebpf.take_map(names::TARGETS).ok_or_else(|| anyhow!("no TARGETS map"))?)?;
        Ok(Self {
            ebpf,
            mode,
            links: HashMap::new(),
            offsets: HashMap::new(),
            targets,
            libssl_hooked: HashSet::new(),
            go_tls: HashMap::new(),
        })
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

    /// Attaches the fork, exec and exit tracepoints, and the data path of
    /// syscall and socket modes (global hooks, filtered by `TARGETS`).
    pub fn attach_tracepoints(&mut self) -> Result<()> {
        let mut points: Vec<(&str, &str, &str)> = vec![
            (process::ON_FORK, "task", "task_newtask"),
            (process::ON_EXEC, "sched", "sched_process_exec"),
            (process::ON_EXIT, "sched", "sched_process_exit"),
        ];
        if self.mode == AttachMode::Syscalls {
            points.extend(SYSCALL_HOOKS.iter().map(|(event, program)| (*program, "syscalls", *event)));
        }
        if matches!(self.mode, AttachMode::Syscalls | AttachMode::Sockets) {
            points.extend(LIFECYCLE_SYSCALL_HOOKS.iter().map(|(event, program)| (*program, "syscalls", *event)));
        }
        for (program, category, event) in points {
            let tp: &mut TracePoint =
                self.ebpf.program_mut(program).ok_or_else(|| anyhow!("no program {program}"))?.try_into()?;
            tp.attach(category, event).with_context(|| format!("attaching tracepoint {category}/{event}"))?;
        }
        if self.mode == AttachMode::Sockets {
            for (program, tracepoint, attached) in SOCKET_PROGRAMS {
                if !attached {
                    continue;
                }
                let tp: &mut BtfTracePoint =
                    self.ebpf.program_mut(program).ok_or_else(|| anyhow!("no program {program}"))?.try_into()?;
                tp.attach().with_context(|| format!("attaching tp_btf sock/{tracepoint}"))?;
            }
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
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        // Go's crypto/tls in a Go executable (looked for first: in uprobes
        // mode a Go executable gets its warning even when it has no libc).
        let go_tls = self.go_tls_of(&exe);
        if self.mode == AttachMode::Uprobes {
            // libc socket calls (the other modes see them through tracepoints).
            let libc = libc_symbols::libc_of(pid)?;
            let offsets = self.offsets_in(&libc, HOOKS.iter().map(|h| h.symbol))?;
            if let Some(missing) = REQUIRED.iter().find(|s| !offsets.contains_key(**s)) {
                anyhow::bail!("{} has no symbol {missing}: unsupported C library", libc.display());
            }
            plan_hooks(&mut plan, &libc, &offsets, HOOKS);
        }
        // OpenSSL, in every mode: the plaintext of TLS connections.
        let libssl = libc_symbols::library_of(pid, "libssl.so");
        if libssl.is_some() {
            self.plan_libssl(pid, &mut plan)?;
        }
        // OpenSSL linked into the executable itself (Node.js, static builds):
        // the kernel follows the /proc link to the file, in any namespace.
        let symbols = SSL_HOOKS.iter().chain(CRYPTO_HOOKS).map(|h| h.symbol);
        if let Ok(offsets) = self.offsets_in(&exe, symbols) {
            plan_hooks(&mut plan, &exe, &offsets, SSL_HOOKS);
            if SSL_HOOKS.iter().any(|h| offsets.contains_key(h.symbol)) {
                plan_hooks(&mut plan, &exe, &offsets, CRYPTO_HOOKS);
            }
        }
        if let Some(go) = go_tls {
            plan_go_tls(&mut plan, &exe, &go);
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
        if libc_symbols::library_of(pid, "libssl.so").is_none() {
            return Ok(0);
        }
        self.libssl_hooked.insert(pid);
        let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).ok_or_else(|| anyhow!("pid 0"))?);
        let mut plan = Vec::new();
        self.plan_libssl(pid, &mut plan)?;
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

    /// Plans the hooks of the libssl `pid` maps and of its libcrypto.
    fn plan_libssl(&mut self, pid: u32, plan: &mut Vec<PlannedProbe>) -> Result<()> {
        let Some(libssl) = libc_symbols::library_of(pid, "libssl.so") else { return Ok(()) };
        let offsets = self.offsets_in(&libssl, SSL_HOOKS.iter().map(|h| h.symbol))?;
        plan_hooks(plan, &libssl, &offsets, SSL_HOOKS);
        if let Some(libcrypto) = libc_symbols::library_of(pid, "libcrypto.so") {
            let offsets = self.offsets_in(&libcrypto, CRYPTO_HOOKS.iter().map(|h| h.symbol))?;
            plan_hooks(plan, &libcrypto, &offsets, CRYPTO_HOOKS);
        }
        Ok(())
    }

    /// The Go crypto/tls probes of executable `exe`, computed once per file.
    /// A Go executable they cannot follow gets a one-line warning (its TLS
    /// stays counted as opaque bytes); in uprobes mode, any Go executable
    /// gets one saying to use another mode (`go::uprobes_warning`).
    fn go_tls_of(&mut self, exe: &PathBuf) -> Option<GoTlsProbes> {
        let key = file_key(exe);
        if let Some(known) = self.go_tls.get(&key) {
            return known.clone();
        }
        let shown = std::fs::read_link(exe).unwrap_or_else(|_| exe.clone());
        let elf = std::fs::read(exe);
        if self.mode == AttachMode::Uprobes && elf.as_deref().is_ok_and(go::is_go) {
            log::warn!("{}", go::uprobes_warning(&shown));
        }
        let planned = match elf.map(|elf| go::plan(&elf)) {
            Ok(Ok(Some(probes))) => {
                log::info!(
                    "{}: {} executable, crypto/tls plaintext followed ({} return sites)",
                    shown.display(),
                    probes.go_version,
                    probes.returns.len()
                );
                Some(probes)
            }
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                log::warn!("{}: {e}", shown.display());
                None
            }
            Err(e) => {
                log::warn!("{}: cannot read it to look for Go's crypto/tls ({e})", shown.display());
                None
            }
        };
        self.go_tls.insert(key, planned.clone());
        planned
    }

    /// Symbol offsets in a library or executable, computed once per file
    /// (device and inode: the same file under any path or namespace).
    fn offsets_in<'a>(
        &mut self,
        file: &PathBuf,
        symbols: impl Iterator<Item = &'a str>,
    ) -> Result<HashMap<String, u64>> {
        let key = file_key(file);
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

/// A program the kernel refused, as one line: the verifier's last line says
/// why (its whole log, often thousands of lines, goes to the debug log).
fn rejected(name: &str, error: aya::programs::ProgramError) -> anyhow::Error {
    match error {
        aya::programs::ProgramError::LoadError { io_error, verifier_log } => {
            let log = verifier_log.to_string();
            log::debug!("verifier log of {name}:\n{log}");
            let last = log.lines().rev().map(str::trim).find(|line| !line.is_empty()).unwrap_or("no log");
            anyhow!(
                "the kernel rejected program {name}: {io_error}; the verifier's last words: {last} \
                 (its whole log with --log-level debug)"
            )
        }
        other => anyhow::Error::new(other).context(format!("the kernel rejected program {name}")),
    }
}
