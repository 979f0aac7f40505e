//! System metrics (`[metrics.system]`): host CPU, memory, disk and network
//! I/O from /proc, the traced proxy's and the agent's own CPU and memory,
//! ring buffer fill, the proxy's open connections as the kernel tracks them,
//! and the agent's internal tables. Collected every `interval_seconds` off the
//! async threads; the latest collection is shared with every exporter and the
//! live stream (`SystemMetrics::latest`).

pub mod procfs;
pub mod ring;

use std::{
    borrow::Cow,
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use aya::maps::{HashMap as BpfHashMap, MapData};
use metrics_common::conn::{ConnState, SIDE_CLIENT, SIDE_UPSTREAM};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{
    catalog as m,
    model::{Desc, Series, Value},
};
pub use ring::RingFill;

use crate::agent_stats::AgentStats;

/// Devices and interfaces reported at most (bounded cardinality).
const MAX_DEVICES: usize = 32;

/// `[metrics.system]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SystemConfig {
    pub collect_cpu: bool,
    pub collect_memory: bool,
    pub collect_disk_io: bool,
    pub collect_network_io: bool,
    pub collect_ring_buffer: bool,
    pub collect_connection_pool: bool,
    pub collect_cache_stats: bool,
    pub interval_seconds: u64,
}

impl Default for SystemConfig {
    fn default() -> Self {
        Self {
            collect_cpu: true,
            collect_memory: true,
            collect_disk_io: true,
            collect_network_io: true,
            collect_ring_buffer: true,
            collect_connection_pool: true,
            collect_cache_stats: true,
            interval_seconds: 10,
        }
    }
}

/// One of the agent's internal tables.
pub struct Table {
    pub name: &'static str,
    pub capacity: Option<u64>,
    pub entries: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table").field("name", &self.name).finish()
    }
}

/// Where the non-/proc metrics come from.
#[derive(Debug, Default)]
pub struct Sources {
    /// The tracer's counters, with the pids it is attached to now.
    pub stats: Option<Arc<AgentStats>>,
    pub rings: Vec<RingFill>,
    pub conns: Option<Arc<Mutex<BpfHashMap<MapData, u64, ConnState>>>>,
    pub tables: Vec<Table>,
}

/// CPU ticks of the proxy's processes, exited ones included, so that the
/// exported total never decreases when a worker exits.
#[derive(Debug, Default)]
struct ProxyCpu {
    live: HashMap<(u32, u64), (u64, u64)>,
    exited: (u64, u64),
}

#[derive(Debug)]
pub struct SystemMetrics {
    config: SystemConfig,
    sources: Sources,
    proxy_cpu: Mutex<ProxyCpu>,
    latest: RwLock<Vec<Series>>,
    ticks_per_second: f64,
    page_bytes: u64,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn series(desc: &'static Desc, labels: &[(&'static str, &str)], value: Value) -> Series {
    Series { desc, labels: labels.iter().map(|(k, v)| (*k, Cow::Owned(v.to_string()))).collect(), value }
}

impl SystemMetrics {
    pub fn new(config: SystemConfig, sources: Sources) -> Self {
        // SAFETY: sysconf has no preconditions.
        let (tck, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        Self {
            config,
            sources,
            proxy_cpu: Mutex::default(),
            latest: RwLock::default(),
            ticks_per_second: if tck > 0 { tck as f64 } else { 100.0 },
            page_bytes: if page > 0 { page as u64 } else { 4096 },
        }
    }

    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.config.interval_seconds.max(1))
    }

    /// The most recent collection (empty before the first).
    pub fn latest(&self) -> Vec<Series> {
        self.latest.read().map(|l| l.clone()).unwrap_or_default()
    }

    /// Collects now and every interval until `stop`.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tick.tick() => {
                    let me = self.clone();
                    // /proc reads and map walks are blocking system calls.
                    if let Ok(s) = tokio::task::spawn_blocking(move || me.collect()).await
                        && let Ok(mut latest) = self.latest.write()
                    {
                        *latest = s;
                    }
                }
            }
        }
    }

    /// Collects now, outside the interval: once the initial targets are
    /// attached, so the first snapshots already describe the traced proxy
    /// (the collector starts before attaching).
    pub fn refresh(&self) {
        let s = self.collect();
        if let Ok(mut latest) = self.latest.write() {
            *latest = s;
        }
    }

    /// Reads every enabled source now.
    pub fn collect(&self) -> Vec<Series> {
        let c = &self.config;
        let mut out = Vec::new();
        if c.collect_cpu {
            let stat = read("/proc/stat");
            for (mode, ticks) in procfs::cpu_ticks(&stat) {
                out.push(series(
                    &m::SYS_CPU_TIME,
                    &[("cpu.mode", mode)],
                    Value::Float(ticks as f64 / self.ticks_per_second),
                ));
            }
            out.push(series(&m::SYS_CPU_COUNT, &[], Value::Int(procfs::cpu_count(&stat))));
        }
        if c.collect_memory
            && let Some((total, states)) = procfs::memory(&read("/proc/meminfo"))
        {
            out.push(series(&m::SYS_MEMORY_LIMIT, &[], Value::Int(total)));
            for (state, bytes) in states {
                out.push(series(&m::SYS_MEMORY_USAGE, &[("system.memory.state", state)], Value::Int(bytes)));
            }
        }
        if c.collect_disk_io {
            let disks =
                procfs::disk_io(&read("/proc/diskstats"), |n| std::path::Path::new("/sys/block").join(n).exists());
            for (dev, r, w) in disks.into_iter().take(MAX_DEVICES) {
                out.push(series(
                    &m::SYS_DISK_IO,
                    &[("system.device", &dev), ("disk.io.direction", "read")],
                    Value::Int(r),
                ));
                out.push(series(
                    &m::SYS_DISK_IO,
                    &[("system.device", &dev), ("disk.io.direction", "write")],
                    Value::Int(w),
                ));
            }
        }
        if c.collect_network_io {
            for (iface, rx, tx) in procfs::network_io(&read("/proc/net/dev")).into_iter().take(MAX_DEVICES) {
                let i = iface.as_str();
                out.push(series(
                    &m::SYS_NETWORK_IO,
                    &[("network.interface.name", i), ("network.io.direction", "receive")],
                    Value::Int(rx),
                ));
                out.push(series(
                    &m::SYS_NETWORK_IO,
                    &[("network.interface.name", i), ("network.io.direction", "transmit")],
                    Value::Int(tx),
                ));
            }
        }
        if c.collect_cpu || c.collect_memory {
            self.processes(&mut out);
        }
        if c.collect_ring_buffer {
            for ring in &self.sources.rings {
                out.push(series(&m::RING_USAGE, &[("ring", ring.name)], Value::Int(ring.used_bytes())));
                out.push(series(&m::RING_SIZE, &[("ring", ring.name)], Value::Int(ring.size_bytes)));
            }
        }
        if (c.collect_connection_pool || c.collect_cache_stats)
            && let Some(conns) = &self.sources.conns
        {
            let mut by_side = [0u64; 3];
            if let Ok(map) = conns.lock() {
                for (_, state) in map.iter().flatten() {
                    let i = match state.side {
                        SIDE_CLIENT => 0,
                        SIDE_UPSTREAM => 1,
                        _ => 2,
                    };
                    by_side[i] += 1;
                }
            }
            if c.collect_connection_pool {
                for (i, side) in ["client", "upstream", "unknown"].into_iter().enumerate() {
                    out.push(series(&m::OPEN_CONNECTIONS, &[("side", side)], Value::Int(by_side[i])));
                }
            }
            if c.collect_cache_stats {
                let table = [("table", "kernel_connections")];
                out.push(series(&m::CACHE_ENTRIES, &table, Value::Int(by_side.iter().sum())));
                let cap = u64::from(metrics_common::maps::CONNS_MAX_ENTRIES);
                out.push(series(&m::CACHE_CAPACITY, &table, Value::Int(cap)));
            }
        }
        if c.collect_cache_stats {
            for t in &self.sources.tables {
                out.push(series(&m::CACHE_ENTRIES, &[("table", t.name)], Value::Int((t.entries)())));
                if let Some(cap) = t.capacity {
                    out.push(series(&m::CACHE_CAPACITY, &[("table", t.name)], Value::Int(cap)));
                }
            }
        }
        out
    }

    /// CPU and resident memory of the traced proxy (summed over its
    /// processes) and of the agent itself.
    fn processes(&self, out: &mut Vec<Series>) {
        let pids: Vec<u32> =
            self.sources.stats.as_ref().and_then(|s| s.traced_pids.lock().ok().map(|p| p.clone())).unwrap_or_default();
        let mut rss_pages = 0;
        let (user, system) = {
            let mut cpu = self.proxy_cpu.lock().unwrap_or_else(|e| e.into_inner());
            let mut now = HashMap::new();
            for pid in pids {
                if let Some(s) = procfs::proc_stat(&read(&format!("/proc/{pid}/stat"))) {
                    now.insert((pid, s.start_ticks), (s.user_ticks, s.system_ticks));
                    rss_pages += s.rss_pages;
                }
            }
            let gone: Vec<(u32, u64)> = cpu.live.keys().filter(|k| !now.contains_key(k)).copied().collect();
            for k in gone {
                if let Some((u, s)) = cpu.live.remove(&k) {
                    cpu.exited.0 += u;
                    cpu.exited.1 += s;
                }
            }
            cpu.live = now;
            let live = cpu.live.values().fold((0, 0), |a, v| (a.0 + v.0, a.1 + v.1));
            (cpu.exited.0 + live.0, cpu.exited.1 + live.1)
        };
        let me = procfs::proc_stat(&read("/proc/self/stat"));
        let secs = |ticks: u64| Value::Float(ticks as f64 / self.ticks_per_second);
        if self.config.collect_cpu {
            out.push(series(&m::PROC_CPU_TIME, &[("process", "proxy"), ("cpu.mode", "user")], secs(user)));
            out.push(series(&m::PROC_CPU_TIME, &[("process", "proxy"), ("cpu.mode", "system")], secs(system)));
            if let Some(me) = me {
                out.push(series(&m::PROC_CPU_TIME, &[("process", "agent"), ("cpu.mode", "user")], secs(me.user_ticks)));
                out.push(series(
                    &m::PROC_CPU_TIME,
                    &[("process", "agent"), ("cpu.mode", "system")],
                    secs(me.system_ticks),
                ));
            }
        }
        if self.config.collect_memory {
            out.push(series(&m::PROC_MEMORY, &[("process", "proxy")], Value::Int(rss_pages * self.page_bytes)));
            if let Some(me) = me {
                out.push(series(&m::PROC_MEMORY, &[("process", "agent")], Value::Int(me.rss_pages * self.page_bytes)));
            }
        }
    }
}

/// The latest system series as JSON for the live stream's `agent.health`:
/// one object per series, `{"name", "labels", "value"}` (histograms: their sum).
pub fn as_json(series: &[Series]) -> serde_json::Value {
    series
        .iter()
        .map(|s| {
            let labels: serde_json::Map<String, serde_json::Value> =
                s.labels.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(v.as_ref()))).collect();
            serde_json::json!({ "name": s.desc.otel, "labels": labels, "value": s.value.as_f64() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find<'a>(s: &'a [Series], desc: &'static Desc, label: (&str, &str)) -> Option<&'a Series> {
        s.iter().find(|x| std::ptr::eq(x.desc, desc) && x.labels.iter().any(|(k, v)| *k == label.0 && v == label.1))
    }

    #[test]
    fn reads_this_host_and_this_process() {
        let stats = Arc::new(AgentStats::default());
        *stats.traced_pids.lock().unwrap() = vec![std::process::id()];
        let sources = Sources {
            stats: Some(stats.clone()),
            tables: vec![Table { name: "t", capacity: Some(10), entries: Box::new(|| 3) }],
            ..Sources::default()
        };
        let sys = SystemMetrics::new(SystemConfig::default(), sources);
        // Burn some CPU so the process total is above zero.
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(120) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let s = sys.collect();
        assert!(find(&s, &m::SYS_CPU_TIME, ("cpu.mode", "user")).unwrap().value.as_f64() > 0.0);
        assert!(find(&s, &m::SYS_MEMORY_USAGE, ("system.memory.state", "used")).unwrap().value.as_f64() > 0.0);
        assert!(find(&s, &m::SYS_NETWORK_IO, ("network.interface.name", "lo")).is_some());
        let rss = find(&s, &m::PROC_MEMORY, ("process", "proxy")).unwrap().value.as_f64();
        assert!(rss > 1e6, "this test process is the 'proxy': {rss}");
        let cpu = |s: &[Series]| -> f64 {
            s.iter()
                .filter(|x| std::ptr::eq(x.desc, &m::PROC_CPU_TIME))
                .filter(|x| x.labels.iter().any(|(k, v)| *k == "process" && v == "proxy"))
                .map(|x| x.value.as_f64())
                .sum()
        };
        let before = cpu(&s);
        assert!(before > 0.0);
        // The process stops being traced: its CPU time stays in the total.
        stats.traced_pids.lock().unwrap().clear();
        let after = cpu(&sys.collect());
        assert_eq!(after, before, "exited processes' CPU time is kept");
        assert_eq!(find(&s, &m::CACHE_ENTRIES, ("table", "t")).unwrap().value, Value::Int(3));
    }

    #[test]
    fn disabled_groups_are_not_collected() {
        let config = SystemConfig {
            collect_cpu: false,
            collect_memory: false,
            collect_disk_io: false,
            collect_network_io: false,
            ..SystemConfig::default()
        };
        let s = SystemMetrics::new(config, Sources::default()).collect();
        assert!(s.is_empty(), "{s:?}");
    }
}
