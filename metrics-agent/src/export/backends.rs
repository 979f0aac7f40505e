//! What each exporter owns, as traits: its `[exporters.NAME]` section, its
//! environment overrides and their resolution (`Backend`), and how it starts
//! (`Resolved`). The router asks these traits what an exporter needs and
//! never checks names. A new exporter is one module implementing `Backend`
//! plus one line in the `exporters!` list (`settings.rs`).

use std::{fmt::Debug, sync::Arc};

use prometheus_client::registry::Registry;
use serde::{Serialize, de::DeserializeOwned};

pub use super::common_settings::Env;
use super::{ExportError, Planned, Source, common_settings::SettingsError};

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
