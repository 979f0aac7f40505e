//! Parsers of the /proc files behind the system metrics. Each takes the
//! file's text and never panics on malformed input (missing fields read as
//! absent or zero).

/// Host CPU time in clock ticks by mode, from the `cpu` line of /proc/stat.
pub fn cpu_ticks(stat: &str) -> Vec<(&'static str, u64)> {
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return Vec::new();
    };
    let v: Vec<u64> = line.split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0)).collect();
    // user nice system idle iowait irq softirq steal (guest time is part of user).
    ["user", "nice", "system", "idle", "iowait", "interrupt", "softirq", "steal"]
        .into_iter()
        .enumerate()
        .filter_map(|(i, mode)| v.get(i).map(|t| (mode, *t)))
        .collect()
}

/// Logical CPUs listed in /proc/stat.
pub fn cpu_count(stat: &str) -> u64 {
    stat.lines().filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)).count() as u64
}

/// Memory in bytes: (total, [(state, bytes)]) with states used, free, buffers, cached.
pub fn memory(meminfo: &str) -> Option<(u64, Vec<(&'static str, u64)>)> {
    let kib = |key: &str| -> Option<u64> {
        meminfo.lines().find_map(|l| {
            let rest = l.strip_prefix(key)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok().map(|v| v * 1024)
        })
    };
    let total = kib("MemTotal")?;
    let free = kib("MemFree").unwrap_or(0);
    let buffers = kib("Buffers").unwrap_or(0);
    let cached = kib("Cached").unwrap_or(0) + kib("SReclaimable").unwrap_or(0);
    let used = total.saturating_sub(free + buffers + cached);
    Some((total, vec![("used", used), ("free", free), ("buffers", buffers), ("cached", cached)]))
}

/// (device, bytes read, bytes written) of whole block devices from
/// /proc/diskstats; `is_disk` says whether a name is a whole disk (not a
/// partition, loop or ram device). Sectors are 512 bytes there.
pub fn disk_io(diskstats: &str, is_disk: impl Fn(&str) -> bool) -> Vec<(String, u64, u64)> {
    diskstats
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let name = *f.get(2)?;
            if name.starts_with("loop") || name.starts_with("ram") || !is_disk(name) {
                return None;
            }
            let read: u64 = f.get(5)?.parse().ok()?;
            let written: u64 = f.get(9)?.parse().ok()?;
            Some((name.to_string(), read * 512, written * 512))
        })
        .collect()
}

/// (interface, bytes received, bytes transmitted) from /proc/net/dev.
pub fn network_io(net_dev: &str) -> Vec<(String, u64, u64)> {
    net_dev
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
            Some((name.trim().to_string(), *f.first()?, *f.get(8)?))
        })
        .collect()
}

/// What /proc/PID/stat says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub user_ticks: u64,
    pub system_ticks: u64,
    /// Start time after boot in ticks: with the pid, identifies the process.
    pub start_ticks: u64,
    pub rss_pages: u64,
}

/// Parses /proc/PID/stat (the command name may contain spaces and parentheses).
pub fn proc_stat(stat: &str) -> Option<ProcStat> {
    let after = &stat[stat.rfind(')')? + 1..];
    // Fields after the name start at field 3 (state).
    let f: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { f.get(n - 3)?.parse().ok() };
    Some(ProcStat { user_ticks: field(14)?, system_ticks: field(15)?, start_ticks: field(22)?, rss_pages: field(24)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields() {
        let stat = "1234 (nginx: worker (x)) S 1 1 1 0 -1 4194624 100 0 0 0 250 75 0 0 20 0 1 0 5000 1000000 321 18446744073709551615";
        assert_eq!(
            proc_stat(stat),
            Some(ProcStat { user_ticks: 250, system_ticks: 75, start_ticks: 5000, rss_pages: 321 })
        );
        assert_eq!(proc_stat("garbage"), None);
        assert_eq!(proc_stat("1 (x) S 1"), None);
    }

    #[test]
    fn host_files() {
        let stat = "cpu  10 1 20 300 4 5 6 7 0 0\ncpu0 5 0 10 150 2 2 3 3 0 0\ncpu1 5 1 10 150 2 3 3 4 0 0\nintr 1\n";
        assert_eq!(cpu_ticks(stat)[0], ("user", 10));
        assert_eq!(cpu_ticks(stat)[7], ("steal", 7));
        assert_eq!(cpu_count(stat), 2);
        let mem = "MemTotal:       1000 kB\nMemFree:         100 kB\nBuffers:          50 kB\nCached:          200 kB\nSReclaimable:     50 kB\n";
        let (total, states) = memory(mem).unwrap();
        assert_eq!(total, 1000 * 1024);
        assert_eq!(states[0], ("used", 600 * 1024));
        let disk = "   8       0 sda 100 0 2000 0 50 0 4000 0 0 0 0\n   8       1 sda1 1 0 8 0 1 0 8 0 0 0 0\n   7 0 loop0 1 0 8 0 0 0 0 0 0 0 0\n";
        assert_eq!(disk_io(disk, |n| n == "sda"), vec![("sda".to_string(), 2000 * 512, 4000 * 512)]);
        let net = "Inter-|   Receive\n face |bytes\n    lo: 100 2 0 0 0 0 0 0 200 2 0 0 0 0 0 0\n  eth0: 5 1 0 0 0 0 0 0 6 1 0 0 0 0 0 0\n";
        assert_eq!(network_io(net), vec![("lo".to_string(), 100, 200), ("eth0".to_string(), 5, 6)]);
        assert!(memory("nonsense").is_none());
    }
}
