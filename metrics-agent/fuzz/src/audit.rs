//! The agent's `audit` modules, by path.

#[path = "../../src/audit/correlate.rs"]
pub mod correlate;
#[path = "../../src/audit/decode.rs"]
pub mod decode;
#[path = "../../src/audit/h2/mod.rs"]
pub mod h2;
#[path = "../../src/audit/identity.rs"]
pub mod identity;
#[path = "../../src/audit/llm.rs"]
pub mod llm;
#[path = "../../src/audit/message.rs"]
pub mod message;
#[path = "../../src/audit/pipeline.rs"]
pub mod pipeline;
#[path = "../../src/audit/sse.rs"]
pub mod sse;
#[path = "../../src/audit/stream.rs"]
pub mod stream;
