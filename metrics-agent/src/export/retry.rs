//! Delivery with retries, shared by every push exporter's sender: the
//! attempt under the delivery timeout, the backoff between attempts, and
//! the one log line per change between delivering and failing.

use std::{future::Future, time::Duration};

use tokio::sync::watch;

use super::ExportError;

/// First retry delay; doubled after each failure up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One attempt: `send`, or a retryable error when it has no answer within `timeout`.
pub async fn attempt(
    timeout: Duration,
    send: impl Future<Output = Result<(), ExportError>>,
) -> Result<(), ExportError> {
    match tokio::time::timeout(timeout, send).await {
        Ok(r) => r,
        Err(_) => Err(ExportError::Retryable(format!("no answer within {timeout:?}"))),
    }
}

/// The retries of one batch.
pub struct Retries {
    backoff: Duration,
    done: u32,
    max: u32,
}

impl Retries {
    /// A batch not yet retried, which may be retried `max` times.
    pub fn new(max: u32) -> Self {
        Self { backoff: FIRST_BACKOFF, done: 0, max }
    }

    /// After a failed attempt: false when the batch is to be dropped (a
    /// permanent error, no retries left, or the agent `stopping`); else waits
    /// the backoff, cut short when the agent stops, and says true.
    pub async fn again(&mut self, error: &ExportError, stopping: bool, stop: &mut watch::Receiver<bool>) -> bool {
        if matches!(error, ExportError::Permanent(_)) || self.done >= self.max || stopping {
            return false;
        }
        self.done += 1;
        tokio::select! {
            _ = tokio::time::sleep(self.backoff) => {}
            // No more retries once the agent stops.
            _ = stop.wait_for(|s| *s) => {}
        }
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        true
    }
}

/// Whether an exporter is delivering: logged on each change of state, not
/// on every attempt.
pub struct HealthLog {
    name: &'static str,
    healthy: bool,
}

impl HealthLog {
    pub fn new(name: &'static str) -> Self {
        Self { name, healthy: true }
    }

    pub fn delivered(&mut self) {
        if !self.healthy {
            log::info!("exporter {}: delivering again", self.name);
            self.healthy = true;
        }
    }

    pub fn failed(&mut self, error: &ExportError) {
        if self.healthy {
            log::warn!("exporter {}: {error} (retrying with backoff; drops are counted)", self.name);
            self.healthy = false;
        }
    }
}
