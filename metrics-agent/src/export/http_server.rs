//! The agent's HTTP server as a metric source: open connections and the
//! connections its limits closed (`http::server::ServerStats`).

use super::{
    catalog as m,
    model::{Series, Value, series_by_label},
};
use crate::http::server::ServerStats;

/// Appends the series of `stats`.
pub fn append(stats: &ServerStats, out: &mut Vec<Series>) {
    out.push(Series::unlabelled(&m::HTTP_CONNECTIONS, Value::Int(stats.open.get())));
    out.extend(series_by_label(&m::HTTP_CONNECTIONS_CLOSED, &stats.closed.counts()));
}
