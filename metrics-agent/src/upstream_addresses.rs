//! Upstream addresses: the `--provider NAME=HOST:PORT` specs, the slot each
//! takes, and the resolver that keeps the kernel's address table
//! (`PROVIDER_ADDRS`) current, so that upstream connections are labelled by
//! slot. (Which LLM provider a request is for is `audit::provider`.)

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, RwLock},
    time::Duration,
};

use anyhow::{Result, bail};
use aya::maps::{HashMap as BpfHashMap, MapData};
use metrics_common::providers::{MAX_PROVIDERS, PROVIDER_OTHER, ProviderAddr};

/// One configured provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderSpec {
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl ProviderSpec {
    /// Parses `NAME=HOST:PORT` (`[v6]:PORT` for IPv6 literals).
    pub fn parse(spec: &str) -> Result<Self> {
        let usage = || format!("bad provider {spec:?}: expected NAME=HOST:PORT, e.g. openai=api.openai.com:443");
        let Some((name, addr)) = spec.split_once('=') else { bail!(usage()) };
        let name = name.trim();
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
        if !valid_name || name == "other" {
            bail!("{}; NAME uses letters, digits, '_', '-', '.' and is not \"other\"", usage());
        }
        let Some((host, port)) = addr.trim().rsplit_once(':') else { bail!(usage()) };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let Ok(port) = port.parse::<u16>() else { bail!(usage()) };
        if host.is_empty() || port == 0 {
            bail!(usage());
        }
        Ok(Self { name: name.to_string(), host: host.to_string(), port })
    }

    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub fn check_unique(specs: &[Self]) -> Result<()> {
        if specs.len() > PROVIDER_OTHER as usize {
            bail!("at most {} providers are supported", PROVIDER_OTHER);
        }
        for (i, a) in specs.iter().enumerate() {
            if specs[..i].iter().any(|b| b.name == a.name) {
                bail!("provider {} is given twice", a.name);
            }
        }
        Ok(())
    }
}

/// Label value of every provider slot: configured names, then `other`.
pub fn slot_names(specs: &[ProviderSpec]) -> Vec<(u32, String)> {
    let mut out: Vec<(u32, String)> = specs.iter().enumerate().map(|(i, s)| (i as u32, s.name.clone())).collect();
    out.push((PROVIDER_OTHER, "other".to_string()));
    debug_assert!(out.len() <= MAX_PROVIDERS as usize);
    out
}

pub fn provider_addr(ip: IpAddr, port: u16) -> ProviderAddr {
    match ip {
        IpAddr::V4(v4) => ProviderAddr::v4(v4.octets(), port),
        IpAddr::V6(v6) => ProviderAddr::new(v6.octets(), port),
    }
}

/// The resolved address table, mirrored in userspace for seeding connections.
pub type AddressTable = Arc<RwLock<HashMap<ProviderAddr, u32>>>;

/// Resolves every provider now and writes the kernel table. Names that do
/// not resolve are reported and retried at the next round.
pub async fn resolve_all(
    specs: &[ProviderSpec],
    map: &mut BpfHashMap<MapData, ProviderAddr, u32>,
    table: &AddressTable,
) -> Vec<String> {
    let mut fresh = HashMap::new();
    let mut failures = Vec::new();
    let mut unresolved = Vec::new();
    for (slot, spec) in specs.iter().enumerate() {
        match tokio::net::lookup_host((spec.host.as_str(), spec.port)).await {
            Ok(addrs) => {
                for a in addrs {
                    fresh.insert(provider_addr(a.ip(), a.port()), slot as u32);
                }
            }
            Err(e) => {
                unresolved.push(slot as u32);
                failures.push(format!("provider {} ({}): {e}", spec.name, spec.address()));
            }
        }
    }
    // A provider that failed to resolve keeps its previous addresses.
    let stale: Vec<ProviderAddr> = {
        let old = table.read().expect("lock");
        old.iter().filter(|(k, slot)| !fresh.contains_key(*k) && !unresolved.contains(slot)).map(|(k, _)| *k).collect()
    };
    for key in &stale {
        let _ = map.remove(key);
    }
    for (key, slot) in &fresh {
        if let Err(e) = map.insert(key, slot, 0) {
            failures.push(format!("provider address table: {e}"));
        }
    }
    let mut t = table.write().expect("lock");
    for key in stale {
        t.remove(&key);
    }
    t.extend(fresh);
    failures
}

/// Re-resolves provider hostnames every `interval` until the task is dropped.
pub async fn keep_resolving(
    specs: Vec<ProviderSpec>,
    mut map: BpfHashMap<MapData, ProviderAddr, u32>,
    table: AddressTable,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        tick.tick().await;
        for failure in resolve_all(&specs, &mut map, &table).await {
            log::warn!("{failure}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let p = ProviderSpec::parse("openai=api.openai.com:443").unwrap();
        assert_eq!((p.name.as_str(), p.host.as_str(), p.port), ("openai", "api.openai.com", 443));
        let p = ProviderSpec::parse("local=[::1]:8080").unwrap();
        assert_eq!((p.host.as_str(), p.port, p.address()), ("::1", 8080, "[::1]:8080".to_string()));
    }

    #[test]
    fn rejects_bad_specs() {
        for bad in ["openai", "openai=api.openai.com", "=h:1", "a b=h:1", "x=h:99999", "x=:80", "other=h:1", "x=h:0"] {
            let e = ProviderSpec::parse(bad).unwrap_err().to_string();
            assert!(e.contains("NAME=HOST:PORT"), "{bad}: {e}");
        }
        let two = [ProviderSpec::parse("a=h:1").unwrap(), ProviderSpec::parse("a=h:2").unwrap()];
        assert!(ProviderSpec::check_unique(&two).is_err());
    }
}
