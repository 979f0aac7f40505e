//! Storage subcommands: `query`, `migrate`, `fscore ingest|query`. They
//! open the database themselves (flag, environment, the `--config` file's
//! `[storage] database_url`, else the default SQLite file).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use crate::store::{
    config::{DEFAULT_DATABASE_URL, StorageFile},
    db::{Store, redact},
    fscore,
    query::{
        self, Format,
        params::{FScoreParams, MetricsParams},
    },
    times::parse_time,
    writer::now_ms,
};

/// Which database.
#[derive(Debug, Args, Clone, Default)]
pub struct DbArgs {
    /// Database URL: sqlite:///PATH or postgres://USER@HOST/DB [default: sqlite:///var/lib/metrics-agent/metrics.db].
    #[arg(long, env = "METRICS_AGENT_DATABASE_URL")]
    pub database_url: Option<String>,
    /// The agent's configuration file (its `[storage] database_url` is used).
    #[arg(long, env = "METRICS_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Start: now, -1h, now-15m, 2026-05-01, 2026-05-01T10:00:00Z or Unix seconds [default: -1h].
    #[arg(long, allow_hyphen_values = true)]
    pub from: Option<String>,
    /// End (exclusive), same forms [default: now].
    #[arg(long, allow_hyphen_values = true)]
    pub to: Option<String>,
    #[arg(long)]
    pub application: Option<String>,
    #[arg(long)]
    pub provider: Option<String>,
    #[arg(long)]
    pub model: Option<String>,
    /// `client` (what the proxy served; default), `upstream` (what it sent to providers) or `all`.
    #[arg(long)]
    pub side: Option<String>,
    /// Comma-separated: application, provider, model, side, agent.
    #[arg(long)]
    pub group_by: Option<String>,
    /// Bucket width: 1m, 5m, 1h, 1d, ... (the coarsest stored tier that divides it is read) [default: 1m].
    #[arg(long)]
    pub step: Option<String>,
    /// Rows at most (at most 10000); when more follow, their `--cursor` is printed on standard error
    /// (and is `next` in JSON) [default: 10000].
    #[arg(long)]
    pub limit: Option<i64>,
    /// Continue after the previous page: its `next` token.
    #[arg(long)]
    pub cursor: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

#[derive(Debug, Subcommand)]
pub enum FscoreCommand {
    /// Store test results from a JSON-lines file (`-` reads standard input).
    Ingest {
        file: PathBuf,
        /// Time of every result without its own `timestamp` (when the tests ran), same forms as --from.
        #[arg(long, allow_hyphen_values = true)]
        timestamp: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Precision, recall, F1 and F-beta per application, suite and model.
    Query {
        #[command(flatten)]
        db: DbArgs,
        /// Start [default: -30d].
        #[arg(long, allow_hyphen_values = true)]
        from: Option<String>,
        #[arg(long, allow_hyphen_values = true)]
        to: Option<String>,
        #[arg(long)]
        application: Option<String>,
        #[arg(long)]
        suite: Option<String>,
        #[arg(long)]
        model: Option<String>,
        /// One row per window of this width (1h, 1d); default: one for the whole range.
        #[arg(long)]
        step: Option<String>,
        /// F-beta's beta [default: the config's fscore_beta, else 1].
        #[arg(long)]
        beta: Option<f64>,
        /// Rows at most (at most 10000); when more follow, their `--cursor` is printed on standard
        /// error (and is `next` in JSON) [default: 10000].
        #[arg(long)]
        limit: Option<i64>,
        /// Continue after the previous page: its `next` token.
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

fn storage_file(db: &DbArgs) -> Result<StorageFile> {
    let Some(path) = &db.config else { return Ok(StorageFile::default()) };
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
    let file: crate::config::FileConfig = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("config file {}: {}", path.display(), e.message().replace('\n', " ")))?;
    Ok(file.storage.unwrap_or_default())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// Opens and migrates the database the arguments name.
async fn open(db: &DbArgs) -> Result<Store> {
    let file = storage_file(db)?;
    let url = db.database_url.clone().or(file.database_url).unwrap_or_else(|| DEFAULT_DATABASE_URL.into());
    Store::probe(&url).await.map_err(anyhow::Error::msg)?;
    let store = Store::open(&url).await.with_context(|| format!("opening the database {}", redact(&url)))?;
    store.migrate().await.with_context(|| format!("migrating the database {}", redact(&url)))?;
    Ok(store)
}

pub fn migrate(db: DbArgs) -> Result<()> {
    runtime()?.block_on(async {
        let store = open(&db).await?;
        println!("{} database is up to date", store.kind());
        Ok(())
    })
}

pub fn query(args: QueryArgs) -> Result<()> {
    let params = MetricsParams {
        from: args.from,
        to: args.to,
        application: args.application,
        provider: args.provider,
        model: args.model,
        side: args.side,
        group_by: args.group_by,
        step: args.step,
        limit: args.limit,
        cursor: args.cursor,
    };
    let q = params.to_query(now_ms() / 1000).map_err(anyhow::Error::msg)?;
    runtime()?.block_on(async {
        let store = open(&args.db).await?;
        let result = query::run(&store, &q).await?;
        for warning in &result.warnings {
            eprintln!("warning: {warning}");
        }
        print!("{}", query::render(&result, &result.rows, args.format));
        say_next(result.next.as_deref());
        Ok(())
    })
}

/// Tells on standard error how to read the rows beyond the page, if any.
fn say_next(next: Option<&str>) {
    if let Some(token) = next {
        eprintln!("more rows follow: repeat with --cursor {token}");
    }
}

pub fn fscore(command: FscoreCommand) -> Result<()> {
    match command {
        FscoreCommand::Ingest { file, timestamp, db } => {
            let now = now_ms();
            let default_ms = match timestamp {
                Some(t) => Some(parse_time(&t, now / 1000).map_err(anyhow::Error::msg)? * 1000),
                None => None,
            };
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading standard input")?
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?
            };
            let results = fscore::parse_results(&text, default_ms, now)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let agent = StorageFile::default()
                .resolve(None, storage_file(&db)?.agent_id.as_deref(), false)?
                .map(|c| c.agent_id)
                .unwrap_or_default();
            runtime()?.block_on(async {
                let store = open(&db).await?;
                let new = fscore::insert(&store, &agent, &results).await?;
                println!(
                    "{} results read, {new} stored ({} already present)",
                    results.len(),
                    results.len() as u64 - new
                );
                Ok(())
            })
        }
        FscoreCommand::Query { db, from, to, application, suite, model, step, beta, limit, cursor, format } => {
            let default_beta = storage_file(&db)?.fscore_beta.unwrap_or(1.0);
            let params = FScoreParams { from, to, application, suite, model, step, beta, limit, cursor };
            let q = params.to_query(now_ms() / 1000, default_beta).map_err(anyhow::Error::msg)?;
            runtime()?.block_on(async {
                let store = open(&db).await?;
                let page = fscore::query(&store, &q).await?;
                print!("{}", query::render(&page, &page.rows, format));
                say_next(page.next.as_deref());
                Ok(())
            })
        }
    }
}
