//! The parameters of every stored-data read, as the CLI flags and the HTTP
//! query strings give them (text), parsed and checked into queries; an
//! error is one line that says what to use instead.

use serde::Deserialize;

use super::{Dimension, MetricsQuery};
use crate::store::{
    db::{DetailPosition, RowFilter},
    fscore::FScoreQuery,
    page,
    times::{parse_duration, parse_end, parse_step, parse_time},
};

/// The parameters of a metrics read (`query`, `GET /api/v1/metrics`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsParams {
    pub from: Option<String>,
    pub to: Option<String>,
    pub application: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    /// `client` (default), `upstream` or `all`.
    pub side: Option<String>,
    pub group_by: Option<String>,
    pub step: Option<String>,
    /// Rows per page (default and at most `page::MAX_PAGE_ROWS`).
    pub limit: Option<i64>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
}

impl MetricsParams {
    pub fn to_query(&self, now_unix: i64) -> Result<MetricsQuery, String> {
        let from = parse_time(self.from.as_deref().unwrap_or("-1h"), now_unix)?;
        let to = parse_end(self.to.as_deref(), now_unix)?;
        if to <= from {
            return Err(format!("the window is empty: `to` ({to}) must be after `from` ({from})"));
        }
        let side = match self.side.as_deref().unwrap_or("client") {
            "all" => None,
            s @ ("client" | "upstream") => Some(s.to_string()),
            other => return Err(format!("side `{other}`: use client, upstream or all")),
        };
        Ok(MetricsQuery {
            from,
            to,
            step_seconds: parse_step(self.step.as_deref().unwrap_or("1m"))?,
            filter: RowFilter {
                application: self.application.clone(),
                provider: self.provider.clone(),
                model: self.model.clone(),
                side,
            },
            group_by: Dimension::parse_list(self.group_by.as_deref().unwrap_or(""))?,
            limit: page::limit(self.limit, page::MAX_PAGE_ROWS)?,
            after: self.cursor.as_deref().map(page::decode).transpose()?,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
/// The parameters of a request-details read (`GET /api/v1/requests`).
pub struct RequestsParams {
    pub from: Option<String>,
    pub to: Option<String>,
    /// Rows per page (default 1000, at most `page::MAX_PAGE_ROWS`).
    pub limit: Option<i64>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
}

/// Detail rows per page unless `limit` says otherwise.
pub const DEFAULT_REQUESTS_LIMIT: usize = 1_000;

/// A checked request-details read: the window in Unix seconds (end
/// exclusive), rows per page, and where the previous page ended.
#[derive(Debug, Clone, PartialEq)]
pub struct DetailsQuery {
    pub from: i64,
    pub to: i64,
    pub limit: usize,
    pub after: Option<DetailPosition>,
}

impl RequestsParams {
    pub fn to_query(&self, now_unix: i64) -> Result<DetailsQuery, String> {
        let from = parse_time(self.from.as_deref().unwrap_or("-15m"), now_unix)?;
        let to = parse_end(self.to.as_deref(), now_unix)?;
        let limit = page::limit(self.limit, DEFAULT_REQUESTS_LIMIT)?;
        let after = self.cursor.as_deref().map(page::decode::<DetailPosition>).transpose()?;
        Ok(DetailsQuery { from, to, limit, after })
    }
}

/// Betas F-beta is computed for: beyond them `beta²` makes the score
/// numerically meaningless (recall or precision alone, or NaN).
pub const BETA_RANGE: (f64, f64) = (1e-3, 1e3);

/// The parameters of an F-score read (`fscore query`, `GET /api/v1/fscores`).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FScoreParams {
    pub from: Option<String>,
    pub to: Option<String>,
    pub application: Option<String>,
    pub suite: Option<String>,
    pub model: Option<String>,
    /// A window per row (`1h`, `1d`); default: the whole range in one.
    pub step: Option<String>,
    pub beta: Option<f64>,
    /// Rows per page (default and at most `page::MAX_PAGE_ROWS`).
    pub limit: Option<i64>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
}

impl FScoreParams {
    pub fn to_query(&self, now_unix: i64, default_beta: f64) -> Result<FScoreQuery, String> {
        let from = parse_time(self.from.as_deref().unwrap_or("-30d"), now_unix)?;
        let to = parse_end(self.to.as_deref(), now_unix)?;
        if to <= from {
            return Err(format!("the window is empty: `to` ({to}) must be after `from` ({from})"));
        }
        let step_seconds = match self.step.as_deref() {
            None => None,
            Some(s) => {
                Some(parse_duration(s).filter(|&d| d > 0).ok_or_else(|| format!("step `{s}`: use e.g. 1h or 1d"))?)
            }
        };
        let beta = self.beta.unwrap_or(default_beta);
        if !(BETA_RANGE.0..=BETA_RANGE.1).contains(&beta) {
            return Err(format!("beta {beta}: use a number from {} to {}", BETA_RANGE.0, BETA_RANGE.1));
        }
        Ok(FScoreQuery {
            from,
            to,
            step_seconds,
            application: self.application.clone(),
            suite: self.suite.clone(),
            model: self.model.clone(),
            beta,
            limit: page::limit(self.limit, page::MAX_PAGE_ROWS)?,
            after: self.cursor.as_deref().map(page::decode).transpose()?,
        })
    }
}
