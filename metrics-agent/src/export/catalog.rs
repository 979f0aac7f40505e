//! The metric catalogue: every metric the agent exports, defined once with
//! its OpenTelemetry and Prometheus names, unit, type, labels and help. The
//! sources (kernel counters, audit aggregates, agent statistics, system
//! metrics, exporter health) emit series against these entries, and every
//! backend (Prometheus, OTLP, DogStatsD, the Datadog API) renders the same
//! set with its own naming rules. docs/metrics.md documents each metric.
//!
//! Adding a metric: one entry here (and in `ALL`), then one line in the
//! source that emits it (docs/architecture.md, "Where new things go").

use super::model::{Desc, Kind};

#[allow(clippy::too_many_arguments)]
const fn desc(
    otel: &'static str,
    prom: &'static str,
    unit: &'static str,
    prom_unit: Option<&'static str>,
    kind: Kind,
    labels: &'static [&'static str],
    help: &'static str,
) -> Desc {
    Desc { otel, prom, unit, prom_unit, kind, labels, help }
}

const SECONDS: Option<&str> = Some("seconds");
const BYTES: Option<&str> = Some("bytes");
use Kind::{Counter, Gauge, Histogram};

/// Labels of every audit-path series (`error.type` only on errors).
pub const AUDIT_LABELS: &[&str] = &[
    "side",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.operation.name",
    "status_class",
    "estimate",
    "error.type",
];
const AUDIT_TOKEN_LABELS: &[&str] = &[
    "side",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "gen_ai.operation.name",
    "status_class",
    "estimate",
    "error.type",
    "gen_ai.token.type",
];
const SIDE: &[&str] = &["side"];
const PROVIDER: &[&str] = &["provider"];
const NONE: &[&str] = &[];
const REASON: &[&str] = &["reason"];
const KIND: &[&str] = &["kind"];
const TABLE: &[&str] = &["table"];
const RESULT: &[&str] = &["result"];

// Audit path: one observation per `RequestRecord` (`audit_metrics.rs`).

pub static REQUESTS: Desc = desc(
    "llm.requests",
    "llm_requests",
    "{request}",
    None,
    Counter,
    AUDIT_LABELS,
    "LLM requests reconstructed by the audit path, by side, provider, model, operation, status class and error type.",
);
pub static TOKENS: Desc = desc(
    "llm.tokens",
    "llm_tokens",
    "{token}",
    None,
    Counter,
    AUDIT_TOKEN_LABELS,
    "Tokens the provider reported, by type (input includes cached; cache_read, cache_creation, reasoning are subsets).",
);
pub static TOKEN_USAGE: Desc = desc(
    "gen_ai.client.token.usage",
    "gen_ai_client_token_usage",
    "{token}",
    None,
    Histogram,
    AUDIT_TOKEN_LABELS,
    "Input and output tokens per request (OpenTelemetry GenAI).",
);
pub static COST: Desc = desc(
    "llm.cost",
    "llm_cost",
    "USD",
    Some("usd"),
    Counter,
    AUDIT_LABELS,
    "Cost in US dollars of priced requests (price table times reported usage).",
);
pub static UNPRICED: Desc = desc(
    "llm.requests.unpriced",
    "llm_unpriced_requests",
    "{request}",
    None,
    Counter,
    AUDIT_LABELS,
    "Requests without a cost: model not in the price table, or usage unknown.",
);
pub static CACHE_HITS: Desc = desc(
    "llm.cache.hits",
    "llm_cache_hits",
    "{request}",
    None,
    Counter,
    AUDIT_LABELS,
    "Client requests the proxy answered without an upstream call (or a cache header said so).",
);
pub static DURATION: Desc = desc(
    "gen_ai.client.operation.duration",
    "gen_ai_client_operation_duration",
    "s",
    SECONDS,
    Histogram,
    AUDIT_LABELS,
    "Request duration, first request byte to last response byte (OpenTelemetry GenAI).",
);
pub static TTFB: Desc = desc(
    "llm.time_to_first_byte",
    "llm_time_to_first_byte",
    "s",
    SECONDS,
    Histogram,
    AUDIT_LABELS,
    "Time from the first request byte to the first response byte.",
);

// Streaming time: observed for streamed responses whose stream was parsed as
// it arrived (see docs/metrics.md). Names and units from the OpenTelemetry
// GenAI semantic conventions v0.1.0 (open-telemetry/semantic-conventions-genai,
// docs/gen-ai/client-inference.md, status Development): histograms in `s`.
// Until semantic-conventions v1.41.x they were `gen_ai.client.operation.*`.
pub static TIME_TO_FIRST_CHUNK: Desc = desc(
    "gen_ai.client.inference.time_to_first_chunk",
    "gen_ai_client_inference_time_to_first_chunk",
    "s",
    SECONDS,
    Histogram,
    AUDIT_LABELS,
    "Streamed responses: first request byte to the first content-bearing event (OpenTelemetry GenAI).",
);
pub static TIME_PER_OUTPUT_CHUNK: Desc = desc(
    "gen_ai.client.inference.time_per_output_chunk",
    "gen_ai_client_inference_time_per_output_chunk",
    "s",
    SECONDS,
    Histogram,
    AUDIT_LABELS,
    "Streamed responses: time between content-bearing events after the first (OpenTelemetry GenAI; each request's mean gap, observed once per gap).",
);
pub static TIME_PER_OUTPUT_TOKEN: Desc = desc(
    "llm.time_per_output_token",
    "llm_time_per_output_token",
    "s",
    SECONDS,
    Histogram,
    AUDIT_LABELS,
    "Streamed responses with known usage: (last - first content event) / (output tokens - 1).",
);

// The exporters' own health (`mod.rs`, `audit_metrics.rs`).

pub static RECORDS_LAGGED: Desc = desc(
    "metrics_agent.export.records_lagged",
    "metrics_agent_export_records_lagged",
    "{record}",
    None,
    Counter,
    NONE,
    "Records the export aggregator missed because it fell behind the record bus.",
);
pub static LABEL_OVERFLOW: Desc = desc(
    "metrics_agent.export.label_overflow",
    "metrics_agent_export_label_overflow",
    "{record}",
    None,
    Counter,
    &["label"],
    "Records whose label value was replaced by `other` to keep cardinality bounded, by label.",
);
pub static EXPORTER_BATCHES: Desc = desc(
    "metrics_agent.exporter.batches",
    "metrics_agent_exporter_batches",
    "{batch}",
    None,
    Counter,
    &["exporter"],
    "Batches an exporter delivered.",
);
pub static EXPORTER_FAILURES: Desc = desc(
    "metrics_agent.exporter.failures",
    "metrics_agent_exporter_failures",
    "{attempt}",
    None,
    Counter,
    &["exporter"],
    "Export attempts that failed (timeout, connection error, error status); retried with backoff.",
);
pub static EXPORTER_DROPPED: Desc = desc(
    "metrics_agent.exporter.dropped",
    "metrics_agent_exporter_dropped",
    "{batch}",
    None,
    Counter,
    &["exporter", "reason"],
    "Batches an exporter dropped, by reason: queue_full (it was still busy) or send_failed (retries exhausted).",
);
pub static EXPORTER_SAMPLES_DROPPED: Desc = desc(
    "metrics_agent.exporter.samples_dropped",
    "metrics_agent_exporter_samples_dropped",
    "{sample}",
    None,
    Counter,
    &["exporter", "reason"],
    "Distribution samples lost, by reason: buffer_full (the per-interval buffer), queue_full or send_failed (their batch was dropped).",
);
pub static EXPORTER_QUEUE: Desc = desc(
    "metrics_agent.exporter.queue_length",
    "metrics_agent_exporter_queue_length",
    "{batch}",
    None,
    Gauge,
    &["exporter"],
    "Batches waiting in an exporter's queue.",
);

// The OTLP trace exporter (`otlp/traces/`), from the agent statistics (`agent.rs`).

pub static SPANS_EXPORTED: Desc = desc(
    "metrics_agent.spans.exported",
    "metrics_agent_spans_exported",
    "{span}",
    None,
    Counter,
    NONE,
    "GenAI spans (one per LLM exchange and side) the OTLP trace exporter delivered.",
);
pub static SPANS_DROPPED: Desc = desc(
    "metrics_agent.spans.dropped",
    "metrics_agent_spans_dropped",
    "{span}",
    None,
    Counter,
    &["reason"],
    "Spans dropped, by reason: queue_full (the span queue was full), send_failed (retries exhausted or a permanent error), lagged (records the exporter missed on the record bus).",
);
pub static SPANS_QUEUED: Desc = desc(
    "metrics_agent.spans.queue_length",
    "metrics_agent_spans_queue_length",
    "{span}",
    None,
    Gauge,
    NONE,
    "Spans waiting in the trace exporter's bounded queue.",
);
pub static SPAN_EXPORT_FAILURES: Desc = desc(
    "metrics_agent.spans.export_failures",
    "metrics_agent_spans_export_failures",
    "{attempt}",
    None,
    Counter,
    NONE,
    "Trace export attempts that failed (timeout, connection error, error status); retried with backoff.",
);

// Kernel counters (`hot_path.rs`): per-CPU maps summed over CPUs.

pub static HP_REQUESTS: Desc = desc(
    "llm_proxy.requests",
    "llm_proxy_requests",
    "{request}",
    None,
    Counter,
    NONE,
    "HTTP requests the proxy received from clients.",
);
pub static HP_REQUESTS_FAILED: Desc = desc(
    "llm_proxy.requests.failed",
    "llm_proxy_requests_failed",
    "{request}",
    None,
    Counter,
    NONE,
    "Client requests answered with status >= 400 or whose connection closed before a complete response.",
);
pub static HP_RESPONSES: Desc = desc(
    "llm_proxy.responses",
    "llm_proxy_responses",
    "{response}",
    None,
    Counter,
    &["class"],
    "Finished client requests by response status class (none: closed before a status line).",
);
pub static HP_BYTES_RECEIVED: Desc = desc(
    "llm_proxy.bytes.received",
    "llm_proxy_bytes_received",
    "By",
    None,
    Counter,
    SIDE,
    "HTTP bytes the proxy read from traced TCP connections (the plaintext on TLS connections), by side.",
);
pub static HP_BYTES_SENT: Desc = desc(
    "llm_proxy.bytes.sent",
    "llm_proxy_bytes_sent",
    "By",
    None,
    Counter,
    SIDE,
    "HTTP bytes the proxy wrote to traced TCP connections (the plaintext on TLS connections), by side.",
);
pub static HP_TLS_BYTES_RECEIVED: Desc = desc(
    "llm_proxy.tls.bytes.received",
    "llm_proxy_tls_bytes_received",
    "By",
    None,
    Counter,
    SIDE,
    "TLS wire bytes (records and handshakes) the proxy read from traced TCP connections, by side.",
);
pub static HP_TLS_BYTES_SENT: Desc = desc(
    "llm_proxy.tls.bytes.sent",
    "llm_proxy_tls_bytes_sent",
    "By",
    None,
    Counter,
    SIDE,
    "TLS wire bytes (records and handshakes) the proxy wrote to traced TCP connections, by side.",
);
pub static HP_CONNECTIONS_OPENED: Desc = desc(
    "llm_proxy.connections.opened",
    "llm_proxy_connections_opened",
    "{connection}",
    None,
    Counter,
    SIDE,
    "TCP connections the proxy accepted (client) or opened (upstream) while traced.",
);
pub static HP_CONNECTIONS_CLOSED: Desc = desc(
    "llm_proxy.connections.closed",
    "llm_proxy_connections_closed",
    "{connection}",
    None,
    Counter,
    NONE,
    "Traced connections the proxy closed.",
);
pub static HP_PROVIDER_REQUESTS: Desc = desc(
    "llm_proxy.provider.requests",
    "llm_proxy_provider_requests",
    "{request}",
    None,
    Counter,
    PROVIDER,
    "Requests the proxy sent upstream, by provider.",
);
pub static HP_PROVIDER_FAILED: Desc = desc(
    "llm_proxy.provider.requests.failed",
    "llm_proxy_provider_requests_failed",
    "{request}",
    None,
    Counter,
    PROVIDER,
    "Upstream requests answered with status >= 400 or cut short, by provider.",
);
pub static HP_PROVIDER_DURATION: Desc = desc(
    "llm_proxy.provider.request.duration",
    "llm_proxy_provider_request_duration",
    "s",
    SECONDS,
    Histogram,
    PROVIDER,
    "Upstream request duration, first request byte written to last response byte read, by provider.",
);
pub static HP_REQUEST_DURATION: Desc = desc(
    "llm_proxy.request.duration",
    "llm_proxy_request_duration",
    "s",
    SECONDS,
    Histogram,
    NONE,
    "Client request duration, first request byte received to last response byte sent.",
);
pub static HP_TTFB: Desc = desc(
    "llm_proxy.time_to_first_byte",
    "llm_proxy_time_to_first_byte",
    "s",
    SECONDS,
    Histogram,
    NONE,
    "Client request time to first byte, first request byte received to first response byte sent.",
);
pub static TRACKED_CONNECTIONS: Desc = desc(
    "metrics_agent.tracked_connections",
    "metrics_agent_tracked_connections",
    "{connection}",
    None,
    Gauge,
    NONE,
    "Connections in the kernel's connection table.",
);
pub static UNCLASSIFIED_BYTES: Desc = desc(
    "metrics_agent.unclassified.bytes",
    "metrics_agent_unclassified_bytes",
    "By",
    None,
    Counter,
    NONE,
    "Bytes on traced connections that are neither HTTP/1.x nor TLS (HTTP/2, other).",
);
pub static UNCLASSIFIED_CONNECTIONS: Desc = desc(
    "metrics_agent.unclassified.connections",
    "metrics_agent_unclassified_connections",
    "{connection}",
    None,
    Counter,
    NONE,
    "Traced connections whose first bytes were neither HTTP/1.x nor a TLS handshake.",
);
pub static TLS_CONNECTIONS: Desc = desc(
    "metrics_agent.tls.connections",
    "metrics_agent_tls_connections",
    "{connection}",
    None,
    Counter,
    NONE,
    "Traced connections that began with a TLS handshake record.",
);
pub static TLS_PLAINTEXT_CONNECTIONS: Desc = desc(
    "metrics_agent.tls.plaintext_connections",
    "metrics_agent_tls_plaintext_connections",
    "{connection}",
    None,
    Counter,
    NONE,
    "TLS connections whose plaintext the OpenSSL probes delivered (parsed like clear text).",
);
pub static TLS_OPAQUE_BYTES: Desc = desc(
    "metrics_agent.tls.opaque_bytes",
    "metrics_agent_tls_opaque_bytes",
    "By",
    None,
    Counter,
    NONE,
    "Ciphertext bytes on TLS connections no plaintext was tied to (yet): another TLS library, or a handshake before the tie.",
);
pub static TLS_UNTIED_BYTES: Desc = desc(
    "metrics_agent.tls.untied_bytes",
    "metrics_agent_tls_untied_bytes",
    "By",
    None,
    Counter,
    NONE,
    "TLS plaintext bytes the OpenSSL probes saw on no traced connection (SSL object never tied to a socket, or socket not traced): counted and parsed nowhere else.",
);
pub static FRAMING_LOST: Desc = desc(
    "metrics_agent.framing_lost",
    "metrics_agent_framing_lost",
    "{response}",
    None,
    Counter,
    NONE,
    "Responses whose end the kernel could not find (parse budget exhausted or malformed framing).",
);
// HTTP/2 (kernel frame walk and audit parser).
pub static H2_CONNECTIONS: Desc = desc(
    "llm_proxy.h2.connections",
    "llm_proxy_h2_connections",
    "{connection}",
    None,
    Counter,
    NONE,
    "HTTP/2 connections (h2c, or TLS plaintext after ALPN h2).",
);
pub static H2_STREAMS_OPENED: Desc = desc(
    "llm_proxy.h2.streams_opened",
    "llm_proxy_h2_streams_opened",
    "{stream}",
    None,
    Counter,
    NONE,
    "HTTP/2 streams the client side opened (HEADERS on a new odd stream id), both sides of the proxy.",
);
pub static H2_STREAMS_ENDED: Desc = desc(
    "llm_proxy.h2.streams_ended",
    "llm_proxy_h2_streams_ended",
    "{stream}",
    None,
    Counter,
    NONE,
    "HTTP/2 streams the server side ended (END_STREAM), both sides of the proxy.",
);
pub static H2_RST_STREAMS: Desc = desc(
    "llm_proxy.h2.rst_streams",
    "llm_proxy_h2_rst_streams",
    "{frame}",
    None,
    Counter,
    NONE,
    "HTTP/2 RST_STREAM frames, either direction.",
);
pub static H2_DATA_BYTES_RECEIVED: Desc = desc(
    "llm_proxy.h2.data_bytes_received",
    "llm_proxy_h2_data_bytes_received",
    "By",
    None,
    Counter,
    NONE,
    "HTTP/2 DATA frame payload bytes the proxy read.",
);
pub static H2_DATA_BYTES_SENT: Desc = desc(
    "llm_proxy.h2.data_bytes_sent",
    "llm_proxy_h2_data_bytes_sent",
    "By",
    None,
    Counter,
    NONE,
    "HTTP/2 DATA frame payload bytes the proxy wrote.",
);
pub static H2_STATUS_UNDECODED: Desc = desc(
    "metrics_agent.h2.status_undecoded",
    "metrics_agent_h2_status_undecoded",
    "{response}",
    None,
    Counter,
    NONE,
    "HTTP/2 response heads whose :status needs the HPACK dynamic table (in no status class on the hot path).",
);
pub static H2_FRAMING_LOST: Desc = desc(
    "metrics_agent.h2.framing_lost",
    "metrics_agent_h2_framing_lost",
    "{direction}",
    None,
    Counter,
    NONE,
    "HTTP/2 connection directions whose frame boundaries the kernel lost (not counted further).",
);
pub static AUDIT_H2_STREAMS: Desc = desc(
    "metrics_agent.audit.h2.streams",
    "metrics_agent_audit_h2_streams",
    "{stream}",
    None,
    Counter,
    NONE,
    "HTTP/2 streams the audit path parsed into exchanges.",
);
pub static AUDIT_H2_EVICTED_STREAMS: Desc = desc(
    "metrics_agent.audit.h2.evicted_streams",
    "metrics_agent_audit_h2_evicted_streams",
    "{stream}",
    None,
    Counter,
    NONE,
    "HTTP/2 streams dropped in flight because a connection had 128 open.",
);
pub static AUDIT_H2_BROKEN_CONNECTIONS: Desc = desc(
    "metrics_agent.audit.h2.broken_connections",
    "metrics_agent_audit_h2_broken_connections",
    "{connection}",
    None,
    Counter,
    NONE,
    "HTTP/2 connections whose parse stopped (malformed frames, HPACK error, oversized header block, missing bytes).",
);
pub static PROC_EVENTS_DROPPED: Desc = desc(
    "metrics_agent.process_events.dropped",
    "metrics_agent_process_events_dropped",
    "{event}",
    None,
    Counter,
    NONE,
    "Process fork/exec/exit events lost because their ring buffer was full.",
);
pub static CAPTURE_EVENTS: Desc = desc(
    "metrics_agent.capture.events",
    "metrics_agent_capture_events",
    "{event}",
    None,
    Counter,
    NONE,
    "Payload chunks the kernel sent to the audit path.",
);
pub static CAPTURE_BYTES: Desc = desc(
    "metrics_agent.capture.bytes",
    "metrics_agent_capture_bytes",
    "By",
    None,
    Counter,
    NONE,
    "Payload bytes the kernel sent to the audit path.",
);
pub static CAPTURE_DROPS: Desc = desc(
    "metrics_agent.capture.dropped_events",
    "metrics_agent_capture_dropped_events",
    "{event}",
    None,
    Counter,
    NONE,
    "Payload chunks dropped because the ring buffer was full (the proxy is never blocked).",
);
pub static CAPTURE_CAPPED_BYTES: Desc = desc(
    "metrics_agent.capture.capped_bytes",
    "metrics_agent_capture_capped_bytes",
    "By",
    None,
    Counter,
    NONE,
    "Payload bytes left out by the per-message capture cap or the per-call limit (64 chunks).",
);
pub static PROBE_HITS: Desc = desc(
    "metrics_agent.probe.hits",
    "metrics_agent_probe_hits",
    "{hit}",
    None,
    Counter,
    &["probe"],
    "Uprobe hits in traced processes, by probe; each costs the proxy one trap.",
);

// Agent statistics (`agent.rs`, from `AgentStats`).

pub static TRACED_PROCESSES: Desc = desc(
    "metrics_agent.traced_processes",
    "metrics_agent_traced_processes",
    "{process}",
    None,
    Gauge,
    NONE,
    "Processes the agent's uprobes are attached to.",
);
pub static PREEXISTING_CONNECTIONS: Desc = desc(
    "metrics_agent.preexisting_connections",
    "metrics_agent_preexisting_connections",
    "{connection}",
    None,
    Counter,
    NONE,
    "Connections found open when the agent attached to a process.",
);
pub static ADOPTED_CONNECTIONS: Desc = desc(
    "metrics_agent.adopted_connections",
    "metrics_agent_adopted_connections",
    "{connection}",
    None,
    Counter,
    NONE,
    "Untracked fds adopted as client connections because they carried a request line (accepted before the agent attached).",
);
pub static ADOPTED_REJECTED: Desc = desc(
    "metrics_agent.adopted_rejected",
    "metrics_agent_adopted_rejected",
    "{connection}",
    None,
    Counter,
    NONE,
    "Adopted fds dropped because they were not TCP sockets.",
);
pub static ATTACH_FAILURES: Desc = desc(
    "metrics_agent.attach_failures",
    "metrics_agent_attach_failures",
    "{failure}",
    None,
    Counter,
    NONE,
    "Target processes the agent failed to attach to.",
);
pub static CAPTURE_ENABLED: Desc = desc(
    "metrics_agent.capture.enabled",
    "metrics_agent_capture_enabled",
    "1",
    None,
    Gauge,
    NONE,
    "1 while payload capture is on (0: off). Under pressure capture is sampled (metrics_agent_capture_sample_every), not switched off.",
);
pub static CAPTURE_SAMPLE_EVERY: Desc = desc(
    "metrics_agent.capture.sample_every",
    "metrics_agent_capture_sample_every",
    "{exchange}",
    None,
    Gauge,
    NONE,
    "Payload capture samples 1 exchange in N now (0: the audit path is off); adaptive: raised under CPU or ring pressure, lowered when there is room.",
);
pub static CAPTURE_BREAKER_TRIPS: Desc = desc(
    "metrics_agent.capture.breaker_trips",
    "metrics_agent_capture_breaker_trips",
    "{trip}",
    None,
    Counter,
    NONE,
    "Times the capture sampling interval N was doubled because the kernel dropped payload events.",
);
pub static CAPTURE_BREAKER_CPU_TRIPS: Desc = desc(
    "metrics_agent.capture.breaker_cpu_trips",
    "metrics_agent_capture_breaker_cpu_trips",
    "{trip}",
    None,
    Counter,
    NONE,
    "Times the capture sampling interval N was doubled because the audit thread used more CPU than its budget.",
);
pub static AUDIT_CPU: Desc = desc(
    "metrics_agent.audit.cpu",
    "metrics_agent_audit_cpu",
    "s",
    SECONDS,
    Counter,
    NONE,
    "CPU time the audit thread used (payload reading, parsing, correlation): what the capture CPU budget limits.",
);
pub static AGENT_CPU: Desc = desc(
    "metrics_agent.cpu",
    "metrics_agent_cpu",
    "s",
    SECONDS,
    Counter,
    NONE,
    "CPU time the agent itself used (user and system, all threads).",
);
pub static AUDIT_RECORDS: Desc = desc(
    "metrics_agent.audit.records",
    "metrics_agent_audit_records",
    "{record}",
    None,
    Counter,
    NONE,
    "LLM exchanges the audit path reconstructed.",
);
pub static AUDIT_PARSER_PANICS: Desc = desc(
    "metrics_agent.audit.parser_panics",
    "metrics_agent_audit_parser_panics",
    "{event}",
    None,
    Counter,
    NONE,
    "Capture events on which the audit parsers failed (a bug): the parser state was reset, the audit path went on.",
);
pub static AUDIT_UNPRICED_RECORDS: Desc = desc(
    "metrics_agent.audit.unpriced_records",
    "metrics_agent_audit_unpriced_records",
    "{record}",
    None,
    Counter,
    NONE,
    "Records with token usage whose model is not in the price table (cost unknown, not zero).",
);
pub static AUDIT_RESYNCS: Desc = desc(
    "metrics_agent.audit.resyncs",
    "metrics_agent_audit_resyncs",
    "{resync}",
    None,
    Counter,
    NONE,
    "Captured streams that did not continue the previous chunk (drops or unsampled exchanges).",
);
pub static AUDIT_EARLY_RESPONSES: Desc = desc(
    "metrics_agent.audit.early_responses",
    "metrics_agent_audit_early_responses",
    "{response}",
    None,
    Counter,
    NONE,
    "Responses that completed before their request did (an early answer, sent before the server had read the whole request), paired with it when it completed.",
);
pub static AUDIT_ORPHAN_RESPONSES: Desc = desc(
    "metrics_agent.audit.orphan_responses",
    "metrics_agent_audit_orphan_responses",
    "{response}",
    None,
    Counter,
    NONE,
    "Responses that completed with no request to answer (the request was not captured): no record.",
);
pub static AUDIT_STREAM_FRAMING_ERRORS: Desc = desc(
    "metrics_agent.audit.stream_framing_errors",
    "metrics_agent_audit_stream_framing_errors",
    "{message}",
    None,
    Counter,
    NONE,
    "Bedrock event-stream messages skipped for a wrong CRC or header, and preludes that lost the framing (rest of that body ignored).",
);
pub static AUDIT_OVERSIZED_STREAM_EVENTS: Desc = desc(
    "metrics_agent.audit.oversized_stream_events",
    "metrics_agent_audit_oversized_stream_events",
    "{event}",
    None,
    Counter,
    NONE,
    "Stream events (SSE, NDJSON, event-stream messages) longer than the message cap, skipped.",
);
pub static AUDIT_CONNECTIONS: Desc = desc(
    "metrics_agent.audit.connections",
    "metrics_agent_audit_connections",
    "{connection}",
    None,
    Gauge,
    NONE,
    "Connections the audit path holds state for.",
);
pub static AUDIT_MEMORY: Desc = desc(
    "metrics_agent.audit.memory",
    // The unit is part of the name (no `# UNIT` line), as it always was.
    "metrics_agent_audit_memory_bytes",
    "By",
    None,
    Gauge,
    NONE,
    "Heap the audit path's parsers hold, bounded by audit_memory_mib.",
);
pub static AUDIT_EVICTED_CONNECTIONS: Desc = desc(
    "metrics_agent.audit.evicted_connections",
    "metrics_agent_audit_evicted_connections",
    "{connection}",
    None,
    Counter,
    NONE,
    "Connections the audit path stopped following (too many connections, or over the memory budget).",
);
pub static AUDIT_RELEASED_CONNECTIONS: Desc = desc(
    "metrics_agent.audit.released_connections",
    "metrics_agent_audit_released_connections",
    "{connection}",
    None,
    Counter,
    NONE,
    "Connections whose audit state was released because the kernel no longer tracks them: their close event was not captured (capture off, ring full, process gone).",
);
pub static AUDIT_EVICTED_FOR_MEMORY: Desc = desc(
    "metrics_agent.audit.evicted_for_memory",
    "metrics_agent_audit_evicted_for_memory",
    "{connection}",
    None,
    Counter,
    NONE,
    "Of those, connections dropped because the parsers together exceeded the memory budget.",
);

// System metrics (`system/`, `[metrics.system]`), OpenTelemetry system/process names.

pub static SYS_CPU_TIME: Desc = desc(
    "system.cpu.time",
    "system_cpu_time",
    "s",
    SECONDS,
    Counter,
    &["cpu.mode"],
    "Host CPU time summed over CPUs, by mode (/proc/stat).",
);
pub static SYS_CPU_COUNT: Desc = desc(
    "system.cpu.logical.count",
    "system_cpu_logical_cpus",
    "{cpu}",
    None,
    Gauge,
    NONE,
    "Logical CPUs of the host.",
);
pub static SYS_MEMORY_USAGE: Desc = desc(
    "system.memory.usage",
    "system_memory_usage",
    "By",
    BYTES,
    Gauge,
    &["system.memory.state"],
    "Host memory by state: used, free, buffers, cached (/proc/meminfo).",
);
pub static SYS_MEMORY_LIMIT: Desc =
    desc("system.memory.limit", "system_memory_limit", "By", BYTES, Gauge, NONE, "Host memory in total.");
pub static SYS_DISK_IO: Desc = desc(
    "system.disk.io",
    "system_disk_io",
    "By",
    BYTES,
    Counter,
    &["system.device", "disk.io.direction"],
    "Bytes read from and written to block devices, by device and direction (/proc/diskstats).",
);
pub static SYS_NETWORK_IO: Desc = desc(
    "system.network.io",
    "system_network_io",
    "By",
    BYTES,
    Counter,
    &["network.interface.name", "network.io.direction"],
    "Bytes received and transmitted, by interface and direction (/proc/net/dev).",
);
pub static PROC_CPU_TIME: Desc = desc(
    "process.cpu.time",
    "process_cpu_time",
    "s",
    SECONDS,
    Counter,
    &["process", "cpu.mode"],
    "CPU time of the traced proxy's processes (process=proxy, exited ones included) and of the agent (process=agent).",
);
pub static PROC_MEMORY: Desc = desc(
    "process.memory.usage",
    "process_memory_usage",
    "By",
    BYTES,
    Gauge,
    &["process"],
    "Resident memory of the traced proxy's processes (summed) and of the agent.",
);
pub static RING_USAGE: Desc = desc(
    "metrics_agent.ring_buffer.usage",
    "metrics_agent_ring_buffer_usage",
    "By",
    BYTES,
    Gauge,
    &["ring"],
    "Bytes written by the kernel and not yet consumed, by ring buffer.",
);
pub static RING_SIZE: Desc = desc(
    "metrics_agent.ring_buffer.size",
    "metrics_agent_ring_buffer_size",
    "By",
    BYTES,
    Gauge,
    &["ring"],
    "Capacity of each ring buffer.",
);
pub static OPEN_CONNECTIONS: Desc = desc(
    "llm_proxy.connections.open",
    "llm_proxy_connections_open",
    "{connection}",
    None,
    Gauge,
    SIDE,
    "Connections of the proxy open now as tracked by the kernel, by side (client, upstream, unknown).",
);
pub static CACHE_ENTRIES: Desc = desc(
    "metrics_agent.cache.entries",
    "metrics_agent_cache_entries",
    "{entry}",
    None,
    Gauge,
    TABLE,
    "Entries in the agent's internal tables, by table.",
);
pub static CACHE_CAPACITY: Desc = desc(
    "metrics_agent.cache.capacity",
    "metrics_agent_cache_capacity",
    "{entry}",
    None,
    Gauge,
    TABLE,
    "Capacity of the agent's internal tables, by table.",
);

// The agent's HTTP server (`http_server.rs`, from `http::server::ServerStats`).

pub static HTTP_CONNECTIONS: Desc = desc(
    "metrics_agent.http.connections",
    "metrics_agent_http_connections",
    "{connection}",
    None,
    Gauge,
    NONE,
    "HTTP connections open on the agent's endpoint (upgraded stream clients not included).",
);
pub static HTTP_CONNECTIONS_CLOSED: Desc = desc(
    "metrics_agent.http.connections_closed",
    "metrics_agent_http_connections_closed",
    "{connection}",
    None,
    Counter,
    REASON,
    "HTTP connections closed by the agent's limits, by reason: header_timeout (no complete request head in time), idle_timeout, evicted (oldest idle connection closed for a new one at the cap), refused (at the cap with every connection busy).",
);

// Storage (`storage.rs`, from `store::stats::StorageStats`).

pub static STORAGE_RECORDS: Desc = desc(
    "metrics_agent.storage.records",
    "metrics_agent_storage_records",
    "{record}",
    None,
    Counter,
    NONE,
    "Records aggregated into buffered rows.",
);
pub static STORAGE_RECORDS_DROPPED: Desc = desc(
    "metrics_agent.storage.records_dropped",
    "metrics_agent_storage_records_dropped",
    "{record}",
    None,
    Counter,
    REASON,
    "Records not stored, by reason (lagged, buffer_full, rejected).",
);
pub static STORAGE_DETAILS_DROPPED: Desc = desc(
    "metrics_agent.storage.detail_rows_dropped",
    "metrics_agent_storage_detail_rows_dropped",
    "{row}",
    None,
    Counter,
    REASON,
    "Sampled detail rows not stored, by reason (minute_cap, buffer_full, rejected).",
);
pub static STORAGE_NAMES_COLLAPSED: Desc = desc(
    "metrics_agent.storage.names_collapsed",
    "metrics_agent_storage_names_collapsed",
    "{record}",
    None,
    Counter,
    KIND,
    "Records whose model or application name was stored as `other` (bounded names), by kind.",
);
pub static STORAGE_BUDGET_ROWS_DROPPED: Desc = desc(
    "metrics_agent.storage.budget_rows_dropped",
    "metrics_agent_storage_budget_rows_dropped",
    "{row}",
    None,
    Counter,
    TABLE,
    "Rows deleted to keep the database within max_size_mib, by table.",
);
pub static STORAGE_DATABASE_SIZE: Desc = desc(
    "metrics_agent.storage.database_size",
    "metrics_agent_storage_database_size",
    "By",
    BYTES,
    Gauge,
    NONE,
    "Size of the database as the size budget measures it.",
);
pub static STORAGE_SIZE_BUDGET: Desc = desc(
    "metrics_agent.storage.size_budget",
    "metrics_agent_storage_size_budget",
    "By",
    BYTES,
    Gauge,
    NONE,
    "The size budget (max_size_mib) in bytes; 0: none.",
);
pub static STORAGE_ROWS_WRITTEN: Desc = desc(
    "metrics_agent.storage.rows_written",
    "metrics_agent_storage_rows_written",
    "{row}",
    None,
    Counter,
    TABLE,
    "Rows written to the database, by table.",
);
pub static STORAGE_FLUSHES: Desc = desc(
    "metrics_agent.storage.flushes",
    "metrics_agent_storage_flushes",
    "{flush}",
    None,
    Counter,
    RESULT,
    "Flushes by result (ok, error, duplicate, rejected).",
);
pub static STORAGE_BUFFERED_SERIES: Desc = desc(
    "metrics_agent.storage.buffered_series",
    "metrics_agent_storage_buffered_series",
    "{row}",
    None,
    Gauge,
    NONE,
    "Minute rows waiting to be written.",
);
pub static STORAGE_BUFFERED_MEMORY: Desc = desc(
    "metrics_agent.storage.buffered_memory",
    "metrics_agent_storage_buffered",
    "By",
    BYTES,
    Gauge,
    NONE,
    "Upper bound of the heap the buffered minute rows take.",
);
pub static STORAGE_BUFFERED_DETAILS: Desc = desc(
    "metrics_agent.storage.buffered_detail_rows",
    "metrics_agent_storage_buffered_detail_rows",
    "{row}",
    None,
    Gauge,
    NONE,
    "Detail rows waiting to be written.",
);
pub static STORAGE_LAST_FLUSH_DURATION: Desc = desc(
    "metrics_agent.storage.last_flush.duration",
    "metrics_agent_storage_last_flush_duration",
    "s",
    SECONDS,
    Gauge,
    NONE,
    "Duration of the last successful flush.",
);
pub static STORAGE_LAST_FLUSH_TIME: Desc = desc(
    "metrics_agent.storage.last_flush.timestamp",
    "metrics_agent_storage_last_flush_timestamp",
    "s",
    SECONDS,
    Gauge,
    NONE,
    "Unix time of the last successful flush.",
);
pub static STORAGE_DATABASE_UP: Desc = desc(
    "metrics_agent.storage.database_up",
    "metrics_agent_storage_database_up",
    "1",
    None,
    Gauge,
    NONE,
    "1 when the last database operation succeeded.",
);
pub static STORAGE_MAINTENANCE_RUNS: Desc = desc(
    "metrics_agent.storage.maintenance_runs",
    "metrics_agent_storage_maintenance_runs",
    "{run}",
    None,
    Counter,
    RESULT,
    "Retention and partition runs, by result (ok, error).",
);

/// Every metric of the catalogue, for the backends' conformance tests and
/// the documentation check.
#[allow(dead_code, reason = "read by the conformance tests (and the library API once there is one)")]
pub static ALL: &[&Desc] = &[
    &REQUESTS,
    &TOKENS,
    &TOKEN_USAGE,
    &COST,
    &UNPRICED,
    &CACHE_HITS,
    &DURATION,
    &TTFB,
    &TIME_TO_FIRST_CHUNK,
    &TIME_PER_OUTPUT_CHUNK,
    &TIME_PER_OUTPUT_TOKEN,
    &RECORDS_LAGGED,
    &LABEL_OVERFLOW,
    &EXPORTER_BATCHES,
    &EXPORTER_FAILURES,
    &EXPORTER_DROPPED,
    &EXPORTER_SAMPLES_DROPPED,
    &EXPORTER_QUEUE,
    &SPANS_EXPORTED,
    &SPANS_DROPPED,
    &SPANS_QUEUED,
    &SPAN_EXPORT_FAILURES,
    &HP_REQUESTS,
    &HP_REQUESTS_FAILED,
    &HP_RESPONSES,
    &HP_BYTES_RECEIVED,
    &HP_BYTES_SENT,
    &HP_TLS_BYTES_RECEIVED,
    &HP_TLS_BYTES_SENT,
    &HP_CONNECTIONS_OPENED,
    &HP_CONNECTIONS_CLOSED,
    &HP_PROVIDER_REQUESTS,
    &HP_PROVIDER_FAILED,
    &HP_PROVIDER_DURATION,
    &HP_REQUEST_DURATION,
    &HP_TTFB,
    &TRACKED_CONNECTIONS,
    &UNCLASSIFIED_BYTES,
    &UNCLASSIFIED_CONNECTIONS,
    &TLS_CONNECTIONS,
    &TLS_PLAINTEXT_CONNECTIONS,
    &TLS_OPAQUE_BYTES,
    &TLS_UNTIED_BYTES,
    &FRAMING_LOST,
    &H2_CONNECTIONS,
    &H2_STREAMS_OPENED,
    &H2_STREAMS_ENDED,
    &H2_RST_STREAMS,
    &H2_DATA_BYTES_RECEIVED,
    &H2_DATA_BYTES_SENT,
    &H2_STATUS_UNDECODED,
    &H2_FRAMING_LOST,
    &AUDIT_H2_STREAMS,
    &AUDIT_H2_EVICTED_STREAMS,
    &AUDIT_H2_BROKEN_CONNECTIONS,
    &PROC_EVENTS_DROPPED,
    &CAPTURE_EVENTS,
    &CAPTURE_BYTES,
    &CAPTURE_DROPS,
    &CAPTURE_CAPPED_BYTES,
    &PROBE_HITS,
    &TRACED_PROCESSES,
    &PREEXISTING_CONNECTIONS,
    &ADOPTED_CONNECTIONS,
    &ADOPTED_REJECTED,
    &ATTACH_FAILURES,
    &CAPTURE_ENABLED,
    &CAPTURE_SAMPLE_EVERY,
    &CAPTURE_BREAKER_TRIPS,
    &CAPTURE_BREAKER_CPU_TRIPS,
    &AUDIT_CPU,
    &AGENT_CPU,
    &AUDIT_RECORDS,
    &AUDIT_PARSER_PANICS,
    &AUDIT_UNPRICED_RECORDS,
    &AUDIT_RESYNCS,
    &AUDIT_EARLY_RESPONSES,
    &AUDIT_ORPHAN_RESPONSES,
    &AUDIT_STREAM_FRAMING_ERRORS,
    &AUDIT_OVERSIZED_STREAM_EVENTS,
    &AUDIT_CONNECTIONS,
    &AUDIT_MEMORY,
    &AUDIT_EVICTED_CONNECTIONS,
    &AUDIT_EVICTED_FOR_MEMORY,
    &AUDIT_RELEASED_CONNECTIONS,
    &SYS_CPU_TIME,
    &SYS_CPU_COUNT,
    &SYS_MEMORY_USAGE,
    &SYS_MEMORY_LIMIT,
    &SYS_DISK_IO,
    &SYS_NETWORK_IO,
    &PROC_CPU_TIME,
    &PROC_MEMORY,
    &RING_USAGE,
    &RING_SIZE,
    &OPEN_CONNECTIONS,
    &CACHE_ENTRIES,
    &CACHE_CAPACITY,
    &HTTP_CONNECTIONS,
    &HTTP_CONNECTIONS_CLOSED,
    &STORAGE_RECORDS,
    &STORAGE_RECORDS_DROPPED,
    &STORAGE_DETAILS_DROPPED,
    &STORAGE_NAMES_COLLAPSED,
    &STORAGE_BUDGET_ROWS_DROPPED,
    &STORAGE_DATABASE_SIZE,
    &STORAGE_SIZE_BUDGET,
    &STORAGE_ROWS_WRITTEN,
    &STORAGE_FLUSHES,
    &STORAGE_BUFFERED_SERIES,
    &STORAGE_BUFFERED_MEMORY,
    &STORAGE_BUFFERED_DETAILS,
    &STORAGE_LAST_FLUSH_DURATION,
    &STORAGE_LAST_FLUSH_TIME,
    &STORAGE_DATABASE_UP,
    &STORAGE_MAINTENANCE_RUNS,
];

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn names_are_unique_per_backend() {
        let otel: HashSet<&str> = ALL.iter().map(|d| d.otel).collect();
        let prom: HashSet<String> = ALL.iter().map(|d| d.prometheus_name()).collect();
        assert_eq!(otel.len(), ALL.len(), "an OpenTelemetry name is defined twice");
        assert_eq!(prom.len(), ALL.len(), "a Prometheus name is defined twice");
    }

    /// The streaming-time histograms carry the GenAI semantic-convention
    /// names (semantic-conventions-genai v0.1.0, client-inference.md): a
    /// rename here is a breaking change for dashboards, so it is deliberate.
    #[test]
    fn streaming_time_follows_the_genai_conventions() {
        for (d, otel, prom) in [
            (
                &TIME_TO_FIRST_CHUNK,
                "gen_ai.client.inference.time_to_first_chunk",
                "gen_ai_client_inference_time_to_first_chunk_seconds",
            ),
            (
                &TIME_PER_OUTPUT_CHUNK,
                "gen_ai.client.inference.time_per_output_chunk",
                "gen_ai_client_inference_time_per_output_chunk_seconds",
            ),
        ] {
            assert_eq!((d.otel, d.prometheus_name().as_str(), d.unit), (otel, prom, "s"));
            assert!(matches!(d.kind, Kind::Histogram), "{otel}");
            assert!(ALL.iter().any(|a| std::ptr::eq(*a, d)), "{otel} is not in ALL");
        }
    }
}
