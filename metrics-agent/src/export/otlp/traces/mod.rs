//! OTLP traces: every record on the record bus becomes a GenAI span
//! (`spans`), and the spans go to the collector in batches (`sink`) over
//! HTTP/protobuf or gRPC. Two tasks, so a slow collector never slows the
//! reading of records:
//! - the assembler reads the bus, builds spans and offers each to a bounded
//!   queue (`queue_spans`) without waiting: a full queue drops the span
//!   (`metrics_agent_spans_dropped_total{reason="queue_full"}`), and records
//!   missed because the bus moved on are counted as `lagged`;
//! - the sender takes up to `batch_spans` spans, or what came within the
//!   interval, and sends them with the delivery timeout, retrying retryable
//!   failures with backoff up to `max_retries`; then the batch is dropped
//!   (`send_failed`).
//!
//! Memory is bounded by the queue, one batch and the assembler's held
//! upstream records (`spans::MAX_HELD`). On stop the assembler reads the
//! bus until it closes (at most `STOP_READING`), hands on the held records,
//! and the sender makes one last attempt with the remaining spans.

pub mod config;
pub mod sink;
pub mod spans;

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::{
    sync::{broadcast::error::RecvError, mpsc, watch},
    time::Instant,
};

use self::{config::TraceSettings, sink::Sink, spans::Assembler};
use crate::{
    agent_stats::AgentStats,
    export::{
        ExportError,
        backends::{RecordFeed, Resolved, Start},
        retry::{self, HealthLog, Retries},
    },
};

/// How often held upstream records are checked.
const EXPIRE_EVERY: Duration = Duration::from_millis(250);
/// How long the assembler keeps reading records after the agent stopped.
const STOP_READING: Duration = Duration::from_secs(6);
/// The last attempt at shutdown waits at most this long.
const LAST_ATTEMPT: Duration = Duration::from_secs(3);

/// Its name in logs.
pub const NAME: &str = "otlp traces";

impl Resolved for TraceSettings {
    fn name(&self) -> &'static str {
        NAME
    }

    fn start(&self) -> Result<Start, ExportError> {
        let sink = Sink::new(&self.otlp)?;
        let settings = self.clone();
        Ok(Start::Records(Box::new(move |feed| tokio::spawn(run(settings, sink, feed)))))
    }
}

/// Runs both tasks until the bus closes or the agent stops.
pub async fn run(settings: TraceSettings, sink: Sink, feed: RecordFeed) {
    let RecordFeed { mut records, stats, stop } = feed;
    let (tx, rx) = mpsc::channel(settings.queue_spans);
    let sender = tokio::spawn(deliver(settings.clone(), sink, rx, stats.clone(), stop.clone()));
    let mut assembler = Assembler::new(spans::clock_offset(), settings.parent_based);
    let offer = |spans: Vec<Span>| {
        for span in spans {
            match tx.try_send(span) {
                Ok(()) => {
                    stats.spans_queued.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    stats.spans_dropped_queue_full.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    };
    let mut tick = tokio::time::interval(EXPIRE_EVERY);
    let mut stopping = stop.clone();
    let mut deadline: Option<Instant> = None;
    loop {
        let until = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            r = records.recv() => match r {
                Ok(record) => offer(assembler.push(record, std::time::Instant::now())),
                Err(RecvError::Lagged(n)) => {
                    stats.spans_dropped_lagged.fetch_add(n, Ordering::Relaxed);
                }
                Err(RecvError::Closed) => break,
            },
            _ = tick.tick() => offer(assembler.expire(std::time::Instant::now())),
            _ = stopping.wait_for(|s| *s), if deadline.is_none() => deadline = Some(Instant::now() + STOP_READING),
            _ = tokio::time::sleep_until(until), if deadline.is_some() => break,
        }
    }
    offer(assembler.drain());
    drop(tx);
    let _ = sender.await;
}

/// The sender: batches from the queue, delivered with retries.
async fn deliver(
    settings: TraceSettings,
    mut sink: Sink,
    mut queue: mpsc::Receiver<Span>,
    stats: Arc<AgentStats>,
    mut stop: watch::Receiver<bool>,
) {
    let resource = sink::resource();
    let delivery = settings.otlp.delivery;
    let mut health = HealthLog::new(NAME);
    let mut open = true;
    while open {
        let mut batch = Vec::with_capacity(settings.batch_spans.min(1024));
        // The first span starts the batch's clock.
        match queue.recv().await {
            Some(span) => batch.push(span),
            None => break,
        }
        let due = Instant::now() + delivery.interval;
        while batch.len() < settings.batch_spans {
            tokio::select! {
                span = queue.recv() => match span {
                    Some(span) => batch.push(span),
                    None => { open = false; break; }
                },
                _ = tokio::time::sleep_until(due) => break,
            }
        }
        let n = batch.len() as u64;
        stats.spans_queued.fetch_sub(n, Ordering::Relaxed);
        let request = sink::request(batch, &resource);
        let mut retries = Retries::new(delivery.max_retries);
        loop {
            let stopping = *stop.borrow();
            let timeout = if stopping { delivery.timeout.min(LAST_ATTEMPT) } else { delivery.timeout };
            match retry::attempt(timeout, sink.send(&request)).await {
                Ok(()) => {
                    stats.spans_exported.fetch_add(n, Ordering::Relaxed);
                    health.delivered();
                    break;
                }
                Err(e) => {
                    stats.span_export_failures.fetch_add(1, Ordering::Relaxed);
                    health.failed(&e);
                    if !retries.again(&e, stopping, &mut stop).await {
                        stats.spans_dropped_send_failed.fetch_add(n, Ordering::Relaxed);
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
