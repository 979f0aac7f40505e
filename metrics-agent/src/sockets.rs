//! Connections that were open before the agent attached: found through
//! /proc/PID/fd and /proc/PID/net/tcp{,6}, and entered into `CONNS` with their
//! side (a local port the process listens on means a client connection).
//! Their protocol and position in the stream are learned from the next
//! request line.

use std::{
    collections::{HashMap, HashSet},
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::maps::{HashMap as BpfHashMap, MapData};
use metrics_common::{
    conn::{CONN_PREEXISTING, ConnState, SIDE_CLIENT, SIDE_UPSTREAM},
    maps::conn_key,
    providers::{PROVIDER_OTHER, ProviderAddr},
};

use crate::upstream_addresses::provider_addr;

const TCP_ESTABLISHED: u8 = 0x01;
const TCP_LISTEN: u8 = 0x0A;

#[derive(Debug, PartialEq, Eq)]
struct TcpEntry {
    local: (IpAddr, u16),
    remote: (IpAddr, u16),
    state: u8,
    inode: u64,
}

fn parse_addr(hex: &str) -> Option<(IpAddr, u16)> {
    let (ip, port) = hex.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    // Each 32-bit word is printed in host (little-endian) order.
    let words: Vec<u32> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).map(u32::from_be))
        .collect::<Result<_, _>>()
        .ok()?;
    let ip = match words.as_slice() {
        [w] => IpAddr::V4(Ipv4Addr::from(w.to_be_bytes())),
        [a, b, c, d] => {
            let mut octets = [0u8; 16];
            for (i, w) in [a, b, c, d].iter().enumerate() {
                octets[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some((ip, port))
}

fn parse_proc_net_tcp(text: &str) -> Vec<TcpEntry> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some(TcpEntry {
                local: parse_addr(f.get(1)?)?,
                remote: parse_addr(f.get(2)?)?,
                state: u8::from_str_radix(f.get(3)?, 16).ok()?,
                inode: f.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// Enters the established TCP connections of `pid` into `CONNS`; returns how many.
pub fn seed(
    pid: u32,
    conns: &mut BpfHashMap<MapData, u64, ConnState>,
    providers: &HashMap<ProviderAddr, u32>,
) -> usize {
    let mut entries = Vec::new();
    for table in ["tcp", "tcp6"] {
        if let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/{table}")) {
            entries.extend(parse_proc_net_tcp(&text));
        }
    }
    let listening: HashSet<u16> = entries.iter().filter(|e| e.state == TCP_LISTEN).map(|e| e.local.1).collect();
    let established: HashMap<u64, &TcpEntry> =
        entries.iter().filter(|e| e.state == TCP_ESTABLISHED).map(|e| (e.inode, e)).collect();
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else { return 0 };
    let mut seeded = 0;
    for fd in fds.flatten() {
        let Some(fd_num) = fd.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(link) = fs::read_link(fd.path()) else { continue };
        let link = link.to_string_lossy();
        let Some(inode) = link.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')).and_then(|s| s.parse().ok())
        else {
            continue;
        };
        let Some(entry) = established.get(&inode) else { continue };
        // An identity for payload capture, distinct from the kernel's (which are odd).
        let conn_id = ((u64::from(pid) << 32) | u64::from(fd_num)) << 1;
        let mut state = ConnState { flags: CONN_PREEXISTING, conn_id, ..ConnState::default() };
        if listening.contains(&entry.local.1) {
            state.side = SIDE_CLIENT;
        } else {
            state.side = SIDE_UPSTREAM;
            let key = provider_addr(entry.remote.0, entry.remote.1);
            state.provider = providers.get(&key).copied().unwrap_or(PROVIDER_OTHER) as u8;
        }
        if conns.insert(conn_key(pid, fd_num), state, 0).is_ok() {
            seeded += 1;
        }
    }
    seeded
}

/// True when `fd` of `pid` is a TCP socket (IPv4 or IPv6).
pub fn is_tcp_socket(pid: u32, fd: u32) -> bool {
    let Ok(link) = fs::read_link(format!("/proc/{pid}/fd/{fd}")) else { return false };
    let link = link.to_string_lossy();
    let Some(inode) =
        link.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')).and_then(|s| s.parse::<u64>().ok())
    else {
        return false;
    };
    ["tcp", "tcp6"].iter().any(|t| {
        fs::read_to_string(format!("/proc/{pid}/net/{t}"))
            .is_ok_and(|text| parse_proc_net_tcp(&text).iter().any(|e| e.inode == inode))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_tcp_lines() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0 100 0 0 10 0\n   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 23456 1 0 20 4 30 10 -1\n";
        let e = parse_proc_net_tcp(text);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].local, (IpAddr::V4(Ipv4Addr::LOCALHOST), 8080));
        assert_eq!(e[0].state, TCP_LISTEN);
        assert_eq!(e[1].remote, (IpAddr::V4(Ipv4Addr::LOCALHOST), 0xD431));
        assert_eq!(e[1].inode, 23456);
    }

    #[test]
    fn parses_ipv6_addresses() {
        let (ip, port) = parse_addr("00000000000000000000000001000000:01BB").unwrap();
        assert_eq!((ip, port), (IpAddr::V6(Ipv6Addr::LOCALHOST), 443));
    }
}
