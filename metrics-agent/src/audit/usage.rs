//! Token usage as every provider's parser reports it (`Usage`), and the
//! bound on a believable token count. A leaf: `llm` and the per-format
//! parsers (`bedrock`, `cohere`, `ollama`) use it without importing each
//! other both ways.

use serde_json::Value;

/// Normalised token usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Input tokens, cached ones included.
    pub input: Option<u64>,
    pub output: Option<u64>,
    pub cache_read: Option<u64>,
    pub cache_creation: Option<u64>,
    pub reasoning: Option<u64>,
}

/// Largest token count believed: no request uses 10^12 tokens, and sums of
/// believable counts cannot overflow. A larger number is unknown, not huge.
pub const MAX_TOKENS: u64 = 1_000_000_000_000;

/// A believable token count at `pointer`.
pub fn num(v: &Value, pointer: &str) -> Option<u64> {
    v.pointer(pointer).and_then(Value::as_u64).filter(|n| *n <= MAX_TOKENS)
}
