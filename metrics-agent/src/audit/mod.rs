//! The audit path's runtime in the agent: reading the kernel's payload
//! capture from its ring buffer (`reader`), sampling it under load
//! (`capture`, `breaker`), the audit thread's priority (`priority`) and the
//! finished records' price and destination (`enrich`).
//!
//! The parsers it feeds (HTTP/1.1 and HTTP/2 messages, server-sent events,
//! the LLM semantics of requests and responses) are the crate
//! `metrics-audit-core`: pure functions over bytes that never panic on
//! arbitrary input (property-tested) and keep memory bounded, re-exported
//! here under their old paths.

pub mod breaker;
pub mod capture;
pub mod enrich;
pub mod priority;
pub mod reader;

// The pure parsers live in their own crate (no I/O, no runtime); their
// `crate::audit::...` paths stay as they were.
pub use metrics_audit_core::{
    bedrock, cohere, correlate, cost, decode, eventstream, finish, h2, identity, llm, message, ollama, pairing,
    pipeline, provider, record_builder, sse, stream, trace_context, usage,
};
