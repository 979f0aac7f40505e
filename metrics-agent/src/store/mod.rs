//! Storage of the audit path's per-request records: 1-minute rollups with
//! mergeable percentiles, rolled up to 1 hour and 1 day, sampled detail rows
//! and F-score results, in SQLite (default) or partitioned PostgreSQL, with
//! retention per tier, a query CLI and an HTTP API. See docs/storage.md.

pub mod api;
pub mod budget;
pub mod config;
pub mod db;
pub mod db_types;
pub mod detail;
pub mod fscore;
pub mod names;
pub mod page;
pub mod partitions;
pub mod query;
pub mod rollup;
pub mod sketch;
pub mod stats;
pub mod times;
pub mod writer;

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result};
use tokio::task::JoinHandle;

use crate::records::RecordBus;
pub use config::StorageConfig;
use db::Store;

/// How often retention runs and partitions are created ahead.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(3_600);

/// Storage as `run` starts it: the writer subscribed to the bus, upkeep, and the API routes.
pub struct Running {
    /// Where records go, for the start-up log (said once the agent is ready,
    /// so a start-up error stays the only line).
    pub summary: String,
    pub writer: JoinHandle<()>,
    pub maintenance: JoinHandle<()>,
    pub routes: axum::Router,
    /// Storage's own metrics, a source of the metric catalogue (`export::storage`).
    pub stats: Arc<stats::StorageStats>,
}

/// Opens the database (SQLite: migrations applied now, a failure stops the
/// start; PostgreSQL: tried now, retried by the writer if it is down),
/// subscribes to the record bus and starts the tasks.
pub async fn start(config: &StorageConfig, records: &RecordBus) -> Result<Running> {
    let store = Store::open(&config.database_url)
        .await
        .with_context(|| format!("opening the database {}", db::redact(&config.database_url)))?;
    let migrated = Arc::new(AtomicBool::new(false));
    match (tokio::time::timeout(Duration::from_secs(10), store.migrate()).await, &store) {
        (Ok(Ok(())), _) => migrated.store(true, Ordering::Release),
        (Ok(Err(e)), Store::Sqlite(_)) => return Err(e).context("preparing the SQLite database"),
        (Err(_), Store::Sqlite(_)) => anyhow::bail!("the SQLite database is locked: is another process holding it?"),
        (Ok(Err(_)), Store::Postgres(_)) | (Err(_), Store::Postgres(_)) => {
            let why = Store::probe(&config.database_url).await.err().unwrap_or_else(|| "not ready".into());
            log::warn!("storage: {why}; records are buffered and written when it is up")
        }
    }
    let stats = Arc::new(stats::StorageStats::default());
    let writer = writer::Writer {
        store: store.clone(),
        config: config.clone(),
        stats: stats.clone(),
        migrated: migrated.clone(),
    };
    let receiver = records.subscribe();
    let summary = format!(
        "storing records in {} as agent `{}` (flush every {:?})",
        db::redact(&config.database_url),
        config.agent_id,
        config.flush_interval
    );
    let routes = api::routes(Arc::new(api::ApiState { store: store.clone(), config: config.clone() }));
    Ok(Running {
        summary,
        writer: tokio::spawn(writer.run(receiver)),
        maintenance: tokio::spawn(writer::maintain(
            store,
            config.clone(),
            stats.clone(),
            writer::Upkeep { retention_every: MAINTENANCE_EVERY, budget_every: config.budget_check_every },
            migrated,
        )),
        routes,
        stats,
    })
}
