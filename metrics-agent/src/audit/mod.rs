//! The audit path's userspace parsers: HTTP/1.1 messages reassembled from a
//! connection's byte stream, server-sent events, and the LLM semantics of
//! requests and responses (provider, operation, model, token usage, errors).
//!
//! Pure functions over bytes, fed by the payload capture of the next
//! milestone (docs/roadmap.md); they never panic on arbitrary input
//! (property-tested) and keep memory bounded.
#![allow(dead_code, reason = "wired to the payload capture in the next milestone")]

pub mod bench;
pub mod correlate;
pub mod cost;
pub mod decode;
pub mod llm;
pub mod message;
pub mod pipeline;
pub mod reader;
pub mod sse;
