//! The record bus: every finished per-request record (`RequestRecord`, with
//! cost and application id filled in) is broadcast to the consumers that
//! subscribe — storage, exporters, the live stream. The channel is bounded:
//! a consumer that falls more than `CAPACITY` records behind is told how many
//! it missed (`RecvError::Lagged`) and must count them as dropped; the audit
//! task itself never waits for a consumer. `RecordBuilder` makes records for
//! tests and benchmarks.

use std::sync::Arc;

pub use crate::audit::{pipeline::RequestRecord, record_builder::RecordBuilder};

/// Records buffered for the slowest consumer.
pub const CAPACITY: usize = 65_536;

/// Sending half, held by the audit task; `subscribe()` gives a consumer.
pub type RecordBus = tokio::sync::broadcast::Sender<Arc<RequestRecord>>;

/// A new bus with no consumer yet.
pub fn bus() -> RecordBus {
    tokio::sync::broadcast::channel(CAPACITY).0
}
