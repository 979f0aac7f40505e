//! The audit path's pure core: the bytes the kernel captured from a proxy's
//! connections become request records. HTTP/1.1 messages and HTTP/2 frames
//! reassembled from a connection's byte stream (`message`, `h2`), body
//! decoding (`decode`; a request body cut by the cap, `cut_body`),
//! server-sent events and AWS event streams (`sse`, `eventstream`), the LLM
//! semantics of requests and responses (`llm`, `provider`, `usage`, `finish`,
//! the typed OpenAI reads `chat_chunk` and `chat_completion`, and the
//! per-provider `bedrock`, `cohere`, `ollama`), pairing of requests
//! with responses and identities (`pipeline`, `pairing`, `identity`,
//! `trace_context`, `correlate`, `record_builder`), and their price (`cost`).
//!
//! Its own crate so that it cannot reach the runtime: no async runtime, no
//! eBPF loader, no database or network client, only functions over bytes
//! that never panic on arbitrary input (property-tested) and keep memory
//! bounded. The agent (`metrics-agent`, whose `audit` module re-exports
//! these modules and feeds them from the kernel's ring buffer) and the fuzz
//! targets (`metrics-agent/fuzz`) both build on it; docs/architecture.md
//! ("Crates") says why.

pub mod bedrock;
pub mod chat_chunk;
pub mod chat_completion;
pub mod cohere;
pub mod correlate;
pub mod cost;
pub mod cut_body;
pub mod decode;
pub mod eventstream;
pub mod finish;
pub mod h2;
pub mod identity;
pub mod llm;
pub mod message;
pub mod ollama;
pub mod pairing;
pub mod pipeline;
pub mod provider;
pub mod record_builder;
pub mod secrets;
pub mod sse;
pub mod stream;
pub mod trace_context;
pub mod usage;
