//! Effective configuration: the TOML file, overridden by environment
//! variables and flags (clap merges those two), validated once.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::{
    attach_mode::AttachMode,
    audit::identity::IdentityConfig,
    export::settings::{self as export_settings, ExportSettings, ExportersFile, MetricsFile},
    run_args::RunArgs,
    upstream_addresses::ProviderSpec,
};

/// The largest per-message capture cap, in KiB (64 MiB).
const MAX_MESSAGE_CAP_KIB: u32 = 64 * 1024;

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
    /// Capture one exchange in N at least (the adaptive interval's floor).
    pub sample_every: Option<u32>,
    /// Ceiling of the adaptive sampling interval (default 1024, at most 65535).
    pub max_sample_every: Option<u32>,
    /// CPU of the audit thread, in percent of one core, above which the
    /// sampling interval doubles (0: no limit; ring drops still raise it).
    pub capture_cpu_budget_percent: Option<f64>,
    /// Steps of nice below the agent's own for the audit thread (default 0:
    /// none; at most 20). More capture on a saturated host, at the proxy's cost.
    pub audit_thread_nice_boost: Option<u8>,
    /// Heap the audit path's parsers may hold together, in MiB.
    pub audit_memory_mib: Option<u32>,
    /// Bytes captured per message at most, in KiB.
    pub message_cap_kib: Option<u32>,
    /// Size of the payload ring buffer in KiB (a power of two).
    pub capture_ring_kib: Option<u32>,
    /// Model price table layered over the built-in one.
    pub prices: Option<PathBuf>,
    /// Application id put on every record.
    pub application_id: Option<String>,
    /// Where session, user and application ids come from; per-key hashing.
    pub identity: Option<IdentityConfig>,
    /// The live metrics stream (`[stream]`).
    pub stream: Option<crate::live::StreamConfig>,
    /// The HTTP API (`[api]`): its bearer token.
    pub api: Option<crate::http::auth::ApiConfig>,
    /// Exporters: `[exporters.prometheus]`, `[exporters.otlp]`, `[exporters.datadog]`.
    pub exporters: Option<ExportersFile>,
    /// `[metrics.system]`: which system metrics are collected, how often.
    pub metrics: Option<MetricsFile>,
    /// Storage of records (database, flush interval, retention).
    pub storage: Option<crate::store::config::StorageFile>,
}

pub use crate::target::TargetSpec;

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
    pub max_sample_every: u32,
    pub capture_cpu_budget_percent: f64,
    pub audit_thread_nice_boost: u8,
    pub audit_memory_mib: u32,
    pub message_cap_kib: u32,
    pub capture_ring_kib: u32,
    pub prices: Option<PathBuf>,
    pub application_id: Option<String>,
    pub identity: IdentityConfig,
    pub stream: crate::live::StreamConfig,
    /// Bearer token required by every HTTP route (`[api] token`, `METRICS_AGENT_API_TOKEN`).
    pub api_token: Option<crate::secrets::Secret>,
    /// `[api]` without its token: allowed host names and connection limits.
    pub api: crate::http::auth::ApiConfig,
    /// The connection limits `[api]` sets, checked.
    pub server_limits: crate::http::server::ServerLimits,
    /// Exporters and system metrics, resolved against the environment.
    pub export: ExportSettings,
    /// The `[exporters]` section as written (printed with secrets redacted).
    pub exporters_file: Option<ExportersFile>,
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
                    let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
                    let at = line.map(|l| format!(" line {l}")).unwrap_or_default();
                    anyhow::anyhow!("config file {}{at}: {}", path.display(), e.message().replace('\n', " "))
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
        let listen = args.listen.or(file.listen).unwrap_or_else(default_listen);
        let api_token = std::env::var(crate::http::auth::TOKEN_ENV)
            .ok()
            .or_else(|| file.api.as_ref().and_then(|a| a.token.clone()));
        crate::http::auth::check(listen, api_token.as_deref())?;
        Ok(Self {
            target,
            providers,
            listen,
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
            sample_every: match args.sample_every.or(file.sample_every).unwrap_or(1) {
                n if n == 0 || n > metrics_common::capture::MAX_SAMPLE_EVERY => bail!(
                    "sample_every = {n}: use 1 (every exchange) to {} (one in N)",
                    metrics_common::capture::MAX_SAMPLE_EVERY
                ),
                n => n,
            },
            max_sample_every: match file.max_sample_every {
                None => crate::audit::reader::DEFAULT_MAX_SAMPLE_EVERY,
                Some(n) if (1..=metrics_common::capture::MAX_SAMPLE_EVERY).contains(&n) => n,
                Some(n) => bail!(
                    "max_sample_every = {n}: use 1 to {} (capture one exchange in N at most)",
                    metrics_common::capture::MAX_SAMPLE_EVERY
                ),
            },
            audit_memory_mib: match file.audit_memory_mib.unwrap_or(256) {
                0 => bail!("audit_memory_mib = 0: give the audit path at least 1 MiB"),
                m => m,
            },
            capture_cpu_budget_percent: match file.capture_cpu_budget_percent.unwrap_or(50.0) {
                p if p.is_finite() && p >= 0.0 => p,
                p => bail!("capture_cpu_budget_percent = {p}: use a percentage of one core, 0 for no limit"),
            },
            audit_thread_nice_boost: match file.audit_thread_nice_boost.unwrap_or(0) {
                n @ 0..=20 => n,
                n => bail!("audit_thread_nice_boost = {n}: use 0 (off) to 20 steps of nice"),
            },
            message_cap_kib: match args.message_cap_kib.or(file.message_cap_kib).unwrap_or(256) {
                kib @ 1..=MAX_MESSAGE_CAP_KIB => kib,
                kib => bail!("message_cap_kib = {kib}: use 1 to {MAX_MESSAGE_CAP_KIB} (KiB captured per message)"),
            },
            capture_ring_kib: {
                let kib = args.capture_ring_kib.or(file.capture_ring_kib).unwrap_or(16 * 1024);
                if !kib.is_power_of_two() || !(4..=1024 * 1024).contains(&kib) {
                    bail!("capture ring size {kib} KiB: use a power of two between 4 and 1048576");
                }
                kib
            },
            prices: args.prices.clone().or(file.prices),
            application_id: args.application_id.clone().or(file.application_id),
            identity: {
                let mut identity = file.identity.unwrap_or_default();
                if let Ok(salt) = std::env::var("METRICS_AGENT_API_KEY_SALT") {
                    identity.api_key_salt = Some(salt);
                }
                identity.validated()?
            },
            stream: file.stream.unwrap_or_default().validate()?,
            api_token: api_token.map(crate::secrets::Secret),
            server_limits: file.api.clone().unwrap_or_default().limits()?,
            api: crate::http::auth::ApiConfig { token: None, ..file.api.clone().unwrap_or_default() },
            export: export_settings::resolve(file.exporters.as_ref(), file.metrics.as_ref(), |k| std::env::var(k).ok())
                .map_err(|e| anyhow::anyhow!("config: {e}"))?,
            exporters_file: file.exporters,
            storage: file.storage.unwrap_or_default().resolve(
                args.database_url.as_deref(),
                args.agent_id.as_deref(),
                args.no_storage || args.no_audit || file.audit == Some(false),
            )?,
        })
    }

    /// Open files the connection limits need: HTTP connections, stream
    /// clients and the agent's own descriptors.
    pub fn open_files_needed(&self) -> u64 {
        self.server_limits.max_connections as u64 + self.stream.max_clients + crate::http::limits::BASE_OPEN_FILES
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
            max_sample_every: Some(self.max_sample_every),
            capture_cpu_budget_percent: Some(self.capture_cpu_budget_percent),
            audit_thread_nice_boost: Some(self.audit_thread_nice_boost),
            audit_memory_mib: Some(self.audit_memory_mib),
            message_cap_kib: Some(self.message_cap_kib),
            capture_ring_kib: Some(self.capture_ring_kib),
            prices: self.prices.clone(),
            application_id: self.application_id.clone(),
            // The salt is a secret: never printed.
            identity: Some(IdentityConfig { api_key_salt: None, ..self.identity.clone() }),
            stream: Some(self.stream),
            // The token is a secret: never printed (`self.api` holds none).
            api: Some(self.api.clone()),
            exporters: self.exporters_file.as_ref().map(export_settings::redacted),
            metrics: Some(MetricsFile { system: Some(self.export.system.clone()) }),
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
    fn the_adaptive_sampling_ceiling_defaults_and_is_checked() {
        let dir = std::env::temp_dir().join(format!("ma-config-sampling-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.toml");
        std::fs::write(&path, "exe = \"/bin/true\"\n").unwrap();
        let c = Config::from_args(&args(|a| a.config = Some(path.clone()))).unwrap();
        assert_eq!((c.sample_every, c.max_sample_every), (1, crate::audit::reader::DEFAULT_MAX_SAMPLE_EVERY));
        for bad in ["max_sample_every = 0", "max_sample_every = 70000"] {
            std::fs::write(&path, format!("exe = \"/bin/true\"\n{bad}\n")).unwrap();
            let err = Config::from_args(&args(|a| a.config = Some(path.clone()))).unwrap_err().to_string();
            assert!(err.starts_with("max_sample_every = ") && !err.contains('\n'), "{err}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Out-of-range sizes and intervals are refused in one line, not
    /// silently replaced by the nearest allowed value.
    #[test]
    fn the_message_cap_and_the_sampling_interval_are_checked() {
        for (cap, sample, want) in [
            (Some(0), None, "message_cap_kib = 0: "),
            (Some(MAX_MESSAGE_CAP_KIB + 1), None, "message_cap_kib = 65537: "),
            (None, Some(0), "sample_every = 0: "),
        ] {
            let err = Config::from_args(&args(|a| {
                a.exe = Some("/bin/true".into());
                a.message_cap_kib = cap;
                a.sample_every = sample;
            }))
            .unwrap_err()
            .to_string();
            assert!(err.starts_with(want) && !err.contains('\n'), "{err}");
        }
        let ok = Config::from_args(&args(|a| {
            a.exe = Some("/bin/true".into());
            a.message_cap_kib = Some(MAX_MESSAGE_CAP_KIB);
        }))
        .unwrap();
        assert_eq!(ok.message_cap_kib, MAX_MESSAGE_CAP_KIB);
    }

    #[test]
    fn the_audit_threads_nice_boost_is_off_by_default_and_checked() {
        let dir = std::env::temp_dir().join(format!("ma-config-nice-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.toml");
        let load = |extra: &str| {
            std::fs::write(&path, format!("exe = \"/bin/true\"\n{extra}\n")).unwrap();
            Config::from_args(&args(|a| a.config = Some(path.clone())))
        };
        assert_eq!(load("").unwrap().audit_thread_nice_boost, 0);
        assert_eq!(load("audit_thread_nice_boost = 10").unwrap().audit_thread_nice_boost, 10);
        let err = load("audit_thread_nice_boost = 21").unwrap_err().to_string();
        assert!(err.starts_with("audit_thread_nice_boost = 21: ") && !err.contains('\n'), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn stream_and_api_sections() {
        let dir = std::env::temp_dir().join(format!("ma-config-live-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.toml");
        std::fs::write(&path, "exe = \"/bin/true\"\n[stream]\ninterval_ms = 250\n[api]\ntoken = \"t0ken\"\n").unwrap();
        let c = Config::from_args(&args(|a| a.config = Some(path.clone()))).unwrap();
        assert_eq!(c.stream.interval_ms, 250);
        assert_eq!(c.stream.window_seconds, crate::live::default_window_seconds());
        assert_eq!(c.api_token.as_ref().map(|t| t.0.as_str()), Some("t0ken"));
        assert!(!format!("{c:?}").contains("t0ken"), "the token never shows in Debug output");
        assert!(!toml::to_string(&c.to_file()).unwrap().contains("t0ken"), "nor in `metrics-agent config`");
        std::fs::write(&path, "exe = \"/bin/true\"\n[stream]\ninterval_ms = 5\n").unwrap();
        let err = Config::from_args(&args(|a| a.config = Some(path.clone()))).unwrap_err().to_string();
        assert!(err.contains("interval_ms = 5: use a value between 100 and 60000"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn exporter_sections_are_checked_and_printed_without_secrets() {
        let dir = std::env::temp_dir().join(format!("ma-config-exp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.toml");
        std::fs::write(
            &path,
            "exe = \"/bin/true\"\n[exporters.datadog]\napi = true\napi_key = \"dd-secret\"\n[metrics.system]\ninterval_seconds = 5\ncollect_disk_io = false\n",
        )
        .unwrap();
        let c = Config::from_args(&args(|a| a.config = Some(path.clone()))).unwrap();
        assert_eq!(c.export.system.interval_seconds, 5);
        assert!(!c.export.system.collect_disk_io);
        assert!(c.export.exporters.iter().any(|e| e.name() == "datadog_api"));
        let printed = toml::to_string(&c.to_file()).unwrap();
        assert!(!printed.contains("dd-secret"), "{printed}");
        std::fs::write(&path, "exe = \"/bin/true\"\n[exporters.otlp]\nendpoint = \"http://x:4318\"\nintervl = 3\n")
            .unwrap();
        let msg = format!("{:#}", Config::from_args(&args(|a| a.config = Some(path.clone()))).unwrap_err());
        assert!(msg.contains("line 4") && msg.contains("unknown field `intervl`"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_target_is_required() {
        let err = Config::from_args(&RunArgs::default()).unwrap_err();
        assert!(err.to_string().contains("--exe PATH or --pid PID"));
    }
}
