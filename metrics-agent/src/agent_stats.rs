//! The agent's own counters and gauges, shared by the tracer, the audit task
//! and the metric sources that export them (`export::agent`). Plain atomics
//! with no dependency on the rest of the agent, so any module may hold them.

use std::sync::{Mutex, atomic::AtomicU64};

/// Agent-side gauges and counters; each is one metric of the catalogue
/// (`export::catalog`, docs/metrics.md).
#[derive(Debug, Default)]
pub struct AgentStats {
    pub traced_processes: AtomicU64,
    pub attach_failures: AtomicU64,
    pub preexisting_connections: AtomicU64,
    pub capture_enabled: AtomicU64,
    /// 1 in N requests' payloads captured (0: audit path off).
    pub capture_sample_every: AtomicU64,
    pub capture_breaker_trips: AtomicU64,
    pub capture_breaker_cpu_trips: AtomicU64,
    /// CPU time the audit thread used (the capture path's own), nanoseconds.
    pub audit_cpu_ns: AtomicU64,
    pub audit_records: AtomicU64,
    /// Records with token usage whose model is not in the price table.
    pub audit_unpriced_records: AtomicU64,
    /// Events on which the audit parsers panicked (a bug; the state was reset).
    pub audit_parser_panics: AtomicU64,
    pub audit_resyncs: AtomicU64,
    /// Responses that completed before their request did, paired when it did.
    pub audit_early_responses: AtomicU64,
    /// Responses that completed with no request to answer: no record.
    pub audit_orphan_responses: AtomicU64,
    /// Bedrock event-stream messages and preludes whose framing was wrong.
    pub audit_stream_framing_errors: AtomicU64,
    /// Stream events over the message cap, skipped.
    pub audit_oversized_stream_events: AtomicU64,
    pub audit_h2_streams: AtomicU64,
    pub audit_h2_evicted_streams: AtomicU64,
    pub audit_h2_broken_connections: AtomicU64,
    pub audit_connections: AtomicU64,
    pub audit_memory_bytes: AtomicU64,
    pub audit_evicted_connections: AtomicU64,
    pub audit_evicted_for_memory: AtomicU64,
    /// Connections released because the kernel no longer tracks them (close event not captured).
    pub audit_released_connections: AtomicU64,
    pub adopted_connections: AtomicU64,
    pub adopted_rejected: AtomicU64,
    /// GenAI spans the OTLP trace exporter delivered (`export::otlp::traces`).
    pub spans_exported: AtomicU64,
    /// Spans dropped: the span queue was full, delivery failed for good,
    /// or the exporter fell behind the record bus (records it never saw).
    pub spans_dropped_queue_full: AtomicU64,
    pub spans_dropped_send_failed: AtomicU64,
    pub spans_dropped_lagged: AtomicU64,
    /// Spans waiting in the queue now.
    pub spans_queued: AtomicU64,
    /// Trace export attempts that failed (retried with backoff).
    pub span_export_failures: AtomicU64,
    /// Pids of the traced processes (for the system metrics).
    pub traced_pids: Mutex<Vec<u32>>,
}
