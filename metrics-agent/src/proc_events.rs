//! The tracer: keeps the set of traced processes current. It attaches to the
//! initial targets, then follows the kernel's process events: a target's
//! forks become targets, new processes running the target executable become
//! targets, exited processes are detached and their connections forgotten.

use std::sync::{Arc, Mutex, atomic::Ordering};

use anyhow::Result;
use aya::maps::{HashMap as BpfHashMap, MapData};
use metrics_common::{
    conn::ConnState,
    events::{CONN_ADOPTED, PROC_EXEC, PROC_EXIT, PROC_FORK, ProcEvent},
    maps::conn_key,
};

use crate::{
    agent_stats::AgentStats,
    kernel::Kernel,
    sockets,
    target::{self, Target},
    upstream_addresses::AddressTable,
};

pub struct Tracer {
    pub kernel: Kernel,
    pub target: Target,
    pub conns: Arc<Mutex<BpfHashMap<MapData, u64, ConnState>>>,
    pub providers: AddressTable,
    pub stats: Arc<AgentStats>,
}

impl Tracer {
    /// Attaches to the processes that are targets now. A failure on an
    /// explicitly named process is an error; `--exe` with no process running
    /// yet is fine (they are picked up when they start).
    pub fn attach_initial(&mut self) -> Result<()> {
        for pid in self.target.current_processes() {
            if let Err(e) = self.attach(pid) {
                // A process that exited while it was being attached (a worker
                // replaced during a reload) is gone, not a reason to stop.
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    self.kernel.detach_process(pid);
                    log::info!("process {pid} exited while it was being attached");
                    continue;
                }
                return Err(e.context(format!("cannot trace process {pid} ({})", target::comm(pid))));
            }
        }
        Ok(())
    }

    fn attach(&mut self, pid: u32) -> Result<()> {
        let seeded = {
            let table = self.providers.read().expect("lock");
            let mut conns = self.conns.lock().expect("lock");
            sockets::seed(pid, &mut conns, &table)
        };
        self.stats.preexisting_connections.fetch_add(seeded as u64, Ordering::Relaxed);
        let result = self.kernel.attach_process(pid);
        self.update_gauge();
        match result {
            Ok(n) => {
                log::info!("tracing process {pid} ({}): {n} probes, {seeded} open connections", target::comm(pid));
                Ok(())
            }
            Err(e) => {
                self.stats.attach_failures.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Hooks the libssl that traced processes loaded since they were attached.
    pub fn attach_late_libraries(&mut self) {
        let pids: Vec<u32> = self.kernel.traced().collect();
        for pid in pids {
            match self.kernel.attach_late_libssl(pid) {
                Ok(0) => {}
                Ok(n) => log::info!("process {pid} ({}) loaded libssl: {n} probes added", target::comm(pid)),
                Err(e) => log::warn!("process {pid}: {e:#}"),
            }
        }
    }

    fn detach(&mut self, pid: u32) {
        if !self.kernel.is_traced(pid) {
            return;
        }
        self.kernel.detach_process(pid);
        // Forget the process's connections: their fds died with it.
        if let Ok(mut conns) = self.conns.lock() {
            let stale: Vec<u64> = conns.keys().flatten().filter(|k| (k >> 32) as u32 == pid).collect();
            for key in stale {
                let _ = conns.remove(&key);
            }
        }
        self.update_gauge();
        log::info!("stopped tracing process {pid}");
    }

    fn update_gauge(&self) {
        self.stats.traced_processes.store(self.kernel.traced().count() as u64, Ordering::Relaxed);
        if let Ok(mut pids) = self.stats.traced_pids.lock() {
            *pids = self.kernel.traced().collect();
        }
    }

    pub fn handle(&mut self, event: ProcEvent) {
        let pid = event.pid;
        let outcome = match event.kind {
            PROC_FORK if self.kernel.is_traced(event.parent) && target::is_process(pid) => self.attach(pid),
            PROC_EXEC => {
                // Re-attach: the new program may map another libc, or no longer be a target.
                let was_traced = self.kernel.is_traced(pid);
                self.detach(pid);
                let still = match self.target {
                    Target::Exe { .. } => self.target.runs_exe(pid),
                    Target::Pid(_) => was_traced,
                };
                if still { self.attach(pid) } else { Ok(()) }
            }
            PROC_EXIT => {
                self.detach(pid);
                Ok(())
            }
            CONN_ADOPTED => {
                self.stats.adopted_connections.fetch_add(1, Ordering::Relaxed);
                if !sockets::is_tcp_socket(pid, event.parent) {
                    self.stats.adopted_rejected.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut conns) = self.conns.lock() {
                        let _ = conns.remove(&conn_key(pid, event.parent));
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        };
        if let Err(e) = outcome {
            log::warn!("process {pid}: {e:#}");
        }
    }
}
