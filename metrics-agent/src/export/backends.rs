//! The exporters and what each owns: its `[exporters.NAME]` section, its
//! environment overrides and their resolution (`Backend`), and how it starts
//! (`Resolved`). The router asks these traits what an exporter needs and
//! never checks names. A new exporter is one module implementing `Backend`
//! plus one line in the `exporters!` list at the bottom of this file.

use std::{fmt::Debug, sync::Arc};

use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::{ExportError, Planned, Source, settings::SettingsError};

/// Reads one environment variable (`std::env::var` in the agent, a map in tests).
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// One exporter's configuration.
pub trait Backend {
    /// Its `[exporters.NAME]` section (serde, unknown fields refused).
    type File: Debug + Default + Clone + PartialEq + Serialize + DeserializeOwned;

    /// Resolves the section (`None` when absent) against the environment:
    /// the exporters to start, none when it is off.
    fn resolve(file: Option<&Self::File>, env: Env) -> Result<Vec<Arc<dyn Resolved>>, SettingsError>;

    /// Hides the section's secrets, for `metrics-agent config`.
    fn redact(file: &mut Self::File) {
        let _ = file;
    }
}

/// One exporter, configured and ready to start.
pub trait Resolved: Debug + Send + Sync {
    /// Its name in logs and in `metrics_agent_exporter_*{exporter}`.
    fn name(&self) -> &'static str;

    /// Builds it: a push exporter for the router, or a pull exporter that
    /// serves the shared source itself.
    fn start(&self) -> Result<Start, ExportError>;
}

/// A pull exporter's registration on the `/metrics` registry.
pub type Register = Box<dyn FnOnce(Arc<Source>, &mut Registry) + Send>;

/// What an exporter of records (not metrics) is started with.
pub struct RecordFeed {
    /// Its own subscription to the record bus.
    pub records: tokio::sync::broadcast::Receiver<Arc<crate::records::RequestRecord>>,
    /// Where it counts what it delivered and dropped.
    pub stats: Arc<crate::agent_stats::AgentStats>,
    pub stop: tokio::sync::watch::Receiver<bool>,
}

/// Starts an exporter of records: its task, awaited at shutdown.
pub type Consume = Box<dyn FnOnce(RecordFeed) -> tokio::task::JoinHandle<()> + Send>;

/// How an exporter runs.
pub enum Start {
    /// The router offers it snapshots on its own bounded queue.
    Push(Planned),
    /// It reads the source when asked (Prometheus scrapes).
    Pull(Register),
    /// It consumes the finished records itself (OTLP spans).
    Records(Consume),
}

/// Defines `ExportersFile` (the `[exporters]` table) with one field per
/// listed exporter, and the loops over them.
macro_rules! exporters {
    ($($(#[$doc:meta])* $section:ident: $backend:ty,)*) => {
        /// `[exporters]`.
        #[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
        #[serde(deny_unknown_fields)]
        pub struct ExportersFile {
            /// Distinct models kept as label values; more collapse to `other` [100].
            pub max_models: Option<usize>,
            /// Distinct error types kept as label values [20].
            pub max_error_types: Option<usize>,
            /// Audit label sets kept at most [5000].
            pub max_series: Option<usize>,
            $($(#[$doc])* pub $section: Option<<$backend as Backend>::File>,)*
        }

        /// Every exporter the sections and the environment turn on.
        pub fn resolve_all(file: &ExportersFile, env: Env) -> Result<Vec<Arc<dyn Resolved>>, SettingsError> {
            let mut out = Vec::new();
            $(out.extend(<$backend as Backend>::resolve(file.$section.as_ref(), env)?);)*
            Ok(out)
        }

        /// The sections with their secrets hidden.
        pub fn redact_all(file: &mut ExportersFile) {
            $(if let Some(section) = &mut file.$section {
                <$backend as Backend>::redact(section);
            })*
        }
    };
}

exporters! {
    /// `[exporters.prometheus]`: the metrics on `/metrics`.
    prometheus: super::prometheus::Prometheus,
    /// `[exporters.otlp]`: OTLP push.
    otlp: super::otlp::Otlp,
    /// `[exporters.datadog]`: DogStatsD and the Datadog series API.
    datadog: super::datadog::Datadog,
}
