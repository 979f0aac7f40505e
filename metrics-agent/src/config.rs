//! Effective configuration: the TOML file, overridden by environment
//! variables and flags (clap merges those two), validated once.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::{cli::RunArgs, kernel::AttachMode, providers::ProviderSpec};

/// The configuration file. Every field is optional; flags override it.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Executable to trace (every process running it).
    pub exe: Option<PathBuf>,
    /// Process to trace (and its forks).
    pub pid: Option<u32>,
    /// Providers: name = "host:port".
    #[serde(default)]
    pub providers: BTreeMap<String, String>,
    /// Metrics endpoint address.
    pub listen: Option<SocketAddr>,
    /// How often provider hostnames are resolved again.
    pub resolve_interval_seconds: Option<u64>,
    /// `uprobes` (default) or `syscalls`.
    pub attach: Option<AttachMode>,
    /// Print one JSON record per LLM exchange on standard output.
    pub print_requests: Option<bool>,
    /// The audit path (payload capture and per-request records); default on.
    pub audit: Option<bool>,
    /// Capture one request in N.
    pub sample_every: Option<u32>,
    /// Bytes captured per message at most, in KiB.
    pub message_cap_kib: Option<u32>,
    /// Size of the payload ring buffer in KiB (a power of two).
    pub capture_ring_kib: Option<u32>,
    /// Model price table layered over the built-in one.
    pub prices: Option<PathBuf>,
    /// Application id put on every record.
    pub application_id: Option<String>,
    /// Storage of records (database, flush interval, retention).
    pub storage: Option<crate::store::config::StorageFile>,
}

/// What to trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    Exe(PathBuf),
    Pid(u32),
}

/// Validated settings of `run`.
#[derive(Debug, Clone)]
pub struct Config {
    pub target: TargetSpec,
    pub providers: Vec<ProviderSpec>,
    pub listen: SocketAddr,
    pub resolve_interval_seconds: u64,
    pub attach: AttachMode,
    pub print_requests: bool,
    pub audit: bool,
    pub sample_every: u32,
    pub message_cap_kib: u32,
    pub capture_ring_kib: u32,
    pub prices: Option<PathBuf>,
    pub application_id: Option<String>,
    /// `None` when storage is off (`--no-storage`, or without the audit path).
    pub storage: Option<crate::store::StorageConfig>,
}

pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}

pub fn default_resolve_interval_seconds() -> u64 {
    60
}

impl Config {
    pub fn from_args(args: &RunArgs) -> Result<Self> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text).map_err(|e| {
                    anyhow::anyhow!("config file {}: {}", path.display(), e.message().replace('\n', " "))
                })?
            }
            None => FileConfig::default(),
        };
        let target = match (&args.exe, args.pid, &file.exe, file.pid) {
            (Some(exe), None, ..) => TargetSpec::Exe(exe.clone()),
            (None, Some(pid), ..) => TargetSpec::Pid(pid),
            (None, None, Some(exe), None) => TargetSpec::Exe(exe.clone()),
            (None, None, None, Some(pid)) => TargetSpec::Pid(pid),
            (None, None, Some(_), Some(_)) => bail!("config file sets both exe and pid: keep one"),
            (None, None, None, None) => bail!("nothing to trace: pass --exe PATH or --pid PID"),
            (Some(_), Some(_), ..) => bail!("--exe and --pid are exclusive: pass one"),
        };
        let mut providers = Vec::new();
        if args.providers.is_empty() {
            for (name, addr) in &file.providers {
                providers.push(ProviderSpec::parse(&format!("{name}={addr}"))?);
            }
        } else {
            for spec in &args.providers {
                providers.push(ProviderSpec::parse(spec)?);
            }
        }
        ProviderSpec::check_unique(&providers)?;
        Ok(Self {
            target,
            providers,
            listen: args.listen.or(file.listen).unwrap_or_else(default_listen),
            resolve_interval_seconds: file
                .resolve_interval_seconds
                .unwrap_or_else(default_resolve_interval_seconds)
                .max(1),
            attach: args.attach.or(file.attach).unwrap_or_default(),
            print_requests: args.print_requests || file.print_requests.unwrap_or(false),
            audit: {
                let audit = !args.no_audit && file.audit.unwrap_or(true);
                if !audit && (args.print_requests || file.print_requests == Some(true)) {
                    bail!("print_requests needs the audit path: drop --no-audit or `audit = false`");
                }
                audit
            },
            sample_every: args.sample_every.or(file.sample_every).unwrap_or(1).max(1),
            message_cap_kib: args.message_cap_kib.or(file.message_cap_kib).unwrap_or(256).clamp(1, 64 * 1024),
            capture_ring_kib: {
                let kib = args.capture_ring_kib.or(file.capture_ring_kib).unwrap_or(16 * 1024);
                if !kib.is_power_of_two() || !(4..=1024 * 1024).contains(&kib) {
                    bail!("capture ring size {kib} KiB: use a power of two between 4 and 1048576");
                }
                kib
            },
            prices: args.prices.clone().or(file.prices),
            application_id: args.application_id.clone().or(file.application_id),
            storage: file.storage.unwrap_or_default().resolve(
                args.database_url.as_deref(),
                args.agent_id.as_deref(),
                args.no_storage || args.no_audit || file.audit == Some(false),
            )?,
        })
    }

    fn to_file(&self) -> FileConfig {
        let (exe, pid) = match &self.target {
            TargetSpec::Exe(p) => (Some(p.clone()), None),
            TargetSpec::Pid(p) => (None, Some(*p)),
        };
        FileConfig {
            exe,
            pid,
            providers: self.providers.iter().map(|p| (p.name.clone(), p.address())).collect(),
            listen: Some(self.listen),
            resolve_interval_seconds: Some(self.resolve_interval_seconds),
            attach: Some(self.attach),
            print_requests: Some(self.print_requests),
            audit: Some(self.audit),
            sample_every: Some(self.sample_every),
            message_cap_kib: Some(self.message_cap_kib),
            capture_ring_kib: Some(self.capture_ring_kib),
            prices: self.prices.clone(),
            application_id: self.application_id.clone(),
            storage: self.storage.as_ref().map(|s| s.to_file()),
        }
    }
}

/// `metrics-agent config`: prints what `run` would use.
pub fn print_effective(args: RunArgs) -> Result<()> {
    let config = Config::from_args(&args)?;
    print!("{}", toml::to_string(&config.to_file())?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(f: impl FnOnce(&mut RunArgs)) -> RunArgs {
        let mut a = RunArgs::default();
        f(&mut a);
        a
    }

    #[test]
    fn flags_override_file() {
        let dir = std::env::temp_dir().join(format!("ma-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.toml");
        std::fs::write(
            &path,
            "exe = \"/usr/sbin/nginx\"\nlisten = \"127.0.0.1:1\"\n[providers]\nopenai = \"api.openai.com:443\"\n",
        )
        .unwrap();
        let c = Config::from_args(&args(|a| {
            a.config = Some(path.clone());
            a.listen = Some("127.0.0.1:2".parse().unwrap());
        }))
        .unwrap();
        assert_eq!(c.target, TargetSpec::Exe("/usr/sbin/nginx".into()));
        assert_eq!(c.listen.port(), 2);
        assert_eq!(c.providers[0].name, "openai");
        let c = Config::from_args(&args(|a| {
            a.config = Some(path.clone());
            a.pid = Some(7);
        }))
        .unwrap();
        assert_eq!(c.target, TargetSpec::Pid(7), "a flag replaces the file's target");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unknown_keys_are_rejected_in_one_line() {
        let dir = std::env::temp_dir().join(format!("ma-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.toml");
        std::fs::write(&path, "exe = \"/bin/true\"\nlisten_addr = 3\n").unwrap();
        let err = Config::from_args(&args(|a| a.config = Some(path.clone()))).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("unknown field `listen_addr`"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_target_is_required() {
        let err = Config::from_args(&RunArgs::default()).unwrap_err();
        assert!(err.to_string().contains("--exe PATH or --pid PID"));
    }
}
