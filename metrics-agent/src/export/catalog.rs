//! Every metric the exporters send, named once per protocol. docs/metrics.md
//! documents each of them and the OpenTelemetry GenAI mapping.

use super::model::{Desc, Kind};

const fn desc(
    otel: &'static str,
    prom: &'static str,
    unit: &'static str,
    prom_unit: Option<&'static str>,
    kind: Kind,
    help: &'static str,
) -> Desc {
    Desc { otel, prom, unit, prom_unit, kind, help }
}

// Audit path: one observation per `RequestRecord`.

pub static REQUESTS: Desc = desc(
    "llm.requests",
    "llm_requests",
    "{request}",
    None,
    Kind::Counter,
    "LLM requests reconstructed by the audit path, by side, provider, model, operation, status class and error type.",
);
pub static TOKENS: Desc = desc(
    "llm.tokens",
    "llm_tokens",
    "{token}",
    None,
    Kind::Counter,
    "Tokens the provider reported, by type (input includes cached; cache_read, cache_creation, reasoning are subsets).",
);
pub static TOKEN_USAGE: Desc = desc(
    "gen_ai.client.token.usage",
    "gen_ai_client_token_usage",
    "{token}",
    None,
    Kind::Histogram,
    "Input and output tokens per request (OpenTelemetry GenAI).",
);
pub static COST: Desc = desc(
    "llm.cost",
    "llm_cost",
    "USD",
    Some("usd"),
    Kind::Counter,
    "Cost in US dollars of priced requests (price table times reported usage).",
);
pub static UNPRICED: Desc = desc(
    "llm.requests.unpriced",
    "llm_unpriced_requests",
    "{request}",
    None,
    Kind::Counter,
    "Requests without a cost: model not in the price table, or usage unknown.",
);
pub static CACHE_HITS: Desc = desc(
    "llm.cache.hits",
    "llm_cache_hits",
    "{request}",
    None,
    Kind::Counter,
    "Client requests the proxy answered without an upstream call (or a cache header said so).",
);
pub static DURATION: Desc = desc(
    "gen_ai.client.operation.duration",
    "gen_ai_client_operation_duration",
    "s",
    Some("seconds"),
    Kind::Histogram,
    "Request duration, first request byte to last response byte (OpenTelemetry GenAI).",
);
pub static TTFB: Desc = desc(
    "llm.time_to_first_byte",
    "llm_time_to_first_byte",
    "s",
    Some("seconds"),
    Kind::Histogram,
    "Time from the first request byte to the first response byte.",
);

// Streaming time (OpenTelemetry GenAI semantic conventions v1.41.0, status
// Development): observed for streamed responses whose stream was parsed as
// it arrived (see docs/metrics.md).
pub static TIME_TO_FIRST_CHUNK: Desc = desc(
    "gen_ai.client.operation.time_to_first_chunk",
    "gen_ai_client_operation_time_to_first_chunk",
    "s",
    Some("seconds"),
    Kind::Histogram,
    "Streamed responses: first request byte to the first content-bearing event (OpenTelemetry GenAI).",
);
pub static TIME_PER_OUTPUT_CHUNK: Desc = desc(
    "gen_ai.client.operation.time_per_output_chunk",
    "gen_ai_client_operation_time_per_output_chunk",
    "s",
    Some("seconds"),
    Kind::Histogram,
    "Streamed responses: time between content-bearing events after the first (OpenTelemetry GenAI; each request's mean gap, observed once per gap).",
);
pub static TIME_PER_OUTPUT_TOKEN: Desc = desc(
    "llm.time_per_output_token",
    "llm_time_per_output_token",
    "s",
    Some("seconds"),
    Kind::Histogram,
    "Streamed responses with known usage: (last - first content event) / (output tokens - 1).",
);

// The exporters' own health.

pub static RECORDS_LAGGED: Desc = desc(
    "metrics_agent.export.records_lagged",
    "metrics_agent_export_records_lagged",
    "{record}",
    None,
    Kind::Counter,
    "Records the export aggregator missed because it fell behind the record bus.",
);
pub static LABEL_OVERFLOW: Desc = desc(
    "metrics_agent.export.label_overflow",
    "metrics_agent_export_label_overflow",
    "{record}",
    None,
    Kind::Counter,
    "Records whose label value was replaced by `other` to keep cardinality bounded, by label.",
);
pub static EXPORTER_BATCHES: Desc = desc(
    "metrics_agent.exporter.batches",
    "metrics_agent_exporter_batches",
    "{batch}",
    None,
    Kind::Counter,
    "Batches an exporter delivered.",
);
pub static EXPORTER_FAILURES: Desc = desc(
    "metrics_agent.exporter.failures",
    "metrics_agent_exporter_failures",
    "{attempt}",
    None,
    Kind::Counter,
    "Export attempts that failed (timeout, connection error, error status); retried with backoff.",
);
pub static EXPORTER_DROPPED: Desc = desc(
    "metrics_agent.exporter.dropped",
    "metrics_agent_exporter_dropped",
    "{batch}",
    None,
    Kind::Counter,
    "Batches an exporter dropped, by reason: queue_full (it was still busy) or send_failed (retries exhausted).",
);
pub static EXPORTER_SAMPLES_DROPPED: Desc = desc(
    "metrics_agent.exporter.samples_dropped",
    "metrics_agent_exporter_samples_dropped",
    "{sample}",
    None,
    Kind::Counter,
    "Distribution samples lost, by reason: buffer_full (the per-interval buffer), queue_full or send_failed (their batch was dropped).",
);
pub static EXPORTER_QUEUE: Desc = desc(
    "metrics_agent.exporter.queue_length",
    "metrics_agent_exporter_queue_length",
    "{batch}",
    None,
    Kind::Gauge,
    "Batches waiting in an exporter's queue.",
);

// Hot path (pushed by OTLP and Datadog; Prometheus reads these from the
// kernel maps directly, under the same `prom` names).

pub static HP_REQUESTS: Desc = desc(
    "llm_proxy.requests",
    "llm_proxy_requests",
    "{request}",
    None,
    Kind::Counter,
    "HTTP requests the proxy received from clients.",
);
pub static HP_REQUESTS_FAILED: Desc = desc(
    "llm_proxy.requests.failed",
    "llm_proxy_requests_failed",
    "{request}",
    None,
    Kind::Counter,
    "Client requests answered with status >= 400 or cut short.",
);
pub static HP_RESPONSES: Desc = desc(
    "llm_proxy.responses",
    "llm_proxy_responses",
    "{response}",
    None,
    Kind::Counter,
    "Finished client requests by status class.",
);
pub static HP_BYTES_RECEIVED: Desc = desc(
    "llm_proxy.bytes.received",
    "llm_proxy_bytes_received",
    "By",
    None,
    Kind::Counter,
    "HTTP bytes the proxy read from traced connections (TLS plaintext on TLS connections), by side.",
);
pub static HP_BYTES_SENT: Desc = desc(
    "llm_proxy.bytes.sent",
    "llm_proxy_bytes_sent",
    "By",
    None,
    Kind::Counter,
    "HTTP bytes the proxy wrote to traced connections (TLS plaintext on TLS connections), by side.",
);
pub static HP_TLS_BYTES_RECEIVED: Desc = desc(
    "llm_proxy.tls.bytes.received",
    "llm_proxy_tls_bytes_received",
    "By",
    None,
    Kind::Counter,
    "TLS wire bytes (records and handshakes) the proxy read from traced connections, by side.",
);
pub static HP_TLS_BYTES_SENT: Desc = desc(
    "llm_proxy.tls.bytes.sent",
    "llm_proxy_tls_bytes_sent",
    "By",
    None,
    Kind::Counter,
    "TLS wire bytes (records and handshakes) the proxy wrote to traced connections, by side.",
);
pub static HP_CONNECTIONS_OPENED: Desc = desc(
    "llm_proxy.connections.opened",
    "llm_proxy_connections_opened",
    "{connection}",
    None,
    Kind::Counter,
    "Connections the proxy accepted (client) or opened (upstream).",
);
pub static HP_CONNECTIONS_CLOSED: Desc = desc(
    "llm_proxy.connections.closed",
    "llm_proxy_connections_closed",
    "{connection}",
    None,
    Kind::Counter,
    "Traced connections the proxy closed.",
);
pub static HP_PROVIDER_REQUESTS: Desc = desc(
    "llm_proxy.provider.requests",
    "llm_proxy_provider_requests",
    "{request}",
    None,
    Kind::Counter,
    "Requests the proxy sent upstream, by configured provider.",
);
pub static HP_PROVIDER_FAILED: Desc = desc(
    "llm_proxy.provider.requests.failed",
    "llm_proxy_provider_requests_failed",
    "{request}",
    None,
    Kind::Counter,
    "Upstream requests answered with status >= 400 or cut short, by configured provider.",
);
pub static HP_REQUEST_DURATION: Desc = desc(
    "llm_proxy.request.duration",
    "llm_proxy_request_duration",
    "s",
    Some("seconds"),
    Kind::Histogram,
    "Client request duration measured in the kernel.",
);
pub static HP_TTFB: Desc = desc(
    "llm_proxy.time_to_first_byte",
    "llm_proxy_time_to_first_byte",
    "s",
    Some("seconds"),
    Kind::Histogram,
    "Client request time to first byte measured in the kernel.",
);
pub static HP_PROVIDER_DURATION: Desc = desc(
    "llm_proxy.provider.request.duration",
    "llm_proxy_provider_request_duration",
    "s",
    Some("seconds"),
    Kind::Histogram,
    "Upstream request duration measured in the kernel, by configured provider.",
);
pub static HP_CAPTURE_DROPS: Desc = desc(
    "metrics_agent.capture.dropped_events",
    "metrics_agent_capture_dropped_events",
    "{event}",
    None,
    Kind::Counter,
    "Payload chunks dropped because the payload ring buffer was full.",
);
pub static HP_PROC_EVENTS_DROPPED: Desc = desc(
    "metrics_agent.process_events.dropped",
    "metrics_agent_process_events_dropped",
    "{event}",
    None,
    Kind::Counter,
    "Process events dropped because their ring buffer was full.",
);
pub static HP_AUDIT_RECORDS: Desc = desc(
    "metrics_agent.audit.records",
    "metrics_agent_audit_records",
    "{record}",
    None,
    Kind::Counter,
    "LLM exchanges the audit path reconstructed.",
);
pub static HP_TRACED_PROCESSES: Desc = desc(
    "metrics_agent.traced_processes",
    "metrics_agent_traced_processes",
    "{process}",
    None,
    Kind::Gauge,
    "Processes the agent's probes are attached to.",
);

// System metrics (`[metrics.system]`), OpenTelemetry system/process names.

pub static SYS_CPU_TIME: Desc = desc(
    "system.cpu.time",
    "system_cpu_time",
    "s",
    Some("seconds"),
    Kind::Counter,
    "Host CPU time summed over CPUs, by mode (/proc/stat).",
);
pub static SYS_CPU_COUNT: Desc = desc(
    "system.cpu.logical.count",
    "system_cpu_logical_cpus",
    "{cpu}",
    None,
    Kind::Gauge,
    "Logical CPUs of the host.",
);
pub static SYS_MEMORY_USAGE: Desc = desc(
    "system.memory.usage",
    "system_memory_usage",
    "By",
    Some("bytes"),
    Kind::Gauge,
    "Host memory by state: used, free, buffers, cached (/proc/meminfo).",
);
pub static SYS_MEMORY_LIMIT: Desc =
    desc("system.memory.limit", "system_memory_limit", "By", Some("bytes"), Kind::Gauge, "Host memory in total.");
pub static SYS_DISK_IO: Desc = desc(
    "system.disk.io",
    "system_disk_io",
    "By",
    Some("bytes"),
    Kind::Counter,
    "Bytes read from and written to block devices, by device and direction (/proc/diskstats).",
);
pub static SYS_NETWORK_IO: Desc = desc(
    "system.network.io",
    "system_network_io",
    "By",
    Some("bytes"),
    Kind::Counter,
    "Bytes received and transmitted, by interface and direction (/proc/net/dev).",
);
pub static PROC_CPU_TIME: Desc = desc(
    "process.cpu.time",
    "process_cpu_time",
    "s",
    Some("seconds"),
    Kind::Counter,
    "CPU time of the traced proxy's processes (process=proxy, exited ones included) and of the agent (process=agent).",
);
pub static PROC_MEMORY: Desc = desc(
    "process.memory.usage",
    "process_memory_usage",
    "By",
    Some("bytes"),
    Kind::Gauge,
    "Resident memory of the traced proxy's processes (summed) and of the agent.",
);
pub static RING_USAGE: Desc = desc(
    "metrics_agent.ring_buffer.usage",
    "metrics_agent_ring_buffer_usage",
    "By",
    Some("bytes"),
    Kind::Gauge,
    "Bytes written by the kernel and not yet consumed, by ring buffer.",
);
pub static RING_SIZE: Desc = desc(
    "metrics_agent.ring_buffer.size",
    "metrics_agent_ring_buffer_size",
    "By",
    Some("bytes"),
    Kind::Gauge,
    "Capacity of each ring buffer.",
);
pub static OPEN_CONNECTIONS: Desc = desc(
    "llm_proxy.connections.open",
    "llm_proxy_connections_open",
    "{connection}",
    None,
    Kind::Gauge,
    "Connections of the proxy open now as tracked by the kernel, by side (client, upstream, unknown).",
);
pub static CACHE_ENTRIES: Desc = desc(
    "metrics_agent.cache.entries",
    "metrics_agent_cache_entries",
    "{entry}",
    None,
    Kind::Gauge,
    "Entries in the agent's internal tables, by table.",
);
pub static CACHE_CAPACITY: Desc = desc(
    "metrics_agent.cache.capacity",
    "metrics_agent_cache_capacity",
    "{entry}",
    None,
    Kind::Gauge,
    "Capacity of the agent's internal tables, by table.",
);
