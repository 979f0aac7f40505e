//! The audit path's userspace parsers: HTTP/1.1 messages reassembled from a
//! connection's byte stream, server-sent events, and the LLM semantics of
//! requests and responses (provider, operation, model, token usage, errors).
//!
//! Fed by the kernel's payload capture (`reader`); the parsers are pure
//! functions over bytes that never panic on arbitrary input
//! (property-tested) and keep memory bounded.

pub mod bedrock;
pub mod breaker;
pub mod capture;
pub mod cohere;
pub mod correlate;
pub mod cost;
pub mod decode;
pub mod enrich;
pub mod eventstream;
pub mod finish;
pub mod h2;
pub mod identity;
pub mod llm;
pub mod message;
pub mod ollama;
pub mod pairing;
pub mod pipeline;
pub mod priority;
pub mod provider;
pub mod reader;
pub mod record_builder;
pub mod sse;
pub mod stream;
pub mod trace_context;
pub mod usage;
