//! The agent's own statistics (`AgentStats`) and CPU time as a metric source:
//! series of the catalogue for every backend.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{
    catalog as m,
    model::{Desc, Series, Value},
};
use crate::agent_stats::AgentStats;

/// Appends the series of `stats`; `agent_cpu_seconds` is the agent's own CPU time.
pub fn append(stats: &AgentStats, agent_cpu_seconds: f64, out: &mut Vec<Series>) {
    let s = stats;
    let metrics: &[(&'static Desc, &AtomicU64)] = &[
        (&m::TRACED_PROCESSES, &s.traced_processes),
        (&m::PREEXISTING_CONNECTIONS, &s.preexisting_connections),
        (&m::ADOPTED_CONNECTIONS, &s.adopted_connections),
        (&m::ADOPTED_REJECTED, &s.adopted_rejected),
        (&m::ATTACH_FAILURES, &s.attach_failures),
        (&m::CAPTURE_ENABLED, &s.capture_enabled),
        (&m::CAPTURE_SAMPLE_EVERY, &s.capture_sample_every),
        (&m::CAPTURE_BREAKER_TRIPS, &s.capture_breaker_trips),
        (&m::CAPTURE_BREAKER_CPU_TRIPS, &s.capture_breaker_cpu_trips),
        (&m::AUDIT_RECORDS, &s.audit_records),
        (&m::AUDIT_PARSER_PANICS, &s.audit_parser_panics),
        (&m::AUDIT_UNPRICED_RECORDS, &s.audit_unpriced_records),
        (&m::AUDIT_RESYNCS, &s.audit_resyncs),
        (&m::AUDIT_EARLY_RESPONSES, &s.audit_early_responses),
        (&m::AUDIT_ORPHAN_RESPONSES, &s.audit_orphan_responses),
        (&m::AUDIT_STREAM_FRAMING_ERRORS, &s.audit_stream_framing_errors),
        (&m::AUDIT_OVERSIZED_STREAM_EVENTS, &s.audit_oversized_stream_events),
        (&m::AUDIT_H2_STREAMS, &s.audit_h2_streams),
        (&m::AUDIT_H2_EVICTED_STREAMS, &s.audit_h2_evicted_streams),
        (&m::AUDIT_H2_BROKEN_CONNECTIONS, &s.audit_h2_broken_connections),
        (&m::AUDIT_CONNECTIONS, &s.audit_connections),
        (&m::AUDIT_MEMORY, &s.audit_memory_bytes),
        (&m::AUDIT_EVICTED_CONNECTIONS, &s.audit_evicted_connections),
        (&m::AUDIT_EVICTED_FOR_MEMORY, &s.audit_evicted_for_memory),
        (&m::AUDIT_RELEASED_CONNECTIONS, &s.audit_released_connections),
        (&m::SPANS_EXPORTED, &s.spans_exported),
        (&m::SPANS_QUEUED, &s.spans_queued),
        (&m::SPAN_EXPORT_FAILURES, &s.span_export_failures),
    ];
    for (desc, v) in metrics {
        out.push(Series::unlabelled(desc, Value::Int(v.load(Ordering::Relaxed))));
    }
    for (reason, v) in [
        ("queue_full", &s.spans_dropped_queue_full),
        ("send_failed", &s.spans_dropped_send_failed),
        ("lagged", &s.spans_dropped_lagged),
    ] {
        let labels = vec![("reason", std::borrow::Cow::Borrowed(reason))];
        out.push(Series { desc: &m::SPANS_DROPPED, labels, value: Value::Int(v.load(Ordering::Relaxed)) });
    }
    let audit_cpu = s.audit_cpu_ns.load(Ordering::Relaxed) as f64 / 1e9;
    out.push(Series::unlabelled(&m::AUDIT_CPU, Value::Float(audit_cpu)));
    out.push(Series::unlabelled(&m::AGENT_CPU, Value::Float(agent_cpu_seconds)));
}

/// The agent's CPU time now (user and system, all threads).
pub fn agent_cpu_seconds() -> f64 {
    crate::cpu_time::process_cpu_time().as_secs_f64()
}
